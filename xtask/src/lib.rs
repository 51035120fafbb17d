//! The project's tooling behind `cargo xtask`: the set-up and the staged test pipeline, the
//! benchmark against qemu-ga, the soak routines and the size report.
//!
//! These are programs about the project rather than tests of it, so they live here and not in
//! the `tests` crate; what they share with the suites (the client, the QEMU and guest harness,
//! host agents) comes from `qga-client` and `tests`. A library rather than code inside
//! `main.rs`, so that the soak suites (`xtask/tests/soak_*.rs`) run the very routines
//! `cargo xtask soak` runs, at their quick sizes.

pub mod bench;
pub mod dist;
pub mod pipeline;
pub mod procfs;
pub mod size;
pub mod soak;
