//! The agent inside a real Linux guest (Debian's kernel, our initramfs, QEMU under TCG): every
//! command upstream has on Linux, including the ones that change the system and must never run
//! on the host.
//!
//! Budget: a TCG boot costs 10–20 s, so the non-destructive and reversible tests share one guest
//! (booted by the first test that needs it, serialised by a mutex, killed by its watchdog when
//! the test process exits), while each shutdown mode and each suspend attempt gets a guest of
//! its own. At most `QGA_TEST_VMS` (default 2, at least the shared one plus one) guests run at
//! once. Every test prints its time and
//! the time since the suite started on stderr (uncaptured), so a CI log shows where time goes.
//!
//! Needs: qemu-system-x86, linux-image-amd64, busybox-static, e2fsprogs, and the static agent
//! (built here with cargo unless `QGA_STATIC_BIN` names one).

use std::io::Write as _;
use std::panic::AssertUnwindSafe;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use qga_client::{Client, ClientError, ExecOutput, b64_encode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tests::client_cli;
use tests::guest_files::{SCRATCH, SNAPSHOT_COMMAND, Snapshot};
use tests::initramfs;
use tests::linux_guest::{DATA_DISK_PCI_SLOT, GUEST_MAC, GuestImages, GuestOptions, LinuxGuest};

// ---------------------------------------------------------------------------------------------
// Suite plumbing: images, the VM semaphore, the shared guest, timing.

fn suite_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Writes straight to fd 2, past libtest's capture, so timings show in every run.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "linux-guest: {line}");
}

fn images() -> &'static GuestImages {
    static IMAGES: OnceLock<Result<GuestImages, String>> = OnceLock::new();
    let r = IMAGES.get_or_init(|| {
        suite_start();
        let t = Instant::now();
        let dir = tests::paths::target_dir().join("linux-guest");
        let r = GuestImages::build(&dir);
        report(&format!(
            "static agent and images built in {:.1}s",
            t.elapsed().as_secs_f64()
        ));
        r
    });
    match r {
        Ok(i) => i,
        Err(e) => panic!("cannot build the guest images: {e}"),
    }
}

/// A counting semaphore bounding the guests alive at once (2 cores, shared).
struct VmSlots {
    used: Mutex<usize>,
    freed: Condvar,
}

static SLOTS: VmSlots = VmSlots {
    used: Mutex::new(0),
    freed: Condvar::new(),
};

struct Slot;

impl Slot {
    fn acquire() -> Slot {
        // The shared guest runs outside this count: it lives as long as the process.
        let vms = std::env::var("QGA_TEST_VMS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2usize);
        let max = vms.saturating_sub(1).max(1);
        let mut used = SLOTS.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= max {
            used = SLOTS.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut used = SLOTS.used.lock().unwrap_or_else(|e| e.into_inner());
        *used -= 1;
        SLOTS.freed.notify_one();
    }
}

/// A guest of a test's own, with its VM slot.
struct OwnGuest {
    guest: LinuxGuest,
    _slot: Slot,
}

fn boot_own(name: &str, shutdown_helpers: bool) -> OwnGuest {
    let images = images();
    let slot = Slot::acquire();
    match LinuxGuest::boot(&GuestOptions::new(images, shutdown_helpers)) {
        Ok(guest) => {
            report(&format!(
                "{name}: guest booted in {:.1}s",
                guest.boot_time.as_secs_f64()
            ));
            OwnGuest { guest, _slot: slot }
        }
        Err(e) => panic!("{name}: the guest did not boot: {e}"),
    }
}

struct Shared {
    guest: LinuxGuest,
}

/// Runs `f` on the shared guest (booting it on first use), holding the guest's lock; on a
/// failure the guest's console tail is printed with the panic.
fn with_guest(name: &str, f: impl FnOnce(&mut LinuxGuest)) {
    static SHARED: OnceLock<Result<Mutex<Shared>, String>> = OnceLock::new();
    let shared = SHARED.get_or_init(|| {
        let images = images();
        LinuxGuest::boot(&GuestOptions::new(images, true)).map(|guest| {
            report(&format!(
                "shared guest booted in {:.1}s",
                guest.boot_time.as_secs_f64()
            ));
            Mutex::new(Shared { guest })
        })
    });
    let shared = match shared {
        Ok(s) => s,
        Err(e) => panic!("{name}: the shared guest did not boot: {e}"),
    };
    let mut lock = shared.lock().unwrap_or_else(|e| e.into_inner());
    let t = Instant::now();
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut lock.guest)));
    report(&format!(
        "{name}: {} in {:.1}s (suite at {:.1}s)",
        if r.is_ok() { "ok" } else { "FAILED" },
        t.elapsed().as_secs_f64(),
        suite_start().elapsed().as_secs_f64()
    ));
    if let Err(panic) = r {
        eprintln!(
            "{}",
            lock.guest
                .failure(&format!("{name} failed; guest state follows"))
        );
        std::panic::resume_unwind(panic);
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

fn ok<T>(r: Result<T, ClientError>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

/// The agent's error for a call that must fail: (class, desc).
fn agent_err<T: std::fmt::Debug>(r: Result<T, ClientError>, what: &str) -> (String, String) {
    match r {
        Err(ClientError::Agent { class, desc }) => (class, desc),
        other => panic!("{what}: expected an agent error, got {other:?}"),
    }
}

fn exec_args(path: &str, args: &[&str]) -> Value {
    json!({"path": path, "arg": args})
}

/// Runs a program through guest-exec with `extra` arguments merged in, waits for it.
fn exec_with(agent: &mut Client, mut args: Value, extra: Value, within: Duration) -> Value {
    if let (Some(a), Some(e)) = (args.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            a.insert(k.clone(), v.clone());
        }
    }
    let pid = ok(
        agent.execute("guest-exec", Some(args.clone())),
        &format!("guest-exec {args}"),
    );
    let pid = pid["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("guest-exec returned {pid}"));
    let deadline = Instant::now() + within;
    loop {
        let st = ok(agent.exec_status(pid), "guest-exec-status");
        if st["exited"] == json!(true) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "{args} did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `sh -c script` with output captured; panics unless it exits 0.
fn sh(agent: &mut Client, script: &str) -> String {
    let out = ok(
        agent.run("/bin/sh", &["-c", script], Duration::from_secs(60)),
        script,
    );
    assert_eq!(
        out.exitcode,
        Some(0),
        "`{script}` failed: stdout {:?} stderr {:?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_file(agent: &mut Client, path: &str) -> String {
    String::from_utf8_lossy(&ok(agent.pull(path, 65536), &format!("reading {path}"))).into_owned()
}

fn b64(s: &str) -> String {
    b64_encode(s.as_bytes())
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Protocol basics and information commands on the shared guest.

/// The commands master registers on Linux (all but guest-get-devices).
const LINUX_COMMANDS: &[&str] = &[
    "guest-sync-delimited",
    "guest-sync",
    "guest-ping",
    "guest-get-time",
    "guest-set-time",
    "guest-info",
    "guest-shutdown",
    "guest-file-open",
    "guest-file-close",
    "guest-file-read",
    "guest-file-write",
    "guest-file-seek",
    "guest-file-flush",
    "guest-fsfreeze-status",
    "guest-fsfreeze-freeze",
    "guest-fsfreeze-freeze-list",
    "guest-fsfreeze-thaw",
    "guest-fstrim",
    "guest-suspend-disk",
    "guest-suspend-ram",
    "guest-suspend-hybrid",
    "guest-network-get-interfaces",
    "guest-get-vcpus",
    "guest-set-vcpus",
    "guest-get-disks",
    "guest-get-fsinfo",
    "guest-set-user-password",
    "guest-get-memory-blocks",
    "guest-set-memory-blocks",
    "guest-get-memory-block-info",
    "guest-exec-status",
    "guest-exec",
    "guest-get-host-name",
    "guest-get-users",
    "guest-get-timezone",
    "guest-get-osinfo",
    "guest-ssh-get-authorized-keys",
    "guest-ssh-add-authorized-keys",
    "guest-ssh-remove-authorized-keys",
    "guest-get-diskstats",
    "guest-get-cpustats",
    "guest-get-load",
    "guest-network-get-route",
];

#[test]
fn info_enables_every_linux_command() {
    with_guest("info", |g| {
        let mut a = g.agent().unwrap();
        let enabled = ok(a.enabled_commands(), "guest-info");
        let missing: Vec<&&str> = LINUX_COMMANDS
            .iter()
            .filter(|c| !enabled.iter().any(|e| e == **c))
            .collect();
        assert!(
            missing.is_empty(),
            "guest-info does not enable {missing:?}; enabled: {enabled:?}"
        );
        assert!(
            !enabled.iter().any(|e| e == "guest-get-devices"),
            "guest-get-devices is Windows-only"
        );
    });
}

#[test]
fn system_information() {
    with_guest("system information", |g| {
        let mut a = g.agent().unwrap();
        let host = ok(a.execute("guest-get-host-name", None), "host name");
        assert_eq!(host, json!({"host-name": initramfs::GUEST_HOSTNAME}));

        let os = ok(a.execute("guest-get-osinfo", None), "osinfo");
        assert_eq!(os["id"], "qga-test-initramfs", "{os}");
        assert_eq!(os["name"], "QGA test initramfs", "{os}");
        assert_eq!(os["pretty-name"], "QGA test initramfs (busybox)", "{os}");
        assert_eq!(os["version"], "1 (test)", "{os}");
        assert_eq!(os["version-id"], "1", "{os}");
        assert_eq!(os["machine"], "x86_64", "{os}");
        assert_eq!(
            os["kernel-release"],
            images().kernel.release.as_str(),
            "{os}"
        );
        let uname_v = sh(&mut a, "uname -v");
        assert_eq!(os["kernel-version"], uname_v.trim(), "{os}");

        let tz = ok(a.execute("guest-get-timezone", None), "timezone");
        assert_eq!(tz, json!({"zone": "UTC", "offset": 0}));

        let load = ok(a.execute("guest-get-load", None), "load");
        let loadavg = read_file(&mut a, "/proc/loadavg");
        for k in ["load1m", "load5m", "load15m"] {
            let v = load[k].as_f64().unwrap_or(-1.0);
            assert!((0.0..100.0).contains(&v), "{k} = {v} in {load}");
        }
        assert!(loadavg.split_whitespace().count() >= 3);

        let cpus = ok(a.execute("guest-get-cpustats", None), "cpustats");
        let cpus = cpus.as_array().expect("cpustats is a list");
        assert_eq!(cpus.len(), 2, "{cpus:?}");
        for (i, c) in cpus.iter().enumerate() {
            assert_eq!(c["type"], "linux");
            assert_eq!(c["cpu"], i as i64);
            for k in [
                "user",
                "nice",
                "system",
                "idle",
                "iowait",
                "irq",
                "softirq",
                "steal",
                "guest",
                "guestnice",
            ] {
                assert!(c[k].is_u64(), "{k} missing in {c}");
            }
        }
        assert!(cpus.iter().any(|c| c["idle"].as_u64() > Some(0)));

        let stats = ok(a.execute("guest-get-diskstats", None), "diskstats");
        let vda = stats
            .as_array()
            .and_then(|l| l.iter().find(|d| d["name"] == "vda"))
            .cloned();
        let vda = vda.unwrap_or_else(|| panic!("no vda in diskstats {stats}"));
        assert_eq!(vda["major"], 254, "{vda}");
        assert_eq!(vda["minor"], 0, "{vda}");
        assert!(vda["stats"]["read-ios"].as_u64() > Some(0), "{vda}");
        assert!(vda["stats"]["write-ios"].as_u64() > Some(0), "{vda}");
        assert!(
            vda["stats"]["flush-ios"].is_u64(),
            "kernel 6.1 has the flush fields: {vda}"
        );
    });
}

/// A glibc x86_64 `struct utmp` (384 bytes): USER_PROCESS for `user` at `sec.usec`.
fn utmp_record(user: &str, line: &str, sec: i32, usec: i32) -> Vec<u8> {
    let mut r = vec![0u8; 384];
    r[0..2].copy_from_slice(&7i16.to_le_bytes()); // ut_type = USER_PROCESS
    r[4..8].copy_from_slice(&1234i32.to_le_bytes()); // ut_pid
    r[8..8 + line.len()].copy_from_slice(line.as_bytes()); // ut_line[32]
    r[40..44].copy_from_slice(b"ts/0"); // ut_id[4]
    r[44..44 + user.len()].copy_from_slice(user.as_bytes()); // ut_user[32]
    r[340..344].copy_from_slice(&sec.to_le_bytes()); // ut_tv.tv_sec
    r[344..348].copy_from_slice(&usec.to_le_bytes()); // ut_tv.tv_usec
    r
}

#[test]
fn users_from_utmp() {
    with_guest("users", |g| {
        let mut a = g.agent().unwrap();
        // No one has logged in to the initramfs.
        ok(a.push(b"", "/run/utmp", 4096), "empty utmp");
        assert_eq!(ok(a.execute("guest-get-users", None), "users"), json!([]));
        // Two sessions of tester (the earlier counts) and one of root, written as login(1) would.
        let mut data = utmp_record("tester", "pts/0", 1_700_000_100, 250_000);
        data.extend(utmp_record("root", "ttyS0", 1_700_000_050, 0));
        data.extend(utmp_record("tester", "pts/1", 1_700_000_000, 500_000));
        ok(a.push(&data, "/run/utmp", 4096), "write utmp");
        let users = ok(a.execute("guest-get-users", None), "users");
        let got: Vec<(String, f64)> = users
            .as_array()
            .unwrap_or_else(|| panic!("users is not a list: {users}"))
            .iter()
            .map(|u| {
                let name = u["user"].as_str().unwrap_or_default().to_string();
                (name, u["login-time"].as_f64().unwrap_or(-1.0))
            })
            .collect();
        assert_eq!(
            got,
            [
                ("tester".to_string(), 1_700_000_000.5),
                ("root".to_string(), 1_700_000_050.0)
            ],
            "{users}"
        );
        assert!(
            users[0].get("domain").is_none(),
            "no domain on Linux: {users}"
        );
        ok(a.push(b"", "/run/utmp", 4096), "empty utmp");
    });
}

#[test]
fn network_interfaces_and_routes() {
    with_guest("network", |g| {
        let mut a = g.agent().unwrap();
        // Make sure eth0 has sent something (an ARP request at least) whatever ran before.
        sh(&mut a, "ping -c 1 -W 1 10.0.2.2 >/dev/null 2>&1; true");
        let ifs = ok(
            a.execute("guest-network-get-interfaces", None),
            "interfaces",
        );
        let find = |name: &str| {
            ifs.as_array()
                .and_then(|l| l.iter().find(|i| i["name"] == name))
                .cloned()
                .unwrap_or_else(|| panic!("no {name} in {ifs}"))
        };
        let lo = find("lo");
        assert_eq!(lo["hardware-address"], "00:00:00:00:00:00", "{lo}");
        let lo_ips = lo["ip-addresses"].as_array().cloned().unwrap_or_default();
        assert!(
            lo_ips.contains(
                &json!({"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8})
            ),
            "{lo}"
        );
        assert!(
            lo_ips
                .contains(&json!({"ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128})),
            "{lo}"
        );
        let eth = find("eth0");
        assert_eq!(eth["hardware-address"], GUEST_MAC, "{eth}");
        let (ip, prefix, gw) = initramfs::GUEST_IPV4;
        let eth_ips = eth["ip-addresses"].as_array().cloned().unwrap_or_default();
        assert!(
            eth_ips
                .contains(&json!({"ip-address": ip, "ip-address-type": "ipv4", "prefix": prefix})),
            "{eth}"
        );
        let stats = &eth["statistics"];
        for k in [
            "rx-bytes",
            "rx-packets",
            "rx-errs",
            "rx-dropped",
            "tx-bytes",
            "tx-packets",
            "tx-errs",
            "tx-dropped",
        ] {
            assert!(stats[k].is_u64(), "{k} missing: {eth}");
        }
        // /proc/net/dev agrees on tx packets (a lower bound: the counters only grow).
        assert!(
            stats["tx-packets"].as_u64() > Some(0),
            "eth0 has sent at least the ARP request: {eth}"
        );

        let routes = ok(a.execute("guest-network-get-route", None), "routes");
        let routes = routes.as_array().cloned().unwrap_or_default();
        let default = routes
            .iter()
            .find(|r| r["version"] == 4 && r["destination"] == "0.0.0.0");
        let default = default.unwrap_or_else(|| panic!("no IPv4 default route in {routes:?}"));
        assert_eq!(default["iface"], "eth0");
        assert_eq!(default["gateway"], gw);
        assert_eq!(default["mask"], "0.0.0.0");
        let net = routes
            .iter()
            .find(|r| r["version"] == 4 && r["destination"] == "10.0.2.0");
        let net = net.unwrap_or_else(|| panic!("no 10.0.2.0/24 route in {routes:?}"));
        assert_eq!(net["mask"], "255.255.255.0");
        assert_eq!(net["iface"], "eth0");
        assert!(
            routes
                .iter()
                .any(|r| r["version"] == 6 && r["iface"] == "lo"),
            "IPv6 routes are read too: {routes:?}"
        );
    });
}

#[test]
fn fsinfo_and_disks_show_the_virtio_disk() {
    with_guest("fsinfo and disks", |g| {
        let mut a = g.agent().unwrap();
        let fsinfo = ok(a.execute("guest-get-fsinfo", None), "fsinfo");
        let data = fsinfo
            .as_array()
            .and_then(|l| l.iter().find(|f| f["mountpoint"] == initramfs::DATA_MOUNT))
            .cloned()
            .unwrap_or_else(|| panic!("no {} in {fsinfo}", initramfs::DATA_MOUNT));
        assert_eq!(data["name"], "vda", "{data}");
        assert_eq!(data["type"], "ext4", "{data}");
        let total = data["total-bytes"].as_u64().unwrap_or(0);
        let used = data["used-bytes"].as_u64().unwrap_or(u64::MAX);
        let privileged = data["total-bytes-privileged"].as_u64().unwrap_or(0);
        assert!(total > 40 << 20 && total < 64 << 20, "64 MiB disk: {data}");
        assert!(used < total && privileged >= total, "{data}");
        let df = sh(&mut a, "df -k /mnt/data | tail -1");
        let df_used_kib: u64 = df
            .split_whitespace()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert_eq!(used / 1024, df_used_kib, "used-bytes matches df: {df}");
        let disk = &data["disk"][0];
        assert_eq!(disk["bus-type"], "virtio", "{data}");
        assert_eq!(
            disk["pci-controller"],
            json!({"domain": 0, "bus": 0, "slot": DATA_DISK_PCI_SLOT, "function": 0}),
            "{data}"
        );
        assert_eq!(disk["dev"], "/dev/vda", "{data}");
        assert_eq!(
            (&disk["bus"], &disk["target"], &disk["unit"]),
            (&json!(0), &json!(0), &json!(0)),
            "{data}"
        );
        // The initramfs root (rootfs, major 0) and the pseudo filesystems are not listed.
        assert!(
            fsinfo
                .as_array()
                .is_some_and(|l| l.iter().all(|f| f["mountpoint"] != "/proc")),
            "{fsinfo}"
        );

        let disks = ok(a.execute("guest-get-disks", None), "disks");
        let vda = disks
            .as_array()
            .and_then(|l| l.iter().find(|d| d["name"] == "/dev/vda"))
            .cloned()
            .unwrap_or_else(|| panic!("no /dev/vda in {disks}"));
        assert_eq!(vda["partition"], false, "{vda}");
        assert_eq!(vda["address"]["bus-type"], "virtio", "{vda}");
        assert_eq!(
            vda["address"]["pci-controller"]["slot"], DATA_DISK_PCI_SLOT,
            "{vda}"
        );
    });
}

#[test]
fn exec_capture_modes_input_and_env() {
    with_guest("exec", |g| {
        let mut a = g.agent().unwrap();
        let both = exec_args("/bin/sh", &["-c", "echo out; echo err >&2; exit 3"]);
        let t = Duration::from_secs(30);
        let out = |st: &Value, k: &str| {
            st.get(k)
                .and_then(Value::as_str)
                .map(|s| qga_client::b64_decode(s).unwrap())
        };
        for capture in [None, Some(json!(false)), Some(json!("none"))] {
            let extra = capture
                .map(|c| json!({"capture-output": c}))
                .unwrap_or(json!({}));
            let st = exec_with(&mut a, both.clone(), extra.clone(), t);
            assert_eq!(st["exitcode"], 3, "{extra}: {st}");
            assert!(
                st.get("out-data").is_none() && st.get("err-data").is_none(),
                "{extra}: {st}"
            );
        }
        for capture in [json!(true), json!("separated")] {
            let st = exec_with(&mut a, both.clone(), json!({"capture-output": capture}), t);
            assert_eq!(st["exitcode"], 3, "{st}");
            assert_eq!(
                out(&st, "out-data").as_deref(),
                Some(&b"out\n"[..]),
                "{capture}: {st}"
            );
            assert_eq!(
                out(&st, "err-data").as_deref(),
                Some(&b"err\n"[..]),
                "{capture}: {st}"
            );
            assert_eq!(st["out-truncated"], false, "{st}");
            assert_eq!(st["err-truncated"], false, "{st}");
        }
        let st = exec_with(&mut a, both.clone(), json!({"capture-output": "stdout"}), t);
        assert_eq!(
            out(&st, "out-data").as_deref(),
            Some(&b"out\n"[..]),
            "stdout: {st}"
        );
        assert!(
            out(&st, "err-data").unwrap_or_default().is_empty(),
            "stdout mode drops stderr: {st}"
        );
        let st = exec_with(&mut a, both.clone(), json!({"capture-output": "stderr"}), t);
        assert_eq!(
            out(&st, "err-data").as_deref(),
            Some(&b"err\n"[..]),
            "stderr: {st}"
        );
        assert!(
            out(&st, "out-data").unwrap_or_default().is_empty(),
            "stderr mode drops stdout: {st}"
        );
        let st = exec_with(&mut a, both.clone(), json!({"capture-output": "merged"}), t);
        assert_eq!(
            out(&st, "out-data").as_deref(),
            Some(&b"out\nerr\n"[..]),
            "merged: {st}"
        );
        assert!(
            out(&st, "err-data").unwrap_or_default().is_empty(),
            "merged: {st}"
        );
        let (_, desc) = agent_err(
            a.execute(
                "guest-exec",
                Some(json!({"path": "/bin/true", "capture-output": "sideways"})),
            ),
            "bad capture mode",
        );
        assert!(desc.contains("sideways"), "{desc}");

        // input-data goes to stdin, which is then closed.
        let input = "line one\nline two\n";
        let st = exec_with(
            &mut a,
            exec_args("/bin/cat", &[]),
            json!({"input-data": b64(input), "capture-output": true}),
            t,
        );
        assert_eq!(
            out(&st, "out-data").as_deref(),
            Some(input.as_bytes()),
            "{st}"
        );
        assert_eq!(st["exitcode"], 0);
        // Without input-data, stdin is /dev/null (cat ends at once).
        let st = exec_with(
            &mut a,
            exec_args("/bin/cat", &[]),
            json!({"capture-output": true}),
            t,
        );
        assert_eq!(st["exitcode"], 0, "{st}");

        // env replaces the environment.
        let st = exec_with(
            &mut a,
            exec_args("/usr/bin/env", &[]),
            json!({"env": ["FOO=bar baz", "QGA=1"], "capture-output": true}),
            t,
        );
        assert_eq!(
            out(&st, "out-data").as_deref(),
            Some(&b"FOO=bar baz\nQGA=1\n"[..]),
            "{st}"
        );
        // Without env the child inherits the agent's (which has PATH from init).
        let st = exec_with(
            &mut a,
            exec_args("/bin/sh", &["-c", "echo $PATH"]),
            json!({"capture-output": true}),
            t,
        );
        assert!(
            String::from_utf8_lossy(&out(&st, "out-data").unwrap_or_default()).contains("/sbin"),
            "{st}"
        );
        // PATH search: a bare name.
        let st = exec_with(
            &mut a,
            exec_args("echo", &["-n", "searched"]),
            json!({"capture-output": true}),
            t,
        );
        assert_eq!(
            out(&st, "out-data").as_deref(),
            Some(&b"searched"[..]),
            "{st}"
        );

        // A signal death reports the signal.
        let st = exec_with(
            &mut a,
            exec_args("/bin/sh", &["-c", "kill -9 $$"]),
            json!({}),
            t,
        );
        assert_eq!(st["signal"], 9, "{st}");
        assert!(st.get("exitcode").is_none(), "{st}");
        // A running child reports exited:false; the exited status is reaped once.
        let pid = ok(a.exec("/bin/sleep", &["2"], None, false), "sleep");
        assert_eq!(ok(a.exec_status(pid), "status"), json!({"exited": false}));
        let done = ok(a.exec_wait(pid, t), "sleep exits");
        assert_eq!(done.exitcode, Some(0));
        let (class, _) = agent_err(a.exec_status(pid), "status after reaping");
        assert_eq!(class, "GenericError");
        // Spawn failure.
        let (class, desc) = agent_err(
            a.execute("guest-exec", Some(json!({"path": "/bin/invalid-cmd42"}))),
            "exec of a missing program",
        );
        assert_eq!(class, "GenericError");
        assert!(desc.contains("/bin/invalid-cmd42"), "{desc}");
    });
}

#[test]
fn file_transfer_16_mib_round_trip() {
    with_guest("16 MiB push/pull", |g| {
        let mut a = g.agent().unwrap();
        // Deterministic, incompressible-looking content (xorshift).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let data: Vec<u8> = (0..16 * 1024 * 1024 / 8)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect();
        let want = hex(&Sha256::digest(&data));
        let path = "/mnt/data/blob16m";
        let t = Instant::now();
        ok(a.push(&data, path, 1 << 20), "push");
        let push = t.elapsed();
        let guest_sum = sh(&mut a, &format!("sha256sum {path}"));
        assert_eq!(
            guest_sum.split_whitespace().next(),
            Some(want.as_str()),
            "guest-side sha256"
        );
        let t = Instant::now();
        let back = ok(a.pull(path, 4 << 20), "pull");
        let pull = t.elapsed();
        assert_eq!(back.len(), data.len());
        assert_eq!(hex(&Sha256::digest(&back)), want, "pulled content");
        report(&format!(
            "16 MiB over virtio-serial: push {:.1}s ({:.2} MiB/s), pull {:.1}s ({:.2} MiB/s)",
            push.as_secs_f64(),
            16.0 / push.as_secs_f64(),
            pull.as_secs_f64(),
            16.0 / pull.as_secs_f64()
        ));
        // Random access on the same file: seek, overwrite in place, flush, read back.
        let h = ok(a.file_open(path, "r+"), "open r+");
        assert_eq!(ok(a.file_seek(h, 5 << 20, "set"), "seek"), 5 << 20);
        let chunk = ok(a.file_read(h, 32), "read at 5 MiB");
        assert_eq!(chunk.data, &data[5 << 20..(5 << 20) + 32]);
        assert!(!chunk.eof);
        assert_eq!(ok(a.file_seek(h, -32, "cur"), "seek back"), 5 << 20);
        assert_eq!(ok(a.file_write(h, b"overwritten in place"), "write"), 20);
        ok(a.file_flush(h), "flush");
        assert_eq!(ok(a.file_seek(h, -4, "end"), "seek end"), (16 << 20) - 4);
        let tail = ok(a.file_read(h, 100), "read the tail");
        assert_eq!(
            (tail.data.as_slice(), tail.eof),
            (&data[data.len() - 4..], true)
        );
        ok(a.file_close(h), "close");
        let at = sh(
            &mut a,
            &format!("dd if={path} bs=1M skip=5 count=1 2>/dev/null | head -c 20"),
        );
        assert_eq!(at, "overwritten in place");
        sh(&mut a, &format!("rm -f {path}"));
    });
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Commands that change the system, on the shared guest (each leaves it as it found it).

#[test]
fn fsfreeze_with_hook_blocks_writers_until_thaw() {
    with_guest("fsfreeze", |g| {
        let mut a = g.agent().unwrap();
        let mut isa = g.isa_agent().unwrap();
        let hook_log = |a: &mut Client| read_file(a, initramfs::HOOK_LOG);
        sh(
            &mut a,
            &format!(
                "rm -f {} {}",
                initramfs::HOOK_LOG,
                initramfs::HOOK_FAIL_FLAG
            ),
        );
        assert_eq!(
            ok(a.execute("guest-fsfreeze-status", None), "status"),
            json!("thawed")
        );

        // A failing hook stops the freeze before anything is frozen.
        sh(&mut a, &format!("touch {}", initramfs::HOOK_FAIL_FLAG));
        let (class, desc) = agent_err(
            a.execute("guest-fsfreeze-freeze", None),
            "freeze with a failing hook",
        );
        assert_eq!(class, "GenericError");
        assert!(desc.contains("fsfreeze hook"), "{desc}");
        assert_eq!(
            ok(a.execute("guest-fsfreeze-status", None), "status"),
            json!("thawed")
        );
        sh(
            &mut a,
            &format!(
                "rm -f {} {}",
                initramfs::HOOK_LOG,
                initramfs::HOOK_FAIL_FLAG
            ),
        );

        // Freeze: the hook runs with "freeze", the one real filesystem (the ext4 disk) is frozen.
        let n = ok(a.execute("guest-fsfreeze-freeze", None), "freeze");
        let frozen_at = Instant::now();
        let thawed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            assert_eq!(n, json!(1), "frozen count");
            assert_eq!(
                ok(a.execute("guest-fsfreeze-status", None), "status"),
                json!("frozen")
            );
            // Only the freeze allow-list works now.
            let (class, desc) =
                agent_err(a.execute("guest-get-time", None), "get-time while frozen");
            assert_eq!(class, "CommandNotFound", "{desc}");
            assert!(desc.contains("has been disabled"), "{desc}");
            ok(a.ping(), "ping while frozen");
            // The other agent is not frozen: it starts a writer, which must block in the kernel.
            let writer = ok(
                isa.exec(
                    "/bin/sh",
                    &["-c", "echo written-while-frozen > /mnt/data/frozen.txt"],
                    None,
                    true,
                ),
                "writer",
            );
            std::thread::sleep(Duration::from_secs(3));
            assert_eq!(
                ok(isa.exec_status(writer), "writer status"),
                json!({"exited": false}),
                "write blocked"
            );
            let log = hook_log(&mut isa);
            assert!(log.starts_with("freeze "), "hook log: {log:?}");
            writer
        }));
        // Thaw whatever happened above, so a failure does not leave the disk frozen.
        let thaw = a.execute("guest-fsfreeze-thaw", None);
        let writer = match thawed {
            Ok(w) => w,
            Err(p) => std::panic::resume_unwind(p),
        };
        assert_eq!(ok(thaw, "thaw"), json!(1), "thawed count");
        let done = ok(
            isa.exec_wait(writer, Duration::from_secs(30)),
            "writer after thaw",
        );
        assert_eq!(done.exitcode, Some(0));
        report(&format!(
            "fsfreeze: writer held {:.1}s until thaw",
            frozen_at.elapsed().as_secs_f64()
        ));
        assert_eq!(
            ok(a.execute("guest-fsfreeze-status", None), "status"),
            json!("thawed")
        );
        assert_eq!(
            read_file(&mut a, "/mnt/data/frozen.txt"),
            "written-while-frozen\n"
        );
        let log = hook_log(&mut a);
        let actions: Vec<&str> = log
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(actions, ["freeze", "thaw"], "hook log: {log:?}");

        // freeze-list: the named mount only; an unknown mount point freezes nothing.
        assert_eq!(
            ok(
                a.execute(
                    "guest-fsfreeze-freeze-list",
                    Some(json!({"mountpoints": ["/mnt/data"]}))
                ),
                "freeze-list"
            ),
            json!(1)
        );
        assert_eq!(
            ok(a.execute("guest-fsfreeze-status", None), "status"),
            json!("frozen")
        );
        assert_eq!(ok(a.execute("guest-fsfreeze-thaw", None), "thaw"), json!(1));
        assert_eq!(
            ok(
                a.execute(
                    "guest-fsfreeze-freeze-list",
                    Some(json!({"mountpoints": ["/no/such"]}))
                ),
                "freeze-list"
            ),
            json!(0)
        );
        assert_eq!(
            ok(a.execute("guest-fsfreeze-status", None), "status"),
            json!("thawed")
        );
        // Thawing a thawed system thaws nothing.
        assert_eq!(ok(a.execute("guest-fsfreeze-thaw", None), "thaw"), json!(0));
        sh(&mut a, "rm -f /mnt/data/frozen.txt");
    });
}

/// The `qga-client` command in a real guest: exec's decoded output and exit status, and
/// fsfreeze status, freeze and thaw on the guest's ext4 disk (left thawed whatever happens).
#[test]
fn client_cli_exec_and_fsfreeze() {
    with_guest("client cli", |g| {
        let sock = g
            .virtio_socket
            .to_str()
            .expect("utf-8 socket path")
            .to_string();
        let cli = |args: &[&str], stdin: &[u8]| {
            let mut all = vec![sock.as_str(), "--timeout", "60"];
            all.extend_from_slice(args);
            client_cli::run(&all, stdin, Duration::from_secs(180))
                .unwrap_or_else(|e| panic!("qga-client {args:?}: {e}"))
        };
        let r = cli(
            &[
                "exec",
                "/bin/sh",
                "-c",
                "uname -s; printf 'to\\377err' >&2; exit 42",
            ],
            b"",
        );
        assert_eq!(r.status, Some(42), "{r:?}");
        assert_eq!(r.out(), "Linux\n", "{r:?}");
        assert_eq!(r.stderr, b"to\xfferr", "{r:?}");
        let r = cli(
            &["exec", "--input", "-", "/bin/sh", "-c", "wc -c"],
            &[b'x'; 5000],
        );
        assert_eq!((r.status, r.out().trim()), (Some(0), "5000"), "{r:?}");

        let r = cli(&["fsfreeze", "status"], b"");
        assert_eq!((r.status, r.out().as_str()), (Some(0), "thawed\n"), "{r:?}");
        let frozen = cli(&["fsfreeze", "freeze"], b"");
        let status = cli(&["fsfreeze", "status"], b"");
        // Thaw whatever the freeze did before asserting, so a failure leaves the disk usable.
        let thawed = cli(&["fsfreeze", "thaw"], b"");
        assert_eq!(
            (frozen.status, frozen.out().as_str()),
            (Some(0), "1\n"),
            "{frozen:?}"
        );
        assert_eq!(
            (status.status, status.out().as_str()),
            (Some(0), "frozen\n"),
            "{status:?}"
        );
        assert_eq!(
            (thawed.status, thawed.out().as_str()),
            (Some(0), "1\n"),
            "{thawed:?}"
        );
        let r = cli(&["fsfreeze", "status"], b"");
        assert_eq!(r.out(), "thawed\n", "{r:?}");
        // The hook log the fsfreeze test reads is the hook's: leave none behind.
        let mut a = g.agent().unwrap();
        sh(&mut a, &format!("rm -f {}", initramfs::HOOK_LOG));
    });
}

#[test]
fn fstrim_reports_trimmed_bytes() {
    with_guest("fstrim", |g| {
        let mut a = g.agent().unwrap();
        // Fill and free some space so there is something to trim even on a second run.
        sh(
            &mut a,
            "dd if=/dev/zero of=/mnt/data/trimme bs=1M count=8 2>/dev/null && sync && rm /mnt/data/trimme && sync",
        );
        let r = ok(
            a.execute("guest-fstrim", Some(json!({"minimum": 0}))),
            "fstrim",
        );
        let paths = r["paths"].as_array().cloned().unwrap_or_default();
        let data = paths
            .iter()
            .find(|p| p["path"] == initramfs::DATA_MOUNT)
            .unwrap_or_else(|| panic!("no {} in {r}", initramfs::DATA_MOUNT));
        assert!(data.get("error").is_none(), "{data}");
        assert_eq!(data["minimum"], 0, "{data}");
        let trimmed = data["trimmed"].as_u64().unwrap_or(0);
        assert!(trimmed >= 8 << 20, "at least the freed 8 MiB: {data}");
        let r = ok(
            a.execute("guest-fstrim", Some(json!({"minimum": 1048576}))),
            "fstrim with minimum",
        );
        let data = r["paths"]
            .as_array()
            .and_then(|l| l.iter().find(|p| p["path"] == initramfs::DATA_MOUNT))
            .cloned();
        assert_eq!(
            data.map(|d| d["minimum"].clone()),
            Some(json!(1048576)),
            "{r}"
        );
    });
}

#[test]
fn set_time_and_rtc() {
    with_guest("set-time", |g| {
        let mut a = g.agent().unwrap();
        let hour = 3_600_000_000_000i64;
        let target = now_ns() + 24 * hour;
        ok(
            a.execute("guest-set-time", Some(json!({"time": target}))),
            "set-time",
        );
        let got = ok(a.get_time(), "get-time");
        assert!(
            (got - target).abs() < 10 * 1_000_000_000,
            "clock {got} vs set {target}"
        );
        // set-time also wrote the RTC (hwclock -w): setting the clock from the RTC keeps the day.
        ok(a.execute("guest-set-time", None), "set-time from RTC");
        let got = ok(a.get_time(), "get-time");
        assert!(
            (got - target).abs() < 20 * 1_000_000_000,
            "clock {got} after hwclock -s vs {target}"
        );
        let (class, desc) = agent_err(
            a.execute(
                "guest-set-time",
                Some(json!({"time": 3_155_760_000i64 * 1_000_000_000})),
            ),
            "year 2070",
        );
        assert_eq!(
            (class.as_str(), desc.starts_with("Invalid time")),
            ("GenericError", true),
            "{desc}"
        );
        // Put the guest (and its RTC) back on the host's time.
        let now = now_ns();
        ok(
            a.execute("guest-set-time", Some(json!({"time": now}))),
            "restore time",
        );
        let got = ok(a.get_time(), "get-time");
        assert!(
            (got - now).abs() < 10 * 1_000_000_000,
            "restored clock {got} vs {now}"
        );
        assert_eq!(got % 1000, 0, "microsecond resolution, as upstream");
    });
}

fn shadow_field(a: &mut Client, user: &str) -> String {
    let shadow = read_file(a, "/etc/shadow");
    shadow
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{user}:")))
        .and_then(|rest| rest.split(':').next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("{user} not in /etc/shadow: {shadow}"))
}

#[test]
fn set_user_password_plain_and_crypted() {
    with_guest("set-user-password", |g| {
        let mut a = g.agent().unwrap();
        let before = shadow_field(&mut a, initramfs::TEST_USER);
        let password = "s3cret pass";
        ok(
            a.execute(
                "guest-set-user-password",
                Some(json!({"username": "tester", "password": b64(password), "crypted": false})),
            ),
            "plain password",
        );
        let hash = shadow_field(&mut a, initramfs::TEST_USER);
        assert_ne!(hash, before);
        assert!(hash.starts_with("$6$"), "{hash}");
        // The hash is of this password: recompute it with the same salt in the guest.
        let salt = hash.split('$').nth(2).unwrap_or_default().to_string();
        let again = sh(
            &mut a,
            &format!("mkpasswd -m sha512 -S '{salt}' '{password}'"),
        );
        assert_eq!(again.trim(), hash);

        let crypted = "$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG.";
        ok(
            a.execute(
                "guest-set-user-password",
                Some(json!({"username": "tester", "password": b64(crypted), "crypted": true})),
            ),
            "crypted password",
        );
        assert_eq!(shadow_field(&mut a, initramfs::TEST_USER), crypted);
        assert_eq!(shadow_field(&mut a, "root"), "*", "root untouched");

        let (_, desc) = agent_err(
            a.execute(
                "guest-set-user-password",
                Some(json!({"username": "test:er", "password": b64("x"), "crypted": false})),
            ),
            "colon in user name",
        );
        assert_eq!(desc, "forbidden characters in username");
        let (_, desc) = agent_err(
            a.execute(
                "guest-set-user-password",
                Some(json!({"username": "tester", "password": b64("a\nb"), "crypted": false})),
            ),
            "newline in password",
        );
        assert_eq!(desc, "forbidden characters in raw password");
        let (_, desc) = agent_err(
            a.execute(
                "guest-set-user-password",
                Some(json!({"username": "nobody-here", "password": b64("x"), "crypted": false})),
            ),
            "unknown user",
        );
        // Master appends chpasswd's output (or the exit status) after a colon; 7.2 did not.
        assert!(
            desc.starts_with("child process has failed to set user password"),
            "{desc}"
        );
    });
}

#[test]
fn ssh_authorized_keys_for_the_test_user() {
    with_guest("ssh keys", |g| {
        let mut a = g.agent().unwrap();
        sh(&mut a, "rm -rf /home/tester/.ssh");
        let k1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOne test@one";
        let k2 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQTwo test@two";
        let k3 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIThree test@three";
        let get = |a: &mut Client| {
            let v = ok(
                a.execute(
                    "guest-ssh-get-authorized-keys",
                    Some(json!({"username": "tester"})),
                ),
                "get keys",
            );
            let mut keys: Vec<String> = v["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_string())
                .collect();
            keys.sort();
            keys
        };
        let sorted = |v: Vec<&str>| {
            let mut v: Vec<String> = v.into_iter().map(String::from).collect();
            v.sort();
            v
        };
        ok(
            a.execute(
                "guest-ssh-add-authorized-keys",
                Some(json!({"username": "tester", "keys": [k1, k2]})),
            ),
            "add",
        );
        assert_eq!(get(&mut a), sorted(vec![k1, k2]));
        // Mode and ownership, as sshd's StrictModes wants them.
        let st = sh(
            &mut a,
            "stat -c '%a %u %g' /home/tester/.ssh /home/tester/.ssh/authorized_keys",
        );
        assert_eq!(st, "700 1000 1000\n600 1000 1000\n");
        // Adding a present key again does not duplicate it.
        ok(
            a.execute(
                "guest-ssh-add-authorized-keys",
                Some(json!({"username": "tester", "keys": [k2, k3]})),
            ),
            "add again",
        );
        assert_eq!(get(&mut a), sorted(vec![k1, k2, k3]));
        assert_eq!(
            read_file(&mut a, "/home/tester/.ssh/authorized_keys")
                .matches(k2)
                .count(),
            1
        );
        ok(
            a.execute(
                "guest-ssh-remove-authorized-keys",
                Some(json!({"username": "tester", "keys": [k1, "absent"]})),
            ),
            "remove",
        );
        assert_eq!(get(&mut a), sorted(vec![k2, k3]));
        ok(
            a.execute(
                "guest-ssh-add-authorized-keys",
                Some(json!({"username": "tester", "keys": [k1], "reset": true})),
            ),
            "reset",
        );
        assert_eq!(get(&mut a), vec![k1.to_string()]);
        let st = sh(
            &mut a,
            "stat -c '%a %u %g' /home/tester/.ssh/authorized_keys",
        );
        assert_eq!(st, "600 1000 1000\n", "after the atomic rewrite");
        let (_, desc) = agent_err(
            a.execute(
                "guest-ssh-add-authorized-keys",
                Some(json!({"username": "tester", "keys": ["# comment"]})),
            ),
            "comment as key",
        );
        assert_eq!(desc, "invalid OpenSSH public key: '# comment'");
        let (_, desc) = agent_err(
            a.execute(
                "guest-ssh-get-authorized-keys",
                Some(json!({"username": "no-such-user-qga"})),
            ),
            "unknown user",
        );
        assert!(
            desc.starts_with("failed to lookup user 'no-such-user-qga'"),
            "{desc}"
        );
        sh(&mut a, "rm -rf /home/tester/.ssh");
    });
}

/// The attacks of issue 15 that an unprivileged user can plant, against `qga` as root: each
/// planted file belongs to the test user (made by root and `chown -h`ed, which is what the
/// user could make alone), the host drives the agent, and the test checks that no secret reaches
/// the user, that nothing outside the user's files changes, and that the agent answers the
/// next request.
#[test]
fn hostile_user_cannot_turn_the_agent_against_the_guest() {
    with_guest("hostile user", |g| {
        let mut a = g.agent().unwrap();
        a.set_timeout(Duration::from_secs(30));
        let home = initramfs::TEST_HOME;
        let keys = format!("{home}/.ssh/authorized_keys");
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostile test@hostile";
        // Every file outside the user's home, before and after the attacks.
        let snapshot = |a: &mut Client| Snapshot::parse(&sh(a, SNAPSHOT_COMMAND));
        sh(
            &mut a,
            &format!("{}; mkdir -p {SCRATCH}", initramfs::ROOT_KEYS_SETUP),
        );
        let before = snapshot(&mut a);
        let plant = |a: &mut Client, what: &str| {
            sh(a, &initramfs::plant_in_ssh(what));
        };
        let add = |a: &mut Client| {
            a.execute(
                "guest-ssh-add-authorized-keys",
                Some(json!({"username": "tester", "keys": [key]})),
            )
        };
        let get = |a: &mut Client| {
            a.execute(
                "guest-ssh-get-authorized-keys",
                Some(json!({"username": "tester"})),
            )
        };
        let remove = |a: &mut Client| {
            a.execute(
                "guest-ssh-remove-authorized-keys",
                Some(json!({"username": "tester", "keys": [key]})),
            )
        };
        // 1. The keys file is a link to /etc/shadow.
        plant(&mut a, &format!("ln -s /etc/shadow {keys}"));
        for (what, r) in [
            ("add", add(&mut a).map(|_| ())),
            ("get", get(&mut a).map(|_| ())),
            ("remove", remove(&mut a).map(|_| ())),
        ] {
            let (_, desc) = agent_err(r, what);
            assert_eq!(
                desc,
                format!("refusing '{keys}': it is a symbolic link"),
                "{what}"
            );
        }
        // No file the user owns holds a line of /etc/shadow.
        let leaked = sh(
            &mut a,
            &format!(
                "find {home} -type f -user 1000 -exec grep -l '^root:' {{}} \\; 2>/dev/null; true"
            ),
        );
        assert_eq!(leaked, "", "shadow lines reached the user");
        // 2. ~/.ssh is a link to root's.
        sh(
            &mut a,
            &format!(
                "rm -rf {home}/.ssh && ln -s /root/.ssh {home}/.ssh && chown -h 1000:1000 {home}/.ssh"
            ),
        );
        let (_, desc) = agent_err(add(&mut a), "add through a linked .ssh");
        assert_eq!(
            desc,
            format!("refusing '{home}/.ssh': it is a symbolic link")
        );
        // 3. A FIFO, and 4. a link to /dev/zero: refused, and the agent answers at once.
        plant(&mut a, &format!("mkfifo {keys}"));
        let (_, desc) = agent_err(add(&mut a), "add with a FIFO");
        assert_eq!(desc, format!("refusing '{keys}': it is not a regular file"));
        ok(a.ping(), "ping after the FIFO");
        plant(&mut a, &format!("ln -s /dev/zero {keys}"));
        let (_, desc) = agent_err(get(&mut a), "get with /dev/zero");
        assert_eq!(desc, format!("refusing '{keys}': it is a symbolic link"));
        ok(a.ping(), "ping after /dev/zero");
        // 5. A group-writable ~/.ssh.
        plant(&mut a, "true");
        sh(&mut a, &format!("chmod 770 {home}/.ssh"));
        let (_, desc) = agent_err(add(&mut a), "add to a group-writable .ssh");
        assert_eq!(
            desc,
            format!("refusing '{home}/.ssh': writable by group or others (mode 770)")
        );
        assert_eq!(
            snapshot(&mut a).changes_since(&before),
            Vec::<String>::new(),
            "files outside the user's home changed"
        );
        // The honest case still works, with the user's ownership.
        sh(&mut a, &format!("rm -rf {home}/.ssh"));
        ok(add(&mut a), "add for real");
        assert_eq!(
            sh(&mut a, &format!("stat -c '%a %u %g' {home}/.ssh {keys}")),
            "700 1000 1000\n600 1000 1000\n"
        );
        sh(&mut a, &format!("rm -rf {home}/.ssh"));

        // 7. A state directory that is the user's link to /etc: the agent refuses to start
        // (before, it kept its state files in /etc).
        let out = sh(
            &mut a,
            &format!(
                "rm -rf {home}/state {SCRATCH}/log; ln -s /etc {home}/state && chown -h 1000:1000 {home}/state; \
                 /usr/bin/qga -m unix-listen -p {SCRATCH}/sock -t {home}/state -l {SCRATCH}/log; \
                 echo \"exit $?\"; ls /etc | grep -c qga.state; grep -c 'a symbolic link owned by uid 1000' {SCRATCH}/log; \
                 rm -f {home}/state; true"
            ),
        );
        assert_eq!(
            out, "exit 1\n0\n1\n",
            "the agent with a linked state directory"
        );

        // 6. A freeze hook that leaves a background child holding its stdout: the agent
        // answers (the old runner waited for the child, 300 s) and the filesystems end thawed.
        sh(
            &mut a,
            &format!(
                "rm -f {} {} && touch {}",
                initramfs::HOOK_FAIL_FLAG,
                initramfs::HOOK_BACKGROUND_PID,
                initramfs::HOOK_BACKGROUND_FLAG
            ),
        );
        let frozen = a.execute("guest-fsfreeze-freeze", None);
        let thawed = a.execute("guest-fsfreeze-thaw", None);
        let status = a.execute("guest-fsfreeze-status", None);
        // The hook's background child was still running when the agent had answered both.
        let alive = sh(
            &mut a,
            &format!(
                "rm -f {}; p=$(cat {}); kill -0 $p && echo alive; kill $p; true",
                initramfs::HOOK_BACKGROUND_FLAG,
                initramfs::HOOK_BACKGROUND_PID
            ),
        );
        assert_eq!(alive, "alive\n", "the hook's background child");
        let n = ok(frozen, "freeze with a backgrounding hook");
        assert!(n.as_i64().is_some_and(|n| n >= 1), "froze {n}");
        ok(thawed, "thaw with a backgrounding hook");
        assert_eq!(ok(status, "status"), json!("thawed"));
        assert_eq!(
            snapshot(&mut a).changes_since(&before),
            Vec::<String>::new(),
            "files outside the user's home changed"
        );
        sh(&mut a, &format!("rm -rf {SCRATCH}"));
    });
}

#[test]
fn vcpus_offline_and_online() {
    with_guest("vcpus", |g| {
        let mut a = g.agent().unwrap();
        let cpu = |v: &Value, id: i64| -> Value {
            v.as_array()
                .and_then(|l| l.iter().find(|c| c["logical-id"] == id))
                .cloned()
                .unwrap_or_else(|| panic!("no cpu{id} in {v}"))
        };
        let v = ok(a.execute("guest-get-vcpus", None), "get-vcpus");
        assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
        assert_eq!(
            cpu(&v, 1),
            json!({"logical-id": 1, "online": true, "can-offline": true})
        );
        assert_eq!(cpu(&v, 0)["online"], true);

        let n = ok(
            a.execute(
                "guest-set-vcpus",
                Some(json!({"vcpus": [{"logical-id": 1, "online": false}]})),
            ),
            "cpu1 offline",
        );
        assert_eq!(n, json!(1));
        let v = ok(a.execute("guest-get-vcpus", None), "get-vcpus");
        assert_eq!(cpu(&v, 1)["online"], false, "{v}");
        assert_eq!(
            read_file(&mut a, "/sys/devices/system/cpu/online").trim(),
            "0"
        );
        let n = ok(
            a.execute(
                "guest-set-vcpus",
                Some(json!({"vcpus": [{"logical-id": 1, "online": true}]})),
            ),
            "cpu1 online",
        );
        assert_eq!(n, json!(1));
        let v = ok(a.execute("guest-get-vcpus", None), "get-vcpus");
        assert_eq!(cpu(&v, 1)["online"], true, "{v}");
        assert_eq!(
            read_file(&mut a, "/sys/devices/system/cpu/online").trim(),
            "0-1"
        );
        // No change needed: still counted as processed.
        let n = ok(
            a.execute(
                "guest-set-vcpus",
                Some(json!({"vcpus": [{"logical-id": 1, "online": true}]})),
            ),
            "cpu1 online again",
        );
        assert_eq!(n, json!(1));
        assert_eq!(
            ok(
                a.execute("guest-set-vcpus", Some(json!({"vcpus": []}))),
                "empty"
            ),
            json!(0)
        );
        if cpu(&v, 0)["can-offline"] == false {
            let (_, desc) = agent_err(
                a.execute(
                    "guest-set-vcpus",
                    Some(json!({"vcpus": [{"logical-id": 0, "online": false}]})),
                ),
                "cpu0 offline",
            );
            assert_eq!(desc, "logical processor #0 can't be offlined");
        }
    });
}

#[test]
fn memory_blocks() {
    with_guest("memory blocks", |g| {
        let mut a = g.agent().unwrap();
        let info = ok(a.execute("guest-get-memory-block-info", None), "block info");
        let size_hex = read_file(&mut a, "/sys/devices/system/memory/block_size_bytes");
        let size = u64::from_str_radix(size_hex.trim(), 16).unwrap();
        assert_eq!(info, json!({"size": size}));
        let blocks = ok(a.execute("guest-get-memory-blocks", None), "blocks");
        let list = blocks.as_array().cloned().unwrap_or_default();
        let sys = sh(
            &mut a,
            "ls /sys/devices/system/memory | grep -c '^memory[0-9]'",
        );
        assert_eq!(list.len(), sys.trim().parse::<usize>().unwrap(), "{blocks}");
        assert!(list.iter().all(|b| b["online"] == true), "{blocks}");
        let unknown = ok(
            a.execute(
                "guest-set-memory-blocks",
                Some(json!({"mem-blks": [{"phys-index": 99999, "online": false}]})),
            ),
            "unknown block",
        );
        // Upstream reports the errno of the failed lookup (ENOENT) with not-found.
        assert_eq!(
            unknown,
            json!([{"phys-index": 99999, "response": "not-found", "error-code": 2}])
        );
        assert_eq!(
            ok(
                a.execute("guest-set-memory-blocks", Some(json!({"mem-blks": []}))),
                "empty"
            ),
            json!([])
        );
        // The guest boots with movablecore=256M nokaslr (see GuestOptions) so that some block can
        // usually go offline; which one the kernel manages depends on what is in memory at the
        // time (a block with unmovable pages answers EBUSY), so try the blocks from the top
        // until one goes, checking every answer against sysfs. Each request also carries an
        // unknown block, to check that every entry gets its own answer, in order.
        let state = |a: &mut Client, i: u64| {
            read_file(a, &format!("/sys/devices/system/memory/memory{i}/state"))
                .trim()
                .to_string()
        };
        let mut indexes: Vec<u64> = list
            .iter()
            .filter_map(|b| b["phys-index"].as_u64())
            .filter(|&i| i > 0)
            .collect();
        indexes.sort();
        let mut refused = Vec::new();
        let mut offlined = None;
        for &i in indexes.iter().rev() {
            let r = ok(
                a.execute(
                    "guest-set-memory-blocks",
                    Some(json!({"mem-blks": [
                        {"phys-index": i, "online": false},
                        {"phys-index": 99999, "online": false}
                    ]})),
                ),
                "offline",
            );
            assert_eq!(
                r[1],
                json!({"phys-index": 99999, "response": "not-found", "error-code": 2}),
                "{r}"
            );
            assert_eq!(r[0]["phys-index"], i, "{r}");
            match r[0]["response"].as_str() {
                Some("success") => {
                    assert_eq!(state(&mut a, i), "offline", "{r}");
                    offlined = Some(i);
                    break;
                }
                Some("operation-failed") => {
                    assert_eq!(state(&mut a, i), "online", "{r}");
                    let errno = r[0]["error-code"].as_i64().unwrap_or(0);
                    assert!(errno > 0, "the kernel's errno is reported: {r}");
                    refused.push((i, errno));
                }
                _ => panic!("unexpected answer {r}"),
            }
        }
        let Some(block) = offlined else {
            let layout = sh(&mut a, "grep -i kernel /proc/iomem; cat /proc/cmdline");
            panic!(
                "the kernel refused to offline every block (block, errno): {refused:?}; \
                 kernel layout and command line:\n{layout}"
            );
        };
        let blocks = ok(a.execute("guest-get-memory-blocks", None), "blocks");
        let b = blocks
            .as_array()
            .and_then(|l| l.iter().find(|b| b["phys-index"] == block))
            .cloned();
        assert_eq!(
            b.map(|b| b["online"].clone()),
            Some(json!(false)),
            "{blocks}"
        );
        let r = ok(
            a.execute(
                "guest-set-memory-blocks",
                Some(json!({"mem-blks": [{"phys-index": block, "online": true}]})),
            ),
            "online",
        );
        assert_eq!(r, json!([{"phys-index": block, "response": "success"}]));
        assert_eq!(state(&mut a, block), "online");
        // Already online: nothing to write, still a success.
        let r = ok(
            a.execute(
                "guest-set-memory-blocks",
                Some(json!({"mem-blks": [{"phys-index": block, "online": true}]})),
            ),
            "online again",
        );
        assert_eq!(r, json!([{"phys-index": block, "response": "success"}]));
        report(&format!(
            "memory blocks: memory{block} went offline and back; refused first (block, errno): {refused:?}"
        ));
    });
}

#[test]
fn isa_serial_agent_basics() {
    with_guest("ISA serial agent", |g| {
        let mut a = g.isa_agent().unwrap();
        ok(a.ping(), "ping");
        ok(a.sync(), "guest-sync");
        let enabled = ok(a.enabled_commands(), "info");
        assert!(enabled.len() >= LINUX_COMMANDS.len(), "{enabled:?}");
        let t = ok(a.get_time(), "time");
        assert!(
            (t - now_ns()).abs() < 120 * 1_000_000_000,
            "guest clock {t} is near the host's"
        );
        assert_eq!(
            ok(a.execute("guest-get-host-name", None), "host name"),
            json!({"host-name": initramfs::GUEST_HOSTNAME})
        );
        let out: ExecOutput = ok(
            a.run("/bin/echo", &["over", "ttyS1"], Duration::from_secs(30)),
            "exec",
        );
        assert_eq!(out.stdout, b"over ttyS1\n");
        assert_eq!(read_file(&mut a, "/etc/hostname"), "qga-guest\n");
        // Pipelined requests in one write: every reply arrives (upstream loses some on serial).
        let mut burst = Vec::new();
        for id in 0..20 {
            burst.extend(
                json!({"execute": "guest-ping", "id": id})
                    .to_string()
                    .into_bytes(),
            );
        }
        ok(a.send_raw(&burst), "burst");
        for id in 0..20 {
            let v = ok(a.read_value(), "burst reply");
            assert_eq!(v, json!({"return": {}, "id": id}));
        }
        // A 64 KiB file over the serial line.
        let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
        ok(a.push(&data, "/run/isa-blob", 16 * 1024), "push");
        assert_eq!(ok(a.pull("/run/isa-blob", 64 * 1024), "pull"), data);
    });
}

// ---------------------------------------------------------------------------------------------
// Suspend and shutdown: each on a guest of its own.

#[test]
fn suspend_modes() {
    let mut own = boot_own("suspend", true);
    let t = Instant::now();
    let g = &mut own.guest;
    let mut a = g.agent().unwrap();
    // Hybrid has no sysfs method and there is no systemd or pm-utils in the image.
    let (class, desc) = agent_err(a.execute("guest-suspend-hybrid", None), "suspend-hybrid");
    assert_eq!(
        (class.as_str(), desc.as_str()),
        (
            "GenericError",
            "the requested suspend mode is not supported by the guest"
        )
    );
    let states = read_file(&mut a, "/sys/power/state");
    report(&format!("suspend: /sys/power/state = {:?}", states.trim()));
    // Our own test guest (Debian's kernel, QEMU with ACPI S3 enabled) offers S3 and
    // hibernation. Without them the suspend-ram and suspend-disk paths below would go untested
    // while the test still passed, so their absence fails the test: it is a broken test guest,
    // not a reason to check less.
    for needed in ["mem", "disk"] {
        assert!(
            states.split_whitespace().any(|s| s == needed),
            "{}",
            g.failure(&format!(
                "/sys/power/state is {:?}, without `{needed}`: the test guest must offer S3 \
                 (mem) and hibernation (disk), or guest-suspend-ram/-disk go untested",
                states.trim()
            ))
        );
    }
    {
        // S3 under TCG: the guest suspends, QEMU reports SUSPEND, and system_wakeup resumes it.
        a.send(&json!({"execute": "guest-suspend-ram"})).unwrap();
        // QEMU's chardev serves one client at a time: reconnect after the wakeup.
        drop(a);
        let ev = g
            .qmp()
            .unwrap()
            .wait_event("SUSPEND", Duration::from_secs(60));
        let ev = ev.unwrap_or_else(|e| {
            panic!(
                "{}",
                g.failure(&format!("no SUSPEND after suspend-ram: {e}"))
            )
        });
        report(&format!("suspend: guest suspended ({ev})"));
        let status = g.qmp().unwrap().execute("query-status", None).unwrap();
        assert_eq!(status["status"], "suspended", "{status}");
        g.qmp().unwrap().execute("system_wakeup", None).unwrap();
        g.qmp()
            .unwrap()
            .wait_event("WAKEUP", Duration::from_secs(30))
            .unwrap();
        // The guest is back (the ISA agent answers); the agent that suspended it must be too.
        let mut isa = g
            .isa_agent()
            .unwrap_or_else(|e| panic!("{}", g.failure(&format!("ISA agent after wakeup: {e}"))));
        ok(isa.ping(), "ISA ping after resume");
        let mut a = g.agent().unwrap_or_else(|e| {
            panic!(
                "{}",
                g.failure(&format!(
                    "virtio agent after wakeup (the ISA one answers): {e}"
                ))
            )
        });
        ok(a.ping(), "ping after resume");
        let dmesg = sh(&mut a, "dmesg | grep 'PM: suspend' || true");
        assert!(
            dmesg.contains("PM: suspend entry (deep)"),
            "S3, not s2idle: {dmesg}"
        );
        assert!(dmesg.contains("PM: suspend exit"), "{dmesg}");
    }
    let mut a = g.agent().unwrap();
    {
        // Hibernation needs swap, which the guest has none of: the kernel refuses the write,
        // and the agent must say so instead of going silent.
        let r = a.request(&json!({"execute": "guest-suspend-disk"}));
        match r {
            Ok(v) => {
                let desc = v["error"]["desc"].as_str().unwrap_or_default().to_string();
                assert!(!desc.is_empty(), "suspend-disk without swap answered {v}");
                report(&format!("suspend: suspend-disk without swap: {desc}"));
            }
            Err(e) => panic!(
                "{}",
                g.failure(&format!("suspend-disk without swap gave no error: {e}"))
            ),
        }
        drop(a);
        ok(
            g.agent().unwrap().ping(),
            "agent alive after the refused hibernation",
        );
    }
    report(&format!(
        "suspend: done {:.1}s after boot",
        t.elapsed().as_secs_f64()
    ));
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Ends {
    /// QMP SHUTDOWN with this reason, then QEMU exits.
    Exit(&'static str),
    /// The kernel halts; QEMU keeps running with stopped CPUs.
    Halted,
}

fn shutdown_case(name: &str, mode: &str, helpers: bool, ends: Ends, via_cli: bool) {
    shutdown_case_on(name, mode, helpers, false, ends, via_cli);
}

/// [`shutdown_case`], on the image whose `/init` is a shell script that ignores the helpers'
/// signals when `shell_init` (then the helpers are present, exit 0 and do nothing, and the
/// agent must bring the guest down itself).
fn shutdown_case_on(
    name: &str,
    mode: &str,
    helpers: bool,
    shell_init: bool,
    ends: Ends,
    via_cli: bool,
) {
    let mut own = if shell_init {
        let images = images();
        let slot = Slot::acquire();
        let mut opts = GuestOptions::new(images, true);
        opts.initrd = images.initramfs_shell_init.clone();
        match LinuxGuest::boot(&opts) {
            Ok(guest) => OwnGuest { guest, _slot: slot },
            Err(e) => panic!("{name}: the guest did not boot: {e}"),
        }
    } else {
        boot_own(name, helpers)
    };
    let t = Instant::now();
    let g = &mut own.guest;
    let mut a = g.agent().unwrap();
    if !helpers {
        let out = sh(
            &mut a,
            "for f in /sbin/poweroff /sbin/halt /sbin/reboot /sbin/shutdown; do [ -e $f ] && echo $f; done; true",
        );
        assert_eq!(out, "", "the no-helper image has no shutdown helpers");
    }
    // success-response false: no reply on success. The powerdown case goes through the
    // `qga-client shutdown` command (same request, no id), the others through the library.
    let cli = via_cli.then(|| {
        drop(std::mem::replace(&mut a, g.isa_agent().unwrap()));
        let sock = g
            .virtio_socket
            .to_str()
            .expect("utf-8 socket path")
            .to_string();
        let mode = mode.to_string();
        std::thread::spawn(move || {
            client_cli::run(
                &[&sock, "--timeout", "60", "shutdown", "--mode", &mode],
                b"",
                Duration::from_secs(120),
            )
        })
    });
    if !via_cli {
        a.send(&json!({"execute": "guest-shutdown", "arguments": {"mode": mode}, "id": name}))
            .unwrap();
    }
    // Until the machine goes down: an answer on the agent (an error) fails at once; QMP or the
    // console tells when it went.
    let sent = Instant::now();
    let deadline = sent + Duration::from_secs(120);
    let mut stream_open = true;
    let event = loop {
        if stream_open {
            match a.read_line_within(Duration::from_millis(300)) {
                Ok(line) => panic!(
                    "{}",
                    g.failure(&format!(
                        "{name}: guest-shutdown answered {}",
                        String::from_utf8_lossy(&line)
                    ))
                ),
                Err(ClientError::Timeout(_)) => {}
                // The guest closed the port or QEMU went away.
                Err(_) => stream_open = false,
            }
        }
        match ends {
            Ends::Exit(_) => {
                if let Ok(ev) = g
                    .qmp()
                    .unwrap()
                    .wait_event("SHUTDOWN", Duration::from_millis(700))
                {
                    break Some(ev);
                }
            }
            Ends::Halted => {
                if g.console().contains("reboot: System halted") {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        if Instant::now() >= deadline {
            panic!(
                "{}",
                g.failure(&format!("{name}: the guest did not go down"))
            );
        }
    };
    report(&format!(
        "{name}: down {:.1}s after guest-shutdown",
        sent.elapsed().as_secs_f64()
    ));
    if let Some(cli) = cli {
        let r = cli
            .join()
            .expect("qga-client thread")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.status, Some(0), "{name}: qga-client shutdown: {r:?}");
        assert_eq!((r.out(), r.err()), (String::new(), String::new()), "{name}");
    }
    match (ends, event) {
        (Ends::Exit(reason), Some(ev)) => {
            assert_eq!(ev["data"]["guest"], true, "{ev}");
            assert_eq!(ev["data"]["reason"], reason, "{ev}");
            let exit_wait = Instant::now();
            let st = g.wait_exit(Duration::from_secs(30));
            report(&format!(
                "{name}: QEMU exited {:.1}s after the SHUTDOWN event",
                exit_wait.elapsed().as_secs_f64()
            ));
            let st = st
                .unwrap_or_else(|| panic!("{}", g.failure(&format!("{name}: QEMU did not exit"))));
            assert!(st.success(), "{name}: QEMU exit {st}");
        }
        _ => {
            std::thread::sleep(Duration::from_secs(1));
            assert!(
                g.try_exit_status().is_none(),
                "a halted machine keeps QEMU running"
            );
            let status = g.qmp().unwrap().execute("query-status", None);
            report(&format!("{name}: halted; QEMU status {status:?}"));
        }
    }
    let console = g.console();
    if shell_init {
        assert!(
            console.contains("qga-guest: shell init waiting")
                && !console.contains("qga-guest: shutdown actions"),
            "{name}: PID 1 was the shell script, which ignored the helper:\n{console}"
        );
    } else if helpers {
        assert!(
            console.contains("qga-guest: shutdown actions"),
            "{name}: busybox init ran rcK:\n{console}"
        );
    } else {
        assert!(
            !console.contains("qga-guest: shutdown actions"),
            "{name}: reboot(2) bypasses init:\n{console}"
        );
    }
    report(&format!(
        "{name}: done {:.1}s after boot",
        t.elapsed().as_secs_f64()
    ));
}

#[test]
fn shutdown_powerdown_with_a_shell_init() {
    shutdown_case_on(
        "shutdown powerdown (shell init)",
        "powerdown",
        true,
        true,
        Ends::Exit("guest-shutdown"),
        false,
    );
}

#[test]
fn shutdown_reboot_with_a_shell_init() {
    shutdown_case_on(
        "shutdown reboot (shell init)",
        "reboot",
        true,
        true,
        Ends::Exit("guest-reset"),
        false,
    );
}

#[test]
fn shutdown_halt_with_a_shell_init() {
    shutdown_case_on(
        "shutdown halt (shell init)",
        "halt",
        true,
        true,
        Ends::Halted,
        false,
    );
}

#[test]
fn shutdown_powerdown_via_poweroff() {
    shutdown_case(
        "shutdown powerdown",
        "powerdown",
        true,
        Ends::Exit("guest-shutdown"),
        true,
    );
}

#[test]
fn shutdown_reboot_via_reboot() {
    shutdown_case(
        "shutdown reboot",
        "reboot",
        true,
        Ends::Exit("guest-reset"),
        false,
    );
}

#[test]
fn shutdown_halt_via_halt() {
    shutdown_case("shutdown halt", "halt", true, Ends::Halted, false);
}

#[test]
fn shutdown_powerdown_via_reboot_syscall() {
    shutdown_case(
        "shutdown powerdown (reboot(2))",
        "powerdown",
        false,
        Ends::Exit("guest-shutdown"),
        false,
    );
}

#[test]
fn shutdown_reboot_via_reboot_syscall() {
    shutdown_case(
        "shutdown reboot (reboot(2))",
        "reboot",
        false,
        Ends::Exit("guest-reset"),
        false,
    );
}

#[test]
fn shutdown_halt_via_reboot_syscall() {
    shutdown_case(
        "shutdown halt (reboot(2))",
        "halt",
        false,
        Ends::Halted,
        false,
    );
}
