//! Command families: for each, the argument and return types of its commands and the backend
//! trait a platform implements to serve them.
//!
//! Families are grouped by what a platform can provide (a clock, power control, files, ...)
//! rather than one trait per command, so a bare-metal image implements four small traits and a
//! Linux host all of them. A platform that lacks a family returns `None` from the matching
//! [`Platform`] method; a family that serves only some of its commands says so in `supports`.
//! Either way the engine answers upstream's unsupported error and `guest-info` shows
//! `"enabled": false`.
//!
//! # `guest-info` tells the truth
//!
//! A command shows `"enabled": true` in `guest-info` exactly when the engine would run it, and
//! the engine runs it exactly when its family is provided and the family's `supports` says yes.
//! The traits make the obvious code truthful: in each family, a method without a default body
//! is required, and a method with one is optional (its default answers upstream's unsupported
//! error). The default `supports` claims exactly the required methods' commands, so a platform
//! that leaves an optional method out is truthful without writing anything more. A platform
//! that implements an optional method overrides `supports` to claim it; forgetting shows the
//! command as disabled and refuses it, which is wrong but never a lie. A required method must
//! not answer [`crate::Error::Unsupported`]: a platform that cannot serve it does not provide
//! the family, or refuses the command in `supports`.
//!
//! Return values are written straight into the response: single results are returned as
//! borrowed structs, and lists are handed element by element to an [`Emitter`], so the engine
//! never collects a list and a list's length is not bounded by memory.
//!
//! Each module here is named after its family: `Family::Clock`, the `Clock` trait, the
//! `Platform::clock` accessor and `commands::clock` are one name, and so are the platform
//! crates' files (`platform-linux/src/commands/clock.rs`, `platform-x86/src/commands/clock.rs`).

pub mod args;
pub mod clock;
pub mod core;
pub mod cpus;
pub mod disks;
pub mod exec;
pub mod files;
pub mod filesystems;
pub mod memory;
pub mod network;
pub mod platform;
pub mod power;
pub mod ssh_keys;
pub mod system;
pub mod users;

pub use crate::out::{Base64, Element, Emitter, ItemSink, Member, WriteWith};
pub use args::{FromArg, List, StrList};
pub use platform::{Platform, supported};

use crate::schema::{Command, Family};
use args::Member as ArgMember;

/// The argument members of `cmd`, from its family's table.
pub fn members(cmd: Command) -> &'static [ArgMember] {
    match cmd.family() {
        Family::Core => self::core::members(cmd),
        Family::Clock => clock::members(cmd),
        Family::Power => power::members(cmd),
        Family::Files => files::members(cmd),
        Family::Filesystems => filesystems::members(cmd),
        Family::Disks | Family::Network | Family::System => &[],
        Family::Cpus => cpus::members(cmd),
        Family::Memory => memory::members(cmd),
        Family::Users => users::members(cmd),
        Family::SshKeys => ssh_keys::members(cmd),
        Family::Exec => exec::members(cmd),
    }
}
