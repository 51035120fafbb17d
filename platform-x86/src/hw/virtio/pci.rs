//! The virtio 1.0 ("modern") PCI transport: the device's vendor capabilities name where in
//! its memory BARs the common configuration, the notification doorbells, the ISR byte and the
//! device-specific configuration lie.
//!
//! Only the modern interface is spoken. QEMU's `virtio-serial-pci` offers it both as a
//! transitional device on a root bus (`pc`, `q35`) and as the modern-only device it becomes
//! behind a PCIe root port, which is where libvirt and KubeVirt put it on `q35`. The BARs
//! must lie below 4 GiB (the identity map's end), which is where SeaBIOS places them.

use super::{Error, QueueNotify, QueueRings, Transport};
use crate::hw::{mem, pci};

/// Red Hat's virtio vendor ID.
pub const VENDOR: u16 = 0x1af4;
/// The transitional console's device ID (legacy interface available).
pub const DEVICE_CONSOLE_LEGACY: u16 = 0x1003;
/// The modern-only console's device ID.
pub const DEVICE_CONSOLE_MODERN: u16 = 0x1043;

// Common configuration registers (virtio 1.0, 4.1.4.3).
const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const DEVICE_STATUS: u64 = 0x14;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_NOTIFY_OFF: u64 = 0x1e;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;
/// The common configuration block's size, with room for virtio 1.2's additions.
const COMMON_LEN: u64 = 0x40;

/// Capability types (`cfg_type`).
const CAP_COMMON: usize = 1;
const CAP_NOTIFY: usize = 2;
const CAP_ISR: usize = 3;
const CAP_DEVICE: usize = 4;

/// One virtio vendor capability: where its structure lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    /// The BAR that holds it.
    pub bar: u8,
    /// Its offset in the BAR.
    pub offset: u32,
    /// Its length.
    pub length: u32,
    /// For the notify capability, the notify offset multiplier; else 0.
    pub extra: u32,
}

/// The first virtio vendor capability of each `cfg_type` (1 common, 2 notify, 3 ISR,
/// 4 device-specific), read through a function's configuration space accessors.
pub fn capabilities(read8: &dyn Fn(u8) -> u8, read32: &dyn Fn(u8) -> u32) -> [Option<Cap>; 5] {
    let mut caps = [None; 5];
    // Status bit 4: a capability list exists.
    if read8(0x06) & 0x10 == 0 {
        return caps;
    }
    let mut ptr = read8(0x34) & 0xfc;
    let mut hops = 0;
    while ptr >= 0x40 && hops < 48 {
        hops += 1;
        if read8(ptr) == 0x09 {
            let cfg_type = read8(ptr + 3);
            let cap = Cap {
                bar: read8(ptr + 4),
                offset: read32(ptr.wrapping_add(8)),
                length: read32(ptr.wrapping_add(12)),
                extra: if cfg_type as usize == CAP_NOTIFY {
                    read32(ptr.wrapping_add(16))
                } else {
                    0
                },
            };
            if let Some(slot) = caps.get_mut(cfg_type as usize)
                && slot.is_none()
            {
                *slot = Some(cap);
            }
        }
        ptr = read8(ptr + 1) & 0xfc;
    }
    caps
}

/// Find the first virtio function with device ID `transitional` or `modern` (a device type
/// has one ID for each interface; a type without a transitional device can pass its modern ID
/// twice).
pub fn find(transitional: u16, modern: u16) -> Result<pci::Function, Error> {
    let mut found = None;
    pci::scan(&mut |f| {
        if f.vendor == VENDOR && (f.device == transitional || f.device == modern) {
            found = Some(*f);
            return false;
        }
        true
    });
    found.ok_or(Error::NotFound)
}

/// A device's registers, reached through its PCI capabilities: all in identity-mapped
/// memory BARs below 4 GiB (checked by [`PciTransport::new`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciTransport {
    addr: pci::Address,
    common: u64,
    notify: u64,
    notify_mult: u32,
}

/// The address of capability `c`'s structure of `len` bytes, if it lies in a memory BAR
/// inside the identity map.
fn locate(a: pci::Address, c: Cap, len: u64) -> Option<u64> {
    let base = pci::memory_bar(a, c.bar).filter(|&b| b != 0)?;
    let at = base + c.offset as u64;
    (at + len <= mem::MAPPED_LIMIT).then_some(at)
}

impl PciTransport {
    /// Locate the registers of function `f` and enable its memory decoding and bus
    /// mastering (the device DMAs into the rings).
    pub fn new(f: &pci::Function) -> Result<PciTransport, Error> {
        let a = f.addr;
        let caps = capabilities(&|off| pci::read8(a, off), &|off| pci::read32(a, off));
        let (Some(c), Some(n)) = (caps[CAP_COMMON], caps[CAP_NOTIFY]) else {
            return Err(Error::NoCapabilities);
        };
        let (Some(cb), Some(nb)) = (pci::memory_bar(a, c.bar), pci::memory_bar(a, n.bar)) else {
            return Err(Error::NoCapabilities);
        };
        let (common, notify) = (cb + c.offset as u64, nb + n.offset as u64);
        if cb == 0
            || nb == 0
            || common + COMMON_LEN > mem::MAPPED_LIMIT
            || notify >= mem::MAPPED_LIMIT
        {
            return Err(Error::BarUnmapped);
        }
        let cmd = pci::read32(a, 0x04);
        pci::write32(a, 0x04, (cmd & 0xffff) | 0x06);
        Ok(PciTransport {
            addr: a,
            common,
            notify,
            notify_mult: n.extra,
        })
    }

    /// Capability `cfg_type`, looked up again: the ISR byte and the device-specific
    /// configuration are read rarely (never on the data path), so the transport does not
    /// carry them.
    fn capability(&self, cfg_type: usize) -> Option<Cap> {
        let a = self.addr;
        capabilities(&|off| pci::read8(a, off), &|off| pci::read32(a, off))
            .get(cfg_type)
            .copied()
            .flatten()
    }

    /// The address of the `size`-byte, `size`-aligned field at `offset` in the
    /// device-specific configuration, if it lies inside it and is mapped.
    fn config_field(&self, offset: u32, size: u32) -> Option<u64> {
        let cap = self.capability(CAP_DEVICE)?;
        if !offset.is_multiple_of(size) || offset.checked_add(size)? > cap.length {
            return None;
        }
        locate(self.addr, cap, cap.length as u64).map(|base| base + offset as u64)
    }

    /// The function's PCI address.
    pub fn pci_address(&self) -> pci::Address {
        self.addr
    }

    fn w8(&self, off: u64, v: u8) {
        // SAFETY: `common` is the device's common configuration block (from its PCI
        // capability, inside a memory BAR below 4 GiB, identity-mapped, checked by `new`);
        // `off` is one of the register offsets above.
        unsafe { ((self.common + off) as usize as *mut u8).write_volatile(v) }
    }
    fn r8(&self, off: u64) -> u8 {
        // SAFETY: as `w8`.
        unsafe { ((self.common + off) as usize as *const u8).read_volatile() }
    }
    fn w16(&self, off: u64, v: u16) {
        // SAFETY: as `w8`; 16-bit registers are 2-aligned.
        unsafe { ((self.common + off) as usize as *mut u16).write_volatile(v) }
    }
    fn r16(&self, off: u64) -> u16 {
        // SAFETY: as `w16`.
        unsafe { ((self.common + off) as usize as *const u16).read_volatile() }
    }
    fn w32(&self, off: u64, v: u32) {
        // SAFETY: as `w8`; 32-bit registers are 4-aligned.
        unsafe { ((self.common + off) as usize as *mut u32).write_volatile(v) }
    }
    fn r32(&self, off: u64) -> u32 {
        // SAFETY: as `w32`.
        unsafe { ((self.common + off) as usize as *const u32).read_volatile() }
    }
    /// A 64-bit register as two 32-bit halves (the spec allows it; QEMU accepts it).
    fn w64(&self, off: u64, v: u64) {
        self.w32(off, v as u32);
        self.w32(off + 4, (v >> 32) as u32);
    }
}

impl Transport for PciTransport {
    fn status(&self) -> u8 {
        self.r8(DEVICE_STATUS)
    }

    fn set_status(&self, status: u8) {
        self.w8(DEVICE_STATUS, status);
    }

    fn device_features(&self) -> u64 {
        self.w32(DEVICE_FEATURE_SELECT, 0);
        let lo = self.r32(DEVICE_FEATURE);
        self.w32(DEVICE_FEATURE_SELECT, 1);
        let hi = self.r32(DEVICE_FEATURE);
        (hi as u64) << 32 | lo as u64
    }

    fn set_driver_features(&self, features: u64) {
        self.w32(DRIVER_FEATURE_SELECT, 0);
        self.w32(DRIVER_FEATURE, features as u32);
        self.w32(DRIVER_FEATURE_SELECT, 1);
        self.w32(DRIVER_FEATURE, (features >> 32) as u32);
    }

    fn queue_max_size(&self, queue: u16) -> u16 {
        self.w16(QUEUE_SELECT, queue);
        self.r16(QUEUE_SIZE)
    }

    fn enable_queue(&self, queue: u16, size: u16, rings: QueueRings) -> Option<QueueNotify> {
        self.w16(QUEUE_SELECT, queue);
        self.w16(QUEUE_SIZE, size);
        self.w64(QUEUE_DESC, rings.desc);
        self.w64(QUEUE_DRIVER, rings.driver);
        self.w64(QUEUE_DEVICE, rings.device);
        let addr = self.notify + self.r16(QUEUE_NOTIFY_OFF) as u64 * self.notify_mult as u64;
        if addr + 2 > mem::MAPPED_LIMIT {
            return None;
        }
        self.w16(QUEUE_ENABLE, 1);
        Some(QueueNotify { queue, addr })
    }

    fn notify(&self, q: QueueNotify) {
        // SAFETY: `q` was made by `enable_queue` (only this module tree can make one): the
        // queue's doorbell in the device's notify area, identity-mapped MMIO below 4 GiB
        // (checked there); the value written is the queue's index.
        unsafe { (q.addr as usize as *mut u16).write_volatile(q.queue) };
    }

    fn config_u8(&self, offset: u32) -> u8 {
        match self.config_field(offset, 1) {
            // SAFETY: a byte inside the device-specific configuration structure, mapped
            // (checked by `config_field`).
            Some(at) => unsafe { (at as usize as *const u8).read_volatile() },
            None => 0,
        }
    }

    fn config_u32(&self, offset: u32) -> u32 {
        match self.config_field(offset, 4) {
            // SAFETY: as `config_u8`, for an aligned 32-bit field.
            Some(at) => unsafe { (at as usize as *const u32).read_volatile() },
            None => 0,
        }
    }

    fn isr(&self) -> u8 {
        match self
            .capability(CAP_ISR)
            .and_then(|c| locate(self.addr, c, 1))
        {
            // SAFETY: the ISR status byte from the device's capability, mapped (checked by
            // `locate`); reading it acknowledges the interrupt, which is the point.
            Some(at) => unsafe { (at as usize as *const u8).read_volatile() },
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_walk() {
        // QEMU's modern virtio-serial-pci: MSI-X first, then common, notify, ISR and device
        // configuration capabilities in BAR 4.
        let mut cfg = [0u8; 256];
        cfg[0x06] = 0x10;
        cfg[0x34] = 0x98;
        cfg[0x98..0x9a].copy_from_slice(&[0x11, 0x84]); // MSI-X
        let vendor = |cfg: &mut [u8; 256], at: usize, next: u8, t: u8, off: u32| {
            cfg[at] = 0x09;
            cfg[at + 1] = next;
            cfg[at + 3] = t;
            cfg[at + 4] = 4;
            cfg[at + 8..at + 12].copy_from_slice(&off.to_le_bytes());
            cfg[at + 12..at + 16].copy_from_slice(&0x1000u32.to_le_bytes());
        };
        vendor(&mut cfg, 0x84, 0x70, 1, 0x0000);
        vendor(&mut cfg, 0x70, 0x60, 3, 0x1000);
        vendor(&mut cfg, 0x60, 0x40, 4, 0x2000);
        vendor(&mut cfg, 0x40, 0x00, 2, 0x3000);
        cfg[0x40 + 16..0x40 + 20].copy_from_slice(&4u32.to_le_bytes());
        let read32 =
            |o: u8| u32::from_le_bytes(cfg[o as usize..o as usize + 4].try_into().unwrap());
        let caps = capabilities(&|o| cfg[o as usize], &read32);
        let cap = |offset, extra| {
            Some(Cap {
                bar: 4,
                offset,
                length: 0x1000,
                extra,
            })
        };
        assert_eq!(caps[CAP_COMMON], cap(0, 0));
        assert_eq!(caps[CAP_NOTIFY], cap(0x3000, 4));
        assert_eq!(caps[CAP_ISR], cap(0x1000, 0));
        assert_eq!(caps[CAP_DEVICE], cap(0x2000, 0));
        // A loop in the list ends; no list gives nothing.
        cfg[0x41] = 0x98;
        let caps = capabilities(&|o| cfg[o as usize], &|_| 0);
        assert!(caps[CAP_COMMON].is_some());
        cfg[0x06] = 0;
        assert!(
            capabilities(&|o| cfg[o as usize], &|_| 0)
                .iter()
                .all(Option::is_none)
        );
    }
}
