//! A full store (issue "serverless envelope", item 2): a platform caps its key-value store
//! (Fermyon Cloud: 1,024 keys), so an ingest write the store refuses is answered `503` with
//! `Retry-After` and a JSON `error` that says so, never `500`; nothing acknowledged is lost,
//! viewers keep playing what is stored, and uploads succeed again once keys are freed. On the
//! memory store with a key limit ([`MemoryKv::with_max_keys`]) and a fake clock; every request
//! runs the sweep's step after its own work, as the Spin edge does.

mod common;

use chalkstream_manifest::rules::{Config, Retention};
use chalkstream_spin_app::kv::{Kv, MemoryKv};
use chalkstream_spin_app::reply::Reply;
use chalkstream_spin_app::sweep;
use common::*;

/// Few enough keys that a handful of segments fill the store.
const MAX_KEYS: usize = 40;
const SEGMENT_MS: i64 = 2_000;

/// Runs `f` as the edge would: the request, then the sweep's bounded step.
fn served(kv: &MemoryKv, c: &Config, now: i64, f: impl FnOnce() -> Reply) -> Reply {
    let reply = f();
    sweep::after_request(kv, c, now);
    reply
}

fn media(seq: u64) -> Vec<u8> {
    ts(3, seq as u8)
}

/// Uploads one 2 s segment every 2 s from `seq` on until the store refuses one for good, and
/// returns the refusal, its seq and its time. A write refused after the segment's commit point
/// (its meta) still answers 503 and its retry `200`: that one counts as acknowledged.
fn fill(kv: &MemoryKv, c: &Config, acked: &mut Vec<u64>, mut seq: u64) -> (Reply, u64, i64) {
    let mut refusals = 0;
    loop {
        let now = T0 + seq as i64 * SEGMENT_MS + refusals * 100;
        let reply = served(kv, c, now, || put(kv, c, SECRET, seq, "2", &media(seq), now));
        match reply.status {
            201 | 200 => {
                acked.push(seq);
                seq += 1;
                refusals = 0;
            }
            503 if refusals == 0 => refusals += 1,
            _ => return (reply, seq, now),
        }
        assert!(seq < 100, "the store never filled up");
    }
}

fn listed(kv: &MemoryKv, c: &Config, id: &str, now: i64) -> Vec<u64> {
    let reply = served(kv, c, now, || playlist(kv, c, id, now));
    assert_eq!(reply.status, 200, "the playlist of a full store: {}", text(kv, &reply));
    listed_seqs(&text(kv, &reply))
}

#[test]
fn regression_a_full_store_answers_503_loses_nothing_and_takes_uploads_again_once_keys_are_freed() {
    let kv = MemoryKv::with_max_keys(MAX_KEYS);
    let c = config(Retention::Millis(600_000), 30_000);
    let id = stream_id(SECRET);
    // Keys something else holds in the store (another app's, an operator's), freed later.
    for n in 0..10 {
        kv.set(&format!("other/{n}"), b"x").unwrap();
    }

    let mut acked = Vec::new();
    let (refused, refused_seq, now) = fill(&kv, &c, &mut acked, 0);
    assert!(acked.len() >= 3, "the store filled too early: {refused:?}");
    assert!(kv.keys().len() <= MAX_KEYS);

    // 503 with Retry-After and a JSON error that says what happened, with no secret in it.
    assert_eq!(refused.status, 503, "a write the store refuses: {}", text(&kv, &refused));
    let retry_after: u32 = refused.get_header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    let error = json(&kv, &refused)["error"].as_str().unwrap().to_owned();
    assert!(error.contains("full") && error.contains("refused") && error.contains("retried"), "{error}");
    assert!(!text(&kv, &refused).contains(SECRET));

    // Retries while the store stays full keep answering 503: none is acknowledged.
    for _ in 0..3 {
        let again = served(&kv, &c, now, || put(&kv, &c, SECRET, refused_seq, "2", &media(refused_seq), now));
        assert_eq!(again.status, 503, "{}", text(&kv, &again));
    }

    // Viewers keep playing what is stored: every acknowledged segment is listed and served.
    assert_eq!(listed(&kv, &c, &id, now), acked, "a full store lost an acknowledged segment");
    for &s in &acked {
        let chunk = served(&kv, &c, now, || get(&kv, &c, &format!("/chunks/{id}/{s}.ts"), now));
        assert_eq!(chunk.status, 200);
        assert_eq!(body(&kv, &chunk), media(s));
    }
    let status = served(&kv, &c, now, || get(&kv, &c, &format!("/api/streams/{id}"), now));
    assert_eq!(status.status, 200);

    // Keys are freed: the refused upload, retried as the extension does, is stored, and the
    // stream goes on.
    for n in 0..10 {
        kv.delete(&format!("other/{n}")).unwrap();
    }
    let mut now = now + 1_000;
    let retried = served(&kv, &c, now, || put(&kv, &c, SECRET, refused_seq, "2", &media(refused_seq), now));
    assert_eq!(retried.status, 201, "after keys were freed: {}", text(&kv, &retried));
    acked.push(refused_seq);
    let next = refused_seq + 1;
    now += SEGMENT_MS;
    let reply = served(&kv, &c, now, || put(&kv, &c, SECRET, next, "2", &media(next), now));
    assert_eq!(reply.status, 201, "after keys were freed: {}", text(&kv, &reply));
    acked.push(next);
    assert_eq!(listed(&kv, &c, &id, now), acked);
    assert!(kv.keys().len() <= MAX_KEYS);
}

/// The store's own recovery: retention deletes expired segments of a full store, freeing keys,
/// and viewers' playlists stay `200` meanwhile. Regression: retention wrote a new key before it
/// deleted anything (`head/{id}` the first time, `dseq/{id}/{seq}` for the new head), so a store
/// that was exactly full refused that write, nothing was ever freed, and a playlist request that
/// ran retention answered `503`.
#[test]
fn a_full_store_recovers_as_retention_frees_keys_and_playlists_stay_200() {
    let kv = MemoryKv::with_max_keys(MAX_KEYS);
    let c = config(Retention::Millis(30_000), 30_000);
    let id = stream_id(SECRET);
    let mut acked = Vec::new();
    let (refused, refused_seq, mut now) = fill(&kv, &c, &mut acked, 0);
    assert_eq!(refused.status, 503, "{}", text(&kv, &refused));
    let mut recovered = false;
    for _ in 0..200 {
        now += 1_000;
        let seqs = listed(&kv, &c, &id, now);
        let unexpired: Vec<u64> = acked.iter().copied().filter(|s| seqs.first().is_some_and(|first| s >= first)).collect();
        assert_eq!(seqs, unexpired);
        let reply = served(&kv, &c, now, || put(&kv, &c, SECRET, refused_seq, "2", &media(refused_seq), now));
        match reply.status {
            201 | 200 => {
                recovered = true;
                break;
            }
            503 => {}
            other => panic!("a retry after the store filled answered {other}: {}", text(&kv, &reply)),
        }
    }
    assert!(recovered, "retention never freed a key: {:?}", kv.keys());
}
