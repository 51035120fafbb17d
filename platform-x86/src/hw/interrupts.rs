//! Interrupts and exceptions: the IDT, the CPU-exception report, the 8259s, and the
//! local-APIC timer that lets the agent loop halt instead of spin.
//!
//! Halting is why interrupts exist in this image at all. The agent polls its transport, and a
//! polling vCPU under TCG is a host core at 100 %, which on a shared build machine also starves
//! QEMU's I/O thread (the one that feeds the UART and the virtqueues). So once the transport
//! has been quiet for a moment the loop halts the CPU until the next timer tick ([`TICK_US`])
//! or, on a UART, until its receive interrupt ([`enable_isa_irq`]). The 8259s are moved off the
//! exception vectors and masked except for that one line, and interrupts are enabled only for
//! the `sti; hlt` pair, so every other piece of the image keeps running with interrupts off.
//! The handlers just acknowledge the interrupt; the loop itself looks at the devices.
//!
//! If the CPU has no usable local APIC the loop keeps polling (correct, only costlier).
//!
//! The same IDT routes every CPU exception to a handler that logs the exception frame and
//! reports failure through isa-debug-exit, so a bug shows up as a message and QEMU exit
//! status 35 rather than a silent triple-fault reset.

#[cfg(target_os = "none")]
use core::sync::atomic::AtomicU64;
use core::sync::atomic::{AtomicBool, Ordering};

#[cfg(target_os = "none")]
use super::tsc;
#[cfg(target_os = "none")]
use crate::sync::TakeOnce;

/// The timer period in microseconds: the worst-case extra latency of an answer after idling.
pub const TICK_US: u64 = 1000;
/// The tick's interrupt vector.
pub const TIMER_VECTOR: u8 = 0x20;
/// The local APIC's spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// Where the 8259s' IRQ 0-15 are moved (the firmware left them over the CPU exceptions).
pub const PIC_VECTOR_BASE: u8 = 0x30;

/// The local APIC's MMIO base, once set up.
#[cfg(target_os = "none")]
static LAPIC_BASE: AtomicU64 = AtomicU64::new(0);

/// Physical address of the local APIC's EOI register (read by the tick handler).
#[cfg(target_os = "none")]
static LAPIC_EOI: AtomicU64 = AtomicU64::new(0);
static ENABLED: AtomicBool = AtomicBool::new(false);

#[cfg(target_os = "none")]
#[repr(C, align(16))]
struct Idt([u64; 512]);

#[cfg(target_os = "none")]
static IDT: TakeOnce<Idt> = TakeOnce::new(Idt([0; 512]));

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .section .text.interrupts, "ax"
    .global qga_tick_isr
    qga_tick_isr:
    push %rax
    mov {eoi}(%rip), %rax
    movl $0, (%rax)
    pop %rax
    iretq
    .global qga_spurious_isr
    qga_spurious_isr:
    iretq
    .global qga_fault_isr
    qga_fault_isr:
    mov %rsp, %rdi             /* the frame: [error code,] RIP, CS, RFLAGS, ... */
    and $-16, %rsp
    call {fault}
    .global qga_pic_isr
    qga_pic_isr:
    push %rax
    mov $0x20, %al
    out %al, $0x20             /* non-specific EOI to the master 8259 */
    pop %rax
    iretq
    "#,
    eoi = sym LAPIC_EOI,
    fault = sym cpu_fault,
    options(att_syntax)
);

/// The two words of a 64-bit interrupt gate for `handler` in code segment `cs`.
pub fn gate(handler: u64, cs: u16) -> [u64; 2] {
    let low = (handler & 0xffff)
        | (cs as u64) << 16
        | 0x8e << 40 // present, DPL 0, 64-bit interrupt gate
        | ((handler >> 16) & 0xffff) << 48;
    [low, handler >> 32]
}

/// The local APIC timer count for `period_us`, given `ticks_per_ms` measured at one divisor.
pub fn timer_count(ticks_per_ms: u64, period_us: u64) -> u32 {
    (ticks_per_ms * period_us / 1000).clamp(1, u32::MAX as u64) as u32
}

#[cfg(target_os = "none")]
const LAPIC_TPR: u64 = 0x80;
#[cfg(target_os = "none")]
const LAPIC_EOI_REG: u64 = 0xb0;
#[cfg(target_os = "none")]
const LAPIC_SVR: u64 = 0xf0;
#[cfg(target_os = "none")]
const LAPIC_LVT_TIMER: u64 = 0x320;
#[cfg(target_os = "none")]
const LAPIC_TIMER_INIT: u64 = 0x380;
#[cfg(target_os = "none")]
const LAPIC_TIMER_CURRENT: u64 = 0x390;
#[cfg(target_os = "none")]
const LAPIC_TIMER_DIVIDE: u64 = 0x3e0;

#[cfg(target_os = "none")]
fn lapic_write(base: u64, reg: u64, value: u32) {
    // SAFETY: `base` is the local APIC's MMIO page (from IA32_APIC_BASE, identity-mapped and
    // uncached by the firmware's MTRRs); `reg` is one of its 32-bit registers.
    unsafe { ((base + reg) as usize as *mut u32).write_volatile(value) }
}

#[cfg(target_os = "none")]
fn lapic_read(base: u64, reg: u64) -> u32 {
    // SAFETY: as `lapic_write`; reading these registers has no side effect.
    unsafe { ((base + reg) as usize as *const u32).read_volatile() }
}

/// Set up the IDT, mask the PICs and start the local APIC timer. Returns whether idling is
/// available.
#[cfg(target_os = "none")]
pub fn init() -> bool {
    unsafe extern "C" {
        fn qga_tick_isr();
        fn qga_spurious_isr();
        fn qga_pic_isr();
        fn qga_fault_isr();
    }
    // CPUID.1:EDX bit 9: an on-chip APIC.
    if core::arch::x86_64::__cpuid(1).edx & (1 << 9) == 0 {
        return false;
    }
    let Some(idt) = IDT.take() else { return false };
    use x86_64::instructions::segmentation::Segment as _;
    let cs = x86_64::instructions::segmentation::CS::get_reg().0;
    // The tick, the local APIC's spurious vector, the UART lines (IRQ 3 and 4, masked until
    // `enable_isa_irq`) and the 8259s' spurious IRQ 7 (no EOI) and IRQ 15 (EOI to the master).
    let tick = qga_tick_isr as *const () as u64;
    let spurious = qga_spurious_isr as *const () as u64;
    let pic = qga_pic_isr as *const () as u64;
    let fault = qga_fault_isr as *const () as u64;
    for vector in 0..32usize {
        if let Some(slot) = idt.0.get_mut(vector * 2..vector * 2 + 2) {
            slot.copy_from_slice(&gate(fault, cs));
        }
    }
    for (vector, handler) in [
        (TIMER_VECTOR, tick),
        (SPURIOUS_VECTOR, spurious),
        (PIC_VECTOR_BASE + 3, pic),
        (PIC_VECTOR_BASE + 4, pic),
        (PIC_VECTOR_BASE + 7, spurious),
        (PIC_VECTOR_BASE + 15, pic),
    ] {
        let i = vector as usize * 2;
        if let Some(slot) = idt.0.get_mut(i..i + 2) {
            slot.copy_from_slice(&gate(handler, cs));
        }
    }
    let ptr = x86_64::structures::DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: x86_64::VirtAddr::new(idt.0.as_ptr() as u64),
    };
    // SAFETY: the IDT is a static that lives forever; its present gates point at the handlers
    // above, and interrupts stay disabled until `wait`.
    unsafe { x86_64::instructions::tables::lidt(&ptr) };
    // SAFETY: ports 0x20/0x21 and 0xA0/0xA1 are the two 8259s. The ICW1-4 sequence moves
    // their vectors to PIC_VECTOR_BASE (off the CPU exceptions, where the firmware left them)
    // and the final writes mask every line.
    unsafe {
        super::outb(0x20, 0x11);
        super::outb(0xa0, 0x11);
        super::outb(0x21, PIC_VECTOR_BASE);
        super::outb(0xa1, PIC_VECTOR_BASE + 8);
        super::outb(0x21, 0x04);
        super::outb(0xa1, 0x02);
        super::outb(0x21, 0x01);
        super::outb(0xa1, 0x01);
        super::outb(0x21, 0xff);
        super::outb(0xa1, 0xff);
    }
    // SAFETY: IA32_APIC_BASE is architectural on every CPU with an APIC (checked above);
    // reading it has no side effect.
    let apic_base = unsafe { x86_64::registers::model_specific::Msr::new(0x1b).read() };
    if apic_base & (1 << 11) == 0 {
        return false; // globally disabled by firmware
    }
    let base = apic_base & 0xffff_f000;
    if base == 0 || base >= super::mem::MAPPED_LIMIT {
        return false;
    }
    LAPIC_EOI.store(base + LAPIC_EOI_REG, Ordering::Relaxed);
    LAPIC_BASE.store(base, Ordering::Relaxed);
    lapic_write(base, LAPIC_TPR, 0);
    lapic_write(base, LAPIC_SVR, 0x100 | SPURIOUS_VECTOR as u32);
    // Measure the timer (divide by 16) against the TSC over 1 ms, with its interrupt masked.
    lapic_write(base, LAPIC_TIMER_DIVIDE, 0x3);
    lapic_write(base, LAPIC_LVT_TIMER, 1 << 16);
    lapic_write(base, LAPIC_TIMER_INIT, u32::MAX);
    let start = tsc::rdtsc();
    let ms = tsc::hz() / 1000;
    while tsc::rdtsc().wrapping_sub(start) < ms {
        core::hint::spin_loop();
    }
    let ticks = u32::MAX - lapic_read(base, LAPIC_TIMER_CURRENT);
    if ticks == 0 {
        lapic_write(base, LAPIC_TIMER_INIT, 0);
        return false;
    }
    lapic_write(base, LAPIC_LVT_TIMER, (1 << 17) | TIMER_VECTOR as u32); // periodic
    lapic_write(base, LAPIC_TIMER_INIT, timer_count(ticks as u64, TICK_US));
    ENABLED.store(true, Ordering::Relaxed);
    true
}

/// Any CPU exception: a bug. Log the top of the exception frame (the error code if the
/// exception pushes one, then RIP and CS), report failure through isa-debug-exit, and stop.
#[cfg(target_os = "none")]
extern "C" fn cpu_fault(frame: *const u64) -> ! {
    let word = |i: usize| {
        // SAFETY: `frame` is the stack pointer at exception entry; the CPU pushed at least
        // five quadwords there (SS, RSP, RFLAGS, CS, RIP), so words 0..3 are readable.
        unsafe { frame.add(i).read_volatile() }
    };
    crate::log!(
        "CPU exception, frame {:#x} {:#x} {:#x}",
        word(0),
        word(1),
        word(2)
    );
    super::exit::failure();
    super::halt()
}

/// Execute an invalid instruction (`qga.crash`), to show that an exception is reported.
pub fn invalid_opcode() {
    // SAFETY: raises #UD on purpose; the exception handler installed by `init` reports it and
    // never returns (without it, the CPU resets the machine, which is also an end).
    unsafe { core::arch::asm!("ud2") };
}

/// Let ISA interrupt line `irq` (3 or 4: the UARTs) wake [`wait`], through the master 8259
/// and the local APIC's LINT0 in virtual-wire (ExtINT) mode. Needs [`init`] first.
#[cfg(target_os = "none")]
pub fn enable_isa_irq(irq: u8) -> bool {
    const LAPIC_LVT_LINT0: u64 = 0x350;
    let base = LAPIC_BASE.load(Ordering::Relaxed);
    if base == 0 || !(irq == 3 || irq == 4) {
        return false;
    }
    lapic_write(base, LAPIC_LVT_LINT0, 0x700); // ExtINT, unmasked
    // SAFETY: the master 8259's mask register; unmasking one UART line whose vector has a
    // handler (installed by `init`).
    unsafe { super::outb(0x21, !(1u8 << irq)) };
    true
}

/// Host builds have no interrupts.
#[cfg(not(target_os = "none"))]
pub fn enable_isa_irq(_irq: u8) -> bool {
    false
}

/// Host builds never idle.
#[cfg(not(target_os = "none"))]
pub fn init() -> bool {
    false
}

/// Halt until the next interrupt (a timer tick or a UART's receive interrupt), or just spin
/// briefly if idling is off.
pub fn wait() {
    if !ENABLED.load(Ordering::Relaxed) {
        core::hint::spin_loop();
        return;
    }
    // SAFETY: `sti` takes effect after the next instruction, so no interrupt can slip in
    // between it and `hlt`; the unmasked interrupts (the tick, a UART line) have handlers that
    // preserve every register. Interrupts are off again before any other code runs.
    unsafe { core::arch::asm!("sti", "hlt", "cli") };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_and_counts() {
        let [lo, hi] = gate(0x0000_0001_0010_2030, 0x08);
        assert_eq!(lo & 0xffff, 0x2030);
        assert_eq!((lo >> 16) & 0xffff, 0x08);
        assert_eq!((lo >> 40) & 0xff, 0x8e);
        assert_eq!(lo >> 48, 0x0010);
        assert_eq!(hi, 1);
        assert_eq!(timer_count(62_500, 250), 15_625);
        assert_eq!(timer_count(0, 250), 1);
    }
}
