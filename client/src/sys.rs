//! The one system call rustix does not wrap for us: `connect(2)` with a `sockaddr_vm`
//! (rustix has `AF_VSOCK` but no vsock address type), kept here so the rest of the crate
//! stays free of `unsafe`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// A connected, blocking AF_VSOCK stream socket to `cid`:`port`.
///
/// The kernel bounds the connect itself (`SO_VM_SOCKETS_CONNECT_TIMEOUT`, 2 s by default).
pub fn connect_vsock(cid: u32, port: u32) -> io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::VSOCK,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // SAFETY: a zeroed sockaddr_vm is a valid value; we set family, port and cid and pass its
    // exact size to connect(2), on a socket `fd` keeps open for the whole call.
    let rc = unsafe {
        let mut sa: libc::sockaddr_vm = std::mem::zeroed();
        sa.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        sa.svm_port = port;
        sa.svm_cid = cid;
        libc::connect(
            fd.as_raw_fd(),
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}
