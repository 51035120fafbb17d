//! `guest-get-vcpus`, `guest-set-vcpus`, `guest-get-cpustats` and `guest-get-load`.

use super::args::{Elem, Member, REQUIRED, Ty};
use super::args::{List, serve, take};
use crate::error::Result;
use crate::out::Emitter;
use crate::reply::Reply;
use crate::schema::Command;

crate::args! {
    /// The arguments of `guest-set-vcpus`.
    pub struct SetVcpusArgs<'t> {
        vcpus: List<'t, GuestLogicalProcessor> = ("vcpus", Ty::List(Elem::Struct(GuestLogicalProcessor::MEMBERS)), REQUIRED),
    }
}

pub(crate) fn members(cmd: Command) -> &'static [Member] {
    use super::args::Args as _;
    match cmd {
        Command::GuestSetVcpus => SetVcpusArgs::MEMBERS,
        _ => &[],
    }
}

pub(crate) fn run(
    cmd: Command,
    r: &mut Reply<'_, '_>,
    frame: &mut [u8],
    args: Option<usize>,
    b: &mut dyn Cpus,
) {
    let tape: &[u8] = frame;
    match cmd {
        Command::GuestGetVcpus => {
            if !serve(r, tape, args) {
                return;
            }
            r.list(tape, None, |e| b.vcpus(e))
        }
        Command::GuestSetVcpus => {
            let Some(a) = take::<SetVcpusArgs<'_>>(r, tape, args) else {
                return;
            };
            let res = b.set_vcpus(a.vcpus);
            r.result(tape, res, "");
        }
        Command::GuestGetCpustats => {
            if !serve(r, tape, args) {
                return;
            }
            r.list(tape, None, |e| b.cpustats(e))
        }
        _ => {
            if !serve(r, tape, args) {
                return;
            }
            let res = b.load();
            r.result(tape, res, "");
        }
    }
}

crate::wire_struct! {
    /// `GuestLogicalProcessor`: returned by `guest-get-vcpus` and taken by `guest-set-vcpus`.
    pub struct GuestLogicalProcessor {
        pub logical_id: i64 = "logical-id",
        pub online: bool = "online",
        pub can_offline: Option<bool> = "can-offline",
    }
}

crate::json_struct! {
    /// `GuestLinuxCpuStats`, written flat with `"type": "linux"` as upstream's flat union
    /// `GuestCpuStats` is. Values are milliseconds.
    pub struct GuestLinuxCpuStats {
        pub r#type: &'static str = "type",
        pub cpu: i64 = "cpu",
        pub user: u64 = "user",
        pub nice: u64 = "nice",
        pub system: u64 = "system",
        pub idle: u64 = "idle",
        pub iowait: Option<u64> = "iowait",
        pub irq: Option<u64> = "irq",
        pub softirq: Option<u64> = "softirq",
        pub steal: Option<u64> = "steal",
        pub guest: Option<u64> = "guest",
        pub guestnice: Option<u64> = "guestnice",
    }
}

crate::json_struct! {
    /// `GuestLoadAverage`.
    pub struct GuestLoadAverage {
        pub load1m: f64 = "load1m",
        pub load5m: f64 = "load5m",
        pub load15m: f64 = "load15m",
    }
}

/// Virtual CPUs and their statistics. `vcpus` is required; the others are optional
/// ([the `guest-info` rule](super#guest-info-tells-the-truth)).
pub trait Cpus {
    /// Whether `cmd` (one of this family's) works here: by default exactly the commands of
    /// the required methods ([the rule](super#guest-info-tells-the-truth)). Override it to
    /// claim an optional method you implement, or to refuse a command at run time.
    fn supports(&self, cmd: Command) -> bool {
        cmd == Command::GuestGetVcpus
    }

    /// `guest-get-vcpus`.
    fn vcpus(&mut self, out: &mut Emitter<'_, GuestLogicalProcessor>) -> Result<()>;

    /// `guest-set-vcpus`: apply in order, stop at the first failure; the number processed, or
    /// the error if the first one failed.
    /// Optional.
    fn set_vcpus(&mut self, vcpus: List<'_, GuestLogicalProcessor>) -> Result<i64> {
        let _ = vcpus;
        Err(crate::error::Error::Unsupported)
    }

    /// `guest-get-cpustats` (set `type` to `"linux"`).
    /// Optional.
    fn cpustats(&mut self, out: &mut Emitter<'_, GuestLinuxCpuStats>) -> Result<()> {
        let _ = out;
        Err(crate::error::Error::Unsupported)
    }

    /// `guest-get-load`.
    /// Optional.
    fn load(&mut self) -> Result<GuestLoadAverage> {
        Err(crate::error::Error::Unsupported)
    }
}
