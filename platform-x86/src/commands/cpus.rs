//! `guest-get-vcpus` from the ACPI MADT; the rest of the family is unsupported.
//!
//! Every processor the MADT lists as enabled or online-capable is reported, numbered in MADT
//! order (as Linux numbers them), `online` when firmware enabled it. The image runs on the boot
//! processor only and never starts or stops the others, so `can-offline` is false and
//! `guest-set-vcpus` is unsupported. Without a MADT the boot processor alone is reported.

use agent_core::commands::cpus::{
    Cpus, GuestLinuxCpuStats, GuestLoadAverage, GuestLogicalProcessor,
};
use agent_core::commands::{Emitter, List};
use agent_core::schema::Command;
use agent_core::{Error, Result};

use crate::hw::acpi::Cpu;

/// The processors.
pub struct MadtCpus<'a> {
    cpus: &'a [Cpu],
    madt: bool,
}

impl<'a> MadtCpus<'a> {
    /// From the MADT's processor list (`madt` false when there was no MADT).
    pub fn new(cpus: &'a [Cpu], madt: bool) -> Self {
        MadtCpus { cpus, madt }
    }
}

impl Cpus for MadtCpus<'_> {
    fn supports(&self, cmd: Command) -> bool {
        cmd == Command::GuestGetVcpus
    }

    fn vcpus(&mut self, out: &mut Emitter<'_, GuestLogicalProcessor>) -> Result<()> {
        if !self.madt {
            out.emit(&GuestLogicalProcessor {
                logical_id: 0,
                online: true,
                can_offline: Some(false),
            });
            return Ok(());
        }
        let usable = self.cpus.iter().filter(|c| c.enabled || c.online_capable);
        for (i, c) in usable.enumerate() {
            out.emit(&GuestLogicalProcessor {
                logical_id: i as i64,
                online: c.enabled,
                can_offline: Some(false),
            });
        }
        Ok(())
    }

    fn set_vcpus(&mut self, _vcpus: List<'_, GuestLogicalProcessor>) -> Result<i64> {
        Err(Error::Unsupported)
    }

    fn cpustats(&mut self, _out: &mut Emitter<'_, GuestLinuxCpuStats>) -> Result<()> {
        Err(Error::Unsupported)
    }

    fn load(&mut self) -> Result<GuestLoadAverage> {
        Err(Error::Unsupported)
    }
}
