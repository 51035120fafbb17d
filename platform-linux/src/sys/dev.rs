//! Device ioctls: the real-time clock and the NVMe admin command, whose structures and
//! request numbers neither rustix nor the libc crate define.

use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd};

/// `struct rtc_time` (linux/rtc.h), the layout of `struct tm`'s first nine fields.
#[repr(C)]
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcTime {
    pub sec: i32,
    pub min: i32,
    pub hour: i32,
    pub mday: i32,
    pub mon: i32,
    pub year: i32,
    pub wday: i32,
    pub yday: i32,
    pub isdst: i32,
}

/// `_IOR('p', 0x09, struct rtc_time)`.
const RTC_RD_TIME: libc::c_ulong = 0x8024_7009;
/// `_IOW('p', 0x0a, struct rtc_time)`.
const RTC_SET_TIME: libc::c_ulong = 0x4024_700a;

/// `RTC_RD_TIME` on an open RTC device.
pub fn rtc_read(fd: BorrowedFd<'_>) -> io::Result<RtcTime> {
    let mut tm = RtcTime::default();
    // SAFETY: RTC_RD_TIME writes one `struct rtc_time` to the pointer, which points to our
    // repr(C) RtcTime of the same layout; the borrow keeps the descriptor open.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), RTC_RD_TIME as _, &raw mut tm) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tm)
}

/// `RTC_SET_TIME` on an RTC device opened for writing.
pub fn rtc_set(fd: BorrowedFd<'_>, tm: &RtcTime) -> io::Result<()> {
    // SAFETY: RTC_SET_TIME reads one `struct rtc_time` (our repr(C) RtcTime, same layout)
    // from the pointer, which is valid for the call; the borrow keeps the descriptor open.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), RTC_SET_TIME as _, std::ptr::from_ref(tm)) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `struct nvme_admin_cmd` from `<linux/nvme_ioctl.h>`.
#[repr(C)]
#[derive(Default)]
struct NvmeAdminCmd {
    opcode: u8,
    flags: u8,
    rsvd1: u16,
    nsid: u32,
    cdw2: u32,
    cdw3: u32,
    metadata: u64,
    addr: u64,
    metadata_len: u32,
    data_len: u32,
    cdw10: u32,
    cdw11: u32,
    cdw12: u32,
    cdw13: u32,
    cdw14: u32,
    cdw15: u32,
    timeout_ms: u32,
    result: u32,
}

/// `NVME_IOCTL_ADMIN_CMD` = `_IOWR('N', 0x41, struct nvme_admin_cmd)`.
const NVME_IOCTL_ADMIN_CMD: libc::c_ulong = (3 << 30)
    | ((size_of::<NvmeAdminCmd>() as libc::c_ulong) << 16)
    | ((b'N' as libc::c_ulong) << 8)
    | 0x41;

/// The SMART / Health log page (log 0x02, all namespaces) of the NVMe device open on `fd`, as
/// upstream asks for it; `None` when the ioctl fails or the device answers with an error
/// status.
pub fn nvme_smart_log(fd: BorrowedFd<'_>) -> Option<[u8; 512]> {
    let mut log = [0u8; 512];
    let mut cmd = NvmeAdminCmd {
        opcode: 0x02,
        nsid: 0xFFFF_FFFF,
        addr: log.as_mut_ptr() as u64,
        data_len: log.len() as u32,
        cdw10: 0x02 | (1 << 15) | ((((log.len() >> 2) - 1) as u32) << 16),
        ..NvmeAdminCmd::default()
    };
    // SAFETY: `cmd` is a valid nvme_admin_cmd whose `addr` points at `log`, which is
    // `data_len` bytes long and outlives the call; the kernel writes only into `log` and `cmd`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), NVME_IOCTL_ADMIN_CMD as _, &raw mut cmd) };
    if rc != 0 {
        return None;
    }
    Some(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_and_request_numbers() {
        assert_eq!(size_of::<NvmeAdminCmd>(), 72);
        assert_eq!(NVME_IOCTL_ADMIN_CMD, 0xC048_4E41);
        assert_eq!(size_of::<RtcTime>(), 36);
    }
}
