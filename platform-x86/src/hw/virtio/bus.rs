//! Either transport behind one type, so that each driver is compiled once (the image's size
//! budget) and the image finds a device wherever the machine put it: PCI on `pc` and `q35`,
//! virtio-mmio on microVMs.

use super::mmio::MmioTransport;
use super::pci::PciTransport;
use super::{Error, QueueNotify, QueueRings, Transport, mmio, pci};

/// A device reached over PCI or over virtio-mmio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bus {
    /// A virtio 1.0 PCI function.
    Pci(PciTransport),
    /// A virtio-mmio window.
    Mmio(MmioTransport),
}

/// A device type's identities on each bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceIds {
    /// The transitional PCI device ID (the modern one if the type has none).
    pub pci_transitional: u16,
    /// The modern-only PCI device ID (0x1040 + the virtio device ID).
    pub pci_modern: u16,
    /// The virtio device ID (what virtio-mmio reports).
    pub virtio: u32,
}

/// The virtio console.
pub const CONSOLE: DeviceIds = DeviceIds {
    pci_transitional: pci::DEVICE_CONSOLE_LEGACY,
    pci_modern: pci::DEVICE_CONSOLE_MODERN,
    virtio: 3,
};

/// The virtio socket device (no transitional variant).
pub const VSOCK: DeviceIds = DeviceIds {
    pci_transitional: 0x1053,
    pci_modern: 0x1053,
    virtio: 19,
};

/// The first device of type `ids`: on PCI, else over virtio-mmio (see [`mmio::find`] for
/// where, `cmdline` being the kernel command line).
pub fn find(ids: DeviceIds, cmdline: &str) -> Result<Bus, Error> {
    match pci::find(ids.pci_transitional, ids.pci_modern) {
        Ok(f) => PciTransport::new(&f).map(Bus::Pci),
        Err(_) => mmio::find(ids.virtio, cmdline).map(Bus::Mmio),
    }
}

impl Bus {
    /// Where the device is, for the log: the PCI address or the window's base.
    pub fn describe(&self) -> (&'static str, u64) {
        match self {
            Bus::Pci(p) => {
                let a = p.pci_address();
                (
                    "pci",
                    (a.bus as u64) << 8 | (a.device as u64) << 3 | a.function as u64,
                )
            }
            Bus::Mmio(m) if m.is_legacy() => ("virtio-mmio v1 at", m.base()),
            Bus::Mmio(m) => ("virtio-mmio v2 at", m.base()),
        }
    }
}

macro_rules! each {
    ($self:ident, $t:ident => $e:expr) => {
        match $self {
            Bus::Pci($t) => $e,
            Bus::Mmio($t) => $e,
        }
    };
}

impl Transport for Bus {
    fn status(&self) -> u8 {
        each!(self, t => t.status())
    }
    fn set_status(&self, status: u8) {
        each!(self, t => t.set_status(status))
    }
    fn legacy(&self) -> bool {
        each!(self, t => t.legacy())
    }
    fn device_features(&self) -> u64 {
        each!(self, t => t.device_features())
    }
    fn set_driver_features(&self, features: u64) {
        each!(self, t => t.set_driver_features(features))
    }
    fn queue_max_size(&self, queue: u16) -> u16 {
        each!(self, t => t.queue_max_size(queue))
    }
    fn enable_queue(&self, queue: u16, size: u16, rings: QueueRings) -> Option<QueueNotify> {
        each!(self, t => t.enable_queue(queue, size, rings))
    }
    fn notify(&self, queue: QueueNotify) {
        each!(self, t => t.notify(queue))
    }
    fn config_u8(&self, offset: u32) -> u8 {
        each!(self, t => t.config_u8(offset))
    }
    fn config_u32(&self, offset: u32) -> u32 {
        each!(self, t => t.config_u32(offset))
    }
    fn isr(&self) -> u8 {
        each!(self, t => t.isr())
    }
}
