//! Guards for the processes tests start: QEMU, host agents, helpers.
//!
//! A test that fails (or panics) half-way must still not leave a VM or an agent running on a
//! shared 2-core machine, and its failure message must say what the process printed. So every
//! child is spawned through [`ProcessGuard`]: its stdout and stderr go to a log file in the test's
//! own directory, its PID is kept, and dropping the guard kills that PID and reaps it. Waits are
//! always bounded.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use rustix::process::Signal;
use rustix::process::{Pid, kill_process};

/// A spawned child that is killed and reaped when dropped.
#[derive(Debug)]
pub struct ProcessGuard {
    name: String,
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl ProcessGuard {
    /// Spawns `cmd` with stdin from /dev/null and stdout+stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: impl Into<PathBuf>) -> Result<Self, String> {
        let log = log.into();
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("{name}: cannot open log {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{name}: cannot dup log fd: {e}"))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .map_err(|e| format!("{name}: cannot start {:?}: {e}", cmd.get_program()))?;
        Ok(Self {
            name: name.to_string(),
            pid: child.id(),
            child: Some(child),
            log,
            status: None,
        })
    }

    /// The child's PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The name given at spawn time.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the child's output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `max` bytes of the log, for failure messages.
    pub fn log_tail(&self, max: usize) -> String {
        log_tail(&self.log, max)
    }

    /// The exit status, if the child has exited (non-blocking).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Some(child) = self.child.as_mut()
            && let Ok(Some(st)) = child.try_wait()
        {
            self.status = Some(st);
        }
        self.status
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits at most `within` for the child to exit.
    pub fn wait_timeout(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.try_status() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal to the child's PID (not to a process group, never by name).
    pub fn signal(&mut self, sig: Signal) -> io::Result<()> {
        // Only while unreaped: then the PID is still our child and cannot have been recycled.
        if self.try_status().is_some() {
            return Ok(());
        }
        let pid = i32::try_from(self.pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| io::Error::other("pid out of range"))?;
        kill_process(pid, sig).map_err(io::Error::from)
    }

    /// SIGTERM, then SIGKILL if the child has not exited within `grace`; returns how it ended.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        let _ = self.signal(Signal::TERM);
        if let Some(st) = self.wait_timeout(grace) {
            return Some(st);
        }
        self.kill()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if let Some(st) = self.try_status() {
            return Some(st);
        }
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            if let Ok(st) = child.wait() {
                self.status = Some(st);
            }
        }
        self.status
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `max` bytes of a file, lossily decoded ("" if unreadable).
pub fn log_tail(path: &Path, max: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max as u64);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Waits at most `within` until `path` exists, failing early if `guard`'s process exits.
pub fn wait_for_path(
    path: &Path,
    guard: &mut ProcessGuard,
    within: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        if path.exists() {
            return Ok(());
        }
        if let Some(st) = guard.try_status() {
            return Err(format!(
                "{} exited ({st}) before {} appeared; its log:\n{}",
                guard.name(),
                path.display(),
                guard.log_tail(4000)
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not appear within {within:?}; {} log:\n{}",
                path.display(),
                guard.name(),
                guard.log_tail(4000)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Connects to the unix socket at `path` (a QEMU server that may not be listening yet),
/// retrying for at most `within`.
pub fn connect_unix(path: &Path, within: Duration) -> Result<UnixStream, String> {
    let deadline = Instant::now() + within;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("cannot connect to {}: {e}", path.display()));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Appends what `stream` has to `pending`, waiting at most until `deadline`. Returns
/// `Ok(false)` if the deadline passed with nothing read, and an error if the peer closed the
/// connection or the read failed.
pub fn read_until_deadline(
    stream: &mut UnixStream,
    pending: &mut Vec<u8>,
    deadline: Instant,
) -> Result<bool, String> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 8192];
        match stream.read(&mut buf) {
            Ok(0) => return Err("connection closed".into()),
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                return Ok(true);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// The QEMU system emulator for x86_64, if installed.
pub fn qemu_binary() -> Option<PathBuf> {
    [
        "/usr/bin/qemu-system-x86_64",
        "/usr/local/bin/qemu-system-x86_64",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// A QEMU command line with the settings every VM in this project needs: TCG (KVM hangs on
/// these machines), no display, no reboot loop, no default devices to surprise a test.
pub fn qemu_base_command() -> Result<Command, String> {
    let bin = qemu_binary().ok_or(
        "qemu-system-x86_64 is not installed (run `cargo xtask setup` or apt-get install qemu-system-x86)",
    )?;
    let mut cmd = Command::new(bin);
    cmd.args([
        "-accel",
        "tcg",
        "-display",
        "none",
        "-no-reboot",
        "-nodefaults",
    ]);
    Ok(cmd)
}

/// Options for a QEMU `socket` chardev serving the agent on a host unix socket, named `id`.
/// QEMU listens (`server=on`) and does not wait for a client (`wait=off`), as libvirt does.
pub fn agent_chardev(id: &str, socket: &Path) -> String {
    format!(
        "socket,id={id},path={},server=on,wait=off",
        socket.display()
    )
}

/// The transport a virtio device sits on: PCI (`pc`, `q35`) or MMIO (`microvm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioTransport {
    /// virtio-pci.
    Pci,
    /// virtio-mmio.
    Mmio,
}

/// Guest RAM of `memory_mib` MiB in a shared memfd (`-m` included: do not pass another one).
///
/// vhost-user devices (the vsock daemon of [`crate::vsock`]) map guest RAM into their own
/// process, which only works for shared memory: without `share=on` QEMU starts, but the daemon
/// cannot reach the virtqueues and every vsock connection is reset.
pub fn shared_memory_args(memory_mib: u32) -> Vec<String> {
    vec![
        "-m".into(),
        format!("{memory_mib}M"),
        "-object".into(),
        format!("memory-backend-memfd,id=mem,size={memory_mib}M,share=on"),
        "-machine".into(),
        "memory-backend=mem".into(),
    ]
}

/// A virtio-vsock device served by the vhost-user daemon listening on `vhost_socket` (see
/// [`crate::vsock::VsockDaemon`]), as `vhost-user-vsock-pci` or, for `microvm`,
/// `vhost-user-vsock-device`. The guest also needs [`shared_memory_args`].
pub fn vhost_user_vsock_args(vhost_socket: &Path, transport: VirtioTransport) -> Vec<String> {
    let device = match transport {
        VirtioTransport::Pci => "vhost-user-vsock-pci",
        VirtioTransport::Mmio => "vhost-user-vsock-device",
    };
    vec![
        "-chardev".into(),
        format!("socket,id=vhu-vsock,path={}", vhost_socket.display()),
        "-device".into(),
        format!("{device},chardev=vhu-vsock"),
    ]
}

/// Runs `cmd` with its output appended to `log`, for at most `within` (then kills it by PID).
pub fn run_logged(name: &str, cmd: Command, log: &Path, within: Duration) -> Result<(), String> {
    let mut g = ProcessGuard::spawn(name, cmd, log)?;
    match g.wait_timeout(within) {
        Some(st) if st.success() => Ok(()),
        Some(st) => Err(format!(
            "{name} failed ({st}); its output ({}) ends:\n{}",
            log.display(),
            g.log_tail(4000)
        )),
        None => {
            g.kill();
            Err(format!(
                "{name} did not finish within {within:?}; its output ({}) ends:\n{}",
                log.display(),
                g.log_tail(4000)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_kills_and_reaps_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        let g = ProcessGuard::spawn("sleep", cmd, dir.path().join("log")).unwrap();
        let pid = g.pid();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(g);
        // Reaped, so the PID is gone (a zombie would still have a /proc entry).
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn guard_captures_output_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let mut g = ProcessGuard::spawn("sh", cmd, dir.path().join("log")).unwrap();
        let st = g.wait_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(st.code(), Some(3));
        let log = g.log_tail(100);
        assert!(log.contains("out") && log.contains("err"), "{log}");
    }

    #[test]
    fn terminate_escalates_to_kill() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "trap '' TERM; echo ready; exec sleep 600"]);
        let mut g = ProcessGuard::spawn("sh", cmd, dir.path().join("log")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !g.log_tail(100).contains("ready") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let st = g.terminate(Duration::from_millis(200)).unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGKILL));
    }
}
