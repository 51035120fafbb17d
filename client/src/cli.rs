//! The `qga-client` command: talk to a guest agent from a shell.
//!
//! What people reach for in QEMU's `qemu-ga-client` (ping, info, exec with its output decoded
//! and its exit status passed on, fsfreeze, shutdown, file copies), plus any command as raw JSON,
//! over the same library the project's own tests use, so the command behaves as the tests
//! checked: it re-synchronises before the first request and never waits without a bound.
//!
//! Exit status: 0 on success; 1 when the agent answers an error or cannot be reached; 2 for a
//! usage error; for `exec`, the program's own exit code (128 + N when signal N killed it).
//!
//! It is a library module as well as a binary so that other front ends (the project's
//! `cargo xtask qga|push|pull`) run the very same command instead of a copy of it.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::{Address, Client, ClientError};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "qga-client",
    version,
    about = "Talk to a QEMU guest agent (ours or qemu-ga) from the host",
    after_help = "Any other COMMAND is sent as is: qga-client ADDRESS guest-get-osinfo, or \
                  qga-client ADDRESS guest-exec '{\"path\": \"/bin/ls\"}' (ARGS-JSON is the \
                  `arguments` object); the whole response is printed as JSON."
)]
struct Cli {
    /// Where the agent listens: a unix socket path (PATH or unix:PATH), e.g. the path of QEMU's
    /// `-chardev socket,server=on,path=…` or of a host agent's `-m unix-listen -p …`; a guest's
    /// vsock port behind a microVM monitor's hybrid socket (vsock-uds:PATH:PORT); or AF_VSOCK
    /// (vsock:CID:PORT)
    address: Address,

    /// Seconds to wait for each answer (and for a place in the agent's listen queue)
    #[arg(long, global = true, default_value_t = 30, value_name = "SECONDS")]
    timeout: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// guest-ping: exit status 0 if the agent answers
    Ping,
    /// guest-info: the agent's version and its commands, enabled or not
    Info {
        /// Print guest-info's answer as JSON instead
        #[arg(long)]
        json: bool,
    },
    /// Run PROGRAM in the guest, wait for it, print its decoded stdout and stderr, and exit with
    /// its exit code
    Exec {
        /// A local file whose contents become the program's standard input (`-`: this
        /// command's standard input)
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// Seconds to wait for the program to exit
        #[arg(long, default_value_t = 300, value_name = "SECONDS")]
        wait: u64,
        /// The program (a path in a Linux guest; a built-in program's name on bare metal)
        program: String,
        /// Its arguments (everything after PROGRAM, options included)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// guest-fsfreeze-status|freeze|thaw: prints the status, or how many filesystems were
    /// frozen or thawed
    Fsfreeze {
        #[arg(value_enum)]
        action: FreezeAction,
    },
    /// guest-shutdown: power the guest down, halt or reboot it
    Shutdown {
        #[arg(long, value_enum, default_value_t = ShutdownMode::Powerdown)]
        mode: ShutdownMode,
    },
    /// Copy a local file into the guest (guest-file-open/write/close)
    Push {
        local: PathBuf,
        remote: String,
        /// Bytes per guest-file-write
        #[arg(long, default_value_t = 32 * 1024, value_name = "BYTES")]
        chunk: usize,
    },
    /// Copy a guest file out (guest-file-open/read/close)
    Pull {
        remote: String,
        local: PathBuf,
        /// Bytes per guest-file-read
        #[arg(long, default_value_t = 32 * 1024, value_name = "BYTES")]
        chunk: usize,
    },
    /// COMMAND [ARGS-JSON]: any other command, sent as is
    #[command(external_subcommand)]
    Raw(Vec<String>),
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum FreezeAction {
    Status,
    Freeze,
    Thaw,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ShutdownMode {
    Powerdown,
    Halt,
    Reboot,
}

impl ShutdownMode {
    fn name(self) -> &'static str {
        match self {
            ShutdownMode::Powerdown => "powerdown",
            ShutdownMode::Halt => "halt",
            ShutdownMode::Reboot => "reboot",
        }
    }
}

/// Commands that answer only when they fail.
const SILENT_ON_SUCCESS: &[&str] = &[
    "guest-shutdown",
    "guest-suspend-disk",
    "guest-suspend-ram",
    "guest-suspend-hybrid",
];

/// How long a command that answers only on failure is given to fail.
const SILENT_WAIT: Duration = Duration::from_secs(5);

/// A failure with the exit status it maps to.
struct Failure {
    status: u8,
    message: String,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure {
            status: 1,
            message: e.to_string(),
        }
    }
}

fn fail(message: impl Into<String>) -> Failure {
    Failure {
        status: 1,
        message: message.into(),
    }
}

/// Runs the command with this process's arguments.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// Runs the command with `args` (the first one is the program name, as in `argv`); a usage
/// error prints clap's message and gives status 2, `--help` prints the help and gives 0.
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match run(&cli) {
        Ok(status) => ExitCode::from(status),
        Err(f) => {
            eprintln!("qga-client: {}", f.message);
            ExitCode::from(f.status)
        }
    }
}

/// Connects and re-synchronises, with a message that says what to check.
fn connect(cli: &Cli) -> Result<Client, Failure> {
    let timeout = Duration::from_secs(cli.timeout);
    let a = &cli.address;
    let mut c = Client::connect_to_within(a, timeout)
        .map_err(|e| fail(format!("cannot connect to {a}: {e}")))?;
    c.set_timeout(timeout);
    c.sync_delimited().map_err(|e| {
        fail(format!(
            "the agent on {a} did not answer guest-sync-delimited: {e}"
        ))
    })?;
    Ok(c)
}

fn run(cli: &Cli) -> Result<u8, Failure> {
    if let Command::Raw(words) = &cli.command {
        return raw(cli, words);
    }
    let mut c = connect(cli)?;
    match &cli.command {
        Command::Ping => c.ping()?,
        Command::Info { json } => {
            let info = c.info()?;
            if *json {
                print_json(&info);
            } else {
                print_info(&info);
            }
        }
        Command::Exec {
            input,
            wait,
            program,
            args,
        } => return exec(&mut c, input.as_ref(), *wait, program, args),
        Command::Fsfreeze { action } => match action {
            FreezeAction::Status => println!("{}", c.fsfreeze_status()?),
            FreezeAction::Freeze => println!("{}", c.fsfreeze_freeze()?),
            FreezeAction::Thaw => println!("{}", c.fsfreeze_thaw()?),
        },
        Command::Shutdown { mode } => {
            c.shutdown(Some(mode.name()), SILENT_WAIT.min(c.timeout()))?;
        }
        Command::Push {
            local,
            remote,
            chunk,
        } => {
            let data = std::fs::read(local)
                .map_err(|e| fail(format!("cannot read {}: {e}", local.display())))?;
            c.push(&data, remote, *chunk)?;
            println!("pushed {} bytes to {remote}", data.len());
        }
        Command::Pull {
            remote,
            local,
            chunk,
        } => {
            let data = c.pull(remote, *chunk)?;
            std::fs::write(local, &data)
                .map_err(|e| fail(format!("cannot write {}: {e}", local.display())))?;
            println!("pulled {} bytes into {}", data.len(), local.display());
        }
        Command::Raw(_) => unreachable!("handled above"),
    }
    Ok(0)
}

/// `COMMAND [ARGS-JSON]`: prints the whole response; status 1 if it is an error.
fn raw(cli: &Cli, words: &[String]) -> Result<u8, Failure> {
    let usage = |m: String| Failure {
        status: 2,
        message: format!("{m}\nusage: qga-client ADDRESS COMMAND [ARGS-JSON]"),
    };
    let (command, args) = match words {
        [c] => (c, None),
        [c, a] => {
            let v: Value = serde_json::from_str(a)
                .map_err(|e| usage(format!("ARGS-JSON is not JSON: {e}")))?;
            (c, Some(v))
        }
        _ => {
            return Err(usage(format!(
                "expected COMMAND [ARGS-JSON], got {words:?}"
            )));
        }
    };
    let mut c = connect(cli)?;
    let mut req = serde_json::json!({"execute": command});
    if let Some(a) = args {
        req["arguments"] = a;
    }
    let silent = SILENT_ON_SUCCESS.contains(&command.as_str());
    if silent {
        c.set_timeout(SILENT_WAIT.min(c.timeout()));
    }
    match c.request(&req) {
        Ok(v) => {
            print_json(&v);
            Ok(if v.get("error").is_some() { 1 } else { 0 })
        }
        Err(ClientError::Timeout(_) | ClientError::Closed(_)) if silent => {
            println!("(no response: {command} answers only when it fails)");
            Ok(0)
        }
        Err(e) => Err(e.into()),
    }
}

fn exec(
    c: &mut Client,
    input: Option<&PathBuf>,
    wait: u64,
    program: &str,
    args: &[String],
) -> Result<u8, Failure> {
    let data = match input {
        None => None,
        Some(p) if p.as_os_str() == "-" => {
            let mut d = Vec::new();
            std::io::stdin()
                .read_to_end(&mut d)
                .map_err(|e| fail(format!("cannot read standard input: {e}")))?;
            Some(d)
        }
        Some(p) => {
            Some(std::fs::read(p).map_err(|e| fail(format!("cannot read {}: {e}", p.display())))?)
        }
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let pid = c.exec(program, &args, data.as_deref(), true)?;
    let out = c.exec_wait(pid, Duration::from_secs(wait))?;
    // Output first, whatever the status: a failing program's output is what one wants to see.
    let mut so = std::io::stdout().lock();
    let mut se = std::io::stderr().lock();
    let _ = so.write_all(&out.stdout).and_then(|()| so.flush());
    let _ = se.write_all(&out.stderr).and_then(|()| se.flush());
    drop((so, se));
    if out.stdout_truncated {
        eprintln!("qga-client: the agent truncated the program's stdout");
    }
    if out.stderr_truncated {
        eprintln!("qga-client: the agent truncated the program's stderr");
    }
    Ok(match (out.exitcode, out.signal) {
        (Some(code), _) => match u8::try_from(code) {
            Ok(code) => code,
            Err(_) => {
                eprintln!("qga-client: {program} exited with {code}, which no exit status holds");
                255
            }
        },
        (None, Some(sig)) => {
            eprintln!("qga-client: {program} was killed by signal {sig}");
            u8::try_from(128 + sig.clamp(0, 127)).unwrap_or(255)
        }
        (None, None) => {
            return Err(fail(format!(
                "guest-exec-status of {program} (pid {pid}) has neither exitcode nor signal"
            )));
        }
    })
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// `info`: the version, then one command a line with `(disabled)` where it is.
fn print_info(info: &Value) {
    let version = info.get("version").and_then(Value::as_str).unwrap_or("?");
    println!("version: {version}");
    let list = info
        .get("supported_commands")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let enabled = list
        .iter()
        .filter(|c| c.get("enabled") == Some(&Value::Bool(true)))
        .count();
    println!("commands: {} ({enabled} enabled)", list.len());
    for cmd in list {
        let name = cmd.get("name").and_then(Value::as_str).unwrap_or("?");
        let on = cmd.get("enabled") == Some(&Value::Bool(true));
        println!("  {name}{}", if on { "" } else { " (disabled)" });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exec_takes_the_program_s_options_as_its_arguments() {
        let cli =
            Cli::try_parse_from(["qga-client", "/s", "exec", "/bin/ls", "-l", "--all"]).unwrap();
        match cli.command {
            Command::Exec { program, args, .. } => {
                assert_eq!(program, "/bin/ls");
                assert_eq!(args, ["-l", "--all"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_subcommands_are_raw_commands() {
        let cli = Cli::try_parse_from(["qga-client", "unix:/s", "guest-get-time", "{}"]).unwrap();
        assert_eq!(cli.address, Address::Unix("/s".into()));
        match cli.command {
            Command::Raw(w) => assert_eq!(w, ["guest-get-time", "{}"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn vsock_addresses_parse_and_malformed_ones_are_refused() {
        let cli = Cli::try_parse_from(["qga-client", "vsock-uds:/run/v:52", "ping"]).unwrap();
        assert_eq!(
            cli.address,
            Address::VsockUds {
                path: "/run/v".into(),
                port: 52
            }
        );
        let e = Cli::try_parse_from(["qga-client", "vsock:3", "ping"]).unwrap_err();
        assert!(e.to_string().contains("no port"), "{e}");
    }
}
