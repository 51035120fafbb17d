//! `guest-fsfreeze-*` and `guest-fstrim` on Linux, and the agent's frozen state.
//!
//! The mount list is upstream's (docs/protocol.md §3.5): `/proc/self/mountinfo`
//! (falling back to `/proc/self/mounts`), skipping pseudo and network filesystems (device
//! major 0, except btrfs, whose device node is `stat`ed) and later mounts of a device already
//! listed (bind mounts), with `\ooo` escapes in paths decoded. Freezing walks it in reverse
//! mount order (a filesystem mounted on top of another is frozen first); EOPNOTSUPP and EBUSY
//! are skipped, any other error thaws everything and fails. The `-F` hook runs with `freeze`
//! before and with `thaw` after.
//!
//! The frozen state is the agent's own flag, as upstream: set before the FIFREEZE calls (so
//! that nothing the agent does afterwards writes to a frozen filesystem: logging stops, and
//! only the six thaw-safe commands are served), recorded in `<statedir>/qga.state.isfrozen` so
//! a restarted agent comes back frozen, and cleared by a thaw. One deliberate difference:
//! upstream ignores SIGTERM and SIGINT while frozen; this agent thaws and then exits with
//! status 0 (a stopped agent can never thaw, so staying frozen helps no one).

#![allow(
    clippy::result_large_err,
    reason = "agent_core::Error holds its message inline, by design: no allocation"
)]

use std::os::fd::AsFd as _;
use std::path::Path;

use agent_core::commands::filesystems::{Filesystems, FsfreezeStatus, GuestFilesystemTrimResult};
use agent_core::commands::{Emitter, StrList};
use agent_core::{Error, Result};
use rustix::fs::{Mode, OFlags};

use crate::log::Level;
use crate::state::{ISFROZEN_FILE, StateDir};

/// One mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub dir: String,
    /// Its type (`ext4`, `btrfs`, ...).
    pub fstype: String,
    /// The device's major number.
    pub major: u32,
    /// The device's minor number.
    pub minor: u32,
}

/// Decode the `\ooo` and `\\` escapes the kernel writes in mount paths.
pub fn unescape_mount_name(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            if b.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
                continue;
            }
            if let (Some(&d1), Some(&d2), Some(&d3)) = (b.get(i + 1), b.get(i + 2), b.get(i + 3))
                && (b'0'..=b'3').contains(&d1)
                && (b'0'..=b'7').contains(&d2)
                && (b'0'..=b'7').contains(&d3)
            {
                out.push((d1 - b'0') * 64 + (d2 - b'0') * 8 + (d3 - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse `/proc/self/mountinfo` text into upstream's mount list. `stat_dev` gives the device
/// numbers of a block device node (for btrfs, whose mountinfo major is 0).
pub fn parse_mountinfo(text: &str, stat_dev: &dyn Fn(&str) -> Option<(u32, u32)>) -> Vec<Mount> {
    let mut mounts: Vec<Mount> = Vec::new();
    for line in text.lines() {
        // id parent major:minor root mountpoint options [optional...] - type source superopts
        let mut fields = line.split(' ');
        let (Some(_id), Some(_parent), Some(devno), Some(_root), Some(dir)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let Some((maj, min)) = devno.split_once(':') else {
            continue;
        };
        let (Ok(mut major), Ok(mut minor)) = (maj.parse::<u32>(), min.parse::<u32>()) else {
            continue;
        };
        let mut rest = fields.skip_while(|f| *f != "-");
        if rest.next() != Some("-") {
            continue;
        }
        let Some(fstype) = rest.next().filter(|t| !t.is_empty()) else {
            continue;
        };
        let source = rest.next().map(unescape_mount_name).unwrap_or_default();
        let dir = unescape_mount_name(dir);
        if major == 0 {
            if fstype != "btrfs" {
                continue;
            }
            match stat_dev(&source) {
                Some((a, b)) => (major, minor) = (a, b),
                None => continue,
            }
        }
        if mounts.iter().any(|m| m.major == major && m.minor == minor) {
            continue;
        }
        mounts.push(Mount {
            dir,
            fstype: fstype.to_string(),
            major,
            minor,
        });
    }
    mounts
}

/// What `stat` says about a mount source: a block device's numbers, `Err` for a directory
/// (a bind mount), `None` for anything else.
pub type SourceKind = Option<std::result::Result<(u32, u32), ()>>;

/// Parse `/proc/self/mounts` (the fallback): only sources that are paths, no smbfs or cifs,
/// no bind mounts of directories.
pub fn parse_mounts(text: &str, stat_source: &dyn Fn(&str) -> SourceKind) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(src), Some(dir), Some(fstype)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let src = unescape_mount_name(src);
        if !src.starts_with('/') || fstype == "smbfs" || fstype == "cifs" {
            continue;
        }
        let (major, minor) = match stat_source(&src) {
            Some(Ok(d)) => d,
            Some(Err(())) => continue, // a directory: a bind mount
            None => (0, 0),
        };
        mounts.push(Mount {
            dir: unescape_mount_name(dir),
            fstype: fstype.to_string(),
            major,
            minor,
        });
    }
    mounts
}

/// The device numbers of a block device node.
fn stat_block(path: &str) -> Option<(u32, u32)> {
    let st = rustix::fs::stat(path).ok()?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::BlockDevice {
        return None;
    }
    Some((rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev)))
}

/// Where the mount list is read: `/proc/self/mountinfo`, else `/proc/self/mounts`.
const MOUNT_FILES: [&str; 2] = ["/proc/self/mountinfo", "/proc/self/mounts"];

/// upstream's mount list of this system, in mount order.
pub fn mount_list() -> Result<Vec<Mount>> {
    mount_list_from(MOUNT_FILES)
}

/// The mount list from `[mountinfo, mounts]` (other files in tests).
fn mount_list_from([mountinfo, mounts]: [&str; 2]) -> Result<Vec<Mount>> {
    match std::fs::read_to_string(mountinfo) {
        Ok(text) => Ok(parse_mountinfo(&text, &stat_block)),
        Err(_) => {
            let text = std::fs::read_to_string(mounts).map_err(|e| {
                Error::msg(format_args!(
                    "failed to open {mounts}: {}",
                    crate::config::io_text(&e)
                ))
            })?;
            Ok(parse_mounts(&text, &|src| {
                let st = rustix::fs::stat(src).ok()?;
                match rustix::fs::FileType::from_raw_mode(st.st_mode) {
                    rustix::fs::FileType::Directory => Some(Err(())),
                    rustix::fs::FileType::BlockDevice => Some(Ok((
                        rustix::fs::major(st.st_rdev),
                        rustix::fs::minor(st.st_rdev),
                    ))),
                    _ => None,
                }
            }))
        }
    }
}

fn open_dir(dir: &str) -> std::result::Result<std::os::fd::OwnedFd, rustix::io::Errno> {
    rustix::fs::open(dir, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
}

fn errstr(code: i32) -> String {
    crate::config::strerror(code)
}

/// Freezing and trimming, and the frozen state.
#[derive(Debug)]
pub struct LinuxFilesystems {
    frozen: bool,
    /// The opened state directory, where `qga.state.isfrozen` is created and removed.
    statedir: StateDir,
    hook: Option<String>,
    /// A `-l` log file not opened because the agent started frozen.
    pub deferred_log: Option<String>,
    /// A `-d` pid file not written because the agent started frozen.
    pub deferred_pidfile: Option<String>,
    /// Where the mount list is read ([`MOUNT_FILES`]; unreadable files in tests).
    mount_files: [&'static str; 2],
}

impl Default for LinuxFilesystems {
    fn default() -> Self {
        LinuxFilesystems::new(
            StateDir::unopened(Path::new(crate::config::STATEDIR_DEFAULT)),
            None,
            false,
        )
    }
}

impl LinuxFilesystems {
    /// The state kept in the opened `statedir`, with the `-F` hook, starting frozen or not.
    pub fn new(statedir: StateDir, hook: Option<String>, frozen: bool) -> LinuxFilesystems {
        LinuxFilesystems {
            frozen,
            statedir,
            hook,
            deferred_log: None,
            deferred_pidfile: None,
            mount_files: MOUNT_FILES,
        }
    }

    /// Whether the agent holds filesystems frozen.
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// upstream's `ga_set_frozen`, except that the marker is created (mode 0600, not following
    /// a link) before logging is disabled, so that a failure to create it is logged.
    fn set_frozen(&mut self) {
        if self.frozen {
            return;
        }
        self.frozen = true;
        if let Err(e) = self.statedir.create_marker(ISFROZEN_FILE) {
            crate::log!(
                Level::Warning,
                "unable to create {}, fsfreeze may not function properly: {}",
                self.statedir.file_path(ISFROZEN_FILE).display(),
                crate::config::io_text(&e)
            );
        }
        crate::log!(Level::Warning, "disabling logging due to filesystem freeze");
        crate::log::set_enabled(false);
    }

    /// upstream's `ga_unset_frozen`, with the deferred log and pid files.
    fn unset_frozen(&mut self) {
        if !self.frozen {
            return;
        }
        if let Some(path) = self.deferred_log.take()
            && let Err(e) = crate::log::open_file(&path)
        {
            crate::log::set_enabled(true);
            crate::log!(
                Level::Critical,
                "unable to open specified log file: {}",
                crate::config::io_text(&e)
            );
        }
        crate::log::set_enabled(true);
        crate::log!(
            Level::Warning,
            "logging re-enabled due to filesystem unfreeze"
        );
        if let Some(path) = self.deferred_pidfile.take()
            && let Err(e) = crate::daemon::write_pidfile(&path)
        {
            crate::log!(Level::Warning, "{e}");
        }
        self.frozen = false;
        if self.statedir.remove(ISFROZEN_FILE).is_err() {
            crate::log!(
                Level::Warning,
                "unable to delete {}, fsfreeze may not function properly",
                self.statedir.file_path(ISFROZEN_FILE).display()
            );
        }
    }

    fn run_hook(&self, arg: &str) -> Result<()> {
        let Some(hook) = &self.hook else {
            return Ok(());
        };
        if let Err(e) = rustix::fs::access(hook.as_str(), rustix::fs::Access::EXEC_OK) {
            return Err(Error::msg(format_args!(
                "can't access fsfreeze hook '{hook}': {}",
                errstr(e.raw_os_error())
            )));
        }
        crate::log!(Level::Info, "executing fsfreeze hook with arg '{arg}'");
        crate::run::run_command(&[hook.as_str(), arg], None, "execute fsfreeze hook").map(|_| ())
    }

    fn do_freeze(&self, mounts: &[Mount], only: Option<&StrList<'_>>) -> Result<i64> {
        let mut count = 0;
        for m in mounts.iter().rev() {
            if let Some(list) = only
                && !list.iter().any(|p| p == m.dir)
            {
                continue;
            }
            let fd = open_dir(&m.dir).map_err(|e| {
                Error::msg(format_args!(
                    "failed to open {}: {}",
                    m.dir,
                    errstr(e.raw_os_error())
                ))
            })?;
            match crate::sys::fs::freeze(fd.as_fd()).map_err(|e| e.raw_os_error().unwrap_or(0)) {
                Ok(()) => count += 1,
                Err(libc::EOPNOTSUPP | libc::EBUSY) => {}
                Err(code) => {
                    return Err(Error::msg(format_args!(
                        "failed to freeze {}: {}",
                        m.dir,
                        errstr(code)
                    )));
                }
            }
        }
        Ok(count)
    }

    fn do_thaw(&self) -> Result<i64> {
        let mounts = mount_list_from(self.mount_files)?;
        let mut count = 0;
        for m in &mounts {
            let Ok(fd) = open_dir(&m.dir) else { continue };
            // A filesystem frozen n times needs n thaws; count it once.
            let mut thawed = false;
            while crate::sys::fs::thaw(fd.as_fd()).is_ok() {
                thawed = true;
            }
            if thawed {
                count += 1;
            }
        }
        Ok(count)
    }
}

impl Filesystems for LinuxFilesystems {
    fn status(&mut self) -> FsfreezeStatus {
        if self.frozen {
            FsfreezeStatus::Frozen
        } else {
            FsfreezeStatus::Thawed
        }
    }

    fn freeze(&mut self, mountpoints: Option<StrList<'_>>) -> Result<i64> {
        crate::log!(Level::Info, "guest-fsfreeze called");
        self.run_hook("freeze")?;
        let mounts = mount_list_from(self.mount_files)?;
        self.set_frozen();
        let r = self.do_freeze(&mounts, mountpoints.as_ref());
        match r {
            Ok(0) => self.unset_frozen(),
            Ok(_) => {}
            Err(_) => {
                let _ = self.thaw();
            }
        }
        r
    }

    /// Unlike upstream (which answers 0, stays frozen and skips the hook), a mount list that
    /// cannot be read is the answer: the host learns that nothing was thawed and can retry.
    fn thaw(&mut self) -> Result<i64> {
        let n = self.do_thaw()?;
        self.unset_frozen();
        self.run_hook("thaw")?;
        Ok(n)
    }

    fn fstrim(
        &mut self,
        minimum: Option<i64>,
        out: &mut Emitter<'_, GuestFilesystemTrimResult<'static>>,
    ) -> Result<()> {
        crate::log!(Level::Info, "guest-fstrim called");
        let mounts = mount_list()?;
        for m in mounts.iter().rev() {
            let mut result = GuestFilesystemTrimResult {
                path: &m.dir,
                trimmed: None,
                minimum: None,
                error: None,
            };
            let text;
            match open_dir(&m.dir) {
                Err(e) => {
                    text = format!("failed to open: {}", errstr(e.raw_os_error()));
                    result.error = Some(&text);
                }
                Ok(fd) => {
                    let mut range = crate::sys::fs::FstrimRange {
                        start: 0,
                        len: u64::MAX,
                        minlen: minimum.unwrap_or(0) as u64,
                    };
                    match crate::sys::fs::trim(fd.as_fd(), &mut range) {
                        Ok(()) => {
                            result.minimum = Some(range.minlen as i64);
                            result.trimmed = Some(range.len as i64);
                        }
                        Err(e) => {
                            let code = e.raw_os_error().unwrap_or(0);
                            text = if code == libc::ENOTTY || code == libc::EOPNOTSUPP {
                                "trim not supported".to_string()
                            } else {
                                format!("failed to trim: {}", errstr(code))
                            };
                            result.error = Some(&text);
                        }
                    }
                }
            }
            out.emit(&result);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(dir: &Path) -> StateDir {
        StateDir::open_existing(dir).unwrap()
    }

    const MOUNTINFO: &str = "\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
28 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
29 28 0:5 / /dev rw,nosuid shared:2 - devtmpfs udev rw,size=1000k
40 28 254:16 / /mnt/my\\040disk rw,relatime shared:20 - ext4 /dev/vdb rw
41 28 254:1 /home /srv/bind rw,relatime shared:1 - ext4 /dev/vda1 rw
42 28 0:45 / /data rw,relatime shared:21 - btrfs /dev/vdc rw,space_cache
43 28 0:46 /sub /data2 rw,relatime shared:22 - btrfs /dev/vdc rw
44 28 0:47 / /gone rw shared:23 - btrfs /dev/nodev rw
45 28 254:32 / /odd\\134name\\011x rw master:3 unbindable - xfs /dev/vdd rw
46 28 0:48 / /nfs rw - nfs4 server:/export rw
bad line
";

    #[test]
    fn mountinfo_as_upstream() {
        let stat = |dev: &str| match dev {
            "/dev/vdc" => Some((254, 48)),
            _ => None,
        };
        let m = parse_mountinfo(MOUNTINFO, &stat);
        let got: Vec<_> = m
            .iter()
            .map(|m| (m.dir.as_str(), m.fstype.as_str(), m.major, m.minor))
            .collect();
        assert_eq!(
            got,
            [
                ("/", "ext4", 254, 1),
                ("/mnt/my disk", "ext4", 254, 16),
                ("/data", "btrfs", 254, 48),
                ("/odd\\name\tx", "xfs", 254, 32),
            ]
        );
    }

    #[test]
    fn mounts_fallback() {
        let text = "/dev/vda1 / ext4 rw 0 0\nproc /proc proc rw 0 0\n//srv/share /smb cifs rw 0 0\n/dev/vdb /x\\040y ext4 rw 0 0\n/home /bind none rw,bind 0 0\n";
        let stat = |s: &str| match s {
            "/dev/vda1" => Some(Ok((254, 1))),
            "/dev/vdb" => Some(Ok((254, 16))),
            "/home" => Some(Err(())),
            _ => None,
        };
        let m = parse_mounts(text, &stat);
        let got: Vec<_> = m.iter().map(|m| m.dir.as_str()).collect();
        assert_eq!(got, ["/", "/x y"]);
    }

    #[test]
    fn unescape() {
        assert_eq!(unescape_mount_name("a\\040b"), "a b");
        assert_eq!(unescape_mount_name("a\\\\b"), "a\\b");
        assert_eq!(unescape_mount_name("a\\8b\\0"), "a\\8b\\0");
        assert_eq!(unescape_mount_name("\\400"), "\\400");
    }

    #[test]
    fn this_system_has_a_mount_list() {
        let m = mount_list().unwrap();
        assert!(!m.is_empty());
        // Pseudo filesystems are never on it.
        assert!(m.iter().all(|m| m.fstype != "proc" && m.fstype != "sysfs"));
    }

    #[test]
    fn frozen_flag_and_file() {
        let d = std::env::temp_dir().join(format!("qga-fs-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let mut fs = LinuxFilesystems::new(opened(&d), None, false);
        assert_eq!(fs.status(), FsfreezeStatus::Thawed);
        fs.set_frozen();
        assert_eq!(fs.status(), FsfreezeStatus::Frozen);
        assert!(d.join("qga.state.isfrozen").exists());
        fs.unset_frozen();
        assert!(!d.join("qga.state.isfrozen").exists());
        assert!(!fs.is_frozen());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn marker_is_private_and_its_failure_logged() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = crate::commands::system::tempdir();
        let mut fs = LinuxFilesystems::new(opened(&d), None, false);
        fs.set_frozen();
        let m = std::fs::metadata(d.join("qga.state.isfrozen")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        fs.unset_frozen();
        // A marker that cannot be created is logged (before logging is turned off).
        let log = d.join("log");
        crate::log::open_file(log.to_str().unwrap()).unwrap();
        crate::log::set_verbose(true); // upstream's level for it: a warning
        // A directory removed after it was opened: the marker cannot be created in it.
        let gone = d.join("missing");
        std::fs::create_dir(&gone).unwrap();
        let dir = opened(&gone);
        std::fs::remove_dir(&gone).unwrap();
        let mut fs = LinuxFilesystems::new(dir, None, false);
        fs.set_frozen();
        fs.unset_frozen();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains(&format!(
                "unable to create {}/missing/qga.state.isfrozen, fsfreeze may not function properly: No such file or directory",
                d.display()
            )),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn thaw_reports_an_unreadable_mount_list() {
        let d = crate::commands::system::tempdir();
        let hook = d.join("hook");
        std::fs::write(
            &hook,
            "#!/bin/sh\necho \"$1\" >> \"$(dirname \"$0\")/ran\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut fs =
            LinuxFilesystems::new(opened(&d), Some(hook.to_str().unwrap().to_string()), true);
        fs.mount_files = ["/nonexistent/qga/mountinfo", "/nonexistent/qga/mounts"];
        assert_eq!(
            fs.thaw().unwrap_err(),
            Error::msg(format_args!(
                "failed to open /nonexistent/qga/mounts: No such file or directory"
            ))
        );
        // Still frozen, and the hook did not run: the host can retry.
        assert_eq!(fs.status(), FsfreezeStatus::Frozen);
        assert!(!d.join("ran").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn hook_errors() {
        let d = std::env::temp_dir().join(format!("qga-hook-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let missing = d.join("nohook").to_str().unwrap().to_string();
        let fs = LinuxFilesystems::new(opened(&d), Some(missing.clone()), false);
        assert_eq!(
            fs.run_hook("freeze").unwrap_err(),
            Error::msg(format_args!(
                "can't access fsfreeze hook '{missing}': No such file or directory"
            ))
        );
        let hook = d.join("hook");
        std::fs::write(&hook, "#!/bin/sh\necho \"$1\" >> \"$(dirname \"$0\")/log\"\n[ \"$1\" = thaw ] && { echo no thaw; exit 2; }\nexit 0\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let fs = LinuxFilesystems::new(opened(&d), Some(hook.to_str().unwrap().to_string()), false);
        fs.run_hook("freeze").unwrap();
        assert_eq!(
            fs.run_hook("thaw").unwrap_err(),
            Error::msg(format_args!(
                "child process has failed to execute fsfreeze hook: no thaw\n"
            ))
        );
        assert_eq!(
            std::fs::read_to_string(d.join("log")).unwrap(),
            "freeze\nthaw\n"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
