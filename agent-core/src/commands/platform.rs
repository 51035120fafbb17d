//! What a platform provides: one accessor per family, and whether a command is served. Below
//! `guest-info` (which reports it) and above the families (whose traits it hands out).

use super::{
    clock, cpus, disks, exec, files, filesystems, memory, network, power, ssh_keys, system, users,
};
use crate::schema::{Command, Family};

/// What a platform provides. Every method has a default of "not provided".
///
/// A platform returns the families it has; `guest-info` and the engine follow from that (see
/// [`supported`] and [the rule](super#guest-info-tells-the-truth)):
///
/// ```
/// use agent_core::Result;
/// use agent_core::commands::{clock::Clock, supported};
/// use agent_core::{Command, Platform};
///
/// struct Counter(i64);
/// impl Clock for Counter {
///     fn get_time(&mut self) -> Result<i64> {
///         self.0 += 1;
///         Ok(self.0)
///     }
/// }
///
/// struct Board {
///     clock: Counter,
/// }
/// impl Platform for Board {
///     fn clock(&mut self) -> Option<&mut dyn Clock> {
///         Some(&mut self.clock)
///     }
/// }
///
/// let mut board = Board { clock: Counter(0) };
/// assert!(supported(&mut board, Command::GuestPing)); // the core: always
/// assert!(supported(&mut board, Command::GuestGetTime));
/// assert!(!supported(&mut board, Command::GuestSetTime)); // no `set_time`
/// assert!(!supported(&mut board, Command::GuestFileOpen)); // no `files`
/// ```
pub trait Platform {
    /// The version `guest-info` reports.
    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }
    /// `guest-get-time`, `guest-set-time`.
    fn clock(&mut self) -> Option<&mut dyn clock::Clock> {
        None
    }
    /// `guest-shutdown`, `guest-suspend-*`.
    fn power(&mut self) -> Option<&mut dyn power::Power> {
        None
    }
    /// `guest-file-*`.
    fn files(&mut self) -> Option<&mut dyn files::Files> {
        None
    }
    /// `guest-fsfreeze-*`, `guest-fstrim`.
    fn filesystems(&mut self) -> Option<&mut dyn filesystems::Filesystems> {
        None
    }
    /// `guest-get-fsinfo`, `guest-get-disks`, `guest-get-diskstats`.
    fn disks(&mut self) -> Option<&mut dyn disks::Disks> {
        None
    }
    /// `guest-network-get-interfaces`, `guest-network-get-route`.
    fn network(&mut self) -> Option<&mut dyn network::Network> {
        None
    }
    /// `guest-get-vcpus`, `guest-set-vcpus`, `guest-get-cpustats`, `guest-get-load`.
    fn cpus(&mut self) -> Option<&mut dyn cpus::Cpus> {
        None
    }
    /// `guest-get-memory-blocks`, `guest-set-memory-blocks`, `guest-get-memory-block-info`.
    fn memory(&mut self) -> Option<&mut dyn memory::Memory> {
        None
    }
    /// `guest-get-users`, `guest-set-user-password`.
    fn users(&mut self) -> Option<&mut dyn users::Users> {
        None
    }
    /// `guest-ssh-*-authorized-keys`.
    fn ssh_keys(&mut self) -> Option<&mut dyn ssh_keys::SshKeys> {
        None
    }
    /// `guest-exec`, `guest-exec-status`.
    fn exec(&mut self) -> Option<&mut dyn exec::Exec> {
        None
    }
    /// `guest-get-host-name`, `guest-get-timezone`, `guest-get-osinfo`, `guest-get-devices`.
    fn system(&mut self) -> Option<&mut dyn system::System> {
        None
    }
}

/// Whether `platform` serves `cmd`: its family is provided and says it supports `cmd`.
pub fn supported(platform: &mut dyn Platform, cmd: Command) -> bool {
    match cmd.family() {
        Family::Core => true,
        Family::Clock => platform.clock().is_some_and(|b| b.supports(cmd)),
        Family::Power => platform.power().is_some_and(|b| b.supports(cmd)),
        Family::Files => platform.files().is_some_and(|b| b.supports(cmd)),
        Family::Filesystems => platform.filesystems().is_some_and(|b| b.supports(cmd)),
        Family::Disks => platform.disks().is_some_and(|b| b.supports(cmd)),
        Family::Network => platform.network().is_some_and(|b| b.supports(cmd)),
        Family::Cpus => platform.cpus().is_some_and(|b| b.supports(cmd)),
        Family::Memory => platform.memory().is_some_and(|b| b.supports(cmd)),
        Family::Users => platform.users().is_some_and(|b| b.supports(cmd)),
        Family::SshKeys => platform.ssh_keys().is_some_and(|b| b.supports(cmd)),
        Family::Exec => platform.exec().is_some_and(|b| b.supports(cmd)),
        Family::System => platform.system().is_some_and(|b| b.supports(cmd)),
    }
}
