//! Issue 18, "Ingest must keep working while viewers hold": 1,500 viewers each holding a
//! request open (a blocking reload or a hinted part of the live stream, as any viewer may) while
//! a broadcaster uploads parts in real time.
//!
//! Every held request pins an instance of the component, and an instance pool is per process:
//! Spin's default is 1,000, and so is the bundled host's. On one instance, 1,500 held requests
//! take the whole pool and uploads fail with `500` (on real Spin 4.1: 69 of 93 uploads). So the
//! documented shape is two instances of the app on one store: the broadcaster's server URL is the
//! *ingest* instance, whose `playback_url` variable names the *playback* instance. The ingest
//! instance answers every viewer request at once with a `307` there and never holds one, so no
//! number of viewers can take its instances; the playback instance holds at most its pool, and a
//! request past it is answered at once (Spin's and the host's `500`; players retry).
//!
//! `ingest_keeps_working_while_1500_viewers_hold_on_the_playback_instance` asserts, on two hosts
//! sharing one SQLite file: every upload and commit is acknowledged (none fails), the viewers
//! really held the playback instance's pool full (the peak of requests in flight there reaches
//! the pool), every acknowledged seq is listed by the playback instance afterwards, and a viewer
//! request to the ingest instance is redirected. It prints the upload latencies.
//!
//! `a_held_request_reads_a_constant_however_hostile_the_stream`: the host counts a held
//! request's key-value reads on a stream with the shortest part target and the longest target
//! duration (170 over a 90 s hold, bound 397); a v1 reload is answered at once.
//!
//! `held_flood_figures` (ignored; `scripts/bench --only held` runs it) measures the same in
//! both shapes, two instances and one, and prints one `held-flood` line per shape for the bench.
//!
//! Run: `sh scripts/build-component && cargo test --release -p chalkstream-host --test held -- --nocapture`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Viewers holding at once.
const VIEWERS: usize = 1_500;
/// The instance pool of the host (and Spin's default).
const POOL: i64 = 1_000;
/// How long the broadcaster uploads while the viewers hold.
const UPLOAD_SECS: u64 = 20;

/// What one run saw.
struct Flood {
    /// Upload and commit latencies (ms), and how many were not acknowledged.
    upload_ms: Vec<f64>,
    failed: Vec<String>,
    /// Requests the viewers had in flight, sampled every 50 ms while the broadcaster uploaded.
    peak_in_flight: i64,
    median_in_flight: i64,
    /// Viewer answers by class: held and answered (200), refused at once (5xx), other.
    answered: u64,
    refused: u64,
    other: u64,
    /// Seqs acknowledged, and the playlist the viewers' instance served at the end.
    committed: Vec<u64>,
    listed: Vec<u64>,
}

/// One viewer: a keep-alive connection that asks, again and again, for something the live
/// stream has not got yet (the segment after next: a blocking reload, or its first part), and
/// waits for it. A refusal is retried a quarter second later, as a player would.
fn viewer(base: &str, id: &str, n: usize, last: &AtomicU64, stop: &AtomicBool, in_flight: &AtomicI64, counts: &Mutex<(u64, u64, u64)>) {
    let addr = base.trim_start_matches("http://").to_owned();
    let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
    while !stop.load(Ordering::Relaxed) {
        let msn = last.load(Ordering::Relaxed) + 2;
        let path = if n % 2 == 0 {
            format!("/playlist/{id}.m3u8?_HLS_msn={msn}")
        } else {
            format!("/chunks/{id}/{msn}.0.ts")
        };
        if conn.is_none() {
            match TcpStream::connect(&addr) {
                Ok(stream) => {
                    let reader = BufReader::new(stream.try_clone().unwrap());
                    conn = Some((stream, reader));
                }
                Err(_) => {
                    thread::sleep(Duration::from_millis(250));
                    continue;
                }
            }
        }
        let (stream, reader) = conn.as_mut().unwrap();
        in_flight.fetch_add(1, Ordering::Relaxed);
        let answer = get(stream, reader, &addr, &path);
        in_flight.fetch_sub(1, Ordering::Relaxed);
        let status = answer.map(|(status, _)| status);
        if answer.is_some_and(|(_, open)| !open) {
            conn = None;
        }
        let mut c = counts.lock().unwrap();
        match status {
            Some(200) => c.0 += 1,
            Some(s) if s >= 500 => c.1 += 1,
            _ => c.2 += 1,
        }
        drop(c);
        match status {
            Some(200) => {}
            Some(_) => thread::sleep(Duration::from_millis(250)),
            None => {
                conn = None;
                thread::sleep(Duration::from_millis(250));
            }
        }
    }
}

/// A GET on a kept-alive connection: the status and whether the connection stays open (the
/// body is read and dropped); `None` when the connection failed.
fn get(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, host: &str, path: &str) -> Option<(u16, bool)> {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").ok()?;
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let status: u16 = line.split(' ').nth(1)?.parse().ok()?;
    let mut length = 0usize;
    let mut close = false;
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().ok()?;
        } else if name.eq_ignore_ascii_case("connection") && value.trim().eq_ignore_ascii_case("close") {
            close = true;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some((status, !close))
}

/// Streams [`UPLOAD_SECS`] of parts in real time to `ingest` while [`VIEWERS`] viewers hold on
/// `playback` (the same host for the one-instance shape).
fn flood(ingest: &Host, playback: &Host) -> Flood {
    let session = new_session();
    let id = stream_id(&session);
    let media = media_parts();
    // The stream exists before the viewers come: two segments.
    for seq in 0..2u64 {
        for part in 0..media[seq as usize].parts.len() {
            upload_part(ingest, &session, seq, part).assert_status(201);
        }
        ingest.commit(&session, seq, media[seq as usize].parts.len() as u32).assert_status(201);
    }
    let last = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(AtomicI64::new(0));
    let counts = Arc::new(Mutex::new((0u64, 0u64, 0u64)));
    let viewers: Vec<_> = (0..VIEWERS)
        .map(|n| {
            let (base, id, last, stop, in_flight, counts) =
                (playback.base(), id.clone(), last.clone(), stop.clone(), in_flight.clone(), counts.clone());
            thread::Builder::new()
                .stack_size(128 << 10)
                .spawn(move || viewer(&base, &id, n, &last, &stop, &in_flight, &counts))
                .expect("a viewer thread")
        })
        .collect();
    // Let them all connect and hold.
    thread::sleep(Duration::from_secs(3));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (in_flight, sampling) = (in_flight.clone(), sampling.clone());
        thread::spawn(move || {
            let mut samples = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                samples.push(in_flight.load(Ordering::Relaxed));
                thread::sleep(Duration::from_millis(50));
            }
            samples
        })
    };
    let mut upload_ms = Vec::new();
    let mut failed = Vec::new();
    let mut committed = vec![0, 1];
    let started = Instant::now();
    let mut media_ms = 0u64;
    let mut seq = 2u64;
    while started.elapsed() < Duration::from_secs(UPLOAD_SECS) {
        let m = &media[seq as usize % media.len()];
        let mut all = true;
        for part in 0..m.parts.len() {
            // Real time: part n goes when its media has been "recorded".
            media_ms += m.durations_ms[part];
            let due = started + Duration::from_millis(media_ms);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            let t = Instant::now();
            let resp = upload_part(ingest, &session, seq, part);
            upload_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            if resp.status != 201 {
                failed.push(format!("part {seq}.{part}: {} {}", resp.status, resp.text().trim()));
                all = false;
            }
        }
        let t = Instant::now();
        let resp = ingest.commit(&session, seq, m.parts.len() as u32);
        upload_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if resp.status == 201 && all {
            committed.push(seq);
            last.store(seq, Ordering::Relaxed);
        } else if resp.status != 201 {
            failed.push(format!("commit {seq}: {} {}", resp.status, resp.text().trim()));
        }
        seq += 1;
    }
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut samples_sorted = samples.clone();
    samples_sorted.sort_unstable();
    let peak_in_flight = samples.iter().copied().max().unwrap_or(0);
    let median_in_flight = samples_sorted.get(samples_sorted.len() / 2).copied().unwrap_or(0);
    // A viewer still held is answered when its hold gives up (three target durations).
    for viewer in viewers {
        let _ = viewer.join();
    }
    let (_, playlist) = playback.playlist(&id);
    let listed = playlist.seqs();
    let (answered, refused, other) = *counts.lock().unwrap();
    Flood { upload_ms, failed, peak_in_flight, median_in_flight, answered, refused, other, committed, listed }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One line the bench parses: the shape and what it saw.
fn report(shape: &str, flood: &Flood) -> String {
    let mut sorted = flood.upload_ms.clone();
    sorted.sort_by(f64::total_cmp);
    format!(
        "held-flood shape={shape} viewers={VIEWERS} uploads={} failed={} upload_p50_ms={:.1} upload_p99_ms={:.1} upload_max_ms={:.1} \
         peak_in_flight={} median_in_flight={} viewer_answers={} viewer_refused={} viewer_other={} committed={} listed={}",
        flood.upload_ms.len(),
        flood.failed.len(),
        percentile(&sorted, 50.0),
        percentile(&sorted, 99.0),
        sorted.last().copied().unwrap_or(f64::NAN),
        flood.peak_in_flight,
        flood.median_in_flight,
        flood.answered,
        flood.refused,
        flood.other,
        flood.committed.len(),
        flood.listed.len(),
    )
}

/// The two instances of the documented shape on one SQLite file: playback first, so the
/// ingest instance can name it.
fn two_instances() -> (SharedStore, Host, Host) {
    let store = SharedStore::sqlite();
    let playback = store.start();
    let ingest = store.start_with(&[("playback_url", &playback.base())]);
    (store, ingest, playback)
}

#[test]
fn ingest_keeps_working_while_1500_viewers_hold_on_the_playback_instance() {
    let (_store, ingest, playback) = two_instances();
    let flood = flood(&ingest, &playback);
    println!("{}", report("two-instances", &flood));
    assert!(flood.failed.is_empty(), "uploads failed while viewers held:\n{}", flood.failed.join("\n"));
    // The viewers did what the test says: the playback instance's pool was held full.
    assert!(
        flood.peak_in_flight >= POOL,
        "only {} viewer requests were ever in flight at once (the pool is {POOL}): the flood did not hold the pool",
        flood.peak_in_flight
    );
    assert!(flood.answered > VIEWERS as u64, "held requests were answered {} times", flood.answered);
    // Every acknowledged seq is served to viewers.
    let missing: Vec<u64> = flood.committed.iter().copied().filter(|seq| !flood.listed.contains(seq)).collect();
    assert!(missing.is_empty(), "acknowledged seqs {missing:?} are not listed by the playback instance");
    // A viewer that reaches the ingest instance is sent on at once.
    let session_id = stream_id(&new_session());
    let resp = ingest.get(&format!("/playlist/{session_id}.m3u8?_HLS_msn=5"));
    resp.assert_status(307);
    assert_eq!(resp.header("location"), Some(format!("{}/playlist/{session_id}.m3u8?_HLS_msn=5", playback.base()).as_str()));
}

/// The bench's figures (`scripts/bench --only held`): both shapes, `CHALKSTREAM_HELD_RUNS` runs
/// each (3), one line per run, then per shape the upload latencies pooled over every upload of
/// every run, the worst run's p99, and the verdicts against the targets (no upload
/// fails; upload p99 within 1 s), computed here.
#[test]
#[ignore = "a benchmark: scripts/bench --only held"]
fn held_flood_figures() {
    let runs: usize = std::env::var("CHALKSTREAM_HELD_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    for shape in ["two-instances", "one-instance"] {
        let mut pooled = Vec::new();
        let (mut failed, mut uploads, mut worst_p99) = (0usize, 0usize, 0f64);
        let mut held_full = true;
        for _ in 0..runs {
            let flood = if shape == "two-instances" {
                let (_store, ingest, playback) = two_instances();
                flood(&ingest, &playback)
            } else {
                let host = Host::start();
                flood(&host, &host)
            };
            println!("{}", report(shape, &flood));
            for line in flood.failed.iter().take(3) {
                println!("  failed: {line}");
            }
            let mut sorted = flood.upload_ms.clone();
            sorted.sort_by(f64::total_cmp);
            worst_p99 = worst_p99.max(percentile(&sorted, 99.0));
            failed += flood.failed.len();
            uploads += flood.upload_ms.len();
            held_full &= flood.peak_in_flight >= POOL;
            pooled.extend(flood.upload_ms);
        }
        pooled.sort_by(f64::total_cmp);
        let p99 = percentile(&pooled, 99.0);
        println!(
            "held-pooled shape={shape} runs={runs} uploads={uploads} failed={failed} upload_p50_ms={:.1} upload_p99_ms={p99:.1} \
             worst_run_p99_ms={worst_p99:.1} pool_held_full={held_full} verdict_no_upload_fails={} verdict_p99_within_1s={}",
            percentile(&pooled, 50.0),
            if failed == 0 { "met" } else { "missed" },
            if failed == 0 && p99 <= 1000.0 { "met" } else { "missed" },
        );
    }
}

/// Issue 18: "a stated constant of key-value reads per held request whatever the stream's part
/// target and target duration", over HTTP with the host counting. A broadcaster sets the
/// shortest part target (0.1 s) and the longest target duration (30 s), so a held request waits
/// the longest hold (three target durations, 90 s) for a part that never comes. Before the
/// checks were paced by time, one such GET read 13,486 keys; the bound is `hold::MAX_CHECKS` (64)
/// checks of at most five reads plus 20 for deciding and answering (spin-app's
/// `regression_issue_18_a_held_request_reads_a_constant_whatever_the_part_target`), plus the
/// sweep's step after the response (at most 17 reads of its shard and one stream's visit here).
/// A v1 stream has nothing to hold: its blocking reload is answered at once.
#[test]
fn a_held_request_reads_a_constant_however_hostile_the_stream() {
    std::env::set_var("CHALKSTREAM_COUNT_KV", "1");
    // The stream must not end (idle) before the longest hold gives up.
    let host = Host::with_vars(&[("idle_timeout", "120")]);
    let session = new_session();
    let id = stream_id(&session);
    let m = &media_parts()[0];
    let hostile = |part: u32, duration: &str| {
        let independent = if part == 0 { "1" } else { "0" };
        [("X-Duration", duration.to_owned()), ("X-Part-Target", "0.1".to_owned()), ("X-Target-Duration", "30".to_owned()), ("X-Independent", independent.to_owned())]
    };
    let put = |seq: u64, part: u32, body: &[u8]| {
        let headers = hostile(part, "0.1");
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        host.put_part(&session, seq, part, &headers, body).assert_status(201);
    };
    put(0, 0, &m.parts[0]);
    host.commit(&session, 0, 1).assert_status(201);
    put(1, 0, &m.parts[1]);
    // Both held at once: a blocking reload for part 1.1, and the part itself.
    let reload = format!("/playlist/{id}.m3u8?_HLS_msn=1&_HLS_part=1");
    let part = format!("/chunks/{id}/1.1.ts");
    // The tests' usual agent gives up after 60 s.
    let patient: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(150)))
        .build()
        .into();
    let get = |path: &str| try_request(&patient, &host.base(), "GET", path, &[], None).unwrap();
    let started = Instant::now();
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(|| get(&reload));
        let b = s.spawn(|| get(&part));
        (a.join().unwrap(), b.join().unwrap())
    });
    let held = started.elapsed();
    a.assert_status(503);
    b.assert_status(503);
    assert!(held >= Duration::from_secs(89), "answered after {held:?}, not at the 90 s limit");
    let bound = 64 * 5 + 20 + 17 + 40;
    for path in [&reload, &part] {
        let (reads, _) = kv_cost(&host, &format!("GET {path}"), 0);
        println!("GET {path}: {reads} key-value reads over a {:.1} s hold (bound {bound})", held.as_secs_f64());
        assert!(reads <= bound, "GET {path}: {reads} key-value reads while held (bound {bound})");
    }
    // v1: whole segments; a blocking reload has nothing to wait for and is answered at once.
    let v1 = new_session();
    let v1_id = stream_id(&v1);
    let seg = &media()[0];
    host.upload(&v1, 0, &seg.x_duration(), None, &seg.bytes).assert_status(201);
    let resp = host.get(&format!("/playlist/{v1_id}.m3u8?_HLS_msn=5"));
    // Answered, not held until it gave up (`503`).
    assert!(resp.status == 200 || resp.status == 400, "{resp}");
    let (reads, _) = kv_cost(&host, &format!("GET /playlist/{v1_id}.m3u8?_HLS_msn=5"), 0);
    println!("v1 GET with _HLS_msn: {reads} key-value reads");
    assert!(reads <= 20 + 17 + 40, "a v1 reload read {reads} keys");
}
