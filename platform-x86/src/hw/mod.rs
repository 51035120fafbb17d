//! Devices. Port I/O goes through the `x86_64` crate; each register access is an `unsafe`
//! call made in exactly one place per device, next to the reason it is sound.

pub mod acpi;
pub mod exit;
pub mod i8042;
pub mod interrupts;
pub mod layout;
pub mod log;
pub mod mem;
pub mod pci;
pub mod rtc;
pub mod tsc;
pub mod uart;
pub mod virtio;

use x86_64::instructions::port::Port;

/// Read a byte from an I/O port.
///
/// # Safety
/// Reading `port` must have no effect the caller has not accounted for (some device registers
/// acknowledge or pop data when read).
pub unsafe fn inb(port: u16) -> u8 {
    // SAFETY: the caller vouches for the port's side effects.
    unsafe { Port::<u8>::new(port).read() }
}

/// Write a byte to an I/O port.
///
/// # Safety
/// `port` must belong to a device the caller owns, and the value must be one it expects.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller owns the device and vouches for the value.
    unsafe { Port::<u8>::new(port).write(value) }
}

/// Read a 16-bit I/O port. See [`inb`].
///
/// # Safety
/// As [`inb`].
pub unsafe fn inw(port: u16) -> u16 {
    // SAFETY: as inb.
    unsafe { Port::<u16>::new(port).read() }
}

/// Write a 16-bit I/O port. See [`outb`].
///
/// # Safety
/// As [`outb`].
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: as outb.
    unsafe { Port::<u16>::new(port).write(value) }
}

/// Read a 32-bit I/O port. See [`inb`].
///
/// # Safety
/// As [`inb`].
pub unsafe fn inl(port: u16) -> u32 {
    // SAFETY: as inb.
    unsafe { Port::<u32>::new(port).read() }
}

/// Write a 32-bit I/O port. See [`outb`].
///
/// # Safety
/// As [`outb`].
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: as outb.
    unsafe { Port::<u32>::new(port).write(value) }
}

/// Stop for good: interrupts off, then `hlt` (again, should a non-maskable interrupt end it).
pub fn halt() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
