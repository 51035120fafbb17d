//! C library services with no system call behind them: the user database (`getpwnam_r`),
//! the local time zone (`localtime_r`) and the load average (`getloadavg`, read as glibc reads
//! it where the C library is another).
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

/// `getloadavg` as glibc does it on builds with another C library: the first three fields of
/// `/proc/loadavg` (musl's `getloadavg` uses `sysinfo`, whose finer fixed point gives other
/// values than glibc's two decimals, e.g. 0.4296875 for 0.43).
#[cfg(not(target_env = "gnu"))]
pub fn load_average() -> io::Result<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg")?;
    parse_loadavg(&text).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The three load averages at the start of `/proc/loadavg`'s text.
#[cfg_attr(target_env = "gnu", allow(dead_code))]
fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut f = text.split_ascii_whitespace().map(|t| t.parse::<f64>().ok());
    Some([f.next()??, f.next()??, f.next()??])
}

#[cfg(test)]
#[test]
fn loadavg_text() {
    assert_eq!(
        parse_loadavg("0.43 1.05 12.00 2/301 4242\n"),
        Some([0.43, 1.05, 12.0])
    );
    assert_eq!(parse_loadavg("0.43 x"), None);
}

/// `getloadavg`: the 1, 5 and 15 minute load averages.
#[cfg(target_env = "gnu")]
pub fn load_average() -> io::Result<[f64; 3]> {
    let mut avg = [0f64; 3];
    // SAFETY: `avg` holds the 3 doubles asked for.
    let n = unsafe { libc::getloadavg(avg.as_mut_ptr(), 3) };
    if n != 3 {
        return Err(io::Error::last_os_error());
    }
    Ok(avg)
}
