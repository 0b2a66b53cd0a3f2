//! Issue 11's sequence rules on the memory store: `EXT-X-MEDIA-SEQUENCE` and
//! `EXT-X-DISCONTINUITY-SEQUENCE` never go back, whatever order segments arrive in, and the
//! discontinuity count lives in immutable per-seq facts, not in a list that grows.

mod common;

use chalkstream_manifest::rules::Retention;
use chalkstream_spin_app::kv::{Kv, MemoryKv};
use common::*;

/// A small deterministic generator (no dependency needed for a fixed sequence).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

/// `(EXT-X-MEDIA-SEQUENCE, EXT-X-DISCONTINUITY-SEQUENCE)` and the seqs after an
/// `EXT-X-DISCONTINUITY` tag.
fn sequences(text: &str) -> (u64, u64, Vec<u64>) {
    let tag = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or(0, |v| v.parse::<u64>().unwrap())
    };
    let mut flagged = Vec::new();
    let mut pending = false;
    for line in text.lines() {
        if line == "#EXT-X-DISCONTINUITY" {
            pending = true;
        } else if line.starts_with("/chunks/") {
            if pending {
                flagged.push(listed_seqs(line)[0]);
            }
            pending = false;
        }
    }
    (tag("#EXT-X-MEDIA-SEQUENCE:"), tag("#EXT-X-DISCONTINUITY-SEQUENCE:"), flagged)
}

/// Uploads `order` (each seq once, flagged ones with `X-Discontinuity: 1`), one per second, and
/// reads the playlist after each: both sequences never go back and the discontinuity sequence is
/// exactly the number of flagged seqs before the window.
fn run(order: &[u64], flagged: &dyn Fn(u64) -> bool, retention: Retention) -> MemoryKv {
    let kv = MemoryKv::new();
    let c = config(retention, 3_600_000);
    let id = stream_id(SECRET);
    let mut last = (0u64, 0u64);
    for (i, &seq) in order.iter().enumerate() {
        let now = T0 + i as i64 * 1000;
        let mut headers = vec![("X-Duration", "1")];
        if flagged(seq) {
            headers.push(("X-Discontinuity", "1"));
        }
        let reply = put_with(&kv, &c, SECRET, seq, &headers, &ts(2, seq as u8), now);
        assert!(matches!(reply.status, 200 | 201 | 409), "seq {seq}: {}", reply.status);
        let reply = playlist(&kv, &c, &id, now);
        if reply.status == 404 {
            continue;
        }
        let text = text(&kv, &reply);
        let (media, disc, tags) = sequences(&text);
        assert!(media >= last.0, "media sequence went back from {} to {media}:\n{text}", last.0);
        assert!(disc >= last.1, "discontinuity sequence went back from {} to {disc}:\n{text}", last.1);
        assert_eq!(disc, (0..media).filter(|&s| flagged(s)).count() as u64, "at media sequence {media}:\n{text}");
        for seq in listed_seqs(&text) {
            assert_eq!(tags.contains(&seq), flagged(seq) && seq > 0, "the tag at seq {seq}:\n{text}");
        }
        last = (media, disc);
    }
    assert!(!kv.keys().iter().any(|k| k.starts_with("breaks/")), "no shared list of breaks is written");
    kv
}

#[test]
fn sequences_never_go_back_when_segments_arrive_out_of_order_with_retention() {
    for seed in 1..=6u64 {
        let mut rng = Lcg(seed);
        // Blocks of 8 seqs, shuffled within the block: uploads out of order, as a client with
        // several requests in flight sends them.
        let mut order: Vec<u64> = (0..240).collect();
        for block in order.chunks_mut(8) {
            for i in (1..block.len()).rev() {
                block.swap(i, rng.next(i as u64 + 1) as usize);
            }
        }
        let flags: Vec<bool> = (0..240).map(|_| rng.next(4) == 0).collect();
        for retention in [Retention::Millis(20_000), Retention::Forever] {
            let kv = run(&order, &|s| flags[s as usize] && s > 0, retention);
            let kept = kv.keys().iter().filter(|k| k.starts_with("dseq/")).count();
            assert!(kept <= 2, "seed {seed}: {kept} dseq keys kept");
        }
    }
}

#[test]
fn sequences_stay_exact_after_a_reverse_order_upload_under_retention() {
    // Seqs 59 down to 0: none but seq 0 finds its predecessor at commit, so the counts come
    // from the walk and from what retention keeps for the seq after a deleted one.
    let order: Vec<u64> = (0..60).rev().collect();
    let flagged = |s: u64| s > 0 && s % 3 == 0;
    for retention in [Retention::Millis(5_000), Retention::Forever] {
        let kv = run(&order, &flagged, retention);
        let c = config(retention, 3_600_000);
        let id = stream_id(SECRET);
        let mut last = (0, 0);
        // Time passes: retention slides the window over all of it, a read at a time.
        for step in 0..80 {
            let now = T0 + 60_000 + step * 1000;
            let reply = playlist(&kv, &c, &id, now);
            if reply.status == 404 {
                break;
            }
            let (media, disc, _) = sequences(&text(&kv, &reply));
            assert!(media >= last.0 && disc >= last.1, "went back: {last:?} then {:?}", (media, disc));
            assert_eq!(disc, (0..media).filter(|&s| flagged(s)).count() as u64, "at media sequence {media}");
            last = (media, disc);
        }
    }
}

/// A store where another request moves the tail hint to `to` right when this one reads the
/// meta `trigger` (a racing upload that has seen more of the run).
struct TailMovesDuring {
    inner: MemoryKv,
    trigger: String,
    tail: String,
    to: u64,
    fired: std::sync::atomic::AtomicBool,
}

impl Kv for TailMovesDuring {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, chalkstream_spin_app::kv::KvError> {
        if key == self.trigger && !self.fired.swap(true, std::sync::atomic::Ordering::Relaxed) {
            self.inner.set(&self.tail, format!("{{\"next_seq\":{}}}", self.to).as_bytes())?;
        }
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), chalkstream_spin_app::kv::KvError> {
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), chalkstream_spin_app::kv::KvError> {
        self.inner.delete(key)
    }
}

/// Regression (issue 18): `POST …/end` wrote the tail hint without the re-read every other
/// writer does, so an end that caught up over a long run (its hint lost to a slow writer) could
/// move the hint back below what a racing request had already seen. It now re-reads it first.
#[test]
fn regression_issue_18_end_never_moves_the_tail_hint_back() {
    let c = config(Retention::Forever, 30_000);
    let id = stream_id(SECRET);
    let kv = TailMovesDuring {
        inner: MemoryKv::new(),
        trigger: format!("seg/{id}/255/meta"),
        tail: format!("tail/{id}"),
        to: 300,
        fired: false.into(),
    };
    for seq in 0..300 {
        assert_eq!(put(&kv.inner, &c, SECRET, seq, "1", &ts(2, seq as u8), T0 + seq as i64 * 1000).status, 201);
    }
    // A lost update left the hint at 0: the end probes 256 metas from there and asks for a retry,
    // while a racing request moves the hint to 300 as it reads the last of them.
    kv.inner.set(&format!("tail/{id}"), b"{\"next_seq\":0}").unwrap();
    let end = request(&kv, &c, &head(chalkstream_spin_app::route::Method::Post, &format!("/ingest/{SECRET}/end"), &[]), b"", T0 + 300_000);
    assert_eq!(end.status, 429, "{}", text(&kv.inner, &end));
    let tail: serde_json::Value = serde_json::from_slice(&kv.inner.get(&format!("tail/{id}")).unwrap().unwrap()).unwrap();
    assert_eq!(tail["next_seq"], 300, "the end moved the tail hint back");
}
