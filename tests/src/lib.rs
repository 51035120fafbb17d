//! The host side of the project's tests: a protocol client, process guards for QEMU and host
//! agents, and the pieces `cargo xtask` drives.
//!
//! Everything that talks to an agent lives here as a library rather than inside test files, so
//! that the integration tests, the differential suite, the benchmarks and the developer commands
//! (`cargo xtask qga|push|pull|run|bench`) share one client and one way of starting and killing
//! processes, and a fix in one place serves them all.

pub mod baremetal;
pub mod bench;
pub mod client_cli;
pub mod host_agent;
pub mod initramfs;
pub mod linux_guest;
pub mod pipeline;
pub mod qemu;
pub mod require;
pub mod size;
pub mod soak;
