//! A polled virtio-console driver with the MULTIPORT feature, for the port named
//! `org.qemu.guest_agent.0`.
//!
//! Written here rather than taken from `virtio-drivers`, whose console is single-port and
//! allocates. It speaks the legacy (0.9.5) PCI interface through I/O BAR0, which QEMU's
//! transitional `virtio-serial-pci` offers on the root bus of both `pc` and `q35`. Behind a
//! PCIe root port (libvirt's q35 layout) QEMU makes the device modern-only unless it is given
//! `disable-legacy=off`, which works (checked by hand: `-device pcie-root-port,id=rp1
//! -device virtio-serial-pci,bus=rp1,disable-legacy=off`); a modern-only device is reported in
//! the log and the agent falls back to COM1. The modern interface (capabilities, MMIO BARs,
//! VERSION_1) would cost about a kilobyte of image the 128 KiB budget does not have.
//!
//! The multiport handshake, as libvirt and Linux expect it: the driver sends DEVICE_READY on
//! the control queue; the device answers PORT_ADD for each port; the driver answers PORT_READY;
//! the device names each port (PORT_NAME) and says whether the host side is open (PORT_OPEN).
//! For the agent's port the driver sets up that port's two queues and sends PORT_OPEN=1, after
//! which QEMU delivers data. PORT_OPEN=0 from the host is a disconnect ([`Event::Closed`]); the
//! agent then forgets any half-received request.
//!
//! Queue memory and buffers are `static` (no heap). The device writes them behind the
//! compiler's back, so every access to shared memory is volatile, with fences around the index
//! updates.

use core::sync::atomic::{Ordering, fence};

use super::{inb, inl, inw, outb, outl, outw, pci, tsc};
use crate::sync::Once;

/// Red Hat's virtio vendor ID.
pub const VENDOR: u16 = 0x1af4;
/// The transitional console's device ID (legacy interface available).
pub const DEVICE_CONSOLE_LEGACY: u16 = 0x1003;
/// The modern-only console's device ID.
pub const DEVICE_CONSOLE_MODERN: u16 = 0x1043;
/// The port name the agent serves.
pub const AGENT_PORT_NAME: &[u8] = b"org.qemu.guest_agent.0";

const F_MULTIPORT: u32 = 1 << 1;

// Legacy register offsets in BAR0.
const REG_DEVICE_FEATURES: u16 = 0x00;
const REG_GUEST_FEATURES: u16 = 0x04;
const REG_QUEUE_PFN: u16 = 0x08;
const REG_QUEUE_SIZE: u16 = 0x0c;
const REG_QUEUE_SELECT: u16 = 0x0e;
const REG_QUEUE_NOTIFY: u16 = 0x10;
const REG_STATUS: u16 = 0x12;

const STATUS_ACK: u8 = 1;
const STATUS_DRIVER: u8 = 2;
const STATUS_DRIVER_OK: u8 = 4;

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

/// The legacy split-ring layout for `size` entries: (avail offset, used offset, total bytes).
pub fn ring_layout(size: u16) -> (usize, usize, usize) {
    let n = size as usize;
    let avail = 16 * n;
    let used = (avail + 6 + 2 * n).next_multiple_of(4096);
    (avail, used, used + 6 + 8 * n)
}

/// Largest queue size supported by the static ring memory.
pub const MAX_QUEUE: u16 = 256;
const RING_BYTES: usize = 16384;
const CTRL_BUFS: usize = 8;
const CTRL_BUF: usize = 128;
const RX_BUFS: usize = 8;
/// Receive buffer size: the most [`Console::poll`] hands back at once.
pub const RX_BUF: usize = 512;
const TX_BUF: usize = 4096;

#[repr(C, align(16))]
struct Bufs<const N: usize, const S: usize>([[u8; S]; N]);

/// All the memory the device shares with us. The four rings must be 4 KiB-aligned (legacy
/// virtio takes a page frame number); they are aligned at run time inside `rings`, so that
/// nothing in `.bss` needs more than 16-byte alignment (which would pad the image file).
#[repr(C, align(16))]
struct Shared {
    rings: [u8; 4 * RING_BYTES + 4096],
    ctrl_rx: Bufs<CTRL_BUFS, CTRL_BUF>,
    ctrl_tx: Bufs<1, CTRL_BUF>,
    data_rx: Bufs<RX_BUFS, RX_BUF>,
    data_tx: Bufs<1, TX_BUF>,
}

static SHARED: Once<Shared> = Once::new(Shared {
    rings: [0; 4 * RING_BYTES + 4096],
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
}

impl Queue {
    /// Select queue `index` on the device at `io`, place its ring at `base` (RING_BYTES of
    /// 4 KiB-aligned static memory owned by this queue) and tell the device. `None` if the
    /// device has no such queue or it is too big for the ring memory.
    fn setup(io: u16, index: u16, base: *mut u8) -> Option<Queue> {
        // SAFETY: `io` is BAR0 of the virtio device this driver owns; selecting a queue and
        // reading its size are plain register accesses.
        let size = unsafe {
            outw(io + REG_QUEUE_SELECT, index);
            inw(io + REG_QUEUE_SIZE)
        };
        if size == 0 || size > MAX_QUEUE {
            return None;
        }
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
        // SAFETY: as above; the page frame number names the 4 KiB-aligned static ring, which
        // stays valid for the program's life (identity-mapped, below 4 GiB).
        unsafe { outl(io + REG_QUEUE_PFN, (phys(base) >> 12) as u32) };
        Some(Queue {
            base,
            size,
            index,
            avail_off,
            used_off,
            avail_idx: 0,
            last_used: 0,
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

    fn notify(&self, io: u16) {
        fence(Ordering::SeqCst);
        // SAFETY: writing a queue number to the notify register of our device.
        unsafe { outw(io + REG_QUEUE_NOTIFY, self.index) };
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
    /// Only a modern-only device (behind a PCIe port), which this driver does not speak.
    ModernOnly,
    /// BAR0 is not an I/O BAR.
    NoIoBar,
    /// The device does not offer MULTIPORT.
    NoMultiport,
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
            Error::ModernOnly => "only a modern-only (PCIe) virtio console, which is not driven",
            Error::NoIoBar => "BAR0 is not an I/O BAR",
            Error::NoMultiport => "the device does not offer MULTIPORT",
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
    io: u16,
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

/// Find the first virtio console function.
pub fn find() -> Result<pci::Function, Error> {
    let mut found = None;
    let mut modern = false;
    pci::scan(&mut |f| {
        if f.vendor == VENDOR && f.device == DEVICE_CONSOLE_LEGACY {
            found = Some(*f);
            return false;
        }
        modern |= f.vendor == VENDOR && f.device == DEVICE_CONSOLE_MODERN;
        true
    });
    match found {
        Some(f) => Ok(f),
        None if modern => Err(Error::ModernOnly),
        None => Err(Error::NotFound),
    }
}

impl Console {
    /// Bring up the device at `f` and send DEVICE_READY.
    pub fn open(f: &pci::Function) -> Result<Console, Error> {
        let bar0 = pci::read32(f.addr, 0x10);
        if bar0 & 1 == 0 {
            return Err(Error::NoIoBar);
        }
        let io = (bar0 & 0xfffc) as u16;
        // Enable I/O decoding and bus mastering (the device DMAs into our rings).
        let cmd = pci::read32(f.addr, 0x04);
        pci::write32(f.addr, 0x04, (cmd & 0xffff) | 0x05);
        // SAFETY: `io` is the device's I/O BAR, just enabled; these are the legacy virtio
        // status and feature registers, written in the order the spec requires.
        let features = unsafe {
            outb(io + REG_STATUS, 0);
            outb(io + REG_STATUS, STATUS_ACK);
            outb(io + REG_STATUS, STATUS_ACK | STATUS_DRIVER);
            inl(io + REG_DEVICE_FEATURES)
        };
        if features & F_MULTIPORT == 0 {
            // SAFETY: as above; status 0x80 (FAILED) tells the device we gave up.
            unsafe { outb(io + REG_STATUS, 0x80) };
            return Err(Error::NoMultiport);
        }
        // SAFETY: as above.
        unsafe { outl(io + REG_GUEST_FEATURES, F_MULTIPORT) };
        let shared = SHARED.take().ok_or(Error::InUse)?;
        let pool = shared.rings.as_mut_ptr();
        let skew = pool.align_offset(4096);
        let ring = |i: usize| pool.wrapping_add(skew + i * RING_BYTES);
        let (r0, r1, r2, r3) = (ring(0), ring(1), ring(2), ring(3));
        let (ctrl_rx, ctrl_tx) = match (Queue::setup(io, 2, r0), Queue::setup(io, 3, r1)) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(Error::NoQueues),
        };
        let mut c = Console {
            io,
            pci: f.addr,
            ctrl_rx,
            ctrl_tx,
            data: None,
            port: None,
            host_open: false,
            spare_rings: [Some(r2), Some(r3)],
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
        c.ctrl_rx.notify(io);
        // SAFETY: as above: DRIVER_OK completes initialisation.
        unsafe {
            outb(
                io + REG_STATUS,
                STATUS_ACK | STATUS_DRIVER | STATUS_DRIVER_OK,
            )
        };
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
        self.ctrl_tx.notify(self.io);
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
            Queue::setup(self.io, rxq, r_rx),
            Queue::setup(self.io, txq, r_tx),
        ) else {
            crate::log!("virtio port {id}: queues {rxq}/{txq} unusable");
            return;
        };
        for i in 0..RX_BUFS as u16 {
            let addr = phys(self.data_rx_buf) + (i as u64) * RX_BUF as u64;
            rx.set_desc(i, addr, RX_BUF as u32, true);
            rx.push(i);
        }
        rx.notify(self.io);
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
        let io = self.io;
        if let Some((rx, _)) = self.data.as_mut()
            && let Some((id, len)) = rx.pop()
        {
            let i = id as usize % RX_BUFS;
            let n = (len as usize).min(RX_BUF).min(buf.len());
            let src = self.data_rx_buf.wrapping_add(i * RX_BUF);
            copy_in(src, buf.get_mut(..n).unwrap_or(&mut []));
            rx.push(id);
            rx.notify(io);
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
            self.ctrl_rx.notify(io);
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
        let io = self.io;
        let buf = self.data_tx_buf;
        let Some((_, tx)) = self.data.as_mut() else {
            return Ok(());
        };
        for chunk in bytes.chunks(TX_BUF) {
            copy_out(chunk, buf);
            tx.set_desc(0, phys(buf), chunk.len() as u32, false);
            tx.push(0);
            tx.notify(io);
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

/// Read the device status register (for diagnostics).
pub fn status(io: u16) -> u8 {
    // SAFETY: reading the legacy status register has no side effect.
    unsafe { inb(io + REG_STATUS) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_queues() {
        assert_eq!(ring_layout(128), (2048, 4096, 4096 + 6 + 1024));
        assert_eq!(ring_layout(256), (4096, 8192, 8192 + 6 + 2048));
        assert!(ring_layout(MAX_QUEUE).2 <= RING_BYTES);
        assert_eq!(port_queues(0), (0, 1));
        assert_eq!(port_queues(1), (4, 5));
        assert_eq!(port_queues(30), (62, 63));
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
