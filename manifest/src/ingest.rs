//! Validation of one uploaded segment (`PUT /ingest/{session}/{seq}.ts`): the sequence number in
//! the path, the `X-Duration`, `X-Program-Date-Time` and `X-Discontinuity` headers, and the
//! MPEG-TS body. Every error's `Display` is written for the uploader: it says what to send instead.

use crate::decimal::{self, DecimalError};
use crate::time::{self, TimeError};
use std::fmt;

/// Highest accepted segment number.
pub const MAX_SEQ: u64 = 1_000_000_000;
/// Longest accepted segment, in milliseconds.
pub const MAX_DURATION_MS: u32 = 30_000;
/// Size of one MPEG-TS packet.
pub const TS_PACKET_LEN: usize = 188;
/// The byte every MPEG-TS packet starts with.
pub const TS_SYNC_BYTE: u8 = 0x47;

/// What was wrong with an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestError {
    /// The `{seq}` path part is not a plain decimal in 0..=1_000_000_000.
    Seq(SeqProblem),
    /// No `X-Duration` header.
    MissingDuration,
    /// `X-Duration` did not parse.
    Duration(DecimalError),
    /// `X-Duration` parsed but is 0 or above 30 s.
    DurationRange(u64),
    /// `X-Program-Date-Time` did not parse.
    ProgramDateTime(TimeError),
    /// `X-Discontinuity` was neither `1` nor `0`.
    Discontinuity,
    /// The body was empty.
    EmptyBody,
    /// The body length is not a multiple of 188.
    TsLength(usize),
    /// A packet does not start with 0x47.
    TsSync(usize),
}

/// Why a sequence number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqProblem {
    Empty,
    NotDigits,
    LeadingZero,
    TooLarge,
}

impl fmt::Display for IngestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IngestError::Seq(problem) => {
                let why = match problem {
                    SeqProblem::Empty => "it is empty",
                    SeqProblem::NotDigits => "it must be decimal digits only",
                    SeqProblem::LeadingZero => "it must not have leading zeros",
                    SeqProblem::TooLarge => "it must be at most 1000000000",
                };
                write!(f, "the segment number in /ingest/{{session}}/{{seq}}.ts is not valid: {why}")
            }
            IngestError::MissingDuration => f.write_str(
                "missing X-Duration header: send the segment's length in seconds, e.g. X-Duration: 2.000",
            ),
            IngestError::Duration(e) => write!(
                f,
                "X-Duration is not valid: {e}; send seconds as a plain decimal, e.g. X-Duration: 2.000"
            ),
            IngestError::DurationRange(ms) => write!(
                f,
                "X-Duration is {}: a segment must last more than 0 and at most 30 seconds",
                decimal::format_millis(*ms)
            ),
            IngestError::ProgramDateTime(e) => write!(f, "X-Program-Date-Time is not valid: {e}"),
            IngestError::Discontinuity => {
                f.write_str("X-Discontinuity must be 1 (first segment after a break) or 0")
            }
            IngestError::EmptyBody => f.write_str("the body is empty: send one MPEG-TS segment"),
            IngestError::TsLength(len) => write!(
                f,
                "the body is not MPEG-TS: its length {len} is not a multiple of 188-byte packets"
            ),
            IngestError::TsSync(offset) => write!(
                f,
                "the body is not MPEG-TS: the packet at byte {offset} does not start with the sync byte 0x47"
            ),
        }
    }
}

impl std::error::Error for IngestError {}

/// Parses the `{seq}` of `/ingest/{session}/{seq}.ts`: decimal digits, no sign, no leading zeros
/// (except `0` itself), at most [`MAX_SEQ`].
pub fn parse_seq(text: &str) -> Result<u64, IngestError> {
    if text.is_empty() {
        return Err(IngestError::Seq(SeqProblem::Empty));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IngestError::Seq(SeqProblem::NotDigits));
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(IngestError::Seq(SeqProblem::LeadingZero));
    }
    if text.len() > 10 {
        return Err(IngestError::Seq(SeqProblem::TooLarge));
    }
    let seq: u64 = text.bytes().fold(0, |acc, b| acc * 10 + u64::from(b - b'0'));
    if seq > MAX_SEQ {
        return Err(IngestError::Seq(SeqProblem::TooLarge));
    }
    Ok(seq)
}

/// Parses `X-Duration` (seconds, `digits[.digits]`, up to 9 decimals) to milliseconds, rounding
/// to the nearest millisecond. The result must be in 1..=30_000.
pub fn parse_duration_ms(text: &str) -> Result<u32, IngestError> {
    let ms = decimal::parse_scaled(text, 1000, 2, 9).map_err(IngestError::Duration)?;
    if ms == 0 || ms > u64::from(MAX_DURATION_MS) {
        return Err(IngestError::DurationRange(ms));
    }
    Ok(ms as u32)
}

/// Parses `X-Discontinuity`: `1` or `0`.
pub fn parse_discontinuity(text: &str) -> Result<bool, IngestError> {
    match text {
        "1" => Ok(true),
        "0" => Ok(false),
        _ => Err(IngestError::Discontinuity),
    }
}

/// Checks that a body looks like MPEG-TS: non-empty, whole 188-byte packets, each starting with
/// 0x47. (It does not check for the IDR frame; players cope, and that is the segmenter's job.)
pub fn check_ts(body: &[u8]) -> Result<(), IngestError> {
    if body.is_empty() {
        return Err(IngestError::EmptyBody);
    }
    if body.len() % TS_PACKET_LEN != 0 {
        return Err(IngestError::TsLength(body.len()));
    }
    match body.chunks(TS_PACKET_LEN).position(|packet| packet[0] != TS_SYNC_BYTE) {
        Some(index) => Err(IngestError::TsSync(index * TS_PACKET_LEN)),
        None => Ok(()),
    }
}

/// The validated upload headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeaders {
    pub duration_ms: u32,
    /// Capture time of the first frame, when the uploader sent one.
    pub pdt_ms: Option<i64>,
    /// The uploader marked this segment as the first after a break.
    pub discontinuity: bool,
}

impl SegmentHeaders {
    /// Validates the raw header values (`None` when the header is absent).
    pub fn parse(
        duration: Option<&str>,
        program_date_time: Option<&str>,
        discontinuity: Option<&str>,
    ) -> Result<Self, IngestError> {
        let duration_ms = parse_duration_ms(duration.ok_or(IngestError::MissingDuration)?)?;
        let pdt_ms = program_date_time
            .map(|text| time::parse_rfc3339_ms(text).map_err(IngestError::ProgramDateTime))
            .transpose()?;
        let discontinuity = discontinuity.map(parse_discontinuity).transpose()?.unwrap_or(false);
        Ok(SegmentHeaders { duration_ms, pdt_ms, discontinuity })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_is_plain_decimal_without_leading_zeros() {
        assert_eq!(parse_seq("0"), Ok(0));
        assert_eq!(parse_seq("17"), Ok(17));
        assert_eq!(parse_seq("1000000000"), Ok(1_000_000_000));
        assert_eq!(parse_seq(""), Err(IngestError::Seq(SeqProblem::Empty)));
        assert_eq!(parse_seq("007"), Err(IngestError::Seq(SeqProblem::LeadingZero)));
        assert_eq!(parse_seq("00"), Err(IngestError::Seq(SeqProblem::LeadingZero)));
        for bad in ["-1", "+1", "1.0", "1e3", " 1", "x"] {
            assert_eq!(parse_seq(bad), Err(IngestError::Seq(SeqProblem::NotDigits)), "{bad:?}");
        }
        assert_eq!(parse_seq("1000000001"), Err(IngestError::Seq(SeqProblem::TooLarge)));
        assert_eq!(parse_seq("99999999999999999999999"), Err(IngestError::Seq(SeqProblem::TooLarge)));
    }

    #[test]
    fn duration_is_exact_milliseconds_in_range() {
        assert_eq!(parse_duration_ms("2.000"), Ok(2000));
        assert_eq!(parse_duration_ms("2"), Ok(2000));
        assert_eq!(parse_duration_ms("0.001"), Ok(1));
        assert_eq!(parse_duration_ms("30"), Ok(30_000));
        assert_eq!(parse_duration_ms("30.000"), Ok(30_000));
        assert_eq!(parse_duration_ms("1.966667"), Ok(1967));
        assert_eq!(parse_duration_ms("0"), Err(IngestError::DurationRange(0)));
        assert_eq!(parse_duration_ms("0.0004"), Err(IngestError::DurationRange(0)));
        assert_eq!(parse_duration_ms("30.001"), Err(IngestError::DurationRange(30_001)));
        assert_eq!(parse_duration_ms("100"), Err(IngestError::Duration(DecimalError::TooManyDigits)));
        for bad in ["NaN", "inf", "-2", "+2", "2e0", "2.", ".5", " 2", "2,0"] {
            assert_eq!(parse_duration_ms(bad), Err(IngestError::Duration(DecimalError::NotPlain)), "{bad:?}");
        }
        assert_eq!(parse_duration_ms(""), Err(IngestError::Duration(DecimalError::Empty)));
    }

    #[test]
    fn discontinuity_header_is_one_or_zero() {
        assert_eq!(parse_discontinuity("1"), Ok(true));
        assert_eq!(parse_discontinuity("0"), Ok(false));
        for bad in ["", "true", "yes", "2", " 1"] {
            assert_eq!(parse_discontinuity(bad), Err(IngestError::Discontinuity));
        }
    }

    #[test]
    fn body_must_be_whole_ts_packets_with_sync_bytes() {
        let mut body = vec![0u8; 188 * 3];
        for packet in body.chunks_mut(188) {
            packet[0] = 0x47;
        }
        assert_eq!(check_ts(&body), Ok(()));
        assert_eq!(check_ts(&[]), Err(IngestError::EmptyBody));
        assert_eq!(check_ts(&body[..187]), Err(IngestError::TsLength(187)));
        body[376] = 0x46;
        assert_eq!(check_ts(&body), Err(IngestError::TsSync(376)));
        assert!(check_ts(b"<html>hello</html>").is_err());
    }

    #[test]
    fn headers_parse_together_and_explain_what_is_missing() {
        let h = SegmentHeaders::parse(Some("2.5"), Some("2026-11-25T13:00:00Z"), Some("1")).unwrap();
        assert_eq!(h, SegmentHeaders { duration_ms: 2500, pdt_ms: Some(1_795_611_600_000), discontinuity: true });
        let h = SegmentHeaders::parse(Some("2"), None, None).unwrap();
        assert_eq!(h, SegmentHeaders { duration_ms: 2000, pdt_ms: None, discontinuity: false });
        let err = SegmentHeaders::parse(None, None, None).unwrap_err();
        assert!(err.to_string().contains("X-Duration"), "{err}");
        let err = SegmentHeaders::parse(Some("2"), Some("yesterday"), None).unwrap_err();
        assert!(err.to_string().contains("X-Program-Date-Time"), "{err}");
    }
}
