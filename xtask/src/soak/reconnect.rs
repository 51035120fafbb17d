//! `reconnect`: clients that send half a request and hang up; every next client must get a
//! clean parser (upstream glues the halves together).

use super::common::*;

/// The half requests a client leaves behind when it disconnects.
pub(super) const HALF_REQUESTS: &[&[u8]] = &[
    b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":",
    b"{\"execute\":\"guest-ping",
    b"[[[[[[[[",
    b"{\"execute\":\"guest-ping\",\"id\":\"half",
    b"{\"execute\":\"guest-ping\\u00",
    b"{\"execute\":\"guest-info\"}",
    b"\xc3",
    b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":12",
];

pub(super) fn reconnect(ctx: &mut Context, row: &mut Row) -> Result<(), String> {
    let cycles: u64 = if ctx.opts.quick { 500 } else { 10_000 };
    let mut agent = start_host(ctx, &[])?;
    let pid = agent.pid();
    // The baseline is taken after the first tenth of the cycles (every kind of half request
    // has been seen by then), with no client connected, as at the end.
    let warmup = (cycles / 10).max(HALF_REQUESTS.len() as u64 * 4);
    let (mut rss0, mut fd0) = (None, None);
    let mut mid = None;
    let started = Instant::now();
    let mut served = 0u64;
    let mut slowest = Duration::ZERO;
    for i in 0..cycles {
        if started.elapsed() > Duration::from_secs(if ctx.opts.quick { 120 } else { 1800 }) {
            row.fail(format!("time budget ran out after {i} cycles"));
            break;
        }
        {
            let mut half = Client::connect_retry(agent.socket(), Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            let _ = half.send_raw(HALF_REQUESTS[(i as usize) % HALF_REQUESTS.len()]);
        }
        let t = Instant::now();
        let r = (|| -> Result<Value, ClientError> {
            let mut c = Client::connect_retry(agent.socket(), Duration::from_secs(10))?;
            c.set_timeout(Duration::from_secs(10));
            c.request(
                &json!({"execute": "guest-sync", "arguments": {"id": i}, "id": format!("r{i}")}),
            )
        })();
        slowest = slowest.max(t.elapsed());
        match r {
            Ok(v) if v == json!({"return": i, "id": format!("r{i}")}) => served += 1,
            Ok(v) => {
                row.lost += 1;
                if row.lost <= 3 {
                    row.fail(format!("cycle {i}: answered {v}"));
                }
            }
            Err(ClientError::Timeout(w)) => {
                row.hangs += 1;
                row.fail(format!("cycle {i}: timed out waiting for {w}"));
            }
            Err(e) => {
                row.lost += 1;
                if row.lost <= 3 {
                    row.fail(format!("cycle {i}: {e}"));
                }
            }
        }
        if !agent.guard_mut().is_running() {
            row.crashes += 1;
            row.fail(format!(
                "the agent died at cycle {i}; log:\n{}",
                agent.log()
            ));
            break;
        }
        if i + 1 == warmup {
            std::thread::sleep(Duration::from_millis(100));
            (rss0, fd0) = (mem(pid), fd_count(pid));
        }
        if i + 1 == (warmup + cycles) / 2 {
            std::thread::sleep(Duration::from_millis(100));
            mid = mem(pid);
        }
    }
    // Figures with no client connected, as at the baseline.
    std::thread::sleep(Duration::from_millis(100));
    let (rss1, fd1) = (mem(pid), fd_count(pid));
    let secs = started.elapsed().as_secs_f64();
    say(
        &row.name,
        &format!(
            "{cycles} cycles in {secs:.1}s: {served} next clients served exactly (plain request, no resync), slowest {:.1} ms; after {warmup} cycles {}, at the end {}; fds {fd0:?} -> {fd1:?}",
            slowest.as_secs_f64() * 1000.0,
            opt(rss0),
            opt(rss1)
        ),
    );
    // A leak grows with the cycles; the allocator settling grows for a while and then stops
    // (measured: RssAnon 228 KiB at the start, 260 KiB after 10,000 cycles and still 260 KiB
    // after 60,000). So private memory must not grow beyond the tolerance in the second half.
    say(
        &row.name,
        &format!(
            "private memory: {} KiB after {warmup} cycles, {} KiB halfway, {} KiB at the end",
            opt(rss0.map(|m| m.anon)),
            opt(mid.map(|m| m.anon)),
            opt(rss1.map(|m| m.anon))
        ),
    );
    check_mem(row, mid, rss1);
    if let (Some(a), Some(b)) = (fd0, fd1)
        && b > a
    {
        row.leaks += 1;
        row.fail(format!("open fds grew from {a} to {b}"));
    }
    row.inputs = format!("{cycles} cycles, {} connections", cycles * 2);
    row.faults = format!(
        "{cycles} disconnects mid-request ({} kinds of half request); RssAnon {}→{}→{} KiB, VmRSS {}→{} KiB, fds {}→{}",
        HALF_REQUESTS.len(),
        opt(rss0.map(|m| m.anon)),
        opt(mid.map(|m| m.anon)),
        opt(rss1.map(|m| m.anon)),
        opt(rss0.map(|m| m.vm_rss)),
        opt(rss1.map(|m| m.vm_rss)),
        opt(fd0),
        opt(fd1)
    );
    if let Some(st) = agent.stop() {
        row.check(st.code() == Some(0), || {
            format!("exit status {st} after the run")
        });
    }
    Ok(())
}
