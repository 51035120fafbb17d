//! The PS/2 keyboard controller, for the one thing a machine without a declared reset register
//! still offers: its reset line, pulsed by command 0xFE.

/// Pulse the CPU reset line. Returns only if the machine is still running.
pub fn pulse_reset() {
    // SAFETY: port 0x64 is the i8042's status/command port; polling its input-buffer-full bit
    // and then sending 0xFE ("pulse reset") is what the port is used for here.
    unsafe {
        for _ in 0..100_000 {
            if super::inb(0x64) & 0x02 == 0 {
                break;
            }
        }
        super::outb(0x64, 0xfe);
    }
}
