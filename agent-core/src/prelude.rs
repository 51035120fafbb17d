//! Everything an embedding names, in one import: `use agent_core::prelude::*;`.
//!
//! `Result` is left out on purpose: a glob import of it would shadow `core::result::Result` in
//! the embedder's module. Name it `agent_core::Result` (the backend result, with
//! [`Error`]).

pub use crate::commands::args::{FromArg, List, StrList};
pub use crate::commands::clock::Clock;
pub use crate::commands::cpus::Cpus;
pub use crate::commands::disks::Disks;
pub use crate::commands::exec::Exec;
pub use crate::commands::files::Files;
pub use crate::commands::filesystems::Filesystems;
pub use crate::commands::memory::Memory;
pub use crate::commands::network::Network;
pub use crate::commands::platform::Platform;
pub use crate::commands::power::Power;
pub use crate::commands::ssh_keys::SshKeys;
pub use crate::commands::system::System;
pub use crate::commands::users::Users;
pub use crate::engine::{
    Agent, BufferError, Buffers, Chunk, Frame, NestSlot, Nesting, StaticBuffers, Tx, run,
};
pub use crate::error::Error;
pub use crate::out::{Base64, Element, Emitter, ItemSink, Transmit, TxError, WriteWith};
pub use crate::policy::Policy;
pub use crate::schema::Command;
