//! From the PVH entry to Rust: the Xen ELF note, 32-bit start, page tables, GDT and long mode.
//!
//! The PVH boot ABI enters at the 32-bit address named by the `XEN_ELFNOTE_PHYS32_ENTRY` note, in
//! flat 32-bit protected mode with paging off, `%ebx` holding the physical address of an
//! `hvm_start_info` (see [`crate::pvh`]). Nothing else is set up: no stack, no long mode, and
//! the loader does not promise a zeroed `.bss`. This code clears `.bss`, identity-maps the first
//! 4 GiB with 2 MiB pages (RAM, the ACPI tables, the local APIC and the 32-bit PCI window all
//! live there), enables PAE and `EFER.LME`, turns on paging, loads a three-entry GDT and far-jumps
//! into 64-bit code, which calls `entry` with the start-info address. `entry` paints the stack
//! (see [`crate::hw::layout`]), copies the start info out of the loader's memory into
//! [`crate::state::BOOT`] before anything can overwrite it, and calls [`crate::image::run`].
//!
//! The note's descriptor is a `.quad`: QEMU reads a host `size_t` from it, as Linux's own
//! `_ASM_PTR` note is written. Its name is "Xen" padded to 4 bytes and the note section is only
//! 4-aligned, so QEMU's `ALIGN_UP(namesz, p_align)` lands exactly on the descriptor.

#[cfg(target_os = "none")]
use crate::{hw, hw::layout::STACK_SIZE, image, pvh::BootInfo, state};

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4            /* namesz */
    .long 8            /* descsz */
    .long 18           /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad pvh_start32

    /* Page tables: PML4, PDPT, four PDs, 4 KiB-aligned at run time inside this pool so that
       .bss needs only 16-byte alignment (a 4 KiB-aligned .bss would pad the image file). */
    .section .bss.pagetables, "aw", @nobits
    .balign 16
    boot_pt_pool: .skip 4096 * 7

    .section .bss.stack, "aw", @nobits
    .balign 16
    .global __stack_bottom
    __stack_bottom:
    .skip {stack_size}
    .global __stack_top
    __stack_top:

    .section .rodata.gdt, "a"
    .balign 16
    boot_gdt:
    .quad 0
    .quad 0x00209a0000000000   /* 0x08: 64-bit code, present, DPL 0 */
    .quad 0x00cf92000000ffff   /* 0x10: flat data */
    boot_gdt_end:
    boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .text.boot, "ax"
    .code32
    .global pvh_start32
    pvh_start32:
    cli
    cld
    mov %ebx, %esi                 /* keep the start-info address */

    /* Zero .bss (it holds the page tables and the stack). */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb

    /* %ebp = PML4, %ebp+4K = PDPT, %ebp+8K.. = PD0..PD3.
       PML4[0] -> PDPT; PDPT[0..4] -> PD0..PD3; PDn: 2 MiB identity pages. */
    mov $boot_pt_pool + 4095, %ebp
    and $0xfffff000, %ebp
    lea 4096(%ebp), %eax
    or $0x3, %eax
    mov %eax, (%ebp)
    lea 8192(%ebp), %eax
    or $0x3, %eax
    mov %eax, 4096(%ebp)
    add $4096, %eax
    mov %eax, 4096 + 8(%ebp)
    add $4096, %eax
    mov %eax, 4096 + 16(%ebp)
    add $4096, %eax
    mov %eax, 4096 + 24(%ebp)
    lea 8192(%ebp), %edi
    xor %ecx, %ecx
1:
    mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax                 /* present, writable, 2 MiB page */
    mov %eax, (%edi,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jne 1b

    mov %ebp, %cr3
    mov %cr4, %eax
    or $0x20, %eax                 /* PAE */
    mov %eax, %cr4
    mov $0xC0000080, %ecx          /* EFER */
    rdmsr
    or $0x100, %eax                /* LME */
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax           /* PG | PE */
    mov %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $pvh_start64

    .code64
    pvh_start64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    mov $__stack_top, %rsp
    xor %ebp, %ebp
    mov %esi, %edi                 /* first argument: start-info address */
    call {main}
2:
    cli
    hlt
    jmp 2b
    "#,
    stack_size = const STACK_SIZE,
    main = sym entry,
    options(att_syntax)
);

/// The PVH entry's Rust half, called by the assembly above on the boot stack with the loader's
/// start-info address.
#[cfg(target_os = "none")]
extern "C" fn entry(start_info: u32) -> ! {
    hw::layout::paint_stack();
    publish_start_info(start_info);
    image::run()
}

/// Copy the start info into [`state::BOOT`]. Not inlined, so that the copy's temporaries
/// (kilobytes) leave the stack before the agent runs.
#[cfg(target_os = "none")]
#[inline(never)]
fn publish_start_info(start_info: u32) {
    let read = |addr: u64, len: usize| {
        // SAFETY: the loader's start info, command line and memory map sit in RAM it wrote,
        // and nothing writes there before this copy is taken (this runs first, on one CPU).
        unsafe { hw::mem::phys_bytes(addr, len) }
    };
    state::BOOT.call_once(|| {
        read(start_info as u64, 56)
            .map(|head| BootInfo::parse(head, &read))
            .unwrap_or(BootInfo::empty())
    });
}
