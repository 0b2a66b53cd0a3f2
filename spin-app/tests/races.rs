//! Concurrency without transactions: uploader threads race on one stream (duplicates, retries,
//! out-of-order arrivals) while retention deletes and viewers read, over a store that yields
//! between every operation to shuffle the interleavings. No acknowledged segment may go missing.
//! With retention 0 a broadcaster also presses Stop now and then, so resumes add
//! discontinuities while 64-segment pages and their playlist lines are being written; the lines
//! must always be the renderer's lines for the committed metas.

mod common;

use chalkstream_manifest::id::StreamId;
use chalkstream_manifest::playlist::{render, segment_lines};
use chalkstream_manifest::rules::{Config, Retention};
use chalkstream_manifest::segment::SegmentMeta;
use chalkstream_spin_app::store::Streams;
use chalkstream_spin_app::kv::Kv;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// A tiny deterministic generator per thread.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

/// More than 512, so every size of stored lines block is written while uploads race.
const SEGMENTS: u64 = 520;
/// Viewer threads reading playlists and chunks (their reads also run retention's cleanup).
const VIEWERS: usize = 2;
/// Interleavings are random: each test runs several rounds.
const ROUNDS: usize = 4;

fn body_of(seq: u64) -> Vec<u8> {
    ts(2 + (seq % 5) as usize, (seq % 251) as u8)
}

/// Seqs with `X-Discontinuity: 1` (every 17th).
fn flagged(seq: u64) -> bool {
    seq > 0 && seq % 17 == 0
}

struct Outcome {
    /// seq -> every answer's status (410 stands for "409: behind the retention window")
    acks: Mutex<BTreeMap<u64, Vec<u16>>>,
    viewer_checks: AtomicU64,
}

/// Uploaders (and viewers) race on one stream; with `stops`, a broadcaster thread also presses
/// Stop every so often, so the next upload resumes with a discontinuity.
fn run(retention: Retention, uploaders: u64, stops: bool) -> (Shuffled, Config, Outcome, i64) {
    let kv = Shuffled::new(0, 31, 50);
    let c = config(retention, 10_000_000);
    let clock = AtomicI64::new(T0);
    let next = AtomicU64::new(0);
    let retries: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    let done = AtomicU64::new(0);
    let outcome = Outcome {
        acks: Mutex::new(BTreeMap::new()),
        viewer_checks: AtomicU64::new(0),
    };
    let id = stream_id(SECRET);

    std::thread::scope(|scope| {
        for t in 0..uploaders {
            let (kv, c, clock, next, retries, done, outcome) = (&kv, &c, &clock, &next, &retries, &done, &outcome);
            scope.spawn(move || {
                let mut rng = Lcg(t + 1);
                // Seqs the server asked to send again later (`429`: too far past the first
                // unstored seq while another uploader is slow); this uploader owes them.
                let mut later: Vec<u64> = Vec::new();
                loop {
                    // Mostly new seqs in order; sometimes a retry of an earlier one (same bytes).
                    let retry = if rng.next(4) == 0 {
                        retries.lock().unwrap().pop()
                    } else {
                        None
                    };
                    let seq = match retry.or_else(|| later.pop()) {
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
                    let mut headers = vec![("X-Duration", "2.000")];
                    if flagged(seq) {
                        headers.push(("X-Discontinuity", "1"));
                    }
                    let reply = put_with(kv, c, SECRET, seq, &headers, &body_of(seq), now);
                    if reply.status == 429 {
                        assert!(reply.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("retry-after")), "429 without Retry-After");
                        later.push(seq);
                        std::thread::yield_now();
                        continue;
                    }
                    let mut status = reply.status;
                    if status == 409 && text(kv, &reply).contains("retention window") {
                        status = 410; // a late retry of a seq retention already deleted
                    }
                    outcome.acks.lock().unwrap().entry(seq).or_default().push(status);
                    if rng.next(3) == 0 {
                        retries.lock().unwrap().push(seq);
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        if stops {
            let (kv, c, clock, done) = (&kv, &c, &clock, &done);
            scope.spawn(move || {
                let end = head(chalkstream_spin_app::route::Method::Post, &format!("/ingest/{SECRET}/end"), &[]);
                let mut rng = Lcg(99);
                while done.load(Ordering::SeqCst) < uploaders {
                    for _ in 0..20 + rng.next(60) {
                        std::thread::yield_now();
                    }
                    let now = clock.fetch_add(1, Ordering::SeqCst);
                    let status = request(kv, c, &end, &[], now).status;
                    assert!(status == 200 || status == 404, "Stop answered {status}");
                }
            });
        }
        // A viewer: every playlist it reads is a contiguous run whose chunks are readable,
        // and later playlists never go back.
        for _ in 0..VIEWERS {
            let (kv, c, clock, done, outcome, id) = (&kv, &c, &clock, &done, &outcome, &id);
            scope.spawn(move || {
                let mut last_first = 0u64;
                let mut last_end = 0u64;
                while done.load(Ordering::SeqCst) < uploaders {
                    // Viewers read the clock without moving it: time is the uploads' time.
                    let now = clock.load(Ordering::SeqCst);
                    let reply = playlist(kv, c, id, now);
                    if reply.status == 404 {
                        continue;
                    }
                    assert_eq!(reply.status, 200);
                    let seqs = listed_seqs(&text(kv, &reply));
                    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "contiguous: {seqs:?}");
                    let (first, end) = (seqs[0], seqs[seqs.len() - 1] + 1);
                    assert!(first >= last_first, "window start went back: {first} < {last_first}");
                    assert!(end >= last_end, "run end went back: {end} < {last_end}");
                    (last_first, last_end) = (first, end);
                    let seq = seqs[seqs.len() / 2];
                    let chunk = get(kv, c, &format!("/chunks/{id}/{seq}.ts"), now);
                    if chunk.status == 200 {
                        // Parts vanish mid-read only when retention deletes an expired segment.
                        match try_body(kv, &chunk) {
                            Some(bytes) => assert_eq!(bytes, body_of(seq)),
                            None => {
                                let later = clock.load(Ordering::SeqCst);
                                let meta = kv.inner.get(&format!("seg/{id}/{seq}/meta")).unwrap();
                                let expired = meta.is_none_or(|m| {
                                    let m: serde_json::Value = serde_json::from_slice(&m).unwrap();
                                    c.retention.is_expired(m["stored_ms"].as_i64().unwrap(), later)
                                });
                                assert!(expired, "parts of unexpired seq {seq} are missing");
                            }
                        }
                    }
                    outcome.viewer_checks.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let end = clock.load(Ordering::SeqCst);
    (kv, c, outcome, end)
}

fn check_every_ack_is_listed_or_expired(kv: &Shuffled, c: &Config, outcome: &Outcome, now: i64) -> Vec<u64> {
    let acks = outcome.acks.lock().unwrap();
    assert_eq!(acks.len() as u64, SEGMENTS);
    let id = stream_id(SECRET);
    let reply = playlist(kv, c, &id, now);
    if reply.status != 200 {
        for k in kv.inner.keys().iter().filter(|k| !k.starts_with("seg/") || k.ends_with("meta")) {
            eprintln!("{k} = {}", String::from_utf8_lossy(&kv.inner.get(k).unwrap().unwrap()));
        }
        eprintln!("now {now}");
    }
    assert_eq!(reply.status, 200);
    let text = text(kv, &reply);
    let listed = listed_seqs(&text);
    let first = listed[0];
    for (seq, statuses) in acks.iter() {
        assert!(
            statuses
                .iter()
                .all(|s| *s == 200 || *s == 201 || (*s == 410 && *seq < first)),
            "seq {seq}: {statuses:?}"
        );
        // Created exactly once; or never, when every try came after the window had moved past
        // the seq (all `410`, and the seq is below the listed window, checked above): an
        // uploader thread stalled with its clock reading while the others' uploads expired
        // everything around it, which the contract refuses with 409 and changes nothing.
        let created = statuses.iter().filter(|s| **s == 201).count();
        assert!(
            created == 1 || created == 0 && statuses.iter().all(|s| *s == 410),
            "seq {seq} created once: {statuses:?}"
        );
    }
    assert_eq!(
        *listed.last().unwrap(),
        SEGMENTS - 1,
        "the run reaches the last acked seq"
    );
    assert_eq!(listed, (first..SEGMENTS).collect::<Vec<_>>());
    for seq in 0..first {
        // Below the window only because retention expired it.
        let kept = kv.inner.get(&format!("seg/{id}/{seq}/meta")).unwrap();
        assert!(
            c.retention != Retention::Forever && kept.is_none(),
            "seq {seq} missing but not expired"
        );
    }
    for seq in first..SEGMENTS {
        assert_eq!(
            body(kv, &get(kv, c, &format!("/chunks/{id}/{seq}.ts"), now)),
            body_of(seq)
        );
    }
    // The discontinuity sequence counts exactly the flagged seqs that slid out.
    let expected_before = (0..first).filter(|s| flagged(*s)).count();
    let metas: Vec<SegmentMeta> = (first..SEGMENTS)
        .map(|seq| serde_json::from_slice(&kv.inner.get(&format!("seg/{id}/{seq}/meta")).unwrap().unwrap()).unwrap())
        .collect();
    assert!(
        text.contains(&format!("#EXT-X-DISCONTINUITY-SEQUENCE:{expected_before}\n")),
        "{text}"
    );
    let marked: BTreeSet<u64> = text
        .split("#EXT-X-DISCONTINUITY\n")
        .skip(1)
        .map(|rest| listed_seqs(rest)[0])
        .collect();
    let expected: BTreeSet<u64> = metas.iter().filter(|m| m.discontinuity).map(|m| m.seq).collect();
    assert_eq!(marked, expected, "exactly the committed discontinuities are marked");
    assert!((first..SEGMENTS).filter(|s| flagged(*s)).all(|s| marked.contains(&s)));
    listed
}

/// Retention 0: every complete block of 8, 64 and 512 segments has stored lines, they are the
/// renderer's lines for the committed metas, the meta pages hold those metas, and the playlist
/// a GET answers is the one rendering every meta gives. Returns the resumes (discontinuities no
/// uploader flagged).
fn check_pages_match_the_metas(kv: &Shuffled, c: &Config, now: i64) -> usize {
    let id = stream_id(SECRET);
    let metas: Vec<SegmentMeta> = (0..SEGMENTS)
        .map(|seq| serde_json::from_slice(&kv.inner.get(&format!("seg/{id}/{seq}/meta")).unwrap().unwrap()).unwrap())
        .collect();
    for len in [8u64, 64, 512] {
        for n in 0..SEGMENTS / len {
            let key = format!("lines/{id}/{len}/{n}");
            let lines = kv.inner.get(&key).unwrap().unwrap_or_else(|| panic!("{key} missing"));
            let block = &metas[(n * len) as usize..(n * len + len) as usize];
            assert_eq!(String::from_utf8(lines).unwrap(), segment_lines(&id, block), "{key}");
        }
    }
    // Meta pages are written by the upload that finds the tail just past them, so a tail that
    // jumps may skip one (its metas are then read one by one); those stored hold the metas.
    for n in 0..SEGMENTS / 64 {
        if let Some(page) = kv.inner.get(&format!("page/{id}/{n}")).unwrap() {
            let stored: Vec<SegmentMeta> = serde_json::from_slice(&page).unwrap();
            assert_eq!(stored, &metas[(n * 64) as usize..(n * 64 + 64) as usize], "page {n}");
        }
    }
    let sid = StreamId::parse(&id).unwrap();
    let slow = render(&id, &Streams::new(kv, c).view(&sid, now).unwrap().unwrap());
    assert_eq!(text(kv, &playlist(kv, c, &id, now)), slow);
    metas.iter().filter(|m| m.discontinuity && !flagged(m.seq)).count()
}

#[test]
fn racing_uploads_retries_and_readers_never_lose_an_acknowledged_segment() {
    for _ in 0..ROUNDS {
        let (kv, c, outcome, end) = run(Retention::Forever, 4, false);
        let listed = check_every_ack_is_listed_or_expired(&kv, &c, &outcome, end);
        assert_eq!(listed[0], 0, "EVENT playlists keep everything");
        assert!(outcome.viewer_checks.load(Ordering::Relaxed) > 0);
        assert_eq!(check_pages_match_the_metas(&kv, &c, end), 0, "no Stop, no resume");
    }
}

#[test]
fn pages_written_while_stop_and_resume_add_discontinuities_keep_the_lines_of_the_committed_metas() {
    let mut resumes = 0;
    for _ in 0..ROUNDS {
        let (kv, c, outcome, end) = run(Retention::Forever, 4, true);
        let listed = check_every_ack_is_listed_or_expired(&kv, &c, &outcome, end);
        assert_eq!(listed[0], 0, "EVENT playlists keep everything");
        resumes += check_pages_match_the_metas(&kv, &c, end);
    }
    assert!(resumes > 0, "Stop never led to a resume: the race was not exercised");
}

#[test]
fn racing_uploads_with_retention_lose_only_expired_segments_and_keep_storage_bounded() {
    // The shared clock moves 1-3 ms per request; 100 ms keep a window of a few dozen segments.
    for _ in 0..ROUNDS {
        let (kv, c, outcome, end) = run(Retention::Millis(100), 4, false);
        let listed = check_every_ack_is_listed_or_expired(&kv, &c, &outcome, end);
        assert!(listed[0] > 0, "retention moved the window");
        let id = stream_id(SECRET);
        let metas = kv
            .inner
            .keys()
            .iter()
            .filter(|k| k.starts_with(&format!("seg/{id}/")) && k.ends_with("/meta"))
            .count();
        assert!(
            metas <= listed.len() + 64 + 8,
            "{metas} metas for a window of {}",
            listed.len()
        );
        let parts = kv
            .inner
            .keys()
            .iter()
            .filter(|k| k.starts_with("seg/") && !k.ends_with("/meta"))
            .count();
        assert_eq!(parts, metas, "no orphaned parts (same bytes share their part keys)");
    }
}
