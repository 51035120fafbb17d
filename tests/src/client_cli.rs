//! The `qga-client` command, run as a user runs it: a built executable, a child process, its
//! exit status and its two output streams, each run bounded in time.
//!
//! The suites check the command against the same agents they check the library against (host
//! agents, the bare-metal image, the Linux guest), so what the README promises about `exec`'s
//! decoded output and exit status is tested where it matters: at the process boundary.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::host_agent::cargo_build_bin;

/// The `qga-client` executable (a debug build, built once per process).
pub fn binary() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        cargo_build_bin(
            &["-p", "qga-client", "--bin", "qga-client"],
            "qga-client",
            &[],
        )
    })
    .clone()
}

/// What one run of the command did.
#[derive(Debug, Clone)]
pub struct CliRun {
    /// The exit status code (`None` if a signal ended it).
    pub status: Option<i32>,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
}

impl CliRun {
    /// Standard output as text (lossy).
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text (lossy).
    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs `qga-client ARGS…` with `stdin` as its standard input, killing it (by PID) if it has not
/// finished within `within`.
pub fn run(args: &[&str], stdin: &[u8], within: Duration) -> Result<CliRun, String> {
    let bin = binary()?;
    let mut child = Command::new(&bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let feed = {
        let mut pipe = child.stdin.take();
        let data = stdin.to_vec();
        std::thread::spawn(move || {
            if let Some(p) = pipe.as_mut() {
                let _ = std::io::Write::write_all(p, &data);
            }
        })
    };
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().ok_or("no stdout pipe")?));
    let err = drain(Box::new(child.stderr.take().ok_or("no stderr pipe")?));
    let deadline = Instant::now() + within;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "qga-client {} did not finish within {within:?}",
                    args.join(" ")
                ));
            }
            Err(e) => return Err(format!("waiting for qga-client: {e}")),
        }
    };
    let _ = feed.join();
    Ok(CliRun {
        status: status.code(),
        stdout: out.join().map_err(|_| "stdout reader panicked")?,
        stderr: err.join().map_err(|_| "stderr reader panicked")?,
    })
}
