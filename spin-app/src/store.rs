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
//! | `dseq/{id}/{seq}` | JSON number: discontinuities before `seq` | by retention, before it deletes `seq - 1`, when `seq` is not deleted with it |
//! | `breaks/{id}` | JSON [`Breaks`] `{before, seqs}` | never now: read only for streams stored before counts were carried |
//! | `end/{id}` | JSON [`EndMarker`] `{after_seq, at_ms}` | by `POST /ingest/{session}/end` |
//! | `page/{id}/{n}` | JSON array of the 64 metas of seqs `64n..64n+63` | retention 0 only, once all 64 exist |
//! | `lines/{id}/{len}/{n}` | the playlist lines (text) of seqs `len*n..len*n+len-1`, `len` 8, 64 or 512 | retention 0 only, by the request whose tail advance completes them |
//! | `gap/{id}/{seq}` | JSON [`SegmentMeta`] with `gap: true`: a seq the broadcaster gave up | by `POST …/{seq}/gap`, before it writes the same meta as the seq's commit point ([`Streams::put_gap`]) |
//! | `due/{minute}/{shard}`, `sweep/next`, `stream/{id}` field `due_minute` | the sweep index ([`crate::sweep`]) | by uploads whose due minute moved, and by the sweep |
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
//! - A gap (issue 11: a seq given up) and a late upload of the same seq never both win: each
//!   writes its own key (the gap `gap/{id}/{seq}`, the upload its meta) and then reads the
//!   other's, and whoever sees the other yields ([`Streams::put_gap`]); an upload that yields
//!   writes the gap's meta back over its own. So an acknowledged segment is never replaced by a
//!   gap, nor a recorded gap by a segment.
//! - Nothing but retention deletes, and retention deletes only segments no window lists any more
//!   (expired ones, and those below a sliding window's start: more than `MAX_WINDOW_SEGMENTS`
//!   below the tail, or below the start a GET just walked), walking from the head; it writes the
//!   new head before deleting, so a reader that finds a gap can tell a deletion (below the tail
//!   hint, or below a moved head) from the end of the run.
//! - The tail hint is computed by probing metas that exist, so a lost update only leaves it
//!   behind the truth, which costs readers a few extra probes, never a segment.
//! - The gap rule above needs one of the two hints past a deleted seq. A head and a tail that
//!   both moved back below deleted seqs (two slow writers' lost updates at once) would end the
//!   run at the first deleted seq, so both are narrowed: the tail is re-read right before it is
//!   written, and retention re-reads the head after deleting and puts its own back if an older
//!   one was written meanwhile (the race test saw 5 empty playlists in 60 runs before, 0 after).
//!   Without compare-and-swap the window cannot be closed, only made small.
//! - A commit point written after retention passed its seq (a slow twin of an upload that has
//!   expired and been deleted meanwhile) is taken back and answered `409`, so no record
//!   outlives its segment below every window.
//!
//! # Why the discontinuity and media sequences never go back
//!
//! `EXT-X-MEDIA-SEQUENCE` is the first listed seq; retention only moves the head forward
//! (a lost update of the head only makes readers walk from lower, over seqs that are gone or
//! expired), so the first listed seq of a later read is never lower.
//!
//! `EXT-X-DISCONTINUITY-SEQUENCE` is no shared list (`breaks` was one: a read-append-write that a
//! racing writer could undo, so the count could drop once retention passed the lost entry, and
//! that grew by an entry per discontinuity under retention 0 until it passed 1 MiB). It is a
//! count each seq gets as an immutable fact: the meta of seq `n` carries
//! [`SegmentMeta::disc_seq`], the count of discontinuities before `n`, computed at commit from
//! the meta of `n - 1` (its count plus its flag; `0` for seq 0). Metas never change, so by
//! induction every carried count is exact, and the count of a window is a pure function of its
//! first listed segment: no compare-and-swap is needed and nothing grows.
//!
//! A seq committed before its predecessor (out of order) carries no count. Readers then carry
//! the count along their walk (`window::walk` fills it in from the previous meta they read), so
//! it is missing only when the first listed segment's predecessor is gone — and only retention
//! deletes: before deleting `n - 1` it writes the count of `n` as `dseq/{id}/{n}` (unless `n` goes
//! in the same batch), a value fixed by immutable metas, so racing writers write the same bytes.
//! Retention stops a batch at a segment whose count it cannot tell, so no count is ever lost; it
//! deletes `dseq/{id}/{n}` right after the meta of `n`, and a reader that read the meta of `n`
//! just before and finds the count gone walks once more (the head has moved past `n`).
//! Per stream there is at most one live `dseq` key per run of deleted seqs, so storage stays
//! bounded by the retention window. A stream stored before counts existed (metas without
//! `disc_seq`) still reads its old `breaks` record.
//!
//! # The sweep: storage that empties itself (issue 10)
//!
//! Retention also runs for streams nobody requests: uploads register their stream in
//! `due/{minute}/{shard}` and every request, after its response, sweeps a bounded step
//! ([`crate::sweep`], whose module doc argues why a lost registration only delays). A visit is
//! [`Streams::sweep_stream`]: one retention batch, then, if neither the run nor the open segment
//! holds anything unexpired, the open segment's parts and every record of the stream,
//! `stream/{id}` last, after checking once more that nothing was stored after the run. So it
//! deletes nothing retention would keep, and an expired stream leaves nothing (the remainder
//! that is not reached is listed in ARCHITECTURE.md). Bound: an abandoned stream is gone within
//! `stream_retention` + 1 minute + the time to serve a request per 4 due streams. Cost: 1 read
//! (`sweep/next`) for a request that finds nothing due, 2 reads more per upload (3 reads and 2
//! writes more once a minute); a step with work visits at most 4 streams (measured over 200
//! abandoned streams: 6.3 reads and 3.6 writes per request on average, at most 83 and 69).
//!
//! See `chalkstream_manifest::window` for how readers walk the run.

use crate::kv::{get_json, set_json, Kv, KvError};
use chalkstream_manifest::id::{sha1_hex, StreamId};
use chalkstream_manifest::ingest::SegmentHeaders;
use chalkstream_manifest::ll::{self, LlView, OpenSegment};
use chalkstream_manifest::part::{PartHeaders, PartMeta, MAX_PARTS};
use chalkstream_manifest::rules::{self, Config, Retention, RuleError};
use chalkstream_manifest::segment::{
    Breaks, EndMarker, HeadMark, SegmentMeta, StreamRecord, TailHint, PART_LEN,
};
use chalkstream_manifest::playlist;
use chalkstream_manifest::window::{self, EventView, Extent, LinesSource, MetaSource, Piece, PlaylistKind, State, StreamView};
use std::fmt;

/// At most this many expired segments are deleted per request; the next request continues.
const RETENTION_BATCH: usize = 64;
/// At most this many metas are probed when advancing the tail hint.
const TAIL_PROBE: u64 = 256;
/// An upload (segment, part or commit) may name a seq at most this far past the start of the
/// unstored seqs (`max(head, tail)`); further ones get `429`. So nothing is ever stored beyond a
/// hole that no walk reaches: every walk past the tail stops within this many seqs, and retention,
/// which stops at a hole, leaves at most this many segments behind one.
pub const MAX_AHEAD: u64 = 64;
/// Segments per page (`page/{id}/{n}`).
const PAGE_LEN: u64 = 64;
/// Sizes of lines blocks, smallest first; each is [`LINES_FAN`] of the one before.
const LINES_LENS: [u64; 3] = [8, 64, 512];
const LINES_FAN: u64 = 8;

fn meta_key(id: &StreamId, seq: u64) -> String {
    format!("seg/{id}/{seq}/meta")
}

fn part_key(id: &StreamId, seq: u64, sha1_prefix: &str, part: u32) -> String {
    format!("seg/{id}/{seq}/{sha1_prefix}/{part}")
}

/// The meta of part `part` of segment `seq` (v2): its commit point.
fn part_meta_key(id: &StreamId, seq: u64, part: u32) -> String {
    format!("seg/{id}/{seq}/p{part}")
}

/// Slice `slice` of part `part` of segment `seq`, named by the part body's SHA-1 prefix.
fn part_slice_key(id: &StreamId, seq: u64, part: u32, sha1_prefix: &str, slice: u32) -> String {
    format!("seg/{id}/{seq}/p{part}/{sha1_prefix}/{slice}")
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

/// The count of discontinuities before `seq`, kept for a seq whose predecessor retention deleted.
fn dseq_key(id: &StreamId, seq: u64) -> String {
    format!("dseq/{id}/{seq}")
}

/// A gap declared for `seq` (issue 11): the gap's meta, written before the gap tries the commit
/// point, so an upload of `seq` that commits meanwhile finds it (see [`Streams::put_gap`]).
fn gap_key(id: &StreamId, seq: u64) -> String {
    format!("gap/{id}/{seq}")
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

/// Why an upload or a commit was not stored.
#[derive(Debug)]
pub enum PutError {
    /// Different bytes are already stored under this seq (`409`).
    Conflict { seq: u64 },
    /// Different bytes are already stored under this part (`409`).
    PartConflict { seq: u64, part: u32 },
    /// The segment is sealed and this part is not in it (`409`).
    SealedWithout { seq: u64, part: u32 },
    /// A whole segment for a seq sealed from parts (`409`).
    SealedFromParts { seq: u64 },
    /// A commit of a segment sealed otherwise: as a whole segment (`parts` 0) or from another
    /// number of parts (`409`).
    SealedOtherwise { seq: u64, parts: usize },
    /// A part for a stream that was started with whole segments (`409`).
    WholeSegmentStream,
    /// The part names another part target or target duration than the stream's (`409`).
    TargetsDiffer { part_target_ms: u32, target_s: u32 },
    /// A commit names a part that is not stored (`409`).
    MissingPart { seq: u64, part: u32 },
    /// A commit leaves out a stored part (`409`).
    UncountedPart { seq: u64, part: u32 },
    /// The broadcaster gave this seq up (a gap is stored under it): no upload or commit can fill
    /// it any more (`409`).
    GivenUp { seq: u64 },
    /// A gap for a seq that already holds a segment (`409`: the segment stays; a client takes it
    /// as acknowledged).
    SegmentHolds { seq: u64 },
    /// The seq is [`MAX_AHEAD`] or more past `next`, the first seq the stream has not stored
    /// (`429`: upload the seqs before it first, then retry).
    TooFarAhead { seq: u64, next: u64 },
    /// The stream's unstored seqs could not be found within the probe limit (`429`: retry; each
    /// try moves the tail hint on).
    CatchingUp,
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
            PutError::PartConflict { seq, part } => write!(
                f,
                "part {part} of segment {seq} is already stored with different bytes; a retry must send the same bytes"
            ),
            PutError::SealedWithout { seq, part } => write!(
                f,
                "segment {seq} is already sealed without part {part}; send the parts of the next segment under the next seq"
            ),
            PutError::SealedFromParts { seq } => {
                write!(f, "segment {seq} is already sealed from parts; a whole segment cannot replace it")
            }
            PutError::SealedOtherwise { seq, parts: 0 } => {
                write!(f, "segment {seq} is already stored as a whole segment, not from parts")
            }
            PutError::SealedOtherwise { seq, parts } => {
                write!(f, "segment {seq} is already sealed from {parts} parts")
            }
            PutError::WholeSegmentStream => f.write_str(
                "this stream was started with whole segments (wire contract v1); start a new session to upload parts",
            ),
            PutError::TargetsDiffer { part_target_ms, target_s } => write!(
                f,
                "this stream's part target is {} s and its target duration {target_s} s (fixed by its first part); send those",
                chalkstream_manifest::decimal::format_millis(u64::from(*part_target_ms))
            ),
            PutError::MissingPart { seq, part } => {
                write!(f, "part {part} of segment {seq} is not stored; upload it before committing")
            }
            PutError::UncountedPart { seq, part } => write!(
                f,
                "part {part} of segment {seq} is stored, so X-Parts must count it (X-Parts: {})",
                part + 1
            ),
            PutError::GivenUp { seq } => write!(
                f,
                "segment {seq} was given up by the broadcaster (a gap is recorded for it); nothing can be stored under it any more, send new media under the next seq"
            ),
            PutError::SegmentHolds { seq } => write!(
                f,
                "segment {seq} is already stored, so it cannot be given up; it stays in the playlist (count it as acknowledged)"
            ),
            PutError::TooFarAhead { seq, next } => write!(
                f,
                "segment {seq} is too far ahead: this stream has stored every segment before {next}, and accepts at most {MAX_AHEAD} seqs past that; upload the segments before it first, then retry"
            ),
            PutError::CatchingUp => f.write_str("the server is still catching up with this stream's uploads; retry"),
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

    pub(crate) fn end_marker(&self, id: &StreamId) -> Result<Option<EndMarker>, KvError> {
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
            return answer_existing(&existing, &sha1);
        }
        // Below the head, or below the tail hint with no meta: committed once and deleted by
        // retention since (a late retry). Storing it again would ack a segment no playlist lists.
        let head = self.head(id)?;
        let tail = self.tail(id)?;
        if seq < head || seq < tail {
            // A racing identical upload may have committed this seq and moved the tail since the
            // read above: that makes this a retry (`200`), not a seq behind the window.
            if let Some(existing) = self.meta(id, seq)? {
                return answer_existing(&existing, &sha1);
            }
            return Err(PutError::Rule(RuleError::BeforeWindow { seq, first_seq: head.max(seq + 1) }));
        }
        check_ahead(seq, head, tail)?;
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
        let mut meta = SegmentMeta::new(seq, headers, discontinuity, body, now_ms);
        meta.disc_seq = self.carried(id, seq, previous.as_ref())?;
        for (part, bytes) in body.chunks(PART_LEN).enumerate() {
            self.kv.set(&part_key(id, seq, meta.sha1_prefix(), part as u32), bytes)?;
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

        let tail = self.advance_tail(id, head)?;
        if self.config.retention == Retention::Forever {
            self.write_page(id, tail)?;
        }
        self.apply_retention(id, now_ms, 0)?;
        Ok(Stored::Created)
    }

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
        if let Some(existing) = self.meta(id, seq)? {
            return answer_existing_gap(&existing);
        }
        let head = self.head(id)?;
        let tail = self.tail(id)?;
        if seq < head || seq < tail {
            if let Some(existing) = self.meta(id, seq)? {
                return answer_existing_gap(&existing);
            }
            return Err(PutError::Rule(RuleError::BeforeWindow { seq, first_seq: head.max(seq + 1) }));
        }
        check_ahead(seq, head, tail)?;
        let record: Option<StreamRecord> = get_json(self.kv, &stream_key(id))?;
        let duration_ms = match (duration_ms, record) {
            (Some(ms), Some(record)) => {
                rules::check_target(ms, record.target_s).map_err(PutError::Rule)?;
                ms
            }
            (Some(ms), None) => ms,
            (None, Some(record)) => record.target_s.saturating_mul(1000),
            (None, None) => 1000,
        };
        let previous = match seq.checked_sub(1) {
            Some(prev) => self.meta(id, prev)?,
            None => None,
        };
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
        let tail = self.advance_tail(id, head)?;
        if self.config.retention == Retention::Forever {
            self.write_page(id, tail)?;
        }
        self.apply_retention(id, now_ms, 0)?;
        Ok(if retry { Stored::AlreadyStored } else { Stored::Created })
    }

    /// Called by an upload or commit right after it wrote the meta of `seq`: when a gap was
    /// declared for `seq` meanwhile, puts the gap's meta back over it and returns `true` (the
    /// caller answers `409`). See [`Streams::put_gap`] for why this settles the race.
    fn yield_to_gap(&self, id: &StreamId, seq: u64) -> Result<bool, KvError> {
        let Some(gap) = get_json::<SegmentMeta>(self.kv, &gap_key(id, seq))? else {
            return Ok(false);
        };
        set_json(self.kv, &meta_key(id, seq), &gap)?;
        Ok(true)
    }

    /// Whether retention's head has passed `seq` since this request read it. Checked right after a
    /// commit point is written, before anything is acknowledged: a slow twin of an upload whose
    /// segment has expired and been deleted meanwhile (its head written first, then its keys
    /// deleted) would otherwise leave a record that outlives its segment, below every window.
    fn behind_head(&self, id: &StreamId, seq: u64) -> Result<bool, KvError> {
        Ok(self.head(id)? > seq)
    }

    /// The stream record, created from this segment when absent. Re-read after writing so two
    /// racing first segments most likely agree on the target.
    fn stream_record(&self, id: &StreamId, duration_ms: u32, now_ms: i64) -> Result<StreamRecord, KvError> {
        let key = stream_key(id);
        if let Some(record) = get_json(self.kv, &key)? {
            return Ok(record);
        }
        let record = StreamRecord { target_s: rules::target_duration_s(duration_ms), created_ms: now_ms, part_target_ms: None };
        set_json(self.kv, &key, &record)?;
        Ok(get_json(self.kv, &key)?.unwrap_or(record))
    }

    /// The count of discontinuities before `seq` that its meta carries (see the module doc):
    /// from the previous meta, or kept by retention when that one is deleted; `None` when
    /// neither tells (an upload out of order).
    ///
    /// A previous meta without a count of its own (committed before its predecessor) is looked
    /// through, up to [`window::CARRY_BACK`] metas back, so such metas do not pass their lack on:
    /// every meta without a count then has one that has a count (or a kept `dseq`) within
    /// `CARRY_BACK` below it, because no upload is accepted [`MAX_AHEAD`] or more past the first
    /// unstored seq. That is what lets a sliding window, read backwards
    /// ([`window::walk_window`]), carry the count to its first segment in at most that many reads.
    fn carried(&self, id: &StreamId, seq: u64, previous: Option<&SegmentMeta>) -> Result<Option<u64>, KvError> {
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
    fn disc_seq_at(&self, id: &StreamId, seq: u64, first: Option<&SegmentMeta>) -> Result<Option<u64>, KvError> {
        if let Some(count) = first.and_then(|meta| meta.disc_seq) {
            return Ok(Some(count));
        }
        if seq == 0 {
            return Ok(Some(0));
        }
        if let Some(count) = get_json(self.kv, &dseq_key(id, seq))? {
            return Ok(Some(count));
        }
        if self.meta(id, seq)?.is_none() {
            return Ok(None);
        }
        // A stream stored before metas carried counts: its shared list, as it always was.
        Ok(Some(self.breaks(id)?.count_before(seq)))
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
            // Re-read right before writing: a slow request must not move the hint back over
            // segments a faster one has seen since (and retention may have deleted since).
            if self.tail(id)? < next {
                set_json(self.kv, &tail_key(id), &TailHint { next_seq: next })?;
            }
        }
        Ok(next.max(read))
    }

    /// Deletes expired segments from the head: records their discontinuities, writes the new
    /// head, then deletes parts and metas.
    ///
    /// Every seq below `floor` goes too, expired or not, and so does every seq more than
    /// [`window::MAX_WINDOW_SEGMENTS`] below the tail hint: it is below the start of every window
    /// from now on (the count cap, or a window that starts after its newest expired segment), so
    /// deleting it hides nothing a playlist could list, and a stream stores at most about that
    /// many segments plus what one batch per request has not reached yet.
    fn apply_retention(&self, id: &StreamId, now_ms: i64, floor: u64) -> Result<(), KvError> {
        if self.config.retention == Retention::Forever {
            return Ok(());
        }
        let head = self.head(id)?;
        let tail = self.tail(id)?;
        self.retain_from(id, head, tail, now_ms, floor)
    }

    /// [`Streams::apply_retention`] with the hints already read.
    fn retain_from(&self, id: &StreamId, head: u64, tail: u64, now_ms: i64, floor: u64) -> Result<(), KvError> {
        let mut source = Source::new(self, id);
        let walk = window::walk(
            &mut source,
            head,
            tail,
            self.config.retention,
            now_ms,
            Extent::BelowWindow { max: RETENTION_BATCH, floor: floor.max(tail.saturating_sub(window::MAX_WINDOW_SEGMENTS as u64)) },
        )?;
        self.delete_expired(id, head, &walk.expired, walk.new_head())
    }

    /// Deletes `expired` (a walk's, oldest first, counts filled in along it) and moves the head
    /// to `new_head`. First keeps the count of each seq whose predecessor goes and who does not
    /// (`dseq/{id}/{seq}`); stops before a segment whose count it cannot tell.
    fn delete_expired(&self, id: &StreamId, head: u64, expired: &[SegmentMeta], new_head: u64) -> Result<(), KvError> {
        if expired.is_empty() || new_head <= head {
            return Ok(());
        }
        let mut after = Vec::with_capacity(expired.len());
        let mut new_head = new_head;
        for (i, meta) in expired.iter().enumerate() {
            let follows = i > 0 && expired[i - 1].seq + 1 == meta.seq;
            let own = match meta.disc_seq {
                Some(count) => Some(count),
                None if follows => after.last().copied(),
                None => get_json(self.kv, &dseq_key(id, meta.seq))?,
            };
            let Some(own) = own else {
                new_head = meta.seq;
                break;
            };
            after.push(own + u64::from(meta.discontinuity));
        }
        let expired = &expired[..after.len()];
        if expired.is_empty() || new_head <= head {
            return Ok(());
        }
        for (i, meta) in expired.iter().enumerate() {
            if expired.get(i + 1).is_none_or(|next| next.seq != meta.seq + 1) {
                set_json(self.kv, &dseq_key(id, meta.seq + 1), &after[i])?;
            }
        }
        // Re-read so a slow request does not move the head back (a lost update is still
        // possible; readers tolerate a head that lags).
        if self.head(id)? < new_head {
            set_json(self.kv, &head_key(id), &HeadMark { first_seq: new_head })?;
        }
        for (i, meta) in expired.iter().enumerate() {
            self.delete_parts(id, meta)?;
            self.kv.delete(&meta_key(id, meta.seq))?;
            if i == 0 || expired[i - 1].seq + 1 != meta.seq {
                self.kv.delete(&dseq_key(id, meta.seq))?;
            }
        }
        // A slower request may have written an older head over ours while we deleted: the
        // hints would then point below segments that are gone, where a walk cannot tell a
        // deletion from the end of the run. Put ours back (this narrows the lost update to a
        // write landing after this read; readers still re-read the head at a gap).
        if self.head(id)? < new_head {
            set_json(self.kv, &head_key(id), &HeadMark { first_seq: new_head })?;
        }
        Ok(())
    }

    fn delete_parts(&self, id: &StreamId, meta: &SegmentMeta) -> Result<(), KvError> {
        if meta.gap {
            // No bytes of its own; the record the gap wrote first, and the parts an open segment
            // had when it was given up (v2), which no commit names.
            self.kv.delete(&gap_key(id, meta.seq))?;
            for n in 0..MAX_PARTS {
                match self.part_meta(id, meta.seq, n)? {
                    Some(orphan) => self.delete_part(id, &orphan)?,
                    None => break,
                }
            }
            return Ok(());
        }
        if !meta.is_part_built() {
            for part in 0..meta.parts {
                self.kv.delete(&part_key(id, meta.seq, meta.sha1_prefix(), part))?;
            }
            return Ok(());
        }
        for (n, part) in meta.ll_parts.iter().enumerate() {
            let n = n as u32;
            for slice in 0..part.slices {
                self.kv.delete(&part_slice_key(id, meta.seq, n, &part.sha1, slice))?;
            }
            self.kv.delete(&part_meta_key(id, meta.seq, n))?;
        }
        // Parts stored past the ones the commit named (only a racing upload can leave one).
        for n in meta.ll_parts.len() as u32..MAX_PARTS {
            match self.part_meta(id, meta.seq, n)? {
                Some(orphan) => self.delete_part(id, &orphan)?,
                None => break,
            }
        }
        Ok(())
    }

    /// Deletes one part: its slices, then its meta.
    fn delete_part(&self, id: &StreamId, part: &PartMeta) -> Result<(), KvError> {
        for slice in 0..part.slices {
            self.kv.delete(&part_slice_key(id, part.seq, part.part, part.sha1_prefix(), slice))?;
        }
        self.kv.delete(&part_meta_key(id, part.seq, part.part))
    }

    /// What a playlist shows now; `None` for an unknown or entirely expired stream. Expired
    /// segments met on the way are deleted (so storage stays bounded after uploads stop).
    pub fn view(&self, id: &StreamId, now_ms: i64) -> Result<Option<StreamView>, KvError> {
        let Some(record) = get_json::<StreamRecord>(self.kv, &stream_key(id))? else {
            return Ok(None);
        };
        self.view_of(id, &record, now_ms)
    }

    /// [`Streams::view`] with the stream record already read. Walks a second time only when
    /// retention deleted the first listed segment while this walk read it (see the module doc).
    fn view_of(&self, id: &StreamId, record: &StreamRecord, now_ms: i64) -> Result<Option<StreamView>, KvError> {
        match self.view_once(id, record, now_ms)? {
            Some(view) => Ok(view),
            None => Ok(self.view_once(id, record, now_ms)?.flatten()),
        }
    }

    /// One walk of [`Streams::view_of`]; `None` when the first listed segment's count is gone.
    fn view_once(&self, id: &StreamId, record: &StreamRecord, now_ms: i64) -> Result<Option<Option<StreamView>>, KvError> {
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
    fn window_once(&self, id: &StreamId, record: &StreamRecord, now_ms: i64) -> Result<Option<Option<StreamView>>, KvError> {
        let head = self.head(id)?;
        let tail = self.tail(id)?;
        let run = window::walk_window(&mut Source::new(self, id), head, tail, self.config.retention, now_ms)?;
        // Then one retention batch below the window's start (or of expired segments, when
        // nothing is listed).
        self.retain_from(id, head, tail, now_ms, run.live.first().map_or(0, |m| m.seq))?;
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

    /// The playlist of stream `id` now; `None` for an unknown or entirely expired stream. An
    /// `EVENT` playlist copies the stored lines of complete pages ([`window::walk_event`]); it
    /// is byte for byte what rendering the [`Streams::view`] gives, which is also the answer
    /// whenever the fast walk cannot tell the state.
    pub fn playlist(&self, id: &StreamId, now_ms: i64) -> Result<Option<PlaylistText>, KvError> {
        self.playlist_with(id, now_ms, false)
    }

    /// [`Streams::playlist`], as a delta update (`_HLS_skip=YES`) when `skip` and the stream is
    /// a live v2 stream. A v2 stream's playlist is [`Streams::ll_playlist`]'s; a v1 stream's is
    /// byte for byte what it was before v2 existed.
    pub fn playlist_with(&self, id: &StreamId, now_ms: i64, skip: bool) -> Result<Option<PlaylistText>, KvError> {
        let Some(record) = get_json::<StreamRecord>(self.kv, &stream_key(id))? else {
            return Ok(None);
        };
        if record.part_target_ms.is_some() {
            return self.ll_playlist(id, &record, now_ms, skip);
        }
        if self.config.retention == Retention::Forever {
            let head = self.head(id)?;
            let tail = self.tail(id)?;
            let run = window::walk_event(&mut Source::new(self, id), head, tail)?;
            let disc_seq = self.event_disc_seq(id, &run)?;
            let end = self.end_marker(id)?;
            if let Some(view) = disc_seq.and_then(|disc_seq| {
                EventView::assemble(&record, disc_seq, end.as_ref(), run, self.config.idle_ms, now_ms)
            }) {
                return Ok(Some(PlaylistText {
                    text: playlist::render_event(id.as_str(), &view),
                    state: view.state,
                    target_s: view.target_s,
                }));
            }
        }
        Ok(self.view_of(id, &record, now_ms)?.map(|view| PlaylistText {
            text: playlist::render(id.as_str(), &view),
            state: view.state,
            target_s: view.target_s,
        }))
    }

    /// The discontinuity count of an `EVENT` run: from its first piece (nothing is deleted
    /// without retention, so it is known; `None` sends the caller the slow way).
    fn event_disc_seq(&self, id: &StreamId, run: &window::EventRun) -> Result<Option<u64>, KvError> {
        match run.pieces.first() {
            Some(Piece::Segment(meta)) => self.disc_seq_at(id, meta.seq, Some(meta)),
            Some(piece) => self.disc_seq_at(id, piece.first_seq(), None),
            None => Ok(Some(0)),
        }
    }

    /// Marks the stream ended after its last stored segment. Returns that seq, or `None` when
    /// the stream has no (unexpired) segments. Probes at most [`TAIL_PROBE`] metas past the
    /// hints; when the run goes on beyond them it moves the tail hint that far and answers
    /// [`PutError::CatchingUp`] (the next try starts there).
    pub fn end(&self, id: &StreamId, now_ms: i64) -> Result<Option<u64>, PutError> {
        let head = self.head(id)?;
        let start = self.tail(id)?.max(head);
        let mut next = start;
        while self.meta(id, next)?.is_some() {
            next += 1;
            if next - start >= TAIL_PROBE {
                if self.config.retention == Retention::Forever {
                    self.write_lines(id, start, next)?;
                }
                set_json(self.kv, &tail_key(id), &TailHint { next_seq: next })?;
                return Err(PutError::CatchingUp);
            }
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
        let keys = if meta.is_part_built() {
            let mut keys = Vec::with_capacity(meta.parts as usize);
            for (n, part) in meta.ll_parts.iter().enumerate() {
                keys.extend((0..part.slices).map(|slice| part_slice_key(id, seq, n as u32, &part.sha1, slice)));
            }
            keys
        } else {
            (0..meta.parts).map(|part| part_key(id, seq, meta.sha1_prefix(), part)).collect()
        };
        Ok(Some((meta, keys)))
    }

    /// The stored part `part` of segment `seq` and the keys of its slices, in order; `None`
    /// when missing or expired.
    pub fn part_chunk(&self, id: &StreamId, seq: u64, part: u32, now_ms: i64) -> Result<Option<(PartMeta, Vec<String>)>, KvError> {
        let Some(meta) = self.part_meta(id, seq, part)? else {
            return Ok(None);
        };
        if self.config.retention.is_expired(meta.stored_ms, now_ms) {
            return Ok(None);
        }
        let keys = (0..meta.slices).map(|slice| part_slice_key(id, seq, part, meta.sha1_prefix(), slice)).collect();
        Ok(Some((meta, keys)))
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

/// v2: parts, commits, the live edge and the low-latency playlist.
impl<'a, K: Kv + ?Sized> Streams<'a, K> {
    pub fn part_meta(&self, id: &StreamId, seq: u64, part: u32) -> Result<Option<PartMeta>, KvError> {
        get_json(self.kv, &part_meta_key(id, seq, part))
    }

    /// Stores part `part` of segment `seq`: dedupe, sealed check, stream record (created by a
    /// first part, which fixes the part target and target duration), the discontinuity on part
    /// 0, slices, then the part meta (the commit point). A commit that seals the segment
    /// without this part meanwhile takes the part back out (`409`).
    pub fn put_part(&self, id: &StreamId, seq: u64, part: u32, headers: &PartHeaders, body: &[u8], now_ms: i64) -> Result<Stored, PutError> {
        let sha1 = sha1_hex(body);
        if let Some(existing) = self.part_meta(id, seq, part)? {
            return answer_existing_part(&existing, &sha1);
        }
        if let Some(sealed) = self.meta(id, seq)? {
            if sealed.gap {
                return Err(PutError::GivenUp { seq });
            }
            if (part as usize) < sealed.ll_parts.len() {
                // Its seal lists it, yet its meta is gone: retention is deleting the segment.
                return Err(PutError::Rule(RuleError::BeforeWindow { seq, first_seq: seq + 1 }));
            }
            return Err(PutError::SealedWithout { seq, part });
        }
        let head = self.head(id)?;
        let tail = self.tail(id)?;
        if seq < head || seq < tail {
            // A racing request may have stored this part, or sealed the segment, since the
            // reads above (the tail moves right after a seal): only then is it a retry.
            if let Some(existing) = self.part_meta(id, seq, part)? {
                return answer_existing_part(&existing, &sha1);
            }
            return Err(PutError::Rule(RuleError::BeforeWindow { seq, first_seq: head.max(seq + 1) }));
        }
        check_ahead(seq, head, tail)?;
        self.part_stream_record(id, headers, now_ms)?;
        let discontinuity = part == 0 && {
            let end = self.end_marker(id)?;
            let previous = match seq.checked_sub(1) {
                Some(prev) => self.meta(id, prev)?,
                None => None,
            };
            rules::starts_discontinuity(headers.discontinuity, seq, end.as_ref(), previous.as_ref(), now_ms, self.config.idle_ms)
        };
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
            if sealed.gap {
                self.delete_part(id, &meta)?;
                return Err(PutError::GivenUp { seq });
            }
            if part as usize >= sealed.ll_parts.len() {
                self.delete_part(id, &meta)?;
                return Err(PutError::SealedWithout { seq, part });
            }
        }
        Ok(Stored::Created)
    }

    /// The stream record for a part: created from it when absent (re-read after writing so two
    /// racing first parts most likely agree), and checked against it.
    fn part_stream_record(&self, id: &StreamId, headers: &PartHeaders, now_ms: i64) -> Result<StreamRecord, PutError> {
        let key = stream_key(id);
        let record = match get_json::<StreamRecord>(self.kv, &key)? {
            Some(record) => record,
            None => {
                let record = StreamRecord {
                    target_s: headers.target_s,
                    created_ms: now_ms,
                    part_target_ms: Some(headers.part_target_ms),
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
    /// breaks, tail hint, pages and lines, retention, exactly as after a whole-segment upload.
    pub fn commit(&self, id: &StreamId, seq: u64, count: u32, now_ms: i64) -> Result<Stored, PutError> {
        if let Some(existing) = self.meta(id, seq)? {
            return self.answer_existing_commit(&existing, count);
        }
        let head = self.head(id)?;
        let tail = self.tail(id)?;
        if seq < head || seq < tail {
            // A racing commit of the same segment moves the tail right after sealing it.
            if let Some(existing) = self.meta(id, seq)? {
                return self.answer_existing_commit(&existing, count);
            }
            return Err(PutError::Rule(RuleError::BeforeWindow { seq, first_seq: head.max(seq + 1) }));
        }
        check_ahead(seq, head, tail)?;
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
        let Some(record) = get_json::<StreamRecord>(self.kv, &stream_key(id))? else {
            return Err(PutError::MissingPart { seq, part: 0 });
        };
        let duration_ms: u32 = parts.iter().map(|p| p.duration_ms).sum();
        rules::check_target(duration_ms, record.target_s).map_err(PutError::Rule)?;
        // Part 0 decided the discontinuity when it arrived; a Stop since then is a resume too.
        let end = self.end_marker(id)?;
        let previous = match seq.checked_sub(1) {
            Some(prev) => self.meta(id, prev)?,
            None => None,
        };
        let discontinuity = parts[0].discontinuity
            || rules::starts_discontinuity(false, seq, end.as_ref(), previous.as_ref(), now_ms, self.config.idle_ms);
        let mut meta = SegmentMeta::from_parts(seq, &parts, discontinuity, now_ms);
        meta.disc_seq = self.carried(id, seq, previous.as_ref())?;
        if let Some(existing) = self.meta(id, seq)? {
            return self.answer_existing_commit(&existing, count);
        }
        set_json(self.kv, &meta_key(id, seq), &meta)?;
        if self.yield_to_gap(id, seq)? {
            // The parts stay until retention deletes the gap (it deletes a gap's parts too).
            return Err(PutError::GivenUp { seq });
        }
        if self.behind_head(id, seq)? {
            // Retention deletes the parts it found listed in the meta it read.
            self.kv.delete(&meta_key(id, seq))?;
            return Err(PutError::Rule(RuleError::BeforeWindow { seq, first_seq: seq + 1 }));
        }

        let tail = self.advance_tail(id, head)?;
        if self.config.retention == Retention::Forever {
            self.write_page(id, tail)?;
        }
        self.apply_retention(id, now_ms, 0)?;
        Ok(Stored::Created)
    }

    /// The answer to a commit of a sealed segment: the same number of parts is a retry (the
    /// parts are immutable, so the same parts).
    fn answer_existing_commit(&self, existing: &SegmentMeta, count: u32) -> Result<Stored, PutError> {
        if existing.gap {
            return Err(PutError::GivenUp { seq: existing.seq });
        }
        if existing.ll_parts.len() != count as usize {
            return Err(PutError::SealedOtherwise { seq: existing.seq, parts: existing.ll_parts.len() });
        }
        Ok(Stored::AlreadyStored)
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

    /// The last segment of the listed run, found from the hints (as [`Streams::end`] does);
    /// `None` when there is none or it has expired.
    fn run_last(&self, id: &StreamId, now_ms: i64) -> Result<Option<SegmentMeta>, KvError> {
        let head = self.head(id)?;
        let start = self.tail(id)?.max(head);
        let mut last = None;
        let mut next = start;
        while next - start < TAIL_PROBE {
            match self.meta(id, next)? {
                Some(meta) => last = Some(meta),
                None => break,
            }
            next += 1;
        }
        if last.is_none() && start > head {
            last = self.meta(id, start - 1)?;
        }
        Ok(last.filter(|meta| !self.config.retention.is_expired(meta.stored_ms, now_ms)))
    }

    /// The stream's record.
    pub fn record(&self, id: &StreamId) -> Result<Option<StreamRecord>, KvError> {
        get_json(self.kv, &stream_key(id))
    }

    /// The live edge of v2 stream `id`; `None` for an unknown, v1 or entirely expired stream,
    /// or one with no sealed segment yet.
    pub fn live_edge(&self, id: &StreamId, now_ms: i64) -> Result<Option<LiveEdge>, KvError> {
        let Some(record) = get_json::<StreamRecord>(self.kv, &stream_key(id))? else {
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

    /// The playlist of v2 stream `id` ([`playlist::render_ll`]): the run as for v1 (stored lines
    /// blocks for `EVENT`), with the segments in the part window read as metas; while live the
    /// open segment's parts and, for a delta update, the head of the run replaced by a count. A
    /// delta update reads backwards from the end, only the metas it lists (a sliding window's
    /// too while its head segment is unexpired, so a long window costs a reload no more).
    pub fn ll_playlist(&self, id: &StreamId, record: &StreamRecord, now_ms: i64, skip: bool) -> Result<Option<PlaylistText>, KvError> {
        let part_target_ms = record.part_target_ms.unwrap_or(1000);
        let kind = PlaylistKind::from(self.config.retention);
        let idle_ms = self.config.idle_ms;
        let mut view = None;
        if skip {
            if let Some(last) = self.run_last(id, now_ms)? {
                let end = self.end_marker(id)?;
                if !rules::is_ended(&last, end.as_ref(), now_ms, idle_ms) {
                    let head = self.head(id)?;
                    // A sliding window starts at the head while the head's segment is unexpired
                    // (later ones are younger); otherwise the whole walk below runs retention.
                    let first = match kind {
                        PlaylistKind::Event => Some(None),
                        PlaylistKind::Sliding => self
                            .meta(id, head)?
                            .filter(|meta| !self.config.retention.is_expired(meta.stored_ms, now_ms))
                            .map(Some),
                    };
                    let (metas, disc_seq) = match first {
                        Some(first) => (self.skip_tail(id, head, last, record.target_s)?, self.disc_seq_at(id, head, first.as_ref())?),
                        None => (None, None),
                    };
                    if let (Some(metas), Some(disc_seq)) = (metas, disc_seq) {
                        let first_kept = metas[0].seq;
                        view = Some(LlView {
                            target_s: record.target_s,
                            part_target_ms,
                            kind,
                            first_seq: head,
                            discontinuity_sequence: disc_seq,
                            skipped: first_kept - head,
                            pieces: metas.into_iter().map(Piece::Segment).collect(),
                            open: None,
                            state: State::Live,
                        });
                    }
                }
            }
        }
        if view.is_none() && kind == PlaylistKind::Event {
            let head = self.head(id)?;
            let tail = self.tail(id)?;
            let run = window::walk_event(&mut Source::new(self, id), head, tail)?;
            let disc_seq = self.event_disc_seq(id, &run)?;
            let end = self.end_marker(id)?;
            view = disc_seq.and_then(|disc_seq| EventView::assemble(record, disc_seq, end.as_ref(), run, idle_ms, now_ms)).map(|v| LlView {
                target_s: record.target_s,
                part_target_ms,
                kind,
                first_seq: v.first_seq,
                discontinuity_sequence: v.discontinuity_sequence,
                skipped: 0,
                pieces: v.pieces,
                open: None,
                state: v.state,
            });
        }
        let mut view = match view {
            Some(view) => view,
            None => match self.view_of(id, record, now_ms)? {
                Some(v) => LlView {
                    target_s: record.target_s,
                    part_target_ms,
                    kind,
                    first_seq: v.first().seq,
                    discontinuity_sequence: v.discontinuity_sequence,
                    skipped: 0,
                    pieces: v.segments.into_iter().map(Piece::Segment).collect(),
                    open: None,
                    state: v.state,
                },
                None => return Ok(None),
            },
        };
        if view.state == State::Live {
            let last_seq = view.pieces.last().map_or(view.first_seq, |p| p.first_seq() + p.len() - 1);
            let open = self.open_segment(id, last_seq + 1)?;
            if skip && view.skipped == 0 {
                let durations: Option<Vec<u32>> = view
                    .pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Segment(meta) => Some(meta.duration_ms),
                        Piece::Lines { .. } => None,
                    })
                    .collect();
                if let Some(durations) = durations {
                    let n = ll::skip_count(&durations, record.target_s);
                    view.pieces.drain(..n);
                    view.skipped = n as u64;
                }
            }
            self.unroll_part_window(id, &mut view.pieces, open.duration_ms(), record.target_s)?;
            view.open = Some(open);
        }
        Ok(Some(PlaylistText {
            text: playlist::render_ll(id.as_str(), &view),
            state: view.state,
            target_s: view.target_s,
        }))
    }

    /// The metas a delta update of an `EVENT` stream lists, read backwards from `last`: every
    /// segment not wholly past the skip boundary ([`ll::skip_count`]'s rule). `None` when a
    /// meta is missing (the caller then walks the run the usual way).
    fn skip_tail(&self, id: &StreamId, head: u64, last: SegmentMeta, target_s: u32) -> Result<Option<Vec<SegmentMeta>>, KvError> {
        let boundary = u64::from(ll::SKIP_UNTIL_TARGETS * target_s) * 1000;
        let mut after = u64::from(last.duration_ms);
        let mut seq = last.seq;
        let mut metas = vec![last];
        while seq > head && after <= boundary {
            seq -= 1;
            let Some(meta) = self.meta(id, seq)? else {
                return Ok(None);
            };
            after += u64::from(meta.duration_ms);
            metas.push(meta);
        }
        metas.reverse();
        Ok(Some(metas))
    }

    /// Makes the trailing segments that start within the part window [`Piece::Segment`]s, so
    /// they get their `EXT-X-PART` lines: a lines block reaching into the window is cut before
    /// them ([`playlist::lines_before`]) and their metas are read.
    fn unroll_part_window(&self, id: &StreamId, pieces: &mut Vec<Piece>, open_ms: u64, target_s: u32) -> Result<(), KvError> {
        let mut from_end = open_ms;
        let mut i = pieces.len();
        while i > 0 {
            i -= 1;
            let (first, len, text) = match &pieces[i] {
                Piece::Segment(meta) => {
                    from_end += u64::from(meta.duration_ms);
                    if !ll::in_part_window(from_end, target_s) {
                        return Ok(());
                    }
                    continue;
                }
                Piece::Lines { first_seq, len, text } => (*first_seq, *len, text),
            };
            let mut metas = Vec::new();
            let mut inside = true;
            let mut seq = first + len;
            while seq > first && inside {
                seq -= 1;
                let Some(meta) = self.meta(id, seq)? else {
                    return Ok(());
                };
                from_end += u64::from(meta.duration_ms);
                inside = ll::in_part_window(from_end, target_s);
                metas.push(meta);
            }
            metas.reverse();
            let split = metas[0].seq;
            let Some(prefix) = playlist::lines_before(id.as_str(), first, text, split) else {
                return Ok(());
            };
            let mut replacement = Vec::with_capacity(metas.len() + 1);
            if !prefix.is_empty() {
                replacement.push(Piece::Lines { first_seq: first, len: split - first, text: prefix.to_owned() });
            }
            replacement.extend(metas.into_iter().map(Piece::Segment));
            pieces.splice(i..=i, replacement);
            if !inside {
                return Ok(());
            }
        }
        Ok(())
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
fn answer_existing(existing: &SegmentMeta, sha1: &str) -> Result<Stored, PutError> {
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

/// The answer to a gap when `seq` already has a meta: a gap is a retry, a segment keeps the seq.
fn answer_existing_gap(existing: &SegmentMeta) -> Result<Stored, PutError> {
    if existing.gap {
        Ok(Stored::AlreadyStored)
    } else {
        Err(PutError::SegmentHolds { seq: existing.seq })
    }
}

/// The answer when part `existing` is stored: the same bytes are a retry.
fn answer_existing_part(existing: &PartMeta, sha1: &str) -> Result<Stored, PutError> {
    if existing.sha1 == sha1 {
        Ok(Stored::AlreadyStored)
    } else {
        Err(PutError::PartConflict { seq: existing.seq, part: existing.part })
    }
}

/// What the sweep found when it visited a stream ([`Streams::sweep_stream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// Nothing of the stream is left in the store.
    Gone,
    /// It still holds an unexpired upload, the newest stored at `newest_ms` (Unix ms).
    Holds { newest_ms: i64 },
    /// Expired segments remain past this visit's retention batch.
    More,
}

/// The sweep (`crate::sweep`): retention for a stream nobody requests, and deleting a stream
/// whose uploads have all expired.
impl<'a, K: Kv + ?Sized> Streams<'a, K> {
    /// Applies retention (one capped batch) to stream `id`; then, when neither its run nor its
    /// open segment holds anything unexpired, deletes the open segment's parts and the stream's
    /// records, `stream/{id}` last. Returns what is left and how many segments retention deleted.
    ///
    /// A stream is deleted only when the seq after its run has no meta and no part 0 (checked
    /// again right before the records go), so an acknowledged, unexpired upload keeps its
    /// records. Not reached (stated in ARCHITECTURE.md): segments stored beyond a hole in the
    /// run, parts of a segment past the open one, and slices of an upload that died before its
    /// commit point.
    pub fn sweep_stream(&self, id: &StreamId, now_ms: i64) -> Result<(Visit, u64), KvError> {
        let retention = self.config.retention;
        if retention == Retention::Forever {
            return Ok((Visit::Holds { newest_ms: now_ms }, 0));
        }
        let before = self.head(id)?;
        self.apply_retention(id, now_ms, 0)?;
        let head = self.head(id)?;
        let deleted = head.saturating_sub(before);
        if let Some(last) = self.run_last(id, now_ms)? {
            let open = self.open_segment(id, last.seq + 1)?;
            let newest_ms = open.parts.iter().map(|p| p.stored_ms).fold(last.stored_ms, i64::max);
            return Ok((Visit::Holds { newest_ms }, deleted));
        }
        if deleted >= RETENTION_BATCH as u64 {
            return Ok((Visit::More, deleted));
        }
        let start = head.max(self.tail(id)?);
        if self.meta(id, start)?.is_some() || self.meta(id, head)?.is_some() {
            // Something retention's walk did not reach this time: look again in a minute.
            return Ok((Visit::Holds { newest_ms: now_ms }, deleted));
        }
        let open = self.open_segment(id, start)?;
        if let Some(newest_ms) = open.parts.iter().map(|p| p.stored_ms).filter(|&t| !retention.is_expired(t, now_ms)).max() {
            return Ok((Visit::Holds { newest_ms }, deleted));
        }
        for part in open.parts.iter().rev() {
            self.delete_part(id, part)?;
        }
        // A session resuming right now stores at `start`: keep the records that list it.
        if self.meta(id, start)?.is_some() || self.part_meta(id, start, 0)?.is_some() {
            return Ok((Visit::Holds { newest_ms: now_ms }, deleted));
        }
        // `dseq/{id}/{n}` is the discontinuity count retention keeps for the first seq after a
        // batch it deleted (issue 11): normally only `start`'s is left, but a retention pass that
        // raced another one may have written its count for a seq the other had deleted, at most
        // a batch below. `top/{id}` is the highest committed seq. Absent keys cost a delete.
        let mut keys: Vec<String> =
            (start.saturating_sub(RETENTION_BATCH as u64)..=start).map(|n| format!("dseq/{id}/{n}")).collect();
        keys.push(format!("top/{id}"));
        keys.extend([breaks_key(id), end_key(id), tail_key(id), head_key(id), stream_key(id)]);
        for key in keys {
            self.kv.delete(&key)?;
        }
        Ok((Visit::Gone, deleted))
    }
}
