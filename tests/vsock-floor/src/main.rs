//! `vsock-floor PORT`: the least a guest program can do with a vsock connection, so that a
//! benchmark can put the agents' figures next to the path's own limit.
//!
//! Why it exists: over vsock in a TCG guest both agents' figures are mostly the path (the
//! host's unix socket, `vhost-device-vsock`, the virtqueues, the guest kernel), and a goal
//! stated as a ratio between two agents can lie below what that path allows. This program
//! runs in the same guest as the agent, on the same device, daemon and hybrid socket, and does
//! nothing but blocking `read(2)`/`write(2)` with large buffers, one connection at a time, so
//! its figures are the floor under any agent's. `cargo xtask bench vsock` (xtask/src/bench/
//! vsock.rs) drives it; the initramfs starts it when the kernel command line says
//! `qga.vsock_floor=PORT` (tests/src/initramfs.rs).
//!
//! The protocol, per connection (the first byte chooses):
//! - `e`: echo every byte read, until end of file (a round trip of a small message);
//! - `s` and a little-endian `u64` N: read N bytes and throw them away, then write one byte
//!   `k` (host to guest throughput);
//! - `r` and a little-endian `u64` N: write N bytes, then close (guest to host throughput).

use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{AddressFamily, SocketFlags, SocketType};

mod sys;

/// `VMADDR_CID_ANY`: listen on whatever context id the guest has.
const CID_ANY: u32 = u32::MAX;
/// The vsock receive buffer, as `qga` sets it (platform-linux/src/transport.rs), so the floor
/// has every advantage the agent has.
const VSOCK_BUFFER: u64 = 4 << 20;
/// Bytes per read and write: as large as the agent's biggest writes, so the per-call cost
/// does not show.
const BUF: usize = 1 << 20;

fn main() {
    let port = std::env::args()
        .nth(1)
        .and_then(|p| p.parse::<u32>().ok())
        .unwrap_or_else(|| {
            eprintln!("usage: vsock-floor PORT");
            std::process::exit(2);
        });
    let listener = match listen(port) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vsock-floor: cannot listen on vsock port {port}: {e}");
            std::process::exit(1);
        }
    };
    let mut buf = vec![0x5au8; BUF];
    loop {
        match rustix::net::accept_with(&listener, SocketFlags::CLOEXEC) {
            Ok(fd) => {
                // A connection is a plain byte stream: std's UnixStream gives it Read and
                // Write without caring about the address family.
                let mut s = UnixStream::from(fd);
                if let Err(e) = serve(&mut s, &mut buf) {
                    eprintln!("vsock-floor: connection ended: {e}");
                }
            }
            Err(e) => eprintln!("vsock-floor: accept: {e}"),
        }
    }
}

fn listen(port: u32) -> io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::VSOCK,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    sys::bind_vsock(fd.as_fd(), CID_ANY, port)?;
    sys::set_vsock_buffer_size(fd.as_fd(), VSOCK_BUFFER)?;
    rustix::net::listen(&fd, 1)?;
    Ok(fd)
}

fn serve(s: &mut UnixStream, buf: &mut [u8]) -> io::Result<()> {
    let mut mode = [0u8; 1];
    s.read_exact(&mut mode)?;
    match mode[0] {
        b'e' => loop {
            let n = s.read(buf)?;
            if n == 0 {
                return Ok(());
            }
            s.write_all(&buf[..n])?;
        },
        b's' => {
            let mut left = length(s)?;
            while left > 0 {
                let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let n = s.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                left -= n as u64;
            }
            s.write_all(b"k")
        }
        b'r' => {
            let mut left = length(s)?;
            while left > 0 {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                s.write_all(&buf[..n])?;
                left -= n as u64;
            }
            Ok(())
        }
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown mode byte {other:#04x}"),
        )),
    }
}

fn length(s: &mut UnixStream) -> io::Result<u64> {
    let mut n = [0u8; 8];
    s.read_exact(&mut n)?;
    Ok(u64::from_le_bytes(n))
}
