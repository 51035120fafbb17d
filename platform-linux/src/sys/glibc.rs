//! C library services with no system call behind them: the user database (`getpwnam_r`),
//! utmp records, the local time zone (`localtime_r`) and the load average (`getloadavg`).
//! rustix wraps system calls only, so these go through libc, as upstream's GLib does.

use std::ffi::CStr;
use std::io;

/// A user database entry, reduced to what the agent uses.
#[cfg(not(target_feature = "crt-static"))]
#[derive(Debug)]
pub struct UserEntry {
    pub uid: u32,
    pub gid: u32,
    /// The home directory, as bytes (empty when the entry has none).
    pub dir: std::path::PathBuf,
}

/// `getpwnam_r`: the entry, or the error number (0 when the user simply does not exist or
/// the name holds a NUL byte). The buffer grows on ERANGE up to 1 MiB.
#[cfg(not(target_feature = "crt-static"))]
pub fn getpwnam(name: &str) -> Result<UserEntry, i32> {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(name) else {
        return Err(0);
    };
    let mut size = 1024usize;
    loop {
        let mut buf = vec![0u8; size];
        // SAFETY: passwd is plain data (integers and pointers) for which all-zero is valid.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and `buf.len()` is the size of `buf`; the
        // strings getpwnam_r stores in `pwd` point into `buf`, which outlives their use below.
        let rc = unsafe {
            libc::getpwnam_r(
                c.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && size < (1 << 20) {
            size *= 4;
            continue;
        }
        if result.is_null() {
            return Err(rc);
        }
        let dir = if pwd.pw_dir.is_null() {
            std::path::PathBuf::new()
        } else {
            // SAFETY: pw_dir is a NUL-terminated string inside `buf`, which is still alive.
            let d = unsafe { CStr::from_ptr(pwd.pw_dir) };
            std::path::PathBuf::from(std::ffi::OsStr::from_bytes(d.to_bytes()))
        };
        return Ok(UserEntry {
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            dir,
        });
    }
}

/// The whole `struct utmpx` records in `data` (the contents of a utmp file), in order; a
/// trailing partial record is ignored.
pub fn utmpx_records(data: &[u8]) -> impl Iterator<Item = libc::utmpx> + '_ {
    data.chunks_exact(size_of::<libc::utmpx>()).map(|chunk| {
        // SAFETY: `chunk` has exactly the size of a utmpx, which is plain data (integers and
        // byte arrays) valid for any bit pattern; read_unaligned copes with any alignment.
        unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast::<libc::utmpx>()) }
    })
}

/// The current local zone abbreviation and UTC offset in seconds, from `tzset` and
/// `localtime_r` (which honour `TZ` and `/etc/localtime`, falling back to UTC, as GLib's local
/// time zone does); `None` when localtime_r fails.
pub fn local_zone() -> Option<(String, i64)> {
    // SAFETY: time(NULL) only returns a value.
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    // SAFETY: `tm` is plain data (integers and a pointer) for which all-zero is valid.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe extern "C" {
        /// POSIX `tzset` (not bound by the libc crate).
        fn tzset();
    }
    // SAFETY: tzset re-reads TZ and the zone file so that a change is noticed, as GLib's local
    // time zone notices it; the agent has one thread, so nothing changes TZ meanwhile.
    unsafe { tzset() };
    // SAFETY: both pointers are valid for the call; localtime_r is the reentrant form.
    let r = unsafe { libc::localtime_r(&now, &mut tm) };
    if r.is_null() {
        return None;
    }
    let zone = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: glibc points tm_zone at a NUL-terminated string that lives as long as the
        // loaded zone data; it is copied at once.
        unsafe { CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    Some((zone, tm.tm_gmtoff))
}

/// `getloadavg`: the 1, 5 and 15 minute load averages.
pub fn load_average() -> io::Result<[f64; 3]> {
    let mut avg = [0f64; 3];
    // SAFETY: `avg` holds the 3 doubles asked for.
    let n = unsafe { libc::getloadavg(avg.as_mut_ptr(), 3) };
    if n != 3 {
        return Err(io::Error::last_os_error());
    }
    Ok(avg)
}
