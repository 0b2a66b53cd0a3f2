//! Wire contract v2 (LL-HLS) over real HTTP: the built component in `chalkstream-host`, parts
//! cut from real ffmpeg segments, every playlist checked tag by tag (`common::ll_check`), held
//! requests released by uploads from other threads (the host runs an instance per request, so a
//! held one blocks nobody), and ffmpeg reading the live playlist from whole segments.
//!
//! Needs `target/wasm32-wasip2/release/chalkstream_spin_app.wasm` (scripts/build-component) and
//! `ffmpeg`. Run: `cargo test --release -p chalkstream-host --test low_latency`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::ll_check::{self, LlPlaylist};
use common::*;

/// Uploads and seals segments `from..to`.
fn upload_segments(host: &Host, session: &str, from: u64, to: u64) {
    for seq in from..to {
        for part in 0..PARTS_PER_SEGMENT {
            upload_part(host, session, seq, part).assert_status(201);
        }
        host.commit(session, seq, PARTS_PER_SEGMENT as u32).assert_status(201);
    }
}

/// `GET` the playlist with `query`, asserted 200 and checked.
fn ll_playlist(host: &Host, id: &str, query: &str) -> (Resp, LlPlaylist) {
    let resp = host.get(&format!("/playlist/{id}.m3u8{query}"));
    resp.assert_status(200);
    let p = ll_check::check(&resp.text());
    (resp, p)
}

#[track_caller]
fn error_of(resp: &Resp) -> String {
    resp.json()["error"].as_str().unwrap_or_else(|| panic!("{resp}: no error message")).to_string()
}

#[test]
fn parts_upload_commit_and_retry_over_http_and_the_segment_is_their_bytes() {
    let host = Host::start();
    let session = new_session();
    let id = stream_id(&session);
    let m = &media_parts()[0];
    for part in 0..PARTS_PER_SEGMENT {
        let resp = upload_part(&host, &session, 0, part);
        resp.assert_status(201);
        let json = resp.json();
        assert_eq!((json["stream"].as_str(), json["seq"].as_u64(), json["part"].as_u64()), (Some(id.as_str()), Some(0), Some(part as u64)));
        assert!(!resp.text().contains(&session), "{resp}: the answer repeats the session secret");
    }
    upload_part(&host, &session, 0, 1).assert_status(200);
    let other = host.upload_part(&session, 0, 1, &secs(m.durations_ms[1]), &part_target(), "1", &m.parts[2]);
    other.assert_status(409);
    assert!(error_of(&other).contains("different bytes"), "{other}");
    // A part is served as soon as it is stored.
    let resp = host.get(&format!("/chunks/{id}/0.1.ts"));
    resp.assert_status(200);
    assert_eq!(resp.body, m.parts[1]);
    assert_eq!(resp.header("content-type"), Some("video/mp2t"));
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));

    host.commit(&session, 0, PARTS_PER_SEGMENT as u32).assert_status(201);
    host.commit(&session, 0, PARTS_PER_SEGMENT as u32).assert_status(200);
    let resp = host.commit(&session, 0, 2);
    resp.assert_status(409);
    assert!(error_of(&resp).contains("sealed from 4 parts"), "{resp}");
    let resp = host.get(&format!("/chunks/{id}/0.ts"));
    resp.assert_status(200);
    assert_eq!(resp.body, m.segment.bytes, "the segment is its parts in order");
    let resp = host.commit(&session, 1, 1);
    resp.assert_status(409);
    assert!(error_of(&resp).contains("part 0 of segment 1 is not stored"), "{resp}");
    // Malformed parts: 400 with a message, nothing stored.
    let bad = host.put_part(&session, 1, 0, &[("X-Duration", "0.2"), ("X-Target-Duration", "1"), ("X-Independent", "1")], &m.parts[0]);
    bad.assert_status(400);
    assert!(error_of(&bad).contains("X-Part-Target"), "{bad}");
    let bad = host.upload_part(&session, 1, 0, "0.2", &part_target(), "1", b"not ts");
    bad.assert_status(400);
    // A part far past the next one is not held: 404 at once.
    host.get(&format!("/chunks/{id}/1.40.ts")).assert_status(404);
    // The store: slices then metas per part, one segment meta, nothing over the limits.
    for row in host.kv_with_prefix(&format!("seg/{id}/")) {
        assert!(row.value.len() <= MAX_VALUE_BYTES && row.key.len() <= 250, "{row:?}");
    }
    assert!(!host.log().contains(&session), "the host log holds the session secret");
}

#[test]
fn the_live_playlist_passes_the_ll_rules_and_ffmpeg_plays_its_whole_segments() {
    let host = Host::start();
    let session = new_session();
    let id = stream_id(&session);
    upload_segments(&host, &session, 0, 6);
    upload_part(&host, &session, 6, 0).assert_status(201);
    upload_part(&host, &session, 6, 1).assert_status(201);
    let (resp, p) = ll_playlist(&host, &id, "");
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    assert_eq!(p.seqs(), (0..6).collect::<Vec<_>>());
    assert!(p.segments.iter().rev().take(2).all(|s| s.parts.len() == PARTS_PER_SEGMENT), "{}", resp.text());
    assert_eq!(p.open_parts.len(), 2);
    assert_eq!(p.hint, Some((6, 2)));
    for part in p.parts() {
        let r = host.get(&part.uri);
        r.assert_status(200);
        assert_eq!(r.body, media_parts()[part.seq as usize % media_parts().len()].parts[part.part as usize]);
    }
    // A client that ignores the LL tags plays the live playlist from whole segments.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("copy.ts");
    let url = format!("{}/playlist/{id}.m3u8", host.base());
    let (ok, _, err) = run(
        "ffmpeg",
        &["-hide_banner", "-loglevel", "error", "-nostdin", "-live_start_index", "0", "-i", &url, "-t", "4", "-c", "copy", "-f", "mpegts", out.to_str().unwrap()],
    );
    assert!(ok, "ffmpeg could not read the live LL playlist: {err}");
    let (ok, streams, err) = run(
        "ffprobe",
        &["-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", out.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    let codecs: Vec<&str> = streams.lines().collect();
    assert!(codecs.contains(&"h264") && codecs.contains(&"aac"), "ffmpeg copied {codecs:?}");
    // Ended: no LL lines left but the head, every segment still there.
    host.end(&session).assert_status(200);
    let (_, ended) = ll_playlist(&host, &id, "");
    assert!(ended.ended && ended.open_parts.is_empty() && ended.hint.is_none());
    assert_eq!(ended.seqs(), p.seqs());
}

#[test]
fn a_blocking_reload_is_held_until_another_request_uploads_the_part() {
    let host = Arc::new(Host::start());
    let session = new_session();
    let id = stream_id(&session);
    upload_segments(&host, &session, 0, 2);
    upload_part(&host, &session, 2, 0).assert_status(201);
    let (_, before) = ll_playlist(&host, &id, "");
    assert_eq!(before.hint, Some((2, 1)));

    // The uploader waits until the reload is surely held, then uploads the awaited part; the
    // held request cannot have been answered before, since only that upload makes it ready.
    let uploaded = Arc::new(AtomicBool::new(false));
    let uploader = {
        let (host, session, uploaded) = (Arc::clone(&host), session.clone(), Arc::clone(&uploaded));
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(400));
            let resp = upload_part(&host, &session, 2, 1);
            uploaded.store(true, Ordering::SeqCst);
            resp
        })
    };
    let (resp, p) = ll_playlist(&host, &id, "?_HLS_msn=2&_HLS_part=1");
    assert!(uploaded.load(Ordering::SeqCst), "answered before the part existed:\n{}", resp.text());
    uploader.join().unwrap().assert_status(201);
    assert_eq!(p.open_parts.len(), 2, "{}", resp.text());
    assert_eq!(p.hint, Some((2, 2)));

    // The hinted part itself is held the same way.
    let uploader = {
        let (host, session) = (Arc::clone(&host), session.clone());
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            upload_part(&host, &session, 2, 2)
        })
    };
    let resp = host.get(&format!("/chunks/{id}/2.2.ts"));
    uploader.join().unwrap().assert_status(201);
    resp.assert_status(200);
    assert_eq!(resp.body, media_parts()[2].parts[2]);
}

#[test]
fn a_blocking_reload_that_nothing_answers_gets_503_after_three_target_durations() {
    let host = Host::start();
    let session = new_session();
    let id = stream_id(&session);
    upload_segments(&host, &session, 0, 1);
    let resp = host.get(&format!("/playlist/{id}.m3u8?_HLS_msn=1&_HLS_part=0"));
    resp.assert_status(503);
    assert_eq!(resp.header("retry-after"), Some("1"), "{resp}");
    assert!(error_of(&resp).contains("three target durations"), "{resp}");
    let resp = host.get(&format!("/chunks/{id}/1.0.ts"));
    resp.assert_status(503);
    // Requests too far ahead or malformed are refused at once.
    for (query, says) in [
        ("_HLS_msn=3", "too far ahead"),
        ("_HLS_msn=1&_HLS_part=40", "too far ahead"),
        ("_HLS_msn=1&_HLS_part=99", "_HLS_part must be below 64"),
        ("_HLS_msn=abc", "_HLS_msn must be a decimal integer"),
        ("_HLS_part=0", "_HLS_part needs _HLS_msn"),
        ("_HLS_skip=maybe", "_HLS_skip must be YES or v2"),
    ] {
        let resp = host.get(&format!("/playlist/{id}.m3u8?{query}"));
        resp.assert_status(400);
        assert!(error_of(&resp).contains(says), "{query}: {resp}");
    }
    assert!(!host.log().contains(" 500 "), "the host answered 500:\n{}", host.log());
}

#[test]
fn a_delta_update_of_a_long_retention_zero_stream_is_small() {
    let host = Host::with_vars(&[("stream_retention", "0")]);
    let session = new_session();
    let id = stream_id(&session);
    // Synthetic parts keep 1200 segments quick; the rules do not look at the bytes.
    for seq in 0..1200u64 {
        for part in 0..2u32 {
            let body = ts_packets(2, seq * 2 + u64::from(part));
            host.upload_part(&session, seq, part, "0.500", "0.500", "1", &body).assert_status(201);
        }
        host.commit(&session, seq, 2).assert_status(201);
    }
    host.upload_part(&session, 1200, 0, "0.500", "0.500", "1", &ts_packets(2, 9999)).assert_status(201);
    let (full_resp, full) = ll_playlist(&host, &id, "");
    let (delta_resp, delta) = ll_playlist(&host, &id, "?_HLS_skip=YES");
    assert!(full.event && delta.event);
    assert_eq!(delta.skipped, 1200 - 7, "1 s segments, CAN-SKIP-UNTIL 6 s");
    assert_eq!(delta.segments, full.segments[1193..].to_vec());
    assert_eq!((delta.media_sequence, delta.hint), (full.media_sequence, full.hint));
    println!("full playlist {} bytes, delta update {} bytes", full_resp.body.len(), delta_resp.body.len());
    assert!(delta_resp.body.len() <= 16 * 1024, "delta update of {} bytes", delta_resp.body.len());
    // A blocking delta update.
    let (_, both) = ll_playlist(&host, &id, "?_HLS_msn=1200&_HLS_part=0&_HLS_skip=YES");
    assert_eq!(both.skipped, 1193);
}

#[test]
fn part_uploads_race_held_readers_and_retention_without_losing_an_acknowledged_part() {
    // Retention of 3 s on 1 s segments: uploads delete old segments with their parts while
    // readers hold blocking reloads for the next part and fetch every part they see.
    let host = Arc::new(Host::with_vars(&[("stream_retention", "0.05")]));
    let session = new_session();
    let id = stream_id(&session);
    const SEGMENTS: u64 = 12;
    let acked = Arc::new(Mutex::new(Vec::<(u64, u32)>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    upload_segments(&host, &session, 0, 1);
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (host, id, done, answered) = (Arc::clone(&host), id.clone(), Arc::clone(&done), Arc::clone(&answered));
            thread::spawn(move || {
                let mut last: Option<LlPlaylist> = None;
                while !done.load(Ordering::SeqCst) {
                    let query = match last.as_ref().and_then(|p| p.hint) {
                        Some((seq, part)) => format!("?_HLS_msn={seq}&_HLS_part={part}"),
                        None => String::new(),
                    };
                    let resp = host.get(&format!("/playlist/{id}.m3u8{query}"));
                    if resp.status == 503 {
                        continue;
                    }
                    resp.assert_status(200);
                    let p = ll_check::check(&resp.text());
                    if let Some(prev) = &last {
                        assert!(p.media_sequence >= prev.media_sequence, "media sequence went back");
                        let kept: Vec<u64> = prev.seqs().into_iter().filter(|s| *s >= p.media_sequence).collect();
                        assert!(p.seqs().starts_with(&kept), "a listed segment vanished: {kept:?} then {:?}", p.seqs());
                    }
                    // Every part listed near the edge is there (retention keeps 3 s).
                    for part in p.open_parts.iter().chain(p.segments.last().map(|s| s.parts.iter()).into_iter().flatten()) {
                        host.get(&part.uri).assert_status(200);
                    }
                    answered.fetch_add(1, Ordering::SeqCst);
                    last = Some(p);
                }
            })
        })
        .collect();
    for seq in 1..SEGMENTS {
        for part in 0..PARTS_PER_SEGMENT {
            thread::sleep(Duration::from_millis(100));
            upload_part(&host, &session, seq, part).assert_status(201);
            acked.lock().unwrap().push((seq, part as u32));
        }
        host.commit(&session, seq, PARTS_PER_SEGMENT as u32).assert_status(201);
    }
    done.store(true, Ordering::SeqCst);
    // Release readers still held for a part that will not come.
    host.end(&session).assert_status(200);
    for r in readers {
        r.join().expect("a reader failed (its panic is above)");
    }
    assert!(answered.load(Ordering::SeqCst) >= 10, "readers were answered only {} times", answered.load(Ordering::SeqCst));
    // Every acknowledged part of a segment still in the window is listed or served.
    let (_, p) = ll_playlist(&host, &id, "");
    assert_eq!(p.last_seq(), Some(SEGMENTS - 1));
    for seq in p.seqs() {
        let r = host.get(&format!("/chunks/{id}/{seq}.ts"));
        if r.status == 404 {
            // Retention (3 s) may take the oldest listed segment between the playlist and this
            // GET on a busy machine: then the window has moved past it, and nothing lists it.
            let now = host.get(&format!("/playlist/{id}.m3u8"));
            let listed = now.status == 200 && ll_check::check(&now.text()).seqs().contains(&seq);
            assert!(!listed, "segment {seq} is listed but answers 404");
            continue;
        }
        r.assert_status(200);
        assert_eq!(r.body, media_parts()[seq as usize % media_parts().len()].segment.bytes);
    }
    // Retention took the old segments' parts with them.
    let first = p.media_sequence;
    for row in host.kv_with_prefix(&format!("seg/{id}/")) {
        let seq: u64 = row.key.split('/').nth(2).unwrap().parse().unwrap();
        assert!(seq >= first, "{row:?} outlived its segment (window starts at {first})");
    }
}
