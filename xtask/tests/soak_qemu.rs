//! The soak routines of `xtask::soak` that need QEMU, at their `--quick` sizes: the Linux guest
//! (host disconnects mid-request over virtio-serial; freeze, SIGTERM, thaw and restart of the
//! agent inside the guest) and the bare-metal image (garbage through COM1 and virtio-serial,
//! then valid requests, and the stack high-water mark). `cargo xtask soak` runs them at full
//! size.
//!
//! One guest serves both Linux routines (a TCG boot is the expensive part), and the VMs run
//! one at a time: the machine has two cores.

use std::sync::Mutex;

use xtask::soak::{Context, Options, run};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn linux_guest_virtio_disconnects_and_sigterm_while_frozen() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut ctx = Context::new(Options { quick: true });
    let rows: Vec<_> = ["guest-virtio", "guest-freeze"]
        .iter()
        .map(|n| run(n, &mut ctx))
        .collect();
    for r in &rows {
        assert!(r.passed(), "{}", r.summary());
    }
}

#[test]
fn baremetal_garbage_through_com1_and_virtio() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut ctx = Context::new(Options { quick: true });
    let row = run("baremetal", &mut ctx);
    assert!(row.passed(), "{}", row.summary());
}
