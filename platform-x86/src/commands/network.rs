//! `guest-network-get-interfaces` and `guest-network-get-route`: the image has no network
//! stack, so both lists are empty (an honest answer; KubeVirt polls the interfaces).

use agent_core::Result;
use agent_core::commands::Emitter;
use agent_core::commands::network::{GuestNetworkInterface, GuestNetworkRoute, Network};

/// No interfaces.
pub struct NoNetwork;

impl Network for NoNetwork {
    fn interfaces(&mut self, _out: &mut Emitter<'_, GuestNetworkInterface<'static>>) -> Result<()> {
        Ok(())
    }

    fn routes(&mut self, _out: &mut Emitter<'_, GuestNetworkRoute<'static>>) -> Result<()> {
        Ok(())
    }
}
