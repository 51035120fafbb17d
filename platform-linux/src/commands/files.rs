//! `guest-file-*` on Linux.
//!
//! Files are opened as upstream opens them: the fopen mode becomes open flags (docs/protocol.md
//! §3.5) plus `O_NOCTTY|O_NONBLOCK|O_CLOEXEC`, a file that may be created is
//! first created with `O_EXCL` and then `fchmod`ed to 0666 whatever the umask (an existing file
//! keeps its mode), relative paths resolve against the agent's working directory, and handles
//! come from the counter persisted in the state directory (from 1000, never reused across
//! restarts).
//!
//! upstream wraps the fd in a stdio `FILE`. Here the fd is used directly, which gives the same
//! results without stdio's buffer: `guest-file-read` reads until the requested count or end
//! of file, as `fread` does (so a short read means end of file), and the engine asks for
//! large chunks, so a 48 MiB read is a few dozen `read(2)` calls; a write reaches the kernel
//! before the reply, so there is never unflushed data, the read-after-write `fflush` and
//! write-after-read `fseek` that stdio needs are moot, and `guest-file-flush` has nothing to
//! push. The end-of-file flag behaves like `feof` after upstream's `clearerr`: `eof` of a write
//! or a seek is false.
//!
//! upstream has no limit on open handles: a client that never closes them runs the agent into
//! `EMFILE`, and then the next open fails on the state-file commit ("failed to commit
//! persistent state to disk") and guest-exec on its pipes, which tells nobody what happened.
//! Here a handle limit ([`MAX_HANDLES`], lowered to the fd limit minus [`FD_RESERVE`]) stops
//! opens first, with an error that names the limit, and the reserve keeps the state file,
//! guest-exec's pipes and a reconnecting client working at the limit.

#![allow(
    clippy::result_large_err,
    reason = "agent_core::Error holds its message inline, by design: no allocation"
)]

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

use agent_core::commands::files::{Files, GuestFileSeek, GuestFileWrite, Seek};
use agent_core::{Error, Result};
use rustix::fs::{Mode, OFlags, SeekFrom};
use rustix::io::Errno;

use crate::state::{PersistentState, StateDir};

/// At most this many files are open through guest-file-open at once.
pub const MAX_HANDLES: usize = 1024;
/// File descriptors kept free below `RLIMIT_NOFILE` for everything else (the state file's
/// commit, guest-exec's pipes, the channel, a reconnecting client, /proc reads).
pub const FD_RESERVE: u64 = 32;

/// The handle limit now: [`MAX_HANDLES`], or fewer when `RLIMIT_NOFILE` is low (read at each
/// open, so a limit changed at run time counts).
pub fn handle_limit() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let by_fds = usize::try_from(soft.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
    MAX_HANDLES.min(by_fds)
}

/// Open files by handle, and the persistent handle counter.
#[derive(Debug)]
pub struct LinuxFiles {
    state: PersistentState,
    open: BTreeMap<i64, OwnedFd>,
}

impl Default for LinuxFiles {
    fn default() -> Self {
        LinuxFiles::new(PersistentState::new(StateDir::unopened(
            std::path::Path::new(crate::config::STATEDIR_DEFAULT),
        )))
    }
}

fn os(e: Errno) -> Error {
    Error::os(e.raw_os_error(), &crate::config::strerror(e.raw_os_error()))
}

/// The open flags of an fopen mode, as upstream's table; `None` for an unknown mode.
pub fn mode_flags(mode: &str) -> Option<OFlags> {
    let base = match mode {
        "r" | "rb" => OFlags::RDONLY,
        "w" | "wb" => OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC,
        "a" | "ab" => OFlags::WRONLY | OFlags::CREATE | OFlags::APPEND,
        "r+" | "rb+" | "r+b" => OFlags::RDWR,
        "w+" | "wb+" | "w+b" => OFlags::RDWR | OFlags::CREATE | OFlags::TRUNC,
        "a+" | "ab+" | "a+b" => OFlags::RDWR | OFlags::CREATE | OFlags::APPEND,
        _ => return None,
    };
    Some(base | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC)
}

impl LinuxFiles {
    /// Files whose handles come from `state`.
    pub fn new(state: PersistentState) -> LinuxFiles {
        LinuxFiles {
            state,
            open: BTreeMap::new(),
        }
    }

    fn fd(&self, handle: i64) -> Result<&OwnedFd> {
        self.open.get(&handle).ok_or(Error::NoHandle(handle))
    }

    /// Close every open file (at exit).
    pub fn close_all(&mut self) {
        self.open.clear();
    }
}

/// upstream's `safe_open_or_create`.
fn open_or_create(path: &str, mode: &str) -> Result<OwnedFd> {
    let flags = mode_flags(mode)
        .ok_or_else(|| Error::msg(format_args!("invalid file open mode '{mode}'")))?;
    if !flags.contains(OFlags::CREATE) {
        return rustix::fs::open(path, flags, Mode::empty()).map_err(os);
    }
    match rustix::fs::open(path, flags | OFlags::EXCL, Mode::empty()) {
        Ok(fd) => {
            if let Err(e) = rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o666)) {
                drop(fd);
                let _ = rustix::fs::unlink(path);
                return Err(Error::msg(format_args!(
                    "failed to set permission 0666 on new file '{path}' (mode: '{mode}'): {}",
                    crate::config::strerror(e.raw_os_error())
                )));
            }
            Ok(fd)
        }
        Err(Errno::EXIST) => {
            rustix::fs::open(path, flags - OFlags::CREATE, Mode::empty()).map_err(os)
        }
        Err(e) => Err(os(e)),
    }
}

impl Files for LinuxFiles {
    fn has_handle(&self, handle: i64) -> bool {
        self.open.contains_key(&handle)
    }

    /// `write` is `write(2)` at the file's position until all is written: consecutive pieces
    /// land as one write of all of them would, so a large `guest-file-write` goes to the file
    /// as it arrives (the engine's window, main.rs's `WRITE_WINDOW`).
    fn writes_in_parts(&self) -> bool {
        true
    }

    fn open(&mut self, path: &str, mode: &str) -> Result<i64> {
        crate::log!(
            crate::log::Level::Info,
            "guest-file-open called, filepath: {path}, mode: {mode}"
        );
        let limit = handle_limit();
        if self.open.len() >= limit {
            return Err(Error::os(
                Errno::MFILE.raw_os_error(),
                &format!(
                    "Too many open files: {} handles are open, the agent's limit; close some with guest-file-close",
                    self.open.len()
                ),
            ));
        }
        let fd = open_or_create(path, mode)?;
        let handle = self
            .state
            .next_handle()
            .map_err(|_| Error::msg(format_args!("failed to commit persistent state to disk")))?;
        self.open.insert(handle, fd);
        crate::log!(crate::log::Level::Info, "guest-file-open, handle: {handle}");
        Ok(handle)
    }

    fn close(&mut self, handle: i64) -> Result<()> {
        crate::log!(
            crate::log::Level::Info,
            "guest-file-close called, handle: {handle}"
        );
        let fd = self.open.remove(&handle).ok_or(Error::NoHandle(handle))?;
        // close(2)'s result is wanted (NFS reports write-back errors there), which OwnedFd's
        // Drop discards.
        if let Err(e) = crate::sys::fs::close(fd) {
            return Err(Error::os(
                e.raw_os_error().unwrap_or(0),
                &crate::config::io_text(&e),
            ));
        }
        Ok(())
    }

    fn read(&mut self, handle: i64, buf: &mut [u8]) -> Result<usize> {
        let fd = self.fd(handle)?;
        let mut got = 0;
        while got < buf.len() {
            match rustix::io::read(fd, &mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(Errno::INTR) => {}
                // A non-blocking source with nothing more now: hand back what we have.
                Err(Errno::AGAIN) if got > 0 => break,
                Err(e) => return Err(os(e)),
            }
        }
        Ok(got)
    }

    fn write(&mut self, handle: i64, data: &[u8]) -> Result<GuestFileWrite> {
        let fd = self.fd(handle)?;
        let mut done = 0;
        while done < data.len() {
            match rustix::io::write(fd, &data[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) if done > 0 => break,
                Err(e) => return Err(os(e)),
            }
        }
        Ok(GuestFileWrite {
            count: done as i64,
            eof: false,
        })
    }

    fn seek(&mut self, handle: i64, offset: i64, whence: Seek) -> Result<GuestFileSeek> {
        let fd = self.fd(handle)?;
        let from = match whence {
            Seek::Set => {
                if offset < 0 {
                    return Err(os(Errno::INVAL));
                }
                SeekFrom::Start(offset as u64)
            }
            Seek::Cur => SeekFrom::Current(offset),
            Seek::End => SeekFrom::End(offset),
        };
        let pos = rustix::fs::seek(fd, from).map_err(os)?;
        Ok(GuestFileSeek {
            position: pos as i64,
            eof: false,
        })
    }

    fn flush(&mut self, handle: i64) -> Result<()> {
        // Writes are unbuffered (see the module docs): nothing is pending.
        self.fd(handle).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn files(name: &str) -> (LinuxFiles, std::path::PathBuf) {
        let d = std::env::temp_dir().join(format!("qga-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        (
            LinuxFiles::new(PersistentState::load(StateDir::open(&d).unwrap(), false).unwrap()),
            d,
        )
    }

    #[test]
    fn mode_table() {
        let base = OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        assert_eq!(mode_flags("r"), Some(OFlags::RDONLY | base));
        assert_eq!(
            mode_flags("wb"),
            Some(OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | base)
        );
        assert_eq!(
            mode_flags("ab"),
            Some(OFlags::WRONLY | OFlags::CREATE | OFlags::APPEND | base)
        );
        for m in ["r+", "rb+", "r+b"] {
            assert_eq!(mode_flags(m), Some(OFlags::RDWR | base));
        }
        for m in ["w+", "wb+", "w+b"] {
            assert_eq!(
                mode_flags(m),
                Some(OFlags::RDWR | OFlags::CREATE | OFlags::TRUNC | base)
            );
        }
        for m in ["a+", "ab+", "a+b"] {
            assert_eq!(
                mode_flags(m),
                Some(OFlags::RDWR | OFlags::CREATE | OFlags::APPEND | base)
            );
        }
        for m in ["rw", "", "R", "r+bb", "x"] {
            assert_eq!(mode_flags(m), None);
        }
    }

    #[test]
    fn round_trip_modes_and_handles() {
        let (mut f, d) = files("rt");
        let p = d.join("a.txt");
        let ps = p.to_str().unwrap();
        let h = f.open(ps, "w+").unwrap();
        assert_eq!(h, 1000);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o666
        );
        assert_eq!(
            f.write(h, b"hello world").unwrap(),
            GuestFileWrite {
                count: 11,
                eof: false
            }
        );
        assert_eq!(
            f.seek(h, 6, Seek::Set).unwrap(),
            GuestFileSeek {
                position: 6,
                eof: false
            }
        );
        let mut buf = [0u8; 64];
        assert_eq!(f.read(h, &mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"world");
        assert_eq!(f.read(h, &mut buf).unwrap(), 0);
        assert_eq!(f.seek(h, -5, Seek::End).unwrap().position, 6);
        assert_eq!(f.seek(h, -1, Seek::Cur).unwrap().position, 5);
        assert!(f.seek(h, -100, Seek::Cur).is_err());
        f.flush(h).unwrap();
        f.close(h).unwrap();
        assert_eq!(f.close(h), Err(Error::NoHandle(h)));
        assert!(!f.has_handle(h));

        // Append: reads start at 0, writes go to the end whatever the position (and leave
        // the position there, as after stdio's fflush).
        let h = f.open(ps, "a+").unwrap();
        assert_eq!(h, 1001);
        assert_eq!(f.read(h, &mut buf[..5]).unwrap(), 5);
        f.write(h, b"!").unwrap();
        assert_eq!(f.read(h, &mut buf).unwrap(), 0);
        assert_eq!(f.seek(h, 0, Seek::Set).unwrap().position, 0);
        assert_eq!(f.read(h, &mut buf).unwrap(), 12);
        assert_eq!(&buf[..12], b"hello world!");
        f.close(h).unwrap();

        // An existing file keeps its mode; "w" truncates.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let h = f.open(ps, "w").unwrap();
        f.close(h).unwrap();
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!((md.len(), md.permissions().mode() & 0o777), (0, 0o600));

        // Errors are OS errors for the engine to prefix.
        assert_eq!(
            f.open(d.join("nope/x").to_str().unwrap(), "r").unwrap_err(),
            Error::os(2, "No such file or directory")
        );
        // A failed open does not consume a handle.
        assert_eq!(f.open(ps, "r").unwrap(), 1003);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn reading_a_fifo_does_not_block() {
        let (mut f, d) = files("fifo");
        let p = d.join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &p,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let h = f.open(p.to_str().unwrap(), "r+").unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            f.read(h, &mut buf).unwrap_err(),
            Error::os(11, "Resource temporarily unavailable")
        );
        f.write(h, b"abc").unwrap();
        assert_eq!(f.read(h, &mut buf).unwrap(), 3);
        f.close(h).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }
}
