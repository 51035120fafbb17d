//! `cargo xtask size`: what the protocol engine costs a firmware, and what room the bare-metal
//! image has left.
//!
//! The engine's figure comes from a real binary, not from a sum of symbols: agent-core's
//! `core_only` example (a platform with no command family, its buffers in a `static`) built for
//! `x86_64-unknown-none` with the image's profile (opt-level "z", LTO, panic=abort), so the
//! linker keeps exactly what a core-only firmware would. Its sections are read from the ELF.
//! The stack figure is the bare-metal image's painted-stack high-water mark (the image paints
//! its boot stack at start and its `stack` program finds the deepest byte touched), taken after
//! the core requests only, so it covers boot, the agent loop and the engine.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use ::tests::baremetal::{self, BareMetalVm, IMAGE_OPT_LEVEL, Machine, TARGET, Transport};
use ::tests::host_agent::cargo_build_bin;

/// The goal for a core-only platform's `.text` (issue 12).
pub const CORE_TEXT_GOAL: u64 = 32 * 1024;
/// The bare-metal image's size limit (`tests/tests/baremetal_build.rs`).
pub const IMAGE_LIMIT: u64 = 128 * 1024;
/// Room the image keeps under its limit for the microVM drivers (virtio-mmio, vsock).
pub const IMAGE_FREE_GOAL: u64 = 12 * 1024;

/// The example that is measured.
pub const PROBE: &str = "core_only";

/// Section sizes by kind: `.text`, `.rodata`, `.data` (with `.data.rel.ro` and `.got`), `.bss`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sections {
    /// Code.
    pub text: u64,
    /// Constants.
    pub rodata: u64,
    /// Initialised statics, relocated constants and the GOT.
    pub data: u64,
    /// Zeroed statics.
    pub bss: u64,
}

impl Sections {
    /// The sizes of an ELF64 file's sections, grouped.
    pub fn of(elf: &[u8]) -> Result<Self, String> {
        let mut s = Sections::default();
        for (name, size) in baremetal::elf_sections(elf)? {
            let slot = match name.as_str() {
                ".text" => &mut s.text,
                ".rodata" => &mut s.rodata,
                n if n.starts_with(".data") || n.starts_with(".got") => &mut s.data,
                ".bss" => &mut s.bss,
                _ => continue,
            };
            *slot += size;
        }
        Ok(s)
    }
}

/// Builds the core-only example for the bare-metal target and returns its ELF.
pub fn build_probe() -> Result<PathBuf, String> {
    if !baremetal::target_installed()? {
        return Err(format!(
            "the Rust target {TARGET} is not installed: run `rustup target add {TARGET}`"
        ));
    }
    cargo_build_bin(
        &[
            "-p",
            "agent-core",
            "--example",
            PROBE,
            "--target",
            TARGET,
            "--profile",
            "image",
        ],
        PROBE,
        &[IMAGE_OPT_LEVEL],
    )
}

fn kib(b: u64) -> f64 {
    b as f64 / 1024.0
}

/// The report: the core-only engine's sections, the image's sections and free room, and the
/// stack high-water mark (booting the image under QEMU; skipped with a note if that fails).
pub fn report() -> Result<String, String> {
    let mut r = String::new();
    let probe = build_probe()?;
    let elf = std::fs::read(&probe).map_err(|e| format!("read {}: {e}", probe.display()))?;
    let core = Sections::of(&elf)?;
    let _ = writeln!(
        r,
        "core-only engine (agent-core example `{PROBE}`, {TARGET}, opt-level z, LTO, panic=abort):"
    );
    let _ = writeln!(
        r,
        "  .text {} B ({:.1} KiB; goal <= {} KiB: {}), .rodata {} B, .data {} B, .bss {} B (the default StaticBuffers)",
        core.text,
        kib(core.text),
        CORE_TEXT_GOAL / 1024,
        if core.text <= CORE_TEXT_GOAL {
            "met"
        } else {
            "NOT met"
        },
        core.rodata,
        core.data,
        core.bss
    );

    let image = baremetal::release_image()?;
    let bytes = std::fs::read(&image).map_err(|e| format!("read {}: {e}", image.display()))?;
    let img = Sections::of(&bytes)?;
    let len = bytes.len() as u64;
    let free = IMAGE_LIMIT.saturating_sub(len);
    let _ = writeln!(
        r,
        "bare-metal image (platform-x86 `qga-x86`, profile image):"
    );
    let _ = writeln!(
        r,
        "  file {len} B ({:.1} KiB; limit < {} KiB, {:.1} KiB free, goal >= {} KiB free: {})",
        kib(len),
        IMAGE_LIMIT / 1024,
        kib(free),
        IMAGE_FREE_GOAL / 1024,
        if free >= IMAGE_FREE_GOAL {
            "met"
        } else {
            "NOT met"
        }
    );
    let _ = writeln!(
        r,
        "  .text {} B, .rodata {} B, .data {} B, .bss {} B",
        img.text, img.rodata, img.data, img.bss
    );
    match image_stack() {
        Ok(line) => {
            let _ = writeln!(
                r,
                "  stack high-water mark after boot and core requests: {line}"
            );
        }
        Err(e) => {
            let _ = writeln!(r, "  stack high-water mark: not measured ({e})");
        }
    }
    Ok(r)
}

/// Boots the image, sends the core requests of the `core_only` example's kind (including
/// errors and echoed non-integer ids), and returns the `stack` program's line.
fn image_stack() -> Result<String, String> {
    let mut vm = BareMetalVm::boot(Machine::Q35, Transport::Virtio, |_| {})?;
    let mut c = vm.client()?;
    let e = |e: qga_client::ClientError| e.to_string();
    c.info().map_err(e)?;
    c.ping().map_err(e)?;
    c.request(&json!({"execute": "guest-ping", "id": [0.1, -1e300, {"a": [1, "\u{e9}"]}]}))
        .map_err(e)?;
    c.request(&json!({"execute": "guest-sync", "arguments": {"id": 1.5}}))
        .map_err(e)?;
    c.send_raw(b"{\"execute\" \"guest-ping\"}\xff").map_err(e)?;
    c.sync().map_err(e)?;
    let out = c
        .run("stack", &[], Duration::from_secs(10))
        .map_err(|e| format!("stack: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.trim();
    let line = line.strip_prefix("stack: ").unwrap_or(line);
    Ok(line
        .strip_suffix(" (high-water mark)")
        .unwrap_or(line)
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine a core-only platform links stays within issue 12's goal: a regression (for
    /// example a JSON number read through `str::parse::<f64>` again, which links `core`'s float
    /// parser) fails here rather than only in `cargo xtask size`'s output.
    #[test]
    fn core_only_engine_is_within_its_size_goal() {
        let probe = build_probe().unwrap_or_else(|e| panic!("{e}"));
        let elf = std::fs::read(&probe).unwrap_or_else(|e| panic!("{}: {e}", probe.display()));
        let s = Sections::of(&elf).unwrap();
        assert!(
            s.text <= CORE_TEXT_GOAL,
            "the core-only engine has {} B of .text, over the {CORE_TEXT_GOAL} B goal \
             (`cargo xtask size`; look for float parsing or formatting)",
            s.text
        );
        // Measured 4,560 B; `core`'s float parser alone would add 12 KB of power-of-five
        // tables (and only 5 KB of code, which the .text goal would not catch by itself).
        assert!(
            s.rodata <= 8 * 1024,
            "the core-only engine has {} B of .rodata, over 8 KiB (`cargo xtask size`)",
            s.rodata
        );
        assert!(
            s.text > 4096,
            "{} B of .text: the probe lost the engine",
            s.text
        );
    }

    #[test]
    fn groups_sections() {
        // A minimal ELF64 header and section table: null, .text, .data.rel.ro, .bss, .shstrtab.
        let names = b"\0.text\0.data.rel.ro\0.bss\0.shstrtab\0";
        let mut elf = vec![0u8; 64];
        elf[..5].copy_from_slice(b"\x7fELF\x02");
        let strtab_off = elf.len();
        elf.extend_from_slice(names);
        let shoff = elf.len();
        let sec = |name: u32, size: u64, off: u64| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&off.to_le_bytes());
            h[0x20..0x28].copy_from_slice(&size.to_le_bytes());
            h
        };
        for h in [
            sec(0, 0, 0),
            sec(1, 100, 0),
            sec(7, 20, 0),
            sec(20, 4096, 0),
            sec(25, names.len() as u64, strtab_off as u64),
        ] {
            elf.extend_from_slice(&h);
        }
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&5u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&4u16.to_le_bytes());
        assert_eq!(
            Sections::of(&elf).unwrap(),
            Sections {
                text: 100,
                rodata: 0,
                data: 20,
                bss: 4096
            }
        );
    }
}
