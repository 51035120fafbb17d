//! `guest-freeze`: in the Linux guest, freeze the filesystems, SIGTERM the agent: status 0,
//! filesystems thawed, and the agent restarts.

use super::common::*;

/// The shell that prints the PIDs of the guest's virtio-serial agents.
pub(super) const FIND_VIRTIO_AGENT: &str = "for p in /proc/[0-9]*; do \
     c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); \
     case \"$c\" in '/usr/bin/qga -m virtio-serial'*) echo ${p#/proc/};; esac; done";

/// The virtio-serial agent's arguments, as the guest's init starts it.
pub(super) const VIRTIO_AGENT_ARGS: &[&str] = &[
    "-m",
    "virtio-serial",
    "-p",
    "/dev/virtio-ports/org.qemu.guest_agent.0",
    "-t",
    "/run/qga0",
    "-F/etc/qemu/fsfreeze-hook",
    "-l",
    "/run/qga0.log",
];

pub(super) fn guest_freeze(ctx: &mut Context, row: &mut Row) -> Result<(), String> {
    let cycles: u64 = if ctx.opts.quick { 2 } else { 1000 };
    let guest = ctx.guest()?;
    let mut isa = guest.isa_agent()?;
    isa.set_timeout(Duration::from_secs(60));
    let sh = |isa: &mut Client, script: &str, within: Duration| {
        isa.run("/bin/sh", &["-c", script], within)
    };
    let started = Instant::now();
    let mut ok = 0u64;
    let mut slowest_stop = Duration::ZERO;
    // The agent started by init is not our child: the first cycle stops it and reads its
    // status from the console; later cycles start agents through the ISA agent's guest-exec,
    // which reaps them and reports their exit status.
    let mut agent_pid: Option<i64> = None;
    for i in 0..cycles {
        if i > 0 && i % 100 == 0 {
            say(&row.name, &format!("{i} of {cycles} cycles done"));
        }
        let r = (|| -> Result<(), String> {
            let mut c = guest.agent()?;
            c.set_timeout(Duration::from_secs(60));
            let pid = match agent_pid {
                Some(p) => p,
                None => {
                    let o = sh(&mut isa, FIND_VIRTIO_AGENT, Duration::from_secs(30))
                        .map_err(|e| format!("find the agent: {e}"))?;
                    let text = String::from_utf8_lossy(&o.stdout).into_owned();
                    let pids: Vec<i64> = text
                        .split_whitespace()
                        .filter_map(|p| p.parse().ok())
                        .collect();
                    match pids.as_slice() {
                        [p] => *p,
                        _ => return Err(format!("virtio agents running: {text:?}")),
                    }
                }
            };
            let n = c
                .execute("guest-fsfreeze-freeze", None)
                .map_err(|e| format!("freeze: {e}"))?;
            let st = c
                .execute("guest-fsfreeze-status", None)
                .map_err(|e| format!("status: {e}"))?;
            if st != json!("frozen") || n.as_i64().unwrap_or(0) < 1 {
                return Err(format!("freeze returned {n}, status {st}"));
            }
            // Leave a request half-written too, so the stop happens mid-request.
            c.send_raw(b"{\"execute\":\"guest-ping\"")
                .map_err(|e| e.to_string())?;
            let t = Instant::now();
            let o = sh(
                &mut isa,
                &format!("kill -TERM {pid}"),
                Duration::from_secs(30),
            )
            .map_err(|e| format!("kill: {e}"))?;
            if o.exitcode != Some(0) {
                return Err(format!("kill -TERM {pid}: {o:?}"));
            }
            // The exit status: from the console for init's agent, from guest-exec-status for
            // ours.
            let deadline = Instant::now() + Duration::from_secs(20);
            let status = loop {
                if agent_pid.is_none() {
                    let con = guest.console();
                    if let Some(l) = con
                        .lines()
                        .find(|l| l.contains("virtio agent exited with status"))
                    {
                        break l
                            .rsplit(' ')
                            .next()
                            .and_then(|s| s.trim().parse::<i64>().ok());
                    }
                } else {
                    let s = isa
                        .exec_status(pid)
                        .map_err(|e| format!("exec-status {pid}: {e}"))?;
                    if s.get("exited") == Some(&Value::Bool(true)) {
                        break s.get("exitcode").and_then(Value::as_i64);
                    }
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "HANG: agent {pid} still running 20 s after SIGTERM"
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            slowest_stop = slowest_stop.max(t.elapsed());
            // QEMU serves one client at a time: this one must go before the next connects.
            drop(c);
            if status != Some(0) {
                return Err(format!("CRASH: agent {pid} exited with status {status:?}"));
            }
            // Thawed: a write to the data disk completes, and no frozen marker remains.
            let o = sh(
                &mut isa,
                &format!(
                    "echo {i} > /mnt/data/soak-freeze && sync && cat /mnt/data/soak-freeze && \
                     test ! -e /run/qga0/qga.state.isfrozen && echo thawed"
                ),
                Duration::from_secs(20),
            )
            .map_err(|e| format!("HANG: write to /mnt/data after the stop: {e}"))?;
            if o.stdout != format!("{i}\nthawed\n").into_bytes() {
                return Err(format!("not thawed: {o:?}"));
            }
            // Restart the agent through the ISA agent and check it reports thawed.
            let args: Vec<&str> = VIRTIO_AGENT_ARGS.to_vec();
            let new_pid = isa
                .exec("/usr/bin/qga", &args, None, false)
                .map_err(|e| format!("restart: {e}"))?;
            agent_pid = Some(new_pid);
            let mut c = guest.agent()?;
            let st = c
                .execute("guest-fsfreeze-status", None)
                .map_err(|e| format!("status after restart: {e}"))?;
            if st != json!("thawed") {
                return Err(format!("status after restart: {st}"));
            }
            Ok(())
        })();
        match r {
            Ok(()) => ok += 1,
            Err(e) if e.starts_with("HANG") => {
                row.hangs += 1;
                row.fail(format!("cycle {i}: {e}"));
            }
            Err(e) if e.starts_with("CRASH") => {
                row.crashes += 1;
                row.fail(format!("cycle {i}: {e}"));
            }
            Err(e) => row.fail(format!("cycle {i}: {e}")),
        }
        if !row.failures.is_empty() {
            break;
        }
    }
    let hook = sh(
        &mut isa,
        "cat /run/fsfreeze-hook.log",
        Duration::from_secs(20),
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    .unwrap_or_default();
    let freezes = hook.lines().filter(|l| l.starts_with("freeze")).count();
    let thaws = hook.lines().filter(|l| l.starts_with("thaw")).count();
    say(
        &row.name,
        &format!(
            "{cycles} freeze + SIGTERM cycles in {:.1}s: {ok} exited 0 and left the filesystems thawed; slowest stop {:.0} ms; hook log: {freezes} freezes, {thaws} thaws",
            started.elapsed().as_secs_f64(),
            slowest_stop.as_secs_f64() * 1000.0
        ),
    );
    row.check(freezes == thaws, || {
        format!("hook saw {freezes} freezes but {thaws} thaws")
    });
    row.inputs = format!("{cycles} agent lifetimes in the guest, each freezing /mnt/data");
    row.faults = format!(
        "{cycles} SIGTERMs while frozen and mid-request; slowest stop {:.0} ms; hook: {freezes} freezes, {thaws} thaws",
        slowest_stop.as_secs_f64() * 1000.0
    );
    Ok(())
}
