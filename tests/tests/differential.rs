//! Differential tests: the same request streams sent to our `qga` and to Debian's `qemu-ga`
//! (7.2), both as host agents in `unix-listen` mode with the safety block list, and the answers
//! compared after parsing.
//!
//! Each exchange sends the case's bytes, then a `guest-sync` marker, and collects every line up
//! to the marker's answer, so a case that yields more or fewer responses than upstream shows up
//! as a difference instead of a hang. Responses are compared as parsed JSON (member order is
//! cosmetic, see docs/protocol.md §2.5) plus whether the line carried the 0xFF sentinel. Only what must
//! differ is normalised, each with its reason next to it:
//! - values that change between two calls (time, pids, load); counters and used space are
//!   instead checked against qemu-ga's readings just before and just after ours
//!   ([`Pair::bounded`]);
//! - `version` and the command lists of 7.2 against master (docs/protocol.md §6);
//! - upstream's documented 7.2 texts where master (which we follow) differs (docs/protocol.md §6);
//! - the deliberate differences listed in platform-linux/DIFFERENCES.md and README.md.
//!
//! Every mismatch of a test is collected and reported at once, with both sides.

use std::fmt::Write as _;
use std::time::Duration;

use qga_client::{Client, parse_line};
use serde_json::{Value, json};
use tests::host_agent::{AgentKind, HostAgent, upstream_binary, upstream_missing};
use tests::require::{Dependency, missing};

/// The marker id that ends every exchange.
const MARK: i64 = 771_771_771;

/// One response as seen on the wire.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    delimited: bool,
    value: Value,
}

/// Both agents, connected.
struct Pair {
    agents: [HostAgent; 2],
    clients: [Client; 2],
    diffs: Vec<String>,
    cases: usize,
}

impl Pair {
    /// Starts both agents. Without qemu-ga there is nothing to compare against: the test
    /// fails, saying how to install it, unless `QGA_TEST_ALLOW_MISSING` names `qemu-ga`; then
    /// this returns `None` and the test passes having compared nothing.
    fn start() -> Option<Self> {
        if upstream_binary().is_none() {
            missing(Dependency::QemuGa, &upstream_missing());
            return None;
        }
        let ours = HostAgent::start(AgentKind::Ours).unwrap();
        let theirs = HostAgent::start(AgentKind::Upstream).unwrap();
        let mut a = ours.connect().unwrap();
        let mut b = theirs.connect().unwrap();
        a.set_timeout(Duration::from_secs(30));
        b.set_timeout(Duration::from_secs(30));
        Some(Pair {
            agents: [ours, theirs],
            clients: [a, b],
            diffs: Vec::new(),
            cases: 0,
        })
    }

    /// Sends `chunks` (with a short pause between them) and the marker to one agent; returns
    /// the lines before the marker's answer.
    fn exchange_one(&mut self, i: usize, chunks: &[&[u8]]) -> Result<Vec<Line>, String> {
        let c = &mut self.clients[i];
        for (k, chunk) in chunks.iter().enumerate() {
            if k > 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
            c.send_raw(chunk).map_err(|e| e.to_string())?;
        }
        c.send_raw(
            format!("\n{{\"execute\":\"guest-sync\",\"arguments\":{{\"id\":{MARK}}}}}").as_bytes(),
        )
        .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        loop {
            let raw = c.read_line().map_err(|e| {
                format!(
                    "{e} (after {} lines: {out:?}); agent log:\n{}",
                    out.len(),
                    self.agents[i].log()
                )
            })?;
            let delimited = raw.first() == Some(&0xFF);
            let value = match parse_line(&raw) {
                Ok(v) => v,
                Err(e) => Value::String(format!("<unparseable: {e}>")),
            };
            if value == json!({"return": MARK}) && !delimited {
                return Ok(out);
            }
            out.push(Line { delimited, value });
        }
    }

    /// Runs a case on both agents and returns (ours, upstream) raw.
    fn both(&mut self, chunks: &[&[u8]]) -> [Result<Vec<Line>, String>; 2] {
        let a = self.exchange_one(0, chunks);
        if a.is_err() {
            self.resync(0);
        }
        let b = self.exchange_one(1, chunks);
        if b.is_err() {
            self.resync(1);
        }
        [a, b]
    }

    /// After a failed exchange: a fresh connection, synchronised.
    fn resync(&mut self, i: usize) {
        if let Ok(mut c) = self.agents[i].connect() {
            c.set_timeout(Duration::from_secs(30));
            self.clients[i] = c;
        }
    }

    /// Runs a case on both agents, normalises with `norm`, and records any difference.
    fn case_with(&mut self, name: &str, chunks: &[&[u8]], norm: &dyn Fn(&mut Value)) {
        self.cases += 1;
        let [a, b] = self.both(chunks);
        let fix = |r: Result<Vec<Line>, String>| {
            r.map(|lines| {
                lines
                    .into_iter()
                    .map(|mut l| {
                        normalize_common(&mut l.value);
                        norm(&mut l.value);
                        l
                    })
                    .collect::<Vec<_>>()
            })
        };
        let (a, b) = (fix(a), fix(b));
        if std::env::var_os("QGA_DIFF_SHOW").is_some() {
            eprintln!("case `{name}`: qga {a:?}\n    qemu-ga {b:?}");
        }
        if a != b {
            let mut msg = format!("case `{name}`: sent {}\n", show_bytes(chunks));
            let side = |r: &Result<Vec<Line>, String>| match r {
                Ok(lines) => lines
                    .iter()
                    .map(|l| {
                        format!(
                            "      {}{}",
                            if l.delimited { "\\xff " } else { "" },
                            l.value
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                Err(e) => format!("      ERROR {e}"),
            };
            let _ = write!(msg, "  qga:\n{}\n  qemu-ga:\n{}", side(&a), side(&b));
            self.diffs.push(msg);
        }
    }

    /// For a command whose numbers move between two calls: reads `cmd` from qemu-ga, then from
    /// qga, then from qemu-ga again, and checks every number of ours that `bound_for` names
    /// against qemu-ga's two readings of the same element (list elements are matched by the
    /// member `key`; the numbers are in the element itself, or in its member `numbers_at`).
    /// The shape of the answers (members, types, every other value) is compared by a
    /// [`Pair::case_with`] beside it.
    fn bounded(
        &mut self,
        cmd: &str,
        key: &str,
        numbers_at: Option<&str>,
        bound_for: &dyn Fn(&str) -> Option<Bound>,
    ) {
        self.cases += 1;
        let mut read = |i: usize| {
            self.clients[i]
                .execute(cmd, None)
                .map_err(|e| format!("{cmd} on {}: {e}", ["qga", "qemu-ga"][i]))
        };
        let (before, ours, after) = match (read(1), read(0), read(1)) {
            (Ok(b), Ok(o), Ok(a)) => (b, o, a),
            (b, o, a) => {
                self.diffs.push(format!(
                    "{cmd} (bounds): qemu-ga before {b:?}\n  qga {o:?}\n  qemu-ga after {a:?}"
                ));
                return;
            }
        };
        let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
        let (before, after) = (list(&before), list(&after));
        let find = |l: &[Value], k: &Value| l.iter().find(|e| &e[key] == k).cloned();
        let numbers = |e: &Value| match numbers_at {
            Some(m) => e.get(m).and_then(Value::as_object).cloned(),
            None => e.as_object().cloned(),
        };
        let mut checked = 0usize;
        for e in list(&ours) {
            let k = &e[key];
            let (Some(b), Some(a)) = (find(&before, k), find(&after, k)) else {
                self.diffs.push(format!(
                    "{cmd} (bounds): qemu-ga has no element with {key} {k} in one of its two \
                     readings"
                ));
                continue;
            };
            // An element without numbers on one side (e.g. our statistics of an address-less
            // interface) is the shape comparison's business.
            let (Some(nb), Some(no), Some(na)) = (numbers(&b), numbers(&e), numbers(&a)) else {
                continue;
            };
            for (m, v) in &no {
                let Some(bound) = bound_for(m) else { continue };
                let (Some(lo), Some(x), Some(hi)) = (
                    nb.get(m).and_then(Value::as_u64),
                    v.as_u64(),
                    na.get(m).and_then(Value::as_u64),
                ) else {
                    self.diffs.push(format!(
                        "{cmd} {key} {k} `{m}`: not a non-negative integer on every side: \
                         qemu-ga before {:?}, qga {v}, qemu-ga after {:?}",
                        nb.get(m),
                        na.get(m)
                    ));
                    continue;
                };
                checked += 1;
                if !bound.holds(lo, x, hi) {
                    self.diffs.push(format!(
                        "{cmd} {key} {k} `{m}`: qga {x} is not {} qemu-ga's readings (before \
                         {lo}, after {hi})",
                        bound.describe()
                    ));
                }
            }
        }
        if checked == 0 {
            self.diffs.push(format!(
                "{cmd} (bounds): no number was compared (qga answered {ours})"
            ));
        }
    }

    fn case(&mut self, name: &str, bytes: &[u8]) {
        self.case_with(name, &[bytes], &|_| {});
    }

    /// Runs a command on both agents and returns both `return` values (or `Err(desc)`),
    /// without comparing: for setting up state.
    fn execute_both(&mut self, cmd: &str, args: Value) -> [Result<Value, String>; 2] {
        let mut out = [Err(String::new()), Err(String::new())];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = self.clients[i]
                .execute(cmd, Some(args.clone()))
                .map_err(|e| e.to_string());
        }
        out
    }

    /// Fails the test with every difference found.
    fn finish(self, what: &str) {
        assert!(
            self.diffs.is_empty(),
            "{what}: {} of {} cases differ between qga and qemu-ga:\n\n{}",
            self.diffs.len(),
            self.cases,
            self.diffs.join("\n\n")
        );
        assert!(self.cases > 0);
    }
}

fn show_bytes(chunks: &[&[u8]]) -> String {
    let mut s = String::new();
    for (k, c) in chunks.iter().enumerate() {
        if k > 0 {
            s.push_str(" | ");
        }
        let text: String = c.escape_ascii().to_string();
        if text.len() > 200 {
            let _ = write!(s, "{}… ({} bytes)", &text[..200], c.len());
        } else {
            s.push_str(&text);
        }
    }
    s
}

/// Normalisations that apply to every response: upstream's 7.2 texts where master differs
/// (docs/protocol.md §6), which this agent follows.
fn normalize_common(v: &mut Value) {
    let Some(desc) = v.pointer_mut("/error/desc") else {
        return;
    };
    let Some(text) = desc.as_str() else {
        return;
    };
    let mut t = text.to_string();
    // Disabled command: 7.2 "Command X has been disabled", master adds ": the command is not
    // allowed".
    if let Some(stripped) = t.strip_suffix(": the command is not allowed") {
        t = stripped.to_string();
    }
    // guest-exec spawn failure: 7.2 wraps GLib's text.
    if let Some(inner) = t
        .strip_prefix("Guest agent command failed, error was '")
        .and_then(|s| s.strip_suffix('\''))
    {
        t = inner.to_string();
    }
    // guest-exec-status of an unknown pid: 7.2 "Invalid parameter 'pid'", master's literal
    // "PID ld does not exist" (a format bug), or the intended "PID <n> does not exist".
    if t == "Invalid parameter 'pid'" || (t.starts_with("PID ") && t.ends_with(" does not exist")) {
        t = "<unknown pid>".to_string();
    }
    *desc = Value::String(t);
}

/// How [`Pair::bounded`] compares one number of ours with qemu-ga's readings before and after.
#[derive(Debug, Clone, Copy)]
enum Bound {
    /// A counter that only grows: before ≤ ours ≤ after.
    Counter,
    /// A counter the kernel may move back a little: before − slack ≤ ours ≤ after + slack.
    CounterWithSlack(u64),
    /// A value that must not move: ours = before = after.
    Exact,
    /// A value of the moment that moves both ways: between the two readings, widened by slack.
    Gauge(u64),
    /// A value of the moment with no bound between readings: only its type is checked.
    AnyInteger,
}

impl Bound {
    fn describe(self) -> String {
        match self {
            Bound::Counter => "between".into(),
            Bound::CounterWithSlack(s) => format!("within {s} of"),
            Bound::Exact => "equal to".into(),
            Bound::Gauge(s) => format!("within {s} of the range of"),
            Bound::AnyInteger => "any integer like".into(),
        }
    }

    fn holds(self, before: u64, ours: u64, after: u64) -> bool {
        let (lo, hi) = (before.min(after), before.max(after));
        match self {
            Bound::Counter => before <= ours && ours <= after,
            Bound::CounterWithSlack(s) => {
                before.saturating_sub(s) <= ours && ours <= after.saturating_add(s)
            }
            Bound::Exact => before == ours && ours == after,
            Bound::Gauge(s) => lo.saturating_sub(s) <= ours && ours <= hi.saturating_add(s),
            Bound::AnyInteger => true,
        }
    }
}

/// Replaces every number inside `v` with a placeholder (values that change between calls).
fn blur_numbers(v: &mut Value) {
    match v {
        Value::Number(_) => *v = json!("<n>"),
        Value::Array(a) => a.iter_mut().for_each(blur_numbers),
        Value::Object(m) => m.values_mut().for_each(blur_numbers),
        _ => {}
    }
}

fn req(cmd: &str) -> Vec<u8> {
    json!({"execute": cmd}).to_string().into_bytes()
}

fn req_args(cmd: &str, args: Value) -> Vec<u8> {
    json!({"execute": cmd, "arguments": args})
        .to_string()
        .into_bytes()
}

#[test]
fn read_only_commands() {
    let Some(mut p) = Pair::start() else { return };
    for cmd in [
        "guest-ping",
        "guest-fsfreeze-status",
        "guest-get-vcpus",
        "guest-get-memory-blocks",
        "guest-get-memory-block-info",
        "guest-get-host-name",
        "guest-get-users",
        "guest-get-timezone",
        "guest-get-osinfo",
        "guest-get-disks",
    ] {
        p.case(cmd, &req(cmd));
    }
    p.case("guest-sync", &req_args("guest-sync", json!({"id": 123456})));
    p.case(
        "guest-sync, string id member",
        br#"{"execute":"guest-sync","arguments":{"id":-5},"id":"abc"}"#,
    );
    p.case(
        "guest-sync-delimited (0xFF on the answer)",
        &req_args("guest-sync-delimited", json!({"id": 42})),
    );
    p.case_with("guest-get-time", &[&req("guest-get-time")], &|v| {
        // Nanoseconds now: must be an integer within a minute of the host's clock.
        if let Some(t) = v.get("return").and_then(Value::as_i64) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0);
            v["return"] = json!(if (t - now).abs() < 60_000_000_000 {
                "<now>"
            } else {
                "<wrong time>"
            });
        }
    });
    p.case_with("guest-info", &[&req("guest-info")], &|v| {
        let Some(r) = v.get_mut("return") else { return };
        r["version"] = json!("<version>");
        // 7.2 lists 42 commands (guest-get-devices disabled, no guest-get-load or
        // guest-network-get-route); master's Linux build lists 43. Compare the rest as a set.
        if let Some(list) = r
            .get_mut("supported_commands")
            .and_then(Value::as_array_mut)
        {
            list.retain(|c| {
                !matches!(
                    c["name"].as_str(),
                    Some("guest-get-devices" | "guest-get-load" | "guest-network-get-route")
                )
            });
            list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        }
    });
    p.case_with(
        "guest-network-get-interfaces",
        &[&req("guest-network-get-interfaces")],
        &|v| {
            if let Some(list) = v.get_mut("return").and_then(Value::as_array_mut) {
                for iface in list {
                    // Counters move between the two calls.
                    if let Some(s) = iface.get_mut("statistics") {
                        blur_numbers(s);
                    }
                    // DIFFERENCES.md: we report statistics for address-less interfaces too.
                    if iface.get("ip-addresses").is_none()
                        && let Some(o) = iface.as_object_mut()
                    {
                        o.remove("statistics");
                    }
                }
            }
        },
    );
    p.case_with("guest-get-fsinfo", &[&req("guest-get-fsinfo")], &|v| {
        if let Some(list) = v.get_mut("return").and_then(Value::as_array_mut) {
            for fs in list {
                if let Some(o) = fs.as_object_mut() {
                    // Added in 9.1 (master); 7.2 has no such member.
                    o.remove("total-bytes-privileged");
                    // Used space moves while other processes write: bounded below.
                    // `total-bytes` is compared exactly, here and below.
                    if let Some(n) = o.get_mut("used-bytes") {
                        blur_numbers(n);
                    }
                }
            }
        }
    });
    p.case_with(
        "guest-get-diskstats",
        &[&req("guest-get-diskstats")],
        &|v| {
            if let Some(list) = v.get_mut("return").and_then(Value::as_array_mut) {
                for d in list {
                    if let Some(s) = d.get_mut("stats") {
                        blur_numbers(s);
                    }
                }
            }
        },
    );
    p.case_with("guest-get-cpustats", &[&req("guest-get-cpustats")], &|v| {
        if let Some(list) = v.get_mut("return").and_then(Value::as_array_mut) {
            for c in list {
                if let Some(o) = c.as_object_mut() {
                    for (k, val) in o.iter_mut() {
                        if k != "cpu" {
                            blur_numbers(val);
                        }
                    }
                }
            }
        }
    });
    // The numbers blurred above, each against qemu-ga's readings just before and just after
    // ours.
    p.bounded("guest-get-diskstats", "name", Some("stats"), &|m| {
        Some(match m {
            // Requests in flight at the moment of reading: no bound between two readings.
            "ios-pgr" => Bound::AnyInteger,
            // Every other member is a count (I/Os, merges, sectors, milliseconds) since boot.
            _ => Bound::Counter,
        })
    });
    p.bounded("guest-get-cpustats", "cpu", None, &|m| match m {
        "cpu" | "type" => None,
        // The kernel documents that iowait can go down (Documentation/filesystems/proc.rst:
        // "iowait ... will decrease in certain conditions"): 10 ticks of slack.
        "iowait" => Some(Bound::CounterWithSlack(10)),
        // user, nice, system, idle, irq, softirq, steal, guest, guestnice: ticks since boot.
        _ => Some(Bound::Counter),
    });
    p.bounded(
        "guest-network-get-interfaces",
        "name",
        Some("statistics"),
        // Bytes, packets, errors and drops since the interface came up.
        &|_| Some(Bound::Counter),
    );
    p.bounded("guest-get-fsinfo", "mountpoint", None, &|m| match m {
        // Size less the blocks reserved for root: fixed while the filesystem is mounted.
        "total-bytes" => Some(Bound::Exact),
        // Other processes on this machine (builds, other suites) write and delete files
        // between the readings, so used space moves both ways: between qemu-ga's two readings,
        // with 256 MiB of slack. Reporting free instead of available blocks, or the wrong block
        // size, is off by far more than that.
        "used-bytes" => Some(Bound::Gauge(256 << 20)),
        _ => None,
    });
    p.case(
        "guest-ssh-get-authorized-keys, unknown user",
        &req_args(
            "guest-ssh-get-authorized-keys",
            json!({"username": "no-such-user-qga"}),
        ),
    );
    p.case(
        "guest-ssh-get-authorized-keys, root",
        &req_args("guest-ssh-get-authorized-keys", json!({"username": "root"})),
    );
    // guest-get-devices (Windows only): 7.2 registers it disabled (CommandNotFound "has been
    // disabled"), master does not compile it on Linux (CommandNotFound "has not been found");
    // our one command table keeps it and answers upstream's unsupported error, listing it in
    // guest-info with enabled:false (README, differences). All three refuse it.
    p.case_with("guest-get-devices", &[&req("guest-get-devices")], &|v| {
        let class = v.pointer("/error/class").and_then(Value::as_str);
        let desc = v.pointer("/error/desc").and_then(Value::as_str);
        if matches!(
            (class, desc),
            (Some("CommandNotFound"), _)
                | (
                    Some("GenericError"),
                    Some("this feature or command is not currently supported")
                )
        ) {
            *v = json!({"error": "<refused>"});
        }
    });
    p.finish("read-only commands");

    // The two commands newer than 7.2: ours answers them, 7.2 does not know them.
    let Some(mut p) = Pair::start() else { return };
    for cmd in ["guest-get-load", "guest-network-get-route"] {
        let [ours, theirs] = p.execute_both(cmd, json!({}));
        assert!(
            theirs
                .as_ref()
                .is_err_and(|e| e.contains(&format!("The command {cmd} has not been found"))),
            "{cmd}: qemu-ga 7.2: {theirs:?}"
        );
        let ours = ours.unwrap_or_else(|e| panic!("{cmd}: qga: {e}"));
        match cmd {
            "guest-get-load" => {
                for k in ["load1m", "load5m", "load15m"] {
                    assert!(ours[k].is_number(), "{cmd}: {ours}");
                }
            }
            _ => assert!(
                ours.as_array()
                    .is_some_and(|r| r.iter().all(|x| x["iface"].is_string())),
                "{cmd}: {ours}"
            ),
        }
    }
}

/// Runs `f` on a thread with a large stack: a response echoing a 1024-deep `id` is parsed and
/// dropped recursively, which a default 2 MiB test thread cannot hold in a debug build.
fn with_big_stack(f: impl FnOnce() + Send + 'static) {
    let t = std::thread::Builder::new()
        .stack_size(512 << 20)
        .spawn(f)
        .unwrap();
    if let Err(e) = t.join() {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn malformed_input() {
    with_big_stack(malformed_input_body);
}

fn malformed_input_body() {
    let Some(mut p) = Pair::start() else { return };
    let ping = br#"{"execute":"guest-ping"}"#;
    let cat = |a: &[u8], b: &[u8]| [a, b].concat();
    p.case("0xFF then a request", &cat(b"\xff", ping));
    p.case(
        "0xFF inside a partial request",
        &cat(b"{\"execute\":\xff", ping),
    );
    p.case("0xFF inside a string", b"{\"execute\":\"guest-ping\xff\"}");
    p.case("control byte", &cat(b"\x01", ping));
    p.case(
        "control byte in a string",
        b"{\"execute\":\"guest-\x02ping\"}",
    );
    p.case("stray upper-case char", &cat(b"A", ping));
    p.case("stray @", &cat(b"@ ", ping));
    p.case("leading zero", &cat(b"01 ", ping));
    p.case("unknown literal", br#"{"execute":"guest-ping","id":nul}"#);
    p.case(
        "upper-case literal",
        br#"{"execute":"guest-ping","id":True}"#,
    );
    p.case("lone }", b"}");
    p.case("lone ]", b"]");
    p.case("trailing comma", br#"{"execute":"guest-ping",}"#);
    p.case(
        "trailing comma in a list",
        br#"{"execute":"guest-ping","id":[1,]}"#,
    );
    p.case("missing colon", br#"{"execute" "guest-ping"}"#);
    p.case(
        "junk between members",
        br#"{"execute":"guest-ping" "id":1}"#,
    );
    p.case(
        "junk between list items",
        br#"{"execute":"guest-ping","id":[1 2]}"#,
    );
    p.case("non-string key", br#"{"execute":"guest-ping",1:2}"#);
    p.case(
        "duplicate key",
        br#"{"execute":"guest-ping","execute":"guest-ping"}"#,
    );
    p.case("duplicate id", br#"{"execute":"guest-ping","id":1,"id":2}"#);
    p.case("bad escape", br#"{"execute":"guest-p\qing"}"#);
    p.case("bad UTF-8", b"{\"execute\":\"guest-\xc3\x28ping\"}");
    p.case("\\u0000", br#"{"execute":"guest-\u0000ping"}"#);
    p.case("lone surrogate", br#"{"execute":"guest-\ud800ping"}"#);
    p.case(
        "unicode escape",
        br#"{"execute":"guest-p\u0069ng","id":"\u00e9\ud83d\ude00"}"#,
    );
    p.case(
        "non-ASCII id echoed",
        "{\"execute\":\"guest-ping\",\"id\":\"é€😀\"}".as_bytes(),
    );
    p.case(
        "single quotes",
        br#"{'execute':'guest-ping','id':'single \'quoted\''}"#,
    );
    p.case(
        "two requests in one write",
        &cat(ping, br#"{"execute":"guest-ping","id":2}"#),
    );
    p.case_with(
        "one request in many writes",
        &[b"{\"exe", b"cute\":\"guest", b"-ping\",\"id\"", b":7}"],
        &|_| {},
    );
    p.case(
        "whitespace and newlines",
        b" \t\r\n{ \"execute\" :\n\"guest-ping\" ,\r\n \"id\" : 3 }\n",
    );
    for depth in [1023usize, 1024, 1025] {
        let mut s = b"{\"execute\":\"guest-ping\",\"id\":".to_vec();
        s.extend(std::iter::repeat_n(b'[', depth - 1));
        s.extend(std::iter::repeat_n(b']', depth - 1));
        s.push(b'}');
        p.case(&format!("nesting depth {depth} in id"), &s);
        let mut l = vec![b'['; depth];
        l.extend(std::iter::repeat_n(b']', depth));
        p.case(&format!("bare list nesting depth {depth}"), &l);
    }
    for v in [
        &b"1 "[..],
        b"-2.5 ",
        b"\"str\"",
        b"[]",
        b"true ",
        b"null ",
        b"[{\"execute\":\"guest-ping\"}]",
    ] {
        p.case(&format!("non-object {}", String::from_utf8_lossy(v)), v);
    }
    p.case("execute not a string", br#"{"execute":1}"#);
    p.case("execute null", br#"{"execute":null,"id":3}"#);
    p.case(
        "arguments not an object",
        br#"{"execute":"guest-ping","arguments":[]}"#,
    );
    p.case(
        "arguments null",
        br#"{"execute":"guest-ping","arguments":null}"#,
    );
    p.case("extra member", br#"{"execute":"guest-ping","foo":1}"#);
    p.case("exec-oob", br#"{"execute":"guest-ping","exec-oob":"x"}"#);
    p.case("no execute", br#"{"id":1}"#);
    p.case("empty object", b"{}");
    p.case("id object", br#"{"execute":"guest-ping","id":{"a":[1,2]}}"#);
    p.case("id null", br#"{"execute":"guest-ping","id":null}"#);
    p.case("id float", br#"{"execute":"guest-ping","id":1.5}"#);
    p.case(
        "id big",
        br#"{"execute":"guest-ping","id":18446744073709551615}"#,
    );
    p.case("id first", br#"{"id":9,"execute":"guest-nosuch"}"#);
    p.case("unknown command", br#"{"execute":"guest-nosuch"}"#);
    p.case(
        "command case differs",
        br#"{"execute":"Guest-Ping","id":4}"#,
    );
    p.case("empty command", br#"{"execute":""}"#);
    p.finish("malformed input");
}

#[test]
fn arguments() {
    let Some(mut p) = Pair::start() else { return };
    let cases: &[(&str, &str, Value)] = &[
        ("missing", "guest-sync", json!({})),
        ("wrong type string", "guest-sync", json!({"id": "x"})),
        ("wrong type float", "guest-sync", json!({"id": 1.5})),
        ("wrong type bool", "guest-sync", json!({"id": true})),
        ("wrong type list", "guest-sync", json!({"id": [1]})),
        (
            "u64 too big for int",
            "guest-sync",
            json!({"id": 18446744073709551615u64}),
        ),
        ("int64 min", "guest-sync", json!({"id": i64::MIN})),
        ("extra", "guest-sync", json!({"id": 1, "foo": 2})),
        ("extra on no-arg command", "guest-ping", json!({"x": 1})),
        ("missing before extra", "guest-sync", json!({"foo": 2})),
        ("null value", "guest-sync", json!({"id": null})),
        ("string expected", "guest-file-open", json!({"path": 5})),
        (
            "optional wrong type",
            "guest-file-open",
            json!({"path": "x", "mode": 1}),
        ),
        (
            "bool expected",
            "guest-ssh-get-authorized-keys",
            json!({"username": false}),
        ),
        (
            "nested list item",
            "guest-exec",
            json!({"path": "/bin/true", "arg": [1]}),
        ),
        (
            "nested list second item",
            "guest-exec",
            json!({"path": "/bin/true", "arg": ["a", 2]}),
        ),
        (
            "list expected",
            "guest-exec",
            json!({"path": "/bin/true", "arg": "a"}),
        ),
        (
            "env item",
            "guest-exec",
            json!({"path": "/bin/true", "env": [null]}),
        ),
        (
            "capture-output bool-typed",
            "guest-exec",
            json!({"path": "/bin/true", "capture-output": 1}),
        ),
        (
            "input-data bad base64",
            "guest-exec",
            json!({"path": "/bin/true", "input-data": "@@@"}),
        ),
        (
            "spawn failure",
            "guest-exec",
            json!({"path": "/bin/invalid-cmd42"}),
        ),
        (
            "unknown pid",
            "guest-exec-status",
            json!({"pid": 999_999_999}),
        ),
        (
            "unknown handle read",
            "guest-file-read",
            json!({"handle": 123_456}),
        ),
        (
            "unknown handle close",
            "guest-file-close",
            json!({"handle": 123_456}),
        ),
        (
            "whence enum",
            "guest-file-seek",
            json!({"handle": 123_456, "offset": 0, "whence": "middle"}),
        ),
        (
            "whence type",
            "guest-file-seek",
            json!({"handle": 123_456, "offset": 0, "whence": 1.5}),
        ),
        (
            "whence missing",
            "guest-file-seek",
            json!({"handle": 123_456, "offset": 0}),
        ),
        (
            "bad open mode",
            "guest-file-open",
            json!({"path": "x", "mode": "rw"}),
        ),
        (
            "open missing file",
            "guest-file-open",
            json!({"path": "no-such-file", "mode": "r"}),
        ),
    ];
    for (name, cmd, args) in cases {
        // guest-exec's capture-output is bool in 7.2 and an alternate in master (docs/protocol.md §6).
        p.case_with(&format!("{cmd}: {name}"), &[&req_args(cmd, args.clone())], &|v| {
            if let Some(d) = v.pointer_mut("/error/desc")
                && d == "Invalid parameter type for 'capture-output', expected: GuestExecCaptureOutput"
            {
                *d = json!("Invalid parameter type for 'capture-output', expected: boolean");
            }
        });
    }
    p.case(
        "missing arguments member",
        br#"{"execute":"guest-sync","id":1}"#,
    );
    p.finish("argument errors");
}

#[test]
fn blocked_commands() {
    let Some(mut p) = Pair::start() else { return };
    for cmd in tests::host_agent::BLOCKED {
        // With arguments that would be valid, and with none: the block is checked first.
        p.case(&format!("{cmd} without arguments"), &req(cmd));
        p.case(
            &format!("{cmd} with id"),
            &json!({"execute": cmd, "id": cmd}).to_string().into_bytes(),
        );
    }
    p.finish("blocked commands");
}

#[test]
fn files() {
    let Some(mut p) = Pair::start() else { return };
    // Both agents have a fresh state directory, so handles start at 1000 in both; relative
    // paths land in each agent's own working directory.
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    for a in &p.agents {
        std::fs::write(a.work_dir().join("input.bin"), &data).unwrap();
    }
    let b64 = qga_client::b64_encode(&data[..300]);
    let steps: Vec<(String, Vec<u8>)> = vec![
        (
            "open r".into(),
            req_args("guest-file-open", json!({"path": "input.bin"})),
        ),
        (
            "read default".into(),
            req_args("guest-file-read", json!({"handle": 1000})),
        ),
        (
            "read rest".into(),
            req_args("guest-file-read", json!({"handle": 1000, "count": 10000})),
        ),
        (
            "read at eof".into(),
            req_args("guest-file-read", json!({"handle": 1000, "count": 10})),
        ),
        (
            "read 0".into(),
            req_args("guest-file-read", json!({"handle": 1000, "count": 0})),
        ),
        (
            "read negative".into(),
            req_args("guest-file-read", json!({"handle": 1000, "count": -1})),
        ),
        (
            "read too much".into(),
            req_args(
                "guest-file-read",
                json!({"handle": 1000, "count": 50331649}),
            ),
        ),
        (
            "seek set".into(),
            req_args(
                "guest-file-seek",
                json!({"handle": 1000, "offset": 5, "whence": "set"}),
            ),
        ),
        (
            "seek int whence".into(),
            req_args(
                "guest-file-seek",
                json!({"handle": 1000, "offset": 5, "whence": 1}),
            ),
        ),
        (
            "seek end".into(),
            req_args(
                "guest-file-seek",
                json!({"handle": 1000, "offset": -3, "whence": "end"}),
            ),
        ),
        (
            "seek bad code".into(),
            req_args(
                "guest-file-seek",
                json!({"handle": 1000, "offset": 0, "whence": 7}),
            ),
        ),
        (
            "read after seek".into(),
            req_args("guest-file-read", json!({"handle": 1000, "count": 5})),
        ),
        (
            "write to read-only".into(),
            req_args(
                "guest-file-write",
                json!({"handle": 1000, "buf-b64": "AAAA"}),
            ),
        ),
        (
            "close".into(),
            req_args("guest-file-close", json!({"handle": 1000})),
        ),
        (
            "close again".into(),
            req_args("guest-file-close", json!({"handle": 1000})),
        ),
        (
            "open w".into(),
            req_args("guest-file-open", json!({"path": "out.bin", "mode": "w+"})),
        ),
        (
            "write".into(),
            req_args("guest-file-write", json!({"handle": 1001, "buf-b64": b64})),
        ),
        (
            "write count".into(),
            req_args(
                "guest-file-write",
                json!({"handle": 1001, "buf-b64": "AAECAw==", "count": 2}),
            ),
        ),
        (
            "write count too big".into(),
            req_args(
                "guest-file-write",
                json!({"handle": 1001, "buf-b64": "AAECAw==", "count": 5}),
            ),
        ),
        (
            "write bad base64".into(),
            req_args(
                "guest-file-write",
                json!({"handle": 1001, "buf-b64": "A@A="}),
            ),
        ),
        (
            "write empty".into(),
            req_args("guest-file-write", json!({"handle": 1001, "buf-b64": ""})),
        ),
        (
            "flush".into(),
            req_args("guest-file-flush", json!({"handle": 1001})),
        ),
        (
            "seek back".into(),
            req_args(
                "guest-file-seek",
                json!({"handle": 1001, "offset": 0, "whence": "set"}),
            ),
        ),
        (
            "read back".into(),
            req_args("guest-file-read", json!({"handle": 1001, "count": 400})),
        ),
        (
            "close w".into(),
            req_args("guest-file-close", json!({"handle": 1001})),
        ),
        (
            "open a".into(),
            req_args("guest-file-open", json!({"path": "out.bin", "mode": "a"})),
        ),
        (
            "append".into(),
            req_args(
                "guest-file-write",
                json!({"handle": 1002, "buf-b64": "aGk="}),
            ),
        ),
        (
            "read write-only".into(),
            req_args("guest-file-read", json!({"handle": 1002})),
        ),
        (
            "close a".into(),
            req_args("guest-file-close", json!({"handle": 1002})),
        ),
        (
            "open directory".into(),
            req_args("guest-file-open", json!({"path": ".", "mode": "r"})),
        ),
        (
            "open r+ missing".into(),
            req_args("guest-file-open", json!({"path": "missing", "mode": "r+"})),
        ),
    ];
    for (name, bytes) in &steps {
        p.case(name, bytes);
    }
    // Same files on disk, same mode bits (0666 on creation, ignoring the umask).
    let read = |i: usize| std::fs::read(p.agents[i].work_dir().join("out.bin")).unwrap();
    assert_eq!(read(0), read(1), "out.bin differs");
    use std::os::unix::fs::PermissionsExt;
    let mode = |i: usize| {
        std::fs::metadata(p.agents[i].work_dir().join("out.bin"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode(0), mode(1), "out.bin mode");
    // The handle counter is persisted in the state directory in both.
    let state = |i: usize| std::fs::read_to_string(p.agents[i].state_dir().join("qga.state")).ok();
    assert_eq!(state(0), state(1), "qga.state");
    p.finish("file commands");
}

#[test]
fn exec() {
    let Some(mut p) = Pair::start() else { return };
    let runs: &[(&str, Value)] = &[
        (
            "echo captured",
            json!({"path": "/bin/echo", "arg": ["-n", "\" test_str \""], "capture-output": true}),
        ),
        (
            "stdout and stderr",
            json!({"path": "/bin/sh", "arg": ["-c", "echo out; echo err >&2; exit 3"], "capture-output": true}),
        ),
        (
            "not captured",
            json!({"path": "/bin/sh", "arg": ["-c", "echo out; exit 0"]}),
        ),
        (
            "PATH search",
            json!({"path": "true", "capture-output": true}),
        ),
        (
            "input-data",
            json!({"path": "/bin/cat", "input-data": "aGVsbG8gd29ybGQ=", "capture-output": true}),
        ),
        (
            "env replaces",
            json!({"path": "/usr/bin/env", "env": ["A=1", "B=2"], "capture-output": true}),
        ),
        (
            "killed",
            json!({"path": "/bin/sh", "arg": ["-c", "kill -9 $$"], "capture-output": true}),
        ),
        (
            "cwd",
            json!({"path": "/bin/sh", "arg": ["-c", "ls"], "capture-output": true}),
        ),
    ];
    for (name, args) in runs {
        let [a, b] = p.execute_both("guest-exec", args.clone());
        let (Ok(a), Ok(b)) = (&a, &b) else {
            p.diffs
                .push(format!("exec `{name}`: qga {a:?} / qemu-ga {b:?}"));
            p.cases += 1;
            continue;
        };
        let pids = [
            a["pid"].as_i64().unwrap_or(-1),
            b["pid"].as_i64().unwrap_or(-1),
        ];
        let mut done = [None, None];
        for i in 0..2 {
            done[i] = Some(
                p.clients[i]
                    .exec_wait(pids[i], Duration::from_secs(30))
                    .map_err(|e| e.to_string()),
            );
        }
        p.cases += 1;
        if done[0] != done[1] {
            p.diffs.push(format!(
                "exec `{name}`: qga {:?}\n  qemu-ga {:?}",
                done[0], done[1]
            ));
        }
        // The entry is reaped by the status call that reported the exit.
        let st = |p: &mut Pair, i: usize| {
            p.clients[i]
                .request(&json!({"execute": "guest-exec-status", "arguments": {"pid": pids[i]}}))
                .map(|mut v| {
                    normalize_common(&mut v);
                    v
                })
                .map_err(|e| e.to_string())
        };
        let (x, y) = (st(&mut p, 0), st(&mut p, 1));
        p.cases += 1;
        if x != y {
            p.diffs.push(format!(
                "exec `{name}` status after exit: qga {x:?}\n  qemu-ga {y:?}"
            ));
        }
    }
    // A running child reports exited:false in both.
    let [a, b] = p.execute_both("guest-exec", json!({"path": "/bin/sleep", "arg": ["3"]}));
    let pids = [
        a.unwrap()["pid"].as_i64().unwrap(),
        b.unwrap()["pid"].as_i64().unwrap(),
    ];
    for (i, pid) in pids.iter().enumerate() {
        let st = p.clients[i].exec_status(*pid).unwrap();
        assert_eq!(st, json!({"exited": false}), "agent {i}");
    }
    for (i, pid) in pids.iter().enumerate() {
        let out = p.clients[i]
            .exec_wait(*pid, Duration::from_secs(30))
            .unwrap();
        assert_eq!(out.exitcode, Some(0), "agent {i}");
    }
    p.finish("guest-exec");
}

/// Where this agent differs from upstream on purpose (README, "Differences from upstream"):
/// each is checked on both agents, so the README's claim about upstream stays true as well.
#[test]
fn deliberate_protocol_differences() {
    let Some(mut p) = Pair::start() else { return };

    // 1. A new connection starts with a clean parser. Upstream keeps one parser for the
    //    process, so the tail of a request on the next connection completes the old one.
    let mut after: Vec<Vec<Line>> = Vec::new();
    for i in 0..2 {
        p.clients[i]
            .send_raw(br#"{"execute":"guest-ping","#)
            .unwrap();
        // Closing the old connection first: the agents serve one client at a time.
        let fresh = p.agents[i].connect_raw().unwrap();
        p.clients[i] = fresh;
        p.clients[i].set_timeout(Duration::from_secs(30));
        after.push(p.exchange_one(i, &[br#""id":"after-reconnect"}"#]).unwrap());
    }
    let pinged = |lines: &[Line]| {
        lines
            .iter()
            .any(|l| l.value == json!({"return": {}, "id": "after-reconnect"}))
    };
    assert!(
        pinged(&after[1]),
        "qemu-ga no longer carries a half request across connections: {:?}",
        after[1]
    );
    assert!(
        !pinged(&after[0]),
        "qga completed the previous connection's half request: {:?}",
        after[0]
    );

    // 2. An oversized request (more than upstream's 64 MiB token limit) gets one error, and the
    //    request after it is served. Upstream resets mid-string and answers the rest as noise.
    let mut big = br#"{"execute":"guest-sync","arguments":{"id":""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 65 << 20));
    big.extend_from_slice(br#""}}{"execute":"guest-ping","id":"next"}"#);
    for i in 0..2 {
        p.clients[i].set_timeout(Duration::from_secs(120));
    }
    let ours = p.exchange_one(0, &[&big]).unwrap();
    let theirs = p.exchange_one(1, &[&big]);
    assert_eq!(
        ours.iter().map(|l| l.value.clone()).collect::<Vec<_>>(),
        vec![
            json!({"error": {"class": "GenericError", "desc": "JSON token size limit exceeded"}}),
            json!({"return": {}, "id": "next"}),
        ],
        "qga on an oversized request"
    );
    let shown: Vec<String> = theirs
        .iter()
        .flatten()
        .map(|l| l.value.to_string().chars().take(120).collect())
        .collect();
    eprintln!("qemu-ga on the oversized request: {shown:#?}");
    assert!(
        shown.len() > 2,
        "qemu-ga now handles an oversized request cleanly: {shown:#?}"
    );
}
