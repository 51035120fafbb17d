//! The information commands of the real `qga` binary, over a real unix socket, checked against
//! this machine.
//!
//! Each test starts the agent in `unix-listen` mode in its own temporary directory, with every
//! command that changes the system blocked (`-b`, the host runs as root), asks one family's
//! questions and compares the answers with what the kernel says through other paths (sysfs,
//! procfs, `uname`, `date`, `df`). The agent is killed by PID when the test ends, pass or fail.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;
use common::{Proc, TempDir, agent_command, wait_for_socket};

/// A running agent and a connection to it; killed and cleaned up on drop.
struct Agent {
    // Dropped in this order: the agent is killed before its directory goes.
    _proc: Proc,
    _dir: TempDir,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Agent {
    fn start() -> Agent {
        Agent::start_with(&[])
    }

    fn start_with(env: &[(&str, &Path)]) -> Agent {
        let dir = TempDir::new("info");
        let mut cmd = agent_command(dir.path(), &[]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut proc = Proc(Some(cmd.spawn().expect("start qga")));
        let sock = dir.path().join("sock");
        wait_for_socket(&sock, &mut proc);
        let stream = UnixStream::connect(&sock).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let writer = stream.try_clone().unwrap();
        Agent {
            _proc: proc,
            _dir: dir,
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// Send one request and parse the one-line response.
    fn request(&mut self, req: &str) -> Json {
        self.writer.write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a response line");
        assert!(
            line.ends_with('\n'),
            "response not newline-terminated: {line:?}"
        );
        serde_json::from_str(line.trim_end()).unwrap_or_else(|e| panic!("bad JSON ({e}): {line}"))
    }

    /// The `return` value of a command, failing on an error response.
    fn ok(&mut self, cmd: &str) -> Json {
        self.ok_args(cmd, "{}")
    }

    fn ok_args(&mut self, cmd: &str, args: &str) -> Json {
        let r = self.request(&format!(r#"{{"execute": "{cmd}", "arguments": {args}}}"#));
        match r.get("return") {
            Some(v) => v.clone(),
            None => panic!("{cmd} failed: {r:?}"),
        }
    }

    /// The error `desc` of a command that must fail.
    fn err_args(&mut self, cmd: &str, args: &str) -> (String, String) {
        let r = self.request(&format!(r#"{{"execute": "{cmd}", "arguments": {args}}}"#));
        let e = r
            .get("error")
            .unwrap_or_else(|| panic!("{cmd} succeeded: {r:?}"));
        (e.str("class").to_string(), e.str("desc").to_string())
    }
}

/// Responses as `serde_json` values (members in the agent's order: `preserve_order`).
type Json = serde_json::Value;

/// Typed member access that fails the test with the whole value on a mismatch.
trait Members {
    fn has(&self, key: &str) -> bool;
    fn str(&self, key: &str) -> &str;
    fn num(&self, key: &str) -> f64;
    /// An integer member, exactly.
    fn int(&self, key: &str) -> i128;
    fn bool(&self, key: &str) -> bool;
    fn list(&self) -> &[Json];
    fn keys(&self) -> Vec<&str>;
}

impl Members for Json {
    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn str(&self, key: &str) -> &str {
        self.get(key)
            .and_then(Json::as_str)
            .unwrap_or_else(|| panic!("{key} is not a string in {self}"))
    }

    fn num(&self, key: &str) -> f64 {
        self.get(key)
            .and_then(Json::as_f64)
            .unwrap_or_else(|| panic!("{key} is not a number in {self}"))
    }

    fn int(&self, key: &str) -> i128 {
        let v = self.get(key);
        v.and_then(Json::as_i64)
            .map(i128::from)
            .or_else(|| v.and_then(Json::as_u64).map(i128::from))
            .unwrap_or_else(|| panic!("{key} is not an integer in {self}"))
    }

    fn bool(&self, key: &str) -> bool {
        self.get(key)
            .and_then(Json::as_bool)
            .unwrap_or_else(|| panic!("{key} is not a boolean in {self}"))
    }

    fn list(&self) -> &[Json] {
        self.as_array()
            .map(Vec::as_slice)
            .unwrap_or_else(|| panic!("not a list: {self}"))
    }

    fn keys(&self) -> Vec<&str> {
        self.as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[test]
fn host_name_timezone_and_osinfo() {
    let mut a = Agent::start();
    let h = a.ok("guest-get-host-name");
    assert_eq!(h.keys(), ["host-name"]);
    assert_eq!(
        h.str("host-name"),
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim_end()
    );

    let tz = a.ok("guest-get-timezone");
    let date = sh("date +'%Z %z'");
    let (zone, off) = date.trim().split_once(' ').unwrap();
    assert_eq!(tz.str("zone"), zone);
    let sign = if off.starts_with('-') { -1 } else { 1 };
    let secs = sign
        * (off[1..3].parse::<i128>().unwrap() * 3600 + off[3..5].parse::<i128>().unwrap() * 60);
    assert_eq!(tz.int("offset"), secs);

    let os = a.ok("guest-get-osinfo");
    assert_eq!(os.str("kernel-release"), sh("uname -r").trim());
    assert_eq!(os.str("kernel-version"), sh("uname -v").trim());
    assert_eq!(os.str("machine"), sh("uname -m").trim());
    let release = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    for (key, member) in [
        ("ID", "id"),
        ("VERSION_ID", "version-id"),
        ("PRETTY_NAME", "pretty-name"),
    ] {
        let want = release
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(|v| v.trim_matches('"').to_string());
        match want {
            Some(w) => assert_eq!(os.str(member), w, "{member}"),
            None => assert!(!os.has(member), "{member}"),
        }
    }
}

#[test]
fn osinfo_honours_qga_os_release() {
    let dir = std::env::temp_dir().join(format!("qga-linux-info-osr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("os-release");
    // The file test-qga uses, plus a single-quoted value (unquoted here; see DIFFERENCES.md).
    std::fs::write(
        &f,
        "ID=qemu-ga-test\nNAME=QEMU-GA\nPRETTY_NAME=\"QEMU Guest Agent test\"\nVERSION=\"Test 1\"\n\
         VERSION_ID=1\nVARIANT=\"Unit test \\\"'$`\\\\ variant\"\nVARIANT_ID='unit test'\n",
    )
    .unwrap();
    let mut a = Agent::start_with(&[("QGA_OS_RELEASE", &f)]);
    let os = a.ok("guest-get-osinfo");
    assert_eq!(os.str("id"), "qemu-ga-test");
    assert_eq!(os.str("name"), "QEMU-GA");
    assert_eq!(os.str("pretty-name"), "QEMU Guest Agent test");
    assert_eq!(os.str("version"), "Test 1");
    assert_eq!(os.str("version-id"), "1");
    assert_eq!(os.str("variant"), "Unit test \"'$`\\ variant");
    assert_eq!(os.str("variant-id"), "unit test");
    drop(a);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn vcpus_cpustats_and_load() {
    let mut a = Agent::start();
    let vcpus = a.ok("guest-get-vcpus");
    let mut ids = Vec::new();
    for v in vcpus.list() {
        assert_eq!(v.keys(), ["logical-id", "online", "can-offline"]);
        let id = v.int("logical-id");
        ids.push(id);
        let online = std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu{id}/online"));
        match online {
            Ok(s) => {
                assert_eq!(v.bool("online"), !s.starts_with('0'));
                assert!(v.bool("can-offline"));
            }
            Err(_) => {
                assert!(v.bool("online"));
                assert!(!v.bool("can-offline"));
            }
        }
    }
    let dirs: Vec<i128> = std::fs::read_dir("/sys/devices/system/cpu")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("cpu")?.parse().ok())
        .collect();
    assert_eq!(sorted(ids), sorted(dirs));

    let stats = a.ok("guest-get-cpustats");
    let nproc: usize = sh("nproc --all").trim().parse().unwrap();
    assert_eq!(stats.list().len(), nproc);
    for (i, s) in stats.list().iter().enumerate() {
        assert_eq!(s.str("type"), "linux");
        assert_eq!(s.int("cpu"), i as i128);
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
            assert!(s.int(k) >= 0, "{k}");
        }
    }
    // Milliseconds: idle time of cpu0 against /proc/stat in clock ticks.
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu0: Vec<i128> = stat
        .lines()
        .find(|l| l.starts_with("cpu0 "))
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    let tck: i128 = sh("getconf CLK_TCK").trim().parse().unwrap();
    let reported = stats.list()[0].int("user");
    let ticks_ms = cpu0[0] * 1000 / tck;
    assert!(
        ticks_ms >= reported && ticks_ms - reported < 60_000,
        "{ticks_ms} vs {reported}"
    );

    let load = a.ok("guest-get-load");
    assert_eq!(load.keys(), ["load1m", "load5m", "load15m"]);
    let proc_load: f64 = std::fs::read_to_string("/proc/loadavg")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((load.num("load1m") - proc_load).abs() < 2.0);
    assert!(load.num("load15m") >= 0.0);
}

#[test]
fn memory_blocks() {
    let mut a = Agent::start();
    let root = Path::new("/sys/devices/system/memory");
    let blocks = a.ok("guest-get-memory-blocks");
    if !root.exists() {
        assert_eq!(blocks, Json::Array(vec![]));
        return;
    }
    let mut got = Vec::new();
    for b in blocks.list() {
        assert_eq!(b.keys(), ["phys-index", "online", "can-offline"]);
        let i = b.int("phys-index");
        let state = std::fs::read_to_string(root.join(format!("memory{i}/state"))).unwrap();
        assert_eq!(b.bool("online"), state.starts_with("online"), "memory{i}");
        got.push(i);
    }
    let dirs: Vec<i128> = std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("memory")?.parse().ok())
        .collect();
    assert_eq!(sorted(got), sorted(dirs));
    let info = a.ok("guest-get-memory-block-info");
    let size = std::fs::read_to_string(root.join("block_size_bytes")).unwrap();
    assert_eq!(
        info.int("size"),
        i128::from_str_radix(size.trim(), 16).unwrap()
    );
}

#[test]
fn network_interfaces_and_routes() {
    let mut a = Agent::start();
    let ifs = a.ok("guest-network-get-interfaces");
    let names: Vec<String> = ifs
        .list()
        .iter()
        .map(|i| i.str("name").to_string())
        .collect();
    let sys: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    assert_eq!(sorted(names.clone()), sorted(sys));
    for i in ifs.list() {
        let name = i.str("name");
        let addr =
            std::fs::read_to_string(format!("/sys/class/net/{name}/address")).unwrap_or_default();
        let addr = addr.trim();
        if addr.len() == 17 {
            assert_eq!(i.str("hardware-address"), addr, "{name}");
        }
        if let Some(Json::Object(_)) = i.get("statistics") {
            let st = i.get("statistics").unwrap();
            let rx = std::fs::read_to_string(format!("/sys/class/net/{name}/statistics/rx_bytes"))
                .unwrap();
            assert!(st.int("rx-bytes") <= rx.trim().parse::<i128>().unwrap());
        }
    }
    let lo = ifs
        .list()
        .iter()
        .find(|i| i.str("name") == "lo")
        .expect("lo");
    assert_eq!(lo.str("hardware-address"), "00:00:00:00:00:00");
    let lo_addrs = lo.get("ip-addresses").unwrap().list();
    assert!(lo_addrs.iter().any(|x| x.str("ip-address") == "127.0.0.1"
        && x.str("ip-address-type") == "ipv4"
        && x.int("prefix") == 8));

    let routes = a.ok("guest-network-get-route");
    let v4: Vec<Vec<String>> = std::fs::read_to_string("/proc/net/route")
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    let got4: Vec<&Json> = routes
        .list()
        .iter()
        .filter(|r| r.int("version") == 4)
        .collect();
    let got6: Vec<&Json> = routes
        .list()
        .iter()
        .filter(|r| r.int("version") == 6)
        .collect();
    assert_eq!(got4.len(), v4.len());
    assert_eq!(got6.len(), v6.lines().count());
    let quad = |hex: &str| {
        let v = u32::from_str_radix(hex, 16).unwrap();
        std::net::Ipv4Addr::from(v.to_le_bytes()).to_string()
    };
    for (r, f) in got4.iter().zip(&v4) {
        assert_eq!(r.str("iface"), f[0]);
        assert_eq!(r.str("destination"), quad(&f[1]));
        assert_eq!(r.str("gateway"), quad(&f[2]));
        assert_eq!(r.str("mask"), quad(&f[7]));
        assert_eq!(r.int("metric"), f[6].parse::<i128>().unwrap());
    }
    for (r, l) in got6.iter().zip(v6.lines()) {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(r.str("iface"), f[9]);
        assert_eq!(
            r.str("desprefixlen"),
            i64::from_str_radix(f[1], 16).unwrap().to_string()
        );
        assert_eq!(
            r.int("flags"),
            i128::from(u32::from_str_radix(f[8], 16).unwrap())
        );
        let dst: std::net::Ipv6Addr = r.str("destination").parse().unwrap();
        assert_eq!(format!("{:032x}", u128::from(dst)), f[0]);
    }
}

/// The local filesystems upstream lists: mountinfo entries with a non-zero major (btrfs
/// aside), first mount of each device.
fn local_mounts() -> Vec<(String, String, String)> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for l in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
    {
        let (head, tail) = l.split_once(" - ").unwrap();
        let f: Vec<&str> = head.split(' ').collect();
        let ty = tail.split(' ').next().unwrap();
        if f[2].starts_with("0:") || seen.contains(&f[2].to_string()) {
            continue;
        }
        seen.push(f[2].to_string());
        out.push((f[4].replace("\\040", " "), ty.to_string(), f[2].to_string()));
    }
    out
}

#[test]
fn fsinfo_disks_and_diskstats() {
    let mut a = Agent::start();
    let fs = a.ok("guest-get-fsinfo");
    let mut mounts = local_mounts();
    mounts.reverse();
    assert_eq!(fs.list().len(), mounts.len());
    for (f, (dir, ty, devno)) in fs.list().iter().zip(&mounts) {
        assert_eq!(f.str("mountpoint"), dir);
        assert_eq!(f.str("type"), ty);
        if let Ok(p) = std::fs::canonicalize(format!("/sys/dev/block/{devno}")) {
            assert_eq!(f.str("name"), p.file_name().unwrap().to_str().unwrap());
        }
        let size = sh(&format!("df -B1 --output=size '{dir}' | tail -1"));
        assert_eq!(
            f.int("total-bytes-privileged"),
            size.trim().parse::<i128>().unwrap(),
            "{dir}"
        );
        assert!(f.int("used-bytes") <= f.int("total-bytes-privileged"));
        for d in f.get("disk").unwrap().list() {
            assert!(d.has("pci-controller") && d.has("bus-type"));
        }
    }
    if let Some(root) = fs.list().iter().find(|f| f.str("mountpoint") == "/") {
        // On a virtio-blk root (this machine's), the address is fully known.
        let name = root.str("name");
        let sys = std::fs::canonicalize(format!("/sys/class/block/{name}")).unwrap();
        if sys.to_str().unwrap().contains("/virtio")
            && sys.to_str().unwrap().contains("/devices/pci")
        {
            let d = &root.get("disk").unwrap().list()[0];
            assert_eq!(d.str("bus-type"), "virtio");
            assert_eq!(d.str("dev"), format!("/dev/{name}"));
        }
    }

    let disks = a.ok("guest-get-disks");
    let names: Vec<String> = disks
        .list()
        .iter()
        .filter(|d| !d.bool("partition"))
        .map(|d| d.str("name").to_string())
        .collect();
    let want: Vec<String> = std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_to_string(e.path().join("size")).is_ok_and(|s| s != "0\n"))
        .map(|e| format!("/dev/{}", e.file_name().to_str().unwrap()))
        .collect();
    assert_eq!(sorted(names), sorted(want));
    for d in disks.list().iter().filter(|d| d.bool("partition")) {
        let parent = d.get("dependencies").unwrap().list()[0].clone();
        let Json::String(parent) = parent else {
            panic!()
        };
        assert!(d.str("name").starts_with(&parent));
    }

    let stats = a.ok("guest-get-diskstats");
    let lines: Vec<Vec<String>> = std::fs::read_to_string("/proc/diskstats")
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    assert_eq!(stats.list().len(), lines.len());
    for (s, f) in stats.list().iter().zip(&lines) {
        assert_eq!(s.str("name"), f[2]);
        assert_eq!(s.int("major"), f[0].parse::<i128>().unwrap());
        assert_eq!(s.int("minor"), f[1].parse::<i128>().unwrap());
        let st = s.get("stats").unwrap();
        if f.len() >= 14 {
            assert!(st.int("read-ios") <= f[3].parse::<i128>().unwrap() + 1_000_000);
            assert!(st.has("weight-ticks"));
        }
        assert_eq!(st.has("flush-ios"), f.len() >= 20);
    }
}

#[test]
fn users_ssh_keys_and_unsupported() {
    let mut a = Agent::start();
    let users = a.ok("guest-get-users");
    let who = sh("who 2>/dev/null | awk '{print $1}' | sort -u");
    let want: Vec<&str> = who.lines().collect();
    let got: Vec<String> = users
        .list()
        .iter()
        .map(|u| u.str("user").to_string())
        .collect();
    assert_eq!(sorted(got), want);

    let (class, desc) = a.err_args(
        "guest-ssh-get-authorized-keys",
        r#"{"username": "no-such-user-qga"}"#,
    );
    assert_eq!(class, "GenericError");
    assert_eq!(desc, "failed to lookup user 'no-such-user-qga': Success");
    let path = "/root/.ssh/authorized_keys";
    let r = a.request(
        r#"{"execute": "guest-ssh-get-authorized-keys", "arguments": {"username": "root"}}"#,
    );
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mut want: Vec<String> = text
                .split('\n')
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect();
            want.reverse();
            let keys = r.get("return").unwrap().get("keys").unwrap();
            let got: Vec<String> = keys
                .list()
                .iter()
                .map(|k| match k {
                    Json::String(s) => s.clone(),
                    _ => panic!(),
                })
                .collect();
            assert_eq!(got, want);
        }
        Err(_) => assert_eq!(
            r.get("error").unwrap().str("desc"),
            format!(
                "failed to read '{path}': Failed to open file \u{201c}{path}\u{201d}: No such file or directory"
            )
        ),
    }

    // Blocked here; they run in the QEMU guest suite.
    for cmd in [
        "guest-set-vcpus",
        "guest-set-memory-blocks",
        "guest-set-user-password",
    ] {
        let (class, _) = a.err_args(cmd, "{}");
        assert_eq!(class, "CommandNotFound", "{cmd}");
    }
    // Windows-only: not found (upstream master) or unsupported, never served.
    let (class, desc) = a.err_args("guest-get-devices", "{}");
    assert!(
        class == "CommandNotFound" || desc == "this feature or command is not currently supported",
        "{class}: {desc}"
    );
}

#[test]
fn guest_info_enables_the_information_families() {
    let mut a = Agent::start();
    let info = a.ok("guest-info");
    let cmds = info.get("supported_commands").unwrap().list();
    let enabled = |name: &str| {
        cmds.iter()
            .find(|c| c.str("name") == name)
            .unwrap_or_else(|| panic!("{name} missing from guest-info"))
            .bool("enabled")
    };
    for c in [
        "guest-network-get-interfaces",
        "guest-network-get-route",
        "guest-get-vcpus",
        "guest-get-cpustats",
        "guest-get-load",
        "guest-get-memory-blocks",
        "guest-get-memory-block-info",
        "guest-get-fsinfo",
        "guest-get-disks",
        "guest-get-diskstats",
        "guest-get-users",
        "guest-ssh-get-authorized-keys",
        "guest-get-host-name",
        "guest-get-timezone",
        "guest-get-osinfo",
    ] {
        assert!(enabled(c), "{c}");
    }
    for c in [
        "guest-set-vcpus",
        "guest-set-memory-blocks",
        "guest-set-user-password",
        "guest-ssh-add-authorized-keys",
    ] {
        assert!(!enabled(c), "{c} is blocked");
    }
    let devices = cmds.iter().find(|c| c.str("name") == "guest-get-devices");
    assert!(
        devices.is_none_or(|c| !c.bool("enabled")),
        "guest-get-devices is Windows-only"
    );
}
