//! The image's memory as the linker laid it out: the boot stack and the static data.
//!
//! There is no guard page under the boot stack (the page tables map 2 MiB pages), so an
//! overflow would silently corrupt `.bss`. Instead the stack is painted at entry and its
//! high-water mark is measured ([`stack_usage`]): the self-test and the `stack` program report
//! it, and `cargo xtask image` prints it, so a change that eats into the margin shows up as a
//! number long before it shows up as corruption. The bounds come from symbols that
//! [`crate::boot`] and `link.ld` define, which only the bare-metal build has.

/// Size of the boot stack ([`crate::boot`] reserves it).
pub const STACK_SIZE: usize = 64 * 1024;

#[cfg(target_os = "none")]
const PAINT: u8 = 0xa5;

/// The stack's bounds `(bottom, top)`, as addresses.
#[cfg(target_os = "none")]
fn stack_bounds() -> (usize, usize) {
    unsafe extern "C" {
        static __stack_bottom: u8;
        static __stack_top: u8;
    }
    (
        core::ptr::addr_of!(__stack_bottom) as usize,
        core::ptr::addr_of!(__stack_top) as usize,
    )
}

/// The image's static memory bounds `(image start, .bss start, .bss end)`.
#[cfg(target_os = "none")]
fn image_bounds() -> (usize, usize, usize) {
    unsafe extern "C" {
        static __image_start: u8;
        static __bss_start: u8;
        static __bss_end: u8;
    }
    (
        core::ptr::addr_of!(__image_start) as usize,
        core::ptr::addr_of!(__bss_start) as usize,
        core::ptr::addr_of!(__bss_end) as usize,
    )
}

/// Fill the unused part of the stack with [`PAINT`] (the high-water mark is where it stops).
/// Called first thing on the boot stack.
#[cfg(target_os = "none")]
#[inline(never)]
pub fn paint_stack() {
    let (bottom, _) = stack_bounds();
    let marker = 0u8;
    let here = core::ptr::addr_of!(marker) as usize;
    // Leave 256 bytes below this frame alone: that is where this function itself runs.
    let end = here.saturating_sub(256);
    let mut p = bottom;
    while p < end {
        // SAFETY: [bottom, end) is the part of the boot stack below the live frames (the stack
        // grows down from `__stack_top`), so nothing uses those bytes yet.
        unsafe { (p as *mut u8).write_volatile(PAINT) };
        p += 1;
    }
}

/// `(bytes ever used, stack size)` of the boot stack, in the image.
pub fn stack_usage() -> Option<(usize, usize)> {
    #[cfg(target_os = "none")]
    {
        let (bottom, top) = stack_bounds();
        let mut p = bottom;
        // SAFETY: reading bytes of our own stack below the current frame; volatile because
        // the compiler cannot know calls may have written them.
        while p < top && unsafe { (p as *const u8).read_volatile() } == PAINT {
            p += 1;
        }
        Some((top - p, top - bottom))
    }
    #[cfg(not(target_os = "none"))]
    {
        None
    }
}

/// The `.data`+`.bss` span of the running image, `(image bytes in memory, bss bytes)`.
pub fn static_memory() -> Option<(usize, usize)> {
    #[cfg(target_os = "none")]
    {
        let (start, bss_start, bss_end) = image_bounds();
        Some((bss_end - start, bss_end - bss_start))
    }
    #[cfg(not(target_os = "none"))]
    {
        None
    }
}
