//! `guest-network-get-interfaces` and `guest-network-get-route`.

use super::args::serve;
use crate::error::Result;
use crate::out::Emitter;
use crate::reply::Reply;
use crate::schema::Command;

pub(crate) fn run(
    cmd: Command,
    r: &mut Reply<'_, '_>,
    frame: &mut [u8],
    args: Option<usize>,
    b: &mut dyn Network,
) {
    let tape: &[u8] = frame;
    if !serve(r, tape, args) {
        return;
    }
    match cmd {
        Command::GuestNetworkGetInterfaces => r.list(tape, None, |e| b.interfaces(e)),
        _ => r.list(tape, None, |e| b.routes(e)),
    }
}

crate::json_enum! {
    /// `GuestIpAddressType`.
    pub enum GuestIpAddressType { Ipv4 = "ipv4", Ipv6 = "ipv6" }
}

#[allow(clippy::derivable_impls)] // the enum comes from json_enum!
impl Default for GuestIpAddressType {
    fn default() -> Self {
        GuestIpAddressType::Ipv4
    }
}

crate::json_struct! {
    /// `GuestIpAddress`.
    pub struct GuestIpAddress<'a> {
        pub ip_address: &'a str = "ip-address",
        pub ip_address_type: GuestIpAddressType = "ip-address-type",
        pub prefix: i64 = "prefix",
    }
}

crate::json_struct! {
    /// `GuestNetworkInterfaceStat`.
    pub struct GuestNetworkInterfaceStat {
        pub rx_bytes: u64 = "rx-bytes",
        pub rx_packets: u64 = "rx-packets",
        pub rx_errs: u64 = "rx-errs",
        pub rx_dropped: u64 = "rx-dropped",
        pub tx_bytes: u64 = "tx-bytes",
        pub tx_packets: u64 = "tx-packets",
        pub tx_errs: u64 = "tx-errs",
        pub tx_dropped: u64 = "tx-dropped",
    }
}

crate::json_struct! {
    /// `GuestNetworkInterface`.
    pub struct GuestNetworkInterface<'a> {
        pub name: &'a str = "name",
        pub hardware_address: Option<&'a str> = "hardware-address",
        pub ip_addresses: Option<&'a [GuestIpAddress<'a>]> = "ip-addresses",
        pub statistics: Option<GuestNetworkInterfaceStat> = "statistics",
    }
}

crate::json_struct! {
    /// `GuestNetworkRoute`.
    pub struct GuestNetworkRoute<'a> {
        pub iface: &'a str = "iface",
        pub destination: &'a str = "destination",
        pub metric: i64 = "metric",
        pub gateway: Option<&'a str> = "gateway",
        pub mask: Option<&'a str> = "mask",
        pub irtt: Option<i64> = "irtt",
        pub flags: Option<u64> = "flags",
        pub refcnt: Option<i64> = "refcnt",
        pub r#use: Option<i64> = "use",
        pub window: Option<i64> = "window",
        pub mtu: Option<i64> = "mtu",
        pub desprefixlen: Option<&'a str> = "desprefixlen",
        pub source: Option<&'a str> = "source",
        pub srcprefixlen: Option<&'a str> = "srcprefixlen",
        pub nexthop: Option<&'a str> = "nexthop",
        pub version: i64 = "version",
    }
}

/// Network interfaces and routes.
pub trait Network {
    /// Whether `cmd` (one of this family's) works here. Every method of this family is
    /// required ([the rule](super#guest-info-tells-the-truth)), so the default is all of them;
    /// override it only to refuse a command at run time.
    fn supports(&self, _cmd: Command) -> bool {
        true
    }

    /// `guest-network-get-interfaces`, one entry per interface name in first-seen order.
    fn interfaces(&mut self, out: &mut Emitter<'_, GuestNetworkInterface<'static>>) -> Result<()>;

    /// `guest-network-get-route`: IPv4 routes, then IPv6 routes.
    fn routes(&mut self, out: &mut Emitter<'_, GuestNetworkRoute<'static>>) -> Result<()>;
}
