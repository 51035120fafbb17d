//! A split virtqueue in memory the driver owns: descriptor table, available ring, used ring.
//!
//! The rings live in the driver's `static` memory (there is no heap), so a queue is handed a
//! [`Ring`] of it for good rather than allocating. The device reads and writes the
//! rings behind the compiler's back, so every access is volatile, with fences around the
//! index updates. The queue knows nothing of the bus: it asks its [`Transport`] to place it
//! and to ring its doorbell.
//!
//! The drivers here keep at most [`MIN_QUEUE`] buffers in flight per queue, so a queue uses
//! at most [`MAX_QUEUE`] entries whatever the device offers: larger rings would only cost
//! memory.

use core::sync::atomic::{Ordering, fence};

use super::{QueueNotify, QueueRings, Transport};
use crate::hw::tsc;

/// The queue size used (the device's, if smaller).
pub const MAX_QUEUE: u16 = 16;
/// The smallest queue the drivers can work with (8 receive buffers in flight).
pub const MIN_QUEUE: u16 = 8;
/// The memory one queue's rings take (a [`MAX_QUEUE`]-entry split ring fits).
pub const RING_BYTES: usize = 512;

/// The split-ring layout for `size` entries, packed as virtio 1.0 allows (descriptors
/// 16-aligned, available ring 2-aligned, used ring 4-aligned): (avail offset, used offset,
/// total bytes).
pub fn ring_layout(size: u16) -> (usize, usize, usize) {
    let n = size as usize;
    let avail = 16 * n;
    let used = (avail + 6 + 2 * n).next_multiple_of(4);
    (avail, used, used + 6 + 8 * n)
}

/// The memory of one queue's rings.
#[repr(C, align(16))]
pub struct Ring(pub [u8; RING_BYTES]);

/// The physical address of static memory (identity-mapped).
pub fn phys<T>(p: *const T) -> u64 {
    p as usize as u64
}

/// One split virtqueue in static memory.
pub struct Queue {
    base: *mut u8,
    size: u16,
    avail_off: usize,
    used_off: usize,
    avail_idx: u16,
    last_used: u16,
    notify: QueueNotify,
}

impl Queue {
    /// Place queue `index` in `ring` (static memory the queue owns from now on, shared with
    /// the device) and enable it on the device. `None` if the device has no such queue or only
    /// one smaller than [`MIN_QUEUE`].
    pub fn setup<T: Transport>(t: &T, index: u16, ring: &'static mut Ring) -> Option<Queue> {
        let max = t.queue_max_size(index);
        if max < MIN_QUEUE {
            return None;
        }
        // A split ring's size is a power of two; use the device's, capped by the ring memory.
        let size = 1u16 << (15 - max.min(MAX_QUEUE).leading_zeros().min(15));
        let (avail_off, used_off, total) = ring_layout(size);
        if total > RING_BYTES {
            return None;
        }
        let base = ring.0.as_mut_ptr();
        for i in 0..RING_BYTES {
            // SAFETY: `base` points at the RING_BYTES of `ring`, which this queue owns for
            // good; the device does not use it yet.
            unsafe { base.add(i).write_volatile(0) };
        }
        fence(Ordering::SeqCst);
        let rings = QueueRings {
            desc: phys(base),
            driver: phys(base) + avail_off as u64,
            device: phys(base) + used_off as u64,
        };
        let notify = t.enable_queue(index, size, rings)?;
        Some(Queue {
            base,
            size,
            avail_off,
            used_off,
            avail_idx: 0,
            last_used: 0,
            notify,
        })
    }

    fn write16(&mut self, off: usize, v: u16) {
        debug_assert!(off + 2 <= RING_BYTES);
        // SAFETY: every caller's offset lies inside the ring layout (checked against
        // RING_BYTES at setup) and is 2-aligned; the ring is shared with the device, so the
        // access is volatile.
        unsafe { (self.base.add(off) as *mut u16).write_volatile(v) }
    }

    fn read16(&self, off: usize) -> u16 {
        // SAFETY: as `write16`.
        unsafe { (self.base.add(off) as *const u16).read_volatile() }
    }

    fn read32(&self, off: usize) -> u32 {
        // SAFETY: as `write16`, 4-aligned.
        unsafe { (self.base.add(off) as *const u32).read_volatile() }
    }

    /// Fill descriptor `i`: `len` bytes at physical `addr`, written by the device if
    /// `device_writes`.
    pub fn set_desc(&mut self, i: u16, addr: u64, len: u32, device_writes: bool) {
        let off = 16 * (i % self.size) as usize;
        // SAFETY: descriptor `i % size` lies in the descriptor table at the ring's start;
        // offsets are 8-aligned.
        unsafe {
            (self.base.add(off) as *mut u64).write_volatile(addr);
            (self.base.add(off + 8) as *mut u32).write_volatile(len);
        }
        self.write16(off + 12, if device_writes { 2 } else { 0 });
        self.write16(off + 14, 0);
    }

    /// Offer descriptor `i` to the device.
    pub fn push(&mut self, i: u16) {
        let slot = self.avail_off + 4 + 2 * (self.avail_idx % self.size) as usize;
        self.write16(slot, i);
        fence(Ordering::SeqCst);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.write16(self.avail_off + 2, self.avail_idx);
        fence(Ordering::SeqCst);
    }

    /// A descriptor the device has finished with, and how many bytes it wrote.
    pub fn pop(&mut self) -> Option<(u16, u32)> {
        let used_idx = self.read16(self.used_off + 2);
        if used_idx == self.last_used {
            return None;
        }
        fence(Ordering::SeqCst);
        let elem = self.used_off + 4 + 8 * (self.last_used % self.size) as usize;
        let id = self.read32(elem) as u16;
        let len = self.read32(elem + 4);
        self.last_used = self.last_used.wrapping_add(1);
        Some((id, len))
    }

    /// Tell the device that buffers were pushed.
    pub fn notify<T: Transport>(&self, t: &T) {
        fence(Ordering::SeqCst);
        t.notify(self.notify);
    }
}

/// The transmit path failed (the device did not consume the buffer in time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxTimeout;

/// Wait (bounded: 5 s) for the device to return the one in-flight descriptor.
pub fn wait_used(q: &mut Queue) -> Result<(), TxTimeout> {
    let start = tsc::rdtsc();
    let limit = tsc::hz().saturating_mul(5);
    loop {
        if q.pop().is_some() {
            return Ok(());
        }
        if tsc::rdtsc().wrapping_sub(start) > limit {
            return Err(TxTimeout);
        }
        core::hint::spin_loop();
    }
}

/// The transmit buffers of one queue, each either the driver's or the device's (bit `i` set:
/// buffer and descriptor `i` are the driver's). A send takes a free buffer and offers it
/// without waiting for the device to take it, so up to [`TxSlots::COUNT`] are in flight and
/// the driver fills the next while the device moves the last; a buffer comes back only
/// through the used ring, so none is written while the device may still read it.
pub struct TxSlots(u8);

impl Default for TxSlots {
    fn default() -> Self {
        Self::new()
    }
}

impl TxSlots {
    /// Buffers per queue (no more than the smallest queue the drivers accept, [`MIN_QUEUE`]).
    pub const COUNT: usize = 8;

    /// All buffers the driver's (before the queue is used).
    pub const fn new() -> TxSlots {
        TxSlots(u8::MAX)
    }

    /// A free buffer's index, after taking back those the device finished with on `q`; when
    /// all are in flight, waits (bounded: 5 s, as [`wait_used`]) for one to come back.
    pub fn free(&mut self, q: &mut Queue) -> Result<usize, TxTimeout> {
        let start = tsc::rdtsc();
        let limit = tsc::hz().saturating_mul(5);
        loop {
            self.reclaim(q);
            if self.0 != 0 {
                return Ok(self.0.trailing_zeros() as usize);
            }
            if tsc::rdtsc().wrapping_sub(start) > limit {
                return Err(TxTimeout);
            }
            core::hint::spin_loop();
        }
    }

    /// Take back, without waiting, every buffer the device has finished with on `q`.
    pub fn reclaim(&mut self, q: &mut Queue) {
        while let Some((id, _)) = q.pop() {
            self.0 |= 1 << (id as usize % Self::COUNT);
        }
    }

    /// Hand buffer `slot` (its descriptor filled) to the device: offered on `q`, not free
    /// until the device gives it back.
    pub fn give(&mut self, q: &mut Queue, slot: usize) {
        self.0 &= !(1 << (slot % Self::COUNT));
        q.push((slot % Self::COUNT) as u16);
    }
}

/// Copy from device-written memory.
pub(super) fn copy_in(src: *const u8, dst: &mut [u8]) {
    for (i, d) in dst.iter_mut().enumerate() {
        // SAFETY: callers pass `src` pointing at a static buffer of at least `dst.len()` bytes.
        *d = unsafe { src.add(i).read_volatile() };
    }
}

/// Copy into device-read memory.
pub(super) fn copy_out(src: &[u8], dst: *mut u8) {
    for (i, s) in src.iter().enumerate() {
        // SAFETY: callers pass `dst` pointing at a static buffer of at least `src.len()` bytes.
        unsafe { dst.add(i).write_volatile(*s) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_layouts_fit() {
        assert_eq!(ring_layout(16), (256, 296, 296 + 6 + 128));
        assert_eq!(ring_layout(8), (128, 152, 152 + 6 + 64));
        assert!(ring_layout(MAX_QUEUE).2 <= RING_BYTES);
        assert!(TxSlots::COUNT <= MIN_QUEUE as usize && TxSlots::COUNT <= u8::BITS as usize);
    }
}
