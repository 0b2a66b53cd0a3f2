//! The gap handshake (issue 11): a seq the broadcaster gave up is recorded as a gap, and a late
//! upload of the same seq and the gap settle who holds it without compare-and-swap.

use super::layout::{gap_key, meta_key};
use super::{PutError, Stored, Streams};
use crate::kv::{get_json, set_json, Kv, KvError};
use chalkstream_manifest::id::StreamId;
use chalkstream_manifest::rules::{self, RuleError};
use chalkstream_manifest::segment::SegmentMeta;

impl<K: Kv + ?Sized> Streams<'_, K> {
    /// Gives up seq `seq` of stream `id` (issue 11): records a gap under it, so the run walks
    /// over it, the playlist lists it as an `EXT-X-GAP` segment and the segment after it starts a
    /// discontinuity. `duration_ms` is the given-up segment's duration (default: the target
    /// duration); it must fit the target. `201` recorded, `200` already recorded (a retry),
    /// [`PutError::SegmentHolds`] when an upload or commit holds the seq.
    ///
    /// The race with a late upload of the same seq (a request the client gave up on that the
    /// server completes anyway) needs no compare-and-swap: each side writes its own key first and
    /// then reads the other's. The gap writes `gap/{id}/{seq}` (the gap's meta), then reads the
    /// meta; an upload writes the meta (its commit point), then reads `gap/{id}/{seq}`
    /// ([`Streams::yield_to_gap`]). On a store that orders its operations (SQLite, Redis, every
    /// Spin backend for one key space), at least one of the two reads sees the other's write. An
    /// upload that sees the gap puts the gap's meta back over its own and answers `409`; a gap
    /// that sees an upload's meta takes its record back and answers `409`. So an upload answers
    /// `200`/`201` only when no gap was declared before its commit, and then every gap after it
    /// sees its meta and yields: an acknowledged segment is never replaced, and a recorded gap is
    /// never replaced either (every later write to the meta is the gap's). When both reads see
    /// the other (a true tie) both answer `409` and the gap stays: nothing was acknowledged, and
    /// the playlist moves on. Not closed (ARCHITECTURE.md, "Gaps"): two copies of one upload in
    /// flight at once share the meta key, so one copy's acknowledgement and the other copy's
    /// reading of the record (before a yielding gap takes it back) can still cross.
    pub fn put_gap(&self, id: &StreamId, seq: u64, duration_ms: Option<u32>, now_ms: i64) -> Result<Stored, PutError> {
        let settled = |deep| Ok(self.meta_at(id, seq, deep)?.map(|existing| answer_existing_gap(&existing)));
        let head = match self.admit(id, seq, now_ms, settled)? {
            Ok(head) => head,
            Err(stored) => return Ok(stored),
        };
        let record = self.record(id)?;
        let duration_ms = match (duration_ms, record) {
            (Some(ms), Some(record)) => {
                rules::check_target(ms, record.target_s).map_err(PutError::Rule)?;
                ms
            }
            (Some(ms), None) => ms,
            (None, Some(record)) => record.target_s.saturating_mul(1000),
            (None, None) => 1000,
        };
        let previous = self.previous(id, seq)?;
        let pdt_ms = previous
            .as_ref()
            .map_or(now_ms - i64::from(duration_ms), |p| p.pdt_ms + i64::from(p.duration_ms));
        let key = gap_key(id, seq);
        let (gap, retry) = match get_json::<SegmentMeta>(self.kv, &key)? {
            // A retry whose first try died before the commit point: the same record again.
            Some(stored) if stored.gap && stored.seq == seq => (stored, true),
            _ => {
                let mut gap = SegmentMeta::new_gap(seq, duration_ms, pdt_ms, now_ms);
                gap.disc_seq = self.carried(id, seq, previous.as_ref())?;
                set_json(self.kv, &key, &gap)?;
                (gap, false)
            }
        };
        if let Some(existing) = self.meta(id, seq)? {
            if existing.gap {
                return Ok(Stored::AlreadyStored);
            }
            // An upload committed first: it keeps the seq.
            self.kv.delete(&key)?;
            return Err(PutError::SegmentHolds { seq });
        }
        set_json(self.kv, &meta_key(id, seq), &gap)?;
        if self.behind_head(id, seq)? {
            self.kv.delete(&meta_key(id, seq))?;
            self.kv.delete(&key)?;
            return Err(PutError::Rule(RuleError::BeforeWindow { seq, first_seq: seq + 1 }));
        }
        self.settle(id, head, now_ms)?;
        Ok(if retry { Stored::AlreadyStored } else { Stored::Created })
    }

    /// Called by an upload or commit right after it wrote the meta of `seq`: when a gap was
    /// declared for `seq` meanwhile, puts the gap's meta back over it and returns `true` (the
    /// caller answers `409`). See [`Streams::put_gap`] for why this settles the race.
    pub(super) fn yield_to_gap(&self, id: &StreamId, seq: u64) -> Result<bool, KvError> {
        let Some(gap) = get_json::<SegmentMeta>(self.kv, &gap_key(id, seq))? else {
            return Ok(false);
        };
        set_json(self.kv, &meta_key(id, seq), &gap)?;
        Ok(true)
    }
}

/// The answer to a gap when `seq` already has a meta: a gap is a retry, a segment keeps the seq.
fn answer_existing_gap(existing: &SegmentMeta) -> Result<Stored, PutError> {
    if existing.gap {
        Ok(Stored::AlreadyStored)
    } else {
        Err(PutError::SegmentHolds { seq: existing.seq })
    }
}
