//! Figures about a process from `/proc`, for the benchmark and the soak routines: what they
//! judge an agent by (memory, CPU, fds, children) is read the same way in both.

use std::path::Path;

/// Resident memory of a process, from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mem {
    /// `VmRSS`: everything resident.
    pub vm_rss: u64,
    /// `RssAnon`: heap, stack and other private memory; where a leak shows.
    pub anon: u64,
    /// `RssFile`: pages of the executable and other files, which grow as code paths run for
    /// the first time.
    pub file: u64,
}

impl std::fmt::Display for Mem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VmRSS {} KiB (RssAnon {}, RssFile {})",
            self.vm_rss, self.anon, self.file
        )
    }
}

/// The resident memory of `pid`.
pub fn mem(pid: u32) -> Option<Mem> {
    let s = status(pid)?;
    Some(Mem {
        vm_rss: kb_field(&s, "VmRSS")?,
        anon: kb_field(&s, "RssAnon")?,
        file: kb_field(&s, "RssFile")?,
    })
}

/// One field of `/proc/<pid>/status` given in kB (`VmRSS`, `VmHWM`, …).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    kb_field(&status(pid)?, field)
}

fn status(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok()
}

/// `field` of a `status` text: the line `FIELD:   1234 kB`.
fn kb_field(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// CPU time of a process (all its threads, user and kernel), in seconds.
///
/// From `/proc/PID/task/*/schedstat`, the scheduler's nanosecond count of time on a CPU: the
/// tick-sampled utime + stime of `stat` moves in 10 ms steps, too coarse for 2000 pipelined
/// pings that cost our agent about a millisecond. `stat` is the fallback.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0.0;
    for t in tasks.flatten() {
        total += cpu_seconds_of_task(&t.path())?;
    }
    Some(total)
}

/// CPU time of one task directory of /proc (`/proc/PID/task/TID`), in seconds.
pub fn cpu_seconds_of_task(dir: &Path) -> Option<f64> {
    if let Ok(text) = std::fs::read_to_string(dir.join("schedstat"))
        && let Some(ns) = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
    {
        return Some(ns / 1e9);
    }
    let text = std::fs::read_to_string(dir.join("stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (1-based) of stat; `rest` starts at field 3.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let hz = rustix::param::clock_ticks_per_second() as f64;
    Some((utime + stime) / hz)
}

/// The number of open fds of `pid`.
pub fn fd_count(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// `(all children, zombie children)` of `pid`, from every `/proc/<n>/stat`.
pub fn children_of(pid: u32) -> (usize, usize) {
    let (mut all, mut zombies) = (0, 0);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (0, 0);
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{name}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after
        // the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("");
        let ppid: u32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == pid {
            all += 1;
            if state == "Z" {
                zombies += 1;
            }
        }
    }
    (all, zombies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn status_fields_of_this_process() {
        let me = std::process::id();
        let m = mem(me).unwrap();
        assert!(m.vm_rss > 0 && m.vm_rss >= m.anon, "{m}");
        assert_eq!(status_kb(me, "VmRSS").map(|v| v > 0), Some(true));
        assert_eq!(status_kb(me, "NoSuchField"), None);
        assert_eq!(
            kb_field("VmHWM:\t  1776 kB\nVmRSS: 12 kB\n", "VmRSS"),
            Some(12)
        );
        // A field name that is a prefix of another does not match it.
        assert_eq!(kb_field("VmRSSX: 5 kB\n", "VmRSS"), None);
    }

    #[test]
    fn children_of_sees_a_zombie() {
        // A child that exits and is not reaped is a zombie of this process.
        let child = std::process::Command::new("/bin/true").spawn().unwrap();
        let me = std::process::id();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = (0, 0);
        while Instant::now() < deadline {
            seen = children_of(me);
            if seen.1 > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut child = child;
        let _ = child.wait();
        assert!(seen.1 >= 1, "{seen:?}");
    }
}
