//! `guest-virtio`: in the Linux guest, the host disconnects mid-request over virtio-serial; every
//! next connection must be served.

use super::common::*;
use super::reconnect::HALF_REQUESTS;

pub(super) fn guest_virtio(ctx: &mut Context, row: &mut Row) -> Result<(), String> {
    let quick = ctx.opts.quick;
    let cycles: u64 = if quick { 30 } else { 300 };
    let guest = ctx.guest()?;
    let socket = guest.virtio_socket.clone();
    let started = Instant::now();
    let mut served = 0u64;
    let mut plain_right = 0u64;
    let mut retries = 0u64;
    let mut retried_cycles = Vec::new();
    let mut slowest = Duration::ZERO;
    let half_requests: Vec<Vec<u8>> = {
        let mut v: Vec<Vec<u8>> = HALF_REQUESTS.iter().map(|h| h.to_vec()).collect();
        // A large half request, longer than one virtqueue buffer.
        let mut big = b"{\"execute\":\"guest-ping\",\"arguments\":{\"x\":\"".to_vec();
        big.extend(std::iter::repeat_n(b'z', 100_000));
        v.push(big);
        v
    };
    for i in 0..cycles {
        if started.elapsed() > Duration::from_secs(if quick { 120 } else { 3000 }) {
            row.fail(format!("time budget ran out after {i} cycles"));
            break;
        }
        {
            let mut half = Client::connect_retry(&socket, Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            let _ = half.send_raw(&half_requests[(i as usize) % half_requests.len()]);
            if i % 3 == 0 {
                // Let the guest see the bytes before the hang-up.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let t = Instant::now();
        let r = (|| -> Result<bool, ClientError> {
            let mut c = Client::connect_retry(&socket, Duration::from_secs(10))?;
            c.set_timeout(Duration::from_secs(5));
            // One retry on the same connection: a resync sent while the guest is still
            // processing the previous hang-up may be dropped with it.
            if c.sync_delimited().is_err() {
                retries += 1;
                retried_cycles.push(i);
                c.set_timeout(Duration::from_secs(30));
                c.sync_delimited()?;
            }
            c.set_timeout(Duration::from_secs(30));
            let v = c.request(
                &json!({"execute": "guest-sync", "arguments": {"id": i}, "id": format!("g{i}")}),
            )?;
            Ok(v == json!({"return": i, "id": format!("g{i}")}))
        })();
        slowest = slowest.max(t.elapsed());
        match r {
            Ok(true) => {
                served += 1;
                plain_right += 1;
            }
            Ok(false) => {
                served += 1;
                row.lost += 1;
                row.fail(format!("cycle {i}: wrong answer after the resync"));
            }
            Err(ClientError::Timeout(w)) => {
                row.hangs += 1;
                row.fail(format!("cycle {i}: timed out waiting for {w}"));
            }
            Err(e) => {
                row.lost += 1;
                row.fail(format!("cycle {i}: {e}"));
            }
        }
        if row.failures.len() > 5 {
            break;
        }
    }
    if retries > 0 {
        // A resync lost on a fresh connection is a lost request: the client got no answer.
        row.lost += retries;
        row.fail(format!(
            "{retries} first guest-sync-delimited requests on a fresh connection got no answer within 5 s (cycles {retried_cycles:?}); a second one on the same connection did"
        ));
        if let Ok(mut isa) = guest.isa_agent()
            && let Ok(o) = isa.run(
                "/bin/sh",
                &["-c", "tail -n 40 /run/qga0.log"],
                Duration::from_secs(30),
            )
        {
            say(
                &row.name,
                &format!(
                    "the guest agent's log (tail):\n{}",
                    String::from_utf8_lossy(&o.stdout)
                ),
            );
        }
    }
    let console = guest.console();
    if console.contains("agent exited") {
        row.crashes += 1;
        row.fail("an agent exited in the guest (see the console)");
    }
    say(
        &row.name,
        &format!(
            "{cycles} host disconnects mid-request over virtio-serial in {:.1}s: {served} next connections served, {plain_right} exact answers, {retries} resync retries, slowest {:.0} ms",
            started.elapsed().as_secs_f64(),
            slowest.as_secs_f64() * 1000.0
        ),
    );
    row.inputs =
        format!("{cycles} connections to the guest's virtio-serial port, each then served");
    row.faults = format!(
        "{cycles} host disconnects mid-request ({} kinds of half request); {retries} resync retries",
        half_requests.len()
    );
    Ok(())
}
