//! The soak routines of `xtask::soak` at their `--quick` sizes, against our `qga` on this host
//! (started with the block list of system-changing commands): garbage with valid requests woven
//! in, disconnects mid-request, starts and SIGTERMs, guest-exec runs, fd exhaustion and the
//! handle counter across restarts. `cargo xtask soak` runs the same routines at full size.
//!
//! The routines measure the agent's process (RSS, fds, children), so they run one at a time
//! rather than competing for the two cores.

use std::sync::Mutex;

use xtask::soak::{Context, Options, run};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn soak(name: &str) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut ctx = Context::new(Options { quick: true });
    let row = run(name, &mut ctx);
    assert!(row.passed(), "{}", row.summary());
}

#[test]
fn garbage_with_valid_requests_through_unix_listen() {
    soak("garbage");
}

#[test]
fn disconnect_mid_request_then_the_next_client_is_served() {
    soak("reconnect");
}

#[test]
fn starts_and_sigterms_exit_zero_without_hanging() {
    soak("restart");
}

#[test]
fn exec_runs_leave_no_zombies_and_cap_output() {
    soak("exec");
}

#[test]
fn fd_exhaustion_and_the_handle_counter_across_restarts() {
    soak("files");
}
