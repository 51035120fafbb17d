//! `guest-file-*` on a fixed-capacity RAM file store, so a harness can push files to firmware
//! and pull results back with the standard commands.
//!
//! Capacity: [`BLOCKS`] blocks of [`BLOCK`] bytes (256 KiB) shared by at most [`MAX_FILES`]
//! files, names up to [`NAME_CAP`] bytes, [`MAX_HANDLES`] open handles. A path is just a name
//! (no directories). Files live until the machine resets; opening with `w` empties a file and
//! gives its blocks back. Errors are the OS errors a Linux agent would give, so clients see
//! familiar texts:
//!
//! - a missing file opened with `r`/`r+`: ENOENT, "No such file or directory";
//! - a write that does not fit, or a new file when the table is full: ENOSPC, "No space left
//!   on device" (nothing of that write is stored);
//! - more open handles than [`MAX_HANDLES`]: EMFILE; a name too long: ENAMETOOLONG;
//! - reading a write-only handle or writing a read-only one: EBADF; seeking before 0: EINVAL.
//!
//! Handles count up from 1000, as upstream's `fd_counter` starts.

use agent_core::commands::files::{Files, GuestFileSeek, GuestFileWrite, Seek};
use agent_core::{Error, Result};

/// Bytes per block.
pub const BLOCK: usize = 4096;
/// Blocks in the store: 64 × 4 KiB = 256 KiB.
pub const BLOCKS: usize = 64;
/// Most files.
pub const MAX_FILES: usize = 16;
/// Most open handles.
pub const MAX_HANDLES: usize = 16;
/// Longest name in bytes.
pub const NAME_CAP: usize = 128;
/// The first handle.
pub const FIRST_HANDLE: i64 = 1000;

const ENOENT: i32 = 2;
const EBADF: i32 = 9;
const EINVAL: i32 = 22;
const EMFILE: i32 = 24;
const ENOSPC: i32 = 28;
const ENAMETOOLONG: i32 = 36;

fn enoent() -> Error {
    Error::os(ENOENT, "No such file or directory")
}
fn ebadf() -> Error {
    Error::os(EBADF, "Bad file descriptor")
}
fn enospc() -> Error {
    Error::os(ENOSPC, "No space left on device")
}

/// A file; an empty name marks a free slot (no file can have an empty name).
#[derive(Clone)]
struct File {
    name: heapless::String<NAME_CAP>,
    len: usize,
    blocks: [u8; BLOCKS],
    nblocks: usize,
}

impl File {
    const EMPTY: File = File {
        name: heapless::String::new(),
        len: 0,
        blocks: [0; BLOCKS],
        nblocks: 0,
    };
}

/// An open handle; `id` 0 marks a free slot (handles start at 1000), which keeps a fresh
/// store all zero bytes (`.bss`).
#[derive(Clone, Copy)]
struct Handle {
    id: i64,
    file: usize,
    pos: usize,
    read: bool,
    write: bool,
    append: bool,
}

impl Handle {
    const FREE: Handle = Handle {
        id: 0,
        file: 0,
        pos: 0,
        read: false,
        write: false,
        append: false,
    };
}

/// The store.
pub struct RamFiles {
    data: [[u8; BLOCK]; BLOCKS],
    /// Bit `b` set: block `b` belongs to a file. (All-zero initial state keeps the store in
    /// `.bss` rather than in the image file.)
    used: u64,
    files: [File; MAX_FILES],
    handles: [Handle; MAX_HANDLES],
    /// Handles opened so far (the next handle is `FIRST_HANDLE + opened`).
    opened: i64,
}

impl Default for RamFiles {
    fn default() -> Self {
        Self::new()
    }
}

impl RamFiles {
    /// An empty store (usable in a `static`).
    pub const fn new() -> Self {
        RamFiles {
            data: [[0; BLOCK]; BLOCKS],
            used: 0,
            files: [File::EMPTY; MAX_FILES],
            handles: [Handle::FREE; MAX_HANDLES],
            opened: 0,
        }
    }

    /// Bytes not yet used by any file.
    pub fn free_bytes(&self) -> usize {
        self.free_blocks() * BLOCK
    }

    /// Names and sizes of the stored files.
    pub fn list(&self) -> impl Iterator<Item = (&str, usize)> {
        self.files
            .iter()
            .filter(|f| !f.name.is_empty())
            .map(|f| (f.name.as_str(), f.len))
    }

    fn free_blocks(&self) -> usize {
        BLOCKS - self.used.count_ones() as usize
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.files
            .iter()
            .position(|f| !f.name.is_empty() && f.name == name)
    }

    fn handle(&mut self, id: i64) -> Result<&mut Handle> {
        self.handles
            .iter_mut()
            .find(|h| h.id != 0 && h.id == id)
            .ok_or(Error::NoHandle(id))
    }

    fn truncate(&mut self, idx: usize) {
        if let Some(f) = self.files.get_mut(idx) {
            for &b in f.blocks.get(..f.nblocks).unwrap_or(&[]) {
                self.used &= !(1 << b);
            }
            f.nblocks = 0;
            f.len = 0;
        }
    }

    fn create(&mut self, name: &str) -> Result<usize> {
        let mut n = heapless::String::new();
        n.push_str(name)
            .map_err(|_| Error::os(ENAMETOOLONG, "File name too long"))?;
        let slot = self
            .files
            .iter()
            .position(|f| f.name.is_empty())
            .ok_or_else(enospc)?;
        if let Some(s) = self.files.get_mut(slot) {
            *s = File {
                name: n,
                ..File::EMPTY
            };
        }
        Ok(slot)
    }

    /// Make `file` at least `blocks` blocks long, all or nothing.
    fn grow(&mut self, file: usize, blocks: usize) -> Result<()> {
        let free = self.free_blocks();
        let Some(f) = self.files.get_mut(file) else {
            return Err(ebadf());
        };
        if blocks <= f.nblocks {
            return Ok(());
        }
        let need = blocks - f.nblocks;
        if blocks > BLOCKS || free < need {
            return Err(enospc());
        }
        for _ in 0..need {
            let b = (!self.used).trailing_zeros() as usize;
            self.used |= 1 << b;
            if let Some(block) = self.data.get_mut(b) {
                block.fill(0);
            }
            if let Some(slot) = f.blocks.get_mut(f.nblocks) {
                *slot = b as u8;
            }
            f.nblocks += 1;
        }
        Ok(())
    }
}

impl Files for RamFiles {
    fn has_handle(&self, handle: i64) -> bool {
        handle != 0 && self.handles.iter().any(|h| h.id == handle)
    }

    fn open(&mut self, path: &str, mode: &str) -> Result<i64> {
        let plus = mode.contains('+');
        let kind = mode.as_bytes().first().copied().unwrap_or(b'r');
        let slot = self.handles.iter().position(|h| h.id == 0);
        let Some(slot) = slot else {
            return Err(Error::os(EMFILE, "Too many open files"));
        };
        if path.is_empty() {
            return Err(enoent());
        }
        let existing = self.find(path);
        let file = match (kind, existing) {
            (b'r', Some(i)) => i,
            (b'r', None) => return Err(enoent()),
            (b'w', Some(i)) => {
                self.truncate(i);
                i
            }
            (_, Some(i)) => i,
            (_, None) => self.create(path)?,
        };
        let id = FIRST_HANDLE.saturating_add(self.opened);
        self.opened = self.opened.saturating_add(1);
        let h = Handle {
            id,
            file,
            pos: 0,
            read: kind == b'r' || plus,
            write: kind != b'r' || plus,
            append: kind == b'a',
        };
        if let Some(s) = self.handles.get_mut(slot) {
            *s = h;
        }
        Ok(id)
    }

    fn close(&mut self, handle: i64) -> Result<()> {
        let slot = self
            .handles
            .iter_mut()
            .find(|h| h.id != 0 && h.id == handle);
        match slot {
            Some(s) => {
                *s = Handle::FREE;
                Ok(())
            }
            None => Err(Error::NoHandle(handle)),
        }
    }

    fn read(&mut self, handle: i64, buf: &mut [u8]) -> Result<usize> {
        let h = *self.handle(handle)?;
        if !h.read {
            return Err(ebadf());
        }
        let Some(f) = self.files.get(h.file) else {
            return Err(ebadf());
        };
        let mut done = 0;
        let mut pos = h.pos;
        while done < buf.len() && pos < f.len {
            let block = f.blocks.get(pos / BLOCK).copied().unwrap_or(0) as usize;
            let off = pos % BLOCK;
            let n = (BLOCK - off).min(f.len - pos).min(buf.len() - done);
            let src = self.data.get(block).and_then(|b| b.get(off..off + n));
            let (Some(src), Some(dst)) = (src, buf.get_mut(done..done + n)) else {
                break;
            };
            dst.copy_from_slice(src);
            done += n;
            pos += n;
        }
        self.handle(handle)?.pos = pos;
        Ok(done)
    }

    fn write(&mut self, handle: i64, data: &[u8]) -> Result<GuestFileWrite> {
        let h = *self.handle(handle)?;
        if !h.write {
            return Err(ebadf());
        }
        let len = match self.files.get(h.file) {
            Some(f) => f.len,
            None => return Err(ebadf()),
        };
        let start = if h.append { len } else { h.pos };
        let end = start.checked_add(data.len()).ok_or_else(enospc)?;
        self.grow(h.file, end.div_ceil(BLOCK))?;
        let Some(f) = self.files.get_mut(h.file) else {
            return Err(ebadf());
        };
        let mut pos = start;
        let mut rest = data;
        while !rest.is_empty() {
            let block = f.blocks.get(pos / BLOCK).copied().unwrap_or(0) as usize;
            let off = pos % BLOCK;
            let n = (BLOCK - off).min(rest.len());
            let (head, tail) = rest.split_at(n);
            if let Some(dst) = self
                .data
                .get_mut(block)
                .and_then(|b| b.get_mut(off..off + n))
            {
                dst.copy_from_slice(head);
            }
            pos += n;
            rest = tail;
        }
        f.len = f.len.max(end);
        self.handle(handle)?.pos = end;
        Ok(GuestFileWrite {
            count: data.len() as i64,
            eof: false,
        })
    }

    fn seek(&mut self, handle: i64, offset: i64, whence: Seek) -> Result<GuestFileSeek> {
        let h = *self.handle(handle)?;
        let len = match self.files.get(h.file) {
            Some(f) => f.len as i64,
            None => return Err(ebadf()),
        };
        let base = match whence {
            Seek::Set => 0,
            Seek::Cur => h.pos as i64,
            Seek::End => len,
        };
        let pos = base.checked_add(offset).filter(|&p| p >= 0);
        let Some(pos) = pos else {
            return Err(Error::os(EINVAL, "Invalid argument"));
        };
        self.handle(handle)?.pos = pos as usize;
        Ok(GuestFileSeek {
            position: pos,
            eof: false,
        })
    }

    fn flush(&mut self, handle: i64) -> Result<()> {
        self.handle(handle).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Box<RamFiles> {
        // Too big for a test thread's stack: build it on the heap.
        let mut b: Box<std::mem::MaybeUninit<RamFiles>> = Box::new_uninit();
        b.write(RamFiles::new());
        // SAFETY: initialised just above.
        unsafe { b.assume_init() }
    }

    fn read_all(fs: &mut RamFiles, h: i64) -> Vec<u8> {
        let mut out = vec![];
        let mut buf = [0u8; 1000];
        loop {
            let n = fs.read(h, &mut buf).expect("read");
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn write_then_read_back() {
        let mut fs = store();
        let h = fs.open("/tmp/a", "w+").expect("open");
        assert_eq!(h, 1000);
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        assert_eq!(fs.write(h, &data).expect("write").count, 10_000);
        fs.seek(h, 0, Seek::Set).expect("seek");
        assert_eq!(read_all(&mut fs, h), data);
        assert_eq!(fs.seek(h, -1, Seek::End).expect("seek").position, 9_999);
        assert_eq!(fs.seek(h, 5, Seek::Cur).expect("seek").position, 10_004);
        fs.write(h, b"x").expect("write past end");
        fs.close(h).expect("close");
        let h2 = fs.open("/tmp/a", "r").expect("open");
        assert_eq!(h2, 1001);
        let back = read_all(&mut fs, h2);
        assert_eq!(back.len(), 10_005);
        assert_eq!(&back[10_000..], &[0, 0, 0, 0, b'x']);
        assert_eq!(fs.write(h2, b"no"), Err(ebadf()));
        assert_eq!(fs.close(h2), Ok(()));
        assert_eq!(fs.close(h2), Err(Error::NoHandle(h2)));
        assert!(!fs.has_handle(h2));
    }

    #[test]
    fn modes() {
        let mut fs = store();
        assert_eq!(fs.open("missing", "r"), Err(enoent()));
        assert_eq!(fs.open("missing", "r+"), Err(enoent()));
        let h = fs.open("log", "a").expect("open");
        fs.write(h, b"one").expect("write");
        assert_eq!(fs.read(h, &mut [0; 4]), Err(ebadf()));
        fs.close(h).expect("close");
        let h = fs.open("log", "a+").expect("open");
        fs.seek(h, 0, Seek::Set).expect("seek");
        fs.write(h, b"two").expect("append ignores position");
        fs.seek(h, 0, Seek::Set).expect("seek");
        assert_eq!(read_all(&mut fs, h), b"onetwo");
        assert!(fs.seek(h, -7, Seek::End).is_err());
        let w = fs.open("log", "w").expect("truncate");
        assert_eq!(fs.seek(w, 0, Seek::End).expect("seek").position, 0);
        assert_eq!(
            fs.open(&"n".repeat(NAME_CAP + 1), "w")
                .map_err(|e| e.to_string()),
            Err("File name too long".into())
        );
    }

    #[test]
    fn full_store_and_tables() {
        let mut fs = store();
        let h = fs.open("big", "w").expect("open");
        let chunk = vec![7u8; BLOCK];
        for _ in 0..BLOCKS {
            fs.write(h, &chunk).expect("fits");
        }
        assert_eq!(fs.free_bytes(), 0);
        assert_eq!(fs.write(h, b"x"), Err(enospc()));
        assert_eq!(enospc().to_string(), "No space left on device");
        fs.close(h).expect("close");
        // Truncating gives the space back.
        let h = fs.open("big", "w").expect("open");
        assert_eq!(fs.free_bytes(), BLOCKS * BLOCK);
        fs.close(h).expect("close");
        for i in 1..MAX_FILES {
            let h = fs.open(&format!("f{i}"), "w").expect("open");
            fs.close(h).expect("close");
        }
        assert_eq!(fs.open("one-too-many", "w"), Err(enospc()));
        assert_eq!(fs.list().count(), MAX_FILES);
        let hs: Vec<_> = (0..MAX_HANDLES)
            .map(|_| fs.open("big", "r").expect("open"))
            .collect();
        assert_eq!(
            fs.open("big", "r").map_err(|e| e.to_string()),
            Err("Too many open files".into())
        );
        fs.close(hs[3]).expect("close");
        assert!(fs.open("big", "r").is_ok());
    }
}
