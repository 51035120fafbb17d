//! Network calls rustix does not offer: the interface list (`getifaddrs`, a glibc service
//! over netlink), a hardware address (`SIOCGIFHWADDR`, an ioctl rustix has no type for),
//! glibc's IPv6 text (`inet_ntop`) and binding a vsock address (rustix has no `sockaddr_vm`).

use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd};

use rustix::net::{AddressFamily, SocketFlags, SocketType};

/// One `getifaddrs` entry: the interface name and, for IPv4 and IPv6 entries, the address
/// and the number of one bits in its netmask.
#[derive(Clone, Debug, PartialEq)]
pub struct IfAddr {
    pub name: String,
    pub addr: Option<(IpAddr, u32)>,
}

/// `getifaddrs`: every entry, in the order the C library lists them.
pub fn interface_addresses() -> io::Result<Vec<IfAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; on success the list is freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut list = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: the address and netmask pointers are null or point to sockaddrs of the
        // family given in sa_family, owned by the list.
        let addr = unsafe { ip_of(ifa.ifa_addr, ifa.ifa_netmask) };
        list.push(IfAddr { name, addr });
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once; nothing borrowed
    // from the list outlives this point (the names were copied).
    unsafe { libc::freeifaddrs(head) };
    Ok(list)
}

/// The address and netmask popcount of an IPv4 or IPv6 entry.
///
/// # Safety
/// `addr` and `mask` must be null or point to sockaddrs valid for their `sa_family`.
unsafe fn ip_of(addr: *const libc::sockaddr, mask: *const libc::sockaddr) -> Option<(IpAddr, u32)> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: non-null, and valid per the contract.
    let family = i32::from(unsafe { (*addr).sa_family });
    match family {
        libc::AF_INET => {
            // SAFETY: an AF_INET sockaddr is a sockaddr_in; read unaligned to be safe.
            let sin = unsafe { std::ptr::read_unaligned(addr.cast::<libc::sockaddr_in>()) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            let prefix = if mask.is_null() {
                0
            } else {
                // SAFETY: the netmask of an AF_INET entry is a sockaddr_in.
                let m = unsafe { std::ptr::read_unaligned(mask.cast::<libc::sockaddr_in>()) };
                m.sin_addr.s_addr.count_ones()
            };
            Some((IpAddr::V4(ip), prefix))
        }
        libc::AF_INET6 => {
            // SAFETY: an AF_INET6 sockaddr is a sockaddr_in6.
            let sin6 = unsafe { std::ptr::read_unaligned(addr.cast::<libc::sockaddr_in6>()) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let prefix = if mask.is_null() {
                0
            } else {
                // SAFETY: the netmask of an AF_INET6 entry is a sockaddr_in6.
                let m = unsafe { std::ptr::read_unaligned(mask.cast::<libc::sockaddr_in6>()) };
                m.sin6_addr.s6_addr.iter().map(|b| b.count_ones()).sum()
            };
            Some((IpAddr::V6(ip), prefix))
        }
        _ => None,
    }
}

/// `SIOCGIFHWADDR` on `name`: the first six bytes of the hardware address, or `None` when the
/// interface has none or cannot be asked.
pub fn hw_addr(name: &str) -> Option<[u8; 6]> {
    let sock = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .ok()?;
    // SAFETY: ifreq is plain data (a name array and a union of plain data) for which all-zero
    // is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &b) in ifr
        .ifr_name
        .iter_mut()
        .zip(name.as_bytes().iter().take(libc::IFNAMSIZ - 1))
    {
        *dst = b as libc::c_char;
    }
    // SAFETY: `ifr` is a valid, NUL-terminated ifreq for SIOCGIFHWADDR, which writes only into
    // it; `sock` is open for the call.
    let rc = unsafe {
        libc::ioctl(
            sock.as_fd().as_raw_fd(),
            libc::SIOCGIFHWADDR as _,
            &raw mut ifr,
        )
    };
    drop(sock);
    if rc != 0 {
        return None;
    }
    // SAFETY: after a successful SIOCGIFHWADDR the union holds ifru_hwaddr (and any bit
    // pattern is a valid sockaddr).
    let data = unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Some(mac)
}

/// `inet_ntop(AF_INET6)` as glibc writes it (its `resolv/inet_ntop.c`), in safe code so that
/// every C library gives upstream's text: it differs from Rust's `Ipv6Addr` display, and from
/// musl's `inet_ntop`, for IPv4-compatible addresses (`::0.2.0.3`, where both write `::2:3`).
pub fn inet_ntop6(bytes: &[u8; 16]) -> String {
    use std::fmt::Write as _;
    let words: [u16; 8] =
        std::array::from_fn(|i| u16::from_be_bytes([bytes[2 * i], bytes[2 * i + 1]]));
    // The first longest run of zero words, if at least two long.
    // (first word, length) of the best run so far and of the current one.
    let mut best: Option<(usize, usize)> = None;
    let mut cur: Option<(usize, usize)> = None;
    for (i, &w) in words.iter().enumerate() {
        if w == 0 {
            cur = Some(cur.map_or((i, 1), |(b, l)| (b, l + 1)));
        } else if let Some(c) = cur.take()
            && best.is_none_or(|b| c.1 > b.1)
        {
            best = Some(c);
        }
    }
    if let Some(c) = cur
        && best.is_none_or(|b| c.1 > b.1)
    {
        best = Some(c);
    }
    let best = best.filter(|b| b.1 >= 2);
    let mut out = String::with_capacity(46);
    for (i, &w) in words.iter().enumerate() {
        if let Some((base, len)) = best
            && (base..base + len).contains(&i)
        {
            if i == base {
                out.push(':');
            }
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6
            && let Some((0, len)) = best
            && (len == 6 || (len == 5 && words[5] == 0xffff))
        {
            let _ = write!(
                out,
                "{}.{}.{}.{}",
                bytes[12], bytes[13], bytes[14], bytes[15]
            );
            break;
        }
        let _ = write!(out, "{w:x}");
    }
    if best.is_some_and(|(base, len)| base + len == 8) {
        out.push(':');
    }
    out
}

/// `bind(2)` a vsock socket to `cid`:`port`.
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

/// `SO_VM_SOCKETS_BUFFER_SIZE` and `SO_VM_SOCKETS_BUFFER_MAX_SIZE` of `<linux/vm_sockets.h>`
/// (the libc crate does not have them), options at level `AF_VSOCK`.
const SO_VM_SOCKETS_BUFFER_SIZE: libc::c_int = 0;
const SO_VM_SOCKETS_BUFFER_MAX_SIZE: libc::c_int = 2;

/// Sets a vsock socket's receive buffer (the credit it offers its peer) to `bytes`, raising the
/// maximum first (the kernel clamps the size to it, 256 KiB by default). Connections accepted
/// on a listener inherit it.
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

#[cfg(test)]
mod ntop_tests {
    /// The safe `inet_ntop6` writes what glibc's `inet_ntop` writes (checked on glibc builds,
    /// over the special shapes and many pseudo-random sparse addresses).
    #[cfg(target_env = "gnu")]
    #[test]
    fn inet_ntop6_is_glibcs() {
        unsafe extern "C" {
            fn inet_ntop(
                af: libc::c_int,
                src: *const libc::c_void,
                dst: *mut libc::c_char,
                size: libc::socklen_t,
            ) -> *const libc::c_char;
        }
        let glibc = |bytes: &[u8; 16]| {
            let mut buf = [0u8; 46];
            // SAFETY: `bytes` is a 16-byte in6_addr and `buf` is INET6_ADDRSTRLEN bytes, the
            // size inet_ntop is told; it writes a NUL-terminated string into `buf` only.
            let r = unsafe {
                inet_ntop(
                    libc::AF_INET6,
                    bytes.as_ptr().cast(),
                    buf.as_mut_ptr().cast(),
                    buf.len() as libc::socklen_t,
                )
            };
            assert!(!r.is_null());
            let end = buf.iter().position(|&b| b == 0).unwrap();
            String::from_utf8(buf[..end].to_vec()).unwrap()
        };
        let mut cases: Vec<[u8; 16]> = Vec::new();
        // Every pattern of zero / non-zero words, with 1, 0xffff or 0x0203 as the non-zero value.
        for mask in 0u32..256 {
            for v in [1u16, 0xffff, 0x0203] {
                let mut b = [0u8; 16];
                for w in 0..8 {
                    if mask & (1 << w) != 0 {
                        b[2 * w..2 * w + 2].copy_from_slice(&v.to_be_bytes());
                    }
                }
                cases.push(b);
            }
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2000 {
            let mut b = [0u8; 16];
            for w in 0..8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x.is_multiple_of(3) {
                    b[2 * w..2 * w + 2].copy_from_slice(&((x >> 16) as u16).to_be_bytes());
                }
            }
            cases.push(b);
        }
        for b in cases {
            assert_eq!(super::inet_ntop6(&b), glibc(&b), "{b:?}");
        }
    }

    #[test]
    fn inet_ntop6_shapes() {
        let t = |s: &str| super::inet_ntop6(&s.parse::<std::net::Ipv6Addr>().unwrap().octets());
        assert_eq!(t("::2:3"), "::0.2.0.3");
        assert_eq!(t("::ffff:1.2.3.4"), "::ffff:1.2.3.4");
        assert_eq!(t("::1"), "::1");
        assert_eq!(t("::"), "::");
        assert_eq!(t("fe80::1:0:0:1"), "fe80::1:0:0:1");
        assert_eq!(t("1:0:0:2:0:0:0:3"), "1:0:0:2::3");
        assert_eq!(t("1::"), "1::");
    }
}
