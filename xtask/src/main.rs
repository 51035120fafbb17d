//! `cargo xtask`: the project's commands (set-up, the whole test run, running an agent, talking
//! to one, images, fuzzing and benchmarks).
//!
//! This binary only parses arguments: the work is done by the `tests` crate's library, so that
//! the integration tests and these commands share one client, one way of starting processes and
//! one way of building images. `cargo xtask help` lists the commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tests::host_agent::{AgentKind, HostAgent, workspace_root};
use tests::pipeline;

const HELP: &str = "\
cargo xtask <command>

  setup                         install what the project needs (rustup target, nightly toolchain,
                                Debian packages, cargo-fuzz); does nothing that is already done;
                                needs root for apt
  test [--no-setup] [--fuzz-seconds N]
                                the whole check: setup, fmt, clippy (host and x86_64-unknown-none),
                                doc, every test, each fuzz target briefly (N s each, default 10),
                                the QEMU suites; fails unless every stage ran and passed
  run [--com1 | --linux | --host]
                                boot the bare-metal image in QEMU (q35, virtio-serial; --com1:
                                pc, COM1) with the agent on a host unix socket, print how to talk
                                to it, and stay in the foreground until Ctrl-C; --linux: a Linux
                                guest with our qga inside; --host: our qga on this host with
                                system-changing commands blocked
  qga SOCKET COMMAND [ARGS-JSON]
                                send one command to the agent on SOCKET and print the response
  push SOCKET LOCAL REMOTE [--chunk BYTES]
                                copy a local file into the guest with guest-file-*
  pull SOCKET REMOTE LOCAL [--chunk BYTES]
                                copy a guest file out with guest-file-*
  initramfs [DIR]               build the static qga and the Linux guest's initramfs images
  image [--no-linux]            build the bare-metal image and print its size report; then boot
                                the Linux guest to compare boot-to-first-answer times
  fuzz [--seconds N] [--runs N] [--asan] [TARGET...]
                                build the fuzz targets (framing, dispatch, args_<family>) and
                                run each for N seconds (default 60) and/or N executions
                                (libFuzzer -runs; then no time limit unless --seconds is
                                given); prints executions, exec/s and crashes per target.
                                --asan: AddressSanitizer and comparison tracing (slower)
  soak [NAME|all] [--quick]     soak and fault routines (garbage, reconnect, restart, exec, files,
                                guest-virtio, guest-freeze, baremetal) with their figures and the
                                robustness table; --quick: the test suite's sizes. Full sizes
                                take long under TCG: baremetal ~45 min (COM1 moves ~40 KB/s),
                                guest-freeze ~8 min, the host routines ~2 min
  bench [--rounds N]            our qga against Debian's qemu-ga, side by side (default 3 rounds,
                                median): CPU, latency, throughput, startup, memory, size, and the
                                kernel floor of a sequential ping
  bench core                    the protocol engine alone (agent-core's bench_core example)
  size                          code and memory figures: the core-only engine's sections
                                (x86_64-unknown-none, opt-level z), the bare-metal image's
                                sections and free room, the stack high-water mark
  help                          this text
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        print!("{HELP}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let result = match cmd.as_str() {
        "help" | "-h" | "--help" => {
            print!("{HELP}");
            Ok(())
        }
        "setup" => pipeline::setup(),
        "test" => cmd_test(rest),
        "run" => cmd_run(rest),
        "qga" => return client_cli(None, rest),
        "push" => return client_cli(Some("push"), rest),
        "pull" => return client_cli(Some("pull"), rest),
        "initramfs" => cmd_initramfs(rest),
        "image" => cmd_image(rest),
        "fuzz" => cmd_fuzz(rest),
        "soak" => tests::soak::cli(rest),
        "bench" => cmd_bench(rest),
        "size" => tests::size::report().map(|r| print!("{r}")),
        other => Err(format!("unknown command `{other}`\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Splits `--name value` options from positional arguments.
struct Args {
    positional: Vec<String>,
    options: Vec<(String, Option<String>)>,
}

impl Args {
    fn parse(args: &[String], with_value: &[&str], flags: &[&str]) -> Result<Self, String> {
        let mut positional = Vec::new();
        let mut options = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if with_value.contains(&a.as_str()) {
                let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
                options.push((a.clone(), Some(v.clone())));
            } else if flags.contains(&a.as_str()) {
                options.push((a.clone(), None));
            } else if a.starts_with("--") {
                return Err(format!("unknown option {a}"));
            } else {
                positional.push(a.clone());
            }
        }
        Ok(Self {
            positional,
            options,
        })
    }

    fn flag(&self, name: &str) -> bool {
        self.options.iter().any(|(n, _)| n == name)
    }

    fn number(&self, name: &str, default: u64) -> Result<u64, String> {
        match self.options.iter().rev().find(|(n, _)| n == name) {
            Some((_, Some(v))) => v
                .parse()
                .map_err(|_| format!("{name} expects a number, got {v}")),
            _ => Ok(default),
        }
    }
}

/// Where xtask puts what it builds.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn cmd_test(rest: &[String]) -> Result<(), String> {
    let a = Args::parse(rest, &["--fuzz-seconds"], &["--no-setup"])?;
    let opts = pipeline::TestOptions {
        // 15 targets: about 2.5 minutes of fuzzing besides the build.
        fuzz_seconds: a.number("--fuzz-seconds", 10)?,
        no_setup: a.flag("--no-setup"),
    };
    if pipeline::test(&opts) {
        Ok(())
    } else {
        Err("some stages failed (see the summary above)".into())
    }
}

fn cmd_fuzz(rest: &[String]) -> Result<(), String> {
    let a = Args::parse(rest, &["--seconds", "--runs"], &["--asan"])?;
    let runs = if a.flag("--runs") {
        Some(a.number("--runs", 0)?)
    } else {
        None
    };
    // With --runs alone, the count is the limit.
    let seconds = a.number("--seconds", if runs.is_some() { 0 } else { 60 })?;
    pipeline::fuzz(&pipeline::FuzzOptions {
        seconds,
        runs,
        asan: a.flag("--asan"),
        targets: a.positional.clone(),
    })
    .map(drop)
}

fn cmd_bench(rest: &[String]) -> Result<(), String> {
    let a = Args::parse(rest, &["--rounds"], &[])?;
    if a.positional.first().map(String::as_str) == Some("core") {
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
    if let Some(p) = a.positional.first() {
        return Err(format!("unknown bench `{p}` (try `bench` or `bench core`)"));
    }
    // The client must not be the bottleneck: measure from an optimised build of this tool.
    if cfg!(debug_assertions) {
        let mut c = pipeline::cargo();
        c.args(["run", "--quiet", "--release", "-p", "xtask", "--", "bench"])
            .args(rest);
        return pipeline::run_limited(c, Duration::from_secs(3600));
    }
    tests::bench::run(&tests::bench::BenchOptions {
        rounds: a.number("--rounds", 3)? as usize,
    })
}

/// `qga`, `push` and `pull` are the `qga-client` command's raw command, `push` and `pull`: this
/// runs that command with the socket moved in front of the subcommand.
fn client_cli(sub: Option<&str>, rest: &[String]) -> ExitCode {
    let Some((socket, more)) = rest.split_first() else {
        eprintln!("usage: cargo xtask qga|push|pull SOCKET … (cargo xtask help)");
        return ExitCode::from(2);
    };
    let mut argv: Vec<String> = vec!["cargo xtask".into(), socket.clone()];
    argv.extend(sub.map(str::to_string));
    argv.extend(more.iter().cloned());
    qga_client::cli::main_from(argv)
}

fn cmd_initramfs(rest: &[String]) -> Result<(), String> {
    let dir = rest
        .first()
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("linux-guest"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let images = tests::linux_guest::GuestImages::build(&dir)?;
    println!("kernel:               {}", images.kernel.image.display());
    println!("initramfs:            {}", images.initramfs.display());
    println!(
        "initramfs (no /sbin/poweroff etc.): {}",
        images.initramfs_no_helpers.display()
    );
    println!("static qga inside:    {}", images.qga.display());
    Ok(())
}

fn cmd_image(rest: &[String]) -> Result<(), String> {
    let a = Args::parse(rest, &[], &["--no-linux"])?;
    println!("building the bare-metal image (release profile `image`) and booting it for figures…");
    let report = tests::baremetal::report()?;
    print!("{report}");
    if a.flag("--no-linux") {
        return Ok(());
    }
    // The comparison the figure is for: a Linux guest with `qga`, booted in the same run under
    // the same TCG, until its agent answers.
    let dir = target_dir().join("linux-guest");
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    println!("building the static qga and the initramfs, then booting the Linux guest to compare…");
    let images = tests::linux_guest::GuestImages::build(&dir)?;
    let guest = tests::linux_guest::LinuxGuest::boot(&tests::linux_guest::GuestOptions::new(
        &images, true,
    ))?;
    println!(
        "Linux guest (Debian kernel + initramfs + qga), QEMU start to both agents answering: {:.2} s",
        guest.boot_time.as_secs_f64()
    );
    Ok(())
}

/// Prints how to talk to an agent on `socket`, with example requests that fit that agent.
fn print_usage_for(socket: &Path, examples: &[&str]) {
    let s = socket.display();
    println!("agent socket: {s}");
    println!("talk to it from another terminal, e.g.:");
    println!("  cargo xtask qga {s} guest-info");
    for e in examples {
        println!("  cargo xtask qga {s} {e}");
    }
    println!("  cargo xtask push {s} ./local-file /remote-file");
    println!("  cargo xtask pull {s} /remote-file ./copy");
    println!("  (or any client: socat - UNIX-CONNECT:{s})");
    println!("Ctrl-C stops it.");
}

/// Examples for a Linux agent.
const LINUX_EXAMPLES: &[&str] = &[
    "guest-get-osinfo",
    r#"guest-exec '{"path": "/bin/uname", "arg": ["-a"], "capture-output": true}'"#,
    r#"guest-exec-status '{"pid": PID}'"#,
];

fn cmd_run(rest: &[String]) -> Result<(), String> {
    let a = Args::parse(rest, &[], &["--linux", "--host", "--com1"])?;
    let flag = pipeline::interrupted_flag();
    // A fresh machine has no QEMU, kernel or bare-metal target yet: install what is missing
    // (a no-op when everything is there).
    if let Err(e) = pipeline::setup() {
        println!("setup did not complete ({e}); trying anyway");
    }
    if a.flag("--linux") {
        let dir = target_dir().join("linux-guest");
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        println!("building the static qga and the initramfs…");
        let images = tests::linux_guest::GuestImages::build(&dir)?;
        println!("booting Debian's kernel with our qga in QEMU (TCG; this takes a while)…");
        let mut guest = tests::linux_guest::LinuxGuest::boot(
            &tests::linux_guest::GuestOptions::new(&images, true),
        )?;
        println!("guest up in {:.1}s", guest.boot_time.as_secs_f64());
        print_usage_for(&guest.virtio_socket, LINUX_EXAMPLES);
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
    if !a.flag("--host") {
        match run_baremetal(&a, &flag) {
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
    print_usage_for(agent.socket(), LINUX_EXAMPLES);
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

/// `cargo xtask run`: the bare-metal image in QEMU, agent on virtio-serial (or `--com1`).
fn run_baremetal(a: &Args, flag: &std::sync::atomic::AtomicBool) -> Result<(), String> {
    use tests::baremetal::{BareMetalVm, Machine, Transport};
    let (machine, transport) = if a.flag("--com1") {
        (Machine::Pc, Transport::Com1)
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
    print_usage_for(
        &vm.opts.agent_socket,
        &[
            "guest-get-osinfo",
            "guest-get-vcpus",
            r#"guest-exec '{"path": "pci", "capture-output": true}'"#,
            r#"guest-exec-status '{"pid": PID}'"#,
        ],
    );
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
