//! Exact parsing of plain decimal text (`digits[.digits]`) into scaled integers, so that segment
//! durations and configuration values never pass through floating point.

use std::fmt;

/// Why a plain decimal did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalError {
    /// The text was empty.
    Empty,
    /// Not of the form `digits` or `digits.digits` (signs, exponents, spaces, `inf`, `NaN`…).
    NotPlain,
    /// More digits than any sensible value needs.
    TooManyDigits,
}

impl fmt::Display for DecimalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecimalError::Empty => f.write_str("it is empty"),
            DecimalError::NotPlain => {
                f.write_str("it is not a plain decimal number like 2 or 2.000 (no sign, exponent or spaces)")
            }
            DecimalError::TooManyDigits => f.write_str("it has too many digits"),
        }
    }
}

/// Parses `digits[.digits]` and returns `value * scale`, rounded to the nearest integer (halves
/// round up). `max_int_digits` counts significant integer digits (leading zeros are free);
/// `max_frac_digits` must be at most 18.
pub fn parse_scaled(
    text: &str,
    scale: u64,
    max_int_digits: usize,
    max_frac_digits: usize,
) -> Result<u64, DecimalError> {
    if text.is_empty() {
        return Err(DecimalError::Empty);
    }
    let (int, frac) = match text.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (text, ""),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || (text.contains('.') && !all_digits(frac)) {
        return Err(DecimalError::NotPlain);
    }
    let significant = int.trim_start_matches('0');
    if significant.len() > max_int_digits || frac.len() > max_frac_digits.min(18) {
        return Err(DecimalError::TooManyDigits);
    }
    // Checked: a caller's `max_int_digits` above 38 lets more digits through than a u128 holds.
    let int_value: u128 = significant
        .bytes()
        .try_fold(0u128, |acc, b| acc.checked_mul(10)?.checked_add(u128::from(b - b'0')))
        .ok_or(DecimalError::TooManyDigits)?;
    let frac_value: u128 = frac.bytes().fold(0, |acc, b| acc * 10 + u128::from(b - b'0'));
    let denominator: u128 = 10u128.pow(frac.len() as u32);
    let scale = u128::from(scale);
    let scaled_frac = (frac_value * scale * 2 + denominator) / (denominator * 2);
    let total = int_value
        .checked_mul(scale)
        .and_then(|v| v.checked_add(scaled_frac))
        .ok_or(DecimalError::TooManyDigits)?;
    u64::try_from(total).map_err(|_| DecimalError::TooManyDigits)
}

/// Formats integer milliseconds as seconds with exactly three decimals (`2000` -> `2.000`).
pub fn format_millis(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_parse_exactly_to_milliseconds() {
        assert_eq!(parse_scaled("2", 1000, 6, 9), Ok(2000));
        assert_eq!(parse_scaled("2.000", 1000, 6, 9), Ok(2000));
        assert_eq!(parse_scaled("0.1", 1000, 6, 9), Ok(100));
        assert_eq!(parse_scaled("1.9999", 1000, 6, 9), Ok(2000));
        assert_eq!(parse_scaled("1.0005", 1000, 6, 9), Ok(1001));
        assert_eq!(parse_scaled("1.00049", 1000, 6, 9), Ok(1000));
        assert_eq!(parse_scaled("007.5", 1000, 1, 9), Ok(7500));
    }

    #[test]
    fn minutes_scale_to_milliseconds_without_floats() {
        assert_eq!(parse_scaled("0.05", 60_000, 9, 9), Ok(3000));
        assert_eq!(parse_scaled("10", 60_000, 9, 9), Ok(600_000));
        assert_eq!(parse_scaled("0.1", 60_000, 9, 9), Ok(6000));
    }

    #[test]
    fn anything_but_plain_decimals_is_rejected() {
        for bad in ["-1", "+1", "1e3", "NaN", "inf", " 1", "1 ", ".5", "5.", "1.2.3", "0x10", "1,5"] {
            assert_eq!(parse_scaled(bad, 1000, 6, 9), Err(DecimalError::NotPlain), "{bad:?}");
        }
        assert_eq!(parse_scaled("", 1000, 6, 9), Err(DecimalError::Empty));
        assert_eq!(parse_scaled("1234567", 1000, 6, 9), Err(DecimalError::TooManyDigits));
        assert_eq!(parse_scaled("1.0000000001", 1000, 6, 9), Err(DecimalError::TooManyDigits));
    }

    #[test]
    fn more_integer_digits_than_u128_holds_are_too_many_not_an_overflow() {
        // Found by tests/fuzz.rs (fuzz_decimals): with `max_int_digits` of 39 or more, the integer
        // part overflowed u128 (a panic with overflow checks, a wrong value without).
        assert_eq!(parse_scaled("400000000000000000000000000000000000000", 1, 39, 0), Err(DecimalError::TooManyDigits));
        assert_eq!(parse_scaled(&"9".repeat(45), 1000, 45, 0), Err(DecimalError::TooManyDigits));
        assert_eq!(parse_scaled(&format!("{}18446744073709551615", "0".repeat(30)), 1, 45, 0), Ok(u64::MAX));
    }

    #[test]
    fn milliseconds_format_with_three_decimals() {
        assert_eq!(format_millis(2000), "2.000");
        assert_eq!(format_millis(33), "0.033");
        assert_eq!(format_millis(12_345), "12.345");
    }
}
