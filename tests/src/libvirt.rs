//! A private libvirt (libvirtd + virtlogd, started by the suite) driving transient QEMU domains,
//! so that a guest agent is exercised through `virsh` the way users drive it, end to end.
//!
//! Why this shape:
//! - libvirt 9.0 as root ("privileged") fixes most of its paths at build time: the QEMU driver's
//!   configuration is `/etc/libvirt/qemu.conf`, its state lives in `/run/libvirt/qemu`,
//!   `/var/lib/libvirt/qemu`, `/var/cache/libvirt/qemu` and `/var/log/libvirt/qemu`, and the QEMU
//!   driver reaches virtlogd at `/run/libvirt/virtlogd-sock`. What can be private is: the
//!   daemons' own configuration (`--config`), their PID files (`--pid-file`), their logs, and
//!   libvirtd's client sockets (`unix_sock_dir`), which `virsh -c
//!   qemu+unix:///system?socket=...` then names. So [`setup_host`] touches the machine only
//!   where libvirt leaves no choice, and says so on stderr: it creates the `libvirt-qemu` system
//!   user and group that the QEMU driver resolves at start-up even when told to run QEMU as root
//!   (Debian creates them in `libvirt-daemon-system`, which the suite does not install: it
//!   brings systemd units and a default network), and writes `/etc/libvirt/qemu.conf` (QEMU as
//!   root, no security driver, no cgroups: this machine has no systemd, no usable cgroup
//!   delegation and no AppArmor/SELinux). It refuses to overwrite a `qemu.conf` it did not write.
//! - Since `/run/libvirt` is shared, two runs of the suite at once would fight over virtlogd's
//!   socket: a run takes an exclusive `flock` on [`LOCK_FILE`] (waiting a bounded time), and
//!   refuses to start if a virtlogd it did not start answers there (a system libvirt).
//! - virtlogd and libvirtd are children of the test process, not daemons, stopped by PID
//!   (SIGTERM, then SIGKILL) when [`Libvirt`] drops, also on panic. QEMU is started by libvirtd
//!   and outlives it by design, so every domain is destroyed first. If the test process dies
//!   without dropping (SIGKILL from a runner's time limit), the guests' watchdog
//!   ([`crate::linux_guest`]: in its own process group, so a group kill does not take it too)
//!   notices its pipe closing and kills the daemons and every QEMU the run started, by PID.
//! - Domains are transient (`virsh create`): nothing is left in libvirt's configuration.
//!   Under TCG (this machine's `/dev/kvm` hangs), `q35`, direct kernel boot, the disk as
//!   virtio-blk with `discard='unmap'`, a user-mode NIC with a fixed MAC, the guest agent's
//!   virtio-serial port as a unix socket libvirt itself connects to, and ttyS0 to a file that
//!   failure messages quote.
//! - Every `virsh` run is bounded in time (killed by PID past its limit).

use std::fs::File;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::linux_guest::Watchdog;
use crate::qemu::{ProcessGuard, log_tail};

/// The file whose exclusive lock a run of the suite holds while its daemons run.
pub const LOCK_FILE: &str = "/tmp/qga-libvirt-suite.lock";
/// The QEMU driver's configuration (fixed for a privileged libvirtd).
pub const QEMU_CONF: &str = "/etc/libvirt/qemu.conf";
/// The first line of the `qemu.conf` this module writes; a file without it is not ours.
pub const QEMU_CONF_MARKER: &str =
    "# Written by the qga project's libvirt suite (tests/src/libvirt.rs).";
/// virtlogd's socket (fixed for a privileged libvirt).
pub const VIRTLOGD_SOCKET: &str = "/run/libvirt/virtlogd-sock";
/// Where libvirtd keeps the PID files of the QEMU processes it started.
pub const QEMU_STATE_DIR: &str = "/run/libvirt/qemu";
/// The prefix of every domain name this module creates.
pub const DOMAIN_PREFIX: &str = "qga-lv-";
/// The guest NIC's MAC address.
pub const GUEST_MAC: &str = "52:54:00:4c:56:01";

const QEMU_CONF_TEXT: &str = "\
# QEMU runs as root with no security driver and no cgroups: the machine that runs the suite has
# no systemd, no cgroup delegation and no AppArmor or SELinux, and the guests are throwaway.
user = \"root\"
group = \"root\"
dynamic_ownership = 0
security_driver = \"none\"
cgroup_controllers = [ ]
";

/// Makes the machine able to run a privileged libvirtd with the QEMU driver, as described in the
/// module docs; prints each change it makes (and nothing when there is nothing to do). Needs
/// root.
pub fn setup_host() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("the libvirt suite needs root (a privileged libvirtd runs QEMU)".into());
    }
    for program in ["libvirtd", "virtlogd", "virsh"] {
        crate::require::tool(
            program,
            "libvirt-daemon-driver-qemu libvirt-daemon libvirt-clients",
        )?;
    }
    if !succeeds(Command::new("getent").args(["group", "libvirt-qemu"])) {
        say("creating the system group libvirt-qemu (libvirt's QEMU driver looks it up)");
        run_checked(Command::new("groupadd").args(["--system", "libvirt-qemu"]))?;
    }
    if !succeeds(Command::new("getent").args(["passwd", "libvirt-qemu"])) {
        say("creating the system user libvirt-qemu (libvirt's QEMU driver looks it up)");
        run_checked(Command::new("useradd").args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/var/lib/libvirt",
            "--shell",
            "/usr/sbin/nologin",
            "--gid",
            "libvirt-qemu",
            "libvirt-qemu",
        ]))?;
    }
    let wanted = format!("{QEMU_CONF_MARKER}\n{QEMU_CONF_TEXT}");
    match std::fs::read_to_string(QEMU_CONF) {
        Ok(text) if text == wanted => {}
        Ok(text) if !text.starts_with(QEMU_CONF_MARKER) => {
            return Err(format!(
                "{QEMU_CONF} exists and was not written by this suite; it would have to run QEMU \
                 as root with security_driver = \"none\" and cgroup_controllers = [ ]. Move it \
                 away to let the suite write its own"
            ));
        }
        _ => {
            say(&format!(
                "writing {QEMU_CONF}: QEMU as root, security_driver \"none\", no cgroups"
            ));
            std::fs::create_dir_all("/etc/libvirt")
                .map_err(|e| format!("cannot create /etc/libvirt: {e}"))?;
            std::fs::write(QEMU_CONF, wanted)
                .map_err(|e| format!("cannot write {QEMU_CONF}: {e}"))?;
        }
    }
    Ok(())
}

fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "libvirt set-up: {line}");
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn run_checked(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// What a bounded command printed and how it ended.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// Exit code (`None`: killed by a signal, e.g. at the time limit).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CommandOutput {
    /// Whether it exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `cmd` with no stdin, killing it (by PID) after `limit`.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Result<CommandOutput, String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = reader(child.stdout.take().map(|s| Box::new(s) as _));
    let err = reader(child.stderr.take().map(|s| Box::new(s) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for {shown}: {e}")),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Some(st) => Ok(CommandOutput {
            code: st.code(),
            stdout,
            stderr,
        }),
        None => Err(format!(
            "{shown} did not finish within {limit:?} (killed); stdout: {stdout} stderr: {stderr}"
        )),
    }
}

/// The default time limit of one `virsh` run.
pub const VIRSH_LIMIT: Duration = Duration::from_secs(120);

/// A running private libvirt: virtlogd and libvirtd, stopped by PID when dropped (domains first).
#[derive(Debug)]
pub struct Libvirt {
    // The PIDs it guards (the daemons, then each domain's QEMU) and the watchdog over them,
    // replaced by a new one with the longer list each time a PID is added.
    watchdog: Mutex<(Vec<u32>, Option<Watchdog>)>,
    libvirtd: Option<ProcessGuard>,
    virtlogd: Option<ProcessGuard>,
    // Released last, after both daemons are gone.
    _lock: File,
    dir: tempfile::TempDir,
    socket: PathBuf,
    /// How long from the first daemon's start to libvirtd answering `virsh version`.
    pub start_time: Duration,
}

impl Libvirt {
    /// Takes the run lock (waiting at most `lock_wait`), sets the machine up ([`setup_host`]),
    /// starts virtlogd and libvirtd with private configuration, and waits (bounded) until
    /// libvirtd answers. Domains left by an earlier run that died are destroyed.
    pub fn start(lock_wait: Duration) -> Result<Self, String> {
        // Set-up under the lock: two runs must not create the user at the same time.
        let lock = take_lock(lock_wait)?;
        setup_host()?;
        if UnixStream::connect(VIRTLOGD_SOCKET).is_ok() {
            return Err(format!(
                "a virtlogd this suite did not start answers on {VIRTLOGD_SOCKET} (a system \
                 libvirt?); the suite needs /run/libvirt to itself: stop it first"
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("qga-libvirt-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let started = Instant::now();
        let base = dir.path().to_path_buf();
        let p = |n: &str| base.join(n);
        let write = |name: &str, text: String| {
            std::fs::write(p(name), text).map_err(|e| format!("cannot write {name}: {e}"))
        };
        write(
            "virtlogd.conf",
            format!(
                "log_outputs = \"3:file:{}\"\n",
                p("virtlogd-debug.log").display()
            ),
        )?;
        write(
            "libvirtd.conf",
            format!(
                "unix_sock_dir = \"{}\"\nunix_sock_rw_perms = \"0700\"\nauth_unix_rw = \
                 \"none\"\nauth_unix_ro = \"none\"\nlog_outputs = \"3:file:{}\"\n",
                dir.path().display(),
                p("libvirtd-debug.log").display()
            ),
        )?;
        let mut lv = Libvirt {
            watchdog: Mutex::new((Vec::new(), None)),
            libvirtd: None,
            virtlogd: None,
            _lock: lock,
            socket: p("libvirt-sock"),
            dir,
            start_time: Duration::ZERO,
        };
        lv.virtlogd = Some(lv.spawn_daemon("virtlogd")?);
        lv.wait_socket(Path::new(VIRTLOGD_SOCKET), Duration::from_secs(30))?;

        lv.libvirtd = Some(lv.spawn_daemon("libvirtd")?);
        let socket = lv.socket.clone();
        lv.wait_socket(&socket, Duration::from_secs(60))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match lv.virsh(&["version"]) {
                Ok(_) => break,
                Err(e) if Instant::now() >= deadline => {
                    return Err(lv.failure(&format!("libvirtd does not answer: {e}")));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        lv.start_time = started.elapsed();
        for name in lv.domains()? {
            if name.starts_with(DOMAIN_PREFIX) {
                say(&format!("destroying {name}, left by an earlier run"));
                let _ = lv.virsh(&["destroy", &name]);
            }
        }
        Ok(lv)
    }

    /// Start daemon `name` (virtlogd or libvirtd) on its config, PID file and log in this
    /// instance's directory, under the watchdog.
    fn spawn_daemon(&self, name: &str) -> Result<ProcessGuard, String> {
        let p = |suffix: &str| self.dir.path().join(format!("{name}.{suffix}"));
        let mut cmd = Command::new(name);
        cmd.arg("--config")
            .arg(p("conf"))
            .arg("--pid-file")
            .arg(p("pid"));
        let daemon = ProcessGuard::spawn(name, cmd, p("log"))?;
        self.note_pid(daemon.pid())?;
        Ok(daemon)
    }

    fn wait_socket(&mut self, path: &Path, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if UnixStream::connect(path).is_ok() {
                return Ok(());
            }
            let mut exited = None;
            for guard in [self.virtlogd.as_mut(), self.libvirtd.as_mut()]
                .into_iter()
                .flatten()
            {
                if let Some(st) = guard.try_status() {
                    exited = Some(format!(
                        "{} exited ({st}) before {} answered",
                        guard.name(),
                        path.display()
                    ));
                }
            }
            if let Some(what) = exited {
                return Err(self.failure(&what));
            }
            if Instant::now() >= deadline {
                return Err(self.failure(&format!(
                    "{} did not answer within {within:?}",
                    path.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Adds a PID to those the watchdog kills (and the run directory it removes) if this
    /// process dies without dropping: a new watchdog over the whole list starts before the old
    /// one is stopped, so no moment is unguarded.
    fn note_pid(&self, pid: u32) -> Result<(), String> {
        let mut guard = self.watchdog.lock().unwrap_or_else(|e| e.into_inner());
        guard.0.push(pid);
        let new = Watchdog::start(&guard.0, self.dir.path())?;
        drop(guard.1.replace(new));
        Ok(())
    }

    /// The connection URI `virsh -c` takes.
    pub fn uri(&self) -> String {
        format!("qemu+unix:///system?socket={}", self.socket.display())
    }

    /// The run's private directory (configuration, logs, sockets).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `virsh -c URI ARGS…` within `limit`, whatever its exit code.
    pub fn virsh_output(&self, args: &[&str], limit: Duration) -> Result<CommandOutput, String> {
        let mut cmd = Command::new("virsh");
        cmd.args(["-c", &self.uri()]).args(args);
        // virsh reads no user configuration that could change its output.
        cmd.env("HOME", self.dir.path())
            .env_remove("VIRSH_DEFAULT_CONNECT_URI");
        run_bounded(cmd, limit)
    }

    /// `virsh ARGS…` (within [`VIRSH_LIMIT`]); its stdout when it exits with 0.
    pub fn virsh(&self, args: &[&str]) -> Result<String, String> {
        let out = self.virsh_output(args, VIRSH_LIMIT)?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(format!(
                "virsh {} failed ({:?}): {}{}",
                args.join(" "),
                out.code,
                out.stderr.trim(),
                out.stdout.trim()
            ))
        }
    }

    /// The names of the running domains.
    pub fn domains(&self) -> Result<Vec<String>, String> {
        Ok(self
            .virsh(&["list", "--name"])?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// `what`, followed by the tails of the daemons' logs.
    pub fn failure(&self, what: &str) -> String {
        let p = |n: &str| self.dir.path().join(n);
        format!(
            "{what}\n--- libvirtd output (tail) ---\n{}\n--- libvirtd log (tail) ---\n{}\n--- \
             virtlogd output (tail) ---\n{}",
            log_tail(&p("libvirtd.log"), 1500),
            log_tail(&p("libvirtd-debug.log"), 2500),
            log_tail(&p("virtlogd.log"), 800),
        )
    }

    /// Starts a transient domain from `spec` and returns without waiting for the guest.
    pub fn create(&self, spec: &DomainSpec) -> Result<Domain<'_>, String> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{DOMAIN_PREFIX}{}-{}-{}",
            spec.label,
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let ddir = self.dir.path().join(&name);
        std::fs::create_dir_all(&ddir)
            .map_err(|e| format!("cannot create {}: {e}", ddir.display()))?;
        let console_log = ddir.join("console.log");
        let agent_socket = ddir.join("agent.sock");
        let xml = domain_xml(&name, spec, &console_log, &agent_socket)?;
        let xml_path = ddir.join("domain.xml");
        std::fs::write(&xml_path, &xml)
            .map_err(|e| format!("cannot write {}: {e}", xml_path.display()))?;
        let xml_arg = xml_path.to_string_lossy().into_owned();
        self.virsh(&["create", &xml_arg])
            .map_err(|e| self.failure(&format!("virsh create of {name}: {e}\n{xml}")))?;
        let domain = Domain {
            lv: self,
            name,
            console_log,
            agent_socket,
            created: Instant::now(),
        };
        match domain.qemu_pid() {
            Some(pid) => self.note_pid(pid)?,
            None => return Err(domain.failure("libvirt wrote no QEMU PID file")),
        }
        Ok(domain)
    }
}

impl Drop for Libvirt {
    fn drop(&mut self) {
        if let Ok(names) = self.domains() {
            for name in names {
                let _ = self.virsh_output(&["destroy", &name], Duration::from_secs(30));
            }
        }
        // The watchdog goes first: it must not act on PIDs reaped below.
        drop(
            self.watchdog
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .take(),
        );
        if let Some(mut d) = self.libvirtd.take() {
            d.terminate(Duration::from_secs(15));
        }
        if let Some(mut d) = self.virtlogd.take() {
            d.terminate(Duration::from_secs(10));
        }
    }
}

fn take_lock(within: Duration) -> Result<File, String> {
    use rustix::fs::{FlockOperation, flock};
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .map_err(|e| format!("cannot open {LOCK_FILE}: {e}"))?;
    let deadline = Instant::now() + within;
    let mut said = false;
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "another run of the libvirt suite held {LOCK_FILE} for {within:?}"
                    ));
                }
                if !said {
                    say(&format!(
                        "waiting for another run of the libvirt suite ({LOCK_FILE})"
                    ));
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(format!("cannot lock {LOCK_FILE}: {e}")),
        }
    }
}

/// What a domain boots.
#[derive(Debug, Clone)]
pub struct DomainSpec {
    /// A short word in the domain's name (e.g. the agent's name).
    pub label: String,
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: PathBuf,
    /// Kernel command line.
    pub cmdline: String,
    /// The disk (raw or qcow2, found from its header), attached as virtio-blk `vda`.
    pub disk: PathBuf,
    /// RAM (MiB).
    pub memory_mib: u32,
    /// vCPUs.
    pub vcpus: u32,
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

fn disk_format(path: &Path) -> Result<&'static str, String> {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| format!("cannot read the disk {}: {e}", path.display()))?;
    Ok(if &magic == b"QFI\xfb" { "qcow2" } else { "raw" })
}

/// The domain XML (see the module docs for why each device is there).
pub fn domain_xml(
    name: &str,
    spec: &DomainSpec,
    console_log: &Path,
    agent_socket: &Path,
) -> Result<String, String> {
    let e = |p: &Path| xml_escape(&p.to_string_lossy());
    let emulator = crate::qemu::qemu_binary().ok_or("qemu-system-x86_64 is not installed")?;
    Ok(format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{mem}</memory>
  <vcpu placement='static'>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{emulator}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='{format}' discard='unmap' cache='unsafe'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='user'>
      <mac address='{GUEST_MAC}'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='{console}'/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <source mode='bind' path='{agent}'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
",
        mem = spec.memory_mib,
        vcpus = spec.vcpus,
        kernel = e(&spec.kernel),
        initrd = e(&spec.initrd),
        cmdline = xml_escape(&spec.cmdline),
        emulator = e(&emulator),
        format = disk_format(&spec.disk)?,
        disk = e(&spec.disk),
        console = e(console_log),
        agent = e(agent_socket),
    ))
}

/// A running transient domain; dropping it destroys it.
#[derive(Debug)]
pub struct Domain<'a> {
    lv: &'a Libvirt,
    /// Its name.
    pub name: String,
    /// ttyS0 output.
    pub console_log: PathBuf,
    /// The agent channel's socket (libvirt is connected to it).
    pub agent_socket: PathBuf,
    /// When `virsh create` returned.
    pub created: Instant,
}

impl Domain<'_> {
    /// `virsh ARGS…` with this domain's name inserted after the command word.
    pub fn virsh(&self, command: &str, rest: &[&str]) -> Result<String, String> {
        let mut args = vec![command, self.name.as_str()];
        args.extend_from_slice(rest);
        self.lv.virsh(&args)
    }

    /// Like [`Domain::virsh`], whatever the exit code.
    pub fn virsh_output(&self, command: &str, rest: &[&str]) -> Result<CommandOutput, String> {
        let mut args = vec![command, self.name.as_str()];
        args.extend_from_slice(rest);
        self.lv.virsh_output(&args, VIRSH_LIMIT)
    }

    /// `virsh qemu-agent-command` with `request` (a whole `{"execute":…}` object); the `return`
    /// value.
    pub fn agent(&self, request: &Value, timeout_s: u32) -> Result<Value, String> {
        let text = request.to_string();
        let t = timeout_s.to_string();
        let out = self.virsh("qemu-agent-command", &["--timeout", &t, &text])?;
        let v: Value = serde_json::from_str(out.trim())
            .map_err(|e| format!("qemu-agent-command printed {out:?}: {e}"))?;
        v.get("return")
            .cloned()
            .ok_or_else(|| format!("qemu-agent-command {text}: no return in {v}"))
    }

    /// Runs a command in the guest through the agent (`guest-exec`, output captured) and waits
    /// at most `within` for it to end.
    pub fn exec(&self, path: &str, args: &[&str], within: Duration) -> Result<GuestExec, String> {
        let r = self.agent(
            &json!({"execute": "guest-exec",
                    "arguments": {"path": path, "arg": args, "capture-output": true}}),
            30,
        )?;
        let pid = r
            .get("pid")
            .and_then(Value::as_i64)
            .ok_or_else(|| format!("guest-exec answered {r}"))?;
        let deadline = Instant::now() + within;
        loop {
            let st = self.agent(
                &json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}),
                30,
            )?;
            if st.get("exited").and_then(Value::as_bool) == Some(true) {
                let out = qga_client::decode_exec_status(&st).map_err(|e| e.to_string())?;
                return Ok(GuestExec {
                    code: out.exitcode,
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
            if Instant::now() >= deadline {
                return Err(format!("{path} {args:?} did not end within {within:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `sh -c SCRIPT` in the guest; its stdout if it exits with 0.
    pub fn sh(&self, script: &str) -> Result<String, String> {
        let r = self.exec("/bin/sh", &["-c", script], Duration::from_secs(60))?;
        if r.code == Some(0) {
            Ok(r.stdout)
        } else {
            Err(format!(
                "guest `{script}` ended with {:?}: {}{}",
                r.code, r.stderr, r.stdout
            ))
        }
    }

    /// Waits until the agent answers `guest-ping` through libvirt, failing early if the domain
    /// goes away.
    pub fn wait_agent(&self, within: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        let deadline = start + within;
        loop {
            let ping = json!({"execute": "guest-ping"}).to_string();
            match self.virsh_output("qemu-agent-command", &["--timeout", "5", &ping]) {
                Ok(out) if out.success() => return Ok(start.elapsed()),
                Ok(out) => {
                    if !self.is_running()? {
                        return Err(self.failure(&format!(
                            "the domain went away while waiting for its agent ({})",
                            out.stderr.trim()
                        )));
                    }
                    if Instant::now() >= deadline {
                        return Err(self.failure(&format!(
                            "the agent did not answer within {within:?} ({})",
                            out.stderr.trim()
                        )));
                    }
                }
                Err(e) => return Err(self.failure(&e)),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Whether libvirt lists the domain as running.
    pub fn is_running(&self) -> Result<bool, String> {
        Ok(self.lv.domains()?.contains(&self.name))
    }

    /// Waits until libvirt no longer lists the domain; how long it took.
    pub fn wait_gone(&self, within: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        while self.is_running()? {
            if start.elapsed() >= within {
                return Err(self.failure(&format!("the domain still runs after {within:?}")));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(start.elapsed())
    }

    /// QEMU's PID, from libvirt's state directory.
    pub fn qemu_pid(&self) -> Option<u32> {
        std::fs::read_to_string(Path::new(QEMU_STATE_DIR).join(format!("{}.pid", self.name)))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Everything the guest printed on ttyS0 so far.
    pub fn console(&self) -> String {
        std::fs::read(&self.console_log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// `what`, followed by the tails of the guest console, of QEMU's log and of libvirtd's.
    pub fn failure(&self, what: &str) -> String {
        let console = self.console();
        let mut start = console.len().saturating_sub(5000);
        while !console.is_char_boundary(start) {
            start += 1;
        }
        let qemu_log = Path::new("/var/log/libvirt/qemu").join(format!("{}.log", self.name));
        self.lv.failure(&format!(
            "{what}\n--- guest console (tail) ---\n{}\n--- QEMU log (tail) ---\n{}",
            &console[start..],
            log_tail(&qemu_log, 1500)
        ))
    }
}

impl Drop for Domain<'_> {
    fn drop(&mut self) {
        if self.is_running().unwrap_or(true) {
            let _ = self
                .lv
                .virsh_output(&["destroy", &self.name], Duration::from_secs(30));
        }
    }
}

/// The outcome of a guest command run through the agent.
#[derive(Debug, Clone)]
pub struct GuestExec {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i64>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_domain_xml_escapes_paths_and_names_the_agent_port() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d&1.img");
        std::fs::write(&disk, b"QFI\xfb rest").unwrap();
        let spec = DomainSpec {
            label: "t".into(),
            kernel: "/k".into(),
            initrd: "/i".into(),
            cmdline: "console=ttyS0 a<b".into(),
            disk: disk.clone(),
            memory_mib: 512,
            vcpus: 2,
        };
        let xml = domain_xml("n", &spec, Path::new("/c"), Path::new("/s")).unwrap();
        assert!(xml.contains("d&amp;1.img"), "{xml}");
        assert!(xml.contains("type='qcow2'"), "{xml}");
        assert!(xml.contains("a&lt;b"), "{xml}");
        assert!(xml.contains("name='org.qemu.guest_agent.0'"), "{xml}");
        std::fs::write(&disk, b"raw!").unwrap();
        let xml = domain_xml("n", &spec, Path::new("/c"), Path::new("/s")).unwrap();
        assert!(xml.contains("type='raw'"), "{xml}");
    }
}
