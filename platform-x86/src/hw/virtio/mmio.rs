//! The virtio-mmio transport (virtio 1.x, 4.2): one 512-byte register window per device, as
//! microVM monitors (Firecracker, QEMU `microvm`) lay out their devices instead of PCI.
//!
//! Both register layouts are spoken, because the two monitors that matter differ: version 2
//! ("modern", what Firecracker and cloud-hypervisor offer) and version 1 ("legacy"), which
//! is what QEMU 7.2's `microvm` offers by default (its `virtio-mmio` transports have
//! `force-legacy=on` unless `-global virtio-mmio.force-legacy=off` is given). The legacy part
//! costs a few registers: the queue is placed by one page frame number, so the driver sets a
//! 16-byte "page" (the descriptor table's own alignment, which any power of two is allowed to
//! be) and an 8-byte used-ring alignment, under which the legacy ring layout is exactly
//! [`super::queue::ring_layout`]'s packed one (checked for each queue).
//!
//! # Finding the devices
//!
//! Two sources, in this order:
//!
//! 1. `virtio_mmio.device=<size>@<base>:<irq>` words on the kernel command line, the Linux
//!    convention that Firecracker and QEMU `microvm` with `acpi=off` follow.
//! 2. With ACPI on (`microvm`'s default) QEMU appends nothing and describes the transports
//!    only in the DSDT (as AML `Device`s with `_CRS` memory ranges). Rather than interpret
//!    AML, the driver probes the window `microvm` documents: transports at
//!    [`MICROVM_BASE`]` + i × 512` for `i < 24` (8 without the second IOAPIC, the rest then
//!    reads as unassigned memory), each checked for the magic `"virt"` and a non-zero device
//!    ID (an empty transport reads device ID 0). The window is probed only on a machine
//!    without PCI (config address 0:0.0 reads all ones), so `pc` and `q35` never see a read
//!    of memory that is not theirs. Parsing the DSDT would cost an AML walker for the same
//!    eight-to-24 fixed addresses that QEMU's own source fixes.
//!
//! All windows lie below 4 GiB, inside the boot identity map (checked).

use super::{Error, QueueNotify, QueueRings, Transport};
use crate::hw::{mem, pci};

/// Where QEMU `microvm` places its first virtio-mmio transport (`VIRTIO_MMIO_BASE` in
/// `include/hw/i386/microvm.h`).
pub const MICROVM_BASE: u64 = 0xfeb0_0000;
/// The size of one transport's register window.
pub const WINDOW: u64 = 0x200;
/// The most transports `microvm` creates (24 with its second IOAPIC, else 8).
pub const MICROVM_SLOTS: u64 = 24;

/// `"virt"`, little endian.
const MAGIC: u32 = 0x7472_6976;

// Registers common to both versions.
const R_MAGIC: u64 = 0x000;
const R_VERSION: u64 = 0x004;
const R_DEVICE_ID: u64 = 0x008;
const R_DEVICE_FEATURES: u64 = 0x010;
const R_DEVICE_FEATURES_SEL: u64 = 0x014;
const R_DRIVER_FEATURES: u64 = 0x020;
const R_DRIVER_FEATURES_SEL: u64 = 0x024;
const R_QUEUE_SEL: u64 = 0x030;
const R_QUEUE_NUM_MAX: u64 = 0x034;
const R_QUEUE_NUM: u64 = 0x038;
const R_QUEUE_NOTIFY: u64 = 0x050;
const R_INTERRUPT_STATUS: u64 = 0x060;
const R_INTERRUPT_ACK: u64 = 0x064;
const R_STATUS: u64 = 0x070;
const R_CONFIG: u64 = 0x100;
// Version 1 only.
const R_GUEST_PAGE_SIZE: u64 = 0x028;
const R_QUEUE_ALIGN: u64 = 0x03c;
const R_QUEUE_PFN: u64 = 0x040;
// Version 2 only.
const R_QUEUE_READY: u64 = 0x044;
const R_QUEUE_DESC: u64 = 0x080;
const R_QUEUE_DRIVER: u64 = 0x090;
const R_QUEUE_DEVICE: u64 = 0x0a0;

/// The legacy "page" the driver declares: the descriptor table's alignment.
const LEGACY_PAGE: u32 = 16;
/// The legacy used-ring alignment under which the packed layout holds.
const LEGACY_ALIGN: u32 = 8;

/// One `virtio_mmio.device=` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmdlineDevice {
    /// The window's size in bytes.
    pub size: u64,
    /// The window's physical base.
    pub base: u64,
    /// Its interrupt line.
    pub irq: u32,
}

/// A number as Linux's `memparse` reads it: decimal or `0x` hex, with an optional
/// `K`/`M`/`G` multiplier.
fn number(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'k' | b'K' => (s.get(..s.len() - 1)?, 10),
        b'm' | b'M' => (s.get(..s.len() - 1)?, 20),
        b'g' | b'G' => (s.get(..s.len() - 1)?, 30),
        _ => (s, 0),
    };
    let v = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => digits.parse().ok()?,
    };
    v.checked_mul(1 << shift)
}

/// Parse the value of one `virtio_mmio.device=` word: `<size>@<base>:<irq>` (Linux also
/// allows a trailing `:<id>`, ignored).
pub fn parse_device(v: &str) -> Option<CmdlineDevice> {
    let (size, rest) = v.split_once('@')?;
    let (base, rest) = rest.split_once(':')?;
    let irq = rest.split(':').next()?;
    Some(CmdlineDevice {
        size: number(size)?,
        base: number(base)?,
        irq: irq.parse().ok()?,
    })
}

/// The `virtio_mmio.device=` entries of a kernel command line.
pub fn cmdline_devices(cmdline: &str) -> impl Iterator<Item = CmdlineDevice> + '_ {
    crate::config::words(cmdline)
        .filter(|(k, _)| *k == "virtio_mmio.device")
        .filter_map(|(_, v)| parse_device(v?))
}

/// A device's register window, at an identity-mapped address below 4 GiB that holds the
/// virtio magic (checked by [`MmioTransport::probe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioTransport {
    base: u64,
    legacy: bool,
    device_id: u32,
}

impl MmioTransport {
    /// The transport at `base`, if a virtio device sits there: the magic, version 1 or 2 and
    /// a non-zero device ID.
    pub fn probe(base: u64) -> Option<MmioTransport> {
        if base == 0 || !base.is_multiple_of(4) || base.checked_add(WINDOW)? > mem::MAPPED_LIMIT {
            return None;
        }
        let mut t = MmioTransport {
            base,
            legacy: false,
            device_id: 0,
        };
        if t.r32(R_MAGIC) != MAGIC {
            return None;
        }
        t.legacy = match t.r32(R_VERSION) {
            1 => true,
            2 => false,
            _ => return None,
        };
        t.device_id = t.r32(R_DEVICE_ID);
        (t.device_id != 0).then_some(t)
    }

    /// The window's physical base.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Whether the device speaks the legacy (version 1) register layout.
    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// The virtio device ID (3 console, 19 vsock).
    pub fn device_id(&self) -> u32 {
        self.device_id
    }

    fn r32(&self, off: u64) -> u32 {
        // SAFETY: `base` is a virtio-mmio register window below 4 GiB (identity-mapped,
        // checked by `probe` before the first read), `off` one of the 4-aligned register
        // offsets above, inside the 512-byte window; reads of these registers have no side
        // effects beyond what the driver asks for (the interrupt status is acknowledged by a
        // separate write).
        unsafe { ((self.base + off) as usize as *const u32).read_volatile() }
    }

    fn w32(&self, off: u64, v: u32) {
        // SAFETY: as `r32`; the values written are the ones the virtio spec defines for the
        // register.
        unsafe { ((self.base + off) as usize as *mut u32).write_volatile(v) }
    }

    fn w64(&self, off: u64, v: u64) {
        self.w32(off, v as u32);
        self.w32(off + 4, (v >> 32) as u32);
    }
}

/// The first virtio-mmio device with ID `device_id`: from the `virtio_mmio.device=` entries
/// of `cmdline`, else (on a machine without PCI) from `microvm`'s window.
pub fn find(device_id: u32, cmdline: &str) -> Result<MmioTransport, Error> {
    let listed = cmdline_devices(cmdline)
        .filter(|d| d.size >= WINDOW)
        .filter_map(|d| MmioTransport::probe(d.base))
        .find(|t| t.device_id == device_id);
    if let Some(t) = listed {
        return Ok(t);
    }
    let host_bridge = pci::Address {
        bus: 0,
        device: 0,
        function: 0,
    };
    if pci::read32(host_bridge, 0) != u32::MAX {
        return Err(Error::NotFound);
    }
    (0..MICROVM_SLOTS)
        .filter_map(|i| MmioTransport::probe(MICROVM_BASE + i * WINDOW))
        .find(|t| t.device_id == device_id)
        .ok_or(Error::NotFound)
}

impl Transport for MmioTransport {
    fn status(&self) -> u8 {
        self.r32(R_STATUS) as u8
    }

    fn set_status(&self, status: u8) {
        self.w32(R_STATUS, status as u32);
    }

    fn legacy(&self) -> bool {
        self.legacy
    }

    fn device_features(&self) -> u64 {
        self.w32(R_DEVICE_FEATURES_SEL, 0);
        let lo = self.r32(R_DEVICE_FEATURES);
        if self.legacy {
            return lo as u64;
        }
        self.w32(R_DEVICE_FEATURES_SEL, 1);
        let hi = self.r32(R_DEVICE_FEATURES);
        (hi as u64) << 32 | lo as u64
    }

    fn set_driver_features(&self, features: u64) {
        self.w32(R_DRIVER_FEATURES_SEL, 0);
        self.w32(R_DRIVER_FEATURES, features as u32);
        if !self.legacy {
            self.w32(R_DRIVER_FEATURES_SEL, 1);
            self.w32(R_DRIVER_FEATURES, (features >> 32) as u32);
        }
        if self.legacy {
            self.w32(R_GUEST_PAGE_SIZE, LEGACY_PAGE);
        }
    }

    fn queue_max_size(&self, queue: u16) -> u16 {
        self.w32(R_QUEUE_SEL, queue as u32);
        self.r32(R_QUEUE_NUM_MAX).min(u16::MAX as u32) as u16
    }

    fn enable_queue(&self, queue: u16, size: u16, rings: QueueRings) -> Option<QueueNotify> {
        self.w32(R_QUEUE_SEL, queue as u32);
        self.w32(R_QUEUE_NUM, size as u32);
        if self.legacy {
            // One frame number places all three parts: the layout must be the legacy one.
            let n = size as u64;
            let used = (rings.driver + 4 + 2 * n).next_multiple_of(LEGACY_ALIGN as u64);
            let pfn = rings.desc / LEGACY_PAGE as u64;
            if !rings.desc.is_multiple_of(LEGACY_PAGE as u64)
                || rings.driver != rings.desc + 16 * n
                || rings.device != used
                || pfn > u32::MAX as u64
            {
                return None;
            }
            self.w32(R_QUEUE_ALIGN, LEGACY_ALIGN);
            self.w32(R_QUEUE_PFN, pfn as u32);
        } else {
            self.w64(R_QUEUE_DESC, rings.desc);
            self.w64(R_QUEUE_DRIVER, rings.driver);
            self.w64(R_QUEUE_DEVICE, rings.device);
            self.w32(R_QUEUE_READY, 1);
        }
        Some(QueueNotify {
            queue,
            addr: self.base + R_QUEUE_NOTIFY,
        })
    }

    fn notify(&self, q: QueueNotify) {
        self.w32(R_QUEUE_NOTIFY, q.queue as u32);
    }

    fn config_u8(&self, offset: u32) -> u8 {
        if offset as u64 >= WINDOW - R_CONFIG {
            return 0;
        }
        // SAFETY: a byte of the device-specific configuration, inside the window (checked).
        unsafe { ((self.base + R_CONFIG + offset as u64) as usize as *const u8).read_volatile() }
    }

    fn config_u32(&self, offset: u32) -> u32 {
        if !offset.is_multiple_of(4) || offset as u64 + 4 > WINDOW - R_CONFIG {
            return 0;
        }
        self.r32(R_CONFIG + offset as u64)
    }

    fn isr(&self) -> u8 {
        let s = self.r32(R_INTERRUPT_STATUS);
        self.w32(R_INTERRUPT_ACK, s);
        s as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_entries() {
        let line = "qga.transport=auto virtio_mmio.device=512@0xfeb00e00:12 \
                    virtio_mmio.device=4K@0xd0000000:5:3 virtio_mmio.device=bogus \
                    virtio_mmio.device=1K@0x1000";
        let d: Vec<_> = cmdline_devices(line).collect();
        assert_eq!(
            d,
            vec![
                CmdlineDevice {
                    size: 512,
                    base: 0xfeb0_0e00,
                    irq: 12
                },
                CmdlineDevice {
                    size: 4096,
                    base: 0xd000_0000,
                    irq: 5
                },
            ]
        );
        assert_eq!(number("0x200"), Some(512));
        assert_eq!(number("1M"), Some(1 << 20));
        assert_eq!(number(""), None);
        assert_eq!(number("0xffffffffffffffffK"), None);
    }

    #[test]
    fn legacy_layout_is_the_packed_one() {
        // The legacy used ring starts at align(avail + 4 + 2n, 8); the packed layout puts it
        // at align(avail + 6 + 2n, 4). They agree for every queue size the drivers use.
        for size in [8u16, 16] {
            let (avail, used, _) = super::super::queue::ring_layout(size);
            let n = size as usize;
            assert_eq!(avail, 16 * n);
            assert_eq!(
                used,
                (avail + 4 + 2 * n).next_multiple_of(LEGACY_ALIGN as usize)
            );
        }
    }
}
