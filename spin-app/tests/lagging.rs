//! The store's rules on an eventually consistent store (issue "serverless envelope", item 3):
//! Spin calls its key-value store BASE, and Fermyon Wasm Functions (Akamai) replicates worldwide
//! with read-your-writes only within a request. [`LaggedKv`] models that: each request reads
//! through a session of its own that sees its own writes at once and every other request's
//! writes (deletes too) only once they are old enough ([`Lag`]: a fixed lag, a replica applying
//! the store's one order late; or a random lag per write and reader, no order across keys).
//!
//! What runs here:
//!
//! - the model itself (own writes at once, others' after the lag, deletes lag too);
//! - each interleaving under lag that breaks a rule, at its smallest, asserting what the store
//!   does instead (the weaker thing that holds) — see `ARCHITECTURE.md`, "Eventual consistency";
//! - property tests: property.rs's generator (uploads, parts, commits, gaps, ends, reads,
//!   retention as time passes) plus sweep steps, every request a session of its own, at lags
//!   from 0 to several requests; every playlist passes the LL checks, the media and
//!   discontinuity sequences never go back in the reader's sequence of playlists, and every
//!   acknowledged seq is listed once its write has shown, unless expired, as the bytes
//!   acknowledged for it (or, only where a rule cannot hold under lag, what it is then);
//! - threads: uploaders, a gap-giver, Stop, the sweep and viewers interleaved on threads over a
//!   lagging store, each viewer checking its own sequence of playlists.

mod common;
#[path = "../../tests/http/common/ll_check.rs"]
mod ll_check;

use chalkstream_manifest::rules::{Config, Retention};
use chalkstream_manifest::segment::SegmentMeta;
use chalkstream_spin_app::kv::{Kv, Lag, LaggedKv};
use chalkstream_spin_app::reply::Reply;
use chalkstream_spin_app::route::Method;
use chalkstream_spin_app::store::MAX_AHEAD;
use chalkstream_spin_app::sweep;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// A lagging store on a fake clock the test moves.
fn lagged(lag: Lag) -> (LaggedKv, Arc<AtomicI64>) {
    let clock = Arc::new(AtomicI64::new(T0));
    let read = clock.clone();
    (LaggedKv::new(lag, move || read.load(Ordering::SeqCst)), clock)
}

fn meta_of(kv: &dyn Kv, id: &str, seq: u64) -> Option<SegmentMeta> {
    kv.get(&format!("seg/{id}/{seq}/meta")).unwrap().map(|b| serde_json::from_slice(&b).unwrap())
}

fn gap_request(kv: &dyn Kv, c: &Config, seq: u64, now: i64) -> Reply {
    request(kv, c, &head(Method::Post, &format!("/ingest/{SECRET}/{seq}/gap"), &[("X-Duration", "2")]), &[], now)
}

// ---------------------------------------------------------------------------------------------
// The model.

#[test]
fn model_own_writes_at_once_others_after_the_lag() {
    let (kv, clock) = lagged(Lag::Fixed(200));
    let (a, b) = (kv.session(), kv.session());
    a.set("k", b"1").unwrap();
    assert_eq!(a.get("k").unwrap().as_deref(), Some(&b"1"[..]), "own write at once");
    assert_eq!(b.get("k").unwrap(), None, "another request's write not yet");
    assert_eq!(kv.primary().get("k").unwrap().as_deref(), Some(&b"1"[..]));
    clock.fetch_add(199, Ordering::SeqCst);
    assert_eq!(kv.session().get("k").unwrap(), None);
    clock.fetch_add(1, Ordering::SeqCst);
    assert_eq!(b.get("k").unwrap().as_deref(), Some(&b"1"[..]), "shown after 200 ms, also to a running request");
    // A delete lags the same way, and the newest write a reader can see wins.
    b.delete("k").unwrap();
    a.set("j", b"2").unwrap();
    assert_eq!(b.get("k").unwrap(), None);
    assert_eq!(a.get("k").unwrap().as_deref(), Some(&b"1"[..]), "the delete is not shown yet");
    clock.fetch_add(200, Ordering::SeqCst);
    assert_eq!(a.get("k").unwrap(), None);
    assert_eq!(kv.keys(), vec!["j".to_string()]);
    // An older write of another request that shows later never hides a newer own write.
    let (c, d) = (kv.session(), kv.session());
    c.set("m", b"old").unwrap();
    clock.fetch_add(1, Ordering::SeqCst);
    d.set("m", b"new").unwrap();
    clock.fetch_add(199, Ordering::SeqCst);
    assert_eq!(d.get("m").unwrap().as_deref(), Some(&b"new"[..]));
    assert_eq!(kv.session().get("m").unwrap().as_deref(), Some(&b"old"[..]), "a replica 200 ms behind");
}

#[test]
fn model_fixed_lag_keeps_the_order_of_writes_random_lag_does_not() {
    // Fixed: a reader that sees a later write sees every earlier one (a consistent prefix).
    let (kv, clock) = lagged(Lag::Fixed(100));
    let w = kv.session();
    for i in 0..50u32 {
        w.set(&format!("k{i}"), b"x").unwrap();
        clock.fetch_add(3, Ordering::SeqCst);
    }
    for _ in 0..60 {
        let r = kv.session();
        let seen: Vec<bool> = (0..50).map(|i| r.get(&format!("k{i}")).unwrap().is_some()).collect();
        assert!(seen.windows(2).all(|p| p[0] || !p[1]), "a prefix: {seen:?}");
        clock.fetch_add(1, Ordering::SeqCst);
    }
    // Random: some reader sees a later key before an earlier one.
    let (kv, clock) = lagged(Lag::Random { max_ms: 100, seed: 7 });
    let w = kv.session();
    for i in 0..50u32 {
        w.set(&format!("k{i}"), b"x").unwrap();
        clock.fetch_add(3, Ordering::SeqCst);
    }
    let out_of_order = (0..60).any(|_| {
        let r = kv.session();
        clock.fetch_add(1, Ordering::SeqCst);
        let seen: Vec<bool> = (0..50).map(|i| r.get(&format!("k{i}")).unwrap().is_some()).collect();
        !seen.windows(2).all(|p| p[0] || !p[1])
    });
    assert!(out_of_order);
    clock.fetch_add(100, Ordering::SeqCst);
    let r = kv.session();
    assert!((0..50).all(|i| r.get(&format!("k{i}")).unwrap().is_some()), "everything shows after the longest lag");
}

// ---------------------------------------------------------------------------------------------
// The smallest interleavings that break a rule under lag (requests 100 ms apart, lag 250 ms:
// each request sees the one before last, not the last), each asserting what holds instead and
// that the rule holds again once the lag has passed.

const LAG: u64 = 250;

/// One request at `t` ms after `T0`, through a session of its own.
struct At<'a> {
    kv: &'a LaggedKv,
    clock: &'a AtomicI64,
}

impl At<'_> {
    fn at(&self, t: i64) -> (chalkstream_spin_app::kv::LaggedSession<'_>, i64) {
        self.clock.store(T0 + t, Ordering::SeqCst);
        (self.kv.session(), T0 + t)
    }
    fn put(&self, c: &Config, t: i64, seq: u64, duration: &str) -> u16 {
        let (s, now) = self.at(t);
        put(&s, c, SECRET, seq, duration, &ts_body(seq, 2), now).status
    }
    fn gap(&self, c: &Config, t: i64, seq: u64) -> u16 {
        let (s, now) = self.at(t);
        gap_request(&s, c, seq, now).status
    }
    fn playlist(&self, c: &Config, t: i64) -> (u16, String) {
        let (s, now) = self.at(t);
        let reply = playlist(&s, c, &stream_id(SECRET), now);
        let status = reply.status;
        (status, if status == 200 { text(&s, &reply) } else { String::new() })
    }
}

/// Finding 5a (gap handshake, upload first). `PUT 1` writes its meta and reads no gap: `201`.
/// `POST 1/gap` 100 ms later writes its record and reads the meta — not shown yet — so it
/// writes the gap's meta over the segment's: `201` as well. Once shown, the playlist lists seq
/// 1 as `#EXT-X-GAP`: an acknowledged segment replaced. What holds: seq 1 is never missing
/// from the run, never serves other bytes (a gap serves nothing), and a gap sent once the
/// segment has shown yields (`409`).
#[test]
fn lag_gap_after_upload_replaces_it_within_the_lag_only() {
    let (kv, clock) = lagged(Lag::Fixed(LAG));
    let r = At { kv: &kv, clock: &clock };
    let c = config(Retention::Millis(600_000), 30_000);
    let id = stream_id(SECRET);
    assert_eq!(r.put(&c, 0, 0, "2"), 201);
    assert_eq!(r.put(&c, 400, 1, "2"), 201, "the segment is acknowledged");
    assert_eq!(r.gap(&c, 500, 1), 201, "the gap did not see it: both win");
    let (status, text) = r.playlist(&c, 1000);
    assert_eq!(status, 200);
    assert_eq!(listed_seqs(&text), vec![0, 1], "never missing\n{text}");
    assert!(text.contains("#EXT-X-GAP\n#EXTINF:2.000,\n/chunks/"), "listed as a gap: the acknowledged segment is replaced\n{text}");
    let (s, now) = r.at(1000);
    assert_eq!(get(&s, &c, &format!("/chunks/{id}/1.ts"), now).status, 404, "no other bytes: a gap serves nothing");
    // Past the lag the handshake holds: a gap after a shown segment yields.
    assert_eq!(r.put(&c, 1100, 2, "2"), 201);
    assert_eq!(r.gap(&c, 1100 + LAG as i64, 2), 409);
    let (_, text) = r.playlist(&c, 2000);
    assert_eq!(text.matches("#EXT-X-GAP").count(), 1, "{text}");
}

/// Finding 5b (gap handshake, gap first). `POST 1/gap` writes record and meta: `201`. `PUT 1`
/// 100 ms later reads neither, writes its meta over the gap's and reads no gap record: `201`.
/// A playlist that listed seq 1 as `#EXT-X-GAP` then lists the segment (a playlist entry
/// changed, which HLS forbids: a playlist may only append, drop from the head, or end).
/// What holds: the seq is listed throughout, as one of the two acknowledged outcomes, and its
/// chunk serves the acknowledged bytes or nothing.
#[test]
fn lag_upload_after_gap_replaces_it_within_the_lag_only() {
    let (kv, clock) = lagged(Lag::Fixed(LAG));
    let r = At { kv: &kv, clock: &clock };
    let c = config(Retention::Millis(600_000), 30_000);
    let id = stream_id(SECRET);
    assert_eq!(r.put(&c, 0, 0, "2"), 201);
    assert_eq!(r.gap(&c, 400, 1), 201);
    assert_eq!(r.put(&c, 500, 1, "2"), 201, "the upload did not see the gap: both win");
    let (_, text) = r.playlist(&c, 650);
    assert_eq!(listed_seqs(&text), vec![0, 1]);
    assert!(text.contains("#EXT-X-GAP"), "the gap shows first\n{text}");
    let (_, text) = r.playlist(&c, 1000);
    assert_eq!(listed_seqs(&text), vec![0, 1]);
    assert!(!text.contains("#EXT-X-GAP"), "then the segment replaces it\n{text}");
    let (s, now) = r.at(1000);
    let chunk = get(&s, &c, &format!("/chunks/{id}/1.ts"), now);
    assert_eq!(body(&s, &chunk), ts_body(1, 2), "the acknowledged bytes");
    // Past the lag: an upload after a shown gap yields.
    assert_eq!(r.gap(&c, 1100, 2), 201);
    assert_eq!(r.put(&c, 1100 + LAG as i64, 2, "2"), 409);
}

/// Finding 2 (racing records). `PUT 0` (1 s) creates `stream/{id}` with target 1. Within the
/// lag, `PUT 1` (2 s) does not see it and creates its own, target 2, and a gap of 2 s is
/// checked against nothing. Readers see `EXT-X-TARGETDURATION` go from 1 to 2, and a
/// playlist whose target (2, from its longest segment) no longer matches what the record's
/// decided. What holds: once the record has shown, every upload is checked against the one
/// record every request reads (a 3 s segment gets `400`), and v2 streams, whose parts all
/// carry `X-Target-Duration`, write the same record whoever wins.
#[test]
fn lag_first_uploads_race_their_records() {
    let (kv, clock) = lagged(Lag::Fixed(LAG));
    let r = At { kv: &kv, clock: &clock };
    let c = config(Retention::Millis(600_000), 30_000);
    assert_eq!(r.put(&c, 0, 0, "1"), 201);
    let (_, first) = r.playlist(&c, 300);
    assert!(first.contains("#EXT-X-TARGETDURATION:1\n"), "{first}");
    assert_eq!(r.put(&c, 100, 1, "2"), 201, "a 2 s segment on a 1 s stream: it saw no record");
    let (_, later) = r.playlist(&c, 600);
    assert!(later.contains("#EXT-X-TARGETDURATION:2\n"), "the target changed\n{later}");
    // Once shown, one record decides: the later write (target 2) for everyone.
    assert_eq!(r.put(&c, 700, 2, "3"), 400);
    assert_eq!(r.put(&c, 800, 2, "2"), 201);
}

#[test]
fn lag_gap_within_the_lag_of_the_first_part_escapes_the_target_check() {
    let (kv, clock) = lagged(Lag::Fixed(LAG));
    let r = At { kv: &kv, clock: &clock };
    let c = config(Retention::Millis(600_000), 30_000);
    let part = |t: i64, seq: u64, n: u32| {
        let (s, now) = r.at(t);
        let h = head(
            Method::Put,
            &format!("/ingest/{SECRET}/{seq}/{n}.ts"),
            &[("X-Duration", "0.250"), ("X-Part-Target", "0.250"), ("X-Target-Duration", "1"), ("X-Independent", if n == 0 { "1" } else { "0" })],
        );
        request(&s, &c, &h, &ts_body(seq * 4 + u64::from(n), 1), now).status
    };
    assert_eq!(part(0, 0, 0), 201);
    // Target 1 s; a 2 s gap 100 ms later sees no record: nothing to check it against.
    assert_eq!(r.gap(&c, 100, 1), 201, "unchecked");
    // Once shown, the same gap is refused.
    assert_eq!(r.gap(&c, 100 + LAG as i64, 2), 400);
    // v2 records agree whoever wins: every part names the targets.
    assert_eq!(part(400, 0, 1), 201);
    let (s, _) = r.at(2000);
    let record: serde_json::Value = serde_json::from_slice(&s.get(&format!("stream/{}", stream_id(SECRET))).unwrap().unwrap()).unwrap();
    assert_eq!((record["target_s"].as_u64(), record["part_target_ms"].as_u64()), (Some(1), Some(250)));
}

/// Finding 1 (a resumed run's start), fixed. `PUT 1` arrives first: the record notes
/// `first_seq` 1. `PUT 0` comes just inside the idle timeout (the hole is not settled yet):
/// `201`. `PUT 2`, within the lag of it and just past the idle timeout, used to find the hole
/// settled, read the meta of 0 (not shown) and start the run at 1: seq 0, acknowledged, was
/// never listed. Both sides are now decided by time: the hole refuses uploads once the idle
/// timeout has passed, and the run starts `SHOWN_WITHIN_MS` (5 s) later, so `PUT 2` keeps the
/// run at 0 and the late `PUT 0` is listed.
#[test]
fn lag_a_hole_is_settled_by_time_so_an_upload_acknowledged_within_the_lag_is_kept() {
    let (kv, clock) = lagged(Lag::Fixed(LAG));
    let r = At { kv: &kv, clock: &clock };
    let c = config(Retention::Millis(600_000), 30_000);
    assert_eq!(r.put(&c, 0, 1, "2"), 201);
    assert_eq!(r.put(&c, 29_950, 0, "2"), 201, "inside the idle timeout");
    assert_eq!(r.put(&c, 30_050, 2, "2"), 201);
    let (_, text) = r.playlist(&c, 31_000);
    assert_eq!(listed_seqs(&text), vec![0, 1, 2], "seq 0, acknowledged within the lag, is kept\n{text}");
    // A hole that was not filled in time refuses a late upload into it.
    let (kv, clock) = lagged(Lag::Fixed(LAG));
    let r = At { kv: &kv, clock: &clock };
    assert_eq!(r.put(&c, 0, 1, "2"), 201);
    assert_eq!(r.put(&c, 30_050, 0, "2"), 409, "past the idle timeout, the hole is settled");
    // Without lag the same requests keep seq 0.
    let (kv, clock) = lagged(Lag::Fixed(0));
    let r = At { kv: &kv, clock: &clock };
    assert_eq!(r.put(&c, 0, 1, "2"), 201);
    assert_eq!(r.put(&c, 29_950, 0, "2"), 201);
    assert_eq!(r.put(&c, 30_050, 2, "2"), 201);
    let (_, text) = r.playlist(&c, 31_000);
    assert_eq!(listed_seqs(&text), vec![0, 1, 2], "{text}");
}

/// Finding 3 (the sweep and a resuming upload). A stream silent for longer than retention is
/// swept: every record deleted, `stream/{id}` last, once the sweep read no unexpired upload.
/// `PUT 2`, 100 ms *before* the sweep, is acknowledged, but the sweep does not see it: it
/// deletes the records of a stream that holds an acknowledged, unexpired segment, and its
/// playlist is `404`. What holds: the session can still resume (its next upload after the lag
/// writes a record, and its run is listed once the hole below it has settled, the idle timeout)
/// — without seq 2, which is below the resumed run. An upload 100 ms *after* the sweep is not
/// lost: it does not see the deletion, but its sweep registration writes the record back.
#[test]
fn lag_the_sweep_deletes_a_stream_an_upload_just_resumed() {
    let c = config(Retention::Millis(60_000), 30_000);
    let swept = 130_000;
    for resume in [-100, 100] {
        let (kv, clock) = lagged(Lag::Fixed(LAG));
        let r = At { kv: &kv, clock: &clock };
        assert_eq!(r.put(&c, 0, 0, "2"), 201);
        assert_eq!(r.put(&c, 100, 1, "2"), 201);
        let sweep_at = |t: i64| {
            let (s, now) = r.at(t);
            sweep::run(&s, &c, now).unwrap()
        };
        if resume > 0 {
            assert_eq!(sweep_at(swept).deleted, 1);
        }
        assert_eq!(r.put(&c, swept + resume, 2, "2"), 201, "the resume is acknowledged");
        if resume < 0 {
            assert_eq!(sweep_at(swept).deleted, 1, "the sweep did not see it");
        }
        let (status, text) = r.playlist(&c, swept + 1000);
        if resume < 0 {
            assert_eq!(status, 404, "an acknowledged, unexpired segment behind a 404");
        } else {
            assert_eq!((status, listed_seqs(&text)), (200, vec![2]), "{text}");
            continue;
        }
        // What holds: the session resumes (its run starts once the hole below it has outlived
        // the idle timeout and `SHOWN_WITHIN_MS`).
        assert_eq!(r.put(&c, swept + 2000, 3, "2"), 201);
        assert_eq!(r.put(&c, swept + 38_000, 4, "2"), 201);
        let (status, text) = r.playlist(&c, swept + 39_000);
        assert_eq!((status, listed_seqs(&text)), (200, vec![3, 4]), "seq 2 (acknowledged) is below the resumed run\n{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Property test: property.rs's generator, every request a session of its own.

/// What the runs did, so a test can tell that it checked something.
static PLAYLISTS_CHECKED: AtomicU64 = AtomicU64::new(0);
static ACKS: AtomicU64 = AtomicU64::new(0);
static LAGGED_READS: AtomicU64 = AtomicU64::new(0);
static SWEEPS: AtomicU64 = AtomicU64::new(0);
static REMAINDERS: AtomicU64 = AtomicU64::new(0);
static NEW_LIVES: AtomicU64 = AtomicU64::new(0);
static RACING_RECORDS: AtomicU64 = AtomicU64::new(0);
static HANDSHAKES_LOST: AtomicU64 = AtomicU64::new(0);
static WENT_BACK: AtomicU64 = AtomicU64::new(0);
static UNORDERED_MISSES: AtomicU64 = AtomicU64::new(0);

/// A seq at or above this stands for `cursor + (seq - NEAR)`, the cursor being the first seq not
/// acknowledged yet (as in property.rs).
const NEAR: u64 = 1 << 40;

/// property.rs's operations (one body per seq: the extension never sends two, and two bodies
/// racing for one seq are a stated limit even without lag), plus a sweep step.
#[derive(Debug, Clone)]
enum Op {
    Segment { seq: u64, two_s: bool, disc: bool },
    Part { seq: u64, part: u32, disc: bool },
    /// Commit `seq` from as many parts as the client uploaded for it (the extension commits what
    /// it sent; see [`parts_of`]).
    Commit { seq: u64 },
    Gap { seq: u64 },
    End,
    Read,
    /// `POST /admin/sweep`'s work (every request also runs one step after its own).
    Sweep,
    Wait { ms: u32 },
}

/// Parts per segment: fixed per seq, so the one commit of a seq names the same parts whoever
/// sends it.
fn parts_of(seq: u64) -> u32 {
    2 + (seq % 3) as u32
}

fn op(v2: bool) -> impl Strategy<Value = Op> {
    let seq = prop_oneof![8 => NEAR..NEAR + 3, 6 => 0u64..24, 1 => 0u64..(MAX_AHEAD + 40)];
    let upload = if v2 {
        prop_oneof![
            3 => (seq.clone(), 0u32..4, proptest::bool::weighted(0.15)).prop_map(|(seq, part, disc)| Op::Part { seq, part, disc }),
            1 => seq.prop_map(|seq| Op::Commit { seq }),
        ]
        .boxed()
    } else {
        (seq, any::<bool>(), proptest::bool::weighted(0.15)).prop_map(|(seq, two_s, disc)| Op::Segment { seq, two_s, disc }).boxed()
    };
    let gap = prop_oneof![4 => NEAR..NEAR + 2, 2 => 0u64..24].prop_map(|seq| Op::Gap { seq });
    prop_oneof![
        6 * 4 => upload,
        4 => gap,
        4 => Just(Op::End),
        3 * 4 => Just(Op::Read),
        2 => Just(Op::Sweep),
        2 * 4 => (0u32..40_000).prop_map(|ms| Op::Wait { ms }),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    retention: Retention,
    lag: Lag,
    #[allow(dead_code)]
    v2: bool,
    ops: Vec<Op>,
}


fn case_with(lags: impl Strategy<Value = Lag>) -> impl Strategy<Value = Case> {
    (prop_oneof![Just(Retention::Millis(20_000)), Just(Retention::Forever)], any::<bool>(), lags).prop_flat_map(|(retention, v2, lag)| {
        proptest::collection::vec(op(v2), 1..120).prop_map(move |ops| Case { retention, lag, v2, ops })
    })
}

fn ts_body(seq: u64, packets: usize) -> Vec<u8> {
    ts(packets, (seq as u8).wrapping_mul(5))
}

/// One acknowledgement: when, and what the acknowledging request saw committed.
#[derive(Debug, Clone)]
struct Ack {
    at: i64,
    meta: SegmentMeta,
    bytes: Option<Vec<u8>>,
}

#[derive(Default)]
struct Model {
    acked: BTreeMap<u64, Vec<Ack>>,
    /// Gap requests per seq (whatever they answered), for the weaker rule under lag.
    gap_requests: BTreeMap<u64, Vec<i64>>,
    /// The reader's last `(media, disc, target)`.
    last: Option<(u64, u64, u64)>,
    /// When the sweep deleted the stream.
    swept: Vec<i64>,
    /// The `created_ms` of the stream record the reader last saw.
    life: Option<i64>,
}

/// Which of the rules that cannot hold under lag a check tolerates (each one documented at
/// its minimal interleaving below and in ARCHITECTURE.md). All `false`: every rule as on a
/// store whose reads see every completed write.
#[derive(Debug, Clone, Copy, Default)]
struct Tolerate {
    /// Finding 1: a resumed run's start (`stream/{id}`'s `first_seq`) hides a seq below it that
    /// was acknowledged less than the lag before the run started.
    hidden_below_resumed_start: bool,
    /// Finding 2: uploads (and gaps) within the lag of a stream's first one do not see its
    /// record: each writes its own, with its own target duration, or checks nothing.
    racing_records: bool,
    /// Finding 3: the sweep deletes a stream's records within the lag of an upload that resumes
    /// it: the upload does not see the deletion (or the sweep does not see the upload).
    swept_under_upload: bool,
    /// Finding 5: the gap handshake (each side writes its key, then reads the other's) needs
    /// each read to see the other side's earlier write: within the lag both sides win.
    handshake: bool,
    /// Finding 4 (random lag only): another request's writes show in another order than they
    /// were made, so a hint (`tail`, `head`) or a kept count (`dseq`) shows before or after
    /// the metas it speaks for.
    unordered: bool,
}

fn check(kv: &LaggedKv, c: &Config, model: &mut Model, now: i64, tolerate: Tolerate) -> Result<(), TestCaseError> {
    let lag = kv.lag().max_ms() as i64;
    let id = stream_id(SECRET);
    let s = kv.session();
    let reply = playlist(&s, c, &id, now);
    prop_assert!(reply.status == 200 || reply.status == 404, "playlist: {}", reply.status);
    let first_seq = kv
        .primary()
        .get(&format!("stream/{id}"))
        .unwrap()
        .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r).unwrap()["first_seq"].as_u64())
        .unwrap_or(0);
    let hidden = |seq: u64| tolerate.hidden_below_resumed_start && seq < first_seq;
    let near_sweep = |a: &Ack| tolerate.swept_under_upload && model.swept.iter().any(|&t| (a.at - t).abs() <= lag);
    // Acknowledged, shown to everyone, and not expired.
    let shown = |a: &Ack| a.at + lag <= now && !c.retention.is_expired(a.meta.stored_ms, now) && !hidden(a.meta.seq) && !near_sweep(a);
    if reply.status == 404 {
        // (A seq beyond a hole is not listed, and need not be, nor one that resumed a swept
        // stream: only those with every seq below them acknowledged, shown and unexpired.)
        // (Nor one below a newer expired segment: a window starts after the newest expired.)
        let none_expired_above = |s: u64| model.acked.range(s..).all(|(_, acks)| acks.iter().all(|a| !c.retention.is_expired(a.meta.stored_ms, now)));
        let run_shown = |s: u64| (0..s).all(|b| model.acked.get(&b).is_some_and(|acks| acks.iter().any(shown)));
        let held: Vec<u64> =
            model.acked.iter().filter(|(s, acks)| acks.iter().any(|a| shown(a) && !a.meta.gap) && run_shown(**s) && none_expired_above(**s)).map(|(s, _)| *s).collect();
        if !held.is_empty() {
            UNORDERED_MISSES.fetch_add(1, Ordering::Relaxed);
            prop_assert!(tolerate.unordered, "404 while acknowledged seqs {:?} are shown and unexpired", held);
        }
        return Ok(());
    }
    let text = text(&s, &reply);
    let plain: String = text.lines().filter(|l| *l != "#EXT-X-GAP").map(|l| format!("{l}\n")).collect();
    // Finding 0 (no lag needed; found by `property_no_lag_every_rule_holds`, counted as
    // "remainders"): a segment or gap stored beyond a hole outlives the sweep of its stream (the
    // stated remainder), and a session that resumes later lists it under a record made anew,
    // whose target may be shorter (a 2 s gap under `EXT-X-TARGETDURATION:1`). Not checked.
    let record: serde_json::Value = serde_json::from_slice(&s.get(&format!("stream/{id}")).unwrap().unwrap()).unwrap();
    let created = record["created_ms"].as_i64().unwrap();
    // (Older than the record by more than the lag: a racing first upload rewrites the record
    // within the lag, a resume comes a retention or more later.)
    let remainder = listed_seqs(&text).iter().any(|&seq| meta_of(&s, &id, seq).is_some_and(|m| m.stored_ms + lag < created));
    if remainder {
        REMAINDERS.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    // Finding 2: a gap or segment stored within the lag of the stream's record was not checked
    // against its target (it did not see the record), so it may last longer: the playlist's
    // target then covers it and no longer matches what the record's target decided
    // (`CAN-SKIP-UNTIL`, `PART-HOLD-BACK`).
    let record_target = record["target_s"].as_u64().unwrap();
    let over_target: Vec<SegmentMeta> = listed_seqs(&text)
        .iter()
        .filter_map(|&seq| meta_of(&s, &id, seq))
        .filter(|m| (u64::from(m.duration_ms) + 500) / 1000 > record_target)
        .collect();
    if !over_target.is_empty() {
        RACING_RECORDS.fetch_add(1, Ordering::Relaxed);
        prop_assert!(
            tolerate.racing_records && over_target.iter().all(|m| m.stored_ms <= created + lag),
            "segments {:?} over the record's target duration {}\n{}",
            over_target.iter().map(|m| m.seq).collect::<Vec<_>>(),
            record_target,
            text
        );
    }
    let tag = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map_or(0, |v| v.parse::<u64>().unwrap());
    let (media, disc, target) = (tag("#EXT-X-MEDIA-SEQUENCE:"), tag("#EXT-X-DISCONTINUITY-SEQUENCE:"), tag("#EXT-X-TARGETDURATION:"));
    if over_target.is_empty() {
        let p = ll_check::check(&plain);
        prop_assert_eq!((p.media_sequence, p.discontinuity_sequence, p.target_s), (media, disc, target));
    }
    let listed = listed_seqs(&text);
    // Finding 0b (no lag needed; counted as "new lives"): a stream the sweep deleted and a
    // session resumed has a new record, and its discontinuity sequence starts again at 0 (a
    // viewer that polled 1 before the silence and did not poll during the 404 sees it go back);
    // the rules below hold within one record's life.
    if let Some(life) = model.life.filter(|&life| life != created && (created - life).abs() <= lag) {
        // Not a new life: a racing first upload's record, written within the lag of another.
        RACING_RECORDS.fetch_add(1, Ordering::Relaxed);
        prop_assert!(tolerate.racing_records, "stream record written twice ({life}, {created})\n{text}");
        model.life = Some(created);
        model.last = model.last.map(|(m, d, _)| (m, d, target));
    }
    if model.life != Some(created) {
        if model.life.is_some() {
            NEW_LIVES.fetch_add(1, Ordering::Relaxed);
        }
        model.life = Some(created);
        model.last = None;
    }
    if let Some((m, d, t)) = model.last {
        if media < m || disc < d {
            WENT_BACK.fetch_add(1, Ordering::Relaxed);
            prop_assert!(tolerate.unordered, "media or discontinuity sequence went back: {m}/{d} then {media}/{disc}\n{text}");
        }
        // (Finding 2 again: a gap or segment stored within the lag of the record, unchecked
        // against its target, lifts the target while it is listed.)
        let unchecked = |limit: u64| {
            model.acked.values().flatten().any(|a| a.at <= created + lag && (u64::from(a.meta.duration_ms) + 500) / 1000 > limit)
        };
        if t != target {
            RACING_RECORDS.fetch_add(1, Ordering::Relaxed);
            prop_assert!(tolerate.racing_records && unchecked(t.min(target)), "target duration changed: {t} then {target}\n{text}");
        }
    }
    model.last = Some((media, disc, target));
    PLAYLISTS_CHECKED.fetch_add(1, Ordering::Relaxed);
    if model.acked.values().flatten().any(|a| a.at + lag > now) {
        LAGGED_READS.fetch_add(1, Ordering::Relaxed);
    }
    // Acknowledged is never missing: the run of shown acknowledged seqs from the window start.
    let mut seq = media;
    while model.acked.get(&seq).is_some_and(|acks| acks.iter().any(shown)) {
        if !listed.contains(&seq) {
            UNORDERED_MISSES.fetch_add(1, Ordering::Relaxed);
            prop_assert!(tolerate.unordered, "acknowledged seq {} missing\n{}", seq, text);
            break;
        }
        seq += 1;
    }
    // Listed acknowledged seqs: what was acknowledged for them, as a gap or with its bytes.
    let mut gapped = false;
    for line in text.lines() {
        if line == "#EXT-X-GAP" {
            gapped = true;
        } else if line.starts_with("/chunks/") {
            let seq = listed_seqs(line)[0];
            if let Some(acks) = model.acked.get(&seq).filter(|acks| acks.iter().any(|a| a.at + lag <= now)) {
                let chunk = get(&s, c, &format!("/chunks/{id}/{seq}.ts"), now);
                let served = (chunk.status == 200).then(|| try_body(&s, &chunk)).flatten();
                let matches = acks.iter().any(|a| {
                    a.meta.gap == gapped && (a.meta.gap || served.is_none() || a.bytes.is_none() || served == a.bytes)
                });
                prop_assert!(matches, "seq {} listed {} but acknowledged as {:?}\n{}", seq, if gapped { "as a gap" } else { "with other bytes" }, acks.iter().map(|a| (a.at, a.meta.gap)).collect::<Vec<_>>(), text);
            }
            gapped = false;
        }
    }
    Ok(())
}

fn run_case(case: &Case, tolerate: Tolerate) -> Result<(), TestCaseError> {
    let (kv, clock) = lagged(case.lag);
    let c = config(case.retention, 30_000);
    let id = stream_id(SECRET);
    let mut model = Model::default();
    let mut now = T0;
    let lag = case.lag.max_ms() as i64;
    for op in &case.ops {
        now += 100;
        clock.store(now, Ordering::SeqCst);
        let cursor = (0..).find(|s| !model.acked.contains_key(s)).unwrap_or(0);
        let near = |seq: u64| if seq >= NEAR { cursor + (seq - NEAR) } else { seq };
        let s = kv.session();
        let (reply, seq, bytes): (Option<Reply>, u64, Option<Vec<u8>>) = match op.clone() {
            Op::Segment { seq, two_s, disc } => {
                let seq = near(seq);
                let bytes = ts_body(seq, 2);
                let mut headers = vec![("X-Duration", if two_s { "2" } else { "1" })];
                if disc {
                    headers.push(("X-Discontinuity", "1"));
                }
                (Some(put_with(&s, &c, SECRET, seq, &headers, &bytes, now)), seq, Some(bytes))
            }
            Op::Part { seq, part, disc } => {
                let seq = near(seq);
                let bytes = ts_body(seq * 4 + u64::from(part), 1);
                let mut headers = vec![
                    ("X-Duration", "0.250"),
                    ("X-Part-Target", "0.250"),
                    ("X-Target-Duration", "1"),
                    ("X-Independent", if part == 0 { "1" } else { "0" }),
                ];
                if disc && part == 0 {
                    headers.push(("X-Discontinuity", "1"));
                }
                let h = head(Method::Put, &format!("/ingest/{SECRET}/{seq}/{part}.ts"), &headers);
                let reply = request(&s, &c, &h, &bytes, now);
                prop_assert!(reply.status < 500, "part {seq}.{part}: {}", reply.status);
                (None, seq, None)
            }
            Op::Commit { seq } => {
                let seq = near(seq);
                let count = parts_of(seq).to_string();
                let h = head(Method::Post, &format!("/ingest/{SECRET}/{seq}/commit"), &[("X-Parts", &count)]);
                let reply = request(&s, &c, &h, b"", now);
                let r = get(&s, &c, &format!("/chunks/{id}/{seq}.ts"), now);
                let bytes = (r.status == 200).then(|| try_body(&s, &r)).flatten();
                (Some(reply), seq, bytes)
            }
            Op::Gap { seq } => {
                let seq = near(seq);
                model.gap_requests.entry(seq).or_default().push(now);
                (Some(gap_request(&s, &c, seq, now)), seq, None)
            }
            Op::End => {
                let reply = request(&s, &c, &head(Method::Post, &format!("/ingest/{SECRET}/end"), &[]), &[], now);
                prop_assert!(reply.status < 500, "end: {}", reply.status);
                (None, 0, None)
            }
            Op::Read => {
                check(&kv, &c, &mut model, now, tolerate)?;
                (None, 0, None)
            }
            Op::Sweep => {
                let report = sweep::run(&s, &c, now);
                prop_assert!(report.is_ok(), "sweep: {report:?}");
                SWEEPS.fetch_add(1, Ordering::Relaxed);
                (None, 0, None)
            }
            Op::Wait { ms } => {
                now += i64::from(ms);
                (None, 0, None)
            }
        };
        if let Some(reply) = reply {
            prop_assert!(reply.status < 500, "seq {seq}: {}", reply.status);
            if reply.status == 200 || reply.status == 201 {
                // What the acknowledging request saw committed (its own write, or the one it
                // found).
                let meta = meta_of(&s, &id, seq);
                prop_assert!(meta.is_some(), "seq {} acknowledged ({}) but its request sees no meta", seq, reply.status);
                let meta = meta.unwrap();
                let acks = model.acked.entry(seq).or_default();
                // A retry acknowledges the same segment; nothing acknowledged is replaced.
                // (An expired one may be followed by a new upload of its seq once the sweep
                // deleted the stream: a session resumed.)
                let differ = |a: &&Ack| (a.meta.sha1 != meta.sha1 || a.meta.gap != meta.gap) && !c.retention.is_expired(a.meta.stored_ms, now);
                // (Tolerated: the two were first acknowledged within the lag of each other;
                // later acknowledgements are retries answered from what stuck.)
                let same = |a: &&Ack| a.meta.sha1 == meta.sha1 && a.meta.gap == meta.gap;
                let first_same = acks.iter().filter(same).map(|a| a.at).min().unwrap_or(now);
                for other in acks.iter().filter(differ) {
                    HANDSHAKES_LOST.fetch_add(1, Ordering::Relaxed);
                    prop_assert!(
                        tolerate.handshake && (first_same - other.at).abs() <= lag,
                        "seq {} acknowledged as {} at {} and as {} at {}",
                        seq,
                        if other.meta.gap { "a gap" } else { "a segment" },
                        other.at - T0,
                        if meta.gap { "a gap" } else { "a segment" },
                        now - T0
                    );
                }
                if acks.is_empty() {
                    ACKS.fetch_add(1, Ordering::Relaxed);
                }
                acks.push(Ack { at: now, meta, bytes });
            }
        }
        // As the edge does: one sweep step after every request, in the same request.
        let had_record = kv.primary().get(&format!("stream/{id}")).unwrap().is_some();
        sweep::after_request(&s, &c, now);
        if had_record && kv.primary().get(&format!("stream/{id}")).unwrap().is_none() {
            model.swept.push(now);
        }
    }
    // Time passes with readers only: every write shows, retention slides over everything.
    for _ in 0..6 {
        now += 10_000;
        clock.store(now, Ordering::SeqCst);
        check(&kv, &c, &mut model, now, tolerate)?;
    }
    Ok(())
}

fn runner(cases: u32, rng: Option<TestRng>) -> TestRunner {
    let config = RunnerConfig { cases, failure_persistence: None, max_shrink_iters: 300, ..RunnerConfig::default() };
    match rng {
        Some(rng) => TestRunner::new_with_rng(config, rng),
        None => TestRunner::new(config),
    }
}

/// Requests are 100 ms apart: 50 ms lags within a request's neighbour, 250 ms and 1 s across
/// several requests.
fn fixed_lag() -> impl Strategy<Value = Lag> {
    prop_oneof![2 => Just(Lag::Fixed(50)), 3 => Just(Lag::Fixed(250)), 2 => Just(Lag::Fixed(1000))]
}

fn random_lag() -> impl Strategy<Value = Lag> {
    (0u64..1000).prop_map(|seed| Lag::Random { max_ms: 300, seed })
}

fn env_tolerate() -> Tolerate {
    let off = std::env::var("LAG_OFF").unwrap_or_default();
    Tolerate {
        hidden_below_resumed_start: !off.contains("hidden"),
        racing_records: !off.contains("racing"),
        swept_under_upload: !off.contains("swept"),
        handshake: !off.contains("handshake"),
        unordered: !off.contains("unordered"),
    }
}

fn stats() -> String {
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    format!(
        "{} playlists checked ({} while an acknowledgement had not shown), {} acknowledgements, {} sweeps; tolerated: {} racing records, {} handshakes both won, {} went back, {} missing while unordered; {} remainders, {} new lives",
        n(&PLAYLISTS_CHECKED), n(&LAGGED_READS), n(&ACKS), n(&SWEEPS), n(&RACING_RECORDS), n(&HANDSHAKES_LOST), n(&WENT_BACK), n(&UNORDERED_MISSES), n(&REMAINDERS), n(&NEW_LIVES)
    )
}

/// No lag: every rule as property.rs asserts it, with the sweep running too (the store is the
/// lagging one at lag 0, so this also checks the model and the checks).
#[test]
fn property_no_lag_every_rule_holds() {
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[10; 32]);
    runner(128, Some(rng)).run(&case_with(Just(Lag::Fixed(0))), |case| run_case(&case, STRICT)).unwrap();
    eprintln!("no lag: {}", stats());
}

/// A fixed lag of 50 ms to 1 s (requests 100 ms apart): every rule holds except findings 1,
/// 2, 3 and 5, which hold in their weaker form (see [`Tolerate`]). `LAG_OFF=handshake`
/// (or `hidden`, `racing`, `swept`) asserts that rule in full and shows its smallest failing
/// case.
#[test]
fn property_fixed_lag_rules_hold_or_their_weaker_form() {
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[11; 32]);
    let tolerate = Tolerate { unordered: false, ..env_tolerate() };
    runner(256, Some(rng)).run(&case_with(fixed_lag()), |case| run_case(&case, tolerate)).unwrap();
    eprintln!("fixed lag: {}", stats());
    assert!(LAGGED_READS.load(Ordering::Relaxed) >= 50 && HANDSHAKES_LOST.load(Ordering::Relaxed) >= 1 && RACING_RECORDS.load(Ordering::Relaxed) >= 1);
}

/// A random lag in [0, 300 ms] per write and reader: no order across keys (finding 4), so a
/// reader may see a hint before the metas it speaks for. What holds: no `5xx`, nothing
/// acknowledged replaced but by a racing gap or segment of its seq within the lag, a listed
/// acknowledged seq serves its bytes, every playlist passes the checks; not: that media and
/// discontinuity sequences never go back, nor that every acknowledged seq is listed.
#[test]
fn property_random_lag_weaker_rules_hold() {
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[12; 32]);
    runner(128, Some(rng)).run(&case_with(random_lag()), |case| run_case(&case, env_tolerate())).unwrap();
    eprintln!("random lag: {}", stats());
}

const STRICT: Tolerate =
    Tolerate { hidden_below_resumed_start: false, racing_records: false, swept_under_upload: false, handshake: false, unordered: false };


// ---------------------------------------------------------------------------------------------
// Threads: uploaders, a gap-giver, Stop, viewers (and the sweep step after every request, as the
// edge runs it) on one lagging store.

/// A tiny deterministic generator per thread.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

#[test]
fn threads_under_fixed_lag_lose_nothing_acknowledged_and_never_go_back() {
    const SEGMENTS: u64 = 240;
    const THREAD_LAG: u64 = 20;
    for round in 0..3u64 {
        let (kv, clock) = lagged(Lag::Fixed(THREAD_LAG));
        let c = config(Retention::Millis(600_000), 10_000_000);
        let id = stream_id(SECRET);
        let next = AtomicU64::new(0);
        let done = AtomicU64::new(0);
        // seq -> (answers, times): segments acknowledged, gaps acknowledged, gap requests.
        let log: std::sync::Mutex<BTreeMap<u64, (Vec<i64>, Vec<i64>, Vec<i64>)>> = Default::default();
        let checks = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for t in 0..2u64 {
                let (kv, c, clock, next, done, log) = (&kv, &c, &clock, &next, &done, &log);
                scope.spawn(move || {
                    let mut rng = Lcg(round * 10 + t + 1);
                    let mut later = Vec::new();
                    loop {
                        let seq = match later.pop() {
                            Some(seq) => seq,
                            None => {
                                let seq = next.fetch_add(1, Ordering::SeqCst);
                                if seq >= SEGMENTS {
                                    break;
                                }
                                seq
                            }
                        };
                        let now = clock.fetch_add(1 + rng.next(3) as i64, Ordering::SeqCst);
                        let s = kv.session();
                        let status = put(&s, c, SECRET, seq, "2", &ts_body(seq, 2), now).status;
                        sweep::after_request(&s, c, now);
                        assert!(status < 500, "seq {seq}: {status}");
                        match status {
                            429 => later.push(seq),
                            200 | 201 => log.lock().unwrap().entry(seq).or_default().0.push(now),
                            _ => {}
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
            // The gap-giver: gives up a seq just sent now and then (the extension's bound
            // dropping a segment whose answer never came).
            {
                let (kv, c, clock, next, done, log) = (&kv, &c, &clock, &next, &done, &log);
                scope.spawn(move || {
                    let mut rng = Lcg(round + 77);
                    while done.load(Ordering::SeqCst) < 2 {
                        for _ in 0..30 + rng.next(60) {
                            std::thread::yield_now();
                        }
                        let seq = next.load(Ordering::SeqCst).min(SEGMENTS).saturating_sub(1 + rng.next(2));
                        let now = clock.load(Ordering::SeqCst);
                        log.lock().unwrap().entry(seq).or_default().2.push(now);
                        let s = kv.session();
                        let status = gap_request(&s, c, seq, now).status;
                        assert!(status < 500, "gap {seq}: {status}");
                        if status == 200 || status == 201 {
                            log.lock().unwrap().entry(seq).or_default().1.push(now);
                        }
                    }
                });
            }
            // Stop now and then: the next upload resumes with a discontinuity.
            {
                let (kv, c, clock, done) = (&kv, &c, &clock, &done);
                scope.spawn(move || {
                    let end = head(Method::Post, &format!("/ingest/{SECRET}/end"), &[]);
                    let mut rng = Lcg(round + 99);
                    while done.load(Ordering::SeqCst) < 2 {
                        for _ in 0..50 + rng.next(100) {
                            std::thread::yield_now();
                        }
                        let now = clock.fetch_add(1, Ordering::SeqCst);
                        let status = request(&kv.session(), c, &end, &[], now).status;
                        assert!(status == 200 || status == 404, "Stop answered {status}");
                    }
                });
            }
            // Viewers: each its own sequence of playlists.
            for _ in 0..2 {
                let (kv, c, clock, done, id, checks) = (&kv, &c, &clock, &done, &id, &checks);
                scope.spawn(move || {
                    let mut last = (0u64, 0u64, None::<u64>);
                    while done.load(Ordering::SeqCst) < 2 {
                        let now = clock.load(Ordering::SeqCst);
                        let s = kv.session();
                        let reply = playlist(&s, c, id, now);
                        sweep::after_request(&s, c, now);
                        if reply.status == 404 {
                            continue;
                        }
                        assert_eq!(reply.status, 200);
                        let text = text(&s, &reply);
                        let plain: String = text.lines().filter(|l| *l != "#EXT-X-GAP").map(|l| format!("{l}\n")).collect();
                        let p = ll_check::check(&plain);
                        assert!(p.media_sequence >= last.0, "media sequence went back\n{text}");
                        assert!(p.discontinuity_sequence >= last.1, "discontinuity sequence went back\n{text}");
                        assert!(last.2.is_none_or(|t| t == p.target_s), "target changed\n{text}");
                        last = (p.media_sequence, p.discontinuity_sequence, Some(p.target_s));
                        checks.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        // Every write shows; then every acknowledged seq is listed: as the segment with its
        // bytes, or as a gap only where a gap request came within the lag of the segment's
        // acknowledgement (finding 5: the handshake cannot hold across requests under lag).
        let now = clock.fetch_add(THREAD_LAG as i64 + 1, Ordering::SeqCst) + THREAD_LAG as i64 + 1;
        let s = kv.session();
        let reply = playlist(&s, &c, &id, now);
        assert_eq!(reply.status, 200);
        let text = text(&s, &reply);
        let listed = listed_seqs(&text);
        let log = log.lock().unwrap();
        let mut lost_handshakes = 0;
        for (seq, (segs, gaps, gap_requests)) in log.iter() {
            if segs.is_empty() && gaps.is_empty() {
                continue;
            }
            assert!(listed.contains(seq), "acknowledged seq {seq} missing\n{text}");
            let meta = meta_of(&s, &id, *seq).unwrap();
            if meta.gap {
                for &ack in segs {
                    lost_handshakes += 1;
                    assert!(gap_requests.iter().any(|&g| (g - ack).abs() <= THREAD_LAG as i64), "seq {seq} acknowledged at {ack} became a gap");
                }
            } else {
                let chunk = get(&s, &c, &format!("/chunks/{id}/{seq}.ts"), now);
                assert_eq!(body(&s, &chunk), ts_body(*seq, 2), "seq {seq} serves other bytes");
                for &ack in gaps {
                    lost_handshakes += 1;
                    assert!(segs.iter().any(|&u| (u - ack).abs() <= THREAD_LAG as i64), "gap {seq} acknowledged at {ack} became a segment");
                }
            }
        }
        eprintln!("round {round}: {} playlists checked, {} seqs, {lost_handshakes} handshakes both won", checks.load(Ordering::Relaxed), log.len());
        assert!(checks.load(Ordering::Relaxed) > 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Metas blocks (a sliding window keeps settled metas in blocks and deletes their keys) under lag.

fn part_headers_2s(part: u32) -> Vec<(&'static str, String)> {
    vec![
        ("X-Duration", if part == 5 { "0.335" } else { "0.333" }.to_owned()),
        ("X-Part-Target", "0.335".to_owned()),
        ("X-Target-Duration", "2".to_owned()),
        ("X-Independent", if part == 0 { "1" } else { "0" }.to_owned()),
    ]
}

/// A default-shaped low-latency stream (2 s segments of six parts) runs 60 segments on a store
/// whose writes show up to just under `SHOWN_WITHIN_MS` late, fixed or at random per key, with
/// a viewer reading after every part: its metas go into blocks and their keys are deleted as
/// it goes, yet every playlist passes the LL checks, its sequences never go back, it lists
/// every segment acknowledged one lag ago (as a segment, never a gap), and every listed segment
/// and part is served with the bytes uploaded.
#[test]
fn metas_blocks_under_lag_lose_nothing_and_never_move_a_sequence_back() {
    for lag in [Lag::Fixed(4_900), Lag::Random { max_ms: 4_900, seed: 7 }] {
        let (kv, clock) = lagged(lag);
        let c = config(Retention::Millis(600_000), 30_000);
        let id = stream_id(SECRET);
        let body = |seq: u64, part: u32| ts(3 + part as usize, (seq * 6 + u64::from(part)) as u8);
        let mut acked: Vec<(u64, i64)> = Vec::new();
        let mut last = (0u64, 0u64);
        // Random lag shows writes out of order across keys: what holds then is weaker
        // (ARCHITECTURE.md, "Eventual consistency"), and checked once everything has shown.
        let strict = matches!(lag, Lag::Fixed(_));
        let mut misses = 0;
        let mut now = T0;
        // Segments whose six parts are uploaded, with when the last one was: committed once
        // their parts have shown to every request (before, a commit is `409` and retried).
        let mut sealable: std::collections::VecDeque<(u64, i64)> = Default::default();
        let commit = |seq: u64, now: i64| {
            let h = head(Method::Post, &format!("/ingest/{SECRET}/{seq}/commit"), &[("X-Parts", "6")]);
            let s = kv.session();
            let r = request(&s, &c, &h, b"", now);
            assert_eq!(r.status, 201, "{lag:?} commit {seq}: {}", text(&s, &r));
        };
        for seq in 0..63u64 {
            for part in 0..6u32 {
                now += 333;
                clock.store(now, Ordering::SeqCst);
                while let Some(&(ready, at)) = sealable.front() {
                    if now - at <= 4_900 {
                        break;
                    }
                    commit(ready, now);
                    acked.push((ready, now));
                    sealable.pop_front();
                }
                if seq >= 60 {
                    continue;
                }
                let headers = part_headers_2s(part);
                let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                let h = head(Method::Put, &format!("/ingest/{SECRET}/{seq}/{part}.ts"), &headers);
                let s = kv.session();
                let r = request(&s, &c, &h, &body(seq, part), now);
                assert_eq!(r.status, 201, "{lag:?} part {seq}.{part}: {}", text(&s, &r));

                let s = kv.session();
                let reply = playlist(&s, &c, &id, now);
                if reply.status == 404 && acked.iter().all(|&(_, at)| now - at <= 4_900) {
                    continue; // Nothing acknowledged has shown yet.
                }
                if reply.status == 404 && !strict {
                    // Random lag: the tail hint showed before the newest metas below it, and
                    // the walk down from it stops at the first one missing (ARCHITECTURE.md).
                    misses += 1;
                    continue;
                }
                assert_eq!(reply.status, 200, "{lag:?} at {seq}.{part}, acked {:?}: {}", acked.iter().map(|a| (a.0, now - a.1)).collect::<Vec<_>>(), text(&s, &reply));
                let p = ll_check::check(&text(&s, &reply));
                if strict {
                    let seen = (p.media_sequence, p.discontinuity_sequence);
                    assert!(seen >= last, "{lag:?}: sequences went back at {seq}.{part}: {seen:?} after {last:?}");
                }
                last = (p.media_sequence, p.discontinuity_sequence);
                let listed = p.seqs();
                for &(s, at) in acked.iter().filter(|_| strict) {
                    if now - at > 4_900 {
                        assert!(listed.contains(&s), "{lag:?}: acknowledged {s} missing at {seq}.{part}: {listed:?}");
                    }
                }
                assert!(p.segments.iter().all(|s| !s.uri.is_empty()), "{lag:?}: a listed segment became a gap");
            }
            if seq < 60 {
                sealable.push_back((seq, now));
            }
        }
        assert!(sealable.is_empty() && acked.len() == 60, "{lag:?}: {} sealed", acked.len());
        // Measured, not a rule (ARCHITECTURE.md): 68 of 360 at seed 7.
        eprintln!("{lag:?}: {misses} playlists of 360 were 404 while acknowledged segments had shown");
        // Blocks were written and meta keys deleted: the stream kept about one key a segment.
        now += 5_000;
        clock.store(now, Ordering::SeqCst);
        let keys = kv.keys();
        let metas = keys.iter().filter(|k| k.ends_with("/meta")).count();
        assert!(keys.iter().any(|k| k.starts_with("metas/")), "{lag:?}: no block written");
        assert!(metas <= 24, "{lag:?}: {metas} meta keys left of 60");
        let s = kv.session();
        let reply = playlist(&s, &c, &id, now);
        let dump: Vec<(String, String)> = kv.keys().into_iter().filter(|k| !k.starts_with("seg/")).map(|k| { let v = s.get(&k).unwrap().map(|v| String::from_utf8_lossy(&v[..v.len().min(200)]).into_owned()).unwrap_or_default(); (k, v) }).collect();
        assert_eq!(ll_check::check(&text(&s, &reply)).seqs(), (0..60).collect::<Vec<_>>(), "{lag:?}: once everything has shown: {dump:#?}");
        for seq in 0..60u64 {
            let whole: Vec<u8> = (0..6).flat_map(|part| body(seq, part)).collect();
            let s = kv.session();
            let r = get(&s, &c, &format!("/chunks/{id}/{seq}.ts"), now);
            assert_eq!((r.status, body_of(&s, &r)), (200, whole), "{lag:?}: segment {seq}");
            let s = kv.session();
            let r = get(&s, &c, &format!("/chunks/{id}/{seq}.2.ts"), now);
            assert_eq!((r.status, body_of(&s, &r)), (200, body(seq, 2)), "{lag:?}: part {seq}.2");
        }
    }
}

fn body_of(kv: &dyn Kv, reply: &Reply) -> Vec<u8> {
    common::body(kv, reply)
}
