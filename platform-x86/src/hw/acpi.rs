//! The few ACPI tables the agent reads: the RSDP, RSDT/XSDT, FADT (power-off and reset
//! registers, the RTC century byte), MADT (the processors) and the `\_S5` package in the DSDT
//! (the sleep type that powers off).
//!
//! Parsing works on byte slices so it is unit-tested on the host; [`discover`] maps the
//! firmware's tables (identity-mapped physical memory) and runs it. The fixed-hardware
//! registers the tables name (PM1 control, the reset register) are written here too
//! ([`enter_sleep_state`], [`write_register`]), so the power backend never touches a port. Nothing here interprets
//! AML beyond recognising the one `Name (_S5, Package () {...})` that every firmware writes the
//! same way.

use crate::pvh::{le32, le64};

/// Most processors kept from the MADT.
pub const MAX_CPUS: usize = 256;

/// Sum of bytes modulo 256 (valid tables sum to 0).
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b))
}

/// Where "RSD PTR " with a valid checksum starts in `area` (searched on 16-byte boundaries).
pub fn find_rsdp(area: &[u8]) -> Option<usize> {
    (0..area.len().saturating_sub(20)).step_by(16).find(|&off| {
        area.get(off..off + 8) == Some(b"RSD PTR ")
            && area.get(off..off + 20).is_some_and(|b| checksum(b) == 0)
    })
}

/// The RSDP's pointers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rsdp {
    /// The RSDT (32-bit entries).
    pub rsdt: u32,
    /// The XSDT (64-bit entries), ACPI 2.0+.
    pub xsdt: Option<u64>,
}

impl Rsdp {
    /// Parse an RSDP (20 bytes for revision 0, 36 for 2+).
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.get(..8)? != b"RSD PTR " || checksum(b.get(..20)?) != 0 {
            return None;
        }
        let rev = *b.get(15)?;
        let xsdt = if rev >= 2 {
            b.get(..36)
                .filter(|x| checksum(x) == 0)
                .and_then(|_| le64(b, 24))
        } else {
            None
        };
        Some(Rsdp {
            rsdt: le32(b, 16)?,
            xsdt: xsdt.filter(|&x| x != 0),
        })
    }
}

/// A system description table's signature and length, from its 36-byte header.
pub fn table_header(b: &[u8]) -> Option<([u8; 4], usize)> {
    let sig: [u8; 4] = b.get(..4)?.try_into().ok()?;
    let len = le32(b, 4)? as usize;
    (len >= 36).then_some((sig, len))
}

/// The table addresses listed by an RSDT (`entry = 4`) or XSDT (`entry = 8`).
pub fn sdt_entries(table: &[u8], entry: usize) -> impl Iterator<Item = u64> + '_ {
    table
        .get(36..)
        .unwrap_or(&[])
        .chunks_exact(entry)
        .filter_map(move |c| match entry {
            4 => le32(c, 0).map(u64::from),
            _ => le64(c, 0),
        })
}

/// An ACPI Generic Address Structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gas {
    /// 0 memory, 1 system I/O, 2 PCI configuration.
    pub space: u8,
    /// Register width in bits.
    pub bit_width: u8,
    /// The address.
    pub address: u64,
}

/// What the FADT says about power and the RTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fadt {
    /// The DSDT's physical address.
    pub dsdt: u64,
    /// PM1a control block I/O port.
    pub pm1a_cnt: u16,
    /// PM1b control block I/O port (0 if none).
    pub pm1b_cnt: u16,
    /// SMI command port and the value that enables ACPI mode.
    pub smi_cmd: u32,
    /// Value written to `smi_cmd` to enable ACPI.
    pub acpi_enable: u8,
    /// The CMOS index of the century, if any.
    pub century: Option<u8>,
    /// The reset register and value, if the firmware declares one.
    pub reset: Option<(Gas, u8)>,
}

impl Fadt {
    /// Parse a FADT (`FACP`).
    pub fn parse(t: &[u8]) -> Option<Self> {
        if t.get(..4)? != b"FACP" {
            return None;
        }
        let len = le32(t, 4)? as usize;
        let t = t.get(..len.min(t.len()))?;
        let mut dsdt = le32(t, 40).map(u64::from).unwrap_or(0);
        if let Some(x) = le64(t, 140).filter(|&x| x != 0) {
            dsdt = x;
        }
        let flags = le32(t, 112).unwrap_or(0);
        let reset = if flags & (1 << 10) != 0 {
            let gas = Gas {
                space: *t.get(116)?,
                bit_width: *t.get(117)?,
                address: le64(t, 120)?,
            };
            Some((gas, *t.get(128)?))
        } else {
            None
        };
        Some(Fadt {
            dsdt,
            pm1a_cnt: le32(t, 64).unwrap_or(0) as u16,
            pm1b_cnt: le32(t, 68).unwrap_or(0) as u16,
            smi_cmd: le32(t, 48).unwrap_or(0),
            acpi_enable: t.get(52).copied().unwrap_or(0),
            century: t.get(108).copied().filter(|&c| c != 0),
            reset,
        })
    }
}

/// A processor from the MADT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    /// The ACPI processor UID.
    pub uid: u32,
    /// The local APIC (or x2APIC) ID.
    pub apic_id: u32,
    /// Enabled by firmware (present and usable now).
    pub enabled: bool,
    /// Could be enabled later (hot-pluggable).
    pub online_capable: bool,
}

/// The processors of a MADT (`APIC`): local APIC (type 0) and x2APIC (type 9) entries.
pub fn madt_cpus(t: &[u8]) -> impl Iterator<Item = Cpu> + '_ {
    let ok = t.get(..4) == Some(b"APIC");
    let len = le32(t, 4).unwrap_or(0) as usize;
    let body = if ok {
        t.get(44..len.min(t.len())).unwrap_or(&[])
    } else {
        &[]
    };
    let mut off = 0usize;
    core::iter::from_fn(move || {
        loop {
            let kind = *body.get(off)?;
            let elen = *body.get(off + 1)? as usize;
            if elen < 2 {
                return None;
            }
            let e = body.get(off..off + elen)?;
            off += elen;
            match kind {
                0 if elen >= 8 => {
                    let flags = le32(e, 4)?;
                    return Some(Cpu {
                        uid: *e.get(2)? as u32,
                        apic_id: *e.get(3)? as u32,
                        enabled: flags & 1 != 0,
                        online_capable: flags & 2 != 0,
                    });
                }
                9 if elen >= 16 => {
                    let flags = le32(e, 8)?;
                    return Some(Cpu {
                        uid: le32(e, 12)?,
                        apic_id: le32(e, 4)?,
                        enabled: flags & 1 != 0,
                        online_capable: flags & 2 != 0,
                    });
                }
                _ => continue,
            }
        }
    })
}

/// `SLP_TYPa`/`SLP_TYPb` from `Name (_S5, Package () { a, b, ... })` in AML.
pub fn find_s5(aml: &[u8]) -> Option<(u8, u8)> {
    let mut i = 0;
    while let Some(pos) = aml.get(i..)?.windows(4).position(|w| w == b"_S5_") {
        let at = i + pos;
        i = at + 4;
        // NameOp (0x08), optionally followed by the root prefix '\'.
        let name_op = match at.checked_sub(1).and_then(|p| aml.get(p)) {
            Some(0x08) => true,
            Some(b'\\') => at.checked_sub(2).and_then(|p| aml.get(p)) == Some(&0x08),
            _ => false,
        };
        if !name_op || aml.get(at + 4) != Some(&0x12) {
            continue;
        }
        // PkgLength: the top two bits of the lead byte count the bytes that follow it.
        let lead = *aml.get(at + 5)?;
        let mut p = at + 6 + (lead >> 6) as usize;
        let _num_elements = *aml.get(p)?;
        p += 1;
        let mut vals = [0u8; 2];
        for v in &mut vals {
            let (val, used) = match *aml.get(p)? {
                0x00 => (0, 1),
                0x01 => (1, 1),
                0xff => (0xff, 1),
                0x0a => (*aml.get(p + 1)?, 2),
                0x0b => (*aml.get(p + 1)?, 3),
                0x0c => (*aml.get(p + 1)?, 5),
                _ => return None,
            };
            *v = val;
            p += used;
        }
        return Some((vals[0], vals[1]));
    }
    None
}

/// What the image learned from ACPI.
#[derive(Clone, Copy)]
pub struct Info {
    /// The FADT, if found.
    pub fadt: Option<Fadt>,
    /// `\_S5` sleep types, if found.
    pub s5: Option<(u8, u8)>,
    cpus: [Cpu; MAX_CPUS],
    cpu_count: usize,
    /// Whether a MADT was found.
    pub madt: bool,
}

impl Info {
    /// Nothing found.
    pub const fn empty() -> Self {
        const NONE: Cpu = Cpu {
            uid: 0,
            apic_id: 0,
            enabled: false,
            online_capable: false,
        };
        Info {
            fadt: None,
            s5: None,
            cpus: [NONE; MAX_CPUS],
            cpu_count: 0,
            madt: false,
        }
    }

    /// The processors, in MADT order.
    pub fn cpus(&self) -> &[Cpu] {
        self.cpus.get(..self.cpu_count).unwrap_or(&[])
    }

    /// Fill in from a set of tables; `table(addr)` maps one table at a physical address.
    pub fn from_tables(rsdp: &[u8], table: &dyn Fn(u64) -> Option<&'static [u8]>) -> Self {
        let mut info = Info::empty();
        let Some(r) = Rsdp::parse(rsdp) else {
            return info;
        };
        let (root, width) = match r.xsdt.and_then(table) {
            Some(x) => (x, 8),
            None => match table(r.rsdt as u64) {
                Some(t) => (t, 4),
                None => return info,
            },
        };
        for addr in sdt_entries(root, width) {
            let Some(t) = table(addr) else { continue };
            match t.get(..4) {
                Some(b"FACP") => {
                    info.fadt = Fadt::parse(t);
                    if let Some(dsdt) = info.fadt.and_then(|f| table(f.dsdt)) {
                        info.s5 = find_s5(dsdt.get(36..).unwrap_or(&[]));
                    }
                }
                Some(b"APIC") => {
                    info.madt = true;
                    for (slot, cpu) in info.cpus.iter_mut().zip(madt_cpus(t)) {
                        *slot = cpu;
                        info.cpu_count += 1;
                    }
                }
                _ => {}
            }
        }
        info
    }
}

/// Map the table at physical `addr` (its header says how long it is) if its checksum holds.
fn map_table(addr: u64) -> Option<&'static [u8]> {
    // SAFETY: firmware tables are in RAM the firmware reserved (E820 ACPI or reserved), below
    // 4 GiB and identity-mapped; nothing writes them.
    let head = unsafe { super::mem::phys_bytes(addr, 36) }?;
    let (_, len) = table_header(head)?;
    if len > 1 << 20 {
        return None;
    }
    // SAFETY: as above, for the table's full declared length.
    let t = unsafe { super::mem::phys_bytes(addr, len) }?;
    (checksum(t) == 0).then_some(t)
}

/// Find the RSDP (the PVH loader's pointer if given, else the BIOS area search) and read the
/// tables.
pub fn discover(hint: Option<u64>) -> Info {
    let rsdp = hint
        // SAFETY: the loader's RSDP pointer names firmware memory below 1 MiB or in ACPI RAM.
        .and_then(|a| unsafe { super::mem::phys_bytes(a, 36) })
        .filter(|b| Rsdp::parse(b).is_some())
        .or_else(|| {
            // SAFETY: 0xE0000..0x100000 is the BIOS read-only area, always mapped and stable.
            let area = unsafe { super::mem::phys_bytes(0xe0000, 0x20000) }?;
            let off = find_rsdp(area)?;
            area.get(off..off + 36)
        });
    match rsdp {
        Some(r) => Info::from_tables(r, &map_table),
        None => Info::empty(),
    }
}

/// `SLP_EN` in a PM1 control register: enter the sleep type written with it.
const SLP_EN: u16 = 1 << 13;

/// Enter the sleep state whose `SLP_TYPa`/`SLP_TYPb` values are `slp_typ` (from `\_S5`: soft
/// off) through the FADT's PM1a (and PM1b) control block, first switching the firmware to ACPI
/// mode through its SMI command port if it is not there yet. Returns only if the machine is
/// still running; the caller waits and reports.
pub fn enter_sleep_state(f: &Fadt, slp_typ: (u8, u8)) {
    // SAFETY: PM1a/PM1b control and the SMI command port are the ACPI fixed-hardware
    // registers the FADT names for exactly this purpose; enabling ACPI mode and writing
    // SLP_TYP|SLP_EN is the documented sleep sequence.
    unsafe {
        if super::inw(f.pm1a_cnt) & 1 == 0 && f.smi_cmd != 0 && f.acpi_enable != 0 {
            super::outb(f.smi_cmd as u16, f.acpi_enable);
            for _ in 0..300 {
                if super::inw(f.pm1a_cnt) & 1 != 0 {
                    break;
                }
                super::tsc::delay_ms(1);
            }
        }
        super::outw(f.pm1a_cnt, ((slp_typ.0 as u16 & 7) << 10) | SLP_EN);
        if f.pm1b_cnt != 0 {
            super::outw(f.pm1b_cnt, ((slp_typ.1 as u16 & 7) << 10) | SLP_EN);
        }
    }
}

/// Write `value` to the register at an ACPI generic address (the FADT's reset register).
pub fn write_register(gas: Gas, value: u8) {
    match gas.space {
        // SAFETY: the FADT's reset register in system I/O space; writing the reset value is
        // what it is declared for.
        1 => unsafe { super::outb(gas.address as u16, value) },
        0 if gas.address != 0 && gas.address < super::mem::MAPPED_LIMIT => {
            // SAFETY: the FADT's memory-mapped reset register, identity-mapped; a volatile
            // byte write of the declared reset value.
            unsafe { (gas.address as usize as *mut u8).write_volatile(value) }
        }
        2 => {
            // PCI configuration space of bus 0: device, function, offset in the address.
            let a = super::pci::Address {
                bus: 0,
                device: (gas.address >> 32) as u8,
                function: (gas.address >> 16) as u8,
            };
            let off = gas.address as u8;
            let shift = (off & 3) * 8;
            let old = super::pci::read32(a, off);
            super::pci::write32(a, off, (old & !(0xff << shift)) | (value as u32) << shift);
        }
        _ => {}
    }
}

/// Fill in a table's checksum byte (offset 9) so the table sums to 0. For tests and tools.
pub fn fix_checksum(t: &mut [u8]) {
    if let Some(c) = t.get_mut(9) {
        *c = 0;
    }
    let sum = checksum(t);
    if let Some(c) = t.get_mut(9) {
        *c = 0u8.wrapping_sub(sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(sig: &[u8; 4], len: usize) -> Vec<u8> {
        let mut t = vec![0u8; len];
        t[..4].copy_from_slice(sig);
        t[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        t
    }

    #[test]
    fn s5_forms() {
        // QEMU's DSDT: Name (_S5, Package (0x04) { Zero, Zero, Zero, Zero })
        let qemu = [
            0x10, 0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0, 0, 0, 0,
        ];
        assert_eq!(find_s5(&qemu), Some((0, 0)));
        // Name (\_S5, Package (0x02) { 0x05, 0x07 }) with byte prefixes.
        let other = [
            0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x08, 0x02, 0x0a, 5, 0x0a, 7,
        ];
        assert_eq!(find_s5(&other), Some((5, 7)));
        // A reference to _S5_ that is not its definition is skipped.
        let refonly = [0x70, b'_', b'S', b'5', b'_', 0x60];
        assert_eq!(find_s5(&refonly), None);
    }

    #[test]
    fn fadt_fields() {
        let mut t = header(b"FACP", 276);
        t[40..44].copy_from_slice(&0x7fe0040u32.to_le_bytes());
        t[64..68].copy_from_slice(&0x604u32.to_le_bytes());
        t[108] = 0x32;
        t[112..116].copy_from_slice(&(1u32 << 10).to_le_bytes());
        t[116] = 1;
        t[117] = 8;
        t[120..128].copy_from_slice(&0xcf9u64.to_le_bytes());
        t[128] = 0x06;
        let f = Fadt::parse(&t).expect("parses");
        assert_eq!(f.dsdt, 0x7fe0040);
        assert_eq!(f.pm1a_cnt, 0x604);
        assert_eq!(f.century, Some(0x32));
        assert_eq!(
            f.reset,
            Some((
                Gas {
                    space: 1,
                    bit_width: 8,
                    address: 0xcf9
                },
                6
            ))
        );
        t[140..148].copy_from_slice(&0x0001_2345_6789_u64.to_le_bytes());
        assert_eq!(Fadt::parse(&t).expect("parses").dsdt, 0x0001_2345_6789);
        assert!(Fadt::parse(&header(b"APIC", 44)).is_none());
    }

    #[test]
    fn madt_processors() {
        let mut t = header(b"APIC", 44);
        t.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0]); // LAPIC uid 0 id 0 enabled
        t.extend_from_slice(&[1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // IOAPIC: skipped
        t.extend_from_slice(&[0, 8, 1, 1, 2, 0, 0, 0]); // uid 1 online-capable only
        let mut x2 = vec![9, 16, 0, 0];
        x2.extend_from_slice(&300u32.to_le_bytes());
        x2.extend_from_slice(&1u32.to_le_bytes());
        x2.extend_from_slice(&7u32.to_le_bytes());
        t.extend_from_slice(&x2);
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        let cpus: Vec<_> = madt_cpus(&t).collect();
        assert_eq!(cpus.len(), 3);
        assert!(cpus[0].enabled && !cpus[1].enabled && cpus[1].online_capable);
        assert_eq!((cpus[2].uid, cpus[2].apic_id), (7, 300));
        t.push(0); // a zero-length trailing entry ends the walk without panicking
        assert_eq!(madt_cpus(&t).count(), 3);
    }

    #[test]
    fn whole_tree() {
        use std::collections::HashMap;
        let mut dsdt = header(b"DSDT", 36);
        dsdt.extend_from_slice(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0, 0, 0, 0]);
        let dl = dsdt.len() as u32;
        dsdt[4..8].copy_from_slice(&dl.to_le_bytes());
        let mut facp = header(b"FACP", 116);
        facp[40..44].copy_from_slice(&0x3000u32.to_le_bytes());
        facp[64..68].copy_from_slice(&0xb004u32.to_le_bytes());
        let mut madt = header(b"APIC", 44);
        madt.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0, 0, 8, 1, 1, 1, 0, 0, 0]);
        let ml = madt.len() as u32;
        madt[4..8].copy_from_slice(&ml.to_le_bytes());
        let mut rsdt = header(b"RSDT", 44);
        rsdt[36..40].copy_from_slice(&0x1000u32.to_le_bytes());
        rsdt[40..44].copy_from_slice(&0x2000u32.to_le_bytes());
        let mut rsdp = vec![0u8; 20];
        rsdp[..8].copy_from_slice(b"RSD PTR ");
        rsdp[16..20].copy_from_slice(&0x4000u32.to_le_bytes());
        let s = checksum(&rsdp);
        rsdp[8] = 0u8.wrapping_sub(s);
        let tables: HashMap<u64, &'static [u8]> = [
            (0x1000, facp),
            (0x2000, madt),
            (0x3000, dsdt),
            (0x4000, rsdt),
        ]
        .into_iter()
        .map(|(a, t)| (a, &*Box::leak(t.into_boxed_slice())))
        .collect();
        let info = Info::from_tables(&rsdp, &|a| tables.get(&a).copied());
        assert_eq!(info.cpus().len(), 2);
        assert_eq!(info.fadt.map(|f| f.pm1a_cnt), Some(0xb004));
        assert_eq!(info.s5, Some((0, 0)));
        let mut area = vec![0u8; 64];
        area[32..52].copy_from_slice(&rsdp);
        assert_eq!(find_rsdp(&area), Some(32));
    }
}
