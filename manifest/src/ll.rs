//! Low-latency HLS decisions (draft-pantos-hls-rfc8216bis): the delivery directives of a
//! playlist request (`_HLS_msn`, `_HLS_part`, `_HLS_skip`), whether a blocking reload can be
//! answered now, must wait, or asks too far ahead, which segments a delta update skips and which
//! keep their `EXT-X-PART` lines, and what a live v2 playlist shows ([`LlView`], rendered by
//! [`crate::playlist::render_ll`]).
//!
//! The numbers, each from the draft:
//! - `PART-HOLD-BACK` = 3 part targets (§4.4.3.8: "MUST be at least twice the Part Target
//!   Duration … SHOULD be at least three times");
//! - `CAN-SKIP-UNTIL` = 6 target durations (§4.4.3.8: the Skip Boundary "MUST be at least six
//!   times the Target Duration");
//! - parts are listed for segments starting within 3 target durations of the end (§6.2.2:
//!   "EXT-X-PART tags SHOULD be removed from the Playlist after they are greater than three
//!   Target Durations from the end of the Playlist");
//! - a blocking reload is held at most 3 target durations, then `503` (§6.2.5.2);
//! - `400` when `_HLS_msn` is past the last segment plus two, or `_HLS_part` exceeds the last
//!   part by the Advance Part Limit (3 / part target below one second, else 3) (§6.2.5.2).

use crate::decimal;
use crate::part::{PartMeta, MAX_PARTS};
use crate::window::{Piece, PlaylistKind, State};
use std::fmt;

/// `PART-HOLD-BACK`, in part targets.
pub const PART_HOLD_BACK_PARTS: u32 = 3;
/// `CAN-SKIP-UNTIL`, in target durations.
pub const SKIP_UNTIL_TARGETS: u32 = 6;
/// Segments starting within this many target durations of the end list their parts.
pub const PART_WINDOW_TARGETS: u32 = 3;
/// A blocking request is held at most this many target durations.
pub const HOLD_TARGETS: u32 = 3;

/// The delivery directives of a playlist request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Directives {
    /// `_HLS_msn`: block until this segment (or, with `part`, this part of it) is listed.
    pub msn: Option<u64>,
    /// `_HLS_part`.
    pub part: Option<u64>,
    /// `_HLS_skip=YES` (or `v2`): answer a delta update.
    pub skip: bool,
}

/// Why a playlist query was refused (`400`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectiveError {
    /// `_HLS_msn` or `_HLS_part` is not a decimal integer.
    NotDecimal(&'static str),
    /// `_HLS_skip` is neither `YES` nor `v2`.
    Skip,
    /// A directive appears twice.
    Repeated(&'static str),
    /// `_HLS_part` without `_HLS_msn` (§6.2.5.2: "the Server MUST return Bad Request").
    PartWithoutMsn,
    /// `_HLS_part` names a part no segment can have (a segment has at most [`MAX_PARTS`]).
    PartTooLarge,
}

impl fmt::Display for DirectiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirectiveError::NotDecimal(name) => write!(f, "{name} must be a decimal integer (digits only)"),
            DirectiveError::Skip => f.write_str("_HLS_skip must be YES or v2"),
            DirectiveError::Repeated(name) => write!(f, "{name} is given more than once"),
            DirectiveError::PartWithoutMsn => f.write_str("_HLS_part needs _HLS_msn (the segment the part belongs to)"),
            DirectiveError::PartTooLarge => {
                write!(f, "_HLS_part must be below {MAX_PARTS}: a segment has at most {MAX_PARTS} parts")
            }
        }
    }
}

impl std::error::Error for DirectiveError {}

impl Directives {
    /// Parses the query string (without `?`). Parameters other than the three directives are
    /// ignored (players add cache busters); values are taken as written (no percent-decoding:
    /// none of the valid values needs it).
    pub fn parse(query: &str) -> Result<Self, DirectiveError> {
        let mut d = Directives::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "_HLS_msn" => {
                    let v = decimal_integer(value).ok_or(DirectiveError::NotDecimal("_HLS_msn"))?;
                    if d.msn.replace(v).is_some() {
                        return Err(DirectiveError::Repeated("_HLS_msn"));
                    }
                }
                "_HLS_part" => {
                    let v = decimal_integer(value).ok_or(DirectiveError::NotDecimal("_HLS_part"))?;
                    if v >= u64::from(MAX_PARTS) {
                        return Err(DirectiveError::PartTooLarge);
                    }
                    if d.part.replace(v).is_some() {
                        return Err(DirectiveError::Repeated("_HLS_part"));
                    }
                }
                "_HLS_skip" => {
                    if !matches!(value, "YES" | "v2") {
                        return Err(DirectiveError::Skip);
                    }
                    if std::mem::replace(&mut d.skip, true) {
                        return Err(DirectiveError::Repeated("_HLS_skip"));
                    }
                }
                _ => {}
            }
        }
        if d.part.is_some() && d.msn.is_none() {
            return Err(DirectiveError::PartWithoutMsn);
        }
        Ok(d)
    }
}

/// A `decimal-integer` (RFC 8216 §4.2: digits, at most 20 of them, fitting in 64 bits).
fn decimal_integer(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Where a live v2 stream's playlist ends now: enough to decide a blocking reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// The last listed (sealed) segment.
    pub last_seq: u64,
    /// How many parts it was sealed from (0 for a whole-segment upload).
    pub last_parts: u32,
    /// The unbroken run of parts `0..open_parts` of the open segment `last_seq + 1`.
    pub open_parts: u32,
}

/// The answer to a blocking reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The playlist holds what was asked for: answer now.
    Ready,
    /// Not yet: hold the request.
    Wait,
    /// Asks too far ahead: `400`.
    TooFar,
}

/// The Advance Part Limit compared exactly: `distance` parts past the last listed part exceed
/// it when `distance > 3 / part target` (part target below 1 s) or `distance > 3`.
fn beyond_advance_part_limit(distance: u64, part_target_ms: u32) -> bool {
    if part_target_ms < 1000 {
        distance.saturating_mul(u64::from(part_target_ms)) > 3000
    } else {
        distance > 3
    }
}

/// Decides a blocking reload `_HLS_msn=msn[&_HLS_part=part]` against a live playlist's edge
/// (§6.2.5.2). A part index past the last part of a sealed segment stands for part 0 of the
/// next segment; any later segment or part also satisfies the request.
pub fn reload(edge: &Edge, msn: u64, part: Option<u64>, part_target_ms: u32) -> Reload {
    let open = edge.last_seq + 1;
    if msn > edge.last_seq + 2 {
        return Reload::TooFar;
    }
    let Some(part) = part else {
        return if msn <= edge.last_seq { Reload::Ready } else { Reload::Wait };
    };
    if msn < edge.last_seq {
        // Segment msn + 1 is sealed, so whatever part of msn was meant is listed or passed.
        return Reload::Ready;
    }
    if msn == edge.last_seq {
        if part < u64::from(edge.last_parts) {
            return Reload::Ready;
        }
        // Part 0 of the open segment.
        return if edge.open_parts > 0 { Reload::Ready } else { Reload::Wait };
    }
    // The last listed part is open.(open_parts - 1), or the sealed segment's last part.
    let distance = if msn == open {
        (part + 1).saturating_sub(u64::from(edge.open_parts))
    } else {
        // msn == open + 1: at least the parts up to and including `part` of that segment (the
        // open segment's remaining parts are not known yet, so this errs on the lenient side).
        part + 1
    };
    if beyond_advance_part_limit(distance, part_target_ms) {
        return Reload::TooFar;
    }
    if msn == open && part < u64::from(edge.open_parts) {
        Reload::Ready
    } else {
        Reload::Wait
    }
}

/// The open (not yet sealed) segment a live playlist ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSegment {
    pub seq: u64,
    /// Its parts `0..n`, an unbroken run (possibly empty).
    pub parts: Vec<PartMeta>,
}

impl OpenSegment {
    pub fn duration_ms(&self) -> u64 {
        self.parts.iter().map(|p| u64::from(p.duration_ms)).sum()
    }

    /// The part the preload hint names: the next one, or part 0 of the next segment once this
    /// one has [`crate::part::MAX_PARTS`] parts.
    pub fn next_part(&self) -> (u64, u32) {
        let n = self.parts.len() as u32;
        if n >= crate::part::MAX_PARTS {
            (self.seq + 1, 0)
        } else {
            (self.seq, n)
        }
    }
}

/// What a v2 stream's playlist shows at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlView {
    pub target_s: u32,
    pub part_target_ms: u32,
    pub kind: PlaylistKind,
    /// `EXT-X-MEDIA-SEQUENCE`: the first segment, skipped ones included.
    pub first_seq: u64,
    pub discontinuity_sequence: u64,
    /// How many segments from `first_seq` a delta update replaces with `EXT-X-SKIP` (0: none).
    pub skipped: u64,
    /// The listed segments after the skipped ones, oldest first; never empty. The ones in the
    /// part window must be [`Piece::Segment`]s to get their `EXT-X-PART` lines.
    pub pieces: Vec<Piece>,
    /// Live only: the open segment (its parts and the preload hint).
    pub open: Option<OpenSegment>,
    pub state: State,
}

/// How many of the segments with these durations (oldest first, the last one the playlist's
/// last segment) a delta update skips: those whose end lies more than `CAN-SKIP-UNTIL` before
/// the end of the last segment (§6.2.5.1; counting from a segment's end rather than its start
/// never skips one that reaches into the boundary). Always a prefix.
pub fn skip_count(durations_ms: &[u32], target_s: u32) -> usize {
    let boundary = u64::from(SKIP_UNTIL_TARGETS * target_s) * 1000;
    let mut after = 0u64; // duration of the segments after the current one
    for (i, d) in durations_ms.iter().enumerate().rev() {
        if after > boundary {
            return i + 1;
        }
        after += u64::from(*d);
    }
    0
}

/// Whether a segment that starts `from_end_ms` before the end of the playlist (the open
/// segment's parts included) lists its parts.
pub fn in_part_window(from_end_ms: u64, target_s: u32) -> bool {
    from_end_ms <= u64::from(PART_WINDOW_TARGETS * target_s) * 1000
}

/// `PART-HOLD-BACK`, `CAN-SKIP-UNTIL` and `PART-TARGET` as printed.
pub fn server_control(target_s: u32, part_target_ms: u32) -> (String, String, String) {
    (
        decimal::format_millis(u64::from(PART_HOLD_BACK_PARTS * part_target_ms)),
        decimal::format_millis(u64::from(SKIP_UNTIL_TARGETS * target_s) * 1000),
        decimal::format_millis(u64::from(part_target_ms)),
    )
}

/// How long a blocking request may be held, in milliseconds.
pub fn hold_limit_ms(target_s: u32) -> u64 {
    u64::from(HOLD_TARGETS * target_s) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_parse_strictly_and_ignore_other_parameters() {
        assert_eq!(Directives::parse(""), Ok(Directives::default()));
        assert_eq!(
            Directives::parse("_HLS_msn=12&_HLS_part=3&cb=x"),
            Ok(Directives { msn: Some(12), part: Some(3), skip: false })
        );
        assert_eq!(Directives::parse("_HLS_skip=YES").unwrap().skip, true);
        assert_eq!(Directives::parse("_HLS_skip=v2&_HLS_msn=007").unwrap(), Directives { msn: Some(7), part: None, skip: true });
        assert_eq!(Directives::parse("_HLS_part=1"), Err(DirectiveError::PartWithoutMsn));
        // Regression (issue 18): the largest decimal-integer overflowed `part + 1` in `reload`.
        assert_eq!(
            Directives::parse("_HLS_msn=1&_HLS_part=18446744073709551615"),
            Err(DirectiveError::PartTooLarge)
        );
        assert_eq!(Directives::parse("_HLS_msn=1&_HLS_part=64"), Err(DirectiveError::PartTooLarge));
        assert_eq!(Directives::parse("_HLS_msn=1&_HLS_part=63").map(|d| d.part), Ok(Some(63)));
        for bad in ["_HLS_msn=", "_HLS_msn=-1", "_HLS_msn=1.5", "_HLS_msn=x", "_HLS_msn", "_HLS_msn=99999999999999999999999"] {
            assert_eq!(Directives::parse(bad), Err(DirectiveError::NotDecimal("_HLS_msn")), "{bad}");
        }
        assert_eq!(Directives::parse("_HLS_msn=1&_HLS_part=+1"), Err(DirectiveError::NotDecimal("_HLS_part")));
        assert_eq!(Directives::parse("_HLS_skip=yes"), Err(DirectiveError::Skip));
        assert_eq!(Directives::parse("_HLS_msn=1&_HLS_msn=2"), Err(DirectiveError::Repeated("_HLS_msn")));
    }

    #[test]
    fn reload_waits_for_the_segment_or_part_and_rolls_past_a_sealed_segment() {
        // Segment 10 sealed from 6 parts, open segment 11 has parts 0 and 1.
        let edge = Edge { last_seq: 10, last_parts: 6, open_parts: 2 };
        let pt = 333;
        assert_eq!(reload(&edge, 10, None, pt), Reload::Ready);
        assert_eq!(reload(&edge, 9, None, pt), Reload::Ready);
        assert_eq!(reload(&edge, 11, None, pt), Reload::Wait);
        assert_eq!(reload(&edge, 12, None, pt), Reload::Wait);
        assert_eq!(reload(&edge, 13, None, pt), Reload::TooFar);
        assert_eq!(reload(&edge, 11, Some(1), pt), Reload::Ready);
        assert_eq!(reload(&edge, 11, Some(2), pt), Reload::Wait);
        // §6.2.5.2: a part past segment 10's last is part 0 of segment 11, which is listed.
        assert_eq!(reload(&edge, 10, Some(6), pt), Reload::Ready);
        assert_eq!(reload(&edge, 10, Some(60), pt), Reload::Ready);
        assert_eq!(reload(&edge, 3, Some(60), pt), Reload::Ready);
        let fresh = Edge { last_seq: 10, last_parts: 6, open_parts: 0 };
        assert_eq!(reload(&fresh, 10, Some(6), pt), Reload::Wait);
        assert_eq!(reload(&fresh, 10, Some(5), pt), Reload::Ready);
    }

    #[test]
    fn the_advance_part_limit_is_three_seconds_of_parts_or_three_parts() {
        let edge = Edge { last_seq: 10, last_parts: 6, open_parts: 2 };
        // Part target 0.5 s: the limit is 6 parts past the last listed one (11.1).
        assert_eq!(reload(&edge, 11, Some(7), 500), Reload::Wait);
        assert_eq!(reload(&edge, 11, Some(8), 500), Reload::TooFar);
        // 0.333 s: 3 / 0.333 = 9.009 parts.
        assert_eq!(reload(&edge, 11, Some(10), 333), Reload::Wait);
        assert_eq!(reload(&edge, 11, Some(11), 333), Reload::TooFar);
        // 1 s and more: three parts.
        assert_eq!(reload(&edge, 11, Some(4), 1000), Reload::Wait);
        assert_eq!(reload(&edge, 11, Some(5), 1000), Reload::TooFar);
        // The segment after the open one counts at least its own parts.
        assert_eq!(reload(&edge, 12, Some(5), 500), Reload::Wait);
        assert_eq!(reload(&edge, 12, Some(6), 500), Reload::TooFar);
    }

    #[test]
    fn delta_updates_skip_only_segments_wholly_past_the_boundary() {
        // Target 1 s: CAN-SKIP-UNTIL 6 s.
        let d = vec![1000u32; 20];
        // Segment i ends (19 - i) s before the end; skipped when that is more than 6 s.
        assert_eq!(skip_count(&d, 1), 13);
        assert_eq!(skip_count(&d[..7], 1), 0);
        assert_eq!(skip_count(&d[..8], 1), 1);
        assert_eq!(skip_count(&[], 1), 0);
        assert_eq!(skip_count(&[500, 7000, 1], 1), 1);
    }

    #[test]
    fn server_control_values_follow_the_draft() {
        assert_eq!(server_control(2, 333), ("0.999".into(), "12.000".into(), "0.333".into()));
        assert!(in_part_window(3000, 1) && !in_part_window(3001, 1));
        assert_eq!(hold_limit_ms(2), 6000);
    }
}
