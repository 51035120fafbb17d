//! The response envelope around a command's result: `{"return": ...}` or `{"error": ...}`,
//! the echoed `id` in upstream's member order, and the 0xFF of `guest-sync-delimited`. Command
//! families write through it and the engine writes its own errors through it, so it sits below
//! both.

use core::fmt;

use crate::error::{Error, Result};
use crate::json::NestSlot;
use crate::json::Value;
use crate::json::tape::{self, Number};
use crate::out::{Element, Emitter, Out, ToJson};
use crate::qdict::qdict_bucket;
use crate::schema::Command;

/// A request's response: the envelope around a command's result or error.
pub(crate) struct Reply<'c, 'a> {
    pub(crate) out: &'c mut Out<'a>,
    id: Option<usize>,
    pub(crate) cmd: Command,
    nest: &'c mut [NestSlot],
    /// Prefix the success response with 0xFF (`guest-sync-delimited`).
    pub(crate) delimit: bool,
    /// Bytes of a streamed `guest-file-write` already in the file: an error says so.
    pub(crate) written: u64,
}

impl<'c, 'a> Reply<'c, 'a> {
    pub(crate) fn new(
        out: &'c mut Out<'a>,
        id: Option<usize>,
        cmd: Command,
        nest: &'c mut [NestSlot],
    ) -> Self {
        Reply {
            out,
            id,
            cmd,
            nest,
            delimit: false,
            written: 0,
        }
    }

    fn write_id(&mut self, tape: &[u8]) {
        if let Some(p) = self.id {
            self.out.raw(b", \"id\": ");
            write_value(self.out, tape, p, self.nest);
        }
    }

    /// A success response whose value `f` writes (nothing for `success-response: false`).
    pub(crate) fn ok(&mut self, tape: &[u8], f: impl FnOnce(&mut Out<'a>)) {
        if !self.cmd.success_response() {
            return;
        }
        if self.delimit {
            self.out.raw(&[0xFF]);
        }
        self.out.raw(b"{\"return\": ");
        f(self.out);
        self.write_id(tape);
        self.out.raw(b"}\n");
    }

    /// `{"return": {}}`.
    pub(crate) fn ok_empty(&mut self, tape: &[u8]) {
        self.ok(tape, |o| o.raw(b"{}"));
    }

    /// A success response holding one value.
    pub(crate) fn ok_value<T: ToJson + ?Sized>(&mut self, tape: &[u8], v: &T) {
        self.ok(tape, |o| o.value(v));
    }

    /// An error response; `desc` writes the escaped body of the description.
    pub(crate) fn error(&mut self, tape: &[u8], class: &str, desc: impl FnOnce(&mut Out<'a>)) {
        self.out.raw(b"{");
        if let Some(p) = self.id {
            self.out.raw(b"\"id\": ");
            write_value(self.out, tape, p, self.nest);
            self.out.raw(b", ");
        }
        self.out.raw(b"\"error\": {\"class\": \"");
        self.out.raw(class.as_bytes());
        self.out.raw(b"\", \"desc\": \"");
        desc(self.out);
        if self.written > 0 {
            self.out.raw(b" (");
            self.out.uint(self.written);
            self.out.raw(b" bytes were already written to the file)");
        }
        self.out.raw(b"\"}}\n");
    }

    /// A GenericError with a fixed text.
    pub(crate) fn generic(&mut self, tape: &[u8], text: &str) {
        self.error(tape, "GenericError", |o| o.string_body(text.as_bytes()));
    }

    /// A GenericError with a formatted text.
    pub(crate) fn generic_fmt(&mut self, tape: &[u8], args: fmt::Arguments<'_>) {
        self.error(tape, "GenericError", |o| {
            let mut w = EscapeWriter(o);
            let _ = fmt::Write::write_fmt(&mut w, args);
        });
    }

    /// A backend's error; an OS error gets `prefix` (upstream's `error_setg_errno` context)
    /// when `prefix` is not empty.
    pub(crate) fn fail(&mut self, tape: &[u8], e: &Error, prefix: &str) {
        match e {
            Error::Os(_, text) if !prefix.is_empty() => {
                self.generic_fmt(tape, format_args!("{prefix}: {text}"))
            }
            e => self.generic_fmt(tape, format_args!("{e}")),
        }
    }

    /// A command result of `Result<()>`.
    pub(crate) fn unit(&mut self, tape: &[u8], r: Result<()>, prefix: &str) {
        match r {
            Ok(()) => self.ok_empty(tape),
            Err(e) => self.fail(tape, &e, prefix),
        }
    }

    /// A command result of one value.
    pub(crate) fn result<T: ToJson>(&mut self, tape: &[u8], r: Result<T>, prefix: &str) {
        match r {
            Ok(v) => self.ok_value(tape, &v),
            Err(e) => self.fail(tape, &e, prefix),
        }
    }

    /// A streamed list result, optionally wrapped in `{"<wrap>": [...]}`. If the backend fails
    /// after part of the list was sent, the list is closed and the response ends as a success
    /// holding the elements sent so far (the bytes on the wire cannot be taken back).
    pub(crate) fn list<T: Element + ?Sized>(
        &mut self,
        tape: &[u8],
        wrap: Option<&str>,
        f: impl FnOnce(&mut Emitter<'_, T>) -> Result<()>,
    ) {
        let mut res = Ok(());
        self.out.raw(b"{\"return\": ");
        if let Some(w) = wrap {
            self.out.raw(b"{");
            self.out.str(w);
            self.out.raw(b": ");
        }
        self.out.list(|l| {
            let mut em = Emitter::new(l);
            res = f(&mut em);
        });
        if wrap.is_some() {
            self.out.raw(b"}");
        }
        if let Err(e) = res
            && self.out.rollback()
        {
            self.fail(tape, &e, "");
            return;
        }
        self.write_id(tape);
        self.out.raw(b"}\n");
    }

    /// Finish a success response whose `{"return": ` and value the caller wrote itself.
    pub(crate) fn finish_ok(&mut self, tape: &[u8]) {
        self.write_id(tape);
        self.out.raw(b"}\n");
    }
}

/// Formats into a JSON string body.
struct EscapeWriter<'o, 'a>(&'o mut Out<'a>);

impl fmt::Write for EscapeWriter<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.string_body(s.as_bytes());
        Ok(())
    }
}

/// Objects of at most this many members are echoed in upstream's QDict order; bigger ones in
/// request order (choosing the next member is a walk over the object).
const ORDERED_MEMBERS: u32 = 64;

const W_OBJ: u8 = 1;
const W_ORDERED: u8 = 2;
const W_STARTED: u8 = 4;

/// Write the value at `pos` as upstream's writer does, without recursion: `nest` is the stack.
/// Object members come in QDict order (ascending bucket, later key first within a bucket), as
/// upstream re-serialises a parsed object, for objects of up to 64 members.
pub(crate) fn write_value(out: &mut Out<'_>, tape: &[u8], pos: usize, nest: &mut [NestSlot]) {
    let mut depth = 0usize;
    // Write one value; push a frame for a container. Returns false on a damaged tape.
    let open = |out: &mut Out<'_>, p: usize, depth: &mut usize, nest: &mut [NestSlot]| -> bool {
        let v = Value::at(tape, p);
        match tape.get(p) {
            Some(&tape::OBJ) | Some(&tape::ARR) => {
                let obj = tape.get(p) == Some(&tape::OBJ);
                out.raw(if obj { b"{" } else { b"[" });
                let count = if obj { v.members().count() as u32 } else { 0 };
                let flags = if obj && count <= ORDERED_MEMBERS {
                    W_OBJ | W_ORDERED
                } else if obj {
                    W_OBJ
                } else {
                    0
                };
                match nest.get_mut(*depth) {
                    Some(slot) => {
                        *slot = NestSlot {
                            start: p + 1,
                            bloom: 0,
                            keys: count,
                            parent: 0,
                            flags,
                        };
                        *depth += 1;
                    }
                    None => {
                        // Deeper than the parser allows: cannot happen; close it empty.
                        out.raw(if obj { b"}" } else { b"]" });
                    }
                }
            }
            Some(&tape::STR) => out.string(v.str_bytes().unwrap_or(&[])),
            Some(&tape::NUM) => match v.as_number() {
                Some(Number::Int(i)) => out.int(i),
                Some(Number::Uint(u)) => out.uint(u),
                Some(Number::Float(f)) => out.number(f),
                None => out.raw(b"0"),
            },
            Some(&tape::TRUE) => out.raw(b"true"),
            Some(&tape::FALSE) => out.raw(b"false"),
            Some(&tape::NULL) => out.raw(b"null"),
            _ => return false,
        }
        true
    };
    if !open(out, pos, &mut depth, nest) {
        return;
    }
    while depth > 0 {
        let Some(top) = nest.get_mut(depth - 1) else {
            return;
        };
        let started = top.flags & W_STARTED != 0;
        // The next member or element: (key, value position).
        let next: Option<(Option<&[u8]>, usize)> = if top.flags & W_ORDERED != 0 {
            // The member of smallest QDict rank above the last one written.
            let obj = Value::at(tape, top.start - 1);
            let mut best: Option<(u64, &[u8], usize)> = None;
            for (i, (k, v)) in obj.members().enumerate() {
                let rank =
                    (u64::from(qdict_bucket(k.as_bytes())) << 32) | u64::from(u32::MAX - i as u32);
                if (!started || rank > top.bloom) && best.is_none_or(|b| rank < b.0) {
                    best = Some((rank, k.as_bytes(), v.pos()));
                }
            }
            best.map(|(rank, k, v)| {
                top.bloom = rank;
                (Some(k), v)
            })
        } else {
            match tape.get(top.start) {
                Some(&tape::END_OBJ) | Some(&tape::END_ARR) | None => None,
                Some(_) if top.flags & W_OBJ != 0 => {
                    let k = Value::at(tape, top.start);
                    let Some(vpos) = k.end() else { return };
                    top.start = Value::at(tape, vpos).end().unwrap_or(usize::MAX);
                    Some((k.str_bytes(), vpos))
                }
                Some(_) => {
                    let p = top.start;
                    top.start = Value::at(tape, p).end().unwrap_or(usize::MAX);
                    Some((None, p))
                }
            }
        };
        let obj = top.flags & W_OBJ != 0;
        top.flags |= W_STARTED;
        match next {
            None => {
                out.raw(if obj { b"}" } else { b"]" });
                depth -= 1;
            }
            Some((key, vpos)) => {
                if started {
                    out.raw(b", ");
                }
                if let Some(k) = key {
                    out.string(k);
                    out.raw(b": ");
                }
                if !open(out, vpos, &mut depth, nest) {
                    return;
                }
            }
        }
    }
}
