//! Filesystem calls rustix has no wrapper for: the freeze, thaw and trim ioctls, and a
//! `close` whose error is reported (`OwnedFd`'s drop discards it, and NFS reports write-back
//! errors there).

use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd, IntoRawFd as _, OwnedFd};

/// `FIFREEZE` = `_IOWR('X', 119, int)`.
const FIFREEZE: libc::c_ulong = 0xC004_5877;
/// `FITHAW` = `_IOWR('X', 120, int)`.
const FITHAW: libc::c_ulong = 0xC004_5878;
/// `FITRIM` = `_IOWR('X', 121, struct fstrim_range)`.
const FITRIM: libc::c_ulong = 0xC018_5879;

/// `struct fstrim_range`: the byte range to trim and the smallest free extent worth trimming;
/// the kernel replaces `len` with the number of bytes trimmed.
#[repr(C)]
#[derive(Debug, Default)]
pub struct FstrimRange {
    pub start: u64,
    pub len: u64,
    pub minlen: u64,
}

/// An fs ioctl that takes an (ignored) int argument.
fn int_ioctl(fd: BorrowedFd<'_>, request: libc::c_ulong) -> io::Result<()> {
    let mut arg: libc::c_int = 0;
    // SAFETY: FIFREEZE and FITHAW take an int argument, which they ignore; we pass a valid
    // pointer to a local int, on a descriptor the borrow keeps open.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, &raw mut arg) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `FIFREEZE` on the filesystem that `fd` (a directory opened on it) belongs to.
pub fn freeze(fd: BorrowedFd<'_>) -> io::Result<()> {
    int_ioctl(fd, FIFREEZE)
}

/// `FITHAW` on the filesystem that `fd` belongs to.
pub fn thaw(fd: BorrowedFd<'_>) -> io::Result<()> {
    int_ioctl(fd, FITHAW)
}

/// `FITRIM` over `range` on the filesystem that `fd` belongs to; on success `range.len` holds
/// the number of bytes trimmed.
pub fn trim(fd: BorrowedFd<'_>, range: &mut FstrimRange) -> io::Result<()> {
    // SAFETY: FITRIM reads and updates one `struct fstrim_range` (FstrimRange is its repr(C)
    // copy) through the pointer, which is valid and exclusive for the call, on a descriptor
    // the borrow keeps open.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), FITRIM as _, std::ptr::from_mut(range)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Close `fd` and report close(2)'s error.
pub fn close(fd: OwnedFd) -> io::Result<()> {
    let raw = fd.into_raw_fd();
    // SAFETY: `raw` came from an OwnedFd that gave it up, so we own it and close it once.
    let rc = unsafe { libc::close(raw) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
