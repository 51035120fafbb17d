//! The base64 decoder for request arguments (`guest-file-write`, `guest-exec` input,
//! `guest-set-user-password`), tolerant as GLib's `g_base64_decode` is: upstream accepts what
//! GLib accepts, so a stricter decoder would refuse requests upstream serves. It works in place
//! in the frame buffer, so a payload costs no second buffer.

/// Base64 digit values; [`B64_PAD`] for `=`, [`B64_SKIP`] for `\n`, [`B64_BAD`] for the rest.
// Indexing in a const initialiser is checked at compile time.
#[allow(clippy::indexing_slicing)]
const B64_RANK: [u8; 256] = {
    let mut t = [B64_BAD; 256];
    let mut i = 0;
    while i < 26 {
        t[b'A' as usize + i] = i as u8;
        t[b'a' as usize + i] = 26 + i as u8;
        i += 1;
    }
    let mut d = 0;
    while d < 10 {
        t[b'0' as usize + d] = 52 + d as u8;
        d += 1;
    }
    t[b'+' as usize] = 62;
    t[b'/' as usize] = 63;
    t[b'=' as usize] = B64_PAD;
    t[b'\n' as usize] = B64_SKIP;
    t
};
const B64_PAD: u8 = 64;
const B64_SKIP: u8 = 65;
const B64_BAD: u8 = 66;

fn b64_rank(b: u8) -> u8 {
    B64_RANK.get(b as usize).copied().unwrap_or(B64_BAD)
}

/// Base64 characters checked and decoded at once on the SIMD path (a multiple of four).
#[cfg(feature = "simd")]
const SIMD_BLOCK: usize = if cfg!(test) { 64 } else { 1024 };

/// Decode the base64 string at `start..start+len` of `buf` in place, as upstream does: the
/// character set (`A-Za-z0-9+/=` and `\n`) is checked first ("Base64 data contains invalid
/// characters"), then GLib's `g_base64_decode` runs, which skips newlines, treats `=` as a zero
/// digit that also marks padding, and drops an incomplete final group. Returns the decoded
/// length (the bytes now at `start..`).
pub(crate) fn decode_in_place(buf: &mut [u8], start: usize, len: usize) -> Option<usize> {
    let out = decode_part(buf, start, len, &mut Decoder::default())?;
    Some(out.len())
}

/// A base64 decoding that may stop after any character and go on with the next part of the
/// string: it carries the digits of an incomplete group and the last two characters (GLib's
/// padding rule looks at them across newlines), so the parts decode to exactly the bytes the
/// whole string decodes to. A `guest-file-write` streamed into the file decodes its `buf-b64`
/// this way, one window at a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Decoder {
    v: u32,
    i: u8,
    last: [u8; 2],
}

/// Bytes before a part that [`Decoder::decode_in_place`] may write over: a group carried
/// over from the previous part can complete after one character and give three bytes.
pub(crate) const HEADROOM: usize = 2;

impl Decoder {
    /// Decode the next part of the string, at `start..start+len` of `buf`, in place, as
    /// [`decode_in_place`] does; the bytes of a group completed by this part come out, an
    /// incomplete group waits for the next part (and is dropped if none comes, as GLib drops
    /// it). The bytes may begin up to [`HEADROOM`] bytes before `start` (`start` must leave
    /// that much room); returns where they are. `None` if the part holds an invalid character.
    pub(crate) fn decode_in_place(
        &mut self,
        buf: &mut [u8],
        start: usize,
        len: usize,
    ) -> Option<core::ops::Range<usize>> {
        decode_part(buf, start, len, self)
    }
}

fn decode_part(
    buf: &mut [u8],
    start: usize,
    len: usize,
    st: &mut Decoder,
) -> Option<core::ops::Range<usize>> {
    use base64::Engine as _;
    let end = start.checked_add(len)?;
    buf.get(start..end)?;
    // Output never overtakes input: a carried group of `i` digits completes after at least
    // `4 - i` characters with at most 3 bytes, so starting `i - 1` bytes early is enough.
    let out = start.checked_sub(st.i.saturating_sub(1) as usize)?;
    let mut w = out;
    let mut r = start;
    let mut v: u32 = st.v;
    let mut i = st.i;
    let mut last = st.last;
    // With `simd`: no fast-path attempt before here (set past a block that failed the check,
    // so a payload with newlines costs one failed check per block, not one per group).
    #[cfg(feature = "simd")]
    let mut simd_from = start;
    // An invalid character anywhere is an error; the buffer's content no longer matters then,
    // so validation and decoding share one pass.
    while r < end {
        // Fastest path: a long run of plain digits, checked and decoded with SIMD.
        #[cfg(feature = "simd")]
        if i == 0 && r >= simd_from && end - r >= SIMD_BLOCK {
            let block = r..r + SIMD_BLOCK;
            let plain = buf
                .get(block.clone())
                .is_some_and(|b| base64_simd::STANDARD_NO_PAD.check(b).is_ok());
            if plain {
                if w != r {
                    buf.copy_within(block, w);
                }
                let decoded = buf
                    .get_mut(w..w + SIMD_BLOCK)
                    .and_then(|b| base64_simd::STANDARD_NO_PAD.decode_inplace(b).ok())
                    .map(|d| d.len());
                let Some(n) = decoded else {
                    // Not reached (the block was checked), but never decode garbage.
                    return None;
                };
                // Only plain digits: nothing to remember for the padding rule.
                last = [b'A', b'A'];
                w += n;
                r += SIMD_BLOCK;
                continue;
            }
            simd_from = r + SIMD_BLOCK;
        }
        // Fast path: whole blocks of plain digits decode exactly as standard base64 does.
        const BLOCK: usize = 256;
        if i == 0 && end - r >= BLOCK {
            let mut tmp = [0u8; BLOCK];
            if let Some(src) = buf.get(r..r + BLOCK) {
                tmp.copy_from_slice(src);
            }
            let mut out = [0u8; BLOCK / 4 * 3];
            if let Ok(n) =
                base64::engine::general_purpose::STANDARD_NO_PAD.decode_slice(tmp, &mut out)
                && let Some(dst) = buf.get_mut(w..w + n)
            {
                dst.copy_from_slice(out.get(..n).unwrap_or(&[]));
                last = [tmp[BLOCK - 1], tmp[BLOCK - 2]];
                w += n;
                r += BLOCK;
                continue;
            }
        }
        let c = buf.get(r).copied().unwrap_or(0);
        r += 1;
        let rank = match b64_rank(c) {
            B64_PAD => 0,
            B64_SKIP => continue,
            B64_BAD => return None,
            x => x,
        };
        last[1] = last[0];
        last[0] = c;
        v = (v << 6) | rank as u32;
        i += 1;
        if i == 4 {
            let mut put = |b: u8| {
                if let Some(slot) = buf.get_mut(w) {
                    *slot = b;
                }
                w += 1;
            };
            put((v >> 16) as u8);
            if last[1] != b'=' {
                put((v >> 8) as u8);
            }
            if last[0] != b'=' {
                put(v as u8);
            }
            i = 0;
        }
    }
    *st = Decoder { v, i, last };
    Some(out..w)
}
