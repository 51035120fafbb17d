//! A platform with every family, over memory, for the fuzz targets.
#![allow(dead_code)]

use std::collections::BTreeMap;

use agent_core::commands::cpu::*;
use agent_core::commands::disk::*;
use agent_core::commands::exec::*;
use agent_core::commands::file::*;
use agent_core::commands::fs::*;
use agent_core::commands::memory::*;
use agent_core::commands::network::*;
use agent_core::commands::power::*;
use agent_core::commands::ssh::*;
use agent_core::commands::system::*;
use agent_core::commands::time::*;
use agent_core::commands::user::*;
use agent_core::commands::{Emitter, List, Platform, Result, StrList};
use agent_core::{Error, Transmit, TxError};

/// Collects responses and checks their shape as they arrive.
#[derive(Default)]
pub struct Collect(pub Vec<u8>);

impl Transmit for Collect {
    fn send(&mut self, bytes: &[u8]) -> core::result::Result<(), TxError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// Every response is one line of ASCII, optionally after one 0xFF.
pub fn check_responses(out: &[u8]) {
    for line in out.split_inclusive(|&b| b == b'\n') {
        assert_eq!(line.last(), Some(&b'\n'), "unterminated response");
        let body = line.strip_prefix(&[0xFF]).unwrap_or(line);
        assert!(body.starts_with(b"{\""), "not an object: {:?}", String::from_utf8_lossy(line));
        assert!(body.iter().all(|&b| b.is_ascii() && b != 0xFF), "non-ASCII response");
        assert_eq!(body.iter().filter(|&&b| b == b'\n').count(), 1);
    }
}

#[derive(Default)]
pub struct Mem {
    files: BTreeMap<i64, (Vec<u8>, usize)>,
    next: i64,
    frozen: bool,
}

impl Files for Mem {
    fn has_handle(&self, handle: i64) -> bool {
        self.files.contains_key(&handle)
    }
    fn open(&mut self, path: &str, _mode: &str) -> Result<i64> {
        if path.is_empty() {
            return Err(Error::os(2, "No such file or directory"));
        }
        let h = 1000 + self.next;
        self.next += 1;
        self.files.insert(h, (path.as_bytes().repeat(3), 0));
        Ok(h)
    }
    fn close(&mut self, handle: i64) -> Result<()> {
        self.files.remove(&handle);
        Ok(())
    }
    fn read(&mut self, handle: i64, buf: &mut [u8]) -> Result<usize> {
        let (data, pos) = self.files.get_mut(&handle).ok_or(Error::NoHandle(handle))?;
        let n = buf.len().min(data.len() - *pos);
        buf[..n].copy_from_slice(&data[*pos..*pos + n]);
        *pos += n;
        Ok(n)
    }
    fn write(&mut self, handle: i64, data: &[u8]) -> Result<GuestFileWrite> {
        let (file, _) = self.files.get_mut(&handle).ok_or(Error::NoHandle(handle))?;
        file.extend_from_slice(data);
        Ok(GuestFileWrite { count: data.len() as i64, eof: false })
    }
    fn seek(&mut self, handle: i64, offset: i64, _whence: Seek) -> Result<GuestFileSeek> {
        let (data, pos) = self.files.get_mut(&handle).ok_or(Error::NoHandle(handle))?;
        if offset < 0 || offset as usize > data.len() {
            return Err(Error::os(22, "Invalid argument"));
        }
        *pos = offset as usize;
        Ok(GuestFileSeek { position: offset, eof: false })
    }
    fn flush(&mut self, _handle: i64) -> Result<()> {
        Ok(())
    }
}

impl Clock for Mem {
    fn get_time(&mut self) -> Result<i64> {
        Ok(1)
    }
    fn set_time(&mut self, _time: Option<i64>) -> Result<()> {
        Ok(())
    }
}

impl Power for Mem {
    fn shutdown(&mut self, _mode: ShutdownMode) -> Result<()> {
        Ok(())
    }
    fn suspend(&mut self, _mode: SuspendMode) -> Result<()> {
        Err(Error::msg(format_args!("the requested suspend mode is not supported by the guest")))
    }
}

impl Filesystems for Mem {
    fn status(&mut self) -> FsfreezeStatus {
        if self.frozen { FsfreezeStatus::Frozen } else { FsfreezeStatus::Thawed }
    }
    fn freeze(&mut self, m: Option<StrList<'_>>) -> Result<i64> {
        let n = m.map_or(1, |l| l.len() as i64);
        self.frozen = n > 0;
        Ok(n)
    }
    fn thaw(&mut self) -> Result<i64> {
        self.frozen = false;
        Ok(1)
    }
    fn fstrim(&mut self, minimum: Option<i64>, out: &mut Emitter<'_, GuestFilesystemTrimResult<'static>>) -> Result<()> {
        out.emit(&GuestFilesystemTrimResult { path: "/", trimmed: Some(1), minimum, error: None });
        Ok(())
    }
}

impl Cpus for Mem {
    fn vcpus(&mut self, out: &mut Emitter<'_, GuestLogicalProcessor>) -> Result<()> {
        out.emit(&GuestLogicalProcessor { logical_id: 0, online: true, can_offline: None });
        Ok(())
    }
    fn set_vcpus(&mut self, vcpus: List<'_, GuestLogicalProcessor>) -> Result<i64> {
        Ok(vcpus.iter().count() as i64)
    }
    fn cpustats(&mut self, _out: &mut Emitter<'_, GuestLinuxCpuStats>) -> Result<()> {
        Err(Error::os(2, "No such file or directory"))
    }
    fn load(&mut self) -> Result<GuestLoadAverage> {
        Ok(GuestLoadAverage { load1m: 0.1, load5m: 0.2, load15m: f64::NAN })
    }
}

impl Memory for Mem {
    fn blocks(&mut self, _out: &mut Emitter<'_, GuestMemoryBlock>) -> Result<()> {
        Ok(())
    }
    fn set_blocks(&mut self, blocks: List<'_, GuestMemoryBlock>, out: &mut Emitter<'_, GuestMemoryBlockResponse>) -> Result<()> {
        for b in blocks.iter() {
            out.emit(&GuestMemoryBlockResponse { phys_index: b.phys_index, response: GuestMemoryBlockResponseType::Success, error_code: None });
        }
        Ok(())
    }
    fn block_info(&mut self) -> Result<GuestMemoryBlockInfo> {
        Ok(GuestMemoryBlockInfo { size: 1 })
    }
}

impl Users for Mem {
    fn users(&mut self, _out: &mut Emitter<'_, GuestUser<'static>>) -> Result<()> {
        Ok(())
    }
    fn set_password(&mut self, _u: &str, _p: &[u8], _c: bool) -> Result<()> {
        Ok(())
    }
}

impl SshKeys for Mem {
    fn get(&mut self, username: &str, out: &mut Emitter<'_, &'static str>) -> Result<()> {
        out.emit(&username);
        Ok(())
    }
    fn add(&mut self, _u: &str, keys: StrList<'_>, _reset: bool) -> Result<()> {
        keys.iter().for_each(drop);
        Ok(())
    }
    fn remove(&mut self, _u: &str, _keys: StrList<'_>) -> Result<()> {
        Ok(())
    }
}

impl Exec for Mem {
    fn exec(&mut self, args: ExecArgs<'_>) -> Result<i64> {
        Ok(args.path.len() as i64 + args.input_data.map_or(0, |d| d.len() as i64))
    }
    fn status(&mut self, pid: i64) -> Result<GuestExecStatus<'_>> {
        Err(Error::msg(format_args!("PID {pid} does not exist")))
    }
}

impl System for Mem {
    fn host_name(&mut self) -> Result<&str> {
        Ok("fuzz")
    }
    fn timezone(&mut self) -> Result<GuestTimezone<'_>> {
        Ok(GuestTimezone { zone: None, offset: 0 })
    }
    fn osinfo(&mut self) -> Result<GuestOsInfo<'_>> {
        Ok(GuestOsInfo::default())
    }
}

impl Disks for Mem {
    fn fsinfo(&mut self, _out: &mut Emitter<'_, GuestFilesystemInfo<'static>>) -> Result<()> {
        Ok(())
    }
    fn disks(&mut self, _out: &mut Emitter<'_, GuestDiskInfo<'static>>) -> Result<()> {
        Ok(())
    }
    fn diskstats(&mut self, _out: &mut Emitter<'_, GuestDiskStatsInfo<'static>>) -> Result<()> {
        Ok(())
    }
}

impl Network for Mem {
    fn interfaces(&mut self, _out: &mut Emitter<'_, GuestNetworkInterface<'static>>) -> Result<()> {
        Ok(())
    }
    fn routes(&mut self, _out: &mut Emitter<'_, GuestNetworkRoute<'static>>) -> Result<()> {
        Ok(())
    }
}

/// `Mem` for every family.
#[derive(Default)]
pub struct Full(pub Mem);

impl Platform for Full {
    fn clock(&mut self) -> Option<&mut dyn Clock> { Some(&mut self.0) }
    fn power(&mut self) -> Option<&mut dyn Power> { Some(&mut self.0) }
    fn files(&mut self) -> Option<&mut dyn Files> { Some(&mut self.0) }
    fn filesystems(&mut self) -> Option<&mut dyn Filesystems> { Some(&mut self.0) }
    fn disks(&mut self) -> Option<&mut dyn Disks> { Some(&mut self.0) }
    fn network(&mut self) -> Option<&mut dyn Network> { Some(&mut self.0) }
    fn cpus(&mut self) -> Option<&mut dyn Cpus> { Some(&mut self.0) }
    fn memory(&mut self) -> Option<&mut dyn Memory> { Some(&mut self.0) }
    fn users(&mut self) -> Option<&mut dyn Users> { Some(&mut self.0) }
    fn ssh_keys(&mut self) -> Option<&mut dyn SshKeys> { Some(&mut self.0) }
    fn exec(&mut self) -> Option<&mut dyn Exec> { Some(&mut self.0) }
    fn system(&mut self) -> Option<&mut dyn System> { Some(&mut self.0) }
}

/// No family at all: only the core's commands.
pub struct Bare;

impl Platform for Bare {}
