//! Upload queue policy: order, retry with backoff, the outage buffer bound, what is retryable.
//!
//! Pure and clock-free: the caller passes `now_ms` and a jitter value in `[0, 1)`. A segment
//! gets its `seq` when it is first sent, so seqs stay dense even when the bound drops old
//! segments during a long outage; the first segment after a drop carries a discontinuity.

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

/// The queue's policy state.
#[derive(Debug)]
pub struct UploadQueue<T> {
    items: VecDeque<Entry<T>>,
    next_seq: u64,
    in_flight: bool,
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
            next_seq: 0,
            in_flight: false,
            attempts: 0,
            retry_at_ms: 0,
            halted: None,
            gap: false,
            backoff,
            max_buffer_ms,
            dropped: 0,
        }
    }

    /// Segments not yet acknowledged.
    pub fn waiting(&self) -> usize {
        self.items.len()
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

    /// Adds a segment at the tail, then drops the oldest unsent ones beyond the bound.
    pub fn push(&mut self, payload: T, duration_ms: u64) {
        self.items.push_back(Entry {
            payload,
            duration_ms,
            seq: None,
            discontinuity: false,
        });
        let mut total: u64 = self.items.iter().map(|e| e.duration_ms).sum();
        while total > self.max_buffer_ms && self.items.len() > 1 {
            // Never drop the request on the wire; its answer must find it.
            let idx = usize::from(self.in_flight);
            if idx >= self.items.len() - 1 {
                break;
            }
            let gone = self.items.remove(idx).expect("index checked");
            total -= gone.duration_ms;
            self.dropped += 1;
            if let Some(seq) = gone.seq {
                // Never acknowledged, so the seq is free again: seqs stay dense.
                self.next_seq = seq;
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

    /// The segment to send now, if any; assigns its seq on first send.
    pub fn next(&mut self, now_ms: u64) -> Option<Send<'_, T>> {
        if self.in_flight || self.halted.is_some() || now_ms < self.retry_at_ms {
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
        self.in_flight = true;
        Some(Send {
            seq,
            discontinuity: head.discontinuity,
            duration_ms: head.duration_ms,
            payload: &head.payload,
        })
    }

    /// Records the answer to the request `next` handed out; returns the acked entry.
    pub fn settle(&mut self, outcome: Outcome, now_ms: u64, jitter: f64) -> Option<Entry<T>> {
        self.in_flight = false;
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
    fn the_bound_drops_oldest_and_marks_the_gap_keeping_seqs_dense() {
        let mut q = q(); // 10 s bound
        q.push("s0", 2000);
        assert_eq!(q.next(0).unwrap().seq, 0);
        q.settle(Outcome::Retry, 0, 0.5); // server down; s0 holds seq 0
        for name in ["s1", "s2", "s3", "s4", "s5"] {
            q.push(name, 2000);
        }
        // 12 s queued > 10 s: s0 dropped, its seq freed.
        assert_eq!(q.dropped, 1);
        assert_eq!(q.waiting(), 5);
        let s = q.next(10_000).unwrap();
        assert_eq!((s.seq, *s.payload, s.discontinuity), (0, "s1", true));
        q.settle(Outcome::Acked, 10_000, 0.5);
        let s = q.next(10_000).unwrap();
        assert_eq!((s.seq, s.discontinuity), (1, false));
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
}
