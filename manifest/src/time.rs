//! RFC 3339 timestamps to and from Unix milliseconds (UTC): `X-Program-Date-Time` comes in,
//! `EXT-X-PROGRAM-DATE-TIME` goes out.
//!
//! The calendar (month lengths, leap years, days since 1970, offsets) is the `time` crate's, used
//! without its clock, parser or formatter. This module reads the wire's profile of RFC 3339 itself
//! because that profile is stricter than `time`'s RFC 3339 parser, which takes any byte between
//! date and time, any number of fraction digits and a leap second (read as `:59.999999999`); the
//! contract takes `T` (or `t`), at most nine fraction digits and no `:60`, and tells a malformed
//! value ([`TimeError::Shape`]) from an impossible one ([`TimeError::Range`]).

use ::time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};
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

impl From<::time::error::ComponentRange> for TimeError {
    fn from(_: ::time::error::ComponentRange) -> Self {
        TimeError::Range
    }
}

/// The earliest instant RFC 3339's four-digit years can write: `0000-01-01T00:00:00.000Z`.
const MIN_MS: i64 = -62_167_219_200_000;
/// The latest: `9999-12-31T23:59:59.999Z`.
const MAX_MS: i64 = 253_402_300_799_999;

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
            // Checked here: `time` allows offsets up to ±25:59, RFC 3339's time-hour stops at 23.
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
    // Every field has at most four digits, so these casts are lossless.
    let date = Date::from_calendar_date(year as i32, Month::try_from(month as u8)?, day as u8)?;
    let clock = Time::from_hms(hour as u8, minute as u8, second as u8)?;
    let offset = UtcOffset::from_whole_seconds(offset_minutes as i32 * 60)?;
    let seconds = PrimitiveDateTime::new(date, clock).assume_offset(offset).unix_timestamp();
    Ok(seconds * 1000 + i64::from(millis))
}

/// Formats Unix milliseconds as RFC 3339 UTC with milliseconds: `2026-11-25T13:00:00.123Z`.
/// Instants outside the years 0000–9999 (which RFC 3339 cannot write) are clamped to them.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let ms = ms.clamp(MIN_MS, MAX_MS);
    let Ok(at) = OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) else {
        unreachable!("years 0000 to 9999 are within the time crate's range");
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        ms.rem_euclid(1000)
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

    #[test]
    fn the_calendar_matches_independent_dates() {
        // Seconds from `date -u -d ... +%s`: leap and non-leap centuries, the first and last
        // four-digit years.
        for (text, s) in [
            ("1900-03-01T00:00:00Z", -2_203_891_200),
            ("2000-02-29T12:34:56Z", 951_827_696),
            ("2100-03-01T00:00:00Z", 4_107_542_400),
            ("0000-03-01T00:00:00Z", -62_162_035_200),
            ("9999-12-31T23:59:59Z", 253_402_300_799),
            ("1969-12-31T23:59:59Z", -1),
        ] {
            assert_eq!(parse_rfc3339_ms(text), Ok(s * 1000), "{text}");
            assert_eq!(format_rfc3339_ms(s * 1000), text.replace('Z', ".000Z"), "{text}");
        }
        assert_eq!(parse_rfc3339_ms("2100-02-29T00:00:00Z"), Err(TimeError::Range));
        assert_eq!(parse_rfc3339_ms("2000-02-29T00:00:00Z").map(|ms| ms + 86_400_000), parse_rfc3339_ms("2000-03-01T00:00:00Z"));
        // Every 997th hour and an odd millisecond, over the four-digit years: text and back.
        let mut ms = MIN_MS + 123;
        while ms < MAX_MS {
            assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Ok(ms), "{ms}");
            ms += 997 * 3_600_000 + 1;
        }
    }

    #[test]
    fn what_rfc3339_parsers_often_take_the_contract_still_refuses() {
        // The `time` crate's own RFC 3339 parser takes each of these; the wire contract does not.
        // Any byte between date and time:
        for bad in ["2026-11-25 13:00:00Z", "2026-11-25x13:00:00Z", "2026-11-25_13:00:00Z"] {
            assert_eq!(parse_rfc3339_ms(bad), Err(TimeError::Shape), "{bad:?}");
        }
        // More than nine fraction digits:
        assert_eq!(parse_rfc3339_ms("2026-11-25T13:00:00.0000000001Z"), Err(TimeError::Shape));
        // A leap second where one may fall (the end of a month, UTC):
        for bad in ["2016-12-31T23:59:60Z", "2017-01-01T00:59:60+01:00"] {
            assert_eq!(parse_rfc3339_ms(bad), Err(TimeError::Range), "{bad:?}");
        }
        // Offsets past 23 hours (`time`'s `UtcOffset` reaches ±25 h) and month or day 00 are out
        // of range, not malformed (`time`'s parser calls some of them malformed).
        for bad in ["2026-11-25T13:00:00+25:00", "2026-11-25T13:00:00-24:00", "2026-00-10T00:00:00Z", "2026-11-00T00:00:00Z"] {
            assert_eq!(parse_rfc3339_ms(bad), Err(TimeError::Range), "{bad:?}");
        }
        // And what it takes is kept: nine digits, `-00:00`, lowercase `t` and `z`.
        assert_eq!(parse_rfc3339_ms("2026-11-25T13:00:00.999999999-00:00"), Ok(1_795_611_600_999));
        assert_eq!(parse_rfc3339_ms("2026-11-25t13:00:00z"), Ok(1_795_611_600_000));
    }

    #[test]
    fn instants_rfc3339_cannot_write_are_clamped_to_years_0000_to_9999() {
        assert_eq!(parse_rfc3339_ms("0000-01-01T00:00:00Z"), Ok(MIN_MS));
        assert_eq!(parse_rfc3339_ms("9999-12-31T23:59:59.999Z"), Ok(MAX_MS));
        assert_eq!(format_rfc3339_ms(i64::MIN), "0000-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339_ms(MIN_MS - 1), "0000-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339_ms(i64::MAX), "9999-12-31T23:59:59.999Z");
        // An accepted time whose offset reaches past year 0000 renders as its first instant.
        let early = parse_rfc3339_ms("0000-01-01T00:30:00+01:00").unwrap();
        assert_eq!(early, MIN_MS - 1_800_000);
        assert_eq!(format_rfc3339_ms(early), "0000-01-01T00:00:00.000Z");
    }
}
