//! The whole protocol runs without a heap: a session of requests covering framing, errors,
//! argument decoding, streamed reads, lists and every core command is processed while the
//! global allocator panics on use.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use agent_core::Command;
use agent_core::Result;
use agent_core::commands::clock::Clock;
use agent_core::commands::cpus::{
    Cpus, GuestLinuxCpuStats, GuestLoadAverage, GuestLogicalProcessor,
};
use agent_core::commands::files::{Files, GuestFileSeek, GuestFileWrite, Seek};
use agent_core::commands::system::{GuestOsInfo, GuestTimezone, System as SystemFamily};
use agent_core::commands::{Emitter, List, Platform};
use agent_core::{Error, StaticBuffers, Transmit, TxError};

thread_local! {
    /// Armed on the test's own thread only: the harness's threads may allocate meanwhile.
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

struct PanickingAlloc;

// SAFETY: every call is forwarded unchanged to the system allocator; the only addition is a
// check that panics (after disarming, so that the panic itself may allocate) while armed.
unsafe impl GlobalAlloc for PanickingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.with(|a| a.replace(false)) {
            panic!("agent-core allocated {} bytes", layout.size());
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: PanickingAlloc = PanickingAlloc;

/// A response sink of fixed size.
struct Sink {
    buf: [u8; 16384],
    len: usize,
}

impl Transmit for Sink {
    fn send(&mut self, bytes: &[u8]) -> core::result::Result<(), TxError> {
        let end = self.len + bytes.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(TxError)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }
}

/// One file of 10 000 bytes in a fixed array.
struct RamFile {
    data: [u8; 10_000],
    pos: usize,
    open: bool,
}

impl Files for RamFile {
    fn has_handle(&self, handle: i64) -> bool {
        self.open && handle == 1000
    }
    fn open(&mut self, path: &str, _mode: &str) -> Result<i64> {
        if path != "/ram" {
            return Err(Error::os(2, "No such file or directory"));
        }
        self.open = true;
        self.pos = 0;
        Ok(1000)
    }
    fn close(&mut self, _handle: i64) -> Result<()> {
        self.open = false;
        Ok(())
    }
    fn read(&mut self, _handle: i64, buf: &mut [u8]) -> Result<usize> {
        let n = buf.len().min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
    fn write(&mut self, _handle: i64, data: &[u8]) -> Result<GuestFileWrite> {
        let n = data.len().min(self.data.len() - self.pos);
        self.data[self.pos..self.pos + n].copy_from_slice(&data[..n]);
        self.pos += n;
        Ok(GuestFileWrite {
            count: n as i64,
            eof: false,
        })
    }
    fn seek(&mut self, _handle: i64, offset: i64, _whence: Seek) -> Result<GuestFileSeek> {
        self.pos = offset as usize;
        Ok(GuestFileSeek {
            position: offset,
            eof: false,
        })
    }
    fn flush(&mut self, _handle: i64) -> Result<()> {
        Ok(())
    }
}

struct Fixed;

impl Clock for Fixed {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }

    fn get_time(&mut self) -> Result<i64> {
        Ok(1_700_000_000_000_000_000)
    }
    fn set_time(&mut self, _time: Option<i64>) -> Result<()> {
        Err(Error::msg(format_args!(
            "child process has failed to set hardware clock to system time: exit status {}",
            1
        )))
    }
}

impl Cpus for Fixed {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }

    fn vcpus(&mut self, out: &mut Emitter<'_, GuestLogicalProcessor>) -> Result<()> {
        for i in 0..4 {
            out.emit(&GuestLogicalProcessor {
                logical_id: i,
                online: true,
                can_offline: Some(i > 0),
            });
        }
        Ok(())
    }
    fn set_vcpus(&mut self, vcpus: List<'_, GuestLogicalProcessor>) -> Result<i64> {
        Ok(vcpus.iter().filter(|v| v.online).count() as i64)
    }
    fn cpustats(&mut self, out: &mut Emitter<'_, GuestLinuxCpuStats>) -> Result<()> {
        out.emit(&GuestLinuxCpuStats {
            r#type: "linux",
            cpu: 0,
            user: 1,
            nice: 2,
            system: 3,
            idle: 4,
            ..Default::default()
        });
        Ok(())
    }
    fn load(&mut self) -> Result<GuestLoadAverage> {
        Ok(GuestLoadAverage {
            load1m: 0.08,
            load5m: 0.5,
            load15m: 1.0,
        })
    }
}

impl SystemFamily for Fixed {
    fn host_name(&mut self) -> Result<&str> {
        Ok("bare")
    }
    fn timezone(&mut self) -> Result<GuestTimezone<'_>> {
        Ok(GuestTimezone {
            zone: Some("UTC"),
            offset: 0,
        })
    }
    fn osinfo(&mut self) -> Result<GuestOsInfo<'_>> {
        Ok(GuestOsInfo {
            id: Some("none"),
            ..Default::default()
        })
    }
}

struct NoHeap {
    file: RamFile,
    fixed: Fixed,
    fixed2: Fixed,
    fixed3: Fixed,
}

impl Platform for NoHeap {
    fn clock(&mut self) -> Option<&mut dyn Clock> {
        Some(&mut self.fixed)
    }
    fn files(&mut self) -> Option<&mut dyn Files> {
        Some(&mut self.file)
    }
    fn cpus(&mut self) -> Option<&mut dyn Cpus> {
        Some(&mut self.fixed2)
    }
    fn system(&mut self) -> Option<&mut dyn SystemFamily> {
        Some(&mut self.fixed3)
    }
}

const SESSION: &[&[u8]] = &[
    b"\xff",
    br#"{"execute":"guest-sync-delimited","arguments":{"id":1234}}"#,
    br#"{"execute":"guest-info","id":{"a":[1,2.5,null,true,"\u00e9"]}}"#,
    br#"{"execute":"guest-ping","id":"x"}{"execute":"guest-get-time"}"#,
    br#"{'execute':'guest-set-time'}"#,
    br#"{"execute":"guest-file-open","arguments":{"path":"/ram","mode":"r+"}}"#,
    br#"{"execute":"guest-file-write","arguments":{"handle":1000,"buf-b64":"SGVsbG8gd29ybGQ="}}"#,
    br#"{"execute":"guest-file-seek","arguments":{"handle":1000,"offset":0,"whence":"set"}}"#,
    br#"{"execute":"guest-file-read","arguments":{"handle":1000,"count":6000}}"#,
    br#"{"execute":"guest-file-open","arguments":{"path":"/nope"}}"#,
    br#"{"execute":"guest-get-vcpus"}{"execute":"guest-set-vcpus","arguments":{"vcpus":[{"logical-id":1,"online":false},{"logical-id":2,"online":true}]}}"#,
    br#"{"execute":"guest-set-vcpus","arguments":{"vcpus":[{"logical-id":1}]}}"#,
    br#"{"execute":"guest-get-cpustats"}{"execute":"guest-get-load"}{"execute":"guest-get-host-name"}"#,
    br#"{"execute":"guest-get-timezone"}{"execute":"guest-get-osinfo"}{"execute":"guest-get-users"}"#,
    br#"{"execute":"guest-nosuch"}{"execute":1}{"a":nul}{"a":1,"a":2}"#,
    b"\x01{\"execute\":\"guest-ping\"",
    b"}[[[[]]]]\"\\ud800\" tru\x80",
];

#[test]
fn a_whole_session_without_a_heap() {
    let mut bufs: Box<StaticBuffers> = Box::default();
    let mut platform = Box::new(NoHeap {
        file: RamFile {
            data: [b'.'; 10_000],
            pos: 0,
            open: false,
        },
        fixed: Fixed,
        fixed2: Fixed,
        fixed3: Fixed,
    });
    let mut sink = Box::new(Sink {
        buf: [0; 16384],
        len: 0,
    });
    let mut agent = bufs.agent();

    ARMED.with(|a| a.set(true));
    for piece in SESSION {
        // Also split each piece, to cover partial tokens.
        let (a, b) = piece.split_at(piece.len() / 2);
        agent.feed(a, platform.as_mut(), sink.as_mut()).unwrap();
        agent.feed(b, platform.as_mut(), sink.as_mut()).unwrap();
    }
    agent.reset();
    let still_armed = ARMED.with(|a| a.replace(false));
    assert!(still_armed, "an allocation happened");

    let out = String::from_utf8_lossy(&sink.buf[..sink.len]).into_owned();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        r#"{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\uFFFD'"}}"#
    );
    assert_eq!(lines[1], "\u{FFFD}{\"return\": 1234}");
    assert!(
        lines[2].starts_with(r#"{"return": {"version": ""#),
        "{}",
        lines[2]
    );
    assert!(
        lines[2].ends_with(r#", "id": {"a": [1, 2.5, null, true, "\u00E9"]}}"#),
        "{}",
        lines[2]
    );
    assert_eq!(lines[3], r#"{"return": {}, "id": "x"}"#);
    assert_eq!(lines[4], r#"{"return": 1700000000000000000}"#);
    assert_eq!(
        lines[5],
        r#"{"error": {"class": "GenericError", "desc": "child process has failed to set hardware clock to system time: exit status 1"}}"#
    );
    assert_eq!(lines[6], r#"{"return": 1000}"#);
    assert_eq!(lines[7], r#"{"return": {"count": 11, "eof": false}}"#);
    assert!(lines[9].starts_with(r#"{"return": {"buf-b64": "SGVsbG8gd29ybGQuLi4u"#));
    assert!(lines[9].ends_with(r#"", "count": 6000, "eof": false}}"#));
    assert_eq!(
        lines[10],
        r#"{"error": {"class": "GenericError", "desc": "failed to open file '/nope' (mode: 'r'): No such file or directory"}}"#
    );
    assert!(
        lines[11].starts_with(
            r#"{"return": [{"logical-id": 0, "online": true, "can-offline": false}, "#
        )
    );
    assert_eq!(lines[12], r#"{"return": 1}"#);
    assert_eq!(
        lines[13],
        r#"{"error": {"class": "GenericError", "desc": "Parameter 'vcpus[0].online' is missing"}}"#
    );
    assert_eq!(lines[17], r#"{"return": {"zone": "UTC", "offset": 0}}"#);
    assert_eq!(
        lines[19],
        r#"{"error": {"class": "GenericError", "desc": "this feature or command is not currently supported"}}"#
    );
    assert_eq!(
        lines[21],
        r#"{"error": {"class": "GenericError", "desc": "QMP input member 'execute' must be a string"}}"#
    );
    assert_eq!(
        lines[22],
        r#"{"error": {"class": "GenericError", "desc": "JSON parse error, invalid keyword 'nul'"}}"#
    );
    assert_eq!(
        lines[23],
        r#"{"error": {"class": "GenericError", "desc": "JSON parse error, duplicate key"}}"#
    );
    assert_eq!(
        lines[24],
        r#"{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\u0001'"}}"#
    );
    assert_eq!(lines[25], r#"{"return": {}}"#);
    assert_eq!(
        lines[26],
        r#"{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}"#
    );
    assert_eq!(
        lines[27],
        r#"{"error": {"class": "GenericError", "desc": "JSON parse error, \\ud800 is not a valid Unicode character"}}"#
    );
    assert_eq!(
        lines[28],
        r#"{"error": {"class": "GenericError", "desc": "JSON parse error, invalid keyword 'tru'"}}"#
    );
    assert_eq!(lines[16], r#"{"return": {"host-name": "bare"}}"#);
    assert!(lines[20].contains("CommandNotFound"));
    assert_eq!(
        lines[29],
        r#"{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\uFFFD'"}}"#
    );
    assert_eq!(lines.len(), 30);
}
