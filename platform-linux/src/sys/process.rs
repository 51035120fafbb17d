//! Calls whose safety depends on the state of the whole process: `fork`, code that runs in a
//! child between `fork` and `exec`, changes to the environment, adopting the descriptor that
//! systemd passes, and giving pages of our own memory back to the kernel (or taking fresh ones).
//!
//! The agent runs on one thread (see the crate root), which is what makes `fork` and the
//! environment changes sound; the functions that rely on it say so.

use std::io;
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

/// Which side of a [`fork`] this is.
#[derive(Debug, PartialEq, Eq)]
pub enum Forked {
    Parent,
    Child,
}

/// `fork(2)`. Call it only while the process has one thread (the agent forks for `-d` in
/// `main`, before anything could start a thread).
pub fn fork() -> io::Result<Forked> {
    // SAFETY: the only caller (`daemon::become_daemon`, from main) runs before any other thread
    // exists, so the child is a complete copy of a single-threaded process and may do anything.
    let pid = unsafe { libc::fork() };
    match pid {
        p if p < 0 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        _ => Ok(Forked::Parent),
    }
}

/// Make the children `cmd` spawns start in a session of their own (so that signals for the
/// agent's process group do not reach them) with the default SIGPIPE disposition (the agent
/// ignores SIGPIPE, and an ignored disposition is inherited across exec).
pub fn new_session_on_spawn(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only makes two
    // async-signal-safe system calls (setsid and sigaction), touching no memory shared with
    // the parent; the sigaction struct is zero-initialised (empty mask, no flags), valid for
    // the call.
    unsafe {
        cmd.pre_exec(|| {
            let _ = rustix::process::setsid();
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGPIPE, &act, std::ptr::null_mut());
            Ok(())
        });
    }
}

/// Set when systemd socket activation passed descriptors, until fd 3 is taken.
static ACTIVATION_FD: AtomicBool = AtomicBool::new(false);

/// systemd socket activation: the number of descriptors passed (`LISTEN_FDS`) when
/// `LISTEN_PID` names this process, else `None`. When it names us, both variables are removed
/// from the environment (so that children do not see them), as `sd_listen_fds(1)` does.
/// Called once, from `main`, while the process has one thread.
pub fn activation_fd_count() -> Option<u32> {
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    if !pid_ok {
        return None;
    }
    let n = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())?;
    // SAFETY: called from main before any thread exists, so nothing reads or writes the
    // environment concurrently.
    unsafe {
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_PID");
    }
    ACTIVATION_FD.store(n > 0, Ordering::SeqCst);
    Some(n)
}

/// Descriptor 3, the first that socket activation passed, with close-on-exec set. `None` when
/// [`activation_fd_count`] saw no descriptor, when it was taken already, or when fd 3 is not
/// open (then it is left alone).
pub fn take_activation_fd() -> Option<OwnedFd> {
    if !ACTIVATION_FD.swap(false, Ordering::SeqCst) {
        return None;
    }
    // SAFETY: systemd passed fd 3 to us (LISTEN_PID and LISTEN_FDS said so) and nothing else
    // in this process owns it: the flag above lets this happen once.
    let fd = unsafe { OwnedFd::from_raw_fd(3) };
    if rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC).is_err() {
        // Not an open descriptor: there is nothing to own or close.
        std::mem::forget(fd);
        return None;
    }
    Some(fd)
}

/// Give the whole pages inside `buf`, a heap buffer (private anonymous memory), back to the
/// kernel; they read as zeros when next touched and use no memory until then. The page size is
/// the system's (4 KiB on x86_64, but 16 or 64 KiB on some arm64 and ppc64 kernels, where a
/// range aligned to 4 KiB makes `madvise` fail with EINVAL and nothing is given back).
pub fn release_pages(buf: &mut [u8]) {
    let Some((first, len)) = whole_pages(buf.as_ptr() as usize, buf.len(), page_size()) else {
        return;
    };
    // SAFETY: [first, first + len) lies inside `buf` (`whole_pages`), which we borrow mutably,
    // so no other reference observes the pages; MADV_DONTNEED on private anonymous memory only
    // makes them read back as zeros, which every byte value of a `[u8]` allows.
    let _ = unsafe {
        rustix::mm::madvise(
            buf[first..].as_mut_ptr().cast(),
            len,
            rustix::mm::Advice::LinuxDontNeed,
        )
    };
}

/// The system's page size.
pub fn page_size() -> usize {
    rustix::param::page_size()
}

/// The whole `page`-sized pages inside `len` bytes at address `addr`: the offset of the first
/// from `addr` and their total length, or `None` if there is none.
fn whole_pages(addr: usize, len: usize, page: usize) -> Option<(usize, usize)> {
    let start = addr.checked_next_multiple_of(page)?;
    let end = addr.checked_add(len)? / page * page;
    (end > start).then(|| (start - addr, end - start))
}

/// The parser's nesting table of `n` slots, each [`agent_core::engine::NestSlot::EMPTY`], in
/// fresh anonymous pages kept for the life of the process. The kernel gives a page memory only
/// when it is first written, and the engine writes slot `d` only when a request nests `d`
/// deep, so the 1,024 levels cost one page until a deeply nested request comes; a `vec!` of
/// them writes all 24 KiB at start (idle RssAnon 104 KiB with it, 72 KiB without, measured on
/// the shipped build). Falls back to a `vec!` if the mapping fails.
pub fn nesting_table(n: usize) -> &'static mut [agent_core::engine::NestSlot] {
    use agent_core::engine::NestSlot;
    let bytes = n.saturating_mul(size_of::<NestSlot>()).max(1);
    // SAFETY: a new private anonymous mapping: it aliases nothing and the arguments describe
    // no existing memory.
    let mapped = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            bytes,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::PRIVATE,
        )
    };
    match mapped {
        // SAFETY: the mapping is `bytes` >= n * size_of::<NestSlot>() long, page-aligned (more
        // than NestSlot's alignment), readable and writable, never unmapped (so 'static), and
        // only this slice refers to it. The kernel fills it with zero bytes, and all-zero bytes
        // are a valid NestSlot, namely NestSlot::EMPTY (agent-core documents it on the type,
        // for platforms that hand it zeroed memory; `nesting_table_is_empty_slots` checks it).
        Ok(p) => unsafe { std::slice::from_raw_parts_mut(p.cast::<NestSlot>(), n) },
        Err(_) => vec![NestSlot::EMPTY; n].leak(),
    }
}

#[cfg(test)]
mod page_tests {
    use super::{release_pages, whole_pages};

    #[test]
    fn whole_pages_follow_the_page_size() {
        // 64 KiB pages (arm64 and ppc64 kernels): a range aligned to 4 KiB only is refused by
        // madvise, so the range must be aligned to the page size it is given.
        let page = 64 * 1024;
        let addr = 0x7f00_0000_1000;
        let (first, len) = whole_pages(addr, 1 << 20, page).unwrap();
        assert_eq!((addr + first) % page, 0);
        assert_eq!(len % page, 0);
        assert!(first + len <= 1 << 20);
        assert_eq!(first, page - 0x1000);
        assert_eq!(len, 15 * page);
        // Inside one page, or an empty buffer: nothing.
        assert_eq!(whole_pages(addr, page - 0x1000, page), None);
        assert_eq!(whole_pages(addr, 0, 4096), None);
        // Aligned already: all of it.
        assert_eq!(whole_pages(0x10000, 0x20000, 4096), Some((0, 0x20000)));
        // No overflow at the top of the address space.
        assert_eq!(whole_pages(usize::MAX - 10, 100, 4096), None);
    }

    /// The pages of a touched buffer are given back: they read as zeros and the process's
    /// anonymous memory drops by about their size.
    #[test]
    fn released_pages_read_as_zeros_and_leave_memory() {
        fn rss_anon_kib() -> u64 {
            let s = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = s.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        }
        let mut buf = vec![0xA5u8; 64 << 20];
        let before = rss_anon_kib();
        release_pages(&mut buf);
        let after = rss_anon_kib();
        // Other test threads allocate too: ask for most of the 64 MiB, not all of it.
        assert!(
            before.saturating_sub(after) > 48 * 1024,
            "{before} -> {after} KiB"
        );
        let page = super::page_size();
        let mid = buf.len() / 2 / page * page;
        assert!(buf[mid..mid + page].iter().all(|&b| b == 0));
        // What lies outside the whole pages is kept.
        let (first, len) = whole_pages(buf.as_ptr() as usize, buf.len(), page).unwrap();
        assert!(buf[..first].iter().all(|&b| b == 0xA5));
        assert!(buf[first + len..].iter().all(|&b| b == 0xA5));
    }
}

#[cfg(test)]
mod nesting_tests {
    #[test]
    fn nesting_table_is_empty_slots() {
        let empty = format!("{:?}", agent_core::engine::NestSlot::EMPTY);
        let t = super::nesting_table(1024);
        assert_eq!(t.len(), 1024);
        assert!(t.iter().all(|s| format!("{s:?}") == empty));
    }
}
