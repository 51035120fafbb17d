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
//! created rather than being a fatal error (an initramfs often has no `/var/run`).

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

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
                    if !statedir.exists() {
                        let _ = fs::DirBuilder::new()
                            .recursive(true)
                            .mode(0o755)
                            .create(statedir);
                    }
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

    /// Write the file atomically (temporary file, fsync, rename), as `g_file_set_contents`.
    fn save(&self) -> io::Result<()> {
        let mut w = Writer::default();
        w.group("global").integer("fd_counter", self.fd_counter);
        let text = w.finish();
        let tmp = self
            .path
            .with_extension(format!("state.tmp{}", std::process::id()));
        let result = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .custom_flags(libc::O_CLOEXEC)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
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
        // A state path under a regular file cannot be created.
        let f = std::env::temp_dir().join(format!("qga-state-file-{}", std::process::id()));
        fs::write(&f, "").unwrap();
        assert!(PersistentState::load(&f.join("x"), false).is_err());
        fs::remove_file(&f).unwrap();
    }
}
