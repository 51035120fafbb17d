//! The image's own tests, run on the real (emulated) hardware with `qga.selftest` on the
//! kernel command line; the result leaves through isa-debug-exit ([`crate::hw::exit`]), so a
//! host test only checks QEMU's exit status (33 = all passed) and reads the log for details.
//!
//! Each check exercises a real component end to end: the loader's start info, the ACPI tables,
//! the RTC and TSC, PCI, the RAM file store, a built-in program through the process table, and
//! the protocol engine answering `guest-ping` and `guest-info` into a memory sink.

use agent_core::Platform;
use agent_core::commands::exec::{CaptureMode, Exec};
use agent_core::commands::files::{Files, Seek};
use agent_core::out::{Transmit, TxError};

use crate::config::Config;
use crate::hw::{layout, pci, rtc, tsc};
use crate::state;

struct Report {
    failed: u32,
}

impl Report {
    /// One check with a number that says what was seen (a count, an address, a year).
    fn check(&mut self, name: &str, ok: bool, seen: u64) {
        self.text(name, ok, format_args!("{seen}"));
    }

    fn text(&mut self, name: &str, ok: bool, detail: core::fmt::Arguments<'_>) {
        crate::log!(
            "selftest {} {name}: {detail}",
            if ok { "PASS" } else { "FAIL" }
        );
        if !ok {
            self.failed += 1;
        }
    }
}

/// A fixed-size memory sink for engine responses.
struct Sink {
    buf: [u8; 4096],
    len: usize,
}

impl Transmit for Sink {
    fn send(&mut self, bytes: &[u8]) -> Result<(), TxError> {
        let dst = self
            .buf
            .get_mut(self.len..self.len + bytes.len())
            .ok_or(TxError)?;
        dst.copy_from_slice(bytes);
        self.len += bytes.len();
        Ok(())
    }
}

impl Sink {
    fn text(&self) -> &str {
        core::str::from_utf8(self.buf.get(..self.len).unwrap_or(&[])).unwrap_or("<not utf-8>")
    }
}

/// A platform with only the clock, for the engine check.
struct ClockOnly<'a>(&'a mut crate::commands::clock::RtcClock);

impl Platform for ClockOnly<'_> {
    fn clock(&mut self) -> Option<&mut dyn agent_core::commands::clock::Clock> {
        Some(self.0)
    }
}

/// Run every check; true if all passed.
#[inline(never)]
pub fn run(config: &Config<'_>) -> bool {
    let mut r = Report { failed: 0 };
    let boot = state::BOOT.get();
    let regions = boot
        .filter(|b| b.version >= 1)
        .map_or(0, |b| b.regions().len());
    r.check(
        "start-info (memory map entries)",
        regions > 0,
        regions as u64,
    );
    let acpi = state::ACPI.get();
    let fadt = acpi.and_then(|a| a.fadt);
    let pm1a = fadt.map_or(0, |f| f.pm1a_cnt);
    r.check("acpi-fadt (PM1a_CNT)", pm1a != 0, pm1a as u64);
    let s5 = acpi.and_then(|a| a.s5);
    r.check(
        "acpi-s5 (SLP_TYPa)",
        s5.is_some(),
        s5.map_or(u64::MAX, |s| s.0 as u64),
    );
    let cpus = acpi.map_or(0, |a| a.cpus().len());
    r.check("acpi-madt (processors)", cpus >= 1, cpus as u64);

    let raw = rtc::read(fadt.and_then(|f| f.century));
    let now = raw.decode();
    let year = now.map_or(0, |t| t.year);
    r.check("rtc (year)", (2020..2100).contains(&year), year as u64);
    let hz = tsc::hz();
    r.check("tsc (Hz)", hz > 10_000_000, hz);

    let mut host_bridge = false;
    let mut functions = 0;
    pci::scan(&mut |f| {
        functions += 1;
        host_bridge |= f.class[0] == 0x06 && f.class[1] == 0x00;
        true
    });
    r.check("pci (functions)", host_bridge, functions);

    if let Some(files) = state::FILE_STORE.take() {
        let h = files.open("selftest", "w+");
        let ok = h.as_ref().is_ok_and(|&h| {
            files.write(h, b"hello").is_ok()
                && files.seek(h, 0, Seek::Set).is_ok()
                && {
                    let mut b = [0u8; 8];
                    files.read(h, &mut b).ok() == Some(5) && b.get(..5) == Some(b"hello")
                }
                && files.close(h).is_ok()
        });
        r.check("file-store (handle)", ok, h.unwrap_or(-1) as u64);
    }

    if let Some(procs) = state::PROCESSES.take() {
        *procs.programs_mut() = crate::programs::builtins();
        let echo = procs.programs().find("/bin/echo");
        let pid = echo.map(|p| {
            procs.run(
                p,
                &crate::commands::exec::Args::Slice(&["hi"]),
                b"",
                CaptureMode::Stdout,
            )
        });
        let st = pid.and_then(|pid| procs.status(pid).ok());
        let out = st.as_ref().and_then(|s| s.out_data).map(|b| b.0);
        r.check(
            "exec-echo (bytes)",
            out == Some(b"hi\n"),
            out.map_or(0, |o| o.len()) as u64,
        );
    }

    if let Some(bufs) = state::AGENT_BUFFERS.take() {
        let mut clock = crate::commands::clock::RtcClock::start(fadt.and_then(|f| f.century));
        let mut platform = ClockOnly(&mut clock);
        let mut agent = bufs.agent();
        let mut sink = Sink {
            buf: [0; 4096],
            len: 0,
        };
        let _ = agent.feed(
            br#"{"execute":"guest-ping","id":1}"#,
            &mut platform,
            &mut sink,
        );
        let ok = sink.text() == "{\"return\": {}, \"id\": 1}\n";
        r.text(
            "engine-ping",
            ok,
            format_args!("{}", sink.text().strip_suffix('\n').unwrap_or("")),
        );
        let mut sink = Sink {
            buf: [0; 4096],
            len: 0,
        };
        let _ = agent.feed(br#"{"execute":"guest-get-time"}"#, &mut platform, &mut sink);
        let t = sink.text();
        let ok = t.starts_with("{\"return\": 1") && t.ends_with("}\n");
        r.text(
            "engine-get-time",
            ok,
            format_args!("{}", t.strip_suffix('\n').unwrap_or(t)),
        );
    }

    let stack = layout::stack_usage();
    let used = stack
        .filter(|&(used, size)| used > 0 && used < size)
        .map(|s| s.0);
    r.check(
        "stack (bytes used)",
        used.is_some(),
        used.unwrap_or(0) as u64,
    );
    crate::log!(
        "selftest done ({} failed), agent transport {}",
        r.failed,
        config.transport.name()
    );
    r.failed == 0
}
