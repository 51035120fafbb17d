//! One garbage session: a writer sends the generator's stream while a reader thread checks
//! every answer, counting the valid requests answered right, wrongly or not at all, and
//! telling the caller when the agent has caught up (for the memory and fd figures).

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use qga_client::parse_line;
use serde_json::{Value, json};

use super::generator::*;

struct ReaderState {
    /// Index of the next valid request the reader expects an answer for.
    next: AtomicU64,
    /// Set when the final answer arrived or the reader gave up.
    done: AtomicBool,
}

/// Sends garbage with valid requests woven in over `stream` and checks every answer. `at_baseline`
/// and `at_end` are called when the agent has processed everything up to the baseline point and
/// the end (for RSS and fd figures).
pub fn garbage_session(
    stream: &UnixStream,
    plan: &GarbagePlan,
    mut at_baseline: impl FnMut(),
    mut at_end: impl FnMut(),
) -> GarbageFigures {
    let started = Instant::now();
    let mut figs = GarbageFigures {
        chunks: vec![0; GARBAGE_KINDS.len()],
        ..GarbageFigures::default()
    };
    let (Ok(rd), Ok(wr)) = (stream.try_clone(), stream.try_clone()) else {
        figs.stalled = Some("cannot clone the socket".into());
        return figs;
    };
    let _ = rd.set_read_timeout(Some(plan.stall));
    let _ = wr.set_write_timeout(Some(plan.stall));
    let state = Arc::new(ReaderState {
        next: AtomicU64::new(0),
        done: AtomicBool::new(false),
    });
    let reader = {
        let state = state.clone();
        let slow = plan.slow_link;
        std::thread::spawn(move || read_answers(Paced { inner: rd, slow }, &state))
    };

    let resync = resync_bytes();
    let mut rng = Rng::new(plan.seed);
    let mut w = BufWriter::with_capacity(256 * 1024, wr);
    let mut buf = Vec::with_capacity(1 << 20);
    let mut k: u64 = 0;
    let mut baseline_taken = false;
    let mut warmup_end = None;
    let mut warmup: Vec<usize> = Vec::new();
    if plan.limits_first {
        warmup.extend([11, 12]);
    }
    // One of each regular kind first, the longest string among them, so the baseline is taken
    // after every code path has run once at its largest.
    warmup.extend(0..=10);
    let mut warm = warmup.into_iter();
    let wait_for = |k: u64, what: &str| -> Result<(), String> {
        let deadline = Instant::now() + plan.stall;
        while state.next.load(Ordering::Acquire) < k {
            if state.done.load(Ordering::Acquire) {
                return Err(format!("the reader stopped before {what}"));
            }
            if Instant::now() >= deadline {
                return Err(format!("no answer within {:?} at {what}", plan.stall));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    };
    let mut send_err = None;
    let mut next_report = plan.total / 10;
    while figs.bytes < plan.total {
        if started.elapsed() > plan.budget {
            figs.out_of_time = true;
            break;
        }
        buf.clear();
        let kind = match warm.next() {
            Some(kind) => {
                if kind == 4 {
                    buf.extend_from_slice(b"{\"execute\":\"guest-ping\",\"arguments\":{\"x\":\"");
                    buf.extend(std::iter::repeat_n(b'a', plan.max_string));
                } else {
                    garbage_chunk(&mut rng, kind, plan.max_string, &mut buf);
                }
                kind
            }
            None => {
                let kind = pick_kind(&mut rng);
                garbage_chunk(&mut rng, kind, plan.max_string, &mut buf);
                kind
            }
        };
        figs.chunks[kind] += 1;
        buf.push(*rng.pick(&resync));
        figs.resyncs += 1;
        if rng.below(4) == 0 {
            let ws = *rng.pick(&[b" ".as_slice(), b"\n", b"\r\n", b"\t"]);
            buf.extend_from_slice(ws);
        }
        let (req, _) = valid_request(k);
        buf.extend_from_slice(&req);
        k += 1;
        if let Err(e) = w.write_all(&buf) {
            send_err = Some(format!("write: {e}"));
            break;
        }
        figs.bytes += buf.len() as u64;
        // A long run shows it is alive: a line at every tenth of the way.
        if plan.total >= 64 << 20 && figs.bytes >= next_report {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "  … sent {:.0} of {:.0} MiB in {secs:.0} s ({:.2} MiB/s), {k} valid requests, {} answered",
                mib(figs.bytes),
                mib(plan.total),
                mib(figs.bytes) / secs.max(1e-9),
                state.next.load(Ordering::Acquire)
            );
            next_report = next_report.saturating_add(plan.total / 10);
        }
        if warm.len() == 0 && warmup_end.is_none() {
            warmup_end = Some(figs.bytes);
        }
        if !baseline_taken
            && warmup_end.is_some_and(|w| figs.bytes >= w.saturating_add(plan.baseline_after))
        {
            baseline_taken = true;
            if let Err(e) = w.flush() {
                send_err = Some(format!("write: {e}"));
                break;
            }
            match wait_for(k, "the baseline") {
                Ok(()) => {
                    // Idle, as at the end.
                    std::thread::sleep(Duration::from_millis(200));
                    at_baseline()
                }
                Err(e) => {
                    send_err = Some(e);
                    break;
                }
            }
        }
    }
    figs.valid = k;
    // The end marker: a last valid request, then wait for everything.
    if send_err.is_none() {
        let mut tail = vec![0x01];
        tail.extend_from_slice(b"{\"execute\":\"guest-ping\",\"id\":\"end\"}");
        let r = w.write_all(&tail).and_then(|()| w.flush());
        match r {
            Err(e) => send_err = Some(format!("write: {e}")),
            Ok(()) => {
                figs.bytes += tail.len() as u64;
                let deadline = Instant::now() + plan.stall;
                while !state.done.load(Ordering::Acquire) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if state.done.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(200));
                    at_end();
                } else {
                    send_err = Some(format!("no end marker within {:?}", plan.stall));
                }
            }
        }
    }
    if send_err.is_some() {
        // Unblock the reader.
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    let r = match reader.join() {
        Ok(r) => r,
        Err(_) => {
            figs.stalled = Some("the reader panicked".into());
            return figs;
        }
    };
    figs.right = r.right;
    figs.missing = r.missing + k.saturating_sub(r.seen_up_to);
    figs.wrong = r.wrong;
    figs.other_lines = r.other;
    figs.response_bytes = r.bytes;
    figs.bad_lines = r.bad;
    figs.examples = r.examples;
    figs.stalled = send_err.or(r.error);
    figs.elapsed = started.elapsed();
    figs
}

#[derive(Default)]
struct ReaderFigures {
    right: u64,
    missing: u64,
    wrong: u64,
    other: u64,
    bad: u64,
    bytes: u64,
    /// One past the highest valid index seen.
    seen_up_to: u64,
    examples: Vec<String>,
    error: Option<String>,
}

/// A reader that, on a slow link, pauses after a short read.
struct Paced {
    inner: UnixStream,
    slow: bool,
}

impl std::io::Read for Paced {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.slow && n < 512 {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(n)
    }
}

fn read_answers(stream: Paced, state: &ReaderState) -> ReaderFigures {
    let mut f = ReaderFigures::default();
    let mut r = BufReader::with_capacity(1 << 20, stream);
    let mut line = Vec::new();
    let example = |f: &mut ReaderFigures, s: String| {
        if f.examples.len() < 5 {
            f.examples.push(s);
        }
    };
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) => {
                f.error = Some("the agent closed the connection".into());
                break;
            }
            Ok(n) => f.bytes += n as u64,
            Err(e) => {
                f.error = Some(format!("read: {e}"));
                break;
            }
        }
        if line.last() != Some(&b'\n') {
            f.error = Some("the connection ended mid-line".into());
            break;
        }
        line.pop();
        if line.first() == Some(&0xFF) {
            f.bad += 1;
            example(&mut f, "a response with a 0xFF sentinel".into());
            continue;
        }
        let ours = line.starts_with(b"{\"id\": \"v")
            || line.starts_with(b"{\"return\"")
            || line.starts_with(b"{\"id\": \"end\"");
        if !ours {
            // An error for the garbage (no id, or a garbage id such as "g-1"): the agent put it
            // first, so only its shape is checked, cheaply (some quote megabytes of input).
            if line.starts_with(b"{\"error\": {\"class\": \"")
                || line.starts_with(b"{\"id\": ")
                || line.len() < 4096 && parse_line(&line).is_ok()
            {
                f.other += 1;
            } else {
                f.bad += 1;
                example(
                    &mut f,
                    format!(
                        "unexpected line: {}",
                        String::from_utf8_lossy(&line[..line.len().min(200)])
                    ),
                );
            }
            continue;
        }
        let v = match parse_line(&line) {
            Ok(v) => v,
            Err(e) => {
                f.bad += 1;
                example(&mut f, e.to_string());
                continue;
            }
        };
        let id = v.get("id").and_then(Value::as_str).unwrap_or("");
        if id == "end" {
            if v != json!({"return": {}, "id": "end"}) {
                f.wrong += 1;
                example(&mut f, format!("end marker answered {v}"));
            }
            state.done.store(true, Ordering::Release);
            return f;
        }
        let Some(k) = id.strip_prefix('v').and_then(|n| n.parse::<u64>().ok()) else {
            // A `return` for a garbage request (they carry no "v" id).
            f.other += 1;
            continue;
        };
        let next = state.next.load(Ordering::Relaxed);
        if k < next {
            f.wrong += 1;
            example(&mut f, format!("duplicate or out-of-order answer {v}"));
            continue;
        }
        if k > next {
            f.missing += k - next;
            example(
                &mut f,
                format!("requests v{next}..v{} got no answer", k - 1),
            );
        }
        let (_, want) = valid_request(k);
        if v == want {
            f.right += 1;
        } else {
            f.wrong += 1;
            example(&mut f, format!("v{k}: wanted {want}, got {v}"));
        }
        f.seen_up_to = k + 1;
        state.next.store(k + 1, Ordering::Release);
    }
    state.done.store(true, Ordering::Release);
    f
}
