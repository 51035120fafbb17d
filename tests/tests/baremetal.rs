//! The bare-metal image (`platform-x86`) booted in QEMU under TCG, with the agent channel on a
//! host unix socket: every command it serves, the malformed inputs of docs/protocol.md
//! §2.6, a host reconnect in the middle of a request, shutdown and reboot with QEMU's exit
//! status checked, the machine types (`pc`, `q35`, `microvm` over virtio-mmio), all three transports (COM1, COM2,
//! virtio-console) plus vsock through `vhost-device-vsock` on `microvm` (MMIO) and `q35` (PCI),
//! and the image's own self-tests through isa-debug-exit.
//!
//! Budget: the image boots in well under a second, so each test boots its own VM (one VM serves
//! all the checks of one transport) and every QEMU is killed by PID when its guard drops, also
//! when an assertion fails. Needs qemu-system-x86 and the `x86_64-unknown-none` Rust target.

use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use qga_client::{Client, ClientError, parse_line};
use serde_json::{Value, json};
use tests::baremetal::{self, BareMetalVm, Machine, SELFTEST_PASSED, Transport};
use tests::client_cli;

fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "baremetal: {line}");
}

fn boot(machine: Machine, transport: Transport, append: &str) -> BareMetalVm {
    let append = append.to_string();
    BareMetalVm::boot(machine, transport, |o| {
        o.append = append;
        o.memory_mib = 256;
        o.cpus = 2;
    })
    .unwrap_or_else(|e| panic!("boot {machine:?}/{transport:?}: {e}"))
}

fn client(vm: &mut BareMetalVm) -> Client {
    vm.client()
        .unwrap_or_else(|e| panic!("no answer from the image: {e}"))
}

fn host_now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The command's `return`, failing the test with the VM log on error.
fn ok(c: &mut Client, vm: &BareMetalVm, cmd: &str, args: Option<Value>) -> Value {
    c.execute(cmd, args)
        .unwrap_or_else(|e| panic!("{cmd}: {e}\n{}", vm.log()))
}

/// The error `(class, desc)` a command must fail with.
fn err(c: &mut Client, cmd: &str, args: Option<Value>) -> (String, String) {
    match c.execute(cmd, args) {
        Err(ClientError::Agent { class, desc }) => (class, desc),
        other => panic!("{cmd}: expected an error response, got {other:?}"),
    }
}

const UNSUPPORTED: &str = "this feature or command is not currently supported";

/// The KubeVirt set and everything else the image serves.
const ENABLED: &[&str] = &[
    "guest-sync-delimited",
    "guest-sync",
    "guest-ping",
    "guest-info",
    "guest-get-time",
    "guest-set-time",
    "guest-shutdown",
    "guest-file-open",
    "guest-file-close",
    "guest-file-read",
    "guest-file-write",
    "guest-file-seek",
    "guest-file-flush",
    "guest-get-vcpus",
    "guest-get-memory-blocks",
    "guest-get-memory-block-info",
    "guest-get-users",
    "guest-network-get-interfaces",
    "guest-network-get-route",
    "guest-get-fsinfo",
    "guest-get-diskstats",
    "guest-get-host-name",
    "guest-get-timezone",
    "guest-get-osinfo",
    "guest-exec",
    "guest-exec-status",
];

/// Served elsewhere, not on bare metal.
const DISABLED: &[&str] = &[
    "guest-fsfreeze-status",
    "guest-fsfreeze-freeze",
    "guest-fsfreeze-freeze-list",
    "guest-fsfreeze-thaw",
    "guest-fstrim",
    "guest-suspend-disk",
    "guest-suspend-ram",
    "guest-suspend-hybrid",
    "guest-set-vcpus",
    "guest-set-memory-blocks",
    "guest-get-cpustats",
    "guest-get-load",
    "guest-set-user-password",
    "guest-ssh-get-authorized-keys",
    "guest-ssh-add-authorized-keys",
    "guest-ssh-remove-authorized-keys",
    "guest-get-devices",
    // Blocked on the command line by the suites below.
    "guest-get-disks",
];

const APPEND: &str =
    r#"qga.hostname=bm-test qga.os.pretty-name="Bare Metal Test" qga.block=guest-get-disks"#;

/// Every command the image serves, with its real effects checked.
fn check_commands(vm: &mut BareMetalVm, c: &mut Client, big_files: bool, has_pci: bool) {
    c.sync().expect("guest-sync");
    c.sync_delimited().expect("guest-sync-delimited");
    c.ping().expect("guest-ping");

    // guest-info: the enabled flags say exactly what works.
    let info = ok(c, vm, "guest-info", None);
    assert!(
        info["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{info}"
    );
    let list = info["supported_commands"].as_array().expect("list");
    let enabled = |name: &str| {
        list.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from guest-info"))["enabled"]
            .as_bool()
    };
    for name in ENABLED {
        assert_eq!(enabled(name), Some(true), "{name} should be enabled");
    }
    for name in DISABLED {
        assert_eq!(enabled(name), Some(false), "{name} should be disabled");
    }
    let (class, desc) = err(c, "guest-get-disks", None);
    assert_eq!(class, "CommandNotFound");
    assert_eq!(
        desc,
        "Command guest-get-disks has been disabled: the command is not allowed"
    );
    for cmd in [
        "guest-get-load",
        "guest-fsfreeze-status",
        "guest-get-cpustats",
    ] {
        assert_eq!(
            err(c, cmd, None),
            ("GenericError".into(), UNSUPPORTED.into()),
            "{cmd}"
        );
    }
    assert_eq!(err(c, "guest-suspend-ram", None).1, UNSUPPORTED);

    // Time: the RTC follows the host clock (QEMU's default rtc base=utc).
    let t = c.get_time().expect("guest-get-time");
    let skew = (t - host_now_ns()).abs();
    assert!(
        skew < 5_000_000_000,
        "guest time {t} is {skew} ns off the host"
    );
    assert_eq!(t % 1000, 0, "microsecond resolution, as upstream");
    let target = host_now_ns() - 3_600_000_000_000;
    ok(c, vm, "guest-set-time", Some(json!({"time": target})));
    let t = c.get_time().expect("get-time");
    assert!(
        (t - target).abs() < 5_000_000_000,
        "after set-time: {t} vs {target}"
    );
    // Without a time: the clock is re-read from the RTC, which set-time wrote.
    ok(c, vm, "guest-set-time", None);
    let t = c.get_time().expect("get-time");
    assert!(
        (t - target).abs() < 5_000_000_000,
        "after re-reading the RTC: {t} vs {target}"
    );
    ok(
        c,
        vm,
        "guest-set-time",
        Some(json!({"time": host_now_ns()})),
    );
    assert_eq!(
        err(
            c,
            "guest-set-time",
            Some(json!({"time": -2_000_000_000i64}))
        )
        .1,
        "Invalid time"
    );

    // vCPUs (-smp 2) from the MADT, memory blocks (-m 256) from the memory map.
    let vcpus = ok(c, vm, "guest-get-vcpus", None);
    assert_eq!(
        vcpus,
        json!([
            {"logical-id": 0, "online": true, "can-offline": false},
            {"logical-id": 1, "online": true, "can-offline": false}
        ])
    );
    let blocks = ok(c, vm, "guest-get-memory-blocks", None);
    assert_eq!(
        blocks,
        json!([
            {"phys-index": 0, "online": true, "can-offline": false},
            {"phys-index": 1, "online": true, "can-offline": false}
        ])
    );
    assert_eq!(
        ok(c, vm, "guest-get-memory-block-info", None),
        json!({"size": 134217728})
    );

    // Configuration from the kernel command line.
    assert_eq!(
        ok(c, vm, "guest-get-host-name", None),
        json!({"host-name": "bm-test"})
    );
    assert_eq!(
        ok(c, vm, "guest-get-timezone", None),
        json!({"zone": "UTC", "offset": 0})
    );
    let os = ok(c, vm, "guest-get-osinfo", None);
    assert_eq!(os["pretty-name"], "Bare Metal Test", "{os}");
    assert_eq!(os["machine"], "x86_64", "{os}");
    assert_eq!(os["id"], "qga-baremetal", "{os}");

    // Nothing to report on bare metal: empty lists.
    for cmd in [
        "guest-get-users",
        "guest-network-get-interfaces",
        "guest-network-get-route",
        "guest-get-fsinfo",
        "guest-get-diskstats",
    ] {
        assert_eq!(ok(c, vm, cmd, None), json!([]), "{cmd}");
    }

    // The RAM file store.
    let size = if big_files { 200 * 1024 } else { 6 * 1024 };
    let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 251) as u8).collect();
    c.push(&data, "/fw/blob", 45 * 1024).expect("push");
    assert_eq!(c.pull("/fw/blob", 40 * 1024).expect("pull"), data);
    let (_, desc) = err(
        c,
        "guest-file-open",
        Some(json!({"path": "/nope", "mode": "r"})),
    );
    assert_eq!(
        desc,
        "failed to open file '/nope' (mode: 'r'): No such file or directory"
    );
    let h = c.file_open("/fw/blob", "r+").expect("open r+");
    c.file_seek(h, 300 * 1024, "set")
        .expect("seek past the end");
    let (_, desc) = err(
        c,
        "guest-file-write",
        Some(json!({"handle": h, "buf-b64": "AA=="})),
    );
    assert_eq!(desc, "failed to write to file: No space left on device");
    c.file_close(h).expect("close");
    let (_, desc) = err(c, "guest-file-close", Some(json!({"handle": h})));
    assert_eq!(desc, format!("handle '{h}' has not been found"));

    // Built-in programs.
    let out = c
        .run(
            "/bin/echo",
            &["hello", "bare metal"],
            Duration::from_secs(10),
        )
        .expect("echo");
    assert_eq!(
        (out.exitcode, out.stdout.as_slice()),
        (Some(0), &b"hello bare metal\n"[..])
    );
    let pid = c
        .exec("cat", &[], Some(b"input \x00 bytes"), true)
        .expect("cat");
    let out = c
        .exec_wait(pid, Duration::from_secs(10))
        .expect("cat status");
    assert_eq!(out.stdout, b"input \x00 bytes");
    let cpuid = c.run("cpuid", &[], Duration::from_secs(10)).expect("cpuid");
    assert!(
        String::from_utf8_lossy(&cpuid.stdout).starts_with("vendor: "),
        "{cpuid:?}"
    );
    let pci = c.run("pci", &[], Duration::from_secs(10)).expect("pci");
    let pci = String::from_utf8_lossy(&pci.stdout).into_owned();
    // microvm has no PCI: an empty listing there.
    assert_eq!(
        pci.lines().any(|l| l.ends_with(" class 060000")),
        has_pci,
        "a host bridge: {pci}"
    );
    let memmap = c
        .run("memmap", &[], Duration::from_secs(10))
        .expect("memmap");
    let memmap = String::from_utf8_lossy(&memmap.stdout).into_owned();
    assert!(
        memmap
            .lines()
            .any(|l| l.starts_with("0x0000000000100000-") && l.ends_with(" ram")),
        "{memmap}"
    );
    let stack = c.run("stack", &[], Duration::from_secs(10)).expect("stack");
    let stack = String::from_utf8_lossy(&stack.stdout).into_owned();
    assert!(
        stack.starts_with("stack: ") && stack.contains(" of 65536 bytes used"),
        "{stack}"
    );
    note(stack.trim());
    let bad = c
        .run("cpuid", &["zz"], Duration::from_secs(10))
        .expect("cpuid zz");
    assert_eq!(bad.exitcode, Some(2));
    let (_, desc) = err(c, "guest-exec", Some(json!({"path": "/bin/nosuch"})));
    assert_eq!(
        desc,
        "Failed to execute child process \u{201C}/bin/nosuch\u{201D} (No such file or directory)"
    );
    let (_, desc) = err(c, "guest-exec-status", Some(json!({"pid": 999_999})));
    assert_eq!(desc, "PID 999999 does not exist");
}

/// One request that must produce exactly one error with `desc` (and `class`), after which the
/// next request is answered normally.
fn malformed(c: &mut Client, input: &[u8], class: &str, desc: &str) {
    c.send_raw(input).expect("send");
    let line = c
        .read_line()
        .unwrap_or_else(|e| panic!("{:?}: no answer: {e}", String::from_utf8_lossy(input)));
    let v = parse_line(&line).expect("json");
    assert_eq!(
        v["error"]["class"],
        class,
        "{:?} -> {v}",
        String::from_utf8_lossy(input)
    );
    assert_eq!(
        v["error"]["desc"],
        desc,
        "{:?} -> {v}",
        String::from_utf8_lossy(input)
    );
    c.send_raw(br#"{"execute":"guest-ping","id":"next"}"#)
        .expect("send");
    let v = c.read_value().expect("the request after the error");
    assert_eq!(
        v,
        json!({"return": {}, "id": "next"}),
        "after {:?}",
        String::from_utf8_lossy(input)
    );
}

fn check_malformed(c: &mut Client) {
    let g = "GenericError";
    malformed(c, b"\xff", g, "JSON parse error, stray '\u{FFFD}'");
    malformed(c, b"nul ", g, "JSON parse error, invalid keyword 'nul'");
    malformed(c, b"}", g, "JSON parse error, expecting value");
    malformed(c, br#"{"a":1,}"#, g, "JSON parse error, expecting value");
    malformed(
        c,
        br#"{"a" 1}"#,
        g,
        "JSON parse error, missing : in object pair",
    );
    malformed(
        c,
        br#"{"a":1 "b":2}"#,
        g,
        "JSON parse error, expected separator in dict",
    );
    malformed(
        c,
        br#"{1:2}"#,
        g,
        "JSON parse error, key is not a string in object",
    );
    malformed(c, br#"{"a":1,"a":2}"#, g, "JSON parse error, duplicate key");
    malformed(
        c,
        br#"{"a":"\x"}"#,
        g,
        "JSON parse error, invalid escape sequence in string",
    );
    malformed(
        c,
        b"{\"a\":\"\xc3\x28\"}",
        g,
        "JSON parse error, invalid UTF-8 sequence in string",
    );
    malformed(c, b"1 ", g, "QMP input must be a JSON object");
    malformed(c, b"[]", g, "QMP input must be a JSON object");
    malformed(
        c,
        br#"{"execute":1}"#,
        g,
        "QMP input member 'execute' must be a string",
    );
    malformed(
        c,
        br#"{"execute":"guest-ping","arguments":1}"#,
        g,
        "QMP input member 'arguments' must be an object",
    );
    malformed(
        c,
        br#"{"execute":"guest-ping","foo":1}"#,
        g,
        "QMP input member 'foo' is unexpected",
    );
    malformed(
        c,
        br#"{"exec-oob":"guest-ping"}"#,
        g,
        "QMP input member 'exec-oob' is unexpected",
    );
    malformed(
        c,
        br#"{"arguments":{}}"#,
        g,
        "QMP input lacks member 'execute'",
    );
    malformed(
        c,
        br#"{"execute":"guest-nosuch"}"#,
        "CommandNotFound",
        "The command guest-nosuch has not been found",
    );
    malformed(
        c,
        br#"{"execute":"guest-sync"}"#,
        g,
        "Parameter 'id' is missing",
    );
    malformed(
        c,
        br#"{"execute":"guest-sync","arguments":{"id":"x"}}"#,
        g,
        "Invalid parameter type for 'id', expected: integer",
    );
    malformed(
        c,
        br#"{"execute":"guest-ping","arguments":{"foo":1}}"#,
        g,
        "Parameter 'foo' is unexpected",
    );
    malformed(
        c,
        br#"{"execute":"guest-shutdown","arguments":{"mode":"nap"}}"#,
        g,
        "mode is invalid (valid values are: halt|powerdown|reboot",
    );
    // Nesting beyond 1024 levels: the limit error comes first, then one error per stray `]`;
    // the 0xFF handshake resynchronises.
    let mut deep = vec![b'['; 1025];
    deep.extend(std::iter::repeat_n(b']', 1025));
    c.send_raw(&deep).expect("send");
    let v = c.read_value().expect("nesting error");
    assert_eq!(
        v["error"]["desc"], "JSON nesting depth limit exceeded",
        "{v}"
    );
    c.sync_delimited().expect("resync after the nesting errors");
    c.ping().expect("ping after resync");
}

fn suite(machine: Machine, transport: Transport) {
    let start = Instant::now();
    let mut vm = boot(machine, transport, APPEND);
    let mut c = client(&mut vm);
    note(&format!(
        "{machine:?}/{transport:?}: first answer {:?} after QEMU start",
        vm.started.elapsed()
    ));
    check_commands(
        &mut vm,
        &mut c,
        matches!(transport, Transport::Virtio | Transport::Vsock),
        machine != Machine::Microvm,
    );
    check_malformed(&mut c);

    // A client hangs up in the middle of a request; the next client is served.
    c.send_raw(br#"{"execute":"guest-ping","#)
        .expect("half a request");
    std::thread::sleep(Duration::from_millis(300));
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    let mut c2 = vm.connect().expect("reconnect");
    if matches!(transport, Transport::Virtio | Transport::Vsock) {
        // The port close (the vsock reset) reached the image, which dropped the half request: a whole new
        // request is answered as such (upstream would glue the two together).
        c2.send_raw(br#"{"execute":"guest-ping","id":"after-reconnect"}"#)
            .expect("send");
        let v = c2
            .read_value()
            .unwrap_or_else(|e| panic!("after reconnect: {e}\n{}", vm.log()));
        assert_eq!(v, json!({"return": {}, "id": "after-reconnect"}));
    } else {
        // A UART has no connection state: the client's 0xFF handshake flushes the half request.
        c2.sync_delimited()
            .unwrap_or_else(|e| panic!("handshake after reconnect: {e}\n{}", vm.log()));
        let v = c2
            .request(&json!({"execute": "guest-ping", "id": "after-reconnect"}))
            .expect("ping");
        assert_eq!(v, json!({"return": {}, "id": "after-reconnect"}));
    }
    drop(c2);
    check_cli(&vm);
    assert!(vm.try_status().is_none(), "QEMU is still running");
    note(&format!(
        "{machine:?}/{transport:?} suite took {:?}",
        start.elapsed()
    ));
}

/// The `qga-client` command against the image: exec of built-in programs prints their decoded
/// output and exits with their status (the image's one exit status besides 0 is 2, for a bad
/// argument).
fn check_cli(vm: &BareMetalVm) {
    let address = vm.address().to_string();
    let cli = |args: &[&str], stdin: &[u8]| {
        let mut all = vec![address.as_str(), "--timeout", "60"];
        all.extend_from_slice(args);
        client_cli::run(&all, stdin, Duration::from_secs(180))
            .unwrap_or_else(|e| panic!("qga-client {args:?}: {e}\n{}", vm.log()))
    };
    let r = cli(&["exec", "echo", "hello", "-n", "bare metal"], b"");
    assert_eq!(r.status, Some(0), "{r:?}");
    assert_eq!(r.out(), "hello -n bare metal\n", "{r:?}");
    assert_eq!(r.err(), "", "{r:?}");
    let input: Vec<u8> = (0..=255u8).collect();
    let r = cli(&["exec", "--input", "-", "cat"], &input);
    assert_eq!(
        (r.status, r.stdout.as_slice()),
        (Some(0), input.as_slice()),
        "{r:?}"
    );
    let r = cli(&["exec", "cpuid", "zz"], b"");
    assert_eq!(r.status, Some(2), "{r:?}");
    assert_eq!(r.out(), "", "{r:?}");
    assert_eq!(
        r.err(),
        "cpuid: expected LEAF [SUBLEAF] as numbers\n",
        "{r:?}"
    );
    let r = cli(&["ping"], b"");
    assert_eq!(r.status, Some(0), "{r:?}");
    // No freeze on bare metal: the unsupported error, status 1.
    let r = cli(&["fsfreeze", "status"], b"");
    assert_eq!(r.status, Some(1), "{r:?}");
    assert!(r.err().contains("not currently supported"), "{r:?}");
}

#[test]
fn virtio_console_on_q35_serves_every_command() {
    suite(Machine::Q35, Transport::Virtio);
}

#[test]
fn com1_on_pc_serves_every_command() {
    suite(Machine::Pc, Transport::Com1);
}

#[test]
fn com2_on_q35_and_virtio_on_pc_and_behind_a_pcie_root_port_answer() {
    // (machine, transport, virtio controller behind a root port, PCI id that must be listed)
    for (machine, transport, root_port, id) in [
        (Machine::Q35, Transport::Com2, false, None),
        (Machine::Pc, Transport::Virtio, false, Some("1af4:1003")),
        // libvirt's and KubeVirt's q35 layout: a modern-only device on bus 1.
        (Machine::Q35, Transport::Virtio, true, Some("1af4:1043")),
    ] {
        let mut vm = BareMetalVm::boot(machine, transport, |o| {
            o.cpus = 2;
            o.pcie_root_port = root_port;
        })
        .unwrap_or_else(|e| panic!("boot {machine:?}/{transport:?}: {e}"));
        let mut c = client(&mut vm);
        c.ping().expect("ping");
        let vcpus = c.execute("guest-get-vcpus", None).expect("vcpus");
        assert_eq!(vcpus.as_array().map(Vec::len), Some(2));
        let pci = c.run("pci", &[], Duration::from_secs(10)).expect("pci");
        let pci = String::from_utf8_lossy(&pci.stdout).into_owned();
        match id {
            Some(id) => assert!(pci.contains(id), "{id} missing:\n{pci}"),
            None => assert!(
                !pci.contains("1af4:10"),
                "no virtio device expected:\n{pci}"
            ),
        }
        assert!(vm.log().contains("agent on "), "{}", vm.log());
    }
}

#[test]
fn virtio_console_over_mmio_on_microvm_serves_every_command() {
    suite(Machine::Microvm, Transport::Virtio);
}

#[test]
fn microvm_with_and_without_acpi_legacy_and_modern_mmio_and_com1_answers() {
    // (transport, ACPI, modern MMIO, what the image's log must say it found)
    for (transport, acpi, modern, found) in [
        // The devices on the kernel command line (QEMU appends them without ACPI).
        (
            Transport::Virtio,
            false,
            false,
            "virtio-mmio v1 at 0xfeb00e00",
        ),
        (
            Transport::Virtio,
            false,
            true,
            "virtio-mmio v2 at 0xfeb00e00",
        ),
        // With ACPI, found by probing microvm's window (24 slots, the first device in the last).
        (
            Transport::Virtio,
            true,
            true,
            "virtio-mmio v2 at 0xfeb02e00",
        ),
        (Transport::Com1, true, false, "agent on UART 0x3f8"),
    ] {
        let mut vm = BareMetalVm::boot(Machine::Microvm, transport, |o| {
            o.acpi = acpi;
            o.mmio_modern = modern;
        })
        .unwrap_or_else(|e| panic!("boot microvm/{transport:?}: {e}"));
        let mut c = client(&mut vm);
        c.ping().expect("ping");
        let v = c
            .request(&json!({"execute": "guest-get-host-name", "id": 5}))
            .expect("host name");
        assert_eq!(v["id"], 5, "{v}");
        // No PCI on microvm: the image's PCI listing is empty.
        let pci = c.run("pci", &[], Duration::from_secs(10)).expect("pci");
        let pci = String::from_utf8_lossy(&pci.stdout).into_owned();
        assert!(
            !pci.contains("1af4:"),
            "no PCI virtio device expected:\n{pci}"
        );
        if transport == Transport::Com1 {
            // The log has no COM2 to go to on microvm; the answer itself is the check.
            continue;
        }
        assert!(vm.log().contains(found), "{found} missing:\n{}", vm.log());
    }
}

/// `guest-shutdown` sends nothing back and QEMU sees the guest act: returns the VM and the
/// QMP event that followed (`SHUTDOWN` for a power-off or a reset under `-no-reboot`, `RESET`
/// for a reset otherwise), whose `reason` tells an ACPI power-off (`guest-shutdown`) from a
/// reset (`guest-reset`).
fn shutdown(
    machine: Machine,
    transport: Transport,
    mode: &str,
    no_reboot: bool,
) -> (BareMetalVm, Value) {
    let mut vm = BareMetalVm::boot(machine, transport, |o| o.no_reboot = no_reboot)
        .unwrap_or_else(|e| panic!("boot: {e}"));
    let mut qmp = vm.qmp().unwrap_or_else(|e| panic!("qmp: {e}"));
    let mut c = client(&mut vm);
    c.send(&json!({"execute": "guest-shutdown", "arguments": {"mode": mode}}))
        .expect("send");
    // No byte may come back; QEMU may already have exited and closed the socket.
    match c.expect_silence(Duration::from_millis(300)) {
        Ok(()) | Err(ClientError::Closed(_)) => {}
        Err(e) => panic!("{mode}: a successful shutdown must not answer: {e}"),
    }
    let event = if mode == "reboot" && !no_reboot {
        "RESET"
    } else {
        "SHUTDOWN"
    };
    let ev = qmp
        .wait_event(event, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{mode}: {e}\n{}", vm.log()));
    (vm, ev)
}

#[test]
fn powerdown_and_halt_end_qemu_with_status_0() {
    for (machine, transport, mode) in [
        (Machine::Q35, Transport::Virtio, "powerdown"),
        (Machine::Pc, Transport::Com1, "halt"),
    ] {
        let (mut vm, ev) = shutdown(machine, transport, mode, false);
        assert_eq!(
            ev["data"]["reason"], "guest-shutdown",
            "{mode}: an ACPI power-off: {ev}"
        );
        let st = vm.wait_exit(Duration::from_secs(30));
        assert_eq!(
            st.and_then(|s| s.code()),
            Some(0),
            "{mode}: QEMU status {st:?}\n{}",
            vm.log()
        );
    }
}

#[test]
fn reboot_resets_the_machine() {
    // With -no-reboot the reset ends QEMU (status 0).
    let (mut vm, ev) = shutdown(Machine::Pc, Transport::Com1, "reboot", true);
    assert_eq!(ev["data"]["reason"], "guest-reset", "{ev}");
    let st = vm.wait_exit(Duration::from_secs(30));
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(0),
        "QEMU status {st:?}\n{}",
        vm.log()
    );
    // Without it the machine boots again and the image answers a new client.
    let (mut vm, ev) = shutdown(Machine::Q35, Transport::Virtio, "reboot", false);
    assert_eq!(ev["data"]["reason"], "guest-reset", "{ev}");
    std::thread::sleep(Duration::from_millis(500));
    let mut c = vm.client().unwrap_or_else(|e| panic!("after reboot: {e}"));
    c.ping().expect("ping after reboot");
    assert!(
        vm.try_status().is_none(),
        "QEMU kept running across the reset"
    );
    let log = vm.log();
    assert!(
        log.matches("booted").count() >= 2,
        "the image booted twice:\n{log}"
    );
}

#[test]
fn selftests_pass_on_pc_and_q35() {
    for machine in [Machine::Pc, Machine::Q35] {
        let (code, log) = baremetal::run_selftest(machine).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            code,
            Some(SELFTEST_PASSED),
            "{machine:?} self-tests:\n{log}"
        );
        assert!(log.contains("selftest PASS engine-ping"), "{log}");
    }
}

/// A CPU exception is reported (log and isa-debug-exit status 35), not a silent reset.
#[test]
fn cpu_exceptions_are_reported() {
    let mut vm = BareMetalVm::boot(Machine::Pc, Transport::Com1, |o| {
        o.append = "qga.crash".into()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let st = vm.wait_exit(Duration::from_secs(30));
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(baremetal::SELFTEST_FAILED),
        "{}",
        vm.log()
    );
    assert!(vm.log().contains("CPU exception, frame "), "{}", vm.log());
}

/// The image boots on q35 and its agent answers on virtio-serial. The only time limit is a
/// hang guard of 120 s, hundreds of times the boot time under TCG: how fast the image boots is
/// a performance figure, measured by `cargo xtask image` (the README's boot-to-first-answer
/// lines), not asserted here, where a loaded machine would make a tighter limit flaky. The time
/// taken is printed for the log only.
#[test]
fn boots_to_first_answer() {
    const HANG_GUARD: Duration = Duration::from_secs(120);
    let mut vm = BareMetalVm::boot(Machine::Q35, Transport::Virtio, |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let mut c = vm
        .client_within(HANG_GUARD)
        .unwrap_or_else(|e| panic!("no answer within the {HANG_GUARD:?} hang guard: {e}"));
    let took = vm.started.elapsed();
    assert_eq!(
        c.execute("guest-ping", None).expect("guest-ping"),
        json!({})
    );
    note(&format!(
        "boot to first answer (TCG, q35, virtio): {took:?} (not a check; see cargo xtask image)"
    ));
}

/// Build-time settings (environment variables read when the image is compiled) answer unless
/// the kernel command line overrides them.
#[test]
fn build_time_configuration_and_command_line_override() {
    let target = tests::paths::workspace_root()
        .join("target")
        .join("baremetal-config");
    let image = baremetal::build_image_with(
        &[
            ("QGA_HOSTNAME", "built-in-host"),
            ("QGA_OS_NAME", "Built-in OS"),
        ],
        &target,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = baremetal::BootOptions::new(Machine::Q35, Transport::Virtio, dir.path());
    opts.append = "qga.os.name=Overridden".into();
    let mut vm = BareMetalVm::boot_image(&image, opts).unwrap_or_else(|e| panic!("{e}"));
    let mut c = client(&mut vm);
    assert_eq!(
        c.execute("guest-get-host-name", None).expect("host name"),
        json!({"host-name": "built-in-host"})
    );
    let os = c.execute("guest-get-osinfo", None).expect("osinfo");
    assert_eq!(os["name"], "Overridden", "{os}");
}

#[test]
fn vsock_on_microvm_serves_every_command() {
    suite(Machine::Microvm, Transport::Vsock);
}

#[test]
fn vsock_on_q35_serves_every_command() {
    suite(Machine::Q35, Transport::Vsock);
}

/// One connection at a time (a second one is reset while the first lasts, and served after it),
/// a 100-request pipeline answered in order, and a host that stops reading while the image has
/// megabytes to send: every byte arrives once it reads again (credit, not drops), and the
/// requests it sent meanwhile are all answered.
#[test]
fn vsock_one_connection_at_a_time_pipelines_and_a_slow_reader() {
    for machine in [Machine::Microvm, Machine::Q35] {
        let mut vm = boot(machine, Transport::Vsock, "");
        let mut c = client(&mut vm);
        c.ping().expect("ping");

        // A second connection while the first is open: the image resets it, so the daemon
        // closes the socket instead of answering OK.
        {
            use std::io::{Read as _, Write as _};
            let mut s = std::os::unix::net::UnixStream::connect(&vm.opts.agent_socket)
                .expect("the daemon's socket");
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(b"CONNECT 1234\n").expect("CONNECT");
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            assert!(
                !got.starts_with(b"OK"),
                "{machine:?}: a second connection was accepted: {:?}\n{}",
                String::from_utf8_lossy(&got),
                vm.log()
            );
        }
        c.ping().expect("the first connection still works");

        // 100 requests in one write, 100 answers in order.
        let mut batch = Vec::new();
        for i in 0..100 {
            batch.extend_from_slice(format!(r#"{{"execute":"guest-ping","id":{i}}}"#).as_bytes());
        }
        c.send_raw(&batch).expect("pipeline");
        for i in 0..100 {
            let v = c
                .read_value()
                .unwrap_or_else(|e| panic!("{machine:?}: answer {i}: {e}\n{}", vm.log()));
            assert_eq!(v, json!({"return": {}, "id": i}), "{machine:?}");
        }

        // A slow reader: 40 reads of 48 KiB (about 2.5 MiB of base64 answers) sent at once, then
        // nothing read for 3 s; the image waits for credit, then everything arrives whole.
        let h = slow_reader_reads(&mut c, &vm, machine);
        c.file_close(h).expect("close");
        drop(c);

        // After the first connection ends, a new one is served with a clean parser.
        let mut c = vm.connect().expect("reconnect");
        let v = c
            .request(&json!({"execute": "guest-ping", "id": "next"}))
            .unwrap_or_else(|e| panic!("{machine:?}: next connection: {e}\n{}", vm.log()));
        assert_eq!(v, json!({"return": {}, "id": "next"}));
        let log = vm.log();
        assert!(log.contains("agent on vsock port 1234"), "{log}");
        let refused = log
            .lines()
            .rev()
            .find_map(|l| l.split(" malformed packets dropped, ").nth(1))
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<u32>().ok());
        assert!(refused.is_some_and(|n| n >= 1), "{log}");
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    qga_client::b64_decode(s).expect("base64")
}

/// `n` pairs of requests in one write: seek `h` to 0, then read 48 KiB (ids `s<i>`, `r<i>`).
fn seek_and_read_batch(h: i64, n: usize) -> Vec<u8> {
    let mut b = Vec::new();
    for i in 0..n {
        b.extend_from_slice(
            format!(
                r#"{{"execute":"guest-file-seek","arguments":{{"handle":{h},"offset":0,"whence":"set"}},"id":"s{i}"}}{{"execute":"guest-file-read","arguments":{{"handle":{h},"count":49152}},"id":"r{i}"}}"#
            )
            .as_bytes(),
        );
    }
    b
}

/// A host that stops reading: writes a 48 KiB file, sends 40 seek-and-read pairs at once (about
/// 2.5 MiB of base64 answers), reads nothing for 3 s, then checks that every answer arrives whole
/// and in order. Returns the still-open handle.
fn slow_reader_reads(c: &mut Client, vm: &BareMetalVm, machine: Machine) -> i64 {
    let data: Vec<u8> = (0..48 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    c.push(&data, "/slow", 16 * 1024).expect("push");
    let h = c.file_open("/slow", "r").expect("open");
    c.send_raw(&seek_and_read_batch(h, 40)).expect("batch");
    std::thread::sleep(Duration::from_secs(3));
    c.set_timeout(Duration::from_secs(60));
    for i in 0..40 {
        let s = c.read_value().expect("seek answer");
        assert_eq!(s["id"], format!("s{i}"), "{s}");
        let r = c
            .read_value()
            .unwrap_or_else(|e| panic!("{machine:?}: read {i}: {e}\n{}", vm.log()));
        assert_eq!(r["id"], format!("r{i}"), "{machine:?}");
        let got = r["return"]["buf-b64"].as_str().expect("buf-b64");
        assert_eq!(
            base64_decode(got),
            data,
            "{machine:?}: read {i} arrived whole"
        );
    }
    h
}

/// virtio-console with several transmit buffers in flight, on both transports: 40 reads of
/// 48 KiB (about 2.5 MiB of base64 answers) sent at once and nothing read for 3 s, then every
/// answer arrives whole and in order; a client that hangs up while answers are in flight
/// (QEMU gives the buffers it held back) leaves the image serving the next client.
#[test]
fn virtio_console_slow_reader_and_hang_up_with_replies_in_flight() {
    for machine in [Machine::Microvm, Machine::Q35] {
        let mut vm = boot(machine, Transport::Virtio, "");
        let mut c = client(&mut vm);
        let h = slow_reader_reads(&mut c, &vm, machine);

        // Hang up with answers in flight, then the next client is served.
        c.send_raw(&seek_and_read_batch(h, 20)).expect("batch");
        std::thread::sleep(Duration::from_millis(300));
        drop(c);
        std::thread::sleep(Duration::from_millis(500));
        let mut c = vm.connect().expect("reconnect");
        c.set_timeout(Duration::from_secs(20));
        c.sync_delimited()
            .unwrap_or_else(|e| panic!("{machine:?}: sync after hang-up: {e}\n{}", vm.log()));
        let v = c
            .request(&json!({"execute": "guest-ping", "id": "next"}))
            .unwrap_or_else(|e| panic!("{machine:?}: next client: {e}\n{}", vm.log()));
        assert_eq!(v, json!({"return": {}, "id": "next"}));
        assert!(
            vm.try_status().is_none(),
            "{machine:?}: QEMU is still running"
        );
    }
}
