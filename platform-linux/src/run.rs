//! Running a system helper (`hwclock`, `shutdown`, the fsfreeze hook, `chpasswd`) the way
//! upstream's `ga_run_command` does, with its error texts, which clients show to users:
//!
//! - the child gets its own session, stdin from `/dev/null` (or a pipe fed with `input`), and
//!   stdout and stderr in one pipe;
//! - a non-zero exit becomes `child process has failed to <action>: <captured output>`, or
//!   `...: exit status N` when the helper printed nothing;
//! - a helper that cannot be executed reads as upstream's child would report it
//!   (`failed to exec '<cmd>': <strerror>\n` as the captured output of an exit status 1),
//!   since upstream forks first and lets the child print `perror`'s text.
//!
//! Unlike upstream, every wait is bounded, because a helper or hook may misbehave (the threat
//! model in the design brief) and the agent has one thread:
//!
//! - the output is drained while the child runs, and reading stops [`GRACE`] after it exits:
//!   a background process that keeps the pipe open (a hook's daemon) does not hold the agent;
//! - at most [`MAX_OUTPUT`] bytes of output are kept (the rest is read and dropped), so a chatty
//!   helper cannot grow the agent's memory;
//! - a helper still running after [`TIMEOUT`] is killed with its whole process group (it leads
//!   its own session) and the answer says so: `child process has failed to <action>: timed out
//!   after 120 s and was killed`. The limit is generous for an fsfreeze hook that flushes a
//!   database, and short enough that a client's request is answered.

#![allow(
    clippy::result_large_err,
    reason = "agent_core::Error holds its message inline, by design: no allocation"
)]

use std::io::{Read as _, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use agent_core::Error;

/// How long a helper may run before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(120);
/// How long output is still read after the helper exited (from its background children).
pub const GRACE: Duration = Duration::from_millis(200);
/// The most output kept for the error text.
pub const MAX_OUTPUT: usize = 64 * 1024;

/// Run `argv` (searched in `PATH` when `argv[0]` has no slash) and wait for it, at most
/// [`TIMEOUT`]. `action` completes upstream's `child process has failed to <action>` text.
/// Returns the exit status.
pub fn run_command(argv: &[&str], input: Option<&[u8]>, action: &str) -> Result<i32, Error> {
    run_command_within(argv, input, action, TIMEOUT)
}

/// [`run_command`] with another time limit (tests).
pub fn run_command_within(
    argv: &[&str],
    input: Option<&[u8]>,
    action: &str,
    timeout: Duration,
) -> Result<i32, Error> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(Error::msg(format_args!(
            "child process has failed to {action}: no command"
        )));
    };
    let (reader, writer) = std::io::pipe().map_err(|e| pipe_error(&e))?;
    let writer2 = writer.try_clone().map_err(|e| pipe_error(&e))?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(writer)
        .stderr(writer2);
    crate::sys::process::new_session_on_spawn(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            drop(cmd);
            let text = format!("failed to exec '{prog}': {}\n", crate::config::io_text(&e));
            return Err(Error::msg(format_args!(
                "child process has failed to {action}: {text}"
            )));
        }
    };
    drop(cmd); // close our copies of the pipe's write end, so EOF comes when the child exits
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        // A helper that exits without reading its input gives EPIPE: not our error, its status
        // tells.
        let _ = stdin.write_all(data);
    }
    let mut out = Vec::new();
    let status = match drain_and_wait(&mut child, reader, &mut out, timeout) {
        Ok(Some(status)) => status,
        Ok(None) => {
            return Err(Error::msg(format_args!(
                "child process has failed to {action}: timed out after {} s and was killed",
                timeout.as_secs_f64()
            )));
        }
        Err(e) => {
            return Err(Error::msg(format_args!(
                "failed to wait for child process: {}",
                crate::config::io_text(&e)
            )));
        }
    };
    let text = String::from_utf8_lossy(&out);
    let Some(code) = status.code() else {
        let _ = status.signal();
        return Err(if text.is_empty() {
            Error::msg(format_args!("child process has terminated abnormally"))
        } else {
            Error::msg(format_args!(
                "child process has terminated abnormally: {text}"
            ))
        });
    };
    if code != 0 {
        return Err(if text.is_empty() {
            Error::msg(format_args!(
                "child process has failed to {action}: exit status {code}"
            ))
        } else {
            Error::msg(format_args!("child process has failed to {action}: {text}"))
        });
    }
    Ok(code)
}

/// Read the child's output into `out` (up to [`MAX_OUTPUT`] bytes kept) until it exits and
/// then for at most [`GRACE`] more, or until end of file. `None` when the child was still running
/// after `timeout`: then it and its process group were killed and reaped.
fn drain_and_wait(
    child: &mut Child,
    reader: std::io::PipeReader,
    out: &mut Vec<u8>,
    timeout: Duration,
) -> std::io::Result<Option<ExitStatus>> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let fd = std::os::fd::OwnedFd::from(reader);
    rustix::io::ioctl_fionbio(&fd, true)?;
    let mut reader = std::fs::File::from(fd);
    let deadline = Instant::now() + timeout;
    let mut exited: Option<(ExitStatus, Instant)> = None;
    let mut eof = false;
    let mut buf = [0u8; 8192];
    loop {
        if exited.is_none()
            && let Some(st) = child.try_wait()?
        {
            exited = Some((st, Instant::now() + GRACE));
        }
        let now = Instant::now();
        let until = match exited {
            Some((st, _)) if eof => return Ok(Some(st)),
            Some((st, grace_end)) if now >= grace_end => return Ok(Some(st)),
            Some((_, grace_end)) => grace_end,
            None if now >= deadline => {
                // It leads its own session, so its process group has its pid.
                if let Some(pid) = i32::try_from(child.id())
                    .ok()
                    .and_then(rustix::process::Pid::from_raw)
                {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                return Ok(None);
            }
            None => deadline,
        };
        // Child exits are not seen by poll: wake up often enough to notice one.
        let wait = (until - now).min(Duration::from_millis(20));
        if eof {
            std::thread::sleep(wait);
            continue;
        }
        let ts = Timespec {
            tv_sec: 0,
            tv_nsec: i64::from(wait.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&reader, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        // A bounded number of reads per round, so a helper that writes without pause cannot
        // keep us from checking its exit and the deadline.
        for _ in 0..16 {
            match reader.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    let keep = n.min(MAX_OUTPUT - out.len().min(MAX_OUTPUT));
                    out.extend_from_slice(&buf[..keep]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn pipe_error(e: &std::io::Error) -> Error {
    let _ = e;
    Error::msg(format_args!("cannot create pipe FDs"))
}

/// Whether `path` is executable by us (`access(path, X_OK)`).
pub fn executable(path: &str) -> bool {
    rustix::fs::access(path, rustix::fs::Access::EXEC_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_and_failure_texts() {
        assert_eq!(run_command(&["true"], None, "x"), Ok(0));
        assert_eq!(
            run_command(
                &["sh", "-c", "echo oops; echo more >&2; exit 3"],
                None,
                "shutdown"
            ),
            Err(Error::msg(format_args!(
                "child process has failed to shutdown: oops\nmore\n"
            )))
        );
        assert_eq!(
            run_command(&["sh", "-c", "exit 4"], None, "set user password"),
            Err(Error::msg(format_args!(
                "child process has failed to set user password: exit status 4"
            )))
        );
        assert_eq!(
            run_command(
                &["/nonexistent/hwclock", "-w"],
                None,
                "set hardware clock to system time"
            ),
            Err(Error::msg(format_args!(
                "child process has failed to set hardware clock to system time: failed to exec '/nonexistent/hwclock': No such file or directory\n"
            )))
        );
        assert_eq!(
            run_command(&["sh", "-c", "kill -9 $$"], None, "x"),
            Err(Error::msg(format_args!(
                "child process has terminated abnormally"
            )))
        );
    }

    #[test]
    fn input_and_session() {
        // Input reaches stdin; the child leads its own session.
        assert_eq!(
            run_command(
                &["sh", "-c", "read l; [ \"$l\" = 'user:pw' ]"],
                Some(b"user:pw\n"),
                "x"
            ),
            Ok(0)
        );
        assert_eq!(
            run_command(
                &[
                    "sh",
                    "-c",
                    "read -r p c s g sid rest < /proc/$$/stat; [ $sid -eq $$ ]"
                ],
                None,
                "x"
            ),
            Ok(0)
        );
        // Without input, stdin is /dev/null (reads EOF at once).
        assert_eq!(run_command(&["sh", "-c", "! read l"], None, "x"), Ok(0));
    }

    /// A hook script in a fresh directory, as `-F` would name it.
    fn hook(body: &str) -> (std::path::PathBuf, String) {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = crate::commands::system::tempdir();
        let path = dir.join("fsfreeze-hook");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let s = path.to_str().unwrap().to_string();
        (dir, s)
    }

    fn pid_in(file: &std::path::Path) -> i32 {
        std::fs::read_to_string(file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Whether `pid` still runs (a zombie nobody reaped yet counts as gone).
    fn running(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    }

    #[test]
    fn a_background_child_holding_stdout_does_not_hold_the_agent() {
        let (dir, h) = hook(&format!(
            "sleep 30 & echo $! > {}/bg; echo \"$1 done\"; exit 0",
            "$(dirname \"$0\")"
        ));
        assert_eq!(
            run_command(&[&h, "freeze"], None, "execute fsfreeze hook"),
            Ok(0)
        );
        // We answered while the background child still runs with the pipe open (the old
        // runner read to end of file, i.e. until it exited 30 s later).
        let bg = pid_in(&dir.join("bg"));
        assert!(
            running(bg),
            "answered only after the background child ended"
        );
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(bg).unwrap(),
            rustix::process::Signal::KILL,
        );
        // A failure still carries the output printed before the exit.
        let (_dir2, h) = hook("sleep 30 & echo oops; exit 3");
        assert_eq!(
            run_command(&[&h, "thaw"], None, "execute fsfreeze hook"),
            Err(Error::msg(format_args!(
                "child process has failed to execute fsfreeze hook: oops\n"
            )))
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn output_kept_is_capped() {
        // The error text is cut shorter still (agent_core::Error holds it inline), so the
        // cap is checked on what the runner keeps.
        let (reader, writer) = std::io::pipe().unwrap();
        let mut child = Command::new("sh")
            .args(["-c", "yes | head -c 1000000"])
            .stdout(writer)
            .spawn()
            .unwrap();
        let mut out = Vec::new();
        let st = drain_and_wait(&mut child, reader, &mut out, TIMEOUT).unwrap();
        assert!(st.is_some_and(|s| s.success()));
        assert_eq!(out.len(), MAX_OUTPUT);
        assert!(out.starts_with(b"y\ny\n"));
        // And the error text of a chatty failing helper is bounded, not a megabyte.
        let e = run_command(&["sh", "-c", "yes | head -c 1000000; exit 1"], None, "x")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("child process has failed to x: y\ny\n"),
            "{e}"
        );
    }

    #[test]
    fn a_helper_past_its_time_is_killed_with_its_group() {
        let (dir, h) = hook("sleep 30 & echo $! > \"$(dirname \"$0\")/bg\"; sleep 30");
        assert_eq!(
            run_command_within(
                &[&h, "freeze"],
                None,
                "execute fsfreeze hook",
                Duration::from_secs(1)
            ),
            Err(Error::msg(format_args!(
                "child process has failed to execute fsfreeze hook: timed out after 1 s and was killed"
            )))
        );
        let bg = pid_in(&dir.join("bg"));
        // SIGKILL to the group is delivered at once, but the reparented zombie's state
        // may take a moment to show.
        let mut tries = 0;
        while running(bg) && tries < 100 {
            std::thread::sleep(Duration::from_millis(20));
            tries += 1;
        }
        assert!(!running(bg), "the hook's background child survived");
        let _ = std::fs::remove_dir_all(dir);
    }
}
