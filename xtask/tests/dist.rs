//! `cargo xtask dist`, run as a user runs it, and what it made taken apart: the printed sizes
//! and hashes, the static agent, the Debian package's control fields, file list, modes,
//! owners and times, the unit and the udev rule (against Debian's own where the host has
//! qemu-guest-agent installed), the maintainer scripts, lintian, a second build of the
//! package coming out byte for byte the same; and the fsfreeze hook run beside Debian's on the
//! same hook directory.
//!
//! The package is only ever unpacked into temporary directories here: installing it would
//! replace this host's qemu-guest-agent. Installing it into a systemd guest is the Debian
//! guest suite's job.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use xtask::dist::{self, Artifact};

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The artefacts as `cargo xtask dist` printed them (`PATH  SIZE bytes  sha256 HEX`).
fn printed(stdout: &str) -> Vec<Artifact> {
    stdout
        .lines()
        .filter_map(|l| {
            let (path, rest) = l.split_once("  ")?;
            let (size, hash) = rest.split_once(" bytes  sha256 ")?;
            Some(Artifact {
                path: PathBuf::from(path),
                size: size.parse().ok()?,
                sha256: hash.to_string(),
            })
        })
        .collect()
}

/// The members of a package: path → (mode string, owner/group, link target).
fn members(deb: &Path) -> BTreeMap<String, (String, String, Option<String>, String)> {
    let out = run(Command::new("dpkg-deb").arg("-c").arg(deb).env("TZ", "UTC"));
    text(&out)
        .lines()
        .map(|l| {
            // drwxr-xr-x root/root         0 2026-12-06 01:18 ./etc/
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 6, "dpkg-deb -c line: {l}");
            let path = f[5].trim_start_matches('.').to_string();
            let link = (f.len() == 8 && f[6] == "->").then(|| f[7].to_string());
            (
                path,
                (
                    f[0].to_string(),
                    f[1].to_string(),
                    link,
                    format!("{} {}", f[3], f[4]),
                ),
            )
        })
        .collect()
}

/// The `key=value` lines of a unit file, per section (`Section.Key`).
fn unit_keys(unit: &str) -> BTreeMap<String, String> {
    let mut section = String::new();
    let mut keys = BTreeMap::new();
    for l in unit.lines().map(str::trim) {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
        } else if let Some((k, v)) = l.split_once('=') {
            keys.insert(format!("{section}.{}", k.trim()), v.trim().to_string());
        }
    }
    keys
}

/// A udev rules file as its rules: comments dropped, continuation lines joined, each rule's
/// comma-separated parts trimmed.
fn udev_rules(rules: &str) -> Vec<Vec<String>> {
    let joined = rules.replace("\\\n", " ");
    joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(',').map(|p| p.trim().to_string()).collect())
        .collect()
}

const DEVICE: &str = r"dev-virtio\x2dports-org.qemu.guest_agent.0.device";

#[test]
fn dist_builds_the_static_agent_the_image_and_a_lintian_clean_deb_replacing_qemu_guest_agent() {
    let tmp = tempfile::Builder::new()
        .prefix("qga-dist-test-")
        .tempdir()
        .expect("tempdir");
    let out_dir = tmp.path().join("out");
    let xtask = env!("CARGO_BIN_EXE_xtask");
    let out = run(Command::new(xtask).arg("dist").arg("--out").arg(&out_dir));
    let stdout = text(&out);

    // What it printed is what it made.
    let version = dist::package_version("platform-linux").expect("version");
    let deb = out_dir.join(dist::deb_name(&version));
    let listed = printed(&stdout);
    let paths: Vec<PathBuf> = listed.iter().map(|a| a.path.clone()).collect();
    assert_eq!(
        paths,
        [out_dir.join("qga"), out_dir.join("qga-x86"), deb.clone()],
        "stdout:\n{stdout}"
    );
    for a in &listed {
        assert_eq!(
            *a,
            Artifact::of(&a.path).expect("read"),
            "{}",
            a.path.display()
        );
        assert!(a.size > 0);
    }
    let mut names: Vec<String> = std::fs::read_dir(&out_dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["qga", "qga-x86", &dist::deb_name(&version)]);

    // The agent: static, not a PIE, stripped, and it runs.
    let qga = out_dir.join("qga");
    let facts = dist::elf_facts(&qga).expect("ELF");
    assert_eq!(
        facts,
        dist::ElfFacts {
            machine: 62,
            interp: false,
            dynamic: false,
            symtab: false
        }
    );
    let v = run(Command::new(&qga).arg("-V"));
    assert_eq!(text(&v), format!("QEMU Guest Agent {version}\n"));
    assert_eq!(
        dist::elf_facts(&out_dir.join("qga-x86"))
            .expect("ELF")
            .machine,
        62
    );

    // Control fields.
    let control = text(&run(Command::new("dpkg-deb").arg("-f").arg(&deb)));
    let field = |name: &str| -> String {
        control
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in:\n{control}"))
            .to_string()
    };
    assert_eq!(field("Package"), "qga");
    assert_eq!(field("Version"), version);
    assert_eq!(field("Architecture"), "amd64");
    for f in ["Provides", "Conflicts", "Replaces"] {
        assert_eq!(field(f), "qemu-guest-agent", "{f}");
    }
    assert!(
        !control.contains("\nDepends:"),
        "a static binary depends on nothing:\n{control}"
    );
    let installed: u64 = field("Installed-Size").parse().expect("Installed-Size");
    assert!(
        installed >= listed[0].size / 1024,
        "Installed-Size {installed}"
    );

    // Members: exactly these, with these modes, root-owned, all stamped with one time.
    let m = members(&deb);
    let dir = "drwxr-xr-x";
    let expected: &[(&str, &str, Option<&str>)] = &[
        ("/", dir, None),
        ("/etc/", dir, None),
        ("/etc/qemu/", dir, None),
        ("/etc/qemu/fsfreeze-hook", "-rwxr-xr-x", None),
        ("/etc/qemu/fsfreeze-hook.d/", dir, None),
        ("/lib/", dir, None),
        ("/lib/systemd/", dir, None),
        ("/lib/systemd/system/", dir, None),
        (
            "/lib/systemd/system/qemu-guest-agent.service",
            "-rw-r--r--",
            None,
        ),
        ("/lib/udev/", dir, None),
        ("/lib/udev/rules.d/", dir, None),
        (
            "/lib/udev/rules.d/60-qemu-guest-agent.rules",
            "-rw-r--r--",
            None,
        ),
        ("/usr/", dir, None),
        ("/usr/sbin/", dir, None),
        ("/usr/sbin/qemu-ga", "lrwxrwxrwx", Some("qga")),
        ("/usr/sbin/qga", "-rwxr-xr-x", None),
        ("/usr/share/", dir, None),
        ("/usr/share/doc/", dir, None),
        ("/usr/share/doc/qga/", dir, None),
        ("/usr/share/doc/qga/changelog.gz", "-rw-r--r--", None),
        ("/usr/share/doc/qga/copyright", "-rw-r--r--", None),
        ("/usr/share/lintian/", dir, None),
        ("/usr/share/lintian/overrides/", dir, None),
        ("/usr/share/lintian/overrides/qga", "-rw-r--r--", None),
        ("/usr/share/man/", dir, None),
        ("/usr/share/man/man8/", dir, None),
        (
            "/usr/share/man/man8/qemu-ga.8.gz",
            "lrwxrwxrwx",
            Some("qga.8.gz"),
        ),
        ("/usr/share/man/man8/qga.8.gz", "-rw-r--r--", None),
    ];
    let got: Vec<(&str, &str, Option<&str>)> = m
        .iter()
        .map(|(p, (mode, _, link, _))| (p.as_str(), mode.as_str(), link.as_deref()))
        .collect();
    assert_eq!(got, expected);
    for (p, (_, owner, _, _)) in &m {
        assert_eq!(owner, "root/root", "{p}");
    }
    let epoch = dist::source_date_epoch().expect("epoch");
    let stamp = text(&run(Command::new("date").args([
        "-u",
        "-d",
        &format!("@{epoch}"),
        "+%Y-%m-%d %H:%M",
    ])));
    for (p, (_, _, _, time)) in &m {
        assert_eq!(time, stamp.trim(), "{p}");
    }

    // Unpacked: the binary is the printed qga, the links resolve, the texts are ours.
    let x = tmp.path().join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x));
    assert_eq!(
        std::fs::read(x.join("usr/sbin/qga")).expect("qga"),
        std::fs::read(&qga).expect("qga")
    );
    assert_eq!(
        std::fs::canonicalize(x.join("usr/sbin/qemu-ga")).expect("link"),
        std::fs::canonicalize(x.join("usr/sbin/qga")).expect("qga")
    );
    let unit = std::fs::read_to_string(x.join("lib/systemd/system/qemu-guest-agent.service"))
        .expect("unit");
    let keys = unit_keys(&unit);
    assert_eq!(keys["Unit.BindsTo"], DEVICE);
    assert_eq!(keys["Unit.After"], DEVICE);
    assert_eq!(keys["Service.Restart"], "always");
    let exec = &keys["Service.ExecStart"];
    assert_eq!(exec, "/usr/sbin/qemu-ga");
    assert!(
        dist::elf_facts(&x.join(exec.trim_start_matches('/'))).is_ok(),
        "ExecStart {exec} is not the agent in the package"
    );
    let rule = std::fs::read_to_string(x.join("lib/udev/rules.d/60-qemu-guest-agent.rules"))
        .expect("rule");
    assert_eq!(
        udev_rules(&rule),
        [[
            r#"SUBSYSTEM=="virtio-ports""#,
            r#"ATTR{name}=="org.qemu.guest_agent.0""#,
            r#"TAG+="systemd""#,
            r#"ENV{SYSTEMD_WANTS}="qemu-guest-agent.service""#,
        ]]
    );
    // Against Debian's, where this host has them: the same rule, and the same binding,
    // restart policy and program (Debian's `-` prefix, which ignores the exit status, is
    // left out on purpose: qga exits 0 when stopped).
    let debian_unit = Path::new("/lib/systemd/system/qemu-guest-agent.service");
    let debian_rule = Path::new("/lib/udev/rules.d/60-qemu-guest-agent.rules");
    if let (Ok(du), Ok(dr)) = (
        std::fs::read_to_string(debian_unit),
        std::fs::read_to_string(debian_rule),
    ) {
        assert_eq!(
            udev_rules(&rule),
            udev_rules(&dr),
            "udev rule against Debian's"
        );
        let dk = unit_keys(&du);
        for k in [
            "Unit.BindsTo",
            "Unit.After",
            "Service.Restart",
            "Service.RestartSec",
        ] {
            assert_eq!(keys.get(k), dk.get(k), "{k} against Debian's unit");
        }
        assert_eq!(dk["Service.ExecStart"].trim_start_matches('-'), exec);
    } else {
        eprintln!(
            "note: Debian's qemu-guest-agent unit is not on this host; compared with the expected text only"
        );
    }
    let man = run(Command::new("gzip")
        .arg("-dc")
        .arg(x.join("usr/share/man/man8/qga.8.gz")));
    assert_eq!(text(&man), dist::MAN_PAGE);
    let changelog = run(Command::new("gzip")
        .arg("-dc")
        .arg(x.join("usr/share/doc/qga/changelog.gz")));
    let date = run(Command::new("date")
        .args(["-u", "-R", "-d", &format!("@{epoch}")])
        .env("LC_ALL", "C"));
    let changelog = text(&changelog);
    assert!(
        changelog.starts_with(&format!("qga ({version}) unstable; urgency=medium\n"))
            && changelog.ends_with(&format!("  {}\n", text(&date).trim())),
        "{changelog}"
    );
    assert_eq!(
        std::fs::read_to_string(x.join("etc/qemu/fsfreeze-hook")).expect("hook"),
        dist::FSFREEZE_HOOK
    );
    assert!(x.join("etc/qemu/fsfreeze-hook.d").is_dir());
    assert!(
        !x.join("etc/qemu/qemu-ga.conf").exists(),
        "qemu-ga.conf is not shipped"
    );

    // Control archive: the conffile, the md5sums, scripts that parse.
    let c = tmp.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&c));
    assert_eq!(
        std::fs::read_to_string(c.join("conffiles")).expect("conffiles"),
        "/etc/qemu/fsfreeze-hook\n"
    );
    run(Command::new("md5sum")
        .args(["--check", "--strict", "--quiet"])
        .arg(c.join("md5sums"))
        .current_dir(&x));
    let sums = std::fs::read_to_string(c.join("md5sums")).expect("md5sums");
    assert!(sums.contains("  usr/sbin/qga\n"), "{sums}");
    for script in ["postinst", "prerm", "postrm", "etc-hook"] {
        let p = if script == "etc-hook" {
            x.join("etc/qemu/fsfreeze-hook")
        } else {
            c.join(script)
        };
        let mode = std::fs::metadata(&p).expect("script").permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{}", p.display());
        run(Command::new("sh").arg("-n").arg(&p));
    }
    assert!(!c.join("preinst").exists());

    // lintian, at every level including pedantic and experimental tags: nothing left after
    // the package's own overrides.
    let lint = Command::new("lintian")
        .args(["--pedantic", "-E", "--display-info"])
        .arg(&deb)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run lintian ({e}): run `cargo xtask setup` or `apt-get install lintian`")
        });
    let report = text(&lint);
    let tags: Vec<&str> = report
        .lines()
        .filter(|l| l.len() > 2 && l.as_bytes()[1] == b':' && !l.starts_with("N:"))
        .collect();
    assert!(
        lint.status.success() && tags.is_empty(),
        "lintian ({}):\n{report}{}",
        lint.status,
        String::from_utf8_lossy(&lint.stderr)
    );

    // Reproducible: the package built again from the same binary is the same file.
    let again = tmp.path().join("again");
    std::fs::create_dir(&again).expect("mkdir");
    let deb2 = dist::build_deb(&qga, &version, epoch, &again).expect("build_deb");
    assert_eq!(
        Artifact::of(&deb2).expect("read").sha256,
        listed[2].sha256,
        "a second build of the package differs"
    );
}

/// Runs the hook `hook` (copied into a fresh `qemu/` folder beside a `fsfreeze-hook.d/` of
/// test scripts) with `arg`, in a private mount namespace with a tmpfs on `/var/log` so that
/// its log goes nowhere near the host's; returns (exit status, what the scripts recorded, the
/// log without its dates).
fn run_hook(hook: &str, arg: &str) -> (String, String, String) {
    let tmp = tempfile::Builder::new()
        .prefix("qga-hook-test-")
        .tempdir()
        .expect("tempdir");
    let base = tmp.path();
    let d = base.join("qemu/fsfreeze-hook.d");
    std::fs::create_dir_all(&d).expect("mkdir");
    let record = base.join("record");
    let script = |name: &str, body: &str, mode: u32| {
        let p = d.join(name);
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\necho \"{name} $*\" >> {}\n{body}",
                record.display()
            ),
        )
        .expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    script("10-first", "", 0o755);
    script("20-fails", "echo to-the-log; exit 3\n", 0o755);
    script("30-not-executable", "", 0o644);
    for skipped in [
        "40-backup~",
        "50-x.dpkg-old",
        "60-x.dpkg-dist",
        "70-x.rpmsave",
        "80-x.bak",
    ] {
        script(skipped, "", 0o755);
    }
    script("90-last", "", 0o755);
    let hook_path = base.join("qemu/fsfreeze-hook");
    std::fs::write(&hook_path, hook).expect("write hook");
    std::fs::set_permissions(&hook_path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = Command::new("timeout")
        .args([
            "30",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
        ])
        .arg(
            "mount -t tmpfs qga-hook-test /var/log || exit 99; \"$0\" \"$1\"; echo \"status $?\"; \
             cat /var/log/qga-fsfreeze-hook.log",
        )
        .arg(&hook_path)
        .arg(arg)
        .output()
        .expect("run unshare");
    let stdout = text(&out);
    assert!(
        out.status.success() && stdout.starts_with("status "),
        "the hook could not be run in a private mount namespace ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, log) = stdout.split_once('\n').unwrap_or((&stdout, ""));
    // "<date>: execute …" → "execute …", with the temporary folder's name taken out.
    let log: String = log
        .lines()
        .map(|l| {
            let l = l.replace(&base.display().to_string(), "BASE");
            match l.split_once(": ") {
                Some((_, rest)) if l.contains(": execute ") || l.contains(" finished with ") => {
                    format!("{rest}\n")
                }
                _ => format!("{l}\n"),
            }
        })
        .collect();
    let recorded = std::fs::read_to_string(&record).unwrap_or_default();
    (status.to_string(), recorded, log)
}

#[test]
fn the_fsfreeze_hook_runs_the_hook_directory_as_debians_does() {
    for arg in ["freeze", "thaw"] {
        let (status, recorded, log) = run_hook(dist::FSFREEZE_HOOK, arg);
        assert_eq!(
            status, "status 0",
            "the hook exits 0 even when a script fails"
        );
        assert_eq!(
            recorded,
            format!("10-first {arg}\n20-fails {arg}\n90-last {arg}\n"),
            "executables in name order, backups and non-executables skipped"
        );
        assert_eq!(
            log,
            format!(
                "execute BASE/qemu/fsfreeze-hook.d/10-first {arg}\n\
                 BASE/qemu/fsfreeze-hook.d/10-first finished with status=0\n\
                 execute BASE/qemu/fsfreeze-hook.d/20-fails {arg}\n\
                 to-the-log\n\
                 BASE/qemu/fsfreeze-hook.d/20-fails finished with status=3\n\
                 execute BASE/qemu/fsfreeze-hook.d/90-last {arg}\n\
                 BASE/qemu/fsfreeze-hook.d/90-last finished with status=0\n"
            )
        );
        // Debian's hook, run the same way, does the same.
        let debian = Path::new("/etc/qemu/fsfreeze-hook");
        match std::fs::read_to_string(debian) {
            Ok(theirs) => assert_eq!(
                run_hook(&theirs, arg),
                (status, recorded, log),
                "against Debian's {}",
                debian.display()
            ),
            Err(e) => ::tests::require::missing(
                ::tests::require::Dependency::QemuGa,
                &format!("Debian's hook {} is not readable ({e})", debian.display()),
            ),
        }
    }
}
