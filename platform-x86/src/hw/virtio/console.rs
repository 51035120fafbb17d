//! The virtio-console device with the MULTIPORT feature, serving the port named
//! `org.qemu.guest_agent.0`, over any [`Transport`].
//!
//! The multiport handshake, as libvirt and Linux expect it: the driver sends DEVICE_READY on
//! the control queue; the device answers PORT_ADD for each port; the driver answers PORT_READY;
//! the device names each port (PORT_NAME) and says whether the host side is open (PORT_OPEN).
//! For the agent's port the driver sets up that port's two queues and sends PORT_OPEN=1, after
//! which QEMU delivers data. PORT_OPEN=0 from the host is a disconnect ([`Event::Closed`]); the
//! agent then forgets any half-received request.
//!
//! Transmission does not wait for the device: a send copies each 4 KiB piece into one of
//! eight transmit buffers and offers it ([`TxSlots`]), so the engine encodes the next piece
//! of a reply while the device moves the last, as the vsock driver does. A send waits only
//! when all eight are in flight; if none comes back within 5 s (a host that stopped reading)
//! the send fails, and the engine then drops the rest of that response (it resumes after the
//! next port close, when QEMU gives back what it held).
//!
//! Queue memory and buffers are one `static` (no heap), taken once; the device reads and
//! writes the buffers behind the compiler's back, so they are copied with volatile accesses.

pub use super::queue::TxTimeout;
use super::queue::{Queue, RING_BYTES, Ring, TxSlots, copy_in, copy_out, phys, wait_used};
use super::{Error, F_VERSION_1, Transport, driver_ok, negotiate};
use crate::sync::TakeOnce;

/// The port name the agent serves.
pub const AGENT_PORT_NAME: &[u8] = b"org.qemu.guest_agent.0";

/// VIRTIO_CONSOLE_F_MULTIPORT.
const F_MULTIPORT: u64 = 1 << 1;

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

const CTRL_BUFS: usize = 8;
const CTRL_BUF: usize = 128;
const RX_BUFS: usize = 8;
/// Receive buffer size: the most [`Console::poll`] hands back at once.
pub const RX_BUF: usize = 512;
const TX_BUF: usize = 4096;
/// Transmit buffers in flight at once.
const TX_BUFS: usize = TxSlots::COUNT;

#[repr(C, align(16))]
struct Bufs<const N: usize, const S: usize>([[u8; S]; N]);

/// All the memory the device shares with us: four rings (the control queues', then the agent
/// port's) and the buffers.
#[repr(C, align(16))]
struct Shared {
    rings: [Ring; 4],
    ctrl_rx: Bufs<CTRL_BUFS, CTRL_BUF>,
    ctrl_tx: Bufs<1, CTRL_BUF>,
    data_rx: Bufs<RX_BUFS, RX_BUF>,
    data_tx: Bufs<TX_BUFS, TX_BUF>,
}

static SHARED: TakeOnce<Shared> = TakeOnce::new(Shared {
    rings: [const { Ring([0; RING_BYTES]) }; 4],
    ctrl_rx: Bufs([[0; CTRL_BUF]; CTRL_BUFS]),
    ctrl_tx: Bufs([[0; CTRL_BUF]; 1]),
    data_rx: Bufs([[0; RX_BUF]; RX_BUFS]),
    data_tx: Bufs([[0; TX_BUF]; TX_BUFS]),
});

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

/// The driver.
pub struct Console<T: Transport> {
    t: T,
    ctrl_rx: Queue,
    ctrl_tx: Queue,
    data: Option<(Queue, Queue)>,
    port: Option<u32>,
    host_open: bool,
    spare_rings: Option<(&'static mut Ring, &'static mut Ring)>,
    ctrl_rx_buf: *mut u8,
    ctrl_tx_buf: *mut u8,
    data_rx_buf: *mut u8,
    data_tx_buf: *mut u8,
    /// Which data transmit buffers the device has given back.
    tx_free: TxSlots,
}

impl<T: Transport> Console<T> {
    /// Bring up the console behind `transport` and send DEVICE_READY.
    pub fn open(transport: T) -> Result<Console<T>, Error> {
        let t = transport;
        negotiate(&t, F_MULTIPORT | F_VERSION_1)?;
        let shared = SHARED.take().ok_or(Error::InUse)?;
        let [r0, r1, r2, r3] = &mut shared.rings;
        let (Some(ctrl_rx), Some(ctrl_tx)) = (Queue::setup(&t, 2, r0), Queue::setup(&t, 3, r1))
        else {
            return Err(Error::NoQueues);
        };
        let mut c = Console {
            t,
            ctrl_rx,
            ctrl_tx,
            data: None,
            port: None,
            host_open: false,
            spare_rings: Some((r2, r3)),
            ctrl_rx_buf: shared.ctrl_rx.0.as_mut_ptr().cast(),
            ctrl_tx_buf: shared.ctrl_tx.0.as_mut_ptr().cast(),
            data_rx_buf: shared.data_rx.0.as_mut_ptr().cast(),
            data_tx_buf: shared.data_tx.0.as_mut_ptr().cast(),
            tx_free: TxSlots::new(),
        };
        for i in 0..CTRL_BUFS as u16 {
            let addr = phys(c.ctrl_rx_buf) + (i as u64) * CTRL_BUF as u64;
            c.ctrl_rx.set_desc(i, addr, CTRL_BUF as u32, true);
            c.ctrl_rx.push(i);
        }
        driver_ok(&c.t);
        c.ctrl_rx.notify(&c.t);
        c.control(Control {
            id: 0,
            event: event::DEVICE_READY,
            value: 1,
        })
        .map_err(|_| Error::NoQueues)?;
        Ok(c)
    }

    /// The transport the console speaks through.
    pub fn transport(&self) -> &T {
        &self.t
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
        self.ctrl_tx.notify(&self.t);
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
        let Some((r_rx, r_tx)) = self.spare_rings.take() else {
            return;
        };
        let (Some(mut rx), Some(tx)) = (
            Queue::setup(&self.t, rxq, r_rx),
            Queue::setup(&self.t, txq, r_tx),
        ) else {
            crate::log!("virtio port {id}: queues {rxq}/{txq} unusable");
            return;
        };
        for i in 0..RX_BUFS as u16 {
            let addr = phys(self.data_rx_buf) + (i as u64) * RX_BUF as u64;
            rx.set_desc(i, addr, RX_BUF as u32, true);
            rx.push(i);
        }
        rx.notify(&self.t);
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
            rx.notify(&self.t);
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
            self.ctrl_rx.notify(&self.t);
            if let Some((ctl, payload)) = Control::parse(msg.get(..n).unwrap_or(&[])) {
                let ev = self.on_control(ctl, payload);
                if ev != Event::Idle {
                    return ev;
                }
            }
        }
        Event::Idle
    }

    /// Queue all of `bytes` on the agent port, in pieces of up to 4 KiB, without waiting for
    /// the device to take them (only for a free buffer). Dropped (successfully) while no port
    /// exists.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), TxTimeout> {
        let Some((_, tx)) = self.data.as_mut() else {
            return Ok(());
        };
        for chunk in bytes.chunks(TX_BUF) {
            let slot = self.tx_free.free(tx)?;
            // Buffer `slot` of the TX_BUFS buffers of TX_BUF bytes that `data_tx_buf` starts.
            let buf = self.data_tx_buf.wrapping_add(slot * TX_BUF);
            copy_out(chunk, buf);
            tx.set_desc(slot as u16, phys(buf), chunk.len() as u32, false);
            self.tx_free.give(tx, slot);
            tx.notify(&self.t);
        }
        // QEMU usually takes a buffer during the notify itself: take it back now, leaving the
        // used ring empty between sends.
        self.tx_free.reclaim(tx);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_queues_and_buffers() {
        use super::super::queue::MIN_QUEUE;
        assert!(MIN_QUEUE as usize >= CTRL_BUFS && MIN_QUEUE as usize >= RX_BUFS);
        assert!(MIN_QUEUE as usize >= TX_BUFS);
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
