//! Physical memory, which the boot page tables identity-map below 4 GiB.

/// The end of the identity map.
pub const MAPPED_LIMIT: u64 = 4 << 30;

/// The bytes at physical `addr..addr+len`, if that range is mapped.
///
/// # Safety
/// The range must be memory that nothing writes while the slice lives (firmware tables, the
/// boot information), and it must be readable without side effects (RAM or ROM, not MMIO).
pub unsafe fn phys_bytes(addr: u64, len: usize) -> Option<&'static [u8]> {
    let end = addr.checked_add(len as u64)?;
    if addr == 0 || end > MAPPED_LIMIT {
        return None;
    }
    // SAFETY: the range is identity-mapped (checked above) and the caller guarantees it is
    // stable, side-effect-free memory.
    Some(unsafe { core::slice::from_raw_parts(addr as usize as *const u8, len) })
}
