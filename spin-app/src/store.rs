//! Streams in the key-value store: storing a segment, ending a stream, reading what a playlist
//! lists, and retention — correct without transactions and without listing keys.
//!
//! # Key layout (`{id}` is the public stream id, never the secret)
//!
//! | key | value | written |
//! | --- | --- | --- |
//! | `seg/{id}/{seq}/{sha1-12}/{part}` | body bytes, parts of <= 1 MiB | before the meta |
//! | `seg/{id}/{seq}/meta` | JSON [`SegmentMeta`] | last: the commit point of a segment |
//! | `stream/{id}` | JSON [`StreamRecord`] `{target_s, created_ms}` | once, with the first segment |
//! | `head/{id}` | JSON [`HeadMark`] `{first_seq}` | by retention, before it deletes |
//! | `tail/{id}` | JSON [`TailHint`] `{next_seq}` | after each commit (a hint, may lag) |
//! | `breaks/{id}` | JSON [`Breaks`] `{before, seqs}` | when a segment starts a discontinuity |
//! | `end/{id}` | JSON [`EndMarker`] `{after_seq, at_ms}` | by `POST /ingest/{session}/end` |
//! | `page/{id}/{n}` | JSON array of the 64 metas of seqs `64n..64n+63` | retention 0 only, once all 64 exist |
//! | `lines/{id}/{len}/{n}` | the playlist lines (text) of seqs `len*n..len*n+len-1`, `len` 8, 64 or 512 | retention 0 only, by the request whose tail advance completes them |
//!
//! Pages keep playlist reads bounded for long `EVENT` streams (retention 0), whose playlist
//! lists every segment: 3600 segments cost 57 page reads instead of 3600 meta reads. A page is
//! immutable (metas never change and nothing is deleted without retention), so whoever writes
//! it writes the same bytes; a missing page only means reading its metas one by one.
//!
//! A lines block is what the renderer writes for its segments' metas
//! (`chalkstream_manifest::playlist::segment_lines`): it depends on nothing but those committed
//! metas and the stream id, so it is as immutable as a page, and racing writers write the same
//! bytes. A playlist GET of an `EVENT` stream copies blocks, largest first, instead of parsing
//! and formatting metas ([`Streams::playlist`]): 3600 segments cost 7 blocks of 512 and 2 of 8,
//! about 20 reads in all instead of 81, because each read through the host costs far more than
//! its bytes. The head lines, the state and the end are decided per request as before. The
//! request that moves the tail hint writes the blocks it completed (the one whose lost update
//! left the hint behind covers the same seqs again, so every completed block has a writer); a
//! block that is missing or does not check out (`check_lines`) only means taking the smaller
//! blocks or the metas under it.
//!
//! # Why no acknowledged segment goes missing
//!
//! - A segment is acknowledged only after its meta is written, and its meta is written only after
//!   all its parts. The part keys carry a prefix of the body's SHA-1, so two racing uploads of
//!   different bytes for one seq never mix their parts: the meta names the parts it commits.
//! - Metas are never rewritten: a retry with the same bytes answers `200` without writing, one
//!   with other bytes answers `409`. (Two *different* bodies racing for one unstored seq can both
//!   pass the check; the later meta wins. Only the secret's holder can cause that.)
//! - Nothing but retention deletes, and retention deletes only expired segments, walking from
//!   the head; it writes the new head before deleting, so a reader that finds a gap can tell a
//!   deletion (below the tail hint, or below a moved head) from the end of the run.
//! - The tail hint is computed by probing metas that exist, so a lost update only leaves it
//!   behind the truth, which costs readers a few extra probes, never a segment.
//! - `breaks` is append-only and re-checked: a writer reads it back after appending, and
//!   retention adds any discontinuity it is about to delete, so the discontinuity sequence stays
//!   right as the window slides.
//!
//! See `chalkstream_manifest::window` for how readers walk the run.

use crate::kv::{get_json, set_json, Kv, KvError};
use chalkstream_manifest::id::StreamId;
use chalkstream_manifest::ingest::SegmentHeaders;
use chalkstream_manifest::rules::{self, Config, Retention, RuleError};
use chalkstream_manifest::segment::{
    Breaks, EndMarker, HeadMark, SegmentMeta, StreamRecord, TailHint, PART_LEN,
};
use chalkstream_manifest::playlist;
use chalkstream_manifest::window::{self, EventView, Extent, LinesSource, MetaSource, Piece, State, StreamView};
use std::fmt;

/// At most this many expired segments are deleted per request; the next request continues.
const RETENTION_BATCH: usize = 64;
/// At most this many metas are probed when advancing the tail hint.
const TAIL_PROBE: u64 = 256;
/// Segments per page (`page/{id}/{n}`).
const PAGE_LEN: u64 = 64;
/// Sizes of lines blocks, smallest first; each is [`LINES_FAN`] of the one before.
const LINES_LENS: [u64; 3] = [8, 64, 512];
const LINES_FAN: u64 = 8;
/// Attempts to make an append to `breaks` stick against concurrent writers.
const BREAKS_ATTEMPTS: usize = 4;

fn meta_key(id: &StreamId, seq: u64) -> String {
    format!("seg/{id}/{seq}/meta")
}

fn part_key(id: &StreamId, seq: u64, sha1_prefix: &str, part: u32) -> String {
    format!("seg/{id}/{seq}/{sha1_prefix}/{part}")
}

fn stream_key(id: &StreamId) -> String {
    format!("stream/{id}")
}

fn head_key(id: &StreamId) -> String {
    format!("head/{id}")
}

fn tail_key(id: &StreamId) -> String {
    format!("tail/{id}")
}

fn breaks_key(id: &StreamId) -> String {
    format!("breaks/{id}")
}

fn end_key(id: &StreamId) -> String {
    format!("end/{id}")
}

fn page_key(id: &StreamId, page: u64) -> String {
    format!("page/{id}/{page}")
}

fn lines_key(id: &StreamId, len: u64, n: u64) -> String {
    format!("lines/{id}/{len}/{n}")
}

/// How a stored upload was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Newly stored (`201`).
    Created,
    /// The same bytes were already stored (`200`).
    AlreadyStored,
}

/// Why an upload was not stored.
#[derive(Debug)]
pub enum PutError {
    /// Different bytes are already stored under this seq (`409`).
    Conflict { seq: u64 },
    /// The upload breaks a stream rule (`400`, or `409` for a seq behind the window).
    Rule(RuleError),
    /// The store failed (`500`).
    Kv(KvError),
}

impl From<KvError> for PutError {
    fn from(e: KvError) -> Self {
        PutError::Kv(e)
    }
}

impl fmt::Display for PutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Conflict { seq } => write!(
                f,
                "segment {seq} is already stored with different bytes; a retry must send the same bytes, a new segment needs the next seq"
            ),
            PutError::Rule(e) => e.fmt(f),
            PutError::Kv(e) => e.fmt(f),
        }
    }
}

/// One stream's records in a store.
pub struct Streams<'a, K: Kv + ?Sized> {
    kv: &'a K,
    config: &'a Config,
}

/// Reads metas for the window walk; with pages on, from the page holding the seq when it exists.
struct Source<'s, 'a, K: Kv + ?Sized> {
    streams: &'s Streams<'a, K>,
    id: &'s StreamId,
    pages: bool,
    /// The last page looked up: its number and, if stored, its metas.
    page: Option<(u64, Option<Vec<SegmentMeta>>)>,
}

impl<'s, 'a, K: Kv + ?Sized> Source<'s, 'a, K> {
    fn new(streams: &'s Streams<'a, K>, id: &'s StreamId) -> Self {
        let pages = streams.config.retention == Retention::Forever;
        Source { streams, id, pages, page: None }
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
        self.streams.meta(self.id, seq)
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

/// A rendered playlist and what its response headers need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaylistText {
    pub text: String,
    pub state: State,
    pub target_s: u32,
}

impl<'a, K: Kv + ?Sized> Streams<'a, K> {
    pub fn new(kv: &'a K, config: &'a Config) -> Self {
        Streams { kv, config }
    }

    pub fn meta(&self, id: &StreamId, seq: u64) -> Result<Option<SegmentMeta>, KvError> {
        get_json(self.kv, &meta_key(id, seq))
    }

    /// Page `number`, if stored and well-formed.
    fn page(&self, id: &StreamId, number: u64) -> Result<Option<Vec<SegmentMeta>>, KvError> {
        let page: Option<Vec<SegmentMeta>> = get_json(self.kv, &page_key(id, number))?;
        Ok(page.filter(|metas| {
            metas.len() as u64 == PAGE_LEN
                && metas.iter().enumerate().all(|(i, m)| m.seq == number * PAGE_LEN + i as u64)
        }))
    }

    /// Block `n` of `len` segments' lines, if stored and it checks out.
    fn lines(&self, id: &StreamId, len: u64, n: u64) -> Result<Option<String>, KvError> {
        let Some(bytes) = self.kv.get(&lines_key(id, len, n))? else {
            return Ok(None);
        };
        Ok(String::from_utf8(bytes).ok().filter(|text| playlist::check_lines(id.as_str(), n * len, len, text)))
    }

    /// Writes the page that ends just below `tail`, if it is complete and not yet stored.
    fn write_page(&self, id: &StreamId, tail: u64) -> Result<(), KvError> {
        let Some(number) = (tail / PAGE_LEN).checked_sub(1) else {
            return Ok(());
        };
        let key = page_key(id, number);
        if self.kv.get(&key)?.is_some() {
            return Ok(());
        }
        let mut metas = Vec::with_capacity(PAGE_LEN as usize);
        for seq in number * PAGE_LEN..(number + 1) * PAGE_LEN {
            match self.meta(id, seq)? {
                Some(meta) => metas.push(meta),
                None => return Ok(()),
            }
        }
        set_json(self.kv, &key, &metas)
    }

    /// Writes the lines blocks that end in `(from, to]` (this request moved the tail hint from
    /// `from` to `to`), smaller sizes first so a larger block joins the smaller ones.
    fn write_lines(&self, id: &StreamId, from: u64, to: u64) -> Result<(), KvError> {
        for (level, len) in LINES_LENS.into_iter().enumerate() {
            for n in from / len..to / len {
                let key = lines_key(id, len, n);
                if self.kv.get(&key)?.is_some() {
                    continue;
                }
                let joined = match level.checked_sub(1).map(|below| LINES_LENS[below]) {
                    Some(small) => self.join_lines(id, small, n * LINES_FAN)?,
                    None => None,
                };
                let text = match joined {
                    Some(text) => text,
                    None => match self.metas(id, n * len, len)? {
                        Some(metas) => playlist::segment_lines(id.as_str(), &metas),
                        None => continue,
                    },
                };
                self.kv.set(&key, text.as_bytes())?;
            }
        }
        Ok(())
    }

    /// The [`LINES_FAN`] blocks of `len` from block `first` joined, if all are stored and check out.
    fn join_lines(&self, id: &StreamId, len: u64, first: u64) -> Result<Option<String>, KvError> {
        let mut joined = String::new();
        for n in first..first + LINES_FAN {
            match self.lines(id, len, n)? {
                Some(text) => joined.push_str(&text),
                None => return Ok(None),
            }
        }
        Ok(Some(joined))
    }

    /// The `len` committed metas from `first` (from pages where stored), or `None` if one is missing.
    fn metas(&self, id: &StreamId, first: u64, len: u64) -> Result<Option<Vec<SegmentMeta>>, KvError> {
        let mut source = Source::new(self, id);
        let mut metas = Vec::with_capacity(len as usize);
        for seq in first..first + len {
            match source.meta(seq)? {
                Some(meta) => metas.push(meta),
                None => return Ok(None),
            }
        }
        Ok(Some(metas))
    }

    fn head(&self, id: &StreamId) -> Result<u64, KvError> {
        Ok(get_json::<HeadMark>(self.kv, &head_key(id))?.unwrap_or_default().first_seq)
    }

    fn tail(&self, id: &StreamId) -> Result<u64, KvError> {
        Ok(get_json::<TailHint>(self.kv, &tail_key(id))?.unwrap_or_default().next_seq)
    }

    fn breaks(&self, id: &StreamId) -> Result<Breaks, KvError> {
        Ok(get_json(self.kv, &breaks_key(id))?.unwrap_or_default())
    }

    fn end_marker(&self, id: &StreamId) -> Result<Option<EndMarker>, KvError> {
        get_json(self.kv, &end_key(id))
    }

    /// Stores segment `seq` of stream `id` (the flow in the crate's README: dedupe, stream record
    /// and target check, discontinuity, parts, commit, breaks, tail hint, retention).
    pub fn put_segment(
        &self,
        id: &StreamId,
        seq: u64,
        headers: &SegmentHeaders,
        body: &[u8],
        now_ms: i64,
    ) -> Result<Stored, PutError> {
        let sha1 = chalkstream_manifest::id::sha1_hex(body);
        if let Some(existing) = self.meta(id, seq)? {
            return self.answer_existing(id, &existing, &sha1);
        }
        // Below the head, or below the tail hint with no meta: committed once and deleted by
        // retention since (a late retry). Storing it again would ack a segment no playlist lists.
        let head = self.head(id)?;
        if seq < head || seq < self.tail(id)? {
            return Err(PutError::Rule(RuleError::BeforeWindow { seq, first_seq: head.max(seq + 1) }));
        }
        let record = self.stream_record(id, headers.duration_ms, now_ms)?;
        rules::check_target(headers.duration_ms, record.target_s).map_err(PutError::Rule)?;

        let end = self.end_marker(id)?;
        let previous = match seq.checked_sub(1) {
            Some(prev) => self.meta(id, prev)?,
            None => None,
        };
        let discontinuity = rules::starts_discontinuity(
            headers.discontinuity,
            seq,
            end.as_ref(),
            previous.as_ref(),
            now_ms,
            self.config.idle_ms,
        );
        let meta = SegmentMeta::new(seq, headers, discontinuity, body, now_ms);
        for (part, bytes) in body.chunks(PART_LEN).enumerate() {
            self.kv.set(&part_key(id, seq, meta.sha1_prefix(), part as u32), bytes)?;
        }
        // A racing upload may have committed meanwhile; never overwrite a commit.
        if let Some(existing) = self.meta(id, seq)? {
            if existing.sha1_prefix() != meta.sha1_prefix() {
                self.delete_parts(id, &meta)?;
            }
            return self.answer_existing(id, &existing, &sha1);
        }
        set_json(self.kv, &meta_key(id, seq), &meta)?;

        if meta.discontinuity {
            self.record_break(id, seq, head)?;
        }
        let tail = self.advance_tail(id, head)?;
        if self.config.retention == Retention::Forever {
            self.write_page(id, tail)?;
        }
        self.apply_retention(id, now_ms)?;
        Ok(Stored::Created)
    }

    /// The answer when `seq` already has a commit: the same bytes are a retry.
    fn answer_existing(&self, id: &StreamId, existing: &SegmentMeta, sha1: &str) -> Result<Stored, PutError> {
        if existing.sha1 != sha1 {
            return Err(PutError::Conflict { seq: existing.seq });
        }
        // A retry may follow a request that died after its commit: finish its bookkeeping.
        if existing.discontinuity {
            let head = self.head(id)?;
            self.record_break(id, existing.seq, head)?;
        }
        Ok(Stored::AlreadyStored)
    }

    /// The stream record, created from this segment when absent. Re-read after writing so two
    /// racing first segments most likely agree on the target.
    fn stream_record(&self, id: &StreamId, duration_ms: u32, now_ms: i64) -> Result<StreamRecord, KvError> {
        let key = stream_key(id);
        if let Some(record) = get_json(self.kv, &key)? {
            return Ok(record);
        }
        let record = StreamRecord { target_s: rules::target_duration_s(duration_ms), created_ms: now_ms };
        set_json(self.kv, &key, &record)?;
        Ok(get_json(self.kv, &key)?.unwrap_or(record))
    }

    /// Appends `seq` to the discontinuity list and reads it back, retrying when a concurrent
    /// writer's append replaced ours.
    fn record_break(&self, id: &StreamId, seq: u64, head: u64) -> Result<(), KvError> {
        for _ in 0..BREAKS_ATTEMPTS {
            let mut breaks = self.breaks(id)?;
            if breaks.contains(seq) {
                return Ok(());
            }
            breaks.insert(seq, head);
            set_json(self.kv, &breaks_key(id), &breaks)?;
        }
        Ok(())
    }

    /// Moves the tail hint forward over committed metas; returns the hint as this request left it.
    /// With retention 0, first writes the lines blocks the move completes.
    fn advance_tail(&self, id: &StreamId, head: u64) -> Result<u64, KvError> {
        let read = self.tail(id)?;
        let start = read.max(head);
        let mut next = start;
        while next - start < TAIL_PROBE && self.meta(id, next)?.is_some() {
            next += 1;
        }
        if next > read {
            if self.config.retention == Retention::Forever {
                self.write_lines(id, start, next)?;
            }
            set_json(self.kv, &tail_key(id), &TailHint { next_seq: next })?;
        }
        Ok(next.max(read))
    }

    /// Deletes expired segments from the head: records their discontinuities, writes the new
    /// head, then deletes parts and metas.
    fn apply_retention(&self, id: &StreamId, now_ms: i64) -> Result<(), KvError> {
        if self.config.retention == Retention::Forever {
            return Ok(());
        }
        let head = self.head(id)?;
        let tail = self.tail(id)?;
        let mut source = Source::new(self, id);
        let walk = window::walk(
            &mut source,
            head,
            tail,
            self.config.retention,
            now_ms,
            Extent::ExpiredOnly { max: RETENTION_BATCH },
        )?;
        self.delete_expired(id, head, &walk.expired, walk.new_head())
    }

    fn delete_expired(&self, id: &StreamId, head: u64, expired: &[SegmentMeta], new_head: u64) -> Result<(), KvError> {
        if expired.is_empty() || new_head <= head {
            return Ok(());
        }
        for meta in expired.iter().filter(|m| m.discontinuity) {
            self.record_break(id, meta.seq, head)?;
        }
        // Re-read so a slow request does not move the head back (a lost update is still
        // possible; readers tolerate a head that lags).
        if self.head(id)? < new_head {
            set_json(self.kv, &head_key(id), &HeadMark { first_seq: new_head })?;
        }
        for meta in expired {
            self.delete_parts(id, meta)?;
            self.kv.delete(&meta_key(id, meta.seq))?;
        }
        Ok(())
    }

    fn delete_parts(&self, id: &StreamId, meta: &SegmentMeta) -> Result<(), KvError> {
        for part in 0..meta.parts {
            self.kv.delete(&part_key(id, meta.seq, meta.sha1_prefix(), part))?;
        }
        Ok(())
    }

    /// What a playlist shows now; `None` for an unknown or entirely expired stream. Expired
    /// segments met on the way are deleted (so storage stays bounded after uploads stop).
    pub fn view(&self, id: &StreamId, now_ms: i64) -> Result<Option<StreamView>, KvError> {
        let Some(record) = get_json::<StreamRecord>(self.kv, &stream_key(id))? else {
            return Ok(None);
        };
        let head = self.head(id)?;
        let tail = self.tail(id)?;
        let mut source = Source::new(self, id);
        let walk = window::walk(&mut source, head, tail, self.config.retention, now_ms, Extent::Everything)?;
        let batch = walk.expired.len().min(RETENTION_BATCH);
        let batch_head = walk.expired.get(batch).map_or(walk.new_head(), |m| m.seq);
        self.delete_expired(id, head, &walk.expired[..batch], batch_head)?;
        let breaks = self.breaks(id)?;
        let end = self.end_marker(id)?;
        Ok(StreamView::assemble(
            &record,
            &breaks,
            end.as_ref(),
            walk.live,
            self.config.retention,
            self.config.idle_ms,
            now_ms,
        ))
    }

    /// The playlist of stream `id` now; `None` for an unknown or entirely expired stream. An
    /// `EVENT` playlist copies the stored lines of complete pages ([`window::walk_event`]); it
    /// is byte for byte what rendering the [`Streams::view`] gives, which is also the answer
    /// whenever the fast walk cannot tell the state.
    pub fn playlist(&self, id: &StreamId, now_ms: i64) -> Result<Option<PlaylistText>, KvError> {
        if self.config.retention == Retention::Forever {
            let Some(record) = get_json::<StreamRecord>(self.kv, &stream_key(id))? else {
                return Ok(None);
            };
            let head = self.head(id)?;
            let tail = self.tail(id)?;
            let run = window::walk_event(&mut Source::new(self, id), head, tail)?;
            let breaks = self.breaks(id)?;
            let end = self.end_marker(id)?;
            if let Some(view) = EventView::assemble(&record, &breaks, end.as_ref(), run, self.config.idle_ms, now_ms) {
                return Ok(Some(PlaylistText {
                    text: playlist::render_event(id.as_str(), &view),
                    state: view.state,
                    target_s: view.target_s,
                }));
            }
        }
        Ok(self.view(id, now_ms)?.map(|view| PlaylistText {
            text: playlist::render(id.as_str(), &view),
            state: view.state,
            target_s: view.target_s,
        }))
    }

    /// Marks the stream ended after its last stored segment. Returns that seq, or `None` when
    /// the stream has no (unexpired) segments.
    pub fn end(&self, id: &StreamId, now_ms: i64) -> Result<Option<u64>, KvError> {
        let head = self.head(id)?;
        let start = self.tail(id)?.max(head);
        let mut next = start;
        while self.meta(id, next)?.is_some() {
            next += 1;
        }
        let last = match next.checked_sub(1) {
            Some(last) if next > start => last,
            Some(last) if last >= head && self.meta(id, last)?.is_some() => last,
            _ => return Ok(None),
        };
        let last_meta = self.meta(id, last)?;
        if last_meta.is_none_or(|m| self.config.retention.is_expired(m.stored_ms, now_ms)) {
            return Ok(None);
        }
        if self.end_marker(id)?.is_some_and(|end| end.after_seq >= last) {
            return Ok(Some(last));
        }
        set_json(self.kv, &end_key(id), &EndMarker { after_seq: last, at_ms: now_ms })?;
        if next > self.tail(id)? {
            if self.config.retention == Retention::Forever {
                self.write_lines(id, start, next)?;
            }
            set_json(self.kv, &tail_key(id), &TailHint { next_seq: next })?;
        }
        Ok(Some(last))
    }

    /// The stored segment `seq` and the keys of its body parts, in order; `None` when missing
    /// or expired.
    pub fn chunk(&self, id: &StreamId, seq: u64, now_ms: i64) -> Result<Option<(SegmentMeta, Vec<String>)>, KvError> {
        let Some(meta) = self.meta(id, seq)? else {
            return Ok(None);
        };
        if self.config.retention.is_expired(meta.stored_ms, now_ms) {
            return Ok(None);
        }
        let keys = (0..meta.parts).map(|part| part_key(id, seq, meta.sha1_prefix(), part)).collect();
        Ok(Some((meta, keys)))
    }

    /// Reads a body part (for streaming a chunk).
    pub fn part(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.kv.get(key)
    }
}
