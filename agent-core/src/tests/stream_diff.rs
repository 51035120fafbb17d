//! Which answers a streamed `guest-file-write` may give that differ from the same request
//! held whole: the rules of `Agent::stream_writes`, in one place for the property test
//! (`tests::stream`) and the `stream` fuzz target (which includes this file by path), so the
//! two cannot drift apart. Plain std, nothing from the crate.

/// The note a streamed request's late error ends with, after the number of bytes.
pub const NOTE: &str = " bytes were already written to the file)";

/// `s` is `b` with the written-bytes note added to some error descriptions: their sum.
pub fn note_added(b: &str, s: &str) -> Option<u64> {
    let (bl, sl): (Vec<&str>, Vec<&str>) = (b.lines().collect(), s.lines().collect());
    if bl.len() != sl.len() {
        return None;
    }
    let mut found = None;
    for (x, y) in bl.iter().zip(&sl) {
        if x == y {
            continue;
        }
        // A lexical error in the text quotes the token as far as the framer still holds it:
        // the end of the whole request's quote.
        const STRAY: &str = "JSON parse error, stray '";
        let (x, y) = match (x.split_once(STRAY), y.split_once(STRAY)) {
            (Some((xa, xq)), Some((ya, yq))) if xa == ya => {
                let xq = xq.strip_suffix("'\"}}")?;
                let (yq, note) = match yq.split_once("' (") {
                    Some((q, n)) => (q, format!(" ({n}")),
                    None => (yq.strip_suffix("'\"}}")?, "\"}}".to_string()),
                };
                // Another token's quote is the same; the string's begins with its opening
                // quote in both, and the streamed one has lost the middle.
                let open = if xq.starts_with("\\\"") { "\\\"" } else { "'" };
                let same_end = match (xq.strip_prefix(open), yq.strip_prefix(open)) {
                    (Some(a), Some(b)) => a.ends_with(b),
                    _ => false,
                };
                if xq != yq && !same_end {
                    return None;
                }
                if note == "\"}}" {
                    found = Some(found.unwrap_or(0));
                    continue;
                }
                (format!("{xa}{STRAY}'\"}}}}"), format!("{xa}{STRAY}'{note}"))
            }
            _ => (x.to_string(), y.to_string()),
        };
        // A `count` after the text, smaller than it: the whole request wrote `count` bytes
        // (or failed to), the streamed one wrote them all and says so.
        if (x.starts_with("{\"return\": {\"count\": ") || x.contains("failed to write to file"))
            && y.contains("' is invalid for argument count")
        {
            // (Nothing was written if the writes failed: then there is no note.)
            let (_, rest) = y.split_once("' is invalid for argument count")?;
            let n: u64 = match rest.strip_prefix(" (") {
                Some(r) => r.split_once(NOTE)?.0.parse().ok()?,
                None if rest == "\"}}" => 0,
                None => return None,
            };
            found = Some(found.unwrap_or(0) + n);
            continue;
        }
        let head = x.strip_suffix("\"}}")?;
        let rest = y.strip_prefix(head)?.strip_prefix(" (")?;
        let n: u64 = rest.strip_suffix(&format!("{NOTE}\"}}}}"))?.parse().ok()?;
        if n == 0 {
            return None;
        }
        found = Some(found.unwrap_or(0) + n);
    }
    found
}
