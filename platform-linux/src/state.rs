//! The state directory (`-t`, default `/var/run`): `qga.state` with the file-handle counter,
//! and `qga.state.isfrozen`, present while the agent holds filesystems frozen.
//!
//! Both files are upstream's, in upstream's format, so an agent started over a state directory
//! that qemu-ga used (or the other way round) carries on: handles keep increasing across
//! restarts (a client holding handle 1003 from before a restart must not reach a different
//! file under the same number), and an agent that died with filesystems frozen comes back in
//! the frozen state, where only the six thaw-safe commands work, so that the host can thaw.
//!
//! Where upstream differs: the counter is 64-bit (GLib's key file reads it as a 32-bit `int`),
//! an unreadable counter restarts at 1000 instead of 0, and a missing state directory is
//! created (with a log line) rather than being a fatal error (an initramfs often has no
//! `/var/run`).
//!
//! The agent is root and writes here for its whole life, so the directory is opened once at
//! start ([`StateDir`]) and every later file operation is relative to that descriptor
//! (`openat`, `renameat`, `unlinkat`): the checks made at start (owner, mode, the directories
//! above, links on the way) are made on the opened directory and stay true of it, whatever
//! later happens to the path (upstream opens `<dir>/qga.state` by path at each save, so a
//! directory swapped for a link afterwards sends root's writes wherever the link points). A
//! state directory writable by group or others is refused at start: anyone who can write there
//! could plant links for the root agent to follow. The counter is written to a temporary file
//! with a random name, created `O_EXCL | O_NOFOLLOW` in the opened directory and renamed into
//! place there (upstream's `qga.state.tmp<pid>` is predictable and opened without `O_EXCL`, so
//! it follows a planted link).

use std::fs;
use std::io::{self, Write as _};
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::keyfile::{KeyFile, Writer};
use crate::log::Level;

/// `QGA_PSTATE_DEFAULT_FD_COUNTER`.
pub const FD_COUNTER_DEFAULT: i64 = 1000;

/// The counter's file name in the state directory.
pub const STATE_FILE: &str = "qga.state";

/// The frozen marker's file name in the state directory.
pub const ISFROZEN_FILE: &str = "qga.state.isfrozen";

/// The state directory, opened once: the descriptor every state file is reached through, and
/// the path it was opened by (for messages only). Clones share the descriptor.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
    /// `None` for a placeholder that was never opened: every file operation then fails
    /// with `EBADF`.
    fd: Option<Arc<OwnedFd>>,
}

impl StateDir {
    /// A placeholder for `path` that was never opened (defaults, before start-up replaces
    /// them): every file operation fails.
    pub fn unopened(path: &Path) -> StateDir {
        StateDir {
            path: path.to_path_buf(),
            fd: None,
        }
    }

    /// Opens an existing directory, without checks and creating nothing (`NotFound` when it
    /// is missing). A symbolic link at `path` itself is resolved (`/var/run` → `/run`); the
    /// directory it leads to is then opened `O_DIRECTORY | O_NOFOLLOW`.
    pub fn open_existing(path: &Path) -> io::Result<StateDir> {
        let l = fs::symlink_metadata(path)?;
        let target = if l.file_type().is_symlink() {
            fs::canonicalize(path)?
        } else {
            path.to_path_buf()
        };
        let fd = rustix::fs::open(
            &target,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(StateDir {
            path: path.to_path_buf(),
            fd: Some(Arc::new(fd)),
        })
    }

    /// The start-up open: creates a missing directory (mode 0755, logged), opens it and
    /// [checks](StateDir::check) it.
    pub fn open(path: &Path) -> Result<StateDir, String> {
        let dir = match StateDir::open_existing(path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                crate::log!(
                    Level::Info,
                    "creating the state directory {}",
                    path.display()
                );
                let _ = fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(path);
                StateDir::open_existing(path).map_err(|e| open_failed(path, &e))?
            }
            Err(e) => return Err(open_failed(path, &e)),
        };
        dir.check()?;
        Ok(dir)
    }

    /// `<path>/<name>`, for messages.
    pub fn file_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn fd(&self) -> io::Result<BorrowedFd<'_>> {
        self.fd
            .as_deref()
            .map(|fd| fd.as_fd())
            .ok_or_else(|| io::Error::from(Errno::BADF))
    }

    /// Whether `name` exists in the directory (a link counts, and is not followed).
    pub fn exists(&self, name: &str) -> io::Result<bool> {
        match rustix::fs::statat(self.fd()?, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates `name` (empty, mode 0600) unless it exists, never through a link.
    pub fn create_marker(&self, name: &str) -> io::Result<()> {
        rustix::fs::openat(
            self.fd()?,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        Ok(())
    }

    /// Removes `name` from the directory.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        rustix::fs::unlinkat(self.fd()?, name, AtFlags::empty())?;
        Ok(())
    }

    /// The contents of `name`, which must be a regular file (a link is not followed).
    pub fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let fd = rustix::fs::openat(
            self.fd()?,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(io::Error::other("not a regular file"));
        }
        let mut data = Vec::new();
        io::Read::read_to_end(&mut fs::File::from(fd), &mut data)?;
        Ok(data)
    }

    /// Replaces `name` atomically, as `g_file_set_contents`: a new temporary file with a
    /// random name in the directory, written, fsynced, `renameat`ed over `name`.
    pub fn replace(&self, name: &str, data: &[u8], mode: u32) -> io::Result<()> {
        let dir = self.fd()?;
        let (tmp, fd) = create_temp(dir, &format!("{name}.tmp."), mode)?;
        let result = (|| {
            let mut f = fs::File::from(fd);
            f.write_all(data)?;
            f.sync_all()?;
            rustix::fs::renameat(dir, tmp.as_str(), dir, name)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
        }
        result
    }

    /// Refuses a state directory that someone else could plant files or links in, checking
    /// the opened directory and the directories above it through descriptors: the directory
    /// must be owned by the agent's user or root and not writable by group or others; every
    /// directory above it (reached with `..` from the descriptor, up to `/`) must be ours or
    /// root's and writable by group or others only with the sticky bit (`/tmp`); and a
    /// symbolic link on the given path must be ours or root's (`/var/run` → `/run` is).
    pub fn check(&self) -> Result<(), String> {
        let me = rustix::process::geteuid().as_raw();
        let trusted = |uid: u32| uid == 0 || uid == me;
        let refuse = |what: String| {
            Err(format!(
                "state directory {}: {what}: refusing to keep the agent's state there",
                self.path.display()
            ))
        };
        let io_err = |e: Errno| {
            format!(
                "unable to check state directory {}: {}",
                self.path.display(),
                crate::config::io_text(&e.into())
            )
        };
        let fd = self.fd().map_err(|e| open_failed(&self.path, &e))?;
        let st = rustix::fs::fstat(fd).map_err(io_err)?;
        let mode = st.st_mode & 0o7777;
        if mode & 0o022 != 0 {
            return refuse(format!("writable by group or others (mode {mode:o})"));
        }
        if !trusted(st.st_uid) {
            return refuse(format!("owned by uid {}", st.st_uid));
        }
        for (i, p) in self.path.ancestors().enumerate() {
            if p.as_os_str().is_empty() {
                continue;
            }
            if let Ok(l) = fs::symlink_metadata(p)
                && l.file_type().is_symlink()
                && !trusted(l.uid())
            {
                return refuse(if i == 0 {
                    format!("a symbolic link owned by uid {}", l.uid())
                } else {
                    format!(
                        "{} on its path is a symbolic link owned by uid {}",
                        p.display(),
                        l.uid()
                    )
                });
            }
        }
        // The names of the directories above, for messages; the checks are on descriptors.
        let names: Vec<PathBuf> = fs::canonicalize(&self.path)
            .map(|r| r.ancestors().skip(1).map(Path::to_path_buf).collect())
            .unwrap_or_default();
        let mut below = st;
        let mut cur: Option<OwnedFd> = None;
        for i in 0..4096 {
            let from = cur.as_ref().map_or(fd, |c| c.as_fd());
            let parent = rustix::fs::openat(
                from,
                "..",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io_err)?;
            let a = rustix::fs::fstat(&parent).map_err(io_err)?;
            if a.st_dev == below.st_dev && a.st_ino == below.st_ino {
                return Ok(()); // `/`, whose `..` is itself
            }
            let name = names
                .get(i)
                .map_or_else(|| "a directory".to_string(), |n| n.display().to_string());
            let mode = a.st_mode & 0o7777;
            if !trusted(a.st_uid) {
                return refuse(format!("{name} above it is owned by uid {}", a.st_uid));
            }
            if mode & 0o022 != 0 && mode & 0o1000 == 0 {
                return refuse(format!(
                    "{name} above it is writable by group or others (mode {mode:o})"
                ));
            }
            below = a;
            cur = Some(parent);
        }
        refuse("too many directories above it".to_string())
    }
}

fn open_failed(path: &Path, e: &io::Error) -> String {
    format!(
        "unable to access state file at path {}: {}",
        path.join(STATE_FILE).display(),
        crate::config::io_text(e)
    )
}

/// `qga.state`: the persistent file-handle counter.
#[derive(Debug)]
pub struct PersistentState {
    dir: StateDir,
    fd_counter: i64,
}

impl PersistentState {
    /// A counter at its default that persists to `qga.state` in `dir`, not yet loaded.
    pub fn new(dir: StateDir) -> PersistentState {
        PersistentState {
            dir,
            fd_counter: FD_COUNTER_DEFAULT,
        }
    }

    /// Load `qga.state` from the (opened and checked) directory, creating it with the
    /// defaults if missing (unless frozen: then the state directory may be on a frozen
    /// filesystem, and creation waits for the first handle). Errors are upstream's start-up
    /// messages.
    pub fn load(dir: StateDir, frozen: bool) -> Result<PersistentState, String> {
        let mut st = PersistentState::new(dir);
        let display = st.dir.file_path(STATE_FILE).display().to_string();
        match st.dir.read(STATE_FILE) {
            Ok(data) => {
                let kf = KeyFile::parse(&data).map_err(|m| {
                    format!("error loading persistent state from path: {display}, {m}")
                })?;
                if let Some(v) = kf.integer("global", "fd_counter") {
                    st.fd_counter = v;
                }
                Ok(st)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !frozen {
                    st.save().map_err(|e| {
                        crate::log!(Level::Critical, "{display}: {}", crate::config::io_text(&e));
                        format!("unable to create state file at path {display}")
                    })?;
                }
                Ok(st)
            }
            Err(e) => Err(format!(
                "unable to access state file at path {display}: {}",
                crate::config::io_text(&e)
            )),
        }
    }

    /// The opened state directory.
    pub fn dir(&self) -> &StateDir {
        &self.dir
    }

    /// The counter's current value (the next handle).
    #[cfg(test)]
    pub fn fd_counter(&self) -> i64 {
        self.fd_counter
    }

    /// Take the next handle and persist the counter. As upstream, the counter moves on even
    /// if persisting fails (the handle is then not handed out).
    pub fn next_handle(&mut self) -> Result<i64, io::Error> {
        let handle = self.fd_counter;
        if handle == i64::MAX {
            return Err(io::Error::other("file handle counter exhausted"));
        }
        self.fd_counter += 1;
        self.save()?;
        Ok(handle)
    }

    /// Write the file atomically in the opened directory.
    fn save(&self) -> io::Result<()> {
        let mut w = Writer::default();
        w.group("global").integer("fd_counter", self.fd_counter);
        let text = w.finish();
        self.dir.replace(STATE_FILE, text.as_bytes(), 0o644)
    }
}

/// Create a new file `<prefix><16 random hex digits>` in `dir` (`O_CREAT | O_EXCL |
/// O_NOFOLLOW`, mode `mode`): a name nobody can guess in advance, which cannot be a file or link
/// planted there. Retries a few times on a name that exists.
pub(crate) fn create_temp(
    dir: BorrowedFd<'_>,
    prefix: &str,
    mode: u32,
) -> rustix::io::Result<(String, OwnedFd)> {
    for _ in 0..8 {
        let mut r = [0u8; 8];
        rustix::rand::getrandom(&mut r, rustix::rand::GetRandomFlags::empty())?;
        let name = format!("{prefix}{:016x}", u64::from_ne_bytes(r));
        match rustix::fs::openat(
            dir,
            name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        ) {
            Ok(fd) => return Ok((name, fd)),
            Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
    }
    Err(Errno::EXIST)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start-up sequence: open (creating) and check the directory, then load.
    fn load_at(dir: &Path, frozen: bool) -> Result<PersistentState, String> {
        PersistentState::load(StateDir::open(dir)?, frozen)
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("qga-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn counter_persists_in_upstream_format() {
        let d = tmpdir("persist");
        let mut st = load_at(&d, false).unwrap();
        assert_eq!(
            fs::read_to_string(d.join("qga.state")).unwrap(),
            "[global]\nfd_counter=1000\n"
        );
        assert_eq!(st.next_handle().unwrap(), 1000);
        assert_eq!(st.next_handle().unwrap(), 1001);
        assert_eq!(
            fs::read_to_string(d.join("qga.state")).unwrap(),
            "[global]\nfd_counter=1002\n"
        );
        let mut st = load_at(&d, false).unwrap();
        assert_eq!(st.next_handle().unwrap(), 1002);
        // No temporary files left behind.
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
        // A link planted at upstream's predictable temporary name is not followed.
        let victim = d.join("victim");
        fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(
            &victim,
            d.join(format!("qga.state.tmp{}", std::process::id())),
        )
        .unwrap();
        st.next_handle().unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        assert_eq!(
            fs::read_to_string(d.join("qga.state")).unwrap(),
            "[global]\nfd_counter=1004\n"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_directory_swapped_for_a_link_after_start_changes_nothing() {
        let d = tmpdir("swap");
        let (real, moved, elsewhere) = (d.join("state"), d.join("moved"), d.join("elsewhere"));
        fs::create_dir(&real).unwrap();
        fs::create_dir(&elsewhere).unwrap();
        let mut st = load_at(&real, false).unwrap();
        let dir = StateDir::open(&real).unwrap();
        // Whoever can rename in the parent swaps the directory for a link after start.
        fs::rename(&real, &moved).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &real).unwrap();
        assert_eq!(st.next_handle().unwrap(), 1000);
        dir.create_marker(ISFROZEN_FILE).unwrap();
        assert!(dir.exists(ISFROZEN_FILE).unwrap());
        assert_eq!(
            fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "written through the link"
        );
        assert_eq!(
            fs::read_to_string(moved.join("qga.state")).unwrap(),
            "[global]\nfd_counter=1001\n"
        );
        assert!(moved.join(ISFROZEN_FILE).exists());
        dir.remove(ISFROZEN_FILE).unwrap();
        assert!(!moved.join(ISFROZEN_FILE).exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn frozen_start_defers_creation_and_missing_dir_is_created() {
        let d = tmpdir("frozen");
        let st = load_at(&d, true).unwrap();
        assert_eq!(st.fd_counter(), 1000);
        assert!(!d.join("qga.state").exists());
        let sub = d.join("a/b");
        load_at(&sub, false).unwrap();
        assert!(sub.join("qga.state").exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_files() {
        let d = tmpdir("bad");
        fs::write(d.join("qga.state"), "garbage\n").unwrap();
        let e = load_at(&d, false).unwrap_err();
        assert!(
            e.starts_with("error loading persistent state from path: "),
            "{e}"
        );
        // A missing or unreadable counter restarts at the default.
        fs::write(d.join("qga.state"), "[global]\nfd_counter=x\n").unwrap();
        assert_eq!(load_at(&d, false).unwrap().fd_counter(), 1000);
        fs::write(d.join("qga.state"), "[global]\nfd_counter=5000000000\n").unwrap();
        assert_eq!(load_at(&d, false).unwrap().fd_counter(), 5_000_000_000);
        fs::remove_dir_all(&d).unwrap();
        // A state directory others may write to is refused, with the reason.
        let w = tmpdir("writable");
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&w, fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(
            load_at(&w, false).unwrap_err(),
            format!(
                "state directory {}: writable by group or others (mode 1777): refusing to keep the agent's state there",
                w.display()
            )
        );
        assert!(!w.join("qga.state").exists());
        fs::set_permissions(&w, fs::Permissions::from_mode(0o755)).unwrap();
        if rustix::process::geteuid().is_root() {
            // Another user's directory, a link of another user's, a directory below another
            // user's: all refused.
            let chown = |p: &Path| std::os::unix::fs::lchown(p, Some(4242), Some(4242)).unwrap();
            let other = w.join("other");
            fs::create_dir(&other).unwrap();
            chown(&other);
            let e = load_at(&other, false).unwrap_err();
            assert!(
                e.ends_with(": owned by uid 4242: refusing to keep the agent's state there"),
                "{e}"
            );
            let link = w.join("link");
            let mine = w.join("mine");
            fs::create_dir(&mine).unwrap();
            std::os::unix::fs::symlink(&mine, &link).unwrap();
            load_at(&link, false).unwrap();
            chown(&link);
            let e = load_at(&link, false).unwrap_err();
            assert!(e.contains("a symbolic link owned by uid 4242"), "{e}");
            // Another user's link on the way to the directory.
            fs::create_dir(mine.join("sub")).unwrap();
            let e = load_at(&link.join("sub"), false).unwrap_err();
            assert!(
                e.contains(&format!(
                    "{} on its path is a symbolic link owned by uid 4242",
                    link.display()
                )),
                "{e}"
            );
            let below = other.join("below");
            fs::create_dir(&below).unwrap();
            let e = load_at(&below, false).unwrap_err();
            assert!(e.contains("above it is owned by uid 4242"), "{e}");
        }
        fs::remove_dir_all(&w).unwrap();
        // A state path under a regular file cannot be created.
        let f = std::env::temp_dir().join(format!("qga-state-file-{}", std::process::id()));
        fs::write(&f, "").unwrap();
        assert!(load_at(&f.join("x"), false).is_err());
        fs::remove_file(&f).unwrap();
    }
}
