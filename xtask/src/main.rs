//! `cargo xtask`: the project's commands (set-up, the whole test run, running an agent, talking
//! to one, images, fuzzing, benchmarks and soak runs).
//!
//! This file is the command line (clap, so `cargo xtask help COMMAND` and `--help` work for
//! each command): the pipeline, the benchmark and the soak routines are this crate's library
//! modules, the QEMU and guest harness is the `tests` crate's, and talking to an agent is the
//! `qga-client` command's, so the suites and these commands share one of each.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ::tests::host_agent::{AgentKind, HostAgent};
use ::tests::paths::target_dir;
use clap::{Args, Parser, Subcommand};
use xtask::pipeline;

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "The project's commands: set-up, the whole check, running and talking to an agent, images, fuzzing, benchmarks and soak runs",
    disable_version_flag = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Install what the project needs (rustup target, nightly toolchain, Debian packages,
    /// cargo-fuzz); does nothing that is already done; needs root for apt
    Setup,
    /// The whole check: setup, fmt, clippy (host and x86_64-unknown-none), doc, every test, each
    /// fuzz target briefly, the QEMU suites; fails unless every stage ran and passed
    Test {
        /// Skip the setup stage
        #[arg(long)]
        no_setup: bool,
        /// Seconds per fuzz target (13 targets: about 2 minutes at the default)
        #[arg(long, default_value_t = 10, value_name = "N")]
        fuzz_seconds: u64,
    },
    /// Boot the bare-metal image in QEMU (q35, virtio-serial) with the agent on a host unix
    /// socket, print how to talk to it, and stay in the foreground until Ctrl-C
    Run(RunArgs),
    /// Send one command to the agent on SOCKET and print the response (`qga-client SOCKET
    /// COMMAND [ARGS-JSON]`)
    Qga {
        socket: String,
        /// e.g. guest-info
        command: String,
        /// The `arguments` object, as JSON
        args_json: Option<String>,
    },
    /// Copy a local file into the guest with guest-file-* (`qga-client SOCKET push`)
    Push {
        socket: String,
        local: String,
        remote: String,
        /// Bytes per guest-file-write
        #[arg(long, value_name = "BYTES")]
        chunk: Option<u64>,
    },
    /// Copy a guest file out with guest-file-* (`qga-client SOCKET pull`)
    Pull {
        socket: String,
        remote: String,
        local: String,
        /// Bytes per guest-file-read
        #[arg(long, value_name = "BYTES")]
        chunk: Option<u64>,
    },
    /// Build the static qga and the Linux guest's initramfs images
    Initramfs {
        /// Where to put them (default: target/linux-guest)
        dir: Option<PathBuf>,
    },
    /// Build the bare-metal image and print its size report; then boot the Linux guest to
    /// compare boot-to-first-answer times
    Image {
        /// Skip the Linux guest comparison
        #[arg(long)]
        no_linux: bool,
    },
    /// Build the fuzz targets (framing, stream, dispatch, args_<family>) and run each for N seconds
    /// and/or N executions; prints executions, exec/s and crashes per target
    Fuzz {
        /// Seconds per target (default 60; with --runs alone: no time limit)
        #[arg(long, value_name = "N")]
        seconds: Option<u64>,
        /// Executions per target (libFuzzer -runs)
        #[arg(long, value_name = "N")]
        runs: Option<u64>,
        /// AddressSanitizer and comparison tracing (slower)
        #[arg(long)]
        asan: bool,
        /// Targets to run (default: all)
        targets: Vec<String>,
    },
    /// Soak and fault routines (garbage, reconnect, restart, exec, files, guest-virtio,
    /// guest-freeze, baremetal) with their figures and the robustness table. Full sizes take
    /// long under TCG: baremetal ~45 min (COM1 moves ~40 KB/s), guest-freeze ~8 min, the host
    /// routines ~2 min
    Soak {
        /// Routines to run (NAME... or all; default all)
        names: Vec<String>,
        /// The test suite's sizes
        #[arg(long)]
        quick: bool,
    },
    /// Our qga against Debian's qemu-ga, side by side (median of rounds): CPU, latency,
    /// throughput, startup, memory, size, and the kernel floor of a sequential ping, then both
    /// over vsock in a Linux guest, then the bare-metal image over vsock against virtio-console;
    /// `bench core`: the protocol engine alone (agent-core's bench_core example); `bench
    /// vsock`: the Linux vsock figures alone; `bench baremetal`: the bare-metal figures alone
    Bench {
        /// `core` for the protocol engine alone, `vsock` for the Linux vsock figures alone,
        /// `baremetal` for the bare-metal vsock/virtio-console figures alone
        #[arg(value_parser = ["core", "vsock", "baremetal"])]
        what: Option<String>,
        /// Rounds (the median is printed)
        #[arg(long, default_value_t = 3, value_name = "N")]
        rounds: usize,
    },
    /// Build what a user deploys into one folder: the static `qga`, the bare-metal image
    /// `qga-x86` and the Debian package `qga_<version>_amd64.deb` (replaces qemu-guest-agent);
    /// prints each file with its size and SHA-256
    Dist {
        /// The folder (default: target/dist)
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Code and memory figures: the core-only engine's sections (x86_64-unknown-none, opt-level
    /// z), the bare-metal image's sections and free room, the stack high-water mark
    Size,
}

/// Where `cargo xtask run` boots the agent.
#[derive(Args, Debug, Clone, Copy)]
#[group(multiple = false)]
struct RunArgs {
    /// The bare-metal image on a pc machine with the agent on COM1
    #[arg(long)]
    com1: bool,
    /// The bare-metal image on QEMU's microvm (virtio-mmio, no PCI) with the agent on vsock,
    /// reached through vhost-device-vsock's hybrid-vsock socket
    #[arg(long)]
    microvm: bool,
    /// A Linux guest with our qga inside
    #[arg(long)]
    linux: bool,
    /// Our qga on this host with system-changing commands blocked
    #[arg(long)]
    host: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = command_name(&cli.command);
    let result = match cli.command {
        Command::Setup => pipeline::setup(),
        Command::Test {
            no_setup,
            fuzz_seconds,
        } => cmd_test(no_setup, fuzz_seconds),
        Command::Run(a) => cmd_run(a),
        Command::Qga {
            socket,
            command,
            args_json,
        } => {
            let mut argv = vec![socket, command];
            argv.extend(args_json);
            return client_cli(argv);
        }
        Command::Push {
            socket,
            local,
            remote,
            chunk,
        } => {
            return client_cli(with_chunk(
                vec![socket, "push".into(), local, remote],
                chunk,
            ));
        }
        Command::Pull {
            socket,
            remote,
            local,
            chunk,
        } => {
            return client_cli(with_chunk(
                vec![socket, "pull".into(), remote, local],
                chunk,
            ));
        }
        Command::Initramfs { dir } => cmd_initramfs(dir),
        Command::Image { no_linux } => cmd_image(no_linux),
        Command::Fuzz {
            seconds,
            runs,
            asan,
            targets,
        } => pipeline::fuzz(&pipeline::FuzzOptions {
            // With --runs alone, the count is the limit.
            seconds: seconds.unwrap_or(if runs.is_some() { 0 } else { 60 }),
            runs,
            asan,
            targets,
        })
        .map(drop),
        Command::Soak { names, quick } => xtask::soak::cli(&names, quick),
        Command::Bench { what, rounds } => cmd_bench(what.as_deref(), rounds),
        Command::Size => xtask::size::report().map(|r| print!("{r}")),
        Command::Dist { out } => cmd_dist(out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Setup => "setup",
        Command::Test { .. } => "test",
        Command::Run(_) => "run",
        Command::Qga { .. } => "qga",
        Command::Push { .. } => "push",
        Command::Pull { .. } => "pull",
        Command::Initramfs { .. } => "initramfs",
        Command::Image { .. } => "image",
        Command::Fuzz { .. } => "fuzz",
        Command::Soak { .. } => "soak",
        Command::Bench { .. } => "bench",
        Command::Size => "size",
        Command::Dist { .. } => "dist",
    }
}

fn with_chunk(mut argv: Vec<String>, chunk: Option<u64>) -> Vec<String> {
    if let Some(c) = chunk {
        argv.extend(["--chunk".to_string(), c.to_string()]);
    }
    argv
}

/// `qga`, `push` and `pull` run the `qga-client` command itself (its raw command, `push` and
/// `pull`), so the two cannot drift apart.
fn client_cli(args: Vec<String>) -> ExitCode {
    qga_client::cli::main_from(std::iter::once("cargo xtask".to_string()).chain(args))
}

fn cmd_test(no_setup: bool, fuzz_seconds: u64) -> Result<(), String> {
    let opts = pipeline::TestOptions {
        fuzz_seconds,
        no_setup,
    };
    if pipeline::test(&opts) {
        Ok(())
    } else {
        Err("some stages failed (see the summary above)".into())
    }
}

fn cmd_bench(what: Option<&str>, rounds: usize) -> Result<(), String> {
    if what == Some("core") {
        let mut c = pipeline::cargo();
        c.args([
            "run",
            "--release",
            "-p",
            "agent-core",
            "--example",
            "bench_core",
        ]);
        return pipeline::run_limited(c, Duration::from_secs(1800));
    }
    // The client must not be the bottleneck: measure from an optimised build of this tool.
    if cfg!(debug_assertions) {
        let mut c = pipeline::cargo();
        c.args(["run", "--quiet", "--release", "-p", "xtask", "--", "bench"])
            .args(what)
            .args(["--rounds", &rounds.to_string()]);
        return pipeline::run_limited(c, Duration::from_secs(3600));
    }
    if what == Some("baremetal") {
        return xtask::bench::run_baremetal(rounds.max(1));
    }
    if what == Some("vsock") {
        let ours = match std::env::var_os(::tests::host_agent::QGA_BIN_ENV) {
            Some(p) => PathBuf::from(p),
            None => ::tests::host_agent::our_static_release_binary()?,
        };
        return xtask::bench::run_vsock(rounds.max(1), &ours);
    }
    xtask::bench::run(&xtask::bench::BenchOptions { rounds })
}

fn cmd_dist(out: Option<PathBuf>) -> Result<(), String> {
    let out = match out {
        Some(d) if d.is_relative() => std::env::current_dir()
            .map_err(|e| format!("current dir: {e}"))?
            .join(d),
        Some(d) => d,
        None => xtask::dist::default_out(),
    };
    println!("building the static qga, the bare-metal image and the Debian package…");
    for a in xtask::dist::dist(&out)? {
        println!("{}", a.line());
    }
    Ok(())
}

fn cmd_initramfs(dir: Option<PathBuf>) -> Result<(), String> {
    let dir = dir.unwrap_or_else(|| target_dir().join("linux-guest"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let images = ::tests::linux_guest::GuestImages::build(&dir)?;
    println!("kernel:               {}", images.kernel.image.display());
    println!("initramfs:            {}", images.initramfs.display());
    println!(
        "initramfs (no /sbin/poweroff etc.): {}",
        images.initramfs_no_helpers.display()
    );
    println!("static qga inside:    {}", images.qga.display());
    Ok(())
}

fn cmd_image(no_linux: bool) -> Result<(), String> {
    println!("building the bare-metal image (release profile `image`) and booting it for figures…");
    let report = ::tests::baremetal::report()?;
    print!("{report}");
    if no_linux {
        return Ok(());
    }
    // The comparison the figure is for: a Linux guest with `qga`, booted in the same run under
    // the same TCG, until its agent answers.
    let dir = target_dir().join("linux-guest");
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    println!("building the static qga and the initramfs, then booting the Linux guest to compare…");
    let images = ::tests::linux_guest::GuestImages::build(&dir)?;
    let guest = ::tests::linux_guest::LinuxGuest::boot(&::tests::linux_guest::GuestOptions::new(
        &images, true,
    ))?;
    println!(
        "Linux guest (Debian kernel + initramfs + qga), QEMU start to both agents answering: {:.2} s",
        guest.boot_time.as_secs_f64()
    );
    Ok(())
}

/// Prints how to talk to an agent on `socket`, with example requests that fit that agent.
fn print_usage_for(socket: &Path, examples: &[&str], exec: &str) {
    print_usage_at(&socket.display().to_string(), examples, exec);
    println!(
        "  (or any client: socat - UNIX-CONNECT:{})",
        socket.display()
    );
    println!("Ctrl-C stops it.");
}

/// Prints how to talk to an agent at `address` (as `qga-client` takes it).
fn print_usage_at(s: &str, examples: &[&str], exec: &str) {
    println!("agent address: {s}");
    println!("talk to it from another terminal, e.g.:");
    println!("  cargo xtask qga {s} guest-info");
    for e in examples {
        println!("  cargo xtask qga {s} {e}");
    }
    println!("  cargo run -q -p qga-client -- {s} exec {exec}");
    println!("  cargo xtask push {s} ./local-file /remote-file");
    println!("  cargo xtask pull {s} /remote-file ./copy");
}

/// Examples for a Linux agent.
const LINUX_EXAMPLES: &[&str] = &["guest-get-osinfo"];

/// An `exec` example for a Linux agent (`qga-client … exec` waits and prints the output).
const LINUX_EXEC: &str = "/bin/uname -a";

fn cmd_run(a: RunArgs) -> Result<(), String> {
    let flag = pipeline::interrupted_flag();
    // A fresh machine has no QEMU, kernel or bare-metal target yet: install what is missing
    // (a no-op when everything is there).
    if let Err(e) = pipeline::setup() {
        println!("setup did not complete ({e}); trying anyway");
    }
    if a.linux {
        let dir = target_dir().join("linux-guest");
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        println!("building the static qga and the initramfs…");
        let images = ::tests::linux_guest::GuestImages::build(&dir)?;
        println!("booting Debian's kernel with our qga in QEMU (TCG; this takes a while)…");
        let mut guest = ::tests::linux_guest::LinuxGuest::boot(
            &::tests::linux_guest::GuestOptions::new(&images, true),
        )?;
        println!("guest up in {:.1}s", guest.boot_time.as_secs_f64());
        print_usage_for(&guest.virtio_socket, LINUX_EXAMPLES, LINUX_EXEC);
        println!(
            "(the same agent also answers on ISA serial: {})",
            guest.isa_socket.display()
        );
        println!("guest console log: {}", guest.console_log.display());
        while !flag.load(Ordering::Relaxed) {
            if let Some(st) = guest.try_exit_status() {
                println!("QEMU exited: {st}");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("stopping QEMU");
        drop(guest);
        return Ok(());
    }
    if !a.host {
        match run_baremetal(a, &flag) {
            Ok(()) => return Ok(()),
            Err(e) => {
                println!("the bare-metal image could not be started: {e}");
                println!("falling back to our Linux agent on this host (cargo xtask run --host)");
            }
        }
    }
    // Our Linux agent on a host socket, with every system-changing command blocked.
    println!("building qga…");
    let mut agent = HostAgent::start(AgentKind::Ours)?;
    println!(
        "our Linux qga runs on this host (pid {}), with system-changing commands blocked",
        agent.pid()
    );
    print_usage_for(agent.socket(), LINUX_EXAMPLES, LINUX_EXEC);
    while !flag.load(Ordering::Relaxed) {
        if let Some(st) = agent.guard_mut().try_status() {
            return Err(format!("qga exited: {st}; log:\n{}", agent.log()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("stopping qga");
    agent.stop();
    Ok(())
}

/// `cargo xtask run`: the bare-metal image in QEMU, agent on virtio-serial (or `--com1`, or
/// vsock on microvm with `--microvm`).
fn run_baremetal(a: RunArgs, flag: &std::sync::atomic::AtomicBool) -> Result<(), String> {
    use ::tests::baremetal::{BareMetalVm, Machine, Transport};
    let (machine, transport) = if a.com1 {
        (Machine::Pc, Transport::Com1)
    } else if a.microvm {
        (Machine::Microvm, Transport::Vsock)
    } else {
        (Machine::Q35, Transport::Virtio)
    };
    println!("building the bare-metal image…");
    let mut vm = BareMetalVm::boot(machine, transport, |_| {})?;
    let client = vm.client()?;
    drop(client);
    println!(
        "bare-metal qga is up in QEMU (pid {}, machine {}, agent on {}) after {:.1}s",
        vm.pid(),
        machine.name(),
        transport.name(),
        vm.started.elapsed().as_secs_f64()
    );
    if transport == Transport::Vsock {
        let s = vm.opts.agent_socket.display();
        print_usage_at(
            &vm.address().to_string(),
            &["guest-get-osinfo", "guest-get-vcpus"],
            "cpuid",
        );
        println!(
            "  (or any client: socat - UNIX-CONNECT:{s}, then type `CONNECT {}` and wait for OK)",
            ::tests::baremetal::VSOCK_PORT
        );
        println!("Ctrl-C stops it.");
    } else {
        print_usage_for(
            &vm.opts.agent_socket,
            &["guest-get-osinfo", "guest-get-vcpus"],
            "pci",
        );
    }
    println!("image debug log: {}", vm.opts.log.display());
    while !flag.load(Ordering::Relaxed) {
        if let Some(st) = vm.try_status() {
            println!("QEMU exited: {st}");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("stopping QEMU");
    drop(vm);
    Ok(())
}
