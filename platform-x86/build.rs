//! Applies the image's linker script, and only when building the bare-metal image: a host build
//! of this package is an ordinary library and must link as one.

fn main() {
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "none" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
        println!("cargo:rustc-link-arg-bins=-T{dir}/link.ld");
        // The image is loaded where it is linked: no PIE, no dynamic relocations.
        println!("cargo:rustc-link-arg-bins=--no-pie");
        // No page alignment in the file: the loader copies segments, it does not map them.
        println!("cargo:rustc-link-arg-bins=--nmagic");
        // A link map next to the image, read by the size report (`tests::baremetal::report`).
        let out = std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into());
        println!("cargo:rustc-link-arg-bins=-Map={out}/qga-x86.map");
    }
    for var in [
        "QGA_TRANSPORT",
        "QGA_HOSTNAME",
        "QGA_OS_ID",
        "QGA_OS_NAME",
        "QGA_OS_PRETTY_NAME",
        "QGA_OS_VERSION",
        "QGA_OS_VERSION_ID",
        "QGA_OS_VARIANT",
        "QGA_OS_VARIANT_ID",
        "QGA_CMDLINE",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
}
