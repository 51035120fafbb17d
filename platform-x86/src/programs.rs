//! The built-in programs `guest-exec` runs (see [`crate::commands::exec`] for the interface):
//!
//! - `echo [-n] ARG...`: the arguments, space-separated, with a newline unless `-n`;
//! - `cat`: the input data, unchanged;
//! - `cpuid [LEAF [SUBLEAF]]`: the vendor, signature and brand, or one leaf's registers
//!   (numbers in decimal or `0x` hex);
//! - `pci`: every PCI function, `bus:dev.fn vendor:device class CCSSPP`;
//! - `memmap`: the boot memory map, `start-end kind`;
//! - `stack`: the boot stack's size and high-water mark (it is painted at boot).
//!
//! Unknown options and bad numbers print a message on standard error and exit with 2.

use core::fmt::Write;

use crate::commands::exec::{Args, Output, Programs};

/// The registry with every built-in program.
pub const BUILTINS: Programs = Programs::from_table(&[
    ("echo", echo),
    ("cat", cat),
    ("cpuid", cpuid),
    ("pci", pci),
    ("memmap", memmap),
    ("stack", stack),
]);

/// The registry with every built-in program (a copy of [`BUILTINS`], to add more to).
pub fn builtins() -> Programs {
    BUILTINS
}

/// `echo`.
pub fn echo(args: &Args<'_>, _input: &[u8], out: &mut Output<'_>) -> i32 {
    let newline = args.get(0) != Some("-n");
    let skip = if newline { 0 } else { 1 };
    for (i, a) in args.iter().skip(skip).enumerate() {
        if i > 0 {
            out.out().write(b" ");
        }
        out.out().write(a.as_bytes());
    }
    if newline {
        out.out().write(b"\n");
    }
    0
}

/// `cat`.
pub fn cat(_args: &Args<'_>, input: &[u8], out: &mut Output<'_>) -> i32 {
    out.out().write(input);
    0
}

/// Parse a decimal or `0x` hexadecimal u32.
pub fn parse_u32(s: &str) -> Option<u32> {
    let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (s, 10),
    };
    if digits.is_empty() {
        return None;
    }
    digits.chars().try_fold(0u32, |acc, c| {
        acc.checked_mul(radix)?.checked_add(c.to_digit(radix)?)
    })
}

fn cpuid_regs(leaf: u32, sub: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

fn put_le(out: &mut Output<'_>, regs: &[u32]) {
    for r in regs {
        for b in r.to_le_bytes() {
            if b != 0 {
                out.out().write(&[b]);
            }
        }
    }
}

/// `cpuid`.
pub fn cpuid(args: &Args<'_>, _input: &[u8], out: &mut Output<'_>) -> i32 {
    if let Some(leaf) = args.get(0) {
        let (Some(leaf), Some(sub)) = (parse_u32(leaf), parse_u32(args.get(1).unwrap_or("0")))
        else {
            let _ = writeln!(out.err(), "cpuid: expected LEAF [SUBLEAF] as numbers");
            return 2;
        };
        let [a, b, c, d] = cpuid_regs(leaf, sub);
        let _ = writeln!(
            out.out(),
            "leaf={leaf:#x} subleaf={sub:#x} eax={a:#010x} ebx={b:#010x} ecx={c:#010x} edx={d:#010x}"
        );
        return 0;
    }
    let [max, b, c, d] = cpuid_regs(0, 0);
    let _ = write!(out.out(), "vendor: ");
    put_le(out, &[b, d, c]);
    let [eax1, ..] = cpuid_regs(1, 0);
    let _ = write!(out.out(), "\nmax leaf: {max:#x}\nsignature: {eax1:#x}\n");
    let [ext_max, ..] = cpuid_regs(0x8000_0000, 0);
    if ext_max >= 0x8000_0004 {
        let _ = write!(out.out(), "brand: ");
        for leaf in 0x8000_0002..=0x8000_0004u32 {
            put_le(out, &cpuid_regs(leaf, 0));
        }
        let _ = writeln!(out.out());
    }
    0
}

/// `pci`.
pub fn pci(_args: &Args<'_>, _input: &[u8], out: &mut Output<'_>) -> i32 {
    crate::hw::pci::scan(&mut |f| {
        let a = f.addr;
        let class = u32::from_be_bytes([0, f.class[0], f.class[1], f.class[2]]);
        let _ = writeln!(
            out.out(),
            "{:02x}:{:02x}.{} {:04x}:{:04x} class {class:06x}",
            a.bus,
            a.device,
            a.function,
            f.vendor,
            f.device
        );
        true
    });
    0
}

/// `memmap`.
pub fn memmap(_args: &Args<'_>, _input: &[u8], out: &mut Output<'_>) -> i32 {
    let Some(boot) = crate::state::BOOT.get() else {
        let _ = writeln!(out.err(), "memmap: no boot information");
        return 1;
    };
    if boot.regions().is_empty() {
        let _ = writeln!(out.err(), "memmap: the loader passed no memory map");
        return 1;
    }
    for r in boot.regions() {
        let end = r.addr.saturating_add(r.size).saturating_sub(1);
        let _ = writeln!(
            out.out(),
            "{:#018x}-{:#018x} {}",
            r.addr,
            end,
            r.kind.name()
        );
    }
    0
}

/// `stack`.
pub fn stack(_args: &Args<'_>, _input: &[u8], out: &mut Output<'_>) -> i32 {
    match crate::hw::layout::stack_usage() {
        Some((used, size)) => {
            let _ = writeln!(
                out.out(),
                "stack: {used} of {size} bytes used (high-water mark)"
            );
            0
        }
        None => {
            let _ = writeln!(out.err(), "stack: only measured in the bare-metal image");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_core::commands::exec::CaptureMode;

    fn run(
        p: crate::commands::exec::Program,
        args: &[&str],
        input: &[u8],
    ) -> (i32, String, String) {
        let (mut o, mut e) = ([0u8; 4096], [0u8; 1024]);
        let mut out = Output::new(&mut o, &mut e, CaptureMode::Separated);
        let code = p(&Args::Slice(args), input, &mut out);
        let (so, se) = out.into_parts();
        (
            code,
            String::from_utf8_lossy(so.captured()).into_owned(),
            String::from_utf8_lossy(se.captured()).into_owned(),
        )
    }

    #[test]
    fn echo_and_cat() {
        assert_eq!(run(echo, &["a", "b c"], b"").1, "a b c\n");
        assert_eq!(
            run(echo, &["-n", "\" test_str \""], b"").1,
            "\" test_str \""
        );
        assert_eq!(run(cat, &[], b"data\0").1, "data\0");
    }

    #[test]
    fn cpuid_on_this_cpu() {
        let (code, out, _) = run(cpuid, &[], b"");
        assert_eq!(code, 0);
        assert!(out.starts_with("vendor: "), "{out}");
        let (code, out, _) = run(cpuid, &["0x1"], b"");
        assert_eq!(code, 0);
        assert!(out.starts_with("leaf=0x1 subleaf=0x0 eax=0x"), "{out}");
        let (code, _, err) = run(cpuid, &["zz"], b"");
        assert_eq!(
            (code, err.as_str()),
            (2, "cpuid: expected LEAF [SUBLEAF] as numbers\n")
        );
        assert_eq!(parse_u32("0x10"), Some(16));
        assert_eq!(parse_u32("10"), Some(10));
    }

    #[test]
    fn registry_has_the_builtins() {
        let p = builtins();
        let names: Vec<_> = p.names().collect();
        assert_eq!(names, ["echo", "cat", "cpuid", "pci", "memmap", "stack"]);
    }
}
