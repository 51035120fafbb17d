//! `guest-get-memory-blocks`, `guest-set-memory-blocks` and `guest-get-memory-block-info`.

use super::args::{Elem, Member, REQUIRED, Ty};
use super::args::{List, serve, take};
use crate::error::Result;
use crate::out::Emitter;
use crate::reply::Reply;
use crate::schema::Command;

crate::args! {
    /// The arguments of `guest-set-memory-blocks`.
    pub struct SetMemoryBlocksArgs<'t> {
        mem_blks: List<'t, GuestMemoryBlock> = ("mem-blks", Ty::List(Elem::Struct(GuestMemoryBlock::MEMBERS)), REQUIRED),
    }
}

pub(crate) fn members(cmd: Command) -> &'static [Member] {
    use super::args::Args as _;
    match cmd {
        Command::GuestSetMemoryBlocks => SetMemoryBlocksArgs::MEMBERS,
        _ => &[],
    }
}

pub(crate) fn run(
    cmd: Command,
    r: &mut Reply<'_, '_>,
    frame: &mut [u8],
    args: Option<usize>,
    b: &mut dyn Memory,
) {
    let tape: &[u8] = frame;
    match cmd {
        Command::GuestGetMemoryBlocks => {
            if !serve(r, tape, args) {
                return;
            }
            r.list(tape, None, |e| b.blocks(e))
        }
        Command::GuestSetMemoryBlocks => {
            let Some(a) = take::<SetMemoryBlocksArgs<'_>>(r, tape, args) else {
                return;
            };
            r.list(tape, None, |e| b.set_blocks(a.mem_blks, e));
        }
        _ => {
            if !serve(r, tape, args) {
                return;
            }
            let res = b.block_info();
            r.result(tape, res, "");
        }
    }
}

crate::wire_struct! {
    /// `GuestMemoryBlock`: returned by `guest-get-memory-blocks`, taken by the setter.
    pub struct GuestMemoryBlock {
        pub phys_index: u64 = "phys-index",
        pub online: bool = "online",
        pub can_offline: Option<bool> = "can-offline",
    }
}

crate::json_enum! {
    /// `GuestMemoryBlockResponseType`.
    pub enum GuestMemoryBlockResponseType {
        Success = "success",
        NotFound = "not-found",
        OperationNotSupported = "operation-not-supported",
        OperationFailed = "operation-failed",
    }
}

#[allow(clippy::derivable_impls)] // the enum comes from json_enum!
impl Default for GuestMemoryBlockResponseType {
    fn default() -> Self {
        GuestMemoryBlockResponseType::Success
    }
}

crate::json_struct! {
    /// `GuestMemoryBlockResponse`.
    pub struct GuestMemoryBlockResponse {
        pub phys_index: u64 = "phys-index",
        pub response: GuestMemoryBlockResponseType = "response",
        pub error_code: Option<i64> = "error-code",
    }
}

crate::json_struct! {
    /// `GuestMemoryBlockInfo`.
    pub struct GuestMemoryBlockInfo {
        pub size: u64 = "size",
    }
}

/// Hot-pluggable memory blocks. `set_blocks` is optional, the others are required
/// ([the `guest-info` rule](super#guest-info-tells-the-truth)).
pub trait Memory {
    /// Whether `cmd` (one of this family's) works here: by default exactly the commands of
    /// the required methods ([the rule](super#guest-info-tells-the-truth)). Override it to
    /// claim an optional method you implement, or to refuse a command at run time.
    fn supports(&self, cmd: Command) -> bool {
        cmd != Command::GuestSetMemoryBlocks
    }

    /// `guest-get-memory-blocks`.
    fn blocks(&mut self, out: &mut Emitter<'_, GuestMemoryBlock>) -> Result<()>;

    /// `guest-set-memory-blocks`: one response per requested block.
    /// Optional.
    fn set_blocks(
        &mut self,
        blocks: List<'_, GuestMemoryBlock>,
        out: &mut Emitter<'_, GuestMemoryBlockResponse>,
    ) -> Result<()> {
        let _ = (blocks, out);
        Err(crate::error::Error::Unsupported)
    }

    /// `guest-get-memory-block-info`.
    fn block_info(&mut self) -> Result<GuestMemoryBlockInfo>;
}
