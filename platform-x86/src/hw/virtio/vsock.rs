//! The virtio socket device (device ID 19) as a one-connection stream listener, over any
//! [`Transport`]: the guest channel of Firecracker and of the other microVM monitors.
//!
//! # One connection at a time
//!
//! The agent listens on one port (1234 unless configured: [`crate::config`]). The first host
//! `REQUEST` to it is answered `RESPONSE` and becomes the connection; while it lasts, any other
//! `REQUEST` is refused with `RST` and counted, as upstream's single channel does (its second
//! client waits, here it is told at once). Each connection starts with a clean parser: the
//! driver reports [`Event::Opened`] and [`Event::Closed`] and the image resets the agent on
//! both. `RST` from the host ends the connection; `SHUTDOWN` (either direction) is answered
//! with `RST` and ends it too, since the agent has nothing to say to a host that will not
//! listen or will not ask.
//!
//! # Credit, both ways
//!
//! The host may have at most `buf_alloc` bytes sent and not yet consumed by the agent. The
//! driver copies every received payload at once into a [`STASH`]-byte ring (so receive
//! buffers go straight back to the device) and advertises exactly that ring's size as
//! `buf_alloc`; `fwd_cnt` counts what the agent has taken out of it. A host that sends faster
//! than the agent reads therefore runs out of credit (the device holds its bytes back) and the
//! ring can never overflow; a payload that would overflow it breaks the host's side of the
//! contract and is dropped and counted. A `CREDIT_UPDATE` goes out whenever half the ring has
//! been consumed since the host last heard our `fwd_cnt` (every packet carries it).
//!
//! The agent sends no more than the host's credit allows (`buf_alloc - (tx_cnt - fwd_cnt)`,
//! learned from every packet the host sends). When it is used up the send waits, receiving
//! meanwhile (payloads into the ring, credit updates, a reset) and asking with
//! `CREDIT_REQUEST` once a second; a reply is never cut short because the host reads slowly,
//! only when the connection ends.
//!
//! # Malformed packets
//!
//! A packet shorter than its header, whose `len` runs past what the device wrote, of a
//! type other than stream, addressed to another CID, or with an unknown op is dropped and
//! counted ([`Counters`]); stream packets for a connection that does not exist are answered
//! with `RST`, as the spec asks.
//!
//! Memory is one `static` taken once (no heap); each packet is one descriptor, header and
//! payload together (virtio 1.x lets a device take either layout). A packet carries up to
//! 4 KiB, the engine's whole transmit buffer, and up to eight are in flight: sending does not
//! wait for the device to take a packet, only for a free buffer, so the agent encodes the
//! next piece of a reply while the device moves the last.
//!
//! # Known issue (the host side's)
//!
//! Under `vhost-device-vsock` 0.3.0 (the test set-up's host side), when several VMs start at
//! once on a loaded machine, about one boot in ten never receives any host connection: the
//! image has set DRIVER_OK, posted its receive buffers and notified, and the daemon holds
//! every `CONNECT` unanswered for as long as the VM runs. Root cause, found with a daemon
//! built with one log line added (2026-12-06): a host `CONNECT` that the daemon reads after
//! QEMU gave it the guest's memory but before the receive queue is set up makes
//! `process_rx_queue` fail (`queue.iter()`: `IterateQueue`); the error leaves the backend's
//! `handle_event`, and vhost-user-backend 0.20's `VringEpollHandler::run` returns on any error
//! (`self.handle_event(..)?`), so the daemon's one epoll worker thread ends, silently. Nothing
//! is left to accept, answer or forward anything: every failed boot had one thread fewer in
//! `/proc/PID/task` (4 instead of 5), and each of 6 failures in 56 boots (four VMs at a time,
//! the host connecting from QEMU's start on) logged `worker thread ends: event 4 (the backend
//! event) -> HandleEventBackendHandling(IterateQueue)`. That is why it goes with connecting
//! early (1 of 36 boots when the host connected from QEMU's start, 0 of 36 when it waited
//! 0.5 s) and why nothing the guest does (posting buffers after DRIVER_OK as Linux does, kept;
//! re-notifying every 10 ms, tried) changes it. The test harness detects such a boot by its
//! first connection and boots again (`tests::baremetal::BareMetalVm`); Linux guests are never
//! hit because their harness connects seconds after the device is up.

use super::queue::{Queue, RING_BYTES, Ring, TxSlots, TxTimeout, copy_in, copy_out, phys};
use super::{Error, F_VERSION_1, Transport, driver_ok, negotiate};
use crate::hw::tsc;
use crate::sync::TakeOnce;

/// The header's size.
pub const HDR: usize = 44;
/// The host's CID.
pub const HOST_CID: u64 = 2;
/// The stream socket type.
pub const TYPE_STREAM: u16 = 1;
/// The receive window: what the host may send ahead of the agent.
pub const STASH: usize = 32 * 1024;

/// Packet operations (virtio 1.2, 5.10.6).
pub mod op {
    /// Connect.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Connection refused or torn down.
    pub const RST: u16 = 3;
    /// The sender will not receive (flag 1) and/or send (flag 2) any more.
    pub const SHUTDOWN: u16 = 4;
    /// Data.
    pub const RW: u16 = 5;
    /// The sender's credit, unasked.
    pub const CREDIT_UPDATE: u16 = 6;
    /// Asks the peer for a credit update.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// A packet header (all fields little endian on the wire).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type (1: stream).
    pub kind: u16,
    /// One of [`op`].
    pub op: u16,
    /// `SHUTDOWN` flags.
    pub flags: u32,
    /// The sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed.
    pub fwd_cnt: u32,
}

impl Header {
    /// Decode the first [`HDR`] bytes of `b`.
    pub fn parse(b: &[u8]) -> Option<Header> {
        use crate::pvh::{le16, le32, le64};
        Some(Header {
            src_cid: le64(b, 0)?,
            dst_cid: le64(b, 8)?,
            src_port: le32(b, 16)?,
            dst_port: le32(b, 20)?,
            len: le32(b, 24)?,
            kind: le16(b, 28)?,
            op: le16(b, 30)?,
            flags: le32(b, 32)?,
            buf_alloc: le32(b, 36)?,
            fwd_cnt: le32(b, 40)?,
        })
    }

    /// Encode.
    pub fn to_bytes(&self) -> [u8; HDR] {
        let mut b = [0u8; HDR];
        let mut put = |at: usize, v: &[u8]| {
            if let Some(d) = b.get_mut(at..at + v.len()) {
                d.copy_from_slice(v);
            }
        };
        put(0, &self.src_cid.to_le_bytes());
        put(8, &self.dst_cid.to_le_bytes());
        put(16, &self.src_port.to_le_bytes());
        put(20, &self.dst_port.to_le_bytes());
        put(24, &self.len.to_le_bytes());
        put(28, &self.kind.to_le_bytes());
        put(30, &self.op.to_le_bytes());
        put(32, &self.flags.to_le_bytes());
        put(36, &self.buf_alloc.to_le_bytes());
        put(40, &self.fwd_cnt.to_le_bytes());
        b
    }
}

/// A byte ring: the received payloads the agent has not taken yet.
pub struct Stash {
    bytes: [u8; STASH],
    head: usize,
    len: usize,
}

impl Stash {
    /// Empty.
    pub const fn new() -> Self {
        Stash {
            bytes: [0; STASH],
            head: 0,
            len: 0,
        }
    }

    /// Room left.
    pub fn free(&self) -> usize {
        STASH - self.len
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// Append `data`; false (and nothing appended) if it does not fit.
    pub fn push(&mut self, data: &[u8]) -> bool {
        if data.len() > self.free() {
            return false;
        }
        for &b in data {
            if let Some(slot) = self.bytes.get_mut((self.head + self.len) % STASH) {
                *slot = b;
            }
            self.len += 1;
        }
        true
    }

    /// Move up to `out.len()` bytes out; how many.
    pub fn take(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len);
        for o in out.iter_mut().take(n) {
            *o = self.bytes.get(self.head).copied().unwrap_or(0);
            self.head = (self.head + 1) % STASH;
        }
        self.len -= n;
        n
    }
}

impl Default for Stash {
    fn default() -> Self {
        Self::new()
    }
}

/// Packets dropped or refused, for the log and the tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Dropped as malformed (bad length, type, CID, op, or beyond the credit given).
    pub malformed: u32,
    /// Connection requests refused with `RST` (a connection was already open, or another port).
    pub refused: u32,
}

/// What [`Vsock::poll`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Nothing new.
    Idle,
    /// This many bytes of agent data are in the caller's buffer.
    Data(usize),
    /// A host connection was accepted.
    Opened,
    /// The connection ended (reset, shut down, or the transport was reset).
    Closed,
}

const RX_BUFS: usize = 8;
const RX_BUF: usize = 4096;
/// The most payload one packet carries: a whole transmit buffer of the engine (4 KiB), so a
/// flush of it is one packet, not a full one and a 44-byte one.
const MAX_PAYLOAD: usize = 4096;
/// One transmit buffer: a header and the payload after it.
const TX_BUF: usize = HDR + MAX_PAYLOAD;
/// Transmit buffers in flight at once.
const TX_SLOTS: usize = TxSlots::COUNT;
const EVENT_BUFS: usize = 8;
const EVENT_BUF: usize = 8;

#[repr(C, align(16))]
struct Shared {
    rings: [Ring; 3],
    rx: [[u8; RX_BUF]; RX_BUFS],
    tx: [[u8; TX_BUF]; TX_SLOTS],
    event: [[u8; EVENT_BUF]; EVENT_BUFS],
    stash: Stash,
}

static SHARED: TakeOnce<Shared> = TakeOnce::new(Shared {
    rings: [const { Ring([0; RING_BYTES]) }; 3],
    rx: [[0; RX_BUF]; RX_BUFS],
    tx: [[0; TX_BUF]; TX_SLOTS],
    event: [[0; EVENT_BUF]; EVENT_BUFS],
    stash: Stash::new(),
});

/// The open connection: the peer and the credit counters of both sides.
#[derive(Clone, Copy, Debug)]
pub struct Conn {
    peer_cid: u64,
    peer_port: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    tx_cnt: u32,
    fwd_cnt: u32,
    fwd_told: u32,
}

impl Conn {
    /// Bytes the host can take now.
    fn credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }
}

/// The driver.
pub struct Vsock<T: Transport> {
    t: T,
    rx: Queue,
    tx: Queue,
    ev: Queue,
    cid: u64,
    port: u32,
    conn: Option<Conn>,
    pending: Option<Event>,
    rx_buf: *mut u8,
    tx_buf: *mut u8,
    /// Which transmit buffers the device has given back.
    tx_free: TxSlots,
    ev_buf: *mut u8,
    stash: &'static mut Stash,
    counters: Counters,
}

impl<T: Transport> Vsock<T> {
    /// Bring up the device behind `transport` and listen on `port`.
    pub fn open(transport: T, port: u32) -> Result<Vsock<T>, Error> {
        let t = transport;
        negotiate(&t, F_VERSION_1)?;
        let shared = SHARED.take().ok_or(Error::InUse)?;
        let [r0, r1, r2] = &mut shared.rings;
        let (Some(rx), Some(tx), Some(ev)) = (
            Queue::setup(&t, 0, r0),
            Queue::setup(&t, 1, r1),
            Queue::setup(&t, 2, r2),
        ) else {
            return Err(Error::NoQueues);
        };
        let cid = t.config_u32(0) as u64 | (t.config_u32(4) as u64) << 32;
        let mut v = Vsock {
            t,
            rx,
            tx,
            ev,
            cid,
            port,
            conn: None,
            pending: None,
            rx_buf: shared.rx.as_mut_ptr().cast(),
            tx_buf: shared.tx.as_mut_ptr().cast(),
            tx_free: TxSlots::new(),
            ev_buf: shared.event.as_mut_ptr().cast(),
            stash: &mut shared.stash,
            counters: Counters::default(),
        };
        // As Linux does: DRIVER_OK first, then the receive buffers and the notify (a
        // vhost-user back end starts at DRIVER_OK).
        driver_ok(&v.t);
        for i in 0..RX_BUFS as u16 {
            let addr = phys(v.rx_buf) + i as u64 * RX_BUF as u64;
            v.rx.set_desc(i, addr, RX_BUF as u32, true);
            v.rx.push(i);
        }
        for i in 0..EVENT_BUFS as u16 {
            let addr = phys(v.ev_buf) + i as u64 * EVENT_BUF as u64;
            v.ev.set_desc(i, addr, EVENT_BUF as u32, true);
            v.ev.push(i);
        }
        v.rx.notify(&v.t);
        v.ev.notify(&v.t);
        Ok(v)
    }

    /// The transport the device speaks through.
    pub fn transport(&self) -> &T {
        &self.t
    }

    /// The guest's CID, as the device reports it.
    pub fn cid(&self) -> u64 {
        self.cid
    }

    /// The port listened on.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Packets dropped and connections refused so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Whether a host connection is open.
    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Handle what the device delivered; hand back at most `buf.len()` bytes of the
    /// connection's data, else the connection events.
    pub fn poll(&mut self, buf: &mut [u8]) -> Event {
        if let Some(e) = self.pending.take() {
            return e;
        }
        if self.transport_event() {
            return Event::Closed;
        }
        while let Some(e) = self.receive_one() {
            if e != Event::Idle {
                return e;
            }
        }
        if self.conn.is_none() || self.stash.is_empty() {
            return Event::Idle;
        }
        let n = self.stash.take(buf);
        if let Some(c) = self.conn.as_mut() {
            c.fwd_cnt = c.fwd_cnt.wrapping_add(n as u32);
            if c.fwd_cnt.wrapping_sub(c.fwd_told) as usize >= STASH / 2 {
                let _ = self.reply(op::CREDIT_UPDATE);
            }
        }
        Event::Data(n)
    }

    /// Send all of `bytes` on the connection, within the host's credit (waiting for more as
    /// long as the connection lasts). Fails if there is no connection or it ends meanwhile.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), TxTimeout> {
        let mut rest = bytes;
        let mut asked = None::<u64>;
        while !rest.is_empty() {
            let Some(c) = self.conn else {
                return Err(TxTimeout);
            };
            let credit = c.credit() as usize;
            if credit == 0 {
                let now = tsc::rdtsc();
                if asked.is_none_or(|t| now.wrapping_sub(t) > tsc::hz()) {
                    self.reply(op::CREDIT_REQUEST)?;
                    asked = Some(now);
                }
                match self.receive_one() {
                    Some(Event::Closed) => {
                        self.pending = Some(Event::Closed);
                        return Err(TxTimeout);
                    }
                    Some(_) => {}
                    None => core::hint::spin_loop(),
                }
                continue;
            }
            let n = rest.len().min(credit).min(MAX_PAYLOAD);
            let (chunk, tail) = rest.split_at(n);
            self.packet(op::RW, c.peer_cid, c.peer_port, 0, chunk)?;
            if let Some(c) = self.conn.as_mut() {
                c.tx_cnt = c.tx_cnt.wrapping_add(n as u32);
            }
            rest = tail;
        }
        Ok(())
    }

    /// A packet to the connection's peer.
    fn reply(&mut self, op: u16) -> Result<(), TxTimeout> {
        match self.conn {
            Some(c) => self.packet(op, c.peer_cid, c.peer_port, 0, &[]),
            None => Ok(()),
        }
    }

    /// Queue one packet (header and payload in one buffer) for the device, without waiting for
    /// it to be taken: up to [`TX_SLOTS`] packets are in flight, so the agent produces the
    /// next while the device moves the last (the device takes them in order).
    fn packet(
        &mut self,
        op: u16,
        dst_cid: u64,
        dst_port: u32,
        flags: u32,
        payload: &[u8],
    ) -> Result<(), TxTimeout> {
        let ours = self
            .conn
            .as_mut()
            .filter(|c| c.peer_cid == dst_cid && c.peer_port == dst_port);
        let fwd_cnt = match ours {
            Some(c) => {
                c.fwd_told = c.fwd_cnt;
                c.fwd_cnt
            }
            None => 0,
        };
        let payload = payload.get(..MAX_PAYLOAD.min(payload.len())).unwrap_or(&[]);
        let h = Header {
            src_cid: self.cid,
            dst_cid,
            src_port: self.port,
            dst_port,
            len: payload.len() as u32,
            kind: TYPE_STREAM,
            op,
            flags,
            buf_alloc: STASH as u32,
            fwd_cnt,
        };
        let slot = self.tx_free.free(&mut self.tx)?;
        // Buffer `slot` of the TX_SLOTS buffers of TX_BUF bytes that `tx_buf` starts.
        let buf = self.tx_buf.wrapping_add(slot * TX_BUF);
        copy_out(&h.to_bytes(), buf);
        // The payload follows the header inside the TX_BUF-byte buffer (checked above).
        copy_out(payload, buf.wrapping_add(HDR));
        self.tx
            .set_desc(slot as u16, phys(buf), (HDR + payload.len()) as u32, false);
        self.tx_free.give(&mut self.tx, slot);
        self.tx.notify(&self.t);
        Ok(())
    }

    /// A transport reset event (migration): the connection is gone and the CID may have
    /// changed. True if one arrived while a connection was open.
    fn transport_event(&mut self) -> bool {
        let mut reset = false;
        while let Some((id, _)) = self.ev.pop() {
            self.ev.push(id);
            self.ev.notify(&self.t);
            reset = true;
        }
        if !reset {
            return false;
        }
        self.cid = self.t.config_u32(0) as u64 | (self.t.config_u32(4) as u64) << 32;
        crate::log!("vsock: transport reset, CID {}", self.cid);
        self.close()
    }

    /// Forget the connection; true if there was one.
    fn close(&mut self) -> bool {
        self.stash.clear();
        self.conn.take().is_some()
    }

    /// Take one received packet off the queue and act on it; `None` if there was none.
    fn receive_one(&mut self) -> Option<Event> {
        let (id, used) = self.rx.pop()?;
        let i = id as usize % RX_BUFS;
        let buf = self.rx_buf.wrapping_add(i * RX_BUF);
        let mut hdr = [0u8; HDR];
        let used = (used as usize).min(RX_BUF);
        // A packet shorter than a header reads as all zeros, which `decide` drops.
        let header = if used >= HDR {
            copy_in(buf, &mut hdr);
            Header::parse(&hdr).unwrap_or_default()
        } else {
            Header::default()
        };
        let action = decide(
            &header,
            used,
            Listener {
                cid: self.cid,
                port: self.port,
            },
            self.conn.as_ref(),
            self.stash.free(),
        );
        let ev = self.act(action, &header, buf.wrapping_add(HDR));
        self.rx.push(id);
        self.rx.notify(&self.t);
        Some(ev)
    }

    /// Carry out [`decide`]'s verdict on packet `h`, whose payload lies at `payload`.
    fn act(&mut self, action: Action, h: &Header, payload: *const u8) -> Event {
        if let (Some(c), true) = (self.conn.as_mut(), action.is_from_peer()) {
            c.peer_buf_alloc = h.buf_alloc;
            c.peer_fwd_cnt = h.fwd_cnt;
        }
        match action {
            Action::Malformed => {
                self.counters.malformed += 1;
                Event::Idle
            }
            Action::Refuse => {
                if h.op == op::REQUEST {
                    self.counters.refused += 1;
                }
                let _ = self.packet(op::RST, h.src_cid, h.src_port, 0, &[]);
                Event::Idle
            }
            Action::Ignore | Action::Credit => Event::Idle,
            Action::Accept => {
                self.conn = Some(Conn {
                    peer_cid: h.src_cid,
                    peer_port: h.src_port,
                    peer_buf_alloc: h.buf_alloc,
                    peer_fwd_cnt: h.fwd_cnt,
                    tx_cnt: 0,
                    fwd_cnt: 0,
                    fwd_told: 0,
                });
                self.stash.clear();
                match self.reply(op::RESPONSE) {
                    Ok(()) => {
                        crate::log!("vsock: connection from port {}", h.src_port);
                        Event::Opened
                    }
                    Err(_) => {
                        crate::log!("vsock: the device did not take the RESPONSE");
                        self.close();
                        Event::Idle
                    }
                }
            }
            Action::Data => {
                let mut chunk = [0u8; 512];
                let mut at = 0usize;
                let len = h.len as usize;
                while at < len {
                    let n = (len - at).min(chunk.len());
                    let part = chunk.get_mut(..n).unwrap_or(&mut []);
                    copy_in(payload.wrapping_add(at), part);
                    self.stash.push(part);
                    at += n;
                }
                Event::Idle
            }
            Action::CreditRequest => {
                let _ = self.reply(op::CREDIT_UPDATE);
                Event::Idle
            }
            Action::Shutdown => {
                let _ = self.reply(op::RST);
                self.close();
                Event::Closed
            }
            Action::Reset => {
                self.close();
                Event::Closed
            }
        }
    }
}

/// Who the driver is: its CID and listening port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    /// The guest's CID.
    pub cid: u64,
    /// The port listened on.
    pub port: u32,
}

/// What to do with a received packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Drop it and count it (bad length, type, CID, op, or payload beyond the credit given).
    Malformed,
    /// Answer `RST` (a connection request while one is open or to another port, or a packet
    /// of a connection that does not exist).
    Refuse,
    /// Nothing to do (an `RST` for a connection that does not exist).
    Ignore,
    /// Open the connection and answer `RESPONSE`.
    Accept,
    /// Stash the payload.
    Data,
    /// Only the credit it carries (a `CREDIT_UPDATE`, or a stray `REQUEST`/`RESPONSE` on the
    /// open connection).
    Credit,
    /// Answer with our credit.
    CreditRequest,
    /// The host shut down: answer `RST`, end the connection.
    Shutdown,
    /// The host reset the connection.
    Reset,
}

impl Action {
    /// Whether the packet came from the open connection's peer (so its credit counts).
    fn is_from_peer(self) -> bool {
        matches!(
            self,
            Action::Data
                | Action::Credit
                | Action::CreditRequest
                | Action::Shutdown
                | Action::Reset
        )
    }
}

/// The verdict on packet `h` of which the device wrote `used` bytes (header included), for
/// listener `me` with connection `conn` and `room` bytes of stash free. Pure, so that every
/// malformed case is tested on the host.
pub fn decide(h: &Header, used: usize, me: Listener, conn: Option<&Conn>, room: usize) -> Action {
    if used < HDR
        || h.len as usize > used - HDR
        || h.kind != TYPE_STREAM
        || h.dst_cid != me.cid
        || !(op::REQUEST..=op::CREDIT_REQUEST).contains(&h.op)
    {
        return Action::Malformed;
    }
    let ours = conn.is_some_and(|c| c.peer_cid == h.src_cid && c.peer_port == h.src_port)
        && h.dst_port == me.port;
    if !ours {
        return match h.op {
            op::REQUEST if h.dst_port == me.port && conn.is_none() => Action::Accept,
            op::RST => Action::Ignore,
            _ => Action::Refuse,
        };
    }
    match h.op {
        op::RW if h.len as usize > room => Action::Malformed,
        op::RW => Action::Data,
        op::CREDIT_REQUEST => Action::CreditRequest,
        op::SHUTDOWN => Action::Shutdown,
        op::RST => Action::Reset,
        _ => Action::Credit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            src_cid: 2,
            dst_cid: 3,
            src_port: 0x4000_0001,
            dst_port: 1234,
            len: 17,
            kind: TYPE_STREAM,
            op: op::RW,
            flags: 3,
            buf_alloc: 65536,
            fwd_cnt: 99,
        };
        let b = h.to_bytes();
        assert_eq!(Header::parse(&b), Some(h));
        assert_eq!(&b[24..28], &17u32.to_le_bytes());
        assert_eq!(Header::parse(&b[..HDR - 1]), None);
    }

    #[test]
    fn stash_wraps_and_refuses_overflow() {
        let mut s = Box::new(Stash::new());
        let big = vec![7u8; STASH - 10];
        assert!(s.push(&big));
        assert!(!s.push(&[0; 11]));
        let mut out = vec![0u8; STASH - 20];
        assert_eq!(s.take(&mut out), STASH - 20);
        assert!(s.push(b"0123456789abcdefghij"));
        let mut rest = vec![0u8; 64];
        let n = s.take(&mut rest);
        assert_eq!(n, 30);
        assert_eq!(&rest[10..30], b"0123456789abcdefghij");
        assert!(s.is_empty());
    }

    const ME: Listener = Listener { cid: 3, port: 1234 };

    fn pkt(op: u16, src_port: u32, len: u32) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: 3,
            src_port,
            dst_port: 1234,
            len,
            kind: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 65536,
            fwd_cnt: 0,
        }
    }

    fn conn(peer_port: u32) -> Conn {
        Conn {
            peer_cid: HOST_CID,
            peer_port,
            peer_buf_alloc: 65536,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            fwd_cnt: 0,
            fwd_told: 0,
        }
    }

    #[test]
    fn malformed_packets_are_dropped() {
        let c = conn(7);
        let ok = pkt(op::RW, 7, 10);
        assert_eq!(decide(&ok, HDR + 10, ME, Some(&c), STASH), Action::Data);
        // Shorter than a header; len past what the device wrote.
        assert_eq!(decide(&ok, HDR - 1, ME, Some(&c), STASH), Action::Malformed);
        assert_eq!(decide(&ok, HDR + 9, ME, Some(&c), STASH), Action::Malformed);
        // Not a stream; another CID; unknown ops.
        let dgram = Header { kind: 3, ..ok };
        assert_eq!(
            decide(&dgram, HDR + 10, ME, Some(&c), STASH),
            Action::Malformed
        );
        let other = Header { dst_cid: 4, ..ok };
        assert_eq!(
            decide(&other, HDR + 10, ME, Some(&c), STASH),
            Action::Malformed
        );
        for bad_op in [0, 8, 0xffff] {
            let h = Header { op: bad_op, ..ok };
            assert_eq!(decide(&h, HDR + 10, ME, Some(&c), STASH), Action::Malformed);
        }
        // More than the credit we gave.
        assert_eq!(decide(&ok, HDR + 10, ME, Some(&c), 9), Action::Malformed);
    }

    #[test]
    fn one_connection_at_a_time() {
        let req = pkt(op::REQUEST, 7, 0);
        assert_eq!(decide(&req, HDR, ME, None, STASH), Action::Accept);
        let wrong_port = Header {
            dst_port: 22,
            ..req
        };
        assert_eq!(decide(&wrong_port, HDR, ME, None, STASH), Action::Refuse);
        let c = conn(7);
        let second = pkt(op::REQUEST, 8, 0);
        assert_eq!(decide(&second, HDR, ME, Some(&c), STASH), Action::Refuse);
        // Data of a connection that does not exist is reset; a reset for one is ignored.
        assert_eq!(
            decide(&pkt(op::RW, 8, 1), HDR + 1, ME, Some(&c), STASH),
            Action::Refuse
        );
        assert_eq!(
            decide(&pkt(op::RST, 8, 0), HDR, ME, Some(&c), STASH),
            Action::Ignore
        );
        // Ours: shutdown, reset, credit.
        assert_eq!(
            decide(&pkt(op::SHUTDOWN, 7, 0), HDR, ME, Some(&c), STASH),
            Action::Shutdown
        );
        assert_eq!(
            decide(&pkt(op::RST, 7, 0), HDR, ME, Some(&c), STASH),
            Action::Reset
        );
        assert_eq!(
            decide(&pkt(op::CREDIT_UPDATE, 7, 0), HDR, ME, Some(&c), STASH),
            Action::Credit
        );
        assert_eq!(
            decide(&pkt(op::CREDIT_REQUEST, 7, 0), HDR, ME, Some(&c), STASH),
            Action::CreditRequest
        );
        assert_eq!(decide(&req, HDR, ME, Some(&c), STASH), Action::Credit);
    }

    #[test]
    fn credit_arithmetic_wraps() {
        let c = Conn {
            peer_cid: 2,
            peer_port: 1,
            peer_buf_alloc: 1000,
            peer_fwd_cnt: u32::MAX - 100,
            tx_cnt: 200,
            fwd_cnt: 0,
            fwd_told: 0,
        };
        // 301 bytes in flight across the wrap.
        assert_eq!(c.credit(), 699);
        let full = Conn {
            tx_cnt: 2000,
            peer_fwd_cnt: 0,
            ..c
        };
        assert_eq!(full.credit(), 0);
    }
}
