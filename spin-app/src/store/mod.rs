//! Streams in the key-value store: storing a segment, ending a stream, reading what a playlist
//! lists, and retention — correct without transactions and without listing keys.
//!
//! The key layout is [`layout`]'s (every key is formatted there and nowhere else). Each job
//! has a file of its own:
//!
//! - [`layout`]: keys, limits, and the plain reads of one record each.
//! - [`ingest`]: storing segments and parts, committing parts into a segment, ending a stream;
//!   one prologue ([`Streams::admit`]) for every write path.
//! - [`gap`]: the gap handshake (a seq the broadcaster gave up, issue 11).
//! - [`retention`]: deleting expired segments from the head.
//! - [`run`]: reading the run and the window (the one forward probe, [`Streams::probe_forward`]),
//!   discontinuity counts, the live edge, chunks.
//! - [`playlist`]: playlist assembly (sliding, `EVENT`, low-latency, delta updates).
//! - [`blocks`]: the immutable pages and lines blocks of `EVENT` streams.
//! - [`visit`]: the sweep's visit of one stream.
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

mod blocks;
mod gap;
mod ingest;
pub(crate) mod layout;
mod playlist;
mod retention;
mod run;
mod visit;

pub use layout::MAX_AHEAD;
pub use playlist::PlaylistText;
pub use run::{BodyKey, LiveEdge, Media};
pub use visit::Visit;

use crate::kv::{Kv, KvError};
use chalkstream_manifest::rules::{Config, RuleError};
use std::fmt;

/// One stream's records in a store.
pub struct Streams<'a, K: Kv + ?Sized> {
    kv: &'a K,
    config: &'a Config,
}

impl<'a, K: Kv + ?Sized> Streams<'a, K> {
    pub fn new(kv: &'a K, config: &'a Config) -> Self {
        Streams { kv, config }
    }
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
