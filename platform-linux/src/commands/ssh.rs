//! `guest-ssh-get-authorized-keys`, `guest-ssh-add-authorized-keys` and
//! `guest-ssh-remove-authorized-keys` on Linux.
//!
//! Upstream edits `~user/.ssh/authorized_keys` as lines split on `\n`: get returns the
//! stripped, non-comment lines in reverse order; add appends the keys not already present and
//! writes the lines joined by `\n` (no trailing newline added), creating `~/.ssh` (0700, owned
//! by the user) when the file could not be read; remove drops lines equal to a key and is a
//! no-op when the file does not exist. Writes replace the file atomically (temporary file and
//! rename), then chown it to the user and chmod it 0600. All of that is kept, byte for byte,
//! because tools compare the file afterwards.
//!
//! Users are looked up with `getpwnam_r` in a dynamically linked build (with `/etc/passwd`
//! as a fallback when NSS finds nothing) and in `/etc/passwd` alone in the static build,
//! where glibc's NSS modules cannot be loaded safely (see `DIFFERENCES.md`). Tests point the
//! backend at their own passwd file and home directories.

// agent_core::Error carries its message inline (no allocation in the core), so every
// Result in these backends is as large as that message, by design.
#![allow(clippy::result_large_err)]

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use agent_core::Error;
use agent_core::Result;
use agent_core::commands::ssh_keys::SshKeys;
use agent_core::commands::{Emitter, StrList};

use super::system::{errno_of, strerror};

/// A user's account facts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Passwd {
    pub uid: u32,
    pub gid: u32,
    pub dir: PathBuf,
}

/// The Linux authorized-keys backend.
#[derive(Debug, Default)]
pub struct LinuxSshKeys {
    /// A passwd-format file to look users up in instead of the system's databases (tests).
    pub passwd_file: Option<PathBuf>,
}

/// Look `name` up in passwd-format text.
pub(crate) fn passwd_from_text(text: &str, name: &str) -> Option<Passwd> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        match f[..] {
            [n, _, uid, gid, _, dir, ..] if n == name => Some(Passwd {
                uid: uid.parse().ok()?,
                gid: gid.parse().ok()?,
                dir: dir.into(),
            }),
            _ => None,
        }
    })
}

/// The system's user database, static build: `/etc/passwd` only. A statically linked glibc
/// loads NSS modules other than `files` with `dlopen`, and a module built for the
/// distribution's shared glibc can crash the static binary (seen with `passwd: files systemd`
/// and an unknown user).
#[cfg(target_feature = "crt-static")]
fn system_lookup(name: &str) -> std::result::Result<Passwd, i32> {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd_from_text(&text, name).ok_or(0)
}

/// The system's user database, dynamic build: NSS, then `/etc/passwd` if NSS finds nothing.
#[cfg(not(target_feature = "crt-static"))]
fn system_lookup(name: &str) -> std::result::Result<Passwd, i32> {
    getpwnam(name).or_else(|rc| {
        let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        passwd_from_text(&text, name).ok_or(rc)
    })
}

/// `getpwnam_r`: the entry, or the error number (0 when the user simply does not exist).
#[cfg(not(target_feature = "crt-static"))]
fn getpwnam(name: &str) -> std::result::Result<Passwd, i32> {
    crate::sys::glibc::getpwnam(name).map(|e| Passwd {
        uid: e.uid,
        gid: e.gid,
        dir: e.dir,
    })
}

impl LinuxSshKeys {
    /// Upstream's `get_passwd_entry`, with its error text.
    pub(crate) fn lookup(&self, name: &str) -> Result<Passwd> {
        let found = match &self.passwd_file {
            Some(f) => {
                let text = std::fs::read_to_string(f).unwrap_or_default();
                passwd_from_text(&text, name).ok_or(0)
            }
            None => system_lookup(name),
        };
        found.map_err(|rc| {
            Error::msg(format_args!(
                "failed to lookup user '{name}': {}",
                strerror(rc)
            ))
        })
    }

    fn paths(&self, username: &str) -> Result<(Passwd, PathBuf, PathBuf)> {
        let p = self.lookup(username)?;
        let ssh = p.dir.join(".ssh");
        let keys = ssh.join("authorized_keys");
        Ok((p, ssh, keys))
    }

    /// The keys of `username` in upstream's order (reverse file order).
    pub(crate) fn get_keys(&self, username: &str) -> Result<Vec<String>> {
        let (_, _, path) = self.paths(username)?;
        let lines = read_authkeys(&path)?;
        Ok(lines
            .iter()
            .map(|l| l.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\x0b'))
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .rev()
            .map(str::to_string)
            .collect())
    }

    /// Add `keys` (already checked) for `username`.
    pub(crate) fn add_keys<'k>(
        &self,
        username: &str,
        keys: impl Iterator<Item = &'k str>,
        reset: bool,
    ) -> Result<()> {
        let (p, ssh, path) = self.paths(username)?;
        let existing = if reset {
            None
        } else {
            read_authkeys(&path).ok()
        };
        let mut lines = match existing {
            Some(l) => l,
            None => {
                if !ssh.is_dir() {
                    mkdir_for_user(&ssh, &p)?;
                }
                Vec::new()
            }
        };
        for k in keys {
            if !lines.iter().any(|l| l == k) {
                lines.push(k.to_string());
            }
        }
        write_authkeys(&path, &lines.join("\n"), &p)
    }

    /// Remove `keys` (already checked) for `username`.
    pub(crate) fn remove_keys<'k>(
        &self,
        username: &str,
        keys: impl Iterator<Item = &'k str> + Clone,
    ) -> Result<()> {
        let (p, _, path) = self.paths(username)?;
        if !path.exists() {
            return Ok(());
        }
        let lines = read_authkeys(&path)?;
        let kept: Vec<&str> = lines
            .iter()
            .map(String::as_str)
            .filter(|l| !keys.clone().any(|k| k == *l))
            .collect();
        write_authkeys(&path, &kept.join("\n"), &p)
    }
}

impl SshKeys for LinuxSshKeys {
    fn get(&mut self, username: &str, out: &mut Emitter<'_, &'static str>) -> Result<()> {
        for k in self.get_keys(username)? {
            out.emit(&k.as_str());
        }
        Ok(())
    }

    fn add(&mut self, username: &str, keys: StrList<'_>, reset: bool) -> Result<()> {
        self.add_keys(username, keys.iter(), reset)
    }

    fn remove(&mut self, username: &str, keys: StrList<'_>) -> Result<()> {
        let keys: Vec<&str> = keys.iter().collect();
        self.remove_keys(username, keys.iter().copied())
    }
}

/// The file split on `\n` (so a trailing newline gives a last empty line, as `g_strsplit`).
fn read_authkeys(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::msg(format_args!(
            "failed to read '{p}': Failed to open file \u{201c}{p}\u{201d}: {}",
            strerror(errno_of(&e)),
            p = path.display()
        ))
    })?;
    Ok(String::from_utf8_lossy(&bytes)
        .split('\n')
        .map(str::to_string)
        .collect())
}

/// Upstream's `mkdir_for_user`: create `path` 0700, chown it to the user, chmod it 0700.
fn mkdir_for_user(path: &Path, p: &Passwd) -> Result<()> {
    let fail = |what: &str, e: std::io::Error| {
        Error::msg(format_args!(
            "failed to {what} '{}': {}",
            path.display(),
            strerror(errno_of(&e))
        ))
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|e| fail("create directory", e))?;
    std::os::unix::fs::chown(path, Some(p.uid), Some(p.gid))
        .map_err(|e| fail("set ownership of directory", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| fail("set permissions of directory", e))
}

/// Upstream's `write_authkeys`: replace the file atomically, then chown and chmod 0600.
fn write_authkeys(path: &Path, contents: &str, p: &Passwd) -> Result<()> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let write_err = |e: std::io::Error| {
        Error::msg(format_args!(
            "failed to write to '{}': {}",
            path.display(),
            strerror(errno_of(&e))
        ))
    };
    let mut name = path.as_os_str().to_owned();
    name.push(format!(
        ".{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = PathBuf::from(name);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(write_err(e));
    }
    std::os::unix::fs::chown(path, Some(p.uid), Some(p.gid)).map_err(|e| {
        Error::msg(format_args!(
            "failed to set ownership of directory '{}': {}",
            path.display(),
            strerror(errno_of(&e))
        ))
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        Error::msg(format_args!(
            "failed to set permissions of '{}': {}",
            path.display(),
            strerror(errno_of(&e))
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::system::tempdir;
    use std::os::unix::fs::MetadataExt;

    struct Home {
        root: PathBuf,
        keys: LinuxSshKeys,
        uid: u32,
        gid: u32,
    }

    impl Home {
        fn new() -> Self {
            let root = tempdir();
            let home = root.join("home/alice");
            std::fs::create_dir_all(&home).unwrap();
            let (uid, gid) = (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            );
            let passwd = root.join("passwd");
            std::fs::write(
                &passwd,
                format!(
                    "root:x:0:0:root:/root:/bin/sh\nalice:x:{uid}:{gid}::{}:/bin/sh\n",
                    home.display()
                ),
            )
            .unwrap();
            Home {
                root,
                keys: LinuxSshKeys {
                    passwd_file: Some(passwd),
                },
                uid,
                gid,
            }
        }

        fn file(&self) -> PathBuf {
            self.root.join("home/alice/.ssh/authorized_keys")
        }

        fn set(&self, contents: &str) {
            std::fs::create_dir_all(self.root.join("home/alice/.ssh")).unwrap();
            std::fs::write(self.file(), contents).unwrap();
        }

        fn contents(&self) -> String {
            std::fs::read_to_string(self.file()).unwrap()
        }
    }

    impl Drop for Home {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    const K1: &str = "algo key1 comments";
    const K2: &str = "algo key2 comments";

    #[test]
    fn unknown_user() {
        let h = Home::new();
        let e = h.keys.get_keys("nobody-here").unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to lookup user 'nobody-here': Success"
        );
        assert!(h.keys.add_keys("", [K1].into_iter(), false).is_err());
        // The system database (NSS, then /etc/passwd) answers the same way.
        let e = LinuxSshKeys::default()
            .lookup("no-such-user-qga")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to lookup user 'no-such-user-qga': Success"
        );
        assert_eq!(LinuxSshKeys::default().lookup("root").unwrap().uid, 0);
    }

    #[test]
    fn add_creates_dir_and_file_without_trailing_newline() {
        let h = Home::new();
        h.keys.add_keys("alice", [K2].into_iter(), false).unwrap();
        assert_eq!(h.contents(), K2);
        let ssh = std::fs::metadata(h.root.join("home/alice/.ssh")).unwrap();
        assert_eq!(ssh.mode() & 0o777, 0o700);
        assert_eq!((ssh.uid(), ssh.gid()), (h.uid, h.gid));
        let f = std::fs::metadata(h.file()).unwrap();
        assert_eq!(f.mode() & 0o777, 0o600);
        // key2 came first and is not duplicated.
        h.keys
            .add_keys("alice", [K1, K2].into_iter(), false)
            .unwrap();
        assert_eq!(h.contents(), format!("{K2}\n{K1}"));
    }

    #[test]
    fn add_with_reset_and_to_a_file_ending_in_newline() {
        let h = Home::new();
        h.keys
            .add_keys("alice", [K1, K2].into_iter(), false)
            .unwrap();
        h.keys.add_keys("alice", [K2].into_iter(), true).unwrap();
        assert_eq!(h.contents(), K2);
        h.keys.add_keys("alice", [].into_iter(), true).unwrap();
        assert_eq!(h.contents(), "");
        // Upstream keeps the empty last line of a file ending in '\n'.
        h.set("a b\n");
        h.keys.add_keys("alice", [K1].into_iter(), false).unwrap();
        assert_eq!(h.contents(), format!("a b\n\n{K1}"));
    }

    #[test]
    fn remove_keys_like_upstream() {
        let h = Home::new();
        // A missing file is success and creates nothing.
        h.keys.remove_keys("alice", [K1].into_iter()).unwrap();
        assert!(!h.file().exists());
        let authkeys = format!("{K1}\n{K1}\n# a commented line\nalgo some-key another\n");
        h.set(&authkeys);
        h.keys.remove_keys("alice", [K2].into_iter()).unwrap();
        assert_eq!(h.contents(), authkeys);
        h.keys.remove_keys("alice", [K1, K2].into_iter()).unwrap();
        assert_eq!(h.contents(), "# a commented line\nalgo some-key another\n");
    }

    #[test]
    fn get_keys_reversed_stripped_without_comments() {
        let h = Home::new();
        let e = h.keys.get_keys("alice").unwrap_err().to_string();
        let p = h.file();
        assert_eq!(
            e,
            format!(
                "failed to read '{}': Failed to open file \u{201c}{}\u{201d}: No such file or directory",
                p.display(),
                p.display()
            )
        );
        h.set(&format!(
            "{K1}\n# a commented line\n  algo some-key another \r\n\n"
        ));
        assert_eq!(
            h.keys.get_keys("alice").unwrap(),
            vec!["algo some-key another", K1]
        );
    }
}
