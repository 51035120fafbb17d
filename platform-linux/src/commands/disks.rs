//! `guest-get-fsinfo`, `guest-get-disks` and `guest-get-diskstats` on Linux.
//!
//! Upstream combines three sources: the mount table (`/proc/self/mountinfo`), sysfs paths
//! (which it parses textually to recover PCI, SCSI, IDE, SATA, NVMe, USB and CCW addresses) and
//! libudev (device nodes, `ID_SERIAL`, `DM_NAME`). This agent is static and has no libudev, so
//! it reads what libudev reads: the device node from the device's `uevent` (`DEVNAME`), the
//! serial from udev's database (`/run/udev/data/b<major>:<minor>`, `E:ID_SERIAL=`) when udev
//! runs, and the device-mapper name from sysfs (`dm/name`). The sysfs path parsing mirrors
//! upstream's `sscanf` patterns so that the same paths give the same addresses.
//!
//! Every root (`/sys`, `/proc/self/mountinfo`, `/proc/diskstats`, the udev database) is a
//! field, so tests build a sysfs tree in a temporary directory and check the addresses derived
//! from it.

// agent_core::Error carries its message inline (no allocation in the core), so every
// Result in these backends is as large as that message, by design.
#![allow(clippy::result_large_err)]

use std::ffi::CString;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use agent_core::Error;
use agent_core::Result;
use agent_core::commands::Emitter;
use agent_core::commands::disks::{
    Disks, GuestCcwAddress, GuestDiskAddress, GuestDiskBusType as Bus, GuestDiskInfo,
    GuestDiskStats, GuestDiskStatsInfo, GuestFilesystemInfo, GuestNvmeSmart, GuestPciAddress,
};

use super::system::errno_msg;

/// The Linux disk backend.
#[derive(Debug)]
pub struct LinuxDisks {
    /// `/sys`.
    pub sys: PathBuf,
    /// `/proc/self/mountinfo`.
    pub mountinfo: PathBuf,
    /// `/proc/self/mounts`, used when mountinfo cannot be opened.
    pub mtab: PathBuf,
    /// `/proc/diskstats`.
    pub diskstats: PathBuf,
    /// udev's database (`/run/udev/data`).
    pub udev_data: PathBuf,
}

impl Default for LinuxDisks {
    fn default() -> Self {
        LinuxDisks {
            sys: "/sys".into(),
            mountinfo: "/proc/self/mountinfo".into(),
            mtab: "/proc/self/mounts".into(),
            diskstats: "/proc/diskstats".into(),
            udev_data: "/run/udev/data".into(),
        }
    }
}

/// A mounted local filesystem, as upstream's `FsMount`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Mount {
    pub dir: String,
    pub devtype: String,
    pub major: u32,
    pub minor: u32,
}

/// A disk address with owned texts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Address {
    pub pci: GuestPciAddress,
    pub bus_type: Bus,
    pub bus: i64,
    pub target: i64,
    pub unit: i64,
    pub serial: Option<String>,
    pub dev: Option<String>,
    pub ccw: Option<GuestCcwAddress>,
}

impl Address {
    fn new() -> Self {
        Address {
            pci: GuestPciAddress {
                domain: -1,
                bus: -1,
                slot: -1,
                function: -1,
            },
            bus_type: Bus::Unknown,
            bus: 0,
            target: 0,
            unit: 0,
            serial: None,
            dev: None,
            ccw: None,
        }
    }

    fn borrowed(&self) -> GuestDiskAddress<'_> {
        GuestDiskAddress {
            pci_controller: self.pci.clone(),
            bus_type: self.bus_type,
            bus: self.bus,
            target: self.target,
            unit: self.unit,
            serial: self.serial.as_deref(),
            dev: self.dev.as_deref(),
            ccw_address: self.ccw.clone(),
        }
    }
}

/// A filesystem's name and disks, being built.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct FsDevice {
    pub name: Option<String>,
    /// In upstream's order (each new disk is prepended).
    pub disks: Vec<Address>,
}

/// A `guest-get-disks` entry with owned texts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DiskInfo {
    pub name: String,
    pub partition: bool,
    pub dependencies: Option<Vec<String>>,
    pub address: Option<Address>,
    pub alias: Option<String>,
    pub smart: Option<GuestNvmeSmart>,
}

impl Disks for LinuxDisks {
    fn fsinfo(&mut self, out: &mut Emitter<'_, GuestFilesystemInfo<'static>>) -> Result<()> {
        let mounts = self.mounts()?;
        let mut list = Vec::new();
        for m in &mounts {
            let devpath = self.sys.join(format!("dev/block/{}:{}", m.major, m.minor));
            let mut fs = FsDevice::default();
            self.for_device(&devpath, &mut fs)?;
            let sizes = statvfs_sizes(&m.dir);
            list.push((m, fs, sizes));
        }
        for (m, fs, sizes) in list.iter().rev() {
            let disks: Vec<GuestDiskAddress<'_>> = fs.disks.iter().map(Address::borrowed).collect();
            out.emit(&GuestFilesystemInfo {
                name: fs.name.as_deref().unwrap_or(""),
                mountpoint: &m.dir,
                r#type: &m.devtype,
                used_bytes: sizes.map(|s| s.0),
                total_bytes: sizes.map(|s| s.1),
                total_bytes_privileged: sizes.map(|s| s.2),
                disk: &disks,
            });
        }
        Ok(())
    }

    fn disks(&mut self, out: &mut Emitter<'_, GuestDiskInfo<'static>>) -> Result<()> {
        for d in self.get_disks()? {
            let deps: Option<Vec<&str>> = d
                .dependencies
                .as_ref()
                .map(|v| v.iter().map(String::as_str).collect());
            out.emit(&GuestDiskInfo {
                name: &d.name,
                partition: d.partition,
                dependencies: deps.as_deref(),
                address: d.address.as_ref().map(Address::borrowed),
                alias: d.alias.as_deref(),
                smart: d.smart.clone(),
            });
        }
        Ok(())
    }

    fn diskstats(&mut self, out: &mut Emitter<'_, GuestDiskStatsInfo<'static>>) -> Result<()> {
        let text = std::fs::read(&self.diskstats)
            .map_err(|e| errno_msg(format_args!("open(\"{}\")", self.diskstats.display()), &e))?;
        for (name, major, minor, stats) in parse_diskstats(&String::from_utf8_lossy(&text)) {
            out.emit(&GuestDiskStatsInfo {
                name: &name,
                major,
                minor,
                stats,
            });
        }
        Ok(())
    }
}

/// What a mount source is, for the btrfs and bind-mount rules.
enum DevKind {
    Block(u32, u32),
    Dir,
    Other,
}

fn dev_kind(path: &str) -> DevKind {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => DevKind::Dir,
        Ok(m) if m.file_type().is_block_device() => {
            let rdev = m.rdev();
            DevKind::Block(libc::major(rdev), libc::minor(rdev))
        }
        _ => DevKind::Other,
    }
}

/// Upstream's `decode_mntname`: `\\` and octal `\ooo` (first digit 0-3) escapes.
fn decode_mntname(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let oct = |k: usize, hi: u8| b.get(i + k).is_some_and(|d| (b'0'..=hi).contains(d));
        if c != b'\\' {
            out.push(c);
        } else if b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 1;
        } else if oct(1, b'3') && oct(2, b'7') && oct(3, b'7') {
            let d = |k: usize| b.get(i + k).map_or(0, |d| d - b'0');
            out.push(d(1) * 64 + d(2) * 8 + d(3));
            i += 3;
        } else {
            out.push(c);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Upstream's mountinfo walk: fields `id parent maj:min root mountpoint ... - type source`;
/// major 0 is skipped unless the filesystem is btrfs on a block device; a device seen before
/// (a bind mount) is skipped.
fn parse_mountinfo(text: &str, mut kind: impl FnMut(&str) -> DevKind) -> Vec<Mount> {
    let mut list: Vec<Mount> = Vec::new();
    for line in text.lines() {
        let Some((head, tail)) = line.split_once(" - ") else {
            continue;
        };
        let f: Vec<&str> = head.split_ascii_whitespace().collect();
        let (Some(devno), Some(dir)) = (f.get(2), f.get(4)) else {
            continue;
        };
        let Some((maj, min)) = devno.split_once(':') else {
            continue;
        };
        let (Ok(mut major), Ok(mut minor)) = (maj.parse::<u32>(), min.parse::<u32>()) else {
            continue;
        };
        let mut t = tail.split_ascii_whitespace();
        let Some(devtype) = t.next() else { continue };
        let source = decode_mntname(t.next().unwrap_or(""));
        let dir = decode_mntname(dir);
        if major == 0 {
            if devtype != "btrfs" {
                continue;
            }
            match kind(&source) {
                DevKind::Block(a, b) => (major, minor) = (a, b),
                _ => continue,
            }
        }
        if list.iter().any(|m| m.major == major && m.minor == minor) {
            continue;
        }
        list.push(Mount {
            dir,
            devtype: devtype.to_string(),
            major,
            minor,
        });
    }
    list
}

/// The `/proc/self/mounts` fallback: sources starting with `/` (not smbfs/cifs), bind mounts
/// (a directory source) skipped, device numbers 0:0 when the source is not a block device.
fn parse_mtab(text: &str, mut kind: impl FnMut(&str) -> DevKind) -> Vec<Mount> {
    let mut list = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let (Some(src), Some(dir), Some(ty)) = (f.first(), f.get(1), f.get(2)) else {
            continue;
        };
        let src = decode_mntname(src);
        if !src.starts_with('/') || *ty == "smbfs" || *ty == "cifs" {
            continue;
        }
        let (major, minor) = match kind(&src) {
            DevKind::Dir => continue,
            DevKind::Block(a, b) => (a, b),
            DevKind::Other => (0, 0),
        };
        list.push(Mount {
            dir: decode_mntname(dir),
            devtype: ty.to_string(),
            major,
            minor,
        });
    }
    list
}

/// `(used, total for unprivileged users, total)` in bytes, as upstream computes them.
fn statvfs_sizes(dir: &str) -> Option<(u64, u64, u64)> {
    let c = CString::new(dir).ok()?;
    let st = rustix::fs::statvfs(c.as_c_str()).ok()?;
    let fr = st.f_frsize;
    let used = st.f_blocks.wrapping_sub(st.f_bfree);
    let nonroot = used.wrapping_add(st.f_bavail);
    Some((
        used.wrapping_mul(fr),
        nonroot.wrapping_mul(fr),
        st.f_blocks.wrapping_mul(fr),
    ))
}

/// A tiny `sscanf`: conversions over a string, stopping at the first mismatch.
struct Scan<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Scan<'a> {
    fn new(s: &'a str) -> Self {
        Scan {
            s: s.as_bytes(),
            pos: 0,
        }
    }

    fn lit(&mut self, c: u8) -> Option<()> {
        (self.s.get(self.pos) == Some(&c)).then(|| self.pos += 1)
    }

    fn num(&mut self, radix: u32) -> Option<u32> {
        if radix == 16
            && self.s.get(self.pos) == Some(&b'0')
            && matches!(self.s.get(self.pos + 1), Some(b'x' | b'X'))
            && self.s.get(self.pos + 2).is_some_and(u8::is_ascii_hexdigit)
        {
            self.pos += 2;
        }
        let start = self.pos;
        let mut v: u32 = 0;
        while let Some(d) = self
            .s
            .get(self.pos)
            .and_then(|&b| (b as char).to_digit(radix))
        {
            v = v.wrapping_mul(radix).wrapping_add(d);
            self.pos += 1;
        }
        (self.pos > start).then_some(v)
    }

    fn hex(&mut self) -> Option<u32> {
        self.num(16)
    }

    fn dec(&mut self) -> Option<u32> {
        self.num(10)
    }
}

/// `"%*u:%*u:%*u/%*u:%u:%u:%u"` after `/target` (channel, target, lun).
fn scan_target(syspath: &str) -> Option<[u32; 3]> {
    let p = syspath.find("/target")?;
    let mut s = Scan::new(&syspath[p + 7..]);
    s.dec()?;
    s.lit(b':')?;
    s.dec()?;
    s.lit(b':')?;
    s.dec()?;
    s.lit(b'/')?;
    s.dec()?;
    s.lit(b':')?;
    let a = s.dec()?;
    s.lit(b':')?;
    let b = s.dec()?;
    s.lit(b':')?;
    let c = s.dec()?;
    Some([a, b, c])
}

/// `"/%x:%x:%x.%x%n"`: a PCI function component and its length.
fn scan_pci_fn(s: &str) -> Option<([u32; 4], usize)> {
    let mut sc = Scan::new(s);
    sc.lit(b'/')?;
    let d = sc.hex()?;
    sc.lit(b':')?;
    let b = sc.hex()?;
    sc.lit(b':')?;
    let sl = sc.hex()?;
    sc.lit(b'.')?;
    let f = sc.hex()?;
    Some(([d, b, sl, f], sc.pos))
}

impl LinuxDisks {
    /// The local filesystems, in mount order.
    pub(crate) fn mounts(&self) -> Result<Vec<Mount>> {
        match std::fs::read(&self.mountinfo) {
            Ok(t) => Ok(parse_mountinfo(&String::from_utf8_lossy(&t), dev_kind)),
            Err(_) => match std::fs::read(&self.mtab) {
                Ok(t) => Ok(parse_mtab(&String::from_utf8_lossy(&t), dev_kind)),
                Err(_) => Err(Error::msg(format_args!(
                    "failed to open mtab file: '{}'",
                    self.mtab.display()
                ))),
            },
        }
    }

    /// libudev's devnode: `/dev/` + `DEVNAME` from the device's `uevent`.
    fn devnode(&self, syspath: &Path) -> Option<String> {
        let ev = std::fs::read_to_string(syspath.join("uevent")).ok()?;
        let name = ev.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
        Some(if name.starts_with('/') {
            name.to_string()
        } else {
            format!("/dev/{name}")
        })
    }

    /// A udev property (`E:KEY=value`) from udev's database, if udev keeps one.
    fn udev_property(&self, syspath: &Path, key: &str) -> Option<String> {
        let dev = std::fs::read_to_string(syspath.join("dev")).ok()?;
        let db = std::fs::read_to_string(self.udev_data.join(format!("b{}", dev.trim()))).ok()?;
        let prefix = format!("E:{key}=");
        db.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map(str::to_string)
    }

    /// Upstream's `build_guest_fsinfo_for_device`.
    pub(crate) fn for_device(&self, devpath: &Path, fs: &mut FsDevice) -> Result<()> {
        let syspath = match std::fs::canonicalize(devpath) {
            Ok(p) => p,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // A device node a container does not show: only the name is known.
                if fs.name.is_none() {
                    fs.name = Some(basename(devpath));
                }
                return Ok(());
            }
            Err(e) => {
                return Err(errno_msg(
                    format_args!("realpath(\"{}\")", devpath.display()),
                    &e,
                ));
            }
        };
        if fs.name.is_none() {
            fs.name = Some(basename(&syspath));
        }
        let text = syspath.to_string_lossy().into_owned();
        if text.contains("/devices/virtual/block/") {
            self.for_virtual_device(&syspath, fs)
        } else {
            self.for_real_device(&syspath, &text, fs);
            Ok(())
        }
    }

    fn for_virtual_device(&self, syspath: &Path, fs: &mut FsDevice) -> Result<()> {
        let dirpath = syspath.join("slaves");
        let dir = match std::fs::read_dir(&dirpath) {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(errno_msg(
                    format_args!("opendir(\"{}\")", dirpath.display()),
                    &e,
                ));
            }
        };
        for entry in dir {
            let entry = entry
                .map_err(|e| errno_msg(format_args!("readdir(\"{}\")", dirpath.display()), &e))?;
            if entry.file_type().is_ok_and(|t| t.is_symlink()) {
                self.for_device(&dirpath.join(entry.file_name()), fs)?;
            }
        }
        Ok(())
    }

    fn for_real_device(&self, syspath: &Path, text: &str, fs: &mut FsDevice) {
        let mut disk = Address::new();
        disk.dev = self.devnode(syspath);
        disk.serial = self
            .udev_property(syspath, "ID_SERIAL")
            .filter(|s| !s.is_empty());
        let has_hwinf = if text.contains("/devices/pci") {
            self.pci_address(text, &mut disk)
        } else if text.contains("/devices/css") {
            ccw_address(text, &mut disk)
        } else if text.contains("/virtio") {
            nonpci_virtio_address(text, &mut disk)
        } else {
            false
        };
        if has_hwinf || disk.dev.is_some() || disk.serial.is_some() {
            fs.disks.insert(0, disk);
        }
    }

    /// Upstream's `build_guest_fsinfo_for_pci_dev`.
    fn pci_address(&self, syspath: &str, disk: &mut Address) -> bool {
        const DRIVERS: [&str; 7] = [
            "ata_piix",
            "sym53c8xx",
            "virtio-pci",
            "ahci",
            "nvme",
            "xhci_hcd",
            "ehci-pci",
        ];
        let Some(p0) = syspath.find("/devices/pci") else {
            return false;
        };
        // "%*x:%*x/" then the first function.
        let after = p0 + 12;
        let mut sc = Scan::new(&syspath[after..]);
        let head = (|| {
            sc.hex()?;
            sc.lit(b':')?;
            sc.hex()?;
            Some(sc.pos)
        })();
        let Some(head) = head else { return false };
        let Some((mut pci, len)) = scan_pci_fn(&syspath[after + head..]) else {
            return false;
        };
        let mut p = after + head + len;
        let driver = loop {
            let link = Path::new(&syspath[..p]).join("driver");
            let driver = std::fs::read_link(&link).ok().map(|t| basename(&t));
            if let Some(d) = driver.filter(|d| DRIVERS.contains(&d.as_str())) {
                break d;
            }
            match scan_pci_fn(&syspath[p..]) {
                Some((next, len)) => {
                    pci = next;
                    p += len;
                }
                None => return false,
            }
        };
        let tgt = scan_target(syspath);
        let (host_at, ata) = match syspath.find("/ata") {
            Some(i) => (Some((i, i + 4)), true),
            None => (syspath.find("/host").map(|i| (i, i + 5)), false),
        };
        let mut host = None;
        let mut hosts = Vec::new();
        if let Some((at, num)) = host_at
            && let Some(h) = Scan::new(&syspath[num..]).dec()
        {
            host = Some(h);
            match build_hosts(&syspath[..at], ata) {
                Some(h) => hosts = h,
                None => return false,
            }
        }
        disk.pci = GuestPciAddress {
            domain: pci[0].into(),
            bus: pci[1].into(),
            slot: pci[2].into(),
            function: pci[3].into(),
        };
        let host_index = host.and_then(|h| hosts.iter().position(|&x| x == h));
        match driver.as_str() {
            "ata_piix" => {
                let (Some(_), Some(t)) = (host, tgt) else {
                    return false;
                };
                let Some(i) = host_index else { return false };
                disk.bus_type = Bus::Ide;
                disk.bus = i as i64;
                disk.unit = t[1].into();
            }
            "sym53c8xx" => {
                let Some(t) = tgt else { return false };
                disk.bus_type = Bus::Scsi;
                disk.unit = t[1].into();
            }
            "virtio-pci" => match tgt {
                Some(t) => {
                    disk.bus_type = Bus::Scsi;
                    disk.unit = t[2].into();
                }
                None => disk.bus_type = Bus::Virtio,
            },
            "ahci" => {
                let (Some(_), Some(_)) = (host, tgt) else {
                    return false;
                };
                let Some(i) = host_index else { return false };
                disk.unit = i as i64;
                disk.bus_type = Bus::Sata;
            }
            "nvme" => disk.bus_type = Bus::Nvme,
            _ => disk.bus_type = Bus::Usb,
        }
        true
    }

    /// `guest-get-disks`: in upstream's order (everything prepended, so reversed).
    pub(crate) fn get_disks(&self) -> Result<Vec<DiskInfo>> {
        let block = self.sys.join("block");
        let dir = std::fs::read_dir(&block).map_err(|e| {
            errno_msg(
                format_args!("Can't open directory \"{}\"", block.display()),
                &e,
            )
        })?;
        let mut list = Vec::new();
        for entry in dir.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_symlink()) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let disk_dir = block.join(&name);
            match std::fs::read(disk_dir.join("size")) {
                Ok(s) if s != b"0\n" => {}
                _ => continue,
            }
            let Some(dev_name) = self.devnode(&disk_dir) else {
                continue;
            };
            let alias = std::fs::read_to_string(disk_dir.join("dm/name"))
                .ok()
                .map(|s| s.trim_end_matches('\n').to_string())
                .filter(|s| !s.is_empty());
            let is_virtual = std::fs::canonicalize(&disk_dir)
                .map(|p| p.to_string_lossy().contains("/devices/virtual/block/"))
                .unwrap_or(true);
            let address = if is_virtual {
                None
            } else {
                let mut fs = FsDevice::default();
                match self.for_device(&disk_dir, &mut fs) {
                    Ok(()) => fs.disks.into_iter().next(),
                    Err(_) => None,
                }
            };
            let dependencies = self.dependencies(&disk_dir);
            let smart = match &address {
                Some(a) if a.bus_type == Bus::Nvme => nvme_smart(&dev_name),
                _ => None,
            };
            let partitions = self.partitions(&name, &disk_dir, &dev_name);
            list.push(DiskInfo {
                name: dev_name,
                partition: false,
                dependencies,
                address,
                alias,
                smart,
            });
            list.extend(partitions);
        }
        list.reverse();
        Ok(list)
    }

    /// Device nodes of `slaves/*`, prepended as upstream does; `None` without the directory.
    fn dependencies(&self, disk_dir: &Path) -> Option<Vec<String>> {
        let dir = std::fs::read_dir(disk_dir.join("slaves")).ok()?;
        let mut deps = Vec::new();
        for entry in dir.flatten() {
            if let Some(d) = self.devnode(&disk_dir.join("slaves").join(entry.file_name())) {
                deps.insert(0, d);
            }
        }
        Some(deps)
    }

    /// Partitions: subdirectories named `<disk>N` or `<disk>pN`, in readdir order.
    fn partitions(&self, disk: &str, disk_dir: &Path, disk_dev: &str) -> Vec<DiskInfo> {
        let Ok(dir) = std::fs::read_dir(disk_dir) else {
            return Vec::new();
        };
        let mut list = Vec::new();
        for entry in dir.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let n = entry.file_name();
            let Some(rest) = n.as_bytes().strip_prefix(disk.as_bytes()) else {
                continue;
            };
            let is_part = match rest {
                [b'p', d, ..] if d.is_ascii_digit() => true,
                [d, ..] => d.is_ascii_digit(),
                [] => false,
            };
            if !is_part {
                continue;
            }
            let Some(dev) = self.devnode(&disk_dir.join(&n)) else {
                continue;
            };
            list.push(DiskInfo {
                name: dev,
                partition: true,
                dependencies: Some(vec![disk_dev.to_string()]),
                address: None,
                alias: None,
                smart: None,
            });
        }
        list
    }
}

/// Upstream's `build_hosts`: the sorted numbers of the `ataN` or `hostN` entries of `dir`
/// (at most 8); `None` if the directory cannot be read.
fn build_hosts(dir: &str, ata: bool) -> Option<Vec<u32>> {
    let prefix = if ata { "ata" } else { "host" };
    let mut hosts = Vec::new();
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        if hosts.len() >= 8 {
            break;
        }
        let n = entry.file_name().to_string_lossy().into_owned();
        if let Some(v) = n.strip_prefix(prefix).and_then(|r| Scan::new(r).dec()) {
            hosts.push(v);
        }
    }
    hosts.sort_unstable();
    Some(hosts)
}

/// Upstream's `build_guest_fsinfo_for_nonpci_virtio`.
fn nonpci_virtio_address(syspath: &str, disk: &mut Address) -> bool {
    if !syspath.contains("/virtio") || !syspath.contains("/block") {
        return false;
    }
    match scan_target(syspath) {
        Some(t) => {
            disk.bus_type = Bus::Scsi;
            disk.bus = t[0].into();
            disk.target = t[1].into();
            disk.unit = t[2].into();
        }
        None => disk.bus_type = Bus::Virtio,
    }
    true
}

/// Upstream's `build_guest_fsinfo_for_ccw_dev`: `/devices/css%*x/%x.%x.%x/%*x.%*x.%x/`.
fn ccw_address(syspath: &str, disk: &mut Address) -> bool {
    let Some(p) = syspath.find("/devices/css") else {
        return false;
    };
    let mut s = Scan::new(&syspath[p + 12..]);
    let parsed = (|| {
        s.hex()?;
        s.lit(b'/')?;
        let cssid = s.hex()?;
        s.lit(b'.')?;
        let ssid = s.hex()?;
        s.lit(b'.')?;
        let subchno = s.hex()?;
        s.lit(b'/')?;
        s.hex()?;
        s.lit(b'.')?;
        s.hex()?;
        s.lit(b'.')?;
        let devno = s.hex()?;
        Some(GuestCcwAddress {
            cssid: cssid.into(),
            ssid: ssid.into(),
            subchno: subchno.into(),
            devno: devno.into(),
        })
    })();
    let Some(ccw) = parsed else { return false };
    disk.ccw = Some(ccw);
    if syspath[p..].contains("/virtio") {
        nonpci_virtio_address(syspath, disk);
    }
    true
}

fn basename(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// The SMART / Health log page (log 0x02) of an NVMe device, as upstream asks for it.
fn nvme_smart(devnode: &str) -> Option<GuestNvmeSmart> {
    use std::os::fd::AsFd as _;
    let f = std::fs::File::open(devnode).ok()?;
    let log = crate::sys::dev::nvme_smart_log(f.as_fd())?;
    Some(parse_smart_log(&log))
}

/// The fields of a 512-byte SMART / Health log (NVMe base specification, figure "SMART /
/// Health Information Log Page").
fn parse_smart_log(log: &[u8; 512]) -> GuestNvmeSmart {
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&log[o..o + 8]);
        u64::from_le_bytes(b)
    };
    let pair = |o: usize| (u64_at(o), u64_at(o + 8));
    let (data_units_read_lo, data_units_read_hi) = pair(32);
    let (data_units_written_lo, data_units_written_hi) = pair(48);
    let (host_read_commands_lo, host_read_commands_hi) = pair(64);
    let (host_write_commands_lo, host_write_commands_hi) = pair(80);
    let (controller_busy_time_lo, controller_busy_time_hi) = pair(96);
    let (power_cycles_lo, power_cycles_hi) = pair(112);
    let (power_on_hours_lo, power_on_hours_hi) = pair(128);
    let (unsafe_shutdowns_lo, unsafe_shutdowns_hi) = pair(144);
    let (media_errors_lo, media_errors_hi) = pair(160);
    let (number_of_error_log_entries_lo, number_of_error_log_entries_hi) = pair(176);
    GuestNvmeSmart {
        r#type: Bus::Nvme,
        critical_warning: log[0].into(),
        temperature: u16::from_le_bytes([log[1], log[2]]).into(),
        available_spare: log[3].into(),
        available_spare_threshold: log[4].into(),
        percentage_used: log[5].into(),
        data_units_read_lo,
        data_units_read_hi,
        data_units_written_lo,
        data_units_written_hi,
        host_read_commands_lo,
        host_read_commands_hi,
        host_write_commands_lo,
        host_write_commands_hi,
        controller_busy_time_lo,
        controller_busy_time_hi,
        power_cycles_lo,
        power_cycles_hi,
        power_on_hours_lo,
        power_on_hours_hi,
        unsafe_shutdowns_lo,
        unsafe_shutdowns_hi,
        media_errors_lo,
        media_errors_hi,
        number_of_error_log_entries_lo,
        number_of_error_log_entries_hi,
    }
}

/// `/proc/diskstats` with upstream's field-count rules (`i` counts major, minor and name):
/// fewer than 7 skips the line; 7 is the old partition format (read/write ios and sectors);
/// 14 or more gives the full read/write set, 18 or more adds discards, 20 or more flushes.
pub(crate) fn parse_diskstats(text: &str) -> Vec<(String, u64, u64, GuestDiskStats)> {
    let mut list = Vec::new();
    for line in text.lines() {
        let mut t = line.split_ascii_whitespace();
        let (Some(major), Some(minor)) = (t.next(), t.next()) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
            continue;
        };
        let Some(name) = t.next() else { continue };
        let v: Vec<u64> = t.take(17).map_while(|x| x.parse().ok()).collect();
        let i = 3 + v.len();
        if i < 7 {
            continue;
        }
        let f = |k: usize| v.get(k).copied();
        let mut s = GuestDiskStats::default();
        if i == 7 {
            s.read_ios = f(0);
            s.read_sectors = f(1);
            s.write_ios = f(2);
            s.write_sectors = f(3);
        }
        if i >= 14 {
            s.read_ios = f(0);
            s.read_merges = f(1);
            s.read_sectors = f(2);
            s.read_ticks = f(3);
            s.write_ios = f(4);
            s.write_merges = f(5);
            s.write_sectors = f(6);
            s.write_ticks = f(7);
            s.ios_pgr = f(8);
            s.total_ticks = f(9);
            s.weight_ticks = f(10);
        }
        if i >= 18 {
            s.discard_ios = f(11);
            s.discard_merges = f(12);
            s.discard_sectors = f(13);
            s.discard_ticks = f(14);
        }
        if i >= 20 {
            s.flush_ios = f(15);
            s.flush_ticks = f(16);
        }
        list.push((name.to_string(), major.into(), minor.into(), s));
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::system::tempdir;
    use crate::commands::system::testing::{emitted, json};
    use std::os::unix::fs::symlink;

    /// Build a fake sysfs tree: `dirs` are created, `files` written, `links` made.
    fn tree(root: &Path, dirs: &[&str], files: &[(&str, &str)], links: &[(&str, &str)]) {
        for d in dirs {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for (f, c) in files {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        }
        for (l, target) in links {
            let p = root.join(l);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            symlink(target, p).unwrap();
        }
    }

    fn disks_at(root: &Path) -> LinuxDisks {
        LinuxDisks {
            sys: root.join("sys"),
            mountinfo: root.join("mountinfo"),
            mtab: root.join("mounts"),
            diskstats: root.join("diskstats"),
            udev_data: root.join("udev"),
        }
    }

    const VDA: &str = "sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda";
    const SDA: &str =
        "sys/devices/pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0/block/sda";
    const SDB: &str =
        "sys/devices/pci0000:00/0000:00:03.0/virtio2/host0/target0:0:1/0:0:1:4/block/sdb";

    fn fake_machine(root: &Path) {
        tree(
            root,
            &[
                "sys/devices/pci0000:00/0000:00:1f.2/ata1",
                "sys/devices/pci0000:00/0000:00:1f.2/ata3",
                "sys/devices/pci0000:00/0000:00:1f.2/ata2",
                "sys/bus/pci/drivers/virtio-pci",
                "sys/bus/pci/drivers/ahci",
            ],
            &[
                (
                    &format!("{VDA}/uevent"),
                    "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n",
                ),
                (&format!("{VDA}/dev"), "254:0\n"),
                (&format!("{VDA}/size"), "1000\n"),
                (
                    &format!("{VDA}/vda1/uevent"),
                    "MAJOR=254\nMINOR=1\nDEVNAME=vda1\n",
                ),
                (&format!("{VDA}/vdap/uevent"), "DEVNAME=nope\n"),
                (&format!("{SDA}/uevent"), "MAJOR=8\nMINOR=0\nDEVNAME=sda\n"),
                (&format!("{SDA}/dev"), "8:0\n"),
                (&format!("{SDA}/size"), "2000\n"),
                (&format!("{SDB}/uevent"), "MAJOR=8\nMINOR=16\nDEVNAME=sdb\n"),
                (&format!("{SDB}/dev"), "8:16\n"),
                (&format!("{SDB}/size"), "2000\n"),
                (
                    "sys/devices/virtual/block/dm-0/uevent",
                    "MAJOR=252\nMINOR=0\nDEVNAME=dm-0\n",
                ),
                ("sys/devices/virtual/block/dm-0/size", "500\n"),
                ("sys/devices/virtual/block/dm-0/dm/name", "vg-root\n"),
                ("sys/devices/virtual/block/loop0/uevent", "DEVNAME=loop0\n"),
                ("sys/devices/virtual/block/loop0/size", "0\n"),
                (
                    "udev/b8:0",
                    "S:disk/by-id/ata-QEMU\nE:ID_SERIAL=QEMU_HARDDISK_QM00005\n",
                ),
            ],
            &[
                (
                    "sys/devices/pci0000:00/0000:00:02.0/driver",
                    "../../../bus/pci/drivers/virtio-pci",
                ),
                (
                    "sys/devices/pci0000:00/0000:00:03.0/driver",
                    "../../../bus/pci/drivers/virtio-pci",
                ),
                (
                    "sys/devices/pci0000:00/0000:00:1f.2/driver",
                    "../../../bus/pci/drivers/ahci",
                ),
                (
                    "sys/block/vda",
                    "../devices/pci0000:00/0000:00:02.0/virtio1/block/vda",
                ),
                (
                    "sys/block/sda",
                    "../devices/pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0/block/sda",
                ),
                ("sys/block/dm-0", "../devices/virtual/block/dm-0"),
                ("sys/block/loop0", "../devices/virtual/block/loop0"),
                (
                    "sys/devices/virtual/block/dm-0/slaves/vda1",
                    "../../../../pci0000:00/0000:00:02.0/virtio1/block/vda/vda1",
                ),
                (
                    "sys/dev/block/254:1",
                    "../../devices/pci0000:00/0000:00:02.0/virtio1/block/vda/vda1",
                ),
                ("sys/dev/block/252:0", "../../devices/virtual/block/dm-0"),
                (
                    "sys/dev/block/8:0",
                    "../../devices/pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0/block/sda",
                ),
                (
                    "sys/dev/block/8:16",
                    "../../devices/pci0000:00/0000:00:03.0/virtio2/host0/target0:0:1/0:0:1:4/block/sdb",
                ),
            ],
        );
    }

    fn fs_of(d: &LinuxDisks, dev: &str) -> String {
        let mut fs = FsDevice::default();
        d.for_device(&d.sys.join("dev/block").join(dev), &mut fs)
            .unwrap();
        let disks: Vec<GuestDiskAddress<'_>> = fs.disks.iter().map(Address::borrowed).collect();
        format!("{} {}", fs.name.unwrap(), json(&disks.as_slice()))
    }

    #[test]
    fn addresses_from_sysfs_paths() {
        let root = tempdir();
        fake_machine(&root);
        let d = disks_at(&root);
        assert_eq!(
            fs_of(&d, "8:0"),
            r#"sda [{"pci-controller": {"domain": 0, "bus": 0, "slot": 31, "function": 2}, "bus-type": "sata", "bus": 0, "target": 0, "unit": 2, "serial": "QEMU_HARDDISK_QM00005", "dev": "/dev/sda"}]"#
        );
        assert_eq!(
            fs_of(&d, "8:16"),
            r#"sdb [{"pci-controller": {"domain": 0, "bus": 0, "slot": 3, "function": 0}, "bus-type": "scsi", "bus": 0, "target": 0, "unit": 4, "dev": "/dev/sdb"}]"#
        );
        // dm-0 on vda1: the name is the dm device's, the disk is vda1's (virtio-blk).
        assert_eq!(
            fs_of(&d, "252:0"),
            r#"dm-0 [{"pci-controller": {"domain": 0, "bus": 0, "slot": 2, "function": 0}, "bus-type": "virtio", "bus": 0, "target": 0, "unit": 0, "dev": "/dev/vda1"}]"#
        );
        // A device sysfs does not show: the name only.
        assert_eq!(fs_of(&d, "9:9"), "9:9 []");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn ccw_and_platform_virtio_paths() {
        let mut a = Address::new();
        assert!(ccw_address(
            "/sys/devices/css0/0.0.0003/0.1.00a2/virtio0/block/vda",
            &mut a
        ));
        assert_eq!(
            json(&a.borrowed()),
            r#"{"pci-controller": {"domain": -1, "bus": -1, "slot": -1, "function": -1}, "bus-type": "virtio", "bus": 0, "target": 0, "unit": 0, "ccw-address": {"cssid": 0, "ssid": 0, "subchno": 3, "devno": 162}}"#
        );
        let mut a = Address::new();
        assert!(nonpci_virtio_address(
            "/sys/devices/platform/a003e00.virtio_mmio/virtio3/host1/target1:0:2/1:0:2:5/block/sdc",
            &mut a
        ));
        assert_eq!((a.bus_type, a.bus, a.target, a.unit), (Bus::Scsi, 0, 2, 5));
        assert!(!nonpci_virtio_address(
            "/sys/devices/platform/foo/block/x",
            &mut Address::new()
        ));
    }

    #[test]
    fn fsinfo_pipeline_in_reverse_mount_order() {
        let root = tempdir();
        fake_machine(&root);
        let (a, b) = (root.join("mnt/a"), root.join("mnt/b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(
            root.join("mountinfo"),
            format!(
                "1 0 0:5 / /proc rw - proc proc rw\n\
                 2 1 8:0 / {} rw - ext4 /dev/sda rw\n\
                 3 1 252:0 / {} rw - xfs /dev/mapper/vg-root rw\n\
                 4 1 8:0 /sub /elsewhere rw - ext4 /dev/sda rw\n",
                a.display(),
                b.display()
            ),
        )
        .unwrap();
        let mut d = disks_at(&root);
        let got = emitted(|o| d.fsinfo(o)).unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with(&format!(
            r#"{{"name": "dm-0", "mountpoint": "{}", "type": "xfs", "used-bytes": "#,
            b.display()
        )));
        assert!(got[0].ends_with(
            r#""bus-type": "virtio", "bus": 0, "target": 0, "unit": 0, "dev": "/dev/vda1"}]}"#
        ));
        assert!(got[1].starts_with(&format!(
            r#"{{"name": "sda", "mountpoint": "{}""#,
            a.display()
        )));
        assert!(got[1].contains(r#""bus-type": "sata""#));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn get_disks_order_and_fields() {
        let root = tempdir();
        fake_machine(&root);
        let d = disks_at(&root);
        let got = d.get_disks().unwrap();
        let names: Vec<&str> = got.iter().map(|g| g.name.as_str()).collect();
        // Everything prepended: a disk's partitions come before it, disks in reverse readdir
        // order. readdir order is not sorted, so check the relations only.
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(pos("/dev/vda1") < pos("/dev/vda"));
        assert!(!names.contains(&"/dev/loop0"), "zero-sized");
        let vda = &got[pos("/dev/vda")];
        assert_eq!(vda.address.as_ref().unwrap().bus_type, Bus::Virtio);
        assert_eq!(vda.dependencies, None);
        let vda1 = &got[pos("/dev/vda1")];
        assert!(vda1.partition);
        assert_eq!(vda1.dependencies, Some(vec!["/dev/vda".to_string()]));
        let dm = &got[pos("/dev/dm-0")];
        assert_eq!(dm.alias.as_deref(), Some("vg-root"));
        assert_eq!(dm.address, None);
        assert_eq!(dm.dependencies, Some(vec!["/dev/vda1".to_string()]));
        let sda = &got[pos("/dev/sda")];
        assert_eq!(
            sda.address.as_ref().unwrap().serial.as_deref(),
            Some("QEMU_HARDDISK_QM00005")
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn mountinfo_rules() {
        let text = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
40 27 254:0 /x /bind rw - ext4 /dev/vda rw\n\
41 27 254:1 / /mnt/with\\040space rw shared:1 - xfs /dev/vdb rw\n\
42 27 0:45 / /data rw - btrfs /dev/sdz rw\n\
43 27 0:46 / /other rw - btrfs /dev/sdy rw\n\
garbage\n";
        let m = parse_mountinfo(text, |src| match src {
            "/dev/sdz" => DevKind::Block(8, 16),
            _ => DevKind::Other,
        });
        let dirs: Vec<(&str, &str, u32, u32)> = m
            .iter()
            .map(|m| (m.dir.as_str(), m.devtype.as_str(), m.major, m.minor))
            .collect();
        assert_eq!(
            dirs,
            [
                ("/", "ext4", 254, 0),
                ("/mnt/with space", "xfs", 254, 1),
                ("/data", "btrfs", 8, 16)
            ]
        );
        assert_eq!(decode_mntname("a\\\\b\\011c\\9"), "a\\b\tc\\9");
        let mt = parse_mtab(
            "/dev/vda / ext4 rw 0 0\nproc /proc proc rw 0 0\n//srv/x /s cifs rw 0 0\n/dev/dir /b ext4 rw 0 0\n",
            |s| match s {
                "/dev/vda" => DevKind::Block(254, 0),
                "/dev/dir" => DevKind::Dir,
                _ => DevKind::Other,
            },
        );
        assert_eq!(
            mt,
            vec![Mount {
                dir: "/".into(),
                devtype: "ext4".into(),
                major: 254,
                minor: 0
            }]
        );
    }

    #[test]
    fn diskstats_field_counts() {
        let text = "   8       0 sda 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n\
   8       1 sda1 1 2 3 4\n\
   8       2 sda2 1 2 3 4 5 6 7 8 9 10 11\n\
   8       3 sda3 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15\n\
   8       4 sda4 1 2 3\n\
   8       5 sda5 1 2 3 4 5\n";
        let s = parse_diskstats(text);
        assert_eq!(s.len(), 5);
        assert_eq!(
            json(&s[0].3),
            r#"{"read-sectors": 3, "read-ios": 1, "read-merges": 2, "write-sectors": 7, "write-ios": 5, "write-merges": 6, "discard-sectors": 14, "discard-ios": 12, "discard-merges": 13, "flush-ios": 16, "read-ticks": 4, "write-ticks": 8, "discard-ticks": 15, "flush-ticks": 17, "ios-pgr": 9, "total-ticks": 10, "weight-ticks": 11}"#
        );
        assert_eq!(
            json(&s[1].3),
            r#"{"read-sectors": 2, "read-ios": 1, "write-sectors": 4, "write-ios": 3}"#
        );
        assert_eq!(s[2].3.discard_ios, None);
        assert_eq!(s[2].3.weight_ticks, Some(11));
        assert_eq!(s[3].3.discard_ticks, Some(15));
        assert_eq!(s[3].3.flush_ios, None);
        assert_eq!(json(&s[4].3), "{}");
        assert_eq!((s[0].0.as_str(), s[0].1, s[0].2), ("sda", 8, 0));
    }

    #[test]
    fn smart_log_layout() {
        let mut log = [0u8; 512];
        log[0] = 1;
        log[1..3].copy_from_slice(&310u16.to_le_bytes());
        log[3] = 100;
        log[4] = 10;
        log[5] = 3;
        log[32..40].copy_from_slice(&7u64.to_le_bytes());
        log[40..48].copy_from_slice(&1u64.to_le_bytes());
        log[176..184].copy_from_slice(&9u64.to_le_bytes());
        let s = parse_smart_log(&log);
        assert_eq!(
            (s.critical_warning, s.temperature, s.available_spare),
            (1, 310, 100)
        );
        assert_eq!((s.data_units_read_lo, s.data_units_read_hi), (7, 1));
        assert_eq!(s.number_of_error_log_entries_lo, 9);
    }

    #[test]
    fn real_fsinfo_root_and_reverse_order() {
        let got = emitted(|o| LinuxDisks::default().fsinfo(o)).unwrap();
        let mounts = LinuxDisks::default().mounts().unwrap();
        assert_eq!(got.len(), mounts.len());
        // Reverse mount order.
        for (j, m) in got.iter().zip(mounts.iter().rev()) {
            assert!(j.contains(&format!(r#""mountpoint": "{}""#, m.dir)), "{j}");
        }
        let root = got
            .iter()
            .find(|j| j.contains(r#""mountpoint": "/", "#))
            .expect("/ listed");
        assert!(root.contains(r#""total-bytes-privileged": "#), "{root}");
        // The root filesystem's device is named as in /sys/dev/block.
        let st = std::fs::metadata("/").unwrap();
        let dev = std::fs::canonicalize(format!(
            "/sys/dev/block/{}:{}",
            libc::major(st.dev()),
            libc::minor(st.dev())
        ));
        if let Ok(p) = dev {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            assert!(
                root.starts_with(&format!(r#"{{"name": "{name}""#)),
                "{root}"
            );
        }
    }

    #[test]
    fn real_disks_and_diskstats() {
        let got = emitted(|o| LinuxDisks::default().disks(o)).unwrap();
        for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
            let n = e.file_name().into_string().unwrap();
            let size = std::fs::read_to_string(e.path().join("size")).unwrap();
            let listed = got
                .iter()
                .any(|j| j.starts_with(&format!(r#"{{"name": "/dev/{n}""#)));
            assert_eq!(listed, size != "0\n", "{n}");
        }
        let stats = emitted(|o| LinuxDisks::default().diskstats(o)).unwrap();
        let lines = std::fs::read_to_string("/proc/diskstats")
            .unwrap()
            .lines()
            .count();
        assert_eq!(stats.len(), lines);
    }
}
