//! The whole-segment face of the queue core (wire contract v1): one `PUT` per segment.

use super::{Core, Flight, Outcome, Unit};

/// Upload order for whole segments: each segment is one request, retried under the same seq
/// until it is acknowledged. The bound applies on every push.
pub type UploadQueue<T> = Core<Whole<T>>;

/// One whole segment as the core queues it.
#[derive(Debug)]
pub struct Whole<T> {
    payload: T,
    duration_ms: u64,
}

impl<T> Unit for Whole<T> {
    fn unacked_ms(&self) -> u64 {
        self.duration_ms
    }

    fn duration_ms(&self) -> u64 {
        self.duration_ms
    }

    fn complete(&self) -> bool {
        true
    }

    fn ready(&self) -> bool {
        true
    }

    fn restart(&mut self) {}
}

/// One acknowledged segment, as it left the queue.
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

impl<T> Core<Whole<T>> {
    /// Adds a segment at the tail, then drops the oldest ones beyond the bound (never the
    /// newest, nor the one whose request is on the wire). A dropped segment that was sent leaves
    /// a gap to declare under its seq; the segment after a drop starts a discontinuity.
    pub fn push(&mut self, payload: T, duration_ms: u64) {
        self.push_unit(Whole {
            payload,
            duration_ms,
        });
        self.bound();
    }

    /// The segment to send now, if any; assigns its seq on first send. `None` while a gap
    /// waits to be declared ([`Core::next_gap`] first).
    pub fn next(&mut self, now_ms: u64) -> Option<Send<'_, T>> {
        let (seq, head) = self.start_head(now_ms)?;
        Some(Send {
            seq,
            discontinuity: head.discontinuity,
            duration_ms: head.unit.duration_ms,
            payload: &head.unit.payload,
        })
    }

    /// Records the answer to the request `next` handed out; returns the acked entry.
    pub fn settle(&mut self, outcome: Outcome, now_ms: u64, jitter: f64) -> Option<Entry<T>> {
        debug_assert_eq!(self.in_flight, Some(Flight::Segment));
        if !self.settle_head(outcome, now_ms, jitter) {
            return None;
        }
        let slot = self.segs.pop_front()?;
        Some(Entry {
            payload: slot.unit.payload,
            duration_ms: slot.unit.duration_ms,
            seq: slot.seq,
            discontinuity: slot.discontinuity,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::queue::*;

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
    fn a_resumed_stream_goes_on_after_its_stored_seqs_with_one_discontinuity() {
        let mut q = q();
        q.resume_at(42);
        q.push("a", 2000);
        q.push("b", 2000);
        let s = q.next(0).unwrap();
        assert_eq!((s.seq, *s.payload, s.discontinuity), (42, "a", true));
        q.settle(Outcome::Acked, 1, 0.5);
        let s = q.next(1).unwrap();
        assert_eq!((s.seq, *s.payload, s.discontinuity), (43, "b", false));
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
        assert_eq!(q.dropped(), 1);
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
        assert_eq!(q.dropped(), 1);
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
        assert!(q.dropped() > 0);
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
        // The seq it leaves is given up first (see the tests below).
        assert_eq!(q.next_gap(0), Some(Gap { seq: 0, duration_ms: 2000 }));
        q.settle_gap(Outcome::Acked, 0, 0.5);
        let s = q.next(0).unwrap();
        assert_eq!((s.seq, s.discontinuity), (1, true));
    }

    #[test]
    fn a_409_that_does_not_say_the_seq_is_settled_gives_the_seq_up_before_the_fresh_one() {
        let mut q = q();
        q.push("a", 2000);
        q.push("b", 3000);
        q.next(0).unwrap();
        assert!(q.settle(Outcome::Conflict, 0, 0.5).is_none());
        assert_eq!((q.gaps_waiting(), q.waiting()), (1, 3), "the gap and both segments");
        assert!(q.next(0).is_none(), "nothing goes before the gap");
        let gap = q.next_gap(0).unwrap();
        assert_eq!(gap, Gap { seq: 0, duration_ms: 2000 });
        assert_eq!(q.settle_gap(Outcome::Retry, 0, 0.5), GapSettled::Pending, "retried like any gap");
        assert_eq!(q.next_gap(250), Some(gap));
        assert_eq!(q.settle_gap(Outcome::Acked, 300, 0.5), GapSettled::Abandoned { gap, recorded: true });
        let s = q.next(300).unwrap();
        assert_eq!((s.seq, *s.payload, s.discontinuity), (1, "a", true));
        assert_eq!(q.settle(Outcome::Acked, 300, 0.5).unwrap().seq, Some(1));
        let s = q.next(300).unwrap();
        assert_eq!((s.seq, *s.payload, s.discontinuity), (2, "b", false));
    }

    #[test]
    fn a_gap_for_an_abandoned_seq_answered_409_acknowledges_nothing() {
        let mut q = q();
        q.push("a", 2000);
        q.next(0).unwrap();
        q.settle(Outcome::Conflict, 0, 0.5);
        let gap = q.next_gap(0).unwrap();
        // Another segment holds seq 0 after all: the run walks over it, "a" is not acknowledged.
        let settled = q.settle_gap(classify_answer(Some(409), "segment 0 is already stored, so it cannot be given up"), 0, 0.5);
        assert_eq!(settled, GapSettled::Abandoned { gap, recorded: false });
        assert_eq!(q.waiting(), 1);
        assert_eq!(q.next(0).unwrap().seq, 1);
    }

    #[test]
    fn a_409_saying_the_seq_is_held_moves_on_without_a_gap() {
        for error in [
            "segment 0 is already stored with different bytes; a retry must send the same bytes, a new segment needs the next seq",
            "segment 0 is already sealed from parts; a whole segment cannot replace it",
            "segment 0 was given up by the broadcaster (a gap is recorded for it); nothing can be stored under it any more, send new media under the next seq",
            "segment 0 is older than this stream's retention window, which now starts at segment 4",
        ] {
            let mut q = q();
            q.push("a", 2000);
            q.next(0).unwrap();
            assert!(q.settle(classify_answer(Some(409), error), 0, 0.5).is_none());
            assert_eq!(q.gaps_waiting(), 0, "{error}");
            let s = q.next(0).unwrap();
            assert_eq!((s.seq, *s.payload, s.discontinuity), (1, "a", true), "{error}");
        }
    }

    #[test]
    fn a_segment_refused_under_max_refusals_seqs_halts_the_queue() {
        let mut q = q();
        q.push("a", 2000);
        let mut seqs = Vec::new();
        loop {
            if let Some(gap) = q.next_gap(0) {
                assert_eq!(q.settle_gap(Outcome::Acked, 0, 0.5), GapSettled::Abandoned { gap, recorded: true });
                continue;
            }
            let Some(s) = q.next(0) else { break };
            seqs.push(s.seq);
            q.settle(Outcome::Conflict, 0, 0.5);
        }
        // Seqs 0 to 6 were given up (each gap settled above); the 8th refusal halts.
        assert_eq!(q.halted(), Some(409));
        assert_eq!(seqs, (0..u64::from(MAX_REFUSALS)).collect::<Vec<_>>());
        assert_eq!(q.gaps_waiting(), 0);
    }

    #[test]
    fn a_409_no_seq_can_fix_halts_the_queue() {
        let mut q = q();
        q.push("a", 2000);
        q.next(0).unwrap();
        let error = "this stream's part target is 0.5 s and its target duration 2 s (fixed by its first part); send those";
        q.settle(classify_answer(Some(409), error), 0, 0.5);
        assert_eq!(q.halted(), Some(409));
        assert!(q.next_gap(1_000_000).is_none() && q.next(1_000_000).is_none());
    }
}
