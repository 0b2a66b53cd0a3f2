//! Upload queue policy: order, retry with backoff, the outage buffer bound, what is retryable.
//!
//! Pure and clock-free: the caller passes `now_ms` and a jitter value in `[0, 1)`. One core,
//! [`Core`], owns what every upload shares: one request at a time, strictly in order; seqs;
//! the backoff; the halt on an answer retrying cannot fix; the bound; and the gaps. Two faces
//! drive it: [`UploadQueue`] sends whole segments (wire contract v1), [`PartQueue`] the parts
//! and commits of low-latency segments (v2). A face says what one queued segment is (a
//! [`Unit`]) and which requests it makes; it never decides when, what is dropped or what a seq
//! means.
//!
//! A segment gets its `seq` when its first request is sent, so seqs stay dense even when the
//! bound drops old segments during a long outage; the segment after a drop carries a
//! discontinuity.
//!
//! A seq, once sent, is never reused for other bytes (issue 11): a request that timed out may
//! still complete on the server, so a sent seq is never given to another segment. (Freeing a
//! sent seq let the next segment take it: a `409`, or, when both landed, an acknowledged segment
//! silently replaced.) The buffer bound drops the oldest complete segments, sent or not, but
//! never the newest nor the one whose request is on the wire; a dropped segment that was sent
//! and not answered leaves its seq to a gap (`POST /ingest/{session}/{seq}/gap`): the queue
//! declares the gap, retried like an upload until the server answers `201`/`200` (recorded) or
//! `409` (the late upload landed first: the segment counts as acknowledged), before anything
//! after it goes out. The server settles a gap racing the late upload so that exactly one holds
//! the seq and the playlist moves on with a discontinuity.

use std::collections::VecDeque;

mod parts;
mod segments;

pub use parts::{Acked, Item, PartQueue, Parts};
pub use segments::{Entry, Send, UploadQueue, Whole};

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

/// What the core needs to know of one queued segment; the face that queued it knows the rest.
pub trait Unit {
    /// Media (ms) the server has not acknowledged yet: what the bound counts.
    fn unacked_ms(&self) -> u64;
    /// The whole segment's media (ms): what its gap declares when the bound drops it.
    fn duration_ms(&self) -> u64;
    /// Every byte of it is here, so the bound may drop it (a segment still being recorded is
    /// kept).
    fn complete(&self) -> bool;
    /// It has a request to make now.
    fn ready(&self) -> bool;
    /// Its seq turned out to hold other bytes (`409`): it starts over, under a fresh seq.
    fn restart(&mut self);
}

/// One queued segment: its seq once its first request went out, and whether it starts after a
/// break.
#[derive(Debug)]
struct Slot<U> {
    unit: U,
    seq: Option<u64>,
    discontinuity: bool,
}

/// What the request on the wire is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flight {
    Segment,
    Gap,
}

/// The queue core both faces drive: order, seqs, backoff, halt, the bound and gaps.
///
/// Only the head segment is ever sent, and gaps go before it. Everything here is written once;
/// [`UploadQueue`] (`Core<Whole<T>>`) and [`PartQueue`] (`Core<Parts<T>>`) add the requests
/// their wire contract makes.
#[derive(Debug)]
pub struct Core<U> {
    segs: VecDeque<Slot<U>>,
    /// Gaps to declare, oldest first; they go before any segment.
    gaps: VecDeque<Gap>,
    next_seq: u64,
    in_flight: Option<Flight>,
    attempts: u32,
    retry_at_ms: u64,
    halted: Option<u16>,
    backoff: Backoff,
    max_buffer_ms: u64,
    /// Segments dropped by the buffer bound so far.
    dropped: u64,
}

impl<U> Core<U> {
    /// An empty queue that retries with `backoff` and keeps at most `max_buffer_ms` of media
    /// while the server cannot be reached.
    pub fn new(backoff: Backoff, max_buffer_ms: u64) -> Self {
        Core {
            segs: VecDeque::new(),
            gaps: VecDeque::new(),
            next_seq: 0,
            in_flight: None,
            attempts: 0,
            retry_at_ms: 0,
            halted: None,
            backoff,
            max_buffer_ms,
            dropped: 0,
        }
    }

    /// Segments not yet stored (sealed) on the server, the one being recorded included, and
    /// gaps not yet declared.
    pub fn waiting(&self) -> usize {
        self.segs.len() + self.gaps.len()
    }

    /// Gaps not yet declared.
    pub fn gaps_waiting(&self) -> usize {
        self.gaps.len()
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

    /// Segments dropped by the buffer bound so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Next seq that will be assigned.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The gap to declare now, if any: it goes before any segment.
    pub fn next_gap(&mut self, now_ms: u64) -> Option<Gap> {
        if !self.may_send(now_ms) {
            return None;
        }
        let gap = *self.gaps.front()?;
        self.in_flight = Some(Flight::Gap);
        Some(gap)
    }

    /// Records the answer to the gap [`Core::next_gap`] handed out.
    pub fn settle_gap(&mut self, outcome: Outcome, now_ms: u64, jitter: f64) -> GapSettled {
        debug_assert_eq!(self.in_flight, Some(Flight::Gap));
        self.in_flight = None;
        match outcome {
            Outcome::Acked | Outcome::Conflict => {
                self.succeeded();
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

    /// One request at a time, none after a halt, none before the backoff is over.
    fn may_send(&self, now_ms: u64) -> bool {
        self.in_flight.is_none() && self.halted.is_none() && now_ms >= self.retry_at_ms
    }

    /// An answer that moves the queue on: the next request goes without delay.
    fn succeeded(&mut self) {
        self.attempts = 0;
        self.retry_at_ms = 0;
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

impl<U: Unit> Core<U> {
    /// Media (ms) not yet acknowledged: what the bound counts.
    pub fn waiting_ms(&self) -> u64 {
        self.segs.iter().map(|s| s.unit.unacked_ms()).sum()
    }

    /// Adds a segment at the tail (the bound is the face's to apply, when the segment may be
    /// dropped).
    fn push_unit(&mut self, unit: U) {
        self.segs.push_back(Slot {
            unit,
            seq: None,
            discontinuity: false,
        });
    }

    /// Drops the oldest complete segments while more than the bound waits: never the newest
    /// (what comes after a drop must exist to carry the discontinuity), nor the head while its
    /// request is on the wire (its answer must find it). A dropped segment that was sent (only
    /// the head ever is) may still land, so its seq is never reused: it leaves a gap to
    /// declare instead.
    fn bound(&mut self) {
        let mut total = self.waiting_ms();
        while total > self.max_buffer_ms {
            let last = self.segs.len().saturating_sub(1);
            let on_wire = self.in_flight == Some(Flight::Segment);
            let Some(idx) = self
                .segs
                .iter()
                .take(last)
                .enumerate()
                .position(|(i, s)| s.unit.complete() && !(i == 0 && on_wire))
            else {
                break;
            };
            let gone = self.segs.remove(idx).expect("index found");
            total -= gone.unit.unacked_ms();
            self.dropped += 1;
            if let Some(seq) = gone.seq {
                let duration_ms = gone.unit.duration_ms();
                self.gaps.push_back(Gap { seq, duration_ms });
                self.succeeded();
            }
            if let Some(next) = self.segs.get_mut(idx) {
                next.discontinuity = true;
            }
        }
    }

    /// Starts the head segment's next request, if one may go now (no gap waits, and the
    /// segment is [`Unit::ready`]); assigns its seq on its first request.
    fn start_head(&mut self, now_ms: u64) -> Option<(u64, &Slot<U>)> {
        if !self.may_send(now_ms) || !self.gaps.is_empty() {
            return None;
        }
        let head = self.segs.front_mut().filter(|s| s.unit.ready())?;
        let next_seq = &mut self.next_seq;
        let seq = *head.seq.get_or_insert_with(|| {
            let s = *next_seq;
            *next_seq += 1;
            s
        });
        self.in_flight = Some(Flight::Segment);
        Some((seq, head))
    }

    /// Records the answer to the head's request; true when it was acknowledged (the face then
    /// moves the head on). A `409` means that seq holds other bytes: the segment starts over
    /// under a fresh seq, after a discontinuity.
    fn settle_head(&mut self, outcome: Outcome, now_ms: u64, jitter: f64) -> bool {
        self.in_flight = None;
        match outcome {
            Outcome::Acked => {
                self.succeeded();
                true
            }
            Outcome::Conflict => {
                if let Some(head) = self.segs.front_mut() {
                    head.seq = Some(self.next_seq);
                    head.discontinuity = true;
                    head.unit.restart();
                    self.next_seq += 1;
                }
                false
            }
            other => {
                self.failed(other, now_ms, jitter);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
