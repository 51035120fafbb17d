//! `guest-exec` and `guest-exec-status` on Linux.
//!
//! upstream's semantics (GLib's `g_spawn_async_with_pipes`): `path` is searched in the `PATH`
//! of the new environment when `env` is given (else the agent's, else `/bin:/usr/bin:.`),
//! `argv[0]` is `path` as given, `env` replaces the environment, `input-data` is written to a
//! stdin pipe that is then closed (stdin is `/dev/null` otherwise), and `capture-output`
//! chooses which of stdout and stderr go to pipes (`merged` sends stderr into the stdout pipe)
//! and which to `/dev/null`. A spawn failure is GLib's text as master sends it, curly quotes
//! included ("Failed to execute child process “/bin/nope” (No such file or directory)"), so
//! that clients matching master's text keep working.
//!
//! The agent reads the output as it arrives, from its event loop (`poll_fds` and `service`),
//! so a child never blocks on a full pipe, however much it writes: up to 16 MiB per stream is
//! kept and the rest is read and dropped, setting `*-truncated`. Input is fed the same way, so
//! a child that reads slowly does not block the agent. Children are reaped on SIGCHLD, so none
//! stays a zombie. A status reports `exited: true` once the child is reaped and its output
//! pipes are closed; that status forgets the process, and later queries answer `PID <n> does
//! not exist` (master's format string lacks the `%`, so master literally says "PID ld does not
//! exist"). Beyond upstream, each child runs in a session of its own, so it does not share the
//! agent's controlling terminal or receive signals meant for the agent's process group.
//!
//! Also beyond upstream, which keeps every process until its status is read: at most
//! [`MAX_PROCS`] processes, running or finished and unread, are kept (the next `guest-exec`
//! fails with a text that says so), and a finished process whose status nobody read within
//! [`RESULT_TTL`] is forgotten, its output with it. Each entry can hold 2 × 16 MiB of output
//! plus its input, so without both limits a client that never asks grows the agent's memory
//! without end. 512 leaves room for any real client (libvirt and Proxmox read each status as
//! they go); ten minutes is far longer than any client waits between two status polls.

#![allow(
    clippy::result_large_err,
    reason = "agent_core::Error holds its message inline, by design: no allocation"
)]

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};

use agent_core::commands::Base64;
use agent_core::commands::exec::{CaptureMode, Exec, ExecArgs, GuestExecStatus, MAX_OUTPUT};
use agent_core::{Error, Result};
use rustix::event::PollFlags;
use rustix::io::Errno;
use rustix::process::{Pid, WaitOptions};

/// The most processes kept, running or finished with their status unread.
pub const MAX_PROCS: usize = 512;
/// How long a finished process's status waits to be read before it is forgotten.
pub const RESULT_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// Bytes read from one pipe per wake-up, so that one chatty child cannot starve the channel.
const READ_BUDGET: usize = 1 << 20;

#[derive(Debug, Default)]
struct Stream {
    fd: Option<OwnedFd>,
    data: Vec<u8>,
    truncated: bool,
}

impl Stream {
    fn pipe(fd: OwnedFd) -> Stream {
        let _ = rustix::io::ioctl_fionbio(&fd, true);
        Stream {
            fd: Some(fd),
            data: Vec::new(),
            truncated: false,
        }
    }

    /// Read what is there now through `scratch`, keeping at most MAX_OUTPUT bytes.
    fn drain(&mut self, scratch: &mut [u8]) {
        let Some(fd) = &self.fd else { return };
        let mut budget = READ_BUDGET;
        while budget > 0 {
            match rustix::io::read(fd, &mut *scratch) {
                Ok(0) => {
                    self.fd = None;
                    return;
                }
                Ok(n) => {
                    let keep = n.min(MAX_OUTPUT - self.data.len());
                    self.data.extend_from_slice(&scratch[..keep]);
                    if keep < n {
                        self.truncated = true;
                    }
                    budget = budget.saturating_sub(n);
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return,
                Err(_) => {
                    self.fd = None;
                    return;
                }
            }
        }
    }

    fn open(&self) -> bool {
        self.fd.is_some()
    }
}

#[derive(Debug)]
struct Input {
    fd: OwnedFd,
    data: Vec<u8>,
    written: usize,
}

#[derive(Debug)]
struct Proc {
    pid: Pid,
    /// The wait status once reaped.
    status: Option<rustix::process::WaitStatus>,
    out: Option<Stream>,
    err: Option<Stream>,
    input: Option<Input>,
    /// When the process was seen finished (reaped, pipes closed).
    finished_at: Option<std::time::Instant>,
}

impl Proc {
    fn finished(&self) -> bool {
        self.status.is_some()
            && !self.out.as_ref().is_some_and(Stream::open)
            && !self.err.as_ref().is_some_and(Stream::open)
    }

    fn feed_input(&mut self) {
        let Some(inp) = &mut self.input else { return };
        loop {
            let rest = inp.data.get(inp.written..).unwrap_or_default();
            if rest.is_empty() {
                self.input = None; // closes the pipe: EOF for the child
                return;
            }
            match rustix::io::write(&inp.fd, rest) {
                Ok(n) => inp.written += n,
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return,
                Err(_) => {
                    self.input = None;
                    return;
                }
            }
        }
    }
}

/// Running and finished-but-unreported programs, by pid.
#[derive(Debug)]
pub struct LinuxExec {
    procs: BTreeMap<i64, Proc>,
    /// The process whose final status is being answered (its buffers are borrowed by it).
    reported: Option<Proc>,
    /// How long an unread final status is kept ([`RESULT_TTL`]; shorter in tests).
    result_ttl: std::time::Duration,
    /// The read buffer for children's output ([`SCRATCH_SIZE`]), allocated when a first child
    /// runs: as a local array it made the service loop's stack frame 64 KiB, and stack probes
    /// touch every page of a frame on entry, so an agent that never ran a program held 64 KiB
    /// more resident memory (issue 17).
    scratch: Option<Box<[u8]>>,
}

/// Bytes read from a child's pipe at a time.
const SCRATCH_SIZE: usize = 64 * 1024;

impl Default for LinuxExec {
    fn default() -> Self {
        LinuxExec {
            procs: BTreeMap::new(),
            reported: None,
            result_ttl: RESULT_TTL,
            scratch: None,
        }
    }
}

/// The spawn error as GLib words it.
fn spawn_error(path: &str, errno: i32) -> Error {
    Error::msg(format_args!(
        "Failed to execute child process \u{201C}{path}\u{201D} ({})",
        crate::config::strerror(errno)
    ))
}

/// GLib's program search: a name with a slash is used as is; otherwise each directory of the
/// chosen search path is tried, and EACCES is reported if a match was found but not executable.
fn resolve(path: &str, env: Option<&[(String, String)]>) -> std::result::Result<PathBuf, i32> {
    if path.contains('/') {
        return Ok(PathBuf::from(path));
    }
    if path.is_empty() {
        return Err(libc::ENOENT);
    }
    let from_env = env.and_then(|e| {
        e.iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
    });
    let search = from_env
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_else(|| "/bin:/usr/bin:.".to_string());
    let mut denied = false;
    for dir in search.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = PathBuf::from(dir).join(path);
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if rustix::fs::access(&candidate, rustix::fs::Access::EXEC_OK).is_ok() {
            return Ok(candidate);
        }
        denied = true;
    }
    Err(if denied { libc::EACCES } else { libc::ENOENT })
}

impl LinuxExec {
    /// The fds the event loop should poll for this family: output pipes for reading, input
    /// pipes for writing.
    pub fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        let mut v = Vec::new();
        for p in self.procs.values() {
            for s in [&p.out, &p.err].into_iter().flatten() {
                if let Some(fd) = &s.fd {
                    v.push((fd.as_fd(), PollFlags::IN));
                }
            }
            if let Some(i) = &p.input {
                v.push((i.fd.as_fd(), PollFlags::OUT));
            }
        }
        v
    }

    /// Move pending I/O along and reap exited children (never blocks).
    pub fn service(&mut self) {
        static IS_INIT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if *IS_INIT.get_or_init(|| std::process::id() == 1) {
            self.reap_all();
        }
        // Disjoint fields: the buffer is borrowed while the processes are.
        let scratch = &mut self.scratch;
        for p in self.procs.values_mut() {
            p.feed_input();
            let scratch = scratch.get_or_insert_with(|| vec![0u8; SCRATCH_SIZE].into_boxed_slice());
            for s in [&mut p.out, &mut p.err].into_iter().flatten() {
                s.drain(scratch);
            }
            if p.status.is_none()
                && let Ok(Some((_, st))) =
                    rustix::process::waitpid(Some(p.pid), WaitOptions::NOHANG)
            {
                p.status = Some(st);
                // Drop stdin if the child never read it all.
                p.input = None;
            }
        }
        self.expire();
    }

    /// Note when processes finished, and forget those whose status went unread too long.
    fn expire(&mut self) {
        // This runs on every turn of the event loop: without children, do not read the clock
        // (in a guest whose clock source is the HPET, as under TCG, each read is an exit to
        // the hypervisor, a cost every request would pay).
        if self.procs.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let ttl = self.result_ttl;
        self.procs.retain(|pid, p| {
            if p.finished_at.is_none() && p.finished() {
                p.finished_at = Some(now);
            }
            let keep = p.finished_at.is_none_or(|t| now.duration_since(t) < ttl);
            if !keep {
                crate::log!(
                    crate::log::Level::Info,
                    "guest-exec: forgetting the status of pid {pid}, unread for {} s",
                    ttl.as_secs()
                );
            }
            keep
        });
    }
}

impl LinuxExec {
    /// As PID 1 (an initramfs whose init is `qga`), orphans are re-parented to us: reap every
    /// exited child, keeping the status of the ones `guest-exec` started. Helpers run by
    /// [`crate::run::run_command`] are waited for before the event loop runs again, so none
    /// is taken from them.
    fn reap_all(&mut self) {
        while let Ok(Some((pid, st))) = rustix::process::wait(WaitOptions::NOHANG) {
            if let Some(p) = self.procs.get_mut(&i64::from(pid.as_raw_nonzero().get())) {
                p.status = Some(st);
                p.input = None;
            }
        }
    }
}

impl Exec for LinuxExec {
    fn exec(&mut self, args: ExecArgs<'_>) -> Result<i64> {
        crate::log!(
            crate::log::Level::Info,
            "guest-exec called: \"{}\"",
            args.path
        );
        let env: Option<Vec<(String, String)>> = args.env.as_ref().map(|list| {
            list.iter()
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .collect()
        });
        self.service();
        if self.procs.len() >= MAX_PROCS {
            return Err(Error::msg(format_args!(
                "guest-exec: {MAX_PROCS} processes are running or have a status nobody read, the agent's limit; read their status with guest-exec-status"
            )));
        }
        let program = resolve(args.path, env.as_deref()).map_err(|e| spawn_error(args.path, e))?;
        let mut cmd = Process::new(&program);
        cmd.arg0(args.path);
        if let Some(list) = &args.arg {
            cmd.args(list.iter());
        }
        if let Some(env) = &env {
            cmd.env_clear();
            cmd.envs(env.iter().map(|(k, v)| (k, v)));
        }
        cmd.stdin(if args.input_data.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut merged_reader = None;
        match args.capture {
            CaptureMode::None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
            CaptureMode::Stdout => {
                cmd.stdout(Stdio::piped()).stderr(Stdio::null());
            }
            CaptureMode::Stderr => {
                cmd.stdout(Stdio::null()).stderr(Stdio::piped());
            }
            CaptureMode::Separated => {
                cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
            CaptureMode::Merged => {
                let (r, w) = std::io::pipe()
                    .map_err(|e| spawn_error(args.path, e.raw_os_error().unwrap_or(libc::EIO)))?;
                let w2 = w
                    .try_clone()
                    .map_err(|e| spawn_error(args.path, e.raw_os_error().unwrap_or(libc::EIO)))?;
                cmd.stdout(w).stderr(w2);
                merged_reader = Some(OwnedFd::from(r));
            }
        }
        crate::sys::process::new_session_on_spawn(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| spawn_error(args.path, e.raw_os_error().unwrap_or(libc::EIO)))?;
        drop(cmd); // our copies of the merged pipe's write end
        let pid = child.id();
        let out = child
            .stdout
            .take()
            .map(|s| Stream::pipe(OwnedFd::from(s)))
            .or_else(|| merged_reader.map(Stream::pipe));
        let err = child.stderr.take().map(|s| Stream::pipe(OwnedFd::from(s)));
        let input = match (child.stdin.take(), args.input_data) {
            (Some(s), Some(data)) => {
                let fd = OwnedFd::from(s);
                let _ = rustix::io::ioctl_fionbio(&fd, true);
                Some(Input {
                    fd,
                    data: data.to_vec(),
                    written: 0,
                })
            }
            _ => None,
        };
        // The Child handle is dropped without waiting: `service` reaps by pid.
        drop(child);
        let Some(rpid) = Pid::from_raw(pid as i32) else {
            return Err(spawn_error(args.path, libc::ESRCH));
        };
        let mut proc = Proc {
            pid: rpid,
            status: None,
            out,
            err,
            input,
            finished_at: None,
        };
        proc.feed_input();
        self.procs.insert(i64::from(pid), proc);
        crate::log!(crate::log::Level::Info, "guest-exec, pid: {pid}");
        Ok(i64::from(pid))
    }

    fn status(&mut self, pid: i64) -> Result<GuestExecStatus<'_>> {
        crate::log!(
            crate::log::Level::Info,
            "guest-exec-status called, pid: {pid}"
        );
        self.service();
        let Some(p) = self.procs.get(&pid) else {
            return Err(Error::msg(format_args!("PID {pid} does not exist")));
        };
        if !p.finished() {
            return Ok(GuestExecStatus {
                exited: false,
                ..Default::default()
            });
        }
        self.reported = self.procs.remove(&pid);
        let Some(p) = &self.reported else {
            return Err(Error::msg(format_args!("PID {pid} does not exist")));
        };
        let mut st = GuestExecStatus {
            exited: true,
            ..Default::default()
        };
        if let Some(ws) = &p.status {
            if let Some(code) = ws.exit_status() {
                st.exitcode = Some(i64::from(code));
            } else if let Some(sig) = ws.terminating_signal() {
                st.signal = Some(i64::from(sig));
            }
        }
        if let Some(s) = &p.out
            && !s.data.is_empty()
        {
            st.out_data = Some(Base64(&s.data));
            st.out_truncated = Some(s.truncated);
        }
        if let Some(s) = &p.err
            && !s.data.is_empty()
        {
            st.err_data = Some(Base64(&s.data));
            st.err_truncated = Some(s.truncated);
        }
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_true(e: &mut LinuxExec) -> i64 {
        e.exec(ExecArgs {
            path: "/bin/true",
            arg: None,
            env: None,
            input_data: None,
            capture: CaptureMode::None,
        })
        .unwrap()
    }

    #[test]
    fn unread_results_are_forgotten_after_their_time() {
        let mut e = LinuxExec {
            result_ttl: std::time::Duration::from_millis(300),
            ..LinuxExec::default()
        };
        let old = run_true(&mut e);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        // Wait until it is seen finished, then past the time.
        while e.procs.get(&old).is_some_and(|p| p.finished_at.is_none()) {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(10));
            e.service();
        }
        std::thread::sleep(std::time::Duration::from_millis(400));
        let fresh = run_true(&mut e);
        assert_eq!(
            e.status(old).unwrap_err(),
            Error::msg(format_args!("PID {old} does not exist"))
        );
        // A result read in time is answered.
        while !e.status(fresh).unwrap().exited {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn search_like_glib() {
        assert_eq!(resolve("/bin/sh", None), Ok(PathBuf::from("/bin/sh")));
        assert!(resolve("sh", None).unwrap().ends_with("sh"));
        assert_eq!(resolve("no-such-program-qga", None), Err(libc::ENOENT));
        assert_eq!(resolve("", None), Err(libc::ENOENT));
        let env = vec![("PATH".to_string(), "/nonexistent".to_string())];
        assert_eq!(resolve("sh", Some(&env)), Err(libc::ENOENT));
        let env = vec![("HOME".to_string(), "/".to_string())];
        assert!(
            resolve("sh", Some(&env)).is_ok(),
            "falls back to the agent's PATH"
        );
        assert_eq!(
            spawn_error("/bin/invalid-cmd42", libc::ENOENT),
            Error::msg(format_args!(
                "Failed to execute child process \u{201C}/bin/invalid-cmd42\u{201D} (No such file or directory)"
            ))
        );
    }
}
