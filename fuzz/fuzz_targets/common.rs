//! A platform with every family, over memory, for the fuzz targets.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::BTreeMap;

use agent_core::commands::cpu::*;
use agent_core::commands::disk::*;
use agent_core::commands::exec::*;
use agent_core::commands::file::*;
use agent_core::commands::fs::*;
use agent_core::commands::memory::*;
use agent_core::commands::network::*;
use agent_core::commands::power::*;
use agent_core::commands::ssh::*;
use agent_core::commands::system::*;
use agent_core::commands::time::*;
use agent_core::commands::user::*;
use agent_core::commands::{Emitter, List, Platform, Result, StrList};
use agent_core::commands::args::{self, Args, Member};
use agent_core::engine::NestSlot;
use agent_core::json::tape::Kind;
use agent_core::json::{Event, Framer, Value};
use agent_core::schema::{Command, Family};
use agent_core::{Agent, Buffers, Error, Transmit, TxError};

/// Collects responses. Its vector is reused from one execution to the next ([`Collect::take`],
/// [`Collect::put_back`]), so a run does not allocate and grow it afresh each time.
#[derive(Default)]
pub struct Collect(pub Vec<u8>);

impl Transmit for Collect {
    fn send(&mut self, bytes: &[u8]) -> core::result::Result<(), TxError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

thread_local! {
    static SPARE: std::cell::Cell<Vec<Vec<u8>>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Collect {
    /// An empty collector, with the capacity of an earlier one.
    pub fn take() -> Self {
        let mut v = SPARE.with(|s| {
            let mut all = s.take();
            let v = all.pop();
            s.set(all);
            v
        })
        .unwrap_or_default();
        v.clear();
        Collect(v)
    }

    /// Give the vector back for the next execution.
    pub fn put_back(self) {
        SPARE.with(|s| {
            let mut all = s.take();
            all.push(self.0);
            s.set(all);
        });
    }
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;
const M7: u64 = 0x7F7F_7F7F_7F7F_7F7F;

/// Bit 7 of each byte of the result is set exactly where `w` holds the byte `b`.
fn eq_mask(w: u64, b: u8) -> u64 {
    let x = w ^ (LO * u64::from(b));
    !(((x & M7) + M7) | x | M7)
}

/// Every response is one line of ASCII that starts with `{"`, optionally after one 0xFF.
/// Returns the number of responses.
///
/// The output is often many times longer than the input (every stray byte gets an error that
/// quotes it), and this code is instrumented like the engine, so a byte-by-byte walk cost more
/// than the engine itself: the bytes are examined eight at a time, and only newlines and
/// non-ASCII bytes are looked at one by one.
pub fn check_responses(out: &[u8]) -> usize {
    let Some(&last) = out.last() else { return 0 };
    assert_eq!(last, b'\n', "unterminated response");
    check_line_start(out, 0);
    let mut lines = 0;
    let mut visit = |i: usize| match out[i] {
        b'\n' => {
            lines += 1;
            if i + 1 < out.len() {
                check_line_start(out, i + 1);
            }
        }
        0xFF => assert!(
            i == 0 || out[i - 1] == b'\n',
            "0xFF inside a response: {:?}",
            String::from_utf8_lossy(out)
        ),
        b => panic!("non-ASCII byte {b:#x} in a response: {:?}", String::from_utf8_lossy(out)),
    };
    let mut words = out.chunks_exact(8);
    let mut base = 0;
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().unwrap());
        let mut special = eq_mask(w, b'\n') | (w & HI);
        while special != 0 {
            visit(base + (special.trailing_zeros() / 8) as usize);
            special &= special - 1;
        }
        base += 8;
    }
    for (j, &b) in words.remainder().iter().enumerate() {
        if b == b'\n' || b >= 0x80 {
            visit(base + j);
        }
    }
    lines
}

/// A response starts at `at`: `{"`, or 0xFF then `{"`.
fn check_line_start(out: &[u8], at: usize) {
    let body = &out[at..];
    let body = body.strip_prefix(&[0xFF]).unwrap_or(body);
    assert!(
        body.starts_with(b"{\""),
        "not an object: {:?}",
        String::from_utf8_lossy(&out[at..])
    );
}

#[derive(Default)]
pub struct Mem {
    files: BTreeMap<i64, (Vec<u8>, usize)>,
    next: i64,
    frozen: bool,
}

impl Files for Mem {
    fn has_handle(&self, handle: i64) -> bool {
        self.files.contains_key(&handle)
    }
    fn open(&mut self, path: &str, _mode: &str) -> Result<i64> {
        if path.is_empty() {
            return Err(Error::os(2, "No such file or directory"));
        }
        let h = 1000 + self.next;
        self.next += 1;
        self.files.insert(h, (path.as_bytes().repeat(3), 0));
        Ok(h)
    }
    fn close(&mut self, handle: i64) -> Result<()> {
        self.files.remove(&handle);
        Ok(())
    }
    fn read(&mut self, handle: i64, buf: &mut [u8]) -> Result<usize> {
        let (data, pos) = self.files.get_mut(&handle).ok_or(Error::NoHandle(handle))?;
        let n = buf.len().min(data.len() - *pos);
        buf[..n].copy_from_slice(&data[*pos..*pos + n]);
        *pos += n;
        Ok(n)
    }
    fn write(&mut self, handle: i64, data: &[u8]) -> Result<GuestFileWrite> {
        let (file, _) = self.files.get_mut(&handle).ok_or(Error::NoHandle(handle))?;
        file.extend_from_slice(data);
        Ok(GuestFileWrite { count: data.len() as i64, eof: false })
    }
    fn seek(&mut self, handle: i64, offset: i64, _whence: Seek) -> Result<GuestFileSeek> {
        let (data, pos) = self.files.get_mut(&handle).ok_or(Error::NoHandle(handle))?;
        if offset < 0 || offset as usize > data.len() {
            return Err(Error::os(22, "Invalid argument"));
        }
        *pos = offset as usize;
        Ok(GuestFileSeek { position: offset, eof: false })
    }
    fn flush(&mut self, _handle: i64) -> Result<()> {
        Ok(())
    }
}

impl Clock for Mem {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }

    fn get_time(&mut self) -> Result<i64> {
        Ok(1)
    }
    fn set_time(&mut self, _time: Option<i64>) -> Result<()> {
        Ok(())
    }
}

impl Power for Mem {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }

    fn shutdown(&mut self, _mode: ShutdownMode) -> Result<()> {
        Ok(())
    }
    fn suspend(&mut self, _mode: SuspendMode) -> Result<()> {
        Err(Error::msg(format_args!("the requested suspend mode is not supported by the guest")))
    }
}

impl Filesystems for Mem {
    fn status(&mut self) -> FsfreezeStatus {
        if self.frozen { FsfreezeStatus::Frozen } else { FsfreezeStatus::Thawed }
    }
    fn freeze(&mut self, m: Option<StrList<'_>>) -> Result<i64> {
        let n = m.map_or(1, |l| l.len() as i64);
        self.frozen = n > 0;
        Ok(n)
    }
    fn thaw(&mut self) -> Result<i64> {
        self.frozen = false;
        Ok(1)
    }
    fn fstrim(&mut self, minimum: Option<i64>, out: &mut Emitter<'_, GuestFilesystemTrimResult<'static>>) -> Result<()> {
        out.emit(&GuestFilesystemTrimResult { path: "/", trimmed: Some(1), minimum, error: None });
        Ok(())
    }
}

impl Cpus for Mem {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }

    fn vcpus(&mut self, out: &mut Emitter<'_, GuestLogicalProcessor>) -> Result<()> {
        out.emit(&GuestLogicalProcessor { logical_id: 0, online: true, can_offline: None });
        Ok(())
    }
    fn set_vcpus(&mut self, vcpus: List<'_, GuestLogicalProcessor>) -> Result<i64> {
        Ok(vcpus.iter().count() as i64)
    }
    fn cpustats(&mut self, _out: &mut Emitter<'_, GuestLinuxCpuStats>) -> Result<()> {
        Err(Error::os(2, "No such file or directory"))
    }
    fn load(&mut self) -> Result<GuestLoadAverage> {
        Ok(GuestLoadAverage { load1m: 0.1, load5m: 0.2, load15m: f64::NAN })
    }
}

impl Memory for Mem {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }

    fn blocks(&mut self, _out: &mut Emitter<'_, GuestMemoryBlock>) -> Result<()> {
        Ok(())
    }
    fn set_blocks(&mut self, blocks: List<'_, GuestMemoryBlock>, out: &mut Emitter<'_, GuestMemoryBlockResponse>) -> Result<()> {
        for b in blocks.iter() {
            out.emit(&GuestMemoryBlockResponse { phys_index: b.phys_index, response: GuestMemoryBlockResponseType::Success, error_code: None });
        }
        Ok(())
    }
    fn block_info(&mut self) -> Result<GuestMemoryBlockInfo> {
        Ok(GuestMemoryBlockInfo { size: 1 })
    }
}

impl Users for Mem {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }

    fn users(&mut self, _out: &mut Emitter<'_, GuestUser<'static>>) -> Result<()> {
        Ok(())
    }
    fn set_password(&mut self, _u: &str, _p: &[u8], _c: bool) -> Result<()> {
        Ok(())
    }
}

impl SshKeys for Mem {
    fn get(&mut self, username: &str, out: &mut Emitter<'_, &'static str>) -> Result<()> {
        out.emit(&username);
        Ok(())
    }
    fn add(&mut self, _u: &str, keys: StrList<'_>, _reset: bool) -> Result<()> {
        keys.iter().for_each(drop);
        Ok(())
    }
    fn remove(&mut self, _u: &str, _keys: StrList<'_>) -> Result<()> {
        Ok(())
    }
}

impl Exec for Mem {
    fn exec(&mut self, args: ExecArgs<'_>) -> Result<i64> {
        Ok(args.path.len() as i64 + args.input_data.map_or(0, |d| d.len() as i64))
    }
    fn status(&mut self, pid: i64) -> Result<GuestExecStatus<'_>> {
        Err(Error::msg(format_args!("PID {pid} does not exist")))
    }
}

impl System for Mem {
    fn host_name(&mut self) -> Result<&str> {
        Ok("fuzz")
    }
    fn timezone(&mut self) -> Result<GuestTimezone<'_>> {
        Ok(GuestTimezone { zone: None, offset: 0 })
    }
    fn osinfo(&mut self) -> Result<GuestOsInfo<'_>> {
        Ok(GuestOsInfo::default())
    }
}

impl Disks for Mem {
    fn fsinfo(&mut self, _out: &mut Emitter<'_, GuestFilesystemInfo<'static>>) -> Result<()> {
        Ok(())
    }
    fn disks(&mut self, _out: &mut Emitter<'_, GuestDiskInfo<'static>>) -> Result<()> {
        Ok(())
    }
    fn diskstats(&mut self, _out: &mut Emitter<'_, GuestDiskStatsInfo<'static>>) -> Result<()> {
        Ok(())
    }
}

impl Network for Mem {
    fn interfaces(&mut self, _out: &mut Emitter<'_, GuestNetworkInterface<'static>>) -> Result<()> {
        Ok(())
    }
    fn routes(&mut self, _out: &mut Emitter<'_, GuestNetworkRoute<'static>>) -> Result<()> {
        Ok(())
    }
}

/// `Mem` for every family.
#[derive(Default)]
pub struct Full(pub Mem);

impl Platform for Full {
    fn clock(&mut self) -> Option<&mut dyn Clock> { Some(&mut self.0) }
    fn power(&mut self) -> Option<&mut dyn Power> { Some(&mut self.0) }
    fn files(&mut self) -> Option<&mut dyn Files> { Some(&mut self.0) }
    fn filesystems(&mut self) -> Option<&mut dyn Filesystems> { Some(&mut self.0) }
    fn disks(&mut self) -> Option<&mut dyn Disks> { Some(&mut self.0) }
    fn network(&mut self) -> Option<&mut dyn Network> { Some(&mut self.0) }
    fn cpus(&mut self) -> Option<&mut dyn Cpus> { Some(&mut self.0) }
    fn memory(&mut self) -> Option<&mut dyn Memory> { Some(&mut self.0) }
    fn users(&mut self) -> Option<&mut dyn Users> { Some(&mut self.0) }
    fn ssh_keys(&mut self) -> Option<&mut dyn SshKeys> { Some(&mut self.0) }
    fn exec(&mut self) -> Option<&mut dyn Exec> { Some(&mut self.0) }
    fn system(&mut self) -> Option<&mut dyn System> { Some(&mut self.0) }
}

/// No family at all: only the core's commands.
pub struct Bare;

impl Platform for Bare {}

impl Full {
    /// Every family, with one file open (handle 1000, 30 bytes), so that the file commands'
    /// arguments reach the code behind the handle check.
    pub fn with_file() -> Self {
        let mut p = Full::default();
        let _ = Files::open(&mut p.0, "/fuzz/file", "r");
        p
    }
}

/// What a family's typed decoder made of an arguments object.
pub struct Decoded {
    /// The member table the decoder is declared with.
    pub members: &'static [Member],
    /// Whether it decoded, and what it decoded is consistent (lists keep every element).
    pub ok: bool,
}

/// Decode `v` as `A`; `deep` checks the decoded value.
pub fn decoded<'t, A: Args<'t>>(v: Value<'t>, deep: impl FnOnce(&A) -> bool) -> Decoded {
    Decoded { members: A::MEMBERS, ok: A::decode(v).is_ok_and(|a| deep(&a)) }
}

/// A command without arguments: its member table is empty.
pub fn no_args() -> Decoded {
    Decoded { members: &[], ok: true }
}

/// A family's decoders by command.
pub type Typed = for<'t> fn(Command, Value<'t>) -> Decoded;

/// Largest arguments value, as bytes of JSON (libFuzzer's `-max_len` for these targets).
pub const ARGS_MAX: usize = 1024;
const ARGS_FRAME: usize = 4096;
const ARGS_NEST: usize = 63;

struct ArgsRig {
    frame: Box<[u8]>,
    nest: Box<[NestSlot]>,
    scratch: Box<[u8]>,
    agent: Agent<'static>,
    request: Vec<u8>,
    text: Vec<u8>,
}

thread_local! {
    /// Buffers allocated once per run; the agent is reset before each input, as for a new
    /// client. The arguments are parsed with one nesting level less than the agent has, and a
    /// frame a little smaller, so that arguments that parse alone also parse in the request.
    static ARGS_RIG: RefCell<ArgsRig> = RefCell::new(ArgsRig {
        frame: vec![0; ARGS_FRAME].into_boxed_slice(),
        nest: vec![NestSlot::EMPTY; ARGS_NEST].into_boxed_slice(),
        scratch: vec![0; 64].into_boxed_slice(),
        agent: Agent::new(Buffers {
            frame: Box::leak(vec![0; ARGS_FRAME + 256].into_boxed_slice()),
            chunk: Box::leak(vec![0; 64].into_boxed_slice()),
            tx: Box::leak(vec![0; 512].into_boxed_slice()),
            nesting: Box::leak(vec![NestSlot::EMPTY; ARGS_NEST + 1].into_boxed_slice()),
        })
        .expect("buffers above the minimums"),
        request: Vec::with_capacity(ARGS_MAX + 64),
        text: Vec::new(),
    });
}

const ERROR_PREFIX: &[u8] = b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"";

/// The argument decoders of one family. The first byte picks one of the family's commands;
/// the rest is the `arguments` value.
///
/// 1. The value is parsed alone and, if it is an object, checked with `args::validate`
///    against the command's member table, and decoded with the family's typed decoder (which
///    must not panic on any object, and must succeed, with every list element kept, when
///    validation passed).
/// 2. The value is sent as `{"execute":"<command>","arguments":<value>}` to an agent with
///    every family over memory. No panic; every response is one ASCII line. If the value was
///    exactly one object, exactly one response comes back (none for a successful command
///    without success response): the validator's error with its text, or no argument error
///    and no "not currently supported" (what the engine answers when a decoder fails after
///    validation).
pub fn fuzz_args(family: Family, data: &[u8], typed: Typed) {
    let Some((&pick, value)) = data.split_first() else { return };
    let in_family = || Command::ALL.iter().copied().filter(|c| c.family() == family);
    let n = in_family().count();
    let cmd = in_family().nth(pick as usize % n).unwrap();
    ARGS_RIG.with_borrow_mut(|rig| {
        // 1. The value alone.
        let mut framer = Framer::new();
        let mut rest = value;
        let mut events = 0;
        let mut verdict: Option<bool> = None;
        rig.text.clear();
        while !rest.is_empty() {
            let (used, ev) = framer.feed(rest, &mut rig.frame, &mut rig.nest, &mut rig.scratch);
            rest = &rest[used..];
            let Some(ev) = ev else { continue };
            events += 1;
            if ev != Event::Value {
                continue;
            }
            let v = Value::at(&rig.frame, 0);
            if v.kind() != Kind::Object {
                continue;
            }
            let d = typed(cmd, v);
            let table = agent_core::commands::members(cmd);
            assert!(
                d.members.len() == table.len()
                    && d.members.iter().zip(table).all(|(a, b)| a.name == b.name && a.optional == b.optional),
                "{}: the typed decoder's members differ from the engine's table",
                cmd.name()
            );
            match args::validate(table, v) {
                Ok(()) => {
                    assert!(d.ok, "{}: validated arguments did not decode", cmd.name());
                    verdict = Some(true);
                }
                Err(e) => {
                    rig.text.clear();
                    e.write_text(&mut |b| rig.text.extend_from_slice(b));
                    verdict = Some(false);
                }
            }
        }
        let single = events == 1 && verdict.is_some() && framer.idle();

        // 2. The value as a request.
        rig.request.clear();
        rig.request.extend_from_slice(b"{\"execute\":\"");
        rig.request.extend_from_slice(cmd.name().as_bytes());
        rig.request.extend_from_slice(b"\",\"arguments\":");
        rig.request.extend_from_slice(value);
        rig.request.push(b'}');
        rig.agent.reset();
        let mut platform = Full::with_file();
        let mut out = Collect::take();
        rig.agent.feed(&rig.request, &mut platform, &mut out).unwrap();
        let lines = check_responses(&out.0);
        if single {
            let o = &out.0;
            let show = || String::from_utf8_lossy(o).into_owned();
            let desc = o.strip_prefix(ERROR_PREFIX);
            let arg_error = desc.is_some_and(|d| {
                d.starts_with(b"Parameter '") || d.starts_with(b"Invalid parameter type for '")
            });
            if verdict == Some(false) {
                assert_eq!(lines, 1, "{}: {}", cmd.name(), show());
                assert!(arg_error, "{}: expected an argument error, got {}", cmd.name(), show());
                // A text that needs no escaping must come back verbatim.
                let t = &rig.text;
                if t.iter().all(|&b| (0x20..0x7F).contains(&b) && b != b'"' && b != b'\\') {
                    let d = desc.unwrap();
                    assert!(
                        d.len() == t.len() + 4 && d.starts_with(t) && d.ends_with(b"\"}}\n"),
                        "{}: the engine's error {} is not the validator's {:?}",
                        cmd.name(),
                        show(),
                        String::from_utf8_lossy(t)
                    );
                }
            } else {
                assert!(lines <= 1, "{}: {} responses to one request: {}", cmd.name(), lines, show());
                assert!(lines == 1 || !cmd.success_response(), "{}: no response", cmd.name());
                assert!(!arg_error, "{}: valid arguments got {}", cmd.name(), show());
                let unsupported = desc.is_some_and(|d| d.starts_with(agent_core::error::UNSUPPORTED.as_bytes()));
                assert!(
                    !unsupported || cmd == Command::GuestGetDevices,
                    "{}: valid arguments got {}",
                    cmd.name(),
                    show()
                );
            }
        }
        out.put_back();
    });
}
