//! `guest-get-memory-blocks`, `guest-set-memory-blocks` and `guest-get-memory-block-info` on
//! Linux.
//!
//! Memory hot-(un)plug is driven through `/sys/devices/system/memory/memoryN/state`, as
//! upstream does, including its per-block response codes and the errno it reports with them
//! (`error-code`), which management tools log. The sysfs root is a field so that tests run
//! against a temporary tree: nothing here may offline the host's memory.

// agent_core::Error carries its message inline (no allocation in the core), so every
// Result in these backends is as large as that message, by design.
#![allow(clippy::result_large_err)]

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use agent_core::Command;
use agent_core::Error;
use agent_core::Result;
use agent_core::commands::memory::{
    GuestMemoryBlock, GuestMemoryBlockInfo, GuestMemoryBlockResponse,
    GuestMemoryBlockResponseType as Resp, Memory,
};
use agent_core::commands::{Emitter, List};

use super::system::{errno_msg, errno_of};

/// The Linux memory-block backend.
#[derive(Debug)]
pub struct LinuxMemory {
    /// `/sys/devices/system/memory`.
    pub root: PathBuf,
}

impl Default for LinuxMemory {
    fn default() -> Self {
        LinuxMemory {
            root: "/sys/devices/system/memory".into(),
        }
    }
}

/// A sysfs attribute read failure: the errno (0 for an unexpected EOF) and upstream's text.
struct ReadErr {
    errno: i32,
    err: Error,
}

/// `ga_read_sysfs_file`: up to `size` bytes of `dir/name`.
fn read_attr(dir: &Path, name: &str, size: usize) -> std::result::Result<Vec<u8>, ReadErr> {
    let f = std::fs::File::open(dir.join(name)).map_err(|e| ReadErr {
        errno: errno_of(&e),
        err: errno_msg(format_args!("open sysfs file \"{name}\""), &e),
    })?;
    let mut buf = vec![0u8; size];
    let n = f.read_at(&mut buf, 0).map_err(|e| ReadErr {
        errno: errno_of(&e),
        err: errno_msg(format_args!("pread sysfs file \"{name}\""), &e),
    })?;
    if n == 0 {
        return Err(ReadErr {
            errno: 0,
            err: Error::msg(format_args!("pread sysfs file \"{name}\": unexpected EOF")),
        });
    }
    buf.truncate(n);
    Ok(buf)
}

impl Memory for LinuxMemory {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }

    fn blocks(&mut self, out: &mut Emitter<'_, GuestMemoryBlock>) -> Result<()> {
        for b in self.get_blocks()? {
            out.emit(&b);
        }
        Ok(())
    }

    fn set_blocks(
        &mut self,
        blocks: List<'_, GuestMemoryBlock>,
        out: &mut Emitter<'_, GuestMemoryBlockResponse>,
    ) -> Result<()> {
        for b in blocks.iter() {
            out.emit(&self.set_block(&b));
        }
        Ok(())
    }

    fn block_info(&mut self) -> Result<GuestMemoryBlockInfo> {
        let rootpath = format!("{}/", self.root.display());
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&rootpath)
            .map_err(|e| errno_msg(format_args!("open(\"{rootpath}\")"), &e))?;
        drop(dir);
        let buf = read_attr(&self.root, "block_size_bytes", 20).map_err(|e| e.err)?;
        Ok(GuestMemoryBlockInfo {
            size: strtol_hex(&buf) as u64,
        })
    }
}

impl LinuxMemory {
    /// Every `memoryN` directory in readdir order; `[]` without the sysfs directory, an
    /// error if it has no blocks.
    pub fn get_blocks(&self) -> Result<Vec<GuestMemoryBlock>> {
        let dir = match std::fs::read_dir(&self.root) {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(errno_msg(
                    format_args!("Can't open directory\"{}/\"", self.root.display()),
                    &e,
                ));
            }
        };
        let mut list = Vec::new();
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(idx) = name.to_str().and_then(|n| n.strip_prefix("memory")) else {
                continue;
            };
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let phys_index = strtoul(idx);
            list.push(self.get_block(phys_index)?);
        }
        if list.is_empty() {
            return Err(Error::msg(format_args!(
                "guest reported zero memory blocks!"
            )));
        }
        Ok(list)
    }

    fn get_block(&self, phys_index: u64) -> Result<GuestMemoryBlock> {
        let dirpath = format!("{}/memory{phys_index}/", self.root.display());
        let dir = Path::new(&dirpath);
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir)
            .map_err(|e| errno_msg(format_args!("open(\"{dirpath}\")"), &e))?;
        let mut b = GuestMemoryBlock {
            phys_index,
            online: true,
            can_offline: Some(false),
        };
        let state = match read_attr(dir, "state", 10) {
            Ok(s) => s,
            // An old kernel without the file: always online.
            Err(e) if e.errno == libc::ENOENT => return Ok(b),
            Err(e) => return Err(e.err),
        };
        b.online = state.starts_with(b"online");
        b.can_offline = match read_attr(dir, "removable", 1) {
            Ok(r) => Some(r.first() != Some(&b'0')),
            Err(e) if e.errno == libc::ENOENT => Some(false),
            Err(e) => return Err(e.err),
        };
        Ok(b)
    }

    /// Upstream's `transfer_memory_block` from request to system, with its response codes.
    pub fn set_block(&self, want: &GuestMemoryBlock) -> GuestMemoryBlockResponse {
        let mut r = GuestMemoryBlockResponse {
            phys_index: want.phys_index,
            response: Resp::Success,
            error_code: None,
        };
        if let Err(e) = std::fs::read_dir(&self.root) {
            let errno = errno_of(&e);
            if errno == libc::ENOENT {
                r.response = Resp::OperationNotSupported;
            }
            r.error_code = Some(errno.into());
            return r;
        }
        let dirpath = format!("{}/memory{}/", self.root.display(), want.phys_index);
        let dir = Path::new(&dirpath);
        if let Err(e) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir)
        {
            let errno = errno_of(&e);
            r.response = if errno == libc::ENOENT {
                Resp::NotFound
            } else {
                Resp::OperationFailed
            };
            r.error_code = Some(errno.into());
            return r;
        }
        let state = match read_attr(dir, "state", 10) {
            Ok(s) => s,
            Err(e) => {
                if e.errno == libc::ENOENT {
                    if !want.online {
                        r.response = Resp::OperationNotSupported;
                    }
                } else {
                    r.response = Resp::OperationFailed;
                }
                r.error_code = Some(e.errno.into());
                return r;
            }
        };
        if want.online != state.starts_with(b"online") {
            let new_state: &[u8] = if want.online { b"online" } else { b"offline" };
            let written = OpenOptions::new()
                .write(true)
                .open(dir.join("state"))
                .and_then(|f| f.write_at(new_state, 0));
            if let Err(e) = written {
                r.response = Resp::OperationFailed;
                r.error_code = Some(errno_of(&e).into());
            }
        }
        r
    }
}

/// `strtoul(s, NULL, 10)` for the digits after "memory" (0 when there are none).
fn strtoul(s: &str) -> u64 {
    s.bytes().take_while(u8::is_ascii_digit).fold(0u64, |v, b| {
        v.wrapping_mul(10).wrapping_add(u64::from(b - b'0'))
    })
}

/// `strtol(buf, NULL, 16)`: optional blanks, sign and `0x`, then hex digits.
fn strtol_hex(buf: &[u8]) -> i64 {
    let s = std::str::from_utf8(buf).unwrap_or("").trim_start();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let mut v: i64 = 0;
    for c in s.chars() {
        let Some(d) = c.to_digit(16) else { break };
        v = v.saturating_mul(16).saturating_add(i64::from(d));
    }
    if neg { v.wrapping_neg() } else { v }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::system::tempdir;
    use crate::commands::system::testing::json;

    fn tree(blocks: &[(u64, Option<&str>, Option<&str>)]) -> LinuxMemory {
        let root = tempdir();
        std::fs::write(root.join("block_size_bytes"), "8000000\n").unwrap();
        std::fs::write(root.join("auto_online_blocks"), "online\n").unwrap();
        for (n, state, removable) in blocks {
            let d = root.join(format!("memory{n}"));
            std::fs::create_dir_all(&d).unwrap();
            if let Some(s) = state {
                std::fs::write(d.join("state"), s).unwrap();
            }
            if let Some(r) = removable {
                std::fs::write(d.join("removable"), r).unwrap();
            }
        }
        LinuxMemory { root }
    }

    fn blk(i: u64, online: bool) -> GuestMemoryBlock {
        GuestMemoryBlock {
            phys_index: i,
            online,
            can_offline: None,
        }
    }

    #[test]
    fn get_blocks_states() {
        let m = tree(&[
            (0, Some("online\n"), Some("0\n")),
            (7, Some("offline\n"), Some("1\n")),
            (9, None, None),
            (12, Some("online\n"), None),
        ]);
        let mut got = m.get_blocks().unwrap();
        got.sort_by_key(|b| b.phys_index);
        let want = |i, online, c| GuestMemoryBlock {
            phys_index: i,
            online,
            can_offline: Some(c),
        };
        assert_eq!(
            got,
            vec![
                want(0, true, false),
                want(7, false, true),
                want(9, true, false),
                want(12, true, false)
            ]
        );
        assert_eq!(m.clone_info(), 134217728);
        std::fs::remove_dir_all(&m.root).unwrap();
    }

    impl LinuxMemory {
        fn clone_info(&self) -> u64 {
            LinuxMemory {
                root: self.root.clone(),
            }
            .block_info()
            .unwrap()
            .size
        }
    }

    #[test]
    fn no_sysfs_dir_is_empty_and_no_blocks_is_an_error() {
        let m = tree(&[]);
        assert_eq!(
            m.get_blocks().unwrap_err().to_string(),
            "guest reported zero memory blocks!"
        );
        let gone = LinuxMemory {
            root: m.root.join("absent"),
        };
        assert_eq!(gone.get_blocks().unwrap(), vec![]);
        let r = gone.set_block(&blk(1, true));
        assert_eq!(
            json(&r),
            r#"{"phys-index": 1, "response": "operation-not-supported", "error-code": 2}"#
        );
        std::fs::remove_dir_all(&m.root).unwrap();
    }

    #[test]
    fn set_block_responses() {
        let m = tree(&[
            (0, Some("online\n"), Some("1\n")),
            (1, Some("offline\n"), Some("1\n")),
            (2, None, None),
        ]);
        assert_eq!(
            json(&m.set_block(&blk(0, false))),
            r#"{"phys-index": 0, "response": "success"}"#
        );
        assert_eq!(
            std::fs::read_to_string(m.root.join("memory0/state")).unwrap(),
            "offline"
        );
        assert_eq!(
            json(&m.set_block(&blk(1, false))),
            r#"{"phys-index": 1, "response": "success"}"#
        );
        assert_eq!(
            std::fs::read_to_string(m.root.join("memory1/state")).unwrap(),
            "offline\n"
        );
        assert_eq!(
            json(&m.set_block(&blk(5, true))),
            r#"{"phys-index": 5, "response": "not-found", "error-code": 2}"#
        );
        assert_eq!(
            json(&m.set_block(&blk(2, false))),
            r#"{"phys-index": 2, "response": "operation-not-supported", "error-code": 2}"#
        );
        std::fs::remove_dir_all(&m.root).unwrap();
    }

    #[test]
    fn hex_and_index_parsing() {
        assert_eq!(strtol_hex(b"8000000\n"), 0x8000000);
        assert_eq!(strtol_hex(b"0x10"), 16);
        assert_eq!(strtol_hex(b"zz"), 0);
        assert_eq!(strtoul("123"), 123);
        assert_eq!(strtoul("x"), 0);
    }

    #[test]
    fn real_blocks_match_sysfs() {
        let root = Path::new("/sys/devices/system/memory");
        if !root.exists() {
            assert_eq!(LinuxMemory::default().get_blocks().unwrap(), vec![]);
            return;
        }
        let got = LinuxMemory::default().get_blocks().unwrap();
        let dirs = std::fs::read_dir(root)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_str().unwrap().starts_with("memory"))
            .count();
        assert_eq!(got.len(), dirs);
        let size = std::fs::read_to_string(root.join("block_size_bytes")).unwrap();
        let size = u64::from_str_radix(size.trim(), 16).unwrap();
        assert_eq!(LinuxMemory::default().block_info().unwrap().size, size);
    }
}
