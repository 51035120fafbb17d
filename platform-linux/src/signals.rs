//! Signals through a self-pipe, so that the event loop sees them in `poll(2)`.
//!
//! upstream quits from inside its signal handler by poking the GLib main loop, which is not
//! async-signal-safe and is why qemu-ga hangs in about 2% of stops. Here the handlers only set
//! an atomic flag and write one byte to a non-blocking pipe; everything else (thawing, removing
//! the pid file, exiting with status 0) happens in the event loop, which polls the pipe's read
//! end next to the channel. SIGCHLD goes the same way, so `guest-exec` children are reaped as
//! soon as they exit. SIGPIPE is ignored: a vanished client is an `EPIPE` from `write`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use rustix::pipe::PipeFlags;

static TERM: AtomicI32 = AtomicI32::new(0);
static CHILD: AtomicBool = AtomicBool::new(false);
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// The read end of the self-pipe.
pub struct Signals {
    read: OwnedFd,
    _write: OwnedFd,
}

extern "C" fn on_term(sig: libc::c_int) {
    TERM.store(sig, Ordering::SeqCst);
    wake();
}

extern "C" fn on_child(_sig: libc::c_int) {
    CHILD.store(true, Ordering::SeqCst);
    wake();
}

fn wake() {
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; `fd` is the pipe's write end, which lives as
        // long as the process (the `Signals` value is never dropped before exit), and the
        // buffer is a valid one-byte local. A full pipe (EAGAIN) is fine: a wake-up is pending.
        unsafe {
            libc::write(fd, (&raw const byte).cast(), 1);
        }
    }
}

fn install(sig: libc::c_int, handler: libc::sighandler_t, restart: bool) -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; we fill in the handler
    // (an `extern "C" fn(c_int)` that only touches atomics and write(2), or SIG_IGN) and pass
    // valid pointers to sigaction(2).
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = handler;
        act.sa_flags = if restart { libc::SA_RESTART } else { 0 };
        libc::sigemptyset(&mut act.sa_mask);
        if libc::sigaction(sig, &act, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Signals {
    /// Create the pipe and install the handlers for SIGTERM, SIGINT and SIGCHLD; ignore SIGPIPE.
    pub fn install() -> std::io::Result<Signals> {
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        use std::os::fd::AsRawFd as _;
        WAKE_FD.store(write.as_raw_fd(), Ordering::SeqCst);
        let term = on_term as extern "C" fn(libc::c_int) as libc::sighandler_t;
        let child = on_child as extern "C" fn(libc::c_int) as libc::sighandler_t;
        install(libc::SIGTERM, term, false)?;
        install(libc::SIGINT, term, false)?;
        install(libc::SIGCHLD, child, true)?;
        install(libc::SIGPIPE, libc::SIG_IGN, true)?;
        Ok(Signals {
            read,
            _write: write,
        })
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

/// The termination signal received, if any.
pub fn term_requested() -> Option<i32> {
    match TERM.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Whether a child exited since the last call.
pub fn take_child_exited() -> bool {
    CHILD.swap(false, Ordering::SeqCst)
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
