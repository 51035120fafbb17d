//! Argument decoding, as upstream's generated marshallers and `qobject-input-visitor.c` do it.
//!
//! Each command's arguments are declared once, with [`args!`](crate::args), next to the family's
//! types in `commands/<family>.rs`: a Rust struct whose fields carry their QAPI member name,
//! QAPI type and optionality. A family decodes its command's arguments once, in one step
//! (`take`): [`validate`] walks the struct's member table in schema order and stops at the first
//! failure, with upstream's text and nested path (`vcpus[0].online`), reporting keys the schema
//! does not know only after every member was visited, as `visit_check_struct` does; then
//! [`Args::read`] reads the struct. The table-driven check is one function for every command
//! (the bare-metal image counts its bytes), and the engine uses it alone for a command whose
//! family is absent, so that absent families cost no code.

use core::fmt;

use core::marker::PhantomData;

use crate::json::Value;
use crate::json::tape::{self, Kind, Number};
use crate::qdict::{g_str_hash, qdict_bucket};
use crate::reply::Reply;
use crate::schema::Family;

/// Marker for [`Member::optional`] in [`args!`](crate::args) tables.
pub const OPTIONAL: bool = true;
/// Marker for required members in [`args!`](crate::args) tables.
pub const REQUIRED: bool = false;

/// An element type of a QAPI list argument.
#[derive(Clone, Copy, Debug)]
pub enum Elem {
    /// `['str']`
    Str,
    /// A list of structs with these members.
    Struct(&'static [Member]),
}

/// A QAPI argument type.
#[derive(Clone, Copy, Debug)]
pub enum Ty {
    /// `int` (int64).
    Int,
    /// `uint64` (negative int64 values accepted and wrapped).
    Uint64,
    /// `number` (int or float).
    Number,
    /// `bool`
    Bool,
    /// `str`
    Str,
    /// An enum with these wire names.
    Enum(&'static [&'static str]),
    /// The alternate `GuestFileWhence`: int or `QGASeek` (these wire names).
    Whence(&'static [&'static str]),
    /// The alternate `GuestExecCaptureOutput`: bool or `GuestExecCaptureOutputMode` (these
    /// wire names).
    Capture(&'static [&'static str]),
    /// A list.
    List(Elem),
}

/// One member of an argument struct.
#[derive(Clone, Copy, Debug)]
pub struct Member {
    /// Wire name.
    pub name: &'static str,
    /// QAPI type.
    pub ty: Ty,
    /// Whether it may be absent.
    pub optional: bool,
}

/// An argument struct: its member table and its decoding.
pub trait Args<'t>: Sized {
    /// Members in schema order.
    const MEMBERS: &'static [Member];
    /// Read the struct from an object that passed [`validate`] against [`Args::MEMBERS`]
    /// (`None` only if the field types disagree with the table).
    fn read(v: Value<'t>) -> Option<Self>;

    /// Check and read the struct, as upstream's input visitor does: members in schema order,
    /// the first failure reported, then keys the schema does not know.
    fn decode(v: Value<'t>) -> Result<Self, ArgError<'t>> {
        validate(Self::MEMBERS, v)?;
        Self::read(v).ok_or(MISMATCH)
    }
}

/// The arguments of a command that takes none: only unknown keys can be wrong.
#[derive(Clone, Copy, Debug)]
pub struct NoArgs;

impl<'t> Args<'t> for NoArgs {
    const MEMBERS: &'static [Member] = &[];
    fn read(_: Value<'t>) -> Option<Self> {
        Some(NoArgs)
    }
}

/// A field type of an argument struct.
pub trait Arg<'t>: Sized {
    /// Read a validated value.
    fn from_value(v: Value<'t>) -> Option<Self>;
    /// Read a validated member that may be absent.
    fn from_member(v: Option<Value<'t>>) -> Option<Self> {
        Self::from_value(v?)
    }
}

impl<'t, T: Arg<'t>> Arg<'t> for Option<T> {
    fn from_value(v: Value<'t>) -> Option<Self> {
        T::from_value(v).map(Some)
    }
    fn from_member(v: Option<Value<'t>>) -> Option<Self> {
        match v {
            None => Some(None),
            Some(v) => T::from_value(v).map(Some),
        }
    }
}

impl<'t> Arg<'t> for i64 {
    fn from_value(v: Value<'t>) -> Option<Self> {
        v.as_i64()
    }
}

impl<'t> Arg<'t> for u64 {
    fn from_value(v: Value<'t>) -> Option<Self> {
        v.as_u64()
    }
}

impl<'t> Arg<'t> for f64 {
    fn from_value(v: Value<'t>) -> Option<Self> {
        v.as_f64()
    }
}

impl<'t> Arg<'t> for bool {
    fn from_value(v: Value<'t>) -> Option<Self> {
        v.as_bool()
    }
}

impl<'t> Arg<'t> for &'t str {
    fn from_value(v: Value<'t>) -> Option<Self> {
        v.as_str()
    }
}

/// A validated value kept as it is on the tape (for a string the engine decodes in place).
#[derive(Clone, Copy, Debug)]
pub struct Raw<'t>(pub Value<'t>);

impl<'t> Arg<'t> for Raw<'t> {
    fn from_value(v: Value<'t>) -> Option<Self> {
        Some(Raw(v))
    }
}

impl<'t, T: FromArg<'t> + 't> Arg<'t> for List<'t, T> {
    fn from_value(v: Value<'t>) -> Option<Self> {
        v.as_array().map(List::new)
    }
}

/// Declare a command's argument struct: fields with their wire name, QAPI type and whether
/// they are optional, in schema order.
///
/// ```ignore
/// args! {
///     /// `guest-file-read`
///     pub struct FileReadArgs<'t> {
///         handle: i64 = ("handle", Ty::Int, REQUIRED),
///         count: Option<i64> = ("count", Ty::Int, OPTIONAL),
///     }
/// }
/// ```
#[macro_export]
macro_rules! args {
    (
        $(#[$meta:meta])*
        pub struct $name:ident<$lt:lifetime> {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = ($json:literal, $qty:expr, $opt:expr) ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone)]
        pub struct $name<$lt> {
            $( $(#[$fmeta])* #[doc = concat!("`", $json, "`")] pub $field: $ty, )*
            _t: core::marker::PhantomData<&$lt ()>,
        }

        impl<$lt> $crate::commands::args::Args<$lt> for $name<$lt> {
            const MEMBERS: &'static [$crate::commands::args::Member] = &[
                $( $crate::commands::args::Member { name: $json, ty: $qty, optional: $opt }, )*
            ];
            fn read(_v: $crate::json::Value<$lt>) -> Option<Self> {
                Some($name {
                    $( $field: <$ty as $crate::commands::args::Arg<$lt>>::from_member(_v.member($json))?, )*
                    _t: core::marker::PhantomData,
                })
            }
        }
    };
}

/// A field type whose QAPI type follows from its Rust type: the member tables of
/// [`wire_struct!`](crate::wire_struct) types are built from it.
pub trait ArgType {
    /// The QAPI type.
    const TY: Ty;
    /// Whether the member may be absent.
    const OPTIONAL: bool = REQUIRED;
}

impl ArgType for i64 {
    const TY: Ty = Ty::Int;
}

impl ArgType for u64 {
    const TY: Ty = Ty::Uint64;
}

impl ArgType for f64 {
    const TY: Ty = Ty::Number;
}

impl ArgType for bool {
    const TY: Ty = Ty::Bool;
}

impl ArgType for &str {
    const TY: Ty = Ty::Str;
}

impl<T: ArgType> ArgType for Option<T> {
    const TY: Ty = T::TY;
    const OPTIONAL: bool = OPTIONAL;
}

/// Declare a QAPI struct that is both returned and taken as a list element of arguments
/// (`GuestLogicalProcessor`, `GuestMemoryBlock`), once: the struct and its response writer
/// (as [`json_struct!`](crate::json_struct) makes them), its argument member table
/// (`MEMBERS`, types from [`ArgType`]) and its reading from a validated element
/// ([`FromArg`]). Adding a field is one edit.
#[macro_export]
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty = $json:literal ),* $(,)?
        }
    ) => {
        $crate::json_struct! {
            $(#[$meta])*
            pub struct $name {
                $( $(#[$fmeta])* pub $field : $ty = $json ),*
            }
        }

        impl $name {
            /// The members as an argument, in schema order.
            pub const MEMBERS: &'static [$crate::commands::args::Member] = &[
                $( $crate::commands::args::Member {
                    name: $json,
                    ty: <$ty as $crate::commands::args::ArgType>::TY,
                    optional: <$ty as $crate::commands::args::ArgType>::OPTIONAL,
                }, )*
            ];
        }

        impl<'t> $crate::commands::args::FromArg<'t> for $name {
            fn from_arg(v: $crate::json::Value<'t>) -> Option<Self> {
                Some($name {
                    $( $field: <$ty as $crate::commands::args::Arg<'t>>::from_member(v.member($json))?, )*
                })
            }
        }
    };
}

/// Where an argument error is: `name`, `name[3]` or `name[3].inner`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Path<'t> {
    /// The top-level member.
    pub name: &'t str,
    /// The list index.
    pub index: Option<usize>,
    /// The member of the list element.
    pub inner: Option<&'t str>,
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)?;
        if let Some(i) = self.index {
            write!(f, "[{i}]")?;
        }
        if let Some(inner) = self.inner {
            write!(f, ".{inner}")?;
        }
        Ok(())
    }
}

/// What is wrong with an argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgErrorKind<'t> {
    /// `Parameter '%s' is missing`
    Missing,
    /// `Invalid parameter type for '%s', expected: %s`
    Type(&'static str),
    /// `Parameter '%s' expects %s`
    Expects(&'static str),
    /// `Parameter '%s' does not accept value '%s'`
    Value(&'t [u8]),
    /// `Parameter '%s' is unexpected`
    Unexpected,
}

/// An argument error with its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgError<'t> {
    /// Where.
    pub path: Path<'t>,
    /// What.
    pub kind: ArgErrorKind<'t>,
}

impl ArgError<'_> {
    /// Write upstream's text (unescaped: the caller escapes it into a JSON string).
    pub fn write_text(&self, w: &mut dyn FnMut(&[u8])) {
        let mut path: heapless::String<64> = heapless::String::new();
        let p = &self.path;
        w(match self.kind {
            ArgErrorKind::Type(_) => b"Invalid parameter type for '",
            _ => b"Parameter '",
        });
        w(p.name.as_bytes());
        if let Some(i) = p.index {
            use core::fmt::Write as _;
            let _ = write!(path, "[{i}]");
            w(path.as_bytes());
        }
        if let Some(inner) = p.inner {
            w(b".");
            w(inner.as_bytes());
        }
        match self.kind {
            ArgErrorKind::Missing => w(b"' is missing"),
            ArgErrorKind::Type(t) => {
                w(b"', expected: ");
                w(t.as_bytes());
            }
            ArgErrorKind::Expects(t) => {
                w(b"' expects ");
                w(t.as_bytes());
            }
            ArgErrorKind::Value(v) => {
                w(b"' does not accept value '");
                // Upstream formats the value with "%s": it ends at a NUL.
                w(v.split(|&b| b == 0).next().unwrap_or(&[]));
                w(b"'");
            }
            ArgErrorKind::Unexpected => w(b"' is unexpected"),
        }
    }
}

/// What [`Args::decode`] reports if a struct's Rust field types disagree with its member table
/// (a declaration error that the fixtures and fuzz targets would show, never a request's).
pub const MISMATCH: ArgError<'static> = ArgError {
    path: Path {
        name: "",
        index: None,
        inner: None,
    },
    kind: ArgErrorKind::Type("a value of the declared type"),
};

/// Check `obj` (an object) against `members` as upstream's input visitor would.
pub fn validate<'t>(members: &'static [Member], obj: Value<'t>) -> Result<(), ArgError<'t>> {
    validate_in(members, obj, None)
}

fn validate_in<'t>(
    members: &'static [Member],
    obj: Value<'t>,
    outer: Option<(&'t str, usize)>,
) -> Result<(), ArgError<'t>> {
    let at = |name: &'t str| match outer {
        None => Path {
            name,
            index: None,
            inner: None,
        },
        Some((o, i)) => Path {
            name: o,
            index: Some(i),
            inner: Some(name),
        },
    };
    for m in members {
        match obj.member(m.name) {
            None if m.optional => {}
            None => {
                return Err(ArgError {
                    path: at(m.name),
                    kind: ArgErrorKind::Missing,
                });
            }
            Some(v) => check(m, v, at(m.name), outer.is_none())?,
        }
    }
    if let Some(k) = first_unexpected(members, obj) {
        return Err(ArgError {
            path: at(k),
            kind: ArgErrorKind::Unexpected,
        });
    }
    Ok(())
}

/// The unknown key upstream reports first. `visit_check_struct` takes the first key left in a
/// GLib hash table that was filled in QDict order and from which every visited member was
/// removed. That order is reproduced exactly for objects of up to 7 keys (a table that never
/// resizes); for bigger objects the first unknown key in request order is reported.
fn first_unexpected<'t>(members: &[Member], obj: Value<'t>) -> Option<&'t str> {
    let known = |k: &str| members.iter().any(|m| m.name == k);
    let mut first = None;
    let mut count = 0usize;
    for (k, _) in obj.members() {
        count += 1;
        if first.is_none() && !known(k) {
            first = Some(k);
        }
    }
    first?;
    if count > 7 {
        return first;
    }
    // QDict order: ascending bucket, and the later-inserted first within a bucket.
    let mut keys: [(u32, usize, &str); 7] = [(0, 0, ""); 7];
    for (i, (k, _)) in obj.members().enumerate() {
        if let Some(slot) = keys.get_mut(i) {
            *slot = (qdict_bucket(k.as_bytes()), i, k);
        }
    }
    let keys = keys.get_mut(..count).unwrap_or(&mut []);
    keys.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    // g_hash_table_new: 8 slots, modulus 7; hashes 0 and 1 mark free and removed slots.
    let mut hashes = [0u32; 8];
    let mut names: [&str; 8] = [""; 8];
    for &(_, _, k) in keys.iter() {
        let h = g_str_hash(k.as_bytes()).max(2);
        let mut idx = (h.wrapping_mul(11) % 7) as usize;
        let mut step = 0;
        while hashes.get(idx).is_some_and(|&x| x != 0) {
            step += 1;
            idx = (idx + step) & 7;
        }
        if let (Some(hs), Some(n)) = (hashes.get_mut(idx), names.get_mut(idx)) {
            *hs = if known(k) { 1 } else { h };
            *n = k;
        }
    }
    hashes
        .iter()
        .zip(names)
        .find(|(h, _)| **h >= 2)
        .map(|(_, n)| n)
        .or(first)
}

fn check<'t>(m: &Member, v: Value<'t>, path: Path<'t>, top: bool) -> Result<(), ArgError<'t>> {
    let err = |kind| Err(ArgError { path, kind });
    let enum_check = |names: &[&str]| -> Result<(), ArgError<'t>> {
        match v.str_bytes() {
            None => Err(ArgError {
                path,
                kind: ArgErrorKind::Type("string"),
            }),
            Some(s) if names.iter().any(|n| n.as_bytes() == s) => Ok(()),
            Some(s) => Err(ArgError {
                path,
                kind: ArgErrorKind::Value(s),
            }),
        }
    };
    match m.ty {
        Ty::Int => match v.as_i64() {
            Some(_) => Ok(()),
            None => err(ArgErrorKind::Type("integer")),
        },
        Ty::Uint64 => match v.as_u64() {
            Some(_) => Ok(()),
            None => err(ArgErrorKind::Expects("uint64")),
        },
        Ty::Number => match v.kind() {
            Kind::Number => Ok(()),
            _ => err(ArgErrorKind::Type("number")),
        },
        Ty::Bool => match v.kind() {
            Kind::Bool => Ok(()),
            _ => err(ArgErrorKind::Type("boolean")),
        },
        Ty::Str => match v.kind() {
            Kind::String => Ok(()),
            _ => err(ArgErrorKind::Type("string")),
        },
        Ty::Enum(names) => enum_check(names),
        Ty::Whence(names) => match v.kind() {
            Kind::Number => match v.as_number() {
                Some(Number::Int(_)) => Ok(()),
                _ => err(ArgErrorKind::Type("integer")),
            },
            Kind::String => enum_check(names),
            _ => err(ArgErrorKind::Type("GuestFileWhence")),
        },
        Ty::Capture(names) => match v.kind() {
            Kind::Bool => Ok(()),
            Kind::String => enum_check(names),
            _ => err(ArgErrorKind::Type("GuestExecCaptureOutput")),
        },
        Ty::List(elem) => {
            let Some(items) = v.as_array() else {
                return err(ArgErrorKind::Type("array"));
            };
            // Lists of lists do not occur in the schema; lists are top-level members.
            let _ = top;
            for (i, e) in items.iter().enumerate() {
                let here = Path {
                    name: path.name,
                    index: Some(i),
                    inner: None,
                };
                match elem {
                    Elem::Str => {
                        if e.kind() != Kind::String {
                            return Err(ArgError {
                                path: here,
                                kind: ArgErrorKind::Type("string"),
                            });
                        }
                    }
                    Elem::Struct(ms) => {
                        if e.kind() != Kind::Object {
                            return Err(ArgError {
                                path: here,
                                kind: ArgErrorKind::Type("object"),
                            });
                        }
                        validate_in(ms, e, Some((path.name, i)))?;
                    }
                }
            }
            Ok(())
        }
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
    fn from_arg(v: Value<'t>) -> Option<Self>;
}

impl<'t> FromArg<'t> for &'t str {
    fn from_arg(v: Value<'t>) -> Option<Self> {
        v.as_str()
    }
}

/// The tape of `{}`: the arguments of a request without `arguments`.
static EMPTY_OBJECT: [u8; 2] = [tape::OBJ, tape::END_OBJ];

/// The arguments object at `pos` on `tape`, or `{}`.
pub(crate) fn args_value(tape: &[u8], pos: Option<usize>) -> Value<'_> {
    match pos {
        Some(p) => Value::at(tape, p),
        None => Value::at(&EMPTY_OBJECT, 0),
    }
}

/// A command's arguments, checked and read in one step, or `None` after answering their
/// error. The engine calls a family only when the family serves the command, so by then the
/// only thing left to answer is the arguments (upstream reports them first).
pub(crate) fn take<'t, A: Args<'t>>(
    r: &mut Reply<'_, '_>,
    tape: &'t [u8],
    pos: Option<usize>,
) -> Option<A> {
    let v = args_value(tape, pos);
    if !admit(r, tape, v, A::MEMBERS, true) {
        return None;
    }
    let a = A::read(v);
    if a.is_none() {
        mismatch(r, tape);
    }
    a
}

/// [`take`] for a command without arguments: whether the request had no stray keys.
pub(crate) fn serve(r: &mut Reply<'_, '_>, tape: &[u8], pos: Option<usize>) -> bool {
    admit(r, tape, args_value(tape, pos), &[], true)
}

/// A struct whose field types disagree with its member table: a declaration error, answered
/// as one so that the request still gets its one response.
#[inline(never)]
fn mismatch(r: &mut Reply<'_, '_>, tape: &[u8]) {
    r.error(tape, "GenericError", |o| {
        MISMATCH.write_text(&mut |b| o.string_body(b))
    });
}

/// Answer an argument error (checked against `members`), or upstream's unsupported error if
/// the command is not `served`; else flush what is buffered before a backend runs. Whether
/// the command runs. (Not generic: one copy for every command.)
#[inline(never)]
pub(crate) fn admit(
    r: &mut Reply<'_, '_>,
    tape: &[u8],
    v: Value<'_>,
    members: &'static [Member],
    served: bool,
) -> bool {
    if let Err(e) = validate(members, v) {
        r.error(tape, "GenericError", |o| {
            e.write_text(&mut |b| o.string_body(b))
        });
        return false;
    }
    if !served {
        r.generic(tape, crate::error::UNSUPPORTED);
        return false;
    }
    if r.cmd.family() != Family::Core {
        // A backend may take long or never return (guest-shutdown): answers buffered for the
        // requests before this one leave first.
        r.out.flush_completed();
    }
    true
}
