//! The harness the platform-linux integration tests share: the real `qga` binary started in
//! `unix-listen` mode in a temporary directory of its own, with every command that changes the
//! system blocked (`-b`: the host runs as root), and killed by PID when its guard is dropped,
//! also when a test fails.
#![allow(dead_code, reason = "each test file uses its own part of the harness")]

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Commands that change the host: never run them here.
pub const BLOCKED: &str = "guest-shutdown,guest-suspend-disk,guest-suspend-ram,guest-suspend-hybrid,\
guest-set-time,guest-set-user-password,guest-fsfreeze-freeze,guest-fsfreeze-freeze-list,\
guest-fsfreeze-thaw,guest-fstrim,guest-set-vcpus,guest-set-memory-blocks,\
guest-ssh-add-authorized-keys,guest-ssh-remove-authorized-keys";

/// The binary under test.
pub const QGA: &str = env!("CARGO_BIN_EXE_qga");

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "qga-agent-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process killed by PID on drop.
pub struct Proc(pub Option<Child>);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Wait for the exit, at most `limit`.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.0.as_mut()?;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.0 = None;
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The command line of an agent in `dir` (socket, state directory and working directory),
/// with an empty config file and stderr to `dir/stderr`.
pub fn agent_command(dir: &Path, extra: &[&str]) -> Command {
    let sock = dir.join("sock");
    let conf = dir.join("empty.conf");
    if !conf.exists() {
        std::fs::write(&conf, "").unwrap();
    }
    let mut cmd = Command::new(QGA);
    cmd.arg("-m")
        .arg("unix-listen")
        .arg("-p")
        .arg(&sock)
        .arg("-t")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-b")
        .arg(BLOCKED)
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap());
    cmd
}

/// Waits (at most 10 s) until the agent accepts connections on `sock`.
pub fn wait_for_socket(sock: &Path, proc: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(sock).is_err() {
        if let Some(st) = proc.wait_timeout(Duration::ZERO) {
            panic!("qga exited early: {st}");
        }
        assert!(
            Instant::now() < deadline,
            "qga did not listen on {}",
            sock.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
