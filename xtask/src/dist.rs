//! `cargo xtask dist`: everything a user deploys, built into one folder, with the size and
//! SHA-256 of each file.
//!
//! The Linux agent is built by the one function the suites and the benchmark also use
//! ([`our_static_release_binary`]), and the bare-metal image by the suites' own
//! ([`build_image`]): what is shipped is what was tested, and the builds are shared through
//! the target directory. The Debian package is staged by hand and handed to `dpkg-deb`
//! (README, Dependencies, says why not `cargo-deb`): it has to replace Debian's
//! `qemu-guest-agent` file for file (same unit name and paths under `/lib`, the same udev rule,
//! `/usr/sbin/qemu-ga`, `/etc/qemu/fsfreeze-hook` as a conffile), which is the whole of the
//! packaging work, and the staged tree is small enough to write out directly. Its sources are
//! in `platform-linux/packaging/` and are compiled in, so the package always matches this tool.
//!
//! The package is reproducible: every file has a fixed mode, root ownership
//! (`--root-owner-group`) and the mtime `SOURCE_DATE_EPOCH` (else the last commit's time),
//! compressed files are written without names or dates, and `dpkg-deb` sorts the members.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use ::tests::baremetal::build_image;
use ::tests::host_agent::our_static_release_binary;
use ::tests::paths::{target_dir, workspace_root};

/// The Debian package's name.
pub const PACKAGE: &str = "qga";
/// The package it replaces (`Provides`, `Conflicts`, `Replaces`).
pub const REPLACES: &str = "qemu-guest-agent";
/// The Debian architecture of the shipped binary (`tests::host_agent::SHIP_TARGET`).
pub const ARCH: &str = "amd64";
/// The package's `Maintainer` field.
pub const MAINTAINER: &str = "qga-rs developers <qga-rs@example.invalid>";
/// The conffiles (`DEBIAN/conffiles`).
pub const CONFFILES: &[&str] = &["/etc/qemu/fsfreeze-hook"];

/// The unit, started by udev when the port appears.
pub const SERVICE: &str = include_str!("../../platform-linux/packaging/qemu-guest-agent.service");
/// The udev rule.
pub const UDEV_RULE: &str =
    include_str!("../../platform-linux/packaging/60-qemu-guest-agent.rules");
/// `/etc/qemu/fsfreeze-hook`.
pub const FSFREEZE_HOOK: &str = include_str!("../../platform-linux/packaging/fsfreeze-hook");
/// The manual page (roff).
pub const MAN_PAGE: &str = include_str!("../../platform-linux/packaging/qga.8");
/// `/usr/share/doc/qga/copyright`.
const COPYRIGHT: &str = include_str!("../../platform-linux/packaging/copyright");
/// Lintian's overrides, each with the reason.
const LINTIAN_OVERRIDES: &str = include_str!("../../platform-linux/packaging/lintian-overrides");
/// The maintainer scripts (Debian's qemu-guest-agent has the same, plus a preinst for a 2019
/// migration that does not concern a package replacing it).
const SCRIPTS: &[(&str, &str)] = &[
    (
        "postinst",
        include_str!("../../platform-linux/packaging/postinst"),
    ),
    (
        "prerm",
        include_str!("../../platform-linux/packaging/prerm"),
    ),
    (
        "postrm",
        include_str!("../../platform-linux/packaging/postrm"),
    ),
];

/// One file `cargo xtask dist` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, in lowercase hex.
    pub sha256: String,
}

impl Artifact {
    /// Reads `path` for its size and hash.
    pub fn of(path: &Path) -> Result<Self, String> {
        let data = fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            size: data.len() as u64,
            sha256: sha256_hex(&data),
        })
    }

    /// The line `cargo xtask dist` prints: `PATH  SIZE bytes  sha256 HEX`.
    pub fn line(&self) -> String {
        format!(
            "{}  {} bytes  sha256 {}",
            self.path.display(),
            self.size,
            self.sha256
        )
    }
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The default output folder: `target/dist/` (under `CARGO_TARGET_DIR` if set).
pub fn default_out() -> PathBuf {
    target_dir().join("dist")
}

/// The package file name for `version`.
pub fn deb_name(version: &str) -> String {
    format!("{PACKAGE}_{version}_{ARCH}.deb")
}

/// `cargo xtask dist`: builds `qga`, `qga-x86` and the Debian package into `out` and returns
/// them in that order.
pub fn dist(out: &Path) -> Result<Vec<Artifact>, String> {
    fs::create_dir_all(out).map_err(|e| format!("mkdir {}: {e}", out.display()))?;
    let qga = our_static_release_binary()?;
    check_static(&qga)?;
    let qga_out = out.join("qga");
    copy_file(&qga, &qga_out, 0o755)?;
    let image = build_image(true)?;
    let image_out = out.join("qga-x86");
    copy_file(&image, &image_out, 0o755)?;
    let version = package_version("platform-linux")?;
    let deb = build_deb(&qga_out, &version, source_date_epoch()?, out)?;
    [qga_out, image_out, deb]
        .iter()
        .map(|p| Artifact::of(p))
        .collect()
}

/// The version of workspace package `name`, as cargo resolves it.
pub fn package_version(name: &str) -> Result<String, String> {
    let out = crate::pipeline::cargo()
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo metadata failed: {}", out.status));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("cargo metadata printed no JSON: {e}"))?;
    meta["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .and_then(|p| p["version"].as_str())
        .map(str::to_string)
        .ok_or_else(|| format!("cargo metadata lists no package {name}"))
}

/// The time stamped on every file of the package: `$SOURCE_DATE_EPOCH`, else the last
/// commit's time, else the workspace manifest's mtime (a tree without git).
pub fn source_date_epoch() -> Result<u64, String> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse()
            .map_err(|_| format!("SOURCE_DATE_EPOCH={v} is not a number of seconds"));
    }
    let git = Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(workspace_root())
        .stderr(Stdio::null())
        .output();
    if let Ok(o) = git
        && o.status.success()
        && let Ok(t) = String::from_utf8_lossy(&o.stdout).trim().parse()
    {
        return Ok(t);
    }
    let manifest = workspace_root().join("Cargo.toml");
    fs::metadata(&manifest)
        .and_then(|m| m.modified())
        .map_err(|e| format!("{}: {e}", manifest.display()))
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        })
}

/// What an ELF file says about how it was linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfFacts {
    /// `e_machine` (62 for x86_64).
    pub machine: u16,
    /// It names a program interpreter (`PT_INTERP`): a dynamic executable.
    pub interp: bool,
    /// It has a dynamic section (`PT_DYNAMIC`): shared libraries or a static PIE.
    pub dynamic: bool,
    /// It still has a symbol table (`SHT_SYMTAB`): not stripped.
    pub symtab: bool,
}

/// Reads the program and section headers of the 64-bit little-endian ELF file `path`.
pub fn elf_facts(path: &Path) -> Result<ElfFacts, String> {
    let data = fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let bad = || format!("{} is not a 64-bit little-endian ELF file", path.display());
    if data.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err(bad());
    }
    let u16_at = |o: usize| -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            data.get(o..o + 2)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ))
    };
    let u32_at = |o: usize| -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            data.get(o..o + 4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ))
    };
    let u64_at = |o: usize| -> Result<usize, String> {
        let v = u64::from_le_bytes(
            data.get(o..o + 8)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        );
        usize::try_from(v).map_err(|_| bad())
    };
    let machine = u16_at(0x12)?;
    let (phoff, phentsize, phnum) = (u64_at(0x20)?, usize::from(u16_at(0x36)?), u16_at(0x38)?);
    let (shoff, shentsize, shnum) = (u64_at(0x28)?, usize::from(u16_at(0x3a)?), u16_at(0x3c)?);
    let (mut interp, mut dynamic, mut symtab) = (false, false, false);
    for i in 0..usize::from(phnum) {
        match u32_at(phoff + i * phentsize)? {
            2 => dynamic = true,
            3 => interp = true,
            _ => {}
        }
    }
    for i in 0..usize::from(shnum) {
        if u32_at(shoff + i * shentsize + 4)? == 2 {
            symtab = true;
        }
    }
    Ok(ElfFacts {
        machine,
        interp,
        dynamic,
        symtab,
    })
}

/// Fails unless `path` is a stripped, statically linked, non-PIE x86_64 executable.
pub fn check_static(path: &Path) -> Result<(), String> {
    let f = elf_facts(path)?;
    let problem = if f.machine != 62 {
        Some(format!("is not x86_64 (e_machine {})", f.machine))
    } else if f.interp {
        Some("names a program interpreter (a dynamic executable)".to_string())
    } else if f.dynamic {
        Some("has a dynamic section (shared libraries or a static PIE)".to_string())
    } else if f.symtab {
        Some("is not stripped".to_string())
    } else {
        None
    };
    match problem {
        Some(p) => Err(format!(
            "{} {p}: not the shipped build (tests::host_agent::SHIP_RUSTFLAGS)",
            path.display()
        )),
        None => Ok(()),
    }
}

/// Copies `from` to `to` (replacing it) with `mode`.
fn copy_file(from: &Path, to: &Path, mode: u32) -> Result<(), String> {
    let _ = fs::remove_file(to);
    fs::copy(from, to).map_err(|e| format!("copy {} to {}: {e}", from.display(), to.display()))?;
    set_mode(to, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

/// What one path of the package holds.
enum Content<'a> {
    Dir,
    Bytes(&'a [u8]),
    Link(&'a str),
}

/// `program args…` with `input` on its standard input; its standard output.
fn filter(program: &str, args: &[&str], input: &[u8], cwd: &Path) -> Result<Vec<u8>, String> {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

/// `gzip -9n`: no name and no date in the header, so the output depends on the input alone.
fn gzip(data: &[u8]) -> Result<Vec<u8>, String> {
    filter("gzip", &["-9n"], data, Path::new("/"))
}

/// A Debian changelog entry for this build (the package is native: one changelog).
fn changelog(version: &str, epoch: u64) -> Result<String, String> {
    Ok(format!(
        "{PACKAGE} ({version}) unstable; urgency=medium\n\n  * Built by `cargo xtask dist` from \
         the qga-rs workspace (see its README).\n\n -- {MAINTAINER}  {}\n",
        rfc2822(epoch)?
    ))
}

/// `epoch` as a Debian changelog date (`Sat, 05 Dec 2026 01:44:00 +0000`), by `date -R`.
fn rfc2822(epoch: u64) -> Result<String, String> {
    let out = filter(
        "date",
        &["-u", "-R", "-d", &format!("@{epoch}")],
        &[],
        Path::new("/"),
    )?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// Builds `qga_<version>_amd64.deb` in `out` around the agent binary `qga`, stamping every
/// file with `epoch`; returns its path.
pub fn build_deb(qga: &Path, version: &str, epoch: u64, out: &Path) -> Result<PathBuf, String> {
    check_static(qga)?;
    let binary = fs::read(qga).map_err(|e| format!("read {}: {e}", qga.display()))?;
    let changelog = gzip(changelog(version, epoch)?.as_bytes())?;
    let man = gzip(MAN_PAGE.as_bytes())?;
    let hook_d = "etc/qemu/fsfreeze-hook.d";
    // The data files, with their modes; parents are made 0755.
    let data: Vec<(&str, u32, Content)> = vec![
        (
            "etc/qemu/fsfreeze-hook",
            0o755,
            Content::Bytes(FSFREEZE_HOOK.as_bytes()),
        ),
        (hook_d, 0o755, Content::Dir),
        (
            "lib/systemd/system/qemu-guest-agent.service",
            0o644,
            Content::Bytes(SERVICE.as_bytes()),
        ),
        (
            "lib/udev/rules.d/60-qemu-guest-agent.rules",
            0o644,
            Content::Bytes(UDEV_RULE.as_bytes()),
        ),
        ("usr/sbin/qga", 0o755, Content::Bytes(&binary)),
        ("usr/sbin/qemu-ga", 0o777, Content::Link("qga")),
        (
            "usr/share/doc/qga/changelog.gz",
            0o644,
            Content::Bytes(&changelog),
        ),
        (
            "usr/share/doc/qga/copyright",
            0o644,
            Content::Bytes(COPYRIGHT.as_bytes()),
        ),
        (
            "usr/share/lintian/overrides/qga",
            0o644,
            Content::Bytes(LINTIAN_OVERRIDES.as_bytes()),
        ),
        ("usr/share/man/man8/qga.8.gz", 0o644, Content::Bytes(&man)),
        (
            "usr/share/man/man8/qemu-ga.8.gz",
            0o777,
            Content::Link("qga.8.gz"),
        ),
    ];

    let parent = target_dir();
    fs::create_dir_all(&parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
    let stage = tempfile::Builder::new()
        .prefix("qga-deb-")
        .tempdir_in(&parent)
        .map_err(|e| format!("cannot create a staging dir: {e}"))?;
    let root = stage.path().join("root");
    let mkdir = |dir: &Path| -> Result<(), String> {
        let mut made = Vec::new();
        let mut d = dir;
        while !d.exists() {
            made.push(d.to_path_buf());
            d = d.parent().ok_or("no parent")?;
        }
        for m in made.iter().rev() {
            fs::create_dir(m).map_err(|e| format!("mkdir {}: {e}", m.display()))?;
            set_mode(m, 0o755)?;
        }
        Ok(())
    };
    mkdir(&root)?;

    // Installed-Size as dpkg-gencontrol counts it: KiB per file rounded up, 1 per other entry.
    let mut installed_kib = 0u64;
    let mut md5_files = Vec::new();
    for (path, mode, content) in &data {
        let p = root.join(path);
        match content {
            Content::Dir => {
                mkdir(&p)?;
                set_mode(&p, *mode)?;
                installed_kib += 1;
            }
            Content::Bytes(b) => {
                mkdir(p.parent().ok_or("no parent")?)?;
                fs::write(&p, b).map_err(|e| format!("write {}: {e}", p.display()))?;
                set_mode(&p, *mode)?;
                installed_kib += (b.len() as u64).div_ceil(1024);
                if !CONFFILES.contains(&format!("/{path}").as_str()) {
                    md5_files.push(*path);
                }
            }
            Content::Link(target) => {
                mkdir(p.parent().ok_or("no parent")?)?;
                std::os::unix::fs::symlink(target, &p)
                    .map_err(|e| format!("symlink {}: {e}", p.display()))?;
                installed_kib += 1;
            }
        }
    }

    let control = format!(
        "Package: {PACKAGE}\n\
         Version: {version}\n\
         Architecture: {ARCH}\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {installed_kib}\n\
         Provides: {REPLACES}\n\
         Conflicts: {REPLACES}\n\
         Replaces: {REPLACES}\n\
         Section: admin\n\
         Priority: optional\n\
         Multi-Arch: foreign\n\
         Description: QEMU guest agent in Rust, replacing qemu-guest-agent\n \
         qga answers the host's QEMU guest agent requests from inside a virtual\n \
         machine (libvirt's qemu-agent-command, domtime, domfsfreeze, guestinfo\n \
         and the others), with the options, configuration file, state file and\n \
         replies of qemu-ga. It is one statically linked executable.\n \
         .\n \
         This package replaces Debian's qemu-guest-agent: the same systemd unit\n \
         (qemu-guest-agent.service, started by the same udev rule when the\n \
         virtio port org.qemu.guest_agent.0 appears), /usr/sbin/qemu-ga as a\n \
         link to /usr/sbin/qga, and the same fsfreeze hook and hook directory.\n"
    );
    let debian = root.join("DEBIAN");
    mkdir(&debian)?;
    let md5sums = filter("md5sum", &md5_files, &[], &root)?;
    let mut conffiles = String::new();
    for c in CONFFILES {
        conffiles.push_str(c);
        conffiles.push('\n');
    }
    let mut control_files: Vec<(&str, u32, &[u8])> = vec![
        ("control", 0o644, control.as_bytes()),
        ("conffiles", 0o644, conffiles.as_bytes()),
        ("md5sums", 0o644, &md5sums),
    ];
    for (name, text) in SCRIPTS {
        control_files.push((name, 0o755, text.as_bytes()));
    }
    for (name, mode, bytes) in control_files {
        let p = debian.join(name);
        fs::write(&p, bytes).map_err(|e| format!("write {}: {e}", p.display()))?;
        set_mode(&p, mode)?;
    }

    stamp_tree(&root, epoch)?;
    let deb = out.join(deb_name(version));
    let _ = fs::remove_file(&deb);
    let st = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&root)
        .arg(&deb)
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run dpkg-deb (package dpkg): {e}"))?;
    if !st.success() {
        return Err(format!("dpkg-deb --build failed: {st}"));
    }
    Ok(deb)
}

/// Sets the mtime (and atime) of `dir` and everything under it, links themselves included.
fn stamp_tree(dir: &Path, epoch: u64) -> Result<(), String> {
    use rustix::fs::{AtFlags, CWD, Timestamps, utimensat};
    let t = rustix::fs::Timespec {
        tv_sec: i64::try_from(epoch).map_err(|_| "SOURCE_DATE_EPOCH too large")?,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        if meta.is_dir() {
            for e in fs::read_dir(&p).map_err(|e| format!("{}: {e}", p.display()))? {
                stack.push(e.map_err(|e| format!("{}: {e}", p.display()))?.path());
            }
        }
        utimensat(CWD, &p, &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| format!("set the time of {}: {e}", p.display()))?;
    }
    Ok(())
}
