//! `restart`: starts and SIGTERMs while idle, mid-request and blocked writing: exit status 0
//! and a bounded stop every time.

use super::common::*;

pub(super) fn restart(ctx: &mut Context, row: &mut Row) -> Result<(), String> {
    use std::os::unix::process::ExitStatusExt;
    let cycles: u64 = if ctx.opts.quick { 50 } else { 1000 };
    let bin = ctx.host_binary()?;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut total_stop = Duration::ZERO;
    let mut ok = 0u64;
    let mut modes = [0u64; 3];
    for i in 0..cycles {
        let mut agent = HostAgent::start_with(AgentKind::Ours, &bin, &[])?;
        let mode = (i % 3) as usize;
        modes[mode] += 1;
        // Keep the client open across the signal.
        let _client = match mode {
            // Idle, after one answered request.
            0 => {
                let mut c = agent.connect()?;
                c.ping().map_err(|e| e.to_string())?;
                drop(c);
                None
            }
            // A client connected with half a request in the parser.
            1 => {
                let mut c = agent.connect()?;
                c.send_raw(b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":")
                    .map_err(|e| e.to_string())?;
                Some(c)
            }
            // The agent blocked writing: many large answers, none read.
            _ => {
                let mut c = agent.connect()?;
                let mut burst = Vec::new();
                for _ in 0..400 {
                    burst.extend_from_slice(b"{\"execute\":\"guest-info\"}");
                }
                c.send_raw(&burst).map_err(|e| e.to_string())?;
                std::thread::sleep(Duration::from_millis(30));
                Some(c)
            }
        };
        let t = Instant::now();
        let _ = agent.guard_mut().signal(::tests::qemu::Signal::TERM);
        let st = agent.guard_mut().wait_timeout(Duration::from_secs(10));
        let took = t.elapsed();
        slowest = slowest.max(took);
        total_stop += took;
        match st {
            None => {
                row.hangs += 1;
                row.fail(format!(
                    "cycle {i} (mode {mode}): no exit within 10 s of SIGTERM; log:\n{}",
                    agent.log()
                ));
            }
            Some(st) if st.code() == Some(0) => ok += 1,
            Some(st) => {
                row.crashes += 1;
                row.fail(format!(
                    "cycle {i} (mode {mode}): exit status {st} (signal {:?}); log:\n{}",
                    st.signal(),
                    agent.log()
                ));
            }
        }
        drop(agent);
        if row.failures.len() > 5 {
            break;
        }
    }
    let n = cycles.max(1) as u32;
    say(
        &row.name,
        &format!(
            "{cycles} starts and SIGTERMs in {:.1}s ({} idle, {} mid-request, {} blocked writing): {ok} exited with status 0; stop time mean {:.1} ms, max {:.1} ms",
            started.elapsed().as_secs_f64(),
            modes[0],
            modes[1],
            modes[2],
            (total_stop / n).as_secs_f64() * 1000.0,
            slowest.as_secs_f64() * 1000.0
        ),
    );
    row.check(ok == cycles, || {
        format!("{ok} of {cycles} stops gave status 0")
    });
    row.inputs = format!("{cycles} agent starts");
    row.faults = format!(
        "{cycles} SIGTERMs ({} idle, {} mid-request, {} while blocked writing); slowest stop {:.0} ms",
        modes[0],
        modes[1],
        modes[2],
        slowest.as_secs_f64() * 1000.0
    );
    Ok(())
}
