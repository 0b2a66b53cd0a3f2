//! The stream rules that do not depend on storage: the fixed target duration, retention, the
//! idle end, when a segment starts a discontinuity, and the server's configuration values.

use crate::decimal::{self, format_millis};
use crate::segment::{EndMarker, SegmentMeta};
use std::fmt;

/// A rule an upload broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleError {
    /// The segment, rounded to whole seconds, is longer than the stream's target duration.
    TargetExceeded { duration_ms: u32, target_s: u32 },
    /// The seq lies below the stream's retention window, which has already moved past it.
    BeforeWindow { seq: u64, first_seq: u64 },
    /// The segment is shorter than [`MIN_SEGMENT_MS`] and so is the one before it.
    TooShort { seq: u64, duration_ms: u32 },
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleError::TargetExceeded { duration_ms, target_s } => write!(
                f,
                "this segment lasts {} s but this stream's target duration is {target_s} s (fixed by its first segment): cut segments no longer than {} s",
                format_millis(u64::from(*duration_ms)),
                format_millis(u64::from(*target_s) * 1000 + 499)
            ),
            RuleError::BeforeWindow { seq, first_seq } => write!(
                f,
                "segment {seq} is older than this stream's retention window, which now starts at segment {first_seq}"
            ),
            RuleError::TooShort { seq, duration_ms } => write!(
                f,
                "segment {seq} lasts {} s, and so did the one before it: segments must last at least {} s (only the last one before a Stop or a break may be shorter)",
                format_millis(u64::from(*duration_ms)),
                format_millis(u64::from(MIN_SEGMENT_MS))
            ),
        }
    }
}

impl std::error::Error for RuleError {}

/// A duration rounded to the nearest whole second (halves up), as RFC 8216 compares it with
/// `EXT-X-TARGETDURATION`.
pub fn rounded_seconds(duration_ms: u32) -> u32 {
    (duration_ms + 500) / 1000
}

/// The target duration a stream gets from its first segment: at least 1 s.
pub fn target_duration_s(first_duration_ms: u32) -> u32 {
    rounded_seconds(first_duration_ms).max(1)
}

/// Segments shorter than this are accepted only after one at least this long (or with no stored
/// predecessor): the last segment before a Stop or a break may be short, a run of them may not.
/// A playlist's reads and size grow with its segment count (issue 18: 7,000 segments of 1 ms
/// made one delta update read 6,008 keys and weigh 1.06 MB), so this keeps the average segment
/// at least half of it.
pub const MIN_SEGMENT_MS: u32 = 500;

/// Checks segment `seq` (`duration_ms`) against [`MIN_SEGMENT_MS`], given the stored meta of
/// `seq - 1` if any (a given-up seq counts as long: its duration is the target's).
pub fn check_short(seq: u64, duration_ms: u32, previous: Option<&SegmentMeta>) -> Result<(), RuleError> {
    match previous {
        Some(prev) if duration_ms < MIN_SEGMENT_MS && prev.duration_ms < MIN_SEGMENT_MS && !prev.gap => {
            Err(RuleError::TooShort { seq, duration_ms })
        }
        _ => Ok(()),
    }
}

/// Checks a later segment against the stream's fixed target duration.
pub fn check_target(duration_ms: u32, target_s: u32) -> Result<(), RuleError> {
    if rounded_seconds(duration_ms) > target_s {
        Err(RuleError::TargetExceeded { duration_ms, target_s })
    } else {
        Ok(())
    }
}

/// How long segments are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// `stream_retention = 0`: keep everything; playlists are `EVENT` playlists.
    Forever,
    /// Segments stored more than this many milliseconds ago leave the playlist and the store.
    Millis(u64),
}

impl Retention {
    /// Parses minutes as a plain decimal (`10`, `0.05` = 3 s); `0` means forever.
    pub fn parse_minutes(text: &str) -> Result<Self, decimal::DecimalError> {
        Ok(match decimal::parse_scaled(text, 60_000, 9, 9)? {
            0 => Retention::Forever,
            ms => Retention::Millis(ms),
        })
    }

    /// Whether a segment stored at `stored_ms` has left the window at `now_ms`.
    pub fn is_expired(self, stored_ms: i64, now_ms: i64) -> bool {
        match self {
            Retention::Forever => false,
            Retention::Millis(keep) => now_ms.saturating_sub(stored_ms) > keep as i64,
        }
    }
}

/// Whether a stream whose last segment was stored at `last_stored_ms` has gone idle.
pub fn is_idle(last_stored_ms: i64, now_ms: i64, idle_ms: u64) -> bool {
    now_ms.saturating_sub(last_stored_ms) > idle_ms as i64
}

/// Whether a stream whose newest listed segment is `last` counts as ended: the broadcaster
/// said so after it, or nothing arrived for the idle timeout.
pub fn is_ended(last: &SegmentMeta, end: Option<&EndMarker>, now_ms: i64, idle_ms: u64) -> bool {
    end.is_some_and(|end| end.after_seq >= last.seq) || is_idle(last.stored_ms, now_ms, idle_ms)
}

/// Whether segment `seq` starts a discontinuity: the uploader said so, or the stream had ended
/// right before it (Stop, or the previous segment is older than the idle timeout).
pub fn starts_discontinuity(
    header: bool,
    seq: u64,
    end: Option<&EndMarker>,
    previous: Option<&SegmentMeta>,
    now_ms: i64,
    idle_ms: u64,
) -> bool {
    let after_stop = seq > 0 && end.is_some_and(|end| end.after_seq == seq - 1);
    let after_idle = previous.is_some_and(|prev| is_idle(prev.stored_ms, now_ms, idle_ms));
    // The seq before was given up (issue 11): its media is missing, so timestamps jump here.
    let after_gap = previous.is_some_and(|prev| prev.gap);
    header || after_stop || after_idle || after_gap
}

/// The server's settings, parsed from the Spin variables' text.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    pub retention: Retention,
    pub idle_ms: u64,
    /// `None` when ingest needs no token.
    pub ingest_token: Option<String>,
    pub max_segment_bytes: u64,
    /// `None` when the operator's endpoints (`POST /admin/sweep`) are off.
    pub admin_token: Option<String>,
    /// Where viewers are served (`playback_url`), when that is another instance of the app on
    /// the same store: this one then sends every viewer request there with a redirect and
    /// never holds one, so viewers cannot take the instances uploads need. `None`: this
    /// instance serves viewers too.
    pub playback_url: Option<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("retention", &self.retention)
            .field("idle_ms", &self.idle_ms)
            .field("ingest_token", &self.ingest_token.as_ref().map(|_| ".."))
            .field("max_segment_bytes", &self.max_segment_bytes)
            .field("admin_token", &self.admin_token.as_ref().map(|_| ".."))
            .field("playback_url", &self.playback_url)
            .finish()
    }
}

/// A configuration variable with a value the server cannot use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigError {
    /// The Spin variable's name.
    pub variable: &'static str,
    /// What a valid value looks like.
    pub expected: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server misconfigured: {} (expected {})", self.variable, self.expected)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses the five variables' values (`stream_retention`, `idle_timeout`, `ingest_token`,
    /// `max_segment_bytes`, `admin_token`).
    pub fn parse(retention: &str, idle: &str, token: &str, max_bytes: &str, admin: &str) -> Result<Self, ConfigError> {
        let retention = Retention::parse_minutes(retention.trim()).map_err(|_| ConfigError {
            variable: "stream_retention",
            expected: "minutes as a plain decimal such as 10 or 0.5; 0 keeps everything",
        })?;
        let idle_ms = decimal::parse_scaled(idle.trim(), 1000, 9, 9)
            .ok()
            .filter(|&ms| ms > 0)
            .ok_or(ConfigError { variable: "idle_timeout", expected: "seconds above 0, such as 30 or 2.5" })?;
        let max_segment_bytes = decimal::parse_scaled(max_bytes.trim(), 1, 12, 0)
            .ok()
            .filter(|&n| n > 0)
            .ok_or(ConfigError { variable: "max_segment_bytes", expected: "a whole number of bytes above 0" })?;
        let secret = |text: &str| Some(text.trim()).filter(|t| !t.is_empty()).map(str::to_owned);
        Ok(Config {
            retention,
            idle_ms,
            ingest_token: secret(token),
            max_segment_bytes,
            admin_token: secret(admin),
            playback_url: None,
        })
    }

    /// Adds the `playback_url` variable: empty (this instance serves viewers), an `http` or
    /// `https` origin, optionally with a path, such as `https://watch.example.com` (a trailing
    /// `/` is dropped), or `:PORT`, the host name each request used on another port (two
    /// instances on one machine, as `scripts/up` runs them). A query, fragment or anything that is not plain URL text is refused, so
    /// the value is safe to put into a `Location` header and JSON.
    pub fn with_playback_url(mut self, text: &str) -> Result<Self, ConfigError> {
        let text = text.trim().trim_end_matches('/');
        if text.is_empty() {
            self.playback_url = None;
            return Ok(self);
        }
        // `:PORT`: the same host name the request used, on another port.
        if let Some(port) = text.strip_prefix(':') {
            if port.parse::<u16>().is_ok_and(|p| p > 0) && !port.starts_with(['+', '0']) {
                self.playback_url = Some(text.to_owned());
                return Ok(self);
            }
        }
        let rest = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://"));
        let plain = rest.is_some_and(|rest| {
            let authority = rest.split('/').next().unwrap_or("");
            !authority.is_empty()
                && text.len() <= 1024
                && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~:/[]%".contains(&b))
        });
        if !plain {
            return Err(ConfigError {
                variable: "playback_url",
                expected: "empty, an http(s) origin such as https://watch.example.com (no query), or :PORT",
            });
        }
        self.playback_url = Some(text.to_owned());
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(seq: u64, stored_ms: i64) -> SegmentMeta {
        SegmentMeta {
            seq,
            duration_ms: 2000,
            pdt_ms: stored_ms - 2000,
            discontinuity: false,
            stored_ms,
            len: 188,
            parts: 1,
            sha1: "0".repeat(40),
            ll_parts: Vec::new(),
            disc_seq: None,
            gap: false,
            folded: false,
        }
    }

    #[test]
    fn target_duration_is_the_first_segment_rounded_to_nearest_and_at_least_one() {
        assert_eq!(target_duration_s(2000), 2);
        assert_eq!(target_duration_s(2499), 2);
        assert_eq!(target_duration_s(2500), 3);
        assert_eq!(target_duration_s(300), 1);
        assert_eq!(target_duration_s(1), 1);
    }

    #[test]
    fn later_segments_may_not_round_above_the_target() {
        assert_eq!(check_target(2499, 2), Ok(()));
        assert_eq!(check_target(100, 2), Ok(()));
        let err = check_target(2500, 2).unwrap_err();
        assert_eq!(err, RuleError::TargetExceeded { duration_ms: 2500, target_s: 2 });
        let text = err.to_string();
        assert!(text.contains("target duration is 2 s") && text.contains("2.499"), "{text}");
    }

    #[test]
    fn retention_counts_from_storage_time_and_zero_keeps_forever() {
        let r = Retention::parse_minutes("0.05").unwrap();
        assert_eq!(r, Retention::Millis(3000));
        assert!(!r.is_expired(10_000, 13_000));
        assert!(r.is_expired(10_000, 13_001));
        assert_eq!(Retention::parse_minutes("0"), Ok(Retention::Forever));
        assert_eq!(Retention::parse_minutes("0.000"), Ok(Retention::Forever));
        assert!(!Retention::Forever.is_expired(0, i64::MAX));
        assert!(Retention::parse_minutes("-1").is_err());
    }

    #[test]
    fn a_stream_ends_by_stop_marker_or_idle_timeout() {
        let last = meta(7, 100_000);
        assert!(!is_ended(&last, None, 130_000, 30_000));
        assert!(is_ended(&last, None, 130_001, 30_000));
        let stop = EndMarker { after_seq: 7, at_ms: 101_000 };
        assert!(is_ended(&last, Some(&stop), 101_000, 30_000));
        let earlier_stop = EndMarker { after_seq: 6, at_ms: 99_000 };
        assert!(!is_ended(&last, Some(&earlier_stop), 101_000, 30_000), "an upload after Stop resumes");
    }

    #[test]
    fn a_resume_after_stop_or_idle_starts_a_discontinuity() {
        let prev = meta(4, 100_000);
        assert!(!starts_discontinuity(false, 5, None, Some(&prev), 102_000, 30_000));
        assert!(starts_discontinuity(true, 5, None, Some(&prev), 102_000, 30_000));
        assert!(starts_discontinuity(false, 5, None, Some(&prev), 130_001, 30_000));
        let stop = EndMarker { after_seq: 4, at_ms: 100_500 };
        assert!(starts_discontinuity(false, 5, Some(&stop), Some(&prev), 101_000, 30_000));
        assert!(!starts_discontinuity(false, 6, Some(&stop), None, 101_000, 30_000));
        assert!(!starts_discontinuity(false, 0, None, None, 0, 30_000));
    }

    #[test]
    fn config_parses_exactly_and_names_the_bad_variable() {
        let c = Config::parse("0.05", "2.5", "", "16777216", "").unwrap();
        assert_eq!(c.retention, Retention::Millis(3000));
        assert_eq!(c.idle_ms, 2500);
        assert_eq!(c.ingest_token, None);
        assert_eq!(c.max_segment_bytes, 16_777_216);
        assert_eq!(c.admin_token, None);
        let c = Config::parse("10", "30", "s3cret", "1000", " adm1n ").unwrap();
        assert_eq!(c.ingest_token.as_deref(), Some("s3cret"));
        assert_eq!(c.admin_token.as_deref(), Some("adm1n"));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!format!("{c:?}").contains("adm1n"));
        assert_eq!(Config::parse("ten", "30", "", "1", "").unwrap_err().variable, "stream_retention");
        assert_eq!(Config::parse("10", "0", "", "1", "").unwrap_err().variable, "idle_timeout");
        assert_eq!(Config::parse("10", "30", "", "1.5", "").unwrap_err().variable, "max_segment_bytes");
        let text = Config::parse("10", "-3", "", "1", "").unwrap_err().to_string();
        assert!(text.starts_with("server misconfigured: idle_timeout"), "{text}");
    }

    #[test]
    fn playback_url_is_an_origin_or_nothing() {
        let c = || Config::parse("10", "30", "", "100", "").unwrap();
        assert_eq!(c().playback_url, None);
        assert_eq!(c().with_playback_url(" ").unwrap().playback_url, None);
        assert_eq!(c().with_playback_url("http://127.0.0.1:3001/").unwrap().playback_url.as_deref(), Some("http://127.0.0.1:3001"));
        assert_eq!(
            c().with_playback_url("https://watch.example.com/live").unwrap().playback_url.as_deref(),
            Some("https://watch.example.com/live")
        );
        assert_eq!(c().with_playback_url(":3001").unwrap().playback_url.as_deref(), Some(":3001"));
        for bad in [":0", ":65536", ":+80", ":080", ":", ":x", "watch.example.com", "ftp://x", "http://", "http:///x", "http://a/?q=1", "http://a/#f", "http://a b", "http://a\r\nx: y"] {
            let e = c().with_playback_url(bad).unwrap_err();
            assert_eq!(e.variable, "playback_url", "{bad}");
        }
    }
}
