//! The host end of a guest's virtio-vsock on this machine: the rust-vmm `vhost-device-vsock`
//! daemon, which QEMU drives over vhost-user and which joins the guest's vsock ports to one
//! hybrid-vsock unix socket (`CONNECT <port>` / `OK <n>`, as Firecracker and cloud-hypervisor
//! offer it).
//!
//! Why a daemon and not QEMU's `vhost-vsock-pci`: that device needs the host kernel's
//! `vhost_vsock` module, which these machines do not have; the daemon needs nothing from the
//! kernel, and its host side is the same hybrid socket the microVM monitors give users, so the
//! suites test the path users take. Each guest gets its own daemon with its own sockets in the
//! test's directory (suites run side by side), started and stopped by PID through a
//! [`ProcessGuard`]. QEMU connects to [`VsockDaemon::vhost_socket`] with the arguments of
//! [`crate::qemu::vhost_user_vsock_args`] and needs shared guest RAM
//! ([`crate::qemu::shared_memory_args`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use qga_client::Address;

use crate::qemu::{ProcessGuard, wait_for_path};

/// The crate (and binary) name of the daemon; `cargo xtask setup` installs it.
pub const DAEMON: &str = "vhost-device-vsock";

/// Where the daemon is: `$VHOST_DEVICE_VSOCK`, else `$CARGO_HOME/bin` (`~/.cargo/bin`), else
/// the `PATH`.
pub fn daemon_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VHOST_DEVICE_VSOCK") {
        return Some(PathBuf::from(p));
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let path = std::env::var_os("PATH").unwrap_or_default();
    cargo_home
        .map(|h| h.join("bin"))
        .into_iter()
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(DAEMON))
        .find(|p| p.is_file())
}

/// A running `vhost-device-vsock` serving one guest; dropping it kills the daemon by PID.
#[derive(Debug)]
pub struct VsockDaemon {
    guard: ProcessGuard,
    vhost_socket: PathBuf,
    hybrid_socket: PathBuf,
    guest_cid: u32,
}

impl VsockDaemon {
    /// Starts the daemon for a guest with context id `guest_cid`, its sockets (`vhost.sock`,
    /// `vsock.sock`) and log (`vhost-device-vsock.log`) in `dir`, and waits (at most 30 s) for
    /// both sockets.
    pub fn start(dir: &Path, guest_cid: u32) -> Result<Self, String> {
        let bin = daemon_binary().ok_or_else(|| {
            format!(
                "{DAEMON} is not installed (run `cargo xtask setup`, or `cargo install {DAEMON} \
                 --locked`)"
            )
        })?;
        let vhost_socket = dir.join("vhost.sock");
        let hybrid_socket = dir.join("vsock.sock");
        let mut cmd = Command::new(bin);
        cmd.arg("--vm").arg(format!(
            "guest-cid={guest_cid},socket={},uds-path={}",
            vhost_socket.display(),
            hybrid_socket.display()
        ));
        let mut guard = ProcessGuard::spawn(DAEMON, cmd, dir.join("vhost-device-vsock.log"))?;
        for p in [&vhost_socket, &hybrid_socket] {
            wait_for_path(p, &mut guard, Duration::from_secs(30))?;
        }
        Ok(VsockDaemon {
            guard,
            vhost_socket,
            hybrid_socket,
            guest_cid,
        })
    }

    /// The vhost-user socket QEMU connects to (`-chardev socket,path=…`).
    pub fn vhost_socket(&self) -> &Path {
        &self.vhost_socket
    }

    /// The hybrid-vsock socket host clients connect to.
    pub fn hybrid_socket(&self) -> &Path {
        &self.hybrid_socket
    }

    /// The guest's context id.
    pub fn guest_cid(&self) -> u32 {
        self.guest_cid
    }

    /// The client address of the guest's vsock `port` through the hybrid socket.
    pub fn address(&self, port: u32) -> Address {
        Address::VsockUds {
            path: self.hybrid_socket.clone(),
            port,
        }
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// The daemon's log.
    pub fn log_path(&self) -> &Path {
        self.guard.log_path()
    }

    /// The daemon's process guard (its PID, whether it still runs, its log).
    pub fn guard(&mut self) -> &mut ProcessGuard {
        &mut self.guard
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qga_client::Client;

    /// The daemon starts, makes both sockets, answers a hybrid connect to a guest that is not
    /// there (no QEMU attached) without `OK`, and is gone (reaped) once dropped.
    #[test]
    fn daemon_starts_refuses_without_a_guest_and_stops_on_drop() {
        if daemon_binary().is_none() {
            crate::require::missing(
                crate::require::Dependency::VhostDeviceVsock,
                "vhost-device-vsock is not installed",
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut d = VsockDaemon::start(dir.path(), 3).unwrap();
        assert!(d.guard().is_running());
        let err = Client::connect_to_within(&d.address(1234), Duration::from_millis(500))
            .unwrap_err()
            .to_string();
        assert!(err.contains("hybrid-vsock connection"), "{err}");
        let pid = d.guard().pid();
        drop(d);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
