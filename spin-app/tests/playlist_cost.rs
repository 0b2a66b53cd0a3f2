//! Where the time of a long `EVENT` playlist GET goes, natively on the memory store: key-value
//! reads, JSON parsing of the stored meta pages, the window walk and the rendering (the way
//! without stored lines), and the GET as served (stored lines), each timed on its own for 10,
//! 600 and 3600 stored segments. It prints a table (`cargo test --release -p
//! chalkstream-spin-app --test playlist_cost -- --nocapture`) and asserts only what could be
//! wrong (both ways give the same bytes), never a speed.

mod common;

use chalkstream_manifest::id::StreamId;
use chalkstream_manifest::playlist;
use chalkstream_manifest::rules::Retention;
use chalkstream_manifest::segment::SegmentMeta;
use chalkstream_spin_app::kv::{Kv, KvError, MemoryKv};
use chalkstream_spin_app::store::Streams;
use common::*;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The memory store, counting reads and the bytes they return.
#[derive(Default)]
struct Counted {
    inner: MemoryKv,
    gets: AtomicUsize,
    bytes: AtomicUsize,
}

impl Kv for Counted {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let value = self.inner.get(key)?;
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(value.as_ref().map_or(0, Vec::len), Ordering::Relaxed);
        Ok(value)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.inner.delete(key)
    }
}

/// Median wall time of `f` over `runs` calls, in microseconds.
fn median_us(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

#[test]
fn where_the_time_of_a_long_event_playlist_goes() {
    let c = config(Retention::Forever, 3_600_000);
    let id = stream_id(SECRET);
    let sid = StreamId::parse(&id).unwrap();
    let kv = Counted::default();
    let mut stored = 0u64;
    println!("\n| stored | GET: KV reads | GET: KV bytes | meta pages: reads only (µs) | meta pages: JSON parse (µs) | view (µs) | render (µs) | stored lines: Streams::playlist (µs) | of which check_lines (µs) | GET handler (µs) | playlist bytes |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for count in [10u64, 600, 3600] {
        while stored < count {
            let seq = stored;
            let headers = [("X-Duration", "1.000")];
            assert_eq!(put_with(&kv, &c, SECRET, seq, &headers, &ts(1, 0), T0 + seq as i64 * 1000).status, 201);
            stored += 1;
        }
        let now = T0 + count as i64 * 1000;
        let streams = Streams::new(&kv, &c);
        kv.gets.store(0, Ordering::Relaxed);
        kv.bytes.store(0, Ordering::Relaxed);
        let reply = playlist(&kv, &c, &id, now);
        assert_eq!(reply.status, 200);
        let (reads, bytes) = (kv.gets.load(Ordering::Relaxed), kv.bytes.load(Ordering::Relaxed));
        let text = text(&kv, &reply);
        assert_eq!(listed_seqs(&text), (0..count).collect::<Vec<_>>());

        let pages: Vec<Vec<u8>> =
            (0..count / 64).map(|n| kv.inner.get(&format!("page/{id}/{n}")).unwrap().expect("page stored")).collect();
        let reads_only = median_us(30, || {
            for n in 0..count / 64 {
                black_box(kv.inner.get(&format!("page/{id}/{n}")).unwrap());
            }
            for seq in count / 64 * 64..count {
                black_box(kv.inner.get(&format!("seg/{id}/{seq}/meta")).unwrap());
            }
        });
        let parse = median_us(30, || {
            for page in &pages {
                black_box(serde_json::from_slice::<Vec<SegmentMeta>>(page).unwrap());
            }
        });
        let view = streams.view(&sid, now).unwrap().unwrap();
        let view_us = median_us(30, || {
            black_box(streams.view(&sid, now).unwrap());
        });
        let render_us = median_us(30, || {
            black_box(playlist::render(&id, &view));
        });
        assert_eq!(playlist::render(&id, &view), text, "stored lines give the renderer's bytes");
        let lines_us = median_us(30, || {
            black_box(streams.playlist(&sid, now).unwrap());
        });
        // The blocks a GET copies, checked again on their own.
        let mut blocks = Vec::new();
        let mut seq = 0;
        'walk: while seq < count {
            for len in [512u64, 64, 8] {
                if seq % len == 0 && seq + len <= count {
                    if let Some(text) = kv.inner.get(&format!("lines/{id}/{len}/{}", seq / len)).unwrap() {
                        blocks.push((seq, len, String::from_utf8(text).unwrap()));
                        seq += len;
                        continue 'walk;
                    }
                }
            }
            seq += 1;
        }
        let check_us = median_us(30, || {
            for (first, len, text) in &blocks {
                assert!(playlist::check_lines(&id, *first, *len, text));
            }
        });
        let handler_us = median_us(30, || {
            black_box(playlist(&kv, &c, &id, now));
        });
        println!(
            "| {count} | {reads} | {bytes} | {reads_only:.0} | {parse:.0} | {view_us:.0} | {render_us:.0} | {lines_us:.0} | {check_us:.0} | {handler_us:.0} | {} |",
            text.len()
        );
    }
}
