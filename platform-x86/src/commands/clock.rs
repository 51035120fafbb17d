//! `guest-get-time` and `guest-set-time` from the CMOS RTC and the TSC.
//!
//! The RTC only counts seconds, so the clock is "RTC time at a known TSC value, plus elapsed
//! TSC time". At boot the RTC is read at once (answering quickly matters more than waiting up
//! to a second for its next tick). The agent loop then watches the seconds register and
//! re-anchors on every tick, and uses the TSC cycles between the first tick seen and the
//! latest to re-measure the TSC rate: after a few seconds the clock is exact to the polling
//! interval, whatever the 10 ms PIT calibration at boot was worth (under TCG it can be tens of
//! percent off). `guest-set-time` with a time writes the RTC (the hardware clock, as upstream's
//! `hwclock -w`), keeping the sub-second part as an offset; without one it re-reads the RTC.
//! Times are reported in whole microseconds (×1000), as upstream's `g_get_real_time` gives them.

use agent_core::Command;
use agent_core::commands::clock::Clock;
use agent_core::{Error, Result};

use crate::hw::{rtc, tsc};

/// The wall clock.
pub struct RtcClock {
    century: Option<u8>,
    base_ns: i64,
    base_tsc: u64,
    last_second: u8,
    /// The first tick seen since boot or the last set: (TSC, RTC seconds since the epoch).
    first_tick: Option<(u64, i64)>,
    /// Added to RTC-derived times: the sub-second part of the last `guest-set-time`.
    adjust_ns: i64,
    anchored: bool,
}

impl RtcClock {
    /// Read the RTC now. `century` is the FADT's century register.
    pub fn start(century: Option<u8>) -> Self {
        let mut c = RtcClock {
            century,
            base_ns: 0,
            base_tsc: 0,
            last_second: 0,
            first_tick: None,
            adjust_ns: 0,
            anchored: false,
        };
        c.anchor_to_rtc();
        c
    }

    /// Anchor at the RTC's current second; returns that second.
    fn anchor_to_rtc(&mut self) -> i64 {
        let raw = rtc::read(self.century);
        self.base_tsc = tsc::rdtsc();
        let secs = raw.decode().map(|t| t.to_unix()).unwrap_or(0);
        self.base_ns = secs
            .saturating_mul(1_000_000_000)
            .saturating_add(self.adjust_ns);
        self.last_second = raw.second;
        secs
    }

    /// Call from the idle loop: re-anchors on each RTC tick and refines the TSC rate.
    pub fn poll(&mut self) {
        if rtc::seconds_register() == self.last_second {
            return;
        }
        let secs = self.anchor_to_rtc();
        self.anchored = true;
        match self.first_tick {
            Some((t0, s0)) if secs - s0 >= 2 => {
                let cycles = self.base_tsc.wrapping_sub(t0);
                tsc::set_hz(cycles / (secs - s0) as u64);
            }
            Some((_, s0)) if secs < s0 => self.first_tick = Some((self.base_tsc, secs)),
            Some(_) => {}
            None => self.first_tick = Some((self.base_tsc, secs)),
        }
    }

    /// Whether the clock has been anchored to an RTC tick (or set).
    pub fn anchored(&self) -> bool {
        self.anchored
    }

    /// Nanoseconds since the epoch.
    pub fn now_ns(&self) -> i64 {
        self.base_ns
            .saturating_add(tsc::ns_since(self.base_tsc) as i64)
    }
}

impl Clock for RtcClock {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }

    fn get_time(&mut self) -> Result<i64> {
        let ns = self.now_ns();
        Ok(ns - ns.rem_euclid(1000))
    }

    fn set_time(&mut self, time: Option<i64>) -> Result<()> {
        match time {
            Some(ns) => {
                if ns < 0 {
                    return Err(Error::msg(format_args!("Invalid time")));
                }
                // Writing the RTC restarts its second, so ticks stay whole seconds after `ns`.
                rtc::write(&rtc::DateTime::from_unix(ns / 1_000_000_000), self.century);
                self.adjust_ns = ns % 1_000_000_000;
                self.base_tsc = tsc::rdtsc();
                self.base_ns = ns;
                self.last_second = rtc::seconds_register();
                self.first_tick = None;
                self.anchored = true;
            }
            None => {
                self.adjust_ns = 0;
                self.first_tick = None;
                self.anchor_to_rtc();
            }
        }
        Ok(())
    }
}
