//! What a handler answers, independent of Spin's types: a status, headers and a body, and the
//! one error type ([`ApiError`]) that every handler uses for bad input and failures.

use crate::files::StaticFile;
use crate::route::{Family, Method};
use crate::store::{Media, PlaylistText};
use chalkstream_manifest::window::State;
use serde_json::json;
use std::fmt;

// `Cache-Control`, answer by answer, so a cache in front (nginx, a CDN) may keep each as long as
// it stays right, and hand one origin answer to every viewer that asked the same URL (its query
// included) at once. docs/API.md, "Caching", has the table and the reasons.

/// An ended playlist: half a minute, not longer, because it can still change: a later upload to
/// the same session resumes the stream (the extension resumes after an outage longer than the
/// idle timeout), and with retention its oldest segments keep leaving the window.
pub(crate) const ENDED_PLAYLIST_CACHE: &str = "public, max-age=30";
/// Segments and parts: a stored seq or part never changes (a conflicting upload is refused).
pub(crate) const CHUNK_CACHE: &str = "public, max-age=31536000, immutable";
/// A playback miss (`404`: no such stream yet, a part its segment was sealed without, one that
/// can no longer come) or a held request that timed out (`503` with `Retry-After: 1`): one
/// second, the shortest lifetime HTTP can give. It lets a cache hand the one answer to every
/// viewer that was waiting for the same URL (with `max-age=0` or `no-store`, nginx's cache lock
/// passes them to the origin one after another), and the stream's start or the next try is
/// seen a second later.
pub(crate) const MISS_CACHE: &str = "public, max-age=1";
/// The status answer (`/api/streams/{id}`): a player polls it every 2 s while it waits for the
/// stream, so a waiting audience costs the origin one request a second, not one per viewer.
pub(crate) const STATUS_CACHE: &str = "public, max-age=1";
pub(crate) const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";


/// A response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    Static(&'static [u8]),
    /// A stored segment or part, streamed value by value from the store.
    Stored(Media),
    /// A file of the `files` mount, streamed from the filesystem.
    File(StaticFile),
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Reply {
    pub fn new(status: u16, content_type: &str, body: Body) -> Self {
        Reply { status, headers: vec![("content-type", content_type.to_owned())], body }
    }

    /// A JSON answer.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        let mut reply = Reply::new(status, "application/json", Body::Bytes(value.to_string().into_bytes()));
        reply.headers.push(("cache-control", "no-store".to_owned()));
        reply
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.into()));
        self
    }

    /// The value of a header (tests and the edge).
    pub fn get_header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The body's length when it is known without reading the store.
    pub fn body_len(&self) -> u64 {
        match &self.body {
            Body::Empty => 0,
            Body::Bytes(bytes) => bytes.len() as u64,
            Body::Static(bytes) => bytes.len() as u64,
            Body::Stored(media) => media.len,
            Body::File(file) => file.len,
        }
    }
}

/// An error answer: `{"error": message}` with a status. Build 5xx ones with
/// [`ApiError::internal`], which logs the cause and answers a generic message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub allow: Option<&'static str>,
    /// Seconds for a `Retry-After` header (a `429` says when to try again).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), allow: None, retry_after: None }
    }

    /// `429 Too Many Requests` with `Retry-After`: the request is fine, but not now.
    pub fn too_many(message: impl Into<String>, retry_after_s: u32) -> Self {
        ApiError { retry_after: Some(retry_after_s), ..ApiError::new(429, message) }
    }

    pub fn bad_request(message: impl fmt::Display) -> Self {
        ApiError::new(400, message.to_string())
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(404, message)
    }

    /// A server failure: the cause goes to the log (it never holds a secret), the client gets
    /// a generic message.
    pub fn internal(cause: impl fmt::Display) -> Self {
        eprintln!("chalkstream: internal error: {cause}");
        ApiError::new(500, "internal server error; the server log has details")
    }

    pub fn into_reply(self) -> Reply {
        let mut reply = Reply::json(self.status, &json!({ "error": self.message }));
        if let Some(allow) = self.allow {
            reply = reply.header("allow", allow);
        }
        if let Some(seconds) = self.retry_after {
            reply = reply.header("retry-after", seconds.to_string());
        }
        reply
    }
}

/// Seconds a client waits before it sends a write the store refused again.
pub const STORE_REFUSED_RETRY_S: u32 = 5;

/// The one place a storage error becomes an answer: a write the store refused (full, or not
/// now) is `503` with `Retry-After` — the request was fine, nothing was acknowledged, and it
/// may succeed once retention frees keys; any other failure is `500`. The cause goes to the log
/// (store keys hold stream ids, never a session secret), never to the client.
impl From<crate::kv::KvError> for ApiError {
    fn from(e: crate::kv::KvError) -> Self {
        if !e.is_refused() {
            return ApiError::internal(e);
        }
        eprintln!("chalkstream: {e}");
        ApiError {
            retry_after: Some(STORE_REFUSED_RETRY_S),
            ..ApiError::new(
                503,
                "the server's key-value store is full or refused the write, so this upload was not stored; \
                 it will be retried after Retry-After (retention frees space as old segments expire)",
            )
        }
    }
}

/// The last touch every answer gets, held ones too: CORS for playback and ingest, a second's
/// cache for a playback `404` or `503` ([`MISS_CACHE`]), no body for `HEAD`.
pub(crate) fn finish(mut reply: Reply, method: &Method, family: Family) -> Reply {
    if matches!(family, Family::Playback | Family::Ingest) {
        reply = reply.header("access-control-allow-origin", "*");
    }
    if family == Family::Playback && matches!(reply.status, 404 | 503) {
        reply = reply.header("cache-control", MISS_CACHE);
    }
    if *method == Method::Head {
        reply.body = Body::Empty;
    }
    reply
}

/// One part, streamed from its slices.
pub(crate) fn part_reply(media: Media) -> Reply {
    Reply::new(200, "video/mp2t", Body::Stored(media)).header("cache-control", CHUNK_CACHE)
}

/// A playlist, whether asked plainly or as a blocking reload (`_HLS_msn`/`_HLS_part`, keyed by
/// its query in a cache): while live, cacheable for [`live_max_age_s`]; [`ENDED_PLAYLIST_CACHE`]
/// once ended. No `stale-while-revalidate`: a browser honours it too, and a player then reloads
/// a playlist up to twice as old (the player's "jump to live" test stopped catching up with it);
/// a cache in front serves stale copies while it refetches by its own setting
/// (`deploy/nginx/chalkstream.conf`: `proxy_cache_use_stale updating`).
///
/// A blocking reload's answer keeps the part it was asked for forever, but it is the newest
/// playlist only until the next part arrives, about a part target later. A longer lifetime
/// would hand a viewer that asks late (behind, or joining from a stale playlist) an old
/// playlist with a growing `Age`, and a client that aims its next request by `Age`
/// (rfc8216bis Appendix C, hls.js) past the Advance Part Limit. The viewers following the live
/// edge all ask for the same hint within a part target of each other, so one second already
/// collapses them into one origin request.
pub(crate) fn playlist_reply(playlist: PlaylistText) -> Reply {
    let cache = match playlist.state {
        State::Live => {
            let max_age = live_max_age_s(&playlist);
            format!("public, max-age={max_age}")
        }
        State::Ended => ENDED_PLAYLIST_CACHE.to_owned(),
    };
    Reply::new(200, PLAYLIST_TYPE, Body::Bytes(playlist.text.into_bytes())).header("cache-control", cache)
}

/// How long a live playlist stays right, in whole seconds (at least 1: `max-age=0` would keep a
/// cache from collapsing anything): half a target duration (RFC 8216's reload interval), and
/// for a low-latency (v2) stream at most a part target, since it changes with every part.
pub(crate) fn live_max_age_s(playlist: &PlaylistText) -> u32 {
    let half_target = playlist.target_s / 2;
    let seconds = match part_target_ms(&playlist.text) {
        Some(part_target_ms) => half_target.min(part_target_ms / 1000),
        None => half_target,
    };
    seconds.max(1)
}

/// The `PART-TARGET` of a v2 playlist's `EXT-X-PART-INF` (in its head, which we render), in
/// milliseconds; `None` for a v1 playlist.
fn part_target_ms(text: &str) -> Option<u32> {
    let value = text.lines().take(16).find_map(|line| line.strip_prefix("#EXT-X-PART-INF:PART-TARGET="))?;
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let fraction: String = fraction.chars().chain("000".chars()).take(3).collect();
    Some(whole.parse::<u32>().ok()?.checked_mul(1000)?.checked_add(fraction.parse().ok()?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(text: &str, target_s: u32) -> PlaylistText {
        PlaylistText { text: text.to_owned(), state: State::Live, target_s }
    }

    #[test]
    fn a_live_playlist_is_cached_half_a_target_or_a_part_target_and_at_least_a_second() {
        let v2 = |pt: &str, target_s| live(&format!("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{target_s}\n#EXT-X-PART-INF:PART-TARGET={pt}\n"), target_s);
        assert_eq!(part_target_ms(&v2("0.334", 2).text), Some(334));
        assert_eq!(part_target_ms(&v2("2", 6).text), Some(2000));
        assert_eq!(part_target_ms(&v2("1.5", 6).text), Some(1500));
        assert_eq!(part_target_ms("#EXTM3U\n#EXT-X-TARGETDURATION:6\n"), None);
        assert_eq!(live_max_age_s(&v2("0.334", 2)), 1);
        assert_eq!(live_max_age_s(&v2("0.334", 30)), 1);
        assert_eq!(live_max_age_s(&v2("2.000", 6)), 2);
        assert_eq!(live_max_age_s(&v2("1.500", 6)), 1);
        assert_eq!(live_max_age_s(&v2("1.000", 1)), 1);
        for (target_s, max_age) in [(1, 1), (2, 1), (6, 3), (30, 15)] {
            assert_eq!(live_max_age_s(&live("#EXTM3U\n", target_s)), max_age);
        }
    }
}
