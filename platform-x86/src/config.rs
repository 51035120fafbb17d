//! Settings, from the build environment and from the kernel command line.
//!
//! A bare-metal image has no configuration file, so each setting has a build-time default
//! (an environment variable read by `option_env!` when the image is compiled) which the kernel
//! command line (`-append` in QEMU) overrides at boot. Command-line options are
//! `qga.<name>=<value>` separated by spaces; a value may be double-quoted to hold spaces
//! (`qga.os.pretty-name="Bare metal 1.0"`). Unknown words are ignored, as a kernel does.
//!
//! | option | build-time variable | meaning |
//! |---|---|---|
//! | `qga.transport=auto\|vsock\|virtio\|com1\|com2` | `QGA_TRANSPORT` | the agent channel; `auto` (default) is vsock if a virtio socket device exists, else the virtio-console port if a virtio-serial device exists (each on PCI, else virtio-mmio), else COM1 |
//! | `qga.vsock_port=N` | `QGA_VSOCK_PORT` | the vsock port listened on (default 1234) |
//! | `qga.log=auto\|com1\|com2\|off` | | the debug log; `auto` is COM2 when the agent is on COM1, else COM1 |
//! | `qga.hostname=` | `QGA_HOSTNAME` | `guest-get-host-name` (default `qga-baremetal`) |
//! | `qga.os.id=`, `qga.os.name=`, `qga.os.pretty-name=`, `qga.os.version=`, `qga.os.version-id=`, `qga.os.variant=`, `qga.os.variant-id=` | `QGA_OS_ID`, `QGA_OS_NAME`, ... | `guest-get-osinfo` |
//! | `qga.block=cmd,cmd` | | commands to disable (`guest-info` shows them disabled) |
//! | `qga.selftest` | | run the self-tests, report through isa-debug-exit and stop |
//! | `qga.crash` | | execute an invalid instruction after set-up (tests the CPU exception report: exit status 35) |
//!
//! `QGA_CMDLINE` at build time holds default options in the same syntax, read before the real
//! command line.

/// Which device carries the agent protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Vsock if present, else virtio-serial if present, else COM1.
    Auto,
    /// The first 16550 (I/O port 0x3F8).
    Com1,
    /// The second 16550 (I/O port 0x2F8).
    Com2,
    /// The virtio-console port named `org.qemu.guest_agent.0`.
    Virtio,
    /// A virtio socket device, listening on [`Config::vsock_port`].
    Vsock,
}

impl Transport {
    /// The option value naming it.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Auto => "auto",
            Transport::Com1 => "com1",
            Transport::Com2 => "com2",
            Transport::Virtio => "virtio",
            Transport::Vsock => "vsock",
        }
    }

    /// Parse a name.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Transport::Auto),
            "com1" | "ttyS0" => Some(Transport::Com1),
            "com2" | "ttyS1" => Some(Transport::Com2),
            "virtio" | "virtio-serial" => Some(Transport::Virtio),
            "vsock" => Some(Transport::Vsock),
            _ => None,
        }
    }
}

/// Where the debug log goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogTarget {
    /// The COM port the agent does not use.
    Auto,
    /// COM1.
    Com1,
    /// COM2.
    Com2,
    /// Nowhere.
    Off,
}

/// The effective settings. Strings borrow the command line or the build-time constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config<'a> {
    /// The agent channel.
    pub transport: Transport,
    /// The log channel.
    pub log: LogTarget,
    /// The vsock port the agent listens on.
    pub vsock_port: u32,
    /// `guest-get-host-name`.
    pub hostname: &'a str,
    /// `guest-get-osinfo` `id`.
    pub os_id: &'a str,
    /// `name`.
    pub os_name: &'a str,
    /// `pretty-name`.
    pub os_pretty_name: &'a str,
    /// `version`.
    pub os_version: &'a str,
    /// `version-id`.
    pub os_version_id: &'a str,
    /// `variant` (absent if empty).
    pub os_variant: &'a str,
    /// `variant-id` (absent if empty).
    pub os_variant_id: &'a str,
    /// Comma-separated commands to disable.
    pub block: &'a str,
    /// Run the self-tests instead of the agent.
    pub selftest: bool,
    /// Execute an invalid instruction once set up (`qga.crash`): tests the exception path.
    pub crash: bool,
}

macro_rules! build_env {
    ($name:literal, $default:expr) => {
        match option_env!($name) {
            Some(v) => v,
            None => $default,
        }
    };
}

impl Config<'static> {
    /// The build-time defaults.
    pub const fn built_in() -> Self {
        let transport = match option_env!("QGA_TRANSPORT") {
            Some(t) => parse_transport_const(t),
            None => Transport::Auto,
        };
        Config {
            transport,
            log: LogTarget::Auto,
            vsock_port: match option_env!("QGA_VSOCK_PORT") {
                Some(p) => parse_u32_const(p, DEFAULT_VSOCK_PORT),
                None => DEFAULT_VSOCK_PORT,
            },
            hostname: build_env!("QGA_HOSTNAME", "qga-baremetal"),
            os_id: build_env!("QGA_OS_ID", "qga-baremetal"),
            os_name: build_env!("QGA_OS_NAME", "QGA bare metal"),
            os_pretty_name: build_env!(
                "QGA_OS_PRETTY_NAME",
                concat!("QGA bare metal ", env!("CARGO_PKG_VERSION"))
            ),
            os_version: build_env!("QGA_OS_VERSION", env!("CARGO_PKG_VERSION")),
            os_version_id: build_env!("QGA_OS_VERSION_ID", env!("CARGO_PKG_VERSION")),
            os_variant: build_env!("QGA_OS_VARIANT", ""),
            os_variant_id: build_env!("QGA_OS_VARIANT_ID", ""),
            block: "",
            selftest: false,
            crash: false,
        }
    }
}

const fn parse_transport_const(s: &str) -> Transport {
    match s.as_bytes() {
        b"com1" => Transport::Com1,
        b"com2" => Transport::Com2,
        b"virtio" => Transport::Virtio,
        b"vsock" => Transport::Vsock,
        _ => Transport::Auto,
    }
}

/// The vsock port listened on unless configured.
pub const DEFAULT_VSOCK_PORT: u32 = 1234;

/// A decimal `u32` at compile time (`default` if it is not one).
const fn parse_u32_const(s: &str, default: u32) -> u32 {
    let mut b = s.as_bytes();
    if b.is_empty() {
        return default;
    }
    let mut v: u64 = 0;
    while let [d, rest @ ..] = b {
        if !d.is_ascii_digit() {
            return default;
        }
        v = v * 10 + (*d - b'0') as u64;
        if v > u32::MAX as u64 {
            return default;
        }
        b = rest;
    }
    v as u32
}

/// The build-time default options (`QGA_CMDLINE`).
pub const BUILD_CMDLINE: &str = build_env!("QGA_CMDLINE", "");

impl<'a> Config<'a> {
    /// Apply the options found in `cmdline` on top of `self`.
    pub fn apply(mut self, cmdline: &'a str) -> Self {
        for (key, value) in words(cmdline) {
            let Some(key) = key.strip_prefix("qga.") else {
                continue;
            };
            let Some(v) = value else {
                self.selftest |= key == "selftest";
                self.crash |= key == "crash";
                continue;
            };
            let field = match key {
                "transport" => {
                    self.transport = Transport::from_name(v).unwrap_or(self.transport);
                    continue;
                }
                "log" => {
                    self.log = match v {
                        "com1" => LogTarget::Com1,
                        "com2" => LogTarget::Com2,
                        "off" | "none" => LogTarget::Off,
                        _ => LogTarget::Auto,
                    };
                    continue;
                }
                "vsock_port" => {
                    self.vsock_port = v.parse().unwrap_or(self.vsock_port);
                    continue;
                }
                "selftest" => {
                    self.selftest = !matches!(v, "0" | "off" | "no");
                    continue;
                }
                "hostname" => &mut self.hostname,
                "block" => &mut self.block,
                _ => match key.strip_prefix("os.") {
                    Some("id") => &mut self.os_id,
                    Some("name") => &mut self.os_name,
                    Some("pretty-name") => &mut self.os_pretty_name,
                    Some("version") => &mut self.os_version,
                    Some("version-id") => &mut self.os_version_id,
                    Some("variant") => &mut self.os_variant,
                    Some("variant-id") => &mut self.os_variant_id,
                    _ => continue,
                },
            };
            *field = v;
        }
        self
    }
}

/// The `key[=value]` words of a command line; a value may be double-quoted.
///
/// Scans bytes: every delimiter is ASCII, so every cut lands on a character boundary.
pub fn words(s: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    let b = s.as_bytes();
    let mut i = 0;
    let space = |c: u8| c == b' ' || c == b'\t' || c == b'\n';
    let cut = move |from: usize, to: usize| s.get(from..to).unwrap_or("");
    core::iter::from_fn(move || {
        while b.get(i).is_some_and(|&c| space(c)) {
            i += 1;
        }
        if i >= b.len() {
            return None;
        }
        let start = i;
        while b.get(i).is_some_and(|&c| !space(c) && c != b'=') {
            i += 1;
        }
        let key = cut(start, i);
        if b.get(i) != Some(&b'=') {
            return Some((key, None));
        }
        i += 1;
        let quoted = b.get(i) == Some(&b'"');
        if quoted {
            i += 1;
        }
        let vstart = i;
        while b
            .get(i)
            .is_some_and(|&c| if quoted { c != b'"' } else { !space(c) })
        {
            i += 1;
        }
        let value = cut(vstart, i);
        if quoted && i < b.len() {
            i += 1; // the closing quote
        }
        Some((key, Some(value)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_words_and_quotes() {
        let w: Vec<_> = words(r#" a=1  b  c="x y" d="" e= f"#).collect();
        assert_eq!(
            w,
            vec![
                ("a", Some("1")),
                ("b", None),
                ("c", Some("x y")),
                ("d", Some("")),
                ("e", Some("")),
                ("f", None)
            ]
        );
        let w: Vec<_> = words(r#"k="unterminated value"#).collect();
        assert_eq!(w, vec![("k", Some("unterminated value"))]);
    }

    #[test]
    fn command_line_overrides_build_time() {
        let c = Config::built_in().apply(
            r#"console=ttyS0 qga.transport=virtio qga.hostname=node-7 qga.os.pretty-name="Fw 2" qga.selftest qga.block=guest-ping"#,
        );
        assert_eq!(c.transport, Transport::Virtio);
        assert_eq!(c.hostname, "node-7");
        assert_eq!(c.os_pretty_name, "Fw 2");
        assert!(c.selftest);
        assert_eq!(c.block, "guest-ping");
        assert_eq!(c.vsock_port, DEFAULT_VSOCK_PORT);
        let v = Config::built_in().apply("qga.transport=vsock qga.vsock_port=5000");
        assert_eq!((v.transport, v.vsock_port), (Transport::Vsock, 5000));
        let w = v.apply("qga.vsock_port=-1 qga.vsock_port=x");
        assert_eq!(w.vsock_port, 5000, "a bad port is ignored");
        assert_eq!(parse_u32_const("4294967296", 7), 7);
        assert_eq!(parse_u32_const("52", 7), 52);
        let d = Config::built_in().apply("qga.transport=bogus qga.log=off");
        assert_eq!(
            d.transport,
            Config::built_in().transport,
            "an unknown value is ignored"
        );
        assert_eq!(d.log, LogTarget::Off);
        assert_eq!(d.hostname, "qga-baremetal");
    }
}
