//! Fuzz targets for the component's untrusted input ("trust under stress"), as proptest runs on a
//! time budget (nightly Rust and `cargo fuzz` are not available on these machines):
//!
//! - `fuzz_route_parse`: [`Route::parse`] on arbitrary paths and paths built from the routes'
//!   pieces, then mutated (`//`, `..`, percent-encoding, Unicode): no panic, values never span a
//!   `/`, and a route written back as a path is the path it came from.
//! - `fuzz_api_requests`: whole requests through [`api::handle`] (and the body step, and held
//!   requests on a fake clock) on a memory store holding nothing, a v1 stream or a live v2
//!   stream: arbitrary method, path, query, headers and body, near-valid ingest headers and
//!   MPEG-TS bodies, directive queries. Never a panic; never a `5xx` unless the store failed
//!   during that request (a wrapper fails every n-th operation in some cases) or a held request
//!   timed out (`503`, rfc8216bis §6.2.5.2); errors are `{"error": …}` JSON, `405` says `Allow`,
//!   `HEAD` has no body, playback and ingest answers carry CORS; and the stream stays readable.
//!
//! Run length: `CHALKSTREAM_FUZZ_SECS` seconds per target (default [`harness::DEFAULT_SECS`]);
//! `scripts/bench --only fuzz` runs each for 600 s. `CHALKSTREAM_FUZZ_SEED` repeats a run. Each
//! target prints `fuzz NAME: N cases in S s, C crashes (A accepted; seed X)`.

mod common;

use chalkstream_manifest::decimal::format_millis;
use chalkstream_manifest::rules::{Config, Retention};
use chalkstream_manifest::time::format_rfc3339_ms;
use chalkstream_spin_app::api::{self, BodyError, RequestHead, Step};
use chalkstream_spin_app::kv::{Kv, KvError, MemoryKv, MAX_KEY_LEN};
use chalkstream_spin_app::reply::{Body, Reply};
use chalkstream_spin_app::route::{Family, Method, Route};
use common::{stream_id, ts, BASE, SECRET, T0};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use std::cell::Cell;

/// The time-budgeted runner (the same in each crate's fuzz targets).
mod harness {
    use proptest::strategy::Strategy;
    use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
    use std::cell::Cell;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    /// Seconds per target when `CHALKSTREAM_FUZZ_SECS` is not set.
    pub const DEFAULT_SECS: f64 = 3.0;
    /// Cases per proptest run; runs repeat until the budget is spent.
    const BATCH: u32 = 64;
    /// A target stops early after this many distinct crashes.
    const MAX_CRASHES: usize = 5;

    thread_local! {
        static ACCEPTED: Cell<u64> = const { Cell::new(0) };
    }

    /// Counts a case whose input was accepted (so a summary shows that the generators reach
    /// the valid space, not only refusals).
    pub fn accepted() {
        ACCEPTED.with(|a| a.set(a.get() + 1));
    }

    fn budget() -> Duration {
        std::env::var("CHALKSTREAM_FUZZ_SECS")
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or(Duration::from_secs_f64(DEFAULT_SECS), Duration::from_secs_f64)
    }

    fn seed(name: &str) -> u64 {
        if let Some(seed) = std::env::var("CHALKSTREAM_FUZZ_SEED").ok().and_then(|s| s.trim().parse().ok()) {
            return seed;
        }
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        // Targets starting in the same nanosecond still get different seeds.
        name.bytes().fold(nanos, |acc, b| acc.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    /// Runs `test` on values of `strategy` until the time budget is spent (at least one batch),
    /// prints the summary line, and fails with every crash's minimal input.
    pub fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
        let budget = budget();
        let seed = seed(name);
        let mut seed_bytes = [0u8; 32];
        seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let config = Config {
            cases: BATCH,
            failure_persistence: None,
            max_shrink_iters: 4096,
            max_shrink_time: 60_000,
            ..Config::default()
        };
        // A runner counts its cases for good, so each batch gets a fresh one, seeded from this.
        let mut seeds = TestRunner::new_with_rng(config.clone(), TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
        let cases = Cell::new(0u64);
        let counted = |value: S::Value| {
            cases.set(cases.get() + 1);
            test(value)
        };
        ACCEPTED.with(|a| a.set(0));
        let start = Instant::now();
        let mut crashes: Vec<(String, String)> = Vec::new();
        loop {
            let mut runner = TestRunner::new_with_rng(config.clone(), seeds.new_rng());
            match runner.run(&strategy, &counted) {
                Ok(()) => {}
                // One entry per distinct panic message or broken property.
                Err(TestError::Fail(reason, minimal)) => {
                    let reason = reason.to_string();
                    if !crashes.iter().any(|(seen, _)| *seen == reason) {
                        crashes.push((reason, format!("{minimal:?}")));
                    }
                }
                Err(TestError::Abort(reason)) => crashes.push((format!("aborted: {reason}"), String::new())),
            }
            if start.elapsed() >= budget || crashes.len() >= MAX_CRASHES {
                break;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let accepted = ACCEPTED.with(Cell::get);
        println!(
            "fuzz {name}: {} cases in {secs:.1} s, {} crashes ({accepted} accepted; seed {seed})",
            cases.get(),
            crashes.len()
        );
        let found: Vec<String> =
            crashes.iter().map(|(reason, input)| format!("{reason}\n    minimal input: {input}")).collect();
        assert!(crashes.is_empty(), "fuzz {name} (seed {seed}) found:\n  {}", found.join("\n  "));
    }
}

// ---- Generators -------------------------------------------------------------------------------

/// Characters that break path, header and query parsers.
const NASTY: &[char] = &[
    '/',
    '/',
    '.',
    '%',
    '?',
    '#',
    '&',
    '=',
    ';',
    ':',
    '0',
    '1',
    '9',
    '-',
    '+',
    '_',
    ' ',
    '\t',
    '\n',
    '\0',
    '\\',
    'T',
    'Z',
    'é',
    '٣',
    '０',
    '\u{feff}',
    '\u{202e}',
    '\u{10ffff}',
    'İ',
];

fn nasty_char() -> BoxedStrategy<char> {
    prop_oneof![4 => select(NASTY), 1 => any::<char>()].boxed()
}

/// One edit of a text, at a position chosen among its characters.
#[derive(Debug, Clone)]
enum Edit {
    Insert(Index, char),
    InsertText(Index, &'static str),
    Delete(Index),
    Replace(Index, char),
    Truncate(Index),
}

fn edit() -> BoxedStrategy<Edit> {
    prop_oneof![
        (any::<Index>(), nasty_char()).prop_map(|(i, c)| Edit::Insert(i, c)),
        (
            any::<Index>(),
            select(&["//", "/../", "/./", "%2F", "%2e%2e", "%00", "%", "%zz", "..", ".ts", "\u{1F4A5}"][..])
        )
            .prop_map(|(i, t)| Edit::InsertText(i, t)),
        any::<Index>().prop_map(Edit::Delete),
        (any::<Index>(), nasty_char()).prop_map(|(i, c)| Edit::Replace(i, c)),
        any::<Index>().prop_map(Edit::Truncate),
    ]
    .boxed()
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        let len = chars.len();
        match edit {
            Edit::Insert(i, c) => chars.insert(i.index(len + 1), *c),
            Edit::InsertText(i, t) => {
                let at = i.index(len + 1);
                chars.splice(at..at, t.chars());
            }
            Edit::Delete(i) if len > 0 => {
                chars.remove(i.index(len));
            }
            Edit::Replace(i, c) if len > 0 => chars[i.index(len)] = *c,
            Edit::Truncate(i) => chars.truncate(i.index(len + 1)),
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// `base` as is (sometimes) or with a few edits.
fn mutated(base: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
    (base, prop::collection::vec(edit(), 0..4)).prop_map(|(text, edits)| apply(&text, &edits)).boxed()
}

/// Any text: arbitrary Unicode, arbitrary bytes read lossily, or printable ASCII.
fn any_text() -> BoxedStrategy<String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..48).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "[ -~]{0,40}",
    ]
    .boxed()
}

fn strs(options: &'static [&'static str]) -> BoxedStrategy<String> {
    select(options).prop_map(str::to_owned).boxed()
}

const OTHER_SECRET: &str = "another-secret-abcdefghijklmnop";

/// A session secret in an ingest path: the seeded stream's, another valid one, or not valid.
fn secret() -> BoxedStrategy<String> {
    prop_oneof![
        6 => Just(SECRET.to_owned()),
        1 => Just(OTHER_SECRET.to_owned()),
        1 => "[A-Za-z0-9_-]{22,24}",
        1 => strs(&["short", "", "secret with spaces and more chars", "%41%41%41%41%41%41%41%41%41%41%41"]),
        1 => mutated(Just(SECRET.to_owned())),
    ]
    .boxed()
}

/// A stream id in a playback path: the seeded stream's, another valid one, or not valid.
fn stream() -> BoxedStrategy<String> {
    let id = stream_id(SECRET);
    prop_oneof![
        6 => Just(id.clone()),
        1 => Just(stream_id(OTHER_SECRET)),
        1 => Just(id.to_ascii_uppercase()),
        1 => "[0-9a-f]{39,41}",
        1 => mutated(Just(id)),
    ]
    .boxed()
}

/// A seq: near the seeded stream's (0..12), far, huge, padded or not a number.
fn seq() -> BoxedStrategy<String> {
    prop_oneof![
        8 => (0u64..14).prop_map(|n| n.to_string()),
        1 => (0u64..=1_000_000_002).prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => strs(&["00", "01", "-1", "+1", "1e3", "", " 1", "１", "99999999999999999999999"]),
        1 => mutated((0u64..14).prop_map(|n| n.to_string())),
    ]
    .boxed()
}

fn part() -> BoxedStrategy<String> {
    prop_oneof![8 => (0u32..8).prop_map(|n| n.to_string()), 1 => (0u32..=70).prop_map(|n| n.to_string()), 1 => seq()]
        .boxed()
}

/// A path built from the routes' pieces (mostly), then maybe mutated, or anything.
fn path() -> BoxedStrategy<String> {
    let built = prop_oneof![
        1 => Just("/".to_owned()),
        1 => stream().prop_map(|s| format!("/play/{s}")),
        1 => strs(&["/assets/player.js", "/assets/hls.min.js", "/assets/nope.js", "/assets/../Cargo.toml", "/assets/"]),
        4 => stream().prop_map(|s| format!("/playlist/{s}.m3u8")),
        3 => (stream(), seq()).prop_map(|(s, q)| format!("/chunks/{s}/{q}.ts")),
        3 => (stream(), seq(), part()).prop_map(|(s, q, p)| format!("/chunks/{s}/{q}.{p}.ts")),
        2 => stream().prop_map(|s| format!("/api/streams/{s}")),
        4 => (secret(), seq()).prop_map(|(s, q)| format!("/ingest/{s}/{q}.ts")),
        4 => (secret(), seq(), part()).prop_map(|(s, q, p)| format!("/ingest/{s}/{q}/{p}.ts")),
        2 => (secret(), seq()).prop_map(|(s, q)| format!("/ingest/{s}/{q}/commit")),
        2 => (secret(), seq()).prop_map(|(s, q)| format!("/ingest/{s}/{q}/gap")),
        1 => secret().prop_map(|s| format!("/ingest/{s}/end")),
        1 => Just("/admin/sweep".to_owned()),
    ];
    prop_oneof![
        6 => built.clone(),
        3 => mutated(built),
        1 => any_text(),
        1 => any_text().prop_map(|t| format!("/{t}")),
    ]
    .boxed()
}

fn query() -> BoxedStrategy<String> {
    let number = prop_oneof![8 => (0u64..8).prop_map(|n| n.to_string()), 1 => (0u64..70).prop_map(|n| n.to_string()), 1 => any::<u64>().prop_map(|n| n.to_string())];
    let pair = prop_oneof![
        4 => number.clone().prop_map(|n| format!("_HLS_msn={n}")),
        3 => prop_oneof![4 => 0u64..8, 1 => 0u64..=70].prop_map(|n| format!("_HLS_part={n}")),
        2 => strs(&["_HLS_skip=YES", "_HLS_skip=v2", "_HLS_skip=no", "embed=1", "embed=true", "cb=123"]),
        1 => strs(&["_HLS_msn", "_HLS_msn=", "_HLS_part=-1", "_HLS_msn=18446744073709551616", "%", "&", "=", "_HLS_msn=1%00"]),
        1 => any_text(),
    ];
    prop_oneof![
        2 => Just(String::new()),
        6 => prop::collection::vec(pair, 1..4).prop_map(|pairs| pairs.join("&")),
        1 => any_text(),
    ]
    .boxed()
}

fn decimal_text() -> BoxedStrategy<String> {
    ("[0-9]{0,25}", prop::option::of("[0-9]{0,20}"))
        .prop_map(|(int, frac)| frac.map_or(int.clone(), |frac| format!("{int}.{frac}")))
        .boxed()
}

/// A header the handlers read, with a value near what a client sends.
fn header() -> BoxedStrategy<(String, String)> {
    let duration = prop_oneof![
        4 => (1u64..=2000).prop_map(format_millis),
        1 => (1u64..=31_000).prop_map(format_millis),
        1 => mutated(decimal_text()),
        1 => any_text(),
    ];
    let pdt = prop_oneof![
        2 => (T0 - 100_000..T0 + 100_000).prop_map(format_rfc3339_ms),
        1 => any::<i64>().prop_map(format_rfc3339_ms),
        1 => mutated(Just("2026-11-25T13:00:00.000+01:00".to_owned())),
        1 => any_text(),
    ];
    let flag = prop_oneof![4 => strs(&["0", "1"]), 1 => strs(&["true", "", "01", " 1"]), 1 => any_text()];
    let small = prop_oneof![
        4 => (0u64..=70).prop_map(|n| n.to_string()),
        1 => strs(&["0.250", "1.5", "007", "-4", "", "18446744073709551616"]),
        1 => any_text(),
    ];
    let length = prop_oneof![
        2 => (0u64..5000).prop_map(|n| n.to_string()),
        1 => strs(&["18446744073709551616", "-1", "1e3", " 188 ", "", "0x10"]),
        1 => any_text(),
    ];
    let auth = prop_oneof![
        strs(&["Bearer tok", "bearer  tok ", "Bearer adm", "Bearer", "Basic tok", "Bearer tok2"]),
        any_text()
    ];
    prop_oneof![
        4 => duration.prop_map(|v| ("x-duration".to_owned(), v)),
        2 => strs(&["0.250", "0.25", "0.333", "2.000", "0", "2.001", "0.0004"]).prop_map(|v| ("x-part-target".to_owned(), v)),
        2 => prop_oneof![strs(&["1", "2"]), small.clone()].prop_map(|v| ("x-target-duration".to_owned(), v)),
        2 => flag.clone().prop_map(|v| ("x-independent".to_owned(), v)),
        2 => small.prop_map(|v| ("x-parts".to_owned(), v)),
        1 => pdt.prop_map(|v| ("x-program-date-time".to_owned(), v)),
        1 => flag.prop_map(|v| ("x-discontinuity".to_owned(), v)),
        1 => length.prop_map(|v| ("content-length".to_owned(), v)),
        1 => auth.prop_map(|v| ("authorization".to_owned(), v)),
        1 => (any_text(), any_text()).prop_map(|(n, v)| (n.to_ascii_lowercase(), v)),
    ]
    .boxed()
}

/// A body: MPEG-TS packets (with a broken sync byte or length sometimes), empty, or anything.
fn body() -> BoxedStrategy<Vec<u8>> {
    let packets = (
        1usize..6,
        any::<u8>(),
        prop::option::weighted(0.15, (any::<Index>(), any::<u8>())),
        prop_oneof![8 => Just(0i64), 1 => -2i64..=2],
    )
        .prop_map(|(n, fill, flip, delta)| {
            let mut body = ts(n, fill);
            if let Some((at, byte)) = flip {
                let i = at.index(n) * 188;
                body[i] = byte;
            }
            let len = (body.len() as i64 + delta).max(0) as usize;
            body.resize(len, 0x47);
            body
        });
    prop_oneof![6 => packets, 2 => Just(Vec::new()), 1 => prop::collection::vec(any::<u8>(), 0..600)].boxed()
}

fn method() -> BoxedStrategy<Method> {
    prop_oneof![
        4 => Just(Method::Get),
        1 => Just(Method::Head),
        4 => Just(Method::Put),
        3 => Just(Method::Post),
        1 => Just(Method::Options),
        1 => prop_oneof![strs(&["DELETE", "get", "PATCH", ""]), any_text()].prop_map(|m| Method::parse(&m)),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
struct Request {
    method: Method,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// How far the clock moves before this request.
    advance_ms: i64,
}

/// The headers of a valid v1 segment or v2 part upload, for segment `seq` or part `part`.
fn upload_headers(part: Option<u32>, seq_duration: u64) -> Vec<(String, String)> {
    match part {
        None => vec![("x-duration".to_owned(), format_millis(seq_duration))],
        Some(part) => vec![
            ("x-duration".to_owned(), "0.250".to_owned()),
            ("x-part-target".to_owned(), "0.250".to_owned()),
            ("x-target-duration".to_owned(), "1".to_owned()),
            ("x-independent".to_owned(), if part == 0 { "1" } else { "0" }.to_owned()),
        ],
    }
}

/// A request: mostly one a client could send (the route's method, the headers it needs, the
/// token when the server has one), with a few fuzzed headers added; or anything at all.
fn request() -> BoxedStrategy<Request> {
    let near = |n: u64| prop_oneof![6 => (0..n).prop_map(|v| v.to_string()), 1 => seq()];
    let get = prop_oneof![6 => Just(Method::Get), 1 => Just(Method::Head)];
    let playback = (
        get,
        prop_oneof![
            5 => (stream(), query()).prop_map(|(s, q)| (format!("/playlist/{s}.m3u8"), q)),
            // Blocking reloads near the seeded live edge (held on the fake clock).
            3 => (0u64..6, prop::option::of(0u64..8), any::<bool>()).prop_map(|(msn, part, skip)| {
                let part = part.map_or(String::new(), |p| format!("&_HLS_part={p}"));
                let skip = if skip { "&_HLS_skip=YES" } else { "" };
                (format!("/playlist/{}.m3u8", stream_id(SECRET)), format!("_HLS_msn={msn}{part}{skip}"))
            }),
            3 => (stream(), near(8)).prop_map(|(s, q)| (format!("/chunks/{s}/{q}.ts"), String::new())),
            4 => (stream(), near(8), near(6)).prop_map(|(s, q, p)| (format!("/chunks/{s}/{q}.{p}.ts"), String::new())),
            1 => stream().prop_map(|s| (format!("/api/streams/{s}"), String::new())),
            1 => (stream(), query()).prop_map(|(s, q)| (format!("/play/{s}"), q)),
            1 => strs(&["/", "/assets/player.js", "/assets/nope.js"]).prop_map(|p| (p, String::new())),
        ],
    )
        .prop_map(|(method, (path, query))| (method, path, query, Vec::new(), Vec::new()));
    let segment = (secret(), near(8), 1u64..=2500, body()).prop_map(|(s, q, ms, body)| {
        (Method::Put, format!("/ingest/{s}/{q}.ts"), String::new(), upload_headers(None, ms), body)
    });
    let part_upload = (secret(), near(7), 0u32..6, body()).prop_map(|(s, q, p, body)| {
        (Method::Put, format!("/ingest/{s}/{q}/{p}.ts"), String::new(), upload_headers(Some(p), 0), body)
    });
    let commit = (secret(), near(7), 1u32..6).prop_map(|(s, q, n)| {
        (
            Method::Post,
            format!("/ingest/{s}/{q}/commit"),
            String::new(),
            vec![("x-parts".to_owned(), n.to_string())],
            Vec::new(),
        )
    });
    let gap = (secret(), near(8), prop::option::of(1u64..=2000)).prop_map(|(s, q, ms)| {
        let headers = ms.map(|ms| vec![("x-duration".to_owned(), format_millis(ms))]).unwrap_or_default();
        (Method::Post, format!("/ingest/{s}/{q}/gap"), String::new(), headers, Vec::new())
    });
    let end = secret().prop_map(|s| (Method::Post, format!("/ingest/{s}/end"), String::new(), Vec::new(), Vec::new()));
    let sweep = Just((Method::Post, "/admin/sweep".to_owned(), String::new(), Vec::new(), Vec::new()));
    let client = (
        prop_oneof![5 => playback, 3 => segment, 4 => part_upload, 2 => commit, 1 => gap, 1 => end, 1 => sweep],
        prop_oneof![3 => Just(None), 6 => Just(Some("Bearer tok")), 1 => Just(Some("Bearer adm"))],
        prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(header(), 1..3)],
    )
        .prop_map(|((method, path, query, mut headers, body), auth, extra)| {
            if let Some(auth) = auth {
                headers.push(("authorization".to_owned(), auth.to_owned()));
            }
            // Fuzzed headers go first: the handlers read the first of a repeated name.
            (method, path, query, [extra, headers].concat(), body)
        });
    let chaos = (method(), path(), query(), prop::collection::vec(header(), 0..7), body());
    (prop_oneof![3 => client, 1 => chaos], prop_oneof![4 => 0i64..400, 2 => 0i64..3000, 1 => 0i64..200_000])
        .prop_map(|((method, path, query, headers, body), advance_ms)| Request {
            method,
            path,
            query,
            headers,
            body,
            advance_ms,
        })
        .boxed()
}

/// What the store holds before the fuzzed requests.
#[derive(Debug, Clone, Copy)]
enum Seeded {
    Nothing,
    /// v1: segments `0..n` of 1 s.
    V1(u64),
    /// v2: segments `0..sealed` of four 250 ms parts, then `open` parts of the next.
    V2 {
        sealed: u64,
        open: u32,
    },
}

#[derive(Debug, Clone)]
struct Case {
    seeded: Seeded,
    ingest_token: bool,
    admin_token: bool,
    small_limit: bool,
    retention: Option<u64>,
    idle_ms: u64,
    /// The store fails every n-th operation of the fuzzed requests.
    fail_every: Option<u64>,
    requests: Vec<Request>,
}

fn case() -> BoxedStrategy<Case> {
    let seeded = prop_oneof![
        1 => Just(Seeded::Nothing),
        2 => (1u64..6).prop_map(Seeded::V1),
        3 => (1u64..5, 0u32..4).prop_map(|(sealed, open)| Seeded::V2 { sealed, open }),
    ];
    (
        seeded,
        (any::<bool>(), any::<bool>(), prop::bool::weighted(0.2)),
        prop_oneof![Just(None), Just(Some(60_000)), Just(Some(3_000))],
        prop_oneof![Just(30_000u64), Just(2_000)],
        prop_oneof![6 => Just(None), 1 => (2u64..12).prop_map(Some)],
        prop::collection::vec(request(), 1..5),
    )
        .prop_map(|(seeded, (ingest_token, admin_token, small_limit), retention, idle_ms, fail_every, requests)| Case {
            seeded,
            ingest_token,
            admin_token,
            small_limit,
            retention,
            idle_ms,
            fail_every,
            requests,
        })
        .boxed()
}

// ---- The store and the request runner ---------------------------------------------------------

/// The memory store, failing every `fail_every`-th operation when set, and remembering whether
/// it failed since the flag was last cleared.
struct Flaky {
    inner: MemoryKv,
    fail_every: Cell<Option<u64>>,
    ops: Cell<u64>,
    failed: Cell<bool>,
}

impl Flaky {
    fn op(&self) -> Result<(), KvError> {
        self.ops.set(self.ops.get() + 1);
        match self.fail_every.get() {
            Some(n) if self.ops.get() % n == 0 => {
                self.failed.set(true);
                // The error a real refusal gives (built without naming its fields).
                Err(chalkstream_spin_app::kv::check_limits(&"k".repeat(MAX_KEY_LEN + 1), b"").unwrap_err())
            }
            _ => Ok(()),
        }
    }
}

impl Kv for Flaky {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.op()?;
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.op()?;
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.op()?;
        self.inner.delete(key)
    }
}

/// Runs a request as the edge does; also says whether it was held.
fn run(kv: &dyn Kv, config: &Config, head: &RequestHead, body: &[u8], now: i64) -> (Reply, bool) {
    match api::handle(head, kv, || Ok(config.clone()), now) {
        Step::Reply(reply) => (reply, false),
        Step::ReadBody(upload) => {
            let read = if body.len() as u64 > upload.limit { Err(BodyError::TooLarge) } else { Ok(body.to_vec()) };
            (upload.finish(head, kv, read, now), false)
        }
        Step::Hold(held) => {
            let clock = Cell::new(now);
            let reply =
                chalkstream_spin_app::hold::wait(held, kv, || clock.get(), |ms| clock.set(clock.get() + ms as i64));
            (reply, true)
        }
    }
}

fn head(method: Method, path: &str, query: &str, headers: &[(String, String)]) -> RequestHead {
    RequestHead {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        headers: headers.to_vec(),
        base_url: BASE.to_owned(),
    }
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
}

/// Stores the seeded stream with valid uploads; returns the clock after them.
fn seed_store(kv: &dyn Kv, config: &Config, seeded: Seeded) -> Result<i64, TestCaseError> {
    let mut now = T0;
    let upload = |path: String, method: Method, hs: Vec<(String, String)>, body: Vec<u8>, now: i64| {
        let (reply, _) = run(kv, config, &head(method, &path, "", &hs), &body, now);
        prop_assert!(reply.status == 201, "seeding {path}: {}", reply.status);
        Ok(())
    };
    match seeded {
        Seeded::Nothing => {}
        Seeded::V1(n) => {
            for seq in 0..n {
                now += 1000;
                upload(
                    format!("/ingest/{SECRET}/{seq}.ts"),
                    Method::Put,
                    headers(&[("x-duration", "1.000")]),
                    ts(2, seq as u8),
                    now,
                )?;
            }
        }
        Seeded::V2 { sealed, open } => {
            let part_headers = |part: u32| {
                headers(&[
                    ("x-duration", "0.250"),
                    ("x-part-target", "0.250"),
                    ("x-target-duration", "1"),
                    ("x-independent", if part == 0 { "1" } else { "0" }),
                ])
            };
            for seq in 0..=sealed {
                let parts = if seq == sealed { open } else { 4 };
                for part in 0..parts {
                    now += 250;
                    let path = format!("/ingest/{SECRET}/{seq}/{part}.ts");
                    upload(path, Method::Put, part_headers(part), ts(1 + part as usize, seq as u8), now)?;
                }
                if seq < sealed {
                    let path = format!("/ingest/{SECRET}/{seq}/commit");
                    upload(path, Method::Post, headers(&[("x-parts", "4")]), Vec::new(), now)?;
                }
            }
        }
    }
    Ok(now)
}

/// Checks what any answer must be, whatever the request.
fn check_reply(request: &Request, reply: &Reply, held: bool, store_failed: bool) -> Result<(), TestCaseError> {
    let status = reply.status;
    prop_assert!((100..600).contains(&status), "status {status}");
    if status >= 500 {
        prop_assert!(
            store_failed || (held && status == 503),
            "{status} without a store failure for {} {:?}?{:?}: {:?}",
            format!("{:?}", request.method),
            request.path,
            request.query,
            String::from_utf8_lossy(match &reply.body {
                Body::Bytes(b) => b,
                _ => &[],
            })
        );
    }
    // `HEAD` answers have no body, whatever the path (one that names nothing got its `404` JSON
    // body on `HEAD` until the fuzzer found it: `HEAD //`).
    if request.method == Method::Head {
        prop_assert!(matches!(reply.body, Body::Empty), "HEAD with a body");
    }
    if status >= 400 && request.method != Method::Head {
        prop_assert_eq!(reply.get_header("content-type"), Some("application/json"), "error {} not JSON", status);
        let Body::Bytes(bytes) = &reply.body else {
            return Err(TestCaseError::fail(format!("error {status} without a JSON body")));
        };
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(value["error"].as_str().is_some_and(|m| !m.is_empty()), "error body {value}");
    }
    if status == 405 {
        prop_assert!(reply.get_header("allow").is_some(), "405 without Allow");
    }
    if let Some(route) = Route::parse(&request.path) {
        if matches!(route.family(), Family::Playback | Family::Ingest) {
            prop_assert_eq!(reply.get_header("access-control-allow-origin"), Some("*"), "no CORS on {:?}", route);
        }
    }
    Ok(())
}

// ---- Targets ----------------------------------------------------------------------------------

/// Writes a route back as the path it names.
fn render(route: &Route) -> String {
    match route {
        Route::Landing => "/".to_owned(),
        Route::Play { stream } => format!("/play/{stream}"),
        Route::Asset { name } => format!("/assets/{name}"),
        Route::Broadcast => "/broadcast".to_owned(),
        Route::BroadcastFile { path } => format!("/broadcast/{path}"),
        Route::Playlist { stream } => format!("/playlist/{stream}.m3u8"),
        Route::Chunk { stream, seq } => format!("/chunks/{stream}/{seq}.ts"),
        Route::Part { stream, seq, part } => format!("/chunks/{stream}/{seq}.{part}.ts"),
        Route::Status { stream } => format!("/api/streams/{stream}"),
        Route::Download { stream } => format!("/download/{stream}.ts"),
        Route::IngestSegment { session, seq } => format!("/ingest/{session}/{seq}.ts"),
        Route::IngestEnd { session } => format!("/ingest/{session}/end"),
        Route::IngestPart { session, seq, part } => format!("/ingest/{session}/{seq}/{part}.ts"),
        Route::IngestCommit { session, seq } => format!("/ingest/{session}/{seq}/commit"),
        Route::IngestGap { session, seq } => format!("/ingest/{session}/{seq}/gap"),
        Route::AdminSweep => "/admin/sweep".to_owned(),
    }
}

fn route_values(route: &Route) -> Vec<&str> {
    match route {
        // A broadcast file's path is a file path: its slashes are its own (files::find checks it).
        Route::Landing | Route::AdminSweep | Route::Broadcast | Route::BroadcastFile { .. } => vec![],
        Route::Play { stream } | Route::Playlist { stream } | Route::Status { stream } | Route::Download { stream } => vec![stream],
        Route::Asset { name } => vec![name],
        Route::Chunk { stream, seq } => vec![stream, seq],
        Route::Part { stream, seq, part } => vec![stream, seq, part],
        Route::IngestSegment { session, seq }
        | Route::IngestCommit { session, seq }
        | Route::IngestGap { session, seq } => {
            vec![session, seq]
        }
        Route::IngestEnd { session } => vec![session],
        Route::IngestPart { session, seq, part } => vec![session, seq, part],
    }
}

/// `Route::parse` (and `Method::parse`) on arbitrary and near-valid paths.
#[test]
fn fuzz_route_parse() {
    harness::fuzz("route_parse", (path(), any_text()), |(path, method)| {
        let parsed = Route::parse(&path);
        if let Some(route) = &parsed {
            harness::accepted();
            prop_assert!(path.starts_with('/'));
            for value in route_values(route) {
                prop_assert!(!value.contains('/'), "{route:?} from {path:?}");
            }
            // The path is exactly the route written back, and that parses to the same route.
            prop_assert_eq!(&render(route), &path);
            let again = Route::parse(&render(route));
            prop_assert_eq!(again.as_ref(), Some(route));
            prop_assert!(!route.methods().is_empty());
            for m in route.methods() {
                let name = format!("{m:?}").to_ascii_uppercase();
                prop_assert!(route.allow().contains(&name), "{} lacks {}", route.allow(), name);
            }
        } else {
            prop_assert!(
                !path.starts_with('/') || path.len() > 1,
                "{path:?} names nothing but is the landing page's path"
            );
        }
        match Method::parse(&method) {
            Method::Other(name) => prop_assert_eq!(name, method),
            known => prop_assert_eq!(format!("{known:?}").to_ascii_uppercase(), method),
        }
        Ok(())
    });
}

/// Whole requests through the handlers on a memory store (see the module docs).
#[test]
fn fuzz_api_requests() {
    harness::fuzz("api_requests", case(), |case| {
        let mut config = common::config(case.retention.map_or(Retention::Forever, Retention::Millis), case.idle_ms);
        let kv =
            Flaky { inner: MemoryKv::new(), fail_every: Cell::new(None), ops: Cell::new(0), failed: Cell::new(false) };
        let mut now = seed_store(&kv, &config, case.seeded)?;
        if case.small_limit {
            config.max_segment_bytes = 3 * 188;
        }
        config.ingest_token = case.ingest_token.then(|| "tok".to_owned());
        config.admin_token = case.admin_token.then(|| "adm".to_owned());
        kv.fail_every.set(case.fail_every);
        let mut any_accepted = false;
        for request in &case.requests {
            now += request.advance_ms;
            kv.failed.set(false);
            let h = head(request.method.clone(), &request.path, &request.query, &request.headers);
            let (reply, held) = run(&kv, &config, &h, &request.body, now);
            check_reply(request, &reply, held, kv.failed.get())?;
            any_accepted |= reply.status < 300 && request.method != Method::Get && request.method != Method::Head
                || reply.status < 300 && request.path.starts_with("/playlist/");
        }
        if any_accepted {
            harness::accepted();
        }
        // Whatever happened, the stream still reads without a server error once the store works.
        kv.fail_every.set(None);
        let id = stream_id(SECRET);
        for path in [format!("/playlist/{id}.m3u8"), format!("/api/streams/{id}"), format!("/chunks/{id}/0.ts")] {
            let request = Request {
                method: Method::Get,
                path,
                query: String::new(),
                headers: Vec::new(),
                body: Vec::new(),
                advance_ms: 0,
            };
            let (reply, held) = run(&kv, &config, &head(Method::Get, &request.path, "", &[]), &[], now);
            check_reply(&request, &reply, held, false)?;
        }
        Ok(())
    });
}
