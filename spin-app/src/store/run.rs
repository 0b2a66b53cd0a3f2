//! Reading the run: the one forward probe to the end of the stored run, the tail hint it
//! moves, the sliding window and the `EVENT` run a playlist lists, discontinuity counts, the live
//! edge of a v2 stream, and the keys a chunk streams.

use super::layout::{dseq_key, part_slice_key, segment_slice_key, tail_key, LINES_LENS, METAS_LEN, PAGE_LEN, RETENTION_BATCH, TAIL_PROBE};
use super::Streams;
use crate::kv::{get_json, set_json, Kv, KvError};
use chalkstream_manifest::id::StreamId;
use chalkstream_manifest::ll::{self, OpenSegment};
use chalkstream_manifest::part::MAX_PARTS;
use chalkstream_manifest::rules::{self, Retention};
use chalkstream_manifest::segment::{SegmentMeta, StreamRecord, TailHint, PART_LEN};
use chalkstream_manifest::window::{self, Extent, LinesSource, MetaSource, Piece, State, StreamView};

/// Reads metas for the window walk; with pages on, from the page holding the seq when it exists;
/// with blocks on, from the metas block holding it where its own key is gone.
pub(super) struct Source<'s, 'a, K: Kv + ?Sized> {
    streams: &'s Streams<'a, K>,
    id: &'s StreamId,
    pages: bool,
    /// The last page looked up: its number and, if stored, its metas.
    page: Option<(u64, Option<Vec<SegmentMeta>>)>,
    blocks: bool,
    /// The last metas block looked up: its number and, if stored, its metas.
    block: Option<(u64, Option<Vec<SegmentMeta>>)>,
    /// A block was found: seqs further from the live edge are most likely in blocks too, so
    /// their block is read first (one read for eight metas instead of a miss and a block).
    in_blocks: bool,
}

impl<'s, 'a, K: Kv + ?Sized> Source<'s, 'a, K> {
    /// Metas from pages where a page can exist (retention 0), else one by one, from metas
    /// blocks where their keys are gone (sliding windows).
    pub(super) fn new(streams: &'s Streams<'a, K>, id: &'s StreamId) -> Self {
        let pages = streams.config.retention == Retention::Forever;
        Source { streams, id, pages, page: None, blocks: !pages, block: None, in_blocks: false }
    }

    /// Metas one by one: for probes past the tail, where no page or block is complete yet.
    pub(super) fn plain(streams: &'s Streams<'a, K>, id: &'s StreamId) -> Self {
        Source { streams, id, pages: false, page: None, blocks: false, block: None, in_blocks: false }
    }

    /// `seq`'s meta from its metas block, reading the block unless it is the one read last.
    fn from_block(&mut self, seq: u64) -> Result<Option<SegmentMeta>, KvError> {
        let number = seq / METAS_LEN;
        if self.block.as_ref().is_none_or(|(n, _)| *n != number) {
            let block = self.streams.metas_block(self.id, number)?.map(|b| b.metas);
            self.block = Some((number, block));
        }
        let found = match &self.block {
            Some((_, Some(metas))) => Some(metas[(seq % METAS_LEN) as usize].clone()),
            _ => None,
        };
        self.in_blocks |= found.is_some();
        Ok(found)
    }
}

impl<K: Kv + ?Sized> MetaSource for Source<'_, '_, K> {
    type Error = KvError;
    fn meta(&mut self, seq: u64) -> Result<Option<SegmentMeta>, KvError> {
        if self.pages {
            let number = seq / PAGE_LEN;
            if self.page.as_ref().is_none_or(|(n, _)| *n != number) {
                let page = self.streams.page(self.id, number)?;
                self.page = Some((number, page));
            }
            if let Some((_, Some(metas))) = &self.page {
                return Ok(Some(metas[(seq % PAGE_LEN) as usize].clone()));
            }
        }
        if !self.blocks {
            return self.streams.meta(self.id, seq);
        }
        let cached = self.block.as_ref().is_some_and(|(n, _)| *n == seq / METAS_LEN);
        if cached || self.in_blocks {
            if let Some(meta) = self.from_block(seq)? {
                return Ok(Some(meta));
            }
        }
        if let Some(meta) = self.streams.meta(self.id, seq)? {
            return Ok(Some(meta));
        }
        if cached || self.in_blocks {
            return Ok(None);
        }
        self.from_block(seq)
    }
    fn head(&mut self) -> Result<u64, KvError> {
        self.streams.head(self.id)
    }
}

impl<K: Kv + ?Sized> LinesSource for Source<'_, '_, K> {
    /// The largest stored block that starts at `seq` and checks out.
    fn lines(&mut self, seq: u64) -> Result<Option<Piece>, KvError> {
        if !self.pages {
            return Ok(None);
        }
        for len in LINES_LENS.into_iter().rev().filter(|len| seq % len == 0) {
            if let Some(text) = self.streams.lines(self.id, len, seq / len)? {
                return Ok(Some(Piece::Lines { first_seq: seq, len, text }));
            }
        }
        Ok(None)
    }
}

impl<K: Kv + ?Sized> Streams<'_, K> {
    /// The unbroken run of committed metas from `start`, at most `limit`, read one by one
    /// ([`window::probe_forward`]).
    pub(super) fn probe_forward(&self, id: &StreamId, start: u64, limit: u64) -> Result<Vec<SegmentMeta>, KvError> {
        window::probe_forward(&mut Source::plain(self, id), start, limit)
    }

    /// Moves the tail hint forward over committed metas; returns the hint as this request left it.
    pub(super) fn advance_tail(&self, id: &StreamId, head: u64) -> Result<u64, KvError> {
        let read = self.tail(id)?;
        let start = read.max(head);
        let next = start + self.probe_forward(id, start, TAIL_PROBE)?.len() as u64;
        if next > read {
            self.raise_tail(id, start, next)?;
        }
        Ok(next.max(read))
    }

    /// Moves the tail hint up to `next`, the end of the run this request probed from `start`.
    /// With retention 0, first writes the lines blocks the move completes. Re-reads the hint
    /// right before writing: a slow request must not move it back over segments a faster one
    /// has seen since (and retention may have deleted since).
    pub(super) fn raise_tail(&self, id: &StreamId, start: u64, next: u64) -> Result<(), KvError> {
        if self.config.retention == Retention::Forever {
            self.write_lines(id, start, next)?;
        }
        if self.tail(id)? < next {
            set_json(self.kv, &tail_key(id), &TailHint { next_seq: next })?;
        }
        Ok(())
    }

    /// The last segment of the listed run, found from the hints (as [`Streams::end`] does);
    /// `None` when there is none or it has expired.
    pub(super) fn run_last(&self, id: &StreamId, now_ms: i64) -> Result<Option<SegmentMeta>, KvError> {
        let head = self.head(id)?;
        let start = self.tail(id)?.max(head);
        let mut last = self.probe_forward(id, start, TAIL_PROBE)?.pop();
        if last.is_none() && start > head {
            last = self.meta(id, start - 1)?;
        }
        Ok(last.filter(|meta| !self.config.retention.is_expired(meta.stored_ms, now_ms)))
    }

    /// The count of discontinuities before `seq` that its meta carries (see the module doc):
    /// from the previous meta, or kept by retention when that one is deleted; `None` when
    /// neither tells (an upload out of order).
    ///
    /// A previous meta without a count of its own (committed before its predecessor) is looked
    /// through, up to [`window::CARRY_BACK`] metas back, so such metas do not pass their lack on:
    /// every meta without a count then has one that has a count (or a kept `dseq`) within
    /// `CARRY_BACK` below it, because no upload is accepted [`super::MAX_AHEAD`] or more past the first
    /// unstored seq. That is what lets a sliding window, read backwards
    /// ([`window::walk_window`]), carry the count to its first segment in at most that many reads.
    pub(super) fn carried(&self, id: &StreamId, seq: u64, previous: Option<&SegmentMeta>) -> Result<Option<u64>, KvError> {
        let mut flags = 0;
        let mut at = seq;
        let mut previous = previous.cloned();
        loop {
            // `flags` counts the discontinuities of seqs `at..seq`; the count of `at` is wanted.
            if at == 0 {
                return Ok(Some(flags));
            }
            let Some(meta) = previous else {
                return Ok(get_json::<u64>(self.kv, &dseq_key(id, at))?.map(|count| count + flags));
            };
            if let Some(count) = meta.disc_seq_after() {
                return Ok(Some(count + flags));
            }
            flags += u64::from(meta.discontinuity);
            at -= 1;
            if seq - at >= window::CARRY_BACK || at == 0 {
                return Ok((at == 0).then_some(flags));
            }
            previous = self.meta(id, at - 1)?;
        }
    }

    /// `EXT-X-DISCONTINUITY-SEQUENCE` for a window that starts at `seq`, whose meta (as a walk
    /// filled it in) is `first` when read; `None` when the count is gone because retention is
    /// deleting `seq` right now (the caller walks again).
    pub(super) fn disc_seq_at(&self, id: &StreamId, seq: u64, first: Option<&SegmentMeta>) -> Result<Option<u64>, KvError> {
        if let Some(count) = first.and_then(|meta| meta.disc_seq) {
            return Ok(Some(count));
        }
        if seq == 0 {
            return Ok(Some(0));
        }
        if let Some(count) = get_json(self.kv, &dseq_key(id, seq))? {
            return Ok(Some(count));
        }
        let Some(meta) = self.sealed_meta(id, seq)? else {
            return Ok(None);
        };
        if let Some(count) = meta.disc_seq {
            return Ok(Some(count));
        }
        // A stream stored before metas carried counts: its shared list, as it always was.
        Ok(Some(self.breaks(id)?.count_before(seq)))
    }

    /// What a playlist shows now; `None` for an unknown or entirely expired stream. Expired
    /// segments met on the way are deleted (so storage stays bounded after uploads stop).
    pub fn view(&self, id: &StreamId, now_ms: i64) -> Result<Option<StreamView>, KvError> {
        let Some(record) = self.record(id)? else {
            return Ok(None);
        };
        self.view_of(id, &record, now_ms)
    }

    /// [`Streams::view`] with the stream record already read. Walks a second time only when
    /// retention deleted the first listed segment while this walk read it (see the module doc).
    pub(super) fn view_of(&self, id: &StreamId, record: &StreamRecord, now_ms: i64) -> Result<Option<StreamView>, KvError> {
        match self.view_once(id, record, now_ms)? {
            Some(view) => Ok(view),
            None => Ok(self.view_once(id, record, now_ms)?.flatten()),
        }
    }

    /// One walk of [`Streams::view_of`]; `None` when the first listed segment's count is gone.
    pub(super) fn view_once(&self, id: &StreamId, record: &StreamRecord, now_ms: i64) -> Result<Option<Option<StreamView>>, KvError> {
        if self.config.retention != Retention::Forever {
            return self.window_once(id, record, now_ms);
        }
        let head = self.head(id)?;
        let tail = self.tail(id)?;
        let mut source = Source::new(self, id);
        let walk = window::walk(&mut source, head, tail, self.config.retention, now_ms, Extent::Everything)?;
        let batch = walk.expired.len().min(RETENTION_BATCH);
        let batch_head = walk.expired.get(batch).map_or(walk.new_head(), |m| m.seq);
        self.delete_expired(id, head, &walk.expired[..batch], batch_head)?;
        let disc_seq = match walk.live.first() {
            Some(first) => match self.disc_seq_at(id, first.seq, Some(first))? {
                Some(count) => count,
                None => return Ok(None),
            },
            None => 0,
        };
        let end = self.end_marker(id)?;
        Ok(Some(StreamView::assemble(
            record,
            disc_seq,
            end.as_ref(),
            walk.live,
            self.config.retention,
            self.config.idle_ms,
            now_ms,
        )))
    }

    /// [`Streams::view_once`] for a sliding window (issue 11): the window read from its newest
    /// segment backwards ([`window::walk_window`]), then one capped retention batch from the
    /// head up to the window's start, so a request reads what it lists (at most
    /// [`window::MAX_WINDOW_SEGMENTS`]) plus a constant, never the expired segments still stored
    /// below the window nor segments older than the newest `MAX_WINDOW_SEGMENTS`.
    pub(super) fn window_once(&self, id: &StreamId, record: &StreamRecord, now_ms: i64) -> Result<Option<Option<StreamView>>, KvError> {
        let head = self.head(id)?;
        let tail = self.tail(id)?;
        let run = window::walk_window(&mut Source::new(self, id), head, tail, self.config.retention, now_ms)?;
        // Then one retention batch below the window's start (or of expired segments, when
        // nothing is listed).
        self.retain_from(id, head, tail, now_ms, run.floor)?;
        let disc_seq = match (run.live.first(), run.count_from) {
            (None, _) => 0,
            (Some(first), None) => match self.disc_seq_at(id, first.seq, Some(first))? {
                Some(count) => count,
                None => return Ok(None),
            },
            (Some(_), Some((seq, flags))) => match self.disc_seq_at(id, seq, None)? {
                Some(count) => count + flags,
                None => return Ok(None),
            },
        };
        let end = self.end_marker(id)?;
        Ok(Some(StreamView::assemble(record, disc_seq, end.as_ref(), run.live, self.config.retention, self.config.idle_ms, now_ms)))
    }

    /// Segment `seq` as the open segment: its unbroken run of parts from part 0.
    pub fn open_segment(&self, id: &StreamId, seq: u64) -> Result<OpenSegment, KvError> {
        let mut parts = Vec::new();
        for part in 0..MAX_PARTS {
            match self.part_meta(id, seq, part)? {
                Some(meta) => parts.push(meta),
                None => break,
            }
        }
        Ok(OpenSegment { seq, parts })
    }

    /// The live edge of v2 stream `id`; `None` for an unknown, v1 or entirely expired stream,
    /// or one with no sealed segment yet.
    pub fn live_edge(&self, id: &StreamId, now_ms: i64) -> Result<Option<LiveEdge>, KvError> {
        let Some(record) = self.record(id)? else {
            return Ok(None);
        };
        if record.part_target_ms.is_none() {
            return Ok(None);
        }
        let Some(last) = self.run_last(id, now_ms)? else {
            return Ok(None);
        };
        let end = self.end_marker(id)?;
        let state = if rules::is_ended(&last, end.as_ref(), now_ms, self.config.idle_ms) { State::Ended } else { State::Live };
        let open = match state {
            State::Live => self.open_segment(id, last.seq + 1)?,
            State::Ended => OpenSegment { seq: last.seq + 1, parts: Vec::new() },
        };
        Ok(Some(LiveEdge { record, last, open, state }))
    }

    /// The stored segment `seq` and where its bytes are; `None` when missing or expired.
    pub fn chunk(&self, id: &StreamId, seq: u64, now_ms: i64) -> Result<Option<(SegmentMeta, Media)>, KvError> {
        let Some(meta) = self.sealed_meta(id, seq)? else {
            return Ok(None);
        };
        if self.config.retention.is_expired(meta.stored_ms, now_ms) {
            return Ok(None);
        }
        let media = Media { len: meta.len, keys: body_keys(id, &meta) };
        Ok(Some((meta, media)))
    }

    /// Every segment a playlist lists now, given-up seqs left out, as one body: the stream's
    /// recording as far as it is stored (`GET /download/{stream}.ts`). The listed segments'
    /// metas and their keys only; the bytes are read one value at a time as they are sent.
    /// `None` for an unknown or entirely expired stream.
    pub fn recording(&self, id: &StreamId, now_ms: i64) -> Result<Option<(StreamView, Media)>, KvError> {
        let Some(view) = self.view(id, now_ms)? else {
            return Ok(None);
        };
        let mut media = Media { len: 0, keys: Vec::new() };
        for meta in view.segments.iter().filter(|m| !m.gap) {
            media.len += meta.len;
            media.keys.extend(body_keys(id, meta));
        }
        Ok(Some((view, media)))
    }

    /// The stored part `part` of segment `seq` and where its bytes are; `None` when missing or
    /// expired.
    pub fn part_chunk(&self, id: &StreamId, seq: u64, part: u32, now_ms: i64) -> Result<Option<Media>, KvError> {
        let Some(meta) = self.part_meta(id, seq, part)? else {
            return Ok(None);
        };
        if self.config.retention.is_expired(meta.stored_ms, now_ms) {
            return Ok(None);
        }
        let keys = (0..meta.slices).map(|slice| BodyKey::whole(part_slice_key(id, seq, part, meta.sha1_prefix(), slice))).collect();
        Ok(Some(Media { len: meta.len, keys }))
    }

    /// [`Streams::part_chunk`], and when the part's own record is gone, the part as its sealed
    /// segment's meta lists it (a commit retires the part records of a segment that has left
    /// the part window, `Streams::retire_parts`): from its folded body (the byte range the seal's
    /// part lengths put it at) or, for a segment sealed before folding, its own slices. One read
    /// more, so only for a request that missed the part record already.
    pub fn sealed_part_chunk(&self, id: &StreamId, seq: u64, part: u32, now_ms: i64) -> Result<Option<Media>, KvError> {
        if let Some(found) = self.part_chunk(id, seq, part, now_ms)? {
            return Ok(Some(found));
        }
        let Some(sealed) = self.sealed_meta(id, seq)? else {
            return Ok(None);
        };
        let Some(listed) = sealed.ll_parts.get(part as usize) else {
            return Ok(None);
        };
        if sealed.gap || self.config.retention.is_expired(sealed.stored_ms, now_ms) {
            return Ok(None);
        }
        let keys = if sealed.folded {
            let start: u64 = sealed.ll_parts[..part as usize].iter().map(|p| p.len).sum();
            folded_range(id, &sealed, start, start + listed.len)
        } else {
            (0..listed.slices).map(|slice| BodyKey::whole(part_slice_key(id, seq, part, &listed.sha1, slice))).collect()
        };
        Ok(Some(Media { len: listed.len, keys }))
    }

    /// Reads a body part (for streaming a chunk).
    pub fn part(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.kv.get(key)
    }
}

/// The live edge of a v2 stream: what a blocking request decides from, read cheaply (the hints,
/// a probe or two, the open segment's parts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveEdge {
    pub record: StreamRecord,
    /// The last segment of the listed run.
    pub last: SegmentMeta,
    /// While live: the segment after it, with its unbroken run of parts.
    pub open: OpenSegment,
    pub state: State,
}

impl LiveEdge {
    pub fn edge(&self) -> ll::Edge {
        ll::Edge {
            last_seq: self.last.seq,
            last_parts: self.last.ll_parts.len() as u32,
            open_parts: self.open.parts.len() as u32,
        }
    }

    /// When the part after the newest one is expected (Unix ms): the newest part's stored time
    /// plus its duration, or, before the open segment's first part, the last segment's.
    pub fn next_part_expected_ms(&self) -> i64 {
        match self.open.parts.last() {
            Some(part) => part.stored_ms + i64::from(part.duration_ms),
            None => {
                let last_part = self.last.ll_parts.last().map_or(0, |p| p.duration_ms);
                self.last.stored_ms + i64::from(last_part)
            }
        }
    }
}

/// The keys of a stored segment's body, in order: its own slices (a v1 upload, or a v2 commit's
/// folded parts), or its parts' slices (sealed before folding).
fn body_keys(id: &StreamId, meta: &SegmentMeta) -> Vec<BodyKey> {
    if meta.is_part_built() && !meta.folded {
        let mut keys = Vec::with_capacity(meta.parts as usize);
        for (n, part) in meta.ll_parts.iter().enumerate() {
            keys.extend((0..part.slices).map(|slice| BodyKey::whole(part_slice_key(id, meta.seq, n as u32, &part.sha1, slice))));
        }
        keys
    } else {
        (0..meta.parts).map(|slice| BodyKey::whole(segment_slice_key(id, meta.seq, meta.sha1_prefix(), slice))).collect()
    }
}

/// Where a stored body's bytes are, in order: `len` bytes in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub len: u64,
    pub keys: Vec<BodyKey>,
}

/// One value of a stored body: all of it, or the byte range `start..end` of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyKey {
    pub key: String,
    pub range: Option<(usize, usize)>,
}

impl BodyKey {
    pub fn whole(key: String) -> Self {
        BodyKey { key, range: None }
    }

    /// The bytes this key stands for, out of the value read; `None` when the value is shorter
    /// than the range (it cannot be this body's).
    pub fn take(&self, mut value: Vec<u8>) -> Option<Vec<u8>> {
        match self.range {
            None => Some(value),
            Some((start, end)) if start <= end && end <= value.len() => {
                value.truncate(end);
                value.drain(..start);
                Some(value)
            }
            Some(_) => None,
        }
    }
}

/// The keys (with ranges) that hold bytes `start..end` of sealed segment `meta`'s folded body,
/// whose slices are [`PART_LEN`] bytes each but the last.
fn folded_range(id: &StreamId, meta: &SegmentMeta, start: u64, end: u64) -> Vec<BodyKey> {
    let slice_len = PART_LEN as u64;
    let mut keys = Vec::new();
    let mut at = start;
    while at < end {
        let slice = at / slice_len;
        let from = at - slice * slice_len;
        let to = (end - slice * slice_len).min(slice_len);
        keys.push(BodyKey {
            key: segment_slice_key(id, meta.seq, meta.sha1_prefix(), slice as u32),
            range: Some((from as usize, to as usize)),
        });
        at = slice * slice_len + to;
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(len: u64) -> SegmentMeta {
        let mut meta = SegmentMeta::new_gap(7, 2000, 0, 0);
        meta.gap = false;
        meta.len = len;
        meta.sha1 = "0123456789abcdef".into();
        meta
    }

    #[test]
    fn a_folded_range_spans_slices_and_covers_exactly_its_bytes() {
        let id = StreamId::parse("0123456789abcdef0123456789abcdef01234567").unwrap();
        let meta = sealed(2 * PART_LEN as u64 + 10);
        let keys = folded_range(&id, &meta, PART_LEN as u64 - 5, 2 * PART_LEN as u64 + 3);
        let ranges: Vec<_> = keys.iter().map(|k| (k.key.rsplit('/').next().unwrap().to_owned(), k.range.unwrap())).collect();
        assert_eq!(ranges, vec![("0".into(), (PART_LEN - 5, PART_LEN)), ("1".into(), (0, PART_LEN)), ("2".into(), (0, 3))]);
        let keys = folded_range(&id, &meta, 10, 20);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].range, Some((10, 20)));
        assert!(folded_range(&id, &meta, 20, 20).is_empty());
        assert_eq!(BodyKey { key: String::new(), range: Some((2, 4)) }.take(b"abc".to_vec()), None);
        assert_eq!(BodyKey { key: String::new(), range: Some((1, 3)) }.take(b"abc".to_vec()), Some(b"bc".to_vec()));
        assert_eq!(BodyKey::whole(String::new()).take(b"abc".to_vec()), Some(b"abc".to_vec()));
    }
}
