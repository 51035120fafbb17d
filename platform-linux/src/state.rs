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
//! `/var/run`). A state directory writable by group or others is refused at start: anyone who
//! can write there could plant links for the root agent to follow. The counter is written to a
//! temporary file with a random name, created `O_EXCL | O_NOFOLLOW` in the opened directory and
//! renamed into place there (upstream's `qga.state.tmp<pid>` is predictable and opened without
//! `O_EXCL`, so it follows a planted link).

use std::fs;
use std::io::{self, Write as _};
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::keyfile::{KeyFile, Writer};
use crate::log::Level;

/// `QGA_PSTATE_DEFAULT_FD_COUNTER`.
pub const FD_COUNTER_DEFAULT: i64 = 1000;

/// `qga.state`: the persistent file-handle counter.
#[derive(Debug)]
pub struct PersistentState {
    path: PathBuf,
    fd_counter: i64,
}

impl PersistentState {
    /// A counter at its default that persists to `<statedir>/qga.state`, not yet loaded.
    pub fn new(statedir: &Path) -> PersistentState {
        PersistentState {
            path: statedir.join("qga.state"),
            fd_counter: FD_COUNTER_DEFAULT,
        }
    }

    /// Load `<statedir>/qga.state`, creating it with the defaults if missing (unless frozen:
    /// then the state directory may be on a frozen filesystem, and creation waits for the
    /// first handle). Errors are upstream's start-up messages.
    pub fn load(statedir: &Path, frozen: bool) -> Result<PersistentState, String> {
        let mut st = PersistentState::new(statedir);
        let display = st.path.display().to_string();
        if !frozen && !statedir.exists() {
            crate::log!(
                Level::Info,
                "creating the state directory {}",
                statedir.display()
            );
            let _ = fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(statedir);
        }
        check_statedir(statedir)?;
        match fs::read(&st.path) {
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

    /// Write the file atomically, as `g_file_set_contents`: a new temporary file with a random
    /// name in the opened state directory, fsync, `renameat`.
    fn save(&self) -> io::Result<()> {
        let mut w = Writer::default();
        w.group("global").integer("fd_counter", self.fd_counter);
        let text = w.finish();
        let dir_path = self.path.parent().unwrap_or(Path::new("."));
        let dir = rustix::fs::open(
            dir_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let (tmp, fd) = create_temp(dir.as_fd(), "qga.state.tmp.", 0o644)?;
        let result = (|| {
            let mut f = fs::File::from(fd);
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            rustix::fs::renameat(&dir, tmp.as_str(), &dir, "qga.state")?;
            Ok(())
        })();
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
        }
        result
    }
}

/// Refuse a state directory that someone else could plant files or links in: the directory
/// (a link to it is followed) must be owned by the agent's user or root and not writable by
/// group or others; a link at the given path must be ours or root's too (`/var/run` → `/run`
/// is); and every directory above the resolved one must be ours or root's and writable by
/// group or others only with the sticky bit (`/tmp`).
fn check_statedir(statedir: &Path) -> Result<(), String> {
    let Ok(m) = fs::metadata(statedir) else {
        // A missing directory fails later with upstream's text.
        return Ok(());
    };
    if !m.is_dir() {
        return Ok(()); // fails later with upstream's text
    }
    let me = rustix::process::geteuid().as_raw();
    let trusted = |uid: u32| uid == 0 || uid == me;
    let refuse = |what: String| {
        Err(format!(
            "state directory {}: {what}: refusing to keep the agent's state there",
            statedir.display()
        ))
    };
    let mode = m.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return refuse(format!("writable by group or others (mode {mode:o})"));
    }
    if !trusted(m.uid()) {
        return refuse(format!("owned by uid {}", m.uid()));
    }
    if let Ok(l) = fs::symlink_metadata(statedir)
        && l.file_type().is_symlink()
        && !trusted(l.uid())
    {
        return refuse(format!("a symbolic link owned by uid {}", l.uid()));
    }
    let real = fs::canonicalize(statedir).map_err(|e| {
        format!(
            "unable to resolve state directory {}: {}",
            statedir.display(),
            crate::config::io_text(&e)
        )
    })?;
    for dir in real.ancestors().skip(1) {
        let Ok(a) = fs::metadata(dir) else { continue };
        let mode = a.mode() & 0o7777;
        if !trusted(a.uid()) {
            return refuse(format!(
                "{} above it is owned by uid {}",
                dir.display(),
                a.uid()
            ));
        }
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return refuse(format!(
                "{} above it is writable by group or others (mode {mode:o})",
                dir.display()
            ));
        }
    }
    Ok(())
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

/// `qga.state.isfrozen`'s path.
pub fn isfrozen_path(statedir: &Path) -> PathBuf {
    statedir.join("qga.state.isfrozen")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("qga-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn counter_persists_in_upstream_format() {
        let d = tmpdir("persist");
        let mut st = PersistentState::load(&d, false).unwrap();
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
        let mut st = PersistentState::load(&d, false).unwrap();
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
    fn frozen_start_defers_creation_and_missing_dir_is_created() {
        let d = tmpdir("frozen");
        let st = PersistentState::load(&d, true).unwrap();
        assert_eq!(st.fd_counter(), 1000);
        assert!(!d.join("qga.state").exists());
        let sub = d.join("a/b");
        PersistentState::load(&sub, false).unwrap();
        assert!(sub.join("qga.state").exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_files() {
        let d = tmpdir("bad");
        fs::write(d.join("qga.state"), "garbage\n").unwrap();
        let e = PersistentState::load(&d, false).unwrap_err();
        assert!(
            e.starts_with("error loading persistent state from path: "),
            "{e}"
        );
        // A missing or unreadable counter restarts at the default.
        fs::write(d.join("qga.state"), "[global]\nfd_counter=x\n").unwrap();
        assert_eq!(PersistentState::load(&d, false).unwrap().fd_counter(), 1000);
        fs::write(d.join("qga.state"), "[global]\nfd_counter=5000000000\n").unwrap();
        assert_eq!(
            PersistentState::load(&d, false).unwrap().fd_counter(),
            5_000_000_000
        );
        fs::remove_dir_all(&d).unwrap();
        // A state directory others may write to is refused, with the reason.
        let w = tmpdir("writable");
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&w, fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(
            PersistentState::load(&w, false).unwrap_err(),
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
            let e = PersistentState::load(&other, false).unwrap_err();
            assert!(
                e.ends_with(": owned by uid 4242: refusing to keep the agent's state there"),
                "{e}"
            );
            let link = w.join("link");
            let mine = w.join("mine");
            fs::create_dir(&mine).unwrap();
            std::os::unix::fs::symlink(&mine, &link).unwrap();
            PersistentState::load(&link, false).unwrap();
            chown(&link);
            let e = PersistentState::load(&link, false).unwrap_err();
            assert!(e.contains("a symbolic link owned by uid 4242"), "{e}");
            let below = other.join("below");
            fs::create_dir(&below).unwrap();
            let e = PersistentState::load(&below, false).unwrap_err();
            assert!(e.contains("above it is owned by uid 4242"), "{e}");
        }
        fs::remove_dir_all(&w).unwrap();
        // A state path under a regular file cannot be created.
        let f = std::env::temp_dir().join(format!("qga-state-file-{}", std::process::id()));
        fs::write(&f, "").unwrap();
        assert!(PersistentState::load(&f.join("x"), false).is_err());
        fs::remove_file(&f).unwrap();
    }
}
