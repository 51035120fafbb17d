//! Command line and config file, as upstream master's `config_parse`, `config_load` and
//! `config_dump` (docs/protocol.md §3.1 and §3.2).
//!
//! `qga` replaces `qemu-ga` in unit files, init scripts and libvirt hooks that were written for
//! upstream, so the options are parsed by a small GNU `getopt_long` of our own rather than by a
//! crate: upstream's behaviour depends on getopt details that argument crates do not reproduce
//! (an optional argument that must be attached, `-F/path` but not `-F /path`; long-option
//! abbreviations such as `--meth`; permutation of operands; `-b` accumulating across repeats
//! and the config file; the config file read in a first pass so that the command line overrides
//! it). Everything here is pure: it takes the arguments, the environment's `QGA_CONF` and a
//! file reader, and returns what to do, so it is unit-tested without a process.

use std::ffi::OsString;
use std::io;

use agent_core::schema::Command;

use crate::keyfile::{self, KeyFile};

/// Our version, printed by `-V` and reported by `guest-info`. It is this project's own version
/// rather than a QEMU version: `-V` keeps upstream's `QEMU Guest Agent <version>` shape so that
/// scripts matching that prefix keep working.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// `QGA_VIRTIO_PATH_DEFAULT`.
pub const VIRTIO_PATH_DEFAULT: &str = "/dev/virtio-ports/org.qemu.guest_agent.0";
/// `QGA_SERIAL_PATH_DEFAULT`.
pub const SERIAL_PATH_DEFAULT: &str = "/dev/ttyS0";
/// `QGA_FSFREEZE_HOOK_DEFAULT`.
pub const FSFREEZE_HOOK_DEFAULT: &str = "/etc/qemu/fsfreeze-hook";
/// `QGA_CONF_DEFAULT`.
pub const CONF_DEFAULT: &str = "/etc/qemu/qemu-ga.conf";
/// The default state directory.
pub const STATEDIR_DEFAULT: &str = "/var/run";
/// The default pid file.
pub const PIDFILE_DEFAULT: &str = "/var/run/qemu-ga.pid";

/// The effective configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// `-d`, `daemon`.
    pub daemonize: bool,
    /// `-m`, `method`; defaulted to `virtio-serial` by [`parse`].
    pub method: String,
    /// `-p`, `path`; defaulted per method by [`parse`] (absent with socket activation).
    pub path: Option<String>,
    /// `-l`, `logfile`.
    pub logfile: Option<String>,
    /// `-f`, `pidfile`.
    pub pidfile: String,
    /// `-F`, `fsfreeze-hook`.
    pub fsfreeze_hook: Option<String>,
    /// `-t`, `statedir`.
    pub statedir: String,
    /// `-v`, `verbose`.
    pub verbose: bool,
    /// `-r`, `retry-path`.
    pub retry_path: bool,
    /// `-b`, `block-rpcs`, in upstream's (reversed per option) order, unknown names kept.
    pub blocked: Vec<String>,
    /// `-a`, `allow-rpcs`, likewise.
    pub allowed: Vec<String>,
    /// `-D`.
    pub dump: bool,
    /// `--max-request-size`, `max-request-size` (ours; upstream has no such key): the
    /// largest request in bytes, the size of the frame buffer reserved for it.
    pub max_request: usize,
}

/// The default largest request: upstream's 64 MiB token limit, so that a `guest-file-write`
/// of 48 MiB (64 MiB of base64) fits, plus room for the rest of the request.
pub const MAX_REQUEST_DEFAULT: usize = 64 * 1024 * 1024 + 64 * 1024;
/// The smallest `max-request-size`: room for any `guest-sync-delimited`
/// (agent-core's `MIN_FRAME`), so a client can always resynchronise.
pub const MAX_REQUEST_MIN: usize = agent_core::engine::MIN_FRAME;

/// A `max-request-size` value: bytes, or a number with a `K`, `M` or `G` suffix (powers of
/// 1024), at least [`MAX_REQUEST_MIN`].
fn parse_size(v: &str) -> Option<usize> {
    let v = v.trim();
    let (num, shift) = match v.as_bytes().last()? {
        b'K' | b'k' => (&v[..v.len() - 1], 10),
        b'M' | b'm' => (&v[..v.len() - 1], 20),
        b'G' | b'g' => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: usize = num.parse().ok()?;
    let n = n.checked_mul(1usize << shift)?;
    (MAX_REQUEST_MIN..=isize::MAX as usize)
        .contains(&n)
        .then_some(n)
}

/// What `main` should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Run the agent.
    Run(Config),
    /// Print `stdout` and `stderr` and exit with `code`.
    Exit {
        stdout: String,
        stderr: String,
        code: i32,
    },
}

impl Outcome {
    fn fail(stderr: String) -> Outcome {
        Outcome::Exit {
            stdout: String::new(),
            stderr,
            code: 1,
        }
    }
    fn print(stdout: String) -> Outcome {
        Outcome::Exit {
            stdout,
            stderr: String::new(),
            code: 0,
        }
    }
}

/// Where `main` gets the outside world from; a trait so tests can stand in for it.
pub trait Env {
    /// `$QGA_CONF`.
    fn qga_conf(&self) -> Option<String>;
    /// Read a whole regular file.
    fn read(&self, path: &str) -> io::Result<Vec<u8>>;
    /// The method implied by a socket-activation fd, or `Err` with upstream's message.
    /// `Ok(None)` when the agent is not socket-activated.
    fn socket_activation(&self) -> Result<Option<&'static str>, String>;
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum HasArg {
    No,
    Required,
    Optional,
}

/// Short options, as upstream's `"hVvdc:m:p:l:f:F::b:a:s:t:Dr"`.
const SHORT: &[(char, HasArg)] = &[
    ('h', HasArg::No),
    ('V', HasArg::No),
    ('v', HasArg::No),
    ('d', HasArg::No),
    ('c', HasArg::Required),
    ('m', HasArg::Required),
    ('p', HasArg::Required),
    ('l', HasArg::Required),
    ('f', HasArg::Required),
    ('F', HasArg::Optional),
    ('b', HasArg::Required),
    ('a', HasArg::Required),
    ('s', HasArg::Required),
    ('t', HasArg::Required),
    ('D', HasArg::No),
    ('r', HasArg::No),
];

/// Long options, in upstream's order (which decides nothing but the ambiguity listing).
const LONG: &[(&str, HasArg, char)] = &[
    ("help", HasArg::No, 'h'),
    ("version", HasArg::No, 'V'),
    ("config", HasArg::Required, 'c'),
    ("dump-conf", HasArg::No, 'D'),
    ("logfile", HasArg::Required, 'l'),
    ("pidfile", HasArg::Required, 'f'),
    ("fsfreeze-hook", HasArg::Optional, 'F'),
    ("verbose", HasArg::No, 'v'),
    ("method", HasArg::Required, 'm'),
    ("path", HasArg::Required, 'p'),
    ("daemonize", HasArg::No, 'd'),
    ("block-rpcs", HasArg::Required, 'b'),
    ("allow-rpcs", HasArg::Required, 'a'),
    ("statedir", HasArg::Required, 't'),
    ("retry-path", HasArg::No, 'r'),
    // Ours, long only (no short letter that upstream might take one day).
    ("max-request-size", HasArg::Required, MAX_REQUEST_OPT),
];

/// The getopt code of `--max-request-size` (no short option has it).
const MAX_REQUEST_OPT: char = '\u{1}';

/// One option as getopt returns it: its letter and its argument, or getopt's diagnostic.
type Opt = Result<(char, Option<String>), String>;

/// GNU `getopt_long` with permutation: operands are skipped, `--` ends the options.
fn getopt(prog: &str, args: &[String]) -> Vec<Opt> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            break;
        }
        if let Some(body) = arg.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let exact = LONG.iter().find(|(n, _, _)| *n == name);
            let found = match exact {
                Some(o) => Some(o),
                None => {
                    let cands: Vec<_> = LONG
                        .iter()
                        .filter(|(n, _, _)| n.starts_with(name))
                        .collect();
                    match cands.as_slice() {
                        [] => None,
                        [one] => Some(*one),
                        many => {
                            let first = many[0];
                            if many.iter().all(|c| c.1 == first.1 && c.2 == first.2) {
                                Some(first)
                            } else {
                                let list: String =
                                    many.iter().map(|c| format!(" '--{}'", c.0)).collect();
                                out.push(Err(format!(
                                    "{prog}: option '--{name}' is ambiguous; possibilities:{list}"
                                )));
                                continue;
                            }
                        }
                    }
                }
            };
            let Some(&(full, has, letter)) = found else {
                out.push(Err(format!("{prog}: unrecognized option '--{name}'")));
                continue;
            };
            match (has, inline) {
                (HasArg::No, Some(_)) => out.push(Err(format!(
                    "{prog}: option '--{full}' doesn't allow an argument"
                ))),
                (HasArg::No, None) => out.push(Ok((letter, None))),
                (HasArg::Optional, v) => out.push(Ok((letter, v))),
                (HasArg::Required, Some(v)) => out.push(Ok((letter, Some(v)))),
                (HasArg::Required, None) => match args.get(i) {
                    Some(v) => {
                        i += 1;
                        out.push(Ok((letter, Some(v.clone()))));
                    }
                    None => out.push(Err(format!(
                        "{prog}: option '--{full}' requires an argument"
                    ))),
                },
            }
            continue;
        }
        let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
            continue; // an operand (permuted away and ignored, as upstream)
        };
        for (pos, c) in cluster.char_indices() {
            let Some(&(_, has)) = SHORT.iter().find(|(s, _)| *s == c) else {
                out.push(Err(format!("{prog}: invalid option -- '{c}'")));
                continue;
            };
            let rest = &cluster[pos + c.len_utf8()..];
            match has {
                HasArg::No => out.push(Ok((c, None))),
                HasArg::Optional => {
                    out.push(Ok((c, (!rest.is_empty()).then(|| rest.to_string()))));
                    break;
                }
                HasArg::Required if !rest.is_empty() => {
                    out.push(Ok((c, Some(rest.to_string()))));
                    break;
                }
                HasArg::Required => {
                    match args.get(i) {
                        Some(v) => {
                            i += 1;
                            out.push(Ok((c, Some(v.clone()))));
                        }
                        None => {
                            out.push(Err(format!("{prog}: option requires an argument -- '{c}'")))
                        }
                    }
                    break;
                }
            }
        }
    }
    out
}

/// upstream's `split_list`: split on `,` and prepend each piece (so the order is reversed).
fn split_list(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    s.split(',').rev().map(str::to_string).collect()
}

/// Whether an `-a`/`-b` argument asks for the command list.
fn is_help(s: &str) -> bool {
    s == "help" || s == "?"
}

/// The registered commands, one per line, in schema order: upstream master on Linux does not
/// register `guest-get-devices` (Windows only).
pub fn command_list() -> String {
    Command::ALL
        .iter()
        .filter(|c| **c != Command::GuestGetDevices)
        .map(|c| format!("{}\n", c.name()))
        .collect()
}

/// The `-h` text.
pub fn usage(prog: &str) -> String {
    format!(
        "Usage: {prog} [-m <method> -p <path>] [<options>]
QEMU Guest Agent {VERSION} (qga, a statically linked drop-in for qemu-ga)

  -c, --config      configuration file path (default is {CONF_DEFAULT},
                    or the QGA_CONF environment variable)
  -m, --method      transport method: one of unix-listen, virtio-serial,
                    isa-serial, or vsock-listen (virtio-serial is the default)
  -p, --path        device/socket path (the default for virtio-serial is:
                    {VIRTIO_PATH_DEFAULT},
                    the default for isa-serial is:
                    {SERIAL_PATH_DEFAULT}).
                    Socket addresses for vsock-listen are written as
                    <cid>:<port>.
  -l, --logfile     set logfile path, logs to stderr by default
  -f, --pidfile     specify pidfile (default is {PIDFILE_DEFAULT})
  -F, --fsfreeze-hook
                    enable fsfreeze hook. Accepts an optional argument that
                    specifies script to run on freeze/thaw. Script will be
                    called with 'freeze'/'thaw' arguments accordingly.
                    (default is {FSFREEZE_HOOK_DEFAULT})
                    If using -F with an argument, do not follow -F with a
                    space.
                    (for example: -F/var/run/fsfreezehook.sh)
  -t, --statedir    specify dir to store state information (absolute paths
                    only, default is {STATEDIR_DEFAULT})
  -v, --verbose     log extra debugging information
  -V, --version     print version information and exit
  -d, --daemonize   become a daemon
  -b, --block-rpcs  comma-separated list of RPCs to disable (no spaces,
                    use \"help\" to list available RPCs)
  -a, --allow-rpcs  comma-separated list of RPCs to enable (no spaces,
                    use \"help\" to list available RPCs)
  -D, --dump-conf   dump a qemu-ga config file based on current config
                    options / command-line parameters to stdout
  -r, --retry-path  attempt re-opening path if it's unavailable or closed
                    due to an error which may be recoverable in the future
                    (virtio-serial driver re-install, serial device hot
                    plug/unplug, etc.)
  --max-request-size=SIZE
                    the largest request accepted, in bytes or with a K, M
                    or G suffix (default {MAX_REQUEST_DEFAULT}, so that a
                    48 MiB guest-file-write fits; at least {MAX_REQUEST_MIN}). A larger
                    request gets one \"JSON token size limit exceeded\".
                    Memory is reserved, not used: a large guest-file-write
                    is written to its file as it arrives. Config file key:
                    max-request-size in [general]
  -h, --help        display this help and exit

SIGTERM and SIGINT always end the agent with status 0; frozen filesystems
are thawed first.
"
    )
}

/// What the config file sets, before the command line overrides it.
#[derive(Default)]
struct Loaded {
    daemonize: Option<bool>,
    method: Option<String>,
    path: Option<String>,
    logfile: Option<String>,
    pidfile: Option<String>,
    hook: Option<String>,
    statedir: Option<String>,
    verbose: bool,
    retry: Option<bool>,
    blocked: Vec<String>,
    allowed: Vec<String>,
    max_request: Option<usize>,
}

fn load(env: &dyn Env, confpath: Option<&str>) -> Result<Loaded, String> {
    let env_conf = env.qga_conf();
    let path = confpath.or(env_conf.as_deref()).unwrap_or(CONF_DEFAULT);
    let fail = |msg: &str| format!("error loading configuration from path: {path}, {msg}");
    let data = match env.read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound && confpath.is_none() => {
            return Ok(Loaded::default());
        }
        Err(e) => return Err(fail(&io_text(&e))),
    };
    let kf = KeyFile::parse(&data).map_err(|m| fail(&m))?;
    let g = "general";
    let s = |k: &str| kf.string(g, k).map_err(|m| fail(&m));
    let b = |k: &str| kf.boolean(g, k).map_err(|m| fail(&m));
    Ok(Loaded {
        daemonize: b("daemon")?,
        method: s("method")?,
        path: s("path")?,
        logfile: s("logfile")?,
        pidfile: s("pidfile")?,
        hook: s("fsfreeze-hook")?,
        statedir: s("statedir")?,
        verbose: b("verbose")?.unwrap_or(false),
        retry: b("retry-path")?,
        blocked: s("block-rpcs")?.map(|v| split_list(&v)).unwrap_or_default(),
        allowed: s("allow-rpcs")?.map(|v| split_list(&v)).unwrap_or_default(),
        max_request: match s("max-request-size")? {
            None => None,
            Some(v) => Some(parse_size(&v).ok_or_else(|| {
                fail(&format!(
                    "Key file contains key \"max-request-size\" which has a value that cannot be \
                     interpreted (bytes, or a number with a K, M or G suffix, at least \
                     {MAX_REQUEST_MIN})."
                ))
            })?),
        },
    })
}

/// An I/O error's text without Rust's " (os error N)" suffix.
pub fn io_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => strerror(code),
        None => e.to_string(),
    }
}

/// `strerror(code)`, in glibc's words whatever the C library (see [`crate::strerror`]).
#[cfg(not(target_env = "gnu"))]
pub fn strerror(code: i32) -> String {
    crate::strerror::strerror(code)
}

/// `strerror(code)`.
#[cfg(target_env = "gnu")]
pub fn strerror(code: i32) -> String {
    let s = io::Error::from_raw_os_error(code).to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Parse the command line (`args[0]` is the program name) and the config file.
pub fn parse(args: &[OsString], env: &dyn Env) -> Outcome {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let prog = args.first().cloned().unwrap_or_else(|| "qga".to_string());
    let opts = getopt(&prog, args.get(1..).unwrap_or(&[]));

    // First pass: only -c, so that the file is read before the rest override it.
    let mut confpath = opts.iter().filter_map(|o| match o {
        Ok(('c', v)) => v.clone(),
        _ => None,
    });
    let confpath = confpath.next_back();
    let loaded = match load(env, confpath.as_deref()) {
        Ok(l) => l,
        Err(msg) => return Outcome::fail(msg),
    };

    let mut c = Config {
        daemonize: loaded.daemonize.unwrap_or(false),
        method: String::new(),
        path: loaded.path,
        logfile: loaded.logfile,
        pidfile: String::new(),
        fsfreeze_hook: loaded.hook,
        statedir: String::new(),
        verbose: loaded.verbose,
        retry_path: loaded.retry.unwrap_or(false),
        blocked: loaded.blocked,
        allowed: loaded.allowed,
        dump: false,
        max_request: loaded.max_request.unwrap_or(MAX_REQUEST_DEFAULT),
    };
    let mut method = loaded.method;
    let mut pidfile = loaded.pidfile;
    let mut statedir = loaded.statedir;

    for opt in opts {
        let (letter, arg) = match opt {
            Ok(o) => o,
            Err(diag) => {
                return Outcome::Exit {
                    stdout: format!("Unknown option, try '{prog} --help' for more information.\n"),
                    stderr: format!("{diag}\n"),
                    code: 1,
                };
            }
        };
        let arg_str = arg.clone().unwrap_or_default();
        match letter {
            'm' => method = arg,
            'p' => c.path = arg,
            'l' => c.logfile = arg,
            'f' => pidfile = arg,
            'F' => c.fsfreeze_hook = Some(arg.unwrap_or_else(|| FSFREEZE_HOOK_DEFAULT.to_string())),
            't' => statedir = arg,
            'v' => c.verbose = true,
            'V' => return Outcome::print(format!("QEMU Guest Agent {VERSION}\n")),
            'd' => c.daemonize = true,
            'D' => c.dump = true,
            'r' => c.retry_path = true,
            'b' | 'a' if is_help(&arg_str) => return Outcome::print(command_list()),
            'b' => c.blocked.extend(split_list(&arg_str)),
            'a' => c.allowed.extend(split_list(&arg_str)),
            'h' => return Outcome::print(usage(&prog)),
            MAX_REQUEST_OPT => match parse_size(&arg_str) {
                Some(n) => c.max_request = n,
                None => {
                    return Outcome::fail(format!(
                        "invalid --max-request-size '{arg_str}': bytes, or a number with a K, M \
                         or G suffix, at least {MAX_REQUEST_MIN}\n"
                    ));
                }
            },
            // -c was handled in the first pass; -s is Windows-only and ignored elsewhere.
            _ => {}
        }
    }

    c.pidfile = pidfile.unwrap_or_else(|| PIDFILE_DEFAULT.to_string());
    c.statedir = statedir.unwrap_or_else(|| STATEDIR_DEFAULT.to_string());
    c.method = method.unwrap_or_else(|| "virtio-serial".to_string());

    match env.socket_activation() {
        Err(msg) => return Outcome::fail(msg),
        Ok(Some(m)) => {
            c.method = m.to_string();
            c.path = None;
        }
        Ok(None) => {
            if c.path.is_none() {
                match c.method.as_str() {
                    "virtio-serial" => c.path = Some(VIRTIO_PATH_DEFAULT.to_string()),
                    "isa-serial" => c.path = Some(SERIAL_PATH_DEFAULT.to_string()),
                    _ => return Outcome::fail("must specify a path for this channel".to_string()),
                }
            }
        }
    }

    if c.dump {
        return Outcome::print(dump(&c));
    }
    Outcome::Run(c)
}

/// The `-D` output: upstream's keys, order and escaping.
pub fn dump(c: &Config) -> String {
    let mut w = keyfile::Writer::default();
    w.group("general")
        .boolean("daemon", c.daemonize)
        .string("method", &c.method);
    if let Some(p) = &c.path {
        w.string("path", p);
    }
    if let Some(l) = &c.logfile {
        w.string("logfile", l);
    }
    w.string("pidfile", &c.pidfile);
    if let Some(h) = &c.fsfreeze_hook {
        w.string("fsfreeze-hook", h);
    }
    w.string("statedir", &c.statedir)
        .boolean("verbose", c.verbose)
        .boolean("retry-path", c.retry_path)
        .string("block-rpcs", &c.blocked.join(","))
        .string("allow-rpcs", &c.allowed.join(","));
    // Ours: written only when set, so the default dump stays upstream's byte for byte.
    if c.max_request != MAX_REQUEST_DEFAULT {
        w.integer("max-request-size", c.max_request as i64);
    }
    w.finish()
}

impl Config {
    /// The command filter: upstream master's rules (block list over allow list); names that
    /// are not commands are ignored, as upstream does.
    pub fn policy(&self) -> agent_core::Policy {
        let mut p = agent_core::Policy::default();
        // An allow list exists when it names anything (upstream tests the list for NULL); one
        // that names only unknown commands denies everything.
        if !self.allowed.is_empty() {
            for c in Command::ALL {
                if self.allowed.iter().any(|n| n == c.name()) {
                    p.allow(*c);
                }
            }
            if !Command::ALL
                .iter()
                .any(|c| self.allowed.iter().any(|n| n == c.name()))
            {
                // Policy has no "empty allow list" constructor: allow one command, then its
                // absence from `allowed` is expressed by blocking it.
                p.allow(Command::GuestSync);
                p.block(Command::GuestSync);
            }
        }
        for c in Command::ALL {
            if self.blocked.iter().any(|n| n == c.name()) {
                p.block(*c);
            }
        }
        p
    }

    /// Names on the block or allow list that are not commands (logged at start-up).
    pub fn unknown_names(&self) -> Vec<&str> {
        self.blocked
            .iter()
            .chain(self.allowed.iter())
            .map(String::as_str)
            .filter(|n| Command::from_name(n).is_none())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct FakeEnv {
        conf: Option<String>,
        files: HashMap<String, Vec<u8>>,
        activation: Option<Result<Option<&'static str>, String>>,
    }

    impl Env for FakeEnv {
        fn qga_conf(&self) -> Option<String> {
            self.conf.clone()
        }
        fn read(&self, path: &str) -> io::Result<Vec<u8>> {
            if path == "/etc" {
                return Err(io::Error::other("Not a regular file"));
            }
            self.files
                .get(path)
                .cloned()
                .ok_or_else(|| io::Error::from_raw_os_error(2))
        }
        fn socket_activation(&self) -> Result<Option<&'static str>, String> {
            self.activation.clone().unwrap_or(Ok(None))
        }
    }

    fn run(env: &FakeEnv, args: &[&str]) -> Outcome {
        let mut v: Vec<OsString> = vec!["qga".into()];
        v.extend(args.iter().map(OsString::from));
        parse(&v, env)
    }

    fn config(env: &FakeEnv, args: &[&str]) -> Config {
        match run(env, args) {
            Outcome::Run(c) => c,
            other => panic!("{other:?}"),
        }
    }

    fn stdout(o: Outcome) -> String {
        match o {
            Outcome::Exit {
                stdout, code: 0, ..
            } => stdout,
            other => panic!("{other:?}"),
        }
    }

    fn failure(o: Outcome) -> (String, String) {
        match o {
            Outcome::Exit {
                stdout,
                stderr,
                code: 1,
            } => (stdout, stderr),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_as_upstream() {
        let c = config(&FakeEnv::default(), &[]);
        assert_eq!(c.method, "virtio-serial");
        assert_eq!(c.path.as_deref(), Some(VIRTIO_PATH_DEFAULT));
        assert_eq!(c.statedir, "/var/run");
        assert_eq!(c.pidfile, "/var/run/qemu-ga.pid");
        assert!(!c.verbose && !c.daemonize && !c.retry_path && c.fsfreeze_hook.is_none());
        let c = config(&FakeEnv::default(), &["-m", "isa-serial"]);
        assert_eq!(c.path.as_deref(), Some("/dev/ttyS0"));
    }

    #[test]
    fn dump_default_is_upstream_byte_for_byte() {
        let out = stdout(run(&FakeEnv::default(), &["-D"]));
        assert_eq!(
            out,
            "[general]\ndaemon=false\nmethod=virtio-serial\npath=/dev/virtio-ports/org.qemu.guest_agent.0\n\
             pidfile=/var/run/qemu-ga.pid\nstatedir=/var/run\nverbose=false\nretry-path=false\nblock-rpcs=\nallow-rpcs=\n"
        );
    }

    #[test]
    fn upstream_test_config_dump() {
        // upstream's tests/data/test-qga-config, as Debian's 7.2 dumps it (docs/protocol.md §3.2).
        let mut env = FakeEnv {
            conf: Some("/cfg".into()),
            ..Default::default()
        };
        env.files.insert(
            "/cfg".into(),
            b"[general]\ndaemon=false\nmethod=virtio-serial\npath=/path/to/org.qemu.guest_agent.0\n\
              pidfile=/var/foo/qemu-ga.pid\nstatedir=/var/state\nverbose=true\nretry-path=false\n\
              block-rpcs=guest-ping;guest-get-time\n"
                .to_vec(),
        );
        assert_eq!(
            stdout(run(&env, &["-D"])),
            "[general]\ndaemon=false\nmethod=virtio-serial\npath=/path/to/org.qemu.guest_agent.0\n\
             pidfile=/var/foo/qemu-ga.pid\nstatedir=/var/state\nverbose=true\nretry-path=false\n\
             block-rpcs=guest-ping;guest-get-time\nallow-rpcs=\n"
        );
    }

    #[test]
    fn lists_accumulate_reversed_per_option() {
        let mut env = FakeEnv {
            conf: Some("/cfg".into()),
            ..Default::default()
        };
        env.files
            .insert("/cfg".into(), b"[general]\nblock-rpcs=a,,b\n".to_vec());
        let c = config(
            &env,
            &["-b", "guest-ping,guest-info", "--block-rpcs=x", "-ay,z"],
        );
        assert_eq!(c.blocked, ["b", "", "a", "guest-info", "guest-ping", "x"]);
        assert_eq!(c.allowed, ["z", "y"]);
        let d = dump(&c);
        assert!(
            d.contains("\nblock-rpcs=b,,a,guest-info,guest-ping,x\nallow-rpcs=z,y\n"),
            "{d}"
        );
    }

    #[test]
    fn command_line_overrides_file_and_hook_argument_is_attached() {
        let mut env = FakeEnv::default();
        env.files.insert(
            "/my.conf".into(),
            b"[general]\nmethod=unix-listen\npath=/from/file\nverbose=true\nfsfreeze-hook=/h\n"
                .to_vec(),
        );
        let c = config(&env, &["-p", "/from/cli", "-c", "/my.conf"]);
        assert_eq!(
            (c.method.as_str(), c.path.as_deref(), c.verbose),
            ("unix-listen", Some("/from/cli"), true)
        );
        assert_eq!(c.fsfreeze_hook.as_deref(), Some("/h"));
        let c = config(&env, &["-c/my.conf", "-F"]);
        assert_eq!(c.fsfreeze_hook.as_deref(), Some(FSFREEZE_HOOK_DEFAULT));
        let c = config(&env, &["-c", "/my.conf", "-F/x/hook"]);
        assert_eq!(c.fsfreeze_hook.as_deref(), Some("/x/hook"));
        // With a space the path is an operand, ignored; -F takes the default.
        let c = config(&env, &["-c", "/my.conf", "-F", "/x/hook"]);
        assert_eq!(c.fsfreeze_hook.as_deref(), Some(FSFREEZE_HOOK_DEFAULT));
        let c = config(&env, &["-c", "/my.conf", "--fsfreeze-hook=/y"]);
        assert_eq!(c.fsfreeze_hook.as_deref(), Some("/y"));
    }

    #[test]
    fn getopt_details() {
        let env = FakeEnv::default();
        let c = config(
            &env,
            &[
                "-vdr",
                "--meth",
                "unix-listen",
                "operand",
                "-p/s",
                "--statedir=/st",
            ],
        );
        assert!(c.verbose && c.daemonize && c.retry_path);
        assert_eq!(
            (c.method.as_str(), c.path.as_deref(), c.statedir.as_str()),
            ("unix-listen", Some("/s"), "/st")
        );
        // After "--" nothing is an option.
        let c = config(&env, &["--", "-V"]);
        assert_eq!(c.method, "virtio-serial");
        // -s takes an argument and is ignored off Windows.
        let c = config(&env, &["-s", "install", "-v"]);
        assert!(c.verbose);
    }

    #[test]
    fn max_request_size_from_file_and_command_line() {
        let mut env = FakeEnv::default();
        let c = config(&env, &["-m", "unix-listen", "-p", "/s"]);
        assert_eq!(c.max_request, MAX_REQUEST_DEFAULT);
        assert_eq!(c.max_request, 64 * 1024 * 1024 + 64 * 1024);
        env.files.insert(
            "/cfg".into(),
            b"[general]\nmethod=unix-listen\npath=/s\nmax-request-size=2M\n".to_vec(),
        );
        let c = config(&env, &["-c", "/cfg"]);
        assert_eq!(c.max_request, 2 << 20);
        // The command line wins; plain bytes and a lower-case suffix work too.
        let c = config(&env, &["-c", "/cfg", "--max-request-size=4096"]);
        assert_eq!(c.max_request, 4096);
        let c = config(&env, &["-c", "/cfg", "--max-request-size", "64k"]);
        assert_eq!(c.max_request, 64 << 10);
        // -D writes it back only when it is not the default (so the default dump stays
        // upstream's, checked above), in a form the file accepts.
        let dumped = stdout(run(&env, &["-c", "/cfg", "-D"]));
        assert!(dumped.ends_with("max-request-size=2097152\n"), "{dumped}");
        env.files.insert("/d".into(), dumped.into_bytes());
        assert_eq!(config(&env, &["-c", "/d"]).max_request, 2 << 20);
        // Below the minimum, not a size, or too large: refused, naming the key or option.
        for bad in ["100", "12Q", "-5", "", "K", "99999999999G"] {
            env.files.insert(
                "/bad".into(),
                format!("[general]\nmax-request-size={bad}\n").into_bytes(),
            );
            let (_, err) = failure(run(&env, &["-c", "/bad"]));
            assert!(
                err.starts_with(
                    "error loading configuration from path: /bad, Key file contains key \
                     \"max-request-size\" which has a value that cannot be interpreted"
                ),
                "{bad}: {err}"
            );
            let (_, err) = failure(run(&env, &[&format!("--max-request-size={bad}")]));
            assert!(
                err.starts_with(&format!("invalid --max-request-size '{bad}'")),
                "{err}"
            );
        }
        assert_eq!(
            config(&env, &["--max-request-size=128", "-p", "/x"]).max_request,
            128
        );
        let help = stdout(run(&env, &["-h"]));
        assert!(
            help.contains("--max-request-size=SIZE")
                && help.contains("max-request-size in [general]")
        );
    }

    #[test]
    fn bad_options() {
        let env = FakeEnv::default();
        let (out, err) = failure(run(&env, &["--bogus"]));
        assert_eq!(
            out,
            "Unknown option, try 'qga --help' for more information.\n"
        );
        assert_eq!(err, "qga: unrecognized option '--bogus'\n");
        assert_eq!(
            failure(run(&env, &["-x"])).1,
            "qga: invalid option -- 'x'\n"
        );
        assert_eq!(
            failure(run(&env, &["-p"])).1,
            "qga: option requires an argument -- 'p'\n"
        );
        assert_eq!(
            failure(run(&env, &["--path"])).1,
            "qga: option '--path' requires an argument\n"
        );
        assert_eq!(
            failure(run(&env, &["--verbose=1"])).1,
            "qga: option '--verbose' doesn't allow an argument\n"
        );
        assert_eq!(
            failure(run(&env, &["--ver"])).1,
            "qga: option '--ver' is ambiguous; possibilities: '--version' '--verbose'\n"
        );
        assert_eq!(
            failure(run(&env, &["-m", "unix-listen"])).1,
            "must specify a path for this channel"
        );
        // The path check comes before -D, as upstream.
        assert_eq!(
            failure(run(&env, &["-m", "vsock-listen", "-D"])).1,
            "must specify a path for this channel"
        );
        // Options are applied in order: -V before a bad option wins, after it loses.
        assert_eq!(
            stdout(run(&env, &["-V", "--bogus"])),
            format!("QEMU Guest Agent {VERSION}\n")
        );
        failure(run(&env, &["--bogus", "-V"]));
    }

    #[test]
    fn help_and_command_list() {
        let env = FakeEnv::default();
        for arg in [
            &["-b", "help"][..],
            &["-b?"],
            &["--allow-rpcs=help"],
            &["-a", "?"],
        ] {
            let out = stdout(run(&env, arg));
            assert_eq!(out.lines().count(), 43);
            assert!(out.starts_with("guest-sync-delimited\nguest-sync\nguest-ping\n"));
            assert!(out.ends_with("guest-network-get-route\n"));
            assert!(!out.contains("guest-get-devices"));
        }
        let out = stdout(run(&env, &["--help"]));
        assert!(out.starts_with("Usage: qga [-m <method> -p <path>] [<options>]\n"));
        for o in [
            "--method",
            "--path",
            "--logfile",
            "--pidfile",
            "--fsfreeze-hook",
            "--statedir",
            "--verbose",
            "--version",
            "--daemonize",
            "--block-rpcs",
            "--allow-rpcs",
            "--dump-conf",
            "--retry-path",
            "--config",
            "--help",
        ] {
            assert!(out.contains(o), "{o}");
        }
    }

    #[test]
    fn config_file_errors() {
        // A missing default or QGA_CONF file is fine; a missing -c file is not.
        let env = FakeEnv {
            conf: Some("/nope".into()),
            ..Default::default()
        };
        config(&env, &[]);
        let (_, err) = failure(run(&env, &["-c", "/nope2"]));
        assert_eq!(
            err,
            "error loading configuration from path: /nope2, No such file or directory"
        );
        let env = FakeEnv {
            conf: Some("/etc".into()),
            ..Default::default()
        };
        assert_eq!(
            failure(run(&env, &[])).1,
            "error loading configuration from path: /etc, Not a regular file"
        );
        let mut env = FakeEnv {
            conf: Some("/c".into()),
            ..Default::default()
        };
        env.files
            .insert("/c".into(), b"[general]\ndaemon=yes\n".to_vec());
        assert_eq!(
            failure(run(&env, &["-V"])).1,
            "error loading configuration from path: /c, Key file contains key \"daemon\" which has a value that cannot be interpreted."
        );
        env.files.insert("/c".into(), b"junk\n".to_vec());
        assert!(failure(run(&env, &[])).1.contains("not a key-value pair"));
    }

    #[test]
    fn socket_activation_overrides_method_and_path() {
        let env = FakeEnv {
            activation: Some(Ok(Some("unix-listen"))),
            ..Default::default()
        };
        let c = config(&env, &["-m", "isa-serial", "-p", "/x"]);
        assert_eq!(
            (c.method.as_str(), c.path.as_deref()),
            ("unix-listen", None)
        );
        assert!(!stdout(run(&env, &["-D"])).contains("\npath="));
        let env = FakeEnv {
            activation: Some(Err("qemu-ga only supports listening on one socket".into())),
            ..Default::default()
        };
        failure(run(&env, &[]));
    }

    #[test]
    fn policy_from_lists() {
        let env = FakeEnv::default();
        let c = config(&env, &["-b", "guest-ping,nosuch"]);
        let p = c.policy();
        assert!(!p.enabled(Command::GuestPing, false));
        assert!(p.enabled(Command::GuestInfo, false));
        assert_eq!(c.unknown_names(), ["nosuch"]);
        let c = config(&env, &["-a", "guest-info,guest-ping", "-b", "guest-ping"]);
        let p = c.policy();
        assert!(p.enabled(Command::GuestInfo, false));
        assert!(!p.enabled(Command::GuestPing, false));
        assert!(!p.enabled(Command::GuestSync, false));
        let c = config(&env, &["-a", "nosuch"]);
        assert!(
            Command::ALL
                .iter()
                .all(|cmd| !c.policy().enabled(*cmd, false))
        );
        // Frozen overrides everything, as upstream.
        assert!(c.policy().enabled(Command::GuestPing, true));
    }

    /// The Debian package's manual page (`packaging/qga.8`).
    const MAN_PAGE: &str = include_str!("../packaging/qga.8");

    /// The lines of section `name` of the manual page, `\-` read as `-`.
    fn man_section(name: &str) -> Vec<String> {
        let mut lines = MAN_PAGE.lines().map(|l| l.replace("\\-", "-"));
        let start = format!(".SH {name}");
        lines
            .by_ref()
            .find(|l| *l == start)
            .unwrap_or_else(|| panic!("qga.8 has no {start}"));
        lines.take_while(|l| !l.starts_with(".SH ")).collect()
    }

    /// `(letter, long name)` of each `-x, --long` pair that starts a line of `lines`, after
    /// `prefix`.
    fn option_pairs<'a>(lines: impl Iterator<Item = &'a str>, prefix: &str) -> Vec<(char, String)> {
        let mut out: Vec<(char, String)> = lines
            .filter_map(|l| {
                let rest = l.strip_prefix(prefix)?.strip_prefix('-')?;
                let letter = rest.chars().next()?;
                let long = &rest[rest.find("--")? + 2..];
                let end = long
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '-'))
                    .unwrap_or(long.len());
                Some((letter, long[..end].to_string()))
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn manual_page_lists_exactly_the_options() {
        let man_lines = man_section("OPTIONS");
        let man = option_pairs(man_lines.iter().map(String::as_str), ".BR ");
        // `--max-request-size` is ours and long only: no pair, but in both texts.
        let mut table: Vec<(char, String)> = LONG
            .iter()
            .filter(|(_, _, letter)| *letter != MAX_REQUEST_OPT)
            .map(|(name, _, letter)| (*letter, name.to_string()))
            .collect();
        assert!(
            man_lines
                .iter()
                .any(|l| l.starts_with(".BR --max-request-size ="))
        );
        assert!(usage("qga").contains("\n  --max-request-size=SIZE\n"));
        table.sort();
        assert_eq!(
            man, table,
            "qga.8 OPTIONS against the parser's long options"
        );
        // Every short option has its long one, except -s (Windows' service option, accepted
        // and ignored, as upstream's Linux build does, and in neither text).
        let mut shorts: Vec<char> = SHORT
            .iter()
            .map(|(c, _)| *c)
            .filter(|c| *c != 's')
            .collect();
        shorts.sort();
        let mut paired: Vec<char> = man.iter().map(|(c, _)| *c).collect();
        paired.sort();
        assert_eq!(shorts, paired, "short options without a manual entry");
        // And the --help text lists the same pairs.
        let help = usage("qga");
        assert_eq!(
            option_pairs(help.lines(), "  "),
            man,
            "--help against qga.8"
        );
        // An option's argument is optional in the page exactly when it is for getopt.
        for (name, has, _) in LONG {
            let optional = format!("--{name} [=");
            let shown = man_lines.iter().any(|l| l.contains(&optional));
            assert_eq!(shown, *has == HasArg::Optional, "--{name}");
        }
    }

    #[test]
    fn manual_page_lists_exactly_the_config_keys() {
        let mut man: Vec<String> = man_section("CONFIGURATION FILE")
            .iter()
            .filter_map(|l| {
                let key = l.strip_prefix(".BR ")?.split(' ').next()?;
                l.contains(" =").then(|| key.to_string())
            })
            .collect();
        man.sort();
        // The keys `-D` writes for a configuration with every setting present.
        let env = FakeEnv::default();
        let c = config(&env, &["-l/l", "-F", "-d", "--max-request-size=1M"]);
        let mut dumped: Vec<String> = dump(&c)
            .lines()
            .filter_map(|l| Some(l.split_once('=')?.0.to_string()))
            .collect();
        dumped.sort();
        assert_eq!(man, dumped, "qga.8 CONFIGURATION FILE against -D");
        // Each documented key is read from the file: setting it changes the configuration.
        let base = config(&env, &[]);
        for key in &man {
            let value = match key.as_str() {
                "daemon" | "verbose" | "retry-path" => "true",
                "method" => "isa-serial",
                "max-request-size" => "1M",
                _ => "/x",
            };
            let mut env = FakeEnv {
                conf: Some("/cfg".into()),
                ..Default::default()
            };
            env.files.insert(
                "/cfg".into(),
                format!("[general]\n{key}={value}\n").into_bytes(),
            );
            assert_ne!(config(&env, &[]), base, "{key} is not read from the file");
        }
    }
}
