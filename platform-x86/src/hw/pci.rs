//! PCI configuration space through the legacy 0xCF8/0xCFC mechanism, which both `pc` (i440FX)
//! and `q35` (whose MMCONFIG is optional to use) provide, and a scan of every bus.

/// A function's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    /// Bus 0..=255.
    pub bus: u8,
    /// Device 0..=31.
    pub device: u8,
    /// Function 0..=7.
    pub function: u8,
}

impl Address {
    /// The CONFIG_ADDRESS value for register `offset`.
    pub fn config_address(&self, offset: u8) -> u32 {
        0x8000_0000
            | (self.bus as u32) << 16
            | ((self.device & 0x1f) as u32) << 11
            | ((self.function & 0x7) as u32) << 8
            | (offset & 0xfc) as u32
    }
}

/// Read the dword at `offset`.
pub fn read32(a: Address, offset: u8) -> u32 {
    // SAFETY: 0xCF8/0xCFC are the PC's PCI configuration ports; a configuration read has no
    // side effect on any device this image drives.
    unsafe {
        super::outl(0xcf8, a.config_address(offset));
        super::inl(0xcfc)
    }
}

/// Write the dword at `offset`.
pub fn write32(a: Address, offset: u8, value: u32) {
    // SAFETY: as `read32`; callers write only registers of devices they own (command register,
    // BARs are left as the firmware set them).
    unsafe {
        super::outl(0xcf8, a.config_address(offset));
        super::outl(0xcfc, value);
    }
}

/// Read the word at `offset`.
pub fn read16(a: Address, offset: u8) -> u16 {
    (read32(a, offset) >> ((offset & 2) * 8)) as u16
}

/// Read the byte at `offset`.
pub fn read8(a: Address, offset: u8) -> u8 {
    (read32(a, offset) >> ((offset & 3) * 8)) as u8
}

/// The physical address of memory BAR `bar` of `a` (32- or 64-bit); `None` for an I/O BAR.
pub fn memory_bar(a: Address, bar: u8) -> Option<u64> {
    if bar > 5 {
        return None;
    }
    let off = 0x10 + 4 * bar;
    let lo = read32(a, off);
    if lo & 1 != 0 {
        return None; // an I/O BAR
    }
    let hi = if lo & 0x6 == 0x4 {
        read32(a, off + 4) as u64
    } else {
        0
    };
    Some(hi << 32 | (lo & !0xf) as u64)
}

/// What the scan reports about a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    /// Where it is.
    pub addr: Address,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Class, subclass, programming interface.
    pub class: [u8; 3],
    /// Subsystem ID (for virtio legacy devices: the device type).
    pub subsystem: u16,
}

/// Call `f` for every function on every bus, stopping early if `f` returns `false`. (A `dyn`
/// callback: one copy of the walk in the image, whoever calls it.)
pub fn scan(f: &mut dyn FnMut(&Function) -> bool) {
    for bus in 0..=255u8 {
        for device in 0..32u8 {
            let a0 = Address {
                bus,
                device,
                function: 0,
            };
            if read16(a0, 0) == 0xffff {
                continue;
            }
            let multi = read8(a0, 0x0e) & 0x80 != 0;
            let functions = if multi { 8 } else { 1 };
            for function in 0..functions {
                let addr = Address {
                    bus,
                    device,
                    function,
                };
                let id = read32(addr, 0);
                if id & 0xffff == 0xffff {
                    continue;
                }
                let class = read32(addr, 8);
                let header_type = read8(addr, 0x0e) & 0x7f;
                let subsystem = if header_type == 0 {
                    read16(addr, 0x2e)
                } else {
                    0
                };
                let func = Function {
                    addr,
                    vendor: id as u16,
                    device: (id >> 16) as u16,
                    class: [(class >> 24) as u8, (class >> 16) as u8, (class >> 8) as u8],
                    subsystem,
                };
                if !f(&func) {
                    return;
                }
            }
        }
    }
}

/// A short description of a PCI class code.
pub fn class_name(class: [u8; 3]) -> &'static str {
    match (class[0], class[1]) {
        (0x01, 0x01) => "IDE controller",
        (0x01, 0x06) => "SATA controller",
        (0x01, 0x08) => "NVMe controller",
        (0x01, _) => "storage controller",
        (0x02, _) => "network controller",
        (0x03, _) => "display controller",
        (0x06, 0x00) => "host bridge",
        (0x06, 0x01) => "ISA bridge",
        (0x06, 0x04) => "PCI bridge",
        (0x06, _) => "bridge",
        (0x07, 0x80) | (0x07, 0x00) => "communication controller",
        (0x0c, 0x03) => "USB controller",
        (0x0c, 0x05) => "SMBus controller",
        (0xff, _) => "unassigned class",
        _ => "device",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_addresses() {
        let a = Address {
            bus: 1,
            device: 3,
            function: 2,
        };
        assert_eq!(a.config_address(0x10), 0x8001_1a10);
        assert_eq!(a.config_address(0x13), 0x8001_1a10, "dword aligned");
        assert_eq!(class_name([0x06, 0x00, 0x00]), "host bridge");
    }
}
