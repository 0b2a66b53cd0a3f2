//! The sweep (issue 10) on the memory store with a fake clock: abandoned streams are deleted
//! with no request ever touching them again while other traffic goes on, lost updates of the
//! registrations only delay, retention 0 streams are never touched, and `POST /admin/sweep`
//! does the same work when there is no traffic. Every request here runs the sweep's step after
//! its own work, as the Spin edge does. Tests list keys (`MemoryKv::keys`); the server never
//! does. Run with `--nocapture` to see the sweep's key-value cost per request.

mod common;

use chalkstream_manifest::id::StreamId;
use chalkstream_manifest::rules::{Config, Retention};
use chalkstream_spin_app::api::RequestHead;
use chalkstream_spin_app::kv::{Kv, KvError, MemoryKv};
use chalkstream_spin_app::reply::Reply;
use chalkstream_spin_app::route::Method;
use chalkstream_spin_app::sweep;
use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `stream_retention = 0.1` (minutes).
const RETENTION_MS: u64 = 6_000;
const MINUTE: i64 = 60_000;

/// The memory store, counting reads and writes (sets and deletes).
#[derive(Default)]
struct Counted {
    inner: MemoryKv,
    reads: AtomicUsize,
    writes: AtomicUsize,
}

impl Counted {
    fn counts(&self) -> (usize, usize) {
        (self.reads.load(Ordering::Relaxed), self.writes.load(Ordering::Relaxed))
    }
    fn keys(&self) -> Vec<String> {
        self.inner.keys()
    }
}

impl Kv for Counted {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.delete(key)
    }
}

/// What the sweep's steps cost, over all requests served.
#[derive(Default, Debug)]
struct SweepCost {
    requests: usize,
    reads: usize,
    writes: usize,
    max_reads: usize,
    max_writes: usize,
    /// Requests whose step found nothing due (one read of `sweep/next`).
    idle: usize,
}

/// A request as the edge serves it: the handlers, then the sweep's step.
fn serve(kv: &Counted, c: &Config, h: &RequestHead, body: &[u8], now: i64, cost: &mut SweepCost) -> Reply {
    let reply = request(kv, c, h, body, now);
    let (r0, w0) = kv.counts();
    sweep::after_request(kv, c, now);
    let (r1, w1) = kv.counts();
    let (reads, writes) = (r1 - r0, w1 - w0);
    cost.requests += 1;
    cost.reads += reads;
    cost.writes += writes;
    cost.max_reads = cost.max_reads.max(reads);
    cost.max_writes = cost.max_writes.max(writes);
    if reads <= 1 && writes == 0 {
        cost.idle += 1;
    }
    reply
}

fn put_seg(kv: &Counted, c: &Config, secret: &str, seq: u64, now: i64, cost: &mut SweepCost) -> Reply {
    let h = head(Method::Put, &format!("/ingest/{secret}/{seq}.ts"), &[("X-Duration", "1.000")]);
    serve(kv, c, &h, &ts(2, seq as u8), now, cost)
}

fn put_part(kv: &Counted, c: &Config, secret: &str, seq: u64, part: u32, now: i64, cost: &mut SweepCost) -> Reply {
    let independent = if part == 0 { "1" } else { "0" };
    let headers = [("X-Duration", "0.500"), ("X-Part-Target", "0.500"), ("X-Target-Duration", "1"), ("X-Independent", independent)];
    let h = head(Method::Put, &format!("/ingest/{secret}/{seq}/{part}.ts"), &headers);
    serve(kv, c, &h, &ts(2, part as u8), now, cost)
}

fn commit(kv: &Counted, c: &Config, secret: &str, seq: u64, parts: u32, now: i64, cost: &mut SweepCost) -> Reply {
    let parts = parts.to_string();
    let h = head(Method::Post, &format!("/ingest/{secret}/{seq}/commit"), &[("X-Parts", &parts)]);
    serve(kv, c, &h, b"", now, cost)
}

fn get_playlist(kv: &Counted, c: &Config, id: &str, now: i64, cost: &mut SweepCost) -> Reply {
    serve(kv, c, &head(Method::Get, &format!("/playlist/{id}.m3u8"), &[]), &[], now, cost)
}

fn secret(name: &str, i: usize) -> String {
    format!("sweep-{name}-secret-{i:06}")
}

/// Keys that belong to stream `id`.
fn keys_of(keys: &[String], id: &str) -> Vec<String> {
    keys.iter().filter(|k| k.split('/').nth(1) == Some(id)).cloned().collect()
}

/// Keys of the sweep's index that name a stream other than `live` (or do not parse).
fn index_keys_naming_others(kv: &Counted, live: &str) -> Vec<String> {
    kv.keys()
        .into_iter()
        .filter(|k| k.starts_with("due/"))
        .filter(|k| {
            let ids: Vec<String> = serde_json::from_slice(&kv.inner.get(k).unwrap().unwrap()).unwrap_or_default();
            ids.iter().any(|id| id != live)
        })
        .collect()
}

/// Every key left is the live stream's, the sweep hint, or a due value naming only it.
fn only_the_live_stream_is_left(kv: &Counted, live: &str) -> bool {
    kv.keys().iter().all(|k| {
        k == "sweep/next" || k.split('/').nth(1) == Some(live) || (k.starts_with("due/") && index_keys_naming_others(kv, live).is_empty())
    })
}

#[test]
fn two_hundred_abandoned_streams_are_swept_while_one_stream_keeps_uploading() {
    let c = config(Retention::Millis(RETENTION_MS), 30_000);
    let kv = Counted::default();
    let mut cost = SweepCost::default();
    let live = secret("live", 0);
    let live_id = stream_id(&live);
    let mut now = T0 + 5_000;
    let mut live_seq = 0;
    let mut abandoned = Vec::new();
    // 200 short streams, uploaded while the live stream runs: 140 of whole segments, 30 of
    // parts with a committed segment and an open one, 30 that only ever uploaded parts.
    for i in 0..200 {
        let s = secret("gone", i);
        match i {
            0..140 => {
                assert_eq!(put_seg(&kv, &c, &s, 0, now, &mut cost).status, 201);
                assert_eq!(put_seg(&kv, &c, &s, 1, now + 50, &mut cost).status, 201);
            }
            140..170 => {
                assert_eq!(put_part(&kv, &c, &s, 0, 0, now, &mut cost).status, 201);
                assert_eq!(put_part(&kv, &c, &s, 0, 1, now + 20, &mut cost).status, 201);
                assert_eq!(commit(&kv, &c, &s, 0, 2, now + 30, &mut cost).status, 201);
                assert_eq!(put_part(&kv, &c, &s, 1, 0, now + 40, &mut cost).status, 201);
            }
            _ => {
                assert_eq!(put_part(&kv, &c, &s, 0, 0, now, &mut cost).status, 201);
                assert_eq!(put_part(&kv, &c, &s, 0, 1, now + 20, &mut cost).status, 201);
            }
        }
        abandoned.push(stream_id(&s));
        if i % 10 == 9 {
            assert_eq!(put_seg(&kv, &c, &live, live_seq, now, &mut cost).status, 201);
            live_seq += 1;
            now += 1_000;
        }
    }
    let last_abandoned_upload = now;
    assert!(abandoned.iter().all(|id| !keys_of(&kv.keys(), id).is_empty()));
    let registered = kv.keys().iter().filter(|k| k.starts_with("due/")).count();
    assert!(registered > 0, "uploads register their streams");

    // The live stream goes on (a segment and a playlist GET a second); nobody touches the
    // abandoned streams again. The stated bound: retention + 1 minute (the due minute is rounded
    // up) + the requests that visit 4 streams each.
    let bound = last_abandoned_upload + RETENTION_MS as i64 + 2 * MINUTE;
    let mut swept_at = None;
    while now <= bound + 30_000 {
        assert_eq!(put_seg(&kv, &c, &live, live_seq, now, &mut cost).status, 201);
        live_seq += 1;
        assert_eq!(get_playlist(&kv, &c, &live_id, now, &mut cost).status, 200);
        if swept_at.is_none() && abandoned.iter().all(|id| keys_of(&kv.keys(), id).is_empty()) && only_the_live_stream_is_left(&kv, &live_id) {
            swept_at = Some(now);
        }
        now += 1_000;
    }
    let swept_at = swept_at.unwrap_or_else(|| {
        let left: Vec<String> = kv.keys().into_iter().filter(|k| k.split('/').nth(1) != Some(live_id.as_str())).collect();
        panic!("abandoned streams left keys: {:?}", &left[..left.len().min(20)])
    });
    assert!(swept_at <= bound, "swept {} ms after the last upload, beyond the bound", swept_at - last_abandoned_upload);

    // What is left: the live stream's window (its segments of the last 6 s, their bodies, its
    // records) and the index naming only it.
    let live_keys = keys_of(&kv.keys(), &live_id);
    let metas = live_keys.iter().filter(|k| k.ends_with("/meta")).count();
    assert!(metas <= 8, "the live stream keeps its window only: {metas} metas");
    let reply = get_playlist(&kv, &c, &live_id, now, &mut cost);
    assert!(listed_seqs(&text(&kv, &reply)).len() >= 5, "the live stream is still listed");
    assert!(index_keys_naming_others(&kv, &live_id).is_empty());
    let others: Vec<String> =
        kv.keys().into_iter().filter(|k| k.split('/').nth(1) != Some(live_id.as_str()) && k != "sweep/next" && !k.starts_with("due/")).collect();
    assert!(others.is_empty(), "{others:?}");
    println!(
        "\nsweep after each request, {} requests: {} reads and {} writes in all, {:.2} reads and {:.2} writes per request on average, at most {} reads and {} writes in one request; {} requests found nothing due (1 read)",
        cost.requests,
        cost.reads,
        cost.writes,
        cost.reads as f64 / cost.requests as f64,
        cost.writes as f64 / cost.requests as f64,
        cost.max_reads,
        cost.max_writes,
        cost.idle
    );
    println!("200 abandoned streams swept {} s after their last upload (retention {} s)", (swept_at - last_abandoned_upload) / 1000, RETENTION_MS / 1000);
}

#[test]
fn what_registration_costs_an_upload() {
    let c = config(Retention::Millis(10 * 60_000), 30_000);
    let kv = Counted::default();
    let s = secret("cost", 0);
    let id = StreamId::parse(&stream_id(&s)).unwrap();
    let mut cost = SweepCost::default();
    assert_eq!(put_seg(&kv, &c, &s, 0, T0 + 1_000, &mut cost).status, 201);
    let measure = |now: i64| {
        let before = kv.counts();
        sweep::after_upload(&kv, &c, &id, now).unwrap();
        let after = kv.counts();
        (after.0 - before.0, after.1 - before.1)
    };
    let same_minute = measure(T0 + 2_000);
    let next_minute = measure(T0 + MINUTE + 2_000);
    println!("\nregistration per upload: {same_minute:?} (reads, writes) while its due minute stays, {next_minute:?} when it moves (once a minute)");
    assert_eq!(same_minute, (2, 0));
}

#[test]
fn retention_zero_streams_are_never_registered_or_touched() {
    let c = config(Retention::Forever, 30_000);
    let kv = Counted::default();
    let mut cost = SweepCost::default();
    let mut now = T0;
    for i in 0..10 {
        let s = secret("forever", i);
        for seq in 0..3 {
            assert_eq!(put_seg(&kv, &c, &s, seq, now, &mut cost).status, 201);
        }
        now += 1_000;
    }
    let before = kv.keys();
    assert!(before.iter().all(|k| !k.starts_with("due/") && k != "sweep/next"));
    let far = now + 24 * 60 * MINUTE;
    let other = secret("forever-other", 0);
    for seq in 0..20 {
        put_seg(&kv, &c, &other, seq, far + seq as i64 * 1000, &mut cost);
    }
    let after: Vec<String> = kv.keys().into_iter().filter(|k| keys_of(&[k.clone()], &stream_id(&other)).is_empty()).collect();
    assert_eq!(after, before, "retention 0 streams keep every key");
    assert_eq!(cost.idle, cost.requests, "the sweep reads only sweep/next: {cost:?}");
    // A server whose retention is on sweeps only what it registered: these are not.
    let c10 = config(Retention::Millis(RETENTION_MS), 30_000);
    let r = request(&kv, &c10, &head(Method::Get, "/", &[]), &[], far + 60 * MINUTE);
    assert_eq!(r.status, 200);
    sweep::after_request(&kv, &c10, far + 60 * MINUTE);
    for i in 0..10 {
        assert!(!keys_of(&kv.keys(), &stream_id(&secret("forever", i))).is_empty());
    }
}

/// Two streams whose ids fall in one shard.
fn same_shard_pair(name: &str) -> (String, String) {
    let first = secret(name, 0);
    let shard = stream_id(&first).chars().next().unwrap();
    let second = (1..).map(|i| secret(name, i)).find(|s| stream_id(s).starts_with(shard)).unwrap();
    (first, second)
}

/// The shard value `stream` registers in at `now`.
fn due_key_of(id: &str, now: i64) -> String {
    let minute = sweep::due_minute(now, RETENTION_MS);
    format!("due/{minute}/{}", &id[..1])
}

#[test]
fn a_registration_lost_to_a_racing_writer_is_repaired_by_the_next_upload() {
    let c = config(Retention::Millis(RETENTION_MS), 30_000);
    let kv = Counted::default();
    let mut cost = SweepCost::default();
    let (x, y) = same_shard_pair("lost-next");
    let (xid, yid) = (stream_id(&x), stream_id(&y));
    let now = T0 + 10_000;
    let key = due_key_of(&xid, now);
    // Y read the shard value before X appended itself and writes after X read it back: X's
    // registration is gone, X's record still says it is registered.
    let seen_by_y = kv.inner.get(&key).unwrap();
    assert_eq!(put_seg(&kv, &c, &x, 0, now, &mut cost).status, 201);
    assert_eq!(seen_by_y, None);
    assert_eq!(put_seg(&kv, &c, &y, 0, now, &mut cost).status, 201);
    kv.inner.set(&key, serde_json::to_string(&[&yid]).unwrap().as_bytes()).unwrap();
    // X's next upload checks its registration and puts it back.
    assert_eq!(put_seg(&kv, &c, &x, 1, now + 1_000, &mut cost).status, 201);
    let listed: Vec<String> = serde_json::from_slice(&kv.inner.get(&key).unwrap().unwrap()).unwrap();
    assert!(listed.contains(&xid) && listed.contains(&yid), "{listed:?}");
    // Both abandoned; other traffic sweeps them.
    let end = drive_traffic(&kv, &c, now + 2_000, 3 * MINUTE, &mut cost);
    for id in [&xid, &yid] {
        assert!(keys_of(&kv.keys(), id).is_empty(), "left: {:?}", keys_of(&kv.keys(), id));
    }
    assert!(index_keys_naming_others(&kv, &stream_id(&secret("traffic", 0))).is_empty(), "at {end}");
}

#[test]
fn a_last_registration_lost_is_repaired_by_the_sweep_of_the_earlier_minute() {
    let c = config(Retention::Millis(RETENTION_MS), 30_000);
    let kv = Counted::default();
    let mut cost = SweepCost::default();
    let x = secret("lost-last", 0);
    let xid = stream_id(&x);
    // X uploads in one minute, then once more 1 s before that minute ends: its due minute
    // moves on, and that registration (its last) is lost to a racing writer.
    let m0 = T0 + 10 * MINUTE;
    assert_eq!(put_seg(&kv, &c, &x, 0, m0 + 20_000, &mut cost).status, 201);
    let last = m0 + MINUTE - 1_000;
    assert_eq!(put_seg(&kv, &c, &x, 1, last, &mut cost).status, 201);
    let key = due_key_of(&xid, last);
    assert_ne!(key, due_key_of(&xid, m0 + 20_000));
    kv.inner.delete(&key).unwrap();
    // X never uploads again. The sweep of the earlier minute finds X unexpired and
    // registers it again; the sweep of the later one deletes it.
    drive_traffic(&kv, &c, last + 1_500, 3 * MINUTE, &mut cost);
    assert!(keys_of(&kv.keys(), &xid).is_empty(), "left: {:?}", keys_of(&kv.keys(), &xid));
}

#[test]
fn racing_registrations_of_one_shard_value_still_end_empty() {
    // Every interleaving of two registrations' read, write and read-back where the second
    // writer's value lacks the first: the read-back retries, and what it cannot see is
    // repaired by the next upload; all streams end swept.
    let c = config(Retention::Millis(RETENTION_MS), 30_000);
    let kv = Counted::default();
    let mut cost = SweepCost::default();
    let mut ids = Vec::new();
    let now = T0 + 10_000;
    // A stream that uploads once, and whose registration is lost at once: its first
    // registration was also written a minute later.
    let once = secret("race-once", 0);
    let key = due_key_of(&stream_id(&once), now);
    let stale = kv.inner.get(&key).unwrap();
    assert_eq!(put_seg(&kv, &c, &once, 0, now, &mut cost).status, 201);
    match stale {
        Some(stale) => kv.inner.set(&key, &stale).unwrap(),
        None => kv.inner.delete(&key).unwrap(),
    }
    ids.push(stream_id(&once));
    for round in 0..8 {
        let (x, y) = same_shard_pair(&format!("race{round}"));
        let key = due_key_of(&stream_id(&x), now);
        let stale = kv.inner.get(&key).unwrap();
        assert_eq!(put_seg(&kv, &c, &x, 0, now + round, &mut cost).status, 201);
        assert_eq!(put_seg(&kv, &c, &y, 0, now + round, &mut cost).status, 201);
        // A stale writer puts back what it read before both (lost: X and Y).
        match stale {
            Some(stale) => kv.inner.set(&key, &stale).unwrap(),
            None => kv.inner.delete(&key).unwrap(),
        }
        // One of them uploads again (repairs itself); the other is repaired by nothing but its
        // next upload too, so it uploads once more as well, a second later.
        assert_eq!(put_seg(&kv, &c, &x, 1, now + 1_000 + round, &mut cost).status, 201);
        assert_eq!(put_seg(&kv, &c, &y, 1, now + 2_000 + round, &mut cost).status, 201);
        ids.push(stream_id(&x));
        ids.push(stream_id(&y));
    }
    drive_traffic(&kv, &c, now + 3_000, 3 * MINUTE, &mut cost);
    for id in &ids {
        assert!(keys_of(&kv.keys(), id).is_empty(), "left: {:?}", keys_of(&kv.keys(), id));
    }
}

/// Another stream uploading a segment and its playlist fetched each second for `ms`.
fn drive_traffic(kv: &Counted, c: &Config, from: i64, ms: i64, cost: &mut SweepCost) -> i64 {
    let s = secret("traffic", 0);
    let id = stream_id(&s);
    let mut now = from;
    let mut seq = 0;
    while now < from + ms {
        assert_eq!(put_seg(kv, c, &s, seq, now, cost).status, 201);
        assert_eq!(get_playlist(kv, c, &id, now, cost).status, 200);
        seq += 1;
        now += 1_000;
    }
    now
}

#[test]
fn admin_sweep_does_the_work_when_there_is_no_traffic() {
    let mut c = config(Retention::Millis(RETENTION_MS), 30_000);
    c.ingest_token = Some("tok-123".to_owned());
    c.admin_token = Some("adm-456".to_owned());
    let kv = Counted::default();
    let cost = SweepCost::default();
    let auth = [("Authorization", "Bearer tok-123"), ("X-Duration", "1.000")];
    for i in 0..40 {
        let s = secret("admin", i);
        for seq in 0..2 {
            let h = head(Method::Put, &format!("/ingest/{s}/{seq}.ts"), &auth);
            assert_eq!(request(&kv, &c, &h, &ts(2, 1), T0 + 1_000).status, 201);
        }
    }
    // No traffic at all; a cron job calls the endpoint later.
    let later = T0 + 2 * MINUTE + 10_000;
    let wrong = request(&kv, &c, &head(Method::Post, "/admin/sweep", &[("Authorization", "Bearer nope")]), b"", later);
    assert_eq!(wrong.status, 401);
    // Regression (issue 18): a broadcaster's ingest token is no operator's token.
    let broadcaster = request(&kv, &c, &head(Method::Post, "/admin/sweep", &[("Authorization", "Bearer tok-123")]), b"", later);
    assert_eq!(broadcaster.status, 401);
    assert!(json(&kv, &broadcaster)["error"].as_str().unwrap().contains("admin_token"));
    let get = request(&kv, &c, &head(Method::Get, "/admin/sweep", &[("Authorization", "Bearer adm-456")]), b"", later);
    assert_eq!(get.status, 405);
    let mut runs = 0;
    loop {
        let r = request(&kv, &c, &head(Method::Post, "/admin/sweep", &[("Authorization", "Bearer adm-456")]), b"", later);
        assert_eq!(r.status, 200);
        runs += 1;
        let report = json(&kv, &r);
        if report["pending"] == false || runs > 10 {
            break;
        }
    }
    let left: Vec<String> = kv.keys().into_iter().filter(|k| k != "sweep/next").collect();
    assert!(left.is_empty(), "after {runs} calls: {left:?}");
    let _ = cost;

    // Without an admin token the endpoint is off, and says how to turn it on, whatever the
    // ingest token.
    let mut open = config(Retention::Millis(RETENTION_MS), 30_000);
    open.ingest_token = Some("tok-123".to_owned());
    let r = request(&kv, &open, &head(Method::Post, "/admin/sweep", &[("Authorization", "Bearer tok-123")]), b"", later);
    assert_eq!(r.status, 403);
    assert!(json(&kv, &r)["error"].as_str().unwrap().contains("admin_token"));
}

/// Uploads until the sweep has deleted every key of stream `id`: no traffic but the cron job.
fn sweep_until_gone(kv: &Counted, c: &Config, id: &str, now: i64) {
    for _ in 0..20 {
        let report = sweep::run(kv, c, now).unwrap();
        if !report.pending {
            break;
        }
    }
    assert_eq!(keys_of(&kv.keys(), id), Vec::<String>::new(), "the sweep left keys of the stream");
}

/// Regression (issue 18): a session that uploads after the sweep deleted its stream (silent for
/// longer than retention plus the sweep's bound) starts a new run its viewers can play, whatever
/// seq it has reached. Before, the sweep's deleted head and tail made the "64 past the first
/// unstored seq" rule measure from 0: every upload past seq 63 was `429` for good, and a resume
/// below 64 was stored behind a hole at seq 0 that no playlist ever got past (`404`).
#[test]
fn a_session_resumes_after_the_sweep_deleted_its_stream() {
    let c = config(Retention::Millis(RETENTION_MS), 5_000);
    let mut cost = SweepCost::default();
    for (name, before) in [("far", 80u64), ("near", 30)] {
        let kv = Counted::default();
        let s = secret(name, 0);
        let id = stream_id(&s);
        for seq in 0..before {
            assert_eq!(put_seg(&kv, &c, &s, seq, T0 + seq as i64 * 1000, &mut cost).status, 201, "{name} seq {seq}");
        }
        let later = T0 + before as i64 * 1000 + 2 * MINUTE + 10_000;
        sweep_until_gone(&kv, &c, &id, later);
        assert_eq!(get_playlist(&kv, &c, &id, later, &mut cost).status, 404);

        // Far past seq 64 the run starts at once; below it, once the hole under the resumed
        // seq has outlived the idle timeout (5 s here) and `SHOWN_WITHIN_MS` (5 s): it could be
        // a new stream's reordered first uploads until then.
        let uploads = if before >= 64 { 4 } else { 12 };
        for (i, seq) in (before..before + uploads).enumerate() {
            let r = put_seg(&kv, &c, &s, seq, later + i as i64 * 1000, &mut cost);
            assert_eq!(r.status, 201, "{name}: seq {seq} after the sweep: {}", text(&kv, &r));
        }
        let r = get_playlist(&kv, &c, &id, later + uploads as i64 * 1000, &mut cost);
        assert_eq!(r.status, 200, "{name}: {}", text(&kv, &r));
        let p = text(&kv, &r);
        // The resumed run, less what retention (6 s) has expired since.
        let listed = listed_seqs(&p);
        let first = before + uploads - listed.len() as u64;
        assert!(listed.len() >= 4, "{name}:\n{p}");
        assert_eq!(listed, (first..before + uploads).collect::<Vec<_>>(), "{name}:\n{p}");
        assert!(p.contains(&format!("#EXT-X-MEDIA-SEQUENCE:{first}\n")), "{name}:\n{p}");
        assert!(!p.contains("#EXT-X-ENDLIST"), "{name}: the resumed run is live:\n{p}");
        // The hole below the run can no longer be filled: an upload into it is refused, not
        // acknowledged and hidden.
        assert_eq!(put_seg(&kv, &c, &s, 0, later + uploads as i64 * 1000, &mut cost).status, 409, "{name}");
    }

    // A low-latency session resumes the same way, from part 0 of its next segment.
    let kv = Counted::default();
    let s = secret("parts", 0);
    let id = stream_id(&s);
    for seq in 0..70 {
        for part in 0..2 {
            assert_eq!(put_part(&kv, &c, &s, seq, part, T0 + seq as i64 * 1000, &mut cost).status, 201);
        }
        assert_eq!(commit(&kv, &c, &s, seq, 2, T0 + seq as i64 * 1000 + 999, &mut cost).status, 201);
    }
    let later = T0 + 70_000 + 2 * MINUTE + 10_000;
    sweep_until_gone(&kv, &c, &id, later);
    for part in 0..2 {
        let r = put_part(&kv, &c, &s, 70, part, later, &mut cost);
        assert_eq!(r.status, 201, "part {part} after the sweep: {}", text(&kv, &r));
    }
    assert_eq!(commit(&kv, &c, &s, 70, 2, later + 999, &mut cost).status, 201);
    let r = get_playlist(&kv, &c, &id, later + 1_000, &mut cost);
    assert_eq!(r.status, 200, "{}", text(&kv, &r));
    assert!(text(&kv, &r).contains("#EXT-X-MEDIA-SEQUENCE:70\n"), "{}", text(&kv, &r));
}
