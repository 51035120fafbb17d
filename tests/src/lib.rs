//! The harness of the project's suites: process guards for QEMU and host agents, a private libvirt, the
//! bare-metal VM helper, the vsock daemon, the Linux guest, its initramfs builder and snapshots of its
//! files, the systemd Debian guest, and the workspace paths.
//!
//! A library rather than code inside test files, so that every suite (and `cargo xtask`'s
//! pipeline, benchmark and soak routines, which build on it) starts, reaches and kills guests
//! and agents one way, and a fix in one place serves them all. Talking to an agent is the
//! `qga-client` crate's job.

pub mod baremetal;
pub mod client_cli;
pub mod debian_guest;
pub mod guest_files;
pub mod host_agent;
pub mod initramfs;
pub mod libvirt;
pub mod linux_guest;
pub mod paths;
pub mod qemu;
pub mod require;
pub mod vsock;
