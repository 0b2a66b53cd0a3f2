//! Wire contract v2 (LL-HLS) on the memory store: part uploads and commits with their retries
//! and conflicts, the low-latency playlist (parts near the live edge, the open segment, the
//! preload hint, delta updates), and blocking reloads and held part requests driven by
//! `hold::wait` on a fake clock, whose sleeps are where other requests happen.

mod common;

#[path = "../../tests/http/common/ll_check.rs"]
mod ll_check;

use chalkstream_manifest::rules::{Config, Retention};
use chalkstream_spin_app::api::{self, Step};
use chalkstream_spin_app::hold;
use chalkstream_spin_app::kv::{Kv, KvError, MemoryKv};
use chalkstream_spin_app::reply::{Body, Reply};
use chalkstream_spin_app::route::Method;
use common::*;
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

const PT: &str = "0.250";

fn part_headers(part: u32, duration: &str) -> Vec<(&'static str, String)> {
    vec![
        ("X-Duration", duration.to_owned()),
        ("X-Part-Target", PT.to_owned()),
        ("X-Target-Duration", "1".to_owned()),
        ("X-Independent", if part == 0 { "1" } else { "0" }.to_owned()),
    ]
}

fn put_part_with(kv: &dyn Kv, c: &Config, seq: u64, part: u32, headers: &[(&str, String)], body: &[u8], now: i64) -> Reply {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let h = head(Method::Put, &format!("/ingest/{SECRET}/{seq}/{part}.ts"), &headers);
    request(kv, c, &h, body, now)
}

fn put_part(kv: &dyn Kv, c: &Config, seq: u64, part: u32, body: &[u8], now: i64) -> Reply {
    put_part_with(kv, c, seq, part, &part_headers(part, PT), body, now)
}

fn commit(kv: &dyn Kv, c: &Config, seq: u64, parts: &str, now: i64) -> Reply {
    let h = head(Method::Post, &format!("/ingest/{SECRET}/{seq}/commit"), &[("X-Parts", parts)]);
    request(kv, c, &h, b"", now)
}

fn part_body(seq: u64, part: u32) -> Vec<u8> {
    ts(2 + part as usize, (seq * 7 + u64::from(part)) as u8)
}

/// Segments `from..to`, four 250 ms parts each, sealed, one part every 250 ms after `now`;
/// returns the time of the last.
fn stream(kv: &dyn Kv, c: &Config, from: u64, to: u64, now: i64) -> i64 {
    stream_every(kv, c, from, to, now, 250)
}

/// As [`stream`], one part every `every_ms` (a broadcaster catching up after a stall sends
/// them as fast as the server answers).
fn stream_every(kv: &dyn Kv, c: &Config, from: u64, to: u64, mut now: i64, every_ms: i64) -> i64 {
    for seq in from..to {
        for part in 0..4 {
            now += every_ms;
            put_part(kv, c, seq, part, &part_body(seq, part), now).assert(201);
        }
        commit(kv, c, seq, "4", now).assert(201);
    }
    now
}

trait Status {
    fn assert(&self, status: u16) -> &Self;
}

impl Status for Reply {
    #[track_caller]
    fn assert(&self, status: u16) -> &Self {
        let body = match &self.body {
            Body::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            _ => String::new(),
        };
        assert_eq!(self.status, status, "{body}");
        self
    }
}

fn error(kv: &dyn Kv, reply: &Reply) -> String {
    json(kv, reply)["error"].as_str().unwrap_or_default().to_owned()
}

fn ll_playlist(kv: &dyn Kv, c: &Config, query: &str, now: i64) -> (Reply, ll_check::LlPlaylist) {
    let id = stream_id(SECRET);
    let r = get(kv, c, &format!("/playlist/{id}.m3u8{query}"), now);
    r.assert(200);
    let p = ll_check::check(&text(kv, &r));
    (r, p)
}

#[test]
fn parts_are_stored_committed_and_retried_idempotently() {
    let kv = MemoryKv::new();
    let c = config(Retention::Forever, 30_000);
    let id = stream_id(SECRET);
    for part in 0..3 {
        let r = put_part(&kv, &c, 0, part, &part_body(0, part), T0 + i64::from(part) * 250);
        r.assert(201);
        let j = json(&kv, &r);
        assert_eq!((j["seq"].as_u64(), j["part"].as_u64()), (Some(0), Some(u64::from(part))));
        assert!(j["playlist"].as_str().unwrap().ends_with(&format!("/playlist/{id}.m3u8")));
    }
    put_part(&kv, &c, 0, 1, &part_body(0, 1), T0 + 800).assert(200);
    let r = put_part(&kv, &c, 0, 1, &part_body(9, 9), T0 + 800);
    r.assert(409);
    assert!(error(&kv, &r).contains("part 1 of segment 0 is already stored with different bytes"), "{}", error(&kv, &r));
    // Parts serve at once, before the segment is sealed.
    let r = get(&kv, &c, &format!("/chunks/{id}/0.2.ts"), T0 + 800);
    r.assert(200);
    assert_eq!(body(&kv, &r), part_body(0, 2));
    assert_eq!(r.get_header("content-type"), Some("video/mp2t"));
    assert_eq!(r.get_header("cache-control"), Some("public, max-age=31536000, immutable"));
    get(&kv, &c, &format!("/chunks/{id}/0.ts"), T0 + 800).assert(404);

    let r = commit(&kv, &c, 0, "3", T0 + 900);
    r.assert(201);
    assert_eq!(json(&kv, &r)["parts"], 3);
    commit(&kv, &c, 0, "3", T0 + 950).assert(200);
    let r = commit(&kv, &c, 0, "2", T0 + 950);
    r.assert(409);
    assert!(error(&kv, &r).contains("already sealed from 3 parts"), "{}", error(&kv, &r));
    // After the seal: the same part again is a retry, other bytes or a part not in it a conflict.
    put_part(&kv, &c, 0, 2, &part_body(0, 2), T0 + 1000).assert(200);
    put_part(&kv, &c, 0, 2, &part_body(5, 5), T0 + 1000).assert(409);
    let r = put_part(&kv, &c, 0, 3, &part_body(0, 3), T0 + 1000);
    r.assert(409);
    assert!(error(&kv, &r).contains("sealed without part 3"), "{}", error(&kv, &r));
    assert!(kv.get(&format!("seg/{id}/0/p3")).unwrap().is_none(), "a refused part leaves nothing");

    // The segment is its parts' bytes in order, and a v1 re-upload of it is refused.
    let whole: Vec<u8> = (0..3).flat_map(|p| part_body(0, p)).collect();
    let r = get(&kv, &c, &format!("/chunks/{id}/0.ts"), T0 + 1000);
    r.assert(200);
    assert_eq!(body(&kv, &r), whole);
    let r = put(&kv, &c, SECRET, 0, "0.750", &whole, T0 + 1000);
    r.assert(409);
    assert!(error(&kv, &r).contains("sealed from parts"), "{}", error(&kv, &r));
    // Sealed: the parts (record and slice each), the meta, and the folded body of one slice.
    let keys = kv.keys();
    assert_eq!(keys.iter().filter(|k| k.starts_with(&format!("seg/{id}/0/"))).count(), 3 * 2 + 1 + 1, "{keys:?}");
}

/// Every part of `seq` (four) and the whole segment, as a viewer gets them, against the bytes
/// uploaded.
fn assert_served(kv: &dyn Kv, c: &Config, id: &str, seq: u64, parts: &[Vec<u8>], now: i64) {
    for (n, bytes) in parts.iter().enumerate() {
        let r = get(kv, c, &format!("/chunks/{id}/{seq}.{n}.ts"), now);
        r.assert(200);
        assert_eq!(r.body_len() as usize, bytes.len(), "part {seq}.{n}: content-length");
        assert!(&body(kv, &r) == bytes, "part {seq}.{n}: bytes");
    }
    let r = get(kv, c, &format!("/chunks/{id}/{seq}.ts"), now);
    r.assert(200);
    let whole: Vec<u8> = parts.concat();
    assert_eq!(r.body_len() as usize, whole.len());
    assert!(body(kv, &r) == whole, "segment {seq}: bytes");
}

#[test]
fn a_sealed_segment_keeps_two_keys_once_it_left_the_part_window_and_serves_every_part_from_its_folded_body() {
    let kv = MemoryKv::new();
    let c = config(Retention::Forever, 30_000);
    let id = stream_id(SECRET);
    let now = stream(&kv, &c, 0, 9, T0);
    let parts: Vec<Vec<u8>> = (0..4).map(|p| part_body(0, p)).collect();
    let keys = kv.keys();
    let of_seq = |seq: u64| keys.iter().filter(|k| k.starts_with(&format!("seg/{id}/{seq}/"))).cloned().collect::<Vec<_>>();
    // Sealed 8 s before the last commit: its part records went at seq 5's commit, its part bodies
    // at seq 6's. What is left is its meta and its folded body.
    for seq in 0..3 {
        let left = of_seq(seq);
        assert_eq!(left.len(), 2, "seq {seq}: {left:?}");
        assert!(left.iter().any(|k| k.ends_with("/meta")), "{left:?}");
    }
    // The newest are still whole: in a part window, or retired only a moment ago.
    assert_eq!(of_seq(8).len(), 4 * 2 + 2, "{:?}", of_seq(8));
    assert_served(&kv, &c, &id, 0, &parts, now);
    let newest: Vec<Vec<u8>> = (0..4).map(|p| part_body(8, p)).collect();
    assert_served(&kv, &c, &id, 8, &newest, now);
}

#[test]
fn a_folded_body_over_one_slice_serves_a_part_that_spans_two_slices() {
    let kv = MemoryKv::new();
    let c = config(Retention::Forever, 30_000);
    let id = stream_id(SECRET);
    // Four parts of 2,200 packets (413,600 bytes): the folded body is 1,654,400 bytes in two
    // slices of at most 1,000,000, and part 2 (827,200..1,240,800) spans both.
    let big = |seq: u64, part: u32| ts(2200, (seq * 7 + u64::from(part) + 1) as u8);
    let mut now = T0;
    for seq in 0..8 {
        for part in 0..4 {
            now += 250;
            put_part(&kv, &c, seq, part, &big(seq, part), now).assert(201);
        }
        commit(&kv, &c, seq, "4", now).assert(201);
    }
    let keys = kv.keys();
    let of_seq0: Vec<_> = keys.iter().filter(|k| k.starts_with(&format!("seg/{id}/0/"))).collect();
    assert_eq!(of_seq0.len(), 3, "meta and two slices: {of_seq0:?}");
    for key in &of_seq0 {
        assert!(kv.get(key).unwrap().unwrap().len() <= 1_000_000, "{key}");
    }
    let parts: Vec<Vec<u8>> = (0..4).map(|p| big(0, p)).collect();
    assert_served(&kv, &c, &id, 0, &parts, now);
}

#[test]
fn bad_parts_and_commits_get_a_clear_4xx_and_change_nothing() {
    let kv = MemoryKv::new();
    let c = config(Retention::Forever, 30_000);
    let body0 = part_body(0, 0);
    let cases: Vec<(u32, Vec<(&str, String)>, Vec<u8>, &str)> = vec![
        (0, vec![("X-Part-Target", PT.into()), ("X-Target-Duration", "1".into()), ("X-Independent", "1".into())], body0.clone(), "X-Duration"),
        (0, vec![("X-Duration", "0.2".into()), ("X-Target-Duration", "1".into()), ("X-Independent", "1".into())], body0.clone(), "X-Part-Target"),
        (0, vec![("X-Duration", "0.2".into()), ("X-Part-Target", PT.into()), ("X-Independent", "1".into())], body0.clone(), "X-Target-Duration"),
        (0, part_headers(1, "0.2"), body0.clone(), "X-Independent: 1"),
        (1, part_headers(1, "0.251"), body0.clone(), "longer than the part target"),
        (0, [part_headers(0, "0.2"), vec![("X-Part-Target", "2.5".into())]].concat(), body0.clone(), "X-Part-Target"),
        (1, [part_headers(1, "0.2"), vec![("X-Program-Date-Time", "2026-11-25T13:00:00Z".into())]].concat(), body0.clone(), "part 0 only"),
        (0, part_headers(0, "0.2"), b"<html>".to_vec(), "not MPEG-TS"),
    ];
    for (part, headers, body, says) in cases {
        let headers: Vec<(&str, String)> = headers.into_iter().collect();
        let mut dedup: Vec<(&str, String)> = Vec::new();
        for (n, v) in headers {
            dedup.retain(|(m, _)| *m != n);
            dedup.push((n, v));
        }
        let r = put_part_with(&kv, &c, 0, part, &dedup, &body, T0);
        r.assert(400);
        assert!(error(&kv, &r).contains(says), "{says}: {}", error(&kv, &r));
    }
    let r = request(&kv, &c, &head(Method::Put, &format!("/ingest/{SECRET}/0/64.ts"), &[]), &body0, T0);
    r.assert(400);
    assert!(error(&kv, &r).contains("at most 63"));
    assert!(kv.keys().is_empty(), "refused uploads store nothing: {:?}", kv.keys());

    put_part(&kv, &c, 0, 0, &body0, T0).assert(201);
    // Another part target or target duration than the stream's first part fixed.
    let mut other = part_headers(1, "0.2");
    other[1].1 = "0.5".into();
    let r = put_part_with(&kv, &c, 0, 1, &other, &part_body(0, 1), T0 + 250);
    r.assert(409);
    assert!(error(&kv, &r).contains("part target is 0.250 s"), "{}", error(&kv, &r));
    // Commits.
    for (parts, status, says) in [("", 400, "X-Parts"), ("0", 400, "X-Parts"), ("65", 400, "X-Parts"), ("2", 409, "part 1 of segment 0 is not stored")] {
        let h = if parts.is_empty() {
            head(Method::Post, &format!("/ingest/{SECRET}/0/commit"), &[])
        } else {
            head(Method::Post, &format!("/ingest/{SECRET}/0/commit"), &[("X-Parts", parts)])
        };
        let r = request(&kv, &c, &h, b"", T0 + 300);
        r.assert(status);
        assert!(error(&kv, &r).contains(says), "{says}: {}", error(&kv, &r));
    }
    put_part(&kv, &c, 0, 1, &part_body(0, 1), T0 + 500).assert(201);
    let r = commit(&kv, &c, 0, "1", T0 + 600);
    r.assert(409);
    assert!(error(&kv, &r).contains("X-Parts must count it (X-Parts: 2)"), "{}", error(&kv, &r));
    // Six parts of 250 ms are 1.5 s: rounded to whole seconds (as RFC 8216 compares), over the
    // 1 s target.
    for part in 2..6 {
        put_part(&kv, &c, 0, part, &part_body(0, part), T0 + 600).assert(201);
    }
    let r = commit(&kv, &c, 0, "6", T0 + 700);
    r.assert(400);
    assert!(error(&kv, &r).contains("target duration is 1 s"), "{}", error(&kv, &r));
    assert!(kv.get(&format!("seg/{}/0/meta", stream_id(SECRET))).unwrap().is_none());
    // A v1 stream takes no parts.
    let other_secret = "other-secret-0123456789abcdef";
    put(&kv, &c, other_secret, 0, "1.000", &ts(3, 1), T0).assert(201);
    let h = head(Method::Put, &format!("/ingest/{other_secret}/1/0.ts"), &part_headers(0, "0.2").iter().map(|(n, v)| (*n, v.as_str())).collect::<Vec<_>>());
    let r = request(&kv, &c, &h, &part_body(1, 0), T0);
    r.assert(409);
    assert!(error(&kv, &r).contains("started with whole segments"));
    let h = head(Method::Post, &format!("/ingest/{other_secret}/0/commit"), &[("X-Parts", "1")]);
    request(&kv, &c, &h, b"", T0).assert(409);
    // Wrong methods.
    let r = request(&kv, &c, &head(Method::Get, &format!("/ingest/{SECRET}/0/commit"), &[]), b"", T0);
    r.assert(405);
    assert_eq!(r.get_header("allow"), Some("POST, OPTIONS"));
}

#[test]
fn the_live_playlist_lists_parts_near_the_edge_the_open_segment_and_a_hint() {
    for retention in [Retention::Forever, Retention::Millis(60_000)] {
        let kv = MemoryKv::new();
        let c = config(retention, 30_000);
        let mut now = stream(&kv, &c, 0, 6, T0);
        now += 250;
        put_part(&kv, &c, 6, 0, &part_body(6, 0), now).assert(201);
        now += 250;
        put_part(&kv, &c, 6, 1, &part_body(6, 1), now).assert(201);
        let (r, p) = ll_playlist(&kv, &c, "", now);
        assert_eq!(r.get_header("content-type"), Some("application/vnd.apple.mpegurl"));
        assert_eq!(p.seqs(), (0..6).collect::<Vec<_>>());
        assert_eq!(p.part_target_ms, Some(250));
        assert_eq!(p.part_hold_back_ms, Some(750));
        assert_eq!(p.can_skip_until_ms, Some(6000));
        // 0.5 s of open parts + segments 5, 4 (2.5 s) are within 3 s; segment 3 starts 3.5 s back.
        let with_parts: Vec<u64> = p.segments.iter().filter(|s| !s.parts.is_empty()).map(|s| s.seq).collect();
        assert_eq!(with_parts, vec![4, 5]);
        assert_eq!(p.open_parts.iter().map(|x| (x.seq, x.part)).collect::<Vec<_>>(), vec![(6, 0), (6, 1)]);
        assert_eq!(p.hint, Some((6, 2)));
        // Every URI it lists answers.
        for part in p.parts() {
            let r = get(&kv, &c, &part.uri, now);
            r.assert(200);
            assert_eq!(body(&kv, &r), part_body(part.seq, part.part), "{}", part.uri);
        }
        for s in &p.segments {
            let r = get(&kv, &c, &s.uri, now);
            r.assert(200);
            assert_eq!(body(&kv, &r), (0..4).flat_map(|n| part_body(s.seq, n)).collect::<Vec<_>>());
        }
        // Ending: the same head and segments, no parts or hint, EXT-X-ENDLIST.
        request(&kv, &c, &head(Method::Post, &format!("/ingest/{SECRET}/end"), &[]), b"", now).assert(200);
        let (r, ended) = ll_playlist(&kv, &c, "", now + 10);
        assert!(ended.ended && ended.open_parts.is_empty() && ended.hint.is_none());
        assert_eq!(ended.seqs(), p.seqs());
        assert_eq!(r.get_header("cache-control"), Some("public, max-age=30"));
        // Directives are ignored once ended (§6.2.5.1, §6.2.5.2).
        let (_, again) = ll_playlist(&kv, &c, "?_HLS_msn=9&_HLS_part=3&_HLS_skip=YES", now + 10);
        assert_eq!(again.seqs(), p.seqs());
        assert_eq!(again.media_sequence, p.media_sequence);
    }
}

#[test]
fn event_playlists_cut_stored_lines_blocks_for_the_part_window() {
    let kv = MemoryKv::new();
    let c = config(Retention::Forever, 30_000);
    // 70 segments: lines blocks of 8 and 64 exist and the part window reaches into one.
    let now = stream(&kv, &c, 0, 70, T0);
    let id = stream_id(SECRET);
    assert!(kv.get(&format!("lines/{id}/64/0")).unwrap().is_some());
    assert!(kv.get(&format!("lines/{id}/8/7")).unwrap().is_some());
    let (_, p) = ll_playlist(&kv, &c, "", now + 10);
    assert_eq!(p.seqs(), (0..70).collect::<Vec<_>>());
    let with_parts: Vec<u64> = p.segments.iter().filter(|s| !s.parts.is_empty()).map(|s| s.seq).collect();
    assert_eq!(with_parts, vec![67, 68, 69]);
    // Byte for byte what the sliding-window walk over every meta renders, apart from the head.
    let sliding = config(Retention::Millis(3_600_000), 30_000);
    let r = get(&kv, &sliding, &format!("/playlist/{id}.m3u8"), now + 10);
    let from_metas = text(&kv, &r);
    let from_lines = text(&kv, &get(&kv, &c, &format!("/playlist/{id}.m3u8"), now + 10));
    assert_eq!(from_lines.replace("#EXT-X-PLAYLIST-TYPE:EVENT\n", ""), from_metas);
}

#[test]
fn a_delta_update_skips_all_but_the_last_six_target_durations_and_stays_small() {
    for retention in [Retention::Forever, Retention::Millis(3_600_000)] {
        let kv = Counted::default();
        let c = config(retention, 30_000);
        let now = stream(&kv, &c, 0, 600, T0);
        put_part(&kv, &c, 600, 0, &part_body(600, 0), now + 250).assert(201);
        let (full_reply, full) = ll_playlist(&kv, &c, "", now + 260);
        let before = kv.gets.load(Ordering::Relaxed);
        let (delta_reply, delta) = ll_playlist(&kv, &c, "?_HLS_skip=YES", now + 260);
        // Only what it lists: the 7 segments' metas, the open segment's parts, a few records.
        let reads = kv.gets.load(Ordering::Relaxed) - before;
        assert!(reads <= 30, "{retention:?}: a delta update read {reads} keys");
        // 1 s segments, CAN-SKIP-UNTIL 6 s: the 7 segments ending within 6 s of the end stay.
        assert_eq!(delta.skipped, 593);
        assert_eq!(delta.media_sequence, full.media_sequence);
        assert_eq!(delta.discontinuity_sequence, full.discontinuity_sequence);
        assert_eq!(delta.segments, full.segments[593..].to_vec());
        assert_eq!((delta.open_parts.clone(), delta.hint), (full.open_parts.clone(), full.hint));
        let (full_len, delta_len) = (body(&kv, &full_reply).len(), body(&kv, &delta_reply).len());
        assert!(delta_len < 3 * 1024, "delta update of {delta_len} bytes (full: {full_len})");
        // Skip with a blocking reload that is ready at once.
        let (_, both) = ll_playlist(&kv, &c, "?_HLS_msn=600&_HLS_part=0&_HLS_skip=YES", now + 260);
        assert_eq!(both.skipped, 593);
    }
}

/// A store that counts reads.
#[derive(Default)]
struct Counted {
    inner: MemoryKv,
    gets: AtomicUsize,
}

impl Kv for Counted {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.inner.delete(key)
    }
}

/// Runs `path` at `now`; when it is held, drives the hold on a fake clock, calling `during(t)`
/// at every sleep (with the time the sleep ends) so other requests happen meanwhile. Returns the
/// answer and the fake time it came at.
fn held(kv: &dyn Kv, c: &Config, path: &str, now: i64, mut during: impl FnMut(i64)) -> (Reply, i64) {
    let h = head(Method::Get, path, &[]);
    let held = match api::handle(&h, kv, || Ok(c.clone()), now) {
        Step::Hold(held) => held,
        Step::Reply(reply) => panic!("answered at once: {} {}", reply.status, text(kv, &reply)),
        Step::ReadBody(_) => unreachable!(),
    };
    let clock = Cell::new(now);
    let reply = hold::wait(
        held,
        kv,
        || clock.get(),
        |ms| {
            let t = clock.get() + ms as i64;
            during(t);
            clock.set(t);
        },
    );
    (reply, clock.get())
}

#[test]
fn a_blocking_reload_is_held_until_the_part_arrives_and_costs_a_few_reads() {
    let kv = Counted::default();
    let c = config(Retention::Forever, 30_000);
    let id = stream_id(SECRET);
    let mut now = stream(&kv, &c, 0, 3, T0);
    now += 250;
    put_part(&kv, &c, 3, 0, &part_body(3, 0), now).assert(201);
    // The hinted part 3.1 arrives 250 ms later (its due time), uploaded by "another request".
    let arrives = now + 250;
    let mut uploaded = false;
    let gets_before = kv.gets.load(Ordering::Relaxed);
    let mut upload_reads = 0;
    let (reply, at) = held(&kv, &c, &format!("/playlist/{id}.m3u8?_HLS_msn=3&_HLS_part=1"), now + 5, |t| {
        if !uploaded && t >= arrives {
            let g = kv.gets.load(Ordering::Relaxed);
            put_part(&kv, &c, 3, 1, &part_body(3, 1), arrives).assert(201);
            upload_reads = kv.gets.load(Ordering::Relaxed) - g;
            uploaded = true;
        }
    });
    reply.assert(200);
    assert!(at >= arrives, "answered at {} before the part arrived at {arrives}", at - T0);
    let p = ll_check::check(&text(&kv, &reply));
    assert_eq!(p.open_parts.len(), 2);
    assert_eq!(p.hint, Some((3, 2)));
    let total = kv.gets.load(Ordering::Relaxed) - gets_before - upload_reads;
    println!("reads for a held blocking reload (request, checks and the playlist it answers): {total}");
    // Deciding, a check or two at the due time, then rendering: bounded, never a poll loop.
    assert!(total <= 40, "{total} reads");

    // Waiting for a whole segment: answered once the open segment is sealed.
    let mut step = 0;
    let (reply, _) = held(&kv, &c, &format!("/playlist/{id}.m3u8?_HLS_msn=3"), arrives + 5, |t| {
        if step < 2 && t >= arrives + 250 * (step + 1) {
            put_part(&kv, &c, 3, 2 + step as u32, &part_body(3, 2 + step as u32), t).assert(201);
            step += 1;
            if step == 2 {
                commit(&kv, &c, 3, "4", t).assert(201);
            }
        }
    });
    let p = ll_check::check(&text(&kv, &reply));
    assert_eq!(p.last_seq(), Some(3));
    // §6.2.5.2: a part past the last of sealed segment 3 is part 0 of segment 4.
    let (reply, _) = held(&kv, &c, &format!("/playlist/{id}.m3u8?_HLS_msn=3&_HLS_part=4"), arrives + 600, |t| {
        if kv.inner.get(&format!("seg/{id}/4/p0")).unwrap().is_none() && t >= arrives + 800 {
            put_part(&kv, &c, 4, 0, &part_body(4, 0), t).assert(201);
        }
    });
    assert_eq!(ll_check::check(&text(&kv, &reply)).open_parts.len(), 1);
}

#[test]
fn a_blocking_reload_times_out_after_three_target_durations_or_answers_when_the_stream_ends() {
    let kv = Counted::default();
    let c = config(Retention::Forever, 30_000);
    let id = stream_id(SECRET);
    let now = stream(&kv, &c, 0, 2, T0);
    let start = now + 5;
    let (reply, at) = held(&kv, &c, &format!("/playlist/{id}.m3u8?_HLS_msn=2&_HLS_part=0"), start, |_| {});
    reply.assert(503);
    assert_eq!(reply.get_header("retry-after"), Some("1"));
    assert_eq!(reply.get_header("access-control-allow-origin"), Some("*"));
    assert_eq!(at - start, 3000, "held for exactly three target durations");

    // Stop while held: answered at once with the ended playlist, not at the deadline.
    let mut ended_at = None;
    let (reply, at) = held(&kv, &c, &format!("/playlist/{id}.m3u8?_HLS_msn=2&_HLS_part=0"), start + 4000, |t| {
        if ended_at.is_none() && t >= start + 4100 {
            request(&kv, &c, &head(Method::Post, &format!("/ingest/{SECRET}/end"), &[]), b"", t).assert(200);
            ended_at = Some(t);
        }
    });
    reply.assert(200);
    assert!(ll_check::check(&text(&kv, &reply)).ended);
    assert!(at - ended_at.unwrap() <= 300, "answered {} ms after Stop", at - ended_at.unwrap());
}

#[test]
fn blocking_reloads_too_far_ahead_or_malformed_get_400() {
    let kv = MemoryKv::new();
    let c = config(Retention::Forever, 30_000);
    let id = stream_id(SECRET);
    let now = stream(&kv, &c, 0, 3, T0);
    let cases = [
        ("_HLS_msn=5", "too far ahead"),
        ("_HLS_msn=3&_HLS_part=13", "too far ahead"),
        ("_HLS_msn=x", "_HLS_msn must be a decimal integer"),
        ("_HLS_msn=-1", "_HLS_msn must be a decimal integer"),
        ("_HLS_msn=3&_HLS_part=1.0", "_HLS_part must be a decimal integer"),
        ("_HLS_part=1", "_HLS_part needs _HLS_msn"),
        ("_HLS_skip=NO", "_HLS_skip must be YES or v2"),
        ("_HLS_msn=1&_HLS_msn=2", "more than once"),
        // Regression (issue 18): overflowed `part + 1` (a panic in debug, held in release).
        ("_HLS_msn=3&_HLS_part=18446744073709551615", "_HLS_part must be below 64"),
        ("_HLS_msn=18446744073709551615&_HLS_part=0", "too far ahead"),
    ];
    for (query, says) in cases {
        let r = get(&kv, &c, &format!("/playlist/{id}.m3u8?{query}"), now + 5);
        r.assert(400);
        assert!(error(&kv, &r).contains(says), "{query}: {}", error(&kv, &r));
        assert_eq!(r.get_header("access-control-allow-origin"), Some("*"));
    }
    // Within the Advance Part Limit (3 / 0.25 = 12 parts past the last, 2.3): held, not refused.
    let counted = Counted::default();
    stream(&counted, &c, 0, 3, T0);
    let (reply, _) = held(&counted, &c, &format!("/playlist/{id}.m3u8?_HLS_msn=3&_HLS_part=11"), now + 5, |_| {});
    reply.assert(503);
    // Already there: answered at once.
    let (_, p) = ll_playlist(&kv, &c, "?_HLS_msn=1&_HLS_part=3", now + 5);
    assert_eq!(p.last_seq(), Some(2));
}

#[test]
fn the_hinted_part_is_held_until_it_exists() {
    let kv = Counted::default();
    let c = config(Retention::Forever, 30_000);
    let id = stream_id(SECRET);
    let now = stream(&kv, &c, 0, 2, T0);
    let arrives = now + 250;
    let (reply, at) = held(&kv, &c, &format!("/chunks/{id}/2.0.ts"), now + 5, |t| {
        if t >= arrives && kv.inner.get(&format!("seg/{id}/2/p0")).unwrap().is_none() {
            put_part(&kv, &c, 2, 0, &part_body(2, 0), t).assert(201);
        }
    });
    reply.assert(200);
    assert!(at >= arrives);
    assert_eq!(body(&kv, &reply), part_body(2, 0));
    // A part its segment was sealed without can never come: 404 at the first check after it was
    // due (part 3 stored at +750 for 250 ms), not a part target later when it is overdue.
    for part in 1..4 {
        put_part(&kv, &c, 2, part, &part_body(2, part), arrives + 250 * i64::from(part)).assert(201);
    }
    let sealed_at = arrives + 760;
    let (reply, at) = held(&kv, &c, &format!("/chunks/{id}/2.4.ts"), arrives + 755, |t| {
        if t >= sealed_at && kv.inner.get(&format!("seg/{id}/2/meta")).unwrap().is_none() {
            commit(&kv, &c, 2, "4", t).assert(201);
        }
    });
    reply.assert(404);
    assert!(at >= arrives + 1000 && at <= arrives + 1000 + 20, "answered at +{} ms", at - arrives);
    // Far ahead, or of an ended stream: 404 at once.
    get(&kv, &c, &format!("/chunks/{id}/3.40.ts"), sealed_at + 10).assert(404);
    get(&kv, &c, &format!("/chunks/{id}/9.0.ts"), sealed_at + 10).assert(404);
    get(&kv, &c, &format!("/chunks/{id}/x.0.ts"), sealed_at + 10).assert(404);
    // Nothing arrives: 503 after three target durations.
    let (reply, at) = held(&kv, &c, &format!("/chunks/{id}/3.0.ts"), sealed_at + 10, |_| {});
    reply.assert(503);
    assert_eq!(at - (sealed_at + 10), 3000);
}

#[test]
fn retention_deletes_parts_with_their_segment() {
    let kv = MemoryKv::new();
    let c = config(Retention::Millis(3000), 30_000);
    let id = stream_id(SECRET);
    let now = stream(&kv, &c, 0, 10, T0);
    let (_, p) = ll_playlist(&kv, &c, "", now + 10);
    assert_eq!(p.media_sequence, 7);
    for seq in 0..7 {
        assert!(!kv.keys().iter().any(|k| k.starts_with(&format!("seg/{id}/{seq}/"))), "segment {seq} left keys");
    }
    get(&kv, &c, &format!("/chunks/{id}/0.0.ts"), now + 10).assert(404);
    get(&kv, &c, &format!("/chunks/{id}/9.3.ts"), now + 10).assert(200);
}

#[test]
fn part_uploads_race_retries_held_readers_and_retention() {
    use std::sync::atomic::{AtomicBool, AtomicI64};
    use std::sync::Mutex;
    const SEGMENTS: u64 = 40;
    for round in 0..3u64 {
        let kv = Shuffled::new(0, 29, 30);
        let c = config(Retention::Millis(2500), 30_000);
        let id = stream_id(SECRET);
        // Fake time, moved by the uploader: 250 ms per part.
        let clock = AtomicI64::new(T0);
        let done = AtomicBool::new(false);
        let acked = Mutex::new(Vec::<(u64, u32)>::new());
        let answers = AtomicUsize::new(0);
        std::thread::scope(|s| {
            // The uploader, and a retrier sending the same bytes again (never a 409).
            s.spawn(|| {
                // Whatever happens here, the other threads stop.
                struct Done<'a>(&'a AtomicBool, &'a AtomicI64);
                impl Drop for Done<'_> {
                    fn drop(&mut self) {
                        // Time moves on so held readers see the end (or, after a panic, give up).
                        let jump = if std::thread::panicking() { 10_000_000 } else { 1_000 };
                        self.1.fetch_add(jump, Ordering::SeqCst);
                        self.0.store(true, Ordering::SeqCst);
                    }
                }
                let _done = Done(&done, &clock);
                for seq in 0..SEGMENTS {
                    for part in 0..4 {
                        let now = clock.fetch_add(250, Ordering::SeqCst) + 250;
                        let r = put_part(&kv, &c, seq, part, &part_body(seq, part), now);
                        assert!(r.status == 201 || r.status == 200, "part {seq}.{part}: {}", r.status);
                        acked.lock().unwrap().push((seq, part));
                        // Real time for the held readers to see each part (on a loaded machine an
                        // unpaced uploader finished before they answered at all).
                        std::thread::sleep(std::time::Duration::from_micros(500));
                    }
                    let r = commit(&kv, &c, seq, "4", clock.load(Ordering::SeqCst));
                    assert!(r.status == 201 || r.status == 200, "commit {seq}: {}", r.status);
                }
                let now = clock.load(Ordering::SeqCst);
                request(&kv, &c, &head(Method::Post, &format!("/ingest/{SECRET}/end"), &[]), b"", now).assert(200);
            });
            s.spawn(|| {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ round;
                while !done.load(Ordering::SeqCst) {
                    let recent: Vec<(u64, u32)> = acked.lock().unwrap().iter().rev().take(6).copied().collect();
                    if recent.is_empty() {
                        std::thread::yield_now();
                        continue;
                    }
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let (seq, part) = recent[(x % recent.len() as u64) as usize];
                    let now = clock.load(Ordering::SeqCst);
                    let r = put_part(&kv, &c, seq, part, &part_body(seq, part), now);
                    // 409 only when retention already took the segment (older than the window).
                    assert!(r.status == 200 || r.status == 201 || r.status == 409 && error(&kv, &r).contains("retention"), "retry {seq}.{part}: {} {}", r.status, error(&kv, &r));
                    if part == 3 {
                        let r = commit(&kv, &c, seq, "4", now);
                        assert!(r.status != 500, "commit retry {seq}: {}", r.status);
                    }
                }
            });
            // Held readers following the preload hint with blocking reloads.
            for _ in 0..2 {
                s.spawn(|| {
                    let mut last: Option<ll_check::LlPlaylist> = None;
                    loop {
                        let query = match last.as_ref().and_then(|p| p.hint) {
                            Some((seq, part)) => format!("?_HLS_msn={seq}&_HLS_part={part}"),
                            None => String::new(),
                        };
                        let h = head(Method::Get, &format!("/playlist/{id}.m3u8{query}"), &[]);
                        let reply = match api::handle(&h, &kv, || Ok(c.clone()), clock.load(Ordering::SeqCst)) {
                            Step::Reply(reply) => reply,
                            Step::Hold(held) => hold::wait(held, &kv, || clock.load(Ordering::SeqCst), |_| std::thread::sleep(std::time::Duration::from_micros(200))),
                            Step::ReadBody(_) => unreachable!(),
                        };
                        let gave_up = clock.load(Ordering::SeqCst) > T0 + 5_000_000;
                        if gave_up || reply.status == 404 && last.is_none() {
                            if done.load(Ordering::SeqCst) {
                                break;
                            }
                            std::thread::yield_now();
                            continue;
                        }
                        if reply.status == 503 {
                            continue;
                        }
                        assert_eq!(reply.status, 200, "{}", text(&kv, &reply));
                        let p = ll_check::check(&text(&kv, &reply));
                        if let Some(prev) = &last {
                            assert!(p.media_sequence >= prev.media_sequence, "media sequence went back");
                            let kept: Vec<u64> = prev.seqs().into_iter().filter(|q| *q >= p.media_sequence).collect();
                            assert!(p.seqs().starts_with(&kept), "listed segments vanished: {kept:?} then {:?}", p.seqs());
                            let had = prev.parts().len() + prev.segments.len();
                            assert!(p.last_seq() >= prev.last_seq() && (p.ended || had > 0), "went back");
                        }
                        answers.fetch_add(1, Ordering::SeqCst);
                        let ended = p.ended;
                        last = Some(p);
                        if ended {
                            break;
                        }
                    }
                });
            }
        });
        assert!(answers.load(Ordering::SeqCst) >= 10, "only {} answers", answers.load(Ordering::SeqCst));
        // Every sealed segment still in the window is its four acknowledged parts; nothing of an
        // expired one is left.
        let now = clock.load(Ordering::SeqCst);
        let (_, p) = ll_playlist(&kv.inner, &c, "", now);
        assert_eq!(p.last_seq(), Some(SEGMENTS - 1));
        for seq in p.seqs() {
            let r = get(&kv.inner, &c, &format!("/chunks/{id}/{seq}.ts"), now);
            assert_eq!(body(&kv.inner, &r), (0..4).flat_map(|n| part_body(seq, n)).collect::<Vec<_>>(), "segment {seq}");
        }
        for key in kv.inner.keys().iter().filter(|k| k.starts_with("seg/")) {
            let seq: u64 = key.split('/').nth(2).unwrap().parse().unwrap();
            assert!(seq >= p.media_sequence, "{key} outlived its segment (window from {})", p.media_sequence);
        }
    }
}

/// The memory store where, right after the `miss`-th read of `key` finds nothing, the rest of
/// segment 2 arrives and is sealed: the part and its segment land between two reads of one
/// request, as they do on a busy server.
struct ArrivesBetweenReads {
    inner: MemoryKv,
    c: Config,
    key: String,
    miss: usize,
    misses: AtomicUsize,
}

impl Kv for ArrivesBetweenReads {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let value = self.inner.get(key)?;
        if value.is_none() && key == self.key && self.misses.fetch_add(1, Ordering::Relaxed) + 1 == self.miss {
            let now = T0 + 100_000;
            put_part(&self.inner, &self.c, 2, 3, &part_body(2, 3), now).assert(201);
            commit(&self.inner, &self.c, 2, "4", now).assert(201);
        }
        Ok(value)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.inner.delete(key)
    }
}

#[test]
fn a_part_that_arrives_and_is_sealed_between_two_reads_is_served_not_404() {
    let id = stream_id(SECRET);
    for miss in [1, 2, 3] {
        // Misses of part 2.3: 1 the request's first look, 2 its live edge's probe of the open
        // segment, 3 the held request's first check.
        let c = config(Retention::Forever, 30_000);
        let kv = ArrivesBetweenReads { inner: MemoryKv::default(), c: c.clone(), key: format!("seg/{id}/2/p3"), miss, misses: AtomicUsize::new(0) };
        let mut now = stream(&kv.inner, &c, 0, 2, T0);
        for part in 0..3 {
            now += 250;
            put_part(&kv.inner, &c, 2, part, &part_body(2, part), now).assert(201);
        }
        let path = format!("/chunks/{id}/2.3.ts");
        let reply = if miss < 3 {
            get(&kv, &c, &path, now + 5)
        } else {
            // Asked once the part is overdue, so the seal its first check finds would end the wait.
            held(&kv, &c, &path, now + 600, |_| {}).0
        };
        reply.assert(200);
        assert_eq!(body(&kv, &reply), part_body(2, 3), "miss {miss}");
    }
}

/// Regression (issue 18): a held request's store reads do not grow with the stream's part target
/// and target duration. A stranger may pick the shortest part target (0.1 s) and the longest
/// target duration (30 s): a blocking reload and a part request for a part that never comes are
/// held 90 s, and before the checks were paced by time they re-read the store every 20 ms
/// (about 4,500 checks, 9,000 reads). Now at most `hold::MAX_CHECKS` checks of a few reads each.
#[test]
fn regression_issue_18_a_held_request_reads_a_constant_whatever_the_part_target() {
    let c = config(Retention::Forever, 120_000);
    let id = stream_id(SECRET);
    let hostile = |part: u32| {
        vec![
            ("X-Duration", "0.1".to_owned()),
            ("X-Part-Target", "0.1".to_owned()),
            ("X-Target-Duration", "30".to_owned()),
            ("X-Independent", if part == 0 { "1" } else { "0" }.to_owned()),
        ]
    };
    for path in [format!("/playlist/{id}.m3u8?_HLS_msn=1&_HLS_part=1"), format!("/chunks/{id}/1.1.ts")] {
        let kv = Counted::default();
        put_part_with(&kv, &c, 0, 0, &hostile(0), &part_body(0, 0), T0).assert(201);
        commit(&kv, &c, 0, "1", T0 + 100).assert(201);
        put_part_with(&kv, &c, 1, 0, &hostile(0), &part_body(1, 0), T0 + 200).assert(201);
        let before = kv.gets.load(Ordering::Relaxed);
        let (reply, at) = held(&kv, &c, &path, T0 + 210, |_| {});
        let reads = kv.gets.load(Ordering::Relaxed) - before;
        reply.assert(503);
        assert!(at - T0 >= 90_000, "{path}: answered after {} ms", at - T0);
        // Each check reads the next part, the seal and the end marker at most (and a part
        // request its part twice); the answer is a 503.
        let bound = hold::MAX_CHECKS as usize * 5 + 20;
        assert!(reads <= bound, "{path}: {reads} reads while held (bound {bound})");
        eprintln!("{path}: {reads} reads over a 90 s hold");
    }
}

/// What a cache in front may keep of a v2 stream (docs/API.md, "Caching"): the plain playlist
/// and every blocking reload's answer a second (a part target, at least a second) and a second
/// stale while refetched; parts, held or not, forever; a held part that can never come and a
/// held request that timed out a second, so a cache hands that answer to every viewer that was
/// waiting for it; a refused directive never; the ended playlist half a minute.
#[test]
fn held_answers_say_how_long_a_cache_may_keep_them() {
    let kv = MemoryKv::new();
    let c = config(Retention::Forever, 30_000);
    let id = stream_id(SECRET);
    let live = Some("public, max-age=1");
    let mut now = stream(&kv, &c, 0, 2, T0);
    now += 250;
    put_part(&kv, &c, 2, 0, &part_body(2, 0), now).assert(201);
    let (r, _) = ll_playlist(&kv, &c, "", now + 5);
    assert_eq!(r.get_header("cache-control"), live);
    // A blocking reload answered at once, and one held until its part arrives.
    let (r, _) = ll_playlist(&kv, &c, "?_HLS_msn=2&_HLS_part=0&_HLS_skip=YES", now + 5);
    assert_eq!(r.get_header("cache-control"), live);
    let arrives = now + 250;
    let (r, _) = held(&kv, &c, &format!("/playlist/{id}.m3u8?_HLS_msn=2&_HLS_part=1"), now + 5, |t| {
        if t >= arrives && kv.get(&format!("seg/{id}/2/p1")).unwrap().is_none() {
            put_part(&kv, &c, 2, 1, &part_body(2, 1), t).assert(201);
        }
    });
    r.assert(200);
    assert_eq!(r.get_header("cache-control"), live);
    // A held part that arrives: immutable like any part.
    let arrives = arrives + 250;
    let (r, _) = held(&kv, &c, &format!("/chunks/{id}/2.2.ts"), arrives - 200, |t| {
        if t >= arrives && kv.get(&format!("seg/{id}/2/p2")).unwrap().is_none() {
            put_part(&kv, &c, 2, 2, &part_body(2, 2), t).assert(201);
        }
    });
    r.assert(200);
    assert_eq!(r.get_header("cache-control"), Some("public, max-age=31536000, immutable"));
    // The hint past the segment's last part, sealed without it: 404, a second.
    put_part(&kv, &c, 2, 3, &part_body(2, 3), arrives + 250).assert(201);
    let sealed = arrives + 260;
    let (r, _) = held(&kv, &c, &format!("/chunks/{id}/2.4.ts"), arrives + 255, |t| {
        if t >= sealed && kv.get(&format!("seg/{id}/2/meta")).unwrap().is_none() {
            commit(&kv, &c, 2, "4", t).assert(201);
        }
    });
    r.assert(404);
    assert_eq!(r.get_header("cache-control"), Some("public, max-age=1"));
    // Nothing arrives: 503 with Retry-After, a second.
    let (r, _) = held(&kv, &c, &format!("/playlist/{id}.m3u8?_HLS_msn=3&_HLS_part=0"), sealed + 10, |_| {});
    r.assert(503);
    assert_eq!(r.get_header("retry-after"), Some("1"));
    assert_eq!(r.get_header("cache-control"), Some("public, max-age=1"));
    let (r, _) = held(&kv, &c, &format!("/chunks/{id}/3.0.ts"), sealed + 10, |_| {});
    r.assert(503);
    assert_eq!(r.get_header("cache-control"), Some("public, max-age=1"));
    // Too far ahead: the client's mistake, never cached.
    let r = get(&kv, &c, &format!("/playlist/{id}.m3u8?_HLS_msn=9"), sealed + 10);
    r.assert(400);
    assert_eq!(r.get_header("cache-control"), Some("no-store"));
    // Ended: half a minute, for the plain playlist and a blocking reload alike.
    request(&kv, &c, &head(Method::Post, &format!("/ingest/{SECRET}/end"), &[]), b"", sealed + 20).assert(200);
    for query in ["", "?_HLS_msn=3&_HLS_part=0"] {
        let (r, p) = ll_playlist(&kv, &c, query, sealed + 30);
        assert!(p.ended);
        assert_eq!(r.get_header("cache-control"), Some("public, max-age=30"), "{query}");
    }
}

/// The envelope issue: a sealed segment that has left every playlist's part window loses its
/// six part records (its seal lists the parts), so a low-latency stream keeps part records only
/// for its newest segments, while every part stays fetchable and a retried part upload is still
/// answered as a retry.
#[test]
fn a_sealed_segment_outside_the_part_window_keeps_its_parts_without_their_records() {
    let kv = MemoryKv::new();
    let c = config(Retention::Forever, 30_000);
    let id = stream_id(SECRET);
    // 20 segments of four 250 ms parts, target duration 1 s: sealed one a second.
    let now = stream(&kv, &c, 0, 20, T0);
    let records: Vec<u64> = (0..20).filter(|seq| kv.get(&format!("seg/{id}/{seq}/p0")).unwrap().is_some()).collect();
    // Retired at the commit five segments later, once sealed four target durations ago.
    assert!(records.len() <= 6 && records.iter().all(|&seq| seq >= 14), "segments with part records: {records:?}");
    for seq in [0u64, 7, 19] {
        for part in 0..4 {
            let r = get(&kv, &c, &format!("/chunks/{id}/{seq}.{part}.ts"), now + 10);
            r.assert(200);
            assert_eq!(body(&kv, &r), part_body(seq, part), "part {seq}.{part}");
        }
        let whole = get(&kv, &c, &format!("/chunks/{id}/{seq}.ts"), now + 10);
        whole.assert(200);
    }
    put_part(&kv, &c, 3, 2, &part_body(3, 2), now + 20).assert(200);
    put_part(&kv, &c, 3, 2, &part_body(3, 1), now + 20).assert(409);
    // The playlist still lists the parts of the segments in its part window.
    let (_, p) = ll_playlist(&kv, &c, "", now + 10);
    assert_eq!(p.last_seq(), Some(19));
}

#[test]
fn a_sliding_window_keeps_old_metas_in_blocks_and_reads_serves_and_answers_them_as_before() {
    let kv = MemoryKv::new();
    let c = config(Retention::Millis(3_600_000), 30_000);
    let id = stream_id(SECRET);
    let now = stream(&kv, &c, 0, 40, T0);
    let keys = kv.keys();
    let meta_keys: Vec<u64> = (0..40).filter(|seq| keys.contains(&format!("seg/{id}/{seq}/meta"))).collect();
    // Blocks of seqs 0..31 are written (the newest one settled); the keys of 0..23 are gone
    // (their block had shown), so such a segment keeps one key, its folded body.
    for n in 0..4 {
        assert!(keys.contains(&format!("metas/{id}/{n}")), "block {n}: {keys:?}");
    }
    assert!(!keys.contains(&format!("metas/{id}/4")));
    assert_eq!(meta_keys, (24..40).collect::<Vec<_>>());
    for seq in 0..24 {
        let of_seq: Vec<_> = keys.iter().filter(|k| k.starts_with(&format!("seg/{id}/{seq}/"))).collect();
        assert_eq!(of_seq.len(), 1, "seq {seq}: {of_seq:?}");
    }

    // Listed, served and answered as before.
    let (_, p) = ll_playlist(&kv, &c, "", now + 10);
    assert_eq!(p.seqs(), (0..40).collect::<Vec<_>>());
    assert_eq!(p.media_sequence, 0);
    let parts: Vec<Vec<u8>> = (0..4).map(|part| part_body(3, part)).collect();
    assert_served(&kv, &c, &id, 3, &parts, now + 10);
    put_part(&kv, &c, 3, 1, &part_body(3, 1), now + 10).assert(200);
    put_part(&kv, &c, 3, 1, &part_body(4, 1), now + 10).assert(409);
    commit(&kv, &c, 3, "4", now + 10).assert(200);
    let h = head(Method::Post, &format!("/ingest/{SECRET}/3/gap"), &[]);
    request(&kv, &c, &h, b"", now + 10).assert(409);
    let (_, again) = ll_playlist(&kv, &c, "", now + 20);
    assert_eq!(again.segments[..30], p.segments[..30], "an old seq's answers changed nothing");
    let (_, delta) = ll_playlist(&kv, &c, "?_HLS_skip=YES", now + 20);
    assert_eq!(delta.media_sequence, 0);

    // Retention takes the blocks with their segments.
    let short = config(Retention::Millis(2_000), 30_000);
    let later = now + 60_000;
    for _ in 0..3 {
        get(&kv, &short, &format!("/playlist/{id}.m3u8"), later);
    }
    let left: Vec<String> = kv.keys().into_iter().filter(|k| k.starts_with("seg/") || k.starts_with("metas/")).collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn the_recording_is_every_stored_segment_in_order_gaps_left_out_whatever_its_layout() {
    let kv = MemoryKv::new();
    let c = config(Retention::Millis(3_600_000), 30_000);
    let id = stream_id(SECRET);
    // v2: sealed segments (folded, their metas in blocks by now), a given-up seq, more after it.
    let mut now = stream(&kv, &c, 0, 20, T0);
    let h = head(Method::Post, &format!("/ingest/{SECRET}/20/gap"), &[("X-Duration", "1")]);
    request(&kv, &c, &h, b"", now + 1_000).assert(201);
    now = stream(&kv, &c, 21, 24, now + 1_000);
    assert!(kv.keys().iter().any(|k| k.starts_with("metas/")), "blocks formed");
    let expected: Vec<u8> = (0..24).filter(|&seq| seq != 20).flat_map(|seq| (0..4).flat_map(move |p| part_body(seq, p))).collect();

    let r = get(&kv, &c, &format!("/download/{id}.ts"), now + 10);
    r.assert(200);
    assert_eq!(r.get_header("content-type"), Some("video/mp2t"));
    assert_eq!(r.get_header("content-disposition"), Some(format!("attachment; filename=\"chalkstream-{}-so-far.ts\"", &id[..12]).as_str()));
    assert_eq!(r.get_header("cache-control"), Some("no-store"));
    assert_eq!(r.body_len() as usize, expected.len());
    assert!(body(&kv, &r) == expected, "the recording is the segments' bytes in order");
    let h = head(Method::Head, &format!("/download/{id}.ts"), &[]);
    let r = request(&kv, &c, &h, b"", now + 10);
    r.assert(200);
    assert_eq!(r.body_len(), 0);

    // Ended: named as the whole recording.
    request(&kv, &c, &head(Method::Post, &format!("/ingest/{SECRET}/end"), &[]), b"", now + 20).assert(200);
    let r = get(&kv, &c, &format!("/download/{id}.ts"), now + 30);
    assert_eq!(r.get_header("content-disposition"), Some(format!("attachment; filename=\"chalkstream-{}.ts\"", &id[..12]).as_str()));
    assert!(body(&kv, &r) == expected);

    // v1 whole segments, and what is unknown or not an id.
    let other = "another-secret-0123456789abcdef";
    let other_id = stream_id(other);
    let bodies: Vec<Vec<u8>> = (0..3).map(|seq| ts(5, 100 + seq as u8)).collect();
    for (seq, b) in bodies.iter().enumerate() {
        put(&kv, &c, other, seq as u64, "1", b, now + seq as i64 * 1_000).assert(201);
    }
    assert!(body(&kv, &get(&kv, &c, &format!("/download/{other_id}.ts"), now + 3_000)) == bodies.concat());
    get(&kv, &c, &format!("/download/{}.ts", "0".repeat(40)), now).assert(404);
    let r = get(&kv, &c, "/download/not-an-id.ts", now);
    r.assert(404);
    assert!(error(&kv, &r).contains("40 lowercase hex"), "{}", error(&kv, &r));
}

/// A burst of commits (a broadcaster catching up after a stall) came too fast for each seq's
/// part records to have left the part window when its turn came; real-time commits after it
/// retire them all the same, so a stream's keys go back to their steady count, not to the count
/// retention would leave (the two-hour soak saw 714 keys where 455 is steady).
#[test]
fn regression_issue_18_parts_skipped_in_a_burst_of_commits_are_retired_once_it_has_passed() {
    let kv = MemoryKv::new();
    let c = config(Retention::Millis(3_600_000), 30_000);
    let id = stream_id(SECRET);
    let now = stream(&kv, &c, 0, 10, T0);
    let now = stream_every(&kv, &c, 10, 30, now, 10);
    let now = stream(&kv, &c, 30, 50, now);
    let keys = kv.keys();
    let with = |what: &dyn Fn(&str) -> bool| -> Vec<u64> {
        (0..50).filter(|seq| keys.iter().any(|k| k.strip_prefix(&format!("seg/{id}/{seq}/")).is_some_and(what))).collect()
    };
    let records = with(&|rest: &str| rest.starts_with('p') && !rest.contains('/'));
    let bodies = with(&|rest: &str| rest.starts_with('p') && rest.contains('/'));
    // As in a stream uploaded in real time throughout: part records only for the newest six
    // segments, part bodies only one segment further back.
    assert!(records.iter().all(|&seq| seq >= 44), "segments with part records: {records:?}");
    assert!(bodies.iter().all(|&seq| seq >= 43), "segments with part bodies: {bodies:?}");
    // Every part still served.
    for seq in [12u64, 29, 49] {
        let parts: Vec<Vec<u8>> = (0..4).map(|p| part_body(seq, p)).collect();
        assert_served(&kv, &c, &id, seq, &parts, now + 10);
    }
}
