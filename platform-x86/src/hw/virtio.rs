//! A polled virtio-console driver with the MULTIPORT feature, for the port named
//! `org.qemu.guest_agent.0`.
//!
//! Written here rather than taken from `virtio-drivers`, whose console is single-port and
//! allocates. It speaks the modern (virtio 1.0) PCI interface: the vendor capabilities name the
//! common and notify registers in a memory BAR. QEMU's `virtio-serial-pci` offers it both as a
//! transitional device on a root bus (`pc`, `q35`) and as the modern-only device it becomes
//! behind a PCIe root port, which is where libvirt and KubeVirt put it on `q35`. The BAR must
//! lie below 4 GiB (the identity map's end), which is where SeaBIOS places it.
//!
//! The multiport handshake, as libvirt and Linux expect it: the driver sends DEVICE_READY on
//! the control queue; the device answers PORT_ADD for each port; the driver answers PORT_READY;
//! the device names each port (PORT_NAME) and says whether the host side is open (PORT_OPEN).
//! For the agent's port the driver sets up that port's two queues and sends PORT_OPEN=1, after
//! which QEMU delivers data. PORT_OPEN=0 from the host is a disconnect ([`Event::Closed`]); the
//! agent then forgets any half-received request.
//!
//! Transmission is synchronous, one 4 KiB buffer at a time; a buffer the device has not
//! consumed after 5 s (a host that stopped reading) fails the send, and the engine then drops
//! the rest of that response (it resumes after the next port close).
//!
//! Queue memory and buffers are `static` (no heap). The device writes them behind the
//! compiler's back, so every access to shared memory is volatile, with fences around the index
//! updates.

use core::sync::atomic::{Ordering, fence};

use super::{mem, pci, tsc};
use crate::sync::TakeOnce;

/// Red Hat's virtio vendor ID.
pub const VENDOR: u16 = 0x1af4;
/// The transitional console's device ID (legacy interface available).
pub const DEVICE_CONSOLE_LEGACY: u16 = 0x1003;
/// The modern-only console's device ID.
pub const DEVICE_CONSOLE_MODERN: u16 = 0x1043;
/// The port name the agent serves.
pub const AGENT_PORT_NAME: &[u8] = b"org.qemu.guest_agent.0";

const F_MULTIPORT: u32 = 1 << 1;
/// VIRTIO_F_VERSION_1, bit 32: bit 0 of the second feature word.
const F_VERSION_1_HI: u32 = 1;

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

const STATUS_ACK: u8 = 1;
const STATUS_DRIVER: u8 = 2;
const STATUS_DRIVER_OK: u8 = 4;
const STATUS_FEATURES_OK: u8 = 8;
const STATUS_FAILED: u8 = 0x80;

/// The device's registers: the common configuration block and the notification area, both
/// in identity-mapped MMIO below 4 GiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Regs {
    common: u64,
    notify: u64,
    notify_mult: u32,
}

impl Regs {
    fn w8(&self, off: u64, v: u8) {
        // SAFETY: `common` is the device's common configuration block (from its PCI
        // capability, inside a memory BAR below 4 GiB, identity-mapped); `off` is one of the
        // register offsets above.
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

/// The virtio vendor capabilities of a function: `(cfg_type, bar, offset, extra)` for each,
/// where `extra` is the notify offset multiplier of the notify capability.
pub fn capabilities(
    read8: &dyn Fn(u8) -> u8,
    read32: &dyn Fn(u8) -> u32,
) -> [Option<(u8, u8, u32, u32)>; 5] {
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
            let bar = read8(ptr + 4);
            let offset = read32(ptr.wrapping_add(8));
            let extra = if cfg_type == 2 {
                read32(ptr.wrapping_add(16))
            } else {
                0
            };
            if let Some(slot) = caps.get_mut(cfg_type as usize)
                && slot.is_none()
            {
                *slot = Some((cfg_type, bar, offset, extra));
            }
        }
        ptr = read8(ptr + 1) & 0xfc;
    }
    caps
}

/// Control events (virtio spec 5.3.6.2).
pub mod event {
    /// Driver → device: ready.
    pub const DEVICE_READY: u16 = 0;
    /// Device → driver: a port exists.
    pub const DEVICE_ADD: u16 = 1;
    /// Device → driver: a port is gone.
    pub const DEVICE_REMOVE: u16 = 2;
    /// Driver → device: the port is set up.
    pub const PORT_READY: u16 = 3;
    /// Device → driver: the port is a console.
    pub const CONSOLE_PORT: u16 = 4;
    /// Device → driver: console resized.
    pub const RESIZE: u16 = 5;
    /// Both ways: the port is opened (1) or closed (0) by the sender's side.
    pub const PORT_OPEN: u16 = 6;
    /// Device → driver: the port's name follows the header.
    pub const PORT_NAME: u16 = 7;
}

/// A control message header: port id, event, value (little endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Control {
    /// Port number.
    pub id: u32,
    /// One of [`event`].
    pub event: u16,
    /// Event argument.
    pub value: u16,
}

impl Control {
    /// Encode.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.id.to_le_bytes());
        b[4..6].copy_from_slice(&self.event.to_le_bytes());
        b[6..].copy_from_slice(&self.value.to_le_bytes());
        b
    }

    /// Decode the header of a received control buffer.
    pub fn parse(b: &[u8]) -> Option<(Self, &[u8])> {
        let id = crate::pvh::le32(b, 0)?;
        let event = crate::pvh::le16(b, 4)?;
        let value = crate::pvh::le16(b, 6)?;
        Some((Control { id, event, value }, b.get(8..).unwrap_or(&[])))
    }
}

/// The (receive, transmit) queue numbers of port `id` in a multiport device.
pub fn port_queues(id: u32) -> (u16, u16) {
    if id == 0 {
        (0, 1)
    } else {
        ((2 * id + 2) as u16, (2 * id + 3) as u16)
    }
}

/// The split-ring layout for `size` entries, packed as virtio 1.0 allows (descriptors
/// 16-aligned, available ring 2-aligned, used ring 4-aligned): (avail offset, used offset,
/// total bytes).
pub fn ring_layout(size: u16) -> (usize, usize, usize) {
    let n = size as usize;
    let avail = 16 * n;
    let used = (avail + 6 + 2 * n).next_multiple_of(4);
    (avail, used, used + 6 + 8 * n)
}

/// The queue size used (the device's, if smaller): the driver never has more than
/// [`MIN_QUEUE`] buffers in flight, so larger rings would only cost memory.
pub const MAX_QUEUE: u16 = 16;
/// The smallest queue the driver can work with (8 receive buffers in flight).
pub const MIN_QUEUE: u16 = 8;
const RING_BYTES: usize = 512;
const CTRL_BUFS: usize = 8;
const CTRL_BUF: usize = 128;
const RX_BUFS: usize = 8;
/// Receive buffer size: the most [`Console::poll`] hands back at once.
pub const RX_BUF: usize = 512;
const TX_BUF: usize = 4096;

#[repr(C, align(16))]
struct Bufs<const N: usize, const S: usize>([[u8; S]; N]);

/// All the memory the device shares with us: four rings and the buffers.
#[repr(C, align(16))]
struct Shared {
    rings: [u8; 4 * RING_BYTES],
    ctrl_rx: Bufs<CTRL_BUFS, CTRL_BUF>,
    ctrl_tx: Bufs<1, CTRL_BUF>,
    data_rx: Bufs<RX_BUFS, RX_BUF>,
    data_tx: Bufs<1, TX_BUF>,
}

static SHARED: TakeOnce<Shared> = TakeOnce::new(Shared {
    rings: [0; 4 * RING_BYTES],
    ctrl_rx: Bufs([[0; CTRL_BUF]; CTRL_BUFS]),
    ctrl_tx: Bufs([[0; CTRL_BUF]; 1]),
    data_rx: Bufs([[0; RX_BUF]; RX_BUFS]),
    data_tx: Bufs([[0; TX_BUF]; 1]),
});

fn phys<T>(p: *const T) -> u64 {
    p as usize as u64
}

/// One split virtqueue in static memory.
struct Queue {
    base: *mut u8,
    size: u16,
    index: u16,
    avail_off: usize,
    used_off: usize,
    avail_idx: u16,
    last_used: u16,
    notify_at: u64,
}

impl Queue {
    /// Select queue `index` on the device, place its ring at `base` (RING_BYTES of 16-aligned
    /// static memory owned by this queue), tell the device and enable the queue. `None` if the
    /// device has no such queue or only a smaller one than [`MIN_QUEUE`].
    fn setup(regs: &Regs, index: u16, base: *mut u8) -> Option<Queue> {
        regs.w16(QUEUE_SELECT, index);
        let max = regs.r16(QUEUE_SIZE);
        if max < MIN_QUEUE {
            return None;
        }
        // A split ring's size is a power of two; use the device's, capped by the ring memory.
        let size = 1u16 << (15 - max.min(MAX_QUEUE).leading_zeros().min(15));
        let (avail_off, used_off, total) = ring_layout(size);
        if total > RING_BYTES {
            return None;
        }
        for i in 0..RING_BYTES {
            // SAFETY: `base` points at RING_BYTES bytes of static memory this queue owns
            // (taken once from SHARED); the device does not use it yet.
            unsafe { base.add(i).write_volatile(0) };
        }
        fence(Ordering::SeqCst);
        regs.w16(QUEUE_SIZE, size);
        regs.w64(QUEUE_DESC, phys(base));
        regs.w64(QUEUE_DRIVER, phys(base) + avail_off as u64);
        regs.w64(QUEUE_DEVICE, phys(base) + used_off as u64);
        let notify_at = regs.notify + regs.r16(QUEUE_NOTIFY_OFF) as u64 * regs.notify_mult as u64;
        regs.w16(QUEUE_ENABLE, 1);
        Some(Queue {
            base,
            size,
            index,
            avail_off,
            used_off,
            avail_idx: 0,
            last_used: 0,
            notify_at,
        })
    }

    fn write16(&mut self, off: usize, v: u16) {
        debug_assert!(off + 2 <= RING_BYTES);
        // SAFETY: every caller's offset lies inside the ring layout (checked against
        // RING_BYTES at setup) and is 2-aligned; the ring is shared with the device, so the
        // access is volatile.
        unsafe { (self.base.add(off) as *mut u16).write_volatile(v) }
    }

    fn read16(&self, off: usize) -> u16 {
        // SAFETY: as `write16`.
        unsafe { (self.base.add(off) as *const u16).read_volatile() }
    }

    fn read32(&self, off: usize) -> u32 {
        // SAFETY: as `write16`, 4-aligned.
        unsafe { (self.base.add(off) as *const u32).read_volatile() }
    }

    /// Fill descriptor `i`.
    fn set_desc(&mut self, i: u16, addr: u64, len: u32, device_writes: bool) {
        let off = 16 * (i % self.size) as usize;
        // SAFETY: descriptor `i % size` lies in the descriptor table at the ring's start;
        // offsets are 8-aligned.
        unsafe {
            (self.base.add(off) as *mut u64).write_volatile(addr);
            (self.base.add(off + 8) as *mut u32).write_volatile(len);
        }
        self.write16(off + 12, if device_writes { 2 } else { 0 });
        self.write16(off + 14, 0);
    }

    /// Offer descriptor `i` to the device.
    fn push(&mut self, i: u16) {
        let slot = self.avail_off + 4 + 2 * (self.avail_idx % self.size) as usize;
        self.write16(slot, i);
        fence(Ordering::SeqCst);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.write16(self.avail_off + 2, self.avail_idx);
        fence(Ordering::SeqCst);
    }

    /// A descriptor the device has finished with, and how many bytes it wrote.
    fn pop(&mut self) -> Option<(u16, u32)> {
        let used_idx = self.read16(self.used_off + 2);
        if used_idx == self.last_used {
            return None;
        }
        fence(Ordering::SeqCst);
        let elem = self.used_off + 4 + 8 * (self.last_used % self.size) as usize;
        let id = self.read32(elem) as u16;
        let len = self.read32(elem + 4);
        self.last_used = self.last_used.wrapping_add(1);
        Some((id, len))
    }

    fn notify(&self) {
        fence(Ordering::SeqCst);
        // SAFETY: this queue's notification register, inside the device's notify area
        // (identity-mapped MMIO below 4 GiB); the value written is the queue's index.
        unsafe { (self.notify_at as usize as *mut u16).write_volatile(self.index) };
    }
}

/// Copy from device-written memory.
fn copy_in(src: *const u8, dst: &mut [u8]) {
    for (i, d) in dst.iter_mut().enumerate() {
        // SAFETY: callers pass `src` pointing at a static buffer of at least `dst.len()` bytes.
        *d = unsafe { src.add(i).read_volatile() };
    }
}

/// Copy into device-read memory.
fn copy_out(src: &[u8], dst: *mut u8) {
    for (i, s) in src.iter().enumerate() {
        // SAFETY: callers pass `dst` pointing at a static buffer of at least `src.len()` bytes.
        unsafe { dst.add(i).write_volatile(*s) };
    }
}

/// What [`Console::poll`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Nothing new.
    Idle,
    /// This many bytes of agent data are in the caller's buffer.
    Data(usize),
    /// The host opened the port (a client connected).
    Opened,
    /// The host closed the port (the client went away).
    Closed,
}

/// Why the console could not be brought up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// No virtio console on any PCI bus.
    NotFound,
    /// No usable virtio 1.0 capabilities (a legacy-only device).
    NoCapabilities,
    /// A register BAR lies above the identity map (4 GiB).
    BarUnmapped,
    /// The device did not reset, does not offer MULTIPORT and VERSION_1, or refused them.
    Features,
    /// The control queues could not be set up.
    NoQueues,
    /// The static queue memory was already taken.
    InUse,
}

impl Error {
    /// A short description.
    pub fn as_str(self) -> &'static str {
        match self {
            Error::NotFound => "no virtio console device",
            Error::NoCapabilities => "no virtio 1.0 capabilities (legacy-only device)",
            Error::BarUnmapped => "a register BAR lies above 4 GiB",
            Error::Features => "no reset, or MULTIPORT and VERSION_1 not both accepted",
            Error::NoQueues => "the control queues could not be set up",
            Error::InUse => "the queue memory is already in use",
        }
    }
}

/// The transmit path failed (device did not consume the buffer in time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxTimeout;

/// The driver.
pub struct Console {
    regs: Regs,
    pci: pci::Address,
    ctrl_rx: Queue,
    ctrl_tx: Queue,
    data: Option<(Queue, Queue)>,
    port: Option<u32>,
    host_open: bool,
    spare_rings: [Option<*mut u8>; 2],
    ctrl_rx_buf: *mut u8,
    ctrl_tx_buf: *mut u8,
    data_rx_buf: *mut u8,
    data_tx_buf: *mut u8,
}

/// Find the first virtio console function (transitional or modern-only).
pub fn find() -> Result<pci::Function, Error> {
    let mut found = None;
    pci::scan(&mut |f| {
        if f.vendor == VENDOR
            && (f.device == DEVICE_CONSOLE_LEGACY || f.device == DEVICE_CONSOLE_MODERN)
        {
            found = Some(*f);
            return false;
        }
        true
    });
    found.ok_or(Error::NotFound)
}

/// The physical address of memory BAR `bar` of `a` (32- or 64-bit).
fn bar_address(a: pci::Address, bar: u8) -> Option<u64> {
    if bar > 5 {
        return None;
    }
    let off = 0x10 + 4 * bar;
    let lo = pci::read32(a, off);
    if lo & 1 != 0 {
        return None; // an I/O BAR
    }
    let hi = if lo & 0x6 == 0x4 {
        pci::read32(a, off + 4) as u64
    } else {
        0
    };
    Some(hi << 32 | (lo & !0xf) as u64)
}

impl Console {
    /// Bring up the device at `f` and send DEVICE_READY.
    pub fn open(f: &pci::Function) -> Result<Console, Error> {
        let a = f.addr;
        let caps = capabilities(&|off| pci::read8(a, off), &|off| pci::read32(a, off));
        let (Some((_, cbar, coff, _)), Some((_, nbar, noff, mult))) = (caps[1], caps[2]) else {
            return Err(Error::NoCapabilities);
        };
        let (Some(cb), Some(nb)) = (bar_address(a, cbar), bar_address(a, nbar)) else {
            return Err(Error::NoCapabilities);
        };
        let (common, notify) = (cb + coff as u64, nb + noff as u64);
        if cb == 0 || nb == 0 || common + 0x40 > mem::MAPPED_LIMIT || notify >= mem::MAPPED_LIMIT {
            return Err(Error::BarUnmapped);
        }
        // Enable memory decoding and bus mastering (the device DMAs into our rings).
        let cmd = pci::read32(a, 0x04);
        pci::write32(a, 0x04, (cmd & 0xffff) | 0x06);
        let regs = Regs {
            common,
            notify,
            notify_mult: mult,
        };
        // Reset, then acknowledge, as the spec orders it (3.1.1).
        regs.w8(DEVICE_STATUS, 0);
        let mut spins = 0u32;
        while regs.r8(DEVICE_STATUS) != 0 {
            spins += 1;
            if spins > 1_000_000 {
                return Err(Error::Features);
            }
            core::hint::spin_loop();
        }
        regs.w8(DEVICE_STATUS, STATUS_ACK);
        regs.w8(DEVICE_STATUS, STATUS_ACK | STATUS_DRIVER);
        regs.w32(DEVICE_FEATURE_SELECT, 0);
        let lo = regs.r32(DEVICE_FEATURE);
        regs.w32(DEVICE_FEATURE_SELECT, 1);
        let hi = regs.r32(DEVICE_FEATURE);
        regs.w32(DRIVER_FEATURE_SELECT, 0);
        regs.w32(DRIVER_FEATURE, F_MULTIPORT);
        regs.w32(DRIVER_FEATURE_SELECT, 1);
        regs.w32(DRIVER_FEATURE, F_VERSION_1_HI);
        let status = STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK;
        regs.w8(DEVICE_STATUS, status);
        if lo & F_MULTIPORT == 0
            || hi & F_VERSION_1_HI == 0
            || regs.r8(DEVICE_STATUS) & STATUS_FEATURES_OK == 0
        {
            regs.w8(DEVICE_STATUS, STATUS_FAILED);
            return Err(Error::Features);
        }
        let shared = SHARED.take().ok_or(Error::InUse)?;
        let pool = shared.rings.as_mut_ptr();
        let ring = |i: usize| pool.wrapping_add(i * RING_BYTES);
        let (Some(ctrl_rx), Some(ctrl_tx)) = (
            Queue::setup(&regs, 2, ring(0)),
            Queue::setup(&regs, 3, ring(1)),
        ) else {
            return Err(Error::NoQueues);
        };
        let mut c = Console {
            regs,
            pci: a,
            ctrl_rx,
            ctrl_tx,
            data: None,
            port: None,
            host_open: false,
            spare_rings: [Some(ring(2)), Some(ring(3))],
            ctrl_rx_buf: shared.ctrl_rx.0.as_mut_ptr().cast(),
            ctrl_tx_buf: shared.ctrl_tx.0.as_mut_ptr().cast(),
            data_rx_buf: shared.data_rx.0.as_mut_ptr().cast(),
            data_tx_buf: shared.data_tx.0.as_mut_ptr().cast(),
        };
        for i in 0..CTRL_BUFS as u16 {
            let addr = phys(c.ctrl_rx_buf) + (i as u64) * CTRL_BUF as u64;
            c.ctrl_rx.set_desc(i, addr, CTRL_BUF as u32, true);
            c.ctrl_rx.push(i);
        }
        regs.w8(DEVICE_STATUS, status | STATUS_DRIVER_OK);
        c.ctrl_rx.notify();
        c.control(Control {
            id: 0,
            event: event::DEVICE_READY,
            value: 1,
        })
        .map_err(|_| Error::NoQueues)?;
        Ok(c)
    }

    /// The device's PCI address.
    pub fn pci_address(&self) -> pci::Address {
        self.pci
    }

    /// The agent port's number, once the device named it.
    pub fn port(&self) -> Option<u32> {
        self.port
    }

    /// Whether the host side of the agent port is open.
    pub fn host_open(&self) -> bool {
        self.host_open
    }

    fn control(&mut self, msg: Control) -> Result<(), TxTimeout> {
        copy_out(&msg.to_bytes(), self.ctrl_tx_buf);
        self.ctrl_tx.set_desc(0, phys(self.ctrl_tx_buf), 8, false);
        self.ctrl_tx.push(0);
        self.ctrl_tx.notify();
        wait_used(&mut self.ctrl_tx)
    }

    /// Handle one control message; returns the agent-visible event, if any.
    fn on_control(&mut self, msg: Control, payload: &[u8]) -> Event {
        match msg.event {
            event::DEVICE_ADD => {
                let _ = self.control(Control {
                    id: msg.id,
                    event: event::PORT_READY,
                    value: 1,
                });
            }
            event::PORT_NAME => {
                let name = payload.split(|&b| b == 0).next().unwrap_or(&[]);
                if name == AGENT_PORT_NAME && self.port.is_none() {
                    self.attach_port(msg.id);
                }
            }
            event::PORT_OPEN if Some(msg.id) == self.port => {
                let open = msg.value != 0;
                if open != self.host_open {
                    self.host_open = open;
                    crate::log!(
                        "virtio port {}: host {}",
                        msg.id,
                        if open { "open" } else { "closed" }
                    );
                    return if open { Event::Opened } else { Event::Closed };
                }
            }
            event::DEVICE_REMOVE if Some(msg.id) == self.port => {
                self.host_open = false;
                return Event::Closed;
            }
            _ => {}
        }
        Event::Idle
    }

    fn attach_port(&mut self, id: u32) {
        let (rxq, txq) = port_queues(id);
        let (Some(r_rx), Some(r_tx)) = (self.spare_rings[0].take(), self.spare_rings[1].take())
        else {
            return;
        };
        let (Some(mut rx), Some(tx)) = (
            Queue::setup(&self.regs, rxq, r_rx),
            Queue::setup(&self.regs, txq, r_tx),
        ) else {
            crate::log!("virtio port {id}: queues {rxq}/{txq} unusable");
            return;
        };
        for i in 0..RX_BUFS as u16 {
            let addr = phys(self.data_rx_buf) + (i as u64) * RX_BUF as u64;
            rx.set_desc(i, addr, RX_BUF as u32, true);
            rx.push(i);
        }
        rx.notify();
        self.data = Some((rx, tx));
        self.port = Some(id);
        crate::log!("virtio port {id} is {}", "org.qemu.guest_agent.0");
        let _ = self.control(Control {
            id,
            event: event::PORT_OPEN,
            value: 1,
        });
    }

    /// Hand back at most one receive buffer's data in `buf` (which should hold [`RX_BUF`]
    /// bytes), else process control messages.
    ///
    /// Data goes first: bytes the old client sent before it hung up reach the agent before the
    /// close does, so the reset that follows discards them instead of mixing them with the next
    /// client's request.
    pub fn poll(&mut self, buf: &mut [u8]) -> Event {
        if let Some((rx, _)) = self.data.as_mut()
            && let Some((id, len)) = rx.pop()
        {
            let i = id as usize % RX_BUFS;
            let n = (len as usize).min(RX_BUF).min(buf.len());
            let src = self.data_rx_buf.wrapping_add(i * RX_BUF);
            copy_in(src, buf.get_mut(..n).unwrap_or(&mut []));
            rx.push(id);
            rx.notify();
            return Event::Data(n);
        }
        while let Some((id, len)) = self.ctrl_rx.pop() {
            let i = id as usize % CTRL_BUFS;
            let mut msg = [0u8; CTRL_BUF];
            let n = (len as usize).min(CTRL_BUF);
            // Buffer `i` of CTRL_BUFS lies in the control receive area.
            let src = self.ctrl_rx_buf.wrapping_add(i * CTRL_BUF);
            copy_in(src, msg.get_mut(..n).unwrap_or(&mut []));
            self.ctrl_rx.push(id);
            self.ctrl_rx.notify();
            if let Some((ctl, payload)) = Control::parse(msg.get(..n).unwrap_or(&[])) {
                let ev = self.on_control(ctl, payload);
                if ev != Event::Idle {
                    return ev;
                }
            }
        }
        Event::Idle
    }

    /// Send all of `bytes` on the agent port. Dropped (successfully) while no port exists.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), TxTimeout> {
        let buf = self.data_tx_buf;
        let Some((_, tx)) = self.data.as_mut() else {
            return Ok(());
        };
        for chunk in bytes.chunks(TX_BUF) {
            copy_out(chunk, buf);
            tx.set_desc(0, phys(buf), chunk.len() as u32, false);
            tx.push(0);
            tx.notify();
            wait_used(tx)?;
        }
        Ok(())
    }
}

/// Wait (bounded: 5 s) for the device to return the one in-flight descriptor.
fn wait_used(q: &mut Queue) -> Result<(), TxTimeout> {
    let start = tsc::rdtsc();
    let limit = tsc::hz().saturating_mul(5);
    loop {
        if q.pop().is_some() {
            return Ok(());
        }
        if tsc::rdtsc().wrapping_sub(start) > limit {
            return Err(TxTimeout);
        }
        core::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_queues() {
        assert_eq!(ring_layout(16), (256, 296, 296 + 6 + 128));
        assert_eq!(ring_layout(8), (128, 152, 152 + 6 + 64));
        assert!(ring_layout(MAX_QUEUE).2 <= RING_BYTES);
        assert!(MIN_QUEUE as usize >= CTRL_BUFS && MIN_QUEUE as usize >= RX_BUFS);
        assert_eq!(port_queues(0), (0, 1));
        assert_eq!(port_queues(1), (4, 5));
        assert_eq!(port_queues(30), (62, 63));
    }

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
        };
        vendor(&mut cfg, 0x84, 0x70, 1, 0x0000);
        vendor(&mut cfg, 0x70, 0x60, 3, 0x1000);
        vendor(&mut cfg, 0x60, 0x40, 4, 0x2000);
        vendor(&mut cfg, 0x40, 0x00, 2, 0x3000);
        cfg[0x40 + 16..0x40 + 20].copy_from_slice(&4u32.to_le_bytes());
        let caps = capabilities(&|o| cfg[o as usize], &|o| {
            u32::from_le_bytes(cfg[o as usize..o as usize + 4].try_into().unwrap())
        });
        assert_eq!(caps[1], Some((1, 4, 0, 0)));
        assert_eq!(caps[2], Some((2, 4, 0x3000, 4)));
        assert_eq!(caps[3], Some((3, 4, 0x1000, 0)));
        // A loop in the list ends; no list gives nothing.
        cfg[0x41] = 0x98;
        let caps = capabilities(&|o| cfg[o as usize], &|_| 0);
        assert!(caps[1].is_some());
        cfg[0x06] = 0;
        assert!(
            capabilities(&|o| cfg[o as usize], &|_| 0)
                .iter()
                .all(Option::is_none)
        );
    }

    #[test]
    fn control_messages() {
        let m = Control {
            id: 1,
            event: event::PORT_OPEN,
            value: 1,
        };
        let mut b = m.to_bytes().to_vec();
        b.extend_from_slice(b"org.qemu.guest_agent.0\0");
        let (c, rest) = Control::parse(&b).expect("parses");
        assert_eq!(c, m);
        assert_eq!(rest.split(|&x| x == 0).next(), Some(AGENT_PORT_NAME));
        assert!(Control::parse(&[0; 7]).is_none());
    }
}
