//! Build-level facts about the bare-metal image: it is a PVH ELF under 128 KiB, and it has no
//! heap. The no-heap proof has three independent legs, any of which would catch an allocation
//! sneaking in:
//!
//! 1. the dependency graph for `x86_64-unknown-none` enables no `alloc` or `std` feature of any
//!    crate (`cargo tree -e features`);
//! 2. the linker's map of the release image names no allocator symbol (`__rust_alloc`,
//!    `__rg_alloc`, ...) and no code from the `alloc` crate;
//! 3. the crate's sources declare neither `extern crate alloc` nor a `#[global_allocator]`.

use std::path::Path;
use std::process::Command;

use tests::baremetal::{self, TARGET};

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(tests::paths::workspace_root());
    c
}

#[test]
fn dependency_graph_has_no_alloc_or_std_feature() {
    let out = cargo()
        .args([
            "tree",
            "-e",
            "normal,features",
            "--target",
            TARGET,
            "-p",
            "platform-x86",
        ])
        .output()
        .expect("cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        tree.contains("agent-core") && tree.contains("uart_16550"),
        "{tree}"
    );
    for line in tree.lines() {
        assert!(
            !line.contains("feature \"alloc\"") && !line.contains("feature \"std\""),
            "a dependency enables alloc/std: {line}\n{tree}"
        );
    }
}

#[test]
fn linked_image_has_no_allocator() {
    let image = baremetal::release_image().unwrap_or_else(|e| panic!("{e}"));
    let map = baremetal::link_map(&image).expect("the build script's link map");
    let map = std::fs::read_to_string(map).expect("read map");
    assert!(
        map.contains("platform_x86"),
        "the map lists the image's symbols"
    );
    for needle in [
        "__rust_alloc",
        "__rust_dealloc",
        "__rust_realloc",
        "__rg_alloc",
        "__rdl_alloc",
        "alloc::",
        "liballoc",
    ] {
        assert!(!map.contains(needle), "{needle} is linked into the image");
    }
}

#[test]
fn sources_declare_no_allocator() {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&baremetal::crate_dir().join("src"), &mut files);
    assert!(files.len() > 10, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        // Code lines only: the crate docs talk about these on purpose.
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
            for needle in ["extern crate alloc", "global_allocator", "alloc::"] {
                assert!(!line.contains(needle), "{}: {line}", f.display());
            }
        }
    }
}

/// The PVH entry note: name "Xen", type 18, a 32-bit entry address inside the loaded image.
#[test]
fn image_is_a_small_pvh_elf() {
    let image = baremetal::release_image().unwrap_or_else(|e| panic!("{e}"));
    let elf = std::fs::read(&image).expect("read image");
    assert!(
        elf.len() < 128 * 1024,
        "release image is {} bytes, over 128 KiB",
        elf.len()
    );
    assert_eq!(&elf[..5], b"\x7fELF\x02");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) as u64;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    let mut load = Vec::new();
    let mut entry = None;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let (ptype, off, vaddr, filesz) = (
            u32_at(ph),
            u64_at(ph + 8) as usize,
            u64_at(ph + 16),
            u64_at(ph + 32),
        );
        if ptype == 1 {
            load.push((vaddr, u64_at(ph + 40)));
        }
        if ptype == 4 {
            let (namesz, descsz, ntype) = (
                u32_at(off) as usize,
                u32_at(off + 4) as usize,
                u32_at(off + 8),
            );
            assert_eq!((namesz, ntype), (4, 18), "XEN_ELFNOTE_PHYS32_ENTRY");
            assert_eq!(&elf[off + 12..off + 16], b"Xen\0");
            assert!(descsz == 8 && filesz as usize >= 24);
            entry = Some(u64_at(off + 16));
        }
    }
    let entry = entry.expect("a PT_NOTE with the PVH entry");
    assert!(entry < 1 << 32, "the entry is a 32-bit address");
    assert!(
        load.iter().any(|&(v, m)| (v..v + m).contains(&entry)),
        "entry {entry:#x} outside {load:x?}"
    );
    assert_eq!(load.first().map(|l| l.0), Some(0x100000), "loaded at 1 MiB");
}

/// The figures `cargo xtask` prints; also a check that each is measurable.
#[test]
fn report_has_every_figure() {
    let r = baremetal::report().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{r}");
    for needle in [
        "release image size:",
        "static memory:",
        "platform_x86::state::AGENT_BUFFERS",
        "platform_x86::state::FILE_STORE",
        "stack: ",
        "boot to first answer (TCG, q35, virtio)",
        "boot to first answer (TCG, pc, COM1)",
    ] {
        assert!(r.contains(needle), "{needle} missing from:\n{r}");
    }
}
