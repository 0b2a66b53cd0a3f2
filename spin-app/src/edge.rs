//! The Spin edge: the `wasi:http` entry point, Spin key-value behind [`Kv`], configuration from
//! Spin variables, and the clock. It converts types and moves bytes; [`crate::api`] decides.
//! Nothing here logs a request path (ingest paths hold the session secret).
//!
//! Held requests ([`Step::Hold`]) sleep between checks with `std::thread::sleep`, which on
//! `wasm32-wasip2` is `wasi:clocks/monotonic-clock.subscribe-duration(..).block()` (Rust's
//! `library/std/src/sys/thread/wasip2.rs`): the guest blocks on a pollable and the host parks
//! the call asynchronously, so nothing spins and other requests (other instances) run on. It
//! adds no import: the component already imports `wasi:clocks/monotonic-clock` and
//! `wasi:io/poll` (0.2.x, through std and spin-sdk), which Spin 3.x and 4.x provide. Blocking the
//! guest is right here because an instance serves exactly one request and has nothing else to
//! poll while it waits.

use crate::api::{self, BodyError, RequestHead, Step};
use crate::hold;
use crate::sweep;
use crate::kv::{check_limits, Kv, KvError};
use crate::reply::{ApiError, Body, Reply};
use crate::route::Method;
use chalkstream_manifest::rules::{Config, ConfigError};
use futures::{SinkExt, StreamExt};
use spin_sdk::http::{Fields, IncomingRequest, OutgoingResponse, ResponseOutparam, Scheme};
use spin_sdk::key_value::Store;

/// Spin's key-value store (`default`).
struct SpinKv(Store);

impl Kv for SpinKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.0.get(key).map_err(|e| KvError::new(format!("get failed: {e}")))
    }

    /// A `set` the store answers `store-table-full` or `other(..)` is a write it refused: a
    /// platform's limit (Fermyon Cloud's 1,024 keys; it says so in `other`'s text, as the
    /// bundled host does) or a store that cannot take it now. Either way nothing is
    /// acknowledged and the same write may succeed later, so it is `503`, not `500`
    /// ([`KvError::refused`]). `access-denied` or `no-such-store` is a misconfigured server.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        use spin_sdk::key_value::Error as E;
        check_limits(key, value)?;
        self.0.set(key, value).map_err(|e| match e {
            E::StoreTableFull | E::Other(_) => KvError::refused(format!("set refused: {e}")),
            _ => KvError::new(format!("set failed: {e}")),
        })
    }

    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.0.delete(key).map_err(|e| KvError::new(format!("delete failed: {e}")))
    }
}

/// A variable's value; an undefined one falls back to the documented default.
fn variable(name: &'static str, default: &str) -> Result<String, ConfigError> {
    match spin_sdk::variables::get(name) {
        Ok(value) => Ok(value),
        Err(spin_sdk::variables::Error::Undefined(_)) => Ok(default.to_owned()),
        Err(_) => Err(ConfigError { variable: name, expected: "a readable Spin variable" }),
    }
}

fn config() -> Result<Config, ConfigError> {
    Config::parse(
        &variable("stream_retention", "10")?,
        &variable("idle_timeout", "30")?,
        &variable("ingest_token", "")?,
        &variable("max_segment_bytes", "16777216")?,
        &variable("admin_token", "")?,
    )?
    .with_playback_url(&variable("playback_url", "")?)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn method(method: spin_sdk::http::Method) -> Method {
    use spin_sdk::http::Method as M;
    match method {
        M::Get => Method::Get,
        M::Head => Method::Head,
        M::Put => Method::Put,
        M::Post => Method::Post,
        M::Options => Method::Options,
        other => Method::Other(other.to_string()),
    }
}

fn request_head(req: &IncomingRequest) -> RequestHead {
    let headers: Vec<(String, String)> = req
        .headers()
        .entries()
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_ascii_lowercase(), String::from_utf8(value).ok()?)))
        .collect();
    let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let path_with_query = req.path_with_query().unwrap_or_else(|| "/".to_owned());
    let (path, query) = match path_with_query.split_once('?') {
        Some((path, query)) => (path.to_owned(), query.to_owned()),
        None => (path_with_query, String::new()),
    };
    let scheme = match find("spin-full-url").as_deref().and_then(|url| url.split_once("://")) {
        Some((scheme, _)) => scheme.to_owned(),
        None => match req.scheme() {
            Some(Scheme::Https) => "https".to_owned(),
            _ => "http".to_owned(),
        },
    };
    let authority = find("host").or_else(|| req.authority()).unwrap_or_default();
    RequestHead {
        method: method(req.method()),
        path,
        query,
        base_url: api::base_url(&scheme, &authority),
        headers,
    }
}

/// Reads the body, stopping as soon as it exceeds `limit`.
async fn read_body(req: IncomingRequest, limit: u64) -> Result<Vec<u8>, BodyError> {
    let mut stream = req.into_body_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        // The host says what broke (a body that stalled past its timeout, a reset); the resource
        // handle itself says nothing.
        let chunk = chunk.map_err(|e| BodyError::Read(e.to_debug_string()))?;
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn send(reply: Reply, kv: Option<&SpinKv>, out: ResponseOutparam) {
    let mut headers: Vec<(String, Vec<u8>)> =
        reply.headers.iter().map(|(name, value)| ((*name).to_owned(), value.as_bytes().to_vec())).collect();
    if reply.body != Body::Empty {
        headers.push(("content-length".to_owned(), reply.body_len().to_string().into_bytes()));
    }
    let Ok(fields) = Fields::from_list(&headers) else {
        eprintln!("chalkstream: internal error: response headers rejected");
        return;
    };
    let response = OutgoingResponse::new(fields);
    let _ = response.set_status_code(reply.status);
    let mut sink = response.take_body();
    out.set(response);
    let result = match reply.body {
        Body::Empty => Ok(()),
        Body::Bytes(bytes) => sink.send(bytes).await,
        Body::Static(bytes) => sink.send(bytes.to_vec()).await,
        Body::File(file) => send_file(&file.path, &mut sink).await,
        Body::Stored(media) => {
            for key in media.keys {
                let value = match kv.map(|kv| kv.get(&key.key)) {
                    Some(Ok(Some(bytes))) => key.take(bytes),
                    _ => None,
                };
                match value {
                    Some(bytes) => {
                        if sink.send(bytes).await.is_err() {
                            break;
                        }
                    }
                    // Deleted by retention after the meta was read: end the body early.
                    _ => {
                        eprintln!("chalkstream: a segment part vanished while it was sent");
                        break;
                    }
                }
            }
            Ok(())
        }
    };
    if result.is_err() {
        eprintln!("chalkstream: client went away while a response was sent");
    }
}

/// Streams a file in 64 KiB pieces: a 30 MB file never sits in the instance's memory.
async fn send_file<S: futures::Sink<Vec<u8>> + Unpin>(path: &std::path::Path, sink: &mut S) -> Result<(), S::Error> {
    use std::io::Read;
    let Ok(mut file) = std::fs::File::open(path) else {
        eprintln!("chalkstream: a mounted file vanished before it was sent");
        return Ok(());
    };
    let mut buffer = vec![0; 64 * 1024];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => sink.send(buffer[..n].to_vec()).await?,
            Err(e) => {
                eprintln!("chalkstream: reading a mounted file failed: {e}");
                return Ok(());
            }
        }
    }
}

#[spin_sdk::http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let head = request_head(&req);
    let kv = match Store::open_default() {
        Ok(store) => SpinKv(store),
        Err(e) => {
            let reply = ApiError::internal(format!("cannot open the default key-value store: {e}")).into_reply();
            return send(reply, None, out).await;
        }
    };
    let reply = match api::handle(&head, &kv, config, now_ms()) {
        Step::Reply(reply) => reply,
        Step::ReadBody(upload) => {
            let body = read_body(req, upload.limit).await;
            upload.finish(&head, &kv, body, now_ms())
        }
        Step::Hold(held) => hold::wait(held, &kv, now_ms, |ms| std::thread::sleep(std::time::Duration::from_millis(ms))),
    };
    send(reply, Some(&kv), out).await;
    // The response is complete (its body was finished when `send` dropped it): the sweep's
    // bounded step runs after it, so no client waits for it.
    if let Ok(config) = config() {
        sweep::after_request(&kv, &config, now_ms());
    }
}
