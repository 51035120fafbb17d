//! `guest-get-time` and `guest-set-time`.

use super::args::{Member, OPTIONAL, Ty, serve, take};
use crate::error::Result;
use crate::reply::Reply;
use crate::schema::Command;

crate::args! {
    /// The arguments of `guest-set-time`.
    pub struct SetTimeArgs<'t> {
        time: Option<i64> = ("time", Ty::Int, OPTIONAL),
    }
}

pub(crate) fn members(cmd: Command) -> &'static [Member] {
    use super::args::Args as _;
    match cmd {
        Command::GuestSetTime => SetTimeArgs::MEMBERS,
        _ => &[],
    }
}

pub(crate) fn run(
    cmd: Command,
    r: &mut Reply<'_, '_>,
    frame: &mut [u8],
    args: Option<usize>,
    b: &mut dyn Clock,
) {
    let tape: &[u8] = frame;
    match cmd {
        Command::GuestSetTime => {
            let Some(a) = take::<SetTimeArgs<'_>>(r, tape, args) else {
                return;
            };
            if let Some(t) = a.time
                && let Err(text) = check_time(t)
            {
                return r.generic(tape, text);
            }
            let res = b.set_time(a.time);
            r.unit(tape, res, "Failed to set time to guest");
        }
        _ => {
            if !serve(r, tape, args) {
                return;
            }
            let res = b.get_time();
            r.result(tape, res, "");
        }
    }
}

/// The guest's clock. `get_time` is required; `set_time` is optional (see
/// [the `guest-info` rule](super#guest-info-tells-the-truth)): a clock that cannot be set
/// leaves it out.
///
/// A clock that can be set implements `set_time` and claims it in `supports`:
///
/// ```
/// use agent_core::Result;
/// use agent_core::commands::clock::Clock;
/// use agent_core::{Command, Platform, StaticBuffers, Transmit, TxError};
///
/// struct Rtc {
///     ns: i64,
/// }
/// impl Clock for Rtc {
///     fn supports(&self, cmd: Command) -> bool {
///         matches!(cmd, Command::GuestGetTime | Command::GuestSetTime)
///     }
///     fn get_time(&mut self) -> Result<i64> {
///         Ok(self.ns)
///     }
///     fn set_time(&mut self, time: Option<i64>) -> Result<()> {
///         // `None`: set the system clock from the hardware clock; this one is both.
///         if let Some(ns) = time {
///             self.ns = ns;
///         }
///         Ok(())
///     }
/// }
///
/// struct Board(Rtc);
/// impl Platform for Board {
///     fn clock(&mut self) -> Option<&mut dyn Clock> {
///         Some(&mut self.0)
///     }
/// }
///
/// struct Collect(Vec<u8>);
/// impl Transmit for Collect {
///     fn send(&mut self, bytes: &[u8]) -> core::result::Result<(), TxError> {
///         self.0.extend_from_slice(bytes);
///         Ok(())
///     }
/// }
///
/// let mut bufs: Box<StaticBuffers> = Box::default();
/// let mut agent = bufs.agent();
/// let (mut board, mut out) = (Board(Rtc { ns: 0 }), Collect(Vec::new()));
/// let requests = concat!(
///     r#"{"execute":"guest-set-time","arguments":{"time":1764979200000000000}}"#,
///     r#"{"execute":"guest-get-time"}"#,
///     r#"{"execute":"guest-set-time","arguments":{"time":-5000000000}}"#,
/// );
/// agent.feed(requests.as_bytes(), &mut board, &mut out)?;
/// assert_eq!(
///     String::from_utf8_lossy(&out.0),
///     concat!(
///         "{\"return\": {}}\n",
///         "{\"return\": 1764979200000000000}\n",
///         // Checked by the engine before the backend runs (upstream's year range).
///         "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Invalid time\"}}\n",
///     )
/// );
/// # Ok::<(), TxError>(())
/// ```
pub trait Clock {
    /// Whether `cmd` (one of this family's) works here: by default exactly the commands of
    /// the required methods ([the rule](super#guest-info-tells-the-truth)). Override it to
    /// claim an optional method you implement, or to refuse a command at run time.
    fn supports(&self, cmd: Command) -> bool {
        cmd == Command::GuestGetTime
    }

    /// `guest-get-time`: nanoseconds since the Unix epoch.
    fn get_time(&mut self) -> Result<i64>;

    /// `guest-set-time`: with `Some(ns)`, set the system clock (and the hardware clock from it);
    /// with `None`, set the system clock from the hardware clock. The engine has already
    /// applied [`check_time`].
    /// Optional.
    fn set_time(&mut self, time: Option<i64>) -> Result<()> {
        let _ = time;
        Err(crate::error::Error::Unsupported)
    }
}

/// Upstream's validation of a `guest-set-time` value: seconds (truncated toward zero) must
/// fall in a year from 1970 up to, not including, 2070. Returns upstream's text if not.
pub fn check_time(ns: i64) -> core::result::Result<(), &'static str> {
    // 2070-01-01T00:00:00Z is 3155760000 s after the epoch.
    let secs = ns / 1_000_000_000;
    if (0..3_155_760_000).contains(&secs) {
        Ok(())
    } else {
        Err("Invalid time")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn years() {
        assert!(super::check_time(0).is_ok());
        assert!(
            super::check_time(-1).is_ok(),
            "truncates toward zero as upstream"
        );
        assert!(super::check_time(-1_000_000_000).is_err());
        assert!(super::check_time(3_155_759_999_000_000_000).is_ok());
        assert!(super::check_time(3_155_760_000_000_000_000).is_err());
    }
}
