//! Memory quantities in every form Kubernetes accepts (`512Mi`, `1G`,
//! `1e9`, `0.5Gi`, `500m`, `+1Ei`).
//!
//! The grammar is Kubernetes' own (`resource.Quantity`):
//!
//! ```text
//! quantity  ::= [ "+" | "-" ] number suffix
//! number    ::= digits | digits "." [ digits ] | "." digits
//! suffix    ::= "" | binarySI | decimalSI | ( "e" | "E" ) [ "+" | "-" ] digits
//! binarySI  ::= Ki | Mi | Gi | Ti | Pi | Ei
//! decimalSI ::= n | u | m | k | M | G | T | P | E
//! ```
//!
//! Values are computed exactly in integers, rounded up to a whole byte as
//! Kubernetes rounds them; beyond 19 significant digits they are rounded up
//! at the nineteenth. A value larger than `u64::MAX` bytes (`16Ei`, `1e100`)
//! saturates there instead of overflowing.

/// Why a quantity was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "{0:?} is not a quantity; write a number with an optional suffix, such as 512Mi, 2Gi, 1.5G or 1e9"
    )]
    Malformed(String),
    #[error("{0:?} is negative; a memory size must not be")]
    Negative(String),
}

/// A quantity taken apart: `digits` × 10^`exp10` × 2^`pow2`.
struct Parts<'a> {
    negative: bool,
    digits: std::iter::Chain<std::str::Bytes<'a>, std::str::Bytes<'a>>,
    exp10: i64,
    pow2: u32,
}

/// Exponents beyond this already make any nonzero value saturate or round
/// to one byte; clamping keeps the arithmetic on them in range.
const MAX_EXPONENT: i64 = 1_000_000;

fn parts(q: &str) -> Option<Parts<'_>> {
    let (negative, rest) = match q.as_bytes().first() {
        Some(b'-') => (true, &q[1..]),
        Some(b'+') => (false, &q[1..]),
        _ => (false, q),
    };
    let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (int, rest) = rest.split_at(int_len);
    let (frac, suffix) = match rest.strip_prefix('.') {
        Some(after) => {
            let n = after.bytes().take_while(u8::is_ascii_digit).count();
            after.split_at(n)
        }
        None => ("", rest),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let (exp10, pow2) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        s if s.starts_with(['e', 'E']) => (exponent(&s[1..])?, 0),
        _ => return None,
    };
    let frac_len = i64::try_from(frac.len()).unwrap_or(i64::MAX);
    Some(Parts {
        negative,
        digits: int.bytes().chain(frac.bytes()),
        exp10: exp10.saturating_sub(frac_len),
        pow2,
    })
}

/// The exponent after `e`: a signed integer, clamped to ±[`MAX_EXPONENT`].
fn exponent(s: &str) -> Option<i64> {
    let (sign, digits) = match s.as_bytes().first() {
        Some(b'-') => (-1, &s[1..]),
        Some(b'+') => (1, &s[1..]),
        _ => (1, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits.bytes().fold(0i64, |n, d| {
        n.saturating_mul(10)
            .saturating_add(i64::from(d - b'0'))
            .min(MAX_EXPONENT)
    });
    Some(sign * magnitude)
}

/// Parses a memory quantity into bytes, rounded up to a whole byte and
/// saturating at `u64::MAX`.
pub fn parse_bytes(q: &str) -> Result<u64, QuantityError> {
    let p = parts(q).ok_or_else(|| QuantityError::Malformed(q.to_string()))?;
    // Significant digits: without leading zeros, and trailing zeros moved
    // into the exponent.
    let all: Vec<u8> = p.digits.skip_while(|d| *d == b'0').collect();
    let kept = all.len() - all.iter().rev().take_while(|d| **d == b'0').count();
    let digits = &all[..kept];
    if digits.is_empty() {
        return Ok(0);
    }
    if p.negative {
        return Err(QuantityError::Negative(q.to_string()));
    }
    let trailing = i64::try_from(all.len() - kept).unwrap_or(i64::MAX);
    let count = i64::try_from(digits.len()).unwrap_or(i64::MAX);
    let exp10 = p.exp10.saturating_add(trailing);
    // The value is below 10^magnitude and at least a tenth of that.
    let magnitude = count.saturating_add(exp10);
    if magnitude > 20 {
        return Ok(u64::MAX);
    }
    if magnitude < -40 {
        // Below 10^-40 × 2^60: a sliver of a byte, rounded up.
        return Ok(1);
    }
    const PRECISION: usize = 19;
    let used = digits.len().min(PRECISION);
    let mut mantissa = digits[..used]
        .iter()
        .fold(0u128, |n, d| n * 10 + u128::from(d - b'0'));
    if digits.len() > used {
        // The dropped digits end in a nonzero one: round up.
        mantissa += 1;
    }
    let exp10 = exp10 + i64::try_from(digits.len() - used).unwrap_or(0);
    let scaled = mantissa << p.pow2;
    let bytes = if exp10 >= 0 {
        10u128
            .checked_pow(u32::try_from(exp10).unwrap_or(u32::MAX))
            .and_then(|f| scaled.checked_mul(f))
    } else {
        match 10u128.checked_pow(u32::try_from(-exp10).unwrap_or(u32::MAX)) {
            Some(f) => Some(scaled.div_ceil(f)),
            // A divisor beyond u128 exceeds the scaled mantissa.
            None => Some(1),
        }
    };
    Ok(bytes
        .and_then(|b| u64::try_from(b).ok())
        .unwrap_or(u64::MAX))
}

/// Formats bytes in the largest binary unit that keeps a whole number
/// (`384Mi`), falling back to Mi rounded up.
pub fn format_bytes(bytes: u64) -> String {
    const MI: u64 = 1024 * 1024;
    const GI: u64 = 1024 * MI;
    if bytes >= GI && bytes.is_multiple_of(GI) {
        format!("{}Gi", bytes / GI)
    } else {
        format!("{}Mi", bytes.div_ceil(MI))
    }
}

/// Formats bytes as [`format_bytes`] does, unless rounding up to a whole
/// Mi would pass `cap` (a cap such as `1.2e9`): then exactly, in bytes.
pub fn format_bytes_within(bytes: u64, cap: u64) -> String {
    let rounded = format_bytes(bytes);
    match parse_bytes(&rounded) {
        Ok(b) if b <= cap => rounded,
        _ => bytes.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KI: u64 = 1 << 10;

    /// Every production of Kubernetes' quantity grammar, with its value in
    /// bytes.
    #[test]
    fn parses_every_form_of_the_kubernetes_quantity_grammar() {
        let cases: &[(&str, u64)] = &[
            // <digits>, with and without sign and leading zeros
            ("0", 0),
            ("1", 1),
            ("1048576", 1 << 20),
            ("+1", 1),
            ("007", 7),
            ("-0", 0),
            // <digits>.<digits>, <digits>., .<digits>
            ("1.5", 2),
            ("5.", 5),
            (".5", 1),
            ("0.25Ki", 256),
            // binarySI
            ("1Ki", KI),
            ("256Mi", 256 << 20),
            ("1Gi", 1 << 30),
            ("1.5Gi", 3 << 29),
            ("0.5Gi", 1 << 29),
            (".5Gi", 1 << 29),
            ("+1Gi", 1 << 30),
            ("1Ti", 1 << 40),
            ("2Pi", 2 << 50),
            ("1Ei", 1 << 60),
            ("8Ei", 1 << 63),
            // decimalSI, milli and smaller rounded up to a whole byte
            ("1n", 1),
            ("1u", 1),
            ("500m", 1),
            ("1500m", 2),
            ("2000m", 2),
            ("1k", 1000),
            ("128M", 128_000_000),
            ("1G", 1_000_000_000),
            ("1.5G", 1_500_000_000),
            ("1T", 1_000_000_000_000),
            ("1P", 1_000_000_000_000_000),
            ("1E", 1_000_000_000_000_000_000),
            // decimalExponent
            ("1e9", 1_000_000_000),
            ("1E3", 1000),
            ("1e+3", 1000),
            ("1.5e3", 1500),
            ("15e-1", 2),
            ("1e-3", 1),
            ("0e100", 0),
            ("123456789e-3", 123_457),
            // saturation instead of overflow
            ("16Ei", u64::MAX),
            ("18446744073709551615", u64::MAX),
            ("1e100", u64::MAX),
            ("1e99999999999999999999", u64::MAX),
            ("99999999999999999999999999Ei", u64::MAX),
            // tiny and very long values
            ("1e-100", 1),
            ("1e-99999999999999999999", 1),
            ("0.000000000000000000000000000000000000000000001", 1),
            ("1234567890.1234567890123", 1_234_567_891),
        ];
        for (q, bytes) in cases {
            assert_eq!(parse_bytes(q), Ok(*bytes), "{q}");
        }
    }

    #[test]
    fn refuses_what_kubernetes_refuses_with_a_message_saying_what_to_write() {
        for q in [
            "", "lots", "12Qi", "1ki", "1K", "1KI", "1 Gi", " 1Gi", "1Gi ", "Gi", ".", "+", "-",
            "--1", "+-1", "1.2.3", "1e", "1e+", "1e1.5", "e5", "1Gi1", "1mi", "0x10", "1_000",
        ] {
            let e = parse_bytes(q).expect_err(q);
            assert_eq!(e, QuantityError::Malformed(q.to_string()));
            assert!(e.to_string().contains("such as 512Mi"), "{e}");
        }
        assert_eq!(
            parse_bytes("-1Gi"),
            Err(QuantityError::Negative("-1Gi".into()))
        );
        assert_eq!(
            parse_bytes("-1Gi").unwrap_err().to_string(),
            "\"-1Gi\" is negative; a memory size must not be"
        );
    }

    #[test]
    fn formats_in_whole_units() {
        assert_eq!(format_bytes(1 << 30), "1Gi");
        assert_eq!(format_bytes(384 * 1024 * 1024), "384Mi");
        assert_eq!(format_bytes(128_000_000), "123Mi");
        assert_eq!(format_bytes_within(128_000_000, 1 << 30), "123Mi");
        assert_eq!(
            format_bytes_within(1_200_000_000, 1_200_000_000),
            "1200000000",
            "rounding up would pass the cap"
        );
    }
}
