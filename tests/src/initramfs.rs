//! The initramfs the Linux guest tests boot: the static `qga`, busybox, a handful of kernel
//! modules and an init that brings up exactly what the agent's commands look at.
//!
//! Why an initramfs and not a disk image: it is built in a second from files that are already on
//! the machine (Debian's kernel and modules, busybox-static, our binary), needs no root
//! filesystem tooling, and boots under TCG in seconds. Why our own `cpio` writer: the format
//! (`newc`) is a few dozen lines, and writing it directly lets us set owners and modes (the test
//! user's home must belong to uid 1000) and device nodes without running as root or calling
//! `cpio` with a staged tree. The archive is left uncompressed on purpose: decompressing gzip
//! under TCG costs boot time, and the kernel accepts a plain `newc` archive.
//!
//! The guest it makes, as the tests rely on it:
//! - PID 1 is busybox `init` (so `/sbin/poweroff`, `halt` and `reboot` work the busybox way: they
//!   signal init, which runs `/etc/init.d/rcK` and calls `reboot(2)`). `/etc/init.d/rcS` mounts
//!   proc, sysfs, devtmpfs, devpts and a tmpfs on `/run`, loads the modules in dependency order
//!   (from `modules.dep` and the `pre:` soft dependencies of `modules.softdep`), creates the
//!   `/dev/virtio-ports/<name>` links that udev would, mounts the ext4 disk `/dev/vda` at
//!   `/mnt/data` with `-o discard`, configures `lo` and `eth0` (10.0.2.15/24, default route via
//!   10.0.2.2), and starts two agents: one on virtio-serial
//!   (`/dev/virtio-ports/org.qemu.guest_agent.0`, state in `/run/qga0`, log `/run/qga0.log`) and
//!   one on the ISA serial port `/dev/ttyS1` (state `/run/qga1`, log `/run/qga1.log`). Both run
//!   with `-F/etc/qemu/fsfreeze-hook`, which appends `<action> <unix time>` to
//!   `/run/fsfreeze-hook.log` and fails (exit 1) while `/run/fsfreeze-hook.fail` exists.
//! - With `qga.vsock=PORT` on the kernel command line, a third agent listens on vsock port PORT
//!   (any CID; state `/run/qga2`, its PID in `/run/qga2.pid`, log `/run/qga2.log`), with `-v`
//!   unless the command line also says `qga.vsock_quiet`.
//! - With [`InitramfsSpec::reference`] set, `/usr/bin/qemu-ga` is in the image too (with its
//!   shared libraries), and `qga.vsock_ref=PORT` starts it on vsock port PORT (state
//!   `/run/qga3`, PID in `/run/qga3.pid`, log `/run/qga3.log`).
//! - With [`InitramfsSpec::vsock_floor`] set, `/usr/bin/vsock-floor` is in the image, and
//!   `qga.vsock_floor=PORT` starts it on vsock port PORT (PID in `/run/vsock-floor.pid`, log
//!   `/run/vsock-floor.log`): the
//!   transport floor the vsock benchmark measures next to the agents.
//! - It prints `qga-guest: ready` on the console (ttyS0) when the agents have been started, and
//!   `qga-guest: <agent> agent exited with status N` if an agent ever exits.
//! - Users: `root` (uid 0, home `/root`) and `tester` (uid/gid 1000, home `/home/tester`, owned
//!   by 1000:1000), in `/etc/passwd`, `/etc/shadow` and `/etc/group`.
//! - `chpasswd`: Debian's busybox-static has no `chpasswd` applet, so `/usr/sbin/chpasswd` is a
//!   shell script with the same interface (`user:password` lines on stdin, `-e` for crypted
//!   input) that hashes with busybox `mkpasswd -m sha512` and rewrites `/etc/shadow` in place.
//! - `/etc/os-release` names the image (`ID=qga-test-initramfs`), so `guest-get-osinfo` has
//!   something real and known to report.
//! - With [`InitramfsSpec::shutdown_helpers`] false, `/sbin/poweroff`, `/sbin/halt`,
//!   `/sbin/reboot` and `/sbin/shutdown` are absent, so the agent must fall back to `reboot(2)`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The modules the guest needs beyond what Debian's kernel has built in: virtio over PCI and
/// over MMIO (QEMU `microvm`, found through ACPI: Debian's kernel lacks
/// `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`), vsock over virtio, the console (virtio-serial), the
/// block device, the network card and ext4. Their dependencies (`vsock`,
/// `vmw_vsock_virtio_transport_common`, …) are resolved from `modules.dep` and
/// `modules.softdep`.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_mmio",
    "vmw_vsock_virtio_transport",
    "virtio_console",
    "virtio_blk",
    "virtio_net",
    "ext4",
];

/// Packages the image is built from (Debian names), for set-up scripts.
pub const HOST_PACKAGES: &[&str] = &[
    "busybox-static",
    "linux-image-amd64",
    "qemu-system-x86",
    "e2fsprogs",
];

/// The line the guest prints on its console once both agents have been started.
pub const READY_MARKER: &str = "qga-guest: ready";

/// The virtio-serial port name of the agent.
pub const AGENT_PORT_NAME: &str = "org.qemu.guest_agent.0";

/// The vsock port of the agent started when the kernel command line has `qga.vsock=PORT`
/// (the suites pass this one).
pub const VSOCK_PORT: u32 = 1024;

/// The vsock port of the reference agent (`qga.vsock_ref=PORT`, see
/// [`InitramfsSpec::reference`]).
pub const VSOCK_REFERENCE_PORT: u32 = 1025;

/// The vsock port of the floor program (`qga.vsock_floor=PORT`, see
/// [`InitramfsSpec::vsock_floor`]).
pub const VSOCK_FLOOR_PORT: u32 = 1026;

/// The unprivileged user in the image.
pub const TEST_USER: &str = "tester";
/// The test user's uid and gid.
pub const TEST_UID: u32 = 1000;
/// The test user's home.
pub const TEST_HOME: &str = "/home/tester";
/// A shell command that replaces the test user's `~/.ssh` with a fresh 0700 directory, runs
/// `what` in it (the attack: a link, a FIFO…) and gives everything to the user (`chown -h`), as
/// the user could have made it alone.
pub fn plant_in_ssh(what: &str) -> String {
    format!(
        "rm -rf {TEST_HOME}/.ssh && mkdir -m 700 {TEST_HOME}/.ssh && {what} && chown -h -R 1000:1000 {TEST_HOME}/.ssh"
    )
}
/// Gives root a fresh `/root/.ssh` holding only an `authorized_keys` the hostile-user tests must leave
/// untouched (whatever an earlier row or agent left there is removed first).
pub const ROOT_KEYS_SETUP: &str = "rm -rf /root/.ssh && mkdir -m 700 /root/.ssh && echo 'ssh-ed25519 AAAA root@host' > /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys";
/// Where the ext4 test disk is mounted.
pub const DATA_MOUNT: &str = "/mnt/data";
/// The fsfreeze hook's log.
pub const HOOK_LOG: &str = "/run/fsfreeze-hook.log";
/// While this file exists the fsfreeze hook fails.
pub const HOOK_FAIL_FLAG: &str = "/run/fsfreeze-hook.fail";
/// While this file exists the fsfreeze hook leaves a background `sleep` holding its stdout (its
/// pid in [`HOOK_BACKGROUND_PID`]), as a hook that starts a daemon would.
pub const HOOK_BACKGROUND_FLAG: &str = "/run/fsfreeze-hook.background";
/// The pid of the hook's background child.
pub const HOOK_BACKGROUND_PID: &str = "/run/fsfreeze-hook.bgpid";
/// The guest's host name.
pub const GUEST_HOSTNAME: &str = "qga-guest";
/// The guest's IPv4 address on eth0, its prefix, and its gateway.
pub const GUEST_IPV4: (&str, u32, &str) = ("10.0.2.15", 24, "10.0.2.2");

/// A kernel image and the release its modules are installed under.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `/boot/vmlinuz-<release>`.
    pub image: PathBuf,
    /// `uname -r` of that kernel.
    pub release: String,
    /// `/lib/modules/<release>`.
    pub modules: PathBuf,
}

/// Finds the kernel to boot: `$QGA_TEST_KERNEL` (a vmlinuz path whose name ends in the release)
/// if set, else the newest `/boot/vmlinuz-*` that has a `/lib/modules/<release>/modules.dep`.
pub fn find_kernel() -> Result<Kernel, String> {
    if let Ok(image) = std::env::var("QGA_TEST_KERNEL") {
        let image = PathBuf::from(image);
        let release = image
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .ok_or_else(|| {
                format!(
                    "QGA_TEST_KERNEL={} is not named vmlinuz-<release>",
                    image.display()
                )
            })?
            .to_string();
        let modules = PathBuf::from("/lib/modules").join(&release);
        return Ok(Kernel {
            image,
            release,
            modules,
        });
    }
    let mut found: Vec<Kernel> = Vec::new();
    let entries = fs::read_dir("/boot").map_err(|e| format!("cannot list /boot: {e}"))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(release) = name.to_str().and_then(|n| n.strip_prefix("vmlinuz-")) else {
            continue;
        };
        let modules = PathBuf::from("/lib/modules").join(release);
        if modules.join("modules.dep").is_file() {
            found.push(Kernel {
                image: entry.path(),
                release: release.to_string(),
                modules,
            });
        }
    }
    found.sort_by_key(|k| version_key(&k.release));
    found.pop().ok_or_else(|| {
        "no kernel: /boot has no vmlinuz-<release> with /lib/modules/<release>/modules.dep \
         (install it with `apt-get install -y linux-image-amd64`)"
            .to_string()
    })
}

/// Orders releases like `6.1.0-56-amd64` numerically part by part.
fn version_key(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0))
        .collect()
}

/// What goes into an image.
#[derive(Debug, Clone)]
pub struct InitramfsSpec {
    /// The statically linked agent binary.
    pub qga: PathBuf,
    /// A statically linked busybox (Debian's busybox-static installs `/bin/busybox`).
    pub busybox: PathBuf,
    /// The kernel whose modules are packed.
    pub kernel: Kernel,
    /// Whether `/sbin/poweroff`, `/sbin/halt` and `/sbin/reboot` exist.
    pub shutdown_helpers: bool,
    /// Whether `/init` is a plain shell script ([`SHELL_INIT`]) that runs `rcS` and then waits
    /// ignoring SIGUSR1, SIGUSR2 and SIGTERM (what BusyBox's halt, poweroff and reboot send),
    /// instead of BusyBox's init.
    pub shell_init: bool,
    /// Where to write the archive.
    pub output: PathBuf,
    /// A reference agent (Debian's `qemu-ga`) installed as `/usr/bin/qemu-ga` with its shared
    /// libraries, started on vsock when the command line has `qga.vsock_ref=PORT`, so a suite
    /// can ask both agents the same thing in the same guest.
    pub reference: Option<PathBuf>,
    /// The static `vsock-floor` program (tests/vsock-floor, [`build_vsock_floor`]), installed
    /// as `/usr/bin/vsock-floor` and started when the command line has `qga.vsock_floor=PORT`.
    pub vsock_floor: Option<PathBuf>,
}

impl InitramfsSpec {
    /// A spec with busybox at `/bin/busybox`, the kernel from [`find_kernel`] and the shutdown
    /// helpers present.
    pub fn new(qga: impl Into<PathBuf>, output: impl Into<PathBuf>) -> Result<Self, String> {
        Ok(InitramfsSpec {
            qga: qga.into(),
            busybox: PathBuf::from("/bin/busybox"),
            kernel: find_kernel()?,
            shutdown_helpers: true,
            shell_init: false,
            output: output.into(),
            reference: None,
            vsock_floor: None,
        })
    }
}

/// Builds the image described by `spec` and returns its path (`spec.output`).
pub fn build_initramfs(spec: &InitramfsSpec) -> Result<PathBuf, String> {
    let qga = fs::read(&spec.qga)
        .map_err(|e| format!("cannot read the agent {}: {e}", spec.qga.display()))?;
    // A dynamically linked agent (e.g. Debian's qemu-ga, to check the suite against the
    // reference) gets its shared libraries copied in at the paths `ldd` reports.
    let mut qga_libraries = if is_static_elf(&qga) {
        Vec::new()
    } else {
        shared_libraries(&spec.qga)?
    };
    let reference = match &spec.reference {
        Some(p) => {
            let bin = fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            if !is_static_elf(&bin) {
                qga_libraries.extend(shared_libraries(p)?);
            }
            Some(bin)
        }
        None => None,
    };
    qga_libraries.sort();
    qga_libraries.dedup();
    let busybox = fs::read(&spec.busybox).map_err(|e| {
        format!(
            "cannot read busybox {}: {e} (install busybox-static)",
            spec.busybox.display()
        )
    })?;
    if !is_static_elf(&busybox) {
        return Err(format!(
            "{} is not a static busybox (install busybox-static)",
            spec.busybox.display()
        ));
    }
    let applets = busybox_applets(&spec.busybox)?;
    let modules = resolve_modules(&spec.kernel.modules, GUEST_MODULES)?;

    let mut a = Cpio::default();
    for dir in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "etc",
        "etc/init.d",
        "etc/qemu",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "mnt",
        "mnt/data",
        "root",
        "home",
        "lib",
        "lib/modules",
        "var",
    ] {
        let mode = match dir {
            "tmp" => 0o1777,
            "root" => 0o700,
            _ => 0o755,
        };
        a.dir(dir, mode, 0, 0);
    }
    a.dir("home/tester", 0o755, TEST_UID, TEST_UID);
    a.symlink("var/run", "/run");
    a.char_dev("dev/console", 0o600, 5, 1);
    a.char_dev("dev/null", 0o666, 1, 3);

    a.file("bin/busybox", 0o755, &busybox);
    let helpers = ["sbin/poweroff", "sbin/halt", "sbin/reboot", "sbin/shutdown"];
    for applet in &applets {
        if applet == "bin/busybox" || applet == "linuxrc" {
            continue;
        }
        if !spec.shutdown_helpers && helpers.contains(&applet.as_str()) {
            continue;
        }
        a.symlink(applet, "/bin/busybox");
    }
    if spec.shell_init {
        a.file("init", 0o755, SHELL_INIT.as_bytes());
    } else {
        a.symlink("init", "/bin/busybox");
    }
    a.file("usr/bin/qga", 0o755, &qga);
    if let Some(bin) = &reference {
        a.file("usr/bin/qemu-ga", 0o755, bin);
    }
    if let Some(p) = &spec.vsock_floor {
        let bin = fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        if !is_static_elf(&bin) {
            return Err(format!("{} is not statically linked", p.display()));
        }
        a.file("usr/bin/vsock-floor", 0o755, &bin);
    }
    for lib in &qga_libraries {
        let data = fs::read(lib).map_err(|e| format!("cannot read {}: {e}", lib.display()))?;
        let rel = lib.to_string_lossy().trim_start_matches('/').to_string();
        add_parents(&mut a, &rel);
        a.file(&rel, 0o755, &data);
    }

    let mut order = String::new();
    for (rel, abs) in &modules {
        let data = read_module(abs)?;
        let name = rel
            .trim_end_matches(".xz")
            .trim_end_matches(".zst")
            .trim_end_matches(".gz");
        let path = format!("lib/modules/{}/{}", spec.kernel.release, name);
        add_parents(&mut a, &path);
        a.file(&path, 0o644, &data);
        order.push_str(&path);
        order.push('\n');
    }
    a.file("etc/modules.order", 0o644, order.as_bytes());

    a.file("etc/inittab", 0o644, INITTAB.as_bytes());
    a.file("etc/init.d/rcS", 0o755, RC_S.as_bytes());
    a.file("etc/init.d/rcK", 0o755, RC_K.as_bytes());
    a.file("etc/qemu/fsfreeze-hook", 0o755, FSFREEZE_HOOK.as_bytes());
    a.file("usr/sbin/chpasswd", 0o755, CHPASSWD.as_bytes());
    a.file("etc/passwd", 0o644, PASSWD.as_bytes());
    a.file("etc/shadow", 0o640, SHADOW.as_bytes());
    a.file("etc/group", 0o644, GROUP.as_bytes());
    a.file("etc/os-release", 0o644, OS_RELEASE.as_bytes());
    a.file(
        "etc/hostname",
        0o644,
        format!("{GUEST_HOSTNAME}\n").as_bytes(),
    );
    let bytes = a.finish();

    if let Some(parent) = spec.output.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    fs::write(&spec.output, bytes)
        .map_err(|e| format!("cannot write {}: {e}", spec.output.display()))?;
    Ok(spec.output.clone())
}

/// Builds the static agent as shipped ([`crate::host_agent::our_static_release_binary`]) and
/// returns the binary. `$QGA_STATIC_BIN` short-cuts this with an already built binary.
pub fn build_static_qga() -> Result<PathBuf, String> {
    if let Ok(bin) = std::env::var("QGA_STATIC_BIN") {
        return Ok(PathBuf::from(bin));
    }
    crate::host_agent::our_static_release_binary()
}

/// Builds the guest's `vsock-floor` program (tests/vsock-floor) as the shipped agent is built
/// (static musl, profile `ship`), and returns the binary.
pub fn build_vsock_floor() -> Result<PathBuf, String> {
    use crate::host_agent::{SHIP_PROFILE, SHIP_RUSTFLAGS, SHIP_TARGET, cargo_build_bin};
    cargo_build_bin(
        &[
            "--profile",
            SHIP_PROFILE,
            "-p",
            "vsock-floor",
            "--target",
            SHIP_TARGET,
        ],
        "vsock-floor",
        &[("RUSTFLAGS", SHIP_RUSTFLAGS)],
    )
}

/// Adds the directories above `path` (relative) to the archive.
fn add_parents(a: &mut Cpio, path: &str) {
    let mut parent = String::new();
    for part in Path::new(path).parent().into_iter().flat_map(|p| p.iter()) {
        if !parent.is_empty() {
            parent.push('/');
        }
        parent.push_str(&part.to_string_lossy());
        a.dir(&parent, 0o755, 0, 0);
    }
}

/// The shared libraries (and the dynamic loader) a dynamically linked binary loads, from `ldd`.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("cannot run ldd {}: {e}", binary.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} is neither static nor loadable by ldd: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// An ELF with no `PT_INTERP` program header, i.e. not dynamically linked.
fn is_static_elf(bytes: &[u8]) -> bool {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    };
    // 64-bit little-endian ELF only: that is what both binaries are.
    if bytes.get(0..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let off = usize::try_from(phoff)
            .unwrap_or(usize::MAX)
            .saturating_add(i * usize::from(phentsize));
        u32_at(off).is_some_and(|ty| ty != 3)
    })
}

/// `busybox --list-full`: the applets with their install paths (`bin/sh`, `sbin/ip`, …).
fn busybox_applets(busybox: &Path) -> Result<Vec<String>, String> {
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| format!("cannot run {} --list-full: {e}", busybox.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --list-full failed: {}",
            busybox.display(),
            out.status
        ));
    }
    let list = String::from_utf8_lossy(&out.stdout);
    let applets: Vec<String> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    for needed in [
        "bin/sh",
        "sbin/init",
        "sbin/insmod",
        "bin/mount",
        "sbin/ip",
        "usr/bin/mkpasswd",
        "sbin/hwclock",
    ] {
        if !applets.iter().any(|a| a == needed) {
            return Err(format!(
                "busybox {} lacks the applet {needed}",
                busybox.display()
            ));
        }
    }
    Ok(applets)
}

/// Module name as the kernel sees it: the file name without `.ko*`, with `-` as `_`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Resolves `wanted` (module names) to the module files to load, in load order: soft
/// dependencies (`pre:`), then hard dependencies, then the module. Modules built into the
/// kernel (listed in `modules.builtin`) are skipped. Returns (path relative to the modules dir,
/// absolute path).
pub fn resolve_modules(
    modules_dir: &Path,
    wanted: &[&str],
) -> Result<Vec<(String, PathBuf)>, String> {
    let read = |name: &str| {
        fs::read_to_string(modules_dir.join(name))
            .map_err(|e| format!("cannot read {}: {e}", modules_dir.join(name).display()))
    };
    let dep_text = read("modules.dep")?;
    let softdep_text = read("modules.softdep").unwrap_or_default();
    let alias_text = read("modules.alias").unwrap_or_default();
    let builtin_text = read("modules.builtin").unwrap_or_default();

    // name -> (path, deps as names)
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in dep_text.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        let names = rest.split_whitespace().map(module_name).collect();
        deps.insert(module_name(path), (path.to_string(), names));
    }
    let mut soft: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in softdep_text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("softdep") {
            continue;
        }
        let Some(module) = words.next() else { continue };
        let mut in_pre = false;
        for w in words {
            match w {
                "pre:" => in_pre = true,
                "post:" => in_pre = false,
                name if in_pre => soft
                    .entry(module.replace('-', "_"))
                    .or_default()
                    .push(name.to_string()),
                _ => {}
            }
        }
    }
    // Exact (non-glob) aliases only: soft dependencies name things like `crypto-crc32c`.
    let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in alias_text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("alias"), Some(alias), Some(module)) =
            (words.next(), words.next(), words.next())
            && !alias.contains(['*', '?', '['])
        {
            aliases
                .entry(alias.to_string())
                .or_default()
                .push(module.replace('-', "_"));
        }
    }
    let builtin: BTreeSet<String> = builtin_text.lines().map(module_name).collect();

    struct Walk<'a> {
        deps: &'a BTreeMap<String, (String, Vec<String>)>,
        soft: &'a BTreeMap<String, Vec<String>>,
        aliases: &'a BTreeMap<String, Vec<String>>,
        builtin: &'a BTreeSet<String>,
        seen: BTreeSet<String>,
        order: Vec<String>,
    }
    impl Walk<'_> {
        /// `required` is false for soft dependencies: a missing one is not an error.
        fn visit(&mut self, given: &str, required: bool) -> Result<(), String> {
            let name = given.replace('-', "_");
            if self.builtin.contains(&name) || !self.seen.insert(name.clone()) {
                return Ok(());
            }
            let Some((path, hard)) = self.deps.get(&name) else {
                if let Some(targets) = self.aliases.get(given) {
                    for t in targets.clone() {
                        self.visit(&t, false)?;
                    }
                    return Ok(());
                }
                return if required {
                    Err(format!(
                        "module {name} is neither in modules.dep nor built in"
                    ))
                } else {
                    Ok(())
                };
            };
            let (path, hard) = (path.clone(), hard.clone());
            for s in self.soft.get(&name).cloned().unwrap_or_default() {
                self.visit(&s, false)?;
            }
            for d in hard.iter().rev() {
                self.visit(d, true)?;
            }
            self.order.push(path);
            Ok(())
        }
    }
    let mut walk = Walk {
        deps: &deps,
        soft: &soft,
        aliases: &aliases,
        builtin: &builtin,
        seen: BTreeSet::new(),
        order: Vec::new(),
    };
    for w in wanted {
        walk.visit(w, true)?;
    }
    Ok(walk
        .order
        .into_iter()
        .map(|rel| {
            let abs = modules_dir.join(&rel);
            (rel, abs)
        })
        .collect())
}

/// Reads a module file, decompressing `.ko.xz` / `.ko.zst` / `.ko.gz` with the system tools
/// (insmod in busybox does not decompress).
fn read_module(path: &Path) -> Result<Vec<u8>, String> {
    let name = path.to_string_lossy();
    let tool: Option<(&str, &[&str])> = if name.ends_with(".xz") {
        Some(("xz", &["-dc"]))
    } else if name.ends_with(".zst") {
        Some(("zstd", &["-dcq"]))
    } else if name.ends_with(".gz") {
        Some(("gzip", &["-dc"]))
    } else {
        None
    };
    match tool {
        None => fs::read(path).map_err(|e| format!("cannot read {name}: {e}")),
        Some((tool, args)) => {
            let out = Command::new(tool)
                .args(args)
                .arg(path)
                .output()
                .map_err(|e| format!("cannot run {tool} for {name}: {e}"))?;
            if out.status.success() {
                Ok(out.stdout)
            } else {
                Err(format!(
                    "{tool} failed on {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        }
    }
}

/// A `newc` cpio archive under construction. Entries are written in the order added; a
/// directory added twice is written once.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl Cpio {
    const S_IFDIR: u32 = 0o040000;
    const S_IFREG: u32 = 0o100000;
    const S_IFLNK: u32 = 0o120000;
    const S_IFCHR: u32 = 0o020000;

    #[allow(clippy::too_many_arguments)]
    fn entry(&mut self, name: &str, mode: u32, uid: u32, gid: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o170000 == Self::S_IFDIR {
            2
        } else {
            1
        };
        let header = format!(
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            self.ino,
            mode,
            uid,
            gid,
            nlink,
            0u32,
            data.len(),
            0u32,
            0u32,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0u32
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str, perm: u32, uid: u32, gid: u32) {
        if self.dirs.insert(name.to_string()) {
            self.entry(name, Self::S_IFDIR | perm, uid, gid, (0, 0), &[]);
        }
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, Self::S_IFREG | perm, 0, 0, (0, 0), data);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, Self::S_IFLNK | 0o777, 0, 0, (0, 0), target.as_bytes());
    }

    fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, Self::S_IFCHR | perm, 0, 0, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 0, 0, (0, 0), &[]);
        // The kernel reads the archive in 512-byte blocks; pad like cpio does.
        while !self.out.len().is_multiple_of(512) {
            self.out.push(0);
        }
        self.out
    }
}

const INITTAB: &str = "\
::sysinit:/etc/init.d/rcS
::shutdown:/etc/init.d/rcK
";

const RC_S: &str = r#"#!/bin/sh
# Brings up what the agent's commands look at; see tests/src/initramfs.rs.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
say() { echo "qga-guest: $*"; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/qga0 /run/qga1
while read -r m; do
    insmod "/$m" || say "insmod $m failed"
done < /etc/modules.order
say "modules loaded"
# Wait for the devices the modules create (they probe asynchronously).
i=0
while [ $i -lt 100 ]; do
    [ -b /dev/vda ] && ls /sys/class/virtio-ports/*/name >/dev/null 2>&1 && break
    sleep 0.1
    i=$((i + 1))
done
# What udev would do: /dev/virtio-ports/<name> -> ../vportNpM.
mkdir -p /dev/virtio-ports
for p in /sys/class/virtio-ports/*; do
    [ -e "$p/name" ] || continue
    n=$(cat "$p/name")
    [ -n "$n" ] && ln -sf "../${p##*/}" "/dev/virtio-ports/$n" && say "port $n -> ${p##*/}"
done
if mount -t ext4 -o discard /dev/vda /mnt/data; then say "data disk mounted"; else say "data disk NOT mounted"; fi
hostname -F /etc/hostname
ip link set lo up
if ip link set eth0 up 2>/dev/null; then
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2
fi
cd /
(/usr/bin/qga -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 -t /run/qga0 \
    -F/etc/qemu/fsfreeze-hook -l /run/qga0.log -v; say "virtio agent exited with status $?") &
(/usr/bin/qga -m isa-serial -p /dev/ttyS1 -t /run/qga1 \
    -F/etc/qemu/fsfreeze-hook -l /run/qga1.log -v; say "isa agent exited with status $?") &
# A third agent on vsock when the command line asks for one (qga.vsock=PORT); it listens on any
# CID, so it needs no wait for the virtio-vsock device to be probed.
vport=
for w in $(cat /proc/cmdline); do
    case "$w" in qga.vsock=*) vport=${w#qga.vsock=} ;; esac
done
# qga.vsock_quiet leaves out -v (debug logging): qemu-ga then logs the data of every request
# it reads, which a benchmark must not count against it.
vverbose=-v
for w in $(cat /proc/cmdline); do
    [ "$w" = qga.vsock_quiet ] && vverbose=
done
if [ -n "$vport" ]; then
    mkdir -p /run/qga2
    # The agent writes a pid file only when it daemonizes: the shell writes it, then execs.
    (sh -c 'echo $$ > /run/qga2.pid; exec "$@"' qga /usr/bin/qga -m vsock-listen \
        -p "4294967295:$vport" -t /run/qga2 -F/etc/qemu/fsfreeze-hook -l /run/qga2.log $vverbose
        say "vsock agent exited with status $?") &
    say "vsock agent on port $vport"
fi
# The reference agent on vsock, if the image has one and the command line asks for it.
rport=
for w in $(cat /proc/cmdline); do
    case "$w" in qga.vsock_ref=*) rport=${w#qga.vsock_ref=} ;; esac
done
if [ -n "$rport" ] && [ -x /usr/bin/qemu-ga ]; then
    mkdir -p /run/qga3
    (sh -c 'echo $$ > /run/qga3.pid; exec "$@"' qemu-ga /usr/bin/qemu-ga -m vsock-listen \
        -p "4294967295:$rport" -t /run/qga3 -F/etc/qemu/fsfreeze-hook -l /run/qga3.log -v
        say "qemu-ga on vsock exited with status $?") &
    say "reference vsock agent on port $rport"
fi
# The transport floor for the vsock benchmark, if the image has it and the command line asks.
fport=
for w in $(cat /proc/cmdline); do
    case "$w" in qga.vsock_floor=*) fport=${w#qga.vsock_floor=} ;; esac
done
if [ -n "$fport" ] && [ -x /usr/bin/vsock-floor ]; then
    (sh -c 'echo $$ > /run/vsock-floor.pid; exec /usr/bin/vsock-floor "$1" 2>/run/vsock-floor.log' \
        vsock-floor "$fport"
        say "vsock-floor exited with status $?") &
    say "vsock-floor on port $fport"
fi
say "ready"
"#;

/// `/init` for [`InitramfsSpec::shell_init`]: the agents are started first (so they do not
/// inherit the ignored signals), then PID 1 ignores what BusyBox's helpers send it.
pub const SHELL_INIT: &str = r#"#!/bin/sh
/etc/init.d/rcS
trap '' USR1 USR2 TERM
echo "qga-guest: shell init waiting, ignoring USR1 USR2 TERM"
while :; do sleep 1; done
"#;

const RC_K: &str = r#"#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
echo "qga-guest: shutdown actions"
sync
umount /mnt/data 2>/dev/null
"#;

const FSFREEZE_HOOK: &str = r#"#!/bin/sh
# Records each call; fails on demand so the tests can see the agent's hook error path.
echo "$1 $(date +%s)" >> /run/fsfreeze-hook.log
if [ -e /run/fsfreeze-hook.background ]; then
    sleep 300 &
    echo $! > /run/fsfreeze-hook.bgpid
fi
if [ -e /run/fsfreeze-hook.fail ]; then
    echo "hook refused $1" >&2
    exit 1
fi
exit 0
"#;

const CHPASSWD: &str = r#"#!/bin/sh
# chpasswd [-e]: "user:password" lines on stdin; -e means the password is already crypted.
# Debian's busybox-static has no chpasswd applet; this keeps the interface the agent calls.
crypted=0
[ "$1" = "-e" ] && crypted=1
while IFS= read -r line || [ -n "$line" ]; do
    user=${line%%:*}
    pass=${line#*:}
    if ! grep -q "^$user:" /etc/shadow; then
        echo "chpasswd: user '$user' does not exist" >&2
        exit 1
    fi
    if [ $crypted = 1 ]; then
        hash=$pass
    else
        hash=$(printf '%s' "$pass" | mkpasswd -m sha512 -P 0) || exit 1
    fi
    awk -F: -v OFS=: -v u="$user" -v h="$hash" '$1 == u { $2 = h } { print }' /etc/shadow > /etc/shadow.new || exit 1
    cat /etc/shadow.new > /etc/shadow && rm -f /etc/shadow.new || exit 1
done
"#;

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
tester:x:1000:1000:Test User:/home/tester:/bin/sh
";

const SHADOW: &str = "\
root:*:20000:0:99999:7:::
tester:!:20000:0:99999:7:::
";

const GROUP: &str = "\
root:x:0:
tester:x:1000:
";

const OS_RELEASE: &str = r#"ID=qga-test-initramfs
NAME="QGA test initramfs"
PRETTY_NAME="QGA test initramfs (busybox)"
VERSION="1 (test)"
VERSION_ID=1
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_header_layout() {
        let mut a = Cpio::default();
        a.file("a", 0o644, b"xyz");
        let out = a.finish();
        assert_eq!(&out[0..6], b"070701");
        // 110-byte header, "a\0" padded to 112, data padded to 116.
        assert_eq!(&out[110..112], b"a\0");
        assert_eq!(&out[112..115], b"xyz");
        assert_eq!(&out[116..122], b"070701");
        assert_eq!(out.len() % 512, 0);
    }

    #[test]
    fn module_names() {
        assert_eq!(
            module_name("kernel/arch/x86/crypto/crc32c-intel.ko"),
            "crc32c_intel"
        );
        assert_eq!(module_name("kernel/fs/ext4/ext4.ko.xz"), "ext4");
    }

    #[test]
    fn this_kernel_resolves() {
        // The Linux guest suite needs Debian's kernel installed (`cargo xtask setup` does it).
        let k = find_kernel().expect("a kernel with modules");
        let order = resolve_modules(&k.modules, GUEST_MODULES).expect("resolve");
        let names: Vec<String> = order.iter().map(|(r, _)| module_name(r)).collect();
        let pos = |n: &str| names.iter().position(|x| x == n);
        // ext4's soft dependency, reached through the `crypto-crc32c` alias.
        assert!(pos("crc32c_generic").is_some(), "{names:?}");
        if let (Some(jbd2), Some(ext4)) = (pos("jbd2"), pos("ext4")) {
            assert!(jbd2 < ext4, "{names:?}");
        }
        if let (Some(virtio), Some(console)) = (pos("virtio"), pos("virtio_console")) {
            assert!(virtio < console, "{names:?}");
        }
    }
}
