//! `cargo xtask setup`, `cargo xtask test` and `cargo xtask fuzz`: the project's whole check, as
//! one command that works the same on a developer's machine and on a fresh CI machine.
//!
//! The check is a list of stages, each one an ordinary cargo (or cargo-fuzz) command run in the
//! workspace, with its own time limit, so that a hung VM or test costs one stage, not the whole
//! CI budget. Every stage runs even when an earlier one failed (a CI log then shows every problem
//! at once); the summary lists each stage with its time, and the exit status is non-zero unless
//! every stage ran and passed: a stage that could not run (a missing toolchain, tool or suite)
//! fails the run, because green must mean that every check ran and could have failed. Stages are run in their own process group so that a time-out or a Ctrl-C kills
//! everything they started (cargo, test binaries, and the VMs and agents those started).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

use ::tests::paths::workspace_root;

/// Debian packages the suites need on the host.
pub const APT_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-guest-agent",
    "linux-image-amd64",
    "busybox-static",
    "cpio",
    "e2fsprogs",
    "kmod",
    // The libvirt suite's private libvirtd and virtlogd (tests/src/libvirt.rs), and virsh.
    "libvirt-daemon-driver-qemu",
    "libvirt-daemon",
    "libvirt-clients",
    // `cargo xtask dist`'s package check (xtask/tests/dist.rs); dpkg-deb itself is in dpkg.
    "lintian",
    // The systemd Debian guest (tests/src/debian_guest.rs): its root filesystem, and the qcow2
    // overlays its guests boot from.
    "mmdebstrap",
    "qemu-utils",
];

/// Name prefixes of the test files that boot QEMU guests: they form their own stage, run one
/// test at a time.
pub const QEMU_SUITES: &[&str] = &["linux_guest", "baremetal", "soak_qemu"];

/// The packages with integration-test files, and where those files are: the suites (`tests`)
/// and the soak routines' own suites (`xtask`).
pub const SUITE_PACKAGES: &[(&str, &str)] = &[("tests", "tests/tests"), ("xtask", "xtask/tests")];

/// One integration-test file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuiteFile {
    /// Its package.
    pub package: &'static str,
    /// Its name (the file stem, which is cargo's `--test` name).
    pub name: String,
}

/// Tests left out of `cargo xtask test`, each with the reason (exact test function names). A
/// test is listed here only while what it checks is known not to work yet, so that the run
/// does not claim it passes; the summary prints this list.
pub const EXCLUDED_TESTS: &[(&str, &str)] = &[];

/// How a stage ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It ran and passed.
    Passed,
    /// It ran and failed; the text says how.
    Failed(String),
    /// It did not run (interrupted); the text says why. It fails the run like `Failed`.
    Skipped(String),
}

/// One stage's record for the summary.
#[derive(Debug, Clone)]
pub struct StageResult {
    /// The stage's name.
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Wall-clock time.
    pub elapsed: Duration,
}

/// Set once Ctrl-C (SIGINT) or SIGTERM arrived; stages then stop.
pub fn interrupted_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let _ = signal_hook::flag::register(sig, Arc::clone(&flag));
        }
        flag
    })
    .clone()
}

/// Runs `cmd` with inherited stdio in its own process group, killing the group after `limit`
/// or on Ctrl-C.
pub fn run_limited(mut cmd: Command, limit: Duration) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let flag = interrupted_flag();
    let shown = format!("{cmd:?}");
    cmd.process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    let start = Instant::now();
    let group = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
    let kill_group = |child: &mut std::process::Child| {
        if let Some(g) = group {
            let _ = kill_process_group(g, Signal::KILL);
        }
        let _ = child.kill();
        let _ = child.wait();
    };
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                // Anything the stage left behind in its group goes too.
                if let Some(g) = group {
                    let _ = kill_process_group(g, Signal::KILL);
                }
                return if st.success() {
                    Ok(())
                } else {
                    Err(format!("{shown} failed: {st}"))
                };
            }
            Ok(None) => {}
            Err(e) => {
                kill_group(&mut child);
                return Err(format!("waiting for {shown}: {e}"));
            }
        }
        if flag.load(Ordering::Relaxed) {
            kill_group(&mut child);
            return Err("interrupted".to_string());
        }
        if start.elapsed() > limit {
            kill_group(&mut child);
            return Err(format!(
                "{shown} exceeded its limit of {}s",
                limit.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `cargo` command in the workspace root.
pub fn cargo() -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut c = Command::new(cargo);
    c.current_dir(workspace_root());
    c
}

/// Whether `cmd` runs and exits 0 (output discarded).
pub fn succeeds(mut cmd: Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn command(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// Whether a Debian package is installed.
fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
        .unwrap_or(false)
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether the bare-metal target is installed for the default toolchain.
fn x86_target_installed() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("x86_64-unknown-none"))
        .unwrap_or(false)
}

/// Whether the nightly toolchain is installed (cargo-fuzz needs it).
pub fn have_nightly() -> bool {
    succeeds(command("rustup", &["run", "nightly", "rustc", "--version"]))
}

/// Whether `cargo fuzz` is installed.
pub fn have_cargo_fuzz() -> bool {
    succeeds(command("cargo", &["fuzz", "--version"]))
}

/// Whether `cargo nextest` is installed.
pub fn have_nextest() -> bool {
    succeeds(command("cargo", &["nextest", "--version"]))
}

/// `cargo xtask setup`: installs what the project needs; does nothing that is already done.
pub fn setup() -> Result<(), String> {
    // The bare-metal target, and the shipped qga's (the initramfs of the Linux guest suites
    // and the benchmark build it).
    let targets = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("rustup is missing: {e}"))?;
    let installed = String::from_utf8_lossy(&targets.stdout).into_owned();
    for (target, needed_by) in [
        ("x86_64-unknown-none", "the bare-metal image"),
        (
            ::tests::host_agent::SHIP_TARGET,
            "the static qga (Linux guest suites, benchmark)",
        ),
    ] {
        if installed.lines().any(|l| l.trim() == target) {
            continue;
        }
        println!("setup: rustup target add {target}");
        // Not fatal here: the stages that need the target say so themselves, and the rest of
        // the check still runs.
        if let Err(e) = run_limited(
            command("rustup", &["target", "add", target]),
            Duration::from_secs(600),
        ) {
            println!("setup: warning: {e}; {needed_by} needs the {target} target");
        }
    }
    let components = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for comp in ["rustfmt", "clippy"] {
        if !components.contains(comp) {
            println!("setup: rustup component add {comp}");
            run_limited(
                command("rustup", &["component", "add", comp]),
                Duration::from_secs(600),
            )?;
        }
    }
    // Debian packages.
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        println!(
            "setup: Debian packages present ({})",
            APT_PACKAGES.join(" ")
        );
    } else if !is_root() {
        return Err(format!(
            "missing Debian packages: {}; run as root: apt-get update && apt-get install -y {}",
            missing.join(" "),
            APT_PACKAGES.join(" ")
        ));
    } else {
        println!("setup: apt-get install {}", missing.join(" "));
        let mut up = command("apt-get", &["update"]);
        up.env("DEBIAN_FRONTEND", "noninteractive");
        run_limited(up, Duration::from_secs(900))?;
        let mut inst = command("apt-get", &["install", "-y", "--no-install-recommends"]);
        inst.args(APT_PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive");
        run_limited(inst, Duration::from_secs(1800))?;
    }
    // The fuzz stage of `cargo xtask test` needs the nightly toolchain (cargo-fuzz builds with
    // -Z flags) and cargo-fuzz, built from crates.io; without them it fails, so set-up installs
    // both.
    if !have_nightly() {
        println!("setup: rustup toolchain install nightly --profile minimal");
        run_limited(
            command(
                "rustup",
                &["toolchain", "install", "nightly", "--profile", "minimal"],
            ),
            Duration::from_secs(1800),
        )?;
    }
    if !have_cargo_fuzz() {
        println!("setup: cargo install cargo-fuzz --locked");
        run_limited(
            command("cargo", &["install", "cargo-fuzz", "--locked"]),
            Duration::from_secs(1800),
        )?;
    }
    // The vsock suites' host end (see `tests::vsock`): QEMU's own vhost-vsock needs a kernel
    // module these machines lack, so the guests' vsock goes through this vhost-user daemon.
    let daemon = ::tests::vsock::DAEMON;
    if ::tests::vsock::daemon_binary().is_none() {
        println!("setup: cargo install {daemon} --locked");
        run_limited(
            command("cargo", &["install", daemon, "--locked"]),
            Duration::from_secs(1800),
        )
        .map_err(|e| {
            format!(
                "cannot install {daemon} (the vsock suites need it): {e}; install it with \
                 `cargo install {daemon} --locked` (it builds from crates.io) and run set-up again"
            )
        })?;
        if ::tests::vsock::daemon_binary().is_none() {
            return Err(format!(
                "`cargo install {daemon}` succeeded but {daemon} is not in $CARGO_HOME/bin nor \
                 on the PATH"
            ));
        }
    } else {
        println!("setup: {daemon} present");
    }
    Ok(())
}

/// The fuzz targets under `fuzz/` (from `cargo fuzz list`).
pub fn fuzz_targets() -> Result<Vec<String>, String> {
    let root = workspace_root();
    if !root.join("fuzz").join("Cargo.toml").is_file() {
        return Err("there is no fuzz/ crate".to_string());
    }
    let out = Command::new("cargo")
        .args(["+nightly", "fuzz", "list"])
        .current_dir(&root)
        .output()
        .map_err(|e| format!("cannot run cargo fuzz list: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo fuzz list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// How `cargo xtask fuzz` runs the targets.
#[derive(Debug, Clone, Default)]
pub struct FuzzOptions {
    /// Seconds per target (libFuzzer `-max_total_time`); 0: no time limit.
    pub seconds: u64,
    /// Executions per target (libFuzzer `-runs`); `None`: no limit.
    pub runs: Option<u64>,
    /// Build with AddressSanitizer and comparison tracing (cargo-fuzz's defaults) instead of
    /// neither: a few times slower (see fuzz/README.md).
    pub asan: bool,
    /// Only these targets (every target when empty).
    pub targets: Vec<String>,
}

/// What one target's run did.
#[derive(Debug, Clone)]
pub struct FuzzResult {
    /// The target.
    pub target: String,
    /// Inputs executed (libFuzzer's `stat::number_of_executed_units`).
    pub executions: u64,
    /// Wall-clock seconds of the run.
    pub seconds: f64,
    /// Crashes, time-outs and out-of-memory inputs found (libFuzzer stops at the first).
    pub crashes: u64,
    /// libFuzzer's output.
    pub log: PathBuf,
    /// Why the run failed, if it did.
    pub error: Option<String>,
}

/// The longest input libFuzzer makes for `target`. Longer inputs run slower, so each target
/// gets what its checks need: the `args_*` targets take one arguments value (`ARGS_MAX` in
/// fuzz/fuzz_targets/common.rs: lists of many elements, objects of more than 64 members, the
/// 256-character base64 blocks); `dispatch` twice its 1 KiB frame; `framing` 4 KiB, sixteen
/// times its frame, for long streams cut into pieces; `stream` past its 4 KiB frame, so that a
/// streamed write can grow over the size limit.
fn fuzz_max_len(target: &str) -> u64 {
    match target {
        "framing" => 4096,
        "stream" => 5000,
        "dispatch" => 2048,
        _ => 1024,
    }
}

/// `cargo xtask fuzz`: builds every fuzz target and runs each in turn, for `seconds` and/or
/// `runs` executions, then prints executions, exec/s and crashes per target. Fails if a target
/// crashed or did not run.
///
/// Targets are built without AddressSanitizer and without comparison tracing unless `asan` is
/// set: agent-core forbids `unsafe`, so ASan guards nothing of ours, and the two together made
/// the targets 3 to 10 times slower (measurements in fuzz/README.md). Debug assertions and
/// overflow checks stay on. The checked-in seeds are read only; what the fuzzer adds goes to a
/// corpus under the target dir, crash inputs to `fuzz/artifacts/<target>/` (ignored by git), and
/// libFuzzer's output to a log per target under the target dir.
pub fn fuzz(opts: &FuzzOptions) -> Result<Vec<FuzzResult>, String> {
    fuzz_prerequisites(have_nightly(), have_cargo_fuzz())?;
    let all = fuzz_targets()?;
    if all.is_empty() {
        return Err("cargo fuzz list printed no targets".into());
    }
    if let Some(t) = opts.targets.iter().find(|t| !all.contains(t)) {
        return Err(format!(
            "there is no fuzz target {t} (targets: {})",
            all.join(" ")
        ));
    }
    let targets: Vec<String> = if opts.targets.is_empty() {
        all
    } else {
        opts.targets.clone()
    };
    let root = workspace_root();
    let dir = if opts.asan {
        fuzz_target_dir().join("asan")
    } else {
        fuzz_target_dir()
    };
    // One build for every target; it may take minutes the first time.
    let mut build = command("cargo", &["+nightly", "fuzz", "build"]);
    if !opts.asan {
        build.args(["-s", "none", "--no-trace-compares"]);
    }
    build.current_dir(&root).env("CARGO_TARGET_DIR", &dir);
    println!(
        "fuzz: building {} targets ({})",
        targets.len(),
        if opts.asan {
            "AddressSanitizer, comparison tracing"
        } else {
            "no sanitizer, no comparison tracing"
        }
    );
    run_limited(build, Duration::from_secs(1800))?;
    let bin_dir = dir.join("x86_64-unknown-linux-gnu").join("release");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let mut results = Vec::new();
    for t in &targets {
        let limit = match (opts.seconds, opts.runs) {
            (0, None) => "no limit".to_string(),
            (s, None) => format!("{s} s"),
            (0, Some(r)) => format!("{r} executions"),
            (s, Some(r)) => format!("{r} executions or {s} s"),
        };
        let log = logs.join(format!("{t}.log"));
        println!("fuzz: {t} ({limit}; output in {})", log.display());
        let mut c = Command::new(bin_dir.join(t));
        // New inputs go to a corpus under the target dir; the checked-in seeds are read only,
        // so a run leaves the work tree clean.
        let grown = dir.join("corpus").join(t);
        let _ = std::fs::create_dir_all(&grown);
        c.arg(&grown);
        let seeds = root.join("fuzz").join("corpus").join(t);
        if seeds.is_dir() {
            c.arg(&seeds);
        }
        // A dictionary next to the targets (fuzz/<target>.dict) helps libFuzzer find tokens.
        let dict = root.join("fuzz").join(format!("{t}.dict"));
        if dict.is_file() {
            c.arg(format!("-dict={}", dict.display()));
        }
        let artifacts = root.join("fuzz").join("artifacts").join(t);
        let _ = std::fs::create_dir_all(&artifacts);
        c.arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg(format!("-max_len={}", fuzz_max_len(t)))
            // One input taking seconds is a hang: report it as a time-out.
            .arg("-timeout=10")
            .arg("-print_final_stats=1")
            .arg(format!("-max_total_time={}", opts.seconds));
        if let Some(r) = opts.runs {
            c.arg(format!("-runs={r}"));
        }
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let file2 = file
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        c.current_dir(&root).stdout(file).stderr(file2);
        // A run is bounded by libFuzzer; this only catches a fuzzer that stopped answering.
        let bound = match (opts.seconds, opts.runs) {
            (0, Some(r)) => 600 + r / 1000,
            (0, None) => 365 * 24 * 3600,
            (s, _) => s + 600,
        };
        let start = Instant::now();
        let run = run_limited(c, Duration::from_secs(bound));
        let seconds = start.elapsed().as_secs_f64();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let stat = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        // The final statistics, or else the last status line (`#<n> ...`).
        let executions = stat("stat::number_of_executed_units:")
            .or_else(|| {
                text.lines().rev().find_map(|l| {
                    let n = l.strip_prefix('#')?.split_whitespace().next()?;
                    n.parse().ok()
                })
            })
            .unwrap_or(0);
        let crashes = text
            .lines()
            .filter(|l| l.contains("Test unit written to"))
            .count() as u64;
        let error = match run {
            Ok(()) if crashes == 0 => None,
            Ok(()) => Some(format!("{crashes} crash inputs written")),
            Err(e) => {
                // The end of libFuzzer's report: the panic message and the input's file.
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                println!("{}", tail.join("\n"));
                Some(e)
            }
        };
        let r = FuzzResult {
            target: t.clone(),
            executions,
            seconds,
            crashes,
            log,
            error,
        };
        println!(
            "fuzz: {t}: {} executions in {:.0} s ({:.0}/s), {} crashes{}",
            r.executions,
            r.seconds,
            r.executions as f64 / r.seconds.max(0.001),
            r.crashes,
            r.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
        results.push(r);
        if interrupted_flag().load(Ordering::Relaxed) {
            break;
        }
    }
    println!("\nfuzz summary:");
    println!(
        "  {:<14} {:>12} {:>9} {:>9} {:>8}",
        "target", "executions", "seconds", "exec/s", "crashes"
    );
    for r in &results {
        println!(
            "  {:<14} {:>12} {:>9.0} {:>9.0} {:>8}{}",
            r.target,
            r.executions,
            r.seconds,
            r.executions as f64 / r.seconds.max(0.001),
            r.crashes,
            if r.error.is_some() { "  FAILED" } else { "" }
        );
    }
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| {
            r.error
                .as_ref()
                .map(|e| format!("{}: {e} (see {})", r.target, r.log.display()))
        })
        .collect();
    if failed.is_empty() {
        Ok(results)
    } else {
        Err(failed.join("\n"))
    }
}

/// Where fuzz builds go: next to the workspace's target dir, so that the fuzz build never
/// invalidates the ordinary one.
fn fuzz_target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d).join("fuzz"),
        None => workspace_root().join("fuzz").join("target"),
    }
}

/// The integration-test files of [`SUITE_PACKAGES`], split into (host, QEMU) suites.
pub fn test_files() -> (Vec<SuiteFile>, Vec<SuiteFile>) {
    let mut files = Vec::new();
    for (package, dir) in SUITE_PACKAGES {
        let mut names: Vec<String> = std::fs::read_dir(workspace_root().join(dir))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| {
                        let p = e.path();
                        (p.extension()? == "rs")
                            .then(|| p.file_stem()?.to_str().map(str::to_string))
                            .flatten()
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        files.extend(names.into_iter().map(|name| SuiteFile { package, name }));
    }
    files
        .into_iter()
        .partition(|f| !QEMU_SUITES.iter().any(|q| f.name.starts_with(q)))
}

/// `cargo test -p PACKAGE --test NAME…` for each package among `files`, with `extra` before
/// them and `after` behind `--`; returns whether every run passed.
fn test_per_package(
    files: &[SuiteFile],
    extra: &[&str],
    after: &[&str],
    limit: Duration,
) -> Result<(), String> {
    let mut result = Ok(());
    for (package, _) in SUITE_PACKAGES {
        let mine: Vec<&SuiteFile> = files.iter().filter(|f| f.package == *package).collect();
        if mine.is_empty() && !extra.contains(&"--lib") {
            continue;
        }
        let mut c = cargo();
        c.args(["test", "-p", package, "--no-fail-fast"])
            .args(extra);
        for f in mine {
            c.args(["--test", &f.name]);
        }
        c.arg("--").args(after);
        let r = run_limited(c, limit);
        result = result.and(r);
    }
    result
}

/// Options of `cargo xtask test`.
#[derive(Debug, Clone, Default)]
pub struct TestOptions {
    /// Seconds per fuzz target (`--fuzz-seconds`).
    pub fuzz_seconds: u64,
    /// Skip `setup`.
    pub no_setup: bool,
}

/// `cargo xtask test`: every check; returns whether all passed.
pub fn test(opts: &TestOptions) -> bool {
    let mut results: Vec<StageResult> = Vec::new();
    let total = Instant::now();
    let nextest = have_nextest();
    let mins = |m: u64| Duration::from_secs(m * 60);

    let mut stage = |name: &str, f: &mut dyn FnMut() -> Outcome| {
        println!("\n==> {name}");
        let start = Instant::now();
        let outcome = if interrupted_flag().load(Ordering::Relaxed) {
            Outcome::Skipped("interrupted".into())
        } else {
            f()
        };
        let elapsed = start.elapsed();
        let word = match &outcome {
            Outcome::Passed => "ok".to_string(),
            Outcome::Failed(e) => format!("FAILED: {e}"),
            Outcome::Skipped(why) => format!("skipped: {why}"),
        };
        println!("<== {name}: {word} ({:.1}s)", elapsed.as_secs_f64());
        results.push(StageResult {
            name: name.to_string(),
            outcome,
            elapsed,
        });
    };
    let from = |r: Result<(), String>| match r {
        Ok(()) => Outcome::Passed,
        Err(e) => Outcome::Failed(e),
    };

    // `--no-setup` leaves out installing, not a check: it is the one stage that may be absent
    // from a green run (whatever set-up would have installed is then checked by the stages
    // that need it, which fail without it).
    if !opts.no_setup {
        stage("setup", &mut || from(setup()));
    }
    stage("fmt", &mut || {
        let mut c = cargo();
        c.args(["fmt", "--all", "--check"]);
        from(run_limited(c, mins(5)))
    });
    stage("clippy (host)", &mut || {
        let mut c = cargo();
        c.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        from(run_limited(c, mins(30)))
    });
    stage("clippy (x86_64-unknown-none)", &mut || {
        if !x86_target_installed() {
            return Outcome::Failed(
                "the x86_64-unknown-none target is not installed (rustup target add x86_64-unknown-none)"
                    .into(),
            );
        }
        let mut c = cargo();
        c.args([
            "clippy",
            "-p",
            "agent-core",
            "-p",
            "platform-x86",
            "--target",
            "x86_64-unknown-none",
            "--",
            "-D",
            "warnings",
        ]);
        from(run_limited(c, mins(20)))
    });
    stage("doc", &mut || {
        let mut c = cargo();
        c.args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-Dwarnings");
        from(run_limited(c, mins(20)))
    });
    let (host_files, qemu_files) = test_files();
    stage("tests (workspace, host)", &mut || {
        if nextest {
            let mut c = cargo();
            c.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
            let mut parts: Vec<String> = qemu_files
                .iter()
                .map(|f| format!("binary_id({}::{})", f.package, f.name))
                .collect();
            parts.extend(EXCLUDED_TESTS.iter().map(|(t, _)| format!("test(={t})")));
            if !parts.is_empty() {
                c.args(["-E", &format!("not ({})", parts.join(" | "))]);
            }
            let r = run_limited(c, mins(40));
            // nextest does not run doctests.
            let mut d = cargo();
            d.args(["test", "--workspace", "--doc"]);
            from(r.and(run_limited(d, mins(20))))
        } else {
            let mut c = cargo();
            c.args(["test", "--workspace", "--no-fail-fast"]);
            for (package, _) in SUITE_PACKAGES {
                c.args(["--exclude", package]);
            }
            let r = run_limited(c, mins(40));
            let mut skips: Vec<&str> = Vec::new();
            for (name, _) in EXCLUDED_TESTS {
                skips.extend(["--skip", name, "--exact"]);
            }
            from(r.and(test_per_package(&host_files, &["--lib"], &skips, mins(30))))
        }
    });
    stage("fuzz", &mut || {
        if let Err(e) = fuzz_prerequisites(have_nightly(), have_cargo_fuzz()) {
            return Outcome::Failed(e);
        }
        match fuzz_targets() {
            Err(e) => Outcome::Failed(e),
            Ok(t) if t.is_empty() => Outcome::Failed("cargo fuzz list printed no targets".into()),
            Ok(_) => from(
                fuzz(&FuzzOptions {
                    seconds: opts.fuzz_seconds,
                    ..FuzzOptions::default()
                })
                .map(drop),
            ),
        }
    });
    stage("QEMU suites", &mut || {
        if qemu_files.is_empty() {
            return Outcome::Failed("no QEMU suite in tests/tests or xtask/tests".into());
        }
        // VMs under TCG on two cores: one test at a time.
        let mut after = vec!["--test-threads=1"];
        for (name, _) in EXCLUDED_TESTS {
            after.extend(["--skip", name]);
        }
        from(test_per_package(&qemu_files, &[], &after, mins(35)))
    });

    println!(
        "\n==== summary ({:.1}s) ====",
        total.elapsed().as_secs_f64()
    );
    if opts.no_setup {
        println!("{:>8}   {:<32} not run (--no-setup)", "", "setup");
    }
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for r in &results {
        let word = match &r.outcome {
            Outcome::Passed => {
                passed += 1;
                "passed".to_string()
            }
            Outcome::Failed(e) => {
                failed += 1;
                format!("FAILED ({})", first_line(e))
            }
            Outcome::Skipped(why) => {
                skipped += 1;
                format!("skipped ({why})")
            }
        };
        println!("{:>8.1}s  {:<32} {word}", r.elapsed.as_secs_f64(), r.name);
    }
    for (name, why) in EXCLUDED_TESTS {
        println!("  left out of this run: {name} ({why})");
    }
    println!("stages: {passed} passed, {failed} failed, {skipped} skipped");
    if skipped > 0 {
        println!("a skipped stage is a check that did not run: the run fails");
    }
    verdict(&results)
}

/// Whether a run with these stages is green: every stage ran and passed. A stage that was
/// skipped (interrupted, or something it needs is missing) checked nothing, so it fails the run
/// like a failed stage.
pub fn verdict(results: &[StageResult]) -> bool {
    results.iter().all(|r| r.outcome == Outcome::Passed)
}

/// Why the fuzz stage cannot run here, with how to fix it; `Ok` when it can.
pub fn fuzz_prerequisites(nightly: bool, cargo_fuzz: bool) -> Result<(), String> {
    match (nightly, cargo_fuzz) {
        (true, true) => Ok(()),
        (false, _) => Err(
            "the fuzz targets need the nightly toolchain, which is not installed: run \
             `cargo xtask setup` (it runs `rustup toolchain install nightly --profile minimal` \
             and `cargo install cargo-fuzz --locked`)"
                .into(),
        ),
        (true, false) => Err(
            "cargo-fuzz is not installed: run `cargo xtask setup` (or `cargo install cargo-fuzz \
             --locked`)"
                .into(),
        ),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Whether `path` is an executable file.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(outcome: Outcome) -> StageResult {
        StageResult {
            name: "x".into(),
            outcome,
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn a_skipped_stage_fails_the_run() {
        assert!(verdict(&[stage(Outcome::Passed), stage(Outcome::Passed)]));
        assert!(!verdict(&[
            stage(Outcome::Passed),
            stage(Outcome::Skipped("interrupted".into()))
        ]));
        assert!(!verdict(&[stage(Outcome::Failed("no".into()))]));
    }

    #[test]
    fn fuzz_stage_without_its_tools_fails_and_says_how_to_get_them() {
        assert_eq!(fuzz_prerequisites(true, true), Ok(()));
        let no_nightly = fuzz_prerequisites(false, true).unwrap_err();
        assert!(no_nightly.contains("nightly"), "{no_nightly}");
        assert!(no_nightly.contains("cargo xtask setup"), "{no_nightly}");
        assert!(no_nightly.contains("rustup toolchain install nightly"));
        assert_eq!(fuzz_prerequisites(false, false).unwrap_err(), no_nightly);
        let no_fuzz = fuzz_prerequisites(true, false).unwrap_err();
        assert!(no_fuzz.contains("cargo install cargo-fuzz"), "{no_fuzz}");
        assert!(no_fuzz.contains("cargo xtask setup"), "{no_fuzz}");
    }
}
