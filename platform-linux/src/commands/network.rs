//! `guest-network-get-interfaces` and `guest-network-get-route` on Linux.
//!
//! Interfaces come from `getifaddrs` (one entry per name, in first-seen order, including
//! interfaces that only have a link-layer entry), hardware addresses from `SIOCGIFHWADDR` and
//! counters from `/proc/net/dev`, as upstream gathers them. Routes are parsed from
//! `/proc/net/route` and `/proc/net/ipv6_route` with upstream's field rules.
//!
//! The OS is read in one place and the rest is pure functions over what was read, so tests
//! run the assembly and the parsers on fixture text. Two deliberate differences from upstream
//! are listed in `DIFFERENCES.md`: counters are given to every interface `/proc/net/dev`
//! knows (upstream only to those with an IP address), and a missing `/proc/net/ipv6_route`
//! (IPv6 disabled) leaves the IPv6 routes out instead of failing the whole command.

// agent_core::Error carries its message inline (no allocation in the core), so every
// Result in these backends is as large as that message, by design.
#![allow(clippy::result_large_err)]

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use agent_core::Result;
use agent_core::commands::Emitter;
use agent_core::commands::network::{
    GuestIpAddress, GuestIpAddressType, GuestNetworkInterface, GuestNetworkInterfaceStat,
    GuestNetworkRoute, Network,
};

use super::system::errno_msg;

/// The Linux network backend.
#[derive(Debug)]
pub struct LinuxNetwork {
    /// `/proc/net`: holds `dev`, `route` and `ipv6_route`.
    pub proc_net: PathBuf,
}

impl Default for LinuxNetwork {
    fn default() -> Self {
        LinuxNetwork {
            proc_net: "/proc/net".into(),
        }
    }
}

/// One `getifaddrs` entry, reduced to what the command uses.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct IfAddr {
    pub name: String,
    /// The address and its prefix length, for IPv4 and IPv6 entries.
    pub addr: Option<(IpText, i64)>,
}

/// An address as `inet_ntop` writes it, with its family.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct IpText(pub String, pub GuestIpAddressType);

/// An interface being assembled.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Interface {
    pub name: String,
    pub hardware_address: Option<String>,
    pub ip_addresses: Option<Vec<(String, GuestIpAddressType, i64)>>,
    pub statistics: Option<GuestNetworkInterfaceStat>,
}

impl Network for LinuxNetwork {
    fn interfaces(&mut self, out: &mut Emitter<'_, GuestNetworkInterface<'static>>) -> Result<()> {
        let entries = read_ifaddrs()?;
        let dev = std::fs::read_to_string(self.proc_net.join("dev")).unwrap_or_default();
        let list = assemble(&entries, hw_addr, |name| parse_dev_stats(&dev, name));
        for i in &list {
            let addrs: Vec<GuestIpAddress<'_>> = i
                .ip_addresses
                .iter()
                .flatten()
                .map(|(a, t, p)| GuestIpAddress {
                    ip_address: a,
                    ip_address_type: *t,
                    prefix: *p,
                })
                .collect();
            out.emit(&GuestNetworkInterface {
                name: &i.name,
                hardware_address: i.hardware_address.as_deref(),
                ip_addresses: i.ip_addresses.as_ref().map(|_| addrs.as_slice()),
                statistics: i.statistics.clone(),
            });
        }
        Ok(())
    }

    fn routes(&mut self, out: &mut Emitter<'_, GuestNetworkRoute<'static>>) -> Result<()> {
        let v4_path = self.proc_net.join("route");
        let v4 = std::fs::read(&v4_path)
            .map_err(|e| errno_msg(format_args!("open(\"{}\")", v4_path.display()), &e))?;
        let v6_path = self.proc_net.join("ipv6_route");
        let v6 = match std::fs::read(&v6_path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(errno_msg(
                    format_args!("open(\"{}\")", v6_path.display()),
                    &e,
                ));
            }
        };
        let mut routes = parse_ipv4_routes(&String::from_utf8_lossy(&v4));
        routes.extend(parse_ipv6_routes(&String::from_utf8_lossy(&v6)));
        for r in &routes {
            out.emit(&r.borrowed());
        }
        Ok(())
    }
}

/// Build the interface list from `getifaddrs` entries as upstream does: an interface per name
/// in first-seen order; the hardware address is asked for until one is obtained; every IPv4
/// and IPv6 entry adds an address. Counters are looked up for every interface (upstream: only
/// once it has an address).
pub(crate) fn assemble(
    entries: &[IfAddr],
    mut hw: impl FnMut(&str) -> Option<[u8; 6]>,
    mut stats: impl FnMut(&str) -> Option<GuestNetworkInterfaceStat>,
) -> Vec<Interface> {
    let mut list: Vec<Interface> = Vec::new();
    for e in entries {
        let idx = match list.iter().position(|i| i.name == e.name) {
            Some(i) => i,
            None => {
                list.push(Interface {
                    name: e.name.clone(),
                    ..Interface::default()
                });
                list.len() - 1
            }
        };
        let Some(info) = list.get_mut(idx) else {
            continue;
        };
        if info.hardware_address.is_none() {
            info.hardware_address = hw(&e.name).map(|m| {
                format!(
                    "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                    m[0], m[1], m[2], m[3], m[4], m[5]
                )
            });
        }
        if let Some((IpText(a, t), prefix)) = &e.addr {
            info.ip_addresses
                .get_or_insert_with(Vec::new)
                .push((a.clone(), *t, *prefix));
        }
        if info.statistics.is_none() {
            info.statistics = stats(&e.name);
        }
    }
    list
}

/// Walk `getifaddrs`.
fn read_ifaddrs() -> Result<Vec<IfAddr>> {
    let list = crate::sys::net::interface_addresses()
        .map_err(|e| errno_msg(format_args!("getifaddrs failed"), &e))?;
    Ok(list
        .into_iter()
        .map(|e| IfAddr {
            name: e.name,
            addr: e.addr.map(|(ip, prefix)| {
                let text = match ip {
                    IpAddr::V4(v4) => IpText(v4.to_string(), GuestIpAddressType::Ipv4),
                    IpAddr::V6(v6) => IpText(ntop6(&v6.octets()), GuestIpAddressType::Ipv6),
                };
                (text, i64::from(prefix))
            }),
        })
        .collect())
}

/// `SIOCGIFHWADDR` on `name` (upstream logs a failure and goes on).
fn hw_addr(name: &str) -> Option<[u8; 6]> {
    crate::sys::net::hw_addr(name)
}

/// The counters of `name` from `/proc/net/dev` text: received bytes, packets, errs, drop
/// (fields 1-4) and the same transmitted (fields 9-12); the line needs all 16 fields.
pub(crate) fn parse_dev_stats(text: &str, name: &str) -> Option<GuestNetworkInterfaceStat> {
    for line in text.lines() {
        let line = line.trim_start();
        let Some((n, rest)) = line.split_once(':') else {
            continue;
        };
        if n != name {
            continue;
        }
        let v: Vec<u64> = rest
            .split_ascii_whitespace()
            .map_while(|t| t.parse().ok())
            .collect();
        if v.len() < 16 {
            continue;
        }
        return Some(GuestNetworkInterfaceStat {
            rx_bytes: v[0],
            rx_packets: v[1],
            rx_errs: v[2],
            rx_dropped: v[3],
            tx_bytes: v[8],
            tx_packets: v[9],
            tx_errs: v[10],
            tx_dropped: v[11],
        });
    }
    None
}

/// A route, owning its texts.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Route {
    pub iface: String,
    pub destination: String,
    pub metric: i64,
    pub gateway: Option<String>,
    pub mask: Option<String>,
    pub irtt: Option<i64>,
    pub flags: Option<u64>,
    pub refcnt: Option<i64>,
    pub r#use: Option<i64>,
    pub window: Option<i64>,
    pub mtu: Option<i64>,
    pub desprefixlen: Option<String>,
    pub source: Option<String>,
    pub srcprefixlen: Option<String>,
    pub nexthop: Option<String>,
    pub version: i64,
}

impl Route {
    fn borrowed(&self) -> GuestNetworkRoute<'_> {
        GuestNetworkRoute {
            iface: &self.iface,
            destination: &self.destination,
            metric: self.metric,
            gateway: self.gateway.as_deref(),
            mask: self.mask.as_deref(),
            irtt: self.irtt,
            flags: self.flags,
            refcnt: self.refcnt,
            r#use: self.r#use,
            window: self.window,
            mtu: self.mtu,
            desprefixlen: self.desprefixlen.as_deref(),
            source: self.source.as_deref(),
            srcprefixlen: self.srcprefixlen.as_deref(),
            nexthop: self.nexthop.as_deref(),
            version: self.version,
        }
    }
}

/// `%x` / `%X`: hex digits (an optional `0x`), as the unsigned 32 bits C keeps.
fn hex_u32(tok: &str) -> Option<u32> {
    let t = tok
        .strip_prefix("0x")
        .or_else(|| tok.strip_prefix("0X"))
        .unwrap_or(tok);
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(t.bytes().fold(0u32, |v, b| {
        let d = (b as char).to_digit(16).unwrap_or(0);
        v.wrapping_mul(16).wrapping_add(d)
    }))
}

/// `%d`: a decimal int (wrapping to 32 bits as C's conversion does in practice).
fn dec_i32(tok: &str) -> Option<i32> {
    let (neg, d) = match tok.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, tok.strip_prefix('+').unwrap_or(tok)),
    };
    if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v = d.bytes().fold(0u32, |v, b| {
        v.wrapping_mul(10).wrapping_add(u32::from(b - b'0'))
    });
    let v = v as i32;
    Some(if neg { v.wrapping_neg() } else { v })
}

/// The dotted quad of a `/proc/net/route` address: the kernel prints the address in host
/// (little-endian) order, so the last byte of the number is the first of the address.
fn v4_text(v: u32) -> String {
    Ipv4Addr::from(v.swap_bytes()).to_string()
}

/// `/proc/net/route` (the header line is skipped; malformed lines are skipped).
pub(crate) fn parse_ipv4_routes(text: &str) -> Vec<Route> {
    let mut list = Vec::new();
    for line in text.lines().skip(1) {
        let t: Vec<&str> = line.split_ascii_whitespace().collect();
        let [
            iface,
            dst,
            gw,
            flags,
            refcnt,
            use_,
            metric,
            mask,
            mtu,
            window,
            irtt,
            ..,
        ] = t[..]
        else {
            continue;
        };
        let (Some(dst), Some(gw), Some(flags), Some(mask)) =
            (hex_u32(dst), hex_u32(gw), hex_u32(flags), hex_u32(mask))
        else {
            continue;
        };
        let (Some(refcnt), Some(use_), Some(metric), Some(mtu), Some(window), Some(irtt)) = (
            dec_i32(refcnt),
            dec_i32(use_),
            dec_i32(metric),
            dec_i32(mtu),
            dec_i32(window),
            dec_i32(irtt),
        ) else {
            continue;
        };
        list.push(Route {
            iface: iface.to_string(),
            destination: v4_text(dst),
            gateway: Some(v4_text(gw)),
            mask: Some(v4_text(mask)),
            metric: metric.into(),
            flags: Some(flags.into()),
            refcnt: Some(refcnt.into()),
            r#use: Some(use_.into()),
            mtu: Some(mtu.into()),
            window: Some(window.into()),
            irtt: Some(irtt.into()),
            version: 4,
            ..Route::default()
        });
    }
    list
}

/// 32 hex digits to `inet_ntop` text.
fn v6_text(hex: &str) -> Option<String> {
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(ntop6(&bytes))
}

/// `inet_ntop(AF_INET6)`: glibc's text, which differs from Rust's `Ipv6Addr` display for
/// IPv4-compatible addresses (`::0.2.0.3`, where Rust writes `::2:3`).
fn ntop6(bytes: &[u8; 16]) -> String {
    crate::sys::net::inet_ntop6(bytes)
}

/// `/proc/net/ipv6_route` (no header). Upstream reads metric, refcnt and use with `%x` into
/// C ints (metric 0xffffffff is -1), as here. It reads flags the same way and so
/// sign-extends them (`RTF_LOCAL` routes show 18446744071564165121); here they are the
/// kernel's 32-bit value (see `DIFFERENCES.md`).
pub(crate) fn parse_ipv6_routes(text: &str) -> Vec<Route> {
    let mut list = Vec::new();
    for line in text.lines() {
        let t: Vec<&str> = line.split_ascii_whitespace().collect();
        let [
            dst,
            dlen,
            src,
            slen,
            hop,
            metric,
            refcnt,
            use_,
            flags,
            iface,
            ..,
        ] = t[..]
        else {
            continue;
        };
        let (Some(dst), Some(src), Some(hop)) = (v6_text(dst), v6_text(src), v6_text(hop)) else {
            continue;
        };
        let nums: Option<Vec<i32>> = [dlen, slen, metric, refcnt, use_, flags]
            .iter()
            .map(|t| hex_u32(t).map(|v| v as i32))
            .collect();
        let Some(&[dlen, slen, metric, refcnt, use_, flags]) = nums.as_deref() else {
            continue;
        };
        list.push(Route {
            iface: iface.to_string(),
            destination: dst,
            metric: metric.into(),
            source: Some(src),
            desprefixlen: Some(dlen.to_string()),
            srcprefixlen: Some(slen.to_string()),
            nexthop: Some(hop),
            flags: Some(u64::from(flags as u32)),
            refcnt: Some(refcnt.into()),
            r#use: Some(use_.into()),
            version: 6,
            ..Route::default()
        });
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::system::testing::{emitted, json};

    const DEV: &str = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:    3245      30    0    0    0     0          0         0     3245      31    0    0    0     0       0          0\n  \
ifb0:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n  \
eth0: 296922782    9890    1    2    0     0          0         0   397993    4990    3    4    0     0       0          0\n";

    #[test]
    fn dev_stats() {
        let s = parse_dev_stats(DEV, "eth0").unwrap();
        assert_eq!(
            json(&s),
            r#"{"rx-bytes": 296922782, "rx-packets": 9890, "rx-errs": 1, "rx-dropped": 2, "tx-bytes": 397993, "tx-packets": 4990, "tx-errs": 3, "tx-dropped": 4}"#
        );
        assert_eq!(parse_dev_stats(DEV, "lo").unwrap().tx_packets, 31);
        assert_eq!(parse_dev_stats(DEV, "eth"), None);
        assert_eq!(parse_dev_stats("x: 1 2 3\n", "x"), None);
    }

    #[test]
    fn assembly_order_and_fields() {
        let e = |n: &str, a: Option<(&str, GuestIpAddressType, i64)>| IfAddr {
            name: n.into(),
            addr: a.map(|(s, t, p)| (IpText(s.into(), t), p)),
        };
        let entries = [
            e("lo", None),
            e("eth0", None),
            e("ifb0", None),
            e("lo", Some(("127.0.0.1", GuestIpAddressType::Ipv4, 8))),
            e("eth0", Some(("192.0.2.2", GuestIpAddressType::Ipv4, 24))),
            e("lo", Some(("::1", GuestIpAddressType::Ipv6, 128))),
        ];
        let mut asked = Vec::new();
        let list = assemble(
            &entries,
            |n| {
                asked.push(n.to_string());
                match n {
                    "lo" => Some([0; 6]),
                    "eth0" => Some([2, 0xfc, 0, 0, 0, 1]),
                    _ => None,
                }
            },
            |n| parse_dev_stats(DEV, n),
        );
        assert_eq!(
            list.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            ["lo", "eth0", "ifb0"]
        );
        assert_eq!(
            list[0].hardware_address.as_deref(),
            Some("00:00:00:00:00:00")
        );
        assert_eq!(
            list[1].hardware_address.as_deref(),
            Some("02:fc:00:00:00:01")
        );
        assert_eq!(list[2].hardware_address, None);
        assert_eq!(list[0].ip_addresses.as_ref().unwrap().len(), 2);
        assert_eq!(list[2].ip_addresses, None);
        assert!(
            list[2].statistics.is_some(),
            "counters even without an address"
        );
        // Asked once for lo and eth0 (obtained), every time for ifb0 (never obtained).
        assert_eq!(asked, ["lo", "eth0", "ifb0"]);
    }

    const ROUTE: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t1500\t0\t0\n\
junk\n";

    const ROUTE6: &str = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 ffffffff 00000002 0000000a 80000003     eth0\n";

    #[test]
    fn ipv4_routes() {
        let r = parse_ipv4_routes(ROUTE);
        assert_eq!(r.len(), 2);
        assert_eq!(
            json(&r[0].borrowed()),
            r#"{"iface": "eth0", "destination": "0.0.0.0", "metric": 100, "gateway": "192.0.2.1", "mask": "0.0.0.0", "irtt": 0, "flags": 3, "refcnt": 0, "use": 0, "window": 0, "mtu": 0, "version": 4}"#
        );
        assert_eq!(r[1].destination, "192.0.2.0");
        assert_eq!(r[1].mask.as_deref(), Some("255.255.255.0"));
        assert_eq!(r[1].mtu, Some(1500));
    }

    #[test]
    fn ipv6_routes() {
        let r = parse_ipv6_routes(ROUTE6);
        assert_eq!(r.len(), 2);
        assert_eq!(
            json(&r[0].borrowed()),
            r#"{"iface": "eth0", "destination": "fd00::", "metric": 256, "flags": 1, "refcnt": 1, "use": 0, "desprefixlen": "64", "source": "::", "srcprefixlen": "0", "nexthop": "::", "version": 6}"#
        );
        assert_eq!(r[1].metric, -1);
        assert_eq!(r[1].flags, Some(0x8000_0003));
        assert_eq!(r[1].nexthop.as_deref(), Some("fd00::1"));
        assert_eq!(
            ntop6(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 3]),
            "::0.2.0.3"
        );
        assert_eq!(
            ntop6(&[
                0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0xfc, 0, 0xff, 0xfe, 0, 0, 1
            ]),
            "fe80::fc:ff:fe00:1"
        );
        assert_eq!(r[1].r#use, Some(10));
    }

    #[test]
    fn missing_ipv6_route_file_keeps_ipv4_routes() {
        let dir = crate::commands::system::tempdir();
        std::fs::write(dir.join("route"), ROUTE).unwrap();
        let mut n = LinuxNetwork {
            proc_net: dir.clone(),
        };
        let got = emitted(|o| n.routes(o)).unwrap();
        assert_eq!(got.len(), 2);
        std::fs::remove_file(dir.join("route")).unwrap();
        let e = emitted(|o| n.routes(o)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "open(\"{}/route\"): No such file or directory",
                dir.display()
            )
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn real_interfaces_include_loopback() {
        let got = emitted(|o| LinuxNetwork::default().interfaces(o)).unwrap();
        let lo = got
            .iter()
            .find(|j| j.starts_with(r#"{"name": "lo""#))
            .expect("lo listed");
        assert!(
            lo.contains(r#""hardware-address": "00:00:00:00:00:00""#),
            "{lo}"
        );
        assert!(
            lo.contains(r#"{"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8}"#),
            "{lo}"
        );
        assert!(lo.contains(r#""statistics": {"rx-bytes": "#), "{lo}");
        // Every interface the kernel lists is there, once.
        let names: Vec<String> = std::fs::read_dir("/sys/class/net")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        for n in &names {
            let tag = format!(r#"{{"name": "{n}""#);
            assert_eq!(got.iter().filter(|j| j.starts_with(&tag)).count(), 1, "{n}");
        }
    }

    #[test]
    fn real_routes_match_proc() {
        let got = emitted(|o| LinuxNetwork::default().routes(o)).unwrap();
        let v4 = std::fs::read_to_string("/proc/net/route")
            .unwrap()
            .lines()
            .count()
            - 1;
        let v6 = std::fs::read_to_string("/proc/net/ipv6_route")
            .map(|t| t.lines().count())
            .unwrap_or(0);
        assert_eq!(got.len(), v4 + v6);
        assert_eq!(
            got.iter()
                .filter(|r| r.ends_with(r#""version": 4}"#))
                .count(),
            v4
        );
    }
}
