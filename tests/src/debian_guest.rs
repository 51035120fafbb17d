//! A real Debian bookworm guest with systemd and udev, booted under QEMU: the distribution
//! path a user of the `.deb` takes (the agent started by a udev rule and a systemd unit when
//! the virtio port appears), which the busybox initramfs guests of [`crate::linux_guest`] never
//! exercise.
//!
//! Why this shape:
//! - The root filesystem comes from `mmdebstrap` (variant `minbase` plus [`PACKAGES`]), with
//!   Debian's own `qemu-guest-agent` installed: that image with Debian's agent is the anchor
//!   every check is also run against. The mirror is read from apt's sources on this machine
//!   ([`apt_mirrors`]), so the harness names no host and follows whatever mirror or snapshot
//!   the machine is set up with.
//! - A build takes a minute or more and downloads ~150 MB, so it is cached outside the checkout
//!   (`/var/cache/qga-tests/debian-<key>/`, or under `$QGA_TEST_CACHE`), keyed on the suite,
//!   [`PACKAGES`], [`HARNESS_VERSION`] and the files the harness writes into the image
//!   ([`cache_key`]). A build runs into a temporary name and is renamed into place, under a file
//!   lock, so two test processes never build it twice and never see half an image. The
//!   cache is never modified after the rename: guests boot from a qcow2 overlay over it.
//!   Each use sets the mtime of the entry's lock file; when a new entry is built, entries of
//!   other keys not used for [`STALE_AFTER`] (and not locked) are deleted ([`prune_stale`]):
//!   each is ~1.3 GB, and a changed package list would otherwise leave the old one behind.
//! - mmdebstrap runs in its own mount namespace (`unshare -m`), so the /proc, /sys and /dev
//!   mounts it makes inside the target vanish when it ends, however it ends; a killed build
//!   cannot leave the host's /dev bind-mounted under a directory the next run deletes.
//! - The initramfs lists only the modules the guest needs to mount its root (virtio, ext4):
//!   `MODULES=most` makes a 35 MB image that TCG spends seconds unpacking.
//! - The disk is an ext4 image made by `mke2fs -d` from the tree (no loop mount). The kernel
//!   and initramfs come from the image's `/boot` and are booted with `-kernel/-initrd`, so no
//!   boot loader is installed.
//! - The control channel is a second virtio-serial port, [`SHELL_PORT`], served by a small
//!   shell loop (`qga-test-shell.service`) that runs one base64-encoded script per line and
//!   answers its output and exit status ([`ControlShell`]). It is independent of the agent (its
//!   own process and port), unaffected by terminal echo or line editing, and still answers
//!   while the agent is stopped, killed or being replaced. A serial console with autologin
//!   was the alternative: it echoes input and mixes in kernel messages, which the console
//!   (ttyS0, written to a file) keeps doing separately.
//! - The fsfreeze hook is enabled the way a Debian user does: Debian's unit runs `qemu-ga` with
//!   no options, so `/etc/qemu/qemu-ga.conf` (read by both agents) sets
//!   `fsfreeze-hook=/etc/qemu/fsfreeze-hook`, the hook the package ships, which runs the
//!   executables in `/etc/qemu/fsfreeze-hook.d/`.
//!
//! Use:
//! ```no_run
//! use tests::debian_guest::{self, DebianAgent, DebianGuest};
//! let work = tempfile::tempdir().map_err(|e| e.to_string())?;
//! let image = debian_guest::prepare(&DebianAgent::QemuGa, work.path())?;
//! let mut guest = DebianGuest::boot(&image, std::time::Duration::from_secs(300))?;
//! let out = guest.shell().check("systemctl is-active qemu-guest-agent", std::time::Duration::from_secs(30))?;
//! let mut agent = guest.agent(std::time::Duration::from_secs(60))?;
//! # Ok::<(), String>(())
//! ```

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use qga_client::{Address, Client, b64_encode};

use crate::linux_guest::{Qmp, Watchdog, connect_synced, make_ext4};
use crate::qemu::{
    ProcessGuard, agent_chardev, connect_unix, log_tail, qemu_base_command, read_until_deadline,
    run_logged,
};
use crate::require::tool;

/// The Debian release the guest runs.
pub const SUITE: &str = "bookworm";

/// The packages installed on top of `minbase`: systemd as init with udev, the Debian kernel
/// (and the initramfs tools that build its initrd), Debian's agent (the anchor), `dbus` (as on
/// any real install: `systemd-run`, `shutdown` and logind speak to it), and what the checks
/// use: `passwd` (`useradd`, `chpasswd`), `util-linux` (`fstrim`), `e2fsprogs`, `iproute2`.
/// This list is part of the cache key.
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "linux-image-amd64",
    "initramfs-tools",
    "kmod",
    "qemu-guest-agent",
    "passwd",
    "util-linux",
    "e2fsprogs",
    "iproute2",
];

/// Bumped when the way the image is built changes in a way the key does not see.
pub const HARNESS_VERSION: u32 = 1;

/// Overrides the cache's parent directory (default [`DEFAULT_CACHE_ROOT`]).
pub const CACHE_ENV: &str = "QGA_TEST_CACHE";

/// Where built images are kept between runs (outside the checkout: `cargo clean` must not
/// cost a rebuild, and a fresh clone on the same machine reuses it).
pub const DEFAULT_CACHE_ROOT: &str = "/var/cache/qga-tests";

/// The name of the control shell's virtio-serial port.
pub const SHELL_PORT: &str = "org.qgatests.shell.0";

/// The agent's virtio-serial port name.
pub const AGENT_PORT: &str = "org.qemu.guest_agent.0";

/// The systemd unit both packages run the agent as.
pub const AGENT_UNIT: &str = "qemu-guest-agent.service";

/// The line [`prepare`] appends to `/etc/qemu/fsfreeze-hook` (a conffile of both packages)
/// before it installs our package, so a suite can check that dpkg kept the user's edit.
pub const EDITED_HOOK_MARKER: &str =
    "# edited locally: the qga test harness checks this line survives";

/// The kernel command line for the image's disk as the first virtio disk (`/dev/vda`).
/// `no_timer_check`: see [`crate::linux_guest`] (TCG on a loaded host fails the kernel's timer
/// check).
pub const CMDLINE: &str = "root=/dev/vda rw console=ttyS0 panic=-1 mitigations=off no_timer_check net.ifnames=0 loglevel=4";

/// Size of the guest's root filesystem (a sparse file: only what is written takes room).
const DISK_MIB: u64 = 2048;

/// The files the harness writes into the image (path inside the root, mode, contents). Part of
/// the cache key.
const IMAGE_FILES: &[(&str, u32, &str)] = &[
    ("etc/hostname", 0o644, "qga-debian\n"),
    (
        "etc/hosts",
        0o644,
        "127.0.0.1\tlocalhost\n127.0.1.1\tqga-debian\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    ),
    (
        "etc/fstab",
        0o644,
        "/dev/vda\t/\text4\trw,errors=remount-ro\t0\t1\n",
    ),
    (
        "etc/qemu/qemu-ga.conf",
        0o644,
        "# Written by the qga test harness: enables the fsfreeze hook for both agents, the way a\n\
         # Debian user does (Debian's unit starts qemu-ga without -F).\n\
         [general]\nfsfreeze-hook=/etc/qemu/fsfreeze-hook\n",
    ),
    (
        "usr/local/sbin/qga-test-shell",
        0o755,
        r#"#!/bin/sh
# The control channel of the qga test harness (tests/src/debian_guest.rs): one request a line,
# "<id> <base64 of a sh script>"; answers the script's output, then a newline (the output's last
# line may have none) and "@@qga-test-shell <id> <status>".
exec 3<>/dev/virtio-ports/org.qgatests.shell.0
while read -r id script <&3; do
    [ -n "$id" ] || continue
    printf '%s\n' "$script" | base64 -d >/run/qga-test-shell.sh 2>/dev/null
    sh /run/qga-test-shell.sh </dev/null >&3 2>&1
    printf '\n@@qga-test-shell %s %s\n' "$id" "$?" >&3
done
"#,
    ),
    (
        "etc/systemd/system/qga-test-shell.service",
        0o644,
        r"[Unit]
Description=Control shell of the qga test harness
BindsTo=dev-virtio\x2dports-org.qgatests.shell.0.device
After=dev-virtio\x2dports-org.qgatests.shell.0.device

[Service]
ExecStart=/usr/local/sbin/qga-test-shell
Restart=always
RestartSec=1
",
    ),
    (
        "etc/udev/rules.d/61-qga-test-shell.rules",
        0o644,
        "SUBSYSTEM==\"virtio-ports\", ATTR{name}==\"org.qgatests.shell.0\", \\\n  TAG+=\"systemd\", ENV{SYSTEMD_WANTS}=\"qga-test-shell.service\"\n",
    ),
];

/// Units masked in the image: timers that would wake up during a test and write to the disk
/// (a freeze check must not race them) or spend the guest's few CPU cycles.
const MASKED_UNITS: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "getty@tty1.service",
];

/// Run before the kernel is installed, so its initramfs is built small the first time.
const ESSENTIAL_HOOK: &str = "mkdir -p \"$1/etc/initramfs-tools/conf.d\" \"$1/usr/share/initramfs-tools/modules.d\" && \
printf 'MODULES=list\\n' >\"$1/etc/initramfs-tools/conf.d/qga-tests\" && \
printf 'virtio_pci\\nvirtio_blk\\next4\\ncrc32c_generic\\n' >\"$1/usr/share/initramfs-tools/modules.d/qga-tests\"";

/// Which agent the guest runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebianAgent {
    /// Debian's `qemu-guest-agent`, as the image is built (the anchor).
    QemuGa,
    /// Our package, installed over `qemu-guest-agent` with `dpkg -i` (which removes it:
    /// ours Conflicts/Replaces it).
    Qga {
        /// The `.deb` (see [`dist_deb`]).
        deb: PathBuf,
    },
}

/// What a VM needs to boot the guest.
#[derive(Debug, Clone)]
pub struct DebianGuestImage {
    /// The Debian kernel (in the shared cache: read only).
    pub kernel: PathBuf,
    /// Its initramfs (in the shared cache: read only).
    pub initrd: PathBuf,
    /// The guest's writable root disk, a qcow2 overlay in the caller's directory (its backing
    /// file is read only). Attach it as the first virtio disk (`/dev/vda`).
    pub disk: PathBuf,
    /// The disk's format for QEMU or libvirt: `qcow2`.
    pub disk_format: String,
    /// The kernel command line ([`CMDLINE`]).
    pub cmdline: String,
}

/// The cached base image: the tree, its ext4 image with `qemu-guest-agent`, kernel, initramfs.
#[derive(Debug, Clone)]
pub struct DebianBase {
    /// The cache entry.
    pub dir: PathBuf,
    /// The root filesystem tree (read only: copy it to change it).
    pub root: PathBuf,
    /// The raw ext4 image of `root` (read only: boot from an overlay).
    pub disk: PathBuf,
    /// The kernel.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// How long the build took, if this call built it (`None`: a cache hit).
    pub built_in: Option<Duration>,
}

/// A writable disk for a guest running `agent`, in `workdir` (which the caller keeps as long
/// as the disk is in use). Builds the cached base first if it is missing (see the module
/// docs). For [`DebianAgent::QemuGa`] the disk is an overlay over the cached image. For
/// [`DebianAgent::Qga`] the cached tree is copied into `workdir`, [`EDITED_HOOK_MARKER`] is
/// appended to `/etc/qemu/fsfreeze-hook` (a user's edit of a conffile), the `.deb` is installed
/// with `chroot … dpkg -i --force-confdef --force-confold` (dpkg's default answer: keep the
/// user's file; its output goes to `workdir/dpkg-qga.log`), the tree is made into an ext4 image
/// and the copy deleted.
pub fn prepare(agent: &DebianAgent, workdir: &Path) -> Result<DebianGuestImage, String> {
    let base = base()?;
    fs::create_dir_all(workdir).map_err(|e| format!("cannot create {}: {e}", workdir.display()))?;
    let backing = match agent {
        DebianAgent::QemuGa => base.disk.clone(),
        DebianAgent::Qga { deb } => install_qga(&base, deb, workdir)?,
    };
    let name = match agent {
        DebianAgent::QemuGa => "debian-qemu-ga.qcow2",
        DebianAgent::Qga { .. } => "debian-qga.qcow2",
    };
    let disk = workdir.join(name);
    let _ = fs::remove_file(&disk);
    tool("qemu-img", "qemu-utils")?;
    let mut cmd = Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&backing)
        .arg(&disk);
    run_logged(
        "qemu-img create",
        cmd,
        &workdir.join("qemu-img.log"),
        Duration::from_secs(60),
    )?;
    Ok(DebianGuestImage {
        kernel: base.kernel,
        initrd: base.initrd,
        disk,
        disk_format: "qcow2".into(),
        cmdline: CMDLINE.into(),
    })
}

/// Builds our package with `cargo xtask dist --out <target>/debian-guest/dist` and returns the
/// `qga_<version>_amd64.deb` it made.
pub fn dist_deb() -> Result<PathBuf, String> {
    let out = crate::paths::target_dir().join("debian-guest").join("dist");
    fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(crate::paths::workspace_root())
        .args(["xtask", "dist", "--out"])
        .arg(&out);
    run_logged(
        "cargo xtask dist",
        cmd,
        &out.join("..").join("dist.log"),
        Duration::from_secs(1800),
    )?;
    let mut debs: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(&out)
        .map_err(|e| format!("cannot list {}: {e}", out.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("qga_") && n.ends_with("_amd64.deb"))
        })
        .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    debs.sort();
    debs.pop().map(|(_, p)| p).ok_or_else(|| {
        format!(
            "cargo xtask dist made no qga_*_amd64.deb in {}",
            out.display()
        )
    })
}

/// The cache key: a hash of the suite, [`PACKAGES`], [`HARNESS_VERSION`] and everything the
/// harness writes into the image.
pub fn cache_key() -> String {
    let mut text = format!(
        "{SUITE}\n{HARNESS_VERSION}\n{}\n{ESSENTIAL_HOOK}\n",
        PACKAGES.join(",")
    );
    for (path, mode, contents) in IMAGE_FILES {
        text.push_str(&format!("{path}\n{mode:o}\n{contents}\n"));
    }
    text.push_str(&MASKED_UNITS.join(","));
    format!("{:016x}", fnv1a(text.as_bytes()))
}

/// The cache entry's directory (it may not exist yet).
pub fn cache_dir() -> PathBuf {
    let root = std::env::var_os(CACHE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_ROOT));
    root.join(format!("debian-{SUITE}-{}", cache_key()))
}

/// The cached base image, built now if missing (under a lock; see the module docs).
pub fn base() -> Result<DebianBase, String> {
    let dir = cache_dir();
    let parent = dir.parent().unwrap_or(Path::new("/")).to_path_buf();
    let entry = |built_in| DebianBase {
        root: dir.join("root"),
        disk: dir.join("base.img"),
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        dir: dir.clone(),
        built_in,
    };
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debian")
        .to_string();
    let lock_path = parent.join(format!("{name}.lock"));
    if dir.join("base.img").exists() {
        stamp_use(&lock_path);
        return Ok(entry(None));
    }
    fs::create_dir_all(&parent).map_err(|e| {
        format!(
            "cannot create the image cache {}: {e} (set {CACHE_ENV} to a writable directory)",
            parent.display()
        )
    })?;
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    let deadline = Instant::now() + Duration::from_secs(2400);
    loop {
        match lock.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(format!("cannot lock {}: {e}", lock_path.display())),
        }
    }
    // Another process may have finished the build while this one waited.
    if dir.join("base.img").exists() {
        return Ok(entry(None));
    }
    let started = Instant::now();
    // Holding the lock, any temporary entry of this key is a dead build's leftover.
    for e in fs::read_dir(&parent).map_err(|e| format!("cannot list {}: {e}", parent.display()))? {
        let Ok(e) = e else { continue };
        if e.file_name()
            .to_string_lossy()
            .starts_with(&format!("{name}.tmp-"))
        {
            remove_tree(&e.path())?;
        }
    }
    let tmp = parent.join(format!("{name}.tmp-{}", std::process::id()));
    let result = build_into(&tmp);
    if let Err(e) = result {
        let _ = remove_tree(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &dir)
        .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), dir.display()))?;
    stamp_use(&lock_path);
    drop(lock);
    for gone in prune_stale(&parent, &name, STALE_AFTER) {
        eprintln!(
            "debian-guest: removed the stale image cache entry {}",
            gone.display()
        );
    }
    Ok(entry(Some(started.elapsed())))
}

/// How long an image cache entry of another key is kept without use.
pub const STALE_AFTER: Duration = Duration::from_secs(3 * 24 * 3600);

/// Record a use of the cache entry whose lock file is `lock_path` (its mtime).
fn stamp_use(lock_path: &Path) {
    if let Ok(f) = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path)
    {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Delete the entries in the cache directory `root` other than `keep` (`debian-*`
/// directories, with their lock files) that were last used more than `max_age` ago (the
/// lock file's mtime, or the directory's when it has none) and whose lock is free. Returns
/// what was removed; an entry that cannot be removed is left for a later run.
pub fn prune_stale(root: &Path, keep: &str, max_age: Duration) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(root) else {
        return removed;
    };
    let now = std::time::SystemTime::now();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == keep || !name.starts_with("debian-") || name.contains('.') {
            continue;
        }
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let lock_path = root.join(format!("{name}.lock"));
        let used = fs::metadata(&lock_path)
            .or_else(|_| e.metadata())
            .and_then(|m| m.modified());
        let Ok(used) = used else { continue };
        if now.duration_since(used).unwrap_or_default() < max_age {
            continue;
        }
        // A build or a prune of that entry in progress holds its lock: leave it.
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path);
        let Ok(lock) = lock else { continue };
        if lock.try_lock().is_err() {
            continue;
        }
        if remove_tree(&e.path()).is_ok() {
            let _ = fs::remove_file(&lock_path);
            removed.push(e.path());
        }
    }
    removed
}

fn build_into(tmp: &Path) -> Result<(), String> {
    tool("mmdebstrap", "mmdebstrap")?;
    tool("unshare", "util-linux")?;
    fs::create_dir_all(tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let root = tmp.join("root");
    let mirrors = apt_mirrors()?;
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "mmdebstrap"])
        .args(["--variant=minbase", "--mode=root", "--format=directory"])
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(format!("--essential-hook={ESSENTIAL_HOOK}"))
        .args([
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-include=/usr/share/locale/locale.alias",
        ])
        .arg(SUITE)
        .arg(&root)
        .args(&mirrors)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run_logged(
        "mmdebstrap",
        cmd,
        &tmp.join("mmdebstrap.log"),
        Duration::from_secs(1800),
    )?;

    for (path, mode, contents) in IMAGE_FILES {
        let p = root.join(path);
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        fs::write(&p, contents).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode))
            .map_err(|e| format!("cannot chmod {}: {e}", p.display()))?;
    }
    let units = root.join("etc/systemd/system");
    for unit in MASKED_UNITS {
        let link = units.join(unit);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link)
            .map_err(|e| format!("cannot mask {unit}: {e}"))?;
    }
    let default = units.join("default.target");
    let _ = fs::remove_file(&default);
    std::os::unix::fs::symlink("/lib/systemd/system/multi-user.target", &default)
        .map_err(|e| format!("cannot set the default target: {e}"))?;
    // No root password: a debugging login on the console needs none.
    let mut cmd = Command::new("chroot");
    cmd.arg(&root).args(["passwd", "-d", "root"]);
    run_logged(
        "passwd -d root",
        cmd,
        &tmp.join("customize.log"),
        Duration::from_secs(60),
    )?;

    let boot = root.join("boot");
    let mut kernel = None;
    let mut initrd = None;
    for e in fs::read_dir(&boot).map_err(|e| format!("cannot list {}: {e}", boot.display()))? {
        let Ok(e) = e else { continue };
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("vmlinuz-") {
            kernel = Some(e.path());
        } else if n.starts_with("initrd.img-") {
            initrd = Some(e.path());
        }
    }
    let kernel = kernel.ok_or("the image has no /boot/vmlinuz-*")?;
    let initrd = initrd.ok_or("the image has no /boot/initrd.img-*")?;
    fs::copy(&kernel, tmp.join("vmlinuz")).map_err(|e| format!("cannot copy the kernel: {e}"))?;
    fs::copy(&initrd, tmp.join("initrd.img"))
        .map_err(|e| format!("cannot copy the initramfs: {e}"))?;
    fs::write(
        tmp.join("SOURCES"),
        format!(
            "suite {SUITE}\npackages {}\nharness {HARNESS_VERSION}\nmirrors\n{}\n",
            PACKAGES.join(" "),
            mirrors.join("\n")
        ),
    )
    .map_err(|e| format!("cannot write SOURCES: {e}"))?;
    make_ext4(
        &tmp.join("base.img"),
        DISK_MIB,
        "qgaroot",
        Some(&root),
        &tmp.join("mke2fs.log"),
    )
}

fn install_qga(base: &DebianBase, deb: &Path, workdir: &Path) -> Result<PathBuf, String> {
    let root = workdir.join("root-qga");
    if root.exists() {
        remove_tree(&root)?;
    }
    let mut cmd = Command::new("cp");
    cmd.arg("-a").arg(&base.root).arg(&root);
    run_logged(
        "cp -a",
        cmd,
        &workdir.join("copy.log"),
        Duration::from_secs(300),
    )?;
    let result = (|| -> Result<PathBuf, String> {
        let hook = root.join("etc/qemu/fsfreeze-hook");
        let mut f = File::options()
            .append(true)
            .open(&hook)
            .map_err(|e| format!("cannot open {}: {e}", hook.display()))?;
        writeln!(f, "{EDITED_HOOK_MARKER}").map_err(|e| format!("cannot edit the hook: {e}"))?;
        drop(f);
        let inside = root.join("var/tmp/qga.deb");
        fs::copy(deb, &inside).map_err(|e| format!("cannot copy {}: {e}", deb.display()))?;
        let mut cmd = Command::new("chroot");
        cmd.arg(&root)
            .args([
                "dpkg",
                "-i",
                "--force-confdef",
                "--force-confold",
                "/var/tmp/qga.deb",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive");
        run_logged(
            "dpkg -i (our package, in the image)",
            cmd,
            &workdir.join("dpkg-qga.log"),
            Duration::from_secs(300),
        )?;
        let _ = fs::remove_file(&inside);
        let img = workdir.join("debian-qga.img");
        make_ext4(
            &img,
            DISK_MIB,
            "qgaroot",
            Some(&root),
            &workdir.join("mke2fs.log"),
        )?;
        Ok(img)
    })();
    let removed = remove_tree(&root);
    let img = result?;
    removed?;
    Ok(img)
}

/// Deletes a tree, refusing if anything is mounted inside it (a build's leftover mount of the
/// host's /dev must not be emptied).
fn remove_tree(path: &Path) -> Result<(), String> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = path.to_string_lossy().into_owned();
    if let Some(m) = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .find(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
    {
        return Err(format!(
            "{m} is mounted inside {}: refusing to delete it (unmount it by hand)",
            path.display()
        ));
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The mirror lines for mmdebstrap (`deb [signed-by=…] URI SUITE COMPONENTS`), one for each
/// `deb` source on this machine whose suite is [`SUITE`] or one of its pockets
/// (`bookworm-updates`, `bookworm-security`): from `/etc/apt/sources.list`,
/// `/etc/apt/sources.list.d/*.list` (one-line format) and `*.sources` (deb822).
pub fn apt_mirrors() -> Result<Vec<String>, String> {
    let mut texts = Vec::new();
    if let Ok(t) = fs::read_to_string("/etc/apt/sources.list") {
        texts.push((false, t));
    }
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = dir.filter_map(Result::ok).map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let deb822 = match p.extension().and_then(|e| e.to_str()) {
                Some("sources") => true,
                Some("list") => false,
                _ => continue,
            };
            if let Ok(t) = fs::read_to_string(&p) {
                texts.push((deb822, t));
            }
        }
    }
    let mut lines = Vec::new();
    for (deb822, text) in &texts {
        let entries = if *deb822 {
            parse_deb822(text)
        } else {
            parse_one_line(text)
        };
        for e in entries {
            if !e.types.iter().any(|t| t == "deb") {
                continue;
            }
            for suite in &e.suites {
                let pocket = suite == SUITE || suite.starts_with(&format!("{SUITE}-"));
                if !pocket {
                    continue;
                }
                for uri in &e.uris {
                    let opts = match &e.signed_by {
                        Some(k) => format!("[signed-by={k}] "),
                        None => String::new(),
                    };
                    let line = format!("deb {opts}{uri} {suite} {}", e.components.join(" "));
                    if !lines.contains(&line) {
                        lines.push(line);
                    }
                }
            }
        }
    }
    if lines.is_empty() {
        return Err(format!(
            "apt on this machine has no `deb` source for {SUITE} (looked in /etc/apt/sources.list \
             and /etc/apt/sources.list.d/); the Debian guest is built from that mirror"
        ));
    }
    Ok(lines)
}

#[derive(Debug, Default, PartialEq)]
struct SourceEntry {
    types: Vec<String>,
    uris: Vec<String>,
    suites: Vec<String>,
    components: Vec<String>,
    signed_by: Option<String>,
}

fn parse_deb822(text: &str) -> Vec<SourceEntry> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let mut e = SourceEntry::default();
        let mut enabled = true;
        let mut any = false;
        for line in para.lines() {
            if line.starts_with('#') || line.starts_with(' ') || line.starts_with('\t') {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let words = || v.split_whitespace().map(str::to_string).collect::<Vec<_>>();
            any = true;
            match k.trim().to_ascii_lowercase().as_str() {
                "types" => e.types = words(),
                "uris" => e.uris = words(),
                "suites" => e.suites = words(),
                "components" => e.components = words(),
                "enabled" => enabled = v.trim() != "no",
                // Only a keyring path: an inline key block cannot go into a one-line source.
                "signed-by" if v.trim().starts_with('/') => e.signed_by = Some(v.trim().into()),
                _ => {}
            }
        }
        if any && enabled {
            out.push(e);
        }
    }
    out
}

fn parse_one_line(text: &str) -> Vec<SourceEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        else {
            continue;
        };
        let mut rest = rest.trim();
        let mut signed_by = None;
        if let Some(r) = rest.strip_prefix('[') {
            let Some((opts, after)) = r.split_once(']') else {
                continue;
            };
            for o in opts.split_whitespace() {
                if let Some(k) = o.strip_prefix("signed-by=") {
                    signed_by = Some(k.to_string());
                }
            }
            rest = after.trim();
        }
        let mut words = rest.split_whitespace().map(str::to_string);
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(SourceEntry {
            types: vec!["deb".into()],
            uris: vec![uri],
            suites: vec![suite],
            components: words.collect(),
            signed_by,
        });
    }
    out
}

/// The harness's shell in the guest, over the [`SHELL_PORT`] virtio-serial port (see the
/// module docs).
#[derive(Debug)]
pub struct ControlShell {
    stream: UnixStream,
    pending: Vec<u8>,
    next_id: u64,
}

const SHELL_MARK: &str = "@@qga-test-shell ";

impl ControlShell {
    /// Connects to the host end of the port and waits (at most `within`) until the guest's
    /// shell answers. Until the guest opens its end, what the host sends may be lost, so a probe
    /// is sent again every two seconds.
    pub fn connect(socket: &Path, within: Duration) -> Result<Self, String> {
        let deadline = Instant::now() + within;
        let stream = connect_unix(socket, within)?;
        let mut shell = ControlShell {
            stream,
            pending: Vec::new(),
            next_id: 1,
        };
        loop {
            let id = shell.send("true")?;
            let probe_until = (Instant::now() + Duration::from_secs(2)).min(deadline);
            match shell.wait_marker(id, probe_until) {
                Ok(_) => return Ok(shell),
                Err(_) if Instant::now() < deadline => {}
                Err(e) => return Err(format!("the guest's control shell did not answer: {e}")),
            }
        }
    }

    fn send(&mut self, script: &str) -> Result<u64, String> {
        let id = self.next_id;
        self.next_id += 1;
        let line = format!("\n{id} {}\n", b64_encode(script.as_bytes()));
        self.stream
            .write_all(line.as_bytes())
            .map_err(|e| format!("control shell write: {e}"))?;
        Ok(id)
    }

    /// Reads until the marker of request `id`; returns (status, its output). Output and markers
    /// of other (earlier, abandoned) requests are dropped.
    fn wait_marker(&mut self, id: u64, deadline: Instant) -> Result<(i32, String), String> {
        let mark = format!("\n{SHELL_MARK}");
        loop {
            while let Some(pos) = find(&self.pending, mark.as_bytes()) {
                let rest = pos + mark.len();
                let Some(end) = self.pending[rest..].iter().position(|&b| b == b'\n') else {
                    break;
                };
                let output = String::from_utf8_lossy(&self.pending[..pos]).into_owned();
                let line = String::from_utf8_lossy(&self.pending[rest..rest + end]).into_owned();
                self.pending.drain(..rest + end + 1);
                let mut w = line.split(' ');
                let got = w.next().and_then(|s| s.parse::<u64>().ok());
                let status = w.next().and_then(|s| s.parse::<i32>().ok());
                if got == Some(id) {
                    return Ok((status.unwrap_or(-1), output));
                }
            }
            if !read_until_deadline(&mut self.stream, &mut self.pending, deadline)
                .map_err(|e| format!("control shell: {e}"))?
            {
                return Err(format!(
                    "no answer to request {id} in time; output so far: {:?}",
                    String::from_utf8_lossy(&self.pending)
                ));
            }
        }
    }

    /// Runs `script` with `sh` in the guest (as root, stdin from /dev/null, stderr into the
    /// output), waiting at most `within`; returns its exit status and output.
    pub fn run(&mut self, script: &str, within: Duration) -> Result<(i32, String), String> {
        let id = self.send(script)?;
        self.wait_marker(id, Instant::now() + within)
            .map_err(|e| format!("guest shell `{script}`: {e}"))
    }

    /// [`ControlShell::run`], failing unless the status is 0; returns the output.
    pub fn check(&mut self, script: &str, within: Duration) -> Result<String, String> {
        let (status, out) = self.run(script, within)?;
        if status == 0 {
            Ok(out)
        } else {
            Err(format!(
                "guest shell `{script}` exited with {status}: {out}"
            ))
        }
    }
}

/// A booted Debian guest under QEMU (`q35`, TCG): the root disk as virtio-blk, one
/// virtio-serial controller with the agent's port ([`AGENT_PORT`], device id
/// [`AGENT_PORT_ID`], chardev [`AGENT_CHARDEV_ID`]) and the control shell's port, QMP, and the
/// console in a file. Dropping it kills QEMU by PID (a watchdog does so too if this process
/// dies first) and removes its directory.
#[derive(Debug)]
pub struct DebianGuest {
    _watchdog: Watchdog,
    qemu: ProcessGuard,
    qmp: Qmp,
    shell: ControlShell,
    dir: tempfile::TempDir,
    /// The agent's host socket.
    pub agent_socket: PathBuf,
    /// The control shell's host socket.
    pub shell_socket: PathBuf,
    /// QMP's socket.
    pub qmp_socket: PathBuf,
    /// The guest's ttyS0.
    pub console_log: PathBuf,
    /// From QEMU's start to the control shell answering.
    pub boot_time: Duration,
}

/// The QEMU device id of the agent's port (for `device_del`).
pub const AGENT_PORT_ID: &str = "agentport";
/// The QEMU chardev id of the agent's socket (for `device_add` of a new port).
pub const AGENT_CHARDEV_ID: &str = "qga0";

impl DebianGuest {
    /// Starts QEMU with `image` and waits (at most `boot_timeout`) until the control shell
    /// answers; the agent is not waited for (that is what a suite checks).
    pub fn boot(image: &DebianGuestImage, boot_timeout: Duration) -> Result<Self, String> {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("qga-debian-guest-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let p = |n: &str| dir.path().join(n);
        let (agent_socket, shell_socket, qmp_socket, console_log) = (
            p("qga.sock"),
            p("shell.sock"),
            p("qmp.sock"),
            p("console.log"),
        );
        let mut cmd = qemu_base_command()?;
        cmd.args(["-machine", "q35", "-cpu", "max", "-m", "1024", "-smp", "2"]);
        cmd.arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initrd)
            .args(["-append", &image.cmdline]);
        cmd.args([
            "-drive",
            &format!(
                "file={},format={},if=none,id=root,cache=unsafe,discard=unmap",
                image.disk.display(),
                image.disk_format
            ),
            "-device",
            "virtio-blk-pci,drive=root",
        ]);
        cmd.args([
            "-chardev",
            &format!("file,id=con0,path={}", console_log.display()),
            "-serial",
            "chardev:con0",
        ]);
        cmd.args(["-device", "virtio-serial-pci,id=vser0"]);
        cmd.args(["-chardev", &agent_chardev(AGENT_CHARDEV_ID, &agent_socket)]);
        cmd.args([
            "-device",
            &format!(
                "virtserialport,bus=vser0.0,chardev={AGENT_CHARDEV_ID},name={AGENT_PORT},id={AGENT_PORT_ID}"
            ),
        ]);
        cmd.args(["-chardev", &agent_chardev("shell0", &shell_socket)]);
        cmd.args([
            "-device",
            &format!("virtserialport,bus=vser0.0,chardev=shell0,name={SHELL_PORT}"),
        ]);
        cmd.args([
            "-qmp",
            &format!("unix:{},server=on,wait=off", qmp_socket.display()),
        ]);
        let mut qemu = ProcessGuard::spawn("qemu", cmd, p("qemu.log"))?;
        let watchdog = Watchdog::start(&[qemu.pid()], dir.path())?;
        let fail =
            |qemu: &ProcessGuard, what: &str| failure_text(&console_log, qemu.log_path(), what);
        crate::qemu::wait_for_path(&qmp_socket, &mut qemu, Duration::from_secs(30))?;
        let qmp =
            Qmp::connect(&qmp_socket, Duration::from_secs(10)).map_err(|e| fail(&qemu, &e))?;
        let left = boot_timeout.saturating_sub(started.elapsed());
        let shell = ControlShell::connect(&shell_socket, left)
            .map_err(|e| fail(&qemu, &format!("booting: {e}")))?;
        Ok(DebianGuest {
            _watchdog: watchdog,
            qemu,
            qmp,
            shell,
            dir,
            agent_socket,
            shell_socket,
            qmp_socket,
            console_log,
            boot_time: started.elapsed(),
        })
    }

    /// The control shell.
    pub fn shell(&mut self) -> &mut ControlShell {
        &mut self.shell
    }

    /// Runs `script` in the guest and fails (with the console's tail) unless it exits 0.
    pub fn check(&mut self, script: &str, within: Duration) -> Result<String, String> {
        let r = self.shell().check(script, within);
        r.map_err(|e| self.failure(&e))
    }

    /// A new synced client on the agent's socket, retrying for at most `within`.
    pub fn agent(&self, within: Duration) -> Result<Client, String> {
        connect_synced(
            &Address::Unix(self.agent_socket.clone()),
            Instant::now() + within,
        )
    }

    /// The QMP connection opened at boot.
    pub fn qmp(&mut self) -> &mut Qmp {
        &mut self.qmp
    }

    /// Everything the guest printed on ttyS0 so far.
    pub fn console(&self) -> String {
        fs::read(&self.console_log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The guest's directory (sockets, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// QEMU's PID.
    pub fn pid(&self) -> u32 {
        self.qemu.pid()
    }

    /// Waits at most `within` for QEMU to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        self.qemu.wait_timeout(within)
    }

    /// `what`, followed by the tails of the console and of QEMU's output.
    pub fn failure(&self, what: &str) -> String {
        failure_text(&self.console_log, self.qemu.log_path(), what)
    }
}

fn failure_text(console_log: &Path, qemu_log: &Path, what: &str) -> String {
    format!(
        "{what}\n--- guest console (tail) ---\n{}\n--- qemu output (tail) ---\n{}",
        log_tail(console_log, 6000),
        log_tail(qemu_log, 2000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_sources_give_one_line_per_suite_and_uri() {
        let text = "Types: deb deb-src\nURIs: http://m.example/debian\nSuites: bookworm bookworm-updates\nComponents: main contrib\nSigned-By: /usr/share/keyrings/k.gpg\n\n# c\nTypes: deb\nURIs: http://x/\nSuites: trixie\nComponents: main\nEnabled: no\n";
        let e = parse_deb822(text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(e[0].components, ["main", "contrib"]);
        assert_eq!(e[0].signed_by.as_deref(), Some("/usr/share/keyrings/k.gpg"));
    }

    #[test]
    fn one_line_sources_keep_options_and_skip_deb_src() {
        let text = "# x\ndeb [arch=amd64 signed-by=/k.gpg] http://m/debian bookworm main\ndeb-src http://m/debian bookworm main\ndeb http://s/ bookworm-security main non-free # tail\n";
        let e = parse_one_line(text);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].signed_by.as_deref(), Some("/k.gpg"));
        assert_eq!(e[0].uris, ["http://m/debian"]);
        assert_eq!(e[1].suites, ["bookworm-security"]);
        assert_eq!(e[1].components, ["main", "non-free"]);
    }

    #[test]
    fn the_control_shell_returns_its_requests_output_and_status() {
        use std::io::Read;
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut shell = ControlShell {
            stream: a,
            pending: Vec::new(),
            next_id: 7,
        };
        let guest = std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            let n = b.read(&mut buf).unwrap();
            // An abandoned earlier request's output and marker first; then this one's output,
            // whose last line has no newline, and its marker in two writes.
            b.write_all(b"old output\n\n@@qga-test-shell 6 0\nline 1\nlast")
                .unwrap();
            b.write_all(b"\n@@qga-test-shell 7 3\n").unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let (status, out) = shell.run("echo hi", Duration::from_secs(10)).unwrap();
        let request = guest.join().unwrap();
        assert_eq!(request.trim(), format!("7 {}", b64_encode(b"echo hi")));
        assert_eq!((status, out.as_str()), (3, "line 1\nlast"));
    }

    #[test]
    fn stale_cache_entries_of_other_keys_are_pruned() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let old = std::time::SystemTime::now() - Duration::from_secs(10 * 24 * 3600);
        let entry = |name: &str, lock_age: Option<std::time::SystemTime>| {
            fs::create_dir_all(r.join(name).join("root")).unwrap();
            fs::write(r.join(name).join("base.img"), b"x").unwrap();
            if let Some(t) = lock_age {
                let f = File::create(r.join(format!("{name}.lock"))).unwrap();
                f.set_modified(t).unwrap();
            }
        };
        entry("debian-bookworm-current", Some(old));
        entry("debian-bookworm-stale", Some(old));
        entry("debian-bookworm-recent", Some(std::time::SystemTime::now()));
        entry("debian-bookworm-busy", Some(old));
        // No lock file: the directory's own mtime (just now) counts.
        entry("debian-bookworm-nolock", None);
        fs::create_dir_all(r.join("debian-bookworm-stale.tmp-1")).unwrap();
        fs::create_dir_all(r.join("other")).unwrap();
        let busy = File::options()
            .write(true)
            .open(r.join("debian-bookworm-busy.lock"))
            .unwrap();
        busy.lock().unwrap();
        let gone = prune_stale(r, "debian-bookworm-current", Duration::from_secs(3600));
        assert_eq!(gone, vec![r.join("debian-bookworm-stale")]);
        assert!(!r.join("debian-bookworm-stale.lock").exists());
        for kept in [
            "debian-bookworm-current",
            "debian-bookworm-recent",
            "debian-bookworm-busy",
            "debian-bookworm-nolock",
            "debian-bookworm-stale.tmp-1",
            "other",
        ] {
            assert!(r.join(kept).exists(), "{kept}");
        }
        drop(busy);
        // A use stamps the entry: a recent stamp keeps it.
        stamp_use(&r.join("debian-bookworm-busy.lock"));
        assert!(prune_stale(r, "debian-bookworm-current", Duration::from_secs(3600)).is_empty());
    }

    #[test]
    fn the_cache_key_changes_with_the_package_list() {
        assert_eq!(cache_key().len(), 16);
        assert_ne!(fnv1a(b"systemd,udev"), fnv1a(b"systemd,udev,passwd"));
    }
}
