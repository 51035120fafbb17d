//! `guest-get-host-name`, `guest-get-timezone` and `guest-get-osinfo` on Linux.
//!
//! Upstream answers these through GLib (`g_time_zone_new_local`, `GKeyFile`); a static binary
//! has no GLib, so the same facts come from the kernel and libc: `uname` (whose node name is
//! what `gethostname` returns) and `localtime_r` (which reads `TZ` or `/etc/localtime` exactly
//! as GLib does, and fills `tm_zone`/`tm_gmtoff`; called through [`crate::sys::glibc`]). The os-release file is parsed here with GKeyFile's line rules and upstream's value
//! post-processing, except that single-quoted values are unquoted (see `DIFFERENCES.md`).
//!
//! This file also holds the small helpers the other information families share (`strerror`
//! texts, and a test sink that renders emitted elements as upstream's JSON).

// agent_core::Error carries its message inline (no allocation in the core), so every
// Result in these backends is as large as that message, by design.
#![allow(clippy::result_large_err)]

use std::path::PathBuf;

use agent_core::Error;
use agent_core::Result;
use agent_core::commands::system::{GuestOsInfo, GuestTimezone, System};

pub(crate) use crate::config::strerror;

/// The errno of an I/O error (EIO when it carries none).
pub(crate) fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// `error_setg_errno(errp, errno, "CONTEXT")`: `"CONTEXT: <strerror text>"`.
pub(crate) fn errno_msg(context: std::fmt::Arguments<'_>, e: &std::io::Error) -> Error {
    Error::msg(format_args!("{context}: {}", strerror(errno_of(e))))
}

/// The Linux system-facts backend.
#[derive(Debug, Default)]
pub struct LinuxSystem {
    host_name: String,
    zone: String,
    uname: [String; 3],
    os: OsRelease,
}

/// The os-release fields upstream reports, already post-processed.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct OsRelease {
    pub id: Option<String>,
    pub name: Option<String>,
    pub pretty_name: Option<String>,
    pub version: Option<String>,
    pub version_id: Option<String>,
    pub variant: Option<String>,
    pub variant_id: Option<String>,
}

impl System for LinuxSystem {
    fn host_name(&mut self) -> Result<&str> {
        self.host_name = host_name()?;
        Ok(&self.host_name)
    }

    fn timezone(&mut self) -> Result<GuestTimezone<'_>> {
        let (zone, offset) = local_zone()?;
        self.zone = zone;
        Ok(GuestTimezone {
            zone: Some(&self.zone),
            offset,
        })
    }

    fn osinfo(&mut self) -> Result<GuestOsInfo<'_>> {
        let u = rustix::system::uname();
        self.uname = [
            u.release().to_string_lossy().into_owned(),
            u.version().to_string_lossy().into_owned(),
            u.machine().to_string_lossy().into_owned(),
        ];
        self.os = read_os_release(std::env::var_os("QGA_OS_RELEASE").map(PathBuf::from));
        let o = &self.os;
        Ok(GuestOsInfo {
            kernel_release: Some(&self.uname[0]),
            kernel_version: Some(&self.uname[1]),
            machine: Some(&self.uname[2]),
            id: o.id.as_deref(),
            name: o.name.as_deref(),
            pretty_name: o.pretty_name.as_deref(),
            version: o.version.as_deref(),
            version_id: o.version_id.as_deref(),
            variant: o.variant.as_deref(),
            variant_id: o.variant_id.as_deref(),
        })
    }
}

/// The host name, uncached. Upstream calls `gethostname`, which glibc answers from
/// `uname(2)`'s node name (at most 64 bytes, so it always fits upstream's
/// `HOST_NAME_MAX + 1` buffer); rustix has no `gethostname` and reads the same field.
fn host_name() -> Result<String> {
    Ok(rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned())
}

/// The current zone abbreviation and UTC offset in seconds, from `localtime_r` (which honours
/// `TZ` and `/etc/localtime`, falling back to UTC, as GLib's local time zone does).
fn local_zone() -> Result<(String, i64)> {
    crate::sys::glibc::local_zone()
        .ok_or_else(|| Error::msg(format_args!("Couldn't retrieve local timezone")))
}

/// The os-release fields: from `explicit` (`QGA_OS_RELEASE`) if given, else
/// `/etc/os-release`, falling back to `/usr/lib/os-release`.
pub(crate) fn read_os_release(explicit: Option<PathBuf>) -> OsRelease {
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p],
        None => vec!["/etc/os-release".into(), "/usr/lib/os-release".into()],
    };
    for path in candidates {
        // A file that cannot be read, is not UTF-8 or does not parse counts as absent: the
        // next candidate is tried, and with none left no field is reported.
        let parsed = std::fs::read(&path)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| parse_os_release(&t));
        if let Some(os) = parsed {
            return os;
        }
    }
    OsRelease::default()
}

/// Parse os-release text as GKeyFile does with a `[os-release]` group prepended; `None` on a
/// line that is neither blank, a comment, a group header nor `key=value`.
pub(crate) fn parse_os_release(text: &str) -> Option<OsRelease> {
    let mut os = OsRelease::default();
    let mut in_group = true;
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let line = line.trim_start_matches([' ', '\t']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            // Another group: GKeyFile accepts "[name]" and only our group's keys count.
            let name = line.strip_prefix('[')?.trim_end().strip_suffix(']')?;
            in_group = name == "os-release";
            continue;
        }
        let (key, value) = line.split_once('=')?;
        let key = key.trim_end_matches([' ', '\t']);
        if key.is_empty() {
            return None;
        }
        if !in_group {
            continue;
        }
        let value = value.trim_start_matches([' ', '\t']);
        let slot = match key {
            "ID" => &mut os.id,
            "NAME" => &mut os.name,
            "PRETTY_NAME" => &mut os.pretty_name,
            "VERSION" => &mut os.version,
            "VERSION_ID" => &mut os.version_id,
            "VARIANT" => &mut os.variant,
            "VARIANT_ID" => &mut os.variant_id,
            _ => continue,
        };
        *slot = Some(replace_special(value));
    }
    Some(os)
}

/// Upstream's `ga_osrelease_replace_special`, with single quotes honoured: a double-quoted
/// value ends at the next unescaped `"` and `\$ \' \" \\ \`` are unescaped; a single-quoted
/// value ends at the next `'` with no escapes (upstream leaves single quotes in and cuts the
/// value at a space); an unquoted value is cut at the first space and the first `;`.
pub(crate) fn replace_special(value: &str) -> String {
    if let Some(rest) = value.strip_prefix('\'') {
        return rest.split('\'').next().unwrap_or("").to_string();
    }
    let Some(rest) = value.strip_prefix('"') else {
        let cut = value.find(' ').unwrap_or(value.len());
        let v = &value[..cut];
        let cut = v.find(';').unwrap_or(v.len());
        return v[..cut].to_string();
    };
    let mut out = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&n @ ('$' | '\'' | '"' | '\\' | '`')) => {
                    out.push(n);
                    chars.next();
                }
                _ => out.push('\\'),
            },
            '"' => break,
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod testing {
    //! Rendering emitted elements as the response would carry them.

    use agent_core::commands::{Element, Emitter, ItemSink};
    use agent_core::out::{Out, ToJson, Transmit, TxError};

    struct Collect(Vec<u8>);

    impl Transmit for Collect {
        fn send(&mut self, bytes: &[u8]) -> Result<(), TxError> {
            self.0.extend_from_slice(bytes);
            Ok(())
        }
    }

    /// A sink that renders each element to its own JSON string.
    #[derive(Default)]
    pub struct Rendered(pub Vec<String>);

    impl ItemSink for Rendered {
        fn item(&mut self, v: &dyn ToJson) {
            self.0.push(json(v));
        }
    }

    /// One value as JSON.
    pub fn json(v: &dyn ToJson) -> String {
        let mut sink = Collect(Vec::new());
        let mut buf = [0u8; 64];
        let mut out = Out::new(&mut buf, &mut sink);
        v.write_json(&mut out);
        out.flush();
        String::from_utf8(sink.0).unwrap()
    }

    /// Run `f` with an emitter and return the rendered elements.
    pub fn emitted<T: Element + ?Sized>(
        f: impl FnOnce(&mut Emitter<'_, T>) -> agent_core::Result<()>,
    ) -> agent_core::Result<Vec<String>> {
        let mut r = Rendered::default();
        let mut e = Emitter::new(&mut r);
        f(&mut e)?;
        Ok(r.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strerror_texts() {
        assert_eq!(strerror(libc::ENOENT), "No such file or directory");
        assert_eq!(strerror(0), "Success");
    }

    #[test]
    fn os_release_values_like_upstream() {
        let text = "# comment\n\
            NAME=\"Debian GNU/Linux\"\n\
            VERSION=\"12 (bookworm)\"\n\
            ID=debian\n\
            PRETTY_NAME=\"A \\\"quoted\\\" \\$name\\q\"\n\
            VERSION_ID=12 trailing;junk\n\
            VARIANT='Server Edition'\n\
            VARIANT_ID=a;b\n\
            \n";
        let os = parse_os_release(text).unwrap();
        assert_eq!(os.name.as_deref(), Some("Debian GNU/Linux"));
        assert_eq!(os.version.as_deref(), Some("12 (bookworm)"));
        assert_eq!(os.id.as_deref(), Some("debian"));
        assert_eq!(os.pretty_name.as_deref(), Some("A \"quoted\" $name\\q"));
        assert_eq!(os.version_id.as_deref(), Some("12"));
        assert_eq!(os.variant.as_deref(), Some("Server Edition"));
        assert_eq!(os.variant_id.as_deref(), Some("a"));
    }

    #[test]
    fn os_release_parse_failure_drops_every_field() {
        assert_eq!(parse_os_release("ID=x\nnot a pair\n"), None);
        assert_eq!(parse_os_release("=x\n"), None);
        assert_eq!(
            parse_os_release("ID=x\n[other]\nNAME=y\n").unwrap().name,
            None
        );
    }

    #[test]
    fn os_release_env_file_and_missing_file() {
        let dir = tempdir();
        let p = dir.join("os-release");
        std::fs::write(&p, "ID=testos\nVERSION_ID=\"1.0\"\n").unwrap();
        let os = read_os_release(Some(p.clone()));
        assert_eq!(os.id.as_deref(), Some("testos"));
        assert_eq!(os.version_id.as_deref(), Some("1.0"));
        assert_eq!(os.name, None);
        assert_eq!(
            read_os_release(Some(dir.join("missing"))),
            OsRelease::default()
        );
        std::fs::write(&p, b"ID=\xff\n").unwrap();
        assert_eq!(read_os_release(Some(p)), OsRelease::default());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn osinfo_matches_uname_and_os_release() {
        let mut s = LinuxSystem::default();
        let info = s.osinfo().unwrap();
        let release = std::process::Command::new("uname")
            .arg("-r")
            .output()
            .unwrap();
        let release = String::from_utf8(release.stdout).unwrap();
        assert_eq!(info.kernel_release, Some(release.trim()));
        let machine = std::process::Command::new("uname")
            .arg("-m")
            .output()
            .unwrap();
        assert_eq!(
            info.machine,
            Some(String::from_utf8(machine.stdout).unwrap().trim())
        );
        if std::env::var_os("QGA_OS_RELEASE").is_none() {
            let expect = read_os_release(Some("/etc/os-release".into()));
            assert_eq!(info.id, expect.id.as_deref());
        }
    }

    #[test]
    fn host_name_matches_the_kernel() {
        let mut s = LinuxSystem::default();
        let want = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(s.host_name().unwrap(), want.trim_end());
    }

    #[test]
    fn timezone_is_consistent_with_date() {
        let mut s = LinuxSystem::default();
        let tz = s.timezone().unwrap();
        let out = std::process::Command::new("date")
            .arg("+%Z %z")
            .output()
            .unwrap();
        let out = String::from_utf8(out.stdout).unwrap();
        let (zone, off) = out.trim().split_once(' ').unwrap();
        assert_eq!(tz.zone, Some(zone));
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let hh: i64 = off[1..3].parse().unwrap();
        let mm: i64 = off[3..5].parse().unwrap();
        assert_eq!(tz.offset, sign * (hh * 3600 + mm * 60));
    }

    /// A fresh directory under the system temp dir, unique per call.
    pub(crate) fn tempdir() -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "qga-linux-b-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

#[cfg(test)]
#[allow(unused_imports)]
pub(crate) use tests::tempdir;
