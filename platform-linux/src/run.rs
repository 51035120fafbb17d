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

#![allow(
    clippy::result_large_err,
    reason = "agent_core::Error holds its message inline, by design: no allocation"
)]

use std::io::{Read as _, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Stdio};

use agent_core::Error;

/// Run `argv` (searched in `PATH` when `argv[0]` has no slash) and wait for it. `action`
/// completes upstream's `child process has failed to <action>` text. Returns the exit status.
pub fn run_command(argv: &[&str], input: Option<&[u8]>, action: &str) -> Result<i32, Error> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(Error::msg(format_args!(
            "child process has failed to {action}: no command"
        )));
    };
    let (mut reader, writer) = std::io::pipe().map_err(|e| pipe_error(&e))?;
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
    let _ = reader.read_to_end(&mut out);
    let status = child.wait().map_err(|e| {
        Error::msg(format_args!(
            "failed to wait for child process: {}",
            crate::config::io_text(&e)
        ))
    })?;
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
}
