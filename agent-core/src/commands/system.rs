//! `guest-get-host-name`, `guest-get-timezone`, `guest-get-osinfo` and `guest-get-devices`.

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
    b: &mut dyn System,
) {
    let tape: &[u8] = frame;
    if !serve(r, tape, args) {
        return;
    }
    match cmd {
        Command::GuestGetHostName => match b.host_name() {
            Ok(name) => r.ok(tape, |o| {
                o.object(|w| {
                    w.member("host-name", name);
                })
            }),
            Err(e) => r.fail(tape, &e, ""),
        },
        Command::GuestGetTimezone => {
            let res = b.timezone();
            r.result(tape, res, "");
        }
        Command::GuestGetOsinfo => {
            let res = b.osinfo();
            r.result(tape, res, "");
        }
        _ => r.list(tape, None, |e| b.devices(e)),
    }
}

crate::json_struct! {
    /// `GuestTimezone`.
    pub struct GuestTimezone<'a> {
        pub zone: Option<&'a str> = "zone",
        pub offset: i64 = "offset",
    }
}

crate::json_struct! {
    /// `GuestOSInfo`.
    pub struct GuestOsInfo<'a> {
        pub kernel_release: Option<&'a str> = "kernel-release",
        pub kernel_version: Option<&'a str> = "kernel-version",
        pub machine: Option<&'a str> = "machine",
        pub id: Option<&'a str> = "id",
        pub name: Option<&'a str> = "name",
        pub pretty_name: Option<&'a str> = "pretty-name",
        pub version: Option<&'a str> = "version",
        pub version_id: Option<&'a str> = "version-id",
        pub variant: Option<&'a str> = "variant",
        pub variant_id: Option<&'a str> = "variant-id",
    }
}

crate::json_struct! {
    /// `GuestDeviceIdPCI` with its flat-union tag `"type": "pci"`.
    pub struct GuestDeviceIdPci {
        pub r#type: &'static str = "type",
        pub vendor_id: u64 = "vendor-id",
        pub device_id: u64 = "device-id",
    }
}

crate::json_struct! {
    /// `GuestDeviceInfo` (upstream serves it on Windows only).
    pub struct GuestDeviceInfo<'a> {
        pub driver_name: &'a str = "driver-name",
        pub driver_date: Option<i64> = "driver-date",
        pub driver_version: Option<&'a str> = "driver-version",
        pub id: Option<GuestDeviceIdPci> = "id",
    }
}

/// Facts about the system. `devices` is optional, the others are required
/// ([the `guest-info` rule](super#guest-info-tells-the-truth)).
pub trait System {
    /// Whether `cmd` (one of this family's) works here: by default exactly the commands of
    /// the required methods ([the rule](super#guest-info-tells-the-truth)). Override it to
    /// claim an optional method you implement, or to refuse a command at run time.
    fn supports(&self, cmd: Command) -> bool {
        cmd != Command::GuestGetDevices
    }

    /// `guest-get-host-name`.
    fn host_name(&mut self) -> Result<&str>;

    /// `guest-get-timezone`.
    fn timezone(&mut self) -> Result<GuestTimezone<'_>>;

    /// `guest-get-osinfo`.
    fn osinfo(&mut self) -> Result<GuestOsInfo<'_>>;

    /// `guest-get-devices`. Optional.
    fn devices(&mut self, _out: &mut Emitter<'_, GuestDeviceInfo<'static>>) -> Result<()> {
        Err(crate::error::Error::Unsupported)
    }
}
