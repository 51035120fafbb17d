//! The bare-metal x86_64 QEMU guest agent: a `#![no_std]` image with no heap that boots under
//! `qemu-system-x86_64 -kernel` on the `pc`, `q35` and `microvm` machines and answers the guest-agent
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
//! # Transports
//!
//! The agent speaks on a virtio socket (vsock, one host connection at a time on port 1234 or
//! `qga.vsock_port=`: [`hw::virtio::vsock`]), on COM1 or COM2 (16550, 115200 8N1) or on a
//! virtio-console port named
//! `org.qemu.guest_agent.0` (multiport, virtio 1.0 PCI interface, also behind a PCIe root
//! port as libvirt lays out q35; or virtio-mmio, legacy or modern, on QEMU `microvm`, found
//! on the kernel command line or in microvm's window: [`hw::virtio::mmio`]), chosen at build time
//! (`QGA_TRANSPORT`) or on the kernel command line (`qga.transport=virtio|com1|com2|auto`; see
//! [`config`]; `qga.transport=vsock`, and `auto` tries vsock first, then virtio-console, then
//! COM1). The debug log goes to the COM port the agent does not use. A UART has no notion
//! of a connection, so over COM1/COM2 a client resynchronises with the 0xFF handshake as with
//! upstream's isa-serial channel; over virtio the host's port close resets the parser.
//!
//! The CPU halts whenever there is nothing to do ([`hw::interrupts`]): a UART wakes it with its
//! receive interrupt (IRQ 4 or 3 through the 8259 in virtual-wire mode), anything else with a
//! 1 kHz local-APIC timer tick (virtio is polled, after 2 ms of quiet). An idle image costs
//! the host a few percent of a core instead of all of it, and a UART receives at a few hundred
//! KB/s under TCG rather than the ~13 KB/s of a vCPU spinning against QEMU's I/O thread.
//! Interrupts are enabled only for that `sti; hlt`.
//!
//! # Self-tests
//!
//! `qga.selftest` on the command line runs [`selftest`] instead of the agent and reports
//! through QEMU's `isa-debug-exit` device: exit status 33 when everything passed, 35 if not.
//!
//! # Layout
//!
//! The modules stand on floors, each importing only from the floors below it, so that device
//! code never depends on the application that uses it:
//!
//! 1. [`boot`]: the PVH entry and long-mode switch; it copies the loader's start info;
//! 2. [`image`]: the agent loop and its transports;
//! 3. [`selftest`] and [`programs`] (the built-in programs `guest-exec` runs);
//! 4. [`state`]: the shared static buffers and the boot facts;
//! 5. [`commands`]: the backend of each command family (named as in `agent_core::commands`);
//! 6. [`hw`]: the devices (UART, CMOS RTC, PIT/TSC, PCI, ACPI, virtio, interrupts and the
//!    local-APIC timer, isa-debug-exit, the i8042 reset line) and the memory layout. Virtio is
//!    layered in turn ([`hw::virtio`]): the console driver sees a transport and its queues,
//!    not PCI, so virtio-mmio and other devices slot in beside them.
//!
//! [`config`], [`pvh`] and [`sync`] sit beneath them all.
//!
//! Everything that is logic rather than port I/O (table parsing, date arithmetic, the file
//! store, the process table, option parsing) builds and is unit-tested on the host.
//!
//! # Building and booting
//!
//! ```text
//! CARGO_PROFILE_IMAGE_OPT_LEVEL=z \
//!   cargo build -p platform-x86 --bin qga-x86 --target x86_64-unknown-none --profile image
//! qemu-system-x86_64 -accel tcg -M q35 -m 128 -display none -nodefaults -no-reboot \
//!   -kernel target/x86_64-unknown-none/image/qga-x86 -append qga.transport=virtio \
//!   -chardev socket,id=qga0,path=/tmp/qga.sock,server=on,wait=off \
//!   -device virtio-serial-pci,id=vser0 \
//!   -device virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0 \
//!   -serial file:/tmp/qga-x86.log -device isa-debug-exit,iobase=0xf4,iosize=0x04
//! ```
//!
//! `opt-level = "z"` keeps the image under 128 KiB; `tests::baremetal` builds and boots it the
//! same way.
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
pub mod state;
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
    hw::halt()
}
