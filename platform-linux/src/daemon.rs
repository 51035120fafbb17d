//! `-d`: become a daemon as upstream does (fork, the parent exits 0; the child writes and
//! locks the pid file, sets umask 077, starts a session, changes to `/` and points stdio at
//! `/dev/null`), and the pid file itself.

use std::os::fd::OwnedFd;
use std::sync::Mutex;

use rustix::fs::{Mode, OFlags};

use crate::sys::process::Forked;

/// The locked pid file, held open for the life of the process (the lock is the proof that an
/// agent owns it), and its path to remove at exit.
static PIDFILE: Mutex<Option<(OwnedFd, String)>> = Mutex::new(None);

/// Create, lock and fill the pid file, as `qemu_write_pidfile`.
pub fn write_pidfile(path: &str) -> Result<(), String> {
    let fd = rustix::fs::open(
        path,
        OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| {
        format!(
            "Failed to create pid file '{path}': {}",
            crate::config::strerror(e.raw_os_error())
        )
    })?;
    rustix::fs::fcntl_lock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |e| {
            format!(
                "Cannot lock pid file: {}",
                crate::config::strerror(e.raw_os_error())
            )
        },
    )?;
    rustix::fs::ftruncate(&fd, 0).map_err(|e| {
        format!(
            "Failed to truncate pid file: {}",
            crate::config::strerror(e.raw_os_error())
        )
    })?;
    let text = format!("{}\n", std::process::id());
    let n = rustix::io::write(&fd, text.as_bytes())
        .map_err(|_| "Failed to write pid file".to_string())?;
    if n != text.len() {
        return Err("Failed to write pid file".to_string());
    }
    if let Ok(mut slot) = PIDFILE.lock() {
        *slot = Some((fd, path.to_string()));
    }
    Ok(())
}

/// Remove our pid file (at exit).
pub fn remove_pidfile() {
    if let Ok(mut slot) = PIDFILE.lock()
        && let Some((_fd, path)) = slot.take()
    {
        let _ = std::fs::remove_file(path);
    }
}

/// Fork into the background. `pidfile` is `None` while frozen (written after the thaw).
/// Runs before any thread exists. Returns only in the child.
pub fn become_daemon(pidfile: Option<&str>) -> Result<(), String> {
    match crate::sys::process::fork() {
        Err(_) => std::process::exit(1),
        Ok(Forked::Parent) => std::process::exit(0),
        Ok(Forked::Child) => {}
    }
    if let Some(p) = pidfile {
        write_pidfile(p)?;
    }
    rustix::process::umask(Mode::from_raw_mode(0o077));
    let fail = || {
        remove_pidfile();
        "failed to daemonize".to_string()
    };
    rustix::process::setsid().map_err(|_| fail())?;
    std::env::set_current_dir("/").map_err(|_| fail())?;
    if let Ok(null) = rustix::fs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()) {
        let _ = rustix::stdio::dup2_stdin(&null);
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
    }
    Ok(())
}
