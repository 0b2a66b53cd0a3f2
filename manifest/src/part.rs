//! Partial segments (wire contract v2, LL-HLS): validation of one part upload
//! (`PUT /ingest/{session}/{seq}/{part}.ts`) and of a commit (`POST …/{seq}/commit`), and the
//! records they store: a [`PartMeta`] per part, and the [`PartRef`] list a part-built segment's
//! meta carries: the segment body is its parts' bytes in order (the commit also stores them as
//! one folded body, [`SegmentMeta::folded`], so the part keys can go after the part window).
//!
//! Limits follow draft-pantos-hls-rfc8216bis: a part lasts at most the part target
//! (§4.4.4.9: "The duration of a Partial Segment MUST be less than or equal to the Part Target
//! Duration"), and the part target is fixed for the stream like the target duration.

use crate::decimal::{self, DecimalError};
use crate::id::sha1_hex;
use crate::ingest::{self, IngestError, SeqProblem};
use crate::segment::{part_count, SegmentMeta, SHA1_KEY_PREFIX_LEN};
// Defined with the segment record that stores it, so `segment` never imports `part`; re-exported
// so `part::PartRef` stays a path.
pub use crate::segment::PartRef;
use crate::time::{self, TimeError};
use crate::wire;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Parts per segment: indexes `0..MAX_PARTS` (a playlist probes at most this many).
pub const MAX_PARTS: u32 = 64;
/// Longest accepted part target, in milliseconds.
pub const MAX_PART_TARGET_MS: u32 = 2000;
/// Shortest accepted part target, in milliseconds: a player makes about two requests per part,
/// so a shorter one multiplies every viewer's requests (and what each held request costs)
/// without lowering latency below what the segmenter can deliver.
pub const MIN_PART_TARGET_MS: u32 = 100;
/// Longest accepted target duration of a v2 stream, in seconds (as for a v1 segment).
pub const MAX_TARGET_S: u32 = 30;

/// What was wrong with a part upload or a commit. `Display` tells the uploader what to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartError {
    /// The `{part}` path piece is not a plain decimal below [`MAX_PARTS`].
    Index(SeqProblem),
    /// The `{seq}` path piece, or the part's `X-Duration`, `X-Program-Date-Time` or
    /// `X-Discontinuity`, as for a v1 segment.
    Ingest(IngestError),
    /// A required header is absent.
    Missing(&'static str),
    /// `X-Part-Target` did not parse, or is 0 or above [`MAX_PART_TARGET_MS`].
    PartTarget(Option<DecimalError>),
    /// `X-Target-Duration` is not whole seconds in `1..=30`.
    TargetDuration,
    /// The part target is longer than the target duration.
    PartTargetAboveTarget { part_target_ms: u32, target_s: u32 },
    /// The part lasts longer than the part target.
    DurationAbovePartTarget { duration_ms: u32, part_target_ms: u32 },
    /// `X-Independent` was neither `1` nor `0`.
    Independent,
    /// Part 0 without `X-Independent: 1`.
    FirstNotIndependent,
    /// `X-Program-Date-Time` or `X-Discontinuity` on a part other than 0.
    SegmentHeaderOnLaterPart(&'static str),
    /// `X-Parts` is not a plain decimal in `1..=64`.
    PartsCount,
}

impl fmt::Display for PartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartError::Index(problem) => {
                let why = match problem {
                    SeqProblem::Empty => "it is empty",
                    SeqProblem::NotDigits => "it must be decimal digits only",
                    SeqProblem::LeadingZero => "it must not have leading zeros",
                    SeqProblem::TooLarge => "it must be at most 63",
                };
                write!(f, "the part number in /ingest/{{session}}/{{seq}}/{{part}}.ts is not valid: {why}")
            }
            PartError::Ingest(e) => e.fmt(f),
            PartError::Missing(name) => match *name {
                wire::PART_TARGET => write!(f, "missing {name} header: send the stream's part target in seconds, e.g. {name}: 0.333"),
                wire::TARGET_DURATION => write!(f, "missing {name} header: send the stream's target duration in whole seconds, e.g. {name}: 2"),
                wire::PARTS => write!(f, "missing {name} header: send how many parts (0 … N-1) make the segment, e.g. {name}: 6"),
                _ => write!(f, "missing {name} header"),
            },
            PartError::PartTarget(Some(e)) => write!(
                f,
                "{} is not valid: {e}; send seconds as a plain decimal, e.g. {}: 0.333",
                wire::PART_TARGET,
                wire::PART_TARGET
            ),
            PartError::PartTarget(None) => write!(
                f,
                "{} must be from {} to {} seconds",
                wire::PART_TARGET,
                decimal::format_millis(u64::from(MIN_PART_TARGET_MS)),
                decimal::format_millis(u64::from(MAX_PART_TARGET_MS))
            ),
            PartError::TargetDuration => write!(
                f,
                "{} must be whole seconds from 1 to {MAX_TARGET_S}, e.g. {}: 2",
                wire::TARGET_DURATION,
                wire::TARGET_DURATION
            ),
            PartError::PartTargetAboveTarget { part_target_ms, target_s } => write!(
                f,
                "the part target {} s is longer than the target duration {target_s} s",
                decimal::format_millis(u64::from(*part_target_ms))
            ),
            PartError::DurationAbovePartTarget { duration_ms, part_target_ms } => write!(
                f,
                "this part lasts {} s but the part target is {} s: a part may not last longer than the part target",
                decimal::format_millis(u64::from(*duration_ms)),
                decimal::format_millis(u64::from(*part_target_ms))
            ),
            PartError::Independent => write!(f, "{} must be 1 (the part starts with an IDR frame) or 0", wire::INDEPENDENT),
            PartError::FirstNotIndependent => write!(
                f,
                "part 0 of a segment must start with an IDR frame and say so with {}: 1",
                wire::INDEPENDENT
            ),
            PartError::SegmentHeaderOnLaterPart(name) => {
                write!(f, "{name} applies to a whole segment: send it on part 0 only")
            }
            PartError::PartsCount => {
                write!(f, "{} must be a plain decimal from 1 to {MAX_PARTS}", wire::PARTS)
            }
        }
    }
}

impl std::error::Error for PartError {}

impl From<IngestError> for PartError {
    fn from(e: IngestError) -> Self {
        PartError::Ingest(e)
    }
}

/// Parses the `{part}` of `/ingest/{session}/{seq}/{part}.ts` (or of `…/{seq}.{part}.ts`): a
/// plain decimal without leading zeros, below [`MAX_PARTS`].
pub fn parse_part_index(text: &str) -> Result<u32, PartError> {
    match ingest::parse_seq(text) {
        Ok(n) if n < u64::from(MAX_PARTS) => Ok(n as u32),
        Ok(_) => Err(PartError::Index(SeqProblem::TooLarge)),
        Err(IngestError::Seq(problem)) => Err(PartError::Index(problem)),
        Err(_) => Err(PartError::Index(SeqProblem::NotDigits)),
    }
}

/// Parses `X-Part-Target` (seconds, plain decimal) to milliseconds in `100..=2000`.
pub fn parse_part_target_ms(text: &str) -> Result<u32, PartError> {
    let ms = decimal::parse_scaled(text, 1000, 2, 9).map_err(|e| PartError::PartTarget(Some(e)))?;
    if ms < u64::from(MIN_PART_TARGET_MS) || ms > u64::from(MAX_PART_TARGET_MS) {
        return Err(PartError::PartTarget(None));
    }
    Ok(ms as u32)
}

/// Parses `X-Target-Duration`: whole seconds in `1..=30`.
pub fn parse_target_s(text: &str) -> Result<u32, PartError> {
    if text.contains('.') {
        return Err(PartError::TargetDuration);
    }
    match decimal::parse_scaled(text, 1, 2, 0) {
        Ok(s) if (1..=u64::from(MAX_TARGET_S)).contains(&s) => Ok(s as u32),
        _ => Err(PartError::TargetDuration),
    }
}

/// Parses `X-Parts` of a commit: a plain decimal in `1..=64`.
pub fn parse_parts_count(text: Option<&str>) -> Result<u32, PartError> {
    let text = text.ok_or(PartError::Missing(wire::PARTS))?;
    match decimal::parse_scaled(text, 1, 2, 0) {
        Ok(n) if !text.contains('.') && (1..=u64::from(MAX_PARTS)).contains(&n) => Ok(n as u32),
        _ => Err(PartError::PartsCount),
    }
}

/// The raw header values of a part upload (`None` when absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawPartHeaders<'a> {
    pub duration: Option<&'a str>,
    pub part_target: Option<&'a str>,
    pub target_duration: Option<&'a str>,
    pub independent: Option<&'a str>,
    pub program_date_time: Option<&'a str>,
    pub discontinuity: Option<&'a str>,
}

/// The validated headers of a part upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartHeaders {
    pub duration_ms: u32,
    pub part_target_ms: u32,
    pub target_s: u32,
    pub independent: bool,
    /// Part 0 only: capture time of the segment's first frame.
    pub pdt_ms: Option<i64>,
    /// Part 0 only: the uploader marked the segment as the first after a break.
    pub discontinuity: bool,
}

impl PartHeaders {
    /// Validates the headers of part `part`.
    pub fn parse(part: u32, raw: &RawPartHeaders<'_>) -> Result<Self, PartError> {
        let duration_ms = ingest::parse_duration_ms(raw.duration.ok_or(IngestError::MissingDuration)?)?;
        let part_target_ms = parse_part_target_ms(raw.part_target.ok_or(PartError::Missing(wire::PART_TARGET))?)?;
        let target_s = parse_target_s(raw.target_duration.ok_or(PartError::Missing(wire::TARGET_DURATION))?)?;
        if part_target_ms > target_s * 1000 {
            return Err(PartError::PartTargetAboveTarget { part_target_ms, target_s });
        }
        if duration_ms > part_target_ms {
            return Err(PartError::DurationAbovePartTarget { duration_ms, part_target_ms });
        }
        let independent = match raw.independent {
            None | Some("0") => false,
            Some("1") => true,
            Some(_) => return Err(PartError::Independent),
        };
        if part == 0 && !independent {
            return Err(PartError::FirstNotIndependent);
        }
        if part > 0 {
            if raw.program_date_time.is_some() {
                return Err(PartError::SegmentHeaderOnLaterPart(wire::PROGRAM_DATE_TIME));
            }
            if raw.discontinuity.is_some() {
                return Err(PartError::SegmentHeaderOnLaterPart(wire::DISCONTINUITY));
            }
        }
        let pdt_ms = raw
            .program_date_time
            .map(|text| time::parse_rfc3339_ms(text).map_err(|e: TimeError| IngestError::ProgramDateTime(e)))
            .transpose()?;
        let discontinuity = raw.discontinuity.map(ingest::parse_discontinuity).transpose()?.unwrap_or(false);
        Ok(PartHeaders { duration_ms, part_target_ms, target_s, independent, pdt_ms, discontinuity })
    }
}

/// One stored part (`seg/{id}/{seq}/p{n}`), written after its slices: its presence commits the
/// part. Never rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartMeta {
    pub seq: u64,
    pub part: u32,
    pub duration_ms: u32,
    /// The part starts with an IDR frame (`INDEPENDENT=YES`).
    pub independent: bool,
    /// Body length in bytes.
    pub len: u64,
    /// Number of slices of at most [`crate::segment::PART_LEN`] bytes.
    pub slices: u32,
    /// Lowercase hex SHA-1 of the body.
    pub sha1: String,
    /// When the server stored it (Unix ms): a held reader expects the next part at
    /// `stored_ms + duration_ms`.
    pub stored_ms: i64,
    /// Part 0 only: the segment's capture time (the header, or arrival minus duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pdt_ms: Option<i64>,
    /// Part 0 only: the segment starts a discontinuity (decided as for a v1 segment).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub discontinuity: bool,
}

impl PartMeta {
    /// The record for a validated part upload; `discontinuity` is the decided flag.
    pub fn new(seq: u64, part: u32, headers: &PartHeaders, discontinuity: bool, body: &[u8], now_ms: i64) -> Self {
        let first = part == 0;
        PartMeta {
            seq,
            part,
            duration_ms: headers.duration_ms,
            independent: headers.independent,
            len: body.len() as u64,
            slices: part_count(body.len()),
            sha1: sha1_hex(body),
            stored_ms: now_ms,
            pdt_ms: first.then(|| headers.pdt_ms.unwrap_or(now_ms - i64::from(headers.duration_ms))),
            discontinuity: first && discontinuity,
        }
    }

    /// The SHA-1 prefix that names this part's slices.
    pub fn sha1_prefix(&self) -> &str {
        &self.sha1[..SHA1_KEY_PREFIX_LEN.min(self.sha1.len())]
    }

    /// The entry a segment meta keeps for this part.
    pub fn to_ref(&self) -> PartRef {
        PartRef {
            duration_ms: self.duration_ms,
            independent: self.independent,
            len: self.len,
            slices: self.slices,
            sha1: self.sha1_prefix().to_owned(),
        }
    }
}

impl SegmentMeta {
    /// The meta that seals segment `seq` from its parts `0..N` (`parts[i].part == i`). Its
    /// `sha1` is the SHA-1 of the parts' SHA-1s in order (the body is never read whole), its
    /// `parts` counts the slices of all parts, and `pdt_ms` is part 0's.
    pub fn from_parts(seq: u64, parts: &[PartMeta], discontinuity: bool, now_ms: i64) -> SegmentMeta {
        let first = parts.first();
        let duration_ms = parts.iter().map(|p| p.duration_ms).sum();
        let digests: String = parts.iter().map(|p| p.sha1.as_str()).collect();
        SegmentMeta {
            seq,
            duration_ms,
            pdt_ms: first.map_or(now_ms, |p| p.pdt_ms.unwrap_or(p.stored_ms - i64::from(p.duration_ms))),
            discontinuity,
            stored_ms: now_ms,
            len: parts.iter().map(|p| p.len).sum(),
            parts: parts.iter().map(|p| p.slices).sum(),
            sha1: sha1_hex(digests.as_bytes()),
            ll_parts: parts.iter().map(PartMeta::to_ref).collect(),
            disc_seq: None,
            gap: false,
            folded: false,
        }
    }

    /// Whether this segment was sealed from parts (v2).
    pub fn is_part_built(&self) -> bool {
        !self.ll_parts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw<'a>(duration: &'a str, independent: Option<&'a str>) -> RawPartHeaders<'a> {
        RawPartHeaders {
            duration: Some(duration),
            part_target: Some("0.333"),
            target_duration: Some("2"),
            independent,
            ..RawPartHeaders::default()
        }
    }

    #[test]
    fn part_index_is_plain_decimal_below_the_limit() {
        assert_eq!(parse_part_index("0"), Ok(0));
        assert_eq!(parse_part_index("63"), Ok(63));
        assert_eq!(parse_part_index("64"), Err(PartError::Index(SeqProblem::TooLarge)));
        assert_eq!(parse_part_index("01"), Err(PartError::Index(SeqProblem::LeadingZero)));
        assert_eq!(parse_part_index("x"), Err(PartError::Index(SeqProblem::NotDigits)));
        assert_eq!(parse_part_index(""), Err(PartError::Index(SeqProblem::Empty)));
    }

    #[test]
    fn part_headers_parse_exactly_and_enforce_the_part_target() {
        let h = PartHeaders::parse(0, &raw("0.333", Some("1"))).unwrap();
        assert_eq!(
            h,
            PartHeaders { duration_ms: 333, part_target_ms: 333, target_s: 2, independent: true, pdt_ms: None, discontinuity: false }
        );
        assert!(!PartHeaders::parse(1, &raw("0.2", None)).unwrap().independent);
        assert_eq!(
            PartHeaders::parse(1, &raw("0.334", None)),
            Err(PartError::DurationAbovePartTarget { duration_ms: 334, part_target_ms: 333 })
        );
        assert_eq!(PartHeaders::parse(0, &raw("0.3", None)), Err(PartError::FirstNotIndependent));
        assert_eq!(PartHeaders::parse(0, &raw("0.3", Some("yes"))), Err(PartError::Independent));
        let mut r = raw("0.3", None);
        r.part_target = None;
        assert_eq!(PartHeaders::parse(1, &r), Err(PartError::Missing(wire::PART_TARGET)));
        for bad in ["0", "2.001", "-1", "x"] {
            r.part_target = Some(bad);
            assert!(matches!(PartHeaders::parse(1, &r), Err(PartError::PartTarget(_))), "{bad}");
        }
        let mut r = raw("0.3", None);
        for bad in ["0", "31", "2.0", "-2", ""] {
            r.target_duration = Some(bad);
            assert_eq!(PartHeaders::parse(1, &r), Err(PartError::TargetDuration), "{bad}");
        }
        let mut r = raw("0.3", None);
        r.part_target = Some("2");
        r.target_duration = Some("1");
        assert_eq!(PartHeaders::parse(1, &r), Err(PartError::PartTargetAboveTarget { part_target_ms: 2000, target_s: 1 }));
        let mut r = raw("0.3", None);
        r.program_date_time = Some("2026-11-25T13:00:00Z");
        assert_eq!(PartHeaders::parse(1, &r), Err(PartError::SegmentHeaderOnLaterPart(wire::PROGRAM_DATE_TIME)));
        r.independent = Some("1");
        r.discontinuity = Some("1");
        let h = PartHeaders::parse(0, &r).unwrap();
        assert_eq!((h.pdt_ms, h.discontinuity), (Some(1_795_611_600_000), true));
        let mut r = raw("0.3", None);
        r.duration = None;
        assert_eq!(PartHeaders::parse(1, &r), Err(PartError::Ingest(IngestError::MissingDuration)));
        assert!(PartError::Missing(wire::PART_TARGET).to_string().contains("X-Part-Target: 0.333"));
    }

    #[test]
    fn parts_count_is_one_to_sixty_four() {
        assert_eq!(parse_parts_count(Some("6")), Ok(6));
        assert_eq!(parse_parts_count(Some("64")), Ok(64));
        assert_eq!(parse_parts_count(None), Err(PartError::Missing(wire::PARTS)));
        for bad in ["0", "65", "1.0", "-1", "", "six"] {
            assert_eq!(parse_parts_count(Some(bad)), Err(PartError::PartsCount), "{bad}");
        }
    }

    #[test]
    fn segment_never_imports_part() {
        // The two modules once imported each other; `part` builds on `segment`, not the reverse.
        let uses_part = include_str!("segment.rs").lines().any(|l| l.trim_start().starts_with("use crate::part"));
        assert!(!uses_part);
    }

    #[test]
    fn a_segment_sealed_from_parts_sums_them_and_lists_them() {
        let h0 = PartHeaders { duration_ms: 333, part_target_ms: 333, target_s: 1, independent: true, pdt_ms: None, discontinuity: false };
        let h1 = PartHeaders { independent: false, duration_ms: 300, ..h0 };
        let p0 = PartMeta::new(4, 0, &h0, true, &[0x47; 188], 10_000);
        let p1 = PartMeta::new(4, 1, &h1, true, &[0x47; 376], 10_300);
        assert_eq!(p0.pdt_ms, Some(10_000 - 333));
        assert!(p0.discontinuity && !p1.discontinuity && p1.pdt_ms.is_none());
        let json = serde_json::to_value(&p1).unwrap();
        assert!(json.get("pdt_ms").is_none() && json.get("discontinuity").is_none(), "{json}");
        let meta = SegmentMeta::from_parts(4, &[p0.clone(), p1.clone()], true, 10_700);
        assert_eq!((meta.duration_ms, meta.len, meta.parts, meta.pdt_ms), (633, 564, 2, 10_000 - 333));
        let r0: crate::part::PartRef = p0.to_ref();
        assert_eq!(meta.ll_parts, vec![r0, p1.to_ref()]);
        assert_eq!(meta.ll_parts[0].sha1.len(), SHA1_KEY_PREFIX_LEN);
        assert!(meta.is_part_built());
        let back: SegmentMeta = serde_json::from_value(serde_json::to_value(&meta).unwrap()).unwrap();
        assert_eq!(back, meta);
    }
}
