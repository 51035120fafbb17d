//! `qga`: the Linux guest agent, a drop-in for `qemu-ga`.
//!
//! One statically linkable executable (no GLib, no shared libraries), so it can be copied into
//! any guest or initramfs. The protocol is `agent_core`'s; this crate adds what a Linux host
//! needs around it: upstream's options and config file ([`config`]), the four channels
//! ([`transport`]), the state directory ([`state`]), logging ([`mod@log`]), signals ([`signals`]),
//! daemonizing ([`daemon`]) and the command families ([`commands`]).
//!
//! Everything runs on one thread in one `poll(2)` loop over the channel, the signal pipe and
//! the output pipes of `guest-exec` children. One thread is enough because every command
//! either finishes quickly or runs a helper whose completion is what the client waits for
//! (upstream is single-threaded in the same way), and it makes the stop path simple and sure:
//! a SIGTERM or SIGINT ends the loop at the next wake-up, frozen filesystems are thawed, and
//! the process exits with status 0, every time.
//!
//! The version is this project's own (`QEMU Guest Agent 0.1.0` for `-V`, `"version": "0.1.0"`
//! in `guest-info`): claiming a QEMU version would be a lie about the code behind it.
//!
//! Raw OS access that needs `unsafe` lives in [`sys`] alone, as small safe wrappers; the rest
//! of the crate is safe Rust, which `deny(unsafe_code)` keeps true.

#![deny(unsafe_code)]

mod commands;
mod config;
mod daemon;
mod keyfile;
mod log;
mod run;
mod signals;
mod state;
mod strerror;
#[allow(unsafe_code)]
mod sys;
mod transport;

use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use agent_core::engine::{Buffers, DEFAULT_NESTING};
use agent_core::{Agent, Platform as _};
use rustix::event::{PollFd, PollFlags, Timespec};

use crate::config::{Config, Outcome};
use crate::log::Level;
use crate::signals::Signals;
use crate::transport::{Channel, Method};

/// A `guest-file-write` whose `buf-b64` passes this many bytes is written to its file a
/// window at a time while it arrives (`Agent::stream_writes`), so the frame buffer (as large
/// as the largest request, `--max-request-size`, allocated zeroed) has only about this much of
/// it touched: a 48 MiB write costs 256 KiB of it instead of 64 MiB.
const WRITE_WINDOW: usize = 256 * 1024;
/// The part of the frame buffer that stays resident between requests; the pages a larger
/// request touched are given back once it has been answered, so a 48 MiB write does not leave
/// the agent at 64 MiB of RSS.
const FRAME_KEEP_RESIDENT: usize = 1024 * 1024;
/// The `guest-file-read` chunk: big reads, few system calls.
const CHUNK_SIZE: usize = 256 * 1024;
/// Responses are written in pieces of this size.
const TX_SIZE: usize = 256 * 1024;
/// Bytes read from the channel at once.
const READ_SIZE: usize = 64 * 1024;
/// `QGA_RETRY_INTERVAL`.
const RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// The real environment for option parsing.
struct SysEnv {
    activation: Result<Option<&'static str>, String>,
}

impl config::Env for SysEnv {
    fn qga_conf(&self) -> Option<String> {
        std::env::var("QGA_CONF").ok()
    }
    fn read(&self, path: &str) -> std::io::Result<Vec<u8>> {
        let meta = std::fs::metadata(path)?;
        if !meta.is_file() {
            return Err(std::io::Error::other("Not a regular file"));
        }
        std::fs::read(path)
    }
    fn socket_activation(&self) -> Result<Option<&'static str>, String> {
        self.activation.clone()
    }
}

fn critical(msg: &str) {
    log::log(Level::Critical, msg);
}

fn main() {
    let code = real_main();
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

fn real_main() -> i32 {
    let args: Vec<_> = std::env::args_os().collect();
    let (activation, activated_fd) = match transport::socket_activation() {
        Ok(Some((m, fd))) => (Ok(Some(m)), Some(fd)),
        Ok(None) => (Ok(None), None),
        Err(e) => (Err(e), None),
    };
    let config = match config::parse(&args, &SysEnv { activation }) {
        Outcome::Run(c) => c,
        Outcome::Exit {
            stdout,
            stderr,
            code,
        } => {
            print!("{stdout}");
            if stderr.ends_with('\n') {
                eprint!("{stderr}");
            } else if !stderr.is_empty() {
                critical(&stderr);
            }
            return code;
        }
    };
    run_agent(config, activated_fd)
}

fn run_agent(config: Config, activated_fd: Option<OwnedFd>) -> i32 {
    log::set_verbose(config.verbose);
    let Some(method) = Method::from_name(&config.method) else {
        critical(&format!(
            "unsupported channel method/type: {}",
            config.method
        ));
        critical("failed to initialize guest agent channel");
        return 1;
    };
    // Handlers first: a SIGTERM during start-up also ends in an orderly exit with status 0.
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            critical(&format!(
                "error configuring signal handler: {}",
                config::io_text(&e)
            ));
            return 1;
        }
    };
    let statedir = Path::new(&config.statedir);
    // The directory is opened once, here, before the log file (whether a previous instance
    // left filesystems frozen decides when the log is opened); it is created and checked
    // below, once the log can say so.
    let isfrozen = statedir.join(state::ISFROZEN_FILE);
    let access_error = |e: &std::io::Error| {
        critical(&format!(
            "unable to access state file at path {}: {}",
            isfrozen.display(),
            config::io_text(e)
        ));
    };
    let existing = match state::StateDir::open_existing(statedir) {
        Ok(d) => Some(d),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            access_error(&e);
            return 1;
        }
    };
    let frozen = match existing.as_ref().map(|d| d.exists(state::ISFROZEN_FILE)) {
        None | Some(Ok(false)) => false,
        Some(Ok(true)) => true,
        Some(Err(e)) => {
            access_error(&e);
            return 1;
        }
    };
    // The log file first (unlike upstream), so that it gets every line, the first included.
    let mut deferred_log = None;
    if let Some(path) = &config.logfile {
        if frozen {
            deferred_log = Some(path.clone());
        } else if let Err(e) = log::open_file(path) {
            critical(&format!(
                "unable to open specified log file: {}",
                config::io_text(&e)
            ));
            return 1;
        }
    }
    crate::log!(
        Level::Debug,
        "Guest agent version {} started",
        config::VERSION
    );
    if frozen {
        crate::log!(
            Level::Warning,
            "previous instance appears to have exited with frozen filesystems. deferring logging/pidfile \
             creation and disabling non-fsfreeze-safe commands until guest-fsfreeze-thaw is issued, or \
             filesystems are manually unfrozen and the file {} is removed",
            isfrozen.display()
        );
    }
    if config.daemonize {
        let pidfile = (!frozen).then_some(config.pidfile.as_str());
        if let Err(e) = daemon::become_daemon(pidfile) {
            critical(&e);
            return 1;
        }
    }
    let dir = match existing {
        Some(d) => d.check().map(|()| d),
        None => state::StateDir::open(statedir),
    };
    let pstate = match dir.and_then(|d| state::PersistentState::load(d, frozen)) {
        Ok(s) => s,
        Err(e) => {
            critical(&e);
            critical("failed to load persistent state");
            return 1;
        }
    };

    let mut platform = commands::LinuxPlatform::default();
    platform.filesystems = commands::filesystems::LinuxFilesystems::new(
        pstate.dir().clone(),
        config.fsfreeze_hook.clone(),
        frozen,
    );
    platform.files = commands::files::LinuxFiles::new(pstate);
    platform.filesystems.deferred_log = deferred_log;
    if config.daemonize && frozen {
        platform.filesystems.deferred_pidfile = Some(config.pidfile.clone());
    }

    let mut frame = vec![0u8; config.max_request];
    let mut chunk = vec![0u8; CHUNK_SIZE];
    let mut tx = vec![0u8; TX_SIZE];
    let nesting = sys::process::nesting_table(DEFAULT_NESTING);
    let mut agent = match Agent::new(Buffers {
        frame: &mut frame,
        chunk: &mut chunk,
        tx: &mut tx,
        nesting,
    }) {
        Ok(agent) => agent,
        Err(e) => {
            critical(&format!("agent buffers: {e}"));
            return 1;
        }
    };
    *agent.policy_mut() = config.policy();
    agent.stream_writes(WRITE_WINDOW);
    // At the default level (upstream logs nothing): `-b guest-exce` leaves guest-exec enabled,
    // and whoever wrote it should learn that at once. The agent still starts, as upstream.
    for name in config.unknown_names() {
        crate::log!(
            Level::Critical,
            "ignoring unknown command name in the block/allow list: {name}"
        );
    }
    for c in agent_core::Command::ALL {
        if !agent.policy().enabled(*c, false) {
            crate::log!(Level::Debug, "disabling command: {}", c.name());
        }
    }

    let mut activated_fd = activated_fd;
    let mut read_buf = vec![0u8; READ_SIZE];
    loop {
        let mut channel = match Channel::open(method, config.path.as_deref(), activated_fd.take()) {
            Ok(c) => c,
            Err(msg) => {
                critical(&msg);
                critical("failed to initialize guest agent channel");
                if !config.retry_path {
                    finish(&mut platform);
                    return 1;
                }
                crate::log!(Level::Warning, "waiting for channel path...");
                if sleep_or_term(&signals, RETRY_INTERVAL) {
                    break;
                }
                continue;
            }
        };
        agent.reset();
        let end = serve(
            &mut channel,
            &mut agent,
            &mut platform,
            &signals,
            &mut read_buf,
        );
        channel.cleanup();
        match end {
            LoopEnd::Term => break,
            LoopEnd::Channel(msg) => {
                crate::log!(Level::Warning, "{msg}");
                if !config.retry_path {
                    break;
                }
                crate::log!(Level::Warning, "agent stopped unexpectedly, restarting...");
                if sleep_or_term(&signals, RETRY_INTERVAL) {
                    break;
                }
            }
        }
    }
    if let Some(sig) = signals::term_requested() {
        crate::log!(Level::Debug, "received signal num {sig}, quitting");
    }
    finish(&mut platform);
    0
}

/// The stop path: thaw what we froze, close files, remove the pid file.
fn finish(platform: &mut commands::LinuxPlatform) {
    if platform.filesystems.is_frozen() {
        crate::log!(Level::Debug, "thawing filesystems before exiting");
        if let Some(fs) = platform.filesystems()
            && let Err(e) = fs.thaw()
        {
            crate::log!(Level::Warning, "failed to clean up frozen filesystems: {e}");
        }
    }
    platform.files.close_all();
    daemon::remove_pidfile();
}

/// Wait `d` unless a termination signal comes first (then `true`).
fn sleep_or_term(signals: &Signals, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    loop {
        if signals::term_requested().is_some() {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = signals::wait_fd(
            Some(signals),
            signals.fd(),
            PollFlags::empty(),
            Some(left.as_millis() as u64 + 1),
        );
    }
}

enum LoopEnd {
    Term,
    Channel(String),
}

/// The event loop for one open channel.
fn serve(
    channel: &mut Channel,
    agent: &mut Agent<'_>,
    platform: &mut commands::LinuxPlatform,
    signals: &Signals,
    read_buf: &mut [u8],
) -> LoopEnd {
    let mut next_probe = Instant::now();
    // Bytes received since the frame buffer's pages were last given back.
    let mut fed_since_release = 0usize;
    loop {
        if signals::term_requested().is_some() {
            return LoopEnd::Term;
        }
        let (sig_ready, chan_ready) = {
            let chan = channel.wait_fd();
            let timeout = match chan {
                Some(_) => None,
                None => Some(next_probe.saturating_duration_since(Instant::now())),
            };
            // A shutdown a helper accepted but nobody carried out (see commands::power).
            let timeout = match (timeout, platform.power.deadline()) {
                (t, None) => t,
                (None, Some(d)) => Some(d.saturating_duration_since(Instant::now())),
                (Some(t), Some(d)) => Some(t.min(d.saturating_duration_since(Instant::now()))),
            };
            let mut fds = vec![PollFd::from_borrowed_fd(signals.fd(), PollFlags::IN)];
            if let Some((fd, ev)) = chan {
                fds.push(PollFd::from_borrowed_fd(fd, ev));
            }
            for (fd, ev) in platform.exec.poll_fds() {
                fds.push(PollFd::from_borrowed_fd(fd, ev));
            }
            let ts = timeout.map(|t| Timespec {
                tv_sec: t.as_secs() as i64,
                tv_nsec: i64::from(t.subsec_nanos()),
            });
            match rustix::event::poll(&mut fds, ts.as_ref()) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    return LoopEnd::Channel(format!(
                        "poll failed: {}",
                        config::strerror(e.raw_os_error())
                    ));
                }
            }
            let sig_ready = !fds[0].revents().is_empty();
            let chan_ready = match chan {
                Some(_) => !fds[1].revents().is_empty(),
                None => Instant::now() >= next_probe,
            };
            (sig_ready, chan_ready)
        };
        if sig_ready {
            signals.drain();
        }
        let _ = signals::take_child_exited();
        platform.exec.service();
        if signals::term_requested().is_some() {
            return LoopEnd::Term;
        }
        platform.power.service();
        if signals::term_requested().is_some() {
            return LoopEnd::Term;
        }
        if chan_ready {
            if let Err(e) = channel.service(agent, platform, signals, read_buf) {
                return LoopEnd::Channel(e.0);
            }
            fed_since_release = fed_since_release.saturating_add(channel.take_fed());
            if fed_since_release > FRAME_KEEP_RESIDENT
                && let Some(frame) = agent.idle_frame()
            {
                sys::process::release_pages(
                    frame.get_mut(FRAME_KEEP_RESIDENT..).unwrap_or_default(),
                );
                fed_since_release = 0;
            }
            if channel.wait_fd().is_none() {
                next_probe = Instant::now() + transport::PROBE_INTERVAL;
            }
        }
    }
}
