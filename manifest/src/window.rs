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
        if let Extent::ExpiredOnly { max } = extent {
            if walk.expired.len() >= max {
                break;
            }
        }
        match source.meta(seq)? {
            Some(mut meta) => {
                meta.disc_seq = meta.disc_seq.or(carried);
                carried = meta.disc_seq_after();
                if walk.live.is_empty() && retention.is_expired(meta.stored_ms, now_ms) {
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
        }
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
    fn view_counts_breaks_before_the_window_and_decides_the_state() {
        let record = StreamRecord { target_s: 2, created_ms: 0, part_target_ms: None };
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
