//! The PVH boot information (`struct hvm_start_info`, Xen's `arch-x86/hvm/start_info.h`).
//!
//! The loader leaves it, the command line and the memory map somewhere in low RAM that nothing
//! reserves for us, so [`BootInfo::parse`] copies what the image needs into a `static` before
//! anything else can overwrite it.

/// `XEN_HVM_START_MAGIC_VALUE`.
pub const MAGIC: u32 = 0x336e_c578;
/// Most memory-map entries kept.
pub const MAX_REGIONS: usize = 64;
/// Longest command line kept (longer ones are cut).
pub const CMDLINE_CAP: usize = 1024;

/// `XEN_HVM_MEMMAP_TYPE_*` (the E820 types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// 1: usable RAM.
    Ram,
    /// 2: reserved.
    Reserved,
    /// 3: ACPI tables, reclaimable.
    AcpiReclaimable,
    /// 4: ACPI NVS.
    AcpiNvs,
    /// 5: unusable.
    Unusable,
    /// 7: persistent memory.
    Persistent,
    /// Anything else.
    Other(u32),
}

impl RegionKind {
    /// From the E820 type number.
    pub fn from_type(t: u32) -> Self {
        match t {
            1 => RegionKind::Ram,
            2 => RegionKind::Reserved,
            3 => RegionKind::AcpiReclaimable,
            4 => RegionKind::AcpiNvs,
            5 => RegionKind::Unusable,
            7 => RegionKind::Persistent,
            other => RegionKind::Other(other),
        }
    }

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            RegionKind::Ram => "ram",
            RegionKind::Reserved => "reserved",
            RegionKind::AcpiReclaimable => "acpi",
            RegionKind::AcpiNvs => "acpi-nvs",
            RegionKind::Unusable => "unusable",
            RegionKind::Persistent => "pmem",
            RegionKind::Other(_) => "other",
        }
    }
}

/// One memory-map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Physical start.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// What it is.
    pub kind: RegionKind,
}

impl Region {
    const EMPTY: Region = Region {
        addr: 0,
        size: 0,
        kind: RegionKind::Reserved,
    };
}

/// What the image keeps of the start info.
pub struct BootInfo {
    cmdline: [u8; CMDLINE_CAP],
    cmdline_len: usize,
    /// The ACPI RSDP's physical address, if the loader gave one.
    pub rsdp: Option<u64>,
    regions: [Region; MAX_REGIONS],
    region_count: usize,
    /// The start info's version field.
    pub version: u32,
}

impl BootInfo {
    /// No information (start info missing or bad magic).
    pub const fn empty() -> Self {
        BootInfo {
            cmdline: [0; CMDLINE_CAP],
            cmdline_len: 0,
            rsdp: None,
            regions: [Region::EMPTY; MAX_REGIONS],
            region_count: 0,
            version: 0,
        }
    }

    /// Parse a start info: `start` is its first 56 bytes, and `mem(addr, len)` reads physical
    /// memory (the command line and the memory map live elsewhere).
    pub fn parse(start: &[u8], mem: &dyn Fn(u64, usize) -> Option<&'static [u8]>) -> Self {
        let mut info = BootInfo::empty();
        if le32(start, 0) != Some(MAGIC) {
            return info;
        }
        info.version = le32(start, 4).unwrap_or(0);
        if let Some(p) = le64(start, 24).filter(|&p| p != 0) {
            // The command line is NUL-terminated; read what fits and stop at the NUL.
            if let Some(bytes) = mem(p, CMDLINE_CAP) {
                let n = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                let text = bytes.get(..n).unwrap_or(&[]);
                let text = match core::str::from_utf8(text) {
                    Ok(s) => s,
                    Err(e) => core::str::from_utf8(text.get(..e.valid_up_to()).unwrap_or(&[]))
                        .unwrap_or(""),
                };
                let n = text.len().min(CMDLINE_CAP);
                if let (Some(dst), Some(src)) =
                    (info.cmdline.get_mut(..n), text.as_bytes().get(..n))
                {
                    dst.copy_from_slice(src);
                    info.cmdline_len = n;
                }
            }
        }
        info.rsdp = le64(start, 32).filter(|&p| p != 0);
        if info.version >= 1 {
            let map = le64(start, 40).unwrap_or(0);
            let entries = le32(start, 48).unwrap_or(0) as usize;
            if map != 0 && entries > 0 {
                let entries = entries.min(MAX_REGIONS);
                if let Some(bytes) = mem(map, entries * 24) {
                    info.region_count = parse_memmap(bytes, &mut info.regions);
                }
            }
        }
        info
    }

    /// The kernel command line.
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(self.cmdline.get(..self.cmdline_len).unwrap_or(&[])).unwrap_or("")
    }

    /// The memory map, in loader order.
    pub fn regions(&self) -> &[Region] {
        self.regions.get(..self.region_count).unwrap_or(&[])
    }
}

/// Parse `hvm_memmap_table_entry` records (24 bytes each) into `out`; returns how many.
pub fn parse_memmap(bytes: &[u8], out: &mut [Region]) -> usize {
    let mut n = 0;
    for (rec, slot) in bytes.chunks_exact(24).zip(out.iter_mut()) {
        let (Some(addr), Some(size), Some(t)) = (le64(rec, 0), le64(rec, 8), le32(rec, 16)) else {
            break;
        };
        *slot = Region {
            addr,
            size,
            kind: RegionKind::from_type(t),
        };
        n += 1;
    }
    n
}

/// A little-endian u32 at `off`.
pub fn le32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

/// A little-endian u64 at `off`.
pub fn le64(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

/// A little-endian u16 at `off`.
pub fn le16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes(s.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    static CMDLINE: &[u8] = b"qga.transport=com2 qga.hostname=box\0garbage";
    static MAP: [u8; 48] = {
        let mut m = [0u8; 48];
        // Entry 0: 0..0x9fc00 RAM; entry 1: 0x100000 + 0x7f00000 RAM.
        m[9] = 0xfc;
        m[10] = 0x09;
        m[16] = 1;
        m[24 + 2] = 0x10;
        m[24 + 8 + 3] = 0xf0;
        m[24 + 8 + 2] = 0x00;
        m[24 + 8 + 3] = 0x07;
        m[24 + 16] = 1;
        m
    };

    fn mem(addr: u64, len: usize) -> Option<&'static [u8]> {
        match addr {
            0x1000 => Some(&CMDLINE[..len.min(CMDLINE.len())]),
            0x2000 => Some(&MAP[..len.min(MAP.len())]),
            _ => None,
        }
    }

    #[test]
    fn parses_start_info() {
        let mut s = [0u8; 56];
        s[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        s[4..8].copy_from_slice(&1u32.to_le_bytes());
        s[24..32].copy_from_slice(&0x1000u64.to_le_bytes());
        s[32..40].copy_from_slice(&0xf5000u64.to_le_bytes());
        s[40..48].copy_from_slice(&0x2000u64.to_le_bytes());
        s[48..52].copy_from_slice(&2u32.to_le_bytes());
        let info = BootInfo::parse(&s, &mem);
        assert_eq!(info.cmdline(), "qga.transport=com2 qga.hostname=box");
        assert_eq!(info.rsdp, Some(0xf5000));
        assert_eq!(info.regions().len(), 2);
        assert_eq!(
            info.regions()[0],
            Region {
                addr: 0,
                size: 0x9fc00,
                kind: RegionKind::Ram
            }
        );
        assert_eq!(info.regions()[1].addr, 0x100000);
        assert_eq!(info.regions()[1].size, 0x0700_0000);
    }

    #[test]
    fn bad_magic_gives_nothing() {
        let s = [0u8; 56];
        let info = BootInfo::parse(&s, &mem);
        assert_eq!(info.cmdline(), "");
        assert!(info.regions().is_empty());
        assert!(info.rsdp.is_none());
    }
}
