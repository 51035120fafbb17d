//! Virtio in three parts, so that each can be added to alone: a device driver ([`console`])
//! works through a [`Transport`] and its [`queue::Queue`]s and never sees PCI; a transport
//! ([`pci`] today) is how one bus reaches a device's registers (feature negotiation, queue
//! setup, notification, configuration space, ISR); a virtqueue ([`queue`]) is the ring
//! layout in memory, notified through whichever transport set it up.
//!
//! Written here rather than taken from `virtio-drivers`, whose console is single-port and
//! allocates, and whose vsock driver needs `alloc` too. Measured (README, Dependencies): the
//! MMIO transport with its discovery cost the image 3,200 bytes, about what `virtio-drivers`'
//! no-alloc transport and `VirtQueue` alone weigh (1,913 B of `.text`) before its six crates
//! and the `Hal` glue; the vsock stream layer would be ours either way. So the drivers here
//! ([`console`], [`vsock`]) share one queue and one [`Transport`] trait ([`pci`], [`mmio`],
//! and [`bus`] choosing between them at run time so that each driver is compiled once). The split follows rust-hypervisor-firmware's, whose drivers see a
//! `VirtioTransport`: a microVM without PCI (Firecracker, QEMU `microvm`) reaches the same
//! devices through virtio-mmio, and a vsock device speaks through the same rings, so a second
//! transport or a second device is one new file against [`Transport`], not a fork of the
//! console. Everything is polled: the image has interrupts on only to halt.
//!
//! The device bring-up order (virtio 1.0, 3.1.1: reset, ACKNOWLEDGE, DRIVER, features,
//! FEATURES_OK, queues, DRIVER_OK) is written once ([`negotiate`], [`driver_ok`]) for every
//! transport.

pub mod bus;
pub mod console;
pub mod mmio;
pub mod pci;
pub mod queue;
pub mod vsock;

/// VIRTIO_F_VERSION_1 (bit 32): the device speaks virtio 1.0, not the legacy interface.
pub const F_VERSION_1: u64 = 1 << 32;

/// Device status bits (virtio 1.0, 2.1).
pub mod status {
    /// The driver has noticed the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The driver knows how to drive it.
    pub const DRIVER: u8 = 2;
    /// The driver is set up and ready.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 0x80;
}

/// What a transport hands a queue at setup so that the queue can later be notified: the
/// queue's index and, where the transport gives each queue its own doorbell (PCI), its
/// address. Only the transports (this module tree) make one, so a transport's `notify` may
/// trust the address it put there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueNotify {
    queue: u16,
    addr: u64,
}

/// Where a queue's three parts lie in guest-physical memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueRings {
    /// The descriptor table.
    pub desc: u64,
    /// The available ("driver") ring.
    pub driver: u64,
    /// The used ("device") ring.
    pub device: u64,
}

/// How a driver reaches a device's registers: status, features, queues, notifications,
/// device-specific configuration and the interrupt status, whatever the bus.
pub trait Transport {
    /// The device status byte.
    fn status(&self) -> u8;
    /// Write the device status byte (0 resets the device).
    fn set_status(&self, status: u8);
    /// Whether the device speaks only the legacy (pre-1.0) interface: 32 feature bits, no
    /// VERSION_1 and no FEATURES_OK step.
    fn legacy(&self) -> bool {
        false
    }
    /// The 64 feature bits the device offers.
    fn device_features(&self) -> u64;
    /// Write the feature bits the driver accepts.
    fn set_driver_features(&self, features: u64);
    /// The largest size queue `queue` supports (0: no such queue).
    fn queue_max_size(&self, queue: u16) -> u16;
    /// Give queue `queue` its size and rings and enable it; `None` if its doorbell cannot be
    /// reached.
    fn enable_queue(&self, queue: u16, size: u16, rings: QueueRings) -> Option<QueueNotify>;
    /// Tell the device that the queue has new available buffers.
    fn notify(&self, queue: QueueNotify);
    /// A byte of the device-specific configuration (0 outside it).
    fn config_u8(&self, offset: u32) -> u8;
    /// A 32-bit field of the device-specific configuration (0 outside it).
    fn config_u32(&self, offset: u32) -> u32;
    /// Read (and so acknowledge) the interrupt status: bit 0 a used buffer, bit 1 a
    /// configuration change.
    fn isr(&self) -> u8;
}

/// Why a device could not be brought up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// No such device on any bus.
    NotFound,
    /// No usable virtio 1.0 capabilities (a legacy-only PCI device).
    NoCapabilities,
    /// A register BAR lies above the identity map (4 GiB).
    BarUnmapped,
    /// The device did not reset, does not offer the features the driver needs, or refused
    /// them.
    Features,
    /// The driver's queues could not be set up.
    NoQueues,
    /// The static queue memory was already taken.
    InUse,
}

impl Error {
    /// A short description.
    pub fn as_str(self) -> &'static str {
        match self {
            Error::NotFound => "no such device",
            Error::NoCapabilities => "no virtio 1.0 capabilities (legacy-only device)",
            Error::BarUnmapped => "a register BAR lies above 4 GiB",
            Error::Features => "no reset, or the driver's features (VERSION_1 and its own) refused",
            Error::NoQueues => "the driver's queues could not be set up",
            Error::InUse => "the queue memory is already in use",
        }
    }
}

/// Reset the device and negotiate features: the driver accepts `wanted` and fails unless the
/// device offers all of it (VERSION_1 included, except on a legacy transport, which has
/// neither VERSION_1 nor FEATURES_OK) and accepts the choice. Afterwards the driver sets up
/// its queues and calls [`driver_ok`].
pub fn negotiate<T: Transport>(t: &T, wanted: u64) -> Result<(), Error> {
    let legacy = t.legacy();
    let wanted = if legacy {
        wanted & !F_VERSION_1
    } else {
        wanted
    };
    t.set_status(0);
    let mut spins = 0u32;
    while t.status() != 0 {
        spins += 1;
        if spins > 1_000_000 {
            return Err(Error::Features);
        }
        core::hint::spin_loop();
    }
    t.set_status(status::ACKNOWLEDGE);
    t.set_status(status::ACKNOWLEDGE | status::DRIVER);
    let offered = t.device_features();
    t.set_driver_features(wanted);
    if legacy {
        if offered & wanted != wanted {
            t.set_status(status::FAILED);
            return Err(Error::Features);
        }
        return Ok(());
    }
    t.set_status(FEATURES_SET);
    if offered & wanted != wanted || t.status() & status::FEATURES_OK == 0 {
        t.set_status(status::FAILED);
        return Err(Error::Features);
    }
    Ok(())
}

const FEATURES_SET: u8 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;

/// The driver's queues are set up: the device may start.
pub fn driver_ok<T: Transport>(t: &T) {
    let set = if t.legacy() {
        status::ACKNOWLEDGE | status::DRIVER
    } else {
        FEATURES_SET
    };
    t.set_status(set | status::DRIVER_OK);
}
