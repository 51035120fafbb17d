//! Where an agent listens, written as one string a command line or a config file can carry.
//!
//! Hypervisors expose the agent's channel on the host in more than one way: QEMU as a unix
//! socket (a `-chardev socket,server=on` behind virtio-serial or a serial port), a host agent as
//! its `unix-listen` path, and the microVM monitors (Firecracker, cloud-hypervisor) as
//! virtio-vsock, reached either through AF_VSOCK or through a unix socket that speaks a
//! `CONNECT <port>` preamble ("hybrid vsock"). An [`Address`] names one of these, so a harness
//! passes one value around and the connection code is the only place that knows the kinds.
//!
//! Today only unix sockets are served. The enum is `#[non_exhaustive]` and the text form has
//! room for the others (`vsock:CID:PORT`, `vsock-uds:PATH:PORT`, recognised and refused with a
//! clear error for now), so adding them changes no caller.

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
/// assert!("vsock:3:1234".parse::<Address>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// A unix stream socket: a QEMU chardev server or a host agent's `unix-listen` path.
    /// Written `unix:PATH`, or just `PATH`.
    Unix(PathBuf),
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

/// The kinds written `KIND:…` that are recognised but not served yet.
const COMING: &[(&str, &str)] = &[
    (
        "vsock-uds:",
        "vsock-uds:PATH:PORT (hybrid vsock behind a unix socket)",
    ),
    ("vsock:", "vsock:CID:PORT (AF_VSOCK)"),
];

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, AddressError> {
        let path = match s.strip_prefix("unix:") {
            Some(p) => p,
            None => {
                if let Some((_, what)) = COMING.iter().find(|(p, _)| s.starts_with(p)) {
                    return Err(AddressError(format!(
                        "`{s}`: {what} addresses are not supported yet; write unix:PATH for a \
                         unix socket whose name starts like this"
                    )));
                }
                s
            }
        };
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
    fn empty_and_coming_kinds_are_refused_with_a_reason() {
        for s in ["", "unix:"] {
            let e = s.parse::<Address>().unwrap_err().to_string();
            assert!(e.contains("empty address"), "{s}: {e}");
        }
        let e = "vsock:3:4000".parse::<Address>().unwrap_err().to_string();
        assert!(
            e.contains("AF_VSOCK") && e.contains("not supported yet"),
            "{e}"
        );
        let e = "vsock-uds:/run/v.sock:4000"
            .parse::<Address>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("hybrid vsock"), "{e}");
    }
}
