//! The distribution path: a Debian bookworm guest with systemd and udev (see
//! `tests::debian_guest`), once with Debian's `qemu-guest-agent` (the anchor) and once with our
//! `.deb` installed over it. The same checks run against both, each on one booted guest:
//!
//! 1. systemd starts the agent by itself when the port appears: at boot, and again when the
//!    port is hot-unplugged (the unit stops: `BindsTo`) and hot-plugged back through QMP;
//! 2. after `kill -9` systemd restarts it (`Restart=always`);
//! 3. `systemctl stop` stops it cleanly: the main process exits with status 0 and the unit is
//!    `inactive`, not `failed`;
//! 4. the hook in `/etc/qemu/fsfreeze-hook.d/` runs on freeze and on thaw (the freeze is of the
//!    guest's own root filesystem, inside the guest);
//! 5. (ours) a user's edit of the `/etc/qemu/fsfreeze-hook` conffile survives installing our
//!    package over `qemu-guest-agent`, and `qemu-ga.conf` is kept;
//! 6. the agent upgrades itself: the running agent receives our `.deb` by `guest-file-write`
//!    and runs `dpkg -i` through `guest-exec` + `systemd-run` (outside its own cgroup, which
//!    dpkg's stop of the old agent would kill), then our agent answers. From `qemu-ga` this is
//!    the upgrade a user makes; from ours, a reinstall over itself.
//!
//! Each step prints a `RESULT` line (agent, check, outcome) and the times measured (image
//! preparation, boot, the whole test), for the README's table.

use std::time::{Duration, Instant};

use qga_client::Client;
use serde_json::json;
use tests::debian_guest::{
    self, AGENT_CHARDEV_ID, AGENT_PORT, AGENT_PORT_ID, AGENT_UNIT, DebianAgent, DebianGuest,
    EDITED_HOOK_MARKER,
};

const SHORT: Duration = Duration::from_secs(60);
const BOOT: Duration = Duration::from_secs(600);

fn result(agent: &str, check: &str, outcome: &str) {
    eprintln!("RESULT {agent} | {check} | {outcome}");
}

/// Polls `script` in the guest until its output (trimmed) satisfies `ok`, for at most `within`;
/// returns the last output.
fn poll(
    guest: &mut DebianGuest,
    script: &str,
    within: Duration,
    ok: impl Fn(&str) -> bool,
) -> Result<String, String> {
    let deadline = Instant::now() + within;
    loop {
        let (_, out) = guest
            .shell()
            .run(script, SHORT)
            .map_err(|e| guest.failure(&e))?;
        let out = out.trim().to_string();
        if ok(&out) {
            return Ok(out);
        }
        if Instant::now() >= deadline {
            return Err(guest.failure(&format!(
                "`{script}` did not reach the expected state within {within:?}; last output: {out:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn unit_prop(guest: &mut DebianGuest, prop: &str) -> String {
    let script = format!("systemctl show -p {prop} --value {AGENT_UNIT}");
    match guest.check(&script, SHORT) {
        Ok(v) => v.trim().to_string(),
        Err(e) => panic!("{e}"),
    }
}

/// `systemctl show` of several properties, as `NAME=value` sorted by name (systemctl prints them
/// in its own order).
fn unit_props(guest: &mut DebianGuest, props: &str) -> String {
    let script = format!("systemctl show -p {props} {AGENT_UNIT} | sort");
    match guest.check(&script, SHORT) {
        Ok(v) => v.split_whitespace().collect::<Vec<_>>().join(" "),
        Err(e) => panic!("{e}"),
    }
}

fn main_pid(guest: &mut DebianGuest) -> u32 {
    unit_prop(guest, "MainPID").parse().unwrap_or(0)
}

/// The agent answers a sync and `guest-info` on a new connection; returns its version.
fn agent_version(guest: &DebianGuest, within: Duration) -> Result<String, String> {
    let mut c: Client = guest.agent(within).map_err(|e| guest.failure(&e))?;
    let info = c.info().map_err(|e| guest.failure(&e.to_string()))?;
    Ok(info
        .get("version")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string())
}

/// Waits until the unit is active with a main PID other than `old` and the agent answers.
fn wait_started(guest: &mut DebianGuest, old: u32, within: Duration) -> Result<u32, String> {
    let script = format!(
        "echo $(systemctl show -p ActiveState --value {AGENT_UNIT}) $(systemctl show -p MainPID --value {AGENT_UNIT})"
    );
    let parse = |o: &str| {
        let mut w = o.split_whitespace();
        let active = w.next() == Some("active");
        let pid: u32 = w.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        (active, pid)
    };
    let out = poll(guest, &script, within, |o| {
        let (active, pid) = parse(o);
        active && pid != 0 && pid != old
    })?;
    let pid = parse(&out).1;
    agent_version(guest, within)?;
    Ok(pid)
}

struct Expect {
    /// `qemu-ga` or `qga`: the RESULT lines' column.
    label: &'static str,
    /// The agent's `guest-info` version starts with this.
    version_prefix: String,
    /// The unit's main process runs this file (`/proc/PID/exe`: our package's `qemu-ga` is a
    /// link to `qga`).
    exe: &'static str,
}

fn systemd_checks(guest: &mut DebianGuest, expect: &Expect) {
    let label = expect.label;

    // 1a. Started at boot by udev + systemd, with no action of ours.
    let version = agent_version(guest, BOOT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        version.starts_with(&expect.version_prefix),
        "{label}: guest-info version {version:?}, expected {:?}…",
        expect.version_prefix
    );
    assert_eq!(unit_prop(guest, "ActiveState"), "active");
    let wanted_by = unit_prop(guest, "WantedBy");
    assert!(
        wanted_by.contains("x2dports-vport"),
        "{label}: the unit should be wanted by the port's device (the udev rule's SYSTEMD_WANTS), \
         is wanted by {wanted_by:?}"
    );
    let pid = main_pid(guest);
    let exe = guest
        .check(&format!("readlink /proc/{pid}/exe"), SHORT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(exe.trim(), expect.exe, "{label}: the unit's main process");
    result(
        label,
        "started at boot by the udev rule",
        &format!("yes (version {version})"),
    );

    // 1b. Hot-unplug: BindsTo stops the unit. Hot-plug: udev starts it again.
    guest
        .qmp()
        .execute("device_del", Some(json!({"id": AGENT_PORT_ID})))
        .unwrap_or_else(|e| panic!("{}", guest.failure(&e)));
    guest
        .qmp()
        .wait_event("DEVICE_DELETED", SHORT)
        .unwrap_or_else(|e| panic!("{}", guest.failure(&e)));
    let state = poll(
        guest,
        &format!("systemctl is-active {AGENT_UNIT}"),
        SHORT,
        |o| o == "inactive" || o == "failed",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state, "inactive", "{label}: after the port went away");
    guest
        .qmp()
        .execute(
            "device_add",
            Some(json!({
                "driver": "virtserialport",
                "bus": "vser0.0",
                "chardev": AGENT_CHARDEV_ID,
                "name": AGENT_PORT,
                "id": AGENT_PORT_ID,
            })),
        )
        .unwrap_or_else(|e| panic!("{}", guest.failure(&e)));
    let pid = wait_started(guest, pid, SHORT).unwrap_or_else(|e| panic!("{e}"));
    result(
        label,
        "port hot-unplugged / hot-plugged",
        "unit stops (inactive) / starts again and answers",
    );

    // 2. kill -9: Restart=always.
    guest
        .check(&format!("kill -9 {pid}"), SHORT)
        .unwrap_or_else(|e| panic!("{e}"));
    let new = wait_started(guest, pid, SHORT).unwrap_or_else(|e| panic!("{e}"));
    let restarts = unit_prop(guest, "NRestarts");
    result(
        label,
        "restarted after kill -9",
        &format!("yes (new PID, NRestarts={restarts})"),
    );

    // 3. systemctl stop: exit status 0, inactive, not failed.
    let stop = guest
        .check(
            &format!(
                "a=$(date +%s%N); systemctl stop {AGENT_UNIT}; b=$(date +%s%N); echo $(( (b - a) / 1000000 ))"
            ),
            Duration::from_secs(150),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let props = unit_props(guest, "ActiveState,Result,ExecMainCode,ExecMainStatus");
    assert_eq!(
        props, "ActiveState=inactive ExecMainCode=1 ExecMainStatus=0 Result=success",
        "{label}: after systemctl stop of PID {new} (ExecMainCode 1 = exited, 2 = killed)"
    );
    result(
        label,
        "systemctl stop",
        &format!("exit 0, inactive ({} ms)", stop.trim()),
    );
    guest
        .check(&format!("systemctl start {AGENT_UNIT}"), SHORT)
        .unwrap_or_else(|e| panic!("{e}"));
    wait_started(guest, 0, SHORT).unwrap_or_else(|e| panic!("{e}"));

    // 4. The fsfreeze hook directory runs on freeze and on thaw.
    guest
        .check(
            "mkdir -p /etc/qemu/fsfreeze-hook.d && \
             printf '#!/bin/sh\\necho \"$1\" >>/run/qga-hook.log\\n' >/etc/qemu/fsfreeze-hook.d/50-qga-test && \
             chmod 755 /etc/qemu/fsfreeze-hook.d/50-qga-test && rm -f /run/qga-hook.log && sync",
            SHORT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let mut agent = guest.agent(SHORT).unwrap_or_else(|e| panic!("{e}"));
    let frozen = agent
        .fsfreeze_freeze()
        .unwrap_or_else(|e| panic!("{}", guest.failure(&format!("freeze: {e}"))));
    let during = guest.check("cat /run/qga-hook.log", SHORT);
    let status = agent.fsfreeze_status();
    let thawed = agent
        .fsfreeze_thaw()
        .unwrap_or_else(|e| panic!("{}", guest.failure(&format!("thaw: {e}"))));
    let during = during.unwrap_or_else(|e| panic!("{e}"));
    assert!(frozen >= 1, "{label}: froze {frozen} filesystems");
    assert_eq!(
        status.as_deref().ok(),
        Some("frozen"),
        "{label}: {status:?}"
    );
    assert_eq!(during.trim(), "freeze", "{label}: hook log while frozen");
    assert!(thawed >= 1, "{label}: thawed {thawed}");
    let after = guest
        .check("cat /run/qga-hook.log", SHORT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        after.split_whitespace().collect::<Vec<_>>(),
        ["freeze", "thaw"]
    );
    result(
        label,
        "fsfreeze-hook.d runs on freeze and thaw",
        &format!("yes (froze {frozen}, thawed {thawed})"),
    );
}

/// Sends our `.deb` through the running agent and installs it with `dpkg -i` started by the
/// agent in its own transient unit; waits for the new agent to answer.
fn upgrade_through_agent(guest: &mut DebianGuest, label: &str, deb: &std::path::Path, ours: &str) {
    let data = std::fs::read(deb).unwrap_or_else(|e| panic!("read {}: {e}", deb.display()));
    let old = main_pid(guest);
    let mut agent = guest.agent(SHORT).unwrap_or_else(|e| panic!("{e}"));
    agent
        .push(&data, "/var/tmp/qga-upgrade.deb", 48 * 1024)
        .unwrap_or_else(|e| panic!("{}", guest.failure(&format!("guest-file-write: {e}"))));
    let script = "dpkg -i --force-confdef --force-confold /var/tmp/qga-upgrade.deb >/run/qga-upgrade.log 2>&1; echo $? >/run/qga-upgrade.status";
    let pid = agent
        .exec(
            "/usr/bin/systemd-run",
            &["--unit=qga-upgrade", "--collect", "/bin/sh", "-c", script],
            None,
            true,
        )
        .unwrap_or_else(|e| panic!("{}", guest.failure(&format!("guest-exec: {e}"))));
    let run = agent.exec_wait(pid, SHORT);
    // QEMU's socket serves one client at a time: the new agent is reached on a new connection.
    drop(agent);
    let status = poll(
        guest,
        "cat /run/qga-upgrade.status 2>/dev/null",
        Duration::from_secs(240),
        |o| !o.is_empty(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let log = guest
        .check("cat /run/qga-upgrade.log", SHORT)
        .unwrap_or_default();
    assert_eq!(
        status, "0",
        "{label}: dpkg -i through the agent ({run:?}):\n{log}"
    );
    let new = wait_started(guest, old, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{label}: no agent after dpkg -i; dpkg's output:\n{log}\n{e}"));
    let version = agent_version(guest, SHORT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        version.starts_with(ours),
        "{label}: after the upgrade the agent reports {version:?}, expected ours ({ours})"
    );
    let pkgs = ours_replaced_theirs(guest, label);
    result(
        label,
        "upgrade to our .deb through the agent (guest-file-write + guest-exec systemd-run dpkg -i)",
        &format!("yes (PID {old} -> {new}, version {version}; {pkgs})"),
    );
}

/// Asserts that dpkg has `qga` installed and `qemu-guest-agent` no longer installed (removed,
/// its configuration files kept: `rc`); returns both states on one line.
fn ours_replaced_theirs(guest: &mut DebianGuest, label: &str) -> String {
    let pkgs = guest
        .check(
            "dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' qga qemu-guest-agent 2>/dev/null; true",
            SHORT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        pkgs.lines().any(|l| l.starts_with("qga ii")),
        "{label}: qga should be installed:\n{pkgs}"
    );
    assert!(
        !pkgs.lines().any(|l| l.starts_with("qemu-guest-agent ii")),
        "{label}: qemu-guest-agent should be gone:\n{pkgs}"
    );
    pkgs.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn our_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

fn report_times(label: &str, prepared: Duration, guest: &DebianGuest, total: Instant) {
    eprintln!(
        "TIMES {label}: image prepared in {prepared:.1?}, boot to control shell {:.1?}, test {:.1?}",
        guest.boot_time,
        total.elapsed()
    );
}

/// The Debian package `cargo xtask dist` makes, or why there is none.
fn our_deb() -> std::path::PathBuf {
    debian_guest::dist_deb().unwrap_or_else(|e| panic!("cannot build our .deb: {e}"))
}

#[test]
fn systemd_runs_debian_qemu_ga() {
    let total = Instant::now();
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let t = Instant::now();
    let image =
        debian_guest::prepare(&DebianAgent::QemuGa, work.path()).unwrap_or_else(|e| panic!("{e}"));
    let prepared = t.elapsed();
    let mut guest = DebianGuest::boot(&image, BOOT).unwrap_or_else(|e| panic!("{e}"));
    let expect = Expect {
        label: "qemu-ga",
        version_prefix: "7.2".into(),
        exe: "/usr/sbin/qemu-ga",
    };
    systemd_checks(&mut guest, &expect);
    let deb = our_deb();
    upgrade_through_agent(&mut guest, "qemu-ga", &deb, &our_version());
    report_times("qemu-ga", prepared, &guest, total);
}

#[test]
fn systemd_runs_our_package() {
    let total = Instant::now();
    let deb = our_deb();
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let t = Instant::now();
    let image = debian_guest::prepare(&DebianAgent::Qga { deb: deb.clone() }, work.path())
        .unwrap_or_else(|e| panic!("{e}"));
    let prepared = t.elapsed();
    let mut guest = DebianGuest::boot(&image, BOOT).unwrap_or_else(|e| panic!("{e}"));

    // 5. The package replaced Debian's and kept the user's files.
    let pkgs = ours_replaced_theirs(&mut guest, "qga");
    guest
        .check(
            &format!(
                "grep -qxF '{EDITED_HOOK_MARKER}' /etc/qemu/fsfreeze-hook && grep -qx 'fsfreeze-hook=/etc/qemu/fsfreeze-hook' /etc/qemu/qemu-ga.conf"
            ),
            SHORT,
        )
        .unwrap_or_else(|e| panic!("the user's edits did not survive dpkg -i: {e}"));
    result(
        "qga",
        "edited /etc/qemu/fsfreeze-hook and qemu-ga.conf survive installing over qemu-guest-agent",
        &format!(
            "yes ({})",
            pkgs.split_whitespace().collect::<Vec<_>>().join(" ")
        ),
    );

    let expect = Expect {
        label: "qga",
        version_prefix: our_version(),
        exe: "/usr/sbin/qga",
    };
    systemd_checks(&mut guest, &expect);
    upgrade_through_agent(&mut guest, "qga", &deb, &our_version());
    report_times("qga", prepared, &guest, total);
}
