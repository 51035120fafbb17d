//! `guest-get-vcpus`, `guest-set-vcpus`, `guest-get-cpustats` and `guest-get-load` on Linux.
//!
//! The vCPU commands walk `/sys/devices/system/cpu` the way upstream does (readdir order,
//! `cpuN/online` read and written one byte at a time, a missing `online` file meaning "always
//! on"), so that libvirt sees the same list and the same errors. The sysfs root and the
//! `/proc/stat` path are fields, so tests run the same code against temporary trees instead of
//! the host's real CPUs.

// agent_core::Error carries its message inline (no allocation in the core), so every
// Result in these backends is as large as that message, by design.
#![allow(clippy::result_large_err)]

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;

use agent_core::Command;
use agent_core::Error;
use agent_core::Result;
use agent_core::commands::cpus::{
    Cpus, GuestLinuxCpuStats, GuestLoadAverage, GuestLogicalProcessor,
};
use agent_core::commands::{Emitter, List};

use super::system::{errno_msg, errno_of, strerror};

/// The Linux vCPU backend.
#[derive(Debug)]
pub struct LinuxCpus {
    /// `/sys/devices/system/cpu`.
    pub cpu_dir: PathBuf,
    /// `/proc/stat`.
    pub stat_path: PathBuf,
}

impl Default for LinuxCpus {
    fn default() -> Self {
        LinuxCpus {
            cpu_dir: "/sys/devices/system/cpu".into(),
            stat_path: "/proc/stat".into(),
        }
    }
}

impl Cpus for LinuxCpus {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }

    fn vcpus(&mut self, out: &mut Emitter<'_, GuestLogicalProcessor>) -> Result<()> {
        for v in self.get_vcpus()? {
            out.emit(&v);
        }
        Ok(())
    }

    fn set_vcpus(&mut self, vcpus: List<'_, GuestLogicalProcessor>) -> Result<i64> {
        self.set_vcpus_from(vcpus.iter())
    }

    fn cpustats(&mut self, out: &mut Emitter<'_, GuestLinuxCpuStats>) -> Result<()> {
        let text = std::fs::read(&self.stat_path)
            .map_err(|e| errno_msg(format_args!("open(\"{}\")", self.stat_path.display()), &e))?;
        for s in parse_cpustats(&String::from_utf8_lossy(&text), clk_tck()) {
            out.emit(&s);
        }
        Ok(())
    }

    fn load(&mut self) -> Result<GuestLoadAverage> {
        let avg = crate::sys::glibc::load_average().map_err(|e| {
            Error::msg(format_args!(
                "cannot query load average: {}",
                strerror(errno_of(&e))
            ))
        })?;
        Ok(GuestLoadAverage {
            load1m: avg[0],
            load5m: avg[1],
            load15m: avg[2],
        })
    }
}

impl LinuxCpus {
    /// Every `cpuN` entry in readdir order with its state; any failure fails the whole list.
    pub fn get_vcpus(&self) -> Result<Vec<GuestLogicalProcessor>> {
        let dir = std::fs::read_dir(&self.cpu_dir).map_err(|e| {
            errno_msg(
                format_args!("failed to list entries: {}", self.cpu_dir.display()),
                &e,
            )
        })?;
        let mut list = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| {
                errno_msg(
                    format_args!("failed to list entries: {}", self.cpu_dir.display()),
                    &e,
                )
            })?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix("cpu"))
                .and_then(scan_i64)
            else {
                continue;
            };
            let mut v = GuestLogicalProcessor {
                logical_id: id,
                online: false,
                can_offline: None,
            };
            self.transfer(&mut v, true)?;
            list.push(v);
        }
        Ok(list)
    }

    /// Apply `vcpus` in order; stop at the first failure. The number applied, or the first
    /// element's error.
    pub fn set_vcpus_from(
        &self,
        vcpus: impl Iterator<Item = GuestLogicalProcessor>,
    ) -> Result<i64> {
        let mut processed = 0i64;
        for mut v in vcpus {
            if let Err(e) = self.transfer(&mut v, false) {
                if processed == 0 {
                    return Err(e);
                }
                break;
            }
            processed += 1;
        }
        Ok(processed)
    }

    /// Upstream's `transfer_vcpu`: read the state into `v` (`sys2vcpu`) or apply `v`'s state.
    fn transfer(&self, v: &mut GuestLogicalProcessor, sys2vcpu: bool) -> Result<()> {
        // Upstream's path ends in '/', and its messages show "cpuN//online".
        let dirpath = format!("{}/cpu{}/", self.cpu_dir.display(), v.logical_id);
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&dirpath)
            .map_err(|e| errno_msg(format_args!("open(\"{dirpath}\")"), &e))?;
        drop(dir);
        let online_path = format!("{dirpath}/online");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!sys2vcpu)
            .open(&online_path);
        let file: File = match file {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if sys2vcpu {
                    v.online = true;
                    v.can_offline = Some(false);
                } else if !v.online {
                    return Err(Error::msg(format_args!(
                        "logical processor #{} can't be offlined",
                        v.logical_id
                    )));
                }
                return Ok(());
            }
            Err(e) => return Err(errno_msg(format_args!("open(\"{online_path}\")"), &e)),
        };
        let mut status = [0u8; 1];
        let n = file
            .read_at(&mut status, 0)
            .map_err(|e| errno_msg(format_args!("pread(\"{online_path}\")"), &e))?;
        if n == 0 {
            return Err(Error::msg(format_args!(
                "pread(\"{online_path}\"): unexpected EOF"
            )));
        }
        let is_online = status[0] != b'0';
        if sys2vcpu {
            v.online = is_online;
            v.can_offline = Some(true);
        } else if v.online != is_online {
            let b = if v.online { b"1" } else { b"0" };
            file.write_at(b, 0)
                .map_err(|e| errno_msg(format_args!("pwrite(\"{online_path}\")"), &e))?;
        }
        Ok(())
    }
}

/// `sysconf(_SC_CLK_TCK)` (the kernel's `AT_CLKTCK`), the unit of `/proc/stat` (100 if
/// unknown).
fn clk_tck() -> u64 {
    let t = rustix::param::clock_ticks_per_second();
    if t > 0 { t } else { 100 }
}

/// `sscanf("%ld")` on the start of `s`: optional blanks and sign, then at least one digit;
/// anything after the digits is ignored.
fn scan_i64(s: &str) -> Option<i64> {
    // Two's-complement wrapping makes the unsigned scan's bits those of strtol's result.
    scan_u64_token(s.trim_start()).map(|(v, _)| v as i64)
}

/// `sscanf("%lu")` on one whitespace-separated token: digits (a leading `-` wraps), with
/// trailing garbage ending the conversion after it, as C does.
fn scan_u64_token(tok: &str) -> Option<(u64, bool)> {
    let (neg, digits) = match tok.as_bytes().first() {
        Some(b'-') => (true, &tok[1..]),
        Some(b'+') => (false, &tok[1..]),
        _ => (false, tok),
    };
    let end = digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        return None;
    }
    let mut v: u64 = 0;
    for b in digits[..end].bytes() {
        v = v.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
    }
    Some((if neg { v.wrapping_neg() } else { v }, end == digits.len()))
}

/// `/proc/stat` to per-CPU statistics in milliseconds, with upstream's field-count rules
/// (`i` counts the name too): iowait if i > 5, irq and softirq if i > 6, steal if i > 8,
/// guest if i > 9, guestnice if i > 10. The aggregate `cpu` line is skipped and a `cpuN`
/// line with fewer than four values ends the list.
pub(crate) fn parse_cpustats(text: &str, clk_tck: u64) -> Vec<GuestLinuxCpuStats> {
    let mut list = Vec::new();
    let ms = |x: u64| x.wrapping_mul(1000) / clk_tck.max(1);
    for line in text.lines() {
        let mut toks = line.split_ascii_whitespace();
        let Some(name) = toks.next() else { continue };
        let Some(num) = name.strip_prefix("cpu") else {
            continue;
        };
        if num.is_empty() {
            continue;
        }
        let mut vals = [0u64; 10];
        let mut i = 1;
        for slot in vals.iter_mut() {
            let Some(tok) = toks.next() else { break };
            let Some((v, whole)) = scan_u64_token(tok) else {
                break;
            };
            *slot = v;
            i += 1;
            if !whole {
                break;
            }
        }
        if i < 5 {
            break;
        }
        let [
            user,
            nice,
            system,
            idle,
            iowait,
            irq,
            softirq,
            steal,
            guest,
            guestnice,
        ] = vals;
        list.push(GuestLinuxCpuStats {
            r#type: "linux",
            cpu: scan_i64(num).unwrap_or(0),
            user: ms(user),
            nice: ms(nice),
            system: ms(system),
            idle: ms(idle),
            iowait: (i > 5).then(|| ms(iowait)),
            irq: (i > 6).then(|| ms(irq)),
            softirq: (i > 6).then(|| ms(softirq)),
            steal: (i > 8).then(|| ms(steal)),
            guest: (i > 9).then(|| ms(guest)),
            guestnice: (i > 10).then(|| ms(guestnice)),
        });
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::system::tempdir;
    use crate::commands::system::testing::emitted;

    fn fake_sysfs(cpus: &[(u32, Option<&str>)]) -> (PathBuf, LinuxCpus) {
        let root = tempdir();
        for (n, online) in cpus {
            let d = root.join(format!("cpu{n}"));
            std::fs::create_dir_all(&d).unwrap();
            if let Some(s) = online {
                std::fs::write(d.join("online"), s).unwrap();
            }
        }
        std::fs::create_dir_all(root.join("cpufreq")).unwrap();
        std::fs::write(root.join("online"), "0-3\n").unwrap();
        let c = LinuxCpus {
            cpu_dir: root.clone(),
            stat_path: root.join("stat"),
        };
        (root, c)
    }

    #[test]
    fn vcpus_from_a_fake_tree() {
        let (root, c) = fake_sysfs(&[(0, None), (1, Some("1\n")), (2, Some("0\n"))]);
        let mut got = c.get_vcpus().unwrap();
        got.sort_by_key(|v| v.logical_id);
        assert_eq!(
            got,
            vec![
                GuestLogicalProcessor {
                    logical_id: 0,
                    online: true,
                    can_offline: Some(false)
                },
                GuestLogicalProcessor {
                    logical_id: 1,
                    online: true,
                    can_offline: Some(true)
                },
                GuestLogicalProcessor {
                    logical_id: 2,
                    online: false,
                    can_offline: Some(true)
                },
            ]
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn set_vcpus_writes_only_changes_and_stops_at_errors() {
        let (root, c) = fake_sysfs(&[(0, None), (1, Some("1\n")), (2, Some("0\n"))]);
        let v = |id, online| GuestLogicalProcessor {
            logical_id: id,
            online,
            can_offline: None,
        };
        assert_eq!(
            c.set_vcpus_from([v(1, false), v(2, true), v(0, true)].into_iter())
                .unwrap(),
            3
        );
        assert_eq!(
            std::fs::read_to_string(root.join("cpu1/online")).unwrap(),
            "0\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("cpu2/online")).unwrap(),
            "1\n"
        );
        // cpu0 has no online file: offlining it fails; as the first element it is an error.
        let e = c.set_vcpus_from([v(0, false)].into_iter()).unwrap_err();
        assert_eq!(e.to_string(), "logical processor #0 can't be offlined");
        // Later failures just end the count.
        assert_eq!(
            c.set_vcpus_from([v(1, true), v(0, false), v(2, false)].into_iter())
                .unwrap(),
            1
        );
        assert_eq!(
            std::fs::read_to_string(root.join("cpu2/online")).unwrap(),
            "1\n"
        );
        let e = c.set_vcpus_from([v(9, true)].into_iter()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "open(\"{}/cpu9/\"): No such file or directory",
                root.display()
            )
        );
        assert_eq!(c.set_vcpus_from([].into_iter()).unwrap(), 0);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn empty_online_file_is_an_error() {
        let (root, c) = fake_sysfs(&[(3, Some(""))]);
        let e = c.get_vcpus().unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("pread(\"{}/cpu3//online\"): unexpected EOF", root.display())
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn cpustats_field_counts_and_units() {
        let text = "cpu  10 20 30 40 50 60 70 80 90 100\n\
                    cpu0 100 200 300 400 500 600 700 800 900 1000\n\
                    cpu1 1 2 3 4\n\
                    cpu2 1 2 3 4 5 6\n\
                    intr 1 2 3\n\
                    cpu3 1 2\n\
                    cpu4 1 2 3 4\n";
        let s = parse_cpustats(text, 100);
        assert_eq!(s.len(), 3, "cpu3 ends the list");
        assert_eq!(s[0].cpu, 0);
        assert_eq!((s[0].user, s[0].idle), (1000, 4000));
        assert_eq!(s[0].guestnice, Some(10000));
        assert_eq!(s[1].iowait, None);
        assert_eq!(
            (s[2].iowait, s[2].irq, s[2].softirq, s[2].steal),
            (Some(50), Some(60), Some(0), None)
        );
        let json = crate::commands::system::testing::json(&s[1]);
        assert_eq!(
            json,
            r#"{"type": "linux", "cpu": 1, "user": 10, "nice": 20, "system": 30, "idle": 40}"#
        );
    }

    #[test]
    fn real_vcpus_match_sysfs() {
        let c = LinuxCpus::default();
        let got = emitted(|o| LinuxCpus::default().vcpus(o)).unwrap();
        let dirs = std::fs::read_dir("/sys/devices/system/cpu")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name().into_string().unwrap();
                n.strip_prefix("cpu")
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            })
            .count();
        assert_eq!(got.len(), dirs);
        let v = c.get_vcpus().unwrap();
        assert!(v.iter().any(|p| p.logical_id == 0));
    }

    #[test]
    fn real_cpustats_have_one_entry_per_cpu_line() {
        let got = emitted(|o| LinuxCpus::default().cpustats(o)).unwrap();
        let stat = std::fs::read_to_string("/proc/stat").unwrap();
        let lines = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .count();
        assert_eq!(got.len(), lines);
        let nproc = std::process::Command::new("nproc")
            .arg("--all")
            .output()
            .unwrap();
        let nproc: usize = String::from_utf8(nproc.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(got.len(), nproc);
        assert!(got[0].contains("\"type\": \"linux\""));
    }

    #[test]
    fn real_load_matches_proc_loadavg() {
        let l = LinuxCpus::default().load().unwrap();
        let text = std::fs::read_to_string("/proc/loadavg").unwrap();
        let first: f64 = text.split(' ').next().unwrap().parse().unwrap();
        assert!(l.load1m >= 0.0 && l.load5m >= 0.0 && l.load15m >= 0.0);
        assert!((l.load1m - first).abs() < 1.0, "{} vs {}", l.load1m, first);
    }
}
