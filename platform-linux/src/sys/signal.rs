//! The signal handlers. They run in signal context, where only atomics and async-signal-safe
//! calls are allowed, so they are written here, next to the `sigaction` calls that install
//! them: each records what arrived in an atomic and writes one byte to the write end of the
//! self-pipe, which the event loop polls (see `crate::signals`).

use std::io;
use std::os::fd::{IntoRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static TERM: AtomicI32 = AtomicI32::new(0);
static CHILD: AtomicBool = AtomicBool::new(false);
/// The self-pipe's write end; never closed once set.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

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
        // SAFETY: write(2) is async-signal-safe; `fd` is the pipe's write end, which stays open
        // until the process exits (`install` gives up its ownership), and the buffer is a valid
        // one-byte local. A full pipe (EAGAIN) is fine: a wake-up is pending.
        unsafe {
            libc::write(fd, (&raw const byte).cast(), 1);
        }
    }
}

fn set_action(sig: libc::c_int, handler: libc::sighandler_t, restart: bool) -> io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; we fill in the handler
    // (one of the `extern "C" fn(c_int)` above, which only touch atomics and write(2), or
    // SIG_IGN / SIG_DFL) and pass valid pointers to sigaction(2).
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = handler;
        act.sa_flags = if restart { libc::SA_RESTART } else { 0 };
        libc::sigemptyset(&mut act.sa_mask);
        if libc::sigaction(sig, &act, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Install the handlers: SIGTERM and SIGINT are recorded (see [`term_requested`]), SIGCHLD
/// too (see [`take_child_exited`]), and each writes a byte to `wake`, the write end of a
/// non-blocking pipe, which is kept open until the process exits. SIGPIPE is ignored.
pub fn install(wake: OwnedFd) -> io::Result<()> {
    WAKE_FD.store(wake.into_raw_fd(), Ordering::SeqCst);
    let term = on_term as extern "C" fn(libc::c_int) as libc::sighandler_t;
    let child = on_child as extern "C" fn(libc::c_int) as libc::sighandler_t;
    set_action(libc::SIGTERM, term, false)?;
    set_action(libc::SIGINT, term, false)?;
    set_action(libc::SIGCHLD, child, true)?;
    ignore_sigpipe()
}

/// Ignore SIGPIPE, so that writing to a vanished reader is an `EPIPE` error.
pub fn ignore_sigpipe() -> io::Result<()> {
    set_action(libc::SIGPIPE, libc::SIG_IGN, true)
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
