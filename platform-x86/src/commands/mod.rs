//! The backends of the bare-metal image, one file per `agent_core::commands` family and named
//! after it, and the [`Machine`] that hands them to the engine.
//!
//! Served: time ([`clock`]), shutdown and reboot ([`power`]), the RAM file store ([`files`]),
//! vCPUs ([`cpus`]), memory blocks ([`memory`]), host name, time zone and OS info ([`system`]),
//! built-in programs ([`exec`]); users, network and disks answer empty lists ([`users`],
//! [`network`], [`disks`]). Everything else (fsfreeze, fstrim, suspend, set-vcpus, set-memory-
//! blocks, cpustats, load, passwords, ssh keys, devices) is unsupported and shows
//! `enabled: false` in `guest-info`.

pub mod clock;
pub mod cpus;
pub mod disks;
pub mod exec;
pub mod files;
pub mod memory;
pub mod network;
pub mod power;
pub mod system;
pub mod users;

use agent_core::Platform;
use agent_core::commands as fam;

/// Every backend, borrowed for the life of the agent.
pub struct Machine<'a> {
    /// The wall clock.
    pub clock: clock::RtcClock,
    /// ACPI power control.
    pub power: power::AcpiPower,
    /// The RAM file store.
    pub files: &'a mut files::RamFiles,
    /// The processors.
    pub cpus: cpus::MadtCpus<'a>,
    /// Memory blocks.
    pub memory: memory::MapMemory<'a>,
    /// Host name, time zone, OS info.
    pub system: system::ConfiguredSystem<'a>,
    /// Built-in programs.
    pub exec: &'a mut exec::Processes,
    /// No users.
    pub users: users::NoUsers,
    /// No network.
    pub network: network::NoNetwork,
    /// No disks.
    pub disks: disks::NoDisks,
}

impl Platform for Machine<'_> {
    fn clock(&mut self) -> Option<&mut dyn fam::clock::Clock> {
        Some(&mut self.clock)
    }
    fn power(&mut self) -> Option<&mut dyn fam::power::Power> {
        Some(&mut self.power)
    }
    fn files(&mut self) -> Option<&mut dyn fam::files::Files> {
        Some(self.files)
    }
    fn disks(&mut self) -> Option<&mut dyn fam::disks::Disks> {
        Some(&mut self.disks)
    }
    fn network(&mut self) -> Option<&mut dyn fam::network::Network> {
        Some(&mut self.network)
    }
    fn cpus(&mut self) -> Option<&mut dyn fam::cpus::Cpus> {
        Some(&mut self.cpus)
    }
    fn memory(&mut self) -> Option<&mut dyn fam::memory::Memory> {
        Some(&mut self.memory)
    }
    fn users(&mut self) -> Option<&mut dyn fam::users::Users> {
        Some(&mut self.users)
    }
    fn exec(&mut self) -> Option<&mut dyn fam::exec::Exec> {
        Some(self.exec)
    }
    fn system(&mut self) -> Option<&mut dyn fam::system::System> {
        Some(&mut self.system)
    }
}
