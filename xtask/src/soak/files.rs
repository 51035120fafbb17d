//! `files`: the open-handle limit answers a clear error and leaves fds for the rest; the handle
//! counter survives restarts.

use super::common::*;

pub(super) fn files(ctx: &mut Context, row: &mut Row) -> Result<(), String> {
    use rustix::process::{Pid, Resource, Rlimit, prlimit};
    let state = tempfile::Builder::new()
        .prefix("qga-soak-state-")
        .tempdir()
        .map_err(|e| format!("tempdir: {e}"))?;
    let state_arg = state.path().to_string_lossy().into_owned();
    let mut agent = start_host(ctx, &["-t", &state_arg])?;
    let pid = agent.pid();
    // An absolute path: each restarted agent has a working directory of its own.
    let file = state.path().join("soak-file");
    std::fs::write(&file, b"soak").map_err(|e| e.to_string())?;
    let f = file.to_string_lossy().into_owned();
    let f = f.as_str();
    let mut c = agent.connect()?;

    // 1. The open-handle limit, under a low RLIMIT_NOFILE.
    const LIMIT: u64 = 64;
    let rpid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or("pid out of range")?;
    prlimit(
        Some(rpid),
        Resource::Nofile,
        Rlimit {
            current: Some(LIMIT),
            maximum: Some(LIMIT),
        },
    )
    .map_err(|e| format!("prlimit: {e}"))?;
    let fd0 = fd_count(pid).unwrap_or(0);
    let mut handles = Vec::new();
    let mut first_error = None;
    let mut limit_error = String::new();
    for _ in 0..(LIMIT * 2) {
        match c.file_open(f, "r") {
            Ok(h) => handles.push(h),
            Err(e) => {
                first_error = Some(e);
                break;
            }
        }
    }
    say(
        &row.name,
        &format!(
            "RLIMIT_NOFILE {LIMIT} with {fd0} fds open: {} handles opened, then {:?}",
            handles.len(),
            first_error.as_ref().map(ToString::to_string)
        ),
    );
    // The agent keeps FD_RESERVE (32) fds below RLIMIT_NOFILE for itself and stops opens there,
    // with an error that names the limit (upstream has no limit: it runs into EMFILE and then
    // fails on the state-file commit or on guest-exec's pipes).
    let expect_handles = (LIMIT - 32) as usize;
    match &first_error {
        Some(ClientError::Agent { class, desc }) => {
            let want = format!(
                "failed to open file '{f}' (mode: 'r'): Too many open files: {expect_handles} handles are open, the agent's limit; close some with guest-file-close"
            );
            row.check(class == "GenericError" && *desc == want, || {
                format!("at the handle limit: {class}: {desc:?}, expected {want:?}")
            });
            row.check(handles.len() == expect_handles, || {
                format!(
                    "{} handles opened under RLIMIT_NOFILE {LIMIT}, expected {expect_handles}",
                    handles.len()
                )
            });
            limit_error = desc.clone();
        }
        Some(e) => row.fail(format!("at the handle limit: {e}")),
        None => row.fail(format!(
            "{} opens under a limit of {LIMIT} all succeeded",
            handles.len()
        )),
    }
    // At the limit: the agent answers, guest-exec works (its pipes come from the reserve),
    // closing one handle lets the next open through (the state file commits), and a new
    // connection is accepted.
    let at_limit = (|| -> Result<(), String> {
        c.ping().map_err(|e| format!("ping at the limit: {e}"))?;
        let p = c
            .exec("/bin/true", &[], None, true)
            .map_err(|e| format!("guest-exec at the handle limit: {e}"))?;
        let out = c
            .exec_wait(p, Duration::from_secs(10))
            .map_err(|e| format!("guest-exec at the handle limit: {e}"))?;
        if out.exitcode != Some(0) {
            return Err(format!("guest-exec at the handle limit: {out:?}"));
        }
        if let Some(h) = handles.pop() {
            c.file_close(h)
                .map_err(|e| format!("close at the limit: {e}"))?;
            let again = c
                .file_open(f, "r")
                .map_err(|e| format!("open after closing one at the limit: {e}"))?;
            handles.push(again);
        }
        Ok(())
    })();
    if let Err(e) = at_limit {
        row.lost += 1;
        row.fail(e);
    }
    drop(c);
    let mut c = agent.connect()?;
    if let Err(e) = c.ping() {
        row.lost += 1;
        row.fail(format!("reconnect at the fd limit: {e}"));
    }
    for h in &handles {
        if let Err(e) = c.file_close(*h) {
            row.fail(format!("close {h}: {e}"));
        }
    }
    match c
        .file_open(f, "r")
        .and_then(|h| c.file_close(h).map(|()| h))
    {
        Ok(_) => {}
        Err(e) => row.fail(format!("open after closing everything: {e}")),
    }
    let fd1 = fd_count(pid).unwrap_or(0);
    say(
        &row.name,
        &format!("fds with one client: before {fd0}, after closing all {fd1}"),
    );
    if fd1 > fd0 {
        row.leaks += 1;
        row.fail(format!("open fds grew from {fd0} to {fd1}"));
    }
    if !agent.guard_mut().is_running() {
        row.crashes += 1;
        row.fail(format!("the agent died; log:\n{}", agent.log()));
    }

    // 2. The handle counter across restarts (SIGTERM, then SIGKILL).
    let last = c.file_open(f, "r").map_err(|e| e.to_string())?;
    drop(c);
    let st = agent.stop();
    row.check(st.and_then(|s| s.code()) == Some(0), || {
        format!("exit status {st:?}")
    });
    let counter_file = std::fs::read_to_string(state.path().join("qga.state")).unwrap_or_default();
    let mut agent = start_host(ctx, &["-t", &state_arg])?;
    let mut c = agent.connect()?;
    let stale = c.file_read(last, 4);
    let after_term = c.file_open(f, "r").map_err(|e| e.to_string())?;
    drop(c);
    agent.guard_mut().kill();
    drop(agent);
    let agent = start_host(ctx, &["-t", &state_arg])?;
    let mut c = agent.connect()?;
    let after_kill = c.file_open(f, "r").map_err(|e| e.to_string())?;
    say(
        &row.name,
        &format!(
            "last handle {last}; state file {:?}; after SIGTERM+restart: old handle -> {:?}, next handle {after_term}; after SIGKILL+restart: next handle {after_kill}",
            counter_file.trim(),
            stale.as_ref().map(|_| ()).map_err(ToString::to_string)
        ),
    );
    row.check(after_term == last + 1, || {
        format!(
            "after a restart the next handle is {after_term}, not {}",
            last + 1
        )
    });
    row.check(after_kill == after_term + 1, || {
        format!(
            "after a SIGKILL restart the next handle is {after_kill}, not {}",
            after_term + 1
        )
    });
    row.check(
        matches!(&stale, Err(ClientError::Agent { desc, .. }) if desc == &format!("handle '{last}' has not been found")),
        || format!("a handle from before the restart: {stale:?}"),
    );
    row.inputs = format!(
        "{} opens up to RLIMIT_NOFILE {LIMIT}, 3 agent lifetimes on one state dir",
        handles.len() + 1
    );
    row.faults = format!(
        "handle limit under RLIMIT_NOFILE {LIMIT} (error: {limit_error:?}; then ping, exec, close+open, reconnect at the limit), 1 SIGTERM and 1 SIGKILL restart; handles {last}→{after_term}→{after_kill}"
    );
    Ok(())
}
