//! The HTTP side: compiles each routed component once, then serves every
//! request from a fresh instance (nothing is kept between requests) through
//! `wasi:http/incoming-handler`, logging one redacted line per request.
//!
//! Slow or idle clients cannot pin the host down ([`Serving`]): a connection
//! waiting for a request head (new, or idle after an answer) is closed after
//! the header timeout, a request body that sends nothing for the body timeout
//! is cut, and at most `max_connections` connections are served at once; the
//! next ones wait in the listen backlog until one closes (they are not
//! refused: a burst of players or a reconnecting extension is served a moment
//! later instead of failing).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{Error as HttpError, WasiHttpCtx, WasiHttpView};

use crate::files::Mounts;
use crate::kv::Stores;
use crate::manifest::App;
use crate::routes::{spin_headers, Route, Router};
use crate::variables::Resolved;
use crate::{bindings, DenyOutbound, State};

/// A compiled component with what its instances get to see.
struct Loaded {
    id: Arc<str>,
    pre: ProxyPre<State>,
    kv_stores: Arc<Vec<String>>,
    variables: Arc<HashMap<String, String>>,
    /// The component's `files`, preopened read-only in each instance.
    mounts: Arc<Mounts>,
}

/// Instances the pool holds at once: every request in flight is one, held low-latency requests
/// included. Spin's default (`SPIN_WASMTIME_INSTANCE_COUNT`, 1,000 in spin-core), so the host
/// runs out of instances where `spin up` would, not later; past it a request fails (`500`), as
/// on Spin.
const POOLED_INSTANCES: u32 = 1_000;

/// How the host treats slow and idle clients (`--header-timeout`, `--body-timeout`,
/// `--max-connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serving {
    /// A connection waiting for a request, new or idle between requests (keep-alive), is
    /// closed unless the whole request head has arrived within this time: hyper runs one
    /// clock from the moment it waits for a head, so this is the idle timeout too.
    pub header_timeout: Duration,
    /// A request body that sends no bytes for this long is cut: the component reads an error
    /// (an upload answers `400`), and the connection is closed.
    pub body_timeout: Duration,
    /// Connections served at once; the next ones wait to be accepted until one closes.
    pub max_connections: usize,
}

impl Default for Serving {
    fn default() -> Self {
        Serving { header_timeout: Duration::from_secs(10), body_timeout: Duration::from_secs(30), max_connections: 4096 }
    }
}

/// The engine, with the pooling instance allocator as Spin uses by default (a fresh instance per
/// request from preallocated slots, not a new mapping each time), or, where the address space
/// cannot hold the pool, the on-demand allocator, as Spin falls back to.
fn engine() -> anyhow::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(POOLED_INSTANCES)
        // A component is a few core instances (the guest, the WASI adapter, shims), each with its
        // memory and table.
        .total_core_instances(4 * POOLED_INSTANCES)
        .total_memories(2 * POOLED_INSTANCES)
        .total_tables(2 * POOLED_INSTANCES)
        .total_stacks(POOLED_INSTANCES)
        .max_core_instances_per_component(50)
        .max_memories_per_component(10)
        .max_tables_per_component(20)
        .max_component_instance_size(10 << 20)
        .table_elements(100_000)
        .max_memory_size(1 << 30)
        .max_unused_warm_slots(100)
        // Spin keeps these resident too: a slot's low pages are reset in place for the next
        // instance instead of being given back to the kernel (madvise, a TLB shootdown on every
        // core, a page fault per page on next use). With PAGEMAP_SCAN (Linux 6.7+) only the
        // pages the last instance touched are reset; without it the whole 2 MiB is zeroed, which
        // costs more than the faults it saves (bench/ll.mjs's audience, host CPU per request).
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(512 << 10)
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    match Engine::new(&config) {
        Ok(engine) => Ok(engine),
        Err(e) => {
            eprintln!("chalkstream-host: no pooling allocator here ({e}); instances are allocated on demand");
            Ok(Engine::new(&Config::new())?)
        }
    }
}

pub struct Host {
    engine: Engine,
    router: Router,
    components: HashMap<String, Loaded>,
    kv: Arc<Stores>,
    serving: Serving,
}

impl Host {
    /// Compiles every component a route names (once, at startup).
    /// `copies` is where a component's `files` are copied when Spin would copy them
    /// ([`Mounts::prepare`]).
    pub fn new(app: &App, mut variables: Resolved, kv: Arc<Stores>, serving: Serving, copies: &std::path::Path) -> anyhow::Result<Host> {
        let engine = engine()?;
        let mut linker = Linker::<State>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        bindings::fermyon::spin::key_value::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
        bindings::fermyon::spin::variables::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;

        let mut routes = Vec::new();
        let mut components = HashMap::new();
        for trigger in &app.http_triggers {
            routes.push(Route::new(&trigger.route, &trigger.component).map_err(|e| anyhow!(e))?);
            if components.contains_key(&trigger.component) {
                continue;
            }
            let component = &app.components[&trigger.component];
            // As Spin does before serving anything.
            if let Some(label) = component.key_value_stores.iter().find(|l| !kv.is_defined(l)) {
                anyhow::bail!(
                    "unknown key_value_stores label {label:?} for component {:?}: only \"default\" \
                     exists unless a runtime config file defines [key_value_store.{label}]",
                    trigger.component
                );
            }
            let started = Instant::now();
            let compiled = Component::from_file(&engine, &component.source).map_err(anyhow::Error::from).with_context(|| {
                format!(
                    "cannot load component {:?} from {} (build it first)",
                    trigger.component,
                    component.source.display()
                )
            })?;
            let pre = ProxyPre::new(linker.instantiate_pre(&compiled)?)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("component {:?} is not a wasi:http proxy", trigger.component))?;
            eprintln!(
                "chalkstream-host: compiled component {:?} ({}) in {} ms",
                trigger.component,
                component.source.display(),
                started.elapsed().as_millis()
            );
            let mounts = Mounts::prepare(&app.dir, copies, &trigger.component, &component.files)
                .with_context(|| format!("component {:?}: files", trigger.component))?;
            for (host, guest) in mounts.preopens() {
                eprintln!("chalkstream-host: component {:?} reads {} at {guest} (read-only)", trigger.component, host.display());
            }
            let loaded = Loaded {
                id: trigger.component.as_str().into(),
                pre,
                kv_stores: Arc::new(component.key_value_stores.clone()),
                variables: Arc::new(variables.remove(&trigger.component).unwrap_or_default()),
                mounts: Arc::new(mounts),
            };
            components.insert(trigger.component.clone(), loaded);
        }
        Ok(Host { engine, router: Router::new(routes), components, kv, serving })
    }

    /// Accepts connections until SIGINT or SIGTERM, at most `max_connections` at once.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> anyhow::Result<()> {
        let serving = self.serving;
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let slots = Arc::new(Semaphore::new(serving.max_connections));
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1.timer(TokioTimer::new()).header_read_timeout(serving.header_timeout);
        loop {
            // A free slot first, then a connection: past the cap, connections wait in the
            // listen backlog (the kernel completes their handshakes) until one closes.
            let slot = tokio::select! {
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                _ = tokio::signal::ctrl_c() => break,
                _ = sigterm.recv() => break,
            };
            let (stream, client) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        eprintln!("chalkstream-host: accept failed: {e}");
                        // Out of file descriptors, say: give the others a moment to close.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                _ = tokio::signal::ctrl_c() => break,
                _ = sigterm.recv() => break,
            };
            let host = self.clone();
            let http1 = http1.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let host = host.clone();
                    async move { Ok::<_, Infallible>(host.handle(req, client).await) }
                });
                // Client disconnects and timeouts end up here; they are not the host's failures.
                let _ = http1.serve_connection(TokioIo::new(stream), service).await;
                drop(slot);
            });
        }
        eprintln!("chalkstream-host: shutting down");
        Ok(())
    }

    async fn handle(&self, req: Request<Incoming>, client: SocketAddr) -> Response<HyperOutgoingBody> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = redact(req.uri().path());
        let response = match self.dispatch(req, client).await {
            Ok(response) => response,
            Err(Reject(status, message)) => text(status, message),
            Err(Fail(e)) => {
                eprintln!("chalkstream-host: {method} {path}: component failed: {e:#}");
                text(StatusCode::INTERNAL_SERVER_ERROR, "the component failed; see the host's log\n")
            }
        };
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        // One write per line: `eprintln!` on unbuffered stderr writes each formatted piece with
        // its own system call.
        let line = format!("{method} {path} {} {ms:.1}ms\n", response.status().as_u16());
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
        response
    }

    async fn dispatch(&self, mut req: Request<Incoming>, client: SocketAddr) -> Result<Response<HyperOutgoingBody>, Outcome> {
        let path = req.uri().path().to_owned();
        if path == "/.well-known/spin/health" {
            return Ok(text(StatusCode::OK, "OK"));
        }
        let Some(m) = self.router.route(&path) else {
            return Ok(text(StatusCode::NOT_FOUND, ""));
        };
        let loaded = &self.components[&m.route.component];

        // Like Spin: the component sees an absolute `http://{Host}{path}` URI
        // plus the spin-* headers.
        let host = match req.headers().get(header::HOST).map(|h| h.to_str()) {
            None => "localhost".to_owned(),
            Some(Ok(host)) => host.to_owned(),
            Some(Err(_)) => return Err(Reject(StatusCode::BAD_REQUEST, "the Host header is not valid text\n")),
        };
        let path_and_query = req.uri().path_and_query().map_or("/", |pq| pq.as_str()).to_owned();
        req.headers_mut().insert(header::HOST, HeaderValue::from_str(&host).map_err(|_| bad_host())?);
        *req.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(host.as_str())
            .path_and_query(path_and_query.as_str())
            .build()
            .map_err(|_| bad_host())?;
        for (name, value) in spin_headers(&m, &host, &path_and_query, client) {
            let value = HeaderValue::try_from(value).map_err(|_| bad_host())?;
            req.headers_mut().insert(name, value);
        }

        // The guest's stdout and stderr both go to our stderr, so stdout carries only the
        // "listening" line.
        let mut wasi = WasiCtx::builder();
        wasi.stdout(wasmtime_wasi::cli::stderr()).inherit_stderr();
        loaded.mounts.preopen(&mut wasi).map_err(fail)?;
        let state = State {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: DenyOutbound,
            kv: self.kv.clone(),
            kv_stores: loaded.kv_stores.clone(),
            variables: loaded.variables.clone(),
            component_id: loaded.id.clone(),
            kv_reads: 0,
            kv_writes: 0,
            overlay: crate::lag::Overlay::new(),
        };
        // The session id in an ingest path is a secret: the line names the redacted path.
        let count = std::env::var_os("CHALKSTREAM_COUNT_KV").map(|_| format!("{} {}", req.method(), redact_target(req.uri())));
        let mut store = Store::new(&self.engine, state);
        let req = req.map(|body| StallLimit::new(body, self.serving.body_timeout));
        let req = store.data_mut().http().new_incoming_request(Scheme::Http, req).map_err(fail)?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let out = store.data_mut().http().new_response_outparam(sender).map_err(fail)?;
        let pre = loaded.pre.clone();
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            let handled = proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await;
            if let Some(request) = count {
                let state = store.data();
                // One write per line: stderr is unbuffered, and a reader must never see half of it.
                let line = format!("chalkstream-host: kv {request}: {} reads, {} writes\n", state.kv_reads, state.kv_writes);
                let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
            }
            handled
        });

        match receiver.await {
            Ok(Ok(response)) => {
                // The body may still be streaming; report a later failure.
                tokio::spawn(async move {
                    if let Ok(Err(e)) = task.await {
                        eprintln!("chalkstream-host: component failed after responding: {e:#}");
                    }
                });
                Ok(response)
            }
            Ok(Err(code)) => Err(Fail(anyhow!("the component answered with error code {code:?}"))),
            Err(_) => Err(Fail(match task.await {
                Ok(Ok(())) => anyhow!("the component returned without setting a response"),
                Ok(Err(e)) => anyhow::Error::from(e),
                Err(e) => anyhow::Error::from(e),
            })),
        }
    }
}

/// A request body that fails once no bytes have arrived for `timeout` (counted while it is
/// being read: from the request head, then from each frame), so an upload that stalls cannot
/// hold its instance and connection for ever.
struct StallLimit {
    inner: Incoming,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl StallLimit {
    fn new(inner: Incoming, timeout: Duration) -> StallLimit {
        StallLimit { inner, timeout, deadline: Box::pin(tokio::time::sleep(timeout)) }
    }
}

impl Body for StallLimit {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.timeout;
                this.deadline.as_mut().reset(next);
                Poll::Ready(frame.map(|frame| frame.map_err(HttpError::from)))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a request got no response from the component.
enum Outcome {
    /// Bad input, answered with a 4xx and a message.
    Reject(StatusCode, &'static str),
    /// The component trapped or misbehaved: 500.
    Fail(anyhow::Error),
}
use Outcome::{Fail, Reject};

fn fail(e: impl Into<anyhow::Error>) -> Outcome {
    Fail(e.into())
}

fn bad_host() -> Outcome {
    Reject(StatusCode::BAD_REQUEST, "the Host header is not a valid authority\n")
}

fn text(status: StatusCode, body: &'static str) -> Response<HyperOutgoingBody> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).map_err(|e| match e {}).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The request path for logs: the ingest session secret never appears, however the path is
/// spelled. The secret is the segment after `ingest`, but a client may double a slash, add dot
/// segments, percent-encode or change case, so: once a segment names `ingest` (compared
/// percent-decoded and lowercased), every later segment is logged only when it is one of the
/// ingest routes' public words (a seq or part number, `{n}.ts`, `end`, `commit`, `gap`) and is
/// `<redacted>` otherwise; a segment that merely contains the word (`ingest;x`, `a%2Fingest`,
/// `ingest%2F…`) is itself redacted too. A secret is 22 or more characters, never a public word.
fn redact(path: &str) -> String {
    redact_path(path).0
}

/// [`redact`], and whether the path named `ingest` at all.
fn redact_path(path: &str) -> (String, bool) {
    let mut out = String::with_capacity(path.len());
    let mut ingest = false;
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if ingest {
            out.push_str(if segment.is_empty() || is_public_ingest_word(segment) { segment } else { "<redacted>" });
            continue;
        }
        let decoded = decoded_lowercase(segment);
        if decoded == "ingest" {
            out.push_str(segment);
            ingest = true;
        } else if decoded.contains("ingest") {
            out.push_str("<redacted>");
            ingest = true;
        } else {
            out.push_str(segment);
        }
    }
    (out, ingest)
}

/// The path and query for the `CHALKSTREAM_COUNT_KV` line: the path as [`redact`] logs it, and
/// the query only when neither names `ingest` (playback's `_HLS_msn` and `_HLS_part` stay).
fn redact_target(uri: &Uri) -> String {
    let (path, ingest) = redact_path(uri.path());
    match uri.query() {
        None => path,
        Some(query) if ingest || decoded_lowercase(query).contains("ingest") => format!("{path}?<redacted>"),
        Some(query) => format!("{path}?{query}"),
    }
}

/// The words after the session that an ingest route uses: `7`, `7.ts`, `end`, `commit`, `gap`.
fn is_public_ingest_word(segment: &str) -> bool {
    let number = segment.strip_suffix(".ts").unwrap_or(segment);
    matches!(segment, "end" | "commit" | "gap")
        || (!number.is_empty() && number.len() <= 10 && number.bytes().all(|b| b.is_ascii_digit()))
}

/// `text` percent-decoded until nothing changes (at most a few rounds: `%2569` is `%69` is
/// `i`), as lossy UTF-8, ASCII-lowercased: only ever compared, never logged.
fn decoded_lowercase(text: &str) -> String {
    let mut text = text.to_ascii_lowercase();
    for _ in 0..4 {
        if !text.contains('%') {
            break;
        }
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            match (bytes[i], bytes.get(i + 1).and_then(|&b| hex(b)), bytes.get(i + 2).and_then(|&b| hex(b))) {
                (b'%', Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                }
                (b, _, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        let decoded = String::from_utf8_lossy(&out).to_ascii_lowercase();
        if decoded == text {
            break;
        }
        text = decoded;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{redact, redact_target};

    #[test]
    fn log_paths_never_contain_the_ingest_session() {
        assert_eq!(redact("/ingest/s3cr3t-session/12.ts"), "/ingest/<redacted>/12.ts");
        assert_eq!(redact("/ingest/s3cr3t-session"), "/ingest/<redacted>");
        assert_eq!(redact("/ingest/s3cr3t/end"), "/ingest/<redacted>/end");
        assert_eq!(redact("/playlist/abc.m3u8"), "/playlist/abc.m3u8");
    }

    /// Every way a path can name an ingest route (or look like one) keeps the secret out of the
    /// log: doubled or dot segments, percent-encoding, case, an empty segment before the secret.
    #[test]
    fn regression_secret_never_logged_whatever_the_path_spelling() {
        const SECRET: &str = "s3cr3tSESSIONs3cr3tSESSION";
        for path in [
            "//ingest/s3cr3tSESSIONs3cr3tSESSION/12.ts",
            "/x/../ingest/s3cr3tSESSIONs3cr3tSESSION/12.ts",
            "/./ingest/s3cr3tSESSIONs3cr3tSESSION/end",
            "/ingest//s3cr3tSESSIONs3cr3tSESSION/12.ts",
            "/%69ngest/s3cr3tSESSIONs3cr3tSESSION/12.ts",
            "/INGEST/s3cr3tSESSIONs3cr3tSESSION/12.ts",
            "/ingest%2Fs3cr3tSESSIONs3cr3tSESSION%2F12.ts",
            "/a%2Fingest/s3cr3tSESSIONs3cr3tSESSION/3/1.ts",
            "/ingest/s3cr3tSESSIONs3cr3tSESSION%2F12.ts",
            "/ingest/12/s3cr3tSESSIONs3cr3tSESSION",
            "/ingest;v=1/s3cr3tSESSIONs3cr3tSESSION/12.ts",
        ] {
            let logged = redact(path);
            assert!(!logged.contains(SECRET), "{path} is logged as {logged}");
            assert!(!logged.to_ascii_lowercase().contains("s3cr3t"), "{path} is logged as {logged}");
        }
        // What is not secret stays readable.
        assert_eq!(redact("//ingest/s3cr3tSESSIONs3cr3tSESSION/12.ts"), "//ingest/<redacted>/12.ts");
        assert_eq!(redact("/ingest/s3cr3tSESSIONs3cr3tSESSION/3/1.ts"), "/ingest/<redacted>/3/1.ts");
        assert_eq!(redact("/ingest/s3cr3tSESSIONs3cr3tSESSION/3/commit"), "/ingest/<redacted>/3/commit");
        assert_eq!(redact("/chunks/abc/4.1.ts"), "/chunks/abc/4.1.ts");
        // The kv-count line's query: kept for playback, never for anything naming ingest.
        let target = |uri: &str| redact_target(&uri.parse::<http::Uri>().unwrap());
        assert_eq!(target("/playlist/abc.m3u8?_HLS_msn=4&_HLS_part=1"), "/playlist/abc.m3u8?_HLS_msn=4&_HLS_part=1");
        assert_eq!(target("/ingest/s3cr3tSESSIONs3cr3tSESSION/1.ts?s3cr3t"), "/ingest/<redacted>/1.ts?<redacted>");
        assert_eq!(target("/?next=%2Fingest%2Fs3cr3tSESSIONs3cr3tSESSION"), "/?<redacted>");
    }
}
