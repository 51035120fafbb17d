//! `garbage`: random and adversarial bytes with valid requests woven in, through a host
//! agent's unix-listen socket; its private memory and open fds before and after.

use super::common::*;

pub(super) fn garbage(ctx: &mut Context, row: &mut Row) -> Result<(), String> {
    let quick = ctx.opts.quick;
    let mut agent = start_host(ctx, &[])?;
    let pid = agent.pid();
    let plan = GarbagePlan {
        total: if quick { 16 << 20 } else { 1 << 30 },
        max_string: if quick { 1 << 20 } else { 8 << 20 },
        limits_first: !quick,
        baseline_after: 10 << 20,
        seed: 0x5eed_0006,
        stall: Duration::from_secs(120),
        budget: Duration::from_secs(if quick { 120 } else { 3600 }),
        slow_link: false,
    };
    let client = agent.connect()?;
    let stream = client.stream();
    let mut base: (Option<Mem>, Option<usize>) = (None, None);
    let mut end: (Option<Mem>, Option<usize>) = (None, None);
    let f = garbage_session(
        stream,
        &plan,
        || base = (mem(pid), fd_count(pid)),
        || end = (mem(pid), fd_count(pid)),
    );
    garbage_into_row(row, "unix-listen", &f);
    let alive = agent.guard_mut().is_running();
    if !alive {
        row.crashes += 1;
        row.fail(format!("the agent died; log:\n{}", agent.log()));
    }
    say(
        &row.name,
        &format!(
            "after the warm-up{} and {} MiB more: {}; at the end: {} (tolerance for RssAnon {RSS_TOLERANCE_KB} KiB); fds {} -> {}",
            if plan.limits_first {
                " (incl. one oversized request and one token-count overflow)"
            } else {
                ""
            },
            plan.baseline_after >> 20,
            opt(base.0),
            opt(end.0),
            opt(base.1),
            opt(end.1)
        ),
    );
    if alive {
        check_mem(row, base.0, end.0);
        match (base.1, end.1) {
            (Some(f0), Some(f1)) if f1 > f0 => {
                row.leaks += 1;
                row.fail(format!("open fds grew from {f0} to {f1}"));
            }
            (Some(_), Some(_)) => {}
            _ => row.fail("the fd figures could not be taken"),
        }
    }
    // A fresh client is served normally afterwards.
    drop(client);
    match agent
        .connect()
        .and_then(|mut c| c.ping().map_err(|e| e.to_string()))
    {
        Ok(()) => {}
        Err(e) => {
            row.lost += 1;
            row.fail(format!("a fresh client after the garbage: {e}"));
        }
    }
    row.inputs = format!(
        "{:.0} MiB through unix-listen, {} valid requests woven in",
        mib(f.bytes),
        f.valid
    );
    row.faults = format!(
        "{}; RssAnon {}→{} KiB, VmRSS {}→{} KiB, fds {}→{}",
        short_garbage(&f),
        opt(base.0.map(|m| m.anon)),
        opt(end.0.map(|m| m.anon)),
        opt(base.0.map(|m| m.vm_rss)),
        opt(end.0.map(|m| m.vm_rss)),
        opt(base.1),
        opt(end.1)
    );
    if let Some(st) = agent.stop() {
        row.check(st.code() == Some(0), || {
            format!("exit status {st} after the run")
        });
    }
    Ok(())
}
