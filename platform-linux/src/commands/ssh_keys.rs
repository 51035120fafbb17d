//! `guest-ssh-get-authorized-keys`, `guest-ssh-add-authorized-keys` and
//! `guest-ssh-remove-authorized-keys` on Linux.
//!
//! Upstream edits `~user/.ssh/authorized_keys` as lines split on `\n`: get returns the
//! stripped, non-comment lines in reverse order; add appends the keys not already present and
//! writes the lines joined by `\n` (no trailing newline added), creating `~/.ssh` (0700, owned
//! by the user) when missing; remove drops lines equal to a key and is a no-op when the file
//! does not exist. Writes replace the file atomically (temporary file and rename), owned by the
//! user, mode 0600. That is kept, byte for byte, because tools compare the file afterwards.
//!
//! What is not kept is how the files are reached. The agent runs as root and the home
//! directory belongs to a user the agent must not trust (see the threat model in the design
//! brief): upstream works by path, so a user's symlink to `/etc/shadow`, a `.ssh` swapped for
//! a link to `/root/.ssh` between two calls, a FIFO or a link to `/dev/zero` turn the agent
//! against the guest. Two fixes were possible: do the edit in a child running as the user, or
//! walk the tree with descriptors as root. The walk was chosen: it needs no fork in the
//! single-threaded agent, keeps upstream's semantics for root-owned files, and every check is
//! a plain system call testable on a temporary tree. The rules:
//!
//! - the home directory must be an absolute path without `..`; it is reached from `/` one
//!   component at a time with `openat(O_NOFOLLOW | O_DIRECTORY)`, so no symbolic link is
//!   followed anywhere on the way;
//! - the directories above the home are owned by root or the user and writable by group or
//!   others only with the sticky bit (`/tmp`); the home and `.ssh` are owned by the user or
//!   root and not writable by group or others;
//! - `.ssh` is created with `mkdirat` in the opened home, reopened, checked, and
//!   `fchown`/`fchmod`ed through its descriptor;
//! - the keys file is opened `O_NOFOLLOW | O_NONBLOCK` inside the opened `.ssh` and must be a
//!   regular file with one link, owned by the user or root, of at most 1 MiB
//!   ([`MAX_KEYS_FILE`]);
//! - the new contents go to a temporary file with a random name created `O_EXCL |
//!   O_NOFOLLOW` in the opened `.ssh`, `fchown`ed and `fchmod`ed, then `renameat`ed over the
//!   keys file.
//!
//! Every refusal is an error answer naming the path and the cause (`refusing '<path>': it is a
//! symbolic link`), and nothing outside the user's own `.ssh` is changed. The differences this
//! makes are listed in `DIFFERENCES.md`.
//!
//! Users are looked up with `getpwnam_r` in a dynamically linked build (with `/etc/passwd`
//! as a fallback when NSS finds nothing) and in `/etc/passwd` alone in the static build,
//! where glibc's NSS modules cannot be loaded safely (see `DIFFERENCES.md`). Tests point the
//! backend at their own passwd file and home directories.

// agent_core::Error carries its message inline (no allocation in the core), so every
// Result in these backends is as large as that message, by design.
#![allow(clippy::result_large_err)]

use std::ffi::OsStr;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{
    AtFlags, CWD, FileType, Gid, Mode, OFlags, Uid, fchmod, fchown, fstat, mkdirat, openat,
    renameat, unlinkat,
};
use rustix::io::Errno;

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

    /// The user's entry and their home directory, opened by the checked walk; `None` when the
    /// home directory (or a directory above it) does not exist.
    fn home(&self, username: &str) -> Result<(Passwd, Option<Dir>)> {
        let p = self.lookup(username)?;
        let home = open_home(username, &p)?;
        Ok((p, home))
    }

    /// The keys of `username` in upstream's order (reverse file order).
    pub(crate) fn get_keys(&self, username: &str) -> Result<Vec<String>> {
        let (p, home) = self.home(username)?;
        let keys_path = p.dir.join(".ssh").join(KEYS);
        let ssh = match home {
            Some(home) => home.child(".ssh", p.uid)?,
            None => None,
        };
        let lines = match ssh {
            Some(ssh) => ssh.read_keys(p.uid)?,
            None => None,
        };
        let Some(lines) = lines else {
            return Err(missing_keys(&keys_path));
        };
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
        let (p, home) = self.home(username)?;
        let Some(home) = home else {
            return Err(Error::msg(format_args!(
                "failed to create directory '{}': {}",
                p.dir.join(".ssh").display(),
                strerror(libc::ENOENT)
            )));
        };
        let (ssh, existed) = match home.child(".ssh", p.uid)? {
            Some(ssh) => (ssh, true),
            None => (home.make_ssh_dir(&p)?, false),
        };
        let mut lines = if reset || !existed {
            Vec::new()
        } else {
            ssh.read_keys(p.uid)?.unwrap_or_default()
        };
        for k in keys {
            if !lines.iter().any(|l| l == k) {
                lines.push(k.to_string());
            }
        }
        ssh.write_keys(&lines.join("\n"), &p)
    }

    /// Remove `keys` (already checked) for `username`.
    pub(crate) fn remove_keys<'k>(
        &self,
        username: &str,
        keys: impl Iterator<Item = &'k str> + Clone,
    ) -> Result<()> {
        let (p, home) = self.home(username)?;
        // Nothing to remove from when the home, `.ssh` or the file is missing.
        let Some(ssh) = (match home {
            Some(home) => home.child(".ssh", p.uid)?,
            None => None,
        }) else {
            return Ok(());
        };
        let Some(lines) = ssh.read_keys(p.uid)? else {
            return Ok(());
        };
        let kept: Vec<&str> = lines
            .iter()
            .map(String::as_str)
            .filter(|l| !keys.clone().any(|k| k == *l))
            .collect();
        ssh.write_keys(&kept.join("\n"), &p)
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

/// The keys file's name inside `.ssh`.
const KEYS: &str = "authorized_keys";

/// The largest keys file read: 1 MiB, thousands of keys. A bigger file is refused with an
/// error rather than read, so that a huge (or endless) file cannot exhaust the agent's memory.
pub(crate) const MAX_KEYS_FILE: u64 = 1 << 20;

/// Upstream's text for a keys file that does not exist.
fn missing_keys(path: &Path) -> Error {
    Error::msg(format_args!(
        "failed to read '{p}': Failed to open file \u{201c}{p}\u{201d}: {}",
        strerror(libc::ENOENT),
        p = path.display()
    ))
}

/// A refusal: `refusing '<path>': <why>`.
fn refuse(path: &Path, why: std::fmt::Arguments<'_>) -> Error {
    Error::msg(format_args!("refusing '{}': {why}", path.display()))
}

/// A failed system call on `path`: `failed to <what> '<path>': <strerror>`.
fn failed(what: &str, path: &Path, e: rustix::io::Errno) -> Error {
    Error::msg(format_args!(
        "failed to {what} '{}': {}",
        path.display(),
        strerror(e.raw_os_error())
    ))
}

/// How strictly a directory on the way to the keys is checked.
#[derive(Clone, Copy, PartialEq)]
enum Check {
    /// Above the home directory: owned by root or the user; writable by group or others only
    /// with the sticky bit (as `/tmp`), where nobody else may rename what we open next.
    Ancestor,
    /// The home directory and `.ssh`: owned by the user or root, not writable by group or
    /// others (what sshd's `StrictModes` asks for too).
    Strict,
}

/// A directory opened by the checked walk, with its path for messages.
struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// Open the directory `name` in `dir` without following a symbolic link.
fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Whether `name` in `dir` is a symbolic link (to tell ELOOP/ENOTDIR causes apart).
fn is_symlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
}

/// Check the owner and mode of the opened directory `fd`.
fn check_dir(fd: BorrowedFd<'_>, path: &Path, uid: u32, check: Check) -> Result<()> {
    let st = fstat(fd).map_err(|e| failed("stat", path, e))?;
    let owner = st.st_uid;
    if owner != 0 && owner != uid {
        return Err(refuse(
            path,
            format_args!("owned by uid {owner}, neither the user ({uid}) nor root"),
        ));
    }
    let mode = st.st_mode & 0o7777;
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && (check == Check::Strict || !sticky) {
        return Err(refuse(
            path,
            format_args!("writable by group or others (mode {mode:o})"),
        ));
    }
    Ok(())
}

/// Walk from `/` to the user's home directory one component at a time, each opened with
/// `O_NOFOLLOW | O_DIRECTORY` and checked (see [`Check`]). `None` when a component does not
/// exist; an error when the path is not absolute, has a `..`, or any component is a symbolic
/// link or fails its check.
fn open_home(user: &str, p: &Passwd) -> Result<Option<Dir>> {
    if !p.dir.is_absolute() {
        return Err(Error::msg(format_args!(
            "refusing the home directory of user '{user}': '{}' is not an absolute path",
            p.dir.display()
        )));
    }
    let mut names = Vec::new();
    for c in p.dir.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => names.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::msg(format_args!(
                    "refusing the home directory of user '{user}': '{}' contains '..'",
                    p.dir.display()
                )));
            }
        }
    }
    let root = Path::new("/");
    let mut fd = openat(
        CWD,
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| failed("open", root, e))?;
    let mut path = PathBuf::from("/");
    let root_check = if names.is_empty() {
        Check::Strict
    } else {
        Check::Ancestor
    };
    check_dir(fd.as_fd(), &path, p.uid, root_check)?;
    for (i, name) in names.iter().enumerate() {
        path.push(name);
        let check = if i + 1 == names.len() {
            Check::Strict
        } else {
            Check::Ancestor
        };
        match Dir::open_checked(fd.as_fd(), name, &path, p.uid, check)? {
            Some(next) => fd = next,
            None => return Ok(None),
        }
    }
    Ok(Some(Dir { fd, path }))
}

impl Dir {
    /// Open and check `name` in `dir`; `None` when it does not exist.
    fn open_checked(
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: &Path,
        uid: u32,
        check: Check,
    ) -> Result<Option<OwnedFd>> {
        match open_dir_at(dir, name) {
            Ok(fd) => {
                check_dir(fd.as_fd(), path, uid, check)?;
                Ok(Some(fd))
            }
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::LOOP | Errno::NOTDIR) if is_symlink_at(dir, name) => {
                Err(refuse(path, format_args!("it is a symbolic link")))
            }
            Err(Errno::NOTDIR) => Err(refuse(path, format_args!("it is not a directory"))),
            Err(e) => Err(failed("open directory", path, e)),
        }
    }

    /// The checked subdirectory `name` (`.ssh`); `None` when it does not exist.
    fn child(&self, name: &str, uid: u32) -> Result<Option<Dir>> {
        let path = self.path.join(name);
        Ok(
            Self::open_checked(self.fd.as_fd(), name.as_ref(), &path, uid, Check::Strict)?
                .map(|fd| Dir { fd, path }),
        )
    }

    /// Upstream's `mkdir_for_user` inside this (home) directory: create `.ssh` 0700, then
    /// chown it to the user and chmod it 0700 through the opened descriptor, never by path.
    fn make_ssh_dir(&self, p: &Passwd) -> Result<Dir> {
        let path = self.path.join(".ssh");
        match mkdirat(self.fd.as_fd(), ".ssh", Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(failed("create directory", &path, e)),
        }
        // Opened and checked again: the user may have swapped something in meanwhile.
        let fd = Self::open_checked(
            self.fd.as_fd(),
            ".ssh".as_ref(),
            &path,
            p.uid,
            Check::Strict,
        )?
        .ok_or_else(|| failed("create directory", &path, Errno::NOENT))?;
        fchown(&fd, Some(Uid::from_raw(p.uid)), Some(Gid::from_raw(p.gid)))
            .map_err(|e| failed("set ownership of directory", &path, e))?;
        fchmod(&fd, Mode::from_raw_mode(0o700))
            .map_err(|e| failed("set permissions of directory", &path, e))?;
        Ok(Dir { fd, path })
    }

    /// The keys file in this (`.ssh`) directory split on `\n` (so a trailing newline gives a
    /// last empty line, as `g_strsplit`); `None` when it does not exist. It is opened
    /// `O_NOFOLLOW | O_NONBLOCK` (a FIFO neither blocks the open nor gets read) and must be a
    /// regular file with one link, owned by the user or root, of at most [`MAX_KEYS_FILE`].
    fn read_keys(&self, uid: u32) -> Result<Option<Vec<String>>> {
        let path = self.path.join(KEYS);
        let fd = match openat(
            self.fd.as_fd(),
            KEYS,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => return Err(refuse(&path, format_args!("it is a symbolic link"))),
            Err(e) => {
                return Err(Error::msg(format_args!(
                    "failed to read '{p}': Failed to open file \u{201c}{p}\u{201d}: {}",
                    strerror(e.raw_os_error()),
                    p = path.display()
                )));
            }
        };
        let st = fstat(&fd).map_err(|e| failed("stat", &path, e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(refuse(&path, format_args!("it is not a regular file")));
        }
        if st.st_uid != 0 && st.st_uid != uid {
            return Err(refuse(
                &path,
                format_args!(
                    "owned by uid {}, neither the user ({uid}) nor root",
                    st.st_uid
                ),
            ));
        }
        if st.st_nlink > 1 {
            return Err(refuse(
                &path,
                format_args!("it has {} hard links", st.st_nlink),
            ));
        }
        let too_big = || {
            refuse(
                &path,
                format_args!("it is larger than {MAX_KEYS_FILE} bytes, the agent's limit"),
            )
        };
        if u64::try_from(st.st_size).unwrap_or(u64::MAX) > MAX_KEYS_FILE {
            return Err(too_big());
        }
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .take(MAX_KEYS_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| {
                Error::msg(format_args!(
                    "failed to read '{}': {}",
                    path.display(),
                    strerror(errno_of(&e))
                ))
            })?;
        if bytes.len() as u64 > MAX_KEYS_FILE {
            return Err(too_big());
        }
        Ok(Some(
            String::from_utf8_lossy(&bytes)
                .split('\n')
                .map(str::to_string)
                .collect(),
        ))
    }

    /// Upstream's `write_authkeys` inside this (`.ssh`) directory: a new temporary file with
    /// an unpredictable name, created `O_EXCL | O_NOFOLLOW` mode 0600, written, chowned to the
    /// user and chmodded 0600 through its descriptor, synced, then renamed over the keys file
    /// with `renameat` (which replaces a planted symbolic link itself, never its target).
    fn write_keys(&self, contents: &str, p: &Passwd) -> Result<()> {
        let path = self.path.join(KEYS);
        let (tmp, fd) = crate::state::create_temp(self.fd.as_fd(), ".authorized_keys.", 0o600)
            .map_err(|e| failed("write to", &path, e))?;
        let written = (|| {
            let mut f = std::fs::File::from(fd);
            f.write_all(contents.as_bytes()).map_err(|e| {
                failed(
                    "write to",
                    &path,
                    Errno::from_io_error(&e).unwrap_or(Errno::IO),
                )
            })?;
            fchown(&f, Some(Uid::from_raw(p.uid)), Some(Gid::from_raw(p.gid)))
                .map_err(|e| failed("set ownership of", &path, e))?;
            fchmod(&f, Mode::from_raw_mode(0o600))
                .map_err(|e| failed("set permissions of", &path, e))?;
            f.sync_all().map_err(|e| {
                failed(
                    "write to",
                    &path,
                    Errno::from_io_error(&e).unwrap_or(Errno::IO),
                )
            })?;
            renameat(self.fd.as_fd(), &tmp, self.fd.as_fd(), KEYS)
                .map_err(|e| failed("write to", &path, e))
        })();
        if written.is_err() {
            let _ = unlinkat(self.fd.as_fd(), &tmp, AtFlags::empty());
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::system::tempdir;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

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
            // Whatever the umask, the tree is not writable by group or others.
            for d in [&root, &root.join("home"), &home] {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
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

    /// The text of every refusal starts with this, and names the path and the cause.
    fn refused(e: &Error, path: &Path, why: &str) {
        assert_eq!(
            e.to_string(),
            format!("refusing '{}': {why}", path.display()),
            "{e}"
        );
    }

    fn ssh_dir(h: &Home) -> PathBuf {
        h.root.join("home/alice/.ssh")
    }

    /// A file outside the home that the user must never get: its bytes, owner and mode
    /// are compared before and after.
    fn secret(h: &Home) -> (PathBuf, std::fs::Metadata) {
        let s = h.root.join("shadow");
        std::fs::write(&s, "root:$6$hash:19000::::::\n").unwrap();
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o600)).unwrap();
        let m = std::fs::metadata(&s).unwrap();
        (s, m)
    }

    fn secret_untouched(s: &Path, before: &std::fs::Metadata) {
        assert_eq!(
            std::fs::read_to_string(s).unwrap(),
            "root:$6$hash:19000::::::\n"
        );
        let m = std::fs::metadata(s).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode()),
            (before.uid(), before.gid(), before.mode())
        );
    }

    #[test]
    fn home_must_be_absolute() {
        let h = Home::new();
        for dir in ["", "home/alice", "."] {
            std::fs::write(
                h.root.join("passwd"),
                format!("alice:x:{}:{}::{dir}:/bin/sh\n", h.uid, h.gid),
            )
            .unwrap();
            let e = h
                .keys
                .add_keys("alice", [K1].into_iter(), true)
                .unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "refusing the home directory of user 'alice': '{dir}' is not an absolute path"
                )
            );
            assert!(h.keys.get_keys("alice").is_err());
            assert!(h.keys.remove_keys("alice", [K1].into_iter()).is_err());
        }
        assert!(!Path::new(".ssh").exists() && !Path::new("home/alice/.ssh").exists());
    }

    #[test]
    fn keys_file_symlink_to_a_secret_is_refused() {
        let h = Home::new();
        let (s, before) = secret(&h);
        std::fs::create_dir_all(ssh_dir(&h)).unwrap();
        std::os::unix::fs::symlink(&s, h.file()).unwrap();
        let why = "it is a symbolic link";
        refused(&h.keys.get_keys("alice").unwrap_err(), &h.file(), why);
        refused(
            &h.keys
                .add_keys("alice", [K1].into_iter(), false)
                .unwrap_err(),
            &h.file(),
            why,
        );
        refused(
            &h.keys.remove_keys("alice", [K1].into_iter()).unwrap_err(),
            &h.file(),
            why,
        );
        secret_untouched(&s, &before);
        assert!(std::fs::symlink_metadata(h.file()).unwrap().is_symlink());
        // With reset nothing is read: the link itself is replaced, its target is untouched.
        h.keys.add_keys("alice", [K1].into_iter(), true).unwrap();
        secret_untouched(&s, &before);
        assert_eq!(h.contents(), K1);
        assert!(std::fs::symlink_metadata(h.file()).unwrap().is_file());
        // Links to endless files are refused the same way, before any read.
        std::fs::remove_file(h.file()).unwrap();
        std::os::unix::fs::symlink("/dev/zero", h.file()).unwrap();
        refused(&h.keys.get_keys("alice").unwrap_err(), &h.file(), why);
    }

    #[test]
    fn hard_link_to_a_secret_is_refused() {
        let h = Home::new();
        let (s, before) = secret(&h);
        std::fs::create_dir_all(ssh_dir(&h)).unwrap();
        std::fs::hard_link(&s, h.file()).unwrap();
        refused(
            &h.keys
                .add_keys("alice", [K1].into_iter(), false)
                .unwrap_err(),
            &h.file(),
            "it has 2 hard links",
        );
        secret_untouched(&s, &before);
    }

    #[test]
    fn fifo_and_huge_files_are_refused_without_blocking() {
        let h = Home::new();
        std::fs::create_dir_all(ssh_dir(&h)).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            h.file(),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let why = "it is not a regular file";
        refused(&h.keys.get_keys("alice").unwrap_err(), &h.file(), why);
        refused(
            &h.keys
                .add_keys("alice", [K1].into_iter(), false)
                .unwrap_err(),
            &h.file(),
            why,
        );
        std::fs::remove_file(h.file()).unwrap();
        let big = vec![b'#'; usize::try_from(MAX_KEYS_FILE).unwrap() + 1];
        std::fs::write(h.file(), &big).unwrap();
        let why = "it is larger than 1048576 bytes, the agent's limit";
        refused(&h.keys.get_keys("alice").unwrap_err(), &h.file(), why);
        refused(
            &h.keys.remove_keys("alice", [K1].into_iter()).unwrap_err(),
            &h.file(),
            why,
        );
        // Exactly at the limit is read.
        std::fs::write(h.file(), &big[1..]).unwrap();
        assert_eq!(h.keys.get_keys("alice").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn ssh_dir_symlink_to_another_users_ssh_is_refused() {
        let h = Home::new();
        let other = h.root.join("root-ssh");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("authorized_keys"), "root key\n").unwrap();
        std::os::unix::fs::symlink(&other, ssh_dir(&h)).unwrap();
        let why = "it is a symbolic link";
        refused(
            &h.keys
                .add_keys("alice", [K1].into_iter(), true)
                .unwrap_err(),
            &ssh_dir(&h),
            why,
        );
        refused(&h.keys.get_keys("alice").unwrap_err(), &ssh_dir(&h), why);
        assert_eq!(
            std::fs::read_dir(&other).unwrap().count(),
            1,
            "nothing was created in the other directory"
        );
        assert_eq!(
            std::fs::read_to_string(other.join("authorized_keys")).unwrap(),
            "root key\n"
        );
        // A symlinked home directory is refused too.
        std::fs::remove_file(ssh_dir(&h)).unwrap();
        let home = h.root.join("home/alice");
        std::fs::remove_dir(&home).unwrap();
        std::os::unix::fs::symlink(&other, &home).unwrap();
        refused(
            &h.keys
                .add_keys("alice", [K1].into_iter(), true)
                .unwrap_err(),
            &home,
            why,
        );
    }

    #[test]
    fn writable_directories_are_refused() {
        let h = Home::new();
        std::fs::create_dir_all(ssh_dir(&h)).unwrap();
        std::fs::set_permissions(ssh_dir(&h), std::fs::Permissions::from_mode(0o770)).unwrap();
        refused(
            &h.keys
                .add_keys("alice", [K1].into_iter(), false)
                .unwrap_err(),
            &ssh_dir(&h),
            "writable by group or others (mode 770)",
        );
        std::fs::set_permissions(ssh_dir(&h), std::fs::Permissions::from_mode(0o700)).unwrap();
        let home = h.root.join("home/alice");
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o757)).unwrap();
        refused(
            &h.keys.get_keys("alice").unwrap_err(),
            &home,
            "writable by group or others (mode 757)",
        );
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Above the home: writable by others only with the sticky bit (as /tmp).
        let parent = h.root.join("home");
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o777)).unwrap();
        refused(
            &h.keys.remove_keys("alice", [K1].into_iter()).unwrap_err(),
            &parent,
            "writable by group or others (mode 777)",
        );
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o1777)).unwrap();
        h.keys.add_keys("alice", [K1].into_iter(), false).unwrap();
        assert_eq!(h.contents(), K1);
        assert!(!h.file().with_file_name("authorized_keys.tmp").exists());
        assert_eq!(
            std::fs::read_dir(ssh_dir(&h)).unwrap().count(),
            1,
            "no temporary file is left"
        );
    }

    #[test]
    fn another_users_files_and_ownership() {
        if !rustix::process::geteuid().is_root() {
            return; // needs chown
        }
        let h = Home::new();
        let home = h.root.join("home/alice");
        let chown = |p: &Path, id: u32| std::os::unix::fs::lchown(p, Some(id), Some(id)).unwrap();
        std::fs::write(
            h.root.join("passwd"),
            format!("alice:x:4242:4343::{}:/bin/sh\n", home.display()),
        )
        .unwrap();
        chown(&home, 4242);
        // .ssh is created for the user and the file is the user's, through descriptors.
        h.keys.add_keys("alice", [K1].into_iter(), false).unwrap();
        for p in [ssh_dir(&h), h.file()] {
            let m = std::fs::metadata(&p).unwrap();
            assert_eq!((m.uid(), m.gid()), (4242, 4343), "{}", p.display());
        }
        // A directory or file of a third user is refused.
        chown(&ssh_dir(&h), 5000);
        refused(
            &h.keys.get_keys("alice").unwrap_err(),
            &ssh_dir(&h),
            "owned by uid 5000, neither the user (4242) nor root",
        );
        chown(&ssh_dir(&h), 4242);
        chown(&h.file(), 5000);
        refused(
            &h.keys
                .add_keys("alice", [K2].into_iter(), false)
                .unwrap_err(),
            &h.file(),
            "owned by uid 5000, neither the user (4242) nor root",
        );
        assert_eq!(h.contents(), K1);
        chown(&home, 5000);
        refused(
            &h.keys.get_keys("alice").unwrap_err(),
            &home,
            "owned by uid 5000, neither the user (4242) nor root",
        );
    }
}
