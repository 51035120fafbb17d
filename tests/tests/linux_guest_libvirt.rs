//! The agent driven by a real libvirt, end to end: a Debian bookworm guest with systemd (the
//! agent installed from a Debian package and started by udev and systemd, as users run it)
//! booted as a transient libvirt domain, and every `virsh` command that goes through the guest
//! agent, each checked against the guest's real state (read through `guest-exec`, the host's
//! view of the disk, or the domain's life), not just virsh's exit code.
//!
//! The same checks run against Debian's `qemu-ga` 7.2 (the reference, `DebianAgent::QemuGa`)
//! and against ours (`qga`, from `cargo xtask dist`'s package). Each agent gets one private
//! libvirt ([`tests::libvirt`]: it sets up the machine it needs and says so) and one domain that
//! serves every check, in an order where each check leaves the guest as it found it; the last two
//! are `reboot --mode agent` (the agent must come back by itself) and `shutdown --mode agent`
//! (the domain must go away). A failing check does not stop the others: the test fails at the
//! end with every failure. Every check prints its time on stderr.
//!
//! Needs: root, qemu-system-x86, libvirt-daemon-driver-qemu, libvirt-daemon, libvirt-clients,
//! and what `tests::debian_guest` needs to build its image. Runs ONLY against a guest: these
//! commands change the system (time, passwords, CPUs, freeze, trim, reboot, shutdown).

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tests::debian_guest::{self, DebianAgent};
use tests::libvirt::{Domain, DomainSpec, GUEST_MAC, Libvirt};

/// The user the password and ssh-key checks create in the guest.
const USER: &str = "lvtester";

/// Checks Debian's qemu-ga is known to fail, each with why; such a check must fail (if it starts
/// passing, the table is wrong and the test says so).
const QEMU_GA_KNOWN_FAILURES: &[(&str, &str)] = &[];

fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "libvirt: {line}");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Qga,
    QemuGa,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Qga => "qga",
            Which::QemuGa => "qemu-ga",
        }
    }
}

#[test]
fn libvirt_drives_qga() {
    run(Which::Qga);
}

#[test]
fn libvirt_drives_qemu_ga() {
    run(Which::QemuGa);
}

/// A check: its name and what it does against the booted domain.
type Check = (&'static str, fn(&Domain<'_>) -> Result<(), String>);

/// In order: read-only checks first, then reversible ones, each leaving the guest as it was.
const CHECKS: &[Check] = &[
    ("qemu-agent-command guest-info, guest-sync", agent_command),
    ("domtime (read, --time, --now, --sync)", domtime),
    ("domhostname --source agent", domhostname),
    ("domifaddr --source agent", domifaddr),
    ("domfsinfo", domfsinfo),
    ("guestinfo (all types)", guestinfo),
    ("guestvcpus (list, --disable, --enable)", guestvcpus),
    ("setvcpus --guest", setvcpus_guest),
    ("set-user-password (plain, --encrypted)", set_user_password),
    (
        "set-user-sshkeys, get-user-sshkeys, --remove, --reset",
        ssh_keys,
    ),
    ("domfsfreeze, domfsthaw", fsfreeze),
    ("domfstrim", fstrim),
    ("reboot --mode agent", reboot_agent),
    ("shutdown --mode agent", shutdown_agent),
];

fn run(which: Which) {
    let suite = Instant::now();
    let agent = match which {
        Which::QemuGa => DebianAgent::QemuGa,
        Which::Qga => match debian_guest::dist_deb() {
            Ok(deb) => DebianAgent::Qga { deb },
            Err(e) => panic!("cannot get qga's Debian package: {e}"),
        },
    };
    // The image goes into the run's directory, which the harness's watchdog removes even if
    // this process is killed.
    let t = Instant::now();
    let lv = Libvirt::start(Duration::from_secs(1200)).unwrap_or_else(|e| panic!("{e}"));
    report(&format!(
        "{}: virtlogd and libvirtd up in {:.1}s (uri {})",
        which.name(),
        t.elapsed().as_secs_f64(),
        lv.uri()
    ));
    let t = Instant::now();
    let image = debian_guest::prepare(&agent, &lv.dir().join("guest"))
        .unwrap_or_else(|e| panic!("cannot prepare the Debian guest: {e}"));
    report(&format!(
        "{}: guest image ready in {:.1}s",
        which.name(),
        t.elapsed().as_secs_f64()
    ));
    let spec = DomainSpec {
        label: which.name().replace('-', ""),
        kernel: image.kernel.clone(),
        initrd: image.initrd.clone(),
        cmdline: image.cmdline.clone(),
        disk: image.disk.clone(),
        memory_mib: 768,
        vcpus: 2,
    };
    let dom = lv.create(&spec).unwrap_or_else(|e| panic!("{e}"));
    let booted = dom
        .wait_agent(Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{}: {e}", which.name()));
    report(&format!(
        "{}: domain {} booted, agent answering through libvirt after {:.1}s",
        which.name(),
        dom.name,
        booted.as_secs_f64()
    ));
    if let Err(e) = prepare_guest(&dom) {
        panic!("{}", dom.failure(&format!("preparing the guest: {e}")));
    }

    let mut failures = Vec::new();
    for (name, check) in CHECKS {
        let t = Instant::now();
        let result = check(&dom);
        let known = QEMU_GA_KNOWN_FAILURES
            .iter()
            .find(|(n, _)| which == Which::QemuGa && n == name);
        let verdict = match (&result, known) {
            (Ok(()), None) => "ok".to_string(),
            (Err(e), Some((_, why))) => format!("fails as known ({why}): {e}"),
            (Ok(()), Some((_, why))) => {
                failures.push(format!(
                    "{name}: listed as a known qemu-ga failure ({why}) but passed"
                ));
                "passed, though listed as a known failure".to_string()
            }
            (Err(e), None) => {
                failures.push(dom.failure(&format!("{name}: {e}")));
                format!("FAILED: {e}")
            }
        };
        report(&format!(
            "{}: {name}: {verdict} ({:.1}s)",
            which.name(),
            t.elapsed().as_secs_f64()
        ));
    }
    drop(dom);
    drop(lv);
    report(&format!(
        "{}: whole run {:.1}s",
        which.name(),
        suite.elapsed().as_secs_f64()
    ));
    assert!(
        failures.is_empty(),
        "{}: {} check(s) failed:\n{}",
        which.name(),
        failures.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn host_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn guest_now(dom: &Domain<'_>) -> Result<i64, String> {
    let out = dom.sh("date +%s")?;
    out.trim()
        .parse()
        .map_err(|e| format!("guest date printed {out:?}: {e}"))
}

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what()) }
}

/// `key : value` lines (guestinfo, guestvcpus) as pairs.
fn fields(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn field<'a>(f: &'a [(String, String)], key: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The user for the password and key checks, with a home directory.
fn prepare_guest(dom: &Domain<'_>) -> Result<(), String> {
    dom.sh(&format!(
        "id {USER} >/dev/null 2>&1 || useradd --create-home --shell /bin/sh {USER}"
    ))
    .map(drop)
}

// ---------------------------------------------------------------------------------------------
// The checks.

fn agent_command(dom: &Domain<'_>) -> Result<(), String> {
    let info = dom.agent(&json!({"execute": "guest-info"}), 30)?;
    let version = info.get("version").and_then(Value::as_str).unwrap_or("");
    ensure(!version.is_empty(), || {
        format!("guest-info: no version in {info}")
    })?;
    let commands: Vec<&str> = info
        .get("supported_commands")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|c| c.get("enabled") == Some(&json!(true)))
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    for needed in [
        "guest-sync",
        "guest-exec",
        "guest-get-time",
        "guest-set-time",
        "guest-fsfreeze-freeze",
        "guest-set-vcpus",
        "guest-set-user-password",
        "guest-ssh-add-authorized-keys",
        "guest-shutdown",
    ] {
        ensure(commands.contains(&needed), || {
            format!("guest-info does not list {needed} as enabled: {commands:?}")
        })?;
    }
    let id = (host_now() % 1_000_000_000) + 17;
    let r = dom.agent(
        &json!({"execute": "guest-sync", "arguments": {"id": id}}),
        30,
    )?;
    ensure(r == json!(id), || format!("guest-sync {id} returned {r}"))
}

fn domtime(dom: &Domain<'_>) -> Result<(), String> {
    let read = |dom: &Domain<'_>| -> Result<i64, String> {
        let out = dom.virsh("domtime", &[])?;
        out.trim()
            .strip_prefix("Time:")
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| format!("domtime printed {out:?}"))
    };
    let close = |a: i64, b: i64, what: &str| {
        ensure((a - b).abs() <= 10, || {
            format!("{what}: {a} and {b} differ by {}s", a - b)
        })
    };
    let t = read(dom)?;
    close(t, guest_now(dom)?, "domtime against the guest's date")?;
    // A day back, through libvirt; the guest's own clock must follow.
    let back = host_now() - 86_400;
    dom.virsh("domtime", &["--time", &back.to_string()])?;
    close(guest_now(dom)?, back, "guest date after domtime --time")?;
    close(read(dom)?, back, "domtime after domtime --time")?;
    dom.virsh("domtime", &["--now"])?;
    close(
        guest_now(dom)?,
        host_now(),
        "guest date after domtime --now",
    )?;
    // --sync reads the RTC (which --now set to the host's time): move only the system clock
    // away, inside the guest, then let --sync bring it back.
    dom.sh(&format!("date -s @{back} >/dev/null"))?;
    close(guest_now(dom)?, back, "guest date after date -s")?;
    dom.virsh("domtime", &["--sync"])?;
    close(
        guest_now(dom)?,
        host_now(),
        "guest date after domtime --sync",
    )
}

fn domhostname(dom: &Domain<'_>) -> Result<(), String> {
    let virsh = dom.virsh("domhostname", &["--source", "agent"])?;
    let guest = dom.sh("cat /proc/sys/kernel/hostname")?;
    ensure(
        !guest.trim().is_empty() && virsh.trim() == guest.trim(),
        || format!("domhostname says {virsh:?}, the guest {guest:?}"),
    )
}

/// The address the domifaddr check gives the guest's NIC (the guest has no DHCP client).
const GUEST_IPV4: &str = "10.0.2.15/24";

fn domifaddr(dom: &Domain<'_>) -> Result<(), String> {
    // An address on the NIC, set in the guest, so there is more to list than loopback.
    dom.sh(&format!(
        "ip link set eth0 up && ip addr replace {GUEST_IPV4} dev eth0"
    ))?;
    let out = dom.virsh("domifaddr", &["--source", "agent"])?;
    // virsh's rows: name, MAC, protocol, address/prefix; an interface's further addresses come
    // on rows whose name and MAC are "-".
    let mut listed: Vec<(String, String, String)> = Vec::new();
    let mut current = (String::new(), String::new());
    for line in out.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 2 || cols[0] == "Name" || cols[0].starts_with("---") {
            continue;
        }
        if cols[0] != "-" {
            current = (cols[0].to_string(), cols[1].to_string());
        }
        if let Some(addr) = cols.get(3) {
            listed.push((current.0.clone(), current.1.clone(), addr.to_string()));
        }
    }
    // The guest's interfaces and their MACs, from sysfs; every one is listed with its MAC.
    let guest =
        dom.sh("for i in /sys/class/net/*; do echo \"${i##*/} $(cat $i/address)\"; done")?;
    for line in guest.lines() {
        let mut w = line.split_whitespace();
        let (Some(name), Some(mac)) = (w.next(), w.next()) else {
            continue;
        };
        let shown = out.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.first() == Some(&name) && cols.get(1) == Some(&mac)
        });
        ensure(shown, || {
            format!("domifaddr does not list {name} {mac} (guest has it):\n{out}")
        })?;
    }
    ensure(guest.contains(GUEST_MAC), || {
        format!("the guest has no NIC with {GUEST_MAC}: {guest}")
    })?;
    // The IPv4 addresses: exactly the guest's (`ip -o -4 addr`: "N: NAME inet ADDR/PREFIX …").
    let mut guest_v4: Vec<(String, String)> = dom
        .sh("ip -o -4 addr show")?
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            Some((cols.get(1)?.to_string(), cols.get(3)?.to_string()))
        })
        .collect();
    let mut listed_v4: Vec<(String, String)> = listed
        .iter()
        .filter(|(_, _, a)| a.contains('.'))
        .map(|(n, _, a)| (n.clone(), a.clone()))
        .collect();
    guest_v4.sort();
    listed_v4.sort();
    ensure(guest_v4 == listed_v4, || {
        format!("domifaddr's IPv4 addresses {listed_v4:?}, the guest's {guest_v4:?}")
    })?;
    ensure(
        listed_v4.contains(&("eth0".to_string(), GUEST_IPV4.to_string())),
        || format!("domifaddr does not list {GUEST_IPV4} on eth0:\n{out}"),
    )
}

fn domfsinfo(dom: &Domain<'_>) -> Result<(), String> {
    let out = dom.virsh("domfsinfo", &[])?;
    let mounts = dom.sh("cat /proc/mounts")?;
    let mut saw_root = false;
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.first() == Some(&"Mountpoint") || line.starts_with('-') {
            continue;
        }
        let [mountpoint, _name, fstype, target @ ..] = cols.as_slice() else {
            return Err(format!("domfsinfo line {line:?}"));
        };
        let mounted = mounts.lines().any(|m| {
            let f: Vec<&str> = m.split_whitespace().collect();
            f.get(1) == Some(mountpoint) && f.get(2) == Some(fstype)
        });
        ensure(mounted, || {
            format!(
                "domfsinfo lists {mountpoint} ({fstype}), not mounted so in the guest:\n{mounts}"
            )
        })?;
        if *mountpoint == "/" {
            saw_root = true;
            ensure(target.iter().any(|t| t.contains("vda")), || {
                format!("domfsinfo maps / to {target:?}, not to the virtio disk vda")
            })?;
        }
    }
    ensure(saw_root, || format!("domfsinfo does not list /:\n{out}"))
}

fn guestinfo(dom: &Domain<'_>) -> Result<(), String> {
    let out = dom.virsh("guestinfo", &[])?;
    let f = fields(&out);
    let get = |k: &str| field(&f, k).ok_or_else(|| format!("guestinfo has no {k}:\n{out}"));
    // os: the guest's os-release.
    let id = dom.sh(". /etc/os-release && echo \"$ID\"")?;
    ensure(get("os.id")? == id.trim(), || {
        format!("os.id {:?}, guest ID {id:?}", get("os.id"))
    })?;
    let release = dom.sh("uname -r")?;
    ensure(get("os.kernel-release")? == release.trim(), || {
        format!("os.kernel-release vs uname -r {release:?}")
    })?;
    // hostname.
    let host = dom.sh("cat /proc/sys/kernel/hostname")?;
    ensure(get("hostname")? == host.trim(), || {
        format!("hostname {:?} vs {host:?}", get("hostname"))
    })?;
    // timezone: present (the guest runs UTC).
    get("timezone.name")?;
    ensure(get("timezone.offset")? == "0", || {
        format!("timezone.offset {:?}", get("timezone.offset"))
    })?;
    // users: as many as the guest's utmp lists (none logged in on a fresh boot).
    let users: usize = get("user.count")?.parse().map_err(|e| format!("{e}"))?;
    let who = dom.sh("who | wc -l")?;
    ensure(users.to_string() == who.trim(), || {
        format!("user.count {users}, who lists {who:?}")
    })?;
    // filesystems: / among them, with the guest's type.
    let n: usize = get("fs.count")?.parse().map_err(|e| format!("{e}"))?;
    let root_type = dom.sh("awk '$2 == \"/\" {print $3}' /proc/mounts | tail -n 1")?;
    let root = (0..n).find(|i| field(&f, &format!("fs.{i}.mountpoint")) == Some("/"));
    let Some(root) = root else {
        return Err(format!("guestinfo lists no / filesystem:\n{out}"));
    };
    ensure(
        field(&f, &format!("fs.{root}.fstype")) == Some(root_type.trim()),
        || format!("fs.{root}.fstype vs {root_type:?}"),
    )?;
    // disks: vda among them.
    let disks: usize = get("disk.count")?.parse().map_err(|e| format!("{e}"))?;
    ensure(
        (0..disks).any(|i| field(&f, &format!("disk.{i}.alias")) == Some("vda")),
        || format!("guestinfo lists no disk with alias vda:\n{out}"),
    )?;
    // interfaces: as many as the guest has, with our MAC.
    let ifs: usize = get("if.count")?.parse().map_err(|e| format!("{e}"))?;
    let guest_ifs = dom.sh("ls /sys/class/net | wc -l")?;
    ensure(ifs.to_string() == guest_ifs.trim(), || {
        format!("if.count {ifs}, the guest has {guest_ifs:?}")
    })?;
    let nic = (0..ifs).find(|i| field(&f, &format!("if.{i}.hwaddr")) == Some(GUEST_MAC));
    let Some(nic) = nic else {
        return Err(format!(
            "guestinfo lists no interface with {GUEST_MAC}:\n{out}"
        ));
    };
    // The address the domifaddr check set (it runs first).
    let (addr, prefix) = GUEST_IPV4.split_once('/').unwrap_or((GUEST_IPV4, ""));
    let addrs: usize = field(&f, &format!("if.{nic}.addr.count"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    ensure(
        (0..addrs).any(|j| {
            field(&f, &format!("if.{nic}.addr.{j}.addr")) == Some(addr)
                && field(&f, &format!("if.{nic}.addr.{j}.prefix")) == Some(prefix)
        }),
        || format!("guestinfo does not list {GUEST_IPV4} on the NIC:\n{out}"),
    )
}

/// A guest file's contents, trimmed.
fn guest_file(dom: &Domain<'_>, path: &str) -> Result<String, String> {
    Ok(dom.sh(&format!("cat {path}"))?.trim().to_string())
}

fn online_cpus(dom: &Domain<'_>) -> Result<String, String> {
    guest_file(dom, "/sys/devices/system/cpu/online")
}

fn guestvcpus(dom: &Domain<'_>) -> Result<(), String> {
    let f = fields(&dom.virsh("guestvcpus", &[])?);
    ensure(field(&f, "vcpus") == Some("0-1"), || format!("{f:?}"))?;
    ensure(field(&f, "online") == Some("0-1"), || format!("{f:?}"))?;
    ensure(field(&f, "offlinable") == Some("1"), || format!("{f:?}"))?;
    dom.virsh("guestvcpus", &["--cpulist", "1", "--disable"])?;
    let online = online_cpus(dom)?;
    let f = fields(&dom.virsh("guestvcpus", &[])?);
    let after = field(&f, "online").map(String::from);
    dom.virsh("guestvcpus", &["--cpulist", "1", "--enable"])?;
    ensure(online == "0", || {
        format!("after --disable the guest has CPUs {online} online")
    })?;
    ensure(after.as_deref() == Some("0"), || {
        format!("after --disable guestvcpus says online {after:?}")
    })?;
    let online = online_cpus(dom)?;
    ensure(online == "0-1", || {
        format!("after --enable the guest has CPUs {online} online")
    })
}

fn setvcpus_guest(dom: &Domain<'_>) -> Result<(), String> {
    dom.virsh("setvcpus", &["1", "--guest"])?;
    let online = online_cpus(dom)?;
    let count = dom.virsh("vcpucount", &["--guest"])?;
    dom.virsh("setvcpus", &["2", "--guest"])?;
    ensure(online == "0", || {
        format!("after setvcpus 1 --guest the guest has CPUs {online} online")
    })?;
    ensure(count.trim() == "1", || {
        format!("vcpucount --guest says {count:?} after setvcpus 1")
    })?;
    let online = online_cpus(dom)?;
    ensure(online == "0-1", || {
        format!("after setvcpus 2 --guest the guest has CPUs {online} online")
    })?;
    let count = dom.virsh("vcpucount", &["--guest"])?;
    ensure(count.trim() == "2", || {
        format!("vcpucount --guest says {count:?} after setvcpus 2")
    })
}

/// The user's hash in the guest's /etc/shadow.
fn shadow_hash(dom: &Domain<'_>) -> Result<String, String> {
    Ok(dom
        .sh(&format!(
            "awk -F: '$1 == \"{USER}\" {{print $2}}' /etc/shadow"
        ))?
        .trim()
        .to_string())
}

/// Whether `password` matches `hash`, by the guest's own crypt(3) (perl-base is essential in
/// Debian).
fn guest_crypt_matches(dom: &Domain<'_>, password: &str, hash: &str) -> Result<bool, String> {
    let r = dom.exec(
        "/usr/bin/perl",
        &[
            "-e",
            "exit(crypt($ARGV[0], $ARGV[1]) eq $ARGV[1] ? 0 : 3)",
            password,
            hash,
        ],
        Duration::from_secs(30),
    )?;
    match r.code {
        Some(0) => Ok(true),
        Some(3) => Ok(false),
        other => Err(format!("perl crypt check ended {other:?}: {}", r.stderr)),
    }
}

fn set_user_password(dom: &Domain<'_>) -> Result<(), String> {
    let plain = "Plain pass 1";
    dom.virsh("set-user-password", &[USER, plain])?;
    let hash = shadow_hash(dom)?;
    ensure(hash.starts_with('$'), || {
        format!("after set-user-password the shadow entry is {hash:?}")
    })?;
    ensure(guest_crypt_matches(dom, plain, &hash)?, || {
        format!("the shadow hash {hash:?} does not match the password set")
    })?;
    ensure(!guest_crypt_matches(dom, "something else", &hash)?, || {
        format!("the shadow hash {hash:?} matches a wrong password: the check proves nothing")
    })?;
    // --encrypted: a SHA-512 crypt of "Encrypted pass 2" with salt "qgalibvirt", made by the
    // guest's crypt(3) so the test carries no precomputed hash; it must land in /etc/shadow
    // verbatim.
    let encrypted = dom
        .exec(
            "/usr/bin/perl",
            &[
                "-e",
                "print crypt($ARGV[0], '$6$qgalibvirt$')",
                "Encrypted pass 2",
            ],
            Duration::from_secs(30),
        )?
        .stdout;
    ensure(encrypted.starts_with("$6$qgalibvirt$"), || {
        format!("the guest's crypt made {encrypted:?}")
    })?;
    dom.virsh("set-user-password", &["--encrypted", USER, &encrypted])?;
    let hash = shadow_hash(dom)?;
    ensure(hash == encrypted, || {
        format!(
            "after set-user-password --encrypted the shadow entry is {hash:?}, not {encrypted:?}"
        )
    })?;
    ensure(guest_crypt_matches(dom, "Encrypted pass 2", &hash)?, || {
        "the encrypted password does not verify".to_string()
    })
}

fn ssh_keys(dom: &Domain<'_>) -> Result<(), String> {
    let k1 =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlibvirtKeyOneXXXXXXXXXXXXXXXXXXXXXXXXXXXX one@host";
    let k2 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQlibvirtKeyTwoYYYYYYYYYYYYYYYYYYYYYYYY two@host";
    let k3 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlibvirtKeyThreeZZZZZZZZZZZZZZZZZZZZZZZZZZ three@host";
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = |name: &str, keys: &[&str]| -> Result<String, String> {
        let p = dir.path().join(name);
        std::fs::write(&p, keys.join("\n") + "\n").map_err(|e| e.to_string())?;
        Ok(p.to_string_lossy().into_owned())
    };
    let authorized = format!("/home/{USER}/.ssh/authorized_keys");
    let guest_keys = |dom: &Domain<'_>| -> Result<Vec<String>, String> {
        Ok(dom
            .sh(&format!("cat {authorized} 2>/dev/null || true"))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(String::from)
            .collect())
    };
    // virsh 9.0 prints the keys get-user-sshkeys returns with no separator between them (and
    // in the agent's order, which for qemu-ga 7.2 is the file's reversed): so the check is that
    // exactly the expected keys make up its output, in any order.
    let listed = |dom: &Domain<'_>, expected: &[&str]| -> Result<(), String> {
        let out = dom.virsh("get-user-sshkeys", &[USER])?;
        let mut rest = out.replace(['\n', '\r'], "");
        for key in expected {
            ensure(rest.contains(key), || {
                format!("get-user-sshkeys does not list {key:?}: {out:?}")
            })?;
            rest = rest.replacen(key, "", 1);
        }
        ensure(rest.trim().is_empty(), || {
            format!("get-user-sshkeys lists more than {expected:?}: {out:?}")
        })
    };
    dom.sh(&format!("rm -f {authorized}"))?;
    let both = file("both", &[k1, k2])?;
    dom.virsh("set-user-sshkeys", &[USER, "--file", &both])?;
    let keys = guest_keys(dom)?;
    ensure(keys == [k1, k2], || {
        format!("authorized_keys after adding two: {keys:?}")
    })?;
    let owner = dom.sh(&format!("stat -c '%U %a' /home/{USER}/.ssh {authorized}"))?;
    ensure(owner.lines().all(|l| l.starts_with(USER)), || {
        format!("~/.ssh and authorized_keys are not the user's: {owner:?}")
    })?;
    listed(dom, &[k1, k2])?;
    let one = file("one", &[k1])?;
    dom.virsh("set-user-sshkeys", &[USER, "--remove", "--file", &one])?;
    let keys = guest_keys(dom)?;
    ensure(keys == [k2], || {
        format!("authorized_keys after --remove: {keys:?}")
    })?;
    listed(dom, &[k2])?;
    let three = file("three", &[k3])?;
    dom.virsh("set-user-sshkeys", &[USER, "--reset", "--file", &three])?;
    let keys = guest_keys(dom)?;
    ensure(keys == [k3], || {
        format!("authorized_keys after --reset: {keys:?}")
    })?;
    listed(dom, &[k3])
}

fn fsfreeze(dom: &Domain<'_>) -> Result<(), String> {
    // A writer that appends the guest's uptime (a clock the domtime check does not move) every
    // 0.2 s: while the filesystem is frozen its write blocks, so the frozen interval shows as a
    // gap in what it wrote.
    let ticks = "/var/tmp/qga-libvirt-ticks";
    dom.sh(&format!(
        "rm -f {ticks}; setsid sh -c 'echo $$ > /run/qga-libvirt-ticker.pid; \
         while :; do cut -d\" \" -f1 /proc/uptime >> {ticks}; sleep 0.2; done' </dev/null >/dev/null 2>&1 &"
    ))?;
    std::thread::sleep(Duration::from_secs(2));
    let result = (|| {
        for (command, printed, state) in [
            ("domfsfreeze", "Froze", "frozen"),
            ("domfsthaw", "Thawed", "thawed"),
        ] {
            let out = dom.virsh(command, &[])?;
            ensure(out.contains(printed), || {
                format!("{command} printed {out:?}")
            })?;
            let status = dom.agent(&json!({"execute": "guest-fsfreeze-status"}), 30)?;
            ensure(status == json!(state), || {
                format!("guest-fsfreeze-status after {command}: {status}")
            })?;
            if state == "frozen" {
                std::thread::sleep(Duration::from_secs(4));
            }
        }
        Ok::<(), String>(())
    })();
    if result.is_err() {
        let _ = dom.virsh("domfsthaw", &[]);
    }
    std::thread::sleep(Duration::from_secs(2));
    let written = dom.sh(&format!(
        "kill $(cat /run/qga-libvirt-ticker.pid); cat {ticks}; rm -f {ticks}"
    ))?;
    result?;
    let times: Vec<f64> = written
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let gap = times.windows(2).map(|w| w[1] - w[0]).fold(0.0f64, f64::max);
    ensure(times.len() >= 4 && gap >= 3.0, || {
        format!(
            "the writer shows no stall while frozen (longest gap {gap:.2}s over {} ticks): {}",
            times.len(),
            written.chars().take(400).collect::<String>()
        )
    })
}

/// The host blocks the domain's disk file occupies.
fn disk_blocks(dom: &Domain<'_>) -> Result<u64, String> {
    let xml = dom.virsh("dumpxml", &[])?;
    let path = xml
        .split("<source file='")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .ok_or_else(|| format!("no disk source in the domain XML:\n{xml}"))?;
    std::fs::metadata(Path::new(path))
        .map(|m| m.blocks() * 512)
        .map_err(|e| format!("{path}: {e}"))
}

fn fstrim(dom: &Domain<'_>) -> Result<(), String> {
    let mib = 1024 * 1024;
    let before = disk_blocks(dom)?;
    dom.sh("dd if=/dev/urandom of=/var/tmp/qga-libvirt-trim bs=1M count=48 2>/dev/null && sync")?;
    let written = disk_blocks(dom)?;
    ensure(written >= before + 40 * mib, || {
        format!(
            "writing 48 MiB grew the host's disk file by {} MiB only",
            (written.saturating_sub(before)) / mib
        )
    })?;
    dom.sh("rm /var/tmp/qga-libvirt-trim && sync")?;
    let out = dom.virsh("domfstrim", &[])?;
    let after = disk_blocks(dom)?;
    ensure(after + 40 * mib <= written, || {
        format!(
            "domfstrim ({out:?}) released {} MiB of the host's disk file, expected the 48 MiB \
             deleted",
            written.saturating_sub(after) / mib
        )
    })
}

fn boot_id(dom: &Domain<'_>) -> Result<String, String> {
    guest_file(dom, "/proc/sys/kernel/random/boot_id")
}

fn reboot_agent(dom: &Domain<'_>) -> Result<(), String> {
    let before = boot_id(dom)?;
    let t = Instant::now();
    dom.virsh("reboot", &["--mode", "agent"])?;
    let deadline = t + Duration::from_secs(300);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if let Ok(now) = boot_id(dom)
            && now != before
        {
            report(&format!(
                "agent back after the reboot in {:.1}s",
                t.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        ensure(dom.is_running()?, || {
            "the domain went away instead of rebooting".to_string()
        })?;
        ensure(Instant::now() < deadline, || {
            "the agent did not come back with a new boot id within 300 s".to_string()
        })?;
    }
}

fn shutdown_agent(dom: &Domain<'_>) -> Result<(), String> {
    dom.virsh("shutdown", &["--mode", "agent"])?;
    let took = dom.wait_gone(Duration::from_secs(300))?;
    report(&format!(
        "domain gone {:.1}s after shutdown",
        took.as_secs_f64()
    ));
    Ok(())
}
