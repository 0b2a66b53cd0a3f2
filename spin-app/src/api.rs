//! The handlers: from a parsed request to a [`Reply`], with storage behind [`Kv`]. The Spin edge
//! (`edge.rs`) only converts types and moves bytes; everything here runs in native unit tests.
//!
//! Uploads take two steps because the body is read by the edge, with a size limit, only after
//! the path, the token and the declared length have been checked: [`handle`] answers a
//! [`Step::ReadBody`] and [`Upload::finish`] stores the body. A blocking reload or a request for
//! a part not stored yet answers a [`Step::Hold`], which the edge runs with [`crate::hold::wait`].
//!
//! CORS: playback endpoints (playlist, chunks, status) and ingest answer
//! `Access-Control-Allow-Origin: *`, including their errors and `OPTIONS` preflights. Ingest may
//! be cross-origin because it is authorised by the secret in the path and the optional bearer
//! token, never by cookies; the extension itself needs no CORS (host permission).

use crate::hold::Hold;
use crate::kv::{Kv, KvError};
use crate::reply::{finish, part_reply, playlist_reply, ApiError, Body, Reply, CHUNK_CACHE, STATUS_CACHE};
use crate::route::{Family, Method, Route};
use crate::store::{PutError, Stored, Streams};
use chalkstream_manifest::part::PartMeta;
use chalkstream_manifest::segment::StreamRecord;
use crate::files;
use crate::sweep;
use crate::web;
use std::path::Path;
use chalkstream_manifest::decimal::format_millis;
use chalkstream_manifest::id::{SessionSecret, StreamId};
use chalkstream_manifest::ingest::{self, SegmentHeaders};
use chalkstream_manifest::ll::{self, Directives, Reload};
use chalkstream_manifest::part::{self, PartHeaders, RawPartHeaders};
use chalkstream_manifest::rules::{self, Config, ConfigError, RuleError};
use chalkstream_manifest::time::format_rfc3339_ms;
use chalkstream_manifest::window::{State, StreamView};
use serde_json::json;

/// The request headers a preflight allows: ingest's (v1 and v2) and the token.
const ALLOW_HEADERS: &str = "Authorization, Content-Type, X-Duration, X-Program-Date-Time, X-Discontinuity, X-Independent, X-Part-Target, X-Target-Duration, X-Parts";

/// The parts of a request the handlers look at.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    pub query: String,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    /// This server's origin as the client reached it, e.g. `http://127.0.0.1:3000`.
    pub base_url: String,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// What the edge does next.
#[derive(Debug)]
pub enum Step {
    /// Send this.
    Reply(Reply),
    /// Read the request body (at most `upload.limit` bytes), then call [`Upload::finish`].
    ReadBody(Upload),
    /// Not yet: run [`crate::hold::wait`] (check, sleep as told, until it answers).
    Hold(Hold),
}

/// A checked upload waiting for its body.
#[derive(Debug)]
pub struct Upload {
    id: StreamId,
    seq: u64,
    /// v2: the part of segment `seq` (`None` for a whole segment).
    part: Option<u32>,
    config: Config,
    base_url: String,
    /// Bodies longer than this get `413`.
    pub limit: u64,
}

/// Why the edge could not hand over a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// More than [`Upload::limit`] bytes.
    TooLarge,
    /// The connection failed while reading.
    Read(String),
}

/// Builds this server's origin from the request's scheme and authority (host[:port]),
/// refusing anything that is not a plain host so it is safe to put into pages and JSON.
pub fn base_url(scheme: &str, authority: &str) -> String {
    let scheme = if scheme.eq_ignore_ascii_case("https") { "https" } else { "http" };
    let plain = !authority.is_empty()
        && authority.len() <= 255
        && authority.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    if plain {
        format!("{scheme}://{authority}")
    } else {
        format!("{scheme}://localhost")
    }
}

/// Answers a request, or asks for its body.
pub fn handle(head: &RequestHead, kv: &dyn Kv, config: impl FnOnce() -> Result<Config, ConfigError>, now_ms: i64) -> Step {
    let Some(route) = Route::parse(&head.path) else {
        // A path that names nothing is a page's business: no CORS, and no body for `HEAD`.
        let reply = ApiError::not_found("no such resource; see / for what this server offers").into_reply();
        return Step::Reply(finish_reply(reply, head, Family::Page));
    };
    let family = route.family();
    let step = dispatch(head, &route, kv, config, now_ms);
    match step {
        Ok(Step::Reply(reply)) => Step::Reply(finish_reply(reply, head, family)),
        Ok(step) => step,
        Err(error) => Step::Reply(finish_reply(error.into_reply(), head, family)),
    }
}

/// CORS for playback and ingest; no body for `HEAD`.
fn finish_reply(reply: Reply, head: &RequestHead, family: Family) -> Reply {
    finish(reply, &head.method, family)
}


fn dispatch(
    head: &RequestHead,
    route: &Route,
    kv: &dyn Kv,
    config: impl FnOnce() -> Result<Config, ConfigError>,
    now_ms: i64,
) -> Result<Step, ApiError> {
    if head.method == Method::Options {
        return Ok(Step::Reply(preflight(route)));
    }
    if !route.methods().contains(&head.method) {
        let mut error = ApiError::new(405, format!("this resource answers {}", route.allow()));
        error.allow = Some(route.allow());
        return Err(error);
    }
    // The variables are read once, by the first handler that needs them.
    let mut source = Some(config);
    let mut read: Option<Result<Config, ConfigError>> = None;
    let mut config = || read.get_or_insert_with(|| (source.take().expect("read once"))()).clone();
    if route.is_viewers() {
        if let Some(url) = playback_origin(&config().map_err(misconfigured)?, head) {
            return Ok(Step::Reply(to_playback(&url, head)));
        }
    }
    // Where viewers go, for the links the answers carry.
    let public = |config: &Config| playback_origin(config, head).unwrap_or_else(|| head.base_url.clone());
    let reply = match route {
        Route::Landing => page(web::landing_page(&head.base_url)),
        Route::Play { stream } => {
            let id = playback_id(stream)?;
            let embed = head.query.split('&').any(|pair| pair == "embed=1" || pair == "embed=true");
            page(web::play_page(id.as_str(), &head.base_url, embed))
        }
        Route::Asset { name } => match web::asset(name) {
            Some((content_type, bytes)) => Reply::new(200, content_type, Body::Static(bytes))
                .header("cache-control", web::ASSET_CACHE_CONTROL),
            None => return Err(ApiError::not_found("no such asset")),
        },
        Route::Broadcast => match files::find(Path::new(files::BROADCAST_DIR), "index.html") {
            Ok(file) => file_reply(head, file),
            Err(e) if e.status == 404 => {
                return Err(ApiError::not_found(
                    "the broadcast page is not installed on this server: spin.toml mounts broadcast/dist, which scripts/build makes",
                ))
            }
            Err(e) => return Err(e),
        },
        Route::BroadcastFile { path } => file_reply(head, files::find(Path::new(files::BROADCAST_DIR), path)?),
        Route::Playlist { stream } => {
            let id = playback_id(stream)?;
            let directives = Directives::parse(&head.query).map_err(ApiError::bad_request)?;
            let config = config().map_err(misconfigured)?;
            let streams = Streams::new(kv, &config);
            if let Some(msn) = directives.msn {
                // The common case, a player asking for the part after the newest one (its
                // preload hint): decided from that part, held cheaply.
                if let Some(part) = directives.part.and_then(|part| u32::try_from(part).ok()) {
                    match next_part_state(&streams, &id, &config, msn, part, now_ms)? {
                        NextPart::Stored => {
                            let playlist = streams.playlist_with(&id, now_ms, directives.skip)?.ok_or_else(no_such_stream)?;
                            return Ok(Step::Reply(playlist_reply(playlist)));
                        }
                        NextPart::Next(previous, record) => {
                            let hold = Hold::next_reload(id, config.clone(), head.method.clone(), &record, &previous, directives.skip, now_ms);
                            return Ok(Step::Hold(hold));
                        }
                        NextPart::Unknown => {}
                    }
                }
                // Only a live v2 stream offers blocking reloads (CAN-BLOCK-RELOAD); anything
                // else answers at once (rfc8216bis §6.2.5.2: ignored once the playlist ends).
                if let Some(live) = streams.live_edge(&id, now_ms)?.filter(|live| live.state == State::Live) {
                    let part_target_ms = live.record.part_target_ms.unwrap_or(1000);
                    match ll::reload(&live.edge(), msn, directives.part, part_target_ms) {
                        Reload::Ready => {}
                        Reload::TooFar => return Err(ApiError::bad_request(too_far(&live, msn, directives.part))),
                        Reload::Wait => {
                            let hold = Hold::playlist(id, config.clone(), head.method.clone(), &live, msn, directives.part, directives.skip, now_ms);
                            return Ok(Step::Hold(hold));
                        }
                    }
                }
            }
            let playlist = streams.playlist_with(&id, now_ms, directives.skip)?.ok_or_else(no_such_stream)?;
            playlist_reply(playlist)
        }
        Route::Chunk { stream, seq } => {
            let id = playback_id(stream)?;
            let seq = ingest::parse_seq(seq).map_err(|_| ApiError::not_found("no such segment"))?;
            let config = config().map_err(misconfigured)?;
            let streams = Streams::new(kv, &config);
            let Some((meta, media)) = streams.chunk(&id, seq, now_ms)? else {
                return Err(ApiError::not_found("no such segment (never stored, or past the retention window)"));
            };
            if meta.gap {
                return Err(ApiError::not_found(
                    "this segment was given up by the broadcaster: the playlist lists it as #EXT-X-GAP and it has no media",
                ));
            }
            Reply::new(200, "video/mp2t", Body::Stored(media)).header("cache-control", CHUNK_CACHE)
        }
        Route::Part { stream, seq, part } => {
            let id = playback_id(stream)?;
            let seq = ingest::parse_seq(seq).map_err(|_| ApiError::not_found("no such part"))?;
            let part = part::parse_part_index(part).map_err(|_| ApiError::not_found("no such part"))?;
            let config = config().map_err(misconfigured)?;
            let streams = Streams::new(kv, &config);
            if let Some(media) = streams.part_chunk(&id, seq, part, now_ms)? {
                part_reply(media)
            } else if let Some(hold) = next_part_hold(&streams, &id, &config, &head.method, seq, part, now_ms)? {
                // The common case, a player asking for the preload-hinted part: held cheaply.
                return Ok(Step::Hold(hold));
            } else {
                // The preload-hinted part (or one a little ahead) of a live stream is held until
                // it exists, like a blocking reload of it; anything else is not found (§6.2.6).
                let live = streams.live_edge(&id, now_ms)?.filter(|live| live.state == State::Live);
                match live {
                    Some(live)
                        if ll::reload(&live.edge(), seq, Some(u64::from(part)), live.record.part_target_ms.unwrap_or(1000))
                            == Reload::Wait
                            && seq > live.last.seq =>
                    {
                        return Ok(Step::Hold(Hold::part(id, config.clone(), head.method.clone(), &live, seq, part, now_ms)));
                    }
                    _ => {
                        // The part may have arrived (and its segment been sealed) between the
                        // first read and the live edge's: a stored part is immutable, so look once more.
                        if let Some(media) = streams.sealed_part_chunk(&id, seq, part, now_ms)? {
                            return Ok(Step::Reply(part_reply(media)));
                        }
                        return Err(ApiError::not_found("no such part (never stored, past the retention window, or not the next one)"));
                    }
                }
            }
        }
        Route::Download { stream } => {
            let id = playback_id(stream)?;
            let config = config().map_err(misconfigured)?;
            let streams = Streams::new(kv, &config);
            let Some((view, media)) = streams.recording(&id, now_ms)? else {
                return Err(no_such_stream());
            };
            if media.keys.is_empty() {
                return Err(ApiError::not_found("this stream has no stored media: every segment it lists was given up"));
            }
            let ended = view.state == State::Ended;
            let name = format!("chalkstream-{}{}.ts", &id.as_str()[..12], if ended { "" } else { "-so-far" });
            // It grows while live and shrinks as retention deletes: never reused from a cache.
            Reply::new(200, "video/mp2t", Body::Stored(media))
                .header("content-disposition", format!("attachment; filename=\"{name}\""))
                .header("cache-control", "no-store".to_owned())
        }
        Route::Status { stream } => {
            let id = playback_id(stream)?;
            let config = config().map_err(misconfigured)?;
            let view = current_view(kv, &config, &id, now_ms)?;
            status_reply(&id, &view, &public(&config))
        }
        Route::IngestSegment { session, seq } => {
            let secret = SessionSecret::parse(session).map_err(ApiError::bad_request)?;
            let seq = ingest::parse_seq(seq).map_err(ApiError::bad_request)?;
            let config = config().map_err(misconfigured)?;
            authorize(head, &config)?;
            check_declared_length(head, &config)?;
            // Headers are checked before the body is read; `finish` parses them again.
            segment_headers(head)?;
            return Ok(Step::ReadBody(Upload {
                id: secret.stream_id(),
                seq,
                part: None,
                limit: config.max_segment_bytes,
                base_url: public(&config),
                config,
            }));
        }
        Route::IngestPart { session, seq, part } => {
            let secret = SessionSecret::parse(session).map_err(ApiError::bad_request)?;
            let seq = ingest::parse_seq(seq).map_err(ApiError::bad_request)?;
            let part = part::parse_part_index(part).map_err(ApiError::bad_request)?;
            let config = config().map_err(misconfigured)?;
            authorize(head, &config)?;
            check_declared_length(head, &config)?;
            // Headers are checked before the body is read; `finish` parses them again.
            part_headers(head, part)?;
            return Ok(Step::ReadBody(Upload {
                id: secret.stream_id(),
                seq,
                part: Some(part),
                limit: config.max_segment_bytes,
                base_url: public(&config),
                config,
            }));
        }
        Route::IngestCommit { session, seq } => {
            let secret = SessionSecret::parse(session).map_err(ApiError::bad_request)?;
            let seq = ingest::parse_seq(seq).map_err(ApiError::bad_request)?;
            let config = config().map_err(misconfigured)?;
            authorize(head, &config)?;
            let count = part::parse_parts_count(head.header("x-parts")).map_err(ApiError::bad_request)?;
            let id = secret.stream_id();
            let status = stored_status(Streams::new(kv, &config).commit(&id, seq, count, now_ms))?;
            register_upload(kv, &config, &id, now_ms);
            stored_reply(status, &public(&config), &id, seq, Some(("parts", json!(count))))
        }
        Route::IngestGap { session, seq } => {
            let secret = SessionSecret::parse(session).map_err(ApiError::bad_request)?;
            let seq = ingest::parse_seq(seq).map_err(ApiError::bad_request)?;
            let config = config().map_err(misconfigured)?;
            authorize(head, &config)?;
            let duration_ms = head.header("x-duration").map(ingest::parse_duration_ms).transpose().map_err(ApiError::bad_request)?;
            let id = secret.stream_id();
            let status = stored_status(Streams::new(kv, &config).put_gap(&id, seq, duration_ms, now_ms))?;
            register_upload(kv, &config, &id, now_ms);
            stored_reply(status, &public(&config), &id, seq, Some(("gap", json!(true))))
        }
        Route::IngestEnd { session } => {
            let secret = SessionSecret::parse(session).map_err(ApiError::bad_request)?;
            let config = config().map_err(misconfigured)?;
            authorize(head, &config)?;
            let id = secret.stream_id();
            match Streams::new(kv, &config).end(&id, now_ms).map_err(put_error)? {
                Some(_) => Reply::json(200, &json!({ "stream": id.as_str(), "state": "ended" })),
                None => return Err(ApiError::not_found("this stream has no segments to end")),
            }
        }
        Route::AdminSweep => {
            let config = config().map_err(misconfigured)?;
            authorize_admin(head, &config)?;
            let report = sweep::run(kv, &config, now_ms)?;
            Reply::json(
                200,
                &json!({
                    "visited": report.visited,
                    "deleted": report.deleted,
                    "shards_read": report.shards_read,
                    "pending": report.pending,
                }),
            )
            .header("cache-control", "no-store")
        }
    };
    Ok(Step::Reply(reply))
}

impl Upload {
    /// Validates and stores the body the edge read.
    pub fn finish(self, head: &RequestHead, kv: &dyn Kv, body: Result<Vec<u8>, BodyError>, now_ms: i64) -> Reply {
        let reply = self.store(head, kv, body, now_ms).unwrap_or_else(ApiError::into_reply);
        finish_reply(reply, head, Family::Ingest)
    }

    fn store(&self, head: &RequestHead, kv: &dyn Kv, body: Result<Vec<u8>, BodyError>, now_ms: i64) -> Result<Reply, ApiError> {
        if let Some(part) = self.part {
            return self.store_part(head, kv, part, body, now_ms);
        }
        let headers = segment_headers(head)?;
        let body = match body {
            Ok(body) if body.len() as u64 <= self.limit => body,
            Ok(_) | Err(BodyError::TooLarge) => return Err(too_large(&self.config)),
            Err(BodyError::Read(cause)) => {
                return Err(ApiError::bad_request(format!("the request body could not be read: {cause}")))
            }
        };
        ingest::check_ts(&body).map_err(ApiError::bad_request)?;
        let streams = Streams::new(kv, &self.config);
        let status = stored_status(streams.put_segment(&self.id, self.seq, &headers, &body, now_ms))?;
        register_upload(kv, &self.config, &self.id, now_ms);
        Ok(stored_reply(status, &self.base_url, &self.id, self.seq, None))
    }
}

impl Upload {
    fn store_part(&self, head: &RequestHead, kv: &dyn Kv, part: u32, body: Result<Vec<u8>, BodyError>, now_ms: i64) -> Result<Reply, ApiError> {
        let headers = part_headers(head, part)?;
        let body = self.body(body)?;
        ingest::check_ts(&body).map_err(ApiError::bad_request)?;
        let streams = Streams::new(kv, &self.config);
        let status = stored_status(streams.put_part(&self.id, self.seq, part, &headers, &body, now_ms))?;
        // Part 0 of each segment registers, so a stream that never commits is swept too.
        if part == 0 {
            register_upload(kv, &self.config, &self.id, now_ms);
        }
        Ok(stored_reply(status, &self.base_url, &self.id, self.seq, Some(("part", json!(part)))))
    }

    fn body(&self, body: Result<Vec<u8>, BodyError>) -> Result<Vec<u8>, ApiError> {
        match body {
            Ok(body) if body.len() as u64 <= self.limit => Ok(body),
            Ok(_) | Err(BodyError::TooLarge) => Err(too_large(&self.config)),
            Err(BodyError::Read(cause)) => Err(ApiError::bad_request(format!("the request body could not be read: {cause}"))),
        }
    }
}

/// The status of a stored upload or commit, or the error it becomes: a broken stream rule is
/// the uploader's `400`; a conflict with what is stored (other bytes, a sealed segment, another
/// part target, a missing part, a seq behind the window) is `409`.
fn stored_status(result: Result<Stored, PutError>) -> Result<u16, ApiError> {
    match result {
        Ok(Stored::Created) => Ok(201),
        Ok(Stored::AlreadyStored) => Ok(200),
        Err(e) => Err(put_error(e)),
    }
}

/// What a refused upload, commit or end answers: a broken rule `400`, a conflict with what is
/// stored `409`, a seq too far ahead or a stream still being caught up with `429` and
/// `Retry-After` (issue 11: every request's work is bounded, so some wait their turn); a
/// storage error as `From<KvError> for ApiError` says (a full store `503`).
fn put_error(e: PutError) -> ApiError {
    match e {
        PutError::Rule(e @ RuleError::BeforeWindow { .. }) => ApiError::new(409, e.to_string()),
        PutError::Rule(e) => ApiError::bad_request(e),
        PutError::Kv(e) => e.into(),
        e @ (PutError::TooFarAhead { .. } | PutError::CatchingUp) => ApiError::too_many(e.to_string(), 1),
        e => ApiError::new(409, e.to_string()),
    }
}

/// Refuses a declared `Content-Length` over the limit before the body is read.
fn check_declared_length(head: &RequestHead, config: &Config) -> Result<(), ApiError> {
    if let Some(declared) = head.header("content-length") {
        let declared: u64 = declared
            .trim()
            .parse()
            .map_err(|_| ApiError::bad_request("Content-Length is not a number"))?;
        if declared > config.max_segment_bytes {
            return Err(too_large(config));
        }
    }
    Ok(())
}

fn part_headers(head: &RequestHead, part: u32) -> Result<PartHeaders, ApiError> {
    let raw = RawPartHeaders {
        duration: head.header("x-duration"),
        part_target: head.header("x-part-target"),
        target_duration: head.header("x-target-duration"),
        independent: head.header("x-independent"),
        program_date_time: head.header("x-program-date-time"),
        discontinuity: head.header("x-discontinuity"),
    };
    PartHeaders::parse(part, &raw).map_err(ApiError::bad_request)
}

/// The `400` for a blocking reload too far ahead, saying where the playlist is.
fn too_far(live: &crate::store::LiveEdge, msn: u64, part: Option<u64>) -> String {
    let edge = live.edge();
    let asked = match part {
        Some(part) => format!("_HLS_msn={msn}&_HLS_part={part}"),
        None => format!("_HLS_msn={msn}"),
    };
    format!(
        "{asked} is too far ahead: the playlist ends at segment {} with {} parts of segment {} (rfc8216bis §6.2.5.2: at most two segments, or the Advance Part Limit of parts, ahead)",
        edge.last_seq,
        edge.open_parts,
        edge.last_seq + 1
    )
}

fn segment_headers(head: &RequestHead) -> Result<SegmentHeaders, ApiError> {
    SegmentHeaders::parse(
        head.header("x-duration"),
        head.header("x-program-date-time"),
        head.header("x-discontinuity"),
    )
    .map_err(ApiError::bad_request)
}

fn too_large(config: &Config) -> ApiError {
    ApiError::new(
        413,
        format!("the segment is larger than this server's limit of {} bytes; cut shorter segments", config.max_segment_bytes),
    )
}

fn misconfigured(e: ConfigError) -> ApiError {
    eprintln!("chalkstream: {e}");
    ApiError::new(500, format!("server misconfigured: {}", e.variable))
}

/// Registers a stored upload's stream for the sweep ([`sweep::after_upload`]). The upload is
/// stored whatever happens here: a failure is logged and the stream's next upload tries again.
fn register_upload(kv: &dyn Kv, config: &Config, id: &StreamId, now_ms: i64) {
    if let Err(e) = sweep::after_upload(kv, config, id, now_ms) {
        eprintln!("chalkstream: sweep registration: {e}");
    }
}

/// The operator's endpoints need the admin token, which is not the broadcasters' ingest token
/// (a broadcaster is no operator); a server without one has them off (its per-request sweep
/// still runs on any request, e.g. `GET /`).
fn authorize_admin(head: &RequestHead, config: &Config) -> Result<(), ApiError> {
    let Some(token) = &config.admin_token else {
        return Err(ApiError::new(
            403,
            "this server has no admin_token, so its admin endpoints are off: set the admin_token variable and send Authorization: Bearer <admin token> (without one, any request, e.g. GET /, runs the sweep's per-request step)",
        ));
    };
    if bearer_is(head, token) {
        Ok(())
    } else {
        Err(ApiError::new(401, "missing or wrong admin token: send Authorization: Bearer <token> as set in the server's admin_token"))
    }
}

/// Checks `Authorization: Bearer <token>` when the server has an ingest token.
fn authorize(head: &RequestHead, config: &Config) -> Result<(), ApiError> {
    match &config.ingest_token {
        Some(token) if !bearer_is(head, token) => Err(ApiError::new(
            401,
            "missing or wrong ingest token: send Authorization: Bearer <token> as set in the server's ingest_token",
        )),
        _ => Ok(()),
    }
}

/// Whether the request's bearer token is `token`, compared in constant time.
fn bearer_is(head: &RequestHead, token: &str) -> bool {
    let given = head
        .header("authorization")
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, given)| given.trim())
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

/// Compares without stopping at the first difference (the length still shows).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

fn playback_id(text: &str) -> Result<StreamId, ApiError> {
    StreamId::parse(text).map_err(|_| ApiError::not_found("no such stream (a stream id is 40 lowercase hex characters)"))
}

fn no_such_stream() -> ApiError {
    ApiError::not_found("no such stream, or all of its segments are past the retention window")
}

fn current_view(kv: &dyn Kv, config: &Config, id: &StreamId, now_ms: i64) -> Result<StreamView, ApiError> {
    Streams::new(kv, config)
        .view(id, now_ms)?
        .ok_or_else(no_such_stream)
}

fn page(html: String) -> Reply {
    Reply::new(200, "text/html; charset=utf-8", Body::Bytes(html.into_bytes()))
        .header("cache-control", web::PAGE_CACHE_CONTROL)
}

/// A file of the `files` mount, or `304` when the client's copy is current.
fn file_reply(head: &RequestHead, file: files::StaticFile) -> Reply {
    let etag = file.etag.clone();
    let reply = if files::not_modified(head.header("if-none-match"), &etag) {
        Reply { status: 304, headers: Vec::new(), body: Body::Empty }
    } else {
        Reply::new(200, file.content_type, Body::File(file))
    };
    reply.header("etag", etag).header("cache-control", files::FILE_CACHE_CONTROL)
}

fn preflight(route: &Route) -> Reply {
    Reply { status: 204, headers: Vec::new(), body: Body::Empty }
        .header("allow", route.allow())
        .header("access-control-allow-methods", route.allow())
        .header("access-control-allow-headers", ALLOW_HEADERS)
        .header("access-control-max-age", "86400")
}

/// The origin of the instance that serves viewers, when it is not this one (`playback_url`):
/// as configured, or for `:PORT` this request's host name on that port.
fn playback_origin(config: &Config, head: &RequestHead) -> Option<String> {
    let url = config.playback_url.as_deref()?;
    let Some(port) = url.strip_prefix(':') else {
        return Some(url.to_owned());
    };
    // `base_url` is `scheme://host[:port]`, with IPv6 hosts in brackets.
    let (scheme, authority) = head.base_url.split_once("://").unwrap_or(("http", "localhost"));
    let host = match authority.rsplit_once(':') {
        Some((host, p)) if !p.contains(']') && p.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    Some(format!("{scheme}://{host}:{port}"))
}

/// A viewer's request to an instance that leaves viewers to another (`playback_url`): the same
/// path and query there, answered at once. `307` keeps the method; the redirect itself may be
/// kept for a minute (the setting changes only with a redeploy).
fn to_playback(url: &str, head: &RequestHead) -> Reply {
    let query = if head.query.is_empty() { String::new() } else { format!("?{}", head.query) };
    let location = format!("{url}{}{query}", head.path);
    Reply::new(307, "text/plain; charset=utf-8", Body::Bytes(format!("viewers are served at {url}\n").into_bytes()))
        .header("location", location)
        .header("cache-control", "public, max-age=60".to_owned())
}

fn playlist_url(base_url: &str, id: &StreamId) -> String {
    format!("{base_url}/playlist/{id}.m3u8")
}

fn player_url(base_url: &str, id: &StreamId) -> String {
    format!("{base_url}/play/{id}")
}



fn status_reply(id: &StreamId, view: &StreamView, base_url: &str) -> Reply {
    let duration_ms = view.duration_ms();
    let mut reply = Reply::json(
        200,
        &json!({
            "stream": id.as_str(),
            "state": view.state.as_str(),
            "segments": view.segments.len(),
            "first_seq": view.first().seq,
            "last_seq": view.last().seq,
            "duration_ms": duration_ms,
            "duration": format_millis(duration_ms),
            "first_segment_at": format_rfc3339_ms(view.first().pdt_ms),
            "last_segment_at": format_rfc3339_ms(view.last().pdt_ms),
            "target_duration": view.target_s,
            "playlist": playlist_url(base_url, id),
            "player": player_url(base_url, id),
        }),
    );
    reply = reply.header("cache-control", STATUS_CACHE);
    reply
}

/// A hold for part `part` of segment `seq` when the part before it is stored, unexpired and
/// younger than the idle timeout (the newest part of a live v2 stream): three reads, the part,
/// the part before and the stream record. `None` sends the caller to the live edge, which
/// decides every other case.
fn next_part_hold<K: Kv + ?Sized>(
    streams: &Streams<'_, K>,
    id: &StreamId,
    config: &Config,
    method: &Method,
    seq: u64,
    part: u32,
    now_ms: i64,
) -> Result<Option<Hold>, KvError> {
    let Some(before) = part.checked_sub(1) else {
        return Ok(None);
    };
    let Some(previous) = streams.part_meta(id, seq, before)? else {
        return Ok(None);
    };
    if rules::is_idle(previous.stored_ms, now_ms, config.idle_ms) || config.retention.is_expired(previous.stored_ms, now_ms) {
        return Ok(None);
    }
    let Some(record) = streams.record(id)? else {
        return Ok(None);
    };
    Ok(Some(Hold::next_part(id.clone(), config.clone(), method.clone(), &record, &previous, now_ms)))
}

/// What a blocking reload for part `part` of segment `seq` finds at the parts themselves.
enum NextPart {
    /// The part is stored: the playlist lists it (or, once sealed, its segment) now.
    Stored,
    /// The part before it is the newest of a live stream, due recently: hold from it.
    Next(PartMeta, StreamRecord),
    /// Anything else: the live edge decides.
    Unknown,
}

/// Decides the common blocking reload from at most three reads: the part, the part before it
/// (stored, unexpired, and its successor due less than a part target ago, so a stale request
/// still goes the careful way), and the stream record.
fn next_part_state<K: Kv + ?Sized>(streams: &Streams<'_, K>, id: &StreamId, config: &Config, seq: u64, part: u32, now_ms: i64) -> Result<NextPart, KvError> {
    // Segment 0 has no playlist before it is sealed, so nobody holds a hint into it.
    let (Some(before), true) = (part.checked_sub(1), seq > 0) else {
        return Ok(NextPart::Unknown);
    };
    if let Some(stored) = streams.part_meta(id, seq, part)? {
        let live = !config.retention.is_expired(stored.stored_ms, now_ms) && !rules::is_idle(stored.stored_ms, now_ms, config.idle_ms);
        return Ok(if live { NextPart::Stored } else { NextPart::Unknown });
    }
    let Some(previous) = streams.part_meta(id, seq, before)? else {
        return Ok(NextPart::Unknown);
    };
    let Some(record) = streams.record(id)? else {
        return Ok(NextPart::Unknown);
    };
    let part_target = i64::from(record.part_target_ms.unwrap_or(1000));
    let due_ms = previous.stored_ms + i64::from(previous.duration_ms);
    if now_ms - due_ms > part_target || config.retention.is_expired(previous.stored_ms, now_ms) {
        return Ok(NextPart::Unknown);
    }
    Ok(NextPart::Next(previous, record))
}

/// The answer to a stored upload, part, commit or gap: the stream, the seq, what kind of upload
/// (`extra`), and where to watch.
fn stored_reply(status: u16, base_url: &str, id: &StreamId, seq: u64, extra: Option<(&str, serde_json::Value)>) -> Reply {
    let mut body = json!({
        "stream": id.as_str(),
        "seq": seq,
        "playlist": playlist_url(base_url, id),
        "player": player_url(base_url, id),
    });
    if let Some((key, value)) = extra {
        body[key] = value;
    }
    Reply::json(status, &body)
}
