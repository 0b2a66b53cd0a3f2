//! Upload queue policy: order, retry with backoff, the outage buffer bound, what is retryable.
//!
//! Pure and clock-free: the caller passes `now_ms` and a jitter value in `[0, 1)`. A segment
//! gets its `seq` when it is first sent, so seqs stay dense even when the bound drops old
//! segments during a long outage; the first segment after a drop carries a discontinuity.
//!
//! A seq, once sent, is never reused for other bytes (issue 11): a request that timed out may
//! still complete on the server, so a sent seq is never given to another segment. (Freeing a
//! sent seq let the next segment take it: a `409`, or, when both landed, an acknowledged segment
//! silently replaced.) The buffer bound drops the oldest segments, sent or not, but never the
//! request on the wire; a dropped segment that was sent and not answered leaves its seq to a
//! gap (`POST /ingest/{session}/{seq}/gap`): the queue declares the gap, retried like an upload
//! until the server answers `201`/`200` (recorded) or `409` (the late upload landed first: the
//! segment counts as acknowledged), before anything after it goes out. The server settles a
//! gap racing the late upload so that exactly one holds the seq and the playlist moves on with a
//! discontinuity.
//! [`UploadQueue`] sends whole segments (wire contract v1), [`PartQueue`] the parts and commits
//! of low-latency segments (v2).

use std::collections::VecDeque;

/// How much media (ms) is kept while the server cannot be reached.
pub const MAX_BUFFER_MS: u64 = 5 * 60 * 1000;

/// What an upload attempt came back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 200/201: stored.
    Acked,
    /// 409: the server holds different bytes for this seq.
    Conflict,
    /// Network error, 408, 429 or 5xx: try again later.
    Retry,
    /// Any other answer (400, 401, 403, 404, 413, …): retrying will not help.
    Fatal(u16),
}

/// Classifies an HTTP status (`None` = the request never got an answer).
pub fn classify(status: Option<u16>) -> Outcome {
    match status {
        None => Outcome::Retry,
        Some(200 | 201) => Outcome::Acked,
        Some(409) => Outcome::Conflict,
        Some(408 | 429) => Outcome::Retry,
        Some(s) if (500..600).contains(&s) => Outcome::Retry,
        Some(s) => Outcome::Fatal(s),
    }
}

/// Exponential backoff with a cap and ±20 % jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base_ms: u64,
    pub cap_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base_ms: 250,
            cap_ms: 4000,
        }
    }
}

impl Backoff {
    /// Delay before retry number `attempt` (1 = first retry); `jitter` in `[0, 1)`.
    pub fn delay_ms(&self, attempt: u32, jitter: f64) -> u64 {
        let exp = self
            .base_ms
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
        let d = exp.min(self.cap_ms) as f64;
        (d * (0.8 + 0.4 * jitter.clamp(0.0, 1.0))).round() as u64
    }
}

/// One queued segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<T> {
    pub payload: T,
    pub duration_ms: u64,
    pub seq: Option<u64>,
    pub discontinuity: bool,
}

/// What to send next.
#[derive(Debug, PartialEq)]
pub struct Send<'a, T> {
    pub seq: u64,
    pub discontinuity: bool,
    pub duration_ms: u64,
    pub payload: &'a T,
}

/// A gap to declare: seq `seq` was sent, not answered, and dropped by the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub seq: u64,
    /// The dropped segment's duration (sent as `X-Duration`).
    pub duration_ms: u64,
}

/// How the answer to a gap settled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapSettled {
    /// `201`/`200`: the server recorded the gap.
    Recorded(Gap),
    /// `409`: the server holds the dropped segment after all (its late upload landed first),
    /// so it counts as acknowledged.
    SegmentHeld(Gap),
    /// Not answered or refused: retried after the backoff (or the queue halted).
    Pending,
}

/// What the request on the wire is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flight {
    Segment,
    Gap,
}

/// The queue's policy state.
#[derive(Debug)]
pub struct UploadQueue<T> {
    items: VecDeque<Entry<T>>,
    /// Gaps to declare, oldest first; they go before any segment.
    gaps: VecDeque<Gap>,
    next_seq: u64,
    in_flight: Option<Flight>,
    attempts: u32,
    retry_at_ms: u64,
    halted: Option<u16>,
    gap: bool,
    backoff: Backoff,
    max_buffer_ms: u64,
    /// Segments dropped by the buffer bound so far.
    pub dropped: u64,
}

impl<T> UploadQueue<T> {
    pub fn new(backoff: Backoff, max_buffer_ms: u64) -> Self {
        UploadQueue {
            items: VecDeque::new(),
            gaps: VecDeque::new(),
            next_seq: 0,
            in_flight: None,
            attempts: 0,
            retry_at_ms: 0,
            halted: None,
            gap: false,
            backoff,
            max_buffer_ms,
            dropped: 0,
        }
    }

    /// Segments not yet acknowledged, and gaps not yet declared.
    pub fn waiting(&self) -> usize {
        self.items.len() + self.gaps.len()
    }

    /// Gaps not yet declared.
    pub fn gaps_waiting(&self) -> usize {
        self.gaps.len()
    }

    /// Failed attempts in a row for the head segment.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// When the next attempt may start.
    pub fn retry_at_ms(&self) -> u64 {
        self.retry_at_ms
    }

    /// The status that stopped the queue for good, if any.
    pub fn halted(&self) -> Option<u16> {
        self.halted
    }

    /// Next seq that will be assigned.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Adds a segment at the tail, then drops the oldest ones beyond the bound (never the
    /// newest, nor the one whose request is on the wire). A dropped segment that was sent leaves
    /// a gap to declare under its seq; the segment after a drop starts a discontinuity.
    pub fn push(&mut self, payload: T, duration_ms: u64) {
        self.items.push_back(Entry {
            payload,
            duration_ms,
            seq: None,
            discontinuity: false,
        });
        let mut total: u64 = self.items.iter().map(|e| e.duration_ms).sum();
        while total > self.max_buffer_ms && self.items.len() > 1 {
            // The request on the wire must find its segment when its answer comes.
            let idx = usize::from(self.in_flight == Some(Flight::Segment));
            if idx >= self.items.len() - 1 {
                break;
            }
            let gone = self.items.remove(idx).expect("index checked");
            total -= gone.duration_ms;
            self.dropped += 1;
            if let Some(seq) = gone.seq {
                // Sent and not answered: it may still land, so its seq is never reused; the
                // server is told to give it up instead.
                self.gaps.push_back(Gap { seq, duration_ms: gone.duration_ms });
                self.attempts = 0;
                self.retry_at_ms = 0;
            }
            if idx == 0 {
                self.gap = true;
            } else if let Some(next) = self.items.get_mut(idx) {
                next.discontinuity = true;
            }
        }
    }

    /// The gap to declare now, if any: it goes before any segment.
    pub fn next_gap(&mut self, now_ms: u64) -> Option<Gap> {
        if self.in_flight.is_some() || self.halted.is_some() || now_ms < self.retry_at_ms {
            return None;
        }
        let gap = *self.gaps.front()?;
        self.in_flight = Some(Flight::Gap);
        Some(gap)
    }

    /// The segment to send now, if any; assigns its seq on first send. `None` while a gap
    /// waits to be declared ([`UploadQueue::next_gap`] first).
    pub fn next(&mut self, now_ms: u64) -> Option<Send<'_, T>> {
        if self.in_flight.is_some() || self.halted.is_some() || now_ms < self.retry_at_ms || !self.gaps.is_empty() {
            return None;
        }
        let gap = std::mem::take(&mut self.gap);
        let next_seq = &mut self.next_seq;
        let head = self.items.front_mut()?;
        head.discontinuity |= gap;
        let seq = *head.seq.get_or_insert_with(|| {
            let s = *next_seq;
            *next_seq += 1;
            s
        });
        self.in_flight = Some(Flight::Segment);
        Some(Send {
            seq,
            discontinuity: head.discontinuity,
            duration_ms: head.duration_ms,
            payload: &head.payload,
        })
    }

    /// Records the answer to the gap `next_gap` handed out.
    pub fn settle_gap(&mut self, outcome: Outcome, now_ms: u64, jitter: f64) -> GapSettled {
        debug_assert_eq!(self.in_flight, Some(Flight::Gap));
        self.in_flight = None;
        match outcome {
            Outcome::Acked | Outcome::Conflict => {
                self.attempts = 0;
                self.retry_at_ms = 0;
                let Some(gap) = self.gaps.pop_front() else {
                    return GapSettled::Pending;
                };
                if outcome == Outcome::Acked {
                    GapSettled::Recorded(gap)
                } else {
                    GapSettled::SegmentHeld(gap)
                }
            }
            other => {
                self.failed(other, now_ms, jitter);
                GapSettled::Pending
            }
        }
    }

    /// Records the answer to the request `next` handed out; returns the acked entry.
    pub fn settle(&mut self, outcome: Outcome, now_ms: u64, jitter: f64) -> Option<Entry<T>> {
        debug_assert_eq!(self.in_flight, Some(Flight::Segment));
        self.in_flight = None;
        match outcome {
            Outcome::Acked => {
                self.attempts = 0;
                self.retry_at_ms = 0;
                self.items.pop_front()
            }
            Outcome::Conflict => {
                // That seq is taken by other bytes: move this segment to a fresh seq.
                if let Some(head) = self.items.front_mut() {
                    head.seq = Some(self.next_seq);
                    head.discontinuity = true;
                    self.next_seq += 1;
                }
                None
            }
            other => {
                self.failed(other, now_ms, jitter);
                None
            }
        }
    }

    /// A retry after the backoff, or the end of the queue.
    fn failed(&mut self, outcome: Outcome, now_ms: u64, jitter: f64) {
        match outcome {
            Outcome::Fatal(status) => self.halted = Some(status),
            _ => {
                self.attempts += 1;
                self.retry_at_ms = now_ms + self.backoff.delay_ms(self.attempts, jitter);
            }
        }
    }
}

/// What to send next from a [`PartQueue`].
#[derive(Debug, PartialEq)]
pub enum Item<'a, T> {
    /// `PUT` part `part` of segment `seq`.
    Part {
        seq: u64,
        part: u32,
        /// Only ever on part 0: the segment starts after a break.
        discontinuity: bool,
        duration_ms: u64,
        payload: &'a T,
    },
    /// `POST` the commit of segment `seq` from its `parts` parts.
    Commit { seq: u64, parts: u32 },
    /// `POST` a gap for segment `seq`: it was sent in part and dropped by the bound.
    Gap(Gap),
}

/// What an acknowledgement settled.
#[derive(Debug, PartialEq)]
pub enum Acked<'a, T> {
    Part(&'a T),
    /// The segment is sealed and left the queue.
    Commit {
        seq: u64,
        parts: u32,
    },
    /// The gap is settled: `recorded` (`201`/`200`), or the server had sealed the segment
    /// after all (`409`: it counts as acknowledged).
    Gap { gap: Gap, recorded: bool },
}

/// One segment's parts in the queue.
#[derive(Debug)]
struct Seg<T> {
    parts: Vec<(T, u64)>,
    /// Every part is here (its commit may be sent).
    sealed: bool,
    /// Parts the server acknowledged.
    acked: usize,
    seq: Option<u64>,
    discontinuity: bool,
}

impl<T> Seg<T> {
    fn unsent_ms(&self) -> u64 {
        self.parts[self.acked..].iter().map(|p| p.1).sum()
    }
}

/// Upload order for low-latency parts (wire contract v2): one queue of parts and commits,
/// strictly in order, one request at a time.
///
/// A segment gets its `seq` when its part 0 is first sent, so seqs stay dense. Once any request
/// of a segment went out, the segment is never dropped and never changes: a retry sends the same
/// part again, so the server never sees two bodies under one `(seq, part)`, and no sealed
/// segment can end up without the parts it names. During an outage the bound drops whole
/// sealed segments, oldest first (never the newest, nor one with a request on the wire); one
/// that was sent in part leaves a gap to declare under its seq, which goes before anything
/// else. The segment after a drop starts with a discontinuity.
#[derive(Debug)]
pub struct PartQueue<T> {
    segs: VecDeque<Seg<T>>,
    /// Gaps to declare, oldest first.
    gaps: VecDeque<Gap>,
    next_seq: u64,
    in_flight: Option<Flight>,
    attempts: u32,
    retry_at_ms: u64,
    halted: Option<u16>,
    /// The next segment queued starts after dropped ones.
    gap: bool,
    backoff: Backoff,
    max_buffer_ms: u64,
    /// Segments dropped by the buffer bound so far.
    pub dropped: u64,
}

impl<T> PartQueue<T> {
    pub fn new(backoff: Backoff, max_buffer_ms: u64) -> Self {
        PartQueue {
            segs: VecDeque::new(),
            gaps: VecDeque::new(),
            next_seq: 0,
            in_flight: None,
            attempts: 0,
            retry_at_ms: 0,
            halted: None,
            gap: false,
            backoff,
            max_buffer_ms,
            dropped: 0,
        }
    }

    /// Segments not yet sealed on the server (the one being recorded included), and gaps not
    /// yet declared.
    pub fn waiting(&self) -> usize {
        self.segs.len() + self.gaps.len()
    }

    /// Gaps not yet declared.
    pub fn gaps_waiting(&self) -> usize {
        self.gaps.len()
    }

    /// Media (ms) in parts not yet acknowledged.
    pub fn waiting_ms(&self) -> u64 {
        self.segs.iter().map(Seg::unsent_ms).sum()
    }

    /// Failed attempts in a row for the head request.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// When the next attempt may start.
    pub fn retry_at_ms(&self) -> u64 {
        self.retry_at_ms
    }

    /// The status that stopped the queue for good, if any.
    pub fn halted(&self) -> Option<u16> {
        self.halted
    }

    /// Adds a part; `first` starts a new segment (and seals an unsealed one before it, which
    /// only happens if its seal never came).
    pub fn push_part(&mut self, payload: T, duration_ms: u64, first: bool) {
        let open = self.segs.back().is_some_and(|s| !s.sealed);
        if first || !open {
            if let Some(prev) = self.segs.back_mut() {
                prev.sealed = true;
            }
            self.segs.push_back(Seg {
                parts: Vec::new(),
                sealed: false,
                acked: 0,
                seq: None,
                discontinuity: std::mem::take(&mut self.gap),
            });
        }
        let seg = self.segs.back_mut().expect("pushed above");
        seg.parts.push((payload, duration_ms));
    }

    /// The segment being filled has all its parts: its commit may go, and the bound applies.
    pub fn seal(&mut self) {
        if let Some(seg) = self.segs.back_mut() {
            seg.sealed = true;
        }
        self.bound();
    }

    /// Drops the oldest sealed segments while more than the bound waits; a sent one (only the
    /// head is ever sent) leaves a gap to declare, unless its request is on the wire.
    fn bound(&mut self) {
        let mut total = self.waiting_ms();
        while total > self.max_buffer_ms {
            // Never the newest: what comes after a drop must exist to carry the discontinuity.
            let last = self.segs.len().saturating_sub(1);
            let on_wire = self.in_flight == Some(Flight::Segment);
            let Some(idx) = self
                .segs
                .iter()
                .take(last)
                .enumerate()
                .position(|(i, s)| s.sealed && (s.seq.is_none() || (i == 0 && !on_wire)))
            else {
                break;
            };
            let gone = self.segs.remove(idx).expect("index found");
            total -= gone.unsent_ms();
            self.dropped += 1;
            if let Some(seq) = gone.seq {
                let duration_ms = gone.parts.iter().map(|p| p.1).sum();
                self.gaps.push_back(Gap { seq, duration_ms });
                self.attempts = 0;
                self.retry_at_ms = 0;
            }
            if let Some(next) = self.segs.get_mut(idx) {
                next.discontinuity = true;
            }
        }
    }

    /// The request to make now, if any; assigns the segment's seq on its first request.
    pub fn next(&mut self, now_ms: u64) -> Option<Item<'_, T>> {
        if self.in_flight.is_some() || self.halted.is_some() || now_ms < self.retry_at_ms {
            return None;
        }
        if let Some(gap) = self.gaps.front() {
            self.in_flight = Some(Flight::Gap);
            return Some(Item::Gap(*gap));
        }
        let next_seq = &mut self.next_seq;
        let head = self.segs.front_mut()?;
        let item_ready = head.acked < head.parts.len() || head.sealed;
        if !item_ready {
            return None;
        }
        let seq = *head.seq.get_or_insert_with(|| {
            let s = *next_seq;
            *next_seq += 1;
            s
        });
        self.in_flight = Some(Flight::Segment);
        Some(match head.parts.get(head.acked) {
            Some((payload, duration_ms)) => Item::Part {
                seq,
                part: head.acked as u32,
                discontinuity: head.acked == 0 && head.discontinuity,
                duration_ms: *duration_ms,
                payload,
            },
            None => Item::Commit {
                seq,
                parts: head.parts.len() as u32,
            },
        })
    }

    /// Records the answer to the request `next` handed out.
    pub fn settle(&mut self, outcome: Outcome, now_ms: u64, jitter: f64) -> Option<Acked<'_, T>> {
        let flight = self.in_flight.take();
        if flight == Some(Flight::Gap) {
            if let Outcome::Acked | Outcome::Conflict = outcome {
                self.attempts = 0;
                self.retry_at_ms = 0;
                let gap = self.gaps.pop_front()?;
                return Some(Acked::Gap { gap, recorded: outcome == Outcome::Acked });
            }
        }
        match outcome {
            Outcome::Acked => {
                self.attempts = 0;
                self.retry_at_ms = 0;
                let head = self.segs.front_mut()?;
                if head.acked < head.parts.len() {
                    head.acked += 1;
                    let head = self.segs.front()?;
                    return Some(Acked::Part(&head.parts[head.acked - 1].0));
                }
                let seg = self.segs.pop_front()?;
                Some(Acked::Commit {
                    seq: seg.seq.unwrap_or_default(),
                    parts: seg.parts.len() as u32,
                })
            }
            Outcome::Conflict => {
                // That seq holds something else: the whole segment again, under a fresh seq.
                if let Some(head) = self.segs.front_mut() {
                    head.seq = Some(self.next_seq);
                    head.acked = 0;
                    head.discontinuity = true;
                    self.next_seq += 1;
                }
                None
            }
            Outcome::Retry => {
                self.attempts += 1;
                self.retry_at_ms = now_ms + self.backoff.delay_ms(self.attempts, jitter);
                None
            }
            Outcome::Fatal(status) => {
                self.halted = Some(status);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> UploadQueue<&'static str> {
        UploadQueue::new(Backoff::default(), 10_000)
    }

    #[test]
    fn sends_in_order_one_at_a_time_with_dense_seqs() {
        let mut q = q();
        q.push("a", 2000);
        q.push("b", 2000);
        let s = q.next(0).unwrap();
        assert_eq!((s.seq, *s.payload), (0, "a"));
        assert!(q.next(0).is_none(), "one request at a time");
        assert_eq!(q.settle(Outcome::Acked, 1, 0.5).unwrap().payload, "a");
        let s = q.next(1).unwrap();
        assert_eq!((s.seq, *s.payload, s.discontinuity), (1, "b", false));
    }

    #[test]
    fn classification_of_answers() {
        assert_eq!(classify(None), Outcome::Retry);
        assert_eq!(classify(Some(201)), Outcome::Acked);
        assert_eq!(classify(Some(200)), Outcome::Acked);
        assert_eq!(classify(Some(503)), Outcome::Retry);
        assert_eq!(classify(Some(429)), Outcome::Retry);
        assert_eq!(classify(Some(409)), Outcome::Conflict);
        for s in [400, 401, 403, 404, 413] {
            assert_eq!(classify(Some(s)), Outcome::Fatal(s));
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let b = Backoff {
            base_ms: 250,
            cap_ms: 4000,
        };
        assert_eq!(b.delay_ms(1, 0.5), 250);
        assert_eq!(b.delay_ms(2, 0.5), 500);
        assert_eq!(b.delay_ms(3, 0.5), 1000);
        assert_eq!(b.delay_ms(10, 0.5), 4000);
        assert_eq!(b.delay_ms(u32::MAX, 0.5), 4000);
        assert_eq!(b.delay_ms(1, 0.0), 200);
        assert_eq!(b.delay_ms(1, 0.999_999), 300);
    }

    #[test]
    fn retries_the_same_seq_after_the_backoff() {
        let mut q = q();
        q.push("a", 2000);
        assert_eq!(q.next(0).unwrap().seq, 0);
        q.settle(Outcome::Retry, 100, 0.5);
        assert_eq!(q.retry_at_ms(), 350);
        assert!(q.next(349).is_none());
        assert_eq!(q.next(350).unwrap().seq, 0);
        q.settle(Outcome::Retry, 400, 0.5);
        assert_eq!(q.attempts(), 2);
        assert_eq!(q.retry_at_ms(), 900);
    }

    #[test]
    fn fatal_answers_stop_the_queue() {
        let mut q = q();
        q.push("a", 2000);
        q.next(0).unwrap();
        q.settle(Outcome::Fatal(401), 0, 0.5);
        assert_eq!(q.halted(), Some(401));
        assert!(q.next(1_000_000).is_none());
        assert_eq!(q.waiting(), 1);
    }

    #[test]
    fn the_bound_drops_oldest_unsent_and_marks_the_gap_keeping_seqs_dense() {
        let mut q = q(); // 10 s bound
        for name in ["s0", "s1", "s2", "s3", "s4", "s5"] {
            q.push(name, 2000);
        }
        // 12 s queued > 10 s, nothing sent yet: s0 dropped, s1 takes seq 0 after the gap.
        assert_eq!(q.dropped, 1);
        assert_eq!(q.waiting(), 5);
        let s = q.next(0).unwrap();
        assert_eq!((s.seq, *s.payload, s.discontinuity), (0, "s1", true));
        q.settle(Outcome::Acked, 0, 0.5);
        let s = q.next(0).unwrap();
        assert_eq!((s.seq, s.discontinuity), (1, false));
    }

    #[test]
    fn regression_issue_11_a_sent_segment_dropped_by_the_bound_leaves_a_gap_never_its_seq() {
        let mut q = q(); // 10 s bound
        q.push("s0", 2000);
        assert_eq!(q.next(0).unwrap().seq, 0);
        q.settle(Outcome::Retry, 0, 0.5); // timed out: seq 0 may still land on the server
        for name in ["s1", "s2", "s3", "s4", "s5"] {
            q.push(name, 2000);
        }
        // 12 s queued > 10 s: s0, the oldest, goes although it was sent; seq 0 becomes a gap.
        assert_eq!(q.dropped, 1);
        assert_eq!(q.gaps_waiting(), 1);
        assert_eq!(q.waiting(), 6, "five segments and the gap");
        assert!(q.next(0).is_none(), "nothing goes before the gap");
        assert_eq!(q.next_gap(0), Some(Gap { seq: 0, duration_ms: 2000 }));
        assert!(q.next_gap(0).is_none() && q.next(0).is_none(), "one request at a time");
        // Unanswered again: the same gap again after the backoff, never seq 0 for other bytes.
        assert_eq!(q.settle_gap(Outcome::Retry, 0, 0.5), GapSettled::Pending);
        assert!(q.next_gap(100).is_none() && q.next(100).is_none(), "backing off");
        assert_eq!(q.next_gap(250), Some(Gap { seq: 0, duration_ms: 2000 }));
        let settled = q.settle_gap(Outcome::Acked, 300, 0.5);
        assert_eq!(settled, GapSettled::Recorded(Gap { seq: 0, duration_ms: 2000 }));
        let s = q.next(300).unwrap();
        assert_eq!((s.seq, *s.payload, s.discontinuity), (1, "s1", true), "a fresh seq after the gap");
        q.settle(Outcome::Acked, 300, 0.5);
        let s = q.next(300).unwrap();
        assert_eq!((s.seq, *s.payload, s.discontinuity), (2, "s2", false));
    }

    #[test]
    fn a_gap_refused_because_the_late_upload_landed_counts_the_segment_as_acknowledged() {
        let mut q = q();
        q.push("s0", 6000);
        q.next(0).unwrap();
        q.settle(Outcome::Retry, 0, 0.5);
        q.push("s1", 6000); // 12 s > 10 s: s0 goes
        let gap = q.next_gap(1000).unwrap();
        assert_eq!(gap, Gap { seq: 0, duration_ms: 6000 });
        assert_eq!(q.settle_gap(Outcome::Conflict, 1000, 0.5), GapSettled::SegmentHeld(gap));
        let s = q.next(1000).unwrap();
        assert_eq!((s.seq, *s.payload), (1, "s1"));
        assert_eq!(q.waiting(), 1);
    }

    #[test]
    fn a_fatal_answer_to_a_gap_stops_the_queue() {
        let mut q = q();
        q.push("s0", 6000);
        q.next(0).unwrap();
        q.settle(Outcome::Retry, 0, 0.5);
        q.push("s1", 6000);
        q.next_gap(1000).unwrap();
        assert_eq!(q.settle_gap(Outcome::Fatal(401), 1000, 0.5), GapSettled::Pending);
        assert_eq!(q.halted(), Some(401));
        assert!(q.next_gap(1_000_000).is_none() && q.next(1_000_000).is_none());
    }

    #[test]
    fn every_seq_goes_out_with_one_body_or_one_gap_whatever_the_outage() {
        // A long outage with answers lost at random: each seq the queue hands out is either
        // segment bytes (always the same ones) or a gap, never both kinds or two bodies.
        let mut q: UploadQueue<u32> = UploadQueue::new(Backoff::default(), 10_000);
        let mut sent: std::collections::BTreeMap<u64, Vec<Option<u32>>> = Default::default();
        let mut now = 0;
        let mut rng = 7u64;
        let mut next_payload = 0;
        for step in 0..2000 {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            if step % 3 == 0 {
                q.push(next_payload, 2000);
                next_payload += 1;
            }
            now += 700;
            let answered = (rng >> 33) % 4 == 0 || step > 1800;
            let outcome = if answered { Outcome::Acked } else { Outcome::Retry };
            if let Some(gap) = q.next_gap(now) {
                sent.entry(gap.seq).or_default().push(None);
                q.settle_gap(outcome, now, 0.5);
            } else if let Some(s) = q.next(now) {
                sent.entry(s.seq).or_default().push(Some(*s.payload));
                q.settle(outcome, now, 0.5);
            }
        }
        assert!(q.dropped > 0);
        let mut gaps = 0;
        for (seq, uses) in &sent {
            let bodies: std::collections::BTreeSet<u32> = uses.iter().flatten().copied().collect();
            assert!(bodies.len() <= 1, "seq {seq} carried two bodies: {uses:?}");
            if uses.contains(&None) {
                gaps += 1;
                // A gap follows the body it gives up; nothing but the gap after it.
                let first_gap = uses.iter().position(Option::is_none).unwrap();
                assert!(uses[first_gap..].iter().all(Option::is_none), "seq {seq}: {uses:?}");
            }
        }
        assert!(gaps > 0, "the run dropped a sent segment");
        assert_eq!(*sent.keys().last().unwrap() + 1, sent.len() as u64, "seqs stay dense");
    }

    #[test]
    fn the_bound_never_drops_the_request_in_flight() {
        let mut q = q();
        q.push("s0", 2000);
        q.next(0).unwrap(); // in flight
        for name in ["s1", "s2", "s3", "s4", "s5"] {
            q.push(name, 2000);
        }
        assert_eq!(q.waiting(), 5);
        assert_eq!(q.settle(Outcome::Acked, 0, 0.5).unwrap().payload, "s0");
        let s = q.next(0).unwrap();
        assert_eq!((s.seq, *s.payload, s.discontinuity), (1, "s2", true));
    }

    #[test]
    fn a_conflict_moves_the_segment_to_a_fresh_seq() {
        let mut q = q();
        q.push("a", 2000);
        q.next(0).unwrap();
        assert!(q.settle(Outcome::Conflict, 0, 0.5).is_none());
        let s = q.next(0).unwrap();
        assert_eq!((s.seq, s.discontinuity), (1, true));
    }

    fn pq() -> PartQueue<&'static str> {
        PartQueue::new(Backoff::default(), 10_000)
    }

    /// Acks everything the queue hands out until it has nothing; returns what went out.
    fn drain(q: &mut PartQueue<&'static str>) -> Vec<String> {
        let mut sent = Vec::new();
        while let Some(item) = q.next(1_000_000) {
            sent.push(match item {
                Item::Part {
                    seq,
                    part,
                    discontinuity,
                    payload,
                    ..
                } => {
                    format!(
                        "{seq}/{part}:{payload}{}",
                        if discontinuity { "!" } else { "" }
                    )
                }
                Item::Commit { seq, parts } => format!("{seq}/commit {parts}"),
                Item::Gap(gap) => format!("{}/gap {}", gap.seq, gap.duration_ms),
            });
            q.settle(Outcome::Acked, 1_000_000, 0.5);
        }
        sent
    }

    #[test]
    fn parts_go_in_order_and_a_commit_follows_each_segments_last_part() {
        let mut q = pq();
        q.push_part("a0", 334, true);
        q.push_part("a1", 334, false);
        assert_eq!(
            drain(&mut q),
            ["0/0:a0", "0/1:a1"],
            "no commit before the seal"
        );
        q.push_part("a2", 300, false);
        q.seal();
        q.push_part("b0", 334, true);
        assert_eq!(drain(&mut q), ["0/2:a2", "0/commit 3", "1/0:b0"]);
        assert_eq!(q.waiting(), 1, "segment 1 is still open");
        q.seal();
        assert_eq!(drain(&mut q), ["1/commit 1"]);
        assert_eq!(q.waiting(), 0);
    }

    #[test]
    fn a_retry_sends_the_same_part_under_the_same_seq() {
        let mut q = pq();
        q.push_part("a0", 334, true);
        q.push_part("a1", 334, false);
        q.next(0).unwrap();
        q.settle(Outcome::Acked, 0, 0.5);
        let first = format!("{:?}", q.next(0).unwrap());
        q.settle(Outcome::Retry, 100, 0.5);
        assert!(q.next(349).is_none(), "backing off");
        assert_eq!(format!("{:?}", q.next(350).unwrap()), first);
        assert!(matches!(
            q.settle(Outcome::Acked, 400, 0.5),
            Some(Acked::Part(&"a1"))
        ));
    }

    #[test]
    fn the_bound_drops_whole_sealed_segments_and_a_sent_one_becomes_a_gap() {
        let mut q = pq(); // 10 s bound
        q.push_part("s0p0", 1000, true);
        q.next(0).unwrap();
        q.settle(Outcome::Retry, 0, 0.5); // server down while s0's part 0 is out
        q.push_part("s0p1", 1000, false);
        q.seal();
        for s in ["s1", "s2", "s3", "s4", "s5"] {
            q.push_part(s, 1000, true);
            q.push_part(s, 1000, false);
            q.seal();
        }
        // 12 s waiting > 10 s: s0 goes (the oldest; sent, so seq 0 becomes a gap).
        assert_eq!((q.dropped, q.gaps_waiting(), q.waiting_ms()), (1, 1, 10_000));
        q.push_part("s6", 1000, true); // open segments are never dropped
        q.push_part("s6", 1000, false);
        assert_eq!(q.dropped, 1);
        q.seal();
        assert_eq!(q.dropped, 2, "s1 goes, never sent: no gap");
        assert_eq!(q.gaps_waiting(), 1);
        let sent = drain(&mut q);
        assert_eq!(&sent[..4], ["0/gap 2000", "1/0:s2!", "1/1:s2", "1/commit 2"]);
        assert_eq!(sent.iter().filter(|s| s.ends_with('!')).count(), 1);
        assert_eq!(sent.last().unwrap(), "5/commit 2", "seqs stay dense");
    }

    #[test]
    fn the_bound_never_drops_a_segment_whose_request_is_on_the_wire() {
        let mut q = pq();
        q.push_part("a", 6000, true);
        q.next(0).unwrap(); // on the wire
        q.push_part("a", 6000, false);
        q.seal();
        q.push_part("b", 6000, true);
        q.seal();
        assert_eq!(q.dropped, 0, "a is on the wire; b is the newest");
        assert_eq!(q.waiting_ms(), 18_000);
        q.settle(Outcome::Retry, 0, 0.5);
        q.push_part("c", 6000, true);
        q.seal();
        assert_eq!((q.dropped, q.gaps_waiting()), (2, 1), "a (a gap now) and b go");
        assert_eq!(drain(&mut q), ["0/gap 12000", "1/0:c!", "1/commit 1"]);
    }

    #[test]
    fn a_gap_answered_409_means_the_segment_was_sealed_after_all() {
        let mut q = pq();
        q.push_part("a0", 5000, true);
        q.push_part("a1", 5000, false);
        q.seal();
        q.next(0).unwrap();
        q.settle(Outcome::Acked, 0, 0.5);
        q.next(0).unwrap();
        q.settle(Outcome::Retry, 0, 0.5); // part 1 unanswered
        q.push_part("b0", 6000, true); // 5 s of a unacknowledged + 6 s > 10 s
        q.seal();
        assert_eq!(q.gaps_waiting(), 1);
        assert_eq!(q.next(1000), Some(Item::Gap(Gap { seq: 0, duration_ms: 10_000 })));
        assert_eq!(
            q.settle(Outcome::Conflict, 1000, 0.5),
            Some(Acked::Gap { gap: Gap { seq: 0, duration_ms: 10_000 }, recorded: false })
        );
        assert_eq!(drain(&mut q), ["1/0:b0!", "1/commit 1"]);
    }

    #[test]
    fn a_conflict_sends_the_whole_segment_again_under_a_fresh_seq() {
        let mut q = pq();
        q.push_part("a0", 334, true);
        q.push_part("a1", 334, false);
        q.seal();
        q.next(0).unwrap();
        q.settle(Outcome::Acked, 0, 0.5);
        q.next(0).unwrap();
        assert!(q.settle(Outcome::Conflict, 0, 0.5).is_none());
        assert_eq!(drain(&mut q), ["1/0:a0!", "1/1:a1", "1/commit 2"]);
    }

    #[test]
    fn fatal_answers_stop_the_part_queue() {
        let mut q = pq();
        q.push_part("a0", 334, true);
        q.next(0).unwrap();
        q.settle(Outcome::Fatal(400), 0, 0.5);
        assert_eq!(q.halted(), Some(400));
        assert!(q.next(1_000_000).is_none());
    }
}
