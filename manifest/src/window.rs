//! Which stored segments a playlist lists, decided from what the store returns, without
//! transactions and without listing keys.
//!
//! Media sequence numbers are the uploaders' seqs, so a playlist lists the contiguous run of
//! committed seqs starting at the first unexpired one. A segment stored beyond a hole waits until
//! the hole is filled (the extension uploads in order, so holes are short-lived).
//!
//! The walk starts at the retention head and reads one meta per seq. A missing meta means:
//! - below the tail hint: the seq was committed once, so a concurrent retention deleted it;
//!   everything before it is expired too, so the walk forgets what it collected and goes on;
//! - at or past the tail hint: the run ends, unless the head has meanwhile moved past this seq
//!   (a concurrent retention writes the head before deleting), in which case the walk resumes
//!   from the new head.
//!
//! An `EVENT` playlist (retention 0, nothing expires) may also be walked a page at a time:
//! [`walk_event`] lists the same run as [`walk`], but where the source keeps the rendered lines
//! of consecutive segments ([`LinesSource`]) it takes them whole instead of one meta per seq.

use crate::rules::{self, Retention};
use crate::segment::{EndMarker, SegmentMeta, StreamRecord};
#[cfg(test)]
use crate::segment::Breaks;

/// Read access to a stream's stored segment metas.
pub trait MetaSource {
    type Error;
    /// The commit record of `seq`, if present.
    fn meta(&mut self, seq: u64) -> Result<Option<SegmentMeta>, Self::Error>;
    /// The current retention head (re-read when the walk meets a gap past the tail hint).
    fn head(&mut self) -> Result<u64, Self::Error>;
}

/// The result of a walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walk {
    /// Expired segments met before the first unexpired one, oldest first: retention deletes them.
    pub expired: Vec<SegmentMeta>,
    /// The listed run, oldest first (empty when only the expired part was asked for).
    pub live: Vec<SegmentMeta>,
    /// The seq after the last one read: where retention's head may move (when `live` is empty,
    /// the end of the expired run) or the end of the listed run.
    pub next_seq: u64,
}

impl Walk {
    /// Where the retention head may move: the first seq that is not expired.
    pub fn new_head(&self) -> u64 {
        self.live.first().map(|m| m.seq).unwrap_or(self.next_seq)
    }
}

/// How far a walk goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// Stop at the first unexpired segment (retention after an upload), after at most this many
    /// expired segments.
    ExpiredOnly { max: usize },
    /// As `ExpiredOnly`, with every seq below `floor` counted as expired too: retention of a
    /// sliding window whose start [`walk_window`] (or the count cap, [`MAX_WINDOW_SEGMENTS`])
    /// put past segments that have not expired yet. Nothing below a window's start is listed
    /// again, so deleting it hides nothing.
    BelowWindow { max: usize, floor: u64 },
    /// Walk the whole listed run (rendering).
    Everything,
}

/// Walks from `head` as the module doc describes.
pub fn walk<S: MetaSource>(
    source: &mut S,
    head: u64,
    tail: u64,
    retention: Retention,
    now_ms: i64,
    extent: Extent,
) -> Result<Walk, S::Error> {
    let mut walk = Walk { next_seq: head, ..Walk::default() };
    let mut seq = head;
    // The count carried from the meta just read (see `SegmentMeta::disc_seq`); forgotten at a gap.
    let mut carried: Option<u64> = None;
    loop {
        let floor = match extent {
            Extent::ExpiredOnly { max } | Extent::BelowWindow { max, .. } if walk.expired.len() >= max => break,
            Extent::BelowWindow { floor, .. } => floor,
            _ => 0,
        };
        match source.meta(seq)? {
            Some(mut meta) => {
                meta.disc_seq = meta.disc_seq.or(carried);
                carried = meta.disc_seq_after();
                if walk.live.is_empty() && (seq < floor || retention.is_expired(meta.stored_ms, now_ms)) {
                    walk.expired.push(meta);
                } else if extent == Extent::Everything {
                    walk.live.push(meta);
                } else {
                    break;
                }
                seq += 1;
            }
            None if seq < tail => {
                walk.live.clear();
                carried = None;
                seq += 1;
            }
            None => {
                let moved = source.head()?;
                if moved > seq {
                    walk.live.clear();
                    carried = None;
                    seq = moved;
                } else {
                    break;
                }
            }
        }
        walk.next_seq = seq;
    }
    walk.next_seq = seq;
    Ok(walk)
}

/// The most segments a sliding-window playlist lists (issue 11): its window starts at
/// `max(retention start, newest - MAX_WINDOW_SEGMENTS + 1)`. A 10-minute window of 1 s segments
/// (600) is listed whole, of 0.5 s segments nearly whole (8.5 minutes); 5000 segments of 0.1 s
/// inside the window list their newest 1024 (102 s), so a playlist GET reads at most this many
/// metas whatever was uploaded. The playlist stays at least three target durations long (RFC
/// 8216 §6.2.2) while the newest 1024 segments average at least 3/1024 of the target duration
/// (88 ms at the largest target, 30 s).
pub const MAX_WINDOW_SEGMENTS: usize = 1024;

/// How far [`walk_window`] probes past the hints for the end of the run (uploads more than 64
/// seqs past the first unstored one are refused, so the run ends well within this).
pub const WINDOW_PROBE: u64 = 256;

/// How many predecessors [`walk_window`] reads at most to carry a discontinuity count to the
/// first listed segment: a meta without a count was committed before its predecessor, and an
/// upload may be at most 64 seqs past the first unstored one, so such metas come in runs of
/// fewer than 64.
pub const CARRY_BACK: u64 = 64;

/// How far below the newest expired segment [`walk_window`] still looks for unexpired ones:
/// seqs more than 64 apart were stored in order (an upload is refused 64 or more seqs past the
/// first unstored one), so below that everything expired before it, give or take one request's
/// time.
pub const LOOK_BACK: u64 = 64;

/// The listed run of a sliding-window playlist, read from its newest segment backwards
/// ([`walk_window`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowRun {
    /// The listed run, oldest first; empty when nothing unexpired is stored. The first meta's
    /// `disc_seq` is filled in when the walk could carry it from a predecessor.
    pub live: Vec<SegmentMeta>,
    /// When the first listed meta's count could not be carried: `(seq, flags)`, its count is
    /// the count before `seq` (kept by retention, or of a stream stored before counts existed)
    /// plus `flags`, the discontinuities from `seq` up to the first listed one.
    pub count_from: Option<(u64, u64)>,
    /// Every seq below this one is below every window from now on, expired or not, so
    /// retention may delete it: the first listed seq when the walk stopped at an expired
    /// segment's look-back or at the count cap (both decided by time and by the end of the run,
    /// which only move forward), else 0. Not when it stopped at a missing meta: on a store that
    /// shows writes out of order, that may be one that has not shown yet, below which
    /// acknowledged segments are listed again once it does.
    pub floor: u64,
}

/// The unbroken run of stored metas from `start`, oldest first, at most `limit` of them: the
/// forward probe every walk toward the end of the run shares (the window's, and the store's tail
/// advance, end and live edge).
pub fn probe_forward<S: MetaSource>(source: &mut S, start: u64, limit: u64) -> Result<Vec<SegmentMeta>, S::Error> {
    let mut run = Vec::new();
    let mut seq = start;
    while seq - start < limit {
        match source.meta(seq)? {
            Some(meta) => run.push(meta),
            None => break,
        }
        seq += 1;
    }
    Ok(run)
}

/// The listed run of a sliding-window playlist (retention > 0) without reading what is not
/// listed: the end of the contiguous run is found by probing forward from `max(head, tail)` (at
/// most [`WINDOW_PROBE`] metas), then the walk goes backwards from the end and stops at the
/// first of: the head, a missing meta (a seq retention deleted, or a hole), [`LOOK_BACK`] seqs
/// below the newest expired segment, or [`MAX_WINDOW_SEGMENTS`] read. The window starts at the
/// oldest unexpired segment read, as the forward walk's ([`walk`]) would: a segment stored out
/// of order may expire before its neighbours, and is listed between them until they expire too.
/// So it reads what it lists plus at most `LOOK_BACK + 1` metas: expired segments still stored
/// further below the window (retention deletes them a batch at a time, from the head) and
/// segments older than the newest [`MAX_WINDOW_SEGMENTS`] are never read.
///
/// Why the media sequence (the first listed seq) never goes back: segments only expire (until
/// retention deletes them, after writing the head past them), the head only moves forward, a
/// seq below the end that is missing is one retention deleted (a seq below the tail hint is
/// refused as behind the window, so it is never stored again), and the end of the run only
/// moves forward. So the newest expired segment, the lower end of the look-back, and the count
/// cap's `end - MAX + 1` only rise, and among the segments above them the oldest unexpired one
/// can only be a later one.
pub fn walk_window<S: MetaSource>(
    source: &mut S,
    head: u64,
    tail: u64,
    retention: Retention,
    now_ms: i64,
) -> Result<WindowRun, S::Error> {
    let mut head = head;
    let mut start = head.max(tail);
    // Forward from the hints to the end of the run.
    let mut ahead: Vec<SegmentMeta>;
    loop {
        ahead = probe_forward(source, start, WINDOW_PROBE)?;
        if !ahead.is_empty() || start > head {
            break;
        }
        // Nothing at the head: retention may have moved it meanwhile (it writes the head first).
        let moved = source.head()?;
        if moved > start {
            head = moved;
            start = moved;
        } else {
            break;
        }
    }
    // Backwards from the end: through the segments read ahead, then below the hints. Past the
    // newest expired segment the walk reads at most `LOOK_BACK` more, for unexpired segments
    // stored out of order below it (the window starts at the oldest unexpired one, as the
    // forward walk's would).
    let mut ahead = ahead.into_iter().rev();
    let mut seq = start;
    let mut run: Vec<SegmentMeta> = Vec::new();
    let mut newest_expired: Option<u64> = None;
    let mut below: Option<SegmentMeta> = None;
    while run.len() < MAX_WINDOW_SEGMENTS {
        let meta = match ahead.next() {
            Some(meta) => meta,
            None if seq > head => {
                seq -= 1;
                match source.meta(seq)? {
                    Some(meta) => meta,
                    None => break,
                }
            }
            None => break,
        };
        if newest_expired.is_some_and(|e| meta.seq + LOOK_BACK <= e) {
            below = Some(meta);
            break;
        }
        if newest_expired.is_none() && retention.is_expired(meta.stored_ms, now_ms) {
            newest_expired = Some(meta.seq);
        }
        run.push(meta);
    }
    let capped = run.len() >= MAX_WINDOW_SEGMENTS;
    let keep = run.iter().rposition(|m| !retention.is_expired(m.stored_ms, now_ms)).map_or(0, |i| i + 1);
    let mut stopped_at = run.get(keep).cloned().or(below);
    run.truncate(keep);
    run.reverse();
    let mut live = run;
    // The first listed segment's discontinuity count, carried from its predecessors when it has
    // none of its own (committed before its predecessor).
    let mut count_from = None;
    if let Some(first) = live.first() {
        if first.disc_seq.is_none() && first.seq > head {
            let mut before: Vec<SegmentMeta> = Vec::new();
            let mut seq = first.seq;
            let mut known = None;
            while seq > head && first.seq - seq < CARRY_BACK {
                seq -= 1;
                let meta = match stopped_at.take() {
                    Some(meta) if meta.seq == seq => Some(meta),
                    _ => source.meta(seq)?,
                };
                let Some(meta) = meta else { break };
                if let Some(count) = meta.disc_seq_after() {
                    known = Some(count);
                    break;
                }
                before.push(meta);
            }
            let flags: u64 = before.iter().map(|m| u64::from(m.discontinuity)).sum();
            match known {
                Some(count) => live[0].disc_seq = Some(count + flags),
                None => count_from = Some((before.last().map_or(first.seq, |m| m.seq), flags)),
            }
        }
    }
    let floor = if newest_expired.is_some() || capped { live.first().map_or(0, |m| m.seq) } else { 0 };
    Ok(WindowRun { live, count_from, floor })
}

/// Read access to stored segment lines, for walking an `EVENT` playlist a page at a time.
pub trait LinesSource: MetaSource {
    /// The rendered lines of consecutive segments starting at `seq`, when the source keeps them
    /// and they check out ([`crate::playlist::check_lines`]): a [`Piece::Lines`] whose
    /// `first_seq` is `seq`. Its segments were all committed when the lines were written.
    fn lines(&mut self, seq: u64) -> Result<Option<Piece>, Self::Error>;
}

/// Part of a listed run: one segment's meta, or the lines of consecutive segments rendered
/// when they were stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Segment(SegmentMeta),
    Lines { first_seq: u64, len: u64, text: String },
}

impl Piece {
    /// How many segments this piece lists.
    pub fn len(&self) -> u64 {
        match self {
            Piece::Segment(_) => 1,
            Piece::Lines { len, .. } => *len,
        }
    }

    /// Whether it lists no segment (never, for pieces a walk returns).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn first_seq(&self) -> u64 {
        match self {
            Piece::Segment(meta) => meta.seq,
            Piece::Lines { first_seq, .. } => *first_seq,
        }
    }
}

/// The result of [`walk_event`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventRun {
    /// The listed run, oldest first.
    pub pieces: Vec<Piece>,
    /// The meta of the run's last segment (it decides live or ended); `None` when the run is
    /// empty or that meta could not be read.
    pub last: Option<SegmentMeta>,
}

/// Walks an `EVENT` playlist's run from `head` by the rules of [`walk`] with
/// `Retention::Forever` and `Extent::Everything`, taking stored lines where the source has
/// them. Lines stand for segments that were all committed, and without retention nothing is
/// deleted, so the run lists the same seqs as [`walk`] would.
pub fn walk_event<S: LinesSource>(source: &mut S, head: u64, tail: u64) -> Result<EventRun, S::Error> {
    let mut pieces: Vec<Piece> = Vec::new();
    let mut seq = head;
    loop {
        if let Some(piece) = source.lines(seq)? {
            if piece.first_seq() == seq && !piece.is_empty() {
                seq += piece.len();
                pieces.push(piece);
                continue;
            }
        }
        match source.meta(seq)? {
            Some(meta) => {
                pieces.push(Piece::Segment(meta));
                seq += 1;
            }
            None if seq < tail => {
                pieces.clear();
                seq += 1;
            }
            None => {
                let moved = source.head()?;
                if moved > seq {
                    pieces.clear();
                    seq = moved;
                } else {
                    break;
                }
            }
        }
    }
    let last = match pieces.last() {
        Some(Piece::Segment(meta)) => Some(meta.clone()),
        Some(piece @ Piece::Lines { .. }) => source.meta(piece.first_seq() + piece.len() - 1)?,
        None => None,
    };
    Ok(EventRun { pieces, last })
}

/// The two playlist shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistKind {
    /// Retention > 0: a sliding window, no `EXT-X-PLAYLIST-TYPE`.
    Sliding,
    /// Retention 0: `EXT-X-PLAYLIST-TYPE:EVENT`, everything from seq 0.
    Event,
}

impl From<Retention> for PlaylistKind {
    fn from(retention: Retention) -> Self {
        match retention {
            Retention::Forever => PlaylistKind::Event,
            Retention::Millis(_) => PlaylistKind::Sliding,
        }
    }
}

/// Live or ended, as players and the status API see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Live,
    Ended,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Live => "live",
            State::Ended => "ended",
        }
    }
}

/// Everything a playlist or a status answer shows about a stream at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamView {
    pub target_s: u32,
    pub kind: PlaylistKind,
    /// `EXT-X-DISCONTINUITY-SEQUENCE`: discontinuities among the segments before the window.
    pub discontinuity_sequence: u64,
    /// The listed segments, oldest first; never empty.
    pub segments: Vec<SegmentMeta>,
    pub state: State,
}

impl StreamView {
    /// Assembles the view from the stored records, a walk's listed run and the discontinuity
    /// count before its first segment; `None` when no segment is listed (the stream is unknown
    /// or entirely expired).
    pub fn assemble(
        record: &StreamRecord,
        discontinuity_sequence: u64,
        end: Option<&EndMarker>,
        segments: Vec<SegmentMeta>,
        retention: Retention,
        idle_ms: u64,
        now_ms: i64,
    ) -> Option<Self> {
        let last = segments.last()?;
        Some(StreamView {
            target_s: record.target_s,
            kind: retention.into(),
            discontinuity_sequence,
            state: state_after(last, end, now_ms, idle_ms),
            segments,
        })
    }

    /// Total listed duration in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.segments.iter().map(|m| u64::from(m.duration_ms)).sum()
    }

    pub fn first(&self) -> &SegmentMeta {
        &self.segments[0]
    }

    pub fn last(&self) -> &SegmentMeta {
        &self.segments[self.segments.len() - 1]
    }
}

fn state_after(last: &SegmentMeta, end: Option<&EndMarker>, now_ms: i64, idle_ms: u64) -> State {
    if rules::is_ended(last, end, now_ms, idle_ms) {
        State::Ended
    } else {
        State::Live
    }
}

/// What an `EVENT` playlist shows at one moment, as pieces (see [`walk_event`]): the same head
/// lines and state as the [`StreamView`] of the same run, without every meta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventView {
    pub target_s: u32,
    /// `EXT-X-MEDIA-SEQUENCE`: the first listed seq.
    pub first_seq: u64,
    pub discontinuity_sequence: u64,
    /// The listed run, oldest first; never empty.
    pub pieces: Vec<Piece>,
    pub state: State,
}

impl EventView {
    /// Assembles the view from the stored records and an [`EventRun`]; `None` when the run is
    /// empty or its last meta is unknown (the caller then reads the stream the slow way).
    pub fn assemble(
        record: &StreamRecord,
        discontinuity_sequence: u64,
        end: Option<&EndMarker>,
        run: EventRun,
        idle_ms: u64,
        now_ms: i64,
    ) -> Option<Self> {
        let first_seq = run.pieces.first()?.first_seq();
        let last = run.last.as_ref()?;
        Some(EventView {
            target_s: record.target_s,
            first_seq,
            discontinuity_sequence,
            state: state_after(last, end, now_ms, idle_ms),
            pieces: run.pieces,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Store {
        metas: BTreeMap<u64, SegmentMeta>,
        head: u64,
        reads: usize,
    }

    impl MetaSource for Store {
        type Error = ();
        fn meta(&mut self, seq: u64) -> Result<Option<SegmentMeta>, ()> {
            self.reads += 1;
            Ok(self.metas.get(&seq).cloned())
        }
        fn head(&mut self) -> Result<u64, ()> {
            Ok(self.head)
        }
    }

    fn meta(seq: u64, stored_ms: i64) -> SegmentMeta {
        SegmentMeta {
            seq,
            duration_ms: 2000,
            pdt_ms: stored_ms - 2000,
            discontinuity: false,
            stored_ms,
            len: 188,
            parts: 1,
            sha1: "0".repeat(40),
            ll_parts: Vec::new(),
            disc_seq: None,
            gap: false,
            folded: false,
        }
    }

    /// A store whose metas carry their discontinuity counts (none has the flag).
    fn counted(seqs: impl IntoIterator<Item = u64>) -> Store {
        let mut s = store(seqs);
        for m in s.metas.values_mut() {
            m.disc_seq = Some(0);
        }
        s
    }

    fn store(seqs: impl IntoIterator<Item = u64>) -> Store {
        Store { metas: seqs.into_iter().map(|s| (s, meta(s, s as i64 * 1000))).collect(), head: 0, reads: 0 }
    }

    fn seqs(metas: &[SegmentMeta]) -> Vec<u64> {
        metas.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn the_listed_run_is_contiguous_and_waits_at_a_hole() {
        let mut s = store([0, 1, 2, 4, 5]);
        let w = walk(&mut s, 0, 0, Retention::Forever, 10_000, Extent::Everything).unwrap();
        assert_eq!(seqs(&w.live), vec![0, 1, 2]);
        assert_eq!(w.next_seq, 3);
        s.metas.insert(3, meta(3, 3000));
        let w = walk(&mut s, 0, 0, Retention::Forever, 10_000, Extent::Everything).unwrap();
        assert_eq!(seqs(&w.live), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn expired_segments_are_skipped_and_reported_for_deletion() {
        let mut s = store(0..10);
        let retention = Retention::Millis(3000);
        let w = walk(&mut s, 0, 0, retention, 9000, Extent::Everything).unwrap();
        assert_eq!(seqs(&w.expired), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(seqs(&w.live), vec![6, 7, 8, 9]);
        assert_eq!(w.new_head(), 6);
        let only = walk(&mut s, 0, 0, retention, 9000, Extent::ExpiredOnly { max: 100 }).unwrap();
        assert_eq!(seqs(&only.expired), vec![0, 1, 2, 3, 4, 5]);
        assert!(only.live.is_empty());
        assert_eq!(only.new_head(), 6);
        let capped = walk(&mut s, 0, 0, retention, 9000, Extent::ExpiredOnly { max: 2 }).unwrap();
        assert_eq!(capped.new_head(), 2);
        let below = walk(&mut s, 0, 0, retention, 9000, Extent::BelowWindow { max: 100, floor: 8 }).unwrap();
        assert_eq!(below.new_head(), 8);
        let below = walk(&mut s, 0, 0, retention, 9000, Extent::BelowWindow { max: 100, floor: 3 }).unwrap();
        assert_eq!(below.new_head(), 6);
    }

    #[test]
    fn a_gap_below_the_tail_is_a_concurrent_deletion_and_is_skipped() {
        // Seqs 0..4 were deleted by another request's retention after we read head 0.
        let mut s = store(4..8);
        let w = walk(&mut s, 0, 6, Retention::Millis(100_000), 9000, Extent::Everything).unwrap();
        assert_eq!(seqs(&w.live), vec![4, 5, 6, 7]);
    }

    #[test]
    fn a_gap_past_a_stale_tail_rereads_the_moved_head() {
        let mut s = store(20..25);
        s.head = 20;
        let w = walk(&mut s, 0, 3, Retention::Millis(100_000), 9000, Extent::Everything).unwrap();
        assert_eq!(seqs(&w.live), vec![20, 21, 22, 23, 24]);
    }

    #[test]
    fn reads_are_proportional_to_the_window() {
        let mut s = store(0..1000);
        s.head = 990;
        let w = walk(&mut s, 990, 1000, Retention::Millis(100_000), 1_000_000, Extent::Everything).unwrap();
        assert_eq!(w.live.len(), 10);
        assert_eq!(s.reads, 11);
    }

    #[test]
    fn a_window_reads_what_it_lists_and_a_look_back_below_the_newest_expired_segment() {
        // 0..100 stored at 1 s apart; retention 10 s at 99.5 s: 90..99 are listed.
        let mut s = counted(0..100);
        let w = walk_window(&mut s, 0, 95, Retention::Millis(10_000), 99_500).unwrap();
        assert_eq!(seqs(&w.live), (90..100).collect::<Vec<_>>());
        // 5 ahead of the tail + the end probe, then 94 down to 89 (the newest expired) and 64
        // more below it, looking for segments stored out of order.
        assert_eq!(s.reads, 6 + 6 + LOOK_BACK as usize);
        // One stored late below the newest expired segment is listed, with what follows it.
        s.metas.get_mut(&70).unwrap().stored_ms = 95_000;
        let w = walk_window(&mut s, 0, 100, Retention::Millis(10_000), 99_500).unwrap();
        assert_eq!(seqs(&w.live), (70..100).collect::<Vec<_>>());
        assert_eq!(w.live[0].disc_seq, Some(0));
        // Metas without counts (stored before counts existed): the walk looks back a bounded
        // number of seqs for one, and leaves the count to the caller when none has it.
        let mut s = store(0..100);
        let w = walk_window(&mut s, 0, 100, Retention::Millis(10_000), 99_500).unwrap();
        assert_eq!(w.live[0].disc_seq, None);
        assert_eq!(w.count_from, Some((26, 0)));
        assert!(s.reads <= 12 + (LOOK_BACK + CARRY_BACK) as usize);
    }

    #[test]
    fn a_window_lists_at_most_the_newest_max_segments_and_its_start_never_goes_back() {
        let n = MAX_WINDOW_SEGMENTS as u64 * 3;
        let mut s = counted(0..n);
        let retention = Retention::Millis(100_000_000);
        let w = walk_window(&mut s, 0, n, retention, n as i64 * 1000).unwrap();
        assert_eq!(w.live.len(), MAX_WINDOW_SEGMENTS);
        assert_eq!(w.live[0].seq, n - MAX_WINDOW_SEGMENTS as u64);
        assert!(s.reads <= MAX_WINDOW_SEGMENTS + 2, "{} reads", s.reads);
        let mut last_first = 0;
        for end in n..n + 50 {
            s.metas.insert(end, SegmentMeta { disc_seq: Some(0), ..meta(end, end as i64 * 1000) });
            // A stale tail hint costs probes, never an earlier start.
            let w = walk_window(&mut s, 0, end - 40, retention, end as i64 * 1000).unwrap();
            assert!(w.live[0].seq >= last_first);
            assert_eq!(w.live.last().unwrap().seq, end);
            last_first = w.live[0].seq;
        }
    }

    #[test]
    fn a_window_ends_at_a_hole_and_starts_after_a_deleted_seq() {
        let mut s = counted((0..30).chain(32..40));
        let retention = Retention::Millis(100_000_000);
        let w = walk_window(&mut s, 0, 10, retention, 50_000).unwrap();
        assert_eq!(seqs(&w.live), (0..30).collect::<Vec<_>>());
        // Seqs 0..5 deleted by retention while the hint says 10: the run starts at 5.
        for seq in 0..5 {
            s.metas.remove(&seq);
        }
        let w = walk_window(&mut s, 0, 10, retention, 50_000).unwrap();
        assert_eq!(seqs(&w.live), (5..30).collect::<Vec<_>>());
        // Head moved past a tail hint that lags: the walk starts at the head.
        s.head = 20;
        let w = walk_window(&mut s, 20, 3, retention, 50_000).unwrap();
        assert_eq!(seqs(&w.live), (20..30).collect::<Vec<_>>());
        // Everything expired: nothing listed.
        let w = walk_window(&mut s, 20, 30, Retention::Millis(1000), 50_000).unwrap();
        assert!(w.live.is_empty());
    }

    #[test]
    fn a_window_carries_the_count_to_a_first_segment_stored_out_of_order() {
        let mut s = store(0..20);
        for m in s.metas.values_mut() {
            m.disc_seq = Some(0);
            m.discontinuity = m.seq == 3 || m.seq == 12;
        }
        for m in s.metas.values_mut() {
            m.disc_seq = match m.seq {
                0..=3 => Some(0),
                4..=12 => Some(1),
                _ => Some(2),
            };
        }
        // 13 and 14 were committed before their predecessors.
        s.metas.get_mut(&13).unwrap().disc_seq = None;
        s.metas.get_mut(&14).unwrap().disc_seq = None;
        // Retention 6 s at 19.5 s: 14..19 listed (13 expired).
        let w = walk_window(&mut s, 0, 20, Retention::Millis(6000), 19_500).unwrap();
        assert_eq!(w.live[0].seq, 14);
        assert_eq!(w.live[0].disc_seq, Some(2));
    }

    #[test]
    fn view_counts_breaks_before_the_window_and_decides_the_state() {
        let record = StreamRecord { target_s: 2, created_ms: 0, part_target_ms: None, first_seq: None };
        let breaks = Breaks { before: 0, seqs: vec![1, 3, 8] };
        let segments: Vec<_> = (4..8).map(|s| meta(s, s as i64 * 1000)).collect();
        let view = StreamView::assemble(&record, breaks.count_before(4), None, segments.clone(), Retention::Millis(5000), 30_000, 8000)
            .unwrap();
        assert_eq!(view.discontinuity_sequence, 2);
        assert_eq!(view.state, State::Live);
        assert_eq!(view.kind, PlaylistKind::Sliding);
        assert_eq!(view.duration_ms(), 8000);
        let stop = EndMarker { after_seq: 7, at_ms: 8000 };
        let view = StreamView::assemble(&record, breaks.count_before(4), Some(&stop), segments, Retention::Forever, 30_000, 8000)
            .unwrap();
        assert_eq!(view.state, State::Ended);
        assert_eq!(view.kind, PlaylistKind::Event);
        assert!(StreamView::assemble(&record, 0, None, vec![], Retention::Forever, 1, 0).is_none());
    }
}
