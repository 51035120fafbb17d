//! `exec`: many guest-exec runs: no zombie left, the 16 MiB output cap truncates and flags,
//! unknown pids get their error.

use super::common::*;

pub(super) fn exec(ctx: &mut Context, row: &mut Row) -> Result<(), String> {
    let runs: u64 = if ctx.opts.quick { 100 } else { 1000 };
    let mut agent = start_host(ctx, &[])?;
    let pid = agent.pid();
    let mut c = agent.connect()?;
    c.set_timeout(Duration::from_secs(60));
    let fd0 = fd_count(pid);
    let started = Instant::now();
    let mut unwaited = Vec::new();
    let mut right = 0u64;
    for i in 0..runs {
        let r = (|| -> Result<bool, ClientError> {
            match i % 4 {
                0 => {
                    let p = c.exec("/bin/true", &[], None, false)?;
                    let o = c.exec_wait(p, Duration::from_secs(30))?;
                    Ok(o.exitcode == Some(0))
                }
                1 => {
                    let arg = format!("run {i}");
                    let o = c.run("/bin/echo", &[&arg], Duration::from_secs(30))?;
                    Ok(o.exitcode == Some(0) && o.stdout == format!("{arg}\n").into_bytes())
                }
                2 => {
                    let o = c.run(
                        "/bin/sh",
                        &["-c", "echo e >&2; exit 3"],
                        Duration::from_secs(30),
                    )?;
                    Ok(o.exitcode == Some(3) && o.stderr == b"e\n")
                }
                _ => {
                    // Never asked about until the end: the agent must still reap it.
                    unwaited.push(c.exec("/bin/true", &[], None, true)?);
                    Ok(true)
                }
            }
        })();
        match r {
            Ok(true) => right += 1,
            Ok(false) => {
                row.lost += 1;
                row.fail(format!("run {i}: wrong status or output"));
            }
            Err(ClientError::Timeout(w)) => {
                row.hangs += 1;
                row.fail(format!("run {i}: timed out waiting for {w}"));
            }
            Err(e) => {
                row.lost += 1;
                row.fail(format!("run {i}: {e}"));
            }
        }
        if row.failures.len() > 5 {
            break;
        }
    }
    // Let the unwaited children finish, then count zombies before asking about them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut kids = children_of(pid);
    while kids.0 > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        kids = children_of(pid);
    }
    say(
        &row.name,
        &format!(
            "{runs} guest-exec runs in {:.1}s ({right} right); children of the agent afterwards: {} ({} zombies)",
            started.elapsed().as_secs_f64(),
            kids.0,
            kids.1
        ),
    );
    if kids.1 > 0 {
        row.leaks += kids.1 as u64;
        row.fail(format!("{} zombie children", kids.1));
    }
    if kids.0 > kids.1 {
        row.hangs += 1;
        row.fail(format!("{} children still running", kids.0 - kids.1));
    }
    for p in &unwaited {
        match c.exec_wait(*p, Duration::from_secs(10)) {
            Ok(o) if o.exitcode == Some(0) => {}
            Ok(o) => {
                row.lost += 1;
                row.fail(format!("unwaited pid {p}: {o:?}"));
            }
            Err(e) => {
                row.lost += 1;
                row.fail(format!("unwaited pid {p}: {e}"));
            }
        }
    }
    // The 16 MiB cap, on each stream, and exactly at the cap.
    const CAP: usize = 16 * 1024 * 1024;
    for (label, script, want_len, want_trunc, stderr) in [
        (
            "stdout over the cap",
            "head -c 17825792 /dev/zero",
            CAP,
            true,
            false,
        ),
        (
            "stderr over the cap",
            "head -c 17825792 /dev/zero >&2",
            CAP,
            true,
            true,
        ),
        (
            "stdout exactly at the cap",
            "head -c 16777216 /dev/zero",
            CAP,
            false,
            false,
        ),
    ] {
        match c.run("/bin/sh", &["-c", script], Duration::from_secs(60)) {
            Ok(o) => {
                let (data, trunc) = if stderr {
                    (&o.stderr, o.stderr_truncated)
                } else {
                    (&o.stdout, o.stdout_truncated)
                };
                say(
                    &row.name,
                    &format!(
                        "{label}: {} bytes kept, truncated={trunc}, exitcode {:?}",
                        data.len(),
                        o.exitcode
                    ),
                );
                row.check(
                    data.len() == want_len && trunc == want_trunc && o.exitcode == Some(0),
                    || {
                        format!(
                            "{label}: {} bytes, truncated={trunc}, exit {:?}",
                            data.len(),
                            o.exitcode
                        )
                    },
                );
            }
            Err(e) => row.fail(format!("{label}: {e}")),
        }
    }
    // Unknown pids: init (not ours), an already collected child, a negative one.
    let collected = c
        .exec("/bin/true", &[], None, false)
        .and_then(|p| c.exec_wait(p, Duration::from_secs(10)).map(|_| p))
        .map_err(|e| e.to_string())?;
    for p in [1, collected, -5] {
        match c.exec_status(p) {
            Err(ClientError::Agent { class, desc }) => {
                say(&row.name, &format!("exec-status pid {p}: {class}: {desc}"));
                row.check(
                    class == "GenericError" && desc.contains(&p.to_string()),
                    || format!("exec-status pid {p}: unclear error {class}: {desc}"),
                );
            }
            other => row.fail(format!("exec-status pid {p}: {other:?}")),
        }
    }
    let fd1 = fd_count(pid);
    say(&row.name, &format!("fds {fd0:?} -> {fd1:?}"));
    if let (Some(a), Some(b)) = (fd0, fd1)
        && b > a
    {
        row.leaks += 1;
        row.fail(format!("open fds grew from {a} to {b}"));
    }
    if !agent.guard_mut().is_running() {
        row.crashes += 1;
        row.fail(format!("the agent died; log:\n{}", agent.log()));
    }
    row.inputs = format!("{runs} guest-exec runs + 3 at the 16 MiB cap + 3 unknown pids");
    row.faults = format!(
        "{} children never waited for; outputs of 17 MiB; zombies after: {}",
        unwaited.len(),
        kids.1
    );
    drop(c);
    if let Some(st) = agent.stop() {
        row.check(st.code() == Some(0), || {
            format!("exit status {st} after the run")
        });
    }
    Ok(())
}
