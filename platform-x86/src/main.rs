//! The bootable image: all of it is in the library (`platform_x86::boot` is the PVH entry). On a
//! host this binary only says how to build the real thing.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
use platform_x86 as _;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "qga-x86 is a bare-metal image: build it with\n  \
         cargo build -p platform-x86 --target x86_64-unknown-none --profile image\n\
         and boot it with qemu-system-x86_64 -kernel (see tests/src/baremetal.rs)."
    );
    std::process::exit(2);
}
