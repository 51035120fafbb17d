//! Host agents: our `qga` or Debian's `qemu-ga`, run on this machine over a unix socket.
//!
//! The host is the cheapest place to exercise everything that only reads the system, and the
//! only place where the reference agent runs beside ours for differential tests and benchmarks.
//! But both agents run as root here, so each one is started with `-b` naming every command that
//! changes the system ([`BLOCKED`]): those are exercised only inside QEMU guests. Each agent gets
//! its own temporary directory for its socket, state directory, log and working directory (so a
//! relative `guest-file-open` path lands there), and its own empty config file so that a stray
//! `/etc/qemu/qemu-ga.conf` cannot change what a test sees.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;
use std::time::Duration;

use crate::paths::workspace_root;
use crate::qemu::{ProcessGuard, wait_for_path};
use qga_client::Client;

/// Commands that change the host and must never run there.
pub const BLOCKED: &[&str] = &[
    "guest-shutdown",
    "guest-suspend-disk",
    "guest-suspend-ram",
    "guest-suspend-hybrid",
    "guest-set-time",
    "guest-set-user-password",
    "guest-fsfreeze-freeze",
    "guest-fsfreeze-freeze-list",
    "guest-fsfreeze-thaw",
    "guest-fstrim",
    "guest-set-vcpus",
    "guest-set-memory-blocks",
    "guest-ssh-add-authorized-keys",
    "guest-ssh-remove-authorized-keys",
];

/// Debian's reference agent (package `qemu-guest-agent`, 7.2 on bookworm).
pub const UPSTREAM_BINARY: &str = "/usr/sbin/qemu-ga";

/// The environment variable naming the reference agent to use instead of [`UPSTREAM_BINARY`].
pub const UPSTREAM_BIN_ENV: &str = "QGA_REFERENCE_BIN";

/// The environment variable naming a prebuilt `qga` to test instead of building one.
pub const QGA_BIN_ENV: &str = "QGA_BIN";

/// Which agent to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentKind {
    /// This project's `qga`.
    Ours,
    /// Debian's `qemu-ga`.
    Upstream,
}

impl AgentKind {
    /// A short label for messages and tables.
    pub fn label(self) -> &'static str {
        match self {
            AgentKind::Ours => "qga",
            AgentKind::Upstream => "qemu-ga",
        }
    }
}

/// Runs `cargo build` with `args` in the workspace and returns the executable named `bin`.
///
/// The path comes from cargo's own JSON artifact messages, so it is right whatever
/// `CARGO_TARGET_DIR`, `--target` or profile is in force.
pub fn cargo_build_bin(args: &[&str], bin: &str, envs: &[(&str, &str)]) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(workspace_root());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo build: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build {} failed ({})",
            args.join(" "),
            out.status
        ));
    }
    let mut found = None;
    for line in out.stdout.split(|&b| b == b'\n') {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact"
            && v["target"]["name"] == bin
            && let Some(exe) = v["executable"].as_str()
        {
            found = Some(PathBuf::from(exe));
        }
    }
    found.ok_or_else(|| {
        format!(
            "cargo build {} produced no executable {bin}",
            args.join(" ")
        )
    })
}

/// Our `qga` binary: `$QGA_BIN` if set, else a debug build (built once per process).
pub fn our_binary() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os(QGA_BIN_ENV) {
            let p = PathBuf::from(p);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(format!("{QGA_BIN_ENV}={} is not a file", p.display()))
            };
        }
        cargo_build_bin(&["-p", "platform-linux", "--bin", "qga"], "qga", &[])
    })
    .clone()
}

/// The Rust target of the shipped `qga` (platform-linux/AGENT.md): musl, linked statically by
/// default, where a static glibc carries about 0.8 MB of C library (stdio, locales, NSS, iconv).
pub const SHIP_TARGET: &str = "x86_64-unknown-linux-musl";
/// The cargo profile of the shipped `qga` (the workspace Cargo.toml says why it is tuned so).
pub const SHIP_PROFILE: &str = "ship";
/// The `RUSTFLAGS` of the shipped `qga`: static, and not position-independent (`ldd` then
/// says "not a dynamic executable", and there are no start-up relocations).
pub const SHIP_RUSTFLAGS: &str = "-C target-feature=+crt-static -C relocation-model=static";

/// Our statically linked `qga`, built as shipped ([`SHIP_TARGET`], [`SHIP_PROFILE`],
/// [`SHIP_RUSTFLAGS`]), for benchmarks and the initramfs.
pub fn our_static_release_binary() -> Result<PathBuf, String> {
    cargo_build_bin(
        &[
            "--profile",
            SHIP_PROFILE,
            "-p",
            "platform-linux",
            "--bin",
            "qga",
            "--target",
            SHIP_TARGET,
        ],
        "qga",
        &[("RUSTFLAGS", SHIP_RUSTFLAGS)],
    )
    .map_err(|e| {
        format!("{e} (is the {SHIP_TARGET} target installed? `cargo xtask setup` adds it)")
    })
}

/// Where the reference agent is looked for: `$QGA_REFERENCE_BIN` if set, else
/// [`UPSTREAM_BINARY`].
pub fn upstream_path() -> PathBuf {
    std::env::var_os(UPSTREAM_BIN_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(UPSTREAM_BINARY))
}

/// The reference agent, if installed.
pub fn upstream_binary() -> Option<PathBuf> {
    let p = upstream_path();
    p.is_file().then_some(p)
}

/// Why the reference agent cannot be used, for messages.
pub fn upstream_missing() -> String {
    format!(
        "the reference agent (Debian's qemu-ga) is not installed: {} is not a file",
        upstream_path().display()
    )
}

/// The binary for `kind`.
pub fn binary_for(kind: AgentKind) -> Result<PathBuf, String> {
    match kind {
        AgentKind::Ours => our_binary(),
        AgentKind::Upstream => upstream_binary()
            .ok_or_else(|| format!("{} (apt-get install qemu-guest-agent)", upstream_missing())),
    }
}

/// A running host agent in `unix-listen` mode, killed by PID when dropped.
#[derive(Debug)]
pub struct HostAgent {
    // Declared before `dir` so the process dies before its directory is removed.
    guard: ProcessGuard,
    kind: AgentKind,
    binary: PathBuf,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl HostAgent {
    /// Starts `kind` with the safety block list and waits for its socket.
    pub fn start(kind: AgentKind) -> Result<Self, String> {
        Self::start_with(kind, &binary_for(kind)?, &[])
    }

    /// Starts `binary` (labelled as `kind`) with extra command-line arguments and waits for its
    /// socket.
    pub fn start_with(kind: AgentKind, binary: &Path, extra: &[&str]) -> Result<Self, String> {
        let mut agent = Self::spawn_with(kind, binary, extra)?;
        wait_for_path(&agent.socket, &mut agent.guard, Duration::from_secs(20))?;
        Ok(agent)
    }

    /// Starts `binary` without waiting for anything (for start-up measurements).
    pub fn spawn_with(kind: AgentKind, binary: &Path, extra: &[&str]) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", kind.label()))
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let socket = dir.path().join("sock");
        let state = dir.path().join("state");
        let work = dir.path().join("work");
        let conf = dir.path().join("qemu-ga.conf");
        for d in [&state, &work] {
            std::fs::create_dir(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
        }
        std::fs::write(&conf, "[general]\n").map_err(|e| format!("write config: {e}"))?;
        let mut cmd = Command::new(binary);
        cmd.arg("-m")
            .arg("unix-listen")
            .arg("-p")
            .arg(&socket)
            .arg("-t")
            .arg(&state)
            .arg("-b")
            .arg(BLOCKED.join(","))
            .args(extra)
            .current_dir(&work)
            .env("QGA_CONF", &conf);
        let guard = ProcessGuard::spawn(kind.label(), cmd, dir.path().join("agent.log"))?;
        Ok(Self {
            guard,
            kind,
            binary: binary.to_path_buf(),
            socket,
            dir,
        })
    }

    /// Connects a client and synchronises it with the 0xFF handshake.
    pub fn connect(&self) -> Result<Client, String> {
        let mut c = self.connect_raw()?;
        c.sync_delimited().map_err(|e| {
            format!(
                "{}: sync failed: {e}; log:\n{}",
                self.kind.label(),
                self.log()
            )
        })?;
        Ok(c)
    }

    /// Connects a client without any handshake (for tests of the first bytes on a connection).
    pub fn connect_raw(&self) -> Result<Client, String> {
        Client::connect_retry(&self.socket, Duration::from_secs(10))
            .map_err(|e| format!("{}: {e}; log:\n{}", self.kind.label(), self.log()))
    }

    /// Which agent this is.
    pub fn kind(&self) -> AgentKind {
        self.kind
    }

    /// The agent's executable.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The unix socket the agent listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The agent's private directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The agent's working directory (relative paths in requests resolve here).
    pub fn work_dir(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The agent's state directory (`-t`).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The agent's PID.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// The agent's output so far (last 8 KiB).
    pub fn log(&self) -> String {
        self.guard.log_tail(8192)
    }

    /// The process guard, e.g. to check it is still running.
    pub fn guard_mut(&mut self) -> &mut ProcessGuard {
        &mut self.guard
    }

    /// SIGTERM and wait (at most 10 s, then SIGKILL); returns the exit status.
    pub fn stop(mut self) -> Option<ExitStatus> {
        self.guard.terminate(Duration::from_secs(10))
    }
}
