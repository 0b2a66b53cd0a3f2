//! Ingest: storing whole segments (v1) and parts (v2), sealing parts into a segment, and ending
//! a stream. Every write path runs the same prologue ([`Streams::admit`]) and, once its commit
//! point holds, the same epilogue ([`Streams::settle`]).

use super::layout::{
    dseq_key, end_key, head_key, meta_key, part_meta_key, part_slice_key, retire_key, segment_slice_key, stream_key, RetireMark,
    MAX_AHEAD, TAIL_PROBE,
};
use super::{PutError, Stored, Streams};
use crate::kv::{get_json, set_json, Kv, KvError};
use chalkstream_manifest::id::{sha1_hex, StreamId};
use chalkstream_manifest::ingest::SegmentHeaders;
use chalkstream_manifest::ll;
use chalkstream_manifest::part::{PartHeaders, PartMeta, MAX_PARTS};
use chalkstream_manifest::rules::{self, Retention, RuleError};
use chalkstream_manifest::segment::{part_count, EndMarker, HeadMark, SegmentMeta, StreamRecord, PART_LEN};

/// A commit retires the part records of the segments up to this many seqs before it
/// ([`Streams::retire_parts`]): with segments of a target duration each, the newest of them was
/// sealed five target durations ago, past [`RETIRE_AFTER_TARGETS`] with room for upload jitter.
const RETIRE_BACK: u64 = 5;
/// At most this many seqs' part records, and as many seqs' part bodies, retired by one commit:
/// a backlog that a burst of commits left (each too young in its turn) goes within a few commits.
const RETIRE_CATCH_UP: u64 = 8;
/// ... once that segment was sealed at least this many target durations ago: one more than the
/// part window (`ll::PART_WINDOW_TARGETS`).
const RETIRE_AFTER_TARGETS: u32 = ll::PART_WINDOW_TARGETS + 1;

/// How long another request's write may take to show on an eventually consistent store (Spin
/// calls its store BASE; replicated platforms show writes within about a second). A decision
/// made by time alone waits this much longer before it relies on what others wrote.
pub(super) const SHOWN_WITHIN_MS: i64 = 5_000;

/// What a write path's prologue decided: store (with the retention head it read), or answer at
/// once.
pub(super) type Admission = Result<u64, Stored>;

/// A write path's check of what already holds its seq: `Some(answer)` when the seq is settled
/// (a retry, a conflict, a gap), `None` when it is free.
pub(super) type Settled = Option<Result<Stored, PutError>>;

impl<K: Kv + ?Sized> Streams<'_, K> {
    /// The prologue of every write path (segment, part, commit, gap): the seq is answered from
    /// what already holds it (`settled`); else it must not lie below the head or the tail hint
    /// (committed once and deleted by retention since: storing it again would acknowledge a
    /// segment no playlist lists), unless `settled` now finds that a racing twin stored it (a
    /// retry, then); and it must not lie [`MAX_AHEAD`] or more past the first unstored seq,
    /// unless the stream has no record (it was swept): then a run starts at `seq`.
    pub(super) fn admit(
        &self,
        id: &StreamId,
        seq: u64,
        now_ms: i64,
        settled: impl Fn(bool) -> Result<Settled, KvError>,
    ) -> Result<Admission, PutError> {
        if let Some(answer) = settled(false)? {
            return answer.map(Err);
        }
        let mut head = self.head(id)?;
        let tail = self.tail(id)?;
        if seq > head.max(tail) || head.max(tail) == 0 {
            head = self.resumed_head(id, seq, head, tail, now_ms)?;
        }
        if seq < head || seq < tail {
            // A racing twin may have stored this seq and moved the tail since the read above:
            // that makes this a retry, not a seq behind the window. Or it was stored long ago
            // and its meta is in a metas block now (`deep`): a retry too.
            if let Some(answer) = settled(true)? {
                return answer.map(Err);
            }
            return Err(PutError::Rule(RuleError::BeforeWindow { seq, first_seq: head.max(seq + 1) }));
        }
        if let Err(too_far) = check_ahead(seq, head, tail) {
            // Too far ahead of a stream with no record: not a new stream (its uploads start at
            // seq 0, and a client never has seq 0 and seq 64 in flight at once) but one the
            // sweep deleted after a silence longer than retention, its head and tail with it.
            // The session resumes: its run starts at this seq (issue 18: measured from 0, every
            // upload of a resumed session was `429` for good).
            if self.record(id)?.is_some() {
                return Err(too_far);
            }
            self.start_run(id, seq)?;
            return Ok(Ok(seq));
        }
        Ok(Ok(head))
    }

    /// The head of a stream whose run starts after a hole that nothing will fill: a session that
    /// resumed after the sweep deleted its stream, at a seq below [`MAX_AHEAD`] (its upload was
    /// stored behind the hole and created the record, noting its seq). Once the hole has
    /// outlived the idle timeout it is no reordering of a new stream's first uploads (a client
    /// sends them within it), so the run starts at the record's first seq; a late upload into
    /// the hole is then behind the window (`409`), never acknowledged and hidden. Costs one read
    /// (the record) only for an upload past the first unstored seq.
    ///
    /// Both sides of the hole are decided by time, so neither relies on reading the other's
    /// writes (which a lagging store may show late): an upload into the hole is refused once the
    /// idle timeout has passed since the record was made, and the run starts only
    /// [`SHOWN_WITHIN_MS`] after that, when every upload into the hole acknowledged before it has
    /// shown to every request. Read only while the run has not started (the hints are 0) or for
    /// an upload past the first unstored seq.
    fn resumed_head(&self, id: &StreamId, seq: u64, head: u64, tail: u64, now_ms: i64) -> Result<u64, PutError> {
        let Some(record) = self.record(id)? else {
            return Ok(head);
        };
        let Some(first) = record.first_seq.filter(|&first| first > head.max(tail)) else {
            return Ok(head);
        };
        let age_ms = now_ms.saturating_sub(record.created_ms);
        let idle_ms = self.config.idle_ms as i64;
        if seq < first && age_ms >= idle_ms {
            return Err(PutError::Rule(RuleError::BeforeWindow { seq, first_seq: first }));
        }
        if age_ms >= idle_ms + SHOWN_WITHIN_MS && self.meta(id, head)?.is_none() && self.part_meta(id, head, 0)?.is_none() {
            self.start_run(id, first)?;
            return Ok(first);
        }
        Ok(head)
    }

    /// Moves the head to `seq`, where a new run starts (see [`Streams::admit`]); re-read so a
    /// racing request's later head stays. The run's first segment counts `seq` discontinuities
    /// before it (`dseq/{id}/{seq}`): more than the swept run can have had (at most one per seq),
    /// so `EXT-X-DISCONTINUITY-SEQUENCE` never goes back for a viewer who saw the old run.
    fn start_run(&self, id: &StreamId, seq: u64) -> Result<(), KvError> {
        if get_json::<u64>(self.kv, &dseq_key(id, seq))?.is_none() {
            set_json(self.kv, &dseq_key(id, seq), &seq)?;
        }
        if self.head(id)? < seq {
            set_json(self.kv, &head_key(id), &HeadMark { first_seq: seq })?;
        }
        Ok(())
    }

    /// What a new segment (or part 0) at `seq` follows: the previous segment's meta, if stored,
    /// and whether `seq` starts a discontinuity (declared, or a resume after Stop or the idle
    /// timeout).
    pub(super) fn follows(&self, id: &StreamId, seq: u64, declared: bool, now_ms: i64) -> Result<(Option<SegmentMeta>, bool), KvError> {
        let end = self.end_marker(id)?;
        let previous = self.previous(id, seq)?;
        let discontinuity =
            rules::starts_discontinuity(declared, seq, end.as_ref(), previous.as_ref(), now_ms, self.config.idle_ms);
        Ok((previous, discontinuity))
    }

    /// The meta of `seq - 1`, if stored.
    pub(super) fn previous(&self, id: &StreamId, seq: u64) -> Result<Option<SegmentMeta>, KvError> {
        match seq.checked_sub(1) {
            Some(prev) => self.meta(id, prev),
            None => Ok(None),
        }
    }

    /// The epilogue of a write path whose commit point holds and is acknowledged: the tail hint
    /// moves on, a page completed under retention 0 is written, and one retention batch runs.
    pub(super) fn settle(&self, id: &StreamId, head: u64, now_ms: i64) -> Result<(), KvError> {
        let tail = self.advance_tail(id, head)?;
        if self.config.retention == Retention::Forever {
            self.write_page(id, tail)?;
        } else {
            self.block_metas(id, tail, now_ms)?;
        }
        self.apply_retention(id, now_ms, 0)
    }

    /// Whether retention's head has passed `seq` since this request read it. Checked right after a
    /// commit point is written, before anything is acknowledged: a slow twin of an upload whose
    /// segment has expired and been deleted meanwhile (its head written first, then its keys
    /// deleted) would otherwise leave a record that outlives its segment, below every window.
    pub(super) fn behind_head(&self, id: &StreamId, seq: u64) -> Result<bool, KvError> {
        Ok(self.head(id)? > seq)
    }

    /// Stores segment `seq` of stream `id`: dedupe, stream record and target check,
    /// discontinuity, slices, the meta (the commit point), the gap handshake, then the tail hint
    /// and retention.
    pub fn put_segment(
        &self,
        id: &StreamId,
        seq: u64,
        headers: &SegmentHeaders,
        body: &[u8],
        now_ms: i64,
    ) -> Result<Stored, PutError> {
        let sha1 = sha1_hex(body);
        let settled = |deep| Ok(self.meta_at(id, seq, deep)?.map(|existing| answer_existing(&existing, &sha1)));
        let head = match self.admit(id, seq, now_ms, settled)? {
            Ok(head) => head,
            Err(stored) => return Ok(stored),
        };
        let record = self.stream_record(id, seq, headers.duration_ms, now_ms)?;
        rules::check_target(headers.duration_ms, record.target_s).map_err(PutError::Rule)?;

        let (previous, discontinuity) = self.follows(id, seq, headers.discontinuity, now_ms)?;
        rules::check_short(seq, headers.duration_ms, previous.as_ref()).map_err(PutError::Rule)?;
        let mut meta = SegmentMeta::new(seq, headers, discontinuity, body, now_ms);
        meta.disc_seq = self.carried(id, seq, previous.as_ref())?;
        for (slice, bytes) in body.chunks(PART_LEN).enumerate() {
            self.kv.set(&segment_slice_key(id, seq, meta.sha1_prefix(), slice as u32), bytes)?;
        }
        // A racing upload may have committed meanwhile; never overwrite a commit.
        if let Some(existing) = self.meta(id, seq)? {
            if existing.sha1_prefix() != meta.sha1_prefix() {
                self.delete_parts(id, &meta)?;
            }
            return answer_existing(&existing, &sha1);
        }
        set_json(self.kv, &meta_key(id, seq), &meta)?;
        if self.yield_to_gap(id, seq)? {
            self.delete_parts(id, &meta)?;
            return Err(PutError::GivenUp { seq });
        }
        if self.behind_head(id, seq)? {
            self.kv.delete(&meta_key(id, seq))?;
            self.delete_parts(id, &meta)?;
            return Err(PutError::Rule(RuleError::BeforeWindow { seq, first_seq: seq + 1 }));
        }
        self.settle(id, head, now_ms)?;
        Ok(Stored::Created)
    }

    /// The stream record, created from this segment when absent. Re-read after writing so two
    /// racing first segments most likely agree on the target.
    fn stream_record(&self, id: &StreamId, seq: u64, duration_ms: u32, now_ms: i64) -> Result<StreamRecord, KvError> {
        let key = stream_key(id);
        if let Some(record) = get_json(self.kv, &key)? {
            return Ok(record);
        }
        let record = StreamRecord {
            target_s: rules::target_duration_s(duration_ms),
            created_ms: now_ms,
            part_target_ms: None,
            first_seq: (seq > 0).then_some(seq),
        };
        set_json(self.kv, &key, &record)?;
        Ok(get_json(self.kv, &key)?.unwrap_or(record))
    }

    /// Stores part `part` of segment `seq`: dedupe, sealed check, stream record (created by a
    /// first part, which fixes the part target and target duration), the discontinuity on part
    /// 0, slices, then the part meta (the commit point). A commit that seals the segment
    /// without this part meanwhile takes the part back out (`409`).
    pub fn put_part(&self, id: &StreamId, seq: u64, part: u32, headers: &PartHeaders, body: &[u8], now_ms: i64) -> Result<Stored, PutError> {
        let sha1 = sha1_hex(body);
        let settled = |deep| {
            if let Some(existing) = self.part_meta(id, seq, part)? {
                return Ok(Some(answer_existing_part(&existing, &sha1)));
            }
            Ok(self.meta_at(id, seq, deep)?.map(|sealed| answer_sealed_part(&sealed, part, &sha1)))
        };
        if let Err(stored) = self.admit(id, seq, now_ms, settled)? {
            return Ok(stored);
        }
        self.part_stream_record(id, seq, headers, now_ms)?;
        let discontinuity = part == 0 && self.follows(id, seq, headers.discontinuity, now_ms)?.1;
        let meta = PartMeta::new(seq, part, headers, discontinuity, body, now_ms);
        for (slice, bytes) in body.chunks(PART_LEN).enumerate() {
            self.kv.set(&part_slice_key(id, seq, part, meta.sha1_prefix(), slice as u32), bytes)?;
        }
        // A racing upload may have committed this part meanwhile; never overwrite a commit.
        if let Some(existing) = self.part_meta(id, seq, part)? {
            if existing.sha1_prefix() != meta.sha1_prefix() {
                for slice in 0..meta.slices {
                    self.kv.delete(&part_slice_key(id, seq, part, meta.sha1_prefix(), slice))?;
                }
            }
            return answer_existing_part(&existing, &sha1);
        }
        set_json(self.kv, &part_meta_key(id, seq, part), &meta)?;
        if self.behind_head(id, seq)? {
            self.delete_part(id, &meta)?;
            return Err(PutError::Rule(RuleError::BeforeWindow { seq, first_seq: seq + 1 }));
        }
        if let Some(sealed) = self.meta(id, seq)? {
            if sealed.gap || part as usize >= sealed.ll_parts.len() {
                self.delete_part(id, &meta)?;
                return Err(sealed_without(&sealed, part));
            }
        }
        Ok(Stored::Created)
    }

    /// The stream record for a part: created from it when absent (re-read after writing so two
    /// racing first parts most likely agree), and checked against it.
    fn part_stream_record(&self, id: &StreamId, seq: u64, headers: &PartHeaders, now_ms: i64) -> Result<StreamRecord, PutError> {
        let key = stream_key(id);
        let record = match get_json::<StreamRecord>(self.kv, &key)? {
            Some(record) => record,
            None => {
                let record = StreamRecord {
                    target_s: headers.target_s,
                    created_ms: now_ms,
                    part_target_ms: Some(headers.part_target_ms),
                    first_seq: (seq > 0).then_some(seq),
                };
                set_json(self.kv, &key, &record)?;
                get_json(self.kv, &key)?.unwrap_or(record)
            }
        };
        match record.part_target_ms {
            None => Err(PutError::WholeSegmentStream),
            Some(part_target_ms) if part_target_ms != headers.part_target_ms || record.target_s != headers.target_s => {
                Err(PutError::TargetsDiffer { part_target_ms, target_s: record.target_s })
            }
            Some(_) => Ok(record),
        }
    }

    /// Seals segment `seq` from its parts `0..count`: all must be stored, none past them, and
    /// together they must fit the target duration. Then the segment is a segment like any other:
    /// tail hint, pages and lines, retention, exactly as after a whole-segment upload.
    pub fn commit(&self, id: &StreamId, seq: u64, count: u32, now_ms: i64) -> Result<Stored, PutError> {
        let settled = |deep| Ok(self.meta_at(id, seq, deep)?.map(|existing| answer_existing_commit(&existing, count)));
        let head = match self.admit(id, seq, now_ms, settled)? {
            Ok(head) => head,
            Err(stored) => return Ok(stored),
        };
        let mut parts = Vec::with_capacity(count as usize);
        for part in 0..count {
            match self.part_meta(id, seq, part)? {
                Some(meta) => parts.push(meta),
                None => return Err(PutError::MissingPart { seq, part }),
            }
        }
        if count < MAX_PARTS && self.part_meta(id, seq, count)?.is_some() {
            return Err(PutError::UncountedPart { seq, part: count });
        }
        let Some(record) = self.record(id)? else {
            return Err(PutError::MissingPart { seq, part: 0 });
        };
        let duration_ms: u32 = parts.iter().map(|p| p.duration_ms).sum();
        rules::check_target(duration_ms, record.target_s).map_err(PutError::Rule)?;
        // Part 0 decided the discontinuity when it arrived; a Stop since then is a resume too.
        let (previous, resumed) = self.follows(id, seq, false, now_ms)?;
        rules::check_short(seq, duration_ms, previous.as_ref()).map_err(PutError::Rule)?;
        let mut meta = SegmentMeta::from_parts(seq, &parts, parts[0].discontinuity || resumed, now_ms);
        meta.disc_seq = self.carried(id, seq, previous.as_ref())?;
        self.fold(id, &mut meta, &parts)?;
        // A racing commit may have sealed it meanwhile; never overwrite a commit. Its folded
        // body has our key when it sealed the same parts (then it is its body too).
        if let Some(existing) = self.meta(id, seq)? {
            if existing.sha1 != meta.sha1 {
                self.delete_folded(id, &meta)?;
            }
            return answer_existing_commit(&existing, count);
        }
        set_json(self.kv, &meta_key(id, seq), &meta)?;
        if self.yield_to_gap(id, seq)? {
            // The parts stay until retention deletes the gap (it deletes a gap's parts too); the
            // folded body, which the gap's meta does not name, goes now.
            self.delete_folded(id, &meta)?;
            return Err(PutError::GivenUp { seq });
        }
        if self.behind_head(id, seq)? {
            // Retention deletes the parts it found listed in the meta it read.
            self.kv.delete(&meta_key(id, seq))?;
            self.delete_folded(id, &meta)?;
            return Err(PutError::Rule(RuleError::BeforeWindow { seq, first_seq: seq + 1 }));
        }
        self.retire_parts(id, seq, head, record.target_s, now_ms)?;
        self.settle(id, head, now_ms)?;
        Ok(Stored::Created)
    }

    /// Stores the bytes of `parts` (a commit's, in order) as one body in whole-segment slices and
    /// marks `meta` folded ([`SegmentMeta::folded`]); before the meta, so a reader that sees the
    /// meta finds the body. Leaves `meta` as it is when a part's bytes cannot all be read (then
    /// the segment is served from its parts, which stay until retention).
    fn fold(&self, id: &StreamId, meta: &mut SegmentMeta, parts: &[PartMeta]) -> Result<(), KvError> {
        if meta.len == 0 {
            return Ok(());
        }
        let mut body = Vec::with_capacity(meta.len as usize);
        for part in parts {
            for slice in 0..part.slices {
                match self.kv.get(&part_slice_key(id, meta.seq, part.part, part.sha1_prefix(), slice))? {
                    Some(bytes) => body.extend_from_slice(&bytes),
                    None => return Ok(()),
                }
            }
        }
        if body.len() as u64 != meta.len {
            return Ok(());
        }
        for (slice, bytes) in body.chunks(PART_LEN).enumerate() {
            self.kv.set(&segment_slice_key(id, meta.seq, meta.sha1_prefix(), slice as u32), bytes)?;
        }
        meta.parts = part_count(body.len());
        meta.folded = true;
        Ok(())
    }

    /// Deletes the folded body of `meta` (no-op when it has none).
    pub(super) fn delete_folded(&self, id: &StreamId, meta: &SegmentMeta) -> Result<(), KvError> {
        if !meta.folded {
            return Ok(());
        }
        for slice in 0..meta.parts {
            self.kv.delete(&segment_slice_key(id, meta.seq, meta.sha1_prefix(), slice))?;
        }
        Ok(())
    }

    /// Deletes the part records (`seg/{id}/{seq}/p{n}`) of the sealed segments up to `seq -
    /// RETIRE_BACK` that were sealed more than [`RETIRE_AFTER_TARGETS`] target durations ago, so
    /// they have left the part window of every playlist (which lists `EXT-X-PART` for the last
    /// three target durations). A seal lists every part (duration, length, slices, SHA-1 prefix),
    /// which is all a reader of a sealed segment's parts needs ([`Streams::sealed_part_chunk`]); a
    /// retry of one of its parts is answered from the seal too. Six keys fewer per 2 s segment (a
    /// stream kept 13 per segment, part records included); the margin keeps them for readers that
    /// still see the segment open, on a store whose writes show up late.
    ///
    /// Before that, the part bodies of the folded segments whose records went at an earlier
    /// commit: a reader that read a part record just before it was deleted still finds the bytes,
    /// and a part asked for after is served from the folded body.
    ///
    /// Where each job stands is kept in `retire/{id}` ([`RetireMark`]), so a seq that was too
    /// young when its turn came (a burst of commits from a broadcaster catching up after a stall)
    /// is retired by a later commit rather than left to retention: the two-hour soak held 714
    /// keys where 455 is steady before this. At most [`RETIRE_CATCH_UP`] seqs per job and call;
    /// in steady state one of each (three small reads and a write). A gap's parts stay until
    /// retention deletes the gap; a seq with no seal yet holds the records job there.
    fn retire_parts(&self, id: &StreamId, seq: u64, head: u64, target_s: u32, now_ms: i64) -> Result<(), KvError> {
        let Some(old) = seq.checked_sub(RETIRE_BACK) else {
            return Ok(());
        };
        let key = retire_key(id);
        let was = get_json::<RetireMark>(self.kv, &key)?;
        // No mark yet: a new stream (from seq 0), or one resumed after the sweep or stored before
        // the mark (from here; retention takes what lies below).
        let from = was.unwrap_or(RetireMark { records_from: old, bodies_from: old });
        let mut mark = RetireMark { records_from: from.records_from.max(head), bodies_from: from.bodies_from.max(head) };

        let bodies_to = mark.records_from.min(mark.bodies_from + RETIRE_CATCH_UP);
        for older in mark.bodies_from..bodies_to {
            if let Some(meta) = self.sealed_meta(id, older)? {
                if meta.folded && !meta.gap {
                    for (n, part) in meta.ll_parts.iter().enumerate() {
                        for slice in 0..part.slices {
                            self.kv.delete(&part_slice_key(id, older, n as u32, &part.sha1, slice))?;
                        }
                    }
                }
            }
        }
        mark.bodies_from = mark.bodies_from.max(bodies_to);

        let after_ms = i64::from(RETIRE_AFTER_TARGETS * target_s) * 1000;
        let records_to = (old + 1).min(mark.records_from + RETIRE_CATCH_UP);
        while mark.records_from < records_to {
            let at = mark.records_from;
            match self.sealed_meta(id, at)? {
                None => break,
                Some(meta) if meta.gap || !meta.is_part_built() => {}
                Some(meta) if now_ms - meta.stored_ms < after_ms => break,
                Some(meta) => {
                    for n in 0..meta.ll_parts.len() as u32 {
                        self.kv.delete(&part_meta_key(id, at, n))?;
                    }
                }
            }
            mark.records_from = at + 1;
        }
        if was != Some(mark) {
            set_json(self.kv, &key, &mark)?;
        }
        Ok(())
    }

    /// Marks the stream ended after its last stored segment. Returns that seq, or `None` when
    /// the stream has no (unexpired) segments. Probes at most [`TAIL_PROBE`] metas past the
    /// hints; when the run goes on beyond them it moves the tail hint that far and answers
    /// [`PutError::CatchingUp`] (the next try starts there).
    pub fn end(&self, id: &StreamId, now_ms: i64) -> Result<Option<u64>, PutError> {
        let head = self.head(id)?;
        let start = self.tail(id)?.max(head);
        let run = self.probe_forward(id, start, TAIL_PROBE)?;
        let next = start + run.len() as u64;
        if next - start >= TAIL_PROBE {
            self.raise_tail(id, start, next)?;
            return Err(PutError::CatchingUp);
        }
        let last_meta = match run.into_iter().last() {
            Some(meta) => meta,
            None => match start.checked_sub(1).filter(|&last| last >= head) {
                Some(last) => match self.meta(id, last)? {
                    Some(meta) => meta,
                    None => return Ok(None),
                },
                None => return Ok(None),
            },
        };
        let last = last_meta.seq;
        if self.config.retention.is_expired(last_meta.stored_ms, now_ms) {
            return Ok(None);
        }
        if self.end_marker(id)?.is_some_and(|end| end.after_seq >= last) {
            return Ok(Some(last));
        }
        set_json(self.kv, &end_key(id), &EndMarker { after_seq: last, at_ms: now_ms })?;
        self.raise_tail(id, start, next)?;
        Ok(Some(last))
    }
}

/// Refuses a seq [`MAX_AHEAD`] or more past the first unstored one (as the hints tell it).
fn check_ahead(seq: u64, head: u64, tail: u64) -> Result<(), PutError> {
    let next = head.max(tail);
    if seq >= next + MAX_AHEAD {
        return Err(PutError::TooFarAhead { seq, next });
    }
    Ok(())
}

/// The answer when `seq` already has a commit: the same bytes are a retry. (A request that died
/// after its commit left nothing to finish: the meta carries its own count.)
pub(super) fn answer_existing(existing: &SegmentMeta, sha1: &str) -> Result<Stored, PutError> {
    if existing.gap {
        return Err(PutError::GivenUp { seq: existing.seq });
    }
    if existing.is_part_built() {
        return Err(PutError::SealedFromParts { seq: existing.seq });
    }
    if existing.sha1 != sha1 {
        return Err(PutError::Conflict { seq: existing.seq });
    }
    Ok(Stored::AlreadyStored)
}

/// The answer when part `existing` is stored: the same bytes are a retry.
fn answer_existing_part(existing: &PartMeta, sha1: &str) -> Result<Stored, PutError> {
    if existing.sha1 == sha1 {
        Ok(Stored::AlreadyStored)
    } else {
        Err(PutError::PartConflict { seq: existing.seq, part: existing.part })
    }
}

/// The answer to a part of a sealed segment whose own record is not stored: a retry when the
/// seal lists the part with these bytes (the commit of a later segment retired its record), a
/// conflict when with other bytes, else as [`sealed_without`].
fn answer_sealed_part(sealed: &SegmentMeta, part: u32, sha1: &str) -> Result<Stored, PutError> {
    match sealed.ll_parts.get(part as usize) {
        Some(listed) if !sealed.gap && sha1.starts_with(&listed.sha1) => Ok(Stored::AlreadyStored),
        Some(_) if !sealed.gap => Err(PutError::PartConflict { seq: sealed.seq, part }),
        _ => Err(sealed_without(sealed, part)),
    }
}

/// The answer to a part of a segment that is sealed (or given up) and does not hold it.
fn sealed_without(sealed: &SegmentMeta, part: u32) -> PutError {
    let seq = sealed.seq;
    if sealed.gap {
        PutError::GivenUp { seq }
    } else if (part as usize) < sealed.ll_parts.len() {
        // Its seal lists it, yet its part meta is gone: retention is deleting the segment.
        PutError::Rule(RuleError::BeforeWindow { seq, first_seq: seq + 1 })
    } else {
        PutError::SealedWithout { seq, part }
    }
}

/// The answer to a commit of a sealed segment: the same number of parts is a retry (the parts
/// are immutable, so the same parts).
fn answer_existing_commit(existing: &SegmentMeta, count: u32) -> Result<Stored, PutError> {
    if existing.gap {
        return Err(PutError::GivenUp { seq: existing.seq });
    }
    if existing.ll_parts.len() != count as usize {
        return Err(PutError::SealedOtherwise { seq: existing.seq, parts: existing.ll_parts.len() });
    }
    Ok(Stored::AlreadyStored)
}
