//! Ownership of the image's statics, through `spin` rather than `unsafe` of ours.
//!
//! The image runs on one CPU with interrupts off except around `hlt` (whose handlers touch
//! none of this), so a `static` only needs protecting against being handed out twice, not
//! against contention. Two shapes cover every use:
//!
//! - a large buffer (the engine's, the file store, the process table, the virtqueues, the IDT)
//!   is borrowed mutably exactly once, for the rest of the program: [`TakeOnce`], a
//!   [`spin::mutex::SpinMutex`] whose guard is leaked, so the lock is taken once and never
//!   released;
//! - a boot fact (the start info, the ACPI findings) is written once and then read anywhere:
//!   [`spin::Once`] as it is.
//!
//! Both are all zero bytes until used, so their `static`s cost `.bss`, not image size. The
//! price is code: `spin::Once::call_once` carries poisoning checks this image (which aborts on
//! a panic) never needs, instantiated once per fact. Measured with the image profile: 96,256
//! bytes against 95,776 with the hand-written equivalent it replaced (+480 B, with 34 KiB
//! free under the 128 KiB limit), for no `unsafe` outside `hw/` and the boot code. `spin` is
//! built with its `once` and `spin_mutex` features only (no `lock_api`).

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
    fn once_keeps_the_first_value() {
        let c = spin::Once::new();
        assert!(c.get().is_none());
        assert_eq!(c.call_once(|| 1), &1);
        assert_eq!(c.call_once(|| 2), &1, "a second value is ignored");
        assert_eq!(c.get(), Some(&1));
    }
}
