//! RFC 3339 timestamps to and from Unix milliseconds (UTC), hand-written so the core needs no
//! calendar crate: `X-Program-Date-Time` comes in, `EXT-X-PROGRAM-DATE-TIME` goes out.

use std::fmt;

/// What was wrong with an RFC 3339 timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeError {
    /// Not of the shape `YYYY-MM-DDTHH:MM:SS[.fff]Z` or with a `±hh:mm` offset.
    Shape,
    /// A field is out of range (month 13, day 31 in April, hour 24, …).
    Range,
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeError::Shape => f.write_str(
                "it is not an RFC 3339 date-time like 2026-11-25T13:00:00.000Z (date, 'T', time with seconds, optional fraction, then 'Z' or an offset like +01:00)",
            ),
            TimeError::Range => f.write_str("a date or time field is out of range"),
        }
    }
}

impl std::error::Error for TimeError {}

/// Days since 1970-01-01 of a proleptic Gregorian date (the well-known civil-from-days inverse).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses an RFC 3339 date-time (`2026-11-25T13:00:00.123+01:00`) to Unix milliseconds.
/// Fractions finer than a millisecond are truncated; leap seconds (`:60`) are rejected.
pub fn parse_rfc3339_ms(text: &str) -> Result<i64, TimeError> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Result<u32, TimeError> {
        let part = b.get(range).ok_or(TimeError::Shape)?;
        if part.iter().all(u8::is_ascii_digit) {
            Ok(part.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
        } else {
            Err(TimeError::Shape)
        }
    };
    let sep = |i: usize, allowed: &[u8]| -> Result<(), TimeError> {
        match b.get(i) {
            Some(c) if allowed.contains(c) => Ok(()),
            _ => Err(TimeError::Shape),
        }
    };
    if b.len() < 20 {
        return Err(TimeError::Shape);
    }
    let year = num(0..4)?;
    sep(4, b"-")?;
    let month = num(5..7)?;
    sep(7, b"-")?;
    let day = num(8..10)?;
    sep(10, b"Tt")?;
    let hour = num(11..13)?;
    sep(13, b":")?;
    let minute = num(14..16)?;
    sep(16, b":")?;
    let second = num(17..19)?;
    let mut i = 19;
    let mut millis = 0u32;
    if b[i] == b'.' {
        let start = i + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        if end == start || end - start > 9 {
            return Err(TimeError::Shape);
        }
        for (k, d) in b[start..end.min(start + 3)].iter().enumerate() {
            millis += u32::from(d - b'0') * 10u32.pow(2 - k as u32);
        }
        i = end;
    }
    let offset_minutes: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() => {
            let oh = num(i + 1..i + 3)?;
            sep(i + 3, b":")?;
            let om = num(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return Err(TimeError::Range);
            }
            let total = i64::from(oh * 60 + om);
            if *sign == b'-' {
                -total
            } else {
                total
            }
        }
        _ => return Err(TimeError::Shape),
    };
    let year = i64::from(year);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(TimeError::Range);
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_minutes * 60;
    Ok(seconds * 1000 + i64::from(millis))
}

/// Formats Unix milliseconds as RFC 3339 UTC with milliseconds: `2026-11-25T13:00:00.123Z`.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_timestamps_round_trip() {
        // 2026-11-25T13:00:00Z = 1795611600 s (checked with `date -d ... +%s`).
        assert_eq!(parse_rfc3339_ms("2026-11-25T13:00:00Z"), Ok(1_795_611_600_000));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00.000Z"), Ok(0));
        assert_eq!(format_rfc3339_ms(1_795_611_600_123), "2026-11-25T13:00:00.123Z");
        for ms in [0, 951_782_400_000, 1_709_164_800_999, 4_102_444_799_999, -1] {
            assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Ok(ms), "{ms}");
        }
    }

    #[test]
    fn offsets_and_fractions_are_applied() {
        assert_eq!(parse_rfc3339_ms("2026-11-25T14:00:00.5+01:00"), Ok(1_795_611_600_500));
        assert_eq!(parse_rfc3339_ms("2026-11-25T12:30:00.123456789-00:30"), Ok(1_795_611_600_123));
        assert_eq!(parse_rfc3339_ms("2024-02-29t00:00:00z"), Ok(1_709_164_800_000));
    }

    #[test]
    fn malformed_or_out_of_range_timestamps_are_rejected() {
        for bad in [
            "",
            "2026-11-25",
            "2026-11-25 13:00:00Z",
            "2026-11-25T13:00Z",
            "2026-11-25T13:00:00",
            "2026-11-25T13:00:00.Z",
            "2026-11-25T13:00:00+0100",
            "2026-11-25T13:00:00Zjunk",
            "+2026-11-25T13:00:00Z",
            "2026-11-25T13:00:00.1234567890Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), Err(TimeError::Shape), "{bad:?}");
        }
        for bad in [
            "2026-13-01T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-25T24:00:00Z",
            "2026-11-25T23:60:00Z",
            "2026-11-25T23:59:60Z",
            "2026-11-25T23:59:59+24:00",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), Err(TimeError::Range), "{bad:?}");
        }
    }
}
