//! Single-core, interrupt-free ownership of statics.
//!
//! The image runs on one CPU with interrupts off, so a `static` only needs protecting against
//! being handed out twice; [`Once`] hands its value out mutably exactly once, and [`SetOnce`]
//! publishes a value read-only after boot.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, Ordering};

/// A value that can be borrowed mutably exactly once, for the rest of the program.
pub struct Once<T> {
    taken: AtomicU8,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is only through `take`, which hands out at most one reference ever
// (guarded by the atomic swap), so no two threads can reach it.
unsafe impl<T: Send> Sync for Once<T> {}

impl<T> Once<T> {
    /// Wrap `value`.
    pub const fn new(value: T) -> Self {
        Once {
            taken: AtomicU8::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// The value, the first time; `None` after that.
    #[allow(clippy::mut_from_ref)]
    pub fn take(&'static self) -> Option<&'static mut T> {
        if self.taken.swap(1, Ordering::AcqRel) != 0 {
            return None;
        }
        // SAFETY: the swap above succeeds once, so this is the only reference ever created.
        Some(unsafe { &mut *self.value.get() })
    }
}

/// A value written once (at boot) and read any number of times afterwards. Empty, it is all
/// zero bytes, so a `static` of it costs `.bss`, not image size.
pub struct SetOnce<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written only while `state` moves 0 -> 1 (one writer), and read only
// once `state` is 2, after the write completed; readers never see a partial write.
unsafe impl<T: Send + Sync> Sync for SetOnce<T> {}

impl<T> SetOnce<T> {
    /// Empty.
    pub const fn new() -> Self {
        SetOnce {
            state: AtomicU8::new(0),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Store `value`; fails (giving it back) if one was already stored.
    pub fn set(&self, value: T) -> Result<(), T> {
        if self
            .state
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(value);
        }
        // SAFETY: state 1 is held by this caller only; no reader looks before state 2.
        unsafe { (*self.value.get()).write(value) };
        self.state.store(2, Ordering::Release);
        Ok(())
    }

    /// The value, once stored.
    pub fn get(&self) -> Option<&T> {
        if self.state.load(Ordering::Acquire) != 2 {
            return None;
        }
        // SAFETY: state 2 means the write finished (the value is initialised) and no further
        // write happens.
        Some(unsafe { (*self.value.get()).assume_init_ref() })
    }
}

impl<T> Default for SetOnce<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_hands_out_one_reference() {
        static CELL: Once<u32> = Once::new(5);
        let first = CELL.take();
        assert_eq!(first.as_deref(), Some(&5));
        assert!(CELL.take().is_none());
    }

    #[test]
    fn set_once() {
        let c = SetOnce::new();
        assert!(c.get().is_none());
        assert!(c.set(1).is_ok());
        assert_eq!(c.set(2), Err(2));
        assert_eq!(c.get(), Some(&1));
    }
}
