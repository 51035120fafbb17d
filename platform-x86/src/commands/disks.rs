//! `guest-get-fsinfo`, `guest-get-disks` and `guest-get-diskstats`: no block driver and no
//! mounted filesystem, so all three lists are empty (the RAM file store of
//! [`super::files`] is not a block device). KubeVirt polls fsinfo and expects an answer.

use agent_core::Result;
use agent_core::commands::Emitter;
use agent_core::commands::disks::{Disks, GuestDiskInfo, GuestDiskStatsInfo, GuestFilesystemInfo};

/// No disks.
pub struct NoDisks;

impl Disks for NoDisks {
    fn fsinfo(&mut self, _out: &mut Emitter<'_, GuestFilesystemInfo<'static>>) -> Result<()> {
        Ok(())
    }

    fn disks(&mut self, _out: &mut Emitter<'_, GuestDiskInfo<'static>>) -> Result<()> {
        Ok(())
    }

    fn diskstats(&mut self, _out: &mut Emitter<'_, GuestDiskStatsInfo<'static>>) -> Result<()> {
        Ok(())
    }
}
