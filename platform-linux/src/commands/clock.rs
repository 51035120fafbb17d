//! `guest-get-time` and `guest-set-time` on Linux.
//!
//! get-time reads `CLOCK_REALTIME` and returns nanoseconds at microsecond resolution, as
//! upstream does (GLib's `g_get_real_time() * 1000`: the last three digits are always 0), so
//! that a client comparing our value with qemu-ga's sees the same thing; the finer digits would
//! be noise after a round trip over a serial channel anyway.
//!
//! set-time is upstream's: with a time, `settimeofday` (microseconds, so the same rounding and
//! the same EINVAL for a negative remainder) and then `/sbin/hwclock -w`; without one,
//! `/sbin/hwclock -s`; the helper runs through [`crate::run::run_command`] with upstream's
//! texts. upstream answers "unsupported" when `/sbin/hwclock` is not executable. An
//! initramfs often has no `hwclock`, so here the RTC is then driven directly through
//! `/dev/rtc0` (`RTC_SET_TIME` / `RTC_RD_TIME`, the RTC holding UTC as `hwclock --utc`
//! assumes), and only a guest with neither answers "unsupported" (and shows
//! `guest-set-time` disabled in `guest-info`).

#![allow(
    clippy::result_large_err,
    reason = "agent_core::Error holds its message inline, by design: no allocation"
)]

use agent_core::commands::clock::Clock;
use agent_core::schema::Command;
use agent_core::{Error, Result};
use rustix::time::{ClockId, Timespec};

use crate::sys::dev::RtcTime;

const HWCLOCK: &str = "/sbin/hwclock";
const RTC_DEVICES: [&str; 2] = ["/dev/rtc0", "/dev/rtc"];

/// The Linux clock.
#[derive(Debug, Default)]
pub struct LinuxClock {}

impl Clock for LinuxClock {
    fn supports(&self, cmd: Command) -> bool {
        match cmd {
            Command::GuestSetTime => crate::run::executable(HWCLOCK) || rtc_device().is_some(),
            _ => true,
        }
    }

    fn get_time(&mut self) -> Result<i64> {
        let ts = rustix::time::clock_gettime(ClockId::Realtime);
        let usec = ts.tv_nsec / 1000;
        Ok(ts
            .tv_sec
            .saturating_mul(1_000_000_000)
            .saturating_add(usec * 1000))
    }

    fn set_time(&mut self, time: Option<i64>) -> Result<()> {
        let hwclock = crate::run::executable(HWCLOCK);
        let rtc = rtc_device();
        if !hwclock && rtc.is_none() {
            return Err(Error::Unsupported);
        }
        if let Some(ns) = time {
            crate::log!(crate::log::Level::Info, "guest-set-time called");
            // settimeofday's microseconds, truncated as upstream computes them.
            let secs = ns / 1_000_000_000;
            let usec = (ns % 1_000_000_000) / 1000;
            if usec < 0 {
                return Err(Error::msg(format_args!(
                    "Failed to set time to guest: {}",
                    crate::config::strerror(libc::EINVAL)
                )));
            }
            rustix::time::clock_settime(
                ClockId::Realtime,
                Timespec {
                    tv_sec: secs,
                    tv_nsec: usec * 1000,
                },
            )
            .map_err(|e| {
                Error::msg(format_args!(
                    "Failed to set time to guest: {}",
                    crate::config::strerror(e.raw_os_error())
                ))
            })?;
        }
        if hwclock {
            let flag = if time.is_some() { "-w" } else { "-s" };
            crate::run::run_command(&[HWCLOCK, flag], None, "set hardware clock to system time")
                .map(|_| ())
        } else if let Some(dev) = rtc {
            rtc_sync(dev, time.is_some()).map_err(|e| {
                Error::msg(format_args!(
                    "child process has failed to set hardware clock to system time: {dev}: {e}"
                ))
            })
        } else {
            Err(Error::Unsupported)
        }
    }
}

fn rtc_device() -> Option<&'static str> {
    RTC_DEVICES
        .into_iter()
        .find(|d| std::path::Path::new(d).exists())
}

/// `to_rtc`: the system clock into the RTC (`hwclock -w`), else the RTC into the system clock
/// (`hwclock -s`).
fn rtc_sync(dev: &str, to_rtc: bool) -> std::result::Result<(), String> {
    use std::os::fd::AsFd as _;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(to_rtc)
        .open(dev)
        .map_err(|e| crate::config::io_text(&e))?;
    if to_rtc {
        let now = rustix::time::clock_gettime(ClockId::Realtime);
        let tm = rtc_from_unix(now.tv_sec);
        crate::sys::dev::rtc_set(f.as_fd(), &tm).map_err(|e| crate::config::io_text(&e))?;
    } else {
        let tm = crate::sys::dev::rtc_read(f.as_fd()).map_err(|e| crate::config::io_text(&e))?;
        let secs = unix_from_rtc(&tm);
        rustix::time::clock_settime(
            ClockId::Realtime,
            Timespec {
                tv_sec: secs,
                tv_nsec: 0,
            },
        )
        .map_err(|e| crate::config::strerror(e.raw_os_error()))?;
    }
    Ok(())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn rtc_from_unix(secs: i64) -> RtcTime {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let yday = days - days_from_civil(y, 1, 1);
    RtcTime {
        sec: (rem % 60) as i32,
        min: (rem / 60 % 60) as i32,
        hour: (rem / 3600) as i32,
        mday: d as i32,
        mon: (m - 1) as i32,
        year: (y - 1900) as i32,
        wday: (days + 4).rem_euclid(7) as i32,
        yday: yday as i32,
        isdst: 0,
    }
}

fn unix_from_rtc(tm: &RtcTime) -> i64 {
    let days = days_from_civil(
        i64::from(tm.year) + 1900,
        i64::from(tm.mon) + 1,
        i64::from(tm.mday),
    );
    days * 86_400 + i64::from(tm.hour) * 3600 + i64::from(tm.min) * 60 + i64::from(tm.sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_time_is_the_realtime_clock_in_ns() {
        let mut c = LinuxClock::default();
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        let t = c.get_time().unwrap();
        let after = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        assert!(before - 1000 < t && t <= after, "{before} {t} {after}");
        assert_eq!(t % 1000, 0, "microsecond resolution, as upstream");
    }

    #[test]
    fn rtc_calendar() {
        // 2000-02-29 12:34:56 UTC, a Tuesday, day 59 of the year.
        let t = 951_827_696;
        let tm = rtc_from_unix(t);
        assert_eq!(
            tm,
            RtcTime {
                sec: 56,
                min: 34,
                hour: 12,
                mday: 29,
                mon: 1,
                year: 100,
                wday: 2,
                yday: 59,
                isdst: 0
            }
        );
        assert_eq!(unix_from_rtc(&tm), t);
        for t in [0i64, 86_399, 1_795_438_762, 3_155_759_999, 4_102_444_800] {
            assert_eq!(unix_from_rtc(&rtc_from_unix(t)), t);
        }
        assert_eq!(rtc_from_unix(0).wday, 4); // a Thursday
    }
}
