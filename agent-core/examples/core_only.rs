//! The smallest platform: the engine with no command family, so only the core commands
//! (`guest-sync`, `guest-sync-delimited`, `guest-ping`, `guest-info`) are served. It is what
//! `cargo xtask size` builds for `x86_64-unknown-none` (profile `image`: opt-level "z", LTO,
//! panic=abort) to measure what the engine alone costs in code and static memory.
//!
//! On bare metal `_start` feeds a few requests from memory into the agent, with its buffers in
//! a `static` as a firmware would hold them; nothing boots it, it is built to be measured. On a
//! host, `cargo run -p agent-core --example core_only` answers the same requests and prints
//! the exchange.
#![cfg_attr(target_os = "none", no_std, no_main)]

use agent_core::{Platform, StaticBuffers, Transmit, TxError};

/// No families: every command outside the core answers "not currently supported".
struct CoreOnly;

impl Platform for CoreOnly {}

/// Requests covering what the engine does on its own: framing, the envelope, argument
/// decoding and its errors, `guest-info`, a parse error and resynchronisation, and a
/// non-integer `id` (echoed as upstream's `%.17g` prints it).
const REQUESTS: &[u8] = b"\xff{\"execute\":\"guest-sync\",\"arguments\":{\"id\":42}}\
{\"execute\":\"guest-ping\",\"id\":0.1}\
{\"execute\":\"guest-info\"}\
{\"execute\":\"guest-sync\",\"arguments\":{\"id\":1.5}}\
{\"execute\":\"guest-get-time\"}\
{\"execute\":\"guest-ping\",\"arguments\":{\"x\":[1,{\"y\":null}]}}\
{\"execute\" \"guest-ping\"}\xff\
{\"execute\":\"guest-ping\",\"id\":[\"\\u00e9\",-1e400,true]}";

/// Serve [`REQUESTS`] with `bufs`, sending the responses to `tx`.
fn serve(bufs: &mut StaticBuffers, tx: &mut dyn Transmit) -> Result<(), TxError> {
    bufs.agent().feed(REQUESTS, &mut CoreOnly, tx)
}

#[cfg(target_os = "none")]
mod bare {
    use super::*;

    /// The engine's storage, as a firmware holds it (in `.bss`).
    static mut BUFFERS: StaticBuffers = StaticBuffers::new();

    /// Counts the response bytes (the measurement needs a sink the optimiser cannot remove).
    struct Discard(usize);

    impl Transmit for Discard {
        fn send(&mut self, bytes: &[u8]) -> Result<(), TxError> {
            self.0 += core::hint::black_box(bytes).len();
            Ok(())
        }
    }

    // SAFETY: the program's only symbol of this name, the entry point the linker looks for.
    #[unsafe(no_mangle)]
    extern "C" fn _start() -> ! {
        // SAFETY: `_start` runs once, on one CPU, and this is the only reference ever made to
        // BUFFERS.
        let bufs = unsafe { &mut *core::ptr::addr_of_mut!(BUFFERS) };
        let mut tx = Discard(0);
        let _ = serve(bufs, &mut tx);
        core::hint::black_box(tx.0);
        loop {
            core::hint::spin_loop();
        }
    }

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo) -> ! {
        loop {
            core::hint::spin_loop();
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    struct Collect(Vec<u8>);
    impl Transmit for Collect {
        fn send(&mut self, bytes: &[u8]) -> Result<(), TxError> {
            self.0.extend_from_slice(bytes);
            Ok(())
        }
    }
    let mut bufs = Box::new(StaticBuffers::new());
    let mut tx = Collect(Vec::new());
    serve(&mut bufs, &mut tx).expect("an in-memory sink does not fail");
    println!("requests:\n{}", String::from_utf8_lossy(REQUESTS));
    println!("responses:\n{}", String::from_utf8_lossy(&tx.0));
}
