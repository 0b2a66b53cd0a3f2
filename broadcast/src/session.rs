//! What the broadcast page decides, without the browser: which session it streams under (the
//! one kept in `localStorage`, so a reload resumes the same stream, or a new one), where a
//! resumed stream goes on, the broadcast's settings, and the panel's texts.

use chalkstream_manifest::id::SessionSecret;
use chalkstream_pipeline::broadcast::{Broadcast, Phase, Source, Status};
use chalkstream_pipeline::ids;
use chalkstream_pipeline::presets::{Overlay, Quality};
use chalkstream_pipeline::timing::DEFAULT_SEGMENT_S;

/// `localStorage` keys. The secret stays in this browser: it never goes into a URL but the
/// ingest path, and never into the page's text.
pub const KEY_SESSION: &str = "chalkstream.session";
pub const KEY_TOKEN: &str = "chalkstream.token";
/// The preset chosen under Settings (`480p`, `720p`, `1080p`); 720p when unset.
pub const KEY_QUALITY: &str = "chalkstream.quality";

/// What the page says when it went on at `to` because this computer could not keep up with
/// `from` (ffmpeg.wasm needed `per_s` seconds per second of video).
pub fn fell_back(from: Quality, to: Quality, per_s: f64) -> String {
    format!(
        "This computer could not keep up with {} (turning each second of video into HLS took {per_s:.1} s), so the page \
         went on at {}; viewers saw a short break. Choose the preset under Settings for your next broadcast.",
        from.name(),
        to.name()
    )
}

/// The preset a kept value names, else the default (720p).
pub fn quality(kept: Option<&str>) -> Quality {
    kept.and_then(Quality::from_name).unwrap_or_default()
}
/// Set while a broadcast runs, to what it streams (`camera` or `screen`): a reload with it set
/// goes live again under the same session (the camera by itself; a screen needs the streamer to
/// pick it again, since only a click may open the browser's sharing dialog).
pub const KEY_LIVE: &str = "chalkstream.live";

/// The value [`KEY_LIVE`] keeps for `source`.
pub fn live_value(source: Source) -> &'static str {
    match source {
        Source::Screen => "screen",
        _ => "camera",
    }
}

/// What a reload finds in [`KEY_LIVE`]: the source to go on with (a value from before screens
/// were offered, `1`, was the camera).
pub fn live_source(kept: &str) -> Source {
    if kept == "screen" {
        Source::Screen
    } else {
        Source::Camera
    }
}

/// Said after a reload that ended a screen share.
pub const SHARE_AGAIN: &str = "The reload ended your screen share. Choose Share a screen or window to go on with the same stream and link.";

/// The session to stream under: the kept one when it is a valid secret, else a new one from
/// `random` (32 bytes from the CSPRNG). The flag says whether it is new (to be kept).
pub fn keep_or_new(kept: Option<&str>, random: &[u8; 32]) -> (String, bool) {
    match kept.filter(|s| SessionSecret::parse(s).is_ok()) {
        Some(session) => (session.to_owned(), false),
        None => (ids::session_secret(random), true),
    }
}

/// Where a stream goes on, from the server's status answer (`GET /api/streams/{id}`): after its
/// last stored seq; `None` (seq 0) when the server has none.
pub fn resume_seq(status: Option<&serde_json::Value>) -> Option<u64> {
    status?.get("last_seq")?.as_u64()?.checked_add(1)
}

/// The broadcast the page runs: the camera and microphone (or a shared screen) at the default
/// preset, low latency, 2 s segments, to this server.
pub fn broadcast(
    session: &str,
    server: &str,
    token: &str,
    source: Source,
    quality: Quality,
    now_ms: f64,
    resume_at_seq: Option<u64>,
) -> Result<Broadcast, String> {
    Ok(Broadcast {
        stream: ids::stream_id(session)?,
        session: session.to_owned(),
        server: server.trim_end_matches('/').to_owned(),
        token: token.trim().to_owned(),
        segment_ms: u64::from(DEFAULT_SEGMENT_S) * 1000,
        source,
        started_at_ms: now_ms,
        media_stream_id: None,
        low_latency: true,
        quality,
        mic: false,
        overlay: Overlay::default(),
        resume_at_seq,
    })
}

/// The pipeline's messages name the extension's Options page; here the settings are on the
/// page itself.
pub fn for_page(message: &str) -> String {
    message
        .replace("in Options and start again", "under Settings, then Stop and go live again")
        .replace("check the token in Options", "check the ingest token below")
        .replace("check Options", "check the ingest token below")
        .replace("check the server URL in Options", "reload this page from the server you mean to stream to")
        .replace(" in Options", "")
}

/// What the page says where the browser can record the camera neither as H.264 WebM nor
/// through WebCodecs (Safari, older browsers).
pub const CANNOT_RECORD: &str = "This browser cannot record the camera as H.264 video, which Chalkstream streams. \
     Broadcast from Chrome, Edge, Firefox or another recent browser, on a computer or on Android; \
     the viewer link plays everywhere.";

/// The state line of the panel; `source` is what the page starts or streams.
pub fn state_line(status: Option<&Status>, starting: bool, source: Source) -> String {
    let starting_line = || match source {
        Source::Screen => "Choose what to share…".to_owned(),
        _ => "Starting the camera…".to_owned(),
    };
    match status.map(|s| s.phase) {
        None if starting => starting_line(),
        None => "Not streaming.".into(),
        Some(Phase::Starting) => starting_line(),
        Some(Phase::Live) if source == Source::Screen => "Live: sharing your screen".into(),
        Some(Phase::Live) => "Live".into(),
        Some(Phase::Stopping) => "Stopping: sending what is left…".into(),
        Some(Phase::Ended) => "Ended. The recording stays at the viewer link.".into(),
        Some(Phase::Failed) => "Stopped.".into(),
    }
}

/// The health line: what was sent, what waits, how fast.
pub fn health_line(s: &Status) -> String {
    let mut line = format!(
        "{} segments sent, {} waiting, {}",
        s.segments_sent,
        s.segments_waiting,
        chalkstream_pipeline::broadcast::rate(s.upload_rate_bps)
    );
    if s.segments_dropped > 0 {
        line.push_str(&format!(", {} dropped during an outage", s.segments_dropped));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_session_is_reused_and_anything_else_replaced() {
        let random = [7u8; 32];
        let (fresh, new) = keep_or_new(None, &random);
        assert!(new && SessionSecret::parse(&fresh).is_ok());
        assert_eq!(keep_or_new(Some(&fresh), &[9u8; 32]), (fresh.clone(), false));
        for bad in ["", "short", "has space in it and is long enough", "<script>"] {
            let (s, new) = keep_or_new(Some(bad), &random);
            assert!(new && s == fresh, "{bad:?} was kept");
        }
    }

    #[test]
    fn a_resumed_stream_goes_on_after_its_last_stored_seq() {
        let status = serde_json::json!({"state": "ended", "first_seq": 3, "last_seq": 41});
        assert_eq!(resume_seq(Some(&status)), Some(42));
        assert_eq!(resume_seq(None), None);
        assert_eq!(resume_seq(Some(&serde_json::json!({"error": "no such stream"}))), None);
    }

    #[test]
    fn the_page_streams_the_camera_at_low_latency_under_the_sessions_stream_id() {
        let (session, _) = keep_or_new(None, &[1u8; 32]);
        let b = broadcast(&session, "http://h:3000/", " tok ", Source::Camera, Quality::default(), 5.0, Some(4)).unwrap();
        assert_eq!(b.stream, ids::stream_id(&session).unwrap());
        assert_eq!((b.server.as_str(), b.token.as_str(), b.source), ("http://h:3000", "tok", Source::Camera));
        assert!(b.low_latency && b.segment_ms == 2000 && b.resume_at_seq == Some(4));
        assert_eq!(b.viewer_url(), format!("http://h:3000/play/{}", b.stream));
    }

    #[test]
    fn a_reload_goes_on_with_the_camera_and_asks_for_the_screen_again() {
        for source in [Source::Camera, Source::Screen] {
            assert_eq!(live_source(live_value(source)), source);
        }
        assert_eq!(live_source("1"), Source::Camera, "a page kept by an earlier version");
        let (session, _) = keep_or_new(None, &[1u8; 32]);
        assert_eq!(broadcast(&session, "http://h", "", Source::Screen, Quality::P480, 0.0, None).unwrap().source, Source::Screen);
        assert_eq!(state_line(None, true, Source::Screen), "Choose what to share…");
        assert_eq!(state_line(None, true, Source::Camera), "Starting the camera…");
    }

    #[test]
    fn the_preset_kept_under_settings_is_used_and_anything_else_is_720p() {
        assert_eq!(quality(Some("480p")), Quality::P480);
        assert_eq!(quality(Some("1080p")), Quality::P1080);
        for kept in [None, Some(""), Some("4k"), Some("720")] {
            assert_eq!(quality(kept), Quality::P720, "{kept:?}");
        }
        let (session, _) = keep_or_new(None, &[1u8; 32]);
        assert_eq!(broadcast(&session, "http://h", "", Source::Camera, Quality::P480, 0.0, None).unwrap().quality, Quality::P480);
    }

    #[test]
    fn a_fall_back_says_from_what_to_what_and_why() {
        let m = fell_back(Quality::P720, Quality::P480, 1.234);
        assert!(m.contains("keep up with 720p") && m.contains("took 1.2 s") && m.contains("went on at 480p"), "{m}");
    }

    #[test]
    fn advice_to_choose_a_lower_preset_points_at_the_pages_settings() {
        use chalkstream_pipeline::presets::Advice;
        let m = for_page(&Advice::CannotKeepUp { remux_per_media_s: 1.2 }.message(Quality::P720));
        assert!(m.contains("choose 480p under Settings, then Stop and go live again") && !m.contains("Options"), "{m}");
        let m = for_page(&Advice::UploadsBehind { waiting: 4 }.message(Quality::P1080));
        assert!(m.contains("choose 720p under Settings") && !m.contains("Options"), "{m}");
    }

    #[test]
    fn messages_point_at_the_page_not_the_extensions_options() {
        let m = for_page(&chalkstream_pipeline::broadcast::refusal_message(401, "http://h"));
        assert!(m.contains("check the ingest token below") && !m.contains("Options"), "{m}");
        for status in [400, 403, 404, 409, 413, 500] {
            let m = for_page(&chalkstream_pipeline::broadcast::refusal_message(status, "http://h"));
            assert!(!m.contains("Options"), "{m}");
        }
    }
}
