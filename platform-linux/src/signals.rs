//! Signals through a self-pipe, so that the event loop sees them in `poll(2)`.
//!
//! upstream quits from inside its signal handler by poking the GLib main loop, which is not
//! async-signal-safe and is why qemu-ga hangs in about 2% of stops. Here the handlers only set
//! an atomic flag and write one byte to a non-blocking pipe; everything else (thawing, removing
//! the pid file, exiting with status 0) happens in the event loop, which polls the pipe's read
//! end next to the channel. SIGCHLD goes the same way, so `guest-exec` children are reaped as
//! soon as they exit. SIGPIPE is ignored: a vanished client is an `EPIPE` from `write`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::pipe::PipeFlags;

pub use crate::sys::signal::{take_child_exited, term_requested};

/// The read end of the self-pipe.
pub struct Signals {
    read: OwnedFd,
}

impl Signals {
    /// Create the pipe and install the handlers for SIGTERM, SIGINT and SIGCHLD; ignore SIGPIPE.
    pub fn install() -> std::io::Result<Signals> {
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        crate::sys::signal::install(write)?;
        Ok(Signals { read })
    }

    /// The fd to poll for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Empty the pipe (the flags keep what happened).
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!(rustix::io::read(&self.read, &mut buf), Ok(n) if n > 0) {}
    }
}

/// Wait until `fd` has `events` or a termination signal arrives (then `false`); `timeout` in
/// milliseconds, `None` for no limit. Returns the revents of `fd` (empty on timeout).
pub fn wait_fd(
    signals: Option<&Signals>,
    fd: BorrowedFd<'_>,
    events: rustix::event::PollFlags,
    timeout_ms: Option<u64>,
) -> Result<rustix::event::PollFlags, ()> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    loop {
        if term_requested().is_some() {
            return Err(());
        }
        let ts = timeout_ms.map(|ms| Timespec {
            tv_sec: (ms / 1000) as i64,
            tv_nsec: ((ms % 1000) * 1_000_000) as i64,
        });
        let mut fds = vec![PollFd::from_borrowed_fd(fd, events)];
        if let Some(s) = signals {
            fds.push(PollFd::from_borrowed_fd(s.fd(), PollFlags::IN));
        }
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return Err(()),
        }
        let rev = fds[0].revents();
        if let Some(s) = signals
            && !fds[1].revents().is_empty()
        {
            s.drain();
            if term_requested().is_some() {
                return Err(());
            }
        }
        if !rev.is_empty() || timeout_ms.is_some() {
            return Ok(rev);
        }
    }
}
