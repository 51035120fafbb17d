//! The client library against real agents on real sockets: Debian's `qemu-ga` and our `qga`
//! (the same checks, so a regression in either shows up here). Without qemu-ga each test fails
//! (saying how to install it) unless `QGA_TEST_ALLOW_MISSING` names `qemu-ga`.

use std::time::Duration;

use qga_client::ClientError;
use serde_json::json;
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

#[test]
fn sync_ping_info_and_time() {
    for kind in agents() {
        let agent = HostAgent::start(kind).unwrap();
        let mut c = agent.connect().unwrap();
        c.sync().unwrap();
        c.ping().unwrap();
        let cmds = c.enabled_commands().unwrap();
        assert!(cmds.iter().any(|n| n == "guest-ping"), "{kind:?}: {cmds:?}");
        assert!(
            !cmds.iter().any(|n| n == "guest-shutdown"),
            "{kind:?}: shutdown must be blocked"
        );
        let t = c.get_time().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        assert!(
            (t - now).abs() < 60_000_000_000,
            "{kind:?}: time {t} vs {now}"
        );
    }
}

#[test]
fn blocked_commands_are_refused() {
    for kind in agents() {
        let agent = HostAgent::start(kind).unwrap();
        let mut c = agent.connect().unwrap();
        match c.execute("guest-set-time", Some(json!({"time": 0}))) {
            Err(ClientError::Agent { class, desc }) => {
                assert_eq!(class, "CommandNotFound", "{kind:?}");
                assert!(
                    desc.starts_with("Command guest-set-time has been disabled"),
                    "{kind:?}: {desc}"
                );
            }
            other => panic!("{kind:?}: {other:?}"),
        }
    }
}

#[test]
fn resync_after_garbage_and_reconnect() {
    for kind in agents() {
        let agent = HostAgent::start(kind).unwrap();
        let mut c = agent.connect().unwrap();
        // Leave a half request in the agent's parser, then reconnect and resync.
        c.send_raw(b"{\"execute\":\"guest-ping\",").unwrap();
        drop(c);
        let mut c = agent.connect().unwrap();
        c.ping().unwrap();
        // Garbage on the same connection, then the delimited handshake.
        c.send_raw(b"\x01}}]{\"exe").unwrap();
        c.sync_delimited().unwrap();
        c.ping().unwrap();
    }
}

#[test]
fn files_push_pull_and_exec() {
    for kind in agents() {
        let agent = HostAgent::start(kind).unwrap();
        let mut c = agent.connect().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let remote = agent.work_dir().join("pushed.bin");
        let remote = remote.to_str().unwrap();
        c.push(&data, remote, 65536).unwrap();
        assert_eq!(
            std::fs::read(remote).unwrap(),
            data,
            "{kind:?}: file on disk"
        );
        assert_eq!(c.pull(remote, 100_000).unwrap(), data, "{kind:?}: pulled");
        // A relative path resolves against the agent's cwd.
        c.push(b"rel", "relative.txt", 4096).unwrap();
        assert_eq!(
            std::fs::read(agent.work_dir().join("relative.txt")).unwrap(),
            b"rel"
        );
        let out = c
            .run(
                "/bin/sh",
                &["-c", "printf out; printf err >&2; exit 7"],
                Duration::from_secs(30),
            )
            .unwrap();
        assert_eq!(out.exitcode, Some(7), "{kind:?}: {out:?}");
        assert_eq!(out.stdout, b"out", "{kind:?}");
        assert_eq!(out.stderr, b"err", "{kind:?}");
        match c.file_open("/nonexistent-dir-qga/x", "r") {
            Err(ClientError::Agent { desc, .. }) => assert!(
                desc.starts_with("failed to open file '/nonexistent-dir-qga/x' (mode: 'r')"),
                "{kind:?}: {desc}"
            ),
            other => panic!("{kind:?}: {other:?}"),
        }
    }
}

#[test]
fn sigterm_exits_zero() {
    for kind in agents() {
        let agent = HostAgent::start(kind).unwrap();
        let c = agent.connect().unwrap();
        drop(c);
        let st = agent.stop().expect("agent did not exit");
        assert_eq!(st.code(), Some(0), "{kind:?}: {st}");
    }
}
