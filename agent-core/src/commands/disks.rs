//! `guest-get-fsinfo`, `guest-get-disks` and `guest-get-diskstats`.

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
    b: &mut dyn Disks,
) {
    let tape: &[u8] = frame;
    if !serve(r, tape, args) {
        return;
    }
    match cmd {
        Command::GuestGetFsinfo => r.list(tape, None, |e| b.fsinfo(e)),
        Command::GuestGetDisks => r.list(tape, None, |e| b.disks(e)),
        _ => r.list(tape, None, |e| b.diskstats(e)),
    }
}

crate::json_enum! {
    /// `GuestDiskBusType`.
    pub enum GuestDiskBusType {
        Ide = "ide", Fdc = "fdc", Scsi = "scsi", Virtio = "virtio", Xen = "xen", Usb = "usb",
        Uml = "uml", Sata = "sata", Sd = "sd", Unknown = "unknown", Ieee1394 = "ieee1394",
        Ssa = "ssa", Fibre = "fibre", Raid = "raid", Iscsi = "iscsi", Sas = "sas", Mmc = "mmc",
        Virtual = "virtual", FileBackedVirtual = "file-backed-virtual", Nvme = "nvme",
    }
}

#[allow(clippy::derivable_impls)] // the enum comes from json_enum!
impl Default for GuestDiskBusType {
    fn default() -> Self {
        GuestDiskBusType::Unknown
    }
}

crate::json_struct! {
    /// `GuestPCIAddress`.
    pub struct GuestPciAddress {
        pub domain: i64 = "domain",
        pub bus: i64 = "bus",
        pub slot: i64 = "slot",
        pub function: i64 = "function",
    }
}

crate::json_struct! {
    /// `GuestCCWAddress`.
    pub struct GuestCcwAddress {
        pub cssid: i64 = "cssid",
        pub ssid: i64 = "ssid",
        pub subchno: i64 = "subchno",
        pub devno: i64 = "devno",
    }
}

crate::json_struct! {
    /// `GuestDiskAddress`.
    pub struct GuestDiskAddress<'a> {
        pub pci_controller: GuestPciAddress = "pci-controller",
        pub bus_type: GuestDiskBusType = "bus-type",
        pub bus: i64 = "bus",
        pub target: i64 = "target",
        pub unit: i64 = "unit",
        pub serial: Option<&'a str> = "serial",
        pub dev: Option<&'a str> = "dev",
        pub ccw_address: Option<GuestCcwAddress> = "ccw-address",
    }
}

crate::json_struct! {
    /// `GuestNVMeSmart`, written flat with `"type": "nvme"` as upstream's flat union
    /// `GuestDiskSmart` is.
    pub struct GuestNvmeSmart {
        pub r#type: GuestDiskBusType = "type",
        pub critical_warning: i64 = "critical-warning",
        pub temperature: i64 = "temperature",
        pub available_spare: i64 = "available-spare",
        pub available_spare_threshold: i64 = "available-spare-threshold",
        pub percentage_used: i64 = "percentage-used",
        pub data_units_read_lo: u64 = "data-units-read-lo",
        pub data_units_read_hi: u64 = "data-units-read-hi",
        pub data_units_written_lo: u64 = "data-units-written-lo",
        pub data_units_written_hi: u64 = "data-units-written-hi",
        pub host_read_commands_lo: u64 = "host-read-commands-lo",
        pub host_read_commands_hi: u64 = "host-read-commands-hi",
        pub host_write_commands_lo: u64 = "host-write-commands-lo",
        pub host_write_commands_hi: u64 = "host-write-commands-hi",
        pub controller_busy_time_lo: u64 = "controller-busy-time-lo",
        pub controller_busy_time_hi: u64 = "controller-busy-time-hi",
        pub power_cycles_lo: u64 = "power-cycles-lo",
        pub power_cycles_hi: u64 = "power-cycles-hi",
        pub power_on_hours_lo: u64 = "power-on-hours-lo",
        pub power_on_hours_hi: u64 = "power-on-hours-hi",
        pub unsafe_shutdowns_lo: u64 = "unsafe-shutdowns-lo",
        pub unsafe_shutdowns_hi: u64 = "unsafe-shutdowns-hi",
        pub media_errors_lo: u64 = "media-errors-lo",
        pub media_errors_hi: u64 = "media-errors-hi",
        pub number_of_error_log_entries_lo: u64 = "number-of-error-log-entries-lo",
        pub number_of_error_log_entries_hi: u64 = "number-of-error-log-entries-hi",
    }
}

crate::json_struct! {
    /// `GuestDiskInfo`.
    pub struct GuestDiskInfo<'a> {
        pub name: &'a str = "name",
        pub partition: bool = "partition",
        pub dependencies: Option<&'a [&'a str]> = "dependencies",
        pub address: Option<GuestDiskAddress<'a>> = "address",
        pub alias: Option<&'a str> = "alias",
        pub smart: Option<GuestNvmeSmart> = "smart",
    }
}

crate::json_struct! {
    /// `GuestFilesystemInfo`.
    pub struct GuestFilesystemInfo<'a> {
        pub name: &'a str = "name",
        pub mountpoint: &'a str = "mountpoint",
        pub r#type: &'a str = "type",
        pub used_bytes: Option<u64> = "used-bytes",
        pub total_bytes: Option<u64> = "total-bytes",
        pub total_bytes_privileged: Option<u64> = "total-bytes-privileged",
        pub disk: &'a [GuestDiskAddress<'a>] = "disk",
    }
}

crate::json_struct! {
    /// `GuestDiskStats`.
    pub struct GuestDiskStats {
        pub read_sectors: Option<u64> = "read-sectors",
        pub read_ios: Option<u64> = "read-ios",
        pub read_merges: Option<u64> = "read-merges",
        pub write_sectors: Option<u64> = "write-sectors",
        pub write_ios: Option<u64> = "write-ios",
        pub write_merges: Option<u64> = "write-merges",
        pub discard_sectors: Option<u64> = "discard-sectors",
        pub discard_ios: Option<u64> = "discard-ios",
        pub discard_merges: Option<u64> = "discard-merges",
        pub flush_ios: Option<u64> = "flush-ios",
        pub read_ticks: Option<u64> = "read-ticks",
        pub write_ticks: Option<u64> = "write-ticks",
        pub discard_ticks: Option<u64> = "discard-ticks",
        pub flush_ticks: Option<u64> = "flush-ticks",
        pub ios_pgr: Option<u64> = "ios-pgr",
        pub total_ticks: Option<u64> = "total-ticks",
        pub weight_ticks: Option<u64> = "weight-ticks",
    }
}

crate::json_struct! {
    /// `GuestDiskStatsInfo`.
    pub struct GuestDiskStatsInfo<'a> {
        pub name: &'a str = "name",
        pub major: u64 = "major",
        pub minor: u64 = "minor",
        pub stats: GuestDiskStats = "stats",
    }
}

/// Block devices and the filesystems on them.
pub trait Disks {
    /// Whether `cmd` (one of this family's) works here. Every method of this family is
    /// required ([the rule](super#guest-info-tells-the-truth)), so the default is all of them;
    /// override it only to refuse a command at run time.
    fn supports(&self, _cmd: Command) -> bool {
        true
    }

    /// `guest-get-fsinfo`, in upstream's order (reverse mount order).
    fn fsinfo(&mut self, out: &mut Emitter<'_, GuestFilesystemInfo<'static>>) -> Result<()>;

    /// `guest-get-disks`, in upstream's order.
    fn disks(&mut self, out: &mut Emitter<'_, GuestDiskInfo<'static>>) -> Result<()>;

    /// `guest-get-diskstats`, in `/proc/diskstats` order.
    fn diskstats(&mut self, out: &mut Emitter<'_, GuestDiskStatsInfo<'static>>) -> Result<()>;
}
