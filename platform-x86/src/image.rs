//! The image's main program: gather the boot facts, pick the transport, run the agent.
//!
//! Order matters for boot-to-first-answer time: the start info is copied first (the loader's
//! copy is in unreserved RAM), the log UART comes up so every later step can report, the TSC
//! is calibrated over 10 ms of PIT, ACPI is read, and the agent starts. Nothing waits for the
//! RTC to tick ([`crate::commands::clock`] re-anchors later).
//!
//! All large state lives in `static`s taken exactly once ([`crate::state`]). The agent loop
//! polls the transport and, once it has been quiet for a moment, halts until the next timer
//! tick ([`crate::hw::interrupts`]); interrupts are enabled only for that halt.

use agent_core::out::{Transmit, TxError};
use agent_core::{Agent, Command};

use crate::commands::{self, Machine};
use crate::config::{Config, LogTarget, Transport};
use crate::hw::{self, acpi, halt, tsc, uart, virtio};
use crate::state::{ACPI, AGENT_BUFFERS, BOOT, FILE_STORE, PROCESSES};

/// Sends on a UART.
struct SerialLink<'a>(&'a mut uart::Uart);

impl Transmit for SerialLink<'_> {
    fn send(&mut self, bytes: &[u8]) -> Result<(), TxError> {
        self.0.write_all(bytes);
        Ok(())
    }
}

/// Sends on the virtio-console's agent port.
struct VirtioLink<'a, T: virtio::Transport>(&'a mut virtio::console::Console<T>);

impl<T: virtio::Transport> Transmit for VirtioLink<'_, T> {
    fn send(&mut self, bytes: &[u8]) -> Result<(), TxError> {
        self.0.send(bytes).map_err(|_| TxError)
    }
}

/// Sends on the vsock connection.
struct VsockLink<'a, T: virtio::Transport>(&'a mut virtio::vsock::Vsock<T>);

impl<T: virtio::Transport> Transmit for VsockLink<'_, T> {
    fn send(&mut self, bytes: &[u8]) -> Result<(), TxError> {
        self.0.send(bytes).map_err(|_| TxError)
    }
}

/// Apply `qga.block=` to the engine's policy.
pub fn apply_block_list(agent: &mut Agent<'_>, list: &str) {
    for name in list.split(',').filter(|s| !s.is_empty()) {
        match Command::from_name(name) {
            Some(cmd) => agent.policy_mut().block(cmd),
            None => crate::log!("qga.block: unknown command {name}"),
        }
    }
}

/// Everything after the boot code published the loader's facts ([`BOOT`]): configuration,
/// devices, transport, agent loop, with the built-in programs
/// ([`crate::programs::BUILTINS`]). Never returns.
pub fn run() -> ! {
    run_with(crate::programs::BUILTINS)
}

/// [`run`] with the programs `guest-exec` may start: a firmware built on this crate passes the
/// built-ins plus its own routines (see [`crate::commands::exec::Programs::register`]).
pub fn run_with(programs: commands::exec::Programs) -> ! {
    let boot = BOOT.get();
    let cmdline = boot.map(|b| b.cmdline()).unwrap_or("");
    let config = Config::built_in()
        .apply(crate::config::BUILD_CMDLINE)
        .apply(cmdline);

    // The debug log goes to the COM port the agent does not use.
    let log_port = match (config.log, config.transport) {
        (LogTarget::Off, _) => None,
        (LogTarget::Com1, _) => Some(uart::COM1),
        (LogTarget::Com2, _) => Some(uart::COM2),
        (LogTarget::Auto, Transport::Com1) => Some(uart::COM2),
        (LogTarget::Auto, _) => Some(uart::COM1),
    };
    let agent_port = match config.transport {
        Transport::Com2 => Some(uart::COM2),
        Transport::Com1 => Some(uart::COM1),
        _ => None,
    };
    if let Some(p) = log_port.filter(|&p| Some(p) != agent_port)
        && uart::Uart::open(p).is_some()
    {
        hw::log::set_port(p);
    }
    crate::log!("booted, command line: \"{cmdline}\"");

    tsc::calibrate(10);
    ACPI.call_once(|| acpi::discover(boot.and_then(|b| b.rsdp)));
    let acpi = ACPI.get();
    if let Some(a) = acpi {
        crate::log!(
            "ACPI: FADT {}, _S5 {}, {} processor(s)",
            if a.fadt.is_some() { "found" } else { "missing" },
            if a.s5.is_some() { "found" } else { "missing" },
            a.cpus().len()
        );
    }

    let idling = hw::interrupts::init();
    if !idling {
        crate::log!("idle: no local APIC timer, polling without pause");
    }

    if config.crash {
        hw::interrupts::invalid_opcode();
    }

    if config.selftest {
        let ok = crate::selftest::run(&config);
        if ok {
            hw::exit::success();
        } else {
            hw::exit::failure();
        }
        halt();
    }

    let (Some(files), Some(procs), Some(bufs)) =
        (FILE_STORE.take(), PROCESSES.take(), AGENT_BUFFERS.take())
    else {
        crate::log!("static state already taken");
        halt();
    };
    *procs.programs_mut() = programs;
    let empty = acpi::Info::empty();
    let acpi = acpi.unwrap_or(&empty);
    let mut machine = Machine {
        clock: commands::clock::RtcClock::start(acpi.fadt.and_then(|f| f.century)),
        power: commands::power::AcpiPower::new(acpi.fadt, acpi.s5),
        files,
        cpus: commands::cpus::MadtCpus::new(acpi.cpus(), acpi.madt),
        memory: commands::memory::MapMemory::new(boot.map(|b| b.regions()).unwrap_or(&[])),
        system: commands::system::ConfiguredSystem::new(config),
        exec: procs,
        users: commands::users::NoUsers,
        network: commands::network::NoNetwork,
        disks: commands::disks::NoDisks,
    };
    let mut agent = bufs.agent();
    apply_block_list(&mut agent, config.block);

    // Transport: vsock, then the virtio console, when asked (or, on auto, when the device
    // exists), else a UART.
    if matches!(config.transport, Transport::Vsock | Transport::Auto) {
        let vsock = virtio::bus::find(virtio::bus::VSOCK, cmdline)
            .and_then(|b| virtio::vsock::Vsock::open(b, config.vsock_port));
        match vsock {
            Ok(mut vsock) => {
                let (bus, at) = vsock.transport().describe();
                crate::log!(
                    "agent on vsock port {} (CID {}, {bus} {at:#x})",
                    vsock.port(),
                    vsock.cid()
                );
                serve_vsock(&mut agent, &mut machine, &mut vsock);
            }
            Err(e) => crate::log!("vsock: {}", e.as_str()),
        }
    }
    let want_virtio = matches!(config.transport, Transport::Virtio | Transport::Auto);
    if want_virtio {
        let console = virtio::bus::find(virtio::bus::CONSOLE, cmdline)
            .and_then(virtio::console::Console::open);
        match console {
            Ok(mut console) => {
                let (bus, at) = console.transport().describe();
                crate::log!("agent on virtio-console ({bus} {at:#x})");
                serve_virtio(&mut agent, &mut machine, &mut console);
            }
            Err(e) => crate::log!("virtio-console: {}", e.as_str()),
        }
    }
    let port = agent_port.unwrap_or(uart::COM1);
    match uart::Uart::open(port) {
        Some(mut u) => {
            crate::log!("agent on UART {port:#x}");
            serve_serial(&mut agent, &mut machine, &mut u, port);
        }
        None => {
            crate::log!("no UART at {port:#x}: nothing to serve on");
            halt();
        }
    }
}

/// Poll for the RTC tick at most this often.
const CLOCK_POLL_MS: u64 = 1;
/// Keep polling this long after the last received byte before halting between timer ticks:
/// a request arriving in pieces is then read without the tick's latency.
const BUSY_MS: u64 = 2;

/// When the loop spins and when it halts.
struct IdlePolicy {
    /// The transport interrupts when data arrives: halt at once when there is none.
    wake_on_data: bool,
    last_busy: u64,
    last_clock: u64,
    clock_every: u64,
    busy_for: u64,
}

impl IdlePolicy {
    fn new() -> Self {
        let now = tsc::rdtsc();
        let ms = tsc::hz() / 1000;
        IdlePolicy {
            wake_on_data: false,
            last_busy: now,
            last_clock: now,
            clock_every: ms * CLOCK_POLL_MS,
            busy_for: ms * BUSY_MS,
        }
    }

    fn busy(&mut self) {
        self.last_busy = tsc::rdtsc();
    }

    /// Nothing arrived: watch the RTC now and then, and halt until the next tick once the
    /// transport has been quiet for [`BUSY_MS`].
    fn pause(&mut self, machine: &mut Machine<'_>) {
        let now = tsc::rdtsc();
        if now.wrapping_sub(self.last_clock) > self.clock_every {
            machine.clock.poll();
            self.last_clock = tsc::rdtsc();
        }
        if self.wake_on_data || now.wrapping_sub(self.last_busy) > self.busy_for {
            hw::interrupts::wait();
        } else {
            core::hint::spin_loop();
        }
    }
}

fn serve_serial(
    agent: &mut Agent<'_>,
    machine: &mut Machine<'_>,
    u: &mut uart::Uart,
    port: u16,
) -> ! {
    let mut buf = [0u8; 512];
    let mut idle = IdlePolicy::new();
    // With the UART's receive interrupt the loop halts as soon as the FIFO is empty and wakes
    // when bytes arrive, instead of spinning against the QEMU thread that delivers them.
    let irq = if port == uart::COM1 { 4 } else { 3 };
    if hw::interrupts::enable_isa_irq(irq) {
        u.enable_rx_interrupt();
        idle.wake_on_data = true;
    }
    loop {
        let n = u.read(&mut buf);
        if n > 0 {
            let _ = agent.feed(buf.get(..n).unwrap_or(&[]), machine, &mut SerialLink(u));
            idle.busy();
        } else {
            idle.pause(machine);
        }
    }
}

fn serve_vsock<T: virtio::Transport>(
    agent: &mut Agent<'_>,
    machine: &mut Machine<'_>,
    v: &mut virtio::vsock::Vsock<T>,
) -> ! {
    let mut buf = [0u8; 1024];
    let mut idle = IdlePolicy::new();
    loop {
        match v.poll(&mut buf) {
            virtio::vsock::Event::Data(n) => {
                let _ = agent.feed(buf.get(..n).unwrap_or(&[]), machine, &mut VsockLink(v));
                idle.busy();
            }
            // Each connection starts with a clean parser: the driver has already dropped
            // the old connection's unread bytes.
            virtio::vsock::Event::Opened => {
                agent.reset();
                idle.busy();
            }
            virtio::vsock::Event::Closed => {
                agent.reset();
                let c = v.counters();
                crate::log!(
                    "vsock: connection closed ({} malformed packets dropped, {} connections refused so far)",
                    c.malformed,
                    c.refused
                );
            }
            virtio::vsock::Event::Idle => idle.pause(machine),
        }
    }
}

fn serve_virtio<T: virtio::Transport>(
    agent: &mut Agent<'_>,
    machine: &mut Machine<'_>,
    c: &mut virtio::console::Console<T>,
) -> ! {
    let mut buf = [0u8; virtio::console::RX_BUF];
    let mut idle = IdlePolicy::new();
    loop {
        match c.poll(&mut buf) {
            virtio::console::Event::Data(n) => {
                let _ = agent.feed(buf.get(..n).unwrap_or(&[]), machine, &mut VirtioLink(c));
                idle.busy();
            }
            // A closed port drops any half-received request. QEMU delivers the old client's
            // bytes before the close and the new client's only after the open, and `poll`
            // hands out data before control events, so resetting on close (not on open, which
            // may be seen after the new client's first bytes) keeps the two apart.
            virtio::console::Event::Closed => agent.reset(),
            virtio::console::Event::Opened => {}
            virtio::console::Event::Idle => idle.pause(machine),
        }
    }
}
