//! What a handler answers, independent of Spin's types: a status, headers and a body, and the
//! one error type ([`ApiError`]) that every handler uses for bad input and failures.

use crate::route::{Family, Method};
use crate::store::PlaylistText;
use chalkstream_manifest::window::State;
use serde_json::json;
use std::fmt;

pub(crate) const ENDED_PLAYLIST_CACHE: &str = "public, max-age=30";
pub(crate) const CHUNK_CACHE: &str = "public, max-age=31536000, immutable";
pub(crate) const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";


/// A response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    Static(&'static [u8]),
    /// A stored segment, streamed part by part from these keys; `len` bytes in total.
    Parts { keys: Vec<String>, len: u64 },
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
            Body::Parts { len, .. } => *len,
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

impl From<crate::kv::KvError> for ApiError {
    fn from(e: crate::kv::KvError) -> Self {
        ApiError::internal(e)
    }
}

/// The last touch every answer gets, held ones too: CORS for playback and ingest, no body for
/// `HEAD`.
pub(crate) fn finish(mut reply: Reply, method: &Method, family: Family) -> Reply {
    if matches!(family, Family::Playback | Family::Ingest) {
        reply = reply.header("access-control-allow-origin", "*");
    }
    if *method == Method::Head {
        reply.body = Body::Empty;
    }
    reply
}

/// One part, streamed from its slices.
pub(crate) fn part_reply(len: u64, keys: Vec<String>) -> Reply {
    Reply::new(200, "video/mp2t", Body::Parts { keys, len }).header("cache-control", CHUNK_CACHE)
}

/// A playlist, cacheable about half a target duration while live and long once ended.
pub(crate) fn playlist_reply(playlist: PlaylistText) -> Reply {
    let cache = match playlist.state {
        State::Live => format!("max-age={}", (playlist.target_s / 2).max(1)),
        State::Ended => ENDED_PLAYLIST_CACHE.to_owned(),
    };
    Reply::new(200, PLAYLIST_TYPE, Body::Bytes(playlist.text.into_bytes())).header("cache-control", cache)
}
