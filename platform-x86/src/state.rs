//! The image's global state: the large buffers every part of the agent shares, and the boot
//! facts published once.
//!
//! They live here, below the main loop, the self-test and the built-in programs, so that each of
//! those can reach them without importing the others (the loop starts the self-test and
//! registers the programs; neither may look back up at it). Large state is `static` because
//! there is no heap, and a `static` costs `.bss` rather than image bytes or stack. Each buffer
//! is taken mutably exactly once ([`TakeOnce`]): the agent loop takes them all, or the self-test
//! does instead. The boot facts are written once at start-up and read anywhere ([`Once`]).

use agent_core::{Chunk, Frame, Nesting, StaticBuffers, Tx};

use crate::commands::{exec, files};
use crate::hw::acpi;
use crate::pvh::BootInfo;
use crate::sync::TakeOnce;
use spin::Once;

/// The engine's buffers: a 64 KiB request frame (a `guest-file-write` of 48 KiB fits), a 4 KiB
/// file chunk, a 4 KiB transmit buffer and 1024 nesting slots (upstream's limit).
pub type Buffers = StaticBuffers<Frame<{ 64 * 1024 }>, Chunk<4096>, Tx<4096>, Nesting<1024>>;

/// The engine's buffers.
pub static AGENT_BUFFERS: TakeOnce<Buffers> = TakeOnce::new(Buffers::new());
/// The RAM file store.
pub static FILE_STORE: TakeOnce<files::RamFiles> = TakeOnce::new(files::RamFiles::new());
/// The process table.
pub static PROCESSES: TakeOnce<exec::Processes> =
    TakeOnce::new(exec::Processes::new(exec::Programs::new()));
/// What the loader told us.
pub static BOOT: Once<BootInfo> = Once::new();
/// What ACPI told us.
pub static ACPI: Once<acpi::Info> = Once::new();
