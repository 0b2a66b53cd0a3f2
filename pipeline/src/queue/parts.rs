//! The low-latency face of the queue core (wire contract v2): parts, then a commit per segment.

use super::{Core, Flight, Gap, GapSettled, Outcome, Unit};

/// Upload order for low-latency parts: one queue of parts and commits, strictly in order, one
/// request at a time.
///
/// A segment gets its `seq` when its part 0 is first sent, so seqs stay dense. Once any request
/// of a segment went out, the segment is never dropped and never changes: a retry sends the same
/// part again, so the server never sees two bodies under one `(seq, part)`, and no sealed
/// segment can end up without the parts it names. During an outage the bound (applied at each
/// seal) drops whole sealed segments, oldest first (never the newest, nor one with a request on
/// the wire); one that was sent in part leaves a gap to declare under its seq, which goes before
/// anything else. The segment after a drop starts with a discontinuity. A `409` to a part or a
/// commit sends the whole segment again under a fresh seq, after a gap for the seq it leaves
/// (which may hold some of its parts and no segment) unless the answer said that seq is settled.
pub type PartQueue<T> = Core<Parts<T>>;

/// One segment's parts as the core queues them.
#[derive(Debug)]
pub struct Parts<T> {
    /// Each part and its duration (ms).
    parts: Vec<(T, u64)>,
    /// Every part is here (its commit may be sent).
    sealed: bool,
    /// Parts the server acknowledged.
    acked: usize,
}

impl<T> Unit for Parts<T> {
    fn unacked_ms(&self) -> u64 {
        self.parts[self.acked..].iter().map(|p| p.1).sum()
    }

    fn duration_ms(&self) -> u64 {
        self.parts.iter().map(|p| p.1).sum()
    }

    fn complete(&self) -> bool {
        self.sealed
    }

    /// A part to send, or the commit once sealed.
    fn ready(&self) -> bool {
        self.acked < self.parts.len() || self.sealed
    }

    /// Every part again: the server holds none of them under the fresh seq.
    fn restart(&mut self) {
        self.acked = 0;
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
    /// `POST` a gap for segment `seq`: it was sent in part and dropped by the bound, or left
    /// after a `409`.
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
    /// The gap for a seq a `409` made the segment leave is settled: `recorded` (`201`/`200`),
    /// or something else holds that seq (`409`). Nothing of this queue's is acknowledged: the
    /// segment goes on under its fresh seq.
    Abandoned { gap: Gap, recorded: bool },
}

impl<T> Core<Parts<T>> {
    /// Adds a part; `first` starts a new segment (and seals an unsealed one before it, which
    /// only happens if its seal never came).
    pub fn push_part(&mut self, payload: T, duration_ms: u64, first: bool) {
        let open = self.segs.back().is_some_and(|s| !s.unit.sealed);
        if first || !open {
            if let Some(prev) = self.segs.back_mut() {
                prev.unit.sealed = true;
            }
            self.push_unit(Parts {
                parts: Vec::new(),
                sealed: false,
                acked: 0,
            });
        }
        let seg = self.segs.back_mut().expect("pushed above");
        seg.unit.parts.push((payload, duration_ms));
    }

    /// The segment being filled has all its parts: its commit may go, and the bound applies.
    pub fn seal(&mut self) {
        if let Some(seg) = self.segs.back_mut() {
            seg.unit.sealed = true;
        }
        self.bound();
    }

    /// The request to make now, if any: a gap first, else the head segment's next part, or its
    /// commit once every part is acknowledged; assigns the segment's seq on its first request.
    pub fn next(&mut self, now_ms: u64) -> Option<Item<'_, T>> {
        if let Some(gap) = self.next_gap(now_ms) {
            return Some(Item::Gap(gap));
        }
        let (seq, head) = self.start_head(now_ms)?;
        let parts = &head.unit.parts;
        let acked = head.unit.acked;
        Some(match parts.get(acked) {
            Some((payload, duration_ms)) => Item::Part {
                seq,
                part: acked as u32,
                discontinuity: acked == 0 && head.discontinuity,
                duration_ms: *duration_ms,
                payload,
            },
            None => Item::Commit {
                seq,
                parts: parts.len() as u32,
            },
        })
    }

    /// Records the answer to the request `next` handed out.
    pub fn settle(&mut self, outcome: Outcome, now_ms: u64, jitter: f64) -> Option<Acked<'_, T>> {
        if self.in_flight == Some(Flight::Gap) {
            return match self.settle_gap(outcome, now_ms, jitter) {
                GapSettled::Recorded(gap) => Some(Acked::Gap { gap, recorded: true }),
                GapSettled::SegmentHeld(gap) => Some(Acked::Gap { gap, recorded: false }),
                GapSettled::Abandoned { gap, recorded } => Some(Acked::Abandoned { gap, recorded }),
                GapSettled::Pending => None,
            };
        }
        if !self.settle_head(outcome, now_ms, jitter) {
            return None;
        }
        let head = self.segs.front_mut()?;
        if head.unit.acked < head.unit.parts.len() {
            head.unit.acked += 1;
            let head = &self.segs.front()?.unit;
            return Some(Acked::Part(&head.parts[head.acked - 1].0));
        }
        let seg = self.segs.pop_front()?;
        Some(Acked::Commit {
            seq: seg.seq.unwrap_or_default(),
            parts: seg.unit.parts.len() as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::queue::*;

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
    fn a_resumed_stream_marks_only_its_first_part_discontinuous() {
        let mut q = pq();
        q.resume_at(7);
        q.push_part("a0", 334, true);
        q.push_part("a1", 334, false);
        q.seal();
        q.push_part("b0", 334, true);
        assert_eq!(drain(&mut q), ["7/0:a0!", "7/1:a1", "7/commit 2", "8/0:b0"]);
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
        assert_eq!((q.dropped(), q.gaps_waiting(), q.waiting_ms()), (1, 1, 10_000));
        q.push_part("s6", 1000, true); // open segments are never dropped
        q.push_part("s6", 1000, false);
        assert_eq!(q.dropped(), 1);
        q.seal();
        assert_eq!(q.dropped(), 2, "s1 goes, never sent: no gap");
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
        assert_eq!(q.dropped(), 0, "a is on the wire; b is the newest");
        assert_eq!(q.waiting_ms(), 18_000);
        q.settle(Outcome::Retry, 0, 0.5);
        q.push_part("c", 6000, true);
        q.seal();
        assert_eq!((q.dropped(), q.gaps_waiting()), (2, 1), "a (a gap now) and b go");
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
        // Seq 0 holds a0 and no segment: it is given up first (see the tests below).
        assert_eq!(drain(&mut q), ["0/gap 668", "1/0:a0!", "1/1:a1", "1/commit 2"]);
    }

    #[test]
    fn a_commit_refused_409_gives_its_seq_up_before_the_segment_goes_again() {
        let mut q = pq();
        q.push_part("a0", 500, true);
        q.push_part("a1", 500, false);
        q.seal();
        q.push_part("b0", 500, true);
        assert_eq!(drain_until_commit(&mut q), ["0/0:a0", "0/1:a1"], "the commit of seq 0 is on the wire");
        let refused = classify_answer(Some(409), "part 2 of segment 0 is stored, so X-Parts must count it (X-Parts: 3)");
        assert_eq!(refused, Outcome::Conflict);
        assert!(q.settle(refused, 0, 0.5).is_none());
        let gap = Gap { seq: 0, duration_ms: 1000 };
        assert_eq!(q.next(0), Some(Item::Gap(gap)), "before anything else");
        assert_eq!(q.settle(Outcome::Acked, 0, 0.5), Some(Acked::Abandoned { gap, recorded: true }));
        assert_eq!(drain(&mut q), ["1/0:a0!", "1/1:a1", "1/commit 2", "2/0:b0"]);
    }

    #[test]
    fn a_part_refused_409_after_part_0_was_stored_gives_the_seq_up() {
        let mut q = pq();
        q.push_part("a0", 500, true);
        q.push_part("a1", 500, false);
        q.next(0).unwrap();
        q.settle(Outcome::Acked, 0, 0.5);
        assert!(matches!(q.next(0), Some(Item::Part { seq: 0, part: 1, .. })));
        let refused = "part 1 of segment 0 is already stored with different bytes; a retry must send the same bytes";
        q.settle(classify_answer(Some(409), refused), 0, 0.5);
        // The segment is still open: the gap lasts what is known of it so far.
        assert_eq!(drain(&mut q), ["0/gap 1000", "1/0:a0!", "1/1:a1"]);
        q.seal();
        assert_eq!(drain(&mut q), ["1/commit 2"]);
    }

    #[test]
    fn a_commit_refused_because_the_seq_is_sealed_otherwise_moves_on_without_a_gap() {
        let mut q = pq();
        q.push_part("a0", 500, true);
        q.seal();
        assert_eq!(drain_until_commit(&mut q), ["0/0:a0"]);
        q.settle(classify_answer(Some(409), "segment 0 is already sealed from 3 parts"), 0, 0.5);
        assert_eq!(q.gaps_waiting(), 0);
        assert_eq!(drain(&mut q), ["1/0:a0!", "1/commit 1"]);
    }

    #[test]
    fn a_part_of_a_stream_started_with_whole_segments_halts_the_queue() {
        let mut q = pq();
        q.push_part("a0", 500, true);
        q.next(0).unwrap();
        let error = "this stream was started with whole segments (wire contract v1); start a new session to upload parts";
        q.settle(classify_answer(Some(409), error), 0, 0.5);
        assert_eq!((q.halted(), q.gaps_waiting()), (Some(409), 0));
        assert!(q.next(1_000_000).is_none());
    }

    /// Acks the parts the queue hands out until it hands out a commit, which is left on the
    /// wire for the test to answer.
    fn drain_until_commit(q: &mut PartQueue<&'static str>) -> Vec<String> {
        let mut sent = Vec::new();
        loop {
            match q.next(0) {
                Some(Item::Part { seq, part, payload, .. }) => sent.push(format!("{seq}/{part}:{payload}")),
                Some(Item::Commit { .. }) => return sent,
                other => panic!("{other:?} after {sent:?}"),
            }
            q.settle(Outcome::Acked, 0, 0.5);
        }
    }

    #[test]
    fn every_seq_ends_sealed_or_given_up_or_held_whatever_409s_come() {
        // Random answers, 409s of both kinds among them: once the server answers again, every
        // seq the queue handed out is a sealed segment, a settled gap, or a seq a `409` said is
        // held; none is left holding parts and no segment, where the run would stall.
        let mut q: PartQueue<u32> = PartQueue::new(Backoff::default(), 10_000);
        let mut rng = 11u64;
        let mut now = 0;
        let mut settled = std::collections::BTreeSet::new();
        let mut holes = std::collections::BTreeSet::new();
        let mut next = 0;
        for step in 0..3000 {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            if step % 2 == 0 && step < 2700 {
                q.push_part(next, 500, next % 2 == 0);
                if next % 2 == 1 {
                    q.seal();
                }
                next += 1;
            }
            now += 400;
            let outcome = match ((rng >> 33) % 10, step > 2700) {
                (_, true) | (0..=4, _) => Outcome::Acked,
                (5..=7, _) => Outcome::Retry,
                (8, _) => Outcome::Conflict,
                _ => Outcome::Held,
            };
            let seq = match q.next(now) {
                Some(Item::Part { seq, .. } | Item::Commit { seq, .. }) => seq,
                Some(Item::Gap(gap)) => gap.seq,
                None => continue,
            };
            match q.settle(outcome, now, 0.5) {
                Some(Acked::Commit { seq, .. }) => {
                    settled.insert(seq);
                }
                Some(Acked::Gap { gap, .. } | Acked::Abandoned { gap, .. }) => {
                    settled.insert(gap.seq);
                    holes.remove(&gap.seq);
                }
                _ if outcome == Outcome::Held => {
                    settled.insert(seq);
                }
                _ if outcome == Outcome::Conflict => {
                    holes.insert(seq);
                }
                _ => {}
            }
            assert_eq!(q.halted(), None);
        }
        assert_eq!(q.waiting(), 0, "the queue drained");
        assert!(holes.is_empty(), "seqs refused and never given up: {holes:?}");
        let all: Vec<u64> = (0..q.next_seq()).collect();
        assert_eq!(settled.into_iter().collect::<Vec<_>>(), all, "every seq settled, densely");
    }

    /// Issue 18 ("resume always works"): the server went down while segment 0 was open, and the
    /// sweep deleted the stream, its stored parts with it. The parts sent after the outage are
    /// stored, the commit is refused (part 0 is gone): seq 0 is given up and the whole segment
    /// goes again under seq 1, so the resumed run has no hole (the e2e outage test sees this).
    #[test]
    fn regression_issue_18_a_segment_whose_parts_the_sweep_deleted_goes_again_under_a_fresh_seq() {
        let mut q = pq();
        q.push_part("a0", 500, true);
        q.push_part("a1", 500, false);
        q.next(0).unwrap();
        q.settle(Outcome::Acked, 0, 0.5);
        // The outage: part 1 is retried until the server is back.
        let mut now = 0;
        for _ in 0..50 {
            let item = q.next(now).expect("retried after the backoff");
            assert!(matches!(item, Item::Part { seq: 0, part: 1, .. }));
            q.settle(Outcome::Retry, now, 0.5);
            now = q.retry_at_ms();
        }
        assert_eq!(q.halted(), None, "an outage never stops the queue");
        q.push_part("a2", 500, false);
        q.seal();
        q.push_part("b0", 500, true);
        assert!(matches!(q.next(now), Some(Item::Part { seq: 0, part: 1, .. })));
        q.settle(Outcome::Acked, now, 0.5);
        assert_eq!(drain_until_commit(&mut q), ["0/2:a2"]);
        let refused = classify_answer(Some(409), "part 0 of segment 0 is not stored; upload it before committing");
        assert!(q.settle(refused, now, 0.5).is_none());
        assert_eq!(
            drain(&mut q),
            ["0/gap 1500", "1/0:a0!", "1/1:a1", "1/2:a2", "1/commit 3", "2/0:b0"]
        );
        assert_eq!(q.halted(), None);
    }

    /// Issue 18: an answer that no retry can change stops the queue at once, whatever request
    /// it answers (a first part, a later part, a commit, a gap), and nothing is sent after it;
    /// an outage, a full store or a "wait" is retried, never stops it.
    #[test]
    fn an_answer_no_retry_can_change_stops_every_kind_of_request_and_an_outage_never_does() {
        const NEVER: [(u16, &str); 8] = [
            (400, "X-Duration must be a plain decimal"),
            (401, "missing or wrong ingest token"),
            (403, ""),
            (404, ""),
            (405, ""),
            (413, "the segment is larger than this server's limit of 2000 bytes; cut shorter segments"),
            (409, "this stream was started with whole segments (wire contract v1); start a new session to upload parts"),
            (409, "this stream's part target is 0.5 s and its target duration 2 s (fixed by its first part); send those"),
        ];
        // Steps to the request answered: 0 = part 0, 1 = part 1, 2 = the commit, 3 = a gap.
        for kind in 0..4 {
            for (status, error) in NEVER {
                let mut q = pq();
                q.push_part("a0", 500, true);
                q.push_part("a1", 500, false);
                q.seal();
                if kind == 3 {
                    q.next(0).unwrap();
                    q.settle(Outcome::Acked, 0, 0.5);
                    q.next(0).unwrap();
                    q.settle(classify_answer(Some(409), "part 1 of segment 0 is already stored with different bytes"), 0, 0.5);
                    assert!(matches!(q.next(0), Some(Item::Gap(_))));
                } else {
                    for _ in 0..kind {
                        q.next(0).unwrap();
                        q.settle(Outcome::Acked, 0, 0.5);
                    }
                    q.next(0).unwrap();
                }
                assert!(q.settle(classify_answer(Some(status), error), 0, 0.5).is_none());
                assert_eq!(q.halted(), Some(status), "{status} {error:?} to request kind {kind}");
                assert!(q.next(u64::MAX / 2).is_none(), "nothing after {status}");
            }
            for status in [None, Some(408), Some(429), Some(500), Some(503)] {
                let mut q = pq();
                q.push_part("a0", 500, true);
                q.push_part("a1", 500, false);
                q.seal();
                for _ in 0..kind.min(2) {
                    q.next(0).unwrap();
                    q.settle(Outcome::Acked, 0, 0.5);
                }
                let mut now = 0;
                for _ in 0..200 {
                    q.next(now).expect("retried");
                    q.settle(classify_answer(status, "the key-value store is full"), now, 0.5);
                    assert!(q.retry_at_ms() - now <= 4_800, "the backoff is capped");
                    now = q.retry_at_ms();
                }
                assert_eq!(q.halted(), None, "{status:?} is retried");
            }
        }
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
