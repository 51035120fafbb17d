//! The bare-metal x86_64 QEMU guest agent: a `#![no_std]` image with no heap that boots under
//! `qemu-system-x86_64 -kernel` on both the `pc` and `q35` machines and answers the guest-agent
//! protocol on a 16550 UART or a virtio-console port.
//!
//! # Why PVH
//!
//! The image boots through the Xen PVH entry (one ELF note, name `Xen`, type 18,
//! `XEN_ELFNOTE_PHYS32_ENTRY`, holding the 32-bit entry address) rather than multiboot:
//!
//! - QEMU's multiboot loader refuses a 64-bit ELF ("Cannot load x86-64 image, give a 32bit
//!   one") unless the header carries its own load addresses, which would mean a hand-kept
//!   multiboot header or an `objcopy` step to a 32-bit ELF. PVH takes the ELF as linked.
//! - QEMU's `-kernel` boots PVH the same way on `pc` and `q35` (its `pvh.bin` option ROM), and
//!   so do Firecracker and cloud-hypervisor, so the same file runs on all three.
//! - The PVH `hvm_start_info` hands over the kernel command line, the E820-style memory map and
//!   the ACPI RSDP address, which is everything the backends need; multiboot 1 has no RSDP.
//!
//! The cost is the switch to long mode ourselves ([`boot`]), about fifty lines of assembly.
//!
//! # No heap
//!
//! Nothing here or below it links `alloc`: the crate is `no_std` without `extern crate alloc`,
//! every dependency is used without its `alloc` feature, and the image defines no
//! `#[global_allocator]`. The protocol engine works in [`agent_core::StaticBuffers`] held in a
//! `static`, and every backend is fixed-size (the RAM file store, the process table, the
//! virtqueues). `tests/tests/baremetal_build.rs` checks the dependency graph and the linked image.
//!
//! # Layout
//!
//! [`boot`] is the entry and long-mode switch, [`image`] the agent loop and transports, [`hw`]
//! the devices (UART, CMOS RTC, PIT/TSC, PCI, ACPI tables, virtio-console, isa-debug-exit),
//! [`commands`] the backend of each command family (named as in `agent_core::commands`),
//! [`programs`] the built-in programs `guest-exec` runs, [`config`] the build-time and
//! kernel-command-line settings and [`pvh`] the boot information. Everything that is logic
//! rather than port I/O (table parsing, date arithmetic, the file store, the process table,
//! option parsing) builds and is unit-tested on the host.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]
#![warn(missing_docs)]
// `agent_core::Error` holds its message inline (no heap), so it is large by design; returning it
// by value is how every backend reports failure.
#![allow(clippy::result_large_err)]

pub mod boot;
pub mod commands;
pub mod config;
pub mod hw;
pub mod image;
pub mod programs;
pub mod pvh;
pub mod selftest;
pub mod sync;

#[cfg(all(target_os = "none", not(test)))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // Only the location: formatting the message would link core's Debug machinery for every
    // value a panic could show, for a path that should never run.
    match info.location() {
        Some(l) => hw::log::write_fmt(format_args!(
            "qga-x86: panic at {}:{}\n",
            l.file(),
            l.line()
        )),
        None => hw::log::write_fmt(format_args!("qga-x86: panic\n")),
    }
    hw::exit::failure();
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
