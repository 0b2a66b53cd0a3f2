//! What is stored: per segment (`SegmentMeta`, the commit record of one upload) and per stream
//! (its fixed target duration, retention low-water mark, end-of-run hint, discontinuity list and
//! end marker). These are plain serde records; where they live is the storage adapter's business.
//!
//! [`crate::part`] builds on this module (its `PartMeta` becomes the [`PartRef`] a sealed
//! segment's meta keeps, and it adds [`SegmentMeta::from_parts`]); this module never uses it.

use crate::id::sha1_hex;
use crate::ingest::SegmentHeaders;
use serde::{Deserialize, Serialize};

/// Largest stored value: segment bodies are split into parts of at most this many bytes.
/// Spin documents values "up to 1 MB" and Fermyon Cloud enforces it; whether that is 10^6 or
/// 2^20 is unstated, so the smaller.
pub const PART_LEN: usize = 1_000_000;
/// How many hex digits of a body's SHA-1 go into its part keys.
pub const SHA1_KEY_PREFIX_LEN: usize = 12;

/// One stored segment. Written after its body parts: its presence commits the segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    pub seq: u64,
    pub duration_ms: u32,
    /// Capture time of the first frame (Unix ms): `X-Program-Date-Time`, or, when absent, the
    /// arrival time minus the duration.
    pub pdt_ms: i64,
    /// The segment starts after a break in timestamps (`EXT-X-DISCONTINUITY`).
    pub discontinuity: bool,
    /// When the server stored it (Unix ms): retention and the idle timeout count from here.
    pub stored_ms: i64,
    /// Body length in bytes.
    pub len: u64,
    /// Number of body parts of at most [`PART_LEN`] bytes.
    pub parts: u32,
    /// Lowercase hex SHA-1 of the body (for a segment sealed from parts: of its parts' SHA-1s,
    /// see [`SegmentMeta::from_parts`]).
    pub sha1: String,
    /// v2: the parts the segment was sealed from, in order; empty for a whole-segment upload
    /// (and absent from its JSON, so v1 metas read and write exactly as before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ll_parts: Vec<PartRef>,
    /// How many of the seqs before this one start a discontinuity: the
    /// `EXT-X-DISCONTINUITY-SEQUENCE` of a window that starts here. Carried forward at commit
    /// from the previous seq's meta (its own count plus its flag), so it is a fact fixed with
    /// the meta; `None` when the previous meta was not there to carry it (an upload out of
    /// order, or a meta stored before the count existed). Absent from the JSON when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disc_seq: Option<u64>,
    /// The broadcaster gave this seq up (`POST /ingest/{session}/{seq}/gap`, issue 11): no
    /// bytes, listed as an `EXT-X-GAP` segment of `duration_ms` so media sequence numbers stay
    /// the seqs, and the segment after it starts a discontinuity. Absent from the JSON when
    /// `false`, so other metas read and write exactly as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gap: bool,
    /// v2: the commit also stored the parts' bytes as one body, in `parts` slices named like a
    /// whole segment's (`seg/{id}/{seq}/{sha1-12}/{slice}`), before this meta: the segment is
    /// served from them, and once it has left every part window its part records and bodies are
    /// deleted (two keys a segment instead of one per part and slice). Absent from the JSON when
    /// `false` (a meta sealed before folding existed, or whose parts could not all be read).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub folded: bool,
}

impl SegmentMeta {
    /// The record for a validated upload. `discontinuity` is the decided flag (see
    /// [`crate::rules::starts_discontinuity`]), not just the header.
    pub fn new(seq: u64, headers: &SegmentHeaders, discontinuity: bool, body: &[u8], now_ms: i64) -> Self {
        SegmentMeta {
            seq,
            duration_ms: headers.duration_ms,
            pdt_ms: headers.pdt_ms.unwrap_or(now_ms - i64::from(headers.duration_ms)),
            discontinuity,
            stored_ms: now_ms,
            len: body.len() as u64,
            parts: part_count(body.len()),
            sha1: sha1_hex(body),
            ll_parts: Vec::new(),
            disc_seq: None,
            gap: false,
            folded: false,
        }
    }

    /// The record of a given-up seq (see [`SegmentMeta::gap`]): no bytes, `duration_ms` long,
    /// starting at `pdt_ms`. It never carries a discontinuity itself: the segment after it does.
    pub fn new_gap(seq: u64, duration_ms: u32, pdt_ms: i64, now_ms: i64) -> Self {
        SegmentMeta {
            seq,
            duration_ms,
            pdt_ms,
            discontinuity: false,
            stored_ms: now_ms,
            len: 0,
            parts: 0,
            sha1: GAP_SHA1.to_owned(),
            ll_parts: Vec::new(),
            disc_seq: None,
            gap: true,
            folded: false,
        }
    }

    /// The count to carry into the meta of the next seq: this meta's own count plus its flag.
    pub fn disc_seq_after(&self) -> Option<u64> {
        self.disc_seq.map(|d| d + u64::from(self.discontinuity))
    }

    /// The SHA-1 prefix that names this body's parts.
    pub fn sha1_prefix(&self) -> &str {
        &self.sha1[..SHA1_KEY_PREFIX_LEN.min(self.sha1.len())]
    }
}

/// The `sha1` field of a gap's meta: no body has it (it is not hex), so no upload's bytes ever
/// compare equal to a gap.
pub const GAP_SHA1: &str = "gap";

/// How many parts a body of `len` bytes is stored in (at least one).
pub fn part_count(len: usize) -> u32 {
    len.div_ceil(PART_LEN).max(1) as u32
}

/// A part as a sealed segment's meta lists it: enough to render its `EXT-X-PART` line and to
/// find its slices (`seg/{id}/{seq}/p{n}/{sha1}/{slice}`) without reading its own meta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRef {
    pub duration_ms: u32,
    pub independent: bool,
    pub len: u64,
    pub slices: u32,
    /// The SHA-1 prefix ([`SHA1_KEY_PREFIX_LEN`] hex digits) in the slice keys.
    pub sha1: String,
}

/// Per-stream facts fixed when the stream's first segment is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    /// `EXT-X-TARGETDURATION`, in whole seconds; never changes.
    pub target_s: u32,
    pub created_ms: i64,
    /// v2 streams (first upload a part): `EXT-X-PART-INF:PART-TARGET`, in milliseconds, fixed by
    /// the first part like the target duration. `None` for a v1 stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_target_ms: Option<u32>,
    /// The seq of the upload that created the record when it was not 0: a session resuming
    /// after the sweep deleted its stream (issue 18). Its run starts there once the hole below
    /// it has outlived the idle timeout (a new stream's reordered uploads arrive within it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
}

/// Retention's low-water mark: every seq below `first_seq` is expired (and maybe deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HeadMark {
    pub first_seq: u64,
}

/// A hint: every seq below `next_seq` was committed at some point (it may lag behind the truth).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TailHint {
    pub next_seq: u64,
}

/// Written by `POST /ingest/{session}/end`: the stream ended after `after_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndMarker {
    pub after_seq: u64,
    pub at_ms: i64,
}

/// The seqs that start a discontinuity, so the renderer can count the ones before its window
/// without reading deleted segments. Entries below the retention head may be folded into
/// `before` to keep the record small.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Breaks {
    /// How many discontinuities were folded away (all of them below some past head).
    #[serde(default)]
    pub before: u64,
    /// Sorted, without duplicates.
    pub seqs: Vec<u64>,
}

/// Fold breaks below the head into `before` once the list is longer than this.
pub const BREAKS_FOLD_AT: usize = 1024;

impl Breaks {
    pub fn contains(&self, seq: u64) -> bool {
        self.seqs.binary_search(&seq).is_ok()
    }

    /// Adds `seq` (no-op when present). When the list grows long, entries below `head` are
    /// folded into the count, since no playlist window can start below the head.
    pub fn insert(&mut self, seq: u64, head: u64) {
        if let Err(at) = self.seqs.binary_search(&seq) {
            self.seqs.insert(at, seq);
        }
        if self.seqs.len() > BREAKS_FOLD_AT {
            let below = self.seqs.partition_point(|&s| s < head.min(seq));
            self.before += below as u64;
            self.seqs.drain(..below);
        }
    }

    /// `EXT-X-DISCONTINUITY-SEQUENCE` for a window starting at `first_seq`: the number of
    /// discontinuities among the segments before it.
    pub fn count_before(&self, first_seq: u64) -> u64 {
        self.before + self.seqs.partition_point(|&s| s < first_seq) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_split_into_parts_of_at_most_one_mebibyte() {
        assert_eq!(part_count(1), 1);
        assert_eq!(part_count(PART_LEN), 1);
        assert_eq!(part_count(PART_LEN + 1), 2);
        assert_eq!(part_count(16 * PART_LEN), 16);
    }

    #[test]
    fn meta_serializes_with_the_documented_field_names() {
        let headers = SegmentHeaders { duration_ms: 2000, pdt_ms: None, discontinuity: false };
        let meta = SegmentMeta::new(3, &headers, false, b"abc", 10_000);
        let json = serde_json::to_value(&meta).unwrap();
        let expected = serde_json::json!({
            "seq": 3, "duration_ms": 2000, "pdt_ms": 8000, "discontinuity": false,
            "stored_ms": 10000, "len": 3, "parts": 1,
            "sha1": "a9993e364706816aba3e25717850c26c9cd0d89d"
        });
        assert_eq!(json, expected);
        assert_eq!(meta.sha1_prefix(), "a9993e364706");
        let back: SegmentMeta = serde_json::from_value(json).unwrap();
        assert_eq!(back, meta);
    }

    #[test]
    fn breaks_count_discontinuities_before_a_window_even_after_folding() {
        let mut breaks = Breaks::default();
        breaks.insert(5, 0);
        breaks.insert(2, 0);
        breaks.insert(5, 0);
        assert_eq!(breaks.seqs, vec![2, 5]);
        assert_eq!(breaks.count_before(2), 0);
        assert_eq!(breaks.count_before(3), 1);
        assert_eq!(breaks.count_before(6), 2);
        let mut long = Breaks::default();
        for seq in 0..=(BREAKS_FOLD_AT as u64) {
            long.insert(seq * 2, 1000);
        }
        assert!(long.seqs.len() < BREAKS_FOLD_AT);
        for first in [1000, 1001, 1500, 3000] {
            assert_eq!(long.count_before(first), first.div_ceil(2).min(BREAKS_FOLD_AT as u64 + 1), "{first}");
        }
    }
}
