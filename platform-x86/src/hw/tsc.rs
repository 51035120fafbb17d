//! A monotonic clock from the TSC, calibrated against PIT channel 2.
//!
//! The PIT runs at a fixed 1.193182 MHz on every PC (and in QEMU it follows the virtual clock),
//! so timing 10 ms of it with the TSC gives the TSC's rate. Channel 2 is the one whose gate
//! software controls (port 0x61) and whose output can be read back, so no interrupt is needed.
//!
//! QEMU's `microvm` has a PIT but no port 0x61 (it has no PC speaker, whose device emulates
//! that port and channel 2's gate): there the port reads all ones and channel 2 never counts.
//! The TSC is then timed against channel 0's count, latched and read back (its gate is tied
//! high; its interrupt stays masked at the 8259s, as the firmware's 18.2 Hz tick already was).

use core::sync::atomic::{AtomicU64, Ordering};

/// The PIT's input clock in Hz.
pub const PIT_HZ: u64 = 1_193_182;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// Read the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads a counter; it has no side effects and is available on every
    // x86_64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Measure the TSC rate over `ms` milliseconds of PIT channel 2 and remember it.
pub fn calibrate(ms: u32) -> u64 {
    let ticks = (PIT_HZ * ms as u64 / 1000).clamp(1, 0xffff) as u16;
    // SAFETY: reading system control port B has no side effect.
    if unsafe { super::inb(0x61) } == 0xff {
        return calibrate_channel0(ticks);
    }
    // SAFETY: ports 0x61 (system control port B) and 0x42/0x43 (PIT channel 2 and mode) are
    // the PC's fixed timer ports; channel 2 drives only the speaker, which stays gated off
    // (bit 1 clear), and nothing else in the image uses them.
    let (start, end) = unsafe {
        let ctrl = super::inb(0x61);
        super::outb(0x61, (ctrl & !0x02) | 0x01); // gate on, speaker off
        super::outb(0x43, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
        super::outb(0x42, (ticks & 0xff) as u8);
        super::outb(0x42, (ticks >> 8) as u8);
        let start = rdtsc();
        // OUT2 (bit 5 of port 0x61) rises when the count reaches zero. Bound the wait by TSC
        // too, in case the PIT is absent: 10 G cycles is seconds on any real or emulated CPU.
        while super::inb(0x61) & 0x20 == 0 {
            if rdtsc().wrapping_sub(start) > 10_000_000_000 {
                break;
            }
            core::hint::spin_loop();
        }
        let end = rdtsc();
        super::outb(0x61, ctrl & !0x03);
        (start, end)
    };
    let hz = hz_from(end.wrapping_sub(start), ticks as u64);
    TSC_HZ.store(hz, Ordering::Relaxed);
    hz
}

/// [`calibrate`] against PIT channel 0, for machines without port 0x61.
fn calibrate_channel0(ticks: u16) -> u64 {
    let read = || {
        // SAFETY: ports 0x40/0x43 are PIT channel 0 and the mode register; the latch command
        // (0x00) freezes channel 0's count for the two reads that follow and changes nothing
        // else.
        unsafe {
            super::outb(0x43, 0x00);
            let lo = super::inb(0x40);
            let hi = super::inb(0x40);
            u16::from_le_bytes([lo, hi])
        }
    };
    // SAFETY: channel 0, lobyte/hibyte, mode 2 (rate generator), initial count 65536: the
    // firmware's own setting on a PC; its IRQ 0 is masked (interrupts are off, and
    // `interrupts::init` masks the 8259s).
    unsafe {
        super::outb(0x43, 0b0011_0100);
        super::outb(0x40, 0);
        super::outb(0x40, 0);
    }
    let mut prev = read();
    let start = rdtsc();
    let mut elapsed = 0u64;
    // Mode 2 counts down and reloads: the wrapping difference of two reads is the ticks
    // between them while reads come faster than every 55 ms.
    while elapsed < ticks as u64 {
        let now = read();
        elapsed += prev.wrapping_sub(now) as u64;
        prev = now;
        if rdtsc().wrapping_sub(start) > 10_000_000_000 {
            break;
        }
    }
    let hz = hz_from(rdtsc().wrapping_sub(start), elapsed);
    TSC_HZ.store(hz, Ordering::Relaxed);
    hz
}

/// The TSC rate for `cycles` counted over `pit_ticks` PIT ticks (at least 1 MHz).
pub fn hz_from(cycles: u64, pit_ticks: u64) -> u64 {
    let hz = (cycles as u128 * PIT_HZ as u128 / pit_ticks.max(1) as u128) as u64;
    hz.max(1_000_000)
}

/// Replace the rate (with a better measurement, e.g. against RTC seconds); ignored below 1 MHz.
pub fn set_hz(hz: u64) {
    if hz >= 1_000_000 {
        TSC_HZ.store(hz, Ordering::Relaxed);
    }
}

/// The calibrated rate (1 GHz if never calibrated).
pub fn hz() -> u64 {
    match TSC_HZ.load(Ordering::Relaxed) {
        0 => 1_000_000_000,
        hz => hz,
    }
}

/// Nanoseconds for `cycles` TSC cycles.
pub fn cycles_to_ns(cycles: u64) -> u64 {
    (cycles as u128 * 1_000_000_000 / hz() as u128) as u64
}

/// Nanoseconds since `since` (a TSC value).
pub fn ns_since(since: u64) -> u64 {
    cycles_to_ns(rdtsc().wrapping_sub(since))
}

/// Spin for `ms` milliseconds.
pub fn delay_ms(ms: u64) {
    let start = rdtsc();
    let limit = hz() / 1000 * ms;
    while rdtsc().wrapping_sub(start) < limit {
        core::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rate_arithmetic() {
        // 10 ms of PIT at 2 GHz is 20 M cycles.
        assert_eq!(super::hz_from(20_000_000, 11_931), 2_000_137_457);
        assert_eq!(super::hz_from(0, 0), 1_000_000);
    }
}
