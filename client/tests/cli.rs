//! The `qga-client` executable as a shell runs it, where no agent is needed: help, usage errors,
//! addresses it refuses and an agent that is not there, each with its exit status. Its work
//! against real agents (host agents, the bare-metal image, a Linux guest) is checked by the
//! `tests` crate's suites (`client_cli.rs`, `baremetal.rs`, `linux_guest.rs`), which have the
//! harness to start them.

use std::process::{Command, Output};

fn qga_client(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qga-client"))
        .args(args)
        .output()
        .expect("run qga-client")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_lists_the_commands_and_exits_0() {
    let o = qga_client(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = text(&o.stdout);
    for cmd in [
        "ping", "info", "exec", "fsfreeze", "shutdown", "push", "pull",
    ] {
        assert!(
            out.contains(&format!("\n  {cmd} ")),
            "{cmd} missing from:\n{out}"
        );
    }
    let o = qga_client(&["/s", "exec", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).contains("--input"), "{}", text(&o.stdout));
}

#[test]
fn usage_errors_exit_2_before_connecting() {
    for args in [
        &[][..],
        &["/nowhere"][..],
        &["/nowhere", "fsfreeze", "melt"][..],
        &["/nowhere", "shutdown", "--mode", "sideways"][..],
        &["/nowhere", "exec"][..],
        &["/nowhere", "guest-sync", "{not json"][..],
        &["/nowhere", "guest-sync", "{}", "extra"][..],
        &["", "ping"][..],
        &["vsock-uds:/run/v.sock", "ping"][..],
        &["vsock:3:x", "ping"][..],
    ] {
        let o = qga_client(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        assert!(!o.stderr.is_empty(), "{args:?}: says why");
        assert!(o.stdout.is_empty(), "{args:?}: {}", text(&o.stdout));
    }
}

#[test]
fn an_absent_agent_exits_1_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nobody");
    let t = std::time::Instant::now();
    let o = qga_client(&[sock.to_str().unwrap(), "--timeout", "1", "ping"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains("cannot connect to unix:"), "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(20));
}
