//! The real `qga` binary on the host: options, the unix-listen and isa-serial channels,
//! signals, the state directory, files and exec.
//!
//! Every agent runs in `unix-listen` mode (or on a pty for isa-serial) in a temporary
//! directory of its own, with every command that changes the system blocked (`-b`): this host
//! runs as root and must not be shut down, frozen or have its clock set. Those commands are
//! tested inside a QEMU guest by the integration tests. Each agent is killed by PID when its
//! guard is dropped, also when a test fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

mod common;
use common::{BLOCKED, Proc, QGA, TempDir, agent_command, wait_for_socket};

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// A running agent on a unix socket in its own directory.
struct Agent {
    proc: Proc,
    sock: PathBuf,
    dir: PathBuf,
}

impl Agent {
    fn start(dir: &Path, extra: &[&str]) -> Agent {
        let mut proc = Proc(Some(agent_command(dir, extra).spawn().unwrap()));
        let sock = dir.join("sock");
        // Probing the socket consumes one accept: the agent simply sees a client come and go.
        wait_for_socket(&sock, &mut proc);
        Agent {
            proc,
            sock,
            dir: dir.to_path_buf(),
        }
    }

    fn connect(&self) -> Client {
        Client::new(UnixStream::connect(&self.sock).unwrap())
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// SIGTERM and the exit status.
    fn stop(&mut self) -> ExitStatus {
        self.proc.signal(libc::SIGTERM);
        self.proc
            .wait_timeout(Duration::from_secs(10))
            .expect("qga did not exit on SIGTERM")
    }
}

/// One connection.
struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    fn new(s: UnixStream) -> Client {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Client {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    fn line(&mut self) -> Value {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).unwrap();
        assert!(
            line.ends_with(b"\n"),
            "no complete response: {:?}",
            String::from_utf8_lossy(&line)
        );
        serde_json::from_slice(&line)
            .unwrap_or_else(|e| panic!("bad JSON {e}: {}", String::from_utf8_lossy(&line)))
    }

    fn call(&mut self, cmd: &str, args: Value) -> Value {
        let req = json!({"execute": cmd, "arguments": args});
        self.send(req.to_string().as_bytes());
        self.line()
    }

    fn ok(&mut self, cmd: &str, args: Value) -> Value {
        let r = self.call(cmd, args);
        match r.get("return") {
            Some(v) => v.clone(),
            None => panic!("{cmd} failed: {r}"),
        }
    }

    fn err(&mut self, cmd: &str, args: Value) -> String {
        let r = self.call(cmd, args);
        r["error"]["desc"]
            .as_str()
            .unwrap_or_else(|| panic!("{cmd} did not fail: {r}"))
            .to_string()
    }
}

fn run_qga(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(QGA);
    cmd.args(args)
        .env_remove("QGA_CONF")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut proc = Proc(Some(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let child = proc.0.take().unwrap();
    let pid = child.id();
    let guard = std::thread::spawn(move || child.wait_with_output().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !guard.is_finished() {
        if Instant::now() > deadline {
            // SAFETY: kill(2) on our own, still unreaped child.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            panic!("qga {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    guard.join().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn version_help_dump_and_command_list() {
    let o = run_qga(&["-V"], &[]);
    assert!(o.status.success());
    assert_eq!(text(&o.stdout), "QEMU Guest Agent 0.1.0\n");

    let o = run_qga(&["--help"], &[]);
    assert!(o.status.success());
    let help = text(&o.stdout);
    assert!(
        help.contains("[-m <method> -p <path>]") && help.contains("--fsfreeze-hook"),
        "{help}"
    );

    let dir = TempDir::new("dump");
    let conf = dir.path().join("qga.conf");
    std::fs::write(&conf, "[general]\nmethod=unix-listen\npath=/run/x.sock\nverbose=true\nblock-rpcs=guest-ping,guest-info\n").unwrap();
    let o = run_qga(
        &[
            "-c",
            conf.to_str().unwrap(),
            "-D",
            "-b",
            "guest-exec",
            "-F",
            "-a",
            "guest-sync",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "[general]\ndaemon=false\nmethod=unix-listen\npath=/run/x.sock\npidfile=/var/run/qemu-ga.pid\n\
         fsfreeze-hook=/etc/qemu/fsfreeze-hook\nstatedir=/var/run\nverbose=true\nretry-path=false\n\
         block-rpcs=guest-info,guest-ping,guest-exec\nallow-rpcs=guest-sync\n"
    );
    // QGA_CONF names the file when -c does not.
    let o = run_qga(&["-D"], &[("QGA_CONF", conf.to_str().unwrap())]);
    assert!(text(&o.stdout).contains("method=unix-listen\n"));

    for args in [&["-b", "help"][..], &["-b", "?"], &["--allow-rpcs=help"]] {
        let o = run_qga(args, &[]);
        assert!(o.status.success());
        let list = text(&o.stdout);
        assert_eq!(list.lines().count(), 43, "{list}");
        assert_eq!(list.lines().next(), Some("guest-sync-delimited"));
        for cmd in BLOCKED.split(',') {
            assert!(list.lines().any(|l| l == cmd), "{cmd} missing");
        }
    }
}

#[test]
fn bad_options_and_config_fail_clearly() {
    let o = run_qga(&["--bogus"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("unrecognized option '--bogus'"));
    assert!(text(&o.stdout).contains("Unknown option, try"));

    let o = run_qga(&["-p"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("option requires an argument -- 'p'"));

    let o = run_qga(&["-m", "unix-listen"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains(": critical: must specify a path for this channel"),
        "{}",
        text(&o.stderr)
    );

    let dir = TempDir::new("badopt");
    let sock = dir.path().join("s");
    let o = run_qga(
        &[
            "-m",
            "carrier-pigeon",
            "-p",
            sock.to_str().unwrap(),
            "-t",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("unsupported channel method/type: carrier-pigeon"));

    let o = run_qga(
        &[
            "-m",
            "vsock-listen",
            "-p",
            "nope",
            "-t",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("error parsing address 'vsock:nope'"),
        "{}",
        text(&o.stderr)
    );

    let o = run_qga(&["-c", "/nonexistent/qga.conf", "-V"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains(
        "error loading configuration from path: /nonexistent/qga.conf, No such file or directory"
    ));

    let conf = dir.path().join("bad.conf");
    std::fs::write(&conf, "[general]\ndaemon=perhaps\n").unwrap();
    let o = run_qga(&["-D"], &[("QGA_CONF", conf.to_str().unwrap())]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("which has a value that cannot be interpreted"),
        "{}",
        text(&o.stderr)
    );

    // A missing default config file is fine.
    let o = run_qga(&["-D"], &[("QGA_CONF", "/nonexistent/qga.conf")]);
    assert!(o.status.success());

    // A device that is not there: a clear message and status 1 (without -r).
    let o = run_qga(
        &[
            "-m",
            "virtio-serial",
            "-p",
            "/nonexistent/port",
            "-t",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr)
            .contains("error opening channel '/nonexistent/port': No such file or directory")
    );
}

#[test]
fn system_changing_commands_are_blocked_here() {
    let dir = TempDir::new("blocked");
    let a = Agent::start(dir.path(), &[]);
    let mut c = a.connect();
    let info = c.ok("guest-info", json!({}));
    assert_eq!(info["version"], "0.1.0");
    for cmd in BLOCKED.split(',') {
        let e = info["supported_commands"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == cmd)
            .unwrap();
        assert_eq!(e["enabled"], false, "{cmd}");
        let r = c.call(cmd, json!({}));
        assert_eq!(r["error"]["class"], "CommandNotFound", "{cmd}: {r}");
    }
}

#[test]
fn socket_is_private_and_unknown_list_names_are_reported() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new("private");
    let blocked = format!("{BLOCKED},guest-exce");
    let mut a = Agent::start(
        dir.path(),
        &["-b", &blocked, "-a", "guest-ping,guest-pingg"],
    );
    let mode = std::fs::metadata(&a.sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    // Still serving, and the typos are reported at the default log level.
    let mut c = a.connect();
    c.ok("guest-ping", json!({}));
    drop(c);
    assert_eq!(a.stop().code(), Some(0));
    let log = a.stderr();
    for name in ["guest-exce", "guest-pingg"] {
        assert!(
            log.contains(&format!(
                "ignoring unknown command name in the block/allow list: {name}"
            )),
            "{log}"
        );
    }
}

#[test]
fn file_round_trips() {
    let dir = TempDir::new("files");
    let a = Agent::start(dir.path(), &[]);
    let mut c = a.connect();

    // A relative path resolves against the agent's cwd; new files are 0666.
    let h = c.ok("guest-file-open", json!({"path": "foo", "mode": "w+"}));
    assert_eq!(h, 1000);
    let path = dir.path().join("foo");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o666
    );

    let w = c.ok(
        "guest-file-write",
        json!({"handle": h, "buf-b64": b64(b"Hello, world")}),
    );
    assert_eq!(w, json!({"count": 12, "eof": false}));
    let w = c.ok(
        "guest-file-write",
        json!({"handle": h, "buf-b64": b64(b"!!!"), "count": 1}),
    );
    assert_eq!(w["count"], 1);
    assert_eq!(std::fs::read(&path).unwrap(), b"Hello, world!");
    // Read right after a write (upstream flushes; the position is at the end).
    let r = c.ok("guest-file-read", json!({"handle": h}));
    assert_eq!(r, json!({"count": 0, "buf-b64": "", "eof": true}));
    let s = c.ok(
        "guest-file-seek",
        json!({"handle": h, "offset": 0, "whence": "set"}),
    );
    assert_eq!(s, json!({"position": 0, "eof": false}));
    let r = c.ok("guest-file-read", json!({"handle": h, "count": 5}));
    assert_eq!(
        r,
        json!({"count": 5, "buf-b64": b64(b"Hello"), "eof": false})
    );
    // Write after a read lands at the read position.
    c.ok(
        "guest-file-write",
        json!({"handle": h, "buf-b64": b64(b"; ")}),
    );
    let s = c.ok(
        "guest-file-seek",
        json!({"handle": h, "offset": -8, "whence": 2}),
    );
    assert_eq!(s["position"], 5);
    let r = c.ok("guest-file-read", json!({"handle": h, "count": 100}));
    assert_eq!(unb64(r["buf-b64"].as_str().unwrap()), b"; world!");
    assert_eq!(r["eof"], true);
    c.ok("guest-file-flush", json!({"handle": h}));
    assert_eq!(c.ok("guest-file-close", json!({"handle": h})), json!({}));
    assert_eq!(std::fs::read(&path).unwrap(), b"Hello; world!");

    // Error texts.
    assert_eq!(
        c.err("guest-file-read", json!({"handle": h})),
        "handle '1000' has not been found"
    );
    assert_eq!(
        c.err("guest-file-open", json!({"path": "foo", "mode": "rw"})),
        "invalid file open mode 'rw'"
    );
    assert_eq!(
        c.err("guest-file-open", json!({"path": "nodir/x"})),
        "failed to open file 'nodir/x' (mode: 'r'): No such file or directory"
    );
    let h = c.ok("guest-file-open", json!({"path": "foo", "mode": "a"}));
    assert_eq!(h, 1001, "failed opens use no handle");
    assert_eq!(
        c.err("guest-file-read", json!({"handle": h, "count": 50331649})),
        "value '50331649' is invalid for argument count"
    );
    assert_eq!(
        c.err("guest-file-read", json!({"handle": h})),
        "failed to read file: Bad file descriptor"
    );
    assert_eq!(
        c.err("guest-file-write", json!({"handle": h, "buf-b64": "****"})),
        "Base64 data contains invalid characters"
    );
    c.ok(
        "guest-file-write",
        json!({"handle": h, "buf-b64": b64(b"+tail")}),
    );
    c.ok("guest-file-close", json!({"handle": h}));
    assert_eq!(std::fs::read(&path).unwrap(), b"Hello; world!+tail");
}

#[test]
fn large_transfers() {
    let dir = TempDir::new("large");
    let a = Agent::start(dir.path(), &[]);
    let mut c = a.connect();
    // 48 MiB, upstream's largest read, in one request each way.
    let size = 48 * 1024 * 1024;
    let data: Vec<u8> = (0..size as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let h = c.ok("guest-file-open", json!({"path": "big", "mode": "wb"}));
    let t = Instant::now();
    let w = c.ok(
        "guest-file-write",
        json!({"handle": h, "buf-b64": b64(&data)}),
    );
    let write_time = t.elapsed();
    assert_eq!(w["count"], size);
    c.ok("guest-file-close", json!({"handle": h}));
    assert!(std::fs::read(dir.path().join("big")).unwrap() == data);
    // The 64 MiB request was written to the file as it arrived (`handle` before `buf-b64`):
    // the agent never held it, so its peak stays far below the request's size.
    let pid = a.proc.0.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    let (rss_kib, peak_kib) = (kib("VmRSS:"), kib("VmHWM:"));
    assert!(
        rss_kib < 16 * 1024,
        "RSS after a 48 MiB write is {rss_kib} KiB"
    );
    assert!(
        peak_kib < 16 * 1024,
        "peak RSS during a 48 MiB write is {peak_kib} KiB"
    );

    let h = c.ok("guest-file-open", json!({"path": "big", "mode": "r"}));
    let t = Instant::now();
    let r = c.ok("guest-file-read", json!({"handle": h, "count": size}));
    let read_time = t.elapsed();
    assert_eq!(r["count"], size);
    assert_eq!(
        r["eof"], false,
        "exactly count bytes were available: no EOF seen yet, as fread"
    );
    assert!(unb64(r["buf-b64"].as_str().unwrap()) == data);
    let r = c.ok("guest-file-read", json!({"handle": h, "count": 10}));
    assert_eq!(r, json!({"count": 0, "buf-b64": "", "eof": true}));
    c.ok("guest-file-close", json!({"handle": h}));
    eprintln!("48 MiB: write {write_time:?}, read {read_time:?} (client side included)");
}

#[test]
fn largest_request_is_configurable_and_late_errors_say_what_was_written() {
    let dir = TempDir::new("maxreq");
    std::fs::write(
        dir.path().join("small.conf"),
        "[general]\nmax-request-size=4K\n",
    )
    .unwrap();
    let a = Agent::start(dir.path(), &["-c", "small.conf"]);
    let mut c = a.connect();
    // 4 KiB from the config file: a request of 5000 bytes gets the size error, the next one
    // is served, and one of 3000 bytes is accepted.
    let long =
        |n: usize| json!({"execute": "guest-sync", "arguments": {"id": 1}, "id": "x".repeat(n)});
    c.send(long(5000).to_string().as_bytes());
    assert_eq!(c.line()["error"]["desc"], "JSON token size limit exceeded");
    assert_eq!(c.ok("guest-ping", json!({})), json!({}));
    c.send(long(3000).to_string().as_bytes());
    assert_eq!(c.line()["return"], 1);
    // A write over the limit is refused before anything reaches the file.
    let h = c.ok("guest-file-open", json!({"path": "w", "mode": "w"}));
    let data = vec![0x42u8; 1 << 20];
    let e = c.err(
        "guest-file-write",
        json!({"handle": h, "buf-b64": b64(&data)}),
    );
    assert_eq!(e, "JSON token size limit exceeded");
    assert_eq!(std::fs::metadata(dir.path().join("w")).unwrap().len(), 0);
    drop(c);
    let mut a = a;
    assert!(a.stop().success());

    // The default: a streamed write whose `count` comes after `buf-b64` and differs is an
    // error that says how much is in the file already.
    let a = Agent::start(dir.path(), &[]);
    let mut c = a.connect();
    let h = c.ok("guest-file-open", json!({"path": "late", "mode": "w"}));
    let e = c.err(
        "guest-file-write",
        json!({"handle": h, "buf-b64": b64(&data), "count": 5}),
    );
    assert_eq!(
        e,
        "value '5' is invalid for argument count (1048576 bytes were already written to the file)"
    );
    assert_eq!(std::fs::read(dir.path().join("late")).unwrap(), data);
    // Before it, `count` is honoured as upstream honours it.
    let h = c.ok("guest-file-open", json!({"path": "early", "mode": "w"}));
    let w = c.ok(
        "guest-file-write",
        json!({"handle": h, "count": 5, "buf-b64": b64(&data)}),
    );
    assert_eq!(w, json!({"count": 5, "eof": false}));
    assert_eq!(std::fs::read(dir.path().join("early")).unwrap(), &data[..5]);
}

#[test]
fn handles_persist_across_restarts() {
    let dir = TempDir::new("persist");
    {
        let mut a = Agent::start(dir.path(), &[]);
        let mut c = a.connect();
        assert_eq!(
            c.ok("guest-file-open", json!({"path": "a", "mode": "w"})),
            1000
        );
        assert_eq!(
            c.ok("guest-file-open", json!({"path": "b", "mode": "w"})),
            1001
        );
        drop(c);
        assert_eq!(a.stop().code(), Some(0));
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("qga.state")).unwrap(),
        "[global]\nfd_counter=1002\n"
    );
    let a = Agent::start(dir.path(), &[]);
    let mut c = a.connect();
    // The old handles are gone; new ones carry on from the counter.
    assert_eq!(
        c.err("guest-file-close", json!({"handle": 1000})),
        "handle '1000' has not been found"
    );
    assert_eq!(
        c.ok("guest-file-open", json!({"path": "a", "mode": "r"})),
        1002
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("qga.state")).unwrap(),
        "[global]\nfd_counter=1003\n"
    );
}

/// Run a program and wait for its final status.
fn exec_wait(c: &mut Client, args: Value) -> Value {
    let pid = c.ok("guest-exec", args)["pid"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = c.ok("guest-exec-status", json!({"pid": pid}));
        if st["exited"] == true {
            assert_eq!(
                c.err("guest-exec-status", json!({"pid": pid})),
                format!("PID {pid} does not exist"),
                "the final status forgets the process"
            );
            return st;
        }
        assert_eq!(st, json!({"exited": false}));
        assert!(Instant::now() < deadline, "child {pid} did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exec_capture_modes() {
    let dir = TempDir::new("exec");
    let a = Agent::start(dir.path(), &[]);
    let mut c = a.connect();
    let script = "echo out; echo err >&2; exit 3";
    let run = |c: &mut Client, capture: Value| {
        let mut args = json!({"path": "/bin/sh", "arg": ["-c", script]});
        if !capture.is_null() {
            args["capture-output"] = capture;
        }
        exec_wait(c, args)
    };
    assert_eq!(
        run(&mut c, Value::Null),
        json!({"exited": true, "exitcode": 3})
    );
    assert_eq!(
        run(&mut c, json!(false)),
        json!({"exited": true, "exitcode": 3})
    );
    assert_eq!(
        run(&mut c, json!("none")),
        json!({"exited": true, "exitcode": 3})
    );
    let both = json!({"exited": true, "exitcode": 3, "out-data": b64(b"out\n"), "out-truncated": false,
        "err-data": b64(b"err\n"), "err-truncated": false});
    assert_eq!(run(&mut c, json!(true)), both);
    assert_eq!(run(&mut c, json!("separated")), both);
    assert_eq!(
        run(&mut c, json!("stdout")),
        json!({"exited": true, "exitcode": 3, "out-data": b64(b"out\n"), "out-truncated": false})
    );
    assert_eq!(
        run(&mut c, json!("stderr")),
        json!({"exited": true, "exitcode": 3, "err-data": b64(b"err\n"), "err-truncated": false})
    );
    assert_eq!(
        run(&mut c, json!("merged")),
        json!({"exited": true, "exitcode": 3, "out-data": b64(b"out\nerr\n"), "out-truncated": false})
    );

    // input-data goes to stdin; env replaces the environment; PATH comes from it.
    let st = exec_wait(
        &mut c,
        json!({"path": "sh", "arg": ["-c", "tr a-z A-Z; echo \"[$FOO][$HOME]\""], "input-data": b64(b"hello"),
            "env": ["FOO=bar", "PATH=/usr/bin:/bin"], "capture-output": "stdout"}),
    );
    assert_eq!(unb64(st["out-data"].as_str().unwrap()), b"HELLO[bar][]\n");
    // A large input, read slowly, does not block the agent.
    let input = vec![b'x'; 4 * 1024 * 1024];
    let pid = c.ok(
        "guest-exec",
        json!({"path": "/bin/sh", "arg": ["-c", "sleep 0.5; wc -c"], "input-data": b64(&input), "capture-output": true}),
    )["pid"]
        .as_i64()
        .unwrap();
    assert_eq!(c.ok("guest-ping", json!({})), json!({}));
    let st = loop {
        let st = c.ok("guest-exec-status", json!({"pid": pid}));
        if st["exited"] == true {
            break st;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        String::from_utf8(unb64(st["out-data"].as_str().unwrap()))
            .unwrap()
            .trim(),
        "4194304"
    );

    // Killed by a signal; the working directory is the agent's.
    assert_eq!(
        exec_wait(
            &mut c,
            json!({"path": "/bin/sh", "arg": ["-c", "kill -9 $$"]})
        ),
        json!({"exited": true, "signal": 9})
    );
    let st = exec_wait(&mut c, json!({"path": "pwd", "capture-output": true}));
    assert_eq!(
        unb64(st["out-data"].as_str().unwrap()),
        format!("{}\n", dir.path().display()).as_bytes()
    );

    // Spawn failure and unknown pid.
    assert_eq!(
        c.err("guest-exec", json!({"path": "/bin/invalid-cmd42"})),
        "Failed to execute child process \u{201C}/bin/invalid-cmd42\u{201D} (No such file or directory)"
    );
    assert_eq!(
        c.err("guest-exec-status", json!({"pid": 999999999})),
        "PID 999999999 does not exist"
    );
}

#[test]
fn exec_output_is_capped_and_never_blocks_the_child() {
    let dir = TempDir::new("exec-big");
    let a = Agent::start(dir.path(), &[]);
    let mut c = a.connect();
    // 100 MiB on stdout and 17 MiB on stderr: the child must finish, each stream keeps 16 MiB.
    let t = Instant::now();
    let st = exec_wait(
        &mut c,
        json!({"path": "/bin/sh", "arg": ["-c", "head -c 104857600 /dev/zero; head -c 17825792 /dev/zero >&2; exit 0"],
            "capture-output": "separated"}),
    );
    eprintln!("100 MiB child done in {:?}", t.elapsed());
    assert_eq!(st["exitcode"], 0);
    assert_eq!(st["out-truncated"], true);
    assert_eq!(st["err-truncated"], true);
    let out = unb64(st["out-data"].as_str().unwrap());
    assert_eq!(out.len(), 16 * 1024 * 1024);
    assert!(out.iter().all(|&b| b == 0));
    assert_eq!(
        unb64(st["err-data"].as_str().unwrap()).len(),
        16 * 1024 * 1024
    );
    // Exactly 16 MiB is not truncated.
    let st = exec_wait(
        &mut c,
        json!({"path": "/bin/sh", "arg": ["-c", "head -c 16777216 /dev/zero"], "capture-output": "stdout"}),
    );
    assert_eq!(st["out-truncated"], false);
}

/// The state letter of a process (`Z` for a zombie), or `None` once it is gone.
fn proc_state(pid: i64) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
}

/// The agent's cap on kept processes (platform-linux's `exec::MAX_PROCS`).
const MAX_PROCS: usize = 512;

#[test]
fn exec_entries_are_capped() {
    let dir = TempDir::new("execcap");
    let a = Agent::start(dir.path(), &[]);
    let mut c = a.connect();
    let pids: Vec<i64> = (0..MAX_PROCS)
        .map(|_| {
            c.ok("guest-exec", json!({"path": "/bin/true"}))["pid"]
                .as_i64()
                .unwrap()
        })
        .collect();
    // Finished or not, unread statuses count: the next one is refused, clearly.
    assert_eq!(
        c.err("guest-exec", json!({"path": "/bin/true"})),
        format!(
            "guest-exec: {MAX_PROCS} processes are running or have a status nobody read, the agent's limit; read their status with guest-exec-status"
        )
    );
    // Reading one final status frees a place.
    exec_wait_known(&mut c, pids[0]);
    let st = exec_wait(&mut c, json!({"path": "/bin/true"}));
    assert_eq!(st, json!({"exited": true, "exitcode": 0}));
    for &p in &pids[1..] {
        exec_wait_known(&mut c, p);
    }
}

/// Wait for the final status of `pid`, started already.
fn exec_wait_known(c: &mut Client, pid: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.ok("guest-exec-status", json!({"pid": pid}))["exited"] != true {
        assert!(Instant::now() < deadline, "child {pid} did not finish");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn children_are_reaped_without_a_status_query() {
    let dir = TempDir::new("reap");
    let a = Agent::start(dir.path(), &[]);
    let mut c = a.connect();
    let pid = c.ok("guest-exec", json!({"path": "/bin/true"}))["pid"]
        .as_i64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(state) = proc_state(pid) {
        assert!(
            Instant::now() < deadline,
            "child {pid} still in state {state}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The agent still has its status, once.
    assert_eq!(
        c.ok("guest-exec-status", json!({"pid": pid})),
        json!({"exited": true, "exitcode": 0})
    );
    // Its own session: the child is not in the agent's process group.
    let st = exec_wait(
        &mut c,
        json!({"path": "/bin/sh", "arg": ["-c", "cat /proc/$$/stat"], "capture-output": true}),
    );
    let stat = String::from_utf8(unb64(st["out-data"].as_str().unwrap())).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let (pgrp, sid) = (fields[2], fields[3]);
    assert_eq!(pgrp, sid);
    assert_ne!(pgrp, a.proc.pid().to_string());
}

#[test]
fn sigterm_and_sigint_exit_zero_every_time() {
    let dir = TempDir::new("sig");
    for i in 0..30 {
        let mut a = Agent::start(dir.path(), &[]);
        // Half of the time with a client in the middle of a request.
        let _c = (i % 2 == 0).then(|| {
            let mut c = a.connect();
            c.send(b"{\"execute\": \"guest-ping\", ");
            c
        });
        let sig = if i % 3 == 0 {
            libc::SIGINT
        } else {
            libc::SIGTERM
        };
        a.proc.signal(sig);
        let st = a
            .proc
            .wait_timeout(Duration::from_secs(10))
            .expect("qga hung on a signal");
        assert_eq!(
            st.code(),
            Some(0),
            "round {i}: {st:?} signal {:?}; stderr: {}",
            st.signal(),
            a.stderr()
        );
    }
    // With an exec child still running, too.
    let mut a = Agent::start(dir.path(), &[]);
    let mut c = a.connect();
    c.ok(
        "guest-exec",
        json!({"path": "/bin/sleep", "arg": ["30"], "capture-output": true}),
    );
    assert_eq!(a.stop().code(), Some(0));
}

#[test]
fn pipelined_requests_are_all_answered() {
    let dir = TempDir::new("pipe");
    let a = Agent::start(dir.path(), &[]);
    let mut c = a.connect();
    let mut burst = Vec::new();
    for i in 0..2000 {
        burst.extend_from_slice(
            format!("{{\"execute\":\"guest-sync\",\"arguments\":{{\"id\":{i}}}}}").as_bytes(),
        );
    }
    // Write from another thread: the agent answers while we still send.
    let mut w = c.writer.try_clone().unwrap();
    let sender = std::thread::spawn(move || w.write_all(&burst).unwrap());
    for i in 0..2000 {
        assert_eq!(c.line(), json!({"return": i}));
    }
    sender.join().unwrap();
}

#[test]
fn a_new_client_gets_a_fresh_parser() {
    let dir = TempDir::new("reset");
    let a = Agent::start(dir.path(), &[]);
    let mut c = a.connect();
    c.send(br#"{"execute":"guest-ping","#);
    std::thread::sleep(Duration::from_millis(100));
    drop(c);
    let mut c = a.connect();
    // upstream would complete the old request with this tail and answer id "after".
    c.send(br#""id":"after"}"#);
    c.send(br#"{"execute":"guest-ping","id":2}"#);
    loop {
        let r = c.line();
        assert_ne!(
            r["id"], "after",
            "half a request survived the reconnect: {r}"
        );
        if r["id"] == 2 {
            assert_eq!(r["return"], json!({}));
            break;
        }
        assert!(r.get("error").is_some(), "{r}");
    }
}

#[test]
fn one_client_at_a_time() {
    let dir = TempDir::new("one");
    let a = Agent::start(dir.path(), &[]);
    let mut first = a.connect();
    assert_eq!(first.ok("guest-ping", json!({})), json!({}));
    // A second client waits in the backlog until the first leaves.
    let second = UnixStream::connect(&a.sock).unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    (&second)
        .write_all(br#"{"execute":"guest-sync","arguments":{"id":7}}"#)
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        (&second).read(&mut buf).is_err(),
        "the second client was served while the first was connected"
    );
    assert_eq!(first.ok("guest-ping", json!({})), json!({}));
    drop(first);
    let mut second = Client::new(second);
    assert_eq!(second.line(), json!({"return": 7}));
}

#[test]
fn stale_socket_is_replaced() {
    let dir = TempDir::new("stale");
    let sock = dir.path().join("sock");
    // A socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let a = Agent::start(dir.path(), &[]);
    assert_eq!(a.connect().ok("guest-ping", json!({})), json!({}));
}

#[test]
fn starts_frozen_when_the_isfrozen_file_exists() {
    let dir = TempDir::new("frozen");
    std::fs::write(dir.path().join("qga.state.isfrozen"), "").unwrap();
    let log = dir.path().join("log");
    let mut a = Agent::start(dir.path(), &["-l", log.to_str().unwrap(), "-v"]);
    let mut c = a.connect();
    assert_eq!(c.ok("guest-fsfreeze-status", json!({})), "frozen");
    assert_eq!(c.ok("guest-ping", json!({})), json!({}));
    // Only the thaw-safe commands work, even those not blocked.
    let r = c.call("guest-get-time", json!({}));
    assert_eq!(r["error"]["class"], "CommandNotFound", "{r}");
    let r = c.call("guest-file-open", json!({"path": "x", "mode": "w"}));
    assert_eq!(r["error"]["class"], "CommandNotFound", "{r}");
    // Creating the log file waits for the thaw.
    assert!(!log.exists());
    drop(c);
    // On SIGTERM the agent thaws (a no-op on this host: nothing is frozen) and exits 0.
    assert_eq!(a.stop().code(), Some(0));
    assert!(!dir.path().join("qga.state.isfrozen").exists());
}

#[test]
fn logfile_and_verbose() {
    let dir = TempDir::new("log");
    let log = dir.path().join("qga.log");
    let mut a = Agent::start(dir.path(), &["-l", log.to_str().unwrap(), "-v"]);
    a.connect()
        .ok("guest-file-open", json!({"path": "x", "mode": "w"}));
    assert_eq!(a.stop().code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    let first = text.lines().next().unwrap();
    // "<secs>.<usecs>: debug: Guest agent version 0.1.0 started"
    let (stamp, rest) = first.split_once(": ").unwrap();
    let (secs, usecs) = stamp.split_once('.').unwrap();
    assert!(
        secs.parse::<u64>().is_ok() && usecs.parse::<u32>().is_ok(),
        "{first}"
    );
    assert_eq!(rest, "debug: Guest agent version 0.1.0 started");
    assert!(
        text.contains(": info: guest-file-open called, filepath: x"),
        "{text}"
    );
    assert!(
        text.contains(": debug: received signal num 15, quitting"),
        "{text}"
    );
    assert_eq!(a.stderr(), "");

    // Without -v only errors are written.
    let mut a = Agent::start(dir.path(), &["-l", log.to_str().unwrap()]);
    std::fs::write(&log, "").unwrap();
    a.connect().ok("guest-ping", json!({}));
    assert_eq!(a.stop().code(), Some(0));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "");
}

#[test]
fn daemonize_writes_and_removes_the_pidfile() {
    let dir = TempDir::new("daemon");
    let pidfile = dir.path().join("qga.pid");
    let mut parent = Proc(Some(
        agent_command(dir.path(), &["-d", "-f", pidfile.to_str().unwrap()])
            .spawn()
            .unwrap(),
    ));
    let st = parent
        .wait_timeout(Duration::from_secs(10))
        .expect("the parent exits");
    assert_eq!(st.code(), Some(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid: i32 = loop {
        if let Ok(t) = std::fs::read_to_string(&pidfile)
            && let Ok(p) = t.trim().parse()
        {
            break p;
        }
        assert!(Instant::now() < deadline, "no pid file");
        std::thread::sleep(Duration::from_millis(10));
    };
    /// Kills the daemon by its pid on drop.
    struct Daemon(i32);
    impl Drop for Daemon {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the daemon's pid (it is not our child; it may be gone).
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
            }
        }
    }
    let daemon = Daemon(pid);
    let sock = dir.path().join("sock");
    let stream = loop {
        if let Ok(s) = UnixStream::connect(&sock) {
            break s;
        }
        assert!(Instant::now() < deadline, "the daemon does not listen");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut c = Client::new(stream);
    assert_eq!(c.ok("guest-ping", json!({})), json!({}));
    // SAFETY: kill(2) with SIGTERM on the daemon.
    unsafe {
        libc::kill(daemon.0, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while proc_state(i64::from(pid)).is_some_and(|s| s != 'Z') {
        assert!(Instant::now() < deadline, "the daemon did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!pidfile.exists(), "the pid file is removed at exit");
}

#[test]
fn socket_activation() {
    let dir = TempDir::new("activation");
    let sock = dir.path().join("activated");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    use std::os::fd::AsRawFd as _;
    use std::os::unix::process::CommandExt as _;
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    // -m and -p name something else: activation wins, as upstream.
    cmd.arg("-c")
        .arg(format!(
            "LISTEN_PID=$$ LISTEN_FDS=1 exec {QGA} -m isa-serial -p /nonexistent -t {} -b {BLOCKED}",
            dir.path().display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: dup2 in the forked child only (async-signal-safe), making the listening socket fd 3.
    unsafe {
        cmd.pre_exec(move || {
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut proc = Proc(Some(cmd.spawn().unwrap()));
    drop(listener);
    let mut c = Client::new(UnixStream::connect(&sock).unwrap());
    assert_eq!(c.ok("guest-sync", json!({"id": 5})), 5);
    drop(c);
    proc.signal(libc::SIGTERM);
    assert_eq!(
        proc.wait_timeout(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
}

/// A pty pair: the agent gets the slave as its isa-serial device.
fn openpty() -> (std::fs::File, PathBuf) {
    // SAFETY: posix_openpt/grantpt/unlockpt/ptsname_r on a fresh fd we own, with a valid buffer.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(m >= 0);
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut buf = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(m, buf.as_mut_ptr(), buf.len()), 0);
        let name = std::ffi::CStr::from_ptr(buf.as_ptr())
            .to_str()
            .unwrap()
            .to_string();
        use std::os::fd::FromRawFd as _;
        (std::fs::File::from_raw_fd(m), PathBuf::from(name))
    }
}

/// Sends `request` every half second until the bytes read back end with `answer` (at most
/// `within`); returns everything read. For a port the agent may not have opened yet.
fn sync_on_tty(
    reader: &mut BufReader<std::fs::File>,
    writer: &mut std::fs::File,
    request: &[u8],
    answer: &[u8],
    within: Duration,
) -> Vec<u8> {
    use std::os::fd::AsRawFd as _;
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    loop {
        writer.write_all(request).unwrap();
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(500) {
            let mut pfd = libc::pollfd {
                fd: reader.get_ref().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll(2) on one valid pollfd for at most 100 ms.
            if unsafe { libc::poll(&mut pfd, 1, 100) } != 1 {
                continue;
            }
            let mut byte = [0u8; 1];
            if reader.get_mut().read(&mut byte).unwrap_or(0) == 1 {
                got.push(byte[0]);
                if got.ends_with(answer) {
                    return got;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no answer on the tty: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
}

#[test]
fn isa_serial_on_a_pty_is_raw_and_loses_no_reply() {
    let dir = TempDir::new("serial");
    let (master, slave) = openpty();
    let mut cmd = Command::new(QGA);
    cmd.args(["-m", "isa-serial", "-p"])
        .arg(&slave)
        .arg("-t")
        .arg(dir.path())
        .args(["-b", BLOCKED])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _proc = Proc(Some(cmd.spawn().unwrap()));
    let mut reader = BufReader::new(master.try_clone().unwrap());
    let mut writer = master;
    // The agent may still be setting up the port (until then the pty echoes what we write):
    // sync until it answers; the 0xFF makes the parser drop anything half-read.
    let answer: &[u8] = b"{\"return\": 4242}\n";
    let line = sync_on_tty(
        &mut reader,
        &mut writer,
        b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":4242}}",
        answer,
        Duration::from_secs(10),
    );
    // Raw output: "\n" is not turned into "\r\n", and the sentinel byte came first.
    let at = line.len() - answer.len();
    assert_eq!(line.get(at.wrapping_sub(1)), Some(&0xff), "{line:?}");
    // Pipelined requests on the serial line: every reply arrives.
    let mut burst = Vec::new();
    for i in 0..300 {
        burst.extend_from_slice(
            format!("{{\"execute\":\"guest-sync\",\"arguments\":{{\"id\":{i}}}}}").as_bytes(),
        );
    }
    writer.write_all(&burst).unwrap();
    for i in 0..300 {
        let mut l = String::new();
        reader.read_line(&mut l).unwrap();
        assert_eq!(l, format!("{{\"return\": {i}}}\n"));
    }
}

#[test]
fn sigterm_ends_a_reply_the_client_does_not_read() {
    let dir = TempDir::new("stuck");
    std::fs::write(dir.path().join("big"), vec![7u8; 8 * 1024 * 1024]).unwrap();
    let mut a = Agent::start(dir.path(), &[]);
    let mut c = a.connect();
    assert_eq!(c.ok("guest-file-open", json!({"path": "big"})), 1000);
    // 8 MiB of reply that nobody reads: the agent waits for the socket to drain.
    c.send(br#"{"execute":"guest-file-read","arguments":{"handle":1000,"count":8388608}}"#);
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(a.stop().code(), Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn retry_path_waits_for_the_device() {
    let dir = TempDir::new("retry");
    let dev = dir.path().join("port");
    let mut cmd = Command::new(QGA);
    cmd.args(["-m", "virtio-serial", "-r", "-v", "-p"])
        .arg(&dev)
        .arg("-t")
        .arg(dir.path())
        .args(["-b", BLOCKED])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap());
    let mut proc = Proc(Some(cmd.spawn().unwrap()));
    // No device: the agent keeps waiting instead of exiting.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        proc.wait_timeout(Duration::ZERO).is_none(),
        "qga exited without its device"
    );
    // The device appears (a pty stands in for the port); within the 5 s retry the agent
    // opens it and answers.
    let (master, slave) = openpty();
    // A virtio port is no tty: make the pty pass bytes through as one would.
    let slave_fd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&slave)
        .unwrap();
    {
        use std::os::fd::AsRawFd as _;
        // SAFETY: tcgetattr/cfmakeraw/tcsetattr on an open tty fd with a zeroed termios.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            assert_eq!(libc::tcgetattr(slave_fd.as_raw_fd(), &mut t), 0);
            libc::cfmakeraw(&mut t);
            assert_eq!(libc::tcsetattr(slave_fd.as_raw_fd(), libc::TCSANOW, &t), 0);
        }
    }
    std::os::unix::fs::symlink(&slave, &dev).unwrap();
    let mut reader = BufReader::new(master.try_clone().unwrap());
    let mut writer = master;
    sync_on_tty(
        &mut reader,
        &mut writer,
        b"\xff{\"execute\":\"guest-sync\",\"arguments\":{\"id\":77}}",
        b"{\"return\": 77}\n",
        Duration::from_secs(15),
    );
    let log = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(log.contains("error opening channel"), "{log}");
    assert!(log.contains("waiting for channel path..."), "{log}");
    proc.signal(libc::SIGTERM);
    assert_eq!(
        proc.wait_timeout(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
}

#[test]
fn vsock_listen_binds_cid_and_port() {
    // This host has AF_VSOCK but no loopback transport, so no client can connect here; the
    // guest tests cover the conversation. What the host can check: the wildcard CID binds and
    // the agent serves until SIGTERM, and a CID that is not ours is a clear start-up error.
    // Without AF_VSOCK the test fails, unless QGA_TEST_ALLOW_MISSING names `vsock`: then the
    // binding half is not checked, and the error half checks the socket error instead.
    let dir = TempDir::new("vsock");
    let have_vsock = match vsock_available() {
        Ok(()) => true,
        Err(e) => {
            missing_vsock(&e);
            false
        }
    };
    if have_vsock {
        vsock_wildcard_binds_and_serves(&dir);
    }
    let o = run_qga(
        &[
            "-m",
            "vsock-listen",
            "-p",
            "12345:47124",
            "-t",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let expected = if have_vsock {
        "Failed to bind socket: Cannot assign requested address"
    } else {
        "Failed to create socket: "
    };
    assert!(text(&o.stderr).contains(expected), "{}", text(&o.stderr));
}

/// Without AF_VSOCK: fails with how to get it, unless `QGA_TEST_ALLOW_MISSING` (a
/// comma-separated list, as in the `tests` crate's `require` module) names `vsock` or `all`.
fn missing_vsock(e: &std::io::Error) {
    let allowed = std::env::var("QGA_TEST_ALLOW_MISSING").is_ok_and(|v| {
        v.split(',')
            .map(str::trim)
            .any(|n| n == "vsock" || n == "all")
    });
    assert!(
        allowed,
        "no AF_VSOCK on this machine ({e}): this test cannot bind a vsock address. Load the \
         kernel's vsock module (`modprobe vsock`), or set QGA_TEST_ALLOW_MISSING=vsock to run \
         without it (the binding half is then not checked)"
    );
    eprintln!(
        "SKIP: no AF_VSOCK ({e}); QGA_TEST_ALLOW_MISSING allows it: the binding half is not checked"
    );
}

/// The wildcard CID binds, and the agent serves until SIGTERM, then exits 0.
fn vsock_wildcard_binds_and_serves(dir: &TempDir) {
    let mut cmd = Command::new(QGA);
    cmd.args(["-m", "vsock-listen", "-p", "4294967295:47123", "-t"])
        .arg(dir.path())
        .args(["-b", BLOCKED])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut proc = Proc(Some(cmd.spawn().unwrap()));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        proc.wait_timeout(Duration::ZERO).is_none(),
        "qga exited on a valid vsock address"
    );
    proc.signal(libc::SIGTERM);
    assert_eq!(
        proc.wait_timeout(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
}

fn vsock_available() -> std::io::Result<()> {
    // SAFETY: socket(2) and close(2) on a descriptor we own.
    unsafe {
        let fd = libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::close(fd);
    }
    Ok(())
}
