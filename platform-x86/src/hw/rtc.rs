//! The CMOS real-time clock (MC146818 at ports 0x70/0x71): read and set the wall-clock time.
//!
//! The RTC counts whole seconds in BCD or binary (status register B says which), with the
//! century in a CMOS byte the FADT names (QEMU: 0x32). Reads follow the usual protocol: wait
//! for no update in progress, read everything, and read again until two reads agree.

/// A calendar time in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    /// Full year, e.g. 2026.
    pub year: i64,
    /// 1..=12.
    pub month: u8,
    /// 1..=31.
    pub day: u8,
    /// 0..=23.
    pub hour: u8,
    /// 0..=59.
    pub minute: u8,
    /// 0..=59.
    pub second: u8,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u8, d: u8) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, u8, u8) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl DateTime {
    /// Seconds since the Unix epoch.
    pub fn to_unix(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + self.hour as i64 * 3600
            + self.minute as i64 * 60
            + self.second as i64
    }

    /// The calendar time of `secs` since the epoch.
    pub fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            hour: (rem / 3600) as u8,
            minute: (rem / 60 % 60) as u8,
            second: (rem % 60) as u8,
        }
    }
}

/// Binary-coded decimal to binary.
pub fn from_bcd(v: u8) -> u8 {
    (v >> 4) * 10 + (v & 0x0f)
}

/// Binary to binary-coded decimal (for values below 100).
pub fn to_bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

/// The raw RTC registers of one reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Raw {
    /// Seconds register.
    pub second: u8,
    /// Minutes register.
    pub minute: u8,
    /// Hours register (bit 7 is PM in 12-hour mode).
    pub hour: u8,
    /// Day of month register.
    pub day: u8,
    /// Month register.
    pub month: u8,
    /// Year register (two digits).
    pub year: u8,
    /// Century register, if the FADT names one.
    pub century: Option<u8>,
    /// Status register B.
    pub status_b: u8,
}

const B_24H: u8 = 0x02;
const B_BINARY: u8 = 0x04;
const B_SET: u8 = 0x80;

impl Raw {
    /// Decode to a calendar time. Without a century register, years are 2000..=2099.
    pub fn decode(&self) -> Option<DateTime> {
        let bin = self.status_b & B_BINARY != 0;
        let conv = |v: u8| if bin { v } else { from_bcd(v) };
        let pm = self.hour & 0x80 != 0;
        let mut hour = conv(self.hour & 0x7f);
        if self.status_b & B_24H == 0 {
            hour %= 12;
            if pm {
                hour += 12;
            }
        }
        let century = self
            .century
            .map(conv)
            .filter(|c| (19..=99).contains(c))
            .unwrap_or(20);
        let dt = DateTime {
            year: century as i64 * 100 + conv(self.year) as i64,
            month: conv(self.month),
            day: conv(self.day),
            hour,
            minute: conv(self.minute),
            second: conv(self.second),
        };
        let valid = (1..=12).contains(&dt.month)
            && (1..=31).contains(&dt.day)
            && dt.hour < 24
            && dt.minute < 60
            && dt.second < 60;
        valid.then_some(dt)
    }

    /// Encode `dt` in the format `status_b` selects.
    pub fn encode(dt: &DateTime, status_b: u8, with_century: bool) -> Raw {
        let bin = status_b & B_BINARY != 0;
        let conv = |v: u8| if bin { v } else { to_bcd(v) };
        let hour = if status_b & B_24H != 0 {
            conv(dt.hour)
        } else {
            let h12 = match dt.hour % 12 {
                0 => 12,
                h => h,
            };
            conv(h12) | if dt.hour >= 12 { 0x80 } else { 0 }
        };
        Raw {
            second: conv(dt.second),
            minute: conv(dt.minute),
            hour,
            day: conv(dt.day),
            month: conv(dt.month),
            year: conv(dt.year.rem_euclid(100) as u8),
            century: with_century.then(|| conv(dt.year.div_euclid(100).clamp(0, 99) as u8)),
            status_b,
        }
    }
}

fn cmos_read(reg: u8) -> u8 {
    // SAFETY: ports 0x70/0x71 are the CMOS index and data ports; selecting a register and
    // reading it has no side effect on the clock (bit 7 keeps NMIs masked, as they are anyway).
    unsafe {
        super::outb(0x70, 0x80 | reg);
        super::inb(0x71)
    }
}

fn cmos_write(reg: u8, value: u8) {
    // SAFETY: as in `cmos_read`; callers write only the time, date and status-B registers.
    unsafe {
        super::outb(0x70, 0x80 | reg);
        super::outb(0x71, value);
    }
}

fn update_in_progress() -> bool {
    cmos_read(0x0a) & 0x80 != 0
}

fn read_once(century_reg: Option<u8>) -> Raw {
    let mut spins = 0u32;
    while update_in_progress() && spins < 1_000_000 {
        spins += 1;
        core::hint::spin_loop();
    }
    Raw {
        second: cmos_read(0x00),
        minute: cmos_read(0x02),
        hour: cmos_read(0x04),
        day: cmos_read(0x07),
        month: cmos_read(0x08),
        year: cmos_read(0x09),
        century: century_reg.map(cmos_read),
        status_b: cmos_read(0x0b),
    }
}

/// Read the RTC (consistent snapshot). `century_reg` is the FADT's CENTURY field, if nonzero.
pub fn read(century_reg: Option<u8>) -> Raw {
    let mut last = read_once(century_reg);
    for _ in 0..8 {
        let next = read_once(century_reg);
        if next == last {
            break;
        }
        last = next;
    }
    last
}

/// Just the seconds register (to watch for the next tick).
pub fn seconds_register() -> u8 {
    cmos_read(0x00)
}

/// Set the RTC to `dt`.
pub fn write(dt: &DateTime, century_reg: Option<u8>) {
    let b = cmos_read(0x0b);
    let raw = Raw::encode(dt, b & !B_SET, century_reg.is_some());
    cmos_write(0x0b, b | B_SET);
    cmos_write(0x00, raw.second);
    cmos_write(0x02, raw.minute);
    cmos_write(0x04, raw.hour);
    cmos_write(0x07, raw.day);
    cmos_write(0x08, raw.month);
    cmos_write(0x09, raw.year);
    if let (Some(reg), Some(c)) = (century_reg, raw.century) {
        cmos_write(reg, c);
    }
    cmos_write(0x0b, b & !B_SET);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        for z in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        let t = DateTime {
            year: 2026,
            month: 11,
            day: 23,
            hour: 14,
            minute: 59,
            second: 7,
        };
        assert_eq!(t.to_unix(), 1_795_445_947);
        assert_eq!(DateTime::from_unix(t.to_unix()), t);
        assert_eq!(DateTime::from_unix(-1).year, 1969);
    }

    #[test]
    fn bcd_and_modes() {
        assert_eq!(from_bcd(0x59), 59);
        assert_eq!(to_bcd(59), 0x59);
        let t = DateTime {
            year: 2069,
            month: 12,
            day: 31,
            hour: 0,
            minute: 5,
            second: 9,
        };
        for b in [0x02, 0x06, 0x00, 0x04] {
            for century in [true, false] {
                let raw = Raw::encode(&t, b, century);
                assert_eq!(raw.decode(), Some(t), "status B {b:#x}, century {century}");
            }
        }
        let pm = DateTime { hour: 13, ..t };
        let raw = Raw::encode(&pm, 0x00, true);
        assert_eq!(raw.hour, 0x81);
        assert_eq!(raw.decode(), Some(pm));
        let bad = Raw {
            month: 0x13,
            ..Raw::encode(&t, 0x02, true)
        };
        assert_eq!(bad.decode(), None);
    }
}
