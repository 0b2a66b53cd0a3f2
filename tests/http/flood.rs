//! Issue 11 over real HTTP: the reverse-order flood (5000 tiny 0.1 s segments uploaded seq 4999
//! down to 0) against the built component in `chalkstream-host`. Every seq 64 or more past the
//! first unstored one is refused with `429` and `Retry-After`, so nothing is stored beyond the
//! hole that later requests would have to walk; the stream then reads, ends and serves exactly
//! like a 64-segment stream.
//!
//! And an in-order flood of 1500 tiny segments inside a 10-minute sliding window: the playlist
//! lists the newest 1024 (`MAX_WINDOW_SEGMENTS`), SQLite keeps about that many, and each GET's
//! key-value reads, counted by the host (`CHALKSTREAM_COUNT_KV`), stay within the bound
//! `spin-app/tests/bounds.rs` states: a constant plus the segments listed.
//!
//! Run: `sh scripts/build-component && cargo test --release -p chalkstream-host --test flood -- --nocapture`.

mod common;

use common::*;

const FLOOD: u64 = 5000;
/// `chalkstream_spin_app::store::MAX_AHEAD`, as the wire contract documents it.
const MAX_AHEAD: u64 = 64;
/// `chalkstream_manifest::window::MAX_WINDOW_SEGMENTS`.
const MAX_WINDOW: u64 = 1024;
/// The stated bound on a sliding-window GET's reads besides the segments it lists
/// (`spin-app/tests/bounds.rs`: 73 for the record, hints, end marker, end probe and look-back,
/// 68 for one retention batch), plus the sweep step after the response (1 read when nothing is
/// due).
const WINDOW_READS: u64 = 73 + 68 + 1;

/// The duration of tiny segment `seq`: 0.1 s, every other one 0.5 s, the shortest a stream may
/// keep up (issue 18: a segment under 0.5 s may not follow another one).
fn tiny(seq: u64) -> &'static str {
    if seq % 2 == 0 {
        "0.5"
    } else {
        "0.1"
    }
}

#[test]
fn regression_issue_11_reverse_order_flood_over_http_is_refused_past_the_hole() {
    std::env::set_var("CHALKSTREAM_COUNT_KV", "1");
    for retention in ["10", "0"] {
        let host = Host::with_vars(&[("stream_retention", retention)]);
        let session = new_session();
        let id = stream_id(&session);
        let mut stored = 0;
        // Seq 0 first: the flood is against a stream that exists. A stream with no record (new,
        // or deleted by the sweep) starts its run at its first upload's seq when that is far
        // ahead (issue 18: a session resumes after the sweep), so a reverse flood against no
        // stream stores one segment and refuses the rest as behind the window.
        for seq in std::iter::once(0).chain((1..FLOOD).rev()) {
            let resp = host.upload(&session, seq, tiny(seq), None, &ts_packets(1, seq));
            match resp.status {
                201 => stored += 1,
                429 => {
                    assert!(seq >= MAX_AHEAD, "{resp}");
                    assert_eq!(resp.header("retry-after"), Some("1"), "{resp}");
                }
                _ => panic!("retention {retention}, seq {seq}: {resp}"),
            }
        }
        // Seq 0, then the MAX_AHEAD seqs from the first unstored one (1).
        let kept = 1 + MAX_AHEAD;
        assert_eq!(stored, kept, "retention {retention}");

        // Nothing beyond the hole was stored: one meta and one body per stored segment.
        let metas = host.kv_with_prefix(&format!("seg/{id}/")).into_iter().filter(|r| r.key.ends_with("/meta")).count();
        assert_eq!(metas as u64, kept, "retention {retention}");

        let (_, playlist) = host.playlist(&id);
        assert_eq!(playlist.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), (0..kept).collect::<Vec<_>>());
        let (reads, writes) = kv_cost(&host, &format!("GET /playlist/{id}.m3u8"), 0);
        eprintln!("reverse-order flood, retention {retention}: playlist of {kept} costs {reads} reads, {writes} writes");
        assert!(reads <= WINDOW_READS + kept, "retention {retention}: {reads} reads");
        assert_eq!(playlist.media_sequence.unwrap_or(0), 0);
        assert_eq!(host.status(&id)["segments"].as_u64(), Some(kept), "retention {retention}");
        host.end(&session).assert_status(200);
        let (_, ended) = host.playlist(&id);
        assert!(ended.ended, "retention {retention}");
        assert_eq!(ended.entries.len() as u64, kept);
        host.get(&format!("/chunks/{id}/{}.ts", kept - 1)).assert_status(200);
        host.get(&format!("/chunks/{id}/{kept}.ts")).assert_status(404);
    }
}

#[test]
fn regression_issue_11_in_order_flood_of_tiny_segments_over_http_lists_the_newest_1024_within_the_bound() {
    std::env::set_var("CHALKSTREAM_COUNT_KV", "1");
    const COUNT: u64 = 1500;
    let host = Host::with_vars(&[("stream_retention", "10")]);
    let session = new_session();
    let id = stream_id(&session);
    for seq in 0..COUNT {
        host.upload(&session, seq, tiny(seq), None, &ts_packets(1, seq)).assert_status(201);
    }
    let path = format!("GET /playlist/{id}.m3u8");
    let mut last_media = 0;
    for n in 0..3 {
        let (_, playlist) = host.playlist(&id);
        let seqs: Vec<u64> = playlist.entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (COUNT - MAX_WINDOW..COUNT).collect::<Vec<_>>());
        let media = playlist.media_sequence.unwrap_or(0);
        assert!(media >= last_media && media == COUNT - MAX_WINDOW);
        last_media = media;
        let (reads, writes) = kv_cost(&host, &path, n);
        eprintln!("in-order flood of {COUNT} x 0.1/0.5 s: playlist of {} costs {reads} reads, {writes} writes", seqs.len());
        assert!(reads <= WINDOW_READS + MAX_WINDOW, "{reads} reads");
    }
    assert_eq!(host.status(&id)["segments"].as_u64(), Some(MAX_WINDOW));
    let (reads, _) = kv_cost(&host, &format!("GET /api/streams/{id}"), 0);
    assert!(reads <= WINDOW_READS + MAX_WINDOW, "status: {reads} reads");
    // The count cap deletes below the window as uploads go: SQLite holds about the window.
    let metas = host.kv_with_prefix(&format!("seg/{id}/")).into_iter().filter(|r| r.key.ends_with("/meta")).count() as u64;
    assert!(metas <= MAX_WINDOW + 2, "{metas} metas stored");
    // The oldest listed segment still plays; the one before it is gone.
    host.get(&format!("/chunks/{id}/{}.ts", COUNT - MAX_WINDOW)).assert_status(200);
    host.get(&format!("/chunks/{id}/{}.ts", COUNT - MAX_WINDOW - 1)).assert_status(404);
    host.end(&session).assert_status(200);
    assert!(host.playlist(&id).1.ended);
}
