//! Fuzz targets for the core's parsers of untrusted bytes ("trust under stress"), as proptest
//! runs on a time budget (nightly Rust and `cargo fuzz` are not available on these machines).
//!
//! Each `fuzz_*` test feeds one parser arbitrary text or bytes and, mostly, inputs generated near
//! the valid space and then mutated (edits from an alphabet of digits, separators, signs,
//! whitespace, `%`, NUL and non-ASCII digits). The properties: no panic; a refusal is the
//! parser's own error type (which the component answers `4xx`); and what is accepted agrees with
//! an independent oracle or round-trips (format then parse gives the same value).
//!
//! Run length: `CHALKSTREAM_FUZZ_SECS` seconds per target (default [`harness::DEFAULT_SECS`], so
//! `cargo test` runs a short pass); `scripts/bench --only fuzz` runs each for 600 s.
//! `CHALKSTREAM_FUZZ_SEED` repeats a run (every summary line prints its seed). Each target prints
//! `fuzz NAME: N cases in S s, C crashes (A accepted; seed X)` (shown with `--nocapture`; A counts
//! the cases whose input was valid); a crash fails the test with its shrunk (minimal) input.

use chalkstream_manifest::decimal::{self, DecimalError};
use chalkstream_manifest::id::{SessionSecret, StreamId};
use chalkstream_manifest::ingest::{self, IngestError, SegmentHeaders, MAX_SEQ, TS_PACKET_LEN, TS_SYNC_BYTE};
use chalkstream_manifest::ll::{self, Directives, Edge};
use chalkstream_manifest::part::{self, PartError, PartHeaders, RawPartHeaders, MAX_PARTS};
use chalkstream_manifest::rules::{Config, Retention};
use chalkstream_manifest::time::{format_rfc3339_ms, parse_rfc3339_ms, TimeError};
use proptest::prelude::*;
use proptest::sample::{select, Index};

/// The time-budgeted runner (the same in each crate's fuzz targets).
mod harness {
    use proptest::strategy::Strategy;
    use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
    use std::cell::Cell;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    /// Seconds per target when `CHALKSTREAM_FUZZ_SECS` is not set.
    pub const DEFAULT_SECS: f64 = 3.0;
    /// Cases per proptest run; runs repeat until the budget is spent.
    const BATCH: u32 = 256;
    /// A target stops early after this many distinct crashes.
    const MAX_CRASHES: usize = 5;

    thread_local! {
        static ACCEPTED: Cell<u64> = const { Cell::new(0) };
    }

    /// Counts a case whose input the parser under test accepted (so a summary shows that the
    /// generators reach the valid space, not only refusals).
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

/// Characters that break parsers: digits, separators, signs, exponents, whitespace, `%`, NUL,
/// and characters that look like digits or letters the parsers take but are not ASCII.
const NASTY: &[char] = &[
    '0',
    '1',
    '2',
    '5',
    '9',
    '.',
    ',',
    '-',
    '+',
    ':',
    ';',
    'T',
    't',
    'Z',
    'z',
    'e',
    'E',
    'x',
    ' ',
    '\t',
    '\n',
    '\r',
    '\0',
    '%',
    '/',
    '\\',
    '&',
    '=',
    '?',
    '#',
    '_',
    'é',
    '٣',
    '０',
    '𝟘',
    '\u{feff}',
    '\u{202e}',
    '\u{7f}',
    'ß',
    'İ',
    '\u{10ffff}',
];

fn nasty_char() -> BoxedStrategy<char> {
    prop_oneof![4 => select(NASTY), 1 => any::<char>()].boxed()
}

/// One edit of a text, at a position chosen among its characters.
#[derive(Debug, Clone)]
enum Edit {
    Insert(Index, char),
    Delete(Index),
    Replace(Index, char),
    /// Repeats the characters from one index, up to `len` of them, `times` more times.
    Repeat(Index, u8, u8),
    Truncate(Index),
}

fn edit() -> BoxedStrategy<Edit> {
    prop_oneof![
        (any::<Index>(), nasty_char()).prop_map(|(i, c)| Edit::Insert(i, c)),
        any::<Index>().prop_map(Edit::Delete),
        (any::<Index>(), nasty_char()).prop_map(|(i, c)| Edit::Replace(i, c)),
        (any::<Index>(), 1u8..8, 1u8..40).prop_map(|(i, len, times)| Edit::Repeat(i, len, times)),
        any::<Index>().prop_map(Edit::Truncate),
    ]
    .boxed()
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        let at = |i: &Index, extra: usize| i.index(chars.len() + extra);
        match edit {
            Edit::Insert(i, c) => {
                let i = at(i, 1);
                chars.insert(i, *c);
            }
            Edit::Delete(i) if !chars.is_empty() => {
                let i = at(i, 0);
                chars.remove(i);
            }
            Edit::Replace(i, c) if !chars.is_empty() => {
                let i = at(i, 0);
                chars[i] = *c;
            }
            Edit::Repeat(i, len, times) if !chars.is_empty() => {
                let start = at(i, 0);
                let end = (start + usize::from(*len)).min(chars.len());
                let piece: Vec<char> = chars[start..end].to_vec();
                for _ in 0..*times {
                    chars.splice(end..end, piece.iter().copied());
                }
            }
            Edit::Truncate(i) => {
                let i = at(i, 1);
                chars.truncate(i);
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// `base` as is (sometimes) or with a few edits.
fn mutated(base: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
    (base, prop::collection::vec(edit(), 0..4)).prop_map(|(text, edits)| apply(&text, &edits)).boxed()
}

/// Any text: arbitrary Unicode, arbitrary bytes read lossily, or ASCII.
fn any_text() -> BoxedStrategy<String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "[ -~]{0,40}",
    ]
    .boxed()
}

fn digits(max: usize) -> BoxedStrategy<String> {
    prop::collection::vec(select(&['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'][..]), 0..=max)
        .prop_map(|d| d.into_iter().collect())
        .boxed()
}

/// `digits[.digits]` with many digits, and leading or trailing zeros.
fn decimal_text() -> BoxedStrategy<String> {
    (digits(40), prop::option::of(digits(30)))
        .prop_map(|(int, frac)| match frac {
            Some(frac) => format!("{int}.{frac}"),
            None => int,
        })
        .boxed()
}

/// A valid duration of `ms` written with extra leading and trailing zeros.
fn padded_millis() -> BoxedStrategy<(u64, String)> {
    (1u64..=30_000, 0usize..4, 0usize..8)
        .prop_map(|(ms, lead, trail)| {
            (ms, format!("{}{}.{:03}{}", "0".repeat(lead), ms / 1000, ms % 1000, "0".repeat(trail)))
        })
        .boxed()
}

fn duration_value() -> BoxedStrategy<String> {
    prop_oneof![
        mutated(decimal_text()),
        padded_millis().prop_map(|(_, text)| text),
        mutated(padded_millis().prop_map(|(_, text)| text)),
        any_text(),
    ]
    .boxed()
}

/// The fields of an RFC 3339 date-time, some out of range, and how they are written.
#[derive(Debug, Clone)]
struct TimeFields {
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// Fraction digits, written after a `.` when `Some` (possibly none of them).
    fraction: Option<String>,
    separator: char,
    /// `None`: `Z` (or `z` when `lower_z`); `Some((sign, hours, minutes))`: an offset.
    offset: Option<(char, u32, u32)>,
    lower_z: bool,
}

impl TimeFields {
    fn text(&self) -> String {
        let fraction = self.fraction.as_ref().map_or(String::new(), |f| format!(".{f}"));
        let zone = match self.offset {
            None if self.lower_z => "z".to_owned(),
            None => "Z".to_owned(),
            Some((sign, h, m)) => format!("{sign}{h:02}:{m:02}"),
        };
        format!(
            "{:04}-{:02}-{:02}{}{:02}:{:02}:{:02}{fraction}{zone}",
            self.year, self.month, self.day, self.separator, self.hour, self.minute, self.second
        )
    }

    /// What the wire contract's parser must answer, computed independently of it.
    fn expected(&self) -> Result<i64, TimeError> {
        let shape_ok = self.year <= 9999
            && self.month <= 99
            && self.day <= 99
            && self.hour <= 99
            && self.minute <= 99
            && self.second <= 99
            && matches!(self.separator, 'T' | 't')
            && self.fraction.as_ref().is_none_or(|f| (1..=9).contains(&f.len()))
            && self.offset.is_none_or(|(_, h, m)| h <= 99 && m <= 99);
        if !shape_ok {
            return Err(TimeError::Shape);
        }
        let leap = |y: u32| y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        let month_days = [31, if leap(self.year) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let in_range = (1..=12).contains(&self.month)
            && self.day >= 1
            && self.day <= month_days[(self.month.clamp(1, 12) - 1) as usize]
            && self.hour <= 23
            && self.minute <= 59
            && self.second <= 59
            && self.offset.is_none_or(|(_, h, m)| h <= 23 && m <= 59);
        if !in_range {
            return Err(TimeError::Range);
        }
        // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
        let (y, m, d) = (i64::from(self.year), i64::from(self.month), i64::from(self.day));
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let offset_s = self.offset.map_or(0, |(sign, h, m)| {
            let s = i64::from(h * 3600 + m * 60);
            if sign == '-' {
                -s
            } else {
                s
            }
        });
        let seconds = days * 86_400 + i64::from(self.hour * 3600 + self.minute * 60 + self.second) - offset_s;
        let millis = self.fraction.as_ref().map_or(0, |f| {
            let first3: String = f.chars().chain("000".chars()).take(3).collect();
            first3.parse::<i64>().unwrap()
        });
        Ok(seconds * 1000 + millis)
    }
}

fn time_fields() -> BoxedStrategy<TimeFields> {
    let near = |valid: std::ops::RangeInclusive<u32>, max: u32| prop_oneof![4 => valid, 1 => 0..=max];
    (
        (prop_oneof![8 => 0u32..=9999, 1 => 10_000u32..=99_999], near(1..=12, 100), near(1..=31, 100)),
        (near(0..=23, 100), near(0..=59, 100), near(0..=59, 100)),
        prop::option::of(digits(12)),
        prop_oneof![8 => Just('T'), 1 => Just('t'), 1 => Just(' '), 1 => nasty_char()],
        prop::option::of((select(&['+', '-'][..]), near(0..=23, 100), near(0..=59, 100))),
        any::<bool>(),
    )
        .prop_map(|((year, month, day), (hour, minute, second), fraction, separator, offset, lower_z)| TimeFields {
            year,
            month,
            day,
            hour,
            minute,
            second,
            fraction,
            separator,
            offset,
            lower_z,
        })
        .boxed()
}

fn time_value() -> BoxedStrategy<String> {
    prop_oneof![
        time_fields().prop_map(|f| f.text()),
        mutated(time_fields().prop_map(|f| f.text())),
        any::<i64>().prop_map(format_rfc3339_ms),
        any_text(),
    ]
    .boxed()
}

/// Header values near what a part upload sends.
fn part_target_value() -> BoxedStrategy<String> {
    prop_oneof![
        (1u64..=2500).prop_map(decimal::format_millis),
        mutated(select(&["0.333", "0.250", "2", "2.000", "0.0005", "0.001", "2.0004999"][..]).prop_map(str::to_owned)),
        mutated(decimal_text()),
        any_text(),
    ]
    .boxed()
}

fn small_integer_value() -> BoxedStrategy<String> {
    prop_oneof![
        (0u64..=100).prop_map(|n| n.to_string()),
        (0u64..=100, 1usize..5).prop_map(|(n, zeros)| format!("{}{n}", "0".repeat(zeros))),
        mutated((0u64..=100).prop_map(|n| n.to_string())),
        mutated(decimal_text()),
        any_text(),
    ]
    .boxed()
}

fn flag_value() -> BoxedStrategy<String> {
    prop_oneof![
        select(&["0", "1"][..]).prop_map(str::to_owned),
        mutated(select(&["0", "1", "true", "YES"][..]).prop_map(str::to_owned)),
        any_text(),
    ]
    .boxed()
}

/// A seq or part index in the path: canonical, padded, huge, mutated or anything.
fn seq_text() -> BoxedStrategy<String> {
    prop_oneof![
        (0u64..=MAX_SEQ + 10).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        (0u64..100, 1usize..4).prop_map(|(n, z)| format!("{}{n}", "0".repeat(z))),
        mutated(digits(25)),
        any_text(),
    ]
    .boxed()
}

/// Part upload headers that fit together (duration <= part target <= target duration), each
/// then possibly mutated: what gets past the first checks into the later ones.
fn coherent_part_headers() -> BoxedStrategy<[Option<String>; 6]> {
    let fields = (
        1u64..=2000,
        1u64..=30,
        any::<Index>(),
        any::<bool>(),
        prop::option::of(time_value()),
        prop::option::of(flag_value()),
    )
        .prop_map(|(pt, target, d, independent, pdt, disc)| {
            let target = target.max(pt.div_ceil(1000));
            [
                Some(decimal::format_millis(1 + d.index(pt as usize) as u64)),
                Some(decimal::format_millis(pt)),
                Some(target.to_string()),
                Some(if independent { "1" } else { "0" }.to_owned()),
                pdt,
                disc,
            ]
        });
    (fields, any::<Index>(), prop::option::of(prop::collection::vec(edit(), 1..3)))
        .prop_map(|(mut fields, which, edits)| {
            if let Some(edits) = edits {
                let field = &mut fields[which.index(6)];
                *field = Some(apply(field.as_deref().unwrap_or(""), &edits));
            }
            fields
        })
        .boxed()
}

// ---- Targets ----------------------------------------------------------------------------------

/// `PUT /ingest/{session}/{seq}.ts` and `…/{seq}/{part}.ts`: the path's seq and part, the
/// session secret and stream id, and every ingest header (v1 and v2, commits' `X-Parts`).
#[test]
fn fuzz_ingest_headers() {
    let independent_fields = (
        prop::option::of(duration_value()),
        prop::option::of(part_target_value()),
        prop::option::of(small_integer_value()),
        prop::option::of(flag_value()),
        prop::option::of(time_value()),
        prop::option::of(flag_value()),
    )
        .prop_map(|(a, b, c, d, e, f)| [a, b, c, d, e, f]);
    let raw = prop_oneof![independent_fields, coherent_part_headers()];
    let ids = prop_oneof![
        "[A-Za-z0-9_-]{20,130}",
        mutated("[A-Za-z0-9_-]{22,40}".prop_map(String::from)),
        "[0-9a-f]{40}",
        mutated("[0-9a-f]{40}".prop_map(String::from)),
        any_text(),
    ];
    harness::fuzz("ingest_headers", (raw, seq_text(), ids), |(raw, seq, id)| {
        let [duration, part_target, target, independent, pdt, disc] = raw;
        // The path's seq: accepted exactly when it is the canonical decimal of a seq in range.
        match ingest::parse_seq(&seq) {
            Ok(n) => prop_assert!(n <= MAX_SEQ && n.to_string() == seq, "{seq:?} -> {n}"),
            Err(e) => {
                prop_assert!(matches!(e, IngestError::Seq(_)));
                prop_assert!(
                    seq.parse::<u64>().map_or(true, |n| n > MAX_SEQ || n.to_string() != seq),
                    "{seq:?} refused"
                );
            }
        }
        match part::parse_part_index(&seq) {
            Ok(n) => prop_assert!(n < MAX_PARTS && n.to_string() == seq),
            Err(e) => prop_assert!(matches!(e, PartError::Index(_))),
        }
        // Ids: accepted exactly in their documented shapes.
        let secret_shape =
            (22..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        prop_assert_eq!(SessionSecret::parse(&id).is_ok(), secret_shape);
        let id_shape = id.len() == 40 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        prop_assert_eq!(StreamId::parse(&id).is_ok(), id_shape);

        // v1 headers: together exactly when each one alone is.
        let d = duration.as_deref();
        let parsed = SegmentHeaders::parse(d, pdt.as_deref(), disc.as_deref());
        let mut valid = parsed.is_ok();
        let each = d.map(ingest::parse_duration_ms);
        match &parsed {
            Ok(h) => {
                prop_assert_eq!(each, Some(Ok(h.duration_ms)));
                prop_assert!((1..=ingest::MAX_DURATION_MS).contains(&h.duration_ms));
                prop_assert_eq!(h.pdt_ms, pdt.as_deref().map(|t| parse_rfc3339_ms(t).unwrap()));
                prop_assert_eq!(h.discontinuity, disc.as_deref() == Some("1"));
            }
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                let ok_alone = each.is_some_and(|r| r.is_ok())
                    && pdt.as_deref().is_none_or(|t| parse_rfc3339_ms(t).is_ok())
                    && disc.as_deref().is_none_or(|t| ingest::parse_discontinuity(t).is_ok());
                prop_assert!(!ok_alone, "{e:?} though every header parses alone");
            }
        }
        if let Some(d) = d {
            if let Ok(ms) = ingest::parse_duration_ms(d) {
                // Accepted durations are plain decimals; a duration written back reads the same.
                prop_assert!(d.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
                prop_assert_eq!(ingest::parse_duration_ms(&decimal::format_millis(u64::from(ms))), Ok(ms));
            }
        }

        // v2 part headers, for part 0, a later part and an index no path gives.
        for index in [0u32, 1, 63, 64, u32::MAX] {
            let raw_headers = RawPartHeaders {
                duration: d,
                part_target: part_target.as_deref(),
                target_duration: target.as_deref(),
                independent: independent.as_deref(),
                program_date_time: pdt.as_deref(),
                discontinuity: disc.as_deref(),
            };
            match PartHeaders::parse(index, &raw_headers) {
                Ok(h) => {
                    valid = true;
                    prop_assert!(h.duration_ms <= h.part_target_ms && h.part_target_ms <= h.target_s * 1000);
                    prop_assert!((1..=part::MAX_TARGET_S).contains(&h.target_s));
                    prop_assert!(index > 0 || h.independent);
                    prop_assert!(index == 0 || (h.pdt_ms.is_none() && !h.discontinuity));
                    prop_assert_eq!(part::parse_part_target_ms(part_target.as_deref().unwrap()), Ok(h.part_target_ms));
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
        if let Some(text) = part_target.as_deref() {
            if let Ok(ms) = part::parse_part_target_ms(text) {
                prop_assert!((1..=part::MAX_PART_TARGET_MS).contains(&ms));
            }
        }
        for text in [target.as_deref(), independent.as_deref()].into_iter().flatten() {
            if let Ok(s) = part::parse_target_s(text) {
                prop_assert!(text.bytes().all(|b| b.is_ascii_digit()) && text.trim_start_matches('0') == s.to_string());
            }
            match part::parse_parts_count(Some(text)) {
                Ok(n) => prop_assert!(
                    (1..=MAX_PARTS).contains(&n)
                        && text.bytes().all(|b| b.is_ascii_digit())
                        && text.trim_start_matches('0') == n.to_string()
                ),
                Err(e) => prop_assert_eq!(e, PartError::PartsCount),
            }
        }
        prop_assert_eq!(part::parse_parts_count(None), Err(PartError::Missing(chalkstream_manifest::wire::PARTS)));
        if valid {
            harness::accepted();
        }
        Ok(())
    });
}

/// Exact decimals (`X-Duration`, `X-Part-Target`, the configuration's minutes and seconds):
/// compared with an independent big-number reading, and written back and read again.
#[test]
fn fuzz_decimals() {
    let scale = prop_oneof![select(&[1u64, 1000, 60_000][..]), 1u64..=u64::MAX];
    let short = (digits(7), prop::option::of(digits(10)))
        .prop_map(|(int, frac)| frac.map_or(int.clone(), |frac| format!("{int}.{frac}")));
    let texts = prop_oneof![mutated(decimal_text()), decimal_text(), short.clone(), mutated(short), any_text()];
    let config_text = prop_oneof![mutated(decimal_text()), any_text(), Just(" 10 ".to_owned())];
    harness::fuzz(
        "decimals",
        (
            texts,
            scale,
            prop_oneof![0usize..=12, 0usize..=45],
            prop_oneof![0usize..=9, 0usize..=25],
            any::<u64>(),
            [config_text.clone(), config_text.clone(), config_text],
        ),
        |(text, scale, max_int, max_frac, ms, config)| {
            let got = decimal::parse_scaled(&text, scale, max_int, max_frac);
            prop_assert_eq!(got, reference_scaled(&text, scale, max_int, max_frac), "{:?}", text);
            if got.is_ok() {
                harness::accepted();
            }
            // Milliseconds written as seconds read back exactly.
            let written = decimal::format_millis(ms);
            prop_assert_eq!(decimal::parse_scaled(&written, 1000, 20, 3), Ok(ms), "{}", written);
            if (1..=u64::from(ingest::MAX_DURATION_MS)).contains(&ms) {
                prop_assert_eq!(ingest::parse_duration_ms(&written), Ok(ms as u32));
            }
            // The Spin variables' values (operator-set, but still text).
            let [retention, idle, bytes] = &config;
            if let Ok(c) = Config::parse(retention, idle, &text, bytes, &text) {
                prop_assert!(c.idle_ms > 0 && c.max_segment_bytes > 0);
                prop_assert_eq!(c.ingest_token.is_some(), !text.trim().is_empty());
                if let Retention::Millis(keep) = c.retention {
                    prop_assert!(keep > 0);
                }
            }
            let _ = Retention::parse_minutes(&text);
            Ok(())
        },
    );
}

/// `digits[.digits] * scale`, rounded half up, written independently of the parser (quotient and
/// remainder instead of its doubled fractions): what `decimal::parse_scaled` must answer.
fn reference_scaled(text: &str, scale: u64, max_int: usize, max_frac: usize) -> Result<u64, DecimalError> {
    if text.is_empty() {
        return Err(DecimalError::Empty);
    }
    let mut pieces = text.split('.');
    let int = pieces.next().unwrap_or("");
    let frac = pieces.next();
    let digits_only = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if pieces.next().is_some() || !digits_only(int) || frac.is_some_and(|f| !digits_only(f)) {
        return Err(DecimalError::NotPlain);
    }
    let frac = frac.unwrap_or("");
    let significant = int.trim_start_matches('0');
    if significant.len() > max_int || frac.len() > max_frac.min(18) {
        return Err(DecimalError::TooManyDigits);
    }
    // Twenty significant digits are already above u64::MAX, whatever the (non-zero) scale.
    if significant.len() > 20 {
        return Err(DecimalError::TooManyDigits);
    }
    let int: u128 = if significant.is_empty() { 0 } else { significant.parse().unwrap() };
    let frac_value: u128 = if frac.is_empty() { 0 } else { frac.parse().unwrap() };
    let denominator = 10u128.pow(frac.len() as u32);
    // frac_value < 10^18 and scale < 2^64: the product fits.
    let scaled = frac_value * u128::from(scale);
    let (mut rounded, remainder) = (scaled / denominator, scaled % denominator);
    if 2 * remainder >= denominator {
        rounded += 1;
    }
    int.checked_mul(u128::from(scale))
        .and_then(|v| v.checked_add(rounded))
        .and_then(|v| u64::try_from(v).ok())
        .ok_or(DecimalError::TooManyDigits)
}

/// `X-Program-Date-Time`: near-valid RFC 3339 against an independent calendar, and instants
/// written and read back.
#[test]
fn fuzz_rfc3339() {
    let fields = prop_oneof![time_fields().prop_map(Some), Just(None)];
    harness::fuzz("rfc3339", (fields, time_value(), any::<i64>()), |(fields, text, ms)| {
        if let Some(fields) = fields {
            let text = fields.text();
            prop_assert_eq!(parse_rfc3339_ms(&text), fields.expected(), "{}", text);
        }
        // Whatever parses writes back to the same instant (clamped to the years 0000–9999).
        if let Ok(parsed) = parse_rfc3339_ms(&text) {
            harness::accepted();
            let written = format_rfc3339_ms(parsed);
            let back = parse_rfc3339_ms(&written);
            prop_assert!(back.is_ok(), "{text:?} -> {parsed} -> {written:?} does not parse");
            let back = back.unwrap();
            prop_assert!(
                back == parsed || format_rfc3339_ms(back) == written,
                "{text:?} -> {parsed} -> {written:?} -> {back}"
            );
        }
        // Every instant writes as text that parses; within 0000–9999 it reads back exactly.
        let written = format_rfc3339_ms(ms);
        let back = parse_rfc3339_ms(&written);
        prop_assert!(back.is_ok(), "{ms} -> {written:?}");
        if (-62_167_219_200_000..=253_402_300_799_999).contains(&ms) {
            prop_assert_eq!(back, Ok(ms), "{}", written);
        }
        Ok(())
    });
}

/// The MPEG-TS shape check: bodies of 188-byte packets with mutated sync bytes and lengths, and
/// arbitrary bytes, against the rule written out.
#[test]
fn fuzz_ts_check() {
    let structured = (0usize..12, prop::collection::vec((any::<Index>(), any::<u8>()), 0..3), -3i64..=3, any::<u8>())
        .prop_map(|(packets, flips, delta, fill)| {
            let mut body = vec![fill; packets * TS_PACKET_LEN];
            for packet in body.chunks_mut(TS_PACKET_LEN) {
                packet[0] = TS_SYNC_BYTE;
            }
            for (at, byte) in flips {
                if !body.is_empty() {
                    // Mostly hit a sync byte, sometimes any byte.
                    let i = at.index(body.len());
                    let i = if byte % 2 == 0 { i - i % TS_PACKET_LEN } else { i };
                    body[i] = byte;
                }
            }
            let len = (body.len() as i64 + delta).max(0) as usize;
            body.resize(len, TS_SYNC_BYTE);
            body
        });
    let bodies = prop_oneof![
        3 => structured,
        1 => prop::collection::vec(any::<u8>(), 0..1200),
        1 => prop::collection::vec(select(&[TS_SYNC_BYTE, 0][..]), 0..600),
    ];
    harness::fuzz("ts_check", bodies, |body| {
        let expected = if body.is_empty() {
            Err(IngestError::EmptyBody)
        } else if body.len() % 188 != 0 {
            Err(IngestError::TsLength(body.len()))
        } else {
            match (0..body.len()).step_by(188).find(|&i| body[i] != 0x47) {
                Some(offset) => Err(IngestError::TsSync(offset)),
                None => Ok(()),
            }
        };
        if expected.is_ok() {
            harness::accepted();
        }
        prop_assert_eq!(ingest::check_ts(&body), expected);
        Ok(())
    });
}

/// Playlist query strings (`_HLS_msn`, `_HLS_part`, `_HLS_skip`): huge numbers, repeated keys,
/// percent signs, cache busters; whatever parses then decides a blocking reload.
#[test]
fn fuzz_directives() {
    let weird_value = prop_oneof![
        select(
            &[
                "18446744073709551615",
                "18446744073709551616",
                "99999999999999999999999",
                "00000000000000000000012",
                "YES",
                "v2",
                "yes",
                "NO",
                "",
                "%20",
                "1%00",
                "-1",
                "+1",
                "1.0",
                "１",
                "٣"
            ][..]
        )
        .prop_map(str::to_owned),
        mutated(digits(22)),
        any_text(),
    ];
    let number =
        prop_oneof![3 => (0u64..=200).prop_map(|n| n.to_string()), 1 => any::<u64>().prop_map(|n| n.to_string())];
    let pair = prop_oneof![
        4 => prop_oneof![4 => number, 1 => weird_value.clone()].prop_map(|v| format!("_HLS_msn={v}")),
        3 => prop_oneof![4 => (0u64..=70).prop_map(|n| n.to_string()), 1 => weird_value.clone()]
            .prop_map(|v| format!("_HLS_part={v}")),
        2 => prop_oneof![4 => select(&["YES", "v2"][..]).prop_map(str::to_owned), 1 => weird_value.clone()]
            .prop_map(|v| format!("_HLS_skip={v}")),
        1 => select(&["_HLS_msn", "_HLS_part", "_HLS_skip", "_hls_msn", "_HLS_msn%3D", "_HLS_%6Dsn", " _HLS_msn", "cb=1", "embed", "=", ""][..])
            .prop_map(str::to_owned),
        1 => (mutated(Just("_HLS_part".to_owned())), prop::option::of(weird_value)).prop_map(|(name, value)| match value {
            Some(value) => format!("{name}={value}"),
            None => name,
        }),
    ];
    let query = prop_oneof![
        4 => (prop::collection::vec(pair, 0..5), prop_oneof![6 => Just("&"), 1 => select(&["&&", ";", "&amp;"][..])])
            .prop_map(|(pairs, sep)| pairs.join(sep)),
        1 => any_text(),
    ];
    let edge = (0u64..=MAX_SEQ, 0u32..=MAX_PARTS, 0u32..=MAX_PARTS, 1u32..=part::MAX_PART_TARGET_MS);
    harness::fuzz("directives", (query, edge), |(query, (last_seq, last_parts, open_parts, part_target_ms))| {
        match Directives::parse(&query) {
            Ok(d) => {
                prop_assert!(d.part.is_none() || d.msn.is_some());
                prop_assert!(d.part.is_none_or(|p| p < u64::from(MAX_PARTS)));
                // Each directive given is given once, as digits (or YES/v2).
                let pairs: Vec<(&str, &str)> =
                    query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, ""))).collect();
                let given = |name: &str| pairs.iter().filter(|(n, _)| *n == name).map(|(_, v)| *v).collect::<Vec<_>>();
                prop_assert_eq!(given("_HLS_msn").first().map(|v| v.parse::<u64>().unwrap()), d.msn);
                prop_assert_eq!(given("_HLS_part").first().map(|v| v.parse::<u64>().unwrap()), d.part);
                prop_assert_eq!(given("_HLS_skip").len() == 1, d.skip);
                prop_assert!(given("_HLS_msn").len() <= 1 && given("_HLS_part").len() <= 1);
                if let Some(msn) = d.msn {
                    harness::accepted();
                    let edge = Edge { last_seq, last_parts, open_parts };
                    let _ = ll::reload(&edge, msn, d.part, part_target_ms);
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        Ok(())
    });
}
