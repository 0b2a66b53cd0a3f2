//! Issue 11: the extension never sends two bodies under one seq. The real upload queue against
//! the real store: a segment is sent, its answer never comes (the client times out), the
//! outage buffer overflows, and the server completes the lost request late. No acknowledged
//! segment is replaced, the playlist moves on, and the viewer sees one discontinuity.

mod common;

use chalkstream_extension::queue::{classify, Backoff, UploadQueue};
use chalkstream_manifest::rules::Retention;
use chalkstream_spin_app::kv::MemoryKv;
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
    let send = |q: &mut UploadQueue<Vec<u8>>, now: u64, deliver: bool| -> Option<(u64, Vec<u8>, u16)> {
        let s = q.next(now)?;
        let (seq, payload, disc) = (s.seq, s.payload.clone(), s.discontinuity);
        let mut headers = vec![("X-Duration", "2")];
        if disc {
            headers.push(("X-Discontinuity", "1"));
        }
        let status = if deliver {
            put_with(&kv, &c, SECRET, seq, &headers, &payload, T0 + now as i64).status
        } else {
            0
        };
        Some((seq, payload, status))
    };

    // Segment 0 goes out; its answer is lost (the client's timeout), the server is slow.
    q.push(body_of(0), 2000);
    let (seq, lost, _) = send(&mut q, now, false).unwrap();
    assert_eq!(seq, 0);
    q.settle(classify(None), now, 0.5);
    // The outage fills the buffer past its bound: something must go.
    for name in 1..=5 {
        q.push(body_of(name), 2000);
    }
    assert_eq!(q.dropped, 1);
    // The lost request completes on the server now, late.
    assert_eq!(put(&kv, &c, SECRET, seq, "2", &lost, T0 + 5000).status, 201);

    // The client drains its queue; every answer is an acknowledgement, never a conflict.
    let mut acked = Vec::new();
    while q.waiting() > 0 {
        now += 5000;
        let Some((seq, payload, status)) = send(&mut q, now, true) else { continue };
        assert!(status == 200 || status == 201, "seq {seq}: {status}");
        q.settle(classify(Some(status)), now, 0.5);
        acked.push((seq, payload));
    }
    assert_eq!(acked.iter().map(|a| a.0).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);

    let text = text(&kv, &playlist(&kv, &c, &id, T0 + now as i64));
    assert_eq!(listed_seqs(&text), vec![0, 1, 2, 3, 4], "the playlist moved on:\n{text}");
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "one discontinuity, where a segment was dropped:\n{text}");
    // Each acknowledged seq serves the bytes acknowledged for it: seq 0 is segment 0.
    for (seq, payload) in &acked {
        let reply = get(&kv, &c, &format!("/chunks/{id}/{seq}.ts"), T0 + now as i64);
        assert_eq!(&body(&kv, &reply), payload, "seq {seq}");
    }
    assert_eq!(acked[0].1, lost);
}
