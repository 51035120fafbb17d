//! The calls rustix does not wrap: `bind(2)` with a `sockaddr_vm` (rustix has `AF_VSOCK` but
//! no vsock address type) and the vsock buffer size options, kept here so the rest of the
//! program is free of `unsafe`.

use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd};

/// Binds `fd` (an AF_VSOCK socket) to `cid`:`port`.
pub fn bind_vsock(fd: BorrowedFd<'_>, cid: u32, port: u32) -> io::Result<()> {
    // SAFETY: a zeroed sockaddr_vm is valid; we set family, port and cid and pass its exact
    // size to bind(2) on a socket the borrow keeps open.
    let rc = unsafe {
        let mut sa: libc::sockaddr_vm = std::mem::zeroed();
        sa.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        sa.svm_port = port;
        sa.svm_cid = cid;
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `SO_VM_SOCKETS_BUFFER_SIZE` and `SO_VM_SOCKETS_BUFFER_MAX_SIZE` of `<linux/vm_sockets.h>`.
const SO_VM_SOCKETS_BUFFER_SIZE: libc::c_int = 0;
const SO_VM_SOCKETS_BUFFER_MAX_SIZE: libc::c_int = 2;

/// Sets a vsock socket's receive buffer to `bytes` (the maximum first, which the kernel clamps
/// the size to), as `qga` does on its listener.
pub fn set_vsock_buffer_size(fd: BorrowedFd<'_>, bytes: u64) -> io::Result<()> {
    for opt in [SO_VM_SOCKETS_BUFFER_MAX_SIZE, SO_VM_SOCKETS_BUFFER_SIZE] {
        // SAFETY: `bytes` is a u64 (the kernel reads an unsigned long long for both options)
        // and its exact size is passed; the borrow keeps the socket open for the call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::AF_VSOCK,
                opt,
                (&raw const bytes).cast(),
                size_of::<u64>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
