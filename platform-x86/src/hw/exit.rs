//! QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`): writing
//! `v` makes QEMU exit with status `(v << 1) | 1`. The self-tests report through it: status
//! [`SUCCESS_STATUS`] when all passed, [`FAILURE_STATUS`] otherwise. Without the device the
//! write goes nowhere and the caller halts instead.

/// The device's I/O port.
pub const PORT: u16 = 0xf4;
/// The value written on success.
pub const SUCCESS: u8 = 0x10;
/// The value written on failure.
pub const FAILURE: u8 = 0x11;
/// QEMU's exit status after [`SUCCESS`]: 33.
pub const SUCCESS_STATUS: i32 = ((SUCCESS as i32) << 1) | 1;
/// QEMU's exit status after [`FAILURE`]: 35.
pub const FAILURE_STATUS: i32 = ((FAILURE as i32) << 1) | 1;

/// Report success (QEMU exits with 33).
pub fn success() {
    // SAFETY: port 0xf4 is isa-debug-exit when present and unassigned otherwise; the write
    // has no other effect.
    unsafe { super::outl(PORT, SUCCESS as u32) };
}

/// Report failure (QEMU exits with 35).
pub fn failure() {
    // SAFETY: as in `success`.
    unsafe { super::outl(PORT, FAILURE as u32) };
}
