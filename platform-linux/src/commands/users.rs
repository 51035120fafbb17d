//! `guest-get-users` and `guest-set-user-password` on Linux.
//!
//! Sessions come from the utmp file (`/var/run/utmp`), which is what glibc's `getutxent`
//! reads; reading the records directly keeps the backend free of libc's global utmp cursor
//! and lets tests use a fixture file. The records are read at glibc's x86_64 offsets, not
//! through `libc::utmpx`: the file is written by the distribution's glibc programs whatever
//! C library `qga` is linked with, and musl's `struct utmpx` (the shipped static build) is 400
//! bytes with a 64-bit `ut_tv`, where glibc's is 384 with a 32-bit one. As
//! upstream: one entry per user name among `USER_PROCESS` records, in first-seen order, with
//! the earliest login time.
//!
//! Passwords are set by running `chpasswd` (`-e` for a crypted password) with
//! `user:password\n` on its standard input, through the crate's `run::run_command` (upstream's
//! `ga_run_command`: a new session, output and errors captured together for the error text).

// agent_core::Error carries its message inline (no allocation in the core), so every
// Result in these backends is as large as that message, by design.
#![allow(clippy::result_large_err)]

use std::path::PathBuf;

use agent_core::Command;
use agent_core::Result;
use agent_core::commands::Emitter;
use agent_core::commands::users::{GuestUser, Users};

/// The Linux users backend.
#[derive(Debug)]
pub struct LinuxUsers {
    /// The utmp file (`/var/run/utmp`).
    pub utmp: PathBuf,
    /// The program that sets passwords (`chpasswd`, searched in `PATH`).
    pub chpasswd: PathBuf,
}

impl Default for LinuxUsers {
    fn default() -> Self {
        LinuxUsers {
            utmp: "/var/run/utmp".into(),
            chpasswd: "chpasswd".into(),
        }
    }
}

impl Users for LinuxUsers {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }

    fn users(&mut self, out: &mut Emitter<'_, GuestUser<'static>>) -> Result<()> {
        // A missing utmp file means no sessions, as getutxent reports none.
        let data = std::fs::read(&self.utmp).unwrap_or_default();
        for (user, login_time) in sessions(&data) {
            out.emit(&GuestUser {
                user: &user,
                login_time,
                domain: None,
            });
        }
        Ok(())
    }

    fn set_password(&mut self, username: &str, password: &[u8], crypted: bool) -> Result<()> {
        // Upstream builds the input with "%s:%s\n": both end at a NUL byte.
        let user = username.split('\0').next().unwrap_or("");
        let pw = password.split(|&b| b == 0).next().unwrap_or(&[]);
        let mut input = Vec::with_capacity(user.len() + pw.len() + 2);
        input.extend_from_slice(user.as_bytes());
        input.push(b':');
        input.extend_from_slice(pw);
        input.push(b'\n');
        let program = self.chpasswd.to_string_lossy();
        let argv: &[&str] = if crypted {
            &[&program, "-e"]
        } else {
            &[&program]
        };
        crate::run::run_command(argv, Some(&input), "set user password").map(|_| ())
    }
}

/// glibc's x86_64 `struct utmp` / `struct utmpx` (`<bits/utmp.h>`): record size and the
/// offsets of the fields read here.
pub(crate) mod utmp {
    /// Bytes per record.
    pub const SIZE: usize = 384;
    /// `ut_type`, a 16-bit integer.
    pub const TYPE: usize = 0;
    /// `ut_user`, 32 bytes, NUL-padded.
    pub const USER: usize = 44;
    /// `ut_tv.tv_sec`, a 32-bit integer (`__WORDSIZE_TIME64_COMPAT32`).
    pub const TV_SEC: usize = 340;
    /// `ut_tv.tv_usec`, a 32-bit integer.
    pub const TV_USEC: usize = 344;
    /// `USER_PROCESS`.
    pub const USER_PROCESS: i16 = 7;
}

/// The user sessions in utmp data: `(user, earliest login time)` per user, first-seen order;
/// a trailing partial record is ignored.
pub(crate) fn sessions(data: &[u8]) -> Vec<(String, f64)> {
    let i16_at = |r: &[u8], at: usize| i16::from_ne_bytes([r[at], r[at + 1]]);
    let i32_at = |r: &[u8], at: usize| i32::from_ne_bytes([r[at], r[at + 1], r[at + 2], r[at + 3]]);
    let mut list: Vec<(String, f64)> = Vec::new();
    for r in data.chunks_exact(utmp::SIZE) {
        if i16_at(r, utmp::TYPE) != utmp::USER_PROCESS {
            continue;
        }
        let user = &r[utmp::USER..utmp::USER + 32];
        let end = user.iter().position(|&b| b == 0).unwrap_or(user.len());
        let name = String::from_utf8_lossy(&user[..end]).into_owned();
        let t =
            f64::from(i32_at(r, utmp::TV_SEC)) + f64::from(i32_at(r, utmp::TV_USEC)) / 1_000_000.0;
        match list.iter_mut().find(|(n, _)| *n == name) {
            Some((_, first)) => {
                if t < *first {
                    *first = t;
                }
            }
            None => list.push((name, t)),
        }
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::system::tempdir;
    use crate::commands::system::testing::emitted;

    /// A utmp record as glibc writes it: the fields at their offsets, every other byte zero.
    fn record(kind: i16, user: &str, sec: i32, usec: i32) -> Vec<u8> {
        let mut b = vec![0u8; utmp::SIZE];
        let mut put = |at: usize, bytes: &[u8]| b[at..at + bytes.len()].copy_from_slice(bytes);
        put(utmp::TYPE, &kind.to_ne_bytes());
        put(utmp::USER, &user.as_bytes()[..user.len().min(31)]);
        put(utmp::TV_SEC, &sec.to_ne_bytes());
        put(utmp::TV_USEC, &usec.to_ne_bytes());
        b
    }

    /// The offsets are glibc's own (checked against its `struct utmpx` where the build has it).
    #[cfg(target_env = "gnu")]
    #[test]
    fn offsets_are_glibcs() {
        use std::mem::offset_of;
        assert_eq!(size_of::<libc::utmpx>(), utmp::SIZE);
        assert_eq!(offset_of!(libc::utmpx, ut_type), utmp::TYPE);
        assert_eq!(offset_of!(libc::utmpx, ut_user), utmp::USER);
        assert_eq!(offset_of!(libc::utmpx, ut_tv.tv_sec), utmp::TV_SEC);
        assert_eq!(offset_of!(libc::utmpx, ut_tv.tv_usec), utmp::TV_USEC);
        assert_eq!(libc::USER_PROCESS, utmp::USER_PROCESS);
    }

    #[test]
    fn sessions_first_seen_earliest_login() {
        let mut data = Vec::new();
        data.extend(record(2, "reboot", 10, 0));
        data.extend(record(utmp::USER_PROCESS, "bob", 1700000100, 500000));
        data.extend(record(utmp::USER_PROCESS, "alice", 1700000200, 0));
        data.extend(record(8, "carol", 1, 0));
        data.extend(record(utmp::USER_PROCESS, "bob", 1700000050, 250000));
        data.extend(record(utmp::USER_PROCESS, "bob", 1700000300, 0));
        data.extend_from_slice(&[1, 2, 3]); // a torn record at the end is ignored
        assert_eq!(
            sessions(&data),
            vec![
                ("bob".to_string(), 1700000050.25),
                ("alice".to_string(), 1700000200.0)
            ]
        );
        let dir = tempdir();
        std::fs::write(dir.join("utmp"), &data).unwrap();
        let mut u = LinuxUsers {
            utmp: dir.join("utmp"),
            chpasswd: "chpasswd".into(),
        };
        let got = emitted(|o| u.users(o)).unwrap();
        assert_eq!(
            got,
            [
                r#"{"user": "bob", "login-time": 1700000050.25}"#,
                r#"{"user": "alice", "login-time": 1700000200}"#
            ]
        );
        u.utmp = dir.join("absent");
        assert_eq!(emitted(|o| u.users(o)).unwrap(), Vec::<String>::new());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A stand-in `chpasswd` that records its arguments and input, and fails on request.
    fn fake_chpasswd(dir: &std::path::Path) -> PathBuf {
        let p = dir.join("chpasswd");
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\necho \"$@\" > {d}/args\ncat > {d}/input\n\
                 if grep -q '^fail:' {d}/input; then echo 'chpasswd: bad user' >&2; exit 1; fi\n\
                 if grep -q '^quiet:' {d}/input; then exit 3; fi\n",
                d = dir.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn set_password_runs_chpasswd_with_upstreams_input() {
        let dir = tempdir();
        let mut u = LinuxUsers {
            utmp: dir.join("utmp"),
            chpasswd: fake_chpasswd(&dir),
        };
        u.set_password("alice", b"s3cret", false).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("input")).unwrap(),
            "alice:s3cret\n"
        );
        assert_eq!(std::fs::read_to_string(dir.join("args")).unwrap(), "\n");
        u.set_password("alice", b"$6$abc$def\0ignored", true)
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("input")).unwrap(),
            "alice:$6$abc$def\n"
        );
        assert_eq!(std::fs::read_to_string(dir.join("args")).unwrap(), "-e\n");
        let e = u.set_password("fail", b"x", false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "child process has failed to set user password: chpasswd: bad user\n"
        );
        let e = u.set_password("quiet", b"x", false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "child process has failed to set user password: exit status 3"
        );
        u.chpasswd = dir.join("no-such-program");
        let e = u.set_password("alice", b"x", false).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "child process has failed to set user password: failed to exec '{}': No such file or directory\n",
                dir.join("no-such-program").display()
            )
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn real_utmp_is_read_without_error() {
        let got = emitted(|o| LinuxUsers::default().users(o)).unwrap();
        if !std::path::Path::new("/var/run/utmp").exists() {
            assert!(got.is_empty());
        }
    }
}
