//! What a suite does when something it compares against is not on this machine.
//!
//! A check that cannot run must not pass: a green run would then claim a comparison that was
//! never made (the differential suite once passed with no `qemu-ga` installed, having compared
//! nothing). So a missing reference agent or kernel feature fails the test with how to
//! install it, unless the run says in advance that it may go without it:
//! `QGA_TEST_ALLOW_MISSING=qemu-ga,vsock` (a comma-separated list of [`Dependency`] names, or
//! `all`). Then the test prints a `SKIP` line and checks what it can without it.

/// The variable that lets a run go without some dependencies (comma-separated names, or `all`).
pub const ALLOW_MISSING_ENV: &str = "QGA_TEST_ALLOW_MISSING";

/// Something a suite needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// Debian's `qemu-ga`, the reference agent of the differential and client suites.
    QemuGa,
    /// The kernel's AF_VSOCK sockets.
    Vsock,
    /// The rust-vmm `vhost-device-vsock` daemon, the host end of the guests' virtio-vsock.
    VhostDeviceVsock,
}

impl Dependency {
    /// The name used in [`ALLOW_MISSING_ENV`].
    pub fn name(self) -> &'static str {
        match self {
            Dependency::QemuGa => "qemu-ga",
            Dependency::Vsock => "vsock",
            Dependency::VhostDeviceVsock => "vhost-device-vsock",
        }
    }

    /// How to get it.
    pub fn how_to_install(self) -> &'static str {
        match self {
            Dependency::QemuGa => {
                "run `cargo xtask setup` (as root), or `apt-get install qemu-guest-agent`"
            }
            Dependency::Vsock => "load the kernel's vsock module (`modprobe vsock`)",
            Dependency::VhostDeviceVsock => {
                "run `cargo xtask setup`, or `cargo install vhost-device-vsock --locked`"
            }
        }
    }
}

/// Whether `value` (of [`ALLOW_MISSING_ENV`]) lets a run go without `dep`.
pub fn allows(value: &str, dep: Dependency) -> bool {
    value
        .split(',')
        .map(str::trim)
        .any(|n| n == "all" || n == dep.name())
}

/// Reports that `dep` is missing (`what` says what exactly, e.g. the path looked at): panics
/// with how to install it, unless [`ALLOW_MISSING_ENV`] allows it, in which case it prints a
/// `SKIP` line (shown with `--nocapture` or nextest's output) and returns.
pub fn missing(dep: Dependency, what: &str) {
    let allowed = std::env::var(ALLOW_MISSING_ENV)
        .map(|v| allows(&v, dep))
        .unwrap_or(false);
    if allowed {
        eprintln!(
            "SKIP: {what}; {ALLOW_MISSING_ENV} allows running without {}, so what needs it \
             was not checked",
            dep.name()
        );
        return;
    }
    panic!(
        "{what}.\nThis test cannot run without it. To install it: {}. To run the suite \
         without it (its checks are then not made), set {ALLOW_MISSING_ENV}={}",
        dep.how_to_install(),
        dep.name()
    );
}

/// Fails, saying how to install it, if the program the harness is about to run by name is
/// not on `PATH` (a suite's set-up error, not a skip: these tools come with the machine's
/// set-up). `packages` are the Debian packages that bring it.
pub fn tool(program: &str, packages: &str) -> Result<(), String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| d.join(program).is_file()) {
        Ok(())
    } else {
        Err(format!(
            "`{program}` is not installed: run `cargo xtask setup` (as root), or `apt-get install {packages}`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_names_each_dependency_or_all() {
        assert!(allows("qemu-ga", Dependency::QemuGa));
        assert!(allows("vsock, qemu-ga", Dependency::QemuGa));
        assert!(allows("all", Dependency::Vsock));
        assert!(!allows("", Dependency::QemuGa));
        assert!(!allows("qemu", Dependency::QemuGa));
        assert!(!allows("qemu-ga", Dependency::Vsock));
    }

    #[test]
    fn a_missing_tool_says_how_to_install_it() {
        assert!(tool("sh", "dash").is_ok());
        let e = tool("qga-no-such-tool", "qga-pkg").unwrap_err();
        assert!(e.contains("apt-get install qga-pkg"), "{e}");
    }
}
