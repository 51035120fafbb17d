//! Where an agent listens, written as one string a command line or a config file can carry.
//!
//! Hypervisors expose the agent's channel on the host in more than one way: QEMU as a unix
//! socket (a `-chardev socket,server=on` behind virtio-serial or a serial port), a host agent as
//! its `unix-listen` path, and the microVM monitors (Firecracker, cloud-hypervisor) as
//! virtio-vsock, reached either through AF_VSOCK or through a unix socket that speaks a
//! `CONNECT <port>` preamble ("hybrid vsock"). An [`Address`] names one of these, so a harness
//! passes one value around and the connection code is the only place that knows the kinds.
//!
//! The enum is `#[non_exhaustive]`, so a further kind changes no caller. Hybrid vsock gets its
//! own kind rather than being a unix path with an option: the socket is the monitor's, not the
//! agent's, and nothing reaches the guest until the `CONNECT` line is answered, which the
//! connection code must know to retry while the guest boots.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// An agent's address.
///
/// ```
/// use qga_client::Address;
///
/// let a: Address = "/run/qga.sock".parse().unwrap();
/// assert_eq!(a, Address::Unix("/run/qga.sock".into()));
/// // The explicit form, for a path that would otherwise look like another kind.
/// let b: Address = "unix:vsock:odd-name".parse().unwrap();
/// assert_eq!(b, Address::Unix("vsock:odd-name".into()));
/// assert_eq!(b.to_string(), "unix:vsock:odd-name");
/// let v: Address = "vsock:3:1234".parse().unwrap();
/// assert_eq!(v, Address::Vsock { cid: 3, port: 1234 });
/// // Hybrid vsock: the port is after the last colon, the path may hold colons.
/// let h: Address = "vsock-uds:/run/fc:1.sock:52".parse().unwrap();
/// assert_eq!(h, Address::VsockUds { path: "/run/fc:1.sock".into(), port: 52 });
/// assert_eq!(h.to_string().parse::<Address>().unwrap(), h);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// A unix stream socket: a QEMU chardev server or a host agent's `unix-listen` path.
    /// Written `unix:PATH`, or just `PATH`.
    Unix(PathBuf),
    /// An AF_VSOCK socket on this host: the guest with context id `cid`, listening on `port`.
    /// Written `vsock:CID:PORT`. Needs the host's vsock transport (e.g. `vhost_vsock`).
    Vsock {
        /// The guest's context id (3 and up; 2 is the host).
        cid: u32,
        /// The vsock port the agent listens on.
        port: u32,
    },
    /// Hybrid vsock: the monitor's unix socket at `path` (Firecracker's `uds_path`,
    /// cloud-hypervisor's `socket`, `vhost-device-vsock`'s `uds-path`), joined to the guest's
    /// vsock `port` by a `CONNECT <port>` line answered with `OK <n>`. Written
    /// `vsock-uds:PATH:PORT`.
    VsockUds {
        /// The monitor's unix socket.
        path: PathBuf,
        /// The guest vsock port the agent listens on.
        port: u32,
    },
}

/// Why a text is not an [`Address`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError(String);

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AddressError {}

/// A decimal `u32` (a CID or a port), or why not.
fn number(s: &str, what: &str, whole: &str, form: &str) -> Result<u32, AddressError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddressError(format!(
            "`{whole}`: {what} `{s}` is not a decimal number (the form is {form}; write \
             unix:PATH for a unix socket whose name starts like this)"
        )));
    }
    s.parse().map_err(|_| {
        AddressError(format!(
            "`{whole}`: {what} `{s}` does not fit in 32 bits (the form is {form})"
        ))
    })
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, AddressError> {
        if let Some(rest) = s.strip_prefix("vsock-uds:") {
            const FORM: &str = "vsock-uds:PATH:PORT";
            let Some((path, port)) = rest.rsplit_once(':') else {
                return Err(AddressError(format!("`{s}`: no port (the form is {FORM})")));
            };
            if path.is_empty() {
                return Err(AddressError(format!(
                    "`{s}`: empty socket path (the form is {FORM})"
                )));
            }
            let port = number(port, "port", s, FORM)?;
            return Ok(Address::VsockUds {
                path: PathBuf::from(path),
                port,
            });
        }
        if let Some(rest) = s.strip_prefix("vsock:") {
            const FORM: &str = "vsock:CID:PORT";
            let Some((cid, port)) = rest.split_once(':') else {
                return Err(AddressError(format!("`{s}`: no port (the form is {FORM})")));
            };
            let cid = number(cid, "CID", s, FORM)?;
            let port = number(port, "port", s, FORM)?;
            return Ok(Address::Vsock { cid, port });
        }
        let path = s.strip_prefix("unix:").unwrap_or(s);
        if path.is_empty() {
            return Err(AddressError(
                "empty address: give a unix socket path (PATH or unix:PATH)".into(),
            ));
        }
        Ok(Address::Unix(PathBuf::from(path)))
    }
}

impl fmt::Display for Address {
    /// The explicit text form, which parses back to the same address.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
            Address::VsockUds { path, port } => write!(f, "vsock-uds:{}:{port}", path.display()),
        }
    }
}

impl From<PathBuf> for Address {
    fn from(p: PathBuf) -> Self {
        Address::Unix(p)
    }
}

impl From<&std::path::Path> for Address {
    fn from(p: &std::path::Path) -> Self {
        Address::Unix(p.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_paths_plain_and_explicit() {
        assert_eq!(
            "sock".parse::<Address>().unwrap(),
            Address::Unix("sock".into())
        );
        assert_eq!(
            "unix:/tmp/a b".parse::<Address>().unwrap(),
            Address::Unix("/tmp/a b".into())
        );
        // A colon elsewhere is part of the path.
        assert_eq!(
            "/tmp/x:1".parse::<Address>().unwrap(),
            Address::Unix("/tmp/x:1".into())
        );
        let a = Address::Unix("/run/q.sock".into());
        assert_eq!(a.to_string().parse::<Address>().unwrap(), a);
    }

    #[test]
    fn empty_addresses_are_refused_with_a_reason() {
        for s in ["", "unix:"] {
            let e = s.parse::<Address>().unwrap_err().to_string();
            assert!(e.contains("empty address"), "{s}: {e}");
        }
    }

    #[test]
    fn vsock_kinds_parse_and_print_back() {
        assert_eq!(
            "vsock:3:4000".parse::<Address>().unwrap(),
            Address::Vsock { cid: 3, port: 4000 }
        );
        assert_eq!(
            "vsock:4294967295:1".parse::<Address>().unwrap(),
            Address::Vsock {
                cid: u32::MAX,
                port: 1
            }
        );
        assert_eq!(
            "vsock-uds:/run/v.sock:4000".parse::<Address>().unwrap(),
            Address::VsockUds {
                path: "/run/v.sock".into(),
                port: 4000
            }
        );
        for s in ["vsock:3:4000", "vsock-uds:/a:b/c:7", "vsock-uds:rel:0"] {
            let a = s.parse::<Address>().unwrap();
            assert_eq!(a.to_string(), s);
        }
        // The explicit unix form still reaches such names.
        assert_eq!(
            "unix:vsock:3:4000".parse::<Address>().unwrap(),
            Address::Unix("vsock:3:4000".into())
        );
    }

    #[test]
    fn malformed_vsock_addresses_say_what_is_wrong() {
        for (s, want) in [
            ("vsock:3", "no port"),
            ("vsock:x:1", "CID `x`"),
            ("vsock:3:", "port ``"),
            ("vsock:3:1:2", "port `1:2`"),
            ("vsock:99999999999:1", "32 bits"),
            ("vsock:-1:1", "not a decimal"),
            ("vsock-uds:/run/v.sock", "no port"),
            ("vsock-uds:nocolon", "no port"),
            ("vsock-uds::52", "empty socket path"),
            ("vsock-uds:/p:+5", "not a decimal"),
        ] {
            let e = s.parse::<Address>().unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
    }
}
