//! The serverless envelope over real HTTP (issue "serverless envelope", item 2): the host runs
//! the built component with Fermyon Cloud's key-value limits (`--kv-limits fermyon-cloud`,
//! with a small key budget so a few segments fill the store), on SQLite and on Redis. An
//! upload the store refuses is answered `503` with `Retry-After` and a JSON error, never
//! `500`; nothing acknowledged is lost, viewers keep playing what is stored, and the refused
//! upload is stored once keys are freed.
//!
//! Needs the component (`sh scripts/build-component`) and `redis-server`. Run:
//! `cargo test --release -p chalkstream-host --test kv_limits`.

mod common;

use std::time::Duration;

use common::ll_check;
use common::*;

/// Fermyon Cloud's limits, with a key budget of 40 instead of 1,024.
const LIMITS: &str = "fermyon-cloud,keys=40";
/// Keys something else holds in the store when the stream starts (freed later).
const OTHER_KEYS: usize = 10;

/// Uploads small 2 s segments from seq 0 on until the store refuses one for good; returns the
/// seqs acknowledged, the refusal and its seq. A write refused after the segment's commit point
/// still answers 503 and its retry `200`: that one counts as acknowledged.
fn fill(host: &Host, session: &str) -> (Vec<u64>, Resp, u64) {
    let mut acked = Vec::new();
    let mut seq = 0;
    let mut refusals = 0;
    loop {
        let resp = host.upload(session, seq, "2", None, &ts_packets(4, seq));
        match resp.status {
            200 | 201 => {
                acked.push(seq);
                seq += 1;
                refusals = 0;
            }
            503 if refusals == 0 => refusals += 1,
            _ => return (acked, resp, seq),
        }
        assert!(seq < 100, "the store never filled up");
    }
}

/// The whole story on one host; `free` deletes the other keys.
fn full_store_then_recovery(host: &Host, free: impl FnOnce()) {
    let session = new_session();
    let id = stream_id(&session);
    let (mut acked, refused, refused_seq) = fill(host, &session);
    assert!(acked.len() >= 3, "the store filled too early: {refused}");

    // 503 with Retry-After and a JSON error that says the store refused it; no secret in it.
    assert_eq!(refused.status, 503, "{refused}");
    let retry_after: u32 = refused.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    let error = refused.json()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("full") && error.contains("refused") && error.contains("retried"), "{error}");
    assert!(!refused.text().contains(&session));
    assert!(!host.log().contains(&session), "the host logged the session");

    // Still full: retries are 503 too, never acknowledged.
    let again = host.upload(&session, refused_seq, "2", None, &ts_packets(4, refused_seq));
    assert_eq!(again.status, 503, "{again}");

    // Viewers keep playing what is stored.
    let (_, playlist) = host.playlist(&id);
    assert_eq!(playlist.seqs(), acked, "a full store lost an acknowledged segment");
    for &seq in &acked {
        let chunk = host.get(&format!("/chunks/{id}/{seq}.ts"));
        assert_eq!(chunk.status, 200, "{chunk}");
        assert_eq!(chunk.body, ts_packets(4, seq));
    }
    assert_eq!(host.status(&id)["state"], "live");

    // Keys are freed: the retried upload is stored, and the stream goes on.
    free();
    let retried = host.upload(&session, refused_seq, "2", None, &ts_packets(4, refused_seq));
    assert_eq!(retried.status, 201, "after keys were freed: {retried}");
    acked.push(refused_seq);
    let next = host.upload(&session, refused_seq + 1, "2", None, &ts_packets(4, refused_seq + 1));
    assert_eq!(next.status, 201, "after keys were freed: {next}");
    acked.push(refused_seq + 1);
    let (_, playlist) = host.playlist(&id);
    assert_eq!(playlist.seqs(), acked);
}

#[test]
fn fermyon_cloud_limits_on_sqlite_a_full_store_answers_503_and_takes_uploads_once_keys_are_freed() {
    let host = Host::with_args(&[], &["--kv-limits", LIMITS]);
    let says = "key-value limits: at most 40 keys per store, values of 1000000 bytes, keys of 255 bytes";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !host.log().contains(says) {
        assert!(std::time::Instant::now() < deadline, "the host does not say its limits:\n{}", host.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let db = rusqlite::Connection::open(host.state_dir().join("sqlite_key_value.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    for n in 0..OTHER_KEYS {
        db.execute("INSERT INTO spin_key_value (store, key, value) VALUES ('default', ?1, x'00')", [format!("other/{n}")])
            .unwrap();
    }
    full_store_then_recovery(&host, || {
        db.execute("DELETE FROM spin_key_value WHERE store = 'default' AND key LIKE 'other/%'", []).unwrap();
    });
    let rows = host.kv_rows();
    assert!(rows.len() <= 40, "{} keys", rows.len());
}

#[test]
fn fermyon_cloud_limits_on_redis_a_full_store_answers_503_and_takes_uploads_once_keys_are_freed() {
    let redis = RedisServer::start();
    let dir = tempfile::Builder::new().prefix("chalkstream-kv-limits-").tempdir().unwrap();
    let toml = format!("[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n", redis.url());
    let config = write_runtime_config(dir.path(), "runtime-config.toml", &toml);
    let host = Host::with_args(&[], &["--runtime-config-file", config.to_str().unwrap(), "--kv-limits", LIMITS]);
    let mut conn = redis.connect();
    for n in 0..OTHER_KEYS {
        redis::cmd("SET").arg(format!("other/{n}")).arg(b"\0").query::<()>(&mut conn).unwrap();
    }
    full_store_then_recovery(&host, || {
        for n in 0..OTHER_KEYS {
            redis::cmd("DEL").arg(format!("other/{n}")).query::<()>(&mut conn).unwrap();
        }
    });
    assert!(redis.dump().len() <= 40, "{} keys", redis.dump().len());
}

/// A segment larger than 1,000,000 bytes on Fermyon Cloud. Regression: it was sliced at 1 MiB
/// (`PART_LEN`, manifest/src/segment.rs), over the platform's 1 MB values, so the store refused
/// it (503 for ever); slices are now at most 1,000,000 bytes.
#[test]
fn fermyon_cloud_limits_take_a_segment_over_one_megabyte() {
    let host = Host::with_args(&[], &["--kv-limits", "fermyon-cloud"]);
    let session = new_session();
    let body = ts_packets(1_100_000 / TS_PACKET, 1);
    let resp = host.upload(&session, 0, "2", None, &body);
    assert_eq!(resp.status, 201, "{resp}");
    assert_eq!(host.get(&format!("/chunks/{}/0.ts", stream_id(&session))).body, body);
}

/// Retention of [`two_default_low_latency_streams_stay_within_fermyon_clouds_limits`], minutes.
const ENVELOPE_RETENTION_MIN: f64 = 0.5;
/// Packets per part of its two streams: 720p's 2.6 Mbit/s and 1080p's 5.1 Mbit/s in six parts
/// of a 2 s segment (109,604 and 213,380 bytes; a 1080p segment needs two values).
const ENVELOPE_PACKETS: [usize; 2] = [583, 1135];

/// Item 2's steady state: two low-latency streams shaped like the default (2 s segments of six
/// 1/3 s parts, one at 720p's bitrate and one at 1080p's) stream in real time on Fermyon Cloud's
/// limits (1,024 keys, 1,000,000-byte values) for longer than retention plus the sweep bound
/// (half a minute + one): no upload is refused; every playlist a viewer gets passes the LL
/// rules, its sequences never go back, and it lists every acknowledged segment until it
/// expires; and each stream holds what its layout says (a sealed segment two keys, three at
/// 1080p, plus the part keys of the part window), not one key per part and slice for its
/// retention, which would not fit ten minutes of one stream in 1,024.
#[test]
fn two_default_low_latency_streams_stay_within_fermyon_clouds_limits() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;

    let run = Duration::from_secs_f64(ENVELOPE_RETENTION_MIN * 60.0 + 62.0);
    let retention = Duration::from_secs_f64(ENVELOPE_RETENTION_MIN * 60.0);
    let host = Host::with_args(&[("stream_retention", &ENVELOPE_RETENTION_MIN.to_string())], &["--kv-limits", "fermyon-cloud"]);
    let sessions = [new_session(), new_session()];
    let ids: Vec<String> = sessions.iter().map(|s| stream_id(s)).collect();
    // Per stream: (seq, when its commit was acknowledged).
    let acked: [Mutex<Vec<(u64, Instant)>>; 2] = [Mutex::new(Vec::new()), Mutex::new(Vec::new())];
    let done = AtomicBool::new(false);
    let start = Instant::now();
    let (mut playlists, mut most_keys, mut most_per_stream, mut largest) = (0usize, 0usize, [0usize; 2], 0usize);

    std::thread::scope(|s| {
        for (i, session) in sessions.iter().enumerate() {
            let (host, acked) = (&host, &acked[i]);
            s.spawn(move || {
                let mut seq = 0u64;
                while start.elapsed() < run {
                    for part in 0..6u32 {
                        let due = start + Duration::from_millis(seq * 2_000 + u64::from(part + 1) * 333);
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                        let duration = if part == 5 { "0.335" } else { "0.333" };
                        let body = ts_packets(ENVELOPE_PACKETS[i], seq * 8 + u64::from(part));
                        let resp = host.upload_part(session, seq, part, duration, "0.335", "2", &body);
                        assert_eq!(resp.status, 201, "stream {i}, part {seq}.{part}: {resp}");
                    }
                    let resp = host.commit(session, seq, 6);
                    assert_eq!(resp.status, 201, "stream {i}, commit {seq}: {resp}");
                    acked.lock().unwrap().push((seq, Instant::now()));
                    seq += 1;
                }
            });
        }
        let (done, acked, host, ids) = (&done, &acked, &host, &ids);
        let (playlists, most_keys, most_per_stream, largest) = (&mut playlists, &mut most_keys, &mut most_per_stream, &mut largest);
        s.spawn(move || {
            let mut last_seen = [(0u64, 0u64); 2];
            let mut last_keys_read = Instant::now();
            while !done.load(Ordering::Relaxed) && start.elapsed() < run {
                for (i, id) in ids.iter().enumerate() {
                    let asked = Instant::now();
                    // Acknowledged a moment before this request, and not near expiry.
                    let must_list: Vec<u64> = acked[i]
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|(_, at)| asked.duration_since(*at) > Duration::from_millis(200) && at.elapsed() + Duration::from_secs(3) < retention)
                        .map(|(seq, _)| *seq)
                        .collect();
                    let resp = host.get(&format!("/playlist/{id}.m3u8"));
                    if resp.status == 404 && must_list.is_empty() {
                        continue;
                    }
                    assert_eq!(resp.status, 200, "stream {i}: {resp}");
                    let p = ll_check::check(&resp.text());
                    *playlists += 1;
                    let seen = (p.media_sequence, p.discontinuity_sequence);
                    assert!(seen.0 >= last_seen[i].0 && seen.1 >= last_seen[i].1, "stream {i}: sequences went back: {seen:?} after {:?}", last_seen[i]);
                    last_seen[i] = seen;
                    let listed = p.seqs();
                    for seq in must_list {
                        assert!(listed.contains(&seq), "stream {i}: acknowledged seq {seq} is not listed: {listed:?}");
                    }
                }
                if last_keys_read.elapsed() > Duration::from_secs(3) {
                    last_keys_read = Instant::now();
                    let rows = host.kv_rows();
                    *most_keys = (*most_keys).max(rows.len());
                    *largest = (*largest).max(rows.iter().map(|r| r.value.len()).max().unwrap_or(0));
                    // Steady state: past one retention, what the stream holds no longer grows.
                    if start.elapsed() > retention + Duration::from_secs(10) {
                        for (i, id) in ids.iter().enumerate() {
                            let held = rows.iter().filter(|r| r.key.contains(id.as_str())).count();
                            most_per_stream[i] = most_per_stream[i].max(held);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(400));
            }
        });
        // The uploaders end when `run` has passed; the reader stops with them.
        std::thread::sleep(run);
        done.store(true, Ordering::Relaxed);
    });

    for (i, id) in ids.iter().enumerate() {
        let acked = acked[i].lock().unwrap();
        assert!(acked.len() as f64 >= run.as_secs_f64() / 2.0 - 3.0, "stream {i} kept up: {} segments", acked.len());
        let resp = host.end(&sessions[i]);
        assert_eq!(resp.status, 200, "{resp}");
        let (resp, _) = host.playlist(id);
        ll_check::check(&resp.text());
    }
    // A sealed segment keeps its meta and folded body (two values at 1080p), so a stream holds
    // about retention / 2 s of them, plus the part window's part keys (records and bytes of six
    // parts for about seven segments) and a few records; one key per part and slice for the
    // whole retention (7 a segment) would be 105 + that.
    let segments = (retention.as_secs_f64() / 2.0).ceil() as usize + 2;
    for (i, &held) in most_per_stream.iter().enumerate() {
        let bound = segments * (2 + i) + 7 * 12 + 8;
        assert!(held > 0 && held <= bound, "stream {i} held {held} keys in steady state, over {bound}");
    }
    assert!(playlists >= 100, "only {playlists} playlists read");
    assert!(most_keys <= 1_024, "{most_keys} keys");
    assert!(largest <= 1_000_000 && largest > 200_000, "largest value {largest} bytes");
    eprintln!(
        "two streams for {} s: {playlists} playlists checked, at most {most_keys} keys at once, {:?} per stream in steady state, largest value {largest} bytes",
        run.as_secs(),
        most_per_stream
    );
}
