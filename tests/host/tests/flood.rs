//! Issue 11 over real HTTP: the reverse-order flood (5000 tiny 0.1 s segments uploaded seq 4999
//! down to 0) against the built component in `chalkstream-host`. Every seq 64 or more past the
//! first unstored one is refused with `429` and `Retry-After`, so nothing is stored beyond the
//! hole that later requests would have to walk; the stream then reads, ends and serves exactly
//! like a 64-segment stream.
//!
//! Run: `sh scripts/build-component && cargo test --release -p chalkstream-host --test flood`.

mod common;

use common::*;

const FLOOD: u64 = 5000;
/// `chalkstream_spin_app::store::MAX_AHEAD`, as the wire contract documents it.
const MAX_AHEAD: u64 = 64;

#[test]
fn regression_issue_11_reverse_order_flood_over_http_is_refused_past_the_hole() {
    for retention in ["10", "0"] {
        let host = Host::with_vars(&[("stream_retention", retention)]);
        let session = new_session();
        let id = stream_id(&session);
        let mut stored = 0;
        for seq in (0..FLOOD).rev() {
            let resp = host.upload(&session, seq, "0.1", None, &ts_packets(1, seq));
            match resp.status {
                201 => stored += 1,
                429 => {
                    assert!(seq >= MAX_AHEAD, "{resp}");
                    assert_eq!(resp.header("retry-after"), Some("1"), "{resp}");
                }
                _ => panic!("retention {retention}, seq {seq}: {resp}"),
            }
        }
        assert_eq!(stored, MAX_AHEAD, "retention {retention}");

        // Nothing beyond the hole was stored: one meta and one body per stored segment.
        let metas = host.kv_with_prefix(&format!("seg/{id}/")).into_iter().filter(|r| r.key.ends_with("/meta")).count();
        assert_eq!(metas as u64, MAX_AHEAD, "retention {retention}");

        let (_, playlist) = host.playlist(&id);
        assert_eq!(playlist.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), (0..MAX_AHEAD).collect::<Vec<_>>());
        assert_eq!(playlist.media_sequence.unwrap_or(0), 0);
        assert_eq!(host.status(&id)["segments"].as_u64(), Some(MAX_AHEAD), "retention {retention}");
        host.end(&session).assert_status(200);
        let (_, ended) = host.playlist(&id);
        assert!(ended.ended, "retention {retention}");
        assert_eq!(ended.entries.len() as u64, MAX_AHEAD);
        host.get(&format!("/chunks/{id}/{}.ts", MAX_AHEAD - 1)).assert_status(200);
        host.get(&format!("/chunks/{id}/{MAX_AHEAD}.ts")).assert_status(404);
    }
}
