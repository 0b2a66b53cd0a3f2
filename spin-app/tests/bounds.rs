//! Issue 11: what one uploader does cannot make other requests arbitrarily expensive. The
//! reverse-order flood (5000 tiny segments, seq 4999 down to 0) is refused past
//! `store::MAX_AHEAD` with `429` and `Retry-After`, and afterwards every request kind costs about
//! what it costs on a short stream, counted in key-value operations.

mod common;

use chalkstream_manifest::rules::{Config, Retention};
use chalkstream_spin_app::kv::{Kv, KvError, MemoryKv};
use chalkstream_spin_app::reply::Reply;
use chalkstream_spin_app::route::Method;
use chalkstream_manifest::window::MAX_WINDOW_SEGMENTS;
use chalkstream_spin_app::store::MAX_AHEAD;
use common::*;
use std::cell::Cell;

/// The memory store, counting operations (and reads among them).
#[derive(Default)]
struct Counting {
    inner: MemoryKv,
    ops: Cell<u64>,
    reads: Cell<u64>,
}

impl Counting {
    /// The operations `f` did.
    fn cost(&self, f: impl FnOnce() -> Reply) -> (Reply, u64) {
        let before = self.ops.get();
        let reply = f();
        (reply, self.ops.get() - before)
    }

    /// The reads and the operations (reads, writes, deletes) `f` did.
    fn cost2(&self, f: impl FnOnce() -> Reply) -> (Reply, u64, u64) {
        let (reads, ops) = (self.reads.get(), self.ops.get());
        let reply = f();
        (reply, self.reads.get() - reads, self.ops.get() - ops)
    }
}

impl Kv for Counting {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.ops.set(self.ops.get() + 1);
        self.reads.set(self.reads.get() + 1);
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.ops.set(self.ops.get() + 1);
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.ops.set(self.ops.get() + 1);
        self.inner.delete(key)
    }
}

/// Key-value operations of one of each read and of `end` on a stream.
#[derive(Debug, Clone, Copy)]
struct Costs {
    playlist: u64,
    status: u64,
    chunk: u64,
    end: u64,
    ended_playlist: u64,
}

fn costs(kv: &Counting, c: &Config, now: i64) -> Costs {
    let id = stream_id(SECRET);
    let (reply, playlist) = kv.cost(|| common::playlist(kv, c, &id, now));
    assert_eq!(reply.status, 200);
    let (reply, status) = kv.cost(|| get(kv, c, &format!("/api/streams/{id}"), now));
    assert_eq!(reply.status, 200);
    let (reply, chunk) = kv.cost(|| get(kv, c, &format!("/chunks/{id}/3.ts"), now));
    assert_eq!(reply.status, 200);
    let (reply, end) = kv.cost(|| request(kv, c, &head(Method::Post, &format!("/ingest/{SECRET}/end"), &[]), &[], now));
    assert_eq!(reply.status, 200);
    let (reply, ended_playlist) = kv.cost(|| common::playlist(kv, c, &id, now + 1));
    assert_eq!(reply.status, 200);
    Costs { playlist, status, chunk, end, ended_playlist }
}

/// The duration of tiny segment `seq`: 0.1 s, every other one 0.5 s (`MIN_SEGMENT_MS`), the
/// shortest a stream may keep up (issue 18: a segment under 0.5 s may not follow another one).
fn tiny(seq: u64) -> &'static str {
    if seq % 2 == 0 { "0.5" } else { "0.1" }
}

/// The flood: seq 0, then seqs `count - 1` down to 1, 0.1 s each (seq 0 0.5 s: a segment under
/// `MIN_SEGMENT_MS` may not follow another one, issue 18; each later one is uploaded before its
/// predecessor, so none follows another). Returns how many were stored and the largest cost of
/// one upload.
///
/// Seq 0 comes first because the flood is against a stream that exists: a stream with no
/// record (new, or deleted by the sweep) starts its run at its first upload's seq, whatever it
/// is (issue 18: a session resumes after the sweep; `tests/sweep.rs`), so a reverse flood
/// against no stream stores one segment and refuses the rest as behind the window.
fn flood(kv: &Counting, c: &Config, count: u64, now: i64) -> (u64, u64) {
    let (mut stored, mut worst) = (0, 0);
    for seq in std::iter::once(0).chain((1..count).rev()) {
        let (reply, ops) = kv.cost(|| put(kv, c, SECRET, seq, tiny(seq), &ts(1, seq as u8), now));
        worst = worst.max(ops);
        match reply.status {
            201 => stored += 1,
            429 => {
                assert_eq!(reply.get_header("retry-after"), Some("1"), "seq {seq}");
                assert!(seq >= MAX_AHEAD, "seq {seq} refused");
            }
            s => panic!("seq {seq}: {s}"),
        }
    }
    (stored, worst)
}

#[test]
fn regression_issue_11_reverse_order_flood_is_refused_and_costs_other_requests_nothing() {
    for retention in [Retention::Millis(600_000), Retention::Forever] {
        let c = config(retention, 30_000);
        // The reference: a 10-segment stream, uploaded in order.
        let short = Counting::default();
        for seq in 0..10 {
            assert_eq!(put(&short, &c, SECRET, seq, tiny(seq), &ts(1, seq as u8), T0).status, 201);
        }
        let reference = costs(&short, &c, T0 + 10);

        let kv = Counting::default();
        let (stored, worst_upload) = flood(&kv, &c, 5000, T0);
        // Seq 0, then the MAX_AHEAD seqs from the first unstored one (1).
        assert_eq!(stored, 1 + MAX_AHEAD, "{retention:?}");
        // One upload: hints, the stream record, the neighbours, the tail advance over what was
        // stored beyond the hole, and under retention 0 the page and lines blocks it completes
        // (each block reads its metas once).
        assert!(worst_upload <= 40 + 4 * MAX_AHEAD, "{retention:?}: an upload cost {worst_upload} operations");
        let flooded = costs(&kv, &c, T0 + 10);
        // What a request may cost: a constant, plus one read per listed segment (at most
        // MAX_AHEAD more than the reference lists, fewer with pages and lines blocks).
        for (kind, short, long) in [
            ("playlist", reference.playlist, flooded.playlist),
            ("status", reference.status, flooded.status),
            ("chunk", reference.chunk, flooded.chunk),
            ("end", reference.end, flooded.end),
            ("ended playlist", reference.ended_playlist, flooded.ended_playlist),
        ] {
            assert!(long <= short + MAX_AHEAD + 8, "{retention:?} {kind}: {long} operations after the flood, {short} on 10 segments");
        }
        eprintln!("{retention:?}: 10 segments {reference:?}; after the flood ({stored} stored) {flooded:?}; worst upload {worst_upload}");
    }
}

#[test]
fn a_seq_too_far_ahead_gets_429_with_retry_after_and_fits_once_the_run_catches_up() {
    let c = config(Retention::Millis(600_000), 30_000);
    let kv = MemoryKv::new();
    // The stream exists (a stream with no record starts its run at its first seq: issue 18).
    assert_eq!(put(&kv, &c, SECRET, 0, "1", &ts(2, 2), T0).status, 201);
    let reply = put(&kv, &c, SECRET, MAX_AHEAD + 1, "1", &ts(2, 1), T0);
    assert_eq!(reply.status, 429);
    assert_eq!(reply.get_header("retry-after"), Some("1"));
    let error = json(&kv, &reply)["error"].as_str().unwrap().to_owned();
    assert!(error.contains("upload the segments before it first"), "{error}");
    assert_eq!(put(&kv, &c, SECRET, MAX_AHEAD, "1", &ts(2, 1), T0).status, 201);
    // The run still ends at 1: seq 66 is too far, and fits once seqs 1..62 are in.
    assert_eq!(put(&kv, &c, SECRET, MAX_AHEAD + 2, "1", &ts(2, 1), T0).status, 429);
    for seq in 1..MAX_AHEAD - 1 {
        assert_eq!(put(&kv, &c, SECRET, seq, "1", &ts(2, 3), T0).status, 201, "seq {seq}");
    }
    assert_eq!(put(&kv, &c, SECRET, MAX_AHEAD + 2, "1", &ts(2, 1), T0).status, 201);
}

/// Key-value reads and operations per request kind at 10, 600 and 3600 segments (2 s each,
/// uploaded in order, one every 2 s) for both retention modes, printed as a table of reads /
/// operations (`cargo test --release -p chalkstream-spin-app --test bounds -- --nocapture`) and
/// as one `bounds-row: {json}` line per row (`bench/reads.mjs` reads those into BENCHMARKS.md);
/// asserts each stays within the bound ARCHITECTURE.md states ("Bounded walks"), never a speed.
#[test]
fn operations_per_request_kind_at_10_600_and_3600_segments() {
    let mut table = String::from(
        "| retention | segments | listed | PUT (worst) | playlist | status | chunk | end | ended playlist |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for (name, retention) in [("10 min", Retention::Millis(600_000)), ("0", Retention::Forever)] {
        for count in [10u64, 600, 3600] {
            let c = config(retention, 30_000);
            let kv = Counting::default();
            let id = stream_id(SECRET);
            let mut worst_put = (0, 0);
            for seq in 0..count {
                let now = T0 + seq as i64 * 2000;
                let (reply, reads, ops) = kv.cost2(|| put(&kv, &c, SECRET, seq, "2", &ts(4, seq as u8), now));
                assert_eq!(reply.status, 201);
                worst_put = (worst_put.0.max(reads), worst_put.1.max(ops));
            }
            let now = T0 + count as i64 * 2000;
            let (reply, pl_reads, playlist_ops) = kv.cost2(|| common::playlist(&kv, &c, &id, now));
            let listed = listed_seqs(&text(&kv.inner, &reply)).len() as u64;
            let (_, st_reads, status_ops) = kv.cost2(|| get(&kv, &c, &format!("/api/streams/{id}"), now));
            let (_, ch_reads, chunk_ops) = kv.cost2(|| get(&kv, &c, &format!("/chunks/{id}/{}.ts", count - 1), now));
            let (reply, end_reads, end_ops) =
                kv.cost2(|| request(&kv, &c, &head(Method::Post, &format!("/ingest/{SECRET}/end"), &[]), &[], now));
            assert_eq!(reply.status, 200);
            let (_, ended_reads, ended_ops) = kv.cost2(|| common::playlist(&kv, &c, &id, now + 1));
            // The stated bounds: one retention batch of 64 segments (a meta read, a slice, the
            // meta and the count each) on top of a constant and what the answer lists.
            let batch = 64 * 4;
            assert!(worst_put.1 <= 48 + 4 * MAX_AHEAD + batch, "{name} {count}: PUT {worst_put:?}");
            if retention != Retention::Forever {
                assert!(pl_reads <= WINDOW_READS + listed + BATCH_READS, "{name} {count}: playlist {pl_reads}");
                assert!(st_reads <= WINDOW_READS + listed + BATCH_READS, "{name} {count}: status {st_reads}");
            }
            assert!(playlist_ops <= 16 + 65 + listed + batch, "{name} {count}: playlist {playlist_ops}");
            assert!(status_ops <= 16 + 65 + listed + batch, "{name} {count}: status {status_ops}");
            assert!(chunk_ops <= 1 && end_ops <= 8 + 256, "{name} {count}");
            table.push_str(&format!(
                "| {name} | {count} | {listed} | {} / {} | {pl_reads} / {playlist_ops} | {st_reads} / {status_ops} | {ch_reads} / {chunk_ops} | {end_reads} / {end_ops} | {ended_reads} / {ended_ops} |\n",
                worst_put.0, worst_put.1
            ));
            eprintln!(
                "bounds-row: {}",
                serde_json::json!({
                    "retention": name, "segments": count, "listed": listed,
                    "put": [worst_put.0, worst_put.1], "playlist": [pl_reads, playlist_ops],
                    "status": [st_reads, status_ops], "chunk": [ch_reads, chunk_ops],
                    "end": [end_reads, end_ops], "ended_playlist": [ended_reads, ended_ops],
                })
            );
        }
    }
    eprintln!("{table}");
}

/// The stated bound on a sliding-window GET (playlist or status), whatever was uploaded before
/// (ARCHITECTURE.md, "Bounded walks"): `WINDOW_READS` (the record, hints, end marker, the probe
/// past the end, and the look-back of 64 metas below the newest expired segment) + the segments
/// it lists (at most `MAX_WINDOW_SEGMENTS`) + one retention batch (`BATCH_READS`: 64 metas, the
/// one after them and a count), in reads; the batch's deletes (`BATCH_WRITES`: per segment its
/// slice, meta and count, plus the head written twice and the count kept) on top, in
/// operations.
const WINDOW_READS: u64 = 8 + 1 + 64;
const BATCH_READS: u64 = 64 + 4;
const BATCH_WRITES: u64 = 64 * 3 + 4;

/// One GET of kind `path` (a playlist or the status) on stream `id`: asserts the stated bound
/// and returns (listed, reads, operations).
fn sliding_get(kv: &Counting, c: &Config, path: &str, now: i64) -> (u64, u64, u64) {
    let (reply, reads, ops) = kv.cost2(|| get(kv, c, path, now));
    assert_eq!(reply.status, 200, "{path}");
    let listed = if path.ends_with(".m3u8") {
        let seqs = listed_seqs(&text(&kv.inner, &reply));
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{path}: not contiguous");
        seqs.len() as u64
    } else {
        json(&kv.inner, &reply)["segments"].as_u64().unwrap()
    };
    assert!(listed <= MAX_WINDOW_SEGMENTS as u64, "{path}: {listed} listed");
    assert!(reads <= WINDOW_READS + listed + BATCH_READS, "{path}: {reads} reads for {listed} listed");
    assert!(ops <= WINDOW_READS + listed + BATCH_READS + BATCH_WRITES, "{path}: {ops} operations for {listed} listed");
    (listed, reads, ops)
}

fn meta_count(kv: &Counting) -> usize {
    kv.inner.keys().iter().filter(|k| k.ends_with("/meta")).count()
}

/// Issue 11 in a sliding window: 5000 segments of 0.1 and 0.5 s (alternately) uploaded in order, all inside the
/// 10-minute window. A playlist lists the newest `MAX_WINDOW_SEGMENTS` (1024) and reads what it
/// lists plus a constant; uploads keep at most about that many stored. Then nobody touches the
/// stream for 11 minutes (everything expires) and it resumes: a GET reads the new window, not
/// the expired backlog (one retention batch of it per request). Printed with `--nocapture`.
#[test]
fn regression_issue_11_in_order_flood_of_tiny_segments_in_a_sliding_window_reads_a_constant_plus_the_window() {
    let c = config(Retention::Millis(600_000), 30_000);
    let id = stream_id(SECRET);
    let playlist_path = format!("/playlist/{id}.m3u8");
    let status_path = format!("/api/streams/{id}");
    let kv = Counting::default();
    let (mut worst_put, mut worst_get) = ((0, 0), (0, 0, 0));
    let mut last_media = 0;
    for seq in 0..5000u64 {
        let now = T0 + seq as i64 * 100;
        let (reply, reads, ops) = kv.cost2(|| put(&kv, &c, SECRET, seq, tiny(seq), &ts(1, seq as u8), now));
        assert_eq!(reply.status, 201, "seq {seq}");
        worst_put = (worst_put.0.max(reads), worst_put.1.max(ops));
        if seq % 97 == 0 {
            let (reply, reads, ops) = kv.cost2(|| get(&kv, &c, &playlist_path, now));
            let seqs = listed_seqs(&text(&kv.inner, &reply));
            assert!(seqs[0] >= last_media, "media sequence went back");
            last_media = seqs[0];
            worst_get = (worst_get.0.max(seqs.len() as u64), worst_get.1.max(reads), worst_get.2.max(ops));
        }
    }
    // An upload: hints, record, neighbours, its slice and meta, the tail advance, the sweep
    // registration, and one segment the count cap deletes.
    assert!(worst_put.0 <= 40 && worst_put.1 <= 60, "an upload cost {worst_put:?} (reads, operations)");
    let now = T0 + 5000 * 100;
    let (listed, reads, ops) = sliding_get(&kv, &c, &playlist_path, now);
    assert_eq!(listed, MAX_WINDOW_SEGMENTS as u64);
    let text = text(&kv.inner, &kv.cost(|| get(&kv, &c, &playlist_path, now)).0);
    assert!(text.contains(&format!("#EXT-X-MEDIA-SEQUENCE:{}\n", 5000 - MAX_WINDOW_SEGMENTS)), "{}", &text[..300]);
    let (_, status_reads, status_ops) = sliding_get(&kv, &c, &status_path, now);
    let stored = meta_count(&kv);
    assert!(stored <= MAX_WINDOW_SEGMENTS + 2, "{stored} metas stored");
    eprintln!(
        "bounds-flood: {}",
        serde_json::json!({"segments": 5000, "listed": listed, "playlist": [reads, ops], "status": [status_reads, status_ops], "put": [worst_put.0, worst_put.1], "stored": stored})
    );
    eprintln!(
        "in-order flood, 5000 x 0.1/0.5 s in a 10-minute window: upload at most {} reads / {} operations; \
         playlist {listed} listed, {reads} reads / {ops} operations; status {status_reads} / {status_ops}; \
         while uploading at most {:?} (listed, reads, operations); {stored} metas stored",
        worst_put.0, worst_put.1, worst_get
    );

    // Eleven minutes later everything has expired; the stream resumes.
    let later = now + 660_000;
    let (reply, reads, ops) = kv.cost2(|| put(&kv, &c, SECRET, 5000, tiny(5000), &ts(1, 9), later));
    assert_eq!(reply.status, 201);
    assert!(reads <= 40 + BATCH_READS && ops <= 60 + BATCH_READS + BATCH_WRITES, "the resuming upload: {reads} reads, {ops} operations");
    let mut backlog = Vec::new();
    for _ in 0..3 {
        let (listed, reads, ops) = sliding_get(&kv, &c, &playlist_path, later);
        assert_eq!(listed, 1);
        backlog.push((reads, ops));
    }
    let (_, status_reads, _) = sliding_get(&kv, &c, &status_path, later);
    eprintln!("bounds-backlog: {}", serde_json::json!({"listed": 1, "playlist": [backlog[0].0, backlog[0].1], "status_reads": status_reads}));
    eprintln!("after 11 minutes idle, 1 segment listed over an expired backlog: playlist {backlog:?} (reads, operations), status {status_reads} reads; resuming upload {reads} / {ops}");
    // The backlog goes a batch per request.
    for _ in 0..MAX_WINDOW_SEGMENTS / 64 {
        sliding_get(&kv, &c, &playlist_path, later);
    }
    assert_eq!(meta_count(&kv), 1);
}

/// A 10-minute window of 1 s segments is listed whole (the count cap is above it), and so is
/// the reverse-order flood's stored run; each GET within the stated bound.
#[test]
fn a_ten_minute_window_of_one_second_segments_is_listed_whole_and_the_reverse_flood_within_the_bound() {
    let c = config(Retention::Millis(600_000), 30_000);
    let id = stream_id(SECRET);
    let kv = Counting::default();
    for seq in 0..700u64 {
        assert_eq!(put(&kv, &c, SECRET, seq, "1", &ts(1, seq as u8), T0 + seq as i64 * 1000).status, 201);
    }
    let now = T0 + 700 * 1000;
    let (listed, reads, _) = sliding_get(&kv, &c, &format!("/playlist/{id}.m3u8"), now);
    assert!(listed >= 600, "{listed} listed");
    eprintln!("10 minutes of 1 s segments: {listed} listed, {reads} reads");

    let kv = Counting::default();
    let (stored, _) = flood(&kv, &c, 5000, T0);
    assert_eq!(stored, 1 + MAX_AHEAD);
    let (listed, reads, ops) = sliding_get(&kv, &c, &format!("/playlist/{id}.m3u8"), T0 + 10);
    assert_eq!(listed, 1 + MAX_AHEAD);
    let (_, status_reads, _) = sliding_get(&kv, &c, &format!("/api/streams/{id}"), T0 + 10);
    eprintln!("reverse-order flood: {listed} listed, playlist {reads} reads / {ops} operations, status {status_reads} reads");
}

/// Regression (issue 18): no minimum segment duration let 7,000 segments of 1 ms make one delta
/// update read 6,008 keys. A segment under `MIN_SEGMENT_MS` (0.5 s) may not follow another one:
/// `400` saying why, and nothing stored; the last one before a Stop or a break may be short.
#[test]
fn regression_issue_18_a_run_of_segments_under_half_a_second_is_refused() {
    let c = config(Retention::Millis(600_000), 30_000);
    let kv = MemoryKv::new();
    let id = stream_id(SECRET);
    assert_eq!(put(&kv, &c, SECRET, 0, "2", &ts(2, 0), T0).status, 201);
    assert_eq!(put(&kv, &c, SECRET, 1, "0.001", &ts(2, 1), T0 + 10).status, 201, "one short segment after a long one");
    let reply = put(&kv, &c, SECRET, 2, "0.001", &ts(2, 2), T0 + 20);
    assert_eq!(reply.status, 400);
    let error = json(&kv, &reply)["error"].as_str().unwrap().to_owned();
    assert!(error.contains("at least 0.500 s"), "{error}");
    assert!(kv.get(&format!("seg/{id}/2/meta")).unwrap().is_none(), "nothing stored");
    assert_eq!(put(&kv, &c, SECRET, 2, "0.5", &ts(2, 2), T0 + 30).status, 201, "0.5 s is long enough");
    assert_eq!(put(&kv, &c, SECRET, 3, "0.4", &ts(2, 3), T0 + 40).status, 201);
    let end = request(&kv, &c, &head(Method::Post, &format!("/ingest/{SECRET}/end"), &[]), b"", T0 + 50);
    assert_eq!(end.status, 200, "a short last segment before a Stop");
    assert_eq!(listed_seqs(&text(&kv, &playlist(&kv, &c, &id, T0 + 60))), vec![0, 1, 2, 3]);
}
