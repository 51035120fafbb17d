//! Ownership of the image's statics.
//!
//! The image runs on one CPU with interrupts off except around `hlt` (whose handlers touch
//! none of this), so a `static` only needs protecting against being handed out twice, not
//! against contention. Two shapes cover every use:
//!
//! - a large buffer (the engine's, the file store, the process table, the virtqueues, the IDT)
//!   is borrowed mutably exactly once, for the rest of the program: [`TakeOnce`], a
//!   [`spin::mutex::SpinMutex`] whose guard is leaked, so the lock is taken once and never
//!   released, with no `unsafe` of ours;
//! - a boot fact (the start info, the ACPI findings) is written once and then read anywhere:
//!   [`SetOnce`].
//!
//! `SetOnce` is written here, not taken from `spin::Once`, for size: `spin::Once::call_once`
//! carries poisoning checks whose panic paths (message, location, formatting) this image can
//! never reach (it aborts on panic), and it is instantiated once per fact. Measured with
//! `cargo xtask image`: 130,480 bytes with `spin::Once` for both facts against 129,952 with
//! `SetOnce` (+528 B, half the headroom under the 128 KiB limit). Its three `unsafe` lines
//! are the whole of what `spin::Once` would do for us here.
//!
//! Both are all zero bytes until used, so their `static`s cost `.bss`, not image size. `spin`
//! is built with its `spin_mutex` feature only (no `lock_api`).

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, Ordering};

use spin::mutex::{SpinMutex, SpinMutexGuard};

/// A value that can be borrowed mutably exactly once, for the rest of the program.
pub struct TakeOnce<T>(SpinMutex<T>);

impl<T> TakeOnce<T> {
    /// Wrap `value`.
    pub const fn new(value: T) -> Self {
        TakeOnce(SpinMutex::new(value))
    }

    /// The value, the first time; `None` after that.
    pub fn take(&'static self) -> Option<&'static mut T> {
        self.0.try_lock().map(SpinMutexGuard::leak)
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
    fn take_once_hands_out_one_reference() {
        static CELL: TakeOnce<u32> = TakeOnce::new(5);
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
