//! The Linux implementations of the command families, one file per family, named as in
//! `agent_core::commands` (`files.rs` serves `guest-file-*`, `ssh_keys.rs` the ssh key commands,
//! and so on).
//!
//! [`LinuxPlatform`] owns one backend per family and hands them to the engine; a family that is
//! not wired answers upstream's unsupported error and shows `"enabled": false`.

use agent_core::Platform;
use agent_core::commands as core;

pub mod clock;
pub mod cpus;
pub mod disks;
pub mod exec;
pub mod files;
pub mod filesystems;
pub mod memory;
pub mod network;
pub mod power;
pub mod ssh_keys;
pub mod system;
pub mod users;

/// Every Linux backend.
#[derive(Default)]
pub struct LinuxPlatform {
    /// `guest-get-time`, `guest-set-time`.
    pub clock: clock::LinuxClock,
    /// `guest-shutdown`, `guest-suspend-*`.
    pub power: power::LinuxPower,
    /// `guest-file-*` (set up by `main` with the state directory).
    pub files: files::LinuxFiles,
    /// `guest-fsfreeze-*`, `guest-fstrim` (set up by `main`).
    pub filesystems: filesystems::LinuxFilesystems,
    /// `guest-exec*` (serviced by `main`'s event loop).
    pub exec: exec::LinuxExec,
    system: system::LinuxSystem,
    ssh_keys: ssh_keys::LinuxSshKeys,
    users: users::LinuxUsers,
    disks: disks::LinuxDisks,
    network: network::LinuxNetwork,
    memory: memory::LinuxMemory,
    cpus: cpus::LinuxCpus,
}

impl Platform for LinuxPlatform {
    fn clock(&mut self) -> Option<&mut dyn core::clock::Clock> {
        Some(&mut self.clock)
    }
    fn power(&mut self) -> Option<&mut dyn core::power::Power> {
        Some(&mut self.power)
    }
    fn files(&mut self) -> Option<&mut dyn core::files::Files> {
        Some(&mut self.files)
    }
    fn filesystems(&mut self) -> Option<&mut dyn core::filesystems::Filesystems> {
        Some(&mut self.filesystems)
    }
    fn exec(&mut self) -> Option<&mut dyn core::exec::Exec> {
        Some(&mut self.exec)
    }
    fn disks(&mut self) -> Option<&mut dyn core::disks::Disks> {
        Some(&mut self.disks)
    }
    fn network(&mut self) -> Option<&mut dyn core::network::Network> {
        Some(&mut self.network)
    }
    fn cpus(&mut self) -> Option<&mut dyn core::cpus::Cpus> {
        Some(&mut self.cpus)
    }
    fn memory(&mut self) -> Option<&mut dyn core::memory::Memory> {
        Some(&mut self.memory)
    }
    fn users(&mut self) -> Option<&mut dyn core::users::Users> {
        Some(&mut self.users)
    }
    fn ssh_keys(&mut self) -> Option<&mut dyn core::ssh_keys::SshKeys> {
        Some(&mut self.ssh_keys)
    }
    fn system(&mut self) -> Option<&mut dyn core::system::System> {
        Some(&mut self.system)
    }
}
