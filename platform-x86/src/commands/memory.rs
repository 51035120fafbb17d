//! `guest-get-memory-blocks` and `guest-get-memory-block-info` from the boot memory map.
//!
//! Linux divides RAM into hot-pluggable blocks (128 MiB on x86_64) and reports each block that
//! holds memory; the image does the same from the PVH memory map: every [`BLOCK_SIZE`]-aligned
//! block that overlaps usable RAM, indexed by address / block size. All are online and none
//! can be taken offline (the image has no memory hot-unplug), so `guest-set-memory-blocks` is
//! unsupported. Without a memory map the commands fail with upstream's "guest reported zero
//! memory blocks!".

use agent_core::commands::memory::{
    GuestMemoryBlock, GuestMemoryBlockInfo, GuestMemoryBlockResponse, Memory,
};
use agent_core::commands::{Emitter, List};
use agent_core::schema::Command;
use agent_core::{Error, Result};

use crate::pvh::{Region, RegionKind};

/// The block size reported (Linux x86_64's default).
pub const BLOCK_SIZE: u64 = 128 << 20;

/// The memory map's blocks.
pub struct MapMemory<'a> {
    regions: &'a [Region],
}

impl<'a> MapMemory<'a> {
    /// Over the boot memory map.
    pub fn new(regions: &'a [Region]) -> Self {
        MapMemory { regions }
    }

    /// The indices of the blocks that hold RAM, ascending, each once.
    pub fn blocks(&self) -> impl Iterator<Item = u64> + '_ {
        let last = self
            .regions
            .iter()
            .filter(|r| r.kind == RegionKind::Ram && r.size > 0)
            .map(|r| (r.addr.saturating_add(r.size) - 1) / BLOCK_SIZE)
            .max();
        // At most 2^20 blocks (128 TiB): bounds the walk whatever the firmware reports.
        let end = last.map_or(0, |l| l + 1).min(1 << 20);
        (0..end).filter(move |&b| {
            let (start, end) = (b * BLOCK_SIZE, (b + 1) * BLOCK_SIZE);
            self.regions.iter().any(|r| {
                r.kind == RegionKind::Ram && r.addr < end && r.addr.saturating_add(r.size) > start
            })
        })
    }
}

fn zero_blocks() -> Error {
    Error::msg(format_args!("guest reported zero memory blocks!"))
}

impl Memory for MapMemory<'_> {
    fn supports(&self, cmd: Command) -> bool {
        cmd != Command::GuestSetMemoryBlocks
    }

    fn blocks(&mut self, out: &mut Emitter<'_, GuestMemoryBlock>) -> Result<()> {
        let mut any = false;
        for b in MapMemory::blocks(self) {
            any = true;
            out.emit(&GuestMemoryBlock {
                phys_index: b,
                online: true,
                can_offline: Some(false),
            });
        }
        if any { Ok(()) } else { Err(zero_blocks()) }
    }

    fn set_blocks(
        &mut self,
        _blocks: List<'_, GuestMemoryBlock>,
        _out: &mut Emitter<'_, GuestMemoryBlockResponse>,
    ) -> Result<()> {
        Err(Error::Unsupported)
    }

    fn block_info(&mut self) -> Result<GuestMemoryBlockInfo> {
        if MapMemory::blocks(self).next().is_none() {
            return Err(zero_blocks());
        }
        Ok(GuestMemoryBlockInfo { size: BLOCK_SIZE })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram(addr: u64, size: u64) -> Region {
        Region {
            addr,
            size,
            kind: RegionKind::Ram,
        }
    }

    #[test]
    fn blocks_of_a_qemu_map() {
        // QEMU with 512 MiB: low RAM, a reserved hole, RAM from 1 MiB to just below 512 MiB.
        let map = [
            ram(0, 0x9fc00),
            Region {
                addr: 0x9fc00,
                size: 0x400,
                kind: RegionKind::Reserved,
            },
            ram(0x100000, 0x1fee0000),
            Region {
                addr: 0xfffc0000,
                size: 0x40000,
                kind: RegionKind::Reserved,
            },
        ];
        let m = MapMemory::new(&map);
        assert_eq!(m.blocks().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        // RAM above 4 GiB with a gap.
        let map = [ram(0, 0x8000_0000), ram(0x1_0000_0000, 0x4000_0000)];
        let m = MapMemory::new(&map);
        assert_eq!(
            m.blocks().collect::<Vec<_>>(),
            (0..16).chain(32..40).collect::<Vec<_>>()
        );
        assert_eq!(MapMemory::new(&[]).blocks().count(), 0);
    }
}
