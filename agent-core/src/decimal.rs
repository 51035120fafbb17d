//! JSON number text to a double and a double to `printf("%.17g")` text, in integer arithmetic.
//!
//! Upstream reads a non-integer number with `strtod` and writes a double with `%.17g`, so an
//! `id` of `0.1` comes back as `0.10000000000000001`. The obvious Rust (`str::parse::<f64>` and
//! `{:.16e}`) links `core`'s float parser and formatter: about 29 KB of code and tables, more
//! than half of what a core-only engine needs in all, for numbers that almost never occur. Both
//! directions are done here instead with one arbitrary-precision decimal ([`Decimal`]) shifted
//! by powers of two, the "simple decimal conversion" of Go's `strconv` and of `core`'s own slow
//! path: exact, correctly rounded (ties to even, as glibc's `strtod` and `printf` round), a few
//! hundred bytes of code and no tables. It is slow (microseconds per number), which does not
//! matter for the few numbers a request carries.
//!
//! The exact decimal value of any double has at most 767 significant digits, so [`Decimal`]
//! holds 768 and converts a double to text exactly; only input text longer than that is cut,
//! and the cut is remembered so that rounding still sees it.

/// Significant digits kept: enough for the exact value of every double.
const MAX_DIGITS: usize = 768;
/// Room for the digits a left shift adds at the front (2^60 has 19 digits).
const SPARE: usize = 20;
/// The largest shift per step: `(digit << 60) + carry` stays within a `u64`.
const MAX_SHIFT: u32 = 60;
/// Decimal exponents beyond this are zero or infinity long before any shift.
const POINT_RANGE: i32 = 2047;

/// A non-negative decimal `0.d1 d2 d3 ... × 10^point`, digits without leading or trailing
/// zeros.
struct Decimal {
    digits: [u8; MAX_DIGITS + SPARE],
    len: usize,
    point: i32,
    /// Non-zero digits were dropped past `MAX_DIGITS`.
    truncated: bool,
}

impl Decimal {
    fn new() -> Self {
        Decimal {
            digits: [0; MAX_DIGITS + SPARE],
            len: 0,
            point: 0,
            truncated: false,
        }
    }

    fn digit(&self, i: usize) -> u8 {
        if i < self.len {
            self.digits.get(i).copied().unwrap_or(0)
        } else {
            0
        }
    }

    fn trim(&mut self) {
        while self.len > 0 && self.digit(self.len - 1) == 0 {
            self.len -= 1;
        }
        if self.len == 0 {
            self.point = 0;
        }
    }

    /// Multiply by `2^shift` (`shift <= MAX_SHIFT`).
    fn shl(&mut self, shift: u32) {
        if self.len == 0 {
            return;
        }
        // Digits are written from the last one backwards, SPARE places to the right, then moved
        // down over the unused front.
        let mut carry = 0u64;
        let mut w = self.len + SPARE;
        for r in (0..self.len).rev() {
            let v = (u64::from(self.digit(r)) << shift) + carry;
            w -= 1;
            if let Some(d) = self.digits.get_mut(w) {
                *d = (v % 10) as u8;
            }
            carry = v / 10;
        }
        while carry > 0 && w > 0 {
            w -= 1;
            if let Some(d) = self.digits.get_mut(w) {
                *d = (carry % 10) as u8;
            }
            carry /= 10;
        }
        let mut len = self.len + SPARE - w;
        self.digits.copy_within(w..w + len, 0);
        self.point += (len - self.len) as i32;
        if len > MAX_DIGITS {
            let dropped = self.digits.get(MAX_DIGITS..len).unwrap_or(&[]);
            self.truncated |= dropped.iter().any(|&d| d != 0);
            len = MAX_DIGITS;
        }
        self.len = len;
        self.trim();
    }

    /// Divide by `2^shift` (`shift <= MAX_SHIFT`), keeping `MAX_DIGITS` digits.
    fn shr(&mut self, shift: u32) {
        let mut r = 0;
        let mut n = 0u64;
        // Read digits until the first output digit is non-zero.
        while n >> shift == 0 {
            if r < self.len {
                n = 10 * n + u64::from(self.digit(r));
                r += 1;
            } else if n == 0 {
                return;
            } else {
                while n >> shift == 0 {
                    n *= 10;
                    r += 1;
                }
                break;
            }
        }
        self.point -= r as i32 - 1;
        let mask = (1u64 << shift) - 1;
        let mut w = 0;
        while r < self.len {
            let d = (n >> shift) as u8;
            n = 10 * (n & mask) + u64::from(self.digit(r));
            r += 1;
            if let Some(slot) = self.digits.get_mut(w) {
                *slot = d;
            }
            w += 1;
        }
        while n > 0 {
            let d = (n >> shift) as u8;
            n = 10 * (n & mask);
            if w < MAX_DIGITS {
                if let Some(slot) = self.digits.get_mut(w) {
                    *slot = d;
                }
                w += 1;
            } else if d > 0 {
                self.truncated = true;
            }
        }
        self.len = w;
        self.trim();
    }

    /// The integer part, rounded half to even (`point` at most 19).
    fn round(&self) -> u64 {
        if self.len == 0 || self.point < 0 {
            return 0;
        }
        let point = self.point as usize;
        let mut n = 0u64;
        for i in 0..point {
            n = n.wrapping_mul(10).wrapping_add(u64::from(self.digit(i)));
        }
        let next = self.digit(point);
        let up = next > 5
            || (next == 5
                && (self.truncated
                    || point + 1 < self.len
                    || (point > 0 && self.digit(point - 1) % 2 == 1)));
        n + u64::from(up)
    }
}

/// The double nearest to a JSON number's text (`-?digits[.digits][(e|E)[+-]digits]`), as
/// `strtod` reads it: ties to even, `inf` past the largest double, zero (with its sign) below
/// the smallest. `None` if `text` is not such a number.
pub fn parse(text: &[u8]) -> Option<f64> {
    let (neg, rest) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let mut d = Decimal::new();
    let mut i = 0;
    let mut seen_digit = false;
    let mut after_point = false;
    // The decimal point's place, counted wide: only whether it lies in about -330..310 matters.
    let mut point: i64 = 0;
    while let Some(&b) = rest.get(i) {
        match b {
            b'0'..=b'9' => {
                seen_digit = true;
                if b == b'0' && d.len == 0 {
                    // A leading zero: only moves the point if it follows it.
                    if after_point {
                        point -= 1;
                    }
                } else {
                    if d.len < MAX_DIGITS {
                        if let Some(slot) = d.digits.get_mut(d.len) {
                            *slot = b - b'0';
                        }
                        d.len += 1;
                    } else if b != b'0' {
                        d.truncated = true;
                    }
                    if !after_point {
                        point += 1;
                    }
                }
            }
            b'.' if !after_point => after_point = true,
            _ => break,
        }
        i += 1;
    }
    if !seen_digit {
        return None;
    }
    if let Some(&(b'e' | b'E')) = rest.get(i) {
        i += 1;
        let neg_exp = match rest.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let start = i;
        let mut e: i64 = 0;
        while let Some(&b @ b'0'..=b'9') = rest.get(i) {
            // Saturates beyond any digit count a buffer can hold, so a long mantissa and a
            // long exponent still cancel exactly.
            e = (e * 10 + i64::from(b - b'0')).min(1 << 50);
            i += 1;
        }
        if i == start {
            return None;
        }
        point += if neg_exp { -e } else { e };
    }
    if i != rest.len() {
        return None;
    }
    d.point = point.clamp(-i64::from(POINT_RANGE), i64::from(POINT_RANGE)) as i32;
    d.trim();
    let bits = to_bits(&mut d);
    Some(f64::from_bits(bits | (u64::from(neg) << 63)))
}

/// The bits (without sign) of the double nearest to `d`.
fn to_bits(d: &mut Decimal) -> u64 {
    const INF: u64 = 0x7FF << 52;
    // Shifts that bring `point` towards zero without overshooting: 2^POW[n] < 10^n.
    const POW: [u8; 19] = [
        0, 3, 6, 9, 13, 16, 19, 23, 26, 29, 33, 36, 39, 43, 46, 49, 53, 56, 59,
    ];
    let step = |n: i32| POW.get(n as usize).map_or(MAX_SHIFT, |&s| u32::from(s));
    if d.len == 0 || d.point < -324 {
        return 0;
    }
    if d.point >= 310 {
        return INF;
    }
    let mut exp2 = 0i32;
    while d.point > 0 {
        let s = step(d.point);
        d.shr(s);
        exp2 += s as i32;
    }
    while d.point <= 0 {
        let s = if d.point == 0 {
            match d.digit(0) {
                5.. => break,
                0 | 1 => 2,
                _ => 1,
            }
        } else {
            step(-d.point)
        };
        d.shl(s);
        if d.point > POINT_RANGE {
            return INF;
        }
        exp2 -= s as i32;
    }
    // Now 0.5 <= d < 1: d = 0.1xxx in binary times 2^exp2.
    exp2 -= 1;
    // Below the normal range: shift into the subnormal position.
    while exp2 < -1022 {
        let s = ((-1022 - exp2) as u32).min(MAX_SHIFT);
        d.shr(s);
        exp2 += s as i32;
    }
    if exp2 + 1023 >= 0x7FF {
        return INF;
    }
    d.shl(53);
    let mut mantissa = d.round();
    if mantissa >= 1 << 53 {
        d.shr(1);
        exp2 += 1;
        mantissa = d.round();
        if exp2 + 1023 >= 0x7FF {
            return INF;
        }
    }
    let mut biased = exp2 + 1023;
    if mantissa < 1 << 52 {
        // Subnormal (or rounded up to the smallest normal, which the carry into bit 52 gives).
        biased -= 1;
    }
    ((biased as u64) << 52) + (mantissa & ((1 << 52) - 1))
}

/// `v` as `printf("%.17g", v)` writes it, into `buf`; returns the length used (at most 32).
pub fn format_g17(v: f64, buf: &mut [u8; 32]) -> usize {
    let mut n = 0;
    let mut put = |b: u8| {
        if let Some(slot) = buf.get_mut(n) {
            *slot = b;
        }
        n += 1;
    };
    let bits = v.to_bits();
    let neg = bits >> 63 != 0;
    let biased = ((bits >> 52) & 0x7FF) as i32;
    let frac = bits & ((1 << 52) - 1);
    if neg {
        put(b'-');
    }
    if biased == 0x7FF {
        for &b in if frac == 0 { b"inf" } else { b"nan" } {
            put(b);
        }
        return n;
    }
    // v = mantissa × 2^exp, exactly.
    let (mantissa, exp) = if biased == 0 {
        (frac, -1074)
    } else {
        (frac | 1 << 52, biased - 1075)
    };
    if mantissa == 0 {
        put(b'0');
        return n;
    }
    let mut d = Decimal::new();
    let mut m = mantissa;
    let mut tmp = [0u8; 20];
    let mut k = 0;
    while m > 0 {
        if let Some(slot) = tmp.get_mut(k) {
            *slot = (m % 10) as u8;
        }
        m /= 10;
        k += 1;
    }
    for i in 0..k {
        if let Some(slot) = d.digits.get_mut(i) {
            *slot = tmp.get(k - 1 - i).copied().unwrap_or(0);
        }
    }
    d.len = k;
    d.point = k as i32;
    d.trim();
    let mut e = exp;
    while e > 0 {
        let s = (e as u32).min(MAX_SHIFT);
        d.shl(s);
        e -= s as i32;
    }
    while e < 0 {
        let s = (e.unsigned_abs()).min(MAX_SHIFT);
        d.shr(s);
        e += s as i32;
    }
    // 17 significant digits, rounded half to even on the exact value.
    let mut digits = [0u8; 17];
    for (i, slot) in digits.iter_mut().enumerate() {
        *slot = d.digit(i);
    }
    let mut x = d.point - 1; // decimal exponent of the first digit
    let next = d.digit(17);
    let up = next > 5 || (next == 5 && (d.len > 18 || d.truncated || d.digit(16) % 2 == 1));
    if up {
        // Add one at the last place; 99...9 becomes 10...0, one place higher.
        let mut carry = true;
        for slot in digits.iter_mut().rev() {
            if *slot == 9 {
                *slot = 0;
            } else {
                *slot += 1;
                carry = false;
                break;
            }
        }
        if carry {
            digits[0] = 1;
            x += 1;
        }
    }
    // %g: fixed notation for exponents -4..17, else scientific; trailing zeros dropped.
    let mut last = 16;
    while last > 0 && digits.get(last) == Some(&0) {
        last -= 1;
    }
    let dg = |i: usize| b'0' + digits.get(i).copied().unwrap_or(0);
    if (-4..17).contains(&x) {
        if x < 0 {
            put(b'0');
            put(b'.');
            for _ in 0..(-x - 1) {
                put(b'0');
            }
            for i in 0..=last {
                put(dg(i));
            }
        } else {
            let int_digits = x as usize + 1;
            for i in 0..int_digits {
                put(dg(i));
            }
            if last >= int_digits {
                put(b'.');
                for i in int_digits..=last {
                    put(dg(i));
                }
            }
        }
    } else {
        put(dg(0));
        if last > 0 {
            put(b'.');
            for i in 1..=last {
                put(dg(i));
            }
        }
        put(b'e');
        put(if x < 0 { b'-' } else { b'+' });
        let a = x.unsigned_abs();
        if a >= 100 {
            put(b'0' + (a / 100) as u8);
        }
        put(b'0' + (a / 10 % 10) as u8);
        put(b'0' + (a % 10) as u8);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference: `core`'s correctly rounded formatter, cut to `%.17g` (what this module
    /// replaced).
    fn oracle_g17(v: f64) -> String {
        if v.is_nan() {
            return if v.is_sign_negative() { "-nan" } else { "nan" }.into();
        }
        if v.is_infinite() {
            return if v < 0.0 { "-inf" } else { "inf" }.into();
        }
        let sci = format!("{v:.16e}");
        let (mant, exp) = sci.split_once('e').unwrap();
        let exp: i32 = exp.parse().unwrap();
        let (neg, mant) = match mant.strip_prefix('-') {
            Some(m) => (true, m),
            None => (false, mant),
        };
        let digits: Vec<u8> = mant.bytes().filter(u8::is_ascii_digit).collect();
        let mut s = String::new();
        if neg {
            s.push('-');
        }
        let mut last = 16;
        while last > 0 && digits[last] == b'0' {
            last -= 1;
        }
        let d = |i: usize| digits[i] as char;
        if (-4..17).contains(&exp) {
            if exp < 0 {
                s.push_str("0.");
                for _ in 0..(-exp - 1) {
                    s.push('0');
                }
                (0..=last).for_each(|i| s.push(d(i)));
            } else {
                let int = exp as usize + 1;
                (0..int).for_each(|i| s.push(d(i)));
                if last >= int {
                    s.push('.');
                    (int..=last).for_each(|i| s.push(d(i)));
                }
            }
        } else {
            s.push(d(0));
            if last > 0 {
                s.push('.');
                (1..=last).for_each(|i| s.push(d(i)));
            }
            s.push_str(&format!(
                "e{}{:02}",
                if exp < 0 { '-' } else { '+' },
                exp.unsigned_abs()
            ));
        }
        s
    }

    fn g17(v: f64) -> String {
        let mut buf = [0u8; 32];
        let n = format_g17(v, &mut buf);
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    // The tie cases are exact doubles (…56.25 = 2^-2 steps); clippy cannot tell.
    #[allow(clippy::excessive_precision)]
    fn printf_examples() {
        for (v, s) in [
            // (out.rs's `g17_matches_printf` has the everyday cases.)
            (-0.0, "-0"),
            (1e-5, "1.0000000000000001e-05"),
            (-9223372036854775809.0, "-9.2233720368547758e+18"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (5e-324, "4.9406564584124654e-324"),
            // Ties at the 17th digit go to even, as glibc's printf.
            (1234567890123456.25, "1234567890123456.2"),
            (1234567890123456.75, "1234567890123456.8"),
            (99999999999999999.0, "1e+17"),
        ] {
            assert_eq!(g17(v), s, "{v:e}");
        }
    }

    #[test]
    fn strtod_examples() {
        for (t, v) in [
            ("1.5", 1.5),
            ("-0.0", -0.0),
            ("0e5", 0.0),
            ("1e400", f64::INFINITY),
            ("-1e400", f64::NEG_INFINITY),
            ("1e-400", 0.0),
            ("2.4703282292062327e-324", 0.0),
            ("2.4703282292062328e-324", 5e-324),
            ("1.7976931348623158e308", f64::MAX),
            ("1.7976931348623159e308", f64::INFINITY),
            ("9007199254740993", 9007199254740992.0),
            (
                "9007199254740993.0000000000000000000000000000001",
                9007199254740994.0,
            ),
            ("0.1", 0.1),
            ("1E+2", 100.0),
            // Exponents far outside i32 saturate instead of overflowing.
            ("1e99999999999999999999", f64::INFINITY),
            ("1e-99999999999999999999", 0.0),
            ("0e99999999999999999999", 0.0),
            ("0.000000000000000000000000000001e330", 1e300),
            ("100000000000000000000000000000e-330", 1e-301),
        ] {
            assert_eq!(
                parse(t.as_bytes()).map(f64::to_bits),
                Some(v.to_bits()),
                "{t}"
            );
        }
        for bad in ["", "-", ".", "1e", "1e+", "1x", "--1"] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad}");
        }
        // Very long inputs: digits past the 768th still decide a tie.
        let mut s = String::from("9007199254740993");
        s.push('.');
        s.push_str(&"0".repeat(1000));
        assert_eq!(parse(s.as_bytes()), Some(9007199254740992.0));
        s.push('1');
        assert_eq!(parse(s.as_bytes()), Some(9007199254740994.0));
        // A megabyte of digits (a frame may be 64 MiB): read once, the rest only noted.
        let long = format!("1{}e-1000000", "0".repeat(1_000_000));
        assert_eq!(parse(long.as_bytes()), Some(1.0));
        let nines = format!("0.{}", "9".repeat(1_000_000));
        assert_eq!(parse(nines.as_bytes()), Some(1.0));
        let huge = format!("{}e-1000", "1".repeat(1200));
        assert_eq!(
            parse(huge.as_bytes()).map(f64::to_bits),
            Some(huge.parse::<f64>().unwrap().to_bits())
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn formats_every_double_as_printf(bits in any::<u64>()) {
            let v = f64::from_bits(bits);
            prop_assert_eq!(g17(v), oracle_g17(v));
        }

        #[test]
        fn formats_short_decimals_as_printf(m in -99_999_999i64..99_999_999, e in -30i32..30) {
            let v: f64 = format!("{m}e{e}").parse().unwrap();
            prop_assert_eq!(g17(v), oracle_g17(v));
        }

        #[test]
        fn parses_as_strtod(
            neg in any::<bool>(),
            int in "(0|[1-9][0-9]{0,40})",
            frac in proptest::option::of("[0-9]{1,40}"),
            exp in proptest::option::of(-400i32..400),
        ) {
            let mut t = String::new();
            if neg { t.push('-'); }
            t.push_str(&int);
            if let Some(f) = &frac { t.push('.'); t.push_str(f); }
            if let Some(e) = exp { t.push_str(&format!("e{e}")); }
            let want: f64 = t.parse().unwrap();
            prop_assert_eq!(parse(t.as_bytes()).map(f64::to_bits), Some(want.to_bits()), "{}", t);
        }

        #[test]
        fn long_mantissas_and_exponents_cancel(
            int in "[1-9][0-9]{0,20}",
            zeros in 0usize..3000,
            leading in 0usize..3000,
            tweak in -30i64..30,
        ) {
            // 0.000…0INT000…0e(EXP): the point moves by both runs of zeros and the exponent.
            let exp = leading as i64 - zeros as i64 + tweak;
            let t = format!("0.{}{int}{}e{exp}", "0".repeat(leading), "0".repeat(zeros));
            let want: f64 = t.parse().unwrap();
            prop_assert_eq!(parse(t.as_bytes()).map(f64::to_bits), Some(want.to_bits()), "{}", t);
        }

        #[test]
        fn parses_printed_doubles_back(bits in any::<u64>()) {
            let v = f64::from_bits(bits);
            prop_assume!(v.is_finite());
            let t = g17(v);
            prop_assert_eq!(parse(t.as_bytes()).map(f64::to_bits), Some(bits), "{}", t);
        }
    }
}
