//! The bare-metal image (`platform-x86`): build it, boot it in QEMU, talk to it, measure it.
//!
//! Used by `tests/tests/baremetal*.rs` and by `cargo xtask run` (which boots this image by
//! default) and `cargo xtask` reports:
//!
//! - [`build_image`] runs cargo for `x86_64-unknown-none` (profile `image` for release) and
//!   returns the ELF; it says exactly how to install the target if it is missing.
//! - [`qemu_command`] is the QEMU command line for an image and a [`BootOptions`]: `-kernel`
//!   (PVH), `-accel tcg`, the agent channel on a host unix socket (a QEMU `socket` server with
//!   `wait=off`, as libvirt sets it up), the image's debug log on the other COM port into a file,
//!   and `isa-debug-exit` for the self-tests.
//! - [`BareMetalVm`] boots one under a [`ProcessGuard`] (killed by PID when dropped) and hands
//!   out synced [`Client`]s.
//! - [`report`] builds the release image and prints its size, its static memory (`.data` +
//!   `.bss`, with the large buffers named from the link map), the stack high-water mark and
//!   the boot-to-first-answer time under TCG.
//!
//! The command line for a manual run (COM1 transport; see [`qemu_command`] for virtio):
//! ```text
//! CARGO_PROFILE_IMAGE_OPT_LEVEL=z \
//!   cargo build -p platform-x86 --bin qga-x86 --target x86_64-unknown-none --profile image
//! qemu-system-x86_64 -accel tcg -M q35 -m 128 -display none -nodefaults -no-reboot \
//!   -kernel target/x86_64-unknown-none/image/qga-x86 -append qga.transport=com1 \
//!   -chardev socket,id=qga0,path=/tmp/qga.sock,server=on,wait=off -serial chardev:qga0 \
//!   -serial file:/tmp/qga-x86.log -device isa-debug-exit,iobase=0xf4,iosize=0x04
//! ```
//! ([`qemu_command`] also adds `-qmp unix:<dir>/qmp.sock,server=on,wait=off`.)

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::host_agent::cargo_build_bin;
use crate::linux_guest::Qmp;
use crate::paths::workspace_root;
use crate::qemu::{
    ProcessGuard, VirtioTransport, agent_chardev, log_tail, qemu_binary, vhost_user_vsock_args,
    wait_for_path,
};
use crate::vsock::VsockDaemon;
use qga_client::{Address, Client, ClientError};

/// The Rust target the image is built for.
pub const TARGET: &str = "x86_64-unknown-none";
/// The image's binary name.
pub const IMAGE_BIN: &str = "qga-x86";
/// The virtio-serial port name the image serves.
pub const VIRTIO_PORT_NAME: &str = "org.qemu.guest_agent.0";
/// QEMU's exit status when the image's self-tests all passed (isa-debug-exit value 0x10).
pub const SELFTEST_PASSED: i32 = 33;
/// QEMU's exit status when a self-test failed (value 0x11).
pub const SELFTEST_FAILED: i32 = 35;

/// Which channel carries the agent protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The first ISA 16550 (the log goes to COM2).
    Com1,
    /// The second ISA 16550 (the log goes to COM1).
    Com2,
    /// A virtio-serial port named `org.qemu.guest_agent.0` (the log goes to COM1).
    Virtio,
    /// A virtio socket device (vhost-user, served by `vhost-device-vsock`), the image
    /// listening on [`VSOCK_PORT`]; the host reaches it through the daemon's hybrid-vsock
    /// socket (the log goes to COM1).
    Vsock,
}

/// The vsock port the image listens on by default.
pub const VSOCK_PORT: u32 = 1234;
/// The guest CID the tests give the vsock device.
pub const VSOCK_CID: u32 = 3;

impl Transport {
    /// The image's `qga.transport=` value.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Com1 => "com1",
            Transport::Com2 => "com2",
            Transport::Virtio => "virtio",
            Transport::Vsock => "vsock",
        }
    }
}

/// The QEMU machine type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// i440FX + PIIX.
    Pc,
    /// Q35 + ICH9.
    Q35,
    /// QEMU's `microvm`: no PCI, virtio over MMIO, an ISA serial port.
    Microvm,
}

impl Machine {
    /// QEMU's `-M` value.
    pub fn name(self) -> &'static str {
        match self {
            Machine::Pc => "pc",
            Machine::Q35 => "q35",
            Machine::Microvm => "microvm",
        }
    }
}

/// How to boot the image.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// Machine type.
    pub machine: Machine,
    /// Agent channel.
    pub transport: Transport,
    /// Host socket QEMU listens on for the agent channel (for vsock: the daemon's
    /// hybrid-vsock socket, set when the daemon starts).
    pub agent_socket: PathBuf,
    /// For vsock: the vhost-user socket between the daemon and QEMU (set likewise).
    pub vhost_socket: PathBuf,
    /// File the image's debug log (the other COM port) goes to.
    pub log: PathBuf,
    /// Host socket of QEMU's QMP monitor (events tell a guest power-off from a reset).
    pub qmp_socket: PathBuf,
    /// Add `-no-reboot` (a guest reset then ends QEMU).
    pub no_reboot: bool,
    /// RAM in MiB.
    pub memory_mib: u32,
    /// Number of vCPUs.
    pub cpus: u32,
    /// Extra kernel command line words (e.g. `qga.hostname=x`, `qga.selftest`).
    pub append: String,
    /// Put the virtio-serial controller behind a PCIe root port (q35 only), as libvirt and
    /// KubeVirt lay out q35 machines; QEMU then makes it a modern-only device.
    pub pcie_root_port: bool,
    /// `microvm` only: ACPI tables on (QEMU's default; the image then probes microvm's
    /// virtio-mmio window) or off (QEMU lists the devices on the kernel command line).
    pub acpi: bool,
    /// `microvm` only: modern (version 2) virtio-mmio transports instead of QEMU 7.2's
    /// default legacy ones (`-global virtio-mmio.force-legacy=false`).
    pub mmio_modern: bool,
}

impl BootOptions {
    /// Defaults: 128 MiB, 1 vCPU, `-no-reboot`, sockets in `dir`.
    pub fn new(machine: Machine, transport: Transport, dir: &Path) -> Self {
        BootOptions {
            machine,
            transport,
            agent_socket: dir.join("qga.sock"),
            vhost_socket: dir.join("vhost-vsock.sock"),
            log: dir.join("qga-x86.log"),
            qmp_socket: dir.join("qmp.sock"),
            no_reboot: true,
            memory_mib: 128,
            cpus: 1,
            append: String::new(),
            pcie_root_port: false,
            acpi: true,
            mmio_modern: false,
        }
    }
}

/// The image is built at `opt-level = "z"` (smallest): it keeps the release image under
/// 128 KiB, where the workspace's `image` profile (`"s"`) lands a few KiB over.
pub const IMAGE_OPT_LEVEL: (&str, &str) = ("CARGO_PROFILE_IMAGE_OPT_LEVEL", "z");

/// Whether the `x86_64-unknown-none` standard library is installed for the active toolchain.
pub fn target_installed() -> Result<bool, String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run {rustc} --print sysroot: {e}"))?;
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .join("lib")
        .is_dir())
}

/// Build the image; `release` selects the size-optimised `image` profile (else `dev`).
pub fn build_image(release: bool) -> Result<PathBuf, String> {
    if !target_installed()? {
        return Err(format!(
            "the Rust target {TARGET} is not installed for this toolchain, so the bare-metal \
             image cannot be built: run `rustup target add {TARGET}` (`cargo xtask setup` does it)"
        ));
    }
    let profile = if release { "image" } else { "dev" };
    cargo_build_bin(
        &[
            "-p",
            "platform-x86",
            "--bin",
            IMAGE_BIN,
            "--target",
            TARGET,
            "--profile",
            profile,
        ],
        IMAGE_BIN,
        &[IMAGE_OPT_LEVEL],
    )
}

/// A release image built with build-time settings `envs` (e.g. `QGA_HOSTNAME`), in its own
/// target directory `target_dir` so that it does not disturb the default image.
pub fn build_image_with(envs: &[(&str, &str)], target_dir: &Path) -> Result<PathBuf, String> {
    if !target_installed()? {
        return Err(format!(
            "the Rust target {TARGET} is not installed: run `rustup target add {TARGET}`"
        ));
    }
    let dir = target_dir.to_string_lossy().into_owned();
    let mut all: Vec<(&str, &str)> = vec![IMAGE_OPT_LEVEL, ("CARGO_TARGET_DIR", &dir)];
    all.extend_from_slice(envs);
    cargo_build_bin(
        &[
            "-p",
            "platform-x86",
            "--bin",
            IMAGE_BIN,
            "--target",
            TARGET,
            "--profile",
            "image",
        ],
        IMAGE_BIN,
        &all,
    )
}

/// The release image, built once per process.
pub fn release_image() -> Result<PathBuf, String> {
    static IMAGE: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| build_image(true)).clone()
}

/// The QEMU command line that boots `image` as `opts` says (not started).
///
/// COM1 transport: `-serial chardev:qga0 -serial file:<log>`; COM2: the other way round;
/// virtio: `-device virtio-serial-pci -device virtserialport,chardev=qga0,
/// name=org.qemu.guest_agent.0` with the log on COM1 (the controller behind a
/// `pcie-root-port` if [`BootOptions::pcie_root_port`]; on `microvm`,
/// `virtio-serial-device`, its virtio-mmio form).
pub fn qemu_command(image: &Path, opts: &BootOptions) -> Result<Command, String> {
    let bin = qemu_binary().ok_or(
        "qemu-system-x86_64 is not installed (run `cargo xtask setup` or apt-get install qemu-system-x86)",
    )?;
    Ok(qemu_command_for(&bin, image, opts))
}

/// [`qemu_command`] with the QEMU executable given: the command line alone, which does not
/// depend on QEMU being installed.
pub fn qemu_command_for(qemu: &Path, image: &Path, opts: &BootOptions) -> Command {
    let mut cmd = Command::new(qemu);
    cmd.args(["-accel", "tcg", "-display", "none", "-nodefaults"]);
    let mut machine = opts.machine.name().to_string();
    if opts.machine == Machine::Microvm {
        if !opts.acpi {
            machine.push_str(",acpi=off");
        }
        if opts.mmio_modern {
            cmd.args(["-global", "virtio-mmio.force-legacy=false"]);
        }
    }
    cmd.args(["-M", &machine]);
    cmd.args([
        "-m",
        &opts.memory_mib.to_string(),
        "-smp",
        &opts.cpus.to_string(),
    ]);
    if opts.no_reboot {
        cmd.arg("-no-reboot");
    }
    cmd.arg("-kernel").arg(image);
    let mut append = format!("qga.transport={}", opts.transport.name());
    if !opts.append.is_empty() {
        append.push(' ');
        append.push_str(&opts.append);
    }
    cmd.args(["-append", &append]);
    let log = format!("file:{}", opts.log.display());
    if opts.transport == Transport::Vsock {
        // vhost-user needs the guest RAM shared with the daemon.
        let bus = match opts.machine {
            Machine::Microvm => VirtioTransport::Mmio,
            _ => VirtioTransport::Pci,
        };
        cmd.args([
            "-object",
            &format!(
                "memory-backend-memfd,id=mem,size={}M,share=on",
                opts.memory_mib
            ),
            "-machine",
            "memory-backend=mem",
            "-serial",
            &log,
        ]);
        cmd.args(vhost_user_vsock_args(&opts.vhost_socket, bus));
    } else {
        cmd.args(["-chardev", &agent_chardev("qga0", &opts.agent_socket)]);
    }
    match opts.transport {
        Transport::Vsock => &mut cmd,
        Transport::Com1 => cmd.args(["-serial", "chardev:qga0", "-serial", &log]),
        Transport::Com2 => cmd.args(["-serial", &log, "-serial", "chardev:qga0"]),
        Transport::Virtio if opts.machine == Machine::Microvm => cmd.args([
            "-serial",
            &log,
            "-device",
            "virtio-serial-device,id=vser0",
            "-device",
            &format!("virtserialport,bus=vser0.0,chardev=qga0,name={VIRTIO_PORT_NAME}"),
        ]),
        Transport::Virtio => {
            let controller = if opts.pcie_root_port {
                cmd.args(["-device", "pcie-root-port,id=rp1,bus=pcie.0,chassis=1"]);
                "virtio-serial-pci,id=vser0,bus=rp1"
            } else {
                "virtio-serial-pci,id=vser0"
            };
            cmd.args([
                "-serial",
                &log,
                "-device",
                controller,
                "-device",
                &format!("virtserialport,bus=vser0.0,chardev=qga0,name={VIRTIO_PORT_NAME}"),
            ])
        }
    };
    cmd.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    cmd.args([
        "-qmp",
        &format!("unix:{},server=on,wait=off", opts.qmp_socket.display()),
    ]);
    cmd
}

/// A running image under QEMU, killed when dropped (QEMU first, then the vsock daemon).
#[derive(Debug)]
pub struct BareMetalVm {
    guard: ProcessGuard,
    daemon: Option<VsockDaemon>,
    /// The options it was booted with.
    pub opts: BootOptions,
    /// When QEMU was started.
    pub started: Instant,
    _dir: Option<tempfile::TempDir>,
}

impl BareMetalVm {
    /// Boot the release image with `opts` (its sockets and logs in a fresh temporary
    /// directory, which `opts` paths are re-rooted into).
    pub fn boot(
        machine: Machine,
        transport: Transport,
        configure: impl FnOnce(&mut BootOptions),
    ) -> Result<Self, String> {
        let image = release_image()?;
        let dir = tempfile::Builder::new()
            .prefix("qga-x86-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let mut opts = BootOptions::new(machine, transport, dir.path());
        configure(&mut opts);
        let mut vm = Self::boot_image(&image, opts)?;
        vm._dir = Some(dir);
        Ok(vm)
    }

    /// Boot `image` with `opts` as given.
    pub fn boot_image(image: &Path, opts: BootOptions) -> Result<Self, String> {
        if opts.transport != Transport::Vsock {
            return Self::start(image, opts, None);
        }
        // vhost-device-vsock 0.3.0 now and then never delivers any host connection to a freshly
        // booted image (about one boot in ten with several VMs starting at once on this
        // machine): a CONNECT read after QEMU handed it the guest's memory but before the
        // receive queue is set up makes its only epoll worker thread end on an `IterateQueue`
        // error, silently (the vsock driver's notes have the evidence). Such a boot is
        // detected by its first connection and replaced, at most twice, saying so on stderr
        // with the daemon's thread count (one fewer than a working daemon's); a third hang
        // fails.
        let dir = opts.log.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut last = String::new();
        for attempt in 1..=3 {
            let sub = dir.join(format!("vsock-{attempt}"));
            std::fs::create_dir_all(&sub).map_err(|e| format!("mkdir {}: {e}", sub.display()))?;
            let d = VsockDaemon::start(&sub, VSOCK_CID)?;
            let mut o = opts.clone();
            o.agent_socket = d.hybrid_socket().to_path_buf();
            o.vhost_socket = d.vhost_socket().to_path_buf();
            let vm = Self::start(image, o, Some(d))?;
            match Client::connect_to_within(&vm.address(), Duration::from_secs(10)) {
                Ok(_) => return Ok(vm),
                Err(e) => {
                    last = format!("{e}; log:\n{}", vm.log());
                    let threads = vm
                        .daemon
                        .as_ref()
                        .and_then(|d| std::fs::read_dir(format!("/proc/{}/task", d.pid())).ok())
                        .map_or(0, |t| t.count());
                    eprintln!(
                        "baremetal: boot {attempt}: no vsock connection delivered within 10 s \
                         (vhost-device-vsock has {threads} threads: its epoll worker ended, see \
                         platform-x86's vsock driver notes); booting again"
                    );
                }
            }
        }
        Err(format!("three boots, no vsock connection: {last}"))
    }

    fn start(image: &Path, opts: BootOptions, daemon: Option<VsockDaemon>) -> Result<Self, String> {
        let cmd = qemu_command(image, &opts)?;
        let qemu_log = opts.log.with_extension("qemu.log");
        let started = Instant::now();
        let mut guard = ProcessGuard::spawn("qemu (bare metal)", cmd, qemu_log)?;
        wait_for_path(&opts.agent_socket, &mut guard, Duration::from_secs(20))?;
        Ok(BareMetalVm {
            guard,
            daemon,
            opts,
            started,
            _dir: None,
        })
    }

    /// A QMP connection to this VM's QEMU.
    pub fn qmp(&self) -> Result<Qmp, String> {
        Qmp::connect(&self.opts.qmp_socket, Duration::from_secs(10))
    }

    /// QEMU's PID.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// The agent's address as `qga-client` takes it.
    pub fn address(&self) -> Address {
        match self.opts.transport {
            Transport::Vsock => Address::VsockUds {
                path: self.opts.agent_socket.clone(),
                port: VSOCK_PORT,
            },
            _ => Address::Unix(self.opts.agent_socket.clone()),
        }
    }

    /// A raw connection (not synced; over vsock a fresh connection, retried while the image
    /// boots).
    pub fn connect(&self) -> Result<Client, String> {
        Client::connect_to_within(&self.address(), Duration::from_secs(20))
            .map_err(|e| format!("connect: {e}"))
    }

    /// A connection synced with the 0xFF handshake, retried until the image answers (at most
    /// `within`). Over a UART, bytes sent before the image set the UART up are lost, hence
    /// the retries.
    pub fn client_within(&mut self, within: Duration) -> Result<Client, String> {
        let mut c = self
            .connect()
            .map_err(|e| format!("{e}; log:\n{}", self.log()))?;
        let deadline = Instant::now() + within;
        c.set_timeout(Duration::from_millis(500));
        loop {
            match c.sync_delimited() {
                Ok(()) => break,
                Err(ClientError::Timeout(_)) if Instant::now() < deadline => {
                    if let Some(st) = self.guard.try_status() {
                        return Err(format!("QEMU exited ({st}); log:\n{}", self.log()));
                    }
                }
                Err(e) => return Err(format!("sync with the image: {e}; log:\n{}", self.log())),
            }
        }
        c.set_timeout(Duration::from_secs(20));
        Ok(c)
    }

    /// A synced connection (waiting up to 30 s for the image).
    pub fn client(&mut self) -> Result<Client, String> {
        self.client_within(Duration::from_secs(30))
    }

    /// The image's debug log and QEMU's (and the vsock daemon's) own output.
    pub fn log(&self) -> String {
        let daemon = self
            .daemon
            .as_ref()
            .map(|_| {
                let log = self
                    .opts
                    .agent_socket
                    .with_file_name("vhost-device-vsock.log");
                format!("\n--- vhost-device-vsock ---\n{}", log_tail(&log, 2000))
            })
            .unwrap_or_default();
        format!(
            "--- image log ---\n{}\n--- qemu ---\n{}{daemon}",
            log_tail(&self.opts.log, 6000),
            self.guard.log_tail(2000)
        )
    }

    /// QEMU's exit status if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.guard.try_status()
    }

    /// Wait at most `within` for QEMU to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        self.guard.wait_timeout(within)
    }
}

/// Boot the image's self-tests on `machine` and return QEMU's exit code and the image's log.
pub fn run_selftest(machine: Machine) -> Result<(Option<i32>, String), String> {
    let mut vm = BareMetalVm::boot(machine, Transport::Com1, |o| {
        o.append = "qga.selftest".into()
    })?;
    let st = vm.wait_exit(Duration::from_secs(60));
    Ok((st.and_then(|s| s.code()), vm.log()))
}

/// Host wall time from starting QEMU to the first answer of the agent on `transport`.
pub fn measure_first_answer(machine: Machine, transport: Transport) -> Result<Duration, String> {
    let mut vm = BareMetalVm::boot(machine, transport, |_| {})?;
    let _client = vm.client()?;
    Ok(vm.started.elapsed())
}

/// Pings timed by [`measure_transport`].
pub const PINGS: u32 = 200;
/// The file [`measure_transport`] reads back.
pub const FILE_BYTES: usize = 192 * 1024;

/// Boot on `machine` with the agent on `transport`: QEMU start to first answer, the time of
/// [`PINGS`] sequential pings, and `guest-file-read` throughput (MiB/s) over a
/// [`FILE_BYTES`] file read in 48 KiB requests five times. A figure for the benchmark
/// report, not a check.
pub fn measure_transport(
    machine: Machine,
    transport: Transport,
) -> Result<(Duration, Duration, f64), String> {
    let mut vm = BareMetalVm::boot(machine, transport, |_| {})?;
    let mut c = vm.client()?;
    let first = vm.started.elapsed();
    let t = Instant::now();
    for _ in 0..PINGS {
        c.ping().map_err(|e| format!("ping: {e}"))?;
    }
    let pings = t.elapsed();
    let data: Vec<u8> = (0..FILE_BYTES).map(|i| (i % 251) as u8).collect();
    c.push(&data, "/bench", 45_000)
        .map_err(|e| format!("push: {e}"))?;
    let t = Instant::now();
    for _ in 0..5 {
        let back = c
            .pull("/bench", 48 * 1024)
            .map_err(|e| format!("pull: {e}"))?;
        if back != data {
            return Err("the file read back differs".into());
        }
    }
    let mib_s = (5 * FILE_BYTES) as f64 / (1024.0 * 1024.0) / t.elapsed().as_secs_f64();
    Ok((first, pings, mib_s))
}

/// One line of the link map: an input section's size and owning symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    /// Output section (`.data` or `.bss`).
    pub section: String,
    /// The symbol, demangled to a Rust path without the hash.
    pub symbol: String,
    /// Bytes.
    pub size: u64,
}

/// Demangle a legacy Rust symbol (`_ZN12platform_x865image4BOOT17h…E` → `platform_x86::image::BOOT`).
pub fn demangle(sym: &str) -> String {
    let Some(mut rest) = sym.strip_prefix("_ZN") else {
        return sym.to_string();
    };
    let mut parts = Vec::new();
    while let Some(digits_end) = rest.find(|c: char| !c.is_ascii_digit()) {
        let Ok(n) = rest[..digits_end].parse::<usize>() else {
            break;
        };
        let Some(part) = rest.get(digits_end..digits_end + n) else {
            break;
        };
        rest = &rest[digits_end + n..];
        if part.len() == 17
            && part.starts_with('h')
            && part[1..].chars().all(|c| c.is_ascii_hexdigit())
        {
            break;
        }
        parts.push(part.to_string());
    }
    if parts.is_empty() {
        sym.to_string()
    } else {
        parts.join("::")
    }
}

/// The `.data`/`.bss` input sections of an lld `-Map` file.
pub fn parse_map(map: &str) -> Vec<MapEntry> {
    let mut out = Vec::new();
    let mut section = String::new();
    for line in map.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() == 5 && cols[4].starts_with('.') {
            section = cols[4].to_string();
            continue;
        }
        if cols.len() < 5 || !(section == ".data" || section == ".bss") {
            continue;
        }
        let Ok(size) = u64::from_str_radix(cols[2], 16) else {
            continue;
        };
        let desc = cols[4..].join(" ");
        let Some(open) = desc.rfind(":(") else {
            continue;
        };
        let inner = desc[open + 2..].trim_end_matches(')');
        let sym = inner
            .trim_start_matches(".bss.")
            .trim_start_matches(".data.rel.ro.")
            .trim_start_matches(".data.");
        out.push(MapEntry {
            section: section.clone(),
            symbol: demangle(sym),
            size,
        });
    }
    out
}

/// Section sizes of an ELF64 file by name.
pub fn elf_sections(elf: &[u8]) -> Result<Vec<(String, u64)>, String> {
    let rd16 = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let rd64 = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    let rd32 = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
    };
    if elf.get(..5) != Some(b"\x7fELF\x02") {
        return Err("not an ELF64 file".into());
    }
    let bad = || "truncated ELF".to_string();
    let shoff = rd64(0x28).ok_or_else(bad)? as usize;
    let shentsize = rd16(0x3a).ok_or_else(bad)?;
    let shnum = rd16(0x3c).ok_or_else(bad)?;
    let shstrndx = rd16(0x3e).ok_or_else(bad)?;
    let strtab_off = rd64(shoff + shstrndx * shentsize + 0x18).ok_or_else(bad)? as usize;
    let mut out = Vec::new();
    for i in 0..shnum {
        let h = shoff + i * shentsize;
        let name_off = rd32(h).ok_or_else(bad)? as usize;
        let size = rd64(h + 0x20).ok_or_else(bad)?;
        let name_bytes = elf.get(strtab_off + name_off..).ok_or_else(bad)?;
        let end = name_bytes.iter().position(|&b| b == 0).unwrap_or(0);
        out.push((
            String::from_utf8_lossy(&name_bytes[..end]).into_owned(),
            size,
        ));
    }
    Ok(out)
}

/// The link map written next to `image` by the build script (the newest one).
pub fn link_map(image: &Path) -> Option<PathBuf> {
    let dir = image.parent()?.join("build");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("platform-x86-"))
        .map(|e| e.path().join("out").join("qga-x86.map"))
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

/// The figures: image size, static memory with the large buffers named, stack high-water mark
/// and boot-to-first-answer times under TCG (COM1 on `pc`, virtio on `q35`, virtio-console
/// and vsock on `microvm`, vsock on `q35`; vsock's includes the hybrid-vsock handshake).
pub fn report() -> Result<String, String> {
    let image = release_image()?;
    let bytes = std::fs::read(&image).map_err(|e| format!("read {}: {e}", image.display()))?;
    let mut r = String::new();
    let _ = writeln!(r, "image: {}", image.display());
    let _ = writeln!(
        r,
        "release image size: {} bytes ({:.1} KiB; target < 128 KiB)",
        bytes.len(),
        bytes.len() as f64 / 1024.0
    );
    let sections = elf_sections(&bytes)?;
    let size_of = |n: &str| {
        sections
            .iter()
            .filter(|s| s.0 == n)
            .map(|s| s.1)
            .sum::<u64>()
    };
    let (text, rodata, data, bss) = (
        size_of(".text"),
        size_of(".rodata"),
        size_of(".data"),
        size_of(".bss"),
    );
    let _ = writeln!(r, ".text {text} B, .rodata {rodata} B");
    let _ = writeln!(
        r,
        "static memory: .data {data} B + .bss {bss} B = {} B ({:.1} KiB)",
        data + bss,
        (data + bss) as f64 / 1024.0
    );
    if let Some(map) = link_map(&image).and_then(|p| std::fs::read_to_string(p).ok()) {
        let mut entries = parse_map(&map);
        entries.sort_by_key(|e| std::cmp::Reverse(e.size));
        for e in entries.iter().filter(|e| e.size >= 1024) {
            let _ = writeln!(r, "  {:>8} B  {:<5} {}", e.size, e.section, e.symbol);
        }
    }
    let mut vm = BareMetalVm::boot(Machine::Q35, Transport::Virtio, |_| {})?;
    let mut c = vm.client()?;
    let boot = vm.started.elapsed();
    // Exercise a few commands first so the high-water mark covers real work.
    let _ = c.info();
    let _ = c.push(&vec![0x5a; 60_000], "/report", 45_000);
    let _ = c.pull("/report", 48 * 1024);
    let stack = c
        .run("stack", &[], Duration::from_secs(10))
        .map_err(|e| format!("stack: {e}"))?;
    let _ = write!(r, "{}", String::from_utf8_lossy(&stack.stdout));
    let _ = writeln!(
        r,
        "boot to first answer (TCG, q35, virtio): {:.0} ms",
        boot.as_secs_f64() * 1000.0
    );
    drop(c);
    drop(vm);
    let com1 = measure_first_answer(Machine::Pc, Transport::Com1)?;
    let _ = writeln!(
        r,
        "boot to first answer (TCG, pc, COM1): {:.0} ms",
        com1.as_secs_f64() * 1000.0
    );
    for (machine, transport, what) in [
        (
            Machine::Microvm,
            Transport::Virtio,
            "microvm, virtio-console over MMIO",
        ),
        (
            Machine::Microvm,
            Transport::Vsock,
            "microvm, vsock over MMIO (goal <= 100 ms)",
        ),
        (Machine::Q35, Transport::Vsock, "q35, vsock over PCI"),
        (
            Machine::Q35,
            Transport::Virtio,
            "q35, virtio-console over PCI",
        ),
    ] {
        let (t, pings, mib_s) = measure_transport(machine, transport)?;
        let _ = writeln!(
            r,
            "{what}: boot to first answer {:.0} ms; ping round trip {:.2} ms (mean of {PINGS}); \
             guest-file-read {mib_s:.2} MiB/s ({} KiB in 48 KiB reads, 5 times)",
            t.as_secs_f64() * 1000.0,
            pings.as_secs_f64() * 1000.0 / PINGS as f64,
            FILE_BYTES / 1024
        );
    }
    Ok(r)
}

/// The workspace's `platform-x86` directory.
pub fn crate_dir() -> PathBuf {
    workspace_root().join("platform-x86")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangles_legacy_symbols() {
        assert_eq!(
            demangle("_ZN12platform_x865image4BOOT17h36efd8fa21001842E"),
            "platform_x86::image::BOOT"
        );
        assert_eq!(demangle("plain"), "plain");
    }

    #[test]
    fn parses_lld_maps() {
        let map = "\
             VMA              LMA     Size Align Out     In      Symbol
          10ce80           10ce80    4cd50    16 .data
          10d020           10d020    41018     8         x.o:(.data._ZN12platform_x865image10FILE_STORE17h1442ce192333c1f4E)
          15a000           15a000    3f010  4096 .bss
          15a000           15a000    10000    16         x.o:(.bss._ZN12platform_x865image13AGENT_BUFFERS17h0000000000000000E)
";
        let e = parse_map(map);
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0],
            MapEntry {
                section: ".data".into(),
                symbol: "platform_x86::image::FILE_STORE".into(),
                size: 0x41018
            }
        );
        assert_eq!(e[1].symbol, "platform_x86::image::AGENT_BUFFERS");
        assert_eq!(e[1].section, ".bss");
    }

    #[test]
    fn command_lines() {
        // The command line alone, so that this check runs whether or not QEMU is installed.
        let o = BootOptions::new(Machine::Q35, Transport::Virtio, Path::new("/tmp/x"));
        let cmd = qemu_command_for(
            Path::new("/usr/bin/qemu-system-x86_64"),
            Path::new("/img"),
            &o,
        );
        assert_eq!(cmd.get_program(), "/usr/bin/qemu-system-x86_64");
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let line = args.join(" ");
        assert!(line.contains("-accel tcg"), "{line}");
        assert!(line.contains("-kernel /img"), "{line}");
        assert!(line.contains("name=org.qemu.guest_agent.0"), "{line}");
        assert!(line.contains("-append qga.transport=virtio"), "{line}");
    }
}
