//! Issue 11: the extension never sends two bodies under one seq. The real upload queue against
//! the real store: a segment is sent, its answer never comes (the client times out), the
//! outage buffer overflows and drops it, and the server completes the lost request late —
//! before the client's gap for that seq (here; after it: `tests/gap.rs`). No acknowledged
//! segment is replaced, the playlist moves on, and the viewer sees one discontinuity.

mod common;

use chalkstream_pipeline::queue::{classify, Backoff, GapSettled, UploadQueue};
use chalkstream_manifest::rules::Retention;
use chalkstream_manifest::wire;
use chalkstream_spin_app::kv::MemoryKv;
use chalkstream_spin_app::route::Method;
use common::*;

fn body_of(name: u8) -> Vec<u8> {
    ts(3, name)
}

#[test]
fn regression_issue_11_a_sent_segment_completed_late_is_never_replaced() {
    let kv = MemoryKv::new();
    let c = config(Retention::Millis(600_000), 30_000);
    let id = stream_id(SECRET);
    // A 10 s outage buffer, 2 s segments.
    let mut q: UploadQueue<Vec<u8>> = UploadQueue::new(Backoff::default(), 10_000);
    let mut now = 0u64;

    // Segment 0 goes out; its answer is lost (the client's timeout), the server is slow.
    q.push(body_of(0), 2000);
    let s = q.next(now).unwrap();
    let (seq, lost) = (s.seq, s.payload.clone());
    assert_eq!(seq, 0);
    q.settle(classify(None), now, 0.5);
    // The outage fills the buffer past its bound: segment 0, the oldest, goes; seq 0 is left
    // to a gap, never to other bytes.
    for name in 1..=5 {
        q.push(body_of(name), 2000);
    }
    assert_eq!((q.dropped(), q.gaps_waiting()), (1, 1));
    // The lost request completes on the server now, late.
    assert_eq!(put(&kv, &c, SECRET, seq, "2", &lost, T0 + 5000).status, 201);

    // The client drains its queue: the gap finds the segment stored (409: acknowledged after
    // all), then every upload is acknowledged, never a conflict.
    let mut acked = vec![(0, lost.clone())];
    while q.waiting() > 0 {
        now += 5000;
        if let Some(gap) = q.next_gap(now) {
            let h = head(Method::Post, &wire::ingest_gap_path(SECRET, gap.seq), &[(wire::DURATION, "2")]);
            let status = request(&kv, &c, &h, b"", T0 + now as i64).status;
            assert_eq!(status, 409, "the late upload holds seq {}", gap.seq);
            assert!(matches!(q.settle_gap(classify(Some(status)), now, 0.5), GapSettled::SegmentHeld(_)));
            continue;
        }
        let Some(s) = q.next(now) else { continue };
        let (seq, payload, disc) = (s.seq, s.payload.clone(), s.discontinuity);
        let mut headers = vec![("X-Duration", "2")];
        if disc {
            headers.push(("X-Discontinuity", "1"));
        }
        let status = put_with(&kv, &c, SECRET, seq, &headers, &payload, T0 + now as i64).status;
        assert!(status == 200 || status == 201, "seq {seq}: {status}");
        q.settle(classify(Some(status)), now, 0.5);
        acked.push((seq, payload));
    }
    assert_eq!(acked.iter().map(|a| a.0).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5]);

    let text = text(&kv, &playlist(&kv, &c, &id, T0 + now as i64));
    assert_eq!(listed_seqs(&text), vec![0, 1, 2, 3, 4, 5], "the playlist moved on:\n{text}");
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "one discontinuity, where a segment was dropped:\n{text}");
    assert!(!text.contains("#EXT-X-GAP"), "the segment landed, so no gap:\n{text}");
    // Each acknowledged seq serves the bytes acknowledged for it: seq 0 is segment 0.
    for (seq, payload) in &acked {
        let reply = get(&kv, &c, &format!("/chunks/{id}/{seq}.ts"), T0 + now as i64);
        assert_eq!(&body(&kv, &reply), payload, "seq {seq}");
    }
}
