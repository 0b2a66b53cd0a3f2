//! Helpers for the component's native tests: requests against the handlers on the memory store.

#![allow(dead_code)]

use chalkstream_manifest::id::SessionSecret;
use chalkstream_manifest::rules::{Config, ConfigError, Retention};
use chalkstream_spin_app::api::{self, BodyError, RequestHead, Step};
use chalkstream_spin_app::kv::{Kv, KvError, MemoryKv};
use chalkstream_spin_app::reply::{Body, Reply};
use chalkstream_spin_app::route::Method;
use std::sync::atomic::{AtomicU64, Ordering};

pub const BASE: &str = "http://127.0.0.1:3000";
pub const SECRET: &str = "test-secret-0123456789abcdef";
pub const T0: i64 = 1_795_611_600_000;

pub fn stream_id(secret: &str) -> String {
    SessionSecret::parse(secret).unwrap().stream_id().to_string()
}

pub fn config(retention: Retention, idle_ms: u64) -> Config {
    Config {
        retention,
        idle_ms,
        ingest_token: None,
        max_segment_bytes: 16_777_216,
        admin_token: None,
        playback_url: None,
    }
}

/// A body of `packets` MPEG-TS packets whose payload bytes are `fill`.
pub fn ts(packets: usize, fill: u8) -> Vec<u8> {
    let mut body = vec![fill; packets * 188];
    for packet in body.chunks_mut(188) {
        packet[0] = 0x47;
    }
    body
}

pub fn head(method: Method, path_and_query: &str, headers: &[(&str, &str)]) -> RequestHead {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    RequestHead {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), (*v).to_owned()))
            .collect(),
        base_url: BASE.to_owned(),
    }
}

/// Runs a request through the handlers like the edge does.
pub fn request(kv: &dyn Kv, config: &Config, head: &RequestHead, body: &[u8], now: i64) -> Reply {
    request_with(kv, || Ok(config.clone()), head, body, now)
}

pub fn request_with(
    kv: &dyn Kv,
    config: impl FnOnce() -> Result<Config, ConfigError>,
    head: &RequestHead,
    body: &[u8],
    now: i64,
) -> Reply {
    match api::handle(head, kv, config, now) {
        Step::Reply(reply) => reply,
        Step::ReadBody(upload) => {
            let read = if body.len() as u64 > upload.limit {
                Err(BodyError::TooLarge)
            } else {
                Ok(body.to_vec())
            };
            upload.finish(head, kv, read, now)
        }
        // A held request on a fake clock that only moves when it sleeps: nothing else writes,
        // so it ends at its deadline (tests that race writers drive `hold::wait` themselves).
        Step::Hold(held) => {
            let clock = std::cell::Cell::new(now);
            chalkstream_spin_app::hold::wait(held, kv, || clock.get(), |ms| clock.set(clock.get() + ms as i64))
        }
    }
}

pub fn put(kv: &dyn Kv, config: &Config, secret: &str, seq: u64, duration: &str, body: &[u8], now: i64) -> Reply {
    put_with(kv, config, secret, seq, &[("X-Duration", duration)], body, now)
}

pub fn put_with(
    kv: &dyn Kv,
    config: &Config,
    secret: &str,
    seq: u64,
    headers: &[(&str, &str)],
    body: &[u8],
    now: i64,
) -> Reply {
    let h = head(Method::Put, &format!("/ingest/{secret}/{seq}.ts"), headers);
    request(kv, config, &h, body, now)
}

pub fn get(kv: &dyn Kv, config: &Config, path: &str, now: i64) -> Reply {
    request(kv, config, &head(Method::Get, path, &[]), &[], now)
}

pub fn playlist(kv: &dyn Kv, config: &Config, id: &str, now: i64) -> Reply {
    get(kv, config, &format!("/playlist/{id}.m3u8"), now)
}

/// The body bytes, reading streamed parts from the store.
pub fn body(kv: &dyn Kv, reply: &Reply) -> Vec<u8> {
    match &reply.body {
        Body::Empty => Vec::new(),
        Body::Bytes(bytes) => bytes.clone(),
        Body::Static(bytes) => bytes.to_vec(),
        Body::File(file) => std::fs::read(&file.path).expect("the mounted file"),
        Body::Stored(media) => media
            .keys
            .iter()
            .flat_map(|k| k.take(kv.get(&k.key).unwrap().expect("part present")).expect("value as long as its range"))
            .collect(),
    }
}

/// Like [`body`], but `None` when a streamed part is missing from the store.
pub fn try_body(kv: &dyn Kv, reply: &Reply) -> Option<Vec<u8>> {
    match &reply.body {
        Body::Stored(media) => {
            let mut out = Vec::new();
            for key in &media.keys {
                out.extend(key.take(kv.get(&key.key).unwrap()?)?);
            }
            Some(out)
        }
        _ => Some(body(kv, reply)),
    }
}

pub fn json(kv: &dyn Kv, reply: &Reply) -> serde_json::Value {
    assert_eq!(reply.get_header("content-type"), Some("application/json"));
    serde_json::from_slice(&body(kv, reply)).expect("JSON body")
}

pub fn text(kv: &dyn Kv, reply: &Reply) -> String {
    String::from_utf8(body(kv, reply)).unwrap()
}

/// The seqs a playlist lists, from its URIs.
pub fn listed_seqs(playlist: &str) -> Vec<u64> {
    playlist
        .lines()
        .filter(|l| l.starts_with("/chunks/"))
        .map(|l| l.rsplit('/').next().unwrap().trim_end_matches(".ts").parse().unwrap())
        .collect()
}

/// The memory store, yielding the thread around every operation (and sleeping `sleep_us` on about
/// one in `sleep_every`), so requests on several threads interleave at every step. `seed` starts
/// the operation count that picks the sleeps.
pub struct Shuffled {
    pub inner: MemoryKv,
    ops: AtomicU64,
    sleep_every: u64,
    sleep_us: u64,
}

impl Shuffled {
    pub fn new(seed: u64, sleep_every: u64, sleep_us: u64) -> Shuffled {
        Shuffled { inner: MemoryKv::new(), ops: AtomicU64::new(seed), sleep_every, sleep_us }
    }

    fn pause(&self) {
        let n = self.ops.fetch_add(1, Ordering::Relaxed);
        std::thread::yield_now();
        if n.wrapping_mul(2_654_435_761) % self.sleep_every == 0 {
            std::thread::sleep(std::time::Duration::from_micros(self.sleep_us));
        }
    }
}

impl Kv for Shuffled {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.pause();
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.pause();
        let r = self.inner.set(key, value);
        self.pause();
        r
    }
    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.pause();
        self.inner.delete(key)
    }
}
