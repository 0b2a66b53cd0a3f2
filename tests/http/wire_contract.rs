//! Wire contract v1 over real HTTP: the built component in `chalkstream-host`, driven by a
//! blocking client, checked by Debian's ffmpeg/ffprobe and by reading the key-value SQLite file.
//!
//! Needs `target/wasm32-wasip2/release/chalkstream_spin_app.wasm` (scripts/build) and `ffmpeg`.
//! Run: `cargo test --release -p chalkstream-host --test wire_contract`.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Uploads `segments` as seqs `first..`, PDTs spaced by their durations from `start_ms`.
fn upload_all(host: &Host, session: &str, first: u64, segments: &[Segment], start_ms: u64) -> Vec<Resp> {
    let mut at = start_ms;
    segments
        .iter()
        .enumerate()
        .map(|(i, seg)| {
            let pdt = rfc3339_ms(at);
            at += seg.duration_ms;
            host.upload(session, first + i as u64, &seg.x_duration(), Some(&pdt), &seg.bytes)
        })
        .collect()
}

/// The `error` of a JSON error body; fails unless it is a non-empty string.
#[track_caller]
fn error_message(resp: &Resp) -> String {
    let json: serde_json::Value = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("{resp}: error body is not JSON ({e})"));
    let msg = json["error"].as_str().unwrap_or_else(|| panic!("{resp}: no string `error` field"));
    assert!(!msg.trim().is_empty(), "{resp}: empty `error`");
    msg.to_string()
}

/// Entries must be the contiguous run of seqs starting at the media sequence.
#[track_caller]
fn assert_contiguous_from_media_sequence(p: &Playlist) {
    let msn = p.media_sequence.unwrap_or(0);
    let want: Vec<u64> = (msn..msn + p.entries.len() as u64).collect();
    assert_eq!(p.seqs(), want, "entries are not the run from EXT-X-MEDIA-SEQUENCE:\n{}", p.text);
}

#[test]
fn real_stream_plays_in_ffmpeg_with_h264_aac_and_matching_duration() {
    let host = Host::start();
    let media = media();
    let session = new_session();
    let id = stream_id(&session);
    let start_ms = now_ms();

    for (seq, resp) in upload_all(&host, &session, 0, media, start_ms).iter().enumerate() {
        resp.assert_status(201);
        let json = resp.json();
        assert_eq!(json["stream"], id.as_str(), "{resp}");
        assert_eq!(json["seq"], seq as u64, "{resp}");
        for key in ["playlist", "player"] {
            let url = json[key].as_str().unwrap_or_else(|| panic!("{resp}: no `{key}` URL"));
            assert!(url.contains(&id), "{resp}: `{key}` does not name the stream");
        }
        assert!(!resp.text().contains(&session), "{resp}: the answer repeats the session secret");
    }

    // Live playlist: every segment, in order, each with its capture time, no discontinuity.
    let (resp, live) = host.playlist(&id);
    assert_eq!(resp.header("content-type"), Some("application/vnd.apple.mpegurl"), "{resp}");
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"), "{resp}");
    assert!(!live.ended, "live playlist already ended:\n{}", live.text);
    assert_eq!(live.seqs(), (0..media.len() as u64).collect::<Vec<_>>(), "{}", live.text);
    assert_contiguous_from_media_sequence(&live);
    assert_eq!(live.playlist_type, None, "a sliding-window playlist (retention 10 min) has no PLAYLIST-TYPE");
    let target = live.target_duration.expect("EXT-X-TARGETDURATION");
    assert_eq!(target, (media[0].duration_ms + 500) / 1000, "target duration comes from the first segment");
    let live_max_age = resp.max_age().unwrap_or_else(|| panic!("{resp}: no max-age while live"));
    assert!(live_max_age <= 2 * target, "live playlist cached {live_max_age} s, about one segment expected");
    let mut sent_pdt_ms = start_ms;
    for (entry, seg) in live.entries.iter().zip(media) {
        assert_eq!(entry.duration_ms, seg.duration_ms, "EXTINF of seq {}", entry.seq);
        assert!((entry.duration_ms + 500) / 1000 <= target, "seq {} exceeds the target duration", entry.seq);
        let pdt = entry.pdt.as_deref().unwrap_or_else(|| panic!("seq {} has no PROGRAM-DATE-TIME:\n{}", entry.seq, live.text));
        let sent = rfc3339_ms(sent_pdt_ms);
        assert!(pdt.starts_with(&sent[..19]), "seq {}: PROGRAM-DATE-TIME {pdt}, sent {sent}", entry.seq);
        sent_pdt_ms += seg.duration_ms;
        assert!(!entry.discontinuity, "unexpected discontinuity:\n{}", live.text);
    }
    assert_eq!(live.count("#EXT-X-DISCONTINUITY"), 0, "{}", live.text);

    // Chunks: the very bytes, immutable, open to any origin.
    for (entry, seg) in live.entries.iter().zip(media) {
        let chunk = host.get(&live.entry_path(entry));
        chunk.assert_status(200);
        assert!(chunk.body == seg.bytes, "seq {} bytes differ ({} vs {})", entry.seq, chunk.body.len(), seg.bytes.len());
        assert_eq!(chunk.header("content-type"), Some("video/mp2t"), "{chunk}");
        let cc = chunk.header("cache-control").unwrap_or_default();
        assert!(cc.contains("max-age=31536000") && cc.contains("immutable") && cc.contains("public"), "{chunk}");
        assert_eq!(chunk.header("access-control-allow-origin"), Some("*"), "{chunk}");
    }

    for page in ["/".to_string(), format!("/play/{id}")] {
        let resp = host.get(&page);
        resp.assert_status(200);
        assert!(resp.header("content-type").unwrap_or_default().starts_with("text/html"), "{resp}");
        assert!(!resp.text().contains(&session), "{page} shows the session secret");
    }

    let status = host.status(&id);
    assert_eq!(status["state"], "live", "{status}");
    assert_eq!(status["segments"], media.len() as u64, "{status}");

    // End it, then let ffmpeg read the whole stream over HTTP like a player would.
    host.end(&session).assert_status(200);
    let url = format!("{}/playlist/{id}.m3u8", host.base());
    let (ok, _, stderr) = run("ffmpeg", &["-hide_banner", "-nostdin", "-v", "error", "-i", &url, "-map", "0", "-f", "null", "-"]);
    assert!(ok && stderr.trim().is_empty(), "ffmpeg decoding {url} reported:\n{stderr}");

    let (ok, streams, stderr) = run("ffprobe", &["-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", &url]);
    assert!(ok, "ffprobe failed: {stderr}");
    let codecs: Vec<&str> = streams.lines().map(str::trim).collect();
    assert!(codecs.contains(&"h264") && codecs.contains(&"aac"), "ffprobe saw codecs {codecs:?}");

    // Decoded video duration: from the first packet's pts to the last packet's end.
    let (ok, packets, stderr) = run(
        "ffprobe",
        &["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0", &url],
    );
    assert!(ok, "ffprobe packets failed: {stderr}");
    let (mut first, mut last) = (f64::MAX, f64::MIN);
    for line in packets.lines() {
        let mut fields = line.split(',');
        let pts: f64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
        let dur: f64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        if pts.is_finite() {
            first = first.min(pts);
            last = last.max(pts + dur);
        }
    }
    let decoded = last - first;
    let sent: f64 = media.iter().map(|s| s.duration_ms as f64 / 1000.0).sum();
    println!("decoded {decoded:.3} s, sum of X-Duration {sent:.3} s");
    assert!((decoded - sent).abs() <= 0.1, "decoded {decoded:.3} s, sum of X-Duration {sent:.3} s");

    // The recording as one file: the segments' bytes in order, every frame of them decodable,
    // as long as the playlist within one segment.
    let download = host.get(&format!("/download/{id}.ts"));
    download.assert_status(200);
    assert_eq!(download.header("content-type"), Some("video/mp2t"));
    assert!(download.header("content-disposition").unwrap_or_default().starts_with("attachment; filename=\"chalkstream-"), "{download}");
    assert!(download.body == media.iter().flat_map(|s| s.bytes.clone()).collect::<Vec<u8>>(), "the recording is the segments in order");
    let dir = tempfile::Builder::new().prefix("chalkstream-download-").tempdir().unwrap();
    let file = dir.path().join("recording.ts");
    std::fs::write(&file, &download.body).unwrap();
    let mut per_segment = 0;
    for (n, segment) in media.iter().enumerate() {
        let path = dir.path().join(format!("{n}.ts"));
        std::fs::write(&path, &segment.bytes).unwrap();
        per_segment += video_frames(&path);
    }
    let whole = video_frames(&file);
    let (ok, duration, stderr) = run("ffprobe", &["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", file.to_str().unwrap()]);
    assert!(ok, "ffprobe failed: {stderr}");
    let duration: f64 = duration.lines().find(|l| !l.trim().is_empty()).and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("duration: {duration:?}"));
    let longest = media.iter().map(|s| s.duration_ms).max().unwrap() as f64 / 1000.0;
    println!("recording: {whole} video frames (segments: {per_segment}), {duration:.3} s (playlist: {sent:.3} s)");
    assert_eq!(whole, per_segment, "every frame of every segment is in the recording");
    assert!((duration - sent).abs() <= longest, "recording of {duration:.3} s, playlist of {sent:.3} s");
}

/// Video frames ffprobe decodes from a file.
fn video_frames(path: &std::path::Path) -> u64 {
    let (ok, out, stderr) = run(
        "ffprobe",
        &["-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", path.to_str().unwrap()],
    );
    assert!(ok, "ffprobe -count_frames {}: {stderr}", path.display());
    // MPEG-TS lists the stream under its program too: the same count twice.
    let counts: Vec<&str> = out.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    assert!(!counts.is_empty() && counts.iter().all(|c| *c == counts[0]), "frames of {}: {out:?}", path.display());
    counts[0].parse().unwrap_or_else(|_| panic!("frames of {}: {out:?}", path.display()))
}

#[test]
fn ending_appends_endlist_and_a_later_upload_resumes_with_one_discontinuity() {
    // Idle timeout long enough that the "still live" checks below are not racing it on 2 busy cores.
    const IDLE_S: u64 = 4;
    let host = Host::with_vars(&[("idle_timeout", &IDLE_S.to_string())]);
    let media = media();

    // Stream A: ended by the broadcaster.
    let a = new_session();
    let a_id = stream_id(&a);
    let t0 = now_ms();
    for r in upload_all(&host, &a, 0, &media[..3], t0) {
        r.assert_status(201);
    }
    let (live_resp, live) = host.playlist(&a_id);
    assert!(!live.ended, "{}", live.text);
    assert_eq!(host.status(&a_id)["state"], "live");
    let ended_resp = host.end(&a);
    ended_resp.assert_status(200);
    let (ended_pl_resp, ended) = host.playlist(&a_id);
    assert!(ended.ended, "no ENDLIST after end:\n{}", ended.text);
    assert_eq!(ended.lines.last().map(String::as_str), Some("#EXT-X-ENDLIST"), "{}", ended.text);
    assert_eq!(
        ended.lines[..ended.lines.len() - 1],
        live.lines[..],
        "ending must only append EXT-X-ENDLIST\nlive:\n{}\nended:\n{}",
        live.text,
        ended.text
    );
    // DESIGN.md says "long once ended", docs/API.md "short once ended (a stream can resume)":
    // only insist that both say how long.
    assert!(live_resp.max_age().is_some(), "{live_resp}: no max-age while live");
    assert!(ended_pl_resp.max_age().is_some(), "{ended_pl_resp}: no max-age once ended");
    assert_eq!(host.status(&a_id)["state"], "ended");
    host.end(&a).assert_status(200); // ending twice is fine
    assert_eq!(host.playlist(&a_id).1.text, ended.text, "a second end changed the playlist");

    // A later upload resumes A with exactly one discontinuity, right before the new segment.
    let seg = &media[3];
    host.upload(&a, 3, &seg.x_duration(), Some(&rfc3339_ms(now_ms())), &seg.bytes).assert_status(201);
    let (_, resumed) = host.playlist(&a_id);
    assert!(!resumed.ended, "resumed stream still ended:\n{}", resumed.text);
    assert_eq!(resumed.seqs(), vec![0, 1, 2, 3], "{}", resumed.text);
    assert_eq!(resumed.count("#EXT-X-DISCONTINUITY"), 1, "{}", resumed.text);
    let flags: Vec<bool> = resumed.entries.iter().map(|e| e.discontinuity).collect();
    assert_eq!(flags, vec![false, false, false, true], "{}", resumed.text);
    assert_eq!(resumed.lines[..live.lines.len()], live.lines[..], "resuming rewrote the earlier lines");
    assert_eq!(host.status(&a_id)["state"], "live");

    // Stream B: ended by the idle timeout; its resume also says X-Discontinuity: 1, which must
    // not give a second tag.
    let b = new_session();
    let b_id = stream_id(&b);
    for r in upload_all(&host, &b, 0, &media[..2], now_ms()) {
        r.assert_status(201);
    }
    let (_, b_live) = host.playlist(&b_id);
    assert!(!b_live.ended);
    assert_eq!(host.status(&b_id)["state"], "live");
    let deadline = Instant::now() + Duration::from_secs(IDLE_S + 6);
    let b_idle = loop {
        thread::sleep(Duration::from_millis(500));
        let (_, p) = host.playlist(&b_id);
        if p.ended {
            break p;
        }
        assert!(Instant::now() < deadline, "still live {IDLE_S}+6 s after the last segment:\n{}", p.text);
    };
    assert_eq!(b_idle.lines[..b_idle.lines.len() - 1], b_live.lines[..], "idle end must only append ENDLIST");
    assert_eq!(host.status(&b_id)["state"], "ended");
    let seg = &media[2];
    let pdt = rfc3339_ms(now_ms());
    host.put_segment(
        &b,
        2,
        &[("X-Duration", &seg.x_duration()), ("X-Program-Date-Time", &pdt), ("X-Discontinuity", "1")],
        &seg.bytes,
    )
    .assert_status(201);
    let (_, b_resumed) = host.playlist(&b_id);
    assert!(!b_resumed.ended, "{}", b_resumed.text);
    assert_eq!(b_resumed.count("#EXT-X-DISCONTINUITY"), 1, "{}", b_resumed.text);
    let flags: Vec<bool> = b_resumed.entries.iter().map(|e| e.discontinuity).collect();
    assert_eq!(flags, vec![false, false, true], "{}", b_resumed.text);
    assert_eq!(host.status(&b_id)["state"], "live");
}

#[test]
fn no_acknowledged_segment_is_lost_under_concurrent_duplicate_and_reordered_puts() {
    const SEQS: u64 = 64;
    const COPIES: usize = 4; // 256 PUTs
    const THREADS: usize = 8;
    let host = Arc::new(Host::start());
    let session = new_session();
    let id = stream_id(&session);
    let body = |seq: u64| ts_packets(40, seq);

    // Every seq COPIES times, shuffled (xorshift, fixed seed: reproducible).
    let mut jobs: Vec<u64> = (0..SEQS).flat_map(|s| std::iter::repeat(s).take(COPIES)).collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..jobs.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        jobs.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let jobs = Arc::new(jobs);
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Vec::<(u64, Resp)>::new()));

    // A viewer polling meanwhile: the listed run may only grow.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (host, id, done) = (Arc::clone(&host), id.clone(), Arc::clone(&done));
        thread::spawn(move || {
            let mut seen: Vec<u64> = Vec::new();
            let mut polls = 0;
            while !done.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(5));
                let resp = host.get(&format!("/playlist/{id}.m3u8"));
                polls += 1;
                if resp.status == 404 && seen.is_empty() {
                    continue; // nothing listable yet
                }
                resp.assert_status(200);
                let seqs = Playlist::parse(&resp.text()).seqs();
                assert!(seqs.starts_with(&seen), "playlist lost entries: had {seen:?}, now {seqs:?}");
                seen = seqs;
            }
            polls
        })
    };

    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (host, session, jobs, next, results) =
                (Arc::clone(&host), session.clone(), Arc::clone(&jobs), Arc::clone(&next), Arc::clone(&results));
            thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&seq) = jobs.get(i) else { break };
                let resp = host.upload(&session, seq, "2", None, &body(seq));
                results.lock().unwrap().push((seq, resp));
            })
        })
        .collect();
    for w in workers {
        w.join().expect("upload thread");
    }
    done.store(true, Ordering::SeqCst);
    let polls = watcher.join().expect("the playlist watcher failed (its panic is above)");

    let results = results.lock().unwrap();
    assert_eq!(results.len(), jobs.len());
    let mut created: BTreeMap<u64, usize> = BTreeMap::new();
    for (seq, resp) in results.iter() {
        assert!(resp.status == 200 || resp.status == 201, "seq {seq}: {resp}");
        if resp.status == 201 {
            *created.entry(*seq).or_default() += 1;
        }
    }
    for seq in 0..SEQS {
        assert!(created.get(&seq).copied().unwrap_or(0) >= 1, "seq {seq}: no PUT answered 201");
    }
    println!(
        "{} PUTs on {THREADS} threads, {} answered 201, {polls} playlist polls meanwhile",
        results.len(),
        created.values().sum::<usize>()
    );

    let (_, p) = host.playlist(&id);
    assert_eq!(p.seqs(), (0..SEQS).collect::<Vec<_>>(), "acknowledged seqs missing or repeated:\n{}", p.text);
    for entry in &p.entries {
        let chunk = host.get(&p.entry_path(entry));
        chunk.assert_status(200);
        assert!(chunk.body == body(entry.seq), "seq {} serves other bytes", entry.seq);
    }

    // Identical retry: 200. Different bytes for a stored seq: 409, stored bytes unchanged.
    host.upload(&session, 5, "2", None, &body(5)).assert_status(200);
    let conflict = host.upload(&session, 5, "2", None, &body(1000));
    conflict.assert_status(409);
    error_message(&conflict);
    let chunk = host.get(&format!("/chunks/{id}/5.ts"));
    chunk.assert_status(200);
    assert!(chunk.body == body(5), "a rejected conflicting PUT changed seq 5");
    assert_eq!(host.playlist(&id).1.seqs(), (0..SEQS).collect::<Vec<_>>());
}

#[test]
fn retention_drops_expired_segments_from_playlist_chunks_and_store() {
    // 0.1 minutes = 6 s: long enough that fresh segments do not expire while a busy machine
    // runs the checks below.
    let host = Host::with_vars(&[("stream_retention", "0.1")]);
    let session = new_session();
    let id = stream_id(&session);
    let body = |seq: u64| ts_packets(20, seq);

    // Seq 1 starts a discontinuity, so DISCONTINUITY-SEQUENCE must count it once it slides out.
    for seq in 0..3 {
        let disc = if seq == 1 { "1" } else { "0" };
        let pdt = rfc3339_ms(now_ms());
        host.put_segment(&session, seq, &[("X-Duration", "1"), ("X-Program-Date-Time", &pdt), ("X-Discontinuity", disc)], &body(seq))
            .assert_status(201);
    }
    // A second stream that gets no more uploads: it must expire as a whole.
    let quiet = new_session();
    let quiet_id = stream_id(&quiet);
    host.upload(&quiet, 0, "1", None, &body(100)).assert_status(201);

    let (_, before) = host.playlist(&id);
    assert_eq!(before.seqs(), vec![0, 1, 2], "{}", before.text);
    assert_eq!(before.media_sequence.unwrap_or(0), 0);
    assert_eq!(before.discontinuity_sequence.unwrap_or(0), 0, "{}", before.text);
    let flags: Vec<bool> = before.entries.iter().map(|e| e.discontinuity).collect();
    assert_eq!(flags, vec![false, true, false], "{}", before.text);
    assert_eq!(before.playlist_type, None, "with retention the live playlist is a sliding window:\n{}", before.text);
    for seq in 0..3 {
        assert!(!host.kv_with_prefix(&format!("seg/{id}/{seq}/")).is_empty(), "no seg/{id}/{seq}/ keys: {:?}", host.kv_rows());
    }

    thread::sleep(Duration::from_millis(7000));
    for seq in 3..5 {
        host.upload(&session, seq, "1", Some(&rfc3339_ms(now_ms())), &body(seq)).assert_status(201);
    }
    let (_, after) = host.playlist(&id);
    assert_eq!(after.seqs(), vec![3, 4], "expired segments still listed:\n{}", after.text);
    assert_eq!(after.media_sequence, Some(3), "media sequence must rise with the window:\n{}", after.text);
    assert_eq!(
        after.discontinuity_sequence,
        Some(1),
        "the discontinuity at seq 1 left the window; DISCONTINUITY-SEQUENCE must count it:\n{}",
        after.text
    );
    assert_eq!(after.count("#EXT-X-DISCONTINUITY"), 0, "{}", after.text);
    assert_contiguous_from_media_sequence(&after);
    for seq in 0..3 {
        host.get(&format!("/chunks/{id}/{seq}.ts")).assert_status(404);
        let left = host.kv_with_prefix(&format!("seg/{id}/{seq}/"));
        assert!(left.is_empty(), "keys of expired seq {seq} remain: {left:?}");
    }
    for seq in 3..5 {
        let chunk = host.get(&format!("/chunks/{id}/{seq}.ts"));
        chunk.assert_status(200);
        assert!(chunk.body == body(seq));
    }
    assert_eq!(host.status(&id)["segments"], 2);

    // The quiet stream: gone from every read, and reading it cleared its segment keys.
    host.get(&format!("/playlist/{quiet_id}.m3u8")).assert_status(404);
    host.get(&format!("/api/streams/{quiet_id}")).assert_status(404);
    host.get(&format!("/chunks/{quiet_id}/0.ts")).assert_status(404);
    let left = host.kv_with_prefix(&format!("seg/{quiet_id}/"));
    assert!(left.is_empty(), "keys of the expired quiet stream remain: {left:?}");
}

#[test]
fn segment_over_three_megabytes_round_trips_in_values_of_at_most_one_million_bytes() {
    let host = Host::start();
    let session = new_session();
    let id = stream_id(&session);
    let big = ts_packets(7 * MAX_VALUE_BYTES / 2 / TS_PACKET + 1, 7); // just over 3.5 MB
    assert!(big.len() > 7 * MAX_VALUE_BYTES / 2);

    host.upload(&session, 0, "2", None, &big).assert_status(201);
    host.upload(&session, 0, "2", None, &big).assert_status(200);
    let chunk = host.get(&format!("/chunks/{id}/0.ts"));
    chunk.assert_status(200);
    assert_eq!(chunk.body.len(), big.len());
    assert!(chunk.body == big, "the 3.5 MB segment came back different");

    let parts = host.kv_with_prefix(&format!("seg/{id}/0/"));
    let stored: usize = parts.iter().map(|r| r.value.len()).sum();
    assert!(parts.len() >= 4, "expected >= 4 parts for {} bytes, got {parts:?}", big.len());
    assert!(stored >= big.len(), "parts hold {stored} of {} bytes: {parts:?}", big.len());
    for row in host.kv_rows() {
        assert!(row.value.len() <= MAX_VALUE_BYTES, "value over 1,000,000 bytes: {row:?}");
        assert!(row.key.len() <= 250, "key over 250 bytes: {row:?}");
    }
}

#[test]
fn stored_stream_survives_a_host_restart() {
    // A long idle timeout: a slow restart must not end the stream (no discontinuity expected).
    let mut host = Host::with_vars(&[("stream_retention", "0"), ("idle_timeout", "600")]);
    let media = media();
    let session = new_session();
    let id = stream_id(&session);
    for r in upload_all(&host, &session, 0, &media[..3], now_ms()) {
        r.assert_status(201);
    }
    let (_, before) = host.playlist(&id);
    assert_eq!(before.playlist_type.as_deref(), Some("EVENT"), "retention 0 gives an EVENT playlist:\n{}", before.text);
    let rows_before = host.kv_rows();

    host.restart();

    assert_eq!(host.kv_rows(), rows_before, "restarting changed the store");
    let (_, after) = host.playlist(&id);
    assert_eq!(after.text, before.text, "playlist differs after restart");
    for (entry, seg) in after.entries.iter().zip(media) {
        let chunk = host.get(&after.entry_path(entry));
        chunk.assert_status(200);
        assert!(chunk.body == seg.bytes, "seq {} differs after restart", entry.seq);
    }
    assert_eq!(host.status(&id)["segments"], 3);
    // The restarted server still knows what it stored and goes on from there.
    host.upload(&session, 0, &media[0].x_duration(), None, &media[0].bytes).assert_status(200);
    host.upload(&session, 1, &media[0].x_duration(), None, &media[0].bytes).assert_status(409);
    let seg = &media[3];
    host.upload(&session, 3, &seg.x_duration(), Some(&rfc3339_ms(now_ms())), &seg.bytes).assert_status(201);
    let (_, grown) = host.playlist(&id);
    assert_eq!(grown.seqs(), vec![0, 1, 2, 3]);
    assert_eq!(grown.count("#EXT-X-DISCONTINUITY"), 0, "{}", grown.text);
}

/// One malformed request and the status it must get.
struct Bad {
    what: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    want: &'static [u16],
}

#[test]
fn malformed_requests_get_clear_4xx_and_change_nothing() {
    let token = format!("tok-{}", new_session());
    const MAX_PACKETS: usize = 64;
    let max_bytes = (MAX_PACKETS * TS_PACKET).to_string();
    let host = Host::with_vars(&[("ingest_token", &token), ("max_segment_bytes", &max_bytes), ("idle_timeout", "600")]);
    let session = new_session();
    let id = stream_id(&session);
    let auth = format!("Bearer {token}");
    let good = |seq: u64| ts_packets(20, seq);

    // A stream stored before the bad requests.
    for seq in 0..2 {
        host.put_segment(&session, seq, &[("Authorization", &auth), ("X-Duration", "2"), ("X-Program-Date-Time", &rfc3339_ms(now_ms()))], &good(seq))
            .assert_status(201);
    }
    let rows_before = host.kv_rows();
    let (_, playlist_before) = host.playlist(&id);

    let ok_auth = || ("Authorization", auth.clone());
    let dur = |d: &str| ("X-Duration", d.to_string());
    let put = |what, path: String, headers: Vec<(&'static str, String)>, body: Vec<u8>, want| Bad {
        what,
        method: "PUT",
        path,
        headers,
        body: Some(body),
        want,
    };
    let seq_path = |seq: &str| format!("/ingest/{session}/{seq}.ts");
    let next = seq_path("2");
    let good_put = |what, path: String, want| put(what, path, vec![ok_auth(), dur("2")], good(2), want);
    let with_dur = |what, d: &str| put(what, next.clone(), vec![ok_auth(), dur(d)], good(2), &[400]);
    let with_header = |what, name: &'static str, v: &str| {
        put(what, next.clone(), vec![ok_auth(), dur("2"), (name, v.to_string())], good(2), &[400])
    };
    let with_body = |what, body: Vec<u8>, want| put(what, next.clone(), vec![ok_auth(), dur("2")], body, want);
    let other = |what, method, path: String, want| Bad { what, method, path, headers: vec![ok_auth()], body: None, want };
    // A malformed id in a read path is "no such stream" (404) or "bad request" (400).
    const BAD_ID: &[u16] = &[400, 404];
    // docs/API.md: "400 a bad header, seq or session".
    const BAD_SESSION: &[u16] = &[400];

    let mut not_ts = b"this is not an MPEG transport stream".to_vec();
    not_ts.resize(2 * TS_PACKET, b'!');
    let mut odd_len = good(2);
    odd_len.push(0x47);
    let mut broken_sync = good(2);
    broken_sync[5 * TS_PACKET] = 0x00;
    let upper_id = id.to_ascii_uppercase();

    let cases = vec![
        // seq
        good_put("seq -1", seq_path("-1"), &[400]),
        good_put("seq with a leading zero", seq_path("01"), &[400]),
        good_put("seq not a number", seq_path("abc"), &[400]),
        good_put("fractional seq", seq_path("1.5"), &[400]),
        good_put("seq over 1e9", seq_path("1000000001"), &[400]),
        good_put("seq overflowing u64", seq_path("99999999999999999999999"), &[400]),
        good_put("seq with a plus sign", seq_path("+2"), &[400]),
        // X-Duration
        put("X-Duration missing", next.clone(), vec![ok_auth()], good(2), &[400]),
        with_dur("X-Duration 0", "0"),
        with_dur("X-Duration negative", "-2"),
        with_dur("X-Duration over 30", "31"),
        with_dur("X-Duration just over 30", "30.001"),
        with_dur("X-Duration NaN", "NaN"),
        with_dur("X-Duration inf", "inf"),
        with_dur("X-Duration exponent", "1e1"),
        with_dur("X-Duration empty", ""),
        with_dur("X-Duration decimal comma", "2,5"),
        with_dur("X-Duration with unit", "2s"),
        with_dur("segment longer than the stream's target duration (2 s)", "2.5"),
        // other headers
        with_header("PDT not a date", "X-Program-Date-Time", "yesterday"),
        with_header("PDT month 13", "X-Program-Date-Time", "2026-13-01T00:00:00Z"),
        with_header("PDT without offset", "X-Program-Date-Time", "2026-01-01T00:00:00"),
        with_header("discontinuity yes", "X-Discontinuity", "yes"),
        with_header("discontinuity 2", "X-Discontinuity", "2"),
        // body
        with_body("empty body", Vec::new(), &[400]),
        with_body("body not TS", not_ts, &[400]),
        with_body("body not a multiple of 188", odd_len, &[400]),
        with_body("sync byte missing in packet 5", broken_sync, &[400]),
        with_body("body over max_segment_bytes", ts_packets(MAX_PACKETS + 1, 2), &[413]),
        // session
        good_put("session too short", format!("/ingest/{}/2.ts", &session[..21]), BAD_SESSION),
        good_put("session too long", format!("/ingest/{}/2.ts", "a".repeat(129)), BAD_SESSION),
        good_put("session with a bad character", format!("/ingest/{}!x/2.ts", &session[..24]), BAD_SESSION),
        good_put("session path traversal", "/ingest/..%2F..%2Fetc%2Fpasswd/2.ts".into(), BAD_SESSION),
        good_put("session encoded dots", "/ingest/%2e%2e/2.ts".into(), BAD_SESSION),
        good_put("session with encoded NUL", format!("/ingest/{}%00/2.ts", &session[..24]), BAD_SESSION),
        good_put("session with encoded slash", format!("/ingest/{}%2F{}/2.ts", &session[..12], &session[12..]), BAD_SESSION),
        // token
        put("token missing", next.clone(), vec![dur("2")], good(2), &[401]),
        put("token wrong", next.clone(), vec![("Authorization", "Bearer wrong-token".into()), dur("2")], good(2), &[401]),
        put("token without Bearer", next.clone(), vec![("Authorization", token.clone()), dur("2")], good(2), &[401]),
        put("token as Basic", next.clone(), vec![("Authorization", format!("Basic {token}")), dur("2")], good(2), &[401]),
        Bad { what: "end with wrong token", method: "POST", path: format!("/ingest/{session}/end"), headers: vec![("Authorization", "Bearer nope".into())], body: Some(Vec::new()), want: &[401] },
        Bad { what: "end without token", method: "POST", path: format!("/ingest/{session}/end"), headers: vec![], body: Some(Vec::new()), want: &[401] },
        // stream ids on the read side
        other("playlist id too short", "GET", "/playlist/abc.m3u8".into(), BAD_ID),
        other("playlist id upper-case", "GET", format!("/playlist/{upper_id}.m3u8"), BAD_ID),
        other("playlist id traversal", "GET", "/playlist/..%2F..%2Fetc%2Fpasswd.m3u8".into(), BAD_ID),
        other("chunk id not hex", "GET", format!("/chunks/{}/0.ts", "z".repeat(40)), BAD_ID),
        other("chunk seq leading zero", "GET", format!("/chunks/{id}/00.ts"), BAD_ID),
        other("chunk not stored", "GET", format!("/chunks/{id}/7.ts"), &[404]),
        other("api id too long", "GET", format!("/api/streams/{id}0"), BAD_ID),
        other("api unknown stream", "GET", format!("/api/streams/{}", "0".repeat(40)), &[404]),
        other("playlist unknown stream", "GET", format!("/playlist/{}.m3u8", "0".repeat(40)), &[404]),
        // methods
        other("GET on ingest", "GET", next.clone(), &[405]),
        other("DELETE on ingest", "DELETE", seq_path("0"), &[405]),
        other("GET on end", "GET", format!("/ingest/{session}/end"), &[405]),
        other("DELETE on playlist", "DELETE", format!("/playlist/{id}.m3u8"), &[405]),
        Bad { what: "POST on chunk", method: "POST", path: format!("/chunks/{id}/0.ts"), headers: vec![], body: Some(good(9)), want: &[405] },
        Bad { what: "PUT on api", method: "PUT", path: format!("/api/streams/{id}"), headers: vec![], body: Some(b"{}".to_vec()), want: &[405] },
        // routes
        other("unknown route", "GET", "/nope".into(), &[404]),
        other("unknown api route", "GET", "/api/nope".into(), &[404]),
        other("playlist without id", "GET", "/playlist/".into(), &[404]),
        Bad { what: "end of unknown stream", method: "POST", path: format!("/ingest/{}/end", new_session()), headers: vec![ok_auth()], body: Some(Vec::new()), want: &[404] },
    ];
    assert!(cases.len() >= 30);

    let mut failures = Vec::new();
    for case in &cases {
        let headers: Vec<(&str, &str)> = case.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let resp = host.request(case.method, &case.path, &headers, case.body.as_deref());
        let mut problems = Vec::new();
        if !case.want.contains(&resp.status) {
            problems.push(format!("status {} (want {:?})", resp.status, case.want));
        }
        match serde_json::from_slice::<serde_json::Value>(&resp.body) {
            Ok(json) if json["error"].as_str().is_some_and(|e| !e.trim().is_empty()) => {}
            _ => problems.push("no JSON `error` message".into()),
        }
        if resp.status == 405 && resp.header("allow").is_none_or(|a| a.trim().is_empty()) {
            problems.push("405 without an Allow header".into());
        }
        let everything = format!("{:?} {}", resp.headers, resp.text());
        if everything.contains(&session) || everything.contains(&token) {
            problems.push("the answer echoes the session secret or the token".into());
        }
        println!("{:>3} {:<6} {}", resp.status, case.method, case.what);
        if !problems.is_empty() {
            failures.push(format!("{}: {}\n    {resp}", case.what, problems.join("; ")));
        }
    }
    println!("{} malformed requests sent", cases.len());
    assert!(failures.is_empty(), "{} of {} malformed requests were mishandled:\n{}", failures.len(), cases.len(), failures.join("\n"));

    assert_eq!(host.kv_rows(), rows_before, "malformed requests changed the store");
    assert_eq!(host.playlist(&id).1.text, playlist_before.text);
    let log = host.log();
    assert!(!log.contains(&session) && !log.contains(&token), "the host's log shows the session secret or the token:\n{log}");
}

/// Two different bodies PUT for the same seq at the same moment: at most one may be acknowledged,
/// and the stored bytes must be that one. Spin key-value has no compare-and-swap, so a server can
/// only narrow this race, not close it; the extension never sends two bodies for one seq. Ignored
/// by default: run with `--ignored` to measure (it prints how often both were acknowledged).
#[test]
#[ignore]
fn concurrent_conflicting_puts_acknowledge_only_the_stored_body() {
    const SEQS: u64 = 60;
    let host = Arc::new(Host::start());
    let session = new_session();
    let id = stream_id(&session);
    let mut both = Vec::new();
    let mut neither = Vec::new();
    for seq in 0..SEQS {
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let racers: Vec<_> = [1u64, 2]
            .into_iter()
            .map(|variant| {
                let (host, session, barrier) = (Arc::clone(&host), session.clone(), Arc::clone(&barrier));
                thread::spawn(move || {
                    let body = ts_packets(40, seq * 10 + variant);
                    barrier.wait();
                    (host.upload(&session, seq, "2", None, &body), body)
                })
            })
            .collect();
        let answers: Vec<(Resp, Vec<u8>)> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let stored = host.get(&format!("/chunks/{id}/{seq}.ts"));
        stored.assert_status(200);
        let acked: Vec<&Vec<u8>> =
            answers.iter().filter(|(r, _)| r.status == 200 || r.status == 201).map(|(_, b)| b).collect();
        for (resp, _) in &answers {
            assert!(matches!(resp.status, 200 | 201 | 409), "seq {seq}: {resp}");
        }
        match acked.len() {
            0 => neither.push(seq),
            1 if *acked[0] == stored.body => {}
            _ => both.push(seq),
        }
    }
    println!("{SEQS} races: {} acknowledged a body that is not the stored one, {} acknowledged none", both.len(), neither.len());
    assert!(neither.is_empty(), "no body acknowledged for seqs {neither:?}");
    assert!(both.is_empty(), "an acknowledged body was replaced for seqs {both:?}");
}
