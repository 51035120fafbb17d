//! The parser's per-level state, kept in a slice the platform owns so that nesting costs no
//! stack and no recursion; the response writer reuses the same slice to echo an `id` of any
//! depth without recursion.

/// Parser state for one open `{` or `[`. Opaque; platforms only size the slice.
///
/// Its fields are plain integers, and all-zero bytes are [`NestSlot::EMPTY`]: a platform may
/// hand the engine memory its OS zeroed (untouched pages cost no RAM until used). That stays
/// true: a field that could not be zero would break such platforms.
#[derive(Clone, Copy, Debug, Default)]
pub struct NestSlot {
    /// Tape position of the container's tag.
    pub(crate) start: usize,
    /// Bloom filter of the object's keys (duplicate detection).
    pub(crate) bloom: u64,
    /// How many keys the object has so far.
    pub(crate) keys: u32,
    /// What the parser expected in the enclosing container.
    pub(crate) parent: u8,
    pub(crate) flags: u8,
}

impl NestSlot {
    /// An unused slot, for static initialisers.
    pub const EMPTY: NestSlot = NestSlot {
        start: 0,
        bloom: 0,
        keys: 0,
        parent: 0,
        flags: 0,
    };
}
