//! glibc's `strerror` texts, for builds on another C library (the shipped musl build).
//!
//! Error texts reach the wire (`guest-file-open`'s "failed to open file ...: No such file or
//! directory", `guest-exec`'s spawn errors, ...) and upstream's are glibc's; musl words many
//! differently ("Address not available", "Invalid seek", "Out of memory"). So the texts are
//! glibc's own (2.36, x86_64, errno 0 to 133), and on a glibc build its `strerror` is used.

/// glibc's text for `code`, as its `strerror` gives it.
#[cfg(not(target_env = "gnu"))]
pub fn strerror(code: i32) -> String {
    usize::try_from(code)
        .ok()
        .and_then(|i| TEXTS.get(i))
        .map(|t| (*t).to_string())
        .unwrap_or_else(|| format!("Unknown error {code}"))
}

/// glibc's texts, indexed by errno.
#[cfg_attr(target_env = "gnu", allow(dead_code))]
static TEXTS: [&str; 134] = [
    "Success",
    "Operation not permitted",
    "No such file or directory",
    "No such process",
    "Interrupted system call",
    "Input/output error",
    "No such device or address",
    "Argument list too long",
    "Exec format error",
    "Bad file descriptor",
    "No child processes",
    "Resource temporarily unavailable",
    "Cannot allocate memory",
    "Permission denied",
    "Bad address",
    "Block device required",
    "Device or resource busy",
    "File exists",
    "Invalid cross-device link",
    "No such device",
    "Not a directory",
    "Is a directory",
    "Invalid argument",
    "Too many open files in system",
    "Too many open files",
    "Inappropriate ioctl for device",
    "Text file busy",
    "File too large",
    "No space left on device",
    "Illegal seek",
    "Read-only file system",
    "Too many links",
    "Broken pipe",
    "Numerical argument out of domain",
    "Numerical result out of range",
    "Resource deadlock avoided",
    "File name too long",
    "No locks available",
    "Function not implemented",
    "Directory not empty",
    "Too many levels of symbolic links",
    "Unknown error 41",
    "No message of desired type",
    "Identifier removed",
    "Channel number out of range",
    "Level 2 not synchronized",
    "Level 3 halted",
    "Level 3 reset",
    "Link number out of range",
    "Protocol driver not attached",
    "No CSI structure available",
    "Level 2 halted",
    "Invalid exchange",
    "Invalid request descriptor",
    "Exchange full",
    "No anode",
    "Invalid request code",
    "Invalid slot",
    "Unknown error 58",
    "Bad font file format",
    "Device not a stream",
    "No data available",
    "Timer expired",
    "Out of streams resources",
    "Machine is not on the network",
    "Package not installed",
    "Object is remote",
    "Link has been severed",
    "Advertise error",
    "Srmount error",
    "Communication error on send",
    "Protocol error",
    "Multihop attempted",
    "RFS specific error",
    "Bad message",
    "Value too large for defined data type",
    "Name not unique on network",
    "File descriptor in bad state",
    "Remote address changed",
    "Can not access a needed shared library",
    "Accessing a corrupted shared library",
    ".lib section in a.out corrupted",
    "Attempting to link in too many shared libraries",
    "Cannot exec a shared library directly",
    "Invalid or incomplete multibyte or wide character",
    "Interrupted system call should be restarted",
    "Streams pipe error",
    "Too many users",
    "Socket operation on non-socket",
    "Destination address required",
    "Message too long",
    "Protocol wrong type for socket",
    "Protocol not available",
    "Protocol not supported",
    "Socket type not supported",
    "Operation not supported",
    "Protocol family not supported",
    "Address family not supported by protocol",
    "Address already in use",
    "Cannot assign requested address",
    "Network is down",
    "Network is unreachable",
    "Network dropped connection on reset",
    "Software caused connection abort",
    "Connection reset by peer",
    "No buffer space available",
    "Transport endpoint is already connected",
    "Transport endpoint is not connected",
    "Cannot send after transport endpoint shutdown",
    "Too many references: cannot splice",
    "Connection timed out",
    "Connection refused",
    "Host is down",
    "No route to host",
    "Operation already in progress",
    "Operation now in progress",
    "Stale file handle",
    "Structure needs cleaning",
    "Not a XENIX named type file",
    "No XENIX semaphores available",
    "Is a named type file",
    "Remote I/O error",
    "Disk quota exceeded",
    "No medium found",
    "Wrong medium type",
    "Operation canceled",
    "Required key not available",
    "Key has expired",
    "Key has been revoked",
    "Key was rejected by service",
    "Owner died",
    "State not recoverable",
    "Operation not possible due to RF-kill",
    "Memory page has hardware error",
];

#[cfg(test)]
mod tests {
    /// The table is glibc's (checked where the build runs on glibc).
    #[cfg(target_env = "gnu")]
    #[test]
    fn table_matches_glibc() {
        for (code, text) in super::TEXTS.iter().enumerate() {
            let e = std::io::Error::from_raw_os_error(code as i32).to_string();
            let glibc = e.split(" (os error ").next().unwrap();
            assert_eq!(glibc, *text, "errno {code}");
        }
    }

    /// The musl build answers with glibc's words.
    #[cfg(not(target_env = "gnu"))]
    #[test]
    fn glibc_words() {
        assert_eq!(super::strerror(99), "Cannot assign requested address");
        assert_eq!(super::strerror(29), "Illegal seek");
        assert_eq!(super::strerror(12), "Cannot allocate memory");
        assert_eq!(super::strerror(2), "No such file or directory");
        assert_eq!(super::strerror(4000), "Unknown error 4000");
    }
}
