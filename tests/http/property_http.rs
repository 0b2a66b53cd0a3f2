//! Issue 11's property test over real HTTP: the generator of `spin-app/tests/property.rs` (random
//! v1 or v2 interleavings of uploads in and out of order, duplicates, other bodies, flags,
//! ends, seqs too far ahead, reads, and real time passing for retention and the idle timeout)
//! against the built component in `chalkstream-host`, checking after every read that no answer
//! is a `5xx`, both sequences never go back, the discontinuity sequence is exactly the
//! flagged metas before the window (read from the host's SQLite file), and every acknowledged
//! seq from the window start up to the first unacknowledged one is listed and serves its bytes.
//!
//! `cargo test` runs a few cases from a fixed seed. For a longer run, with a random seed:
//! `CHALKSTREAM_PROPERTY_SECS=180 cargo test --release -p chalkstream-host --test property_http -- --nocapture`
//! (run for about that many seconds) or `CHALKSTREAM_PROPERTY_CASES=N` (stop after N cases;
//! with both, whichever comes first) prints how many cases it tried. `scripts/bench` runs it
//! for 3 minutes (a few seconds with `--smoke`) and reports the count (`bench/reads.mjs`).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Playlists checked (answered `200`), so the run shows it checked something.
static CHECKED: AtomicU64 = AtomicU64::new(0);

/// `chalkstream_spin_app::store::MAX_AHEAD`.
const MAX_AHEAD: u64 = 64;

struct Rng(u64);

impl Rng {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next(100) < percent
    }
}

#[derive(Default)]
struct Model {
    /// Acknowledged seqs: the bytes (for whole segments) or `None` (sealed from parts).
    acked: BTreeMap<u64, Option<Vec<u8>>>,
    /// v2: parts acknowledged from part 0 on, per seq.
    parts: BTreeMap<u64, u32>,
    last: Option<(u64, u64)>,
}

fn body(seq: u64, variant: u64) -> Vec<u8> {
    ts_packets(2, seq * 16 + variant)
}

/// The decided discontinuity flag of each stored meta of stream `id`, from the SQLite file.
fn stored_flags(host: &Host, id: &str) -> BTreeMap<u64, bool> {
    host.kv_with_prefix(&format!("seg/{id}/"))
        .into_iter()
        .filter(|r| r.key.ends_with("/meta"))
        .map(|r| {
            let meta: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
            (meta["seq"].as_u64().unwrap(), meta["discontinuity"].as_bool().unwrap())
        })
        .collect()
}

fn check(host: &Host, id: &str, model: &mut Model, flags: &mut BTreeMap<u64, bool>) {
    let resp = host.get(&format!("/playlist/{id}.m3u8"));
    assert!(resp.status == 200 || resp.status == 404, "{resp}");
    if resp.status == 404 {
        return;
    }
    let playlist = Playlist::parse(&resp.text());
    let media = playlist.media_sequence.unwrap_or(0);
    let disc = playlist.discontinuity_sequence.unwrap_or(0);
    if let Some((m, d)) = model.last {
        assert!(media >= m, "media sequence went back: {m} then {media}\n{}", playlist.text);
        assert!(disc >= d, "discontinuity sequence went back: {d} then {disc}\n{}", playlist.text);
    }
    model.last = Some((media, disc));
    CHECKED.fetch_add(1, Ordering::Relaxed);
    // Flags of metas since deleted were read while they were stored.
    flags.extend(stored_flags(host, id));
    if (0..media).all(|s| flags.contains_key(&s)) {
        let expected = flags.range(..media).filter(|(_, f)| **f).count() as u64;
        assert_eq!(disc, expected, "discontinuity sequence at {media}\n{}", playlist.text);
    }
    let listed: Vec<u64> = playlist.entries.iter().map(|e| e.seq).collect();
    let mut seq = media;
    while let Some(bytes) = model.acked.get(&seq) {
        assert!(listed.contains(&seq), "acknowledged seq {seq} missing\n{}", playlist.text);
        if let Some(bytes) = bytes {
            let chunk = host.get(&format!("/chunks/{id}/{seq}.ts"));
            if chunk.status == 200 {
                assert!(&chunk.body == bytes, "seq {seq} serves other bytes");
            }
        }
        seq += 1;
    }
    for entry in &playlist.entries {
        if let Some(flag) = flags.get(&entry.seq) {
            assert_eq!(entry.discontinuity, *flag, "the tag of seq {}\n{}", entry.seq, playlist.text);
        }
    }
    let status = host.get(&format!("/api/streams/{id}"));
    assert!(status.status < 500, "{status}");
}

fn run_case(host: &Host, rng: &mut Rng) {
    let session = new_session();
    let id = stream_id(&session);
    let v2 = rng.chance(50);
    let mut model = Model::default();
    let mut flags = BTreeMap::new();
    let ops = 10 + rng.next(50);
    for _ in 0..ops {
        // Mostly just past the first unacknowledged seq (as a client uploads), sometimes
        // anywhere, sometimes too far ahead.
        let cursor = (0..).find(|s| !model.acked.contains_key(s)).unwrap_or(0);
        let seq = match rng.next(10) {
            0..=6 => cursor + rng.next(3),
            7 | 8 => rng.next(cursor + 8),
            _ => rng.next(MAX_AHEAD + 30),
        };
        match rng.next(12) {
            0..=5 if !v2 => {
                let bytes = body(seq, rng.next(2));
                let mut headers = vec![("X-Duration", if rng.chance(50) { "1" } else { "2" })];
                if rng.chance(15) {
                    headers.push(("X-Discontinuity", "1"));
                }
                let resp = host.put_segment(&session, seq, &headers, &bytes);
                assert!(resp.status < 500, "{resp}");
                if resp.status == 429 {
                    assert_eq!(resp.header("retry-after"), Some("1"), "{resp}");
                }
                if resp.status == 200 || resp.status == 201 {
                    if let Some(Some(acked)) = model.acked.get(&seq) {
                        assert!(*acked == bytes, "seq {seq} acknowledged with other bytes");
                    }
                    model.acked.insert(seq, Some(bytes));
                }
            }
            0..=3 => {
                let next = model.parts.get(&seq).copied().unwrap_or(0);
                let part = if rng.chance(80) { next.min(3) } else { rng.next(4) as u32 };
                let mut headers = vec![
                    ("X-Duration", "0.250"),
                    ("X-Part-Target", "0.250"),
                    ("X-Target-Duration", "1"),
                    ("X-Independent", if part == 0 { "1" } else { "0" }),
                ];
                if part == 0 && rng.chance(15) {
                    headers.push(("X-Discontinuity", "1"));
                }
                let variant = if rng.chance(90) { 0 } else { 1 };
                let resp = host.put_part(&session, seq, part, &headers, &body(seq * 4 + u64::from(part), variant));
                assert!(resp.status < 500, "{resp}");
                if (resp.status == 200 || resp.status == 201) && part == next {
                    model.parts.insert(seq, next + 1);
                }
            }
            4 | 5 => {
                let stored = model.parts.get(&seq).copied().unwrap_or(0);
                let count = if stored > 0 && rng.chance(80) { stored } else { 1 + rng.next(4) as u32 };
                let resp = host.commit(&session, seq, count);
                assert!(resp.status < 500, "{resp}");
                if resp.status == 200 || resp.status == 201 {
                    model.acked.entry(seq).or_insert(None);
                }
            }
            6 => {
                let resp = host.end(&session);
                assert!(resp.status < 500, "{resp}");
            }
            7..=9 => check(host, &id, &mut model, &mut flags),
            _ => std::thread::sleep(Duration::from_millis(rng.next(800))),
        }
    }
    check(host, &id, &mut model, &mut flags);
}

#[test]
fn property_over_http_sequences_and_acknowledgements_hold() {
    let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok()).filter(|n| *n > 0);
    let (secs, max_cases) = (env("CHALKSTREAM_PROPERTY_SECS"), env("CHALKSTREAM_PROPERTY_CASES"));
    let seed = if secs.is_some() || max_cases.is_some() { now_ms() | 1 } else { 0x11_2026_1130 };
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut cases = 0u64;
    let enough = |cases: u64| match (secs, max_cases) {
        (None, None) => cases >= 8,
        (secs, max_cases) => {
            secs.is_some_and(|s| started.elapsed() >= Duration::from_secs(s)) || max_cases.is_some_and(|n| cases >= n)
        }
    };
    // Retention 3 s (real time passes) and retention 0; idle timeout 2 s. A host per 4 cases.
    'hosts: for retention in ["0.05", "0"].iter().cycle() {
        let host = Host::with_vars(&[("stream_retention", retention), ("idle_timeout", "2")]);
        for _ in 0..4 {
            run_case(&host, &mut rng);
            cases += 1;
            if enough(cases) {
                break 'hosts;
            }
        }
    }
    let checked = CHECKED.load(Ordering::Relaxed);
    // bench/reads.mjs parses this line.
    eprintln!("property over HTTP: {cases} cases, {checked} playlists checked (seed {seed:#x}) in {:.0?}", started.elapsed());
    assert!(checked >= cases, "too few playlists were listed to check");
}
