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
