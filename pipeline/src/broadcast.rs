//! A broadcast's records and the texts users read: what is streamed and how ([`Broadcast`],
//! the settings [`Options`]), how it stands ([`Status`]), and what a refusal or an outage tells
//! the streamer. Shared by the extension (it keeps them in `chrome.storage` and its messages)
//! and the broadcast page.

use serde::{Deserialize, Serialize};

use crate::presets::{Overlay, Quality};

/// What is being streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    #[default]
    Tab,
    Camera,
    /// A screen, window or tab picked in the browser's own sharing dialog (`getDisplayMedia`,
    /// the broadcast page), with its sound where the browser shares it.
    Screen,
}

/// User settings (`chrome.storage.local`, key `options`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    pub server: String,
    pub token: String,
    pub segment_seconds: u32,
    pub default_source: Source,
    /// Upload parts as they are recorded (LL-HLS, wire contract v2); off: whole segments (v1).
    pub low_latency: bool,
    pub quality: Quality,
    /// Talk over the tab: mix the microphone into a tab's sound.
    pub mic: bool,
    /// The camera in a corner of a tab's picture.
    pub overlay: Overlay,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            server: DEFAULT_SERVER.into(),
            token: String::new(),
            segment_seconds: crate::timing::DEFAULT_SEGMENT_S,
            default_source: Source::Tab,
            low_latency: true,
            quality: Quality::default(),
            mic: false,
            overlay: Overlay::default(),
        }
    }
}

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:3000";

/// The running broadcast (`chrome.storage.local`, key `broadcast`): survives worker restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Broadcast {
    pub session: String,
    pub stream: String,
    pub server: String,
    pub token: String,
    pub segment_ms: u64,
    pub source: Source,
    pub started_at_ms: f64,
    /// `chrome.tabCapture` stream id for a tab broadcast (consumed by the offscreen document).
    pub media_stream_id: Option<String>,
    /// Parts (wire contract v2) instead of whole segments.
    #[serde(default)]
    pub low_latency: bool,
    #[serde(default)]
    pub quality: Quality,
    /// Mix the microphone into a tab's sound from the start.
    #[serde(default)]
    pub mic: bool,
    #[serde(default)]
    pub overlay: Overlay,
    /// Continue a stream whose session already holds segments: the first seq to upload (the
    /// broadcast page, reloaded with the same session). `None` starts at seq 0.
    #[serde(default)]
    pub resume_at_seq: Option<u64>,
}

impl Broadcast {
    pub fn viewer_url(&self) -> String {
        format!(
            "{}{}",
            self.server,
            chalkstream_manifest::wire::player_path(&self.stream)
        )
    }
}

/// Where a broadcast stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Starting,
    Live,
    Stopping,
    Ended,
    Failed,
}

/// The broadcast's health as the popup shows it (no secrets in here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub phase: Phase,
    pub stream: String,
    pub server: String,
    pub viewer_url: String,
    pub source: Source,
    pub started_at_ms: f64,
    pub segments_sent: u64,
    /// Parts acknowledged (low latency only).
    #[serde(default)]
    pub parts_sent: u64,
    pub segments_waiting: u64,
    pub segments_dropped: u64,
    pub bytes_sent: f64,
    pub upload_rate_bps: f64,
    pub attempts: u64,
    pub last_error: Option<String>,
    pub remux_ms_total: f64,
    pub media_ms_total: u64,
    pub ack_latency_ms_avg: f64,
    pub ack_latency_ms_max: f64,
    /// ffmpeg.wasm cores replaced so far (one per `FFMPEG_RUNS_PER_CORE` runs, or a failure),
    /// and how many of the replacements were a spare loaded and warmed up ahead of time.
    #[serde(default)]
    pub ffmpeg_switches: u32,
    #[serde(default)]
    pub ffmpeg_spares_used: u32,
    /// Video the cutter could not place (frames with parts, clusters with whole segments):
    /// before the first keyframe, out of order, or past a segment's limit. A gap the viewers
    /// see that this does not count was never captured.
    #[serde(default)]
    pub video_skipped: u64,
    /// Video frames the cutter placed in segments (or parts) the server now stores: a whole
    /// segment acknowledged, or a low-latency segment's parts once its commit is (see
    /// [`PlacedFrames`]). A frame a viewer cannot decode from the stored segments and that this
    /// counts was lost after the cutter.
    #[serde(default)]
    pub video_placed: u64,
    pub js_heap_bytes: f64,
    /// This module's wasm linear memory (`memory.buffer.byteLength`): it only ever grows, so a
    /// Rust collection or buffer that grows without bound shows here, not in the JS heap.
    #[serde(default)]
    pub wasm_memory_bytes: f64,
    #[serde(default)]
    pub quality: Quality,
    #[serde(default)]
    pub mic: Mic,
    /// Whether the camera is in the corner of the picture.
    #[serde(default)]
    pub overlay: bool,
    /// Whether the microphone can be mixed in while live (a tab started with "Talk over the tab").
    #[serde(default)]
    pub mixing: bool,
    /// A part of the broadcast that could not start (microphone or camera refused), said plainly.
    #[serde(default)]
    pub notice: Option<String>,
    /// Main-thread time per composited frame (ms), when the camera is in the corner.
    #[serde(default)]
    pub composite_ms_avg: f64,
    /// What encodes: `media-recorder` (Chromium's, a camera or a screen), `track-processors`
    /// (WebCodecs fed by track processors, a tab on Chromium) or `video-element` (WebCodecs fed
    /// by a video element, Firefox); empty before the capture starts.
    #[serde(default)]
    pub recorder: String,
}

/// The streamer's microphone in a broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mic {
    /// Not heard (not mixed in, or the broadcast has no microphone).
    #[default]
    Off,
    /// Heard by viewers.
    On,
    /// Open but silenced by the panel's Mute.
    Muted,
}

/// The video frames of what the server stores, for [`Status::video_placed`]: each media
/// request (a whole segment or a part, by seq and part) is noted with its frames when it is
/// sent, and a seq's frames count once the server holds that segment (its upload or commit
/// acknowledged, or a gap answered `409` because the segment landed after all); a seq given up
/// (a gap recorded, or a `409` that moved the segment to a fresh seq) counts nothing. Parts are
/// noted by index, so a part sent again is not counted twice.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PlacedFrames {
    /// Frames of each part (part 0 of a whole segment) sent under a seq not yet settled.
    sent: std::collections::BTreeMap<u64, std::collections::BTreeMap<u32, u64>>,
    /// The request on the wire.
    on_wire: Option<Sending>,
    /// Frames of the segments the server holds.
    pub stored: u64,
}

/// What a request carries, for [`PlacedFrames`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sending {
    /// A whole segment (`part` 0) or a part, with its video frames.
    Media { seq: u64, part: u32, frames: u64 },
    /// The commit of a segment's parts.
    Commit { seq: u64 },
    /// The gap that gives a seq up.
    Gap { seq: u64 },
}

impl PlacedFrames {
    /// A request is about to be made.
    pub fn sending(&mut self, s: Sending) {
        if let Sending::Media { seq, part, frames } = s {
            self.sent.entry(seq).or_default().insert(part, frames);
        }
        self.on_wire = Some(s);
    }

    /// The request on the wire was acknowledged; `held`: the server now holds its segment
    /// (a whole segment, a commit, or a gap the segment beat).
    pub fn acked(&mut self, held: bool) {
        let Some(s) = self.on_wire.take() else { return };
        let seq = match s {
            Sending::Media { seq, .. } | Sending::Commit { seq } | Sending::Gap { seq } => seq,
        };
        if held {
            self.stored += self.sent.remove(&seq).map_or(0, |p| p.values().sum());
        } else if let Sending::Gap { .. } = s {
            self.sent.remove(&seq);
        }
    }
}

/// What to tell the user when the server refuses an upload for good: why, and what to do.
/// Every status the queue stops on ([`crate::queue::Outcome::Fatal`], and a `409` no seq can
/// fix) has its own words; the caller adds the server's `error` text.
pub fn refusal_message(status: u16, server: &str) -> String {
    match status {
        401 => format!("The server at {server} refused the ingest token (401) — check Options."),
        403 => format!("The server at {server} does not allow this stream (403) — check the token in Options."),
        404 => format!("There is no Chalkstream ingest at {server} (404) — check the server URL in Options."),
        413 => format!(
            "The server at {server} refused an upload as larger than its limit (413) — choose a lower Quality or a shorter Segment length in Options, or ask its operator to raise max_segment_bytes."
        ),
        400 => format!("The server at {server} rejected an upload as invalid (400) — update the extension or the server, then start again."),
        409 => format!(
            "The server at {server} will not take more of this stream (409), so the broadcast stopped — start a new one (it gets a new link)."
        ),
        s => format!("The server at {server} answered {s} — check the server URL in Options."),
    }
}

/// A device a broadcast asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Microphone,
    Camera,
}

/// What to tell the user when `getUserMedia` refuses a device (`error` is the DOMException's
/// name), and what still happens.
pub fn device_refusal(device: Device, error: &str) -> String {
    let (what, without) = match device {
        Device::Microphone => ("the microphone", "The tab streams without your voice"),
        Device::Camera => (
            "the camera",
            "The tab streams without your face in the corner",
        ),
    };
    let why = match error {
        "NotAllowedError" | "SecurityError" | "PermissionDeniedError" => format!(
            "Chalkstream may not use {what}: allow it in Options (Chrome asks once), or in the site settings of this extension"
        ),
        "NotFoundError" | "DevicesNotFoundError" | "OverconstrainedError" => {
            format!("No {} was found: connect one", &what[4..])
        }
        "NotReadableError" | "TrackStartError" | "AbortError" => {
            format!("{} is in use by another app or could not start: close that app", capitalize(what))
        }
        other => format!("{} could not start ({other})", capitalize(what)),
    };
    format!("{why}. {without}.")
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// What to tell the user while the server cannot be reached.
pub fn unreachable_message(server: &str, status: Option<u16>) -> String {
    let why = match status {
        Some(429) => format!("The server at {server} asks to wait (429)"),
        Some(s) => format!("The server at {server} is failing ({s})"),
        None => format!("Can't reach the server at {server}"),
    };
    format!("{why}. Segments wait here (up to 5 minutes) and are sent when it is back.")
}

/// Checks a server URL typed in Options; returns it without a trailing slash.
pub fn normalize_server(input: &str) -> Result<String, String> {
    let s = input.trim().trim_end_matches('/');
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| "The server URL must start with http:// or https://.".to_string())?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
        return Err(
            "Enter just the server's address, like http://127.0.0.1:3000 (no path).".into(),
        );
    }
    Ok(s.to_string())
}

/// True for servers the extension may reach without asking (loopback).
pub fn is_loopback(server: &str) -> bool {
    let host = server.split("://").nth(1).unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    host == "127.0.0.1" || host == "localhost"
}

/// Formats seconds as h:mm:ss or m:ss.
pub fn clock(total_s: u64) -> String {
    let (h, m, s) = (total_s / 3600, total_s / 60 % 60, total_s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// Formats bits per second for people.
pub fn rate(bps: f64) -> String {
    if bps >= 1e6 {
        format!("{:.1} Mbit/s", bps / 1e6)
    } else {
        format!("{:.0} kbit/s", bps / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placed_frames_count_what_the_server_holds_once() {
        let mut p = PlacedFrames::default();
        // Parts of seq 0, part 1 sent twice (the first try unanswered), then the commit.
        p.sending(Sending::Media { seq: 0, part: 0, frames: 10 });
        p.acked(false);
        p.sending(Sending::Media { seq: 0, part: 1, frames: 9 });
        p.sending(Sending::Media { seq: 0, part: 1, frames: 9 });
        p.acked(false);
        assert_eq!(p.stored, 0, "parts count once their segment is committed");
        p.sending(Sending::Commit { seq: 0 });
        p.acked(true);
        assert_eq!(p.stored, 19);
        // Seq 1 is sent, dropped by the outage bound and given up: a recorded gap.
        p.sending(Sending::Media { seq: 1, part: 0, frames: 10 });
        p.sending(Sending::Gap { seq: 1 });
        p.acked(false);
        // Seq 2's gap is answered 409: its late upload landed, it counts.
        p.sending(Sending::Media { seq: 2, part: 0, frames: 7 });
        p.sending(Sending::Gap { seq: 2 });
        p.acked(true);
        assert_eq!(p.stored, 26);
        // A whole segment acknowledged, and a second acknowledgement of nothing.
        p.sending(Sending::Media { seq: 3, part: 0, frames: 50 });
        p.acked(true);
        p.acked(true);
        assert_eq!(p.stored, 76);
        assert!(p.sent.is_empty());
    }

    #[test]
    fn low_latency_is_the_default_and_old_records_read_as_whole_segments() {
        let o: Options = serde_json::from_value(serde_json::json!({"server": "http://a"})).unwrap();
        assert!(o.low_latency);
        let o: Options = serde_json::from_value(serde_json::json!({"low_latency": false})).unwrap();
        assert!(!o.low_latency);
        let b: Broadcast = serde_json::from_value(serde_json::json!({
            "session": "s", "stream": "i", "server": "http://a", "token": "", "segment_ms": 2000,
            "source": "tab", "started_at_ms": 0.0, "media_stream_id": null,
        }))
        .unwrap();
        assert!(!b.low_latency);
    }

    #[test]
    fn device_refusals_say_what_happens_and_what_to_do() {
        let m = device_refusal(Device::Microphone, "NotAllowedError");
        assert!(
            m.contains("may not use the microphone")
                && m.contains("Options")
                && m.contains("without your voice"),
            "{m}"
        );
        let c = device_refusal(Device::Camera, "NotFoundError");
        assert!(
            c.starts_with("No camera was found") && c.contains("without your face"),
            "{c}"
        );
        assert!(
            device_refusal(Device::Camera, "NotReadableError").starts_with("The camera is in use")
        );
    }

    #[test]
    fn uptime_and_rate_read_for_people() {
        assert_eq!(clock(5), "0:05");
        assert_eq!(clock(3725), "1:02:05");
        assert_eq!(rate(2_500_000.0), "2.5 Mbit/s");
        assert_eq!(rate(64_000.0), "64 kbit/s");
    }

    #[test]
    fn refusals_say_what_to_do() {
        let m = refusal_message(401, "http://x:1");
        assert!(m.contains("http://x:1") && m.contains("token") && m.contains("check Options"));
        assert!(refusal_message(413, "s").contains("shorter Segment length"));
        assert!(refusal_message(413, "s").contains("lower Quality"));
        assert!(unreachable_message("s", None).contains("Can't reach"));
        assert!(unreachable_message("s", Some(503)).contains("is failing (503)"));
        assert!(unreachable_message("s", Some(429)).contains("asks to wait (429)"));
    }

    /// Issue 18: every answer the queue stops on says what to do, and a 409 (a stream started
    /// with whole segments, another part target, or one segment refused under seq after seq)
    /// is not sent to Options to check a URL that is right.
    #[test]
    fn every_status_the_queue_stops_on_says_what_to_do() {
        use crate::queue::{classify, classify_answer, Outcome};
        for status in [400, 401, 403, 404, 405, 409, 410, 413, 414, 415, 422, 431] {
            let stops = match status {
                409 => classify_answer(
                    Some(409),
                    "this stream was started with whole segments (wire contract v1); start a new session to upload parts",
                ),
                s => classify(Some(s)),
            };
            assert_eq!(stops, Outcome::Fatal(status), "{status} stops the queue");
            let m = refusal_message(status, "http://x:1");
            assert!(m.contains("http://x:1") && m.contains(&status.to_string()), "{m}");
            assert!(m.contains(" — "), "{status} says what to do: {m}");
        }
        let m = refusal_message(409, "s");
        assert!(m.contains("start a new one") && !m.contains("server URL"), "{m}");
        let m = refusal_message(400, "s");
        assert!(m.contains("an upload") && m.contains("update"), "{m}");
    }

    #[test]
    fn server_urls_are_checked() {
        assert_eq!(
            normalize_server(" http://127.0.0.1:3000/ ").unwrap(),
            "http://127.0.0.1:3000"
        );
        assert!(normalize_server("ftp://a").is_err());
        assert!(normalize_server("https://a/b").is_err());
        assert!(is_loopback("http://127.0.0.1:3000"));
        assert!(is_loopback("http://localhost"));
        assert!(!is_loopback("https://example.com"));
    }
}
