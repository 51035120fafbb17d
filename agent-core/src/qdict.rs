//! Upstream's hash functions, reproduced because its output order depends on them: QDict
//! iterates members by `tdb_hash` bucket (the echoed `id`, the first envelope error), and GLib's
//! hash table by `g_str_hash` (the first unexpected argument). Shared by the parser's callers
//! and the argument checks, so it depends on nothing.

/// upstream's `tdb_hash` (qobject/qdict.c), over the key as upstream stores it (a NUL from
/// `\u0000` is the two bytes C0 80 there).
pub(crate) fn tdb_hash(key: &[u8]) -> u32 {
    let len: u32 = key.iter().map(|&b| if b == 0 { 2u32 } else { 1 }).sum();
    let mut value = 0x238F_13AFu32.wrapping_mul(len);
    let mut i = 0u32;
    let mut add = |b: u8| {
        value = value.wrapping_add((b as u32) << (i * 5 % 24));
        i += 1;
    };
    for &b in key {
        if b == 0 {
            add(0xC0);
            add(0x80);
        } else {
            add(b);
        }
    }
    1_103_515_243u32.wrapping_mul(value).wrapping_add(12345)
}

/// The QDict bucket of a key: members are iterated in ascending bucket order.
pub(crate) fn qdict_bucket(key: &[u8]) -> u32 {
    tdb_hash(key) % 512
}

/// GLib's `g_str_hash` (djb2 over signed chars), over the key as upstream stores it.
pub(crate) fn g_str_hash(key: &[u8]) -> u32 {
    let mut h: u32 = 5381;
    let mut add = |b: u8| h = h.wrapping_mul(33).wrapping_add(b as i8 as i32 as u32);
    for &b in key {
        if b == 0 {
            add(0xC0);
            add(0x80);
        } else {
            add(b);
        }
    }
    h
}
