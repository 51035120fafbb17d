//! The four channels of upstream (`-m virtio-serial|isa-serial|unix-listen|vsock-listen`) and
//! the byte pump between a channel and the engine.
//!
//! Differences from upstream, on purpose:
//! - Every reply is written whole. qemu-ga 7.2 lets GLib seek the character device before a
//!   write; on virtio-serial and isa-serial that fails with ESPIPE and the reply is dropped.
//!   Here a reply is written with plain `write(2)` in a loop that resumes after partial writes
//!   and waits in `poll(2)` on EAGAIN (and gives up only when the peer is gone or the agent is
//!   told to stop).
//! - A socket client that takes no byte of a reply for [`SOCKET_STALL_LIMIT`] loses its
//!   connection, and the next client is served. The agent has one thread, so one client that
//!   never reads would otherwise hold it for good, and on vsock that happens without any fault
//!   of the client: `vhost-device-vsock` 0.3.0 throws away the rest of a reply whose host
//!   client went away, without a credit update or a reset, so the guest's socket stays open
//!   and full. upstream waits for ever there. Devices (virtio-serial, isa-serial) keep
//!   upstream's behaviour and wait as long as the host is connected: a host that reads late
//!   (or the chardev with no client yet) is normal there, there is no next client to serve,
//!   and the reply is still read once the host reads.
//! - The parser is reset on every new connection: for sockets when a client is accepted, for
//!   virtio-serial when the host side goes away (the port then reads 0 bytes and polls
//!   POLLHUP) or comes back. upstream carries a half-sent request over to the next client.
//! - A missing host on virtio-serial is not a busy loop: while the port reads 0 the device is
//!   probed every 100 ms, as upstream does with `g_usleep`, but the wait is a `poll(2)` on the
//!   signal pipe, so SIGTERM is still served at once.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use agent_core::{Agent, Platform, Transmit, TxError};
use rustix::event::PollFlags;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use crate::log::Level;
use crate::signals::{self, Signals};

/// How often a device whose host side is away is probed (upstream's `G_USEC_PER_SEC / 10`).
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// How long a reply to a socket client may go without any byte taken before the connection is
/// dropped (see the module docs). Generous next to any client that is reading at all: under
/// TCG a 1 MiB answer moves in well under a second.
pub const SOCKET_STALL_LIMIT: Duration = Duration::from_secs(30);

/// `SO_SNDBUF` asked for on accepted connections: more than a 1 MiB read's 1.4 MB answer.
const SEND_BUFFER: usize = 4 << 20;

/// The receive buffer of vsock connections, the credit the host may use before it must wait
/// for the agent to read: room for a whole 1 MiB `guest-file-write` request (1.4 MB of
/// base64), so the host's side moves it while the agent works through the start of it (the
/// kernel's default is 256 KiB).
const VSOCK_BUFFER: u64 = 4 << 20;

/// A channel method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `virtio-serial`
    VirtioSerial,
    /// `isa-serial`
    IsaSerial,
    /// `unix-listen`
    UnixListen,
    /// `vsock-listen`
    VsockListen,
}

impl Method {
    /// The method named `name`, as `-m` spells it.
    pub fn from_name(name: &str) -> Option<Method> {
        Some(match name {
            "virtio-serial" => Method::VirtioSerial,
            "isa-serial" => Method::IsaSerial,
            "unix-listen" => Method::UnixListen,
            "vsock-listen" => Method::VsockListen,
            _ => return None,
        })
    }
}

/// An open channel.
pub struct Channel {
    method: Method,
    path: Option<String>,
    listener: Option<OwnedFd>,
    conn: Option<OwnedFd>,
    /// Devices only: whether the other side seemed present at the last read.
    host_connected: bool,
    /// Bytes fed to the engine since [`Channel::take_fed`] last asked.
    fed: usize,
}

/// What went wrong with a device channel; the agent stops (or re-opens with `-r`).
#[derive(Debug)]
pub struct ChannelError(pub String);

fn errtext(e: Errno) -> String {
    crate::config::strerror(e.raw_os_error())
}

impl Channel {
    /// How many bytes were fed to the engine since the last call.
    pub fn take_fed(&mut self) -> usize {
        std::mem::take(&mut self.fed)
    }

    /// Open `method` on `path`, or adopt the socket-activation fd `activated`.
    pub fn open(
        method: Method,
        path: Option<&str>,
        activated: Option<OwnedFd>,
    ) -> Result<Channel, String> {
        let path_str = path.unwrap_or_default();
        let mut ch = Channel {
            method,
            path: path.map(str::to_string),
            listener: None,
            conn: None,
            host_connected: true,
            fed: 0,
        };
        match method {
            Method::VirtioSerial => {
                let fd = rustix::fs::open(
                    path_str,
                    OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
                    Mode::empty(),
                )
                .map_err(|e| format!("error opening channel '{path_str}': {}", errtext(e)))?;
                ch.conn = Some(fd);
            }
            Method::IsaSerial => {
                let fd = rustix::fs::open(
                    path_str,
                    OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
                    Mode::empty(),
                )
                .map_err(|e| format!("error opening channel '{path_str}': {}", errtext(e)))?;
                set_raw_38400(&fd);
                ch.conn = Some(fd);
            }
            Method::UnixListen => {
                ch.listener = Some(match activated {
                    Some(fd) => fd,
                    None => unix_listen(path_str)?,
                });
            }
            Method::VsockListen => {
                let l = match activated {
                    Some(fd) => fd,
                    None => vsock_listen(path_str)?,
                };
                // Accepted connections inherit it; failing only costs speed.
                let _ = crate::sys::net::set_vsock_buffer_size(l.as_fd(), VSOCK_BUFFER);
                ch.listener = Some(l);
            }
        }
        if let Some(l) = &ch.listener {
            let _ = rustix::io::ioctl_fionbio(l, true);
        }
        Ok(ch)
    }

    /// What to poll: `None` while a device's host side is away (probe on a timer instead).
    pub fn wait_fd(&self) -> Option<(BorrowedFd<'_>, PollFlags)> {
        match (&self.listener, &self.conn) {
            (_, Some(c)) if self.host_connected || self.listener.is_some() => {
                Some((c.as_fd(), PollFlags::IN))
            }
            (Some(l), None) => Some((l.as_fd(), PollFlags::IN)),
            _ => None,
        }
    }

    /// Serve whatever is ready: accept a client, or read and feed the engine.
    pub fn service(
        &mut self,
        agent: &mut Agent<'_>,
        platform: &mut dyn Platform,
        signals: &Signals,
        buf: &mut [u8],
    ) -> Result<(), ChannelError> {
        if self.listener.is_some() && self.conn.is_none() {
            self.accept(agent);
            return Ok(());
        }
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        // Read until the fd is drained, so one wake-up serves a whole pipelined burst.
        loop {
            match rustix::io::read(conn, &mut *buf) {
                Ok(0) => {
                    if self.listener.is_some() {
                        crate::log!(Level::Debug, "client disconnected");
                        self.conn = None;
                    } else if self.host_connected {
                        crate::log!(Level::Debug, "host side of the channel went away");
                        self.host_connected = false;
                        agent.reset();
                    }
                    return Ok(());
                }
                Ok(n) => {
                    if !self.host_connected {
                        crate::log!(Level::Debug, "host side of the channel is back");
                        self.host_connected = true;
                        agent.reset();
                    }
                    let device = self.listener.is_none();
                    let mut tx = FdTx {
                        fd: conn.as_fd(),
                        signals: Some(signals),
                        device,
                        stall_limit: (!device).then_some(SOCKET_STALL_LIMIT),
                    };
                    self.fed = self.fed.saturating_add(n);
                    if agent.feed(&buf[..n], platform, &mut tx).is_err() {
                        crate::log!(Level::Warning, "error sending response");
                        if self.listener.is_some() {
                            self.conn = None;
                            return Ok(());
                        }
                    }
                    if signals::term_requested().is_some() {
                        return Ok(());
                    }
                    if n < buf.len() {
                        // A short read drained the fd: poll(2) says when more arrives, and a
                        // sequential client does not pay for a read that finds nothing.
                        return Ok(());
                    }
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => {
                    if !self.host_connected {
                        // Readable-but-empty means a host is there again.
                        crate::log!(
                            Level::Debug,
                            "host side of the channel is back (no data yet)"
                        );
                        self.host_connected = true;
                        agent.reset();
                    }
                    return Ok(());
                }
                Err(e) => {
                    if self.listener.is_some() {
                        crate::log!(Level::Debug, "client connection error: {}", errtext(e));
                        self.conn = None;
                        return Ok(());
                    }
                    return Err(ChannelError(format!(
                        "error reading channel: {}",
                        errtext(e)
                    )));
                }
            }
        }
    }

    fn accept(&mut self, agent: &mut Agent<'_>) {
        let Some(l) = &self.listener else { return };
        match rustix::net::accept_with(l, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
            Ok(fd) => {
                crate::log!(Level::Debug, "new client connection");
                agent.reset();
                // Room for a whole 1 MiB `guest-file-read` answer, so the agent writes it
                // without sleeping on a full socket (the kernel caps this at
                // net.core.wmem_max; failing to raise it only costs speed).
                let _ = rustix::net::sockopt::set_socket_send_buffer_size(&fd, SEND_BUFFER);
                self.conn = Some(fd);
            }
            Err(Errno::AGAIN | Errno::INTR | Errno::CONNABORTED) => {}
            Err(e) => crate::log!(Level::Warning, "error accepting connection: {}", errtext(e)),
        }
    }

    /// Remove the socket file we created (at exit).
    pub fn cleanup(&mut self) {
        if self.method == Method::UnixListen
            && let Some(p) = &self.path
        {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// upstream's `unix_listen`: unlink a stale socket, bind, listen with a backlog of 1. Unlike
/// upstream, the socket is created mode 0600 whatever the umask (the umask is narrowed around
/// `bind`, which is safe on the agent's one thread): only root, that is the host's side, may
/// connect, never a local user.
fn unix_listen(path: &str) -> Result<OwnedFd, String> {
    let addr = rustix::net::SocketAddrUnix::new(path)
        .map_err(|_| format!("UNIX socket path '{path}' is too long"))?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| format!("Failed to create socket: {}", errtext(e)))?;
    match rustix::fs::unlink(path) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(format!("Failed to unlink socket {path}: {}", errtext(e))),
    }
    let umask = rustix::process::umask(Mode::from_raw_mode(0o177));
    let bound = rustix::net::bind(&fd, &addr);
    rustix::process::umask(umask);
    bound.map_err(|e| format!("Failed to bind socket to {path}: {}", errtext(e)))?;
    rustix::net::listen(&fd, 1)
        .map_err(|e| format!("Failed to listen on socket: {}", errtext(e)))?;
    Ok(fd)
}

/// Parse `<cid>:<port>` (both decimal), as upstream's `vsock:` addresses.
pub fn parse_vsock(path: &str) -> Result<(u32, u32), String> {
    let bad = || format!("error parsing address 'vsock:{path}'");
    let (cid, port) = path.split_once(':').ok_or_else(bad)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(cid) || !digits(port) {
        return Err(bad());
    }
    let cid = cid
        .parse::<u32>()
        .map_err(|_| format!("Invalid cid '{cid}'"))?;
    let port = port
        .parse::<u32>()
        .map_err(|_| format!("Invalid port '{port}'"))?;
    Ok((cid, port))
}

fn vsock_listen(path: &str) -> Result<OwnedFd, String> {
    let (cid, port) = parse_vsock(path)?;
    let fd = rustix::net::socket_with(
        AddressFamily::VSOCK,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| format!("Failed to create socket: {}", errtext(e)))?;
    crate::sys::net::bind_vsock(fd.as_fd(), cid, port)
        .map_err(|e| format!("Failed to bind socket: {}", crate::config::io_text(&e)))?;
    rustix::net::listen(&fd, 1)
        .map_err(|e| format!("Failed to listen on socket: {}", errtext(e)))?;
    Ok(fd)
}

/// Raw mode as upstream sets it up: no canonical mode, echo, signals or flow control, no
/// output processing, 38400 baud, a read returns after 1 byte; pending input is discarded.
fn set_raw_38400(fd: &OwnedFd) {
    use rustix::termios::{
        self, InputModes, LocalModes, OptionalActions, OutputModes, QueueSelector, SpecialCodeIndex,
    };
    let Ok(mut tio) = termios::tcgetattr(fd) else {
        return;
    };
    tio.input_modes -= InputModes::IGNBRK
        | InputModes::BRKINT
        | InputModes::IGNPAR
        | InputModes::PARMRK
        | InputModes::INPCK
        | InputModes::ISTRIP
        | InputModes::INLCR
        | InputModes::IGNCR
        | InputModes::ICRNL
        | InputModes::IXON
        | InputModes::IXOFF
        | InputModes::IXANY
        | InputModes::IMAXBEL;
    tio.output_modes = OutputModes::empty();
    tio.local_modes = LocalModes::empty();
    let _ = tio.set_speed(38400);
    tio.special_codes[SpecialCodeIndex::VMIN] = 1;
    tio.special_codes[SpecialCodeIndex::VTIME] = 0;
    let _ = termios::tcflush(fd, QueueSelector::IFlush);
    let _ = termios::tcsetattr(fd, OptionalActions::Now, &tio);
}

/// Writes each response whole to a non-blocking fd.
pub struct FdTx<'a> {
    /// The channel.
    pub fd: BorrowedFd<'a>,
    /// Polled while waiting, so a termination signal ends the wait.
    pub signals: Option<&'a Signals>,
    /// A virtio-serial or serial device: a hang-up there means the host side is (maybe only
    /// for a moment) not connected, not that the peer is gone for good.
    pub device: bool,
    /// How long a reply may wait with no byte taken before it is given up (the connection is
    /// then dropped by the caller); `None` waits as long as the peer is there.
    pub stall_limit: Option<Duration>,
}

/// How long a reply waits for a virtio-serial host to come back before it is dropped.
/// After a quick reconnect the guest kernel can still report the host as gone when the reply
/// to the new client's first request is written; upstream retries such writes, and so do we.
const DEVICE_HANGUP_PATIENCE: Duration = Duration::from_secs(10);

impl Transmit for FdTx<'_> {
    fn send(&mut self, mut bytes: &[u8]) -> Result<(), TxError> {
        let mut hung_up_since: Option<std::time::Instant> = None;
        let mut stalled_since: Option<std::time::Instant> = None;
        while !bytes.is_empty() {
            match rustix::io::write(self.fd, bytes) {
                Ok(n) => {
                    bytes = bytes.get(n..).unwrap_or_default();
                    hung_up_since = None;
                    stalled_since = None;
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => {
                    let since = *stalled_since.get_or_insert_with(std::time::Instant::now);
                    let timeout_ms = match self.stall_limit {
                        Some(limit) => {
                            let left = limit.saturating_sub(since.elapsed());
                            if left.is_zero() {
                                crate::log!(
                                    Level::Warning,
                                    "the client took no byte of a reply for {} s: dropping \
                                     the connection",
                                    limit.as_secs_f64()
                                );
                                return Err(TxError);
                            }
                            // Round up, so the last wait does not end just short of the limit.
                            Some(u64::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u64::MAX))
                        }
                        None => None,
                    };
                    let rev = signals::wait_fd(self.signals, self.fd, PollFlags::OUT, timeout_ms)
                        .map_err(|_| TxError)?;
                    if rev.intersects(PollFlags::ERR | PollFlags::NVAL) {
                        return Err(TxError);
                    }
                    if rev.contains(PollFlags::HUP) && !rev.contains(PollFlags::OUT) {
                        let since = *hung_up_since.get_or_insert_with(std::time::Instant::now);
                        if !self.device
                            || since.elapsed() > DEVICE_HANGUP_PATIENCE
                            || signals::term_requested().is_some()
                        {
                            return Err(TxError);
                        }
                        // poll(2) reports a hang-up at once: wait a little before retrying.
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                Err(_) => return Err(TxError),
            }
        }
        Ok(())
    }
}

/// systemd socket activation (`LISTEN_PID`, `LISTEN_FDS`): the method of fd 3 and the fd, or
/// `None` when not activated.
pub fn socket_activation() -> Result<Option<(&'static str, OwnedFd)>, String> {
    let Some(n) = crate::sys::process::activation_fd_count() else {
        return Ok(None);
    };
    if n == 0 {
        return Ok(None);
    }
    if n > 1 {
        return Err("qemu-ga only supports listening on one socket".to_string());
    }
    let Some(fd) = crate::sys::process::take_activation_fd() else {
        return Err("Socket activation failed: invalid file descriptor fd = 3".to_string());
    };
    let method = match rustix::net::getsockname(&fd).map(|a| a.address_family()) {
        Ok(AddressFamily::UNIX) => "unix-listen",
        Ok(AddressFamily::VSOCK) => "vsock-listen",
        _ => return Err("unsupported listen fd type".to_string()),
    };
    Ok(Some((method, fd)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vsock_addresses() {
        assert_eq!(parse_vsock("3:1234"), Ok((3, 1234)));
        assert_eq!(parse_vsock("4294967295:1"), Ok((u32::MAX, 1)));
        assert!(parse_vsock("3").is_err());
        assert!(parse_vsock("x:1").is_err());
        assert!(parse_vsock("3:1:2").is_err());
        assert!(parse_vsock(":1").is_err());
        assert_eq!(
            parse_vsock("99999999999:1"),
            Err("Invalid cid '99999999999'".into())
        );
    }

    #[test]
    fn writes_survive_a_full_pipe() {
        // A reader that drains slowly: the writer must see EAGAIN, wait and finish whole.
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::NONBLOCK).unwrap();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while got.len() < 1_000_000 {
                std::thread::sleep(Duration::from_micros(50));
                match rustix::io::read(&r, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(_) => {}
                }
            }
            got
        });
        let mut tx = FdTx {
            fd: w.as_fd(),
            signals: None,
            device: false,
            stall_limit: Some(Duration::from_secs(30)),
        };
        tx.send(&data).unwrap();
        assert_eq!(reader.join().unwrap(), data);
    }

    #[test]
    fn peer_gone_is_an_error() {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::NONBLOCK).unwrap();
        drop(r);
        // SIGPIPE would kill the test binary: ignore it as the agent does.
        crate::sys::signal::ignore_sigpipe().unwrap();
        let mut tx = FdTx {
            fd: w.as_fd(),
            signals: None,
            device: false,
            stall_limit: None,
        };
        assert_eq!(tx.send(b"x"), Err(TxError));
    }

    /// A socket peer that stays connected and never reads: the reply is given up once no byte
    /// has moved for the limit, not before, and not never.
    #[test]
    fn a_peer_that_never_reads_is_given_up_after_the_limit() {
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let limit = Duration::from_millis(300);
        let mut tx = FdTx {
            fd: ours.as_fd(),
            signals: None,
            device: false,
            stall_limit: Some(limit),
        };
        let t = std::time::Instant::now();
        assert_eq!(tx.send(&vec![0u8; 8 << 20]), Err(TxError));
        let took = t.elapsed();
        assert!(took >= limit, "gave up after {took:?}");
        assert!(took < limit * 20, "gave up only after {took:?}");
    }

    /// Without a limit (devices), a reader that starts late still gets the whole reply.
    #[test]
    fn without_a_limit_a_late_reader_loses_nothing() {
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let data: Vec<u8> = (0..4_000_000u32).map(|i| (i % 253) as u8).collect();
        let reader = std::thread::spawn(move || {
            use std::io::Read as _;
            std::thread::sleep(Duration::from_millis(500));
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).unwrap();
            got
        });
        let mut tx = FdTx {
            fd: ours.as_fd(),
            signals: None,
            device: true,
            stall_limit: None,
        };
        tx.send(&data).unwrap();
        drop(ours);
        assert_eq!(reader.join().unwrap(), data);
    }
}
