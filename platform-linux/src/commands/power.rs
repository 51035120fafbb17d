//! `guest-shutdown` and `guest-suspend-*` on Linux.
//!
//! Shutdown is upstream master's: `/sbin/poweroff`, `/sbin/halt` or `/sbin/reboot` with no
//! arguments when executable (BusyBox systems), else `/sbin/shutdown -h -P|-H|-r +0
//! "hypervisor initiated shutdown"`, and the helper's failure is the command's error. Beyond
//! upstream, two cases that leave an initramfs without a working helper:
//! - no helper at all: the agent syncs and calls `reboot(2)` itself (`RB_POWER_OFF`,
//!   `RB_HALT_SYSTEM` or `RB_AUTOBOOT`);
//! - the agent is PID 1 (an initramfs whose init is `qga`): the helpers work by signalling
//!   init, which would be us, so the agent does the same `sync` + `reboot(2)` directly.
//!
//! And a third, which upstream misses: a helper that exits 0 without anything happening.
//! BusyBox's `poweroff`, `halt` and `reboot` only signal PID 1; when PID 1 is a plain shell
//! script (a common initramfs), it ignores the signal and the guest keeps running while the host
//! was told nothing. The rule: after a helper exited 0, the agent expects to be stopped (SIGTERM)
//! as part of the shutdown. If it is still running [`FALLBACK_SHELL_INIT`] later and PID 1 is a
//! shell (its `argv[0]` is `sh`, `ash`, `bash`, `dash`, `hush`, `ksh`, `mksh`, `zsh` or
//! `busybox`), or [`FALLBACK_ANY_INIT`] later whatever PID 1 is, it syncs and calls `reboot(2)`
//! itself with the requested mode. A real init (systemd, BusyBox init, sysvinit) stops the agent
//! long before either limit, so on those systems nothing changes.
//!
//! Suspend tries upstream's three mechanisms in upstream's order with upstream's texts:
//! systemd (`systemctl status systemd-<unit>` exiting 1-3 means the unit exists), pm-utils
//! (`pm-is-supported`), and `/sys/power/state` (`disk` / `mem`; hybrid has no sysfs method).

#![allow(
    clippy::result_large_err,
    reason = "agent_core::Error holds its message inline, by design: no allocation"
)]

use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use agent_core::Command;
use agent_core::commands::power::{Power, ShutdownMode, SuspendMode};
use agent_core::{Error, Result};
use rustix::system::RebootCommand;

const SYS_POWER_STATE: &str = "/sys/power/state";

/// How long the agent waits to be stopped after a shutdown helper exited 0, when PID 1 is a
/// shell that cannot act on the helper's signal.
pub const FALLBACK_SHELL_INIT: Duration = Duration::from_secs(5);
/// How long it waits whatever PID 1 is: a shutdown that leaves the agent running this long
/// is not happening.
pub const FALLBACK_ANY_INIT: Duration = Duration::from_secs(300);

/// The Linux power control.
#[derive(Debug, Default)]
pub struct LinuxPower {
    /// A shutdown a helper accepted: when to do it ourselves, and how.
    pending: Option<(Instant, RebootCommand)>,
}

impl LinuxPower {
    /// When [`Self::service`] has something to do, for the event loop's timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.map(|(t, _)| t)
    }

    /// Carry out a pending shutdown whose time has come (see the module docs).
    pub fn service(&mut self) {
        let Some((when, cmd)) = self.pending else {
            return;
        };
        if Instant::now() < when {
            return;
        }
        self.pending = None;
        crate::log!(
            crate::log::Level::Critical,
            "the shutdown helper exited 0 but the system is still up: calling reboot(2) directly"
        );
        rustix::fs::sync();
        if let Err(e) = rustix::system::reboot(cmd) {
            crate::log!(
                crate::log::Level::Critical,
                "reboot(2) failed: {}",
                crate::config::strerror(e.raw_os_error())
            );
        }
    }

    /// Arm the fallback after a helper accepted the request.
    fn expect_stop(&mut self, cmd: RebootCommand) {
        let wait = if init_is_a_shell(&std::fs::read("/proc/1/cmdline").unwrap_or_default()) {
            FALLBACK_SHELL_INIT
        } else {
            FALLBACK_ANY_INIT
        };
        crate::log!(
            crate::log::Level::Info,
            "shutdown helper succeeded; reboot(2) in {} s unless the agent is stopped",
            wait.as_secs()
        );
        self.pending = Some((Instant::now() + wait, cmd));
    }
}

/// Whether PID 1's command line (`/proc/1/cmdline`) names a shell, which cannot act on the
/// signals BusyBox's helpers send (a script run as init has the interpreter as `argv[0]`).
fn init_is_a_shell(cmdline: &[u8]) -> bool {
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let name = argv0.rsplit(|&b| b == b'/').next().unwrap_or_default();
    let name = name.strip_prefix(b"-").unwrap_or(name); // a login shell's "-sh"
    matches!(
        name,
        b"sh" | b"ash" | b"bash" | b"dash" | b"hush" | b"ksh" | b"mksh" | b"zsh" | b"busybox"
    )
}

impl Power for LinuxPower {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }

    fn shutdown(&mut self, mode: ShutdownMode) -> Result<()> {
        crate::log!(
            crate::log::Level::Info,
            "guest-shutdown called, mode: {}",
            mode.as_str()
        );
        let (helper, flag, reboot_cmd) = match mode {
            ShutdownMode::Powerdown => ("/sbin/poweroff", "-P", RebootCommand::PowerOff),
            ShutdownMode::Halt => ("/sbin/halt", "-H", RebootCommand::Halt),
            ShutdownMode::Reboot => ("/sbin/reboot", "-r", RebootCommand::Restart),
        };
        let shutdown = "/sbin/shutdown";
        if std::process::id() != 1 {
            if crate::run::executable(helper) {
                crate::run::run_command(&[helper], None, "shutdown")?;
                self.expect_stop(reboot_cmd);
                return Ok(());
            }
            if crate::run::executable(shutdown) {
                crate::run::run_command(
                    &[shutdown, "-h", flag, "+0", "hypervisor initiated shutdown"],
                    None,
                    "shutdown",
                )?;
                self.expect_stop(reboot_cmd);
                return Ok(());
            }
        }
        crate::log!(
            crate::log::Level::Info,
            "no shutdown helper: calling reboot(2) directly"
        );
        rustix::fs::sync();
        rustix::system::reboot(reboot_cmd).map_err(|e| {
            Error::msg(format_args!(
                "failed to shutdown: {}",
                crate::config::strerror(e.raw_os_error())
            ))
        })
    }

    fn suspend(&mut self, mode: SuspendMode) -> Result<()> {
        crate::log!(
            crate::log::Level::Info,
            "guest-suspend-{} called",
            mode.as_str()
        );
        let mut supported = false;
        let mut last: Option<Error> = None;

        if systemd_supports(mode) {
            supported = true;
            match systemd_suspend(mode) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        match pmutils_supports(mode) {
            Ok(true) => {
                supported = true;
                match pmutils_suspend(mode) {
                    Ok(()) => return Ok(()),
                    Err(e) => last = Some(e),
                }
            }
            Ok(false) => {}
            Err(e) => last = Some(e),
        }
        if let Some(word) = sysfs_word(mode)
            && sysfs_supports(word)
        {
            supported = true;
            match std::fs::write(SYS_POWER_STATE, word) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = Some(Error::msg(format_args!(
                        "suspend: cannot write to '{SYS_POWER_STATE}': {}",
                        crate::config::io_text(&e)
                    )))
                }
            }
        }
        if !supported {
            return Err(Error::msg(format_args!(
                "the requested suspend mode is not supported by the guest"
            )));
        }
        Err(last.unwrap_or_else(|| {
            Error::msg(format_args!(
                "the requested suspend mode is not supported by the guest"
            ))
        }))
    }
}

/// upstream's `run_process_child`: run with stdout and stderr to /dev/null, searched in PATH.
/// `Ok(None)` when the program does not exist.
fn run_quiet(argv: &[&str]) -> std::result::Result<Option<i32>, Error> {
    let Some((prog, args)) = argv.split_first() else {
        return Ok(None);
    };
    let mut cmd = Process::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match cmd.status() {
        Ok(st) => Ok(Some(st.code().unwrap_or(-1))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::msg(format_args!(
            "failed to dispatch sync command: {}",
            crate::config::io_text(&e)
        ))),
    }
}

fn systemd_supports(mode: SuspendMode) -> bool {
    let unit = match mode {
        SuspendMode::Disk => "systemd-hibernate",
        SuspendMode::Ram => "systemd-suspend",
        SuspendMode::Hybrid => "systemd-hybrid-sleep",
    };
    // LSB status codes: 1-3 mean the unit exists but is not running; 4 means no such unit.
    matches!(run_quiet(&["systemctl", "status", unit]), Ok(Some(1..=3)))
}

fn systemd_suspend(mode: SuspendMode) -> Result<()> {
    let verb = match mode {
        SuspendMode::Disk => "hibernate",
        SuspendMode::Ram => "suspend",
        SuspendMode::Hybrid => "hybrid-sleep",
    };
    match run_quiet(&["systemctl", verb])? {
        Some(0) => Ok(()),
        None => Err(Error::msg(format_args!(
            "the helper program 'systemctl {verb}' was not found"
        ))),
        Some(code) => Err(Error::msg(format_args!(
            "the helper program 'systemctl {verb}' returned an unexpected exit status code ({code})"
        ))),
    }
}

fn pmutils_supports(mode: SuspendMode) -> Result<bool> {
    let arg = match mode {
        SuspendMode::Disk => "--hibernate",
        SuspendMode::Ram => "--suspend",
        SuspendMode::Hybrid => "--suspend-hybrid",
    };
    match run_quiet(&["pm-is-supported", arg])? {
        Some(0) => Ok(true),
        None | Some(1) => Ok(false),
        Some(code) => Err(Error::msg(format_args!(
            "the helper program 'pm-is-supported' returned an unexpected exit status code ({code})"
        ))),
    }
}

fn pmutils_suspend(mode: SuspendMode) -> Result<()> {
    let prog = match mode {
        SuspendMode::Disk => "pm-hibernate",
        SuspendMode::Ram => "pm-suspend",
        SuspendMode::Hybrid => "pm-suspend-hybrid",
    };
    match run_quiet(&[prog])? {
        Some(0) => Ok(()),
        None => Err(Error::msg(format_args!(
            "the helper program '{prog}' was not found"
        ))),
        Some(code) => Err(Error::msg(format_args!(
            "the helper program '{prog}' returned an unexpected exit status code ({code})"
        ))),
    }
}

fn sysfs_word(mode: SuspendMode) -> Option<&'static str> {
    match mode {
        SuspendMode::Disk => Some("disk"),
        SuspendMode::Ram => Some("mem"),
        SuspendMode::Hybrid => None,
    }
}

fn sysfs_supports(word: &str) -> bool {
    std::fs::read_to_string(SYS_POWER_STATE).is_ok_and(|s| s.split_whitespace().any(|w| w == word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_inits_are_shells() {
        assert!(init_is_a_shell(b"/bin/sh\0/init\0"));
        assert!(init_is_a_shell(b"-sh\0"));
        assert!(init_is_a_shell(b"/bin/busybox\0sh\0/init\0"));
        assert!(!init_is_a_shell(b"/init\0"));
        assert!(!init_is_a_shell(b"/sbin/init\0splash\0"));
        assert!(!init_is_a_shell(
            b"/usr/lib/systemd/systemd\0--switched-root\0"
        ));
        assert!(!init_is_a_shell(b""));
        // Nothing is pending until a helper succeeded, and servicing then does nothing.
        let mut p = LinuxPower::default();
        assert_eq!(p.deadline(), None);
        p.service();
    }
}
