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
//!
//! A `409` to a segment, a part or a commit moves the segment to a fresh seq, and the seq it
//! abandons is given up the same way ("trust under stress"): a seq holding parts and no segment
//! (a commit refused, or a part refused after part 0 was stored) would stall the run, and every
//! viewer, there for good. The gap is not declared when the answer says the seq is settled
//! already ([`Outcome::Held`]: a segment or a gap holds it, or it lies behind the retention
//! window, so the run walks over it); an answer the queue cannot read counts as a hole (a gap
//! costs one request; a hole left behind costs the stream). A `409` that no seq can fix (the
//! stream was started with whole segments, or with other part targets) halts the queue instead
//! of giving up seq after seq, and so does the [`MAX_REFUSALS`]th such refusal of one segment.

use std::collections::VecDeque;

mod parts;
mod segments;

pub use parts::{Acked, Item, PartQueue, Parts};
pub use segments::{Entry, Send, UploadQueue, Whole};

/// How much media (ms) is kept while the server cannot be reached.
pub const MAX_BUFFER_MS: u64 = 5 * 60 * 1000;

/// The refusal (a `409` that leaves a gap) of one segment that halts the queue, this many seqs
/// in: what refuses it then is no one seq's, and each seq tried would leave one more gap.
pub const MAX_REFUSALS: u32 = 8;

/// What an upload attempt came back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 200/201: stored.
    Acked,
    /// 409 whose answer does not say the seq is settled: it may hold parts and no segment, a
    /// hole the run would stall at. The segment moves to a fresh seq and the one it leaves is
    /// given up (a gap).
    Conflict,
    /// 409 saying the seq is settled: a segment or a gap holds it, or it lies behind the
    /// retention window, so the run walks over it. The segment moves to a fresh seq; no gap.
    Held,
    /// Network error, 408, 429 or 5xx: try again later.
    Retry,
    /// Any other answer (400, 401, 403, 404, 413, …): retrying will not help.
    Fatal(u16),
}

/// Classifies an answer by its status and the server's `error` text (`None` = the request never
/// got an answer). Only a `409` needs the text: see [`conflict`].
pub fn classify_answer(status: Option<u16>, error: &str) -> Outcome {
    match status {
        Some(409) => conflict(error),
        _ => classify(status),
    }
}

/// What a `409`'s `error` text says about the seq it refused (the server's wording,
/// `spin-app/src/store/mod.rs` `PutError`; `spin-app/tests/gap.rs` checks every one):
///
/// - "segment N is already stored …", "… is already sealed …", "… was given up …", "… is older
///   than this stream's retention window …": a segment or a gap holds seq N, or the run starts
///   past it: [`Outcome::Held`].
/// - "this stream was started with whole segments …", "this stream's part target is …": no seq
///   will take the upload: [`Outcome::Fatal`]`(409)`.
/// - Anything else ("part P of segment N is already stored with different bytes", "… is not
///   stored", "… is stored, so X-Parts must count it", or words this client does not know):
///   [`Outcome::Conflict`], the seq may hold parts and no segment, so it is given up. Reading a
///   settled seq as a hole costs one gap request (answered `409` or `200`); the other way round
///   would leave the hole.
pub fn conflict(error: &str) -> Outcome {
    const SETTLED: [&str; 4] = [
        " is already stored",
        " is already sealed",
        " was given up",
        " is older than",
    ];
    const STREAM: [&str; 2] = [
        "this stream was started with whole segments",
        "this stream's part target is",
    ];
    if STREAM.iter().any(|p| error.starts_with(p)) {
        return Outcome::Fatal(409);
    }
    let settled = error
        .strip_prefix("segment ")
        .and_then(|rest| {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            (digits > 0).then(|| &rest[digits..])
        })
        .is_some_and(|rest| SETTLED.iter().any(|p| rest.starts_with(p)));
    if settled {
        Outcome::Held
    } else {
        Outcome::Conflict
    }
}

/// Classifies an HTTP status alone (`None` = the request never got an answer); a `409` without
/// its text is read as the worst case, [`Outcome::Conflict`].
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

/// A gap to declare: seq `seq` was sent, not answered, and dropped by the bound; or a `409`
/// made its segment leave it for a fresh seq, and it may hold parts and no segment.
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
    /// A gap for a seq a `409` abandoned (its segment goes on under a fresh seq) is settled:
    /// `recorded` (`201`/`200`), or another segment holds the seq, or it lies behind the
    /// window (`409`). Either way the run walks over it, and nothing of this queue's is
    /// acknowledged.
    Abandoned { gap: Gap, recorded: bool },
    /// Not answered or refused: retried after the backoff (or the queue halted).
    Pending,
}

/// Why a seq is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The bound dropped its segment, which was sent and not answered.
    Dropped,
    /// A `409` moved its segment to a fresh seq.
    Abandoned,
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
    /// Its seq was refused (`409`): it starts over, under a fresh seq.
    fn restart(&mut self);
}

/// One queued segment: its seq once its first request went out, and whether it starts after a
/// break.
#[derive(Debug)]
struct Slot<U> {
    unit: U,
    seq: Option<u64>,
    discontinuity: bool,
    /// Seqs it left after a `409` that gave the seq up (see [`MAX_REFUSALS`]).
    refusals: u32,
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
    gaps: VecDeque<(Gap, Cause)>,
    next_seq: u64,
    in_flight: Option<Flight>,
    attempts: u32,
    retry_at_ms: u64,
    halted: Option<u16>,
    backoff: Backoff,
    max_buffer_ms: u64,
    /// Segments dropped by the buffer bound so far.
    dropped: u64,
    /// The next segment pushed starts a discontinuity ([`Core::resume_at`]).
    resumed: bool,
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
            resumed: false,
        }
    }

    /// Continues a stream whose session already holds seqs below `next_seq` (the broadcast page
    /// reloaded, or opened again, with the same session): the first segment takes `next_seq`
    /// and starts a discontinuity, since a new recording's timestamps start over. A seq that
    /// turns out to be taken after all (an upload of the earlier recording landed late) is
    /// answered `409` and the segment moves on, as after any conflict.
    pub fn resume_at(&mut self, next_seq: u64) {
        self.next_seq = next_seq;
        self.resumed = true;
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
        let (gap, _) = *self.gaps.front()?;
        self.in_flight = Some(Flight::Gap);
        Some(gap)
    }

    /// Records the answer to the gap [`Core::next_gap`] handed out.
    pub fn settle_gap(&mut self, outcome: Outcome, now_ms: u64, jitter: f64) -> GapSettled {
        debug_assert_eq!(self.in_flight, Some(Flight::Gap));
        self.in_flight = None;
        match outcome {
            Outcome::Acked | Outcome::Conflict | Outcome::Held => {
                self.succeeded();
                let Some((gap, cause)) = self.gaps.pop_front() else {
                    return GapSettled::Pending;
                };
                let recorded = outcome == Outcome::Acked;
                match (cause, recorded) {
                    (Cause::Dropped, true) => GapSettled::Recorded(gap),
                    (Cause::Dropped, false) => GapSettled::SegmentHeld(gap),
                    (Cause::Abandoned, recorded) => GapSettled::Abandoned { gap, recorded },
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
            discontinuity: std::mem::take(&mut self.resumed),
            refusals: 0,
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
                self.gaps
                    .push_back((Gap { seq, duration_ms }, Cause::Dropped));
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
    /// moves the head on). A `409` means the seq will not take the segment: it starts over under
    /// a fresh seq, after a discontinuity, and the seq it leaves is given up first (a gap, like
    /// a sent segment the bound drops) unless the answer said a segment or a gap holds it
    /// already ([`Outcome::Held`]). The [`MAX_REFUSALS`]th such refusal of one segment halts the
    /// queue with `409` instead.
    fn settle_head(&mut self, outcome: Outcome, now_ms: u64, jitter: f64) -> bool {
        self.in_flight = None;
        match outcome {
            Outcome::Acked => {
                self.succeeded();
                true
            }
            Outcome::Conflict | Outcome::Held => {
                self.succeeded();
                let Some(head) = self.segs.front_mut() else {
                    return false;
                };
                if outcome == Outcome::Conflict {
                    head.refusals += 1;
                    if head.refusals >= MAX_REFUSALS {
                        self.halted = Some(409);
                        return false;
                    }
                    if let Some(seq) = head.seq {
                        let duration_ms = head.unit.duration_ms();
                        self.gaps
                            .push_back((Gap { seq, duration_ms }, Cause::Abandoned));
                    }
                }
                head.seq = Some(self.next_seq);
                head.discontinuity = true;
                head.unit.restart();
                self.next_seq += 1;
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
    fn a_409_is_read_by_what_it_says_of_the_seq() {
        // The server's words (spin-app `PutError`; spin-app/tests/gap.rs checks them all).
        let held = [
            "segment 7 is already stored with different bytes; a retry must send the same bytes, a new segment needs the next seq",
            "segment 7 is already sealed without part 3; send the parts of the next segment under the next seq",
            "segment 7 is already sealed from parts; a whole segment cannot replace it",
            "segment 7 is already stored as a whole segment, not from parts",
            "segment 7 is already sealed from 4 parts",
            "segment 7 was given up by the broadcaster (a gap is recorded for it); nothing can be stored under it any more, send new media under the next seq",
            "segment 7 is already stored, so it cannot be given up; it stays in the playlist (count it as acknowledged)",
            "segment 7 is older than this stream's retention window, which now starts at segment 9",
        ];
        for error in held {
            assert_eq!(classify_answer(Some(409), error), Outcome::Held, "{error}");
        }
        let holes = [
            "part 3 of segment 7 is already stored with different bytes; a retry must send the same bytes",
            "part 3 of segment 7 is not stored; upload it before committing",
            "part 4 of segment 7 is stored, so X-Parts must count it (X-Parts: 5)",
            // Words this client does not know, or none (a proxy's 409): the worst case.
            "",
            "conflict",
            "segment is already stored",
            "segment 7 is already being stored",
        ];
        for error in holes {
            assert_eq!(
                classify_answer(Some(409), error),
                Outcome::Conflict,
                "{error:?}"
            );
        }
        for error in [
            "this stream was started with whole segments (wire contract v1); start a new session to upload parts",
            "this stream's part target is 0.5 s and its target duration 2 s (fixed by its first part); send those",
        ] {
            assert_eq!(classify_answer(Some(409), error), Outcome::Fatal(409), "{error}");
        }
        // Other statuses do not look at the text.
        assert_eq!(
            classify_answer(Some(201), "segment 7 is already stored"),
            Outcome::Acked
        );
        assert_eq!(
            classify_answer(Some(400), "this stream's part target is"),
            Outcome::Fatal(400)
        );
        assert_eq!(classify_answer(None, ""), Outcome::Retry);
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
