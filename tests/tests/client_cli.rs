//! The `qga-client` command against real host agents (ours and Debian's `qemu-ga`), each
//! started with the system-changing commands blocked: exec's decoded output and exit status,
//! info, ping, raw commands, file copies and the exit statuses of failures. The commands that
//! change a system (`shutdown`, `fsfreeze`) are run only inside guests
//! (`linux_guest.rs`, `baremetal.rs`); what needs no agent (usage errors, absent agents) is
//! tested in the client crate (`client/tests/cli.rs`).

use std::time::Duration;

use serde_json::Value;
use tests::client_cli::{CliRun, run};
use tests::host_agent::{AgentKind, HostAgent, upstream_binary, upstream_missing};
use tests::require::{Dependency, missing};

fn agents() -> Vec<AgentKind> {
    let mut v = vec![AgentKind::Ours];
    if upstream_binary().is_some() {
        v.push(AgentKind::Upstream);
    } else {
        missing(Dependency::QemuGa, &upstream_missing());
    }
    v
}

fn cli(agent: &HostAgent, args: &[&str]) -> CliRun {
    cli_in(agent, args, b"")
}

fn cli_in(agent: &HostAgent, args: &[&str], stdin: &[u8]) -> CliRun {
    let sock = agent
        .socket()
        .to_str()
        .expect("utf-8 socket path")
        .to_string();
    let mut all = vec![sock.as_str(), "--timeout", "20"];
    all.extend_from_slice(args);
    run(&all, stdin, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{}: {e}\nagent log:\n{}", agent.kind().label(), agent.log()))
}

#[test]
fn exec_prints_decoded_output_and_exits_with_the_program_s_status() {
    for kind in agents() {
        let agent = HostAgent::start(kind).unwrap();
        let l = kind.label();
        let r = cli(
            &agent,
            &[
                "exec",
                "/bin/sh",
                "-c",
                "printf 'out\\n\\001\\377'; printf err >&2; exit 7",
            ],
        );
        assert_eq!(r.status, Some(7), "{l}: {r:?}");
        assert_eq!(r.stdout, b"out\n\x01\xff", "{l}: raw bytes, decoded");
        assert_eq!(r.err(), "err", "{l}");

        // Success, and options after PROGRAM belong to the program.
        let r = cli(&agent, &["exec", "/bin/echo", "-n", "--timeout", "x"]);
        assert_eq!(r.status, Some(0), "{l}: {r:?}");
        assert_eq!(r.out(), "--timeout x", "{l}");

        // Input from this command's standard input.
        let r = cli_in(
            &agent,
            &["exec", "--input", "-", "/bin/cat"],
            b"piped\x00in",
        );
        assert_eq!(
            (r.status, r.stdout.as_slice()),
            (Some(0), &b"piped\x00in"[..]),
            "{l}: {r:?}"
        );

        // Killed by a signal: 128 + N, as a shell reports it.
        let r = cli(&agent, &["exec", "/bin/sh", "-c", "kill -9 $$"]);
        assert_eq!(r.status, Some(128 + 9), "{l}: {r:?}");
        assert!(r.err().contains("signal 9"), "{l}: {}", r.err());

        // A program that cannot be started: the agent's error, status 1.
        let r = cli(&agent, &["exec", "/no/such/program"]);
        assert_eq!(r.status, Some(1), "{l}: {r:?}");
        assert!(r.err().contains("agent error"), "{l}: {}", r.err());
    }
}

#[test]
fn ping_info_and_raw_commands() {
    for kind in agents() {
        let agent = HostAgent::start(kind).unwrap();
        let l = kind.label();
        let r = cli(&agent, &["ping"]);
        assert_eq!((r.status, r.out().as_str()), (Some(0), ""), "{l}: {r:?}");

        let r = cli(&agent, &["info"]);
        assert_eq!(r.status, Some(0), "{l}: {r:?}");
        let out = r.out();
        assert!(out.starts_with("version: "), "{l}: {out}");
        assert!(out.lines().any(|x| x == "  guest-ping"), "{l}: {out}");
        // Blocked with -b on the host, so listed as disabled.
        assert!(
            out.lines().any(|x| x == "  guest-shutdown (disabled)"),
            "{l}: {out}"
        );

        let r = cli(&agent, &["info", "--json"]);
        let v: Value = serde_json::from_slice(&r.stdout).unwrap_or_else(|e| panic!("{l}: {e}"));
        assert!(v["supported_commands"].is_array(), "{l}: {v}");

        // Raw: the whole response, with and without arguments.
        let r = cli(&agent, &["guest-get-time"]);
        let v: Value = serde_json::from_slice(&r.stdout).unwrap();
        assert!(v["return"].as_i64().is_some_and(|t| t > 0), "{l}: {v}");
        let r = cli(&agent, &["guest-sync", r#"{"id": 4242}"#]);
        let v: Value = serde_json::from_slice(&r.stdout).unwrap();
        assert_eq!(
            (r.status, v["return"].as_i64()),
            (Some(0), Some(4242)),
            "{l}: {r:?}"
        );

        // An error answer is printed and gives status 1; a blocked command is one.
        let r = cli(&agent, &["guest-fstrim"]);
        let v: Value = serde_json::from_slice(&r.stdout).unwrap();
        assert_eq!(r.status, Some(1), "{l}: {r:?}");
        assert_eq!(v["error"]["class"], "CommandNotFound", "{l}: {v}");

        // Bad ARGS-JSON is a usage error (2), caught before anything is sent.
        let r = cli(&agent, &["guest-sync", "{id"]);
        assert_eq!(r.status, Some(2), "{l}: {r:?}");
        assert!(
            r.err().contains("ARGS-JSON is not JSON"),
            "{l}: {}",
            r.err()
        );
    }
}

#[test]
fn push_and_pull_round_trip() {
    for kind in agents() {
        let agent = HostAgent::start(kind).unwrap();
        let l = kind.label();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let local = agent.dir().join("local.bin");
        std::fs::write(&local, &data).unwrap();
        let remote = agent.work_dir().join("remote.bin");
        let (local_s, remote_s) = (local.to_str().unwrap(), remote.to_str().unwrap());
        let r = cli(&agent, &["push", local_s, remote_s, "--chunk", "4096"]);
        assert_eq!(r.status, Some(0), "{l}: {r:?}");
        assert_eq!(std::fs::read(&remote).unwrap(), data, "{l}: pushed bytes");
        let back = agent.dir().join("back.bin");
        let r = cli(&agent, &["pull", remote_s, back.to_str().unwrap()]);
        assert_eq!(r.status, Some(0), "{l}: {r:?}");
        assert_eq!(std::fs::read(&back).unwrap(), data, "{l}: pulled bytes");
        let r = cli(&agent, &["pull", "/no/such/file", back.to_str().unwrap()]);
        assert_eq!(r.status, Some(1), "{l}: {r:?}");
    }
}
