//! Issue 11 over real HTTP: a broadcaster gives a seq up (`POST /ingest/{session}/{seq}/gap`)
//! while the upload of that seq is still on the wire; the upload completes late and gets `409`.
//! The playlist lists segment 0, the gap, 2 and 3 with one discontinuity, and ffmpeg/ffprobe
//! read it across the gap.
//!
//! Needs `target/wasm32-wasip2/release/chalkstream_spin_app.wasm` (scripts/build-component) and
//! `ffmpeg`. Run: `cargo test --release -p chalkstream-host --test gap`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// A `PUT` whose body is sent in two halves: the server has the request but not its body until
/// [`SlowPut::finish`].
struct SlowPut {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl SlowPut {
    fn start(base: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> SlowPut {
        let addr = base.strip_prefix("http://").expect("http base");
        let mut stream = TcpStream::connect(addr).expect("connect to the host");
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut head = format!("PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let half = body.len() / 2;
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body[..half]).unwrap();
        stream.flush().unwrap();
        SlowPut { stream, rest: body[half..].to_vec() }
    }

    /// Sends the rest of the body; returns the status and the answer's body.
    fn finish(mut self) -> (u16, String) {
        self.stream.write_all(&self.rest).unwrap();
        self.stream.flush().unwrap();
        let mut answer = Vec::new();
        self.stream.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {answer:?}"));
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    }
}

#[test]
fn a_gap_declared_while_its_upload_is_on_the_wire_moves_the_playlist_on_and_ffmpeg_plays_across_it() {
    let host = Host::start();
    let media = media();
    let session = new_session();
    let id = stream_id(&session);
    let start_ms = now_ms();
    let pdt = |seq: usize| rfc3339_ms(start_ms + media[..seq].iter().map(|s| s.duration_ms).sum::<u64>());

    host.upload(&session, 0, &media[0].x_duration(), Some(&pdt(0)), &media[0].bytes).assert_status(201);
    // Segment 1 goes out, and its body is slow to arrive.
    let duration1 = media[1].x_duration();
    let pdt1 = pdt(1);
    let late = SlowPut::start(
        &host.base(),
        &format!("/ingest/{session}/1.ts"),
        &[("X-Duration", &duration1), ("X-Program-Date-Time", &pdt1)],
        &media[1].bytes,
    );
    // The client gives seq 1 up meanwhile.
    let gap_path = format!("/ingest/{session}/1/gap");
    let gap = host.request("POST", &gap_path, &[("X-Duration", &duration1)], Some(b""));
    gap.assert_status(201);
    assert_eq!(gap.json()["gap"], true, "{gap}");
    assert!(!gap.text().contains(&session), "{gap}: the answer repeats the session secret");
    host.request("POST", &gap_path, &[("X-Duration", &duration1)], Some(b"")).assert_status(200);
    // The upload completes late: the seq is given up, nothing is stored.
    let (status, body) = late.finish();
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("given up"), "{body}");
    assert!(!body.contains(&session), "the answer repeats the session secret: {body}");
    // The stream goes on, the segment after the gap marked as a break.
    for seq in 2..=3 {
        let resp = host.put_segment(
            &session,
            seq as u64,
            &[("X-Duration", &media[seq].x_duration()), ("X-Program-Date-Time", &pdt(seq)), ("X-Discontinuity", if seq == 2 { "1" } else { "0" })],
            &media[seq].bytes,
        );
        resp.assert_status(201);
    }
    let gap_after = host.request("POST", &gap_path, &[], Some(b""));
    gap_after.assert_status(200);
    host.request("POST", &format!("/ingest/{session}/3/gap"), &[], Some(b"")).assert_status(409);

    let (_, live) = host.playlist(&id);
    assert_eq!(live.seqs(), vec![0, 1, 2, 3], "the playlist moved on:\n{}", live.text);
    assert_eq!(live.media_sequence, Some(0));
    assert_eq!(live.discontinuity_sequence, Some(0));
    assert_eq!(live.count("#EXT-X-GAP"), 1, "{}", live.text);
    assert_eq!(live.count("#EXT-X-DISCONTINUITY"), 1, "{}", live.text);
    assert!(live.entries[2].discontinuity && !live.entries[3].discontinuity, "{}", live.text);
    assert_eq!(live.entries[1].duration_ms, media[1].duration_ms, "{}", live.text);
    let gap_line = live.lines.iter().position(|l| l == "#EXT-X-GAP").unwrap();
    assert!(live.lines[gap_line + 2].ends_with("/1.ts"), "the gap tag belongs to seq 1:\n{}", live.text);
    // The gap serves no media, with a message that says why; the others serve their bytes.
    let chunk = host.get(&live.entry_path(&live.entries[1]));
    chunk.assert_status(404);
    assert!(chunk.json()["error"].as_str().unwrap_or_default().contains("given up"), "{chunk}");
    for seq in [0usize, 2, 3] {
        let chunk = host.get(&live.entry_path(&live.entries[seq]));
        chunk.assert_status(200);
        assert!(chunk.body == media[seq].bytes, "seq {seq} bytes differ");
    }

    // ffmpeg reads the whole stream over HTTP across the gap.
    host.end(&session).assert_status(200);
    let url = format!("{}/playlist/{id}.m3u8", host.base());
    let (ok, _, stderr) = run("ffmpeg", &["-hide_banner", "-nostdin", "-v", "error", "-i", &url, "-map", "0", "-f", "null", "-"]);
    assert!(ok, "ffmpeg decoding {url} failed:\n{stderr}");
    println!("ffmpeg -v error across the gap said: {:?}", stderr.trim());
    let (ok, packets, stderr) = run(
        "ffprobe",
        &["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0", &url],
    );
    assert!(ok, "ffprobe packets failed: {stderr}");
    let mut decoded = 0.0;
    for line in packets.lines() {
        let dur: f64 = line.split(',').nth(1).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        decoded += dur;
    }
    let played: f64 = [0usize, 2, 3].iter().map(|&s| media[s].duration_ms as f64 / 1000.0).sum();
    println!("decoded {decoded:.3} s of video, segments 0, 2, 3 last {played:.3} s");
    assert!((decoded - played).abs() <= 0.2, "decoded {decoded:.3} s, the segments around the gap last {played:.3} s");
}
