//! An in-memory platform: every family implemented over memory, so that dispatch, argument
//! decoding and result writing are exercised for real.

use crate::commands::clock::*;
use crate::commands::cpus::*;
use crate::commands::disks::*;
use crate::commands::exec::*;
use crate::commands::files::*;
use crate::commands::filesystems::*;
use crate::commands::memory::*;
use crate::commands::network::*;
use crate::commands::power::*;
use crate::commands::ssh_keys::*;
use crate::commands::system::*;
use crate::commands::users::*;
use crate::commands::{Emitter, List, Platform, StrList};
use crate::error::Error;
use crate::error::Result;
use crate::schema::Command;

#[derive(Default)]
pub(crate) struct MemFiles {
    pub files: std::collections::HashMap<String, Vec<u8>>,
    pub open: std::collections::BTreeMap<i64, (String, usize)>,
    pub next: i64,
    /// Make the n-th read (1-based) fail.
    pub fail_read_at: Option<usize>,
    pub reads: usize,
    /// `Files::writes_in_parts`.
    pub in_parts: bool,
    /// A write that would make a file longer than this fails with ENOSPC and writes nothing.
    pub quota: Option<usize>,
    pub writes: usize,
}

impl Files for MemFiles {
    fn has_handle(&self, handle: i64) -> bool {
        self.open.contains_key(&handle)
    }
    fn open(&mut self, path: &str, mode: &str) -> Result<i64> {
        if mode.starts_with('r') && !self.files.contains_key(path) {
            return Err(Error::os(2, "No such file or directory"));
        }
        if mode.starts_with('w') {
            self.files.insert(path.to_string(), Vec::new());
        }
        self.files.entry(path.to_string()).or_default();
        let h = 1000 + self.next;
        self.next += 1;
        let pos = if mode.starts_with('a') {
            self.files[path].len()
        } else {
            0
        };
        self.open.insert(h, (path.to_string(), pos));
        Ok(h)
    }
    fn close(&mut self, handle: i64) -> Result<()> {
        self.open.remove(&handle);
        Ok(())
    }
    fn read(&mut self, handle: i64, buf: &mut [u8]) -> Result<usize> {
        self.reads += 1;
        if self.fail_read_at == Some(self.reads) {
            return Err(Error::os(5, "Input/output error"));
        }
        let (path, pos) = self.open.get_mut(&handle).ok_or(Error::NoHandle(handle))?;
        let data = &self.files[path.as_str()];
        // Another handle may have truncated the file.
        *pos = (*pos).min(data.len());
        let n = buf.len().min(data.len() - *pos);
        buf[..n].copy_from_slice(&data[*pos..*pos + n]);
        *pos += n;
        Ok(n)
    }
    fn writes_in_parts(&self) -> bool {
        self.in_parts
    }
    fn write(&mut self, handle: i64, data: &[u8]) -> Result<GuestFileWrite> {
        self.writes += 1;
        let (path, pos) = self.open.get_mut(&handle).ok_or(Error::NoHandle(handle))?;
        if self.quota.is_some_and(|q| *pos + data.len() > q) {
            return Err(Error::os(28, "No space left on device"));
        }
        let file = self.files.get_mut(path.as_str()).unwrap();
        if file.len() < *pos + data.len() {
            file.resize(*pos + data.len(), 0);
        }
        file[*pos..*pos + data.len()].copy_from_slice(data);
        *pos += data.len();
        Ok(GuestFileWrite {
            count: data.len() as i64,
            eof: false,
        })
    }
    fn seek(&mut self, handle: i64, offset: i64, whence: Seek) -> Result<GuestFileSeek> {
        let (path, pos) = self.open.get_mut(&handle).ok_or(Error::NoHandle(handle))?;
        let len = self.files[path.as_str()].len() as i64;
        let base = match whence {
            Seek::Set => 0,
            Seek::Cur => *pos as i64,
            Seek::End => len,
        };
        let p = base + offset;
        if p < 0 {
            return Err(Error::os(22, "Invalid argument"));
        }
        *pos = p as usize;
        Ok(GuestFileSeek {
            position: p,
            eof: false,
        })
    }
    fn flush(&mut self, _handle: i64) -> Result<()> {
        Ok(())
    }
}

#[derive(Default)]
pub(crate) struct MemClock {
    pub now: i64,
    pub set: Vec<Option<i64>>,
}

impl Clock for MemClock {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }
    fn get_time(&mut self) -> Result<i64> {
        Ok(self.now)
    }
    fn set_time(&mut self, time: Option<i64>) -> Result<()> {
        self.set.push(time);
        Ok(())
    }
}

#[derive(Default)]
pub(crate) struct MemPower {
    pub calls: Vec<String>,
    pub fail: bool,
    /// What the transport had been handed when `shutdown` ran.
    pub sent: Option<std::rc::Rc<std::cell::RefCell<Vec<Vec<u8>>>>>,
}

impl Power for MemPower {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }
    fn shutdown(&mut self, mode: ShutdownMode) -> Result<()> {
        self.calls.push(format!("shutdown {}", mode.as_str()));
        if let Some(sent) = &self.sent {
            self.calls
                .push(format!("sends before: {}", sent.borrow().len()));
        }
        if self.fail {
            Err(Error::msg(format_args!(
                "child process has failed to shutdown: exit status 1"
            )))
        } else {
            Ok(())
        }
    }
    fn suspend(&mut self, mode: SuspendMode) -> Result<()> {
        self.calls.push(format!("suspend {}", mode.as_str()));
        Err(Error::msg(format_args!(
            "the requested suspend mode is not supported by the guest"
        )))
    }
}

#[derive(Default)]
pub(crate) struct MemFs {
    pub frozen: bool,
    pub froze: Vec<Option<Vec<String>>>,
}

impl Filesystems for MemFs {
    fn status(&mut self) -> FsfreezeStatus {
        if self.frozen {
            FsfreezeStatus::Frozen
        } else {
            FsfreezeStatus::Thawed
        }
    }
    fn freeze(&mut self, mountpoints: Option<StrList<'_>>) -> Result<i64> {
        let list = mountpoints.map(|l| l.iter().map(String::from).collect::<Vec<_>>());
        let n = list.as_ref().map_or(2, |l| l.len() as i64);
        self.froze.push(list);
        self.frozen = n > 0;
        Ok(n)
    }
    fn thaw(&mut self) -> Result<i64> {
        self.frozen = false;
        Ok(2)
    }
    fn fstrim(
        &mut self,
        minimum: Option<i64>,
        out: &mut Emitter<'_, GuestFilesystemTrimResult<'static>>,
    ) -> Result<()> {
        out.emit(&GuestFilesystemTrimResult {
            path: "/b",
            trimmed: Some(4096),
            minimum: Some(minimum.unwrap_or(0)),
            error: None,
        });
        out.emit(&GuestFilesystemTrimResult {
            path: "/a",
            trimmed: None,
            minimum: None,
            error: Some("trim not supported"),
        });
        Ok(())
    }
}

#[derive(Default)]
pub(crate) struct MemCpus {
    pub set: Vec<(i64, bool)>,
    /// Fail the whole list part-way: emit this many then fail.
    pub fail_after: Option<usize>,
}

impl Cpus for MemCpus {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }
    fn vcpus(&mut self, out: &mut Emitter<'_, GuestLogicalProcessor>) -> Result<()> {
        for i in 0..2 {
            if self.fail_after == Some(i as usize) {
                return Err(Error::os(2, "No such file or directory"));
            }
            out.emit(&GuestLogicalProcessor {
                logical_id: i,
                online: true,
                can_offline: Some(i != 0),
            });
        }
        Ok(())
    }
    fn set_vcpus(&mut self, vcpus: List<'_, GuestLogicalProcessor>) -> Result<i64> {
        for v in vcpus.iter() {
            self.set.push((v.logical_id, v.online));
        }
        Ok(vcpus.len() as i64)
    }
    fn cpustats(&mut self, out: &mut Emitter<'_, GuestLinuxCpuStats>) -> Result<()> {
        out.emit(&GuestLinuxCpuStats {
            r#type: "linux",
            cpu: 0,
            user: 10,
            nice: 0,
            system: 5,
            idle: 100,
            ..Default::default()
        });
        Ok(())
    }
    fn load(&mut self) -> Result<GuestLoadAverage> {
        Ok(GuestLoadAverage {
            load1m: 0.08,
            load5m: 1.0,
            load15m: 0.5,
        })
    }
}

#[derive(Default)]
pub(crate) struct MemMemory;

impl Memory for MemMemory {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }
    fn blocks(&mut self, out: &mut Emitter<'_, GuestMemoryBlock>) -> Result<()> {
        out.emit(&GuestMemoryBlock {
            phys_index: 0,
            online: true,
            can_offline: Some(false),
        });
        Ok(())
    }
    fn set_blocks(
        &mut self,
        blocks: List<'_, GuestMemoryBlock>,
        out: &mut Emitter<'_, GuestMemoryBlockResponse>,
    ) -> Result<()> {
        for b in blocks.iter() {
            out.emit(&GuestMemoryBlockResponse {
                phys_index: b.phys_index,
                response: GuestMemoryBlockResponseType::NotFound,
                error_code: None,
            });
        }
        Ok(())
    }
    fn block_info(&mut self) -> Result<GuestMemoryBlockInfo> {
        Ok(GuestMemoryBlockInfo { size: 134217728 })
    }
}

#[derive(Default)]
pub(crate) struct MemUsers {
    pub passwords: Vec<(String, Vec<u8>, bool)>,
}

impl Users for MemUsers {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }
    fn users(&mut self, out: &mut Emitter<'_, GuestUser<'static>>) -> Result<()> {
        let name = String::from("root");
        out.emit(&GuestUser {
            user: &name,
            login_time: 1700000000.25,
            domain: None,
        });
        Ok(())
    }
    fn set_password(&mut self, username: &str, password: &[u8], crypted: bool) -> Result<()> {
        self.passwords
            .push((username.into(), password.into(), crypted));
        Ok(())
    }
}

#[derive(Default)]
pub(crate) struct MemSsh {
    pub keys: Vec<String>,
}

impl SshKeys for MemSsh {
    fn get(&mut self, username: &str, out: &mut Emitter<'_, &'static str>) -> Result<()> {
        if username != "root" {
            return Err(Error::msg(format_args!(
                "failed to lookup user '{username}': Success"
            )));
        }
        for k in self.keys.iter().rev() {
            out.emit(&k.as_str());
        }
        Ok(())
    }
    fn add(&mut self, _username: &str, keys: StrList<'_>, reset: bool) -> Result<()> {
        if reset {
            self.keys.clear();
        }
        for k in keys.iter() {
            if !self.keys.iter().any(|x| x == k) {
                self.keys.push(k.into());
            }
        }
        Ok(())
    }
    fn remove(&mut self, _username: &str, keys: StrList<'_>) -> Result<()> {
        let rm: Vec<&str> = keys.iter().collect();
        self.keys.retain(|k| !rm.contains(&k.as_str()));
        Ok(())
    }
}

/// What one `guest-exec` received: path, args, env, stdin, capture mode.
pub(crate) type Started = (
    String,
    Vec<String>,
    Option<Vec<String>>,
    Option<Vec<u8>>,
    CaptureMode,
);

#[derive(Default)]
pub(crate) struct MemExec {
    pub started: Vec<Started>,
}

impl Exec for MemExec {
    fn exec(&mut self, args: ExecArgs<'_>) -> Result<i64> {
        if args.path == "/bin/invalid-cmd42" {
            return Err(Error::msg(format_args!(
                "Failed to execute child process \u{201C}/bin/invalid-cmd42\u{201D} (No such file or directory)"
            )));
        }
        self.started.push((
            args.path.into(),
            args.arg
                .map(|a| a.iter().map(String::from).collect())
                .unwrap_or_default(),
            args.env.map(|a| a.iter().map(String::from).collect()),
            args.input_data.map(|d| d.to_vec()),
            args.capture,
        ));
        Ok(4400 + self.started.len() as i64)
    }
    fn status(&mut self, pid: i64) -> Result<GuestExecStatus<'_>> {
        if pid != 4401 {
            return Err(Error::msg(format_args!("PID {pid} does not exist")));
        }
        Ok(GuestExecStatus {
            exited: true,
            exitcode: Some(0),
            out_data: Some(crate::commands::Base64(b"\" test_str \"")),
            out_truncated: Some(false),
            ..Default::default()
        })
    }
}

#[derive(Default)]
pub(crate) struct MemSystem;

impl System for MemSystem {
    fn host_name(&mut self) -> Result<&str> {
        Ok("guest")
    }
    fn timezone(&mut self) -> Result<GuestTimezone<'_>> {
        Ok(GuestTimezone {
            zone: Some("UTC"),
            offset: 0,
        })
    }
    fn osinfo(&mut self) -> Result<GuestOsInfo<'_>> {
        Ok(GuestOsInfo {
            id: Some("debian"),
            ..Default::default()
        })
    }
}

#[derive(Default)]
pub(crate) struct MemDisks;

impl Disks for MemDisks {
    fn fsinfo(&mut self, out: &mut Emitter<'_, GuestFilesystemInfo<'static>>) -> Result<()> {
        out.emit(&GuestFilesystemInfo {
            name: "vda1",
            mountpoint: "/",
            r#type: "ext4",
            disk: &[],
            ..Default::default()
        });
        Ok(())
    }
    fn disks(&mut self, _out: &mut Emitter<'_, GuestDiskInfo<'static>>) -> Result<()> {
        Err(Error::Unsupported)
    }
    fn diskstats(&mut self, _out: &mut Emitter<'_, GuestDiskStatsInfo<'static>>) -> Result<()> {
        Ok(())
    }
}

#[derive(Default)]
pub(crate) struct MemNetwork;

impl Network for MemNetwork {
    fn interfaces(&mut self, out: &mut Emitter<'_, GuestNetworkInterface<'static>>) -> Result<()> {
        out.emit(&GuestNetworkInterface {
            name: "lo",
            hardware_address: Some("00:00:00:00:00:00"),
            ..Default::default()
        });
        Ok(())
    }
    fn routes(&mut self, _out: &mut Emitter<'_, GuestNetworkRoute<'static>>) -> Result<()> {
        Ok(())
    }
}

/// Every family over memory; a family set to `None` is "not provided".
#[derive(Default)]
pub(crate) struct MemPlatform {
    pub files: Option<MemFiles>,
    pub clock: Option<MemClock>,
    pub power: Option<MemPower>,
    pub fs: Option<MemFs>,
    pub cpus: Option<MemCpus>,
    pub memory: Option<MemMemory>,
    pub users: Option<MemUsers>,
    pub ssh: Option<MemSsh>,
    pub exec: Option<MemExec>,
    pub system: Option<MemSystem>,
    pub disks: Option<MemDisks>,
    pub network: Option<MemNetwork>,
}

impl MemPlatform {
    pub fn full() -> Self {
        MemPlatform {
            files: Some(Default::default()),
            clock: Some(MemClock {
                now: 1_795_438_762_351_795_000,
                set: vec![],
            }),
            power: Some(Default::default()),
            fs: Some(Default::default()),
            cpus: Some(Default::default()),
            memory: Some(MemMemory),
            users: Some(Default::default()),
            ssh: Some(Default::default()),
            exec: Some(Default::default()),
            system: Some(MemSystem),
            disks: Some(MemDisks),
            network: Some(MemNetwork),
        }
    }
}

impl Platform for MemPlatform {
    fn version(&self) -> &str {
        "10.2.50"
    }
    fn clock(&mut self) -> Option<&mut dyn Clock> {
        self.clock.as_mut().map(|b| b as _)
    }
    fn power(&mut self) -> Option<&mut dyn Power> {
        self.power.as_mut().map(|b| b as _)
    }
    fn files(&mut self) -> Option<&mut dyn Files> {
        self.files.as_mut().map(|b| b as _)
    }
    fn filesystems(&mut self) -> Option<&mut dyn Filesystems> {
        self.fs.as_mut().map(|b| b as _)
    }
    fn disks(&mut self) -> Option<&mut dyn Disks> {
        self.disks.as_mut().map(|b| b as _)
    }
    fn network(&mut self) -> Option<&mut dyn Network> {
        self.network.as_mut().map(|b| b as _)
    }
    fn cpus(&mut self) -> Option<&mut dyn Cpus> {
        self.cpus.as_mut().map(|b| b as _)
    }
    fn memory(&mut self) -> Option<&mut dyn Memory> {
        self.memory.as_mut().map(|b| b as _)
    }
    fn users(&mut self) -> Option<&mut dyn Users> {
        self.users.as_mut().map(|b| b as _)
    }
    fn ssh_keys(&mut self) -> Option<&mut dyn SshKeys> {
        self.ssh.as_mut().map(|b| b as _)
    }
    fn exec(&mut self) -> Option<&mut dyn Exec> {
        self.exec.as_mut().map(|b| b as _)
    }
    fn system(&mut self) -> Option<&mut dyn System> {
        self.system.as_mut().map(|b| b as _)
    }
}

#[allow(dead_code)]
fn _unused(_: Command) {}
