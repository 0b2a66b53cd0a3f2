//! Issue 11, part 2: a seq given up (`POST /ingest/{session}/{seq}/gap`) on the memory store.
//! The gap is recorded once, answered `201` then `200`; a late upload of the same seq gets
//! `409` and replaces nothing, a gap for a stored segment gets `409`; the playlist lists the
//! gap as an `EXT-X-GAP` segment under its own seq and moves on with exactly one
//! discontinuity; the media and discontinuity sequences never go back as the window slides
//! over it; retention and the sweep delete gap records. The races between a gap and a late
//! upload of its seq are driven step by step (a store that runs the other request right after a
//! chosen operation) and at random (threads over a store that yields between operations).

mod common;

use chalkstream_manifest::rules::{Config, Retention};
use chalkstream_manifest::segment::SegmentMeta;
use chalkstream_manifest::wire;
use chalkstream_spin_app::kv::{Kv, KvError, MemoryKv};
use chalkstream_spin_app::reply::Reply;
use chalkstream_spin_app::route::Method;
use chalkstream_spin_app::sweep;
use common::*;
use std::cell::RefCell;

fn gap_with(kv: &dyn Kv, c: &Config, seq: u64, headers: &[(&str, &str)], now: i64) -> Reply {
    let h = head(Method::Post, &wire::ingest_gap_path(SECRET, seq), headers);
    request(kv, c, &h, b"", now)
}

fn gap(kv: &dyn Kv, c: &Config, seq: u64, now: i64) -> Reply {
    gap_with(kv, c, seq, &[(wire::DURATION, "2")], now)
}

fn seg(seq: u64) -> Vec<u8> {
    ts(3, 10 + seq as u8)
}

/// The late body of seq 1: what the client sent before giving the seq up.
fn late() -> Vec<u8> {
    ts(4, 0xab)
}

fn sequences(text: &str) -> (u64, u64) {
    let tag = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map_or(0, |v| v.parse::<u64>().unwrap());
    (tag("#EXT-X-MEDIA-SEQUENCE:"), tag("#EXT-X-DISCONTINUITY-SEQUENCE:"))
}

/// The `EXT-X-PART` lines of segment `seq` that offer media (not `GAP=YES`).
fn media_parts_of(text: &str, id: &str, seq: u64) -> Vec<String> {
    let uri = format!("URI=\"/chunks/{id}/{seq}.");
    text.lines().filter(|l| l.starts_with("#EXT-X-PART:") && l.contains(&uri) && !l.ends_with(",GAP=YES")).map(str::to_owned).collect()
}

/// The seqs listed with `#EXT-X-GAP`.
fn gaps(text: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut gapped = false;
    for line in text.lines() {
        if line == "#EXT-X-GAP" {
            gapped = true;
        } else if line.starts_with("/chunks/") {
            if gapped {
                out.push(listed_seqs(line)[0]);
            }
            gapped = false;
        }
    }
    out
}

fn meta(kv: &dyn Kv, seq: u64) -> Option<SegmentMeta> {
    let id = stream_id(SECRET);
    kv.get(&format!("seg/{id}/{seq}/meta")).unwrap().map(|b| serde_json::from_slice(&b).unwrap())
}

fn error(kv: &dyn Kv, reply: &Reply) -> String {
    json(kv, reply)["error"].as_str().unwrap_or_default().to_owned()
}

fn c() -> Config {
    config(Retention::Millis(600_000), 30_000)
}

#[test]
fn a_gap_is_recorded_once_and_the_playlist_moves_on_with_one_discontinuity() {
    let kv = MemoryKv::new();
    let c = c();
    let id = stream_id(SECRET);
    assert_eq!(put(&kv, &c, SECRET, 0, "2", &seg(0), T0).status, 201);
    let reply = gap(&kv, &c, 1, T0 + 2000);
    assert_eq!(reply.status, 201, "{}", text(&kv, &reply));
    let answer = json(&kv, &reply);
    assert_eq!((answer["seq"].as_u64(), answer["gap"].as_bool()), (Some(1), Some(true)));
    assert!(!text(&kv, &reply).contains(SECRET), "the secret is never echoed");
    assert_eq!(gap(&kv, &c, 1, T0 + 2100).status, 200, "a repeated gap is a retry");
    assert_eq!(gap_with(&kv, &c, 1, &[], T0 + 2200).status, 200, "with or without its duration");
    // The client marks the segment after a gap; the server would mark it anyway.
    assert_eq!(put(&kv, &c, SECRET, 2, "2", &seg(2), T0 + 4000).status, 201);
    assert_eq!(put(&kv, &c, SECRET, 3, "2", &seg(3), T0 + 6000).status, 201);

    let text = text(&kv, &playlist(&kv, &c, &id, T0 + 6000));
    assert_eq!(listed_seqs(&text), vec![0, 1, 2, 3], "media sequence numbers stay the seqs:\n{text}");
    assert_eq!(gaps(&text), vec![1], "{text}");
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
    assert!(text.contains(&format!("#EXT-X-GAP\n#EXTINF:2.000,\n/chunks/{id}/1.ts\n#EXT-X-DISCONTINUITY\n")), "{text}");
    assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:"), "{text}");
    assert_eq!(sequences(&text), (0, 0));
    assert!(text.starts_with("#EXTM3U\n#EXT-X-VERSION:3\n"), "no version bump for v1 streams:\n{text}");

    // The gap's URL answers a clear 404; the segments around it play.
    let chunk = get(&kv, &c, &format!("/chunks/{id}/1.ts"), T0 + 6000);
    assert_eq!(chunk.status, 404);
    assert!(error(&kv, &chunk).contains("given up"), "{}", error(&kv, &chunk));
    assert_eq!(body(&kv, &get(&kv, &c, &format!("/chunks/{id}/2.ts"), T0 + 6000)), seg(2));
    let status = json(&kv, &get(&kv, &c, &format!("/api/streams/{id}"), T0 + 6000));
    assert_eq!(status["last_seq"], 3);
}

#[test]
fn a_late_upload_after_the_gap_gets_409_and_replaces_nothing() {
    let kv = MemoryKv::new();
    let c = c();
    let id = stream_id(SECRET);
    put(&kv, &c, SECRET, 0, "2", &seg(0), T0);
    assert_eq!(gap(&kv, &c, 1, T0 + 2000).status, 201);
    put(&kv, &c, SECRET, 2, "2", &seg(2), T0 + 4000);
    let before = text(&kv, &playlist(&kv, &c, &id, T0 + 4000));
    let late_put = put(&kv, &c, SECRET, 1, "2", &late(), T0 + 5000);
    assert_eq!(late_put.status, 409);
    assert!(error(&kv, &late_put).contains("given up"), "{}", error(&kv, &late_put));
    assert!(meta(&kv, 1).unwrap().gap);
    assert_eq!(text(&kv, &playlist(&kv, &c, &id, T0 + 5000)), before, "nothing changed");
    assert!(!kv.keys().iter().any(|k| k.starts_with(&format!("seg/{id}/1/")) && !k.ends_with("/meta")), "no bytes kept");
    assert_eq!(get(&kv, &c, &format!("/chunks/{id}/1.ts"), T0 + 5000).status, 404);
}

#[test]
fn a_gap_for_a_stored_segment_gets_409_and_the_segment_stays() {
    let kv = MemoryKv::new();
    let c = c();
    let id = stream_id(SECRET);
    put(&kv, &c, SECRET, 0, "2", &seg(0), T0);
    assert_eq!(put(&kv, &c, SECRET, 1, "2", &late(), T0 + 2000).status, 201);
    let reply = gap(&kv, &c, 1, T0 + 3000);
    assert_eq!(reply.status, 409);
    assert!(error(&kv, &reply).contains("already stored"), "{}", error(&kv, &reply));
    assert_eq!(body(&kv, &get(&kv, &c, &format!("/chunks/{id}/1.ts"), T0 + 3000)), late());
    assert!(!kv.keys().iter().any(|k| k.starts_with("gap/")), "the gap took its record back");
    let text = text(&kv, &playlist(&kv, &c, &id, T0 + 3000));
    assert!(gaps(&text).is_empty() && !text.contains("DISCONTINUITY\n"), "{text}");
}

#[test]
fn bad_gaps_get_a_clear_4xx() {
    let kv = MemoryKv::new();
    let mut c = c();
    put(&kv, &c, SECRET, 0, "2", &seg(0), T0);
    assert_eq!(gap_with(&kv, &c, 1, &[(wire::DURATION, "soon")], T0).status, 400);
    assert_eq!(gap_with(&kv, &c, 1, &[(wire::DURATION, "5")], T0).status, 400, "longer than the target");
    assert_eq!(gap(&kv, &c, 1 + 64, T0).status, 429, "as far ahead as an upload may go");
    let h = head(Method::Post, &format!("/ingest/{SECRET}/x/gap"), &[]);
    assert_eq!(request(&kv, &c, &h, b"", T0).status, 400);
    let h = head(Method::Put, &wire::ingest_gap_path(SECRET, 1), &[]);
    assert_eq!(request(&kv, &c, &h, b"", T0).status, 405);
    c.ingest_token = Some("tok".into());
    assert_eq!(gap(&kv, &c, 1, T0).status, 401);
    assert_eq!(gap_with(&kv, &c, 1, &[("Authorization", "Bearer tok")], T0).status, 201);
    assert!(meta(&kv, 1).unwrap().gap);
    assert_eq!(meta(&kv, 1).unwrap().duration_ms, 2000, "without X-Duration: the target duration");
}

/// A store that runs `hook` once, right after the `nth` (from 0) operation `op` on `key`.
struct Hooked<'a> {
    inner: MemoryKv,
    hook: RefCell<Option<(&'static str, String, Box<dyn FnOnce(&MemoryKv) + 'a>)>>,
    skip: std::cell::Cell<usize>,
}

impl<'a> Hooked<'a> {
    fn new(inner: MemoryKv) -> Self {
        Hooked { inner, hook: RefCell::new(None), skip: std::cell::Cell::new(0) }
    }
    fn after(&self, op: &'static str, key: String, nth: usize, hook: impl FnOnce(&MemoryKv) + 'a) {
        *self.hook.borrow_mut() = Some((op, key, Box::new(hook)));
        self.skip.set(nth);
    }
    fn fire(&self, op: &str, key: &str) {
        let matching = matches!(&*self.hook.borrow(), Some((o, k, _)) if *o == op && k == key);
        if matching && self.skip.get() > 0 {
            self.skip.set(self.skip.get() - 1);
        } else if matching {
            let (_, _, hook) = self.hook.borrow_mut().take().unwrap();
            hook(&self.inner);
        }
    }
    fn fired(&self) -> bool {
        self.hook.borrow().is_none()
    }
}

impl Kv for Hooked<'_> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let r = self.inner.get(key);
        self.fire("get", key);
        r
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        let r = self.inner.set(key, value);
        self.fire("set", key);
        r
    }
    fn delete(&self, key: &str) -> Result<(), KvError> {
        let r = self.inner.delete(key);
        self.fire("delete", key);
        r
    }
}

/// Which request runs first, and after which of its operations the other one runs whole.
#[derive(Debug, Clone, Copy)]
enum Race {
    /// The late upload runs; after the `n`th `op` on `key` (a function of the stream id) the
    /// gap runs.
    GapDuringUpload(&'static str, fn(&str) -> String, usize),
    /// The gap runs; after the `n`th `op` on `key` the late upload runs.
    UploadDuringGap(&'static str, fn(&str) -> String, usize),
}

/// Seg 0 stored, then a gap and a late upload of seq 1 interleaved as `race` says. Returns
/// (upload status, gap status) and checks what must hold whatever the outcome.
fn race(race: Race) -> (u16, u16) {
    let c = c();
    let id = stream_id(SECRET);
    let other = RefCell::new(0u16);
    let base = MemoryKv::new();
    put(&base, &c, SECRET, 0, "2", &seg(0), T0);
    let kv = Hooked::new(base);
    let first = match race {
        Race::GapDuringUpload(op, key, nth) => {
            kv.after(op, key(&id), nth, |inner| *other.borrow_mut() = gap(inner, &c, 1, T0 + 2500).status);
            put(&kv, &c, SECRET, 1, "2", &late(), T0 + 2500).status
        }
        Race::UploadDuringGap(op, key, nth) => {
            kv.after(op, key(&id), nth, |inner| *other.borrow_mut() = put(inner, &c, SECRET, 1, "2", &late(), T0 + 2500).status);
            gap(&kv, &c, 1, T0 + 2500).status
        }
    };
    assert!(kv.fired(), "{race:?}: the other request never ran");
    let other = *other.borrow();
    let (upload, gapped) = match race {
        Race::GapDuringUpload(..) => (first, other),
        Race::UploadDuringGap(..) => (other, first),
    };
    let acked = |s: u16| s == 200 || s == 201;
    assert!(!(acked(upload) && acked(gapped)), "{race:?}: both acknowledged ({upload}, {gapped})");
    assert!([200, 201, 409].contains(&upload) && [200, 201, 409].contains(&gapped), "{race:?}: {upload}, {gapped}");
    let kv = kv.inner;
    put(&kv, &c, SECRET, 2, "2", &seg(2), T0 + 4000);
    let stored = meta(&kv, 1).expect("seq 1 holds the upload or the gap");
    let text = text(&kv, &playlist(&kv, &c, &id, T0 + 4000));
    assert_eq!(listed_seqs(&text), vec![0, 1, 2], "{race:?}: the playlist moved on\n{text}");
    let chunk = get(&kv, &c, &format!("/chunks/{id}/1.ts"), T0 + 4000);
    if acked(upload) {
        assert!(!stored.gap, "{race:?}: an acknowledged segment was replaced");
        assert_eq!(body(&kv, &chunk), late());
        assert!(gaps(&text).is_empty(), "{text}");
    } else {
        assert!(stored.gap, "{race:?}: a refused upload is listed");
        assert_eq!(chunk.status, 404);
        assert_eq!(gaps(&text), vec![1]);
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
        let id = stream_id(SECRET);
        assert!(
            !kv.keys().iter().any(|k| k.starts_with(&format!("seg/{id}/1/")) && !k.ends_with("/meta")),
            "{race:?}: the refused upload's bytes stay behind"
        );
    }
    (upload, gapped)
}

fn meta_key(id: &str) -> String {
    format!("seg/{id}/1/meta")
}
fn gap_key(id: &str) -> String {
    format!("gap/{id}/1")
}
fn slice_key(id: &str) -> String {
    let sha = chalkstream_manifest::id::sha1_hex(&late());
    format!("seg/{id}/1/{}/0", &sha[..12])
}

#[test]
fn a_gap_and_a_late_upload_of_its_seq_race_and_exactly_one_wins() {
    // The gap lands while the upload writes its bytes: the upload finds the gap at its commit.
    assert_eq!(race(Race::GapDuringUpload("set", slice_key, 0)), (409, 201));
    // The upload commits while the gap has written its record but not the commit point: the
    // upload sees the record, puts the gap back and yields; the gap finds itself recorded.
    assert_eq!(race(Race::UploadDuringGap("set", gap_key, 0)), (409, 200));
    // The gap runs right after the upload's commit point: it finds the segment and yields.
    assert_eq!(race(Race::GapDuringUpload("set", meta_key, 0)), (201, 409));
    // The gap runs after the upload looked for a gap record and found none.
    assert_eq!(race(Race::GapDuringUpload("get", gap_key, 0)), (201, 409));
    // The upload runs after the gap found the commit point free (its second look, after its
    // record): the upload then finds the gap's record and yields.
    assert_eq!(race(Race::UploadDuringGap("get", meta_key, 1)), (409, 201));
    // The upload runs before the gap wrote anything: it is stored, and the gap yields.
    assert_eq!(race(Race::UploadDuringGap("get", meta_key, 0)), (201, 409));
}

#[test]
fn threads_racing_a_gap_against_late_uploads_never_acknowledge_both() {
    let c = c();
    let id = stream_id(SECRET);
    let mut outcomes = std::collections::BTreeMap::new();
    for round in 0..200 {
        let kv = Shuffled::new(round * 7919, 7, 30);
        put(&kv.inner, &c, SECRET, 0, "2", &seg(0), T0);
        let (upload, gapped) = std::thread::scope(|s| {
            let u = s.spawn(|| put(&kv, &c, SECRET, 1, "2", &late(), T0 + 2500).status);
            let g = s.spawn(|| gap(&kv, &c, 1, T0 + 2500).status);
            (u.join().unwrap(), g.join().unwrap())
        });
        let acked = |s: u16| s == 200 || s == 201;
        assert!(!(acked(upload) && acked(gapped)), "round {round}: both acknowledged");
        let stored = meta(&kv.inner, 1).expect("seq 1 holds one of them");
        if acked(upload) {
            assert!(!stored.gap, "round {round}: the acknowledged segment was replaced");
            assert_eq!(body(&kv.inner, &get(&kv.inner, &c, &format!("/chunks/{id}/1.ts"), T0 + 3000)), late());
        } else {
            assert!(stored.gap, "round {round}: a refused upload is stored");
        }
        *outcomes.entry((upload, gapped)).or_insert(0) += 1;
    }
    eprintln!("outcomes (upload, gap): {outcomes:?}");
}

#[test]
fn sequences_never_go_back_as_the_window_slides_over_gaps() {
    let kv = MemoryKv::new();
    let c = config(Retention::Millis(10_000), 30_000);
    let id = stream_id(SECRET);
    let mut last = (0, 0);
    let mut now = T0;
    let mut gaps_seen = 0;
    for seq in 0..30u64 {
        now += 2000;
        let status = if seq % 7 == 3 || seq == 4 {
            gap(&kv, &c, seq, now).status
        } else {
            let mut headers = vec![(wire::DURATION, "2")];
            if seq % 7 == 4 || seq == 5 {
                headers.push((wire::DISCONTINUITY, "1"));
            }
            put_with(&kv, &c, SECRET, seq, &headers, &seg(seq), now).status
        };
        assert_eq!(status, 201, "seq {seq}");
        for read in [now, now + 1000] {
            let text = text(&kv, &playlist(&kv, &c, &id, read));
            let now_seqs = sequences(&text);
            assert!(now_seqs.0 >= last.0 && now_seqs.1 >= last.1, "went back: {last:?} then {now_seqs:?}\n{text}");
            last = now_seqs;
            gaps_seen += gaps(&text).len();
        }
    }
    // Gaps at 3, 4 (two in a row), 10, 17, 24: discontinuities before 5, 11, 18, 25, so by now
    // the window (the last 10 s) starts past three of them.
    let text = text(&kv, &playlist(&kv, &c, &id, now));
    assert_eq!(sequences(&text).1, 3, "{text}");
    assert!(gaps_seen > 0);
    // Nothing is left once everything expired, gap records included.
    for _ in 0..5 {
        now += 20_000;
        playlist(&kv, &c, &id, now);
    }
    assert!(
        !kv.keys().iter().any(|k| k.starts_with("gap/") || k.starts_with("seg/")),
        "{:?}",
        kv.keys()
    );
}

#[test]
fn the_sweep_deletes_an_abandoned_stream_with_its_gaps() {
    let kv = MemoryKv::new();
    let c = config(Retention::Millis(6_000), 30_000);
    put(&kv, &c, SECRET, 0, "2", &seg(0), T0);
    gap(&kv, &c, 1, T0 + 2000);
    put(&kv, &c, SECRET, 2, "2", &seg(2), T0 + 4000);
    gap(&kv, &c, 3, T0 + 6000); // the last thing the stream did
    assert!(kv.keys().iter().any(|k| k.starts_with("gap/")));
    // Nobody reads it again; only admin sweeps run, minutes later.
    for minute in 1..4 {
        sweep::run(&kv, &c, T0 + minute * 60_000).unwrap();
    }
    let id = stream_id(SECRET);
    let left: Vec<String> = kv.keys().into_iter().filter(|k| k.contains(&id)).collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn v2_a_gap_seals_an_open_segment_and_its_late_parts_and_commit_get_409() {
    let kv = MemoryKv::new();
    let c = c();
    let id = stream_id(SECRET);
    let part = |seq: u64, n: u32, now: i64| {
        let headers = [
            (wire::DURATION, "0.500"),
            (wire::PART_TARGET, "0.500"),
            (wire::TARGET_DURATION, "1"),
            (wire::INDEPENDENT, if n == 0 { "1" } else { "0" }),
        ];
        let h = head(Method::Put, &wire::ingest_part_path(SECRET, seq, n), &headers);
        request(&kv, &c, &h, &ts(2, (seq * 4 + u64::from(n)) as u8), now).status
    };
    let commit = |seq: u64, n: &str, now: i64| {
        let h = head(Method::Post, &wire::ingest_commit_path(SECRET, seq), &[(wire::PARTS, n)]);
        request(&kv, &c, &h, b"", now).status
    };
    assert_eq!((part(0, 0, T0), part(0, 1, T0 + 500), commit(0, "2", T0 + 500)), (201, 201, 201));
    // Segment 1 is open with one part when the client gives it up.
    assert_eq!(part(1, 0, T0 + 1000), 201);
    assert_eq!(gap_with(&kv, &c, 1, &[(wire::DURATION, "1")], T0 + 1500).status, 201);
    assert_eq!(part(1, 1, T0 + 1600), 409, "a late part of a given-up segment");
    assert_eq!(part(1, 0, T0 + 1600), 200, "part 0 itself stays stored: a retry");
    assert_eq!(commit(1, "2", T0 + 1600), 409, "a late commit");
    assert_eq!(commit(1, "1", T0 + 1600), 409);
    assert_eq!((part(2, 0, T0 + 2000), part(2, 1, T0 + 2500), commit(2, "2", T0 + 2500)), (201, 201, 201));
    let text = text(&kv, &playlist(&kv, &c, &id, T0 + 2500));
    assert_eq!(listed_seqs(&text), vec![0, 1, 2], "{text}");
    assert_eq!(gaps(&text), vec![1], "{text}");
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
    assert!(text.contains("#EXT-X-VERSION:9\n"));
    assert!(media_parts_of(&text, &id, 1).is_empty(), "the gap lists none of its parts as media (only GAP=YES ones):\n{text}");
    assert_eq!(get(&kv, &c, &format!("/chunks/{id}/1.ts"), T0 + 2500).status, 404);
    // Retention deletes the gap and the parts it sealed.
    let c = config(Retention::Millis(1_000), 30_000);
    let mut now = T0 + 2500;
    for _ in 0..4 {
        now += 10_000;
        playlist(&kv, &c, &id, now);
        // The stream registered under the 10-minute retention it was stored with.
        sweep::run(&kv, &c, now + 20 * 60_000).unwrap();
    }
    let left: Vec<String> = kv.keys().into_iter().filter(|k| k.contains(&id)).collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Issue 11's done test with the extension's real queue: a segment is sent and never answered,
/// the outage bound drops it, the client declares the gap, and the server completes the lost
/// request only afterwards. No acknowledged segment is replaced, the playlist moves on, and the
/// viewer sees one discontinuity.
#[test]
fn regression_issue_11_a_dropped_sent_segment_completed_late_after_its_gap() {
    use chalkstream_pipeline::queue::{classify, Backoff, GapSettled, UploadQueue};
    let kv = MemoryKv::new();
    let c = c();
    let id = stream_id(SECRET);
    let mut q: UploadQueue<Vec<u8>> = UploadQueue::new(Backoff::default(), 10_000);
    let mut now = 0u64;
    let mut acked: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut gaps_recorded = Vec::new();
    let mut late_request = None;
    // Segment 0 is acknowledged; segment 1 goes out and its answer never comes.
    for name in 0..=1u8 {
        q.push(ts(3, 100 + name), 2000);
        let s = q.next(now).unwrap();
        let (seq, payload) = (s.seq, s.payload.clone());
        if name == 0 {
            assert_eq!(put(&kv, &c, SECRET, seq, "2", &payload, T0).status, 201);
            q.settle(classify(Some(201)), now, 0.5);
            acked.push((seq, payload));
        } else {
            q.settle(classify(None), now, 0.5);
            late_request = Some((seq, payload));
        }
    }
    // The outage: the bound drops segment 1 although it was sent.
    for name in 2..=6u8 {
        q.push(ts(3, 100 + name), 2000);
    }
    assert_eq!((q.dropped(), q.gaps_waiting()), (1, 1));
    let mut first_after_gap = None;
    while q.waiting() > 0 {
        now += 3000;
        if let Some(gap) = q.next_gap(now) {
            let duration = wire::duration_text(gap.duration_ms);
            let status = gap_with(&kv, &c, gap.seq, &[(wire::DURATION, &duration)], T0 + now as i64).status;
            assert_eq!(status, 201);
            assert_eq!(q.settle_gap(classify(Some(status)), now, 0.5), GapSettled::Recorded(gap));
            gaps_recorded.push(gap.seq);
            // Now the server completes the lost request: too late, the seq is given up.
            let (seq, payload) = late_request.take().unwrap();
            assert_eq!(seq, gap.seq);
            assert_eq!(put(&kv, &c, SECRET, seq, "2", &payload, T0 + now as i64 + 10).status, 409);
            continue;
        }
        let Some(s) = q.next(now) else { continue };
        let (seq, payload, disc) = (s.seq, s.payload.clone(), s.discontinuity);
        first_after_gap.get_or_insert((seq, disc));
        let mut headers = vec![(wire::DURATION, "2")];
        if disc {
            headers.push((wire::DISCONTINUITY, "1"));
        }
        let status = put_with(&kv, &c, SECRET, seq, &headers, &payload, T0 + now as i64).status;
        assert!(status == 200 || status == 201, "seq {seq}: {status}");
        q.settle(classify(Some(status)), now, 0.5);
        acked.push((seq, payload));
    }
    assert_eq!(gaps_recorded, vec![1]);
    assert_eq!(first_after_gap, Some((2, true)), "a fresh seq, marked as a break");
    let text = text(&kv, &playlist(&kv, &c, &id, T0 + now as i64));
    assert_eq!(listed_seqs(&text), vec![0, 1, 2, 3, 4, 5, 6], "the playlist moved on:\n{text}");
    assert_eq!(gaps(&text), vec![1], "{text}");
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "one discontinuity:\n{text}");
    for (seq, payload) in &acked {
        let reply = get(&kv, &c, &format!("/chunks/{id}/{seq}.ts"), T0 + now as i64);
        assert_eq!(&body(&kv, &reply), payload, "acknowledged seq {seq} serves its bytes");
    }
}

/// v2: a commit (the seal of a segment from its parts) races a gap for the same seq like a
/// whole-segment upload does: exactly one holds the seq.
#[test]
fn v2_a_commit_and_a_gap_of_its_seq_race_and_exactly_one_wins() {
    let c = c();
    let id = stream_id(SECRET);
    let part = |kv: &dyn Kv, seq: u64, n: u32| {
        let headers = [
            (wire::DURATION, "0.500"),
            (wire::PART_TARGET, "0.500"),
            (wire::TARGET_DURATION, "1"),
            (wire::INDEPENDENT, if n == 0 { "1" } else { "0" }),
        ];
        let h = head(Method::Put, &wire::ingest_part_path(SECRET, seq, n), &headers);
        request(kv, &c, &h, &ts(2, (seq * 4 + u64::from(n)) as u8), T0 + 1000).status
    };
    let commit = |kv: &dyn Kv, seq: u64| {
        let h = head(Method::Post, &wire::ingest_commit_path(SECRET, seq), &[(wire::PARTS, "2")]);
        request(kv, &c, &h, b"", T0 + 1500).status
    };
    let setup = || {
        let kv = MemoryKv::new();
        for seq in 0..2 {
            assert_eq!((part(&kv, seq, 0), part(&kv, seq, 1)), (201, 201));
        }
        assert_eq!(commit(&kv, 0), 201);
        kv
    };
    for gap_first in [true, false] {
        let other = RefCell::new(0u16);
        let kv = Hooked::new(setup());
        let (committed, gapped) = if gap_first {
            // The commit runs after the gap found the commit point free, before the gap wrote it.
            kv.after("get", format!("seg/{id}/1/meta"), 1, |inner| *other.borrow_mut() = commit(inner, 1));
            let g = gap_with(&kv, &c, 1, &[(wire::DURATION, "1")], T0 + 1500).status;
            (*other.borrow(), g)
        } else {
            // The gap runs right after the commit wrote the commit point.
            kv.after("set", format!("seg/{id}/1/meta"), 0, |inner| {
                *other.borrow_mut() = gap_with(inner, &c, 1, &[(wire::DURATION, "1")], T0 + 1500).status
            });
            let s = commit(&kv, 1);
            (s, *other.borrow())
        };
        assert!(kv.fired());
        let stored = meta(&kv.inner, 1).unwrap();
        if gap_first {
            assert_eq!((committed, gapped), (409, 201));
            assert!(stored.gap);
            assert_eq!(get(&kv.inner, &c, &format!("/chunks/{id}/1.ts"), T0 + 1600).status, 404);
        } else {
            assert_eq!((committed, gapped), (201, 409));
            assert!(!stored.gap && stored.ll_parts.len() == 2);
            assert_eq!(get(&kv.inner, &c, &format!("/chunks/{id}/1.ts"), T0 + 1600).status, 200);
        }
    }
}

/// One low-latency broadcaster driven by the extension's real [`PartQueue`]: parts of 0.5 s,
/// two to a segment, target duration 1 s.
mod ll {
    use super::*;
    use chalkstream_pipeline::queue::{classify_answer, Acked, Backoff, Item, PartQueue};

    pub const PART: &str = "0.500";

    /// Part `n` of a stray request under the same session (not the queue's): other bytes.
    pub fn stray_part(kv: &dyn Kv, c: &Config, seq: u64, n: u32, now: i64) -> Reply {
        let headers = [
            (wire::DURATION, PART),
            (wire::PART_TARGET, PART),
            (wire::TARGET_DURATION, "1"),
            (wire::INDEPENDENT, if n == 0 { "1" } else { "0" }),
        ];
        let h = head(Method::Put, &wire::ingest_part_path(SECRET, seq, n), &headers);
        request(kv, c, &h, &ts(2, 0xee), now)
    }

    pub struct Broadcaster {
        pub q: PartQueue<Vec<u8>>,
        pub now: u64,
        /// Every request made, as `"{seq}/{part}"`, `"{seq}/commit"` or `"{seq}/gap"`, with its
        /// status.
        pub log: Vec<(String, u16)>,
        /// The segments sealed, by seq.
        pub sealed: Vec<u64>,
    }

    impl Broadcaster {
        pub fn new() -> Self {
            Broadcaster { q: PartQueue::new(Backoff::default(), 10_000), now: 0, log: Vec::new(), sealed: Vec::new() }
        }

        /// Queues one segment of two parts whose bytes are `fill` and `fill + 1`.
        pub fn record(&mut self, fill: u8) {
            self.q.push_part(ts(2, fill), 500, true);
            self.q.push_part(ts(2, fill + 1), 500, false);
            self.q.seal();
        }

        /// Makes every request the queue wants, against the real handlers, until it has none;
        /// `before` runs before each request with what it is (e.g. a stray writer's move).
        pub fn drain(&mut self, kv: &dyn Kv, c: &Config, mut before: impl FnMut(&str, &dyn Kv)) {
            for _ in 0..100 {
                self.now += 250;
                let now = T0 + self.now as i64;
                if self.q.waiting() == 0 {
                    return;
                }
                let (what, reply) = match self.q.next(self.now) {
                    None => continue,
                    Some(Item::Part { seq, part, discontinuity, duration_ms, payload }) => {
                        let what = format!("{seq}/{part}");
                        before(&what, kv);
                        let duration = wire::duration_text(duration_ms);
                        let mut headers = vec![
                            (wire::DURATION, duration.as_str()),
                            (wire::PART_TARGET, PART),
                            (wire::TARGET_DURATION, "1"),
                            (wire::INDEPENDENT, if part == 0 { "1" } else { "0" }),
                        ];
                        if discontinuity {
                            headers.push((wire::DISCONTINUITY, "1"));
                        }
                        let h = head(Method::Put, &wire::ingest_part_path(SECRET, seq, part), &headers);
                        (what, request(kv, c, &h, payload, now))
                    }
                    Some(Item::Commit { seq, parts }) => {
                        let what = format!("{seq}/commit");
                        before(&what, kv);
                        let n = parts.to_string();
                        let h = head(Method::Post, &wire::ingest_commit_path(SECRET, seq), &[(wire::PARTS, &n)]);
                        (what, request(kv, c, &h, b"", now))
                    }
                    Some(Item::Gap(gap)) => {
                        let what = format!("{}/gap", gap.seq);
                        before(&what, kv);
                        let duration = wire::duration_text(gap.duration_ms);
                        (what, gap_with(kv, c, gap.seq, &[(wire::DURATION, &duration)], now))
                    }
                };
                let status = reply.status;
                // As the extension reads an answer: its status and the server's words.
                let outcome = classify_answer(Some(status), &error(kv, &reply));
                self.log.push((what, status));
                if let Some(Acked::Commit { seq, .. }) = self.q.settle(outcome, self.now, 0.5) {
                    self.sealed.push(seq);
                }
            }
            panic!("the queue never emptied: {:?}", self.log);
        }
    }
}

/// The "trust under stress" defect: a `409` to a commit moved the segment to a fresh seq
/// without giving up the seq it left, whose stored parts and missing meta stalled the run (and
/// every viewer) there for good. Now the queue declares a gap for it first: the playlist lists
/// the gap and goes on with the segment, sent again under the next seq.
#[test]
fn v2_a_commit_refused_409_leaves_a_gap_and_the_playlist_walks_over_it() {
    let kv = MemoryKv::new();
    let c = c();
    let id = stream_id(SECRET);
    let mut b = ll::Broadcaster::new();
    b.record(0x10);
    b.drain(&kv, &c, |_, _| {});
    assert_eq!(b.sealed, vec![0]);
    // Segment B's parts are stored under seq 1; before its commit, a stray request under the
    // same session stores a part 2 there, so the commit (X-Parts: 2) is refused.
    b.record(0x20);
    let mut refused = None;
    b.drain(&kv, &c, |what, kv| {
        if what == "1/commit" && refused.is_none() {
            let stray = ll::stray_part(kv, &c, 1, 2, T0 + 5_000);
            assert_eq!(stray.status, 201);
            refused = Some(());
        }
    });
    let commit = b.log.iter().find(|(what, _)| what == "1/commit").unwrap();
    assert_eq!(commit.1, 409, "{:?}", b.log);
    let gap = b.log.iter().position(|e| e == &("1/gap".to_owned(), 201));
    assert_eq!(gap, Some(b.log.iter().position(|(what, _)| what == "2/0").unwrap() - 1), "the gap goes first: {:?}", b.log);
    b.record(0x30);
    b.drain(&kv, &c, |_, _| {});

    let text = text(&kv, &playlist(&kv, &c, &id, T0 + b.now as i64));
    assert_eq!(listed_seqs(&text), vec![0, 1, 2, 3], "the run walks over seq 1:\n{text}\n{:?}", b.log);
    assert_eq!(gaps(&text), vec![1], "{text}");
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "one, after the gap:\n{text}");
    assert!(media_parts_of(&text, &id, 1).is_empty(), "the gap lists none of its parts as media (only GAP=YES ones):\n{text}");
    assert_eq!(b.sealed, vec![0, 2, 3], "segment B sealed under a fresh seq");
    // Segment B plays from seq 2, its own bytes in order.
    let b_bytes = [ts(2, 0x20), ts(2, 0x21)].concat();
    assert_eq!(body(&kv, &get(&kv, &c, &format!("/chunks/{id}/2.ts"), T0 + b.now as i64)), b_bytes);
    assert!(meta(&kv, 1).unwrap().gap);
}

/// The same for a part refused after part 0 was stored: a stray request stored other bytes as
/// part 1 of seq 1 first, so seq 1 holds parts and no segment; the queue gives it up.
#[test]
fn v2_a_part_refused_409_after_part_0_was_stored_leaves_a_gap() {
    let kv = MemoryKv::new();
    let c = c();
    let id = stream_id(SECRET);
    let mut b = ll::Broadcaster::new();
    b.record(0x10);
    b.record(0x20);
    b.drain(&kv, &c, |what, kv| {
        if what == "1/1" {
            assert_eq!(ll::stray_part(kv, &c, 1, 1, T0 + 1_000).status, 201);
        }
    });
    let log: Vec<&str> = b.log.iter().map(|(what, _)| what.as_str()).collect();
    assert_eq!(log, ["0/0", "0/1", "0/commit", "1/0", "1/1", "1/gap", "2/0", "2/1", "2/commit"], "{:?}", b.log);
    assert_eq!(b.log[4].1, 409);
    b.record(0x30);
    b.drain(&kv, &c, |_, _| {});
    let text = text(&kv, &playlist(&kv, &c, &id, T0 + b.now as i64));
    assert_eq!(listed_seqs(&text), vec![0, 1, 2, 3], "{text}");
    assert_eq!(gaps(&text), vec![1], "{text}");
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
    assert_eq!(b.sealed, vec![0, 2, 3]);
}

/// A `409` that says the seq holds a segment already (a stray request stored seq 1 whole before
/// the queue's commit) declares no gap: the run walks over that segment, and the
/// queue's goes on under the next seq.
#[test]
fn v2_a_commit_refused_409_because_the_seq_is_sealed_declares_no_gap() {
    let kv = MemoryKv::new();
    let c = c();
    let id = stream_id(SECRET);
    let mut b = ll::Broadcaster::new();
    b.record(0x10);
    b.record(0x20);
    b.drain(&kv, &c, |what, kv| {
        if what == "1/commit" {
            // The stray stores seq 1 as a whole segment (v1 upload, accepted by a v2 stream).
            assert_eq!(put(kv, &c, SECRET, 1, "1", &ts(2, 0xee), T0 + 1_000).status, 201);
        }
    });
    let log: Vec<(&str, u16)> = b.log.iter().map(|(what, s)| (what.as_str(), *s)).collect();
    assert_eq!(&log[5..], [("1/commit", 409), ("2/0", 201), ("2/1", 201), ("2/commit", 201)], "no gap: {log:?}");
    let text = text(&kv, &playlist(&kv, &c, &id, T0 + b.now as i64));
    assert_eq!(listed_seqs(&text), vec![0, 1, 2], "{text}");
    assert!(gaps(&text).is_empty(), "{text}");
    assert_eq!(b.sealed, vec![0, 2]);
}

/// Every `409` the server answers an upload, a part or a commit with is read as the extension
/// must: the seq is settled (a segment or a gap holds it, or it is behind the window), the seq
/// may hold parts and no segment (given up with a gap), or no seq will take the upload (halt).
/// This pins the server's words the extension reads (`queue::conflict`).
#[test]
fn every_409_the_server_answers_is_read_as_what_it_leaves_at_the_seq() {
    use chalkstream_pipeline::queue::{classify_answer, Outcome};
    use chalkstream_manifest::rules::RuleError;
    use chalkstream_spin_app::store::PutError;
    let cases = [
        (PutError::Conflict { seq: 7 }, Outcome::Held),
        (PutError::SealedWithout { seq: 7, part: 3 }, Outcome::Held),
        (PutError::SealedFromParts { seq: 7 }, Outcome::Held),
        (PutError::SealedOtherwise { seq: 7, parts: 0 }, Outcome::Held),
        (PutError::SealedOtherwise { seq: 7, parts: 4 }, Outcome::Held),
        (PutError::GivenUp { seq: 7 }, Outcome::Held),
        (PutError::SegmentHolds { seq: 7 }, Outcome::Held),
        (PutError::Rule(RuleError::BeforeWindow { seq: 7, first_seq: 12 }), Outcome::Held),
        (PutError::PartConflict { seq: 7, part: 3 }, Outcome::Conflict),
        (PutError::MissingPart { seq: 7, part: 3 }, Outcome::Conflict),
        (PutError::UncountedPart { seq: 7, part: 3 }, Outcome::Conflict),
        (PutError::WholeSegmentStream, Outcome::Fatal(409)),
        (PutError::TargetsDiffer { part_target_ms: 500, target_s: 2 }, Outcome::Fatal(409)),
    ];
    for (e, expected) in cases {
        assert_eq!(classify_answer(Some(409), &e.to_string()), expected, "{e:?}: {e}");
    }
}
