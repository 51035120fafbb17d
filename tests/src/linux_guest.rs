//! A Linux guest under QEMU with our agent inside: the only place where the commands that change
//! a system (fsfreeze, fstrim, set-time, passwords, vCPUs, memory blocks, shutdown) may run.
//!
//! Why this shape:
//! - The guest is Debian's kernel with the initramfs of [`crate::initramfs`], booted with
//!   `-kernel/-initrd` under TCG, so a test needs no disk image and no network access, and the
//!   same image serves `cargo xtask run --linux`.
//! - Every channel is a host unix socket in a private temporary directory: the virtio-serial
//!   agent (`qga.sock`), the ISA-serial agent on the guest's ttyS1 (`isa.sock`) and QMP
//!   (`qmp.sock`), all QEMU servers with `wait=off`, as libvirt sets them up. The guest console
//!   (ttyS0) goes to `console.log`, which failure messages quote.
//! - The test disk is a sparse raw file formatted with `mkfs.ext4` on the host and attached as
//!   virtio-blk at a fixed PCI slot ([`DATA_DISK_PCI_SLOT`]) with `discard=unmap`, so fsinfo and
//!   fstrim have known, real answers. The network card is virtio-net at a fixed slot with a fixed
//!   MAC on a `restrict=on` user network: the guest has interfaces and routes to report and no
//!   way out, and nothing listens on the host.
//! - QEMU runs under a [`ProcessGuard`] (killed by PID on drop). A guest that a test keeps in a
//!   `static` is never dropped, so each guest also has a watchdog: a `sh` that blocks reading a
//!   pipe only this process holds and, when the pipe closes (this process exited, however it
//!   died), kills QEMU by its PID and removes the guest's directory. Dropping the guest stops the
//!   watchdog first, so it can never signal a recycled PID.
//! - Shutdown is observed through QMP: a `SHUTDOWN` event with `reason` `guest-shutdown`
//!   (powerdown) or `guest-reset` (reboot, which `-no-reboot` turns into an exit), followed by
//!   QEMU's exit. A halted machine does not exit: its CPUs stop, so halt is observed as the
//!   kernel's `reboot: System halted` on the console.
//!
//! Use:
//! ```no_run
//! use tests::linux_guest::{GuestImages, LinuxGuest, GuestOptions};
//! let images = GuestImages::build(std::path::Path::new("target/linux-guest"))?;
//! let mut guest = LinuxGuest::boot(&GuestOptions::new(&images, true))?;
//! let mut agent = guest.agent()?;             // virtio-serial, synced
//! agent.ping().map_err(|e| e.to_string())?;
//! let mut isa = guest.isa_agent()?;           // ISA serial, synced
//! let event = guest.qmp()?.wait_event("SHUTDOWN", std::time::Duration::from_secs(60))?;
//! # Ok::<(), String>(())
//! ```

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::initramfs::{self, InitramfsSpec, Kernel};
use crate::qemu::{
    ProcessGuard, VirtioTransport, agent_chardev, log_tail, qemu_base_command, run_logged,
    shared_memory_args, vhost_user_vsock_args,
};
use crate::vsock::VsockDaemon;
use qga_client::{Address, Client};

/// PCI slot of the virtio-net card.
pub const NET_PCI_SLOT: u32 = 3;
/// PCI slot of the virtio-serial controller.
pub const SERIAL_PCI_SLOT: u32 = 4;
/// PCI slot of the virtio-blk test disk.
pub const DATA_DISK_PCI_SLOT: u32 = 5;
/// The test disk's serial number.
pub const DATA_DISK_SERIAL: &str = "qga-data-disk";
/// The vsock context id of a guest booted with [`GuestOptions::vsock`].
pub const VSOCK_GUEST_CID: u32 = 3;
/// The guest NIC's MAC address.
pub const GUEST_MAC: &str = "52:54:00:12:34:56";

/// The kernel and the two initramfs variants the tests boot.
#[derive(Debug, Clone)]
pub struct GuestImages {
    /// The kernel (and its modules' release).
    pub kernel: Kernel,
    /// The image with `/sbin/poweroff`, `/sbin/halt` and `/sbin/reboot`.
    pub initramfs: PathBuf,
    /// The image without them (the agent must use `reboot(2)`).
    pub initramfs_no_helpers: PathBuf,
    /// The image with the helpers whose `/init` is a shell script that ignores their signals.
    pub initramfs_shell_init: PathBuf,
    /// The static agent inside both.
    pub qga: PathBuf,
}

impl GuestImages {
    /// Builds the static agent (see [`initramfs::build_static_qga`]) and both images into `dir`.
    pub fn build(dir: &Path) -> Result<Self, String> {
        let qga = initramfs::build_static_qga()?;
        Self::build_with(&qga, dir)
    }

    /// Builds both images around an existing static agent binary.
    pub fn build_with(qga: &Path, dir: &Path) -> Result<Self, String> {
        let mut spec = InitramfsSpec::new(qga, dir.join("initramfs.cpio"))?;
        let initramfs = initramfs::build_initramfs(&spec)?;
        spec.shutdown_helpers = false;
        spec.output = dir.join("initramfs-no-helpers.cpio");
        let initramfs_no_helpers = initramfs::build_initramfs(&spec)?;
        spec.shutdown_helpers = true;
        spec.shell_init = true;
        spec.output = dir.join("initramfs-shell-init.cpio");
        let initramfs_shell_init = initramfs::build_initramfs(&spec)?;
        Ok(GuestImages {
            kernel: spec.kernel,
            initramfs,
            initramfs_no_helpers,
            initramfs_shell_init,
            qga: qga.to_path_buf(),
        })
    }
}

/// How to boot a guest.
#[derive(Debug, Clone)]
pub struct GuestOptions {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: PathBuf,
    /// Guest RAM (MiB).
    pub memory_mib: u32,
    /// vCPUs.
    pub cpus: u32,
    /// Size of the ext4 test disk (MiB).
    pub disk_mib: u64,
    /// How long the guest may take from QEMU's start to both agents answering.
    pub boot_timeout: Duration,
    /// Extra kernel command-line words. The default, `movablecore=256M nokaslr`, puts the upper
    /// half of RAM in ZONE_MOVABLE so a memory block can really be taken offline (a block of the
    /// kernel's own zones holds unmovable pages, and offlining it fails with EBUSY). `nokaslr`
    /// keeps the kernel image at 16 MiB: physical KASLR puts it anywhere (seen from 108 to
    /// 392 MiB), and when it lands in block 2 no block of a 512 MiB guest can go offline
    /// (block 3 also holds the firmware's reserved top of RAM, which answers EINVAL).
    pub append: String,
    /// A virtio-vsock device with a third agent on [`initramfs::VSOCK_PORT`], reached through
    /// the hybrid socket of a `vhost-device-vsock` daemon ([`LinuxGuest::vsock_agent`]).
    /// `None` (the default) boots the `pc` machine as before. `Some(Pci)` boots `q35` with
    /// `vhost-user-vsock-pci` and the same devices otherwise. `Some(Mmio)` boots `microvm`
    /// (ACPI on, which is how Debian's kernel finds virtio-mmio devices) with every device on
    /// virtio-mmio and the console as its only serial port: there is no ISA-serial agent.
    pub vsock: Option<VirtioTransport>,
}

impl GuestOptions {
    /// The suite's defaults: 512 MiB, 2 vCPUs, a 64 MiB disk, 180 s to boot (TCG on a busy
    /// 2-core machine), with or without the shutdown helpers.
    pub fn new(images: &GuestImages, shutdown_helpers: bool) -> Self {
        GuestOptions {
            kernel: images.kernel.image.clone(),
            initrd: if shutdown_helpers {
                images.initramfs.clone()
            } else {
                images.initramfs_no_helpers.clone()
            },
            memory_mib: 512,
            cpus: 2,
            disk_mib: 64,
            boot_timeout: Duration::from_secs(180),
            append: "movablecore=256M nokaslr".to_string(),
            vsock: None,
        }
    }
}

/// A booted guest. Dropping it kills QEMU (by PID) and removes its directory.
#[derive(Debug)]
pub struct LinuxGuest {
    // Field order is drop order: the watchdog must go before QEMU is reaped.
    _watchdog: Watchdog,
    qemu: ProcessGuard,
    // After QEMU, which is its client.
    vsock: Option<VsockDaemon>,
    qmp: Option<Qmp>,
    dir: tempfile::TempDir,
    /// The virtio-serial agent's socket.
    pub virtio_socket: PathBuf,
    /// The ISA-serial agent's socket (none on `microvm`: nothing listens there).
    pub isa_socket: PathBuf,
    /// QMP.
    pub qmp_socket: PathBuf,
    /// ttyS0 output.
    pub console_log: PathBuf,
    /// The ext4 disk image.
    pub disk_image: PathBuf,
    /// From QEMU's start to both agents answering.
    pub boot_time: Duration,
}

impl LinuxGuest {
    /// Starts QEMU and waits until the guest prints its ready line and its agents (virtio-serial,
    /// ISA serial unless on `microvm`, vsock if asked for) answer a `guest-sync-delimited`; a
    /// QMP connection is opened before the guest runs far, so no event is missed.
    pub fn boot(opts: &GuestOptions) -> Result<Self, String> {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("qga-linux-guest-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let p = |n: &str| dir.path().join(n);
        let (virtio_socket, isa_socket, qmp_socket, console_log, disk_image) = (
            p("qga.sock"),
            p("isa.sock"),
            p("qmp.sock"),
            p("console.log"),
            p("data.img"),
        );
        make_ext4(
            &disk_image,
            opts.disk_mib,
            "qgadata",
            None,
            &p("mke2fs.log"),
        )?;

        let vsock = match opts.vsock {
            Some(_) => Some(VsockDaemon::start(dir.path(), VSOCK_GUEST_CID)?),
            None => None,
        };
        let microvm = opts.vsock == Some(VirtioTransport::Mmio);
        // On microvm every virtio device sits on MMIO and has no PCI slot.
        let virtio = |pci: &str, slot: u32, rest: &str| {
            if microvm {
                format!("{}-device{rest}", pci.trim_end_matches("-pci"))
            } else {
                format!("{pci}{rest},addr={slot:#x}")
            }
        };

        let mut cmd = qemu_base_command()?;
        // `no_timer_check`: under TCG on a loaded host the kernel's check that the 8254 timer
        // ticks through the IO-APIC can time out, and the kernel then panics ("IO-APIC + timer
        // doesn't work") before the agent starts; the emulated timer is fine, the check is not.
        let mut append = format!(
            "console=ttyS0 panic=-1 loglevel=4 mitigations=off no_timer_check {}",
            opts.append
        );
        let machine = match opts.vsock {
            None => "pc",
            Some(VirtioTransport::Pci) => "q35",
            Some(VirtioTransport::Mmio) => "microvm",
        };
        cmd.args(["-machine", machine, "-cpu", "max"]);
        match &vsock {
            Some(daemon) => {
                cmd.args(shared_memory_args(opts.memory_mib));
                let transport = opts.vsock.unwrap_or(VirtioTransport::Pci);
                cmd.args(vhost_user_vsock_args(daemon.vhost_socket(), transport));
                append.push_str(&format!(" qga.vsock={}", initramfs::VSOCK_PORT));
                if microvm {
                    // microvm has no HPET nor ACPI PM timer, and under TCG the kernel cannot
                    // calibrate the TSC against the PIT either: it then stalls in early boot.
                    // Give it the rates instead (the guest's clock runs off by the ratio to the
                    // real rate, which nothing here measures).
                    append.push_str(" tsc_early_khz=2000000 lpj=8000000");
                }
            }
            None => {
                cmd.args(["-m", &opts.memory_mib.to_string()]);
            }
        }
        cmd.args(["-smp", &opts.cpus.to_string()]);
        cmd.arg("-kernel")
            .arg(&opts.kernel)
            .arg("-initrd")
            .arg(&opts.initrd);
        cmd.args(["-append", append.trim()]);
        cmd.args([
            "-chardev",
            &format!("file,id=con0,path={}", console_log.display()),
            "-serial",
            "chardev:con0",
        ]);
        if !microvm {
            cmd.args([
                "-chardev",
                &agent_chardev("qga1", &isa_socket),
                "-serial",
                "chardev:qga1",
            ]);
        }
        cmd.args([
            "-device",
            &virtio("virtio-serial-pci", SERIAL_PCI_SLOT, ",id=vser0"),
        ]);
        cmd.args(["-chardev", &agent_chardev("qga0", &virtio_socket)]);
        cmd.args([
            "-device",
            "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0",
        ]);
        cmd.args([
            "-drive",
            &format!(
                "file={},format=raw,if=none,id=data,discard=unmap,cache=unsafe",
                disk_image.display()
            ),
            "-device",
            &virtio(
                "virtio-blk-pci",
                DATA_DISK_PCI_SLOT,
                &format!(",drive=data,serial={DATA_DISK_SERIAL}"),
            ),
        ]);
        cmd.args([
            "-netdev",
            "user,id=n0,restrict=on",
            "-device",
            &virtio(
                "virtio-net-pci",
                NET_PCI_SLOT,
                &format!(",netdev=n0,mac={GUEST_MAC}"),
            ),
        ]);
        cmd.args([
            "-qmp",
            &format!("unix:{},server=on,wait=off", qmp_socket.display()),
        ]);
        let qemu = ProcessGuard::spawn("qemu", cmd, p("qemu.log"))?;
        let mut pids = vec![qemu.pid()];
        if let Some(d) = &vsock {
            pids.push(d.pid());
        }
        let watchdog = Watchdog::start(&pids, dir.path())?;
        let mut guest = LinuxGuest {
            _watchdog: watchdog,
            qemu,
            vsock,
            qmp: None,
            dir,
            virtio_socket,
            isa_socket,
            qmp_socket,
            console_log,
            disk_image,
            boot_time: Duration::ZERO,
        };

        let deadline = started + opts.boot_timeout;
        crate::qemu::wait_for_path(&guest.qmp_socket, &mut guest.qemu, Duration::from_secs(30))?;
        guest.qmp = Some(
            Qmp::connect(&guest.qmp_socket, Duration::from_secs(10))
                .map_err(|e| guest.failure(&e))?,
        );
        guest.wait_console(initramfs::READY_MARKER, deadline)?;
        guest
            .agent_until(deadline)
            .map_err(|e| guest.failure(&format!("virtio-serial agent: {e}")))?;
        if !microvm {
            guest
                .isa_agent_until(deadline)
                .map_err(|e| guest.failure(&format!("ISA-serial agent: {e}")))?;
        }
        if let Some(address) = guest.vsock_address() {
            connect_synced(&address, deadline)
                .map_err(|e| guest.failure(&format!("vsock agent: {e}")))?;
        }
        guest.boot_time = started.elapsed();
        Ok(guest)
    }

    /// A new synced client on the virtio-serial agent.
    pub fn agent(&self) -> Result<Client, String> {
        self.agent_until(Instant::now() + Duration::from_secs(60))
    }

    /// A new synced client on the ISA-serial agent.
    pub fn isa_agent(&self) -> Result<Client, String> {
        self.isa_agent_until(Instant::now() + Duration::from_secs(60))
    }

    /// A new synced client on the vsock agent, through the daemon's hybrid socket.
    pub fn vsock_agent(&self) -> Result<Client, String> {
        let address = self
            .vsock_address()
            .ok_or("this guest was booted without vsock")?;
        connect_synced(&address, Instant::now() + Duration::from_secs(60))
    }

    /// The client address of the vsock agent (`vsock-uds:HYBRID_SOCKET:PORT`), if the guest has
    /// vsock.
    pub fn vsock_address(&self) -> Option<Address> {
        self.vsock
            .as_ref()
            .map(|d| d.address(initramfs::VSOCK_PORT))
    }

    /// The vsock daemon, if the guest has vsock.
    pub fn vsock_daemon(&mut self) -> Option<&mut VsockDaemon> {
        self.vsock.as_mut()
    }

    fn agent_until(&self, deadline: Instant) -> Result<Client, String> {
        connect_synced(&Address::Unix(self.virtio_socket.clone()), deadline)
    }

    fn isa_agent_until(&self, deadline: Instant) -> Result<Client, String> {
        connect_synced(&Address::Unix(self.isa_socket.clone()), deadline)
    }

    /// The QMP connection opened at boot.
    pub fn qmp(&mut self) -> Result<&mut Qmp, String> {
        self.qmp
            .as_mut()
            .ok_or_else(|| "QMP is not connected".to_string())
    }

    /// Everything the guest printed on ttyS0 so far.
    pub fn console(&self) -> String {
        std::fs::read(&self.console_log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The guest's directory (sockets, console log, disk image).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// QEMU's PID.
    pub fn pid(&self) -> u32 {
        self.qemu.pid()
    }

    /// QEMU's exit status, if it has exited.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.qemu.try_status()
    }

    /// Waits at most `within` for QEMU to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        self.qemu.wait_timeout(within)
    }

    /// Waits until the console contains `needle`, failing early if QEMU exits or the kernel
    /// panics.
    pub fn wait_console(&mut self, needle: &str, deadline: Instant) -> Result<(), String> {
        loop {
            let console = self.console();
            if console.contains(needle) {
                return Ok(());
            }
            if console.contains("Kernel panic") {
                return Err(self.failure(&format!("kernel panic while waiting for {needle:?}")));
            }
            if let Some(st) = self.qemu.try_status() {
                return Err(
                    self.failure(&format!("QEMU exited ({st}) while waiting for {needle:?}"))
                );
            }
            if Instant::now() >= deadline {
                return Err(
                    self.failure(&format!("timed out waiting for {needle:?} on the console"))
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `what`, followed by the tails of the console and of QEMU's own output: the text a failed
    /// test should show.
    pub fn failure(&self, what: &str) -> String {
        let daemon = match &self.vsock {
            Some(d) => format!(
                "\n--- vhost-device-vsock output (tail) ---\n{}",
                log_tail(d.log_path(), 2000)
            ),
            None => String::new(),
        };
        format!(
            "{what}\n--- guest console (tail) ---\n{}\n--- qemu output (tail) ---\n{}{daemon}",
            tail(&self.console(), 6000),
            log_tail(self.qemu.log_path(), 2000)
        )
    }
}

fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Connects and syncs with the 0xFF handshake, retrying (new connection each time) until the
/// agent answers or `deadline` passes: before the guest opens its end, bytes sent to the port
/// may be lost.
pub(crate) fn connect_synced(address: &Address, deadline: Instant) -> Result<Client, String> {
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        match Client::connect_to_within(address, left) {
            Ok(mut c) => {
                c.set_timeout(Duration::from_secs(3).min(left.max(Duration::from_millis(100))));
                match c.sync_delimited() {
                    Ok(()) => {
                        c.set_timeout(Duration::from_secs(60));
                        return Ok(c);
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("no answer on {address} ({last})"))
}

/// An ext4 file system of `mib` MiB in a sparse file at `image`, labelled `label`, holding a
/// copy of the tree `from` if given (`mke2fs -d`: no mount needed), with inode tables and
/// journal written now (no lazy background writes in the guest to race a freeze or a trim).
/// mke2fs's output goes to `log`; it gets 300 s.
pub fn make_ext4(
    image: &Path,
    mib: u64,
    label: &str,
    from: Option<&Path>,
    log: &Path,
) -> Result<(), String> {
    let _ = std::fs::remove_file(image);
    let f = std::fs::File::create(image)
        .map_err(|e| format!("cannot create {}: {e}", image.display()))?;
    f.set_len(mib * 1024 * 1024)
        .map_err(|e| format!("cannot size {}: {e}", image.display()))?;
    drop(f);
    let mkfs = ["/usr/sbin/mke2fs", "/sbin/mke2fs"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("mke2fs is not installed (apt-get install e2fsprogs)")?;
    let mut cmd = Command::new(mkfs);
    cmd.args([
        "-q",
        "-F",
        "-t",
        "ext4",
        "-L",
        label,
        "-E",
        "lazy_itable_init=0,lazy_journal_init=0,nodiscard",
    ]);
    if let Some(root) = from {
        cmd.arg("-d").arg(root);
    }
    cmd.arg(image);
    run_logged("mke2fs", cmd, log, Duration::from_secs(300))
}

/// Kills QEMU (and the vsock daemon) by PID and removes the guest directory if this process dies
/// without dropping the guest (see the module docs).
#[derive(Debug)]
pub(crate) struct Watchdog {
    child: Child,
    // Held only to keep the pipe open; closing it arms the watchdog.
    _stdin: ChildStdin,
}

impl Watchdog {
    pub(crate) fn start(pids: &[u32], dir: &Path) -> Result<Self, String> {
        // It ignores the signals a runner sends a whole process group (`timeout`, Ctrl-C), and
        // runs in a group of its own so that a SIGKILL to the test's group (a runner's time
        // limit) does not take it too: it outlives the test process and still cleans up when
        // the pipe closes (also processes outside the test's group, such as a libvirt QEMU).
        let script = "trap '' HUP INT TERM; read -r _ignored; d=$1; shift; kill -KILL \"$@\" 2>/dev/null; rm -rf -- \"$d\"";
        let mut child = Command::new("/bin/sh")
            .args(["-c", script, "qga-guest-watchdog"])
            .arg(dir)
            .args(pids.iter().map(u32::to_string))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start the QEMU watchdog: {e}"))?;
        let stdin = child.stdin.take().ok_or("watchdog has no stdin")?;
        Ok(Watchdog {
            child,
            _stdin: stdin,
        })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // SIGKILL by PID (our unreaped child, so the PID is still ours), then reap: it must not
        // get to run its kill after QEMU has been reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A QMP connection: commands, and the events that arrive meanwhile.
#[derive(Debug)]
pub struct Qmp {
    stream: UnixStream,
    pending: Vec<u8>,
    events: Vec<Value>,
}

impl Qmp {
    /// Connects, reads the greeting and negotiates capabilities.
    pub fn connect(path: &Path, within: Duration) -> Result<Self, String> {
        let deadline = Instant::now() + within;
        let stream = crate::qemu::connect_unix(path, within).map_err(|e| format!("QMP: {e}"))?;
        let mut q = Qmp {
            stream,
            pending: Vec::new(),
            events: Vec::new(),
        };
        let greeting = q.read_message(deadline)?;
        if greeting.get("QMP").is_none() {
            return Err(format!("unexpected QMP greeting {greeting}"));
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    fn read_message(&mut self, deadline: Instant) -> Result<Value, String> {
        loop {
            if let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=pos).collect();
                let text = String::from_utf8_lossy(&line);
                if text.trim().is_empty() {
                    continue;
                }
                return serde_json::from_str(text.trim())
                    .map_err(|e| format!("bad QMP message {text:?}: {e}"));
            }
            if !crate::qemu::read_until_deadline(&mut self.stream, &mut self.pending, deadline)
                .map_err(|e| format!("QMP {e}"))?
            {
                return Err("timed out waiting for QMP".into());
            }
        }
    }

    /// Runs a QMP command and returns its `return` value; events read meanwhile are kept.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, String> {
        let mut req = json!({"execute": command});
        if let Some(a) = arguments {
            req["arguments"] = a;
        }
        let mut text = req.to_string();
        text.push('\n');
        self.stream
            .write_all(text.as_bytes())
            .map_err(|e| format!("QMP write: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let msg = self.read_message(deadline)?;
            if msg.get("event").is_some() {
                self.events.push(msg);
            } else if let Some(r) = msg.get("return") {
                return Ok(r.clone());
            } else if let Some(e) = msg.get("error") {
                return Err(format!("QMP {command}: {e}"));
            }
        }
    }

    /// Returns (and forgets) the first event named `name`, waiting at most `within`.
    pub fn wait_event(&mut self, name: &str, within: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(i) = self
                .events
                .iter()
                .position(|e| e.get("event").and_then(Value::as_str) == Some(name))
            {
                return Ok(self.events.remove(i));
            }
            let msg = self.read_message(deadline).map_err(|e| {
                format!(
                    "waiting for QMP event {name}: {e}; events seen: {:?}",
                    self.events
                )
            })?;
            if msg.get("event").is_some() {
                self.events.push(msg);
            }
        }
    }

    /// The events received and not yet consumed.
    pub fn events(&self) -> &[Value] {
        &self.events
    }
}
