//! The component's handlers end to end on the in-memory store: the wire contract v1 as the
//! extension and players see it (statuses, JSON shapes, headers), minus real HTTP.

mod common;

use chalkstream_manifest::id::StreamId;
use chalkstream_manifest::playlist::{render, segment_lines};
use chalkstream_manifest::rules::{Config, ConfigError, Retention};
use chalkstream_manifest::segment::SegmentMeta;
use chalkstream_spin_app::kv::{Kv, MemoryKv};
use chalkstream_spin_app::store::Streams;
use chalkstream_spin_app::route::Method;
use common::*;

fn live() -> Config {
    config(Retention::Millis(600_000), 30_000)
}

#[test]
fn stored_segment_is_acknowledged_with_urls_and_listed() {
    let kv = MemoryKv::new();
    let c = live();
    let id = stream_id(SECRET);
    let reply = put(&kv, &c, SECRET, 0, "2.000", &ts(10, 1), T0);
    assert_eq!(reply.status, 201);
    assert_eq!(reply.get_header("access-control-allow-origin"), Some("*"));
    let ack = json(&kv, &reply);
    assert_eq!(
        ack,
        serde_json::json!({
            "stream": id, "seq": 0,
            "playlist": format!("{BASE}/playlist/{id}.m3u8"),
            "player": format!("{BASE}/play/{id}"),
        })
    );
    let reply = playlist(&kv, &c, &id, T0 + 100);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.get_header("content-type"), Some("application/vnd.apple.mpegurl"));
    assert_eq!(reply.get_header("cache-control"), Some("public, max-age=1"));
    assert_eq!(reply.get_header("access-control-allow-origin"), Some("*"));
    let text = text(&kv, &reply);
    assert!(text.contains("#EXT-X-TARGETDURATION:2\n"), "{text}");
    assert!(!text.contains("#EXT-X-ENDLIST"));
    assert_eq!(listed_seqs(&text), vec![0]);
}

#[test]
fn retried_upload_is_idempotent_and_different_bytes_conflict() {
    let kv = MemoryKv::new();
    let c = live();
    assert_eq!(put(&kv, &c, SECRET, 0, "2", &ts(10, 1), T0).status, 201);
    let again = put(&kv, &c, SECRET, 0, "2", &ts(10, 1), T0 + 50);
    assert_eq!(again.status, 200);
    assert_eq!(json(&kv, &again)["seq"], 0);
    let other = put(&kv, &c, SECRET, 0, "2", &ts(10, 2), T0 + 60);
    assert_eq!(other.status, 409);
    assert!(json(&kv, &other)["error"].as_str().unwrap().contains("different bytes"));
    let chunk = get(&kv, &c, &format!("/chunks/{}/0.ts", stream_id(SECRET)), T0 + 70);
    assert_eq!(body(&kv, &chunk), ts(10, 1), "the first bytes stay");
}

#[test]
fn chunks_are_served_immutable_and_reassembled_from_one_mebibyte_parts() {
    let kv = MemoryKv::new();
    let c = live();
    let id = stream_id(SECRET);
    let big = ts(12_000, 7); // 2.26 MB: three parts
    assert_eq!(put(&kv, &c, SECRET, 0, "2", &big, T0).status, 201);
    let parts = kv.keys().into_iter().filter(|k| k.starts_with(&format!("seg/{id}/0/")) && !k.ends_with("/meta")).count();
    assert_eq!(parts, 3);
    let reply = get(&kv, &c, &format!("/chunks/{id}/0.ts"), T0 + 1);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.get_header("content-type"), Some("video/mp2t"));
    assert_eq!(reply.get_header("cache-control"), Some("public, max-age=31536000, immutable"));
    assert_eq!(reply.body_len(), big.len() as u64);
    assert_eq!(body(&kv, &reply), big);
    assert_eq!(get(&kv, &c, &format!("/chunks/{id}/1.ts"), T0).status, 404);
    assert_eq!(get(&kv, &c, &format!("/chunks/{id}/01.ts"), T0).status, 404);
}

#[test]
fn bad_uploads_get_400_with_a_message_that_says_what_was_wrong() {
    let kv = MemoryKv::new();
    let c = live();
    // (path, headers, body, what the error must mention)
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, Vec<u8>, &'a str);
    let cases: Vec<Case> = vec![
        ("/ingest/short/0.ts".into(), vec![("X-Duration", "2")], ts(1, 0), "session secret"),
        (format!("/ingest/{SECRET}/01.ts"), vec![("X-Duration", "2")], ts(1, 0), "leading zeros"),
        (format!("/ingest/{SECRET}/-1.ts"), vec![("X-Duration", "2")], ts(1, 0), "digits"),
        (format!("/ingest/{SECRET}/0.ts"), vec![], ts(1, 0), "X-Duration"),
        (format!("/ingest/{SECRET}/0.ts"), vec![("X-Duration", "NaN")], ts(1, 0), "plain decimal"),
        (format!("/ingest/{SECRET}/0.ts"), vec![("X-Duration", "31")], ts(1, 0), "at most 30"),
        (format!("/ingest/{SECRET}/0.ts"), vec![("X-Duration", "2"), ("X-Discontinuity", "yes")], ts(1, 0), "X-Discontinuity"),
        (format!("/ingest/{SECRET}/0.ts"), vec![("X-Duration", "2"), ("X-Program-Date-Time", "now")], ts(1, 0), "RFC 3339"),
        (format!("/ingest/{SECRET}/0.ts"), vec![("X-Duration", "2")], vec![], "empty"),
        (format!("/ingest/{SECRET}/0.ts"), vec![("X-Duration", "2")], b"<html></html>".to_vec(), "MPEG-TS"),
        (format!("/ingest/{SECRET}/0.ts"), vec![("X-Duration", "2")], vec![0u8; 188], "0x47"),
    ];
    for (path, headers, body_bytes, expect) in cases {
        let reply = request(&kv, &c, &head(Method::Put, &path, &headers), &body_bytes, T0);
        assert_eq!(reply.status, 400, "{path} {headers:?}");
        let error = json(&kv, &reply)["error"].as_str().unwrap().to_owned();
        assert!(error.contains(expect), "{error:?} should mention {expect:?}");
        assert!(!error.contains(SECRET), "the secret never appears in errors");
    }
    assert!(kv.keys().is_empty(), "nothing stored for bad uploads");
}

#[test]
fn segments_longer_than_the_fixed_target_are_refused() {
    let kv = MemoryKv::new();
    let c = live();
    assert_eq!(put(&kv, &c, SECRET, 0, "2.000", &ts(2, 0), T0).status, 201);
    assert_eq!(put(&kv, &c, SECRET, 1, "2.499", &ts(2, 0), T0 + 1).status, 201);
    let reply = put(&kv, &c, SECRET, 2, "2.5", &ts(2, 0), T0 + 2);
    assert_eq!(reply.status, 400);
    assert!(json(&kv, &reply)["error"].as_str().unwrap().contains("target duration is 2 s"));
}

#[test]
fn ingest_token_is_required_when_set_and_never_echoed() {
    let kv = MemoryKv::new();
    let mut c = live();
    c.ingest_token = Some("tok-abc".into());
    let path = format!("/ingest/{SECRET}/0.ts");
    for auth in [None, Some("Bearer wrong"), Some("Bearer tok-ab"), Some("Basic tok-abc"), Some("tok-abc")] {
        let mut headers = vec![("X-Duration", "2")];
        headers.extend(auth.map(|a| ("Authorization", a)));
        let reply = request(&kv, &c, &head(Method::Put, &path, &headers), &ts(1, 0), T0);
        assert_eq!(reply.status, 401, "{auth:?}");
        let error = json(&kv, &reply)["error"].as_str().unwrap().to_owned();
        assert!(error.contains("ingest token") && !error.contains("tok-ab"), "{error}");
    }
    let ok = [("X-Duration", "2"), ("Authorization", "Bearer tok-abc")];
    assert_eq!(request(&kv, &c, &head(Method::Put, &path, &ok), &ts(1, 0), T0).status, 201);
    let end = head(Method::Post, &format!("/ingest/{SECRET}/end"), &[]);
    assert_eq!(request(&kv, &c, &end, &[], T0).status, 401);
}

#[test]
fn oversized_bodies_get_413_by_declared_or_actual_length() {
    let kv = MemoryKv::new();
    let mut c = live();
    c.max_segment_bytes = 188 * 10;
    let path = format!("/ingest/{SECRET}/0.ts");
    let declared = head(Method::Put, &path, &[("X-Duration", "2"), ("Content-Length", "1000000")]);
    let reply = request(&kv, &c, &declared, &[], T0);
    assert_eq!(reply.status, 413);
    assert!(json(&kv, &reply)["error"].as_str().unwrap().contains("1880 bytes"));
    let actual = head(Method::Put, &path, &[("X-Duration", "2")]);
    assert_eq!(request(&kv, &c, &actual, &ts(11, 0), T0).status, 413);
    assert_eq!(request(&kv, &c, &actual, &ts(10, 0), T0).status, 201);
}

#[test]
fn unknown_routes_are_404_and_wrong_methods_405_with_allow() {
    let kv = MemoryKv::new();
    let c = live();
    let reply = get(&kv, &c, "/nothing/here", T0);
    assert_eq!(reply.status, 404);
    assert!(json(&kv, &reply)["error"].is_string());
    let reply = request(&kv, &c, &head(Method::Get, &format!("/ingest/{SECRET}/0.ts"), &[]), &[], T0);
    assert_eq!(reply.status, 405);
    assert_eq!(reply.get_header("allow"), Some("PUT, OPTIONS"));
    let reply = request(&kv, &c, &head(Method::Other("DELETE".into()), &format!("/playlist/{}.m3u8", "a".repeat(40)), &[]), &[], T0);
    assert_eq!(reply.status, 405);
    assert_eq!(reply.get_header("allow"), Some("GET, HEAD, OPTIONS"));
    for path in ["/playlist/ABC.m3u8", "/api/streams/xyz", "/play/123", &format!("/chunks/{}/0.ts", "b".repeat(40))] {
        assert_eq!(get(&kv, &c, path, T0).status, 404, "{path}");
    }
}

#[test]
fn preflight_and_head_answer_without_bodies() {
    let kv = MemoryKv::new();
    let c = live();
    let id = stream_id(SECRET);
    put(&kv, &c, SECRET, 0, "2", &ts(3, 0), T0);
    let pre = request(&kv, &c, &head(Method::Options, &format!("/ingest/{SECRET}/0.ts"), &[]), &[], T0);
    assert_eq!(pre.status, 204);
    assert_eq!(pre.get_header("access-control-allow-origin"), Some("*"));
    assert!(pre.get_header("access-control-allow-headers").unwrap().contains("X-Duration"));
    let pre = request(&kv, &c, &head(Method::Options, &format!("/playlist/{id}.m3u8"), &[]), &[], T0);
    assert_eq!(pre.get_header("access-control-allow-methods"), Some("GET, HEAD, OPTIONS"));
    let h = request(&kv, &c, &head(Method::Head, &format!("/chunks/{id}/0.ts"), &[]), &[], T0);
    assert_eq!(h.status, 200);
    assert_eq!(h.get_header("content-type"), Some("video/mp2t"));
    assert_eq!(h.body_len(), 0);
}

#[test]
fn stop_ends_the_playlist_and_a_later_upload_resumes_with_a_discontinuity() {
    let kv = MemoryKv::new();
    let c = live();
    let id = stream_id(SECRET);
    let end = head(Method::Post, &format!("/ingest/{SECRET}/end"), &[]);
    let reply = request(&kv, &c, &end, &[], T0);
    assert_eq!(reply.status, 404, "nothing to end yet");
    for seq in 0..3 {
        put(&kv, &c, SECRET, seq, "2", &ts(2, 0), T0 + seq as i64 * 2000);
    }
    let reply = request(&kv, &c, &end, &[], T0 + 5000);
    assert_eq!(reply.status, 200);
    assert_eq!(json(&kv, &reply), serde_json::json!({"stream": id, "state": "ended"}));
    assert_eq!(request(&kv, &c, &end, &[], T0 + 5100).status, 200, "ending twice is fine");
    let ended = playlist(&kv, &c, &id, T0 + 5200);
    assert_eq!(ended.get_header("cache-control"), Some("public, max-age=30"));
    let ended = text(&kv, &ended);
    assert!(ended.ends_with("#EXT-X-ENDLIST\n"), "{ended}");
    let status = json(&kv, &get(&kv, &c, &format!("/api/streams/{id}"), T0 + 5200));
    assert_eq!(status["state"], "ended");

    assert_eq!(put(&kv, &c, SECRET, 3, "2", &ts(2, 0), T0 + 9000).status, 201);
    let resumed = text(&kv, &playlist(&kv, &c, &id, T0 + 9100));
    assert!(!resumed.contains("#EXT-X-ENDLIST"));
    assert!(resumed.contains("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2026-11-25T13:00:07.000Z\n#EXTINF:2.000,\n/chunks/"), "{resumed}");
    assert!(resumed.starts_with(ended.trim_end_matches("#EXT-X-ENDLIST\n")), "only appended");
}

#[test]
fn idle_stream_ends_by_itself_and_resumes_with_a_discontinuity() {
    let kv = MemoryKv::new();
    let c = config(Retention::Forever, 30_000);
    let id = stream_id(SECRET);
    put(&kv, &c, SECRET, 0, "2", &ts(2, 0), T0);
    assert!(!text(&kv, &playlist(&kv, &c, &id, T0 + 30_000)).contains("#EXT-X-ENDLIST"));
    let idle = text(&kv, &playlist(&kv, &c, &id, T0 + 30_001));
    assert!(idle.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && idle.ends_with("#EXT-X-ENDLIST\n"), "{idle}");
    put(&kv, &c, SECRET, 1, "2", &ts(2, 0), T0 + 40_000);
    let resumed = text(&kv, &playlist(&kv, &c, &id, T0 + 40_001));
    assert_eq!(resumed.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{resumed}");
}

#[test]
fn status_api_reports_state_counts_times_and_urls() {
    let kv = MemoryKv::new();
    let c = live();
    let id = stream_id(SECRET);
    put_with(&kv, &c, SECRET, 0, &[("X-Duration", "2.000"), ("X-Program-Date-Time", "2026-11-25T13:00:00Z")], &ts(2, 0), T0 + 2500);
    put_with(&kv, &c, SECRET, 1, &[("X-Duration", "1.5"), ("X-Program-Date-Time", "2026-11-25T13:00:02Z")], &ts(2, 0), T0 + 4000);
    let reply = get(&kv, &c, &format!("/api/streams/{id}"), T0 + 4100);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.get_header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        json(&kv, &reply),
        serde_json::json!({
            "stream": id, "state": "live", "segments": 2, "first_seq": 0, "last_seq": 1,
            "duration_ms": 3500, "duration": "3.500",
            "first_segment_at": "2026-11-25T13:00:00.000Z",
            "last_segment_at": "2026-11-25T13:00:02.000Z",
            "target_duration": 2,
            "playlist": format!("{BASE}/playlist/{id}.m3u8"),
            "player": format!("{BASE}/play/{id}"),
        })
    );
    assert_eq!(get(&kv, &c, &format!("/api/streams/{}", "0".repeat(40)), T0).status, 404);
}

#[test]
fn retention_drops_old_segments_from_playlist_and_store() {
    let kv = MemoryKv::new();
    let c = config(Retention::Millis(3000), 30_000);
    let id = stream_id(SECRET);
    for seq in 0..20u64 {
        assert_eq!(put(&kv, &c, SECRET, seq, "1", &ts(2, seq as u8), T0 + seq as i64 * 1000).status, 201);
        let metas = kv.keys().iter().filter(|k| k.ends_with("/meta")).count();
        assert!(metas <= 5, "storage stays bounded by the window: {metas} metas at seq {seq}");
    }
    let text = text(&kv, &playlist(&kv, &c, &id, T0 + 19_000));
    assert_eq!(listed_seqs(&text), vec![16, 17, 18, 19]);
    assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:16\n") && !text.contains("PLAYLIST-TYPE"));
    assert_eq!(get(&kv, &c, &format!("/chunks/{id}/15.ts"), T0 + 19_000).status, 404);
    assert_eq!(get(&kv, &c, &format!("/chunks/{id}/16.ts"), T0 + 19_001).status, 404, "expired chunks are gone");
    // Uploads stop; viewers' requests still clean up, and the stream 404s once all expired.
    assert_eq!(playlist(&kv, &c, &id, T0 + 22_001).status, 404);
    assert!(kv.keys().iter().all(|k| !k.starts_with("seg/")), "{:?}", kv.keys());
    let late = put(&kv, &c, SECRET, 3, "1", &ts(2, 3), T0 + 23_000);
    assert_eq!(late.status, 409, "a seq behind the window is refused");
    assert_eq!(put(&kv, &c, SECRET, 20, "1", &ts(2, 0), T0 + 23_000).status, 201);
    assert_eq!(listed_seqs(&text_of(&kv, &c, &id, T0 + 23_001)), vec![20]);
}

fn text_of(kv: &dyn Kv, c: &Config, id: &str, now: i64) -> String {
    text(kv, &playlist(kv, c, id, now))
}

#[test]
fn a_segment_beyond_a_hole_waits_until_the_hole_is_filled() {
    let kv = MemoryKv::new();
    let c = live();
    let id = stream_id(SECRET);
    put(&kv, &c, SECRET, 0, "2", &ts(2, 0), T0);
    put(&kv, &c, SECRET, 2, "2", &ts(2, 2), T0 + 1);
    assert_eq!(listed_seqs(&text_of(&kv, &c, &id, T0 + 2)), vec![0]);
    put(&kv, &c, SECRET, 1, "2", &ts(2, 1), T0 + 3);
    assert_eq!(listed_seqs(&text_of(&kv, &c, &id, T0 + 4)), vec![0, 1, 2]);
}

#[test]
fn misconfiguration_is_a_500_naming_the_variable() {
    let kv = MemoryKv::new();
    let bad = || Config::parse("ten", "30", "", "1000", "");
    let reply = request_with(&kv, bad, &head(Method::Get, &format!("/playlist/{}.m3u8", "a".repeat(40)), &[]), &[], T0);
    assert_eq!(reply.status, 500);
    assert_eq!(json(&kv, &reply)["error"], "server misconfigured: stream_retention");
    let never = || -> Result<Config, ConfigError> { panic!("pages need no configuration") };
    assert_eq!(request_with(&kv, never, &head(Method::Get, "/", &[]), &[], T0).status, 200);
}

#[test]
fn pages_are_html_and_the_play_page_validates_the_id() {
    let kv = MemoryKv::new();
    let c = live();
    let id = stream_id(SECRET);
    let page = get(&kv, &c, &format!("/play/{id}?embed=1"), T0);
    assert_eq!(page.status, 200);
    assert_eq!(page.get_header("content-type"), Some("text/html; charset=utf-8"));
    assert!(text(&kv, &page).contains(&id));
    assert_eq!(get(&kv, &c, "/play/not-an-id", T0).status, 404);
    assert_eq!(get(&kv, &c, "/", T0).status, 200);
    assert_eq!(get(&kv, &c, "/assets/no-such-file.js", T0).status, 404);
}

/// Counts reads and remembers their keys, to pin the cost of a playlist request.
struct Counting {
    inner: MemoryKv,
    gets: std::sync::atomic::AtomicUsize,
    keys: std::sync::Mutex<Vec<String>>,
}

impl Kv for Counting {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, chalkstream_spin_app::kv::KvError> {
        self.gets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.keys.lock().unwrap().push(key.to_owned());
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), chalkstream_spin_app::kv::KvError> {
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), chalkstream_spin_app::kv::KvError> {
        self.inner.delete(key)
    }
}

#[test]
fn long_event_playlists_read_pages_instead_of_every_segment() {
    let kv = Counting { inner: MemoryKv::new(), gets: Default::default(), keys: Default::default() };
    let c = config(Retention::Forever, 30_000);
    let id = stream_id(SECRET);
    // Out of order inside the last page, so a page is completed by a seq that is not its last.
    let mut order: Vec<u64> = (0..600).collect();
    order.swap(574, 575);
    for seq in order {
        assert_eq!(put(&kv, &c, SECRET, seq, "2", &ts(1, 0), T0 + seq as i64).status, 201);
    }
    let pages = kv.inner.keys().iter().filter(|k| k.starts_with(&format!("page/{id}/"))).count();
    assert_eq!(pages, 9, "600 segments fill 9 pages of 64");
    kv.gets.store(0, std::sync::atomic::Ordering::Relaxed);
    kv.keys.lock().unwrap().clear();
    let text = text(&kv, &playlist(&kv, &c, &id, T0 + 700));
    let reads = kv.gets.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(listed_seqs(&text), (0..600).collect::<Vec<_>>());
    // Stored lines: one block of 512, one of 64 and three of 8 (and a miss at each size where
    // the stored blocks end), 5 stream records, the missing meta page and meta of seq 600, and
    // the meta of seq 599 (its time decides live or ended).
    let keys = kv.keys.lock().unwrap().clone();
    assert!(reads <= 17, "{reads} reads for 600 segments: {keys:?}");
    let hits: Vec<&String> = keys.iter().filter(|k| k.starts_with("lines/") && kv.inner.get(k).unwrap().is_some()).collect();
    let expected = [format!("lines/{id}/512/0"), format!("lines/{id}/64/8")]
        .into_iter()
        .chain((72..75).map(|n| format!("lines/{id}/8/{n}")))
        .collect::<Vec<_>>();
    assert_eq!(hits, expected.iter().collect::<Vec<_>>());
    assert_eq!(keys.iter().filter(|k| k.starts_with("page/")).cloned().collect::<Vec<_>>(), vec![format!("page/{id}/9")]);
    // Ended: the same reads, and the same list.
    let ended = text_of(&kv, &c, &id, T0 + 40_000);
    assert!(ended.ends_with("#EXT-X-ENDLIST\n") && ended.starts_with(&text));
}

/// The playlist a GET answers, and the one rendering every meta of the stream's view gives
/// (the renderer as it was before stored lines), at the same moment.
fn both_ways(kv: &dyn Kv, c: &Config, id: &str, now: i64) -> (String, String) {
    let sid = StreamId::parse(id).unwrap();
    let slow = render(id, &Streams::new(kv, c).view(&sid, now).unwrap().expect("a view"));
    let reply = playlist(kv, c, id, now);
    assert_eq!(reply.status, 200);
    (text(kv, &reply), slow)
}

#[test]
fn event_playlists_from_stored_lines_are_byte_identical_to_rendering_every_meta() {
    let kv = MemoryKv::new();
    let c = config(Retention::Forever, 30_000);
    let id = stream_id(SECRET);
    let mut now = T0;
    let mut compared = 0;
    let upload = |kv: &MemoryKv, seq: u64, now: i64| {
        // Uneven durations, and a broadcaster-flagged break at the start of page 2 and inside page 3.
        let duration = format!("1.{:03}", 500 + seq % 7 * 71);
        let mut headers = vec![("X-Duration", duration.as_str())];
        if seq == 128 || seq == 200 {
            headers.push(("X-Discontinuity", "1"));
        }
        assert_eq!(put_with(kv, &c, SECRET, seq, &headers, &ts(1, seq as u8), now).status, 201);
    };
    for seq in 0..600u64 {
        now += 1500;
        upload(&kv, seq, now);
        if seq == 63 || seq == 191 {
            // Stop at the end of a page, then resume: the resume's discontinuity opens the next page.
            let end = head(Method::Post, &format!("/ingest/{SECRET}/end"), &[]);
            assert_eq!(request(&kv, &c, &end, &[], now + 1).status, 200);
            let (fast, slow) = both_ways(&kv, &c, &id, now + 2);
            assert!(fast.ends_with("#EXT-X-ENDLIST\n"), "ended after Stop");
            assert_eq!(fast, slow);
            now += 10_000;
        }
        if seq == 100 {
            now += 40_000; // idle: the next upload resumes with a discontinuity
        }
        if seq % 37 == 0 || seq % 64 == 63 || seq % 64 == 0 || seq % 8 == 3 && seq > 500 {
            let (fast, slow) = both_ways(&kv, &c, &id, now + 1);
            assert_eq!(fast, slow, "live at seq {seq}");
            compared += 1;
        }
    }
    let blocks = |len: u64| kv.keys().iter().filter(|k| k.starts_with(&format!("lines/{id}/{len}/"))).count();
    assert_eq!((blocks(8), blocks(64), blocks(512)), (75, 9, 1), "600 segments fill 75 blocks of 8, 9 of 64, 1 of 512");
    let (fast, slow) = both_ways(&kv, &c, &id, now + 30_001);
    assert!(fast.ends_with("#EXT-X-ENDLIST\n"), "ended by the idle timeout");
    assert_eq!(fast, slow);
    // Breaks at 64 and 192 (Stop), 101 (idle), 128 and 200 (flagged).
    let sid = StreamId::parse(&id).unwrap();
    assert!(Streams::new(&kv, &c).view(&sid, now).unwrap().unwrap().segments.len() == 600);
    assert_eq!(fast.matches("#EXT-X-DISCONTINUITY\n").count(), 5, "{fast}");
    // A stream once served with retention starts at its head: the discontinuity sequence counts
    // the breaks below it, the first page is partial and the pages above it are lines.
    set(&kv, &format!("head/{id}"), br#"{"first_seq":70}"#);
    let (fast, slow) = both_ways(&kv, &c, &id, now + 1);
    assert!(fast.contains("#EXT-X-MEDIA-SEQUENCE:70\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{fast}");
    assert_eq!(fast, slow);
    assert!(compared > 15, "{compared}");
}

fn set(kv: &dyn Kv, key: &str, value: &[u8]) {
    kv.set(key, value).unwrap();
}

#[test]
fn stored_lines_that_are_missing_or_damaged_fall_back_to_the_metas() {
    let kv = MemoryKv::new();
    let c = config(Retention::Forever, 30_000);
    let id = stream_id(SECRET);
    for seq in 0..200u64 {
        let flag = if seq == 70 { "1" } else { "0" };
        let headers = [("X-Duration", "2"), ("X-Discontinuity", flag)];
        assert_eq!(put_with(&kv, &c, SECRET, seq, &headers, &ts(1, 0), T0 + seq as i64 * 2000).status, 201);
    }
    let now = T0 + 400_000;
    let (good, slow) = both_ways(&kv, &c, &id, now);
    assert_eq!(good, slow);
    let page1 = kv.get(&format!("lines/{id}/64/1")).unwrap().unwrap();
    let page0 = kv.get(&format!("lines/{id}/64/0")).unwrap().unwrap();
    let damaged: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", page1[..page1.len() - 40].to_vec()),
        ("not UTF-8", vec![0xff, 0xfe, b'\n']),
        ("another page's lines", page0.clone()),
        ("empty", Vec::new()),
        ("a meta page", kv.get(&format!("page/{id}/1")).unwrap().unwrap()),
        ("a line too many", [page1.as_slice(), b"#EXT-X-ENDLIST\n"].concat()),
    ];
    // Seqs 64..127 as one damaged block of 64, then also damaged blocks of 8 beneath it.
    for (what, bytes) in damaged {
        set(&kv, &format!("lines/{id}/64/1"), &bytes);
        set(&kv, &format!("lines/{id}/8/9"), &bytes);
        let (fast, slow) = both_ways(&kv, &c, &id, now);
        assert_eq!(fast, good, "{what}");
        assert_eq!(slow, good, "{what}");
    }
    // Missing blocks, and then a missing meta page too: the metas one by one.
    for n in 8..16 {
        kv.delete(&format!("lines/{id}/8/{n}")).unwrap();
    }
    kv.delete(&format!("lines/{id}/64/1")).unwrap();
    assert_eq!(both_ways(&kv, &c, &id, now).0, good);
    kv.delete(&format!("page/{id}/1")).unwrap();
    assert_eq!(both_ways(&kv, &c, &id, now).0, good);
    // Every stored block is the renderer's lines for its metas.
    let metas: Vec<SegmentMeta> = (0..200)
        .map(|seq| serde_json::from_slice(&kv.get(&format!("seg/{id}/{seq}/meta")).unwrap().unwrap()).unwrap())
        .collect();
    let mut checked = 0;
    for key in kv.keys().iter().filter(|k| k.starts_with("lines/")) {
        let mut parts = key.rsplit('/');
        let (n, len): (usize, usize) = (parts.next().unwrap().parse().unwrap(), parts.next().unwrap().parse().unwrap());
        let stored = String::from_utf8(kv.get(key).unwrap().unwrap()).unwrap();
        assert_eq!(stored, segment_lines(&id, &metas[n * len..n * len + len]), "{key}");
        checked += 1;
    }
    assert_eq!(checked, 25 - 8 + 3 - 1, "blocks of 8 and 64, less the deleted ones");
}

/// What a cache in front may keep, answer by answer (docs/API.md, "Caching"): media forever,
/// a live playlist half a target duration (and as long again stale while it refetches), an
/// ended one half a minute, a playback miss and the status a second, pages revalidated, uploads
/// and errors that are the client's own never.
#[test]
fn every_answer_says_how_long_a_cache_may_keep_it() {
    let kv = MemoryKv::new();
    let c = live();
    let id = stream_id(SECRET);
    let cc = |reply: &chalkstream_spin_app::reply::Reply| reply.get_header("cache-control").map(str::to_owned);
    let missing = |path: &str, now| {
        let reply = get(&kv, &c, path, now);
        assert_eq!(reply.status, 404, "{path}");
        cc(&reply)
    };
    // Before the stream starts: a waiting audience polls these.
    let one_second = Some("public, max-age=1".to_owned());
    assert_eq!(missing(&format!("/api/streams/{id}"), T0), one_second);
    assert_eq!(missing(&format!("/playlist/{id}.m3u8"), T0), one_second);
    assert_eq!(missing(&format!("/chunks/{id}/0.ts"), T0), one_second);
    assert_eq!(missing("/playlist/not-a-stream.m3u8", T0), one_second);
    // Uploads and their refusals are never cached.
    let stored = put(&kv, &c, SECRET, 0, "6", &ts(10, 1), T0);
    assert_eq!((stored.status, cc(&stored).as_deref()), (201, Some("no-store")));
    let refused = put(&kv, &c, SECRET, 1, "7", &ts(10, 1), T0 + 1);
    assert_eq!((refused.status, cc(&refused).as_deref()), (400, Some("no-store")));
    // A 6 s target: half of it while live.
    let reply = playlist(&kv, &c, &id, T0 + 10);
    assert_eq!(cc(&reply).as_deref(), Some("public, max-age=3"));
    let reply = get(&kv, &c, &format!("/chunks/{id}/0.ts"), T0 + 10);
    assert_eq!(cc(&reply).as_deref(), Some("public, max-age=31536000, immutable"));
    let reply = get(&kv, &c, &format!("/api/streams/{id}"), T0 + 10);
    assert_eq!((reply.status, cc(&reply)), (200, one_second.clone()));
    // A directive on a v1 stream answers at once, as the plain playlist.
    let reply = get(&kv, &c, &format!("/playlist/{id}.m3u8?_HLS_msn=0"), T0 + 10);
    assert_eq!(cc(&reply).as_deref(), Some("public, max-age=3"));
    let reply = get(&kv, &c, &format!("/playlist/{id}.m3u8?_HLS_msn=x"), T0 + 10);
    assert_eq!((reply.status, cc(&reply).as_deref()), (400, Some("no-store")));
    // Ended: half a minute.
    request(&kv, &c, &head(Method::Post, &format!("/ingest/{SECRET}/end"), &[]), &[], T0 + 20);
    assert_eq!(cc(&playlist(&kv, &c, &id, T0 + 30)).as_deref(), Some("public, max-age=30"));
    // Pages revalidate (their asset URLs carry a digest); assets are immutable.
    assert_eq!(cc(&get(&kv, &c, "/", T0)).as_deref(), Some("no-cache"));
    assert_eq!(cc(&get(&kv, &c, &format!("/play/{id}"), T0)).as_deref(), Some("no-cache"));
    assert_eq!(cc(&get(&kv, &c, "/assets/player.js", T0)).as_deref(), Some("public, max-age=31536000, immutable"));
    assert_eq!(cc(&get(&kv, &c, "/assets/nope.js", T0)).as_deref(), Some("no-store"));
}

/// An ingest instance (`playback_url` set) answers every viewer request at once with a redirect
/// to the playback instance, so no viewer can hold one of its instances; it still takes uploads
/// and answers status, and every link it hands out names the playback instance.
#[test]
fn an_ingest_instance_sends_viewers_to_the_playback_instance_and_never_holds() {
    let kv = MemoryKv::new();
    let watch = "https://watch.example.com";
    let c = live().with_playback_url(&format!("{watch}/")).unwrap();
    let id = stream_id(SECRET);
    let reply = put(&kv, &c, SECRET, 0, "2.000", &ts(10, 1), T0);
    assert_eq!(reply.status, 201);
    let ack = json(&kv, &reply);
    assert_eq!(ack["player"], format!("{watch}/play/{id}"));
    assert_eq!(ack["playlist"], format!("{watch}/playlist/{id}.m3u8"));
    // A blocking reload for the next seq would be held on a playback instance.
    for path in [
        format!("/playlist/{id}.m3u8?_HLS_msn=1&_HLS_part=0&_HLS_skip=YES"),
        format!("/playlist/{id}.m3u8"),
        format!("/chunks/{id}/0.ts"),
        format!("/chunks/{id}/1.0.ts"),
        format!("/play/{id}"),
        format!("/download/{id}.ts"),
    ] {
        for method in [Method::Get, Method::Head] {
            let reply = request(&kv, &c, &head(method.clone(), &path, &[]), &[], T0 + 100);
            assert_eq!(reply.status, 307, "{method:?} {path}");
            assert_eq!(reply.get_header("location"), Some(format!("{watch}{path}").as_str()), "{path}");
        }
    }
    // Players fetch across origins: the redirect itself passes CORS.
    let reply = playlist(&kv, &c, &id, T0 + 100);
    assert_eq!(reply.get_header("access-control-allow-origin"), Some("*"));
    let status = get(&kv, &c, &format!("/api/streams/{id}"), T0 + 100);
    assert_eq!(status.status, 200);
    assert_eq!(json(&kv, &status)["player"], format!("{watch}/play/{id}"));
    // Without the variable the same request is served here.
    assert_eq!(playlist(&kv, &live(), &id, T0 + 100).status, 200);
    // `:PORT`: the host name the viewer used, on the playback instance's port.
    let c = live().with_playback_url(":3001").unwrap();
    let reply = get(&kv, &c, &format!("/play/{id}?embed=1"), T0 + 100);
    assert_eq!(reply.status, 307);
    assert_eq!(reply.get_header("location"), Some(format!("http://127.0.0.1:3001/play/{id}?embed=1").as_str()));
    let mut v6 = head(Method::Get, &format!("/chunks/{id}/0.ts"), &[]);
    v6.base_url = "https://[::1]:8443".to_owned();
    let reply = request(&kv, &c, &v6, &[], T0 + 100);
    assert_eq!(reply.get_header("location"), Some(format!("https://[::1]:3001/chunks/{id}/0.ts").as_str()));
    v6.base_url = "http://[::1]".to_owned();
    let reply = request(&kv, &c, &v6, &[], T0 + 100);
    assert_eq!(reply.get_header("location"), Some(format!("http://[::1]:3001/chunks/{id}/0.ts").as_str()));
    let ack = json(&kv, &put(&kv, &c, SECRET, 1, "2.000", &ts(10, 2), T0 + 200));
    assert_eq!(ack["player"], format!("http://127.0.0.1:3001/play/{id}"));
}
