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
//! Each file here is named after its family, as are the platform files that implement it
//! (`platform-linux/src/commands/file.rs`, `platform-x86/src/commands/file.rs`).

use ::core::marker::PhantomData;

use crate::out::{ListWriter, ObjectWriter, Out, ToJson};

pub mod args;
pub mod core;
pub mod cpu;
pub mod disk;
pub mod exec;
pub mod file;
pub mod fs;
pub mod memory;
pub mod network;
pub mod power;
pub mod ssh;
pub mod system;
pub mod time;
pub mod user;

pub use crate::error::{Error, Result};

use crate::engine::{Policy, Reply};
use crate::schema::{Command, Family};
use args::Member as ArgMember;

/// The argument members of `cmd`, from its family's table.
pub fn members(cmd: Command) -> &'static [ArgMember] {
    match cmd.family() {
        Family::Core => self::core::members(cmd),
        Family::Clock => time::members(cmd),
        Family::Power => power::members(cmd),
        Family::Files => file::members(cmd),
        Family::Filesystems => fs::members(cmd),
        Family::Disks | Family::Network | Family::System => &[],
        Family::Cpus => cpu::members(cmd),
        Family::Memory => memory::members(cmd),
        Family::Users => user::members(cmd),
        Family::SshKeys => ssh::members(cmd),
        Family::Exec => exec::members(cmd),
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

/// Run `cmd` (arguments validated, family supported) and write its response.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    cmd: Command,
    r: &mut Reply<'_, '_>,
    frame: &mut [u8],
    args: Option<usize>,
    chunk: &mut [u8],
    platform: &mut dyn Platform,
    policy: &Policy,
    frozen: bool,
) {
    let unsupported =
        |r: &mut Reply<'_, '_>, frame: &[u8]| r.generic(frame, crate::error::UNSUPPORTED);
    if cmd.family() != Family::Core {
        // A backend may take long or never return (guest-shutdown): answers buffered for the
        // requests before this one leave first.
        r.out.flush_completed();
    }
    match cmd.family() {
        Family::Core => self::core::run(cmd, r, frame, args, platform, policy, frozen),
        Family::Clock => match platform.clock() {
            Some(b) => time::run(cmd, r, frame, args, b),
            None => unsupported(r, frame),
        },
        Family::Power => match platform.power() {
            Some(b) => power::run(cmd, r, frame, args, b),
            None => unsupported(r, frame),
        },
        Family::Files => match platform.files() {
            Some(b) => file::run(cmd, r, frame, args, chunk, b),
            None => unsupported(r, frame),
        },
        Family::Filesystems => match platform.filesystems() {
            Some(b) => fs::run(cmd, r, frame, args, b),
            None => unsupported(r, frame),
        },
        Family::Disks => match platform.disks() {
            Some(b) => disk::run(cmd, r, frame, b),
            None => unsupported(r, frame),
        },
        Family::Network => match platform.network() {
            Some(b) => network::run(cmd, r, frame, b),
            None => unsupported(r, frame),
        },
        Family::Cpus => match platform.cpus() {
            Some(b) => cpu::run(cmd, r, frame, args, b),
            None => unsupported(r, frame),
        },
        Family::Memory => match platform.memory() {
            Some(b) => memory::run(cmd, r, frame, args, b),
            None => unsupported(r, frame),
        },
        Family::Users => match platform.users() {
            Some(b) => user::run(cmd, r, frame, args, b),
            None => unsupported(r, frame),
        },
        Family::SshKeys => match platform.ssh_keys() {
            Some(b) => ssh::run(cmd, r, frame, args, b),
            None => unsupported(r, frame),
        },
        Family::Exec => match platform.exec() {
            Some(b) => exec::run(cmd, r, frame, args, b),
            None => unsupported(r, frame),
        },
        Family::System => match platform.system() {
            Some(b) => system::run(cmd, r, frame, b),
            None => unsupported(r, frame),
        },
    }
}

/// Base64 digit values; [`B64_PAD`] for `=`, [`B64_SKIP`] for `\n`, [`B64_BAD`] for the rest.
// Indexing in a const initialiser is checked at compile time.
#[allow(clippy::indexing_slicing)]
const B64_RANK: [u8; 256] = {
    let mut t = [B64_BAD; 256];
    let mut i = 0;
    while i < 26 {
        t[b'A' as usize + i] = i as u8;
        t[b'a' as usize + i] = 26 + i as u8;
        i += 1;
    }
    let mut d = 0;
    while d < 10 {
        t[b'0' as usize + d] = 52 + d as u8;
        d += 1;
    }
    t[b'+' as usize] = 62;
    t[b'/' as usize] = 63;
    t[b'=' as usize] = B64_PAD;
    t[b'\n' as usize] = B64_SKIP;
    t
};
const B64_PAD: u8 = 64;
const B64_SKIP: u8 = 65;
const B64_BAD: u8 = 66;

fn b64_rank(b: u8) -> u8 {
    B64_RANK.get(b as usize).copied().unwrap_or(B64_BAD)
}

/// Base64 characters checked and decoded at once on the SIMD path (a multiple of four).
#[cfg(feature = "simd")]
const SIMD_BLOCK: usize = if cfg!(test) { 64 } else { 1024 };

/// Decode the base64 string at `start..start+len` of `buf` in place, as upstream does: the
/// character set (`A-Za-z0-9+/=` and `\n`) is checked first ("Base64 data contains invalid
/// characters"), then GLib's `g_base64_decode` runs, which skips newlines, treats `=` as a zero
/// digit that also marks padding, and drops an incomplete final group. Returns the decoded
/// length (the bytes now at `start..`).
pub(crate) fn base64_decode_in_place(buf: &mut [u8], start: usize, len: usize) -> Option<usize> {
    use base64::Engine as _;
    let end = start.checked_add(len)?;
    buf.get(start..end)?;
    let mut w = start;
    let mut r = start;
    let mut v: u32 = 0;
    let mut i = 0;
    let mut last = [0u8; 2];
    // With `simd`: no fast-path attempt before here (set past a block that failed the check,
    // so a payload with newlines costs one failed check per block, not one per group).
    #[cfg(feature = "simd")]
    let mut simd_from = start;
    // An invalid character anywhere is an error; the buffer's content no longer matters then,
    // so validation and decoding share one pass.
    while r < end {
        // Fastest path: a long run of plain digits, checked and decoded with SIMD.
        #[cfg(feature = "simd")]
        if i == 0 && r >= simd_from && end - r >= SIMD_BLOCK {
            let block = r..r + SIMD_BLOCK;
            let plain = buf
                .get(block.clone())
                .is_some_and(|b| base64_simd::STANDARD_NO_PAD.check(b).is_ok());
            if plain {
                if w != r {
                    buf.copy_within(block, w);
                }
                let decoded = buf
                    .get_mut(w..w + SIMD_BLOCK)
                    .and_then(|b| base64_simd::STANDARD_NO_PAD.decode_inplace(b).ok())
                    .map(|d| d.len());
                let Some(n) = decoded else {
                    // Not reached (the block was checked), but never decode garbage.
                    return None;
                };
                // Only plain digits: nothing to remember for the padding rule.
                last = [b'A', b'A'];
                w += n;
                r += SIMD_BLOCK;
                continue;
            }
            simd_from = r + SIMD_BLOCK;
        }
        // Fast path: whole blocks of plain digits decode exactly as standard base64 does.
        const BLOCK: usize = 256;
        if i == 0 && end - r >= BLOCK {
            let mut tmp = [0u8; BLOCK];
            if let Some(src) = buf.get(r..r + BLOCK) {
                tmp.copy_from_slice(src);
            }
            let mut out = [0u8; BLOCK / 4 * 3];
            if let Ok(n) =
                base64::engine::general_purpose::STANDARD_NO_PAD.decode_slice(tmp, &mut out)
                && let Some(dst) = buf.get_mut(w..w + n)
            {
                dst.copy_from_slice(out.get(..n).unwrap_or(&[]));
                last = [tmp[BLOCK - 1], tmp[BLOCK - 2]];
                w += n;
                r += BLOCK;
                continue;
            }
        }
        let c = buf.get(r).copied().unwrap_or(0);
        r += 1;
        let rank = match b64_rank(c) {
            B64_PAD => 0,
            B64_SKIP => continue,
            B64_BAD => return None,
            x => x,
        };
        last[1] = last[0];
        last[0] = c;
        v = (v << 6) | rank as u32;
        i += 1;
        if i == 4 {
            let mut put = |b: u8| {
                if let Some(slot) = buf.get_mut(w) {
                    *slot = b;
                }
                w += 1;
            };
            put((v >> 16) as u8);
            if last[1] != b'=' {
                put((v >> 8) as u8);
            }
            if last[0] != b'=' {
                put(v as u8);
            }
            i = 0;
        }
    }
    Some(w - start)
}

/// What a platform provides. Every method has a default of "not provided".
pub trait Platform {
    /// The version `guest-info` reports.
    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }
    /// `guest-get-time`, `guest-set-time`.
    fn clock(&mut self) -> Option<&mut dyn time::Clock> {
        None
    }
    /// `guest-shutdown`, `guest-suspend-*`.
    fn power(&mut self) -> Option<&mut dyn power::Power> {
        None
    }
    /// `guest-file-*`.
    fn files(&mut self) -> Option<&mut dyn file::Files> {
        None
    }
    /// `guest-fsfreeze-*`, `guest-fstrim`.
    fn filesystems(&mut self) -> Option<&mut dyn fs::Filesystems> {
        None
    }
    /// `guest-get-fsinfo`, `guest-get-disks`, `guest-get-diskstats`.
    fn disks(&mut self) -> Option<&mut dyn disk::Disks> {
        None
    }
    /// `guest-network-get-interfaces`, `guest-network-get-route`.
    fn network(&mut self) -> Option<&mut dyn network::Network> {
        None
    }
    /// `guest-get-vcpus`, `guest-set-vcpus`, `guest-get-cpustats`, `guest-get-load`.
    fn cpus(&mut self) -> Option<&mut dyn cpu::Cpus> {
        None
    }
    /// `guest-get-memory-blocks`, `guest-set-memory-blocks`, `guest-get-memory-block-info`.
    fn memory(&mut self) -> Option<&mut dyn memory::Memory> {
        None
    }
    /// `guest-get-users`, `guest-set-user-password`.
    fn users(&mut self) -> Option<&mut dyn user::Users> {
        None
    }
    /// `guest-ssh-*-authorized-keys`.
    fn ssh_keys(&mut self) -> Option<&mut dyn ssh::SshKeys> {
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

/// A list in a request's arguments, already validated: iterating cannot fail.
pub struct List<'t, T> {
    items: crate::json::Array<'t>,
    _t: PhantomData<fn() -> T>,
}

impl<'t, T: FromArg<'t> + 't> List<'t, T> {
    pub(crate) fn new(items: crate::json::Array<'t>) -> Self {
        List {
            items,
            _t: PhantomData,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements, in request order.
    pub fn iter(&self) -> impl Iterator<Item = T> + 't {
        self.items.iter().filter_map(T::from_arg)
    }
}

impl<T> Clone for List<'_, T> {
    fn clone(&self) -> Self {
        List {
            items: self.items,
            _t: PhantomData,
        }
    }
}

/// A list of strings in a request's arguments.
pub type StrList<'t> = List<'t, &'t str>;

/// A type a validated argument value converts to. Conversion only fails if validation was
/// skipped, in which case the element is left out.
pub trait FromArg<'t>: Sized {
    /// Convert a validated value.
    fn from_arg(v: crate::json::Value<'t>) -> Option<Self>;
}

impl<'t> FromArg<'t> for &'t str {
    fn from_arg(v: crate::json::Value<'t>) -> Option<Self> {
        v.as_str()
    }
}

/// A list element type, named by its `'static` form: `Emitter<'_, GuestUser<'static>>` takes
/// `GuestUser<'x>` for any `'x`, so a backend can emit elements that borrow its local data.
pub trait Element {
    /// The element type with borrowed data of lifetime `'x`.
    type Of<'x>: ToJson;
}

impl Element for &'static str {
    type Of<'x> = &'x str;
}

/// Hands the elements of a list result to the response as they are produced.
pub struct Emitter<'e, T: ?Sized> {
    sink: &'e mut dyn ItemSink,
    count: usize,
    _t: PhantomData<fn(&T)>,
}

/// Where an [`Emitter`] puts elements; hides the writer's lifetimes. Implemented by
/// [`ListWriter`], so a platform's tests can render what a backend emits.
pub trait ItemSink {
    /// Write one element.
    fn item(&mut self, v: &dyn ToJson);
}

impl ItemSink for ListWriter<'_, '_> {
    fn item(&mut self, v: &dyn ToJson) {
        self.next().value(v);
    }
}

impl<'e, T: Element + ?Sized> Emitter<'e, T> {
    /// An emitter writing into `sink`.
    pub fn new(sink: &'e mut dyn ItemSink) -> Self {
        Emitter {
            sink,
            count: 0,
            _t: PhantomData,
        }
    }

    /// Write one element.
    pub fn emit(&mut self, item: &T::Of<'_>) {
        self.sink.item(&item);
        self.count += 1;
    }

    /// How many elements were written.
    pub fn count(&self) -> usize {
        self.count
    }
}

/// Writes one object member, omitting an absent optional one. Used by [`json_struct!`](crate::json_struct).
pub trait Member {
    /// Write `self` as the member `name`, unless it is an absent option.
    fn write_member(&self, w: &mut ObjectWriter<'_, '_>, name: &str);
}

impl<T: ToJson> Member for T {
    fn write_member(&self, w: &mut ObjectWriter<'_, '_>, name: &str) {
        w.member(name, self);
    }
}

impl<T: ToJson> Member for Option<T> {
    fn write_member(&self, w: &mut ObjectWriter<'_, '_>, name: &str) {
        w.optional(name, self);
    }
}

/// A return struct: Rust fields with their QAPI member names, written in declaration order.
/// `Option` fields are QAPI optional members and are omitted when `None`.
#[macro_export]
macro_rules! json_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident $(<$lt:lifetime>)? {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty = $json:literal ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct $name $(<$lt>)? {
            $( $(#[$fmeta])* #[doc = concat!("`", $json, "`")] pub $field: $ty, )*
        }

        impl $(<$lt>)? $crate::out::ToJson for $name $(<$lt>)? {
            fn write_json(&self, out: &mut $crate::out::Out<'_>) {
                out.object(|_w| {
                    $( $crate::commands::Member::write_member(&self.$field, _w, $json); )*
                });
            }
        }

        $crate::json_struct!(@element $name $(<$lt>)?);
    };
    (@element $name:ident <$lt:lifetime>) => {
        impl $crate::commands::Element for $name<'static> {
            type Of<'x> = $name<'x>;
        }
    };
    (@element $name:ident) => {
        impl $crate::commands::Element for $name {
            type Of<'x> = $name;
        }
    };
}

/// A QAPI enum: Rust variants with their wire names, written as strings.
#[macro_export]
macro_rules! json_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $json:literal ),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* #[doc = concat!("`", $json, "`")] $variant, )*
        }

        impl $name {
            /// Every value, in schema order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The wire name.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $json,)* }
            }

            /// The value with this wire name.
            pub fn from_name(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl $crate::out::ToJson for $name {
            fn write_json(&self, out: &mut $crate::out::Out<'_>) {
                out.str(self.as_str());
            }
        }
    };
}

/// A value written by a closure: for results a backend prefers to stream itself.
pub struct WriteWith<F: Fn(&mut Out<'_>)>(pub F);

impl<F: Fn(&mut Out<'_>)> ToJson for WriteWith<F> {
    fn write_json(&self, out: &mut Out<'_>) {
        (self.0)(out);
    }
}

/// Bytes written as a base64 JSON string (standard alphabet, padded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Base64<'a>(pub &'a [u8]);

impl ToJson for Base64<'_> {
    fn write_json(&self, out: &mut Out<'_>) {
        out.base64(|b| b.push(self.0));
    }
}
