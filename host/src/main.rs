//! `chalkstream-host`: a small stand-in for `spin up`, for machines where the
//! Spin CLI is not installed (`scripts/up` serves with it then) and for the
//! HTTP integration tests in `tests/http/` (this package's test targets).
//!
//! It runs the very `.wasm` file `spin build` produces for `spin.toml` (a
//! wasm32-wasip2 component exporting `wasi:http/incoming-handler@0.2.0`) on
//! Wasmtime, with a fresh instance per request as Spin does, and implements:
//!
//! - the HTTP trigger: `[[trigger.http]]` exact routes and `/...` wildcards,
//!   and the `spin-*` request headers Spin sets (`spin-full-url`,
//!   `spin-path-info`, `spin-matched-route`, `spin-base-path`,
//!   `spin-raw-component-route`, `spin-component-route`, `spin-client-addr`);
//! - `fermyon:spin/key-value@2.0.0`, limited to the component's
//!   `key_value_stores`: by default on SQLite at
//!   `<state-dir>/sqlite_key_value.db` in Spin's own table
//!   `spin_key_value(store, key, value)`; with `--runtime-config-file`, each
//!   store where Spin's runtime config file puts it (`type = "spin"`, SQLite,
//!   or `type = "redis"`), kept exactly as Spin keeps it;
//! - `fermyon:spin/variables@2.0.0`: `[variables]` and component variable
//!   templates, with values from `SPIN_VARIABLE_<NAME>` or the default;
//! - WASI 0.2 (clocks, random, stdio to the host's stderr; no sockets), the
//!   component's `files` preopened read-only where Spin puts them
//!   (`files.rs`), and `/.well-known/spin/health`.
//!
//! It does not implement: other Spin interfaces (outbound HTTP is answered
//! "denied", as for `allowed_outbound_hosts = []`; outbound Redis, SQL, LLM
//! and MQTT are absent and fail to link), the rest of the runtime config file
//! (refused by name), key-value stores other than SQLite and Redis, `.env` files, route parameters (`/:name`), static responses,
//! private endpoints, `environment` and `exclude_files` for components, TLS, HTTP/2 or a
//! timeout on a request's handling. Nothing the component may rely on exists
//! here that real Spin lacks.
//!
//! It guards itself against slow or idle clients (a request head must arrive
//! within a timeout, an upload that stops sending is cut, connections are
//! capped) and can enforce a platform's key-value limits (`--kv-limits
//! fermyon-cloud`), so an app meets the serverless envelope before it is
//! deployed.

mod files;
mod kv;
mod lag;
mod manifest;
mod routes;
mod runtime_config;
mod server;
mod variables;

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Host bindings for the two Spin interfaces the component imports.
mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "fermyon:spin/host",
        imports: { default: async | trappable },
        with: { "fermyon:spin/key-value.store": crate::kv::KvStore },
    });
}

const HELP: &str = "\
chalkstream-host: run a Spin HTTP application's component without the Spin CLI

USAGE:
    chalkstream-host [--listen ADDR] [--spin-toml PATH] [--state-dir DIR]
                     [--runtime-config-file FILE] [--kv-limits LIMITS]
                     [--header-timeout SECS] [--body-timeout SECS] [--max-connections N]

OPTIONS:
    --listen ADDR      address to serve on (env CHALKSTREAM_LISTEN; default 127.0.0.1:3000;
                       port 0 picks a free port)
    --spin-toml PATH   the application manifest (default ./spin.toml)
    --state-dir DIR    where the default key-value store lives, as sqlite_key_value.db
                       (default: the runtime config's state_dir, else .spin beside spin.toml)
    --runtime-config-file FILE
                       Spin's runtime config file, as for `spin up`: [key_value_store.LABEL]
                       with type = \"spin\" (SQLite; path relative to FILE's directory,
                       none = in memory) or type = \"redis\" (url = \"redis://HOST:PORT\"),
                       and state_dir. Nothing else in it is implemented (refused by name).
    --kv-limits LIMITS a platform's key-value limits, enforced on every store (env
                       CHALKSTREAM_KV_LIMITS; default none, as spin up): fermyon-cloud (1024 keys,
                       values of 1000000 bytes, keys of 255 bytes), none, keys=N, value=BYTES,
                       key=BYTES, comma-separated, later items overriding earlier ones
                       (fermyon-cloud,keys=64). A set past one fails with the key-value
                       interface's other(\"...\") error naming the limit.
    --header-timeout SECS
                       a connection waiting for a request (a new one, or idle between requests)
                       is closed unless the whole request head arrives within SECS (env
                       CHALKSTREAM_HEADER_TIMEOUT; default 10)
    --body-timeout SECS
                       a request body that sends no bytes for SECS is cut: the component reads
                       an error, and the connection is closed (env CHALKSTREAM_BODY_TIMEOUT;
                       default 30)
    --max-connections N
                       connections served at once; more wait to be accepted until one closes
                       (env CHALKSTREAM_MAX_CONNECTIONS; default 4096)
    -h, --help         print this help

Spin variables come from SPIN_VARIABLE_<NAME> environment variables, else their
defaults in spin.toml. When ready, prints `chalkstream-host: listening on
http://IP:PORT` on stdout; one line per request goes to stderr. Stops on
SIGINT or SIGTERM. With CHALKSTREAM_COUNT_KV set, each request's key-value reads and
writes (its work after the response included) follow as one more stderr line.
CHALKSTREAM_KV_LAG_MS=N (tests only) makes every store eventually consistent: a request
reads its own writes at once and other requests' (on any host sharing the store) N ms
late, in the order they were made; writes still queued when the host is killed are lost.";

/// Per-request store data: WASI, wasi-http and the Spin host state.
pub struct State {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: DenyOutbound,
    kv: Arc<kv::Stores>,
    kv_stores: Arc<Vec<String>>,
    variables: Arc<HashMap<String, String>>,
    component_id: Arc<str>,
    /// Key-value reads (`get`, `exists`) and writes (`set`, `delete`) of this request, logged
    /// when `CHALKSTREAM_COUNT_KV` is set (issue 11's bounds, checked over HTTP).
    kv_reads: u64,
    kv_writes: u64,
    /// This request's own writes in the replicated mode (`CHALKSTREAM_KV_LAG_MS`), which it reads
    /// back at once while everyone else sees them late; unused otherwise.
    overlay: lag::Overlay,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Outbound HTTP is denied: the manifest's `allowed_outbound_hosts` is empty
/// and this host does not implement host allow-lists.
struct DenyOutbound;

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for DenyOutbound {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), HttpError>> + Send> {
        Box::new(async { Err(HttpError::HttpRequestDenied) })
    }
}

#[derive(Debug)]
struct Options {
    listen: SocketAddr,
    spin_toml: PathBuf,
    state_dir: Option<PathBuf>,
    runtime_config: Option<PathBuf>,
    kv_limits: kv::Limits,
    serving: server::Serving,
}

/// The options from the command line (`args`, without the program name) over the environment
/// (`env`): a flag wins over its variable.
fn parse_args(args: impl IntoIterator<Item = String>, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Options> {
    let mut listen = env("CHALKSTREAM_LISTEN").unwrap_or_else(|| "127.0.0.1:3000".into());
    let mut spin_toml = PathBuf::from("spin.toml");
    let mut state_dir = None;
    let mut runtime_config = None;
    let mut kv_limits = env("CHALKSTREAM_KV_LIMITS").map(|v| ("CHALKSTREAM_KV_LIMITS", v));
    let mut header_timeout = env("CHALKSTREAM_HEADER_TIMEOUT").map(|v| ("CHALKSTREAM_HEADER_TIMEOUT", v));
    let mut body_timeout = env("CHALKSTREAM_BODY_TIMEOUT").map(|v| ("CHALKSTREAM_BODY_TIMEOUT", v));
    let mut max_connections = env("CHALKSTREAM_MAX_CONNECTIONS").map(|v| ("CHALKSTREAM_MAX_CONNECTIONS", v));
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            println!("{HELP}");
            std::process::exit(0);
        }
        let mut value = || inline.clone().or_else(|| args.next()).with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = value()?,
            "--spin-toml" => spin_toml = value()?.into(),
            "--state-dir" => state_dir = Some(value()?.into()),
            "--runtime-config-file" => runtime_config = Some(value()?.into()),
            "--kv-limits" => kv_limits = Some(("--kv-limits", value()?)),
            "--header-timeout" => header_timeout = Some(("--header-timeout", value()?)),
            "--body-timeout" => body_timeout = Some(("--body-timeout", value()?)),
            "--max-connections" => max_connections = Some(("--max-connections", value()?)),
            other => bail!("unknown argument {other:?}; see --help"),
        }
    }
    let listen = listen.parse().with_context(|| format!("--listen {listen:?} is not an IP:PORT address"))?;
    let kv_limits = match kv_limits {
        Some((from, text)) => kv::Limits::parse(&text).with_context(|| format!("{from} {text:?}"))?,
        None => kv::Limits::default(),
    };
    let mut serving = server::Serving::default();
    if let Some((from, text)) = header_timeout {
        serving.header_timeout = seconds(from, &text)?;
    }
    if let Some((from, text)) = body_timeout {
        serving.body_timeout = seconds(from, &text)?;
    }
    if let Some((from, text)) = max_connections {
        serving.max_connections = text
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("{from} {text:?} is not a whole number of connections, at least 1"))?;
    }
    Ok(Options { listen, spin_toml, state_dir, runtime_config, kv_limits, serving })
}

/// A timeout in seconds, a plain decimal (`10`, `0.5`), more than 0.
fn seconds(from: &str, text: &str) -> anyhow::Result<std::time::Duration> {
    text.parse::<f64>()
        .ok()
        .filter(|s| *s > 0.0)
        .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
        .with_context(|| format!("{from} {text:?} is not a number of seconds more than 0"))
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the cause chain; no backtrace even with RUST_BACKTRACE set.
            eprintln!("chalkstream-host: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Keeps glibc's heap from growing with the traffic: at most two malloc arenas, and every
/// allocation of 128 KiB or more (request and response bodies, stored values up to 1 MB) its own
/// mapping, returned to the system when freed.
///
/// glibc's defaults give each thread that allocates its own arena, up to eight per core, and raise
/// the mapping threshold to the largest block freed so far (up to 32 MiB), after which 1 MB bodies
/// are carved from those arenas and leave them fragmented. `block_in_place` (the SQLite store)
/// runs requests on a changing set of threads, so many arenas fill. Measured with an accelerated
/// stream and five low-latency viewers: the heap outside the instance pool settled at ~117 MiB
/// with the defaults and ~59 MiB with these. An operator's own `MALLOC_ARENA_MAX` or
/// `MALLOC_MMAP_THRESHOLD_` (glibc's tunables) wins over this.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    let unset = |name: &str| std::env::var_os(name).is_none();
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread exists.
    unsafe {
        if unset("MALLOC_ARENA_MAX") {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
        if unset("MALLOC_MMAP_THRESHOLD_") {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

/// How often the host hands glibc's free heap pages back to the system ([`trim_malloc`]).
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Every [`TRIM_EVERY`], returns the free pages inside glibc's arenas to the system
/// (`malloc_trim(0)`).
///
/// Even with two arenas ([`tune_malloc`]), blocks freed in the middle of an arena stay resident:
/// glibc gives back only the free space at the top of the main heap, and only after a `free`
/// large enough to pass its trim threshold. Requests of every size come and go, so the resident
/// heap crept up for hours under a steady stream (the soak: +6 MiB in its first half hour after the
/// store was full, then about 0.03 MiB a minute). `malloc_trim` walks each arena and releases
/// every whole free page; it takes each arena's lock briefly, so it runs on a thread of its own
/// and rarely. Measured side by side (`scripts/bench --only hostmem`, 12 minutes): 2–4 MiB less
/// outside the instance pool. It does not cap the threads' own memory (BENCHMARKS, session 15).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_malloc() {
    let spawned = std::thread::Builder::new().name("malloc-trim".into()).spawn(|| loop {
        std::thread::sleep(TRIM_EVERY);
        // SAFETY: malloc_trim only releases free memory of the allocator; any thread may call it.
        unsafe {
            libc::malloc_trim(0);
        }
    });
    if let Err(e) = spawned {
        eprintln!("chalkstream-host: no malloc trimming: {e}");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_malloc() {}

/// At most this many threads in tokio's blocking pool besides its workers (tokio's default: 512).
///
/// `block_in_place` (the SQLite store) hands the worker's place to a thread of the pool at every
/// call, and the pool wakes its idle threads in turn, so none idles long enough to end (10 s):
/// under a steady stream the pool kept whatever size its busiest moment gave it, 313 threads in
/// one two-hour soak and 407 in another, each with its own stack pages and malloc cache. The
/// store has one connection, so threads past a handful only wait on its mutex; past the cap, a
/// `block_in_place` waits for a pool thread to hand the worker's place to. Measured: the
/// two-hour soak kept 22 threads and 44 MiB flat; `scripts/bench --only hostmem` with a first
/// version (the cap and a queue for the connection) kept 22 threads where tokio's default
/// reached 177 in 12 minutes (BENCHMARKS.md, session 16).
const MAX_BLOCKING_THREADS: usize = 16;

fn run() -> anyhow::Result<()> {
    tune_malloc();
    let options = parse_args(std::env::args().skip(1), |name| std::env::var(name).ok())?;
    let app = manifest::App::load(&options.spin_toml)?;
    let variables = variables::resolve(&app, |key| std::env::var(key).ok())?;
    let runtime_config = match &options.runtime_config {
        Some(path) => Some(runtime_config::RuntimeConfig::load(path)?),
        None => None,
    };
    let app_dir = manifest::app_dir(&options.spin_toml);
    let store_configs = runtime_config::resolve_stores(runtime_config.as_ref(), options.state_dir.as_deref(), app_dir);
    let lag = lag::Lag::from_env().map_err(anyhow::Error::msg)?;
    let stores = Arc::new(kv::Stores::open(&store_configs, options.kv_limits)?.with_lag(lag));
    for line in stores.summary() {
        eprintln!("chalkstream-host: {line}");
    }
    // Where Spin would copy a component's `files`, this host copies them: in its state directory.
    let copies = options.state_dir.clone().unwrap_or_else(|| app_dir.join(".spin")).join("files");
    let host = server::Host::new(&app, variables, stores.clone(), options.serving, &copies)?;

    trim_malloc();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .with_context(|| format!("cannot listen on {}", options.listen))?;
        let addr = listener.local_addr()?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "chalkstream-host: listening on http://{addr}")?;
        stdout.flush()?;
        drop(stdout);
        if stores.is_lagged() {
            tokio::spawn(stores.clone().apply_lagged());
        }
        let served = Arc::new(host).serve(listener).await;
        stores.flush_lagged().await;
        served
    })?;
    // Connections still open are dropped with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Options> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse_args(args.iter().map(|a| a.to_string()), |name| env.get(name).cloned())
    }

    #[test]
    fn limits_and_timeouts_come_from_flags_over_the_environment() {
        let defaults = parse(&[], &[]).unwrap();
        assert_eq!(defaults.kv_limits, kv::Limits::default());
        assert_eq!(defaults.serving, server::Serving::default());

        let env = [
            ("CHALKSTREAM_KV_LIMITS", "fermyon-cloud"),
            ("CHALKSTREAM_HEADER_TIMEOUT", "0.5"),
            ("CHALKSTREAM_BODY_TIMEOUT", "2"),
            ("CHALKSTREAM_MAX_CONNECTIONS", "16"),
        ];
        let o = parse(&[], &env).unwrap();
        assert_eq!(o.kv_limits, kv::Limits::FERMYON_CLOUD);
        assert_eq!(o.serving.header_timeout, std::time::Duration::from_millis(500));
        assert_eq!(o.serving.body_timeout, std::time::Duration::from_secs(2));
        assert_eq!(o.serving.max_connections, 16);

        let o = parse(&["--kv-limits", "fermyon-cloud,keys=64", "--header-timeout=3", "--max-connections", "8"], &env).unwrap();
        assert_eq!(o.kv_limits, kv::Limits { keys: Some(64), ..kv::Limits::FERMYON_CLOUD });
        assert_eq!(o.serving.header_timeout, std::time::Duration::from_secs(3));
        assert_eq!(o.serving.max_connections, 8);

        for bad in [
            &["--kv-limits", "keys=0"][..],
            &["--kv-limits", "fermyon"],
            &["--kv-limits", "value=1MB"],
            &["--header-timeout", "0"],
            &["--body-timeout", "-1"],
            &["--body-timeout", "soon"],
            &["--max-connections", "0"],
        ] {
            assert!(parse(bad, &[]).is_err(), "{bad:?} was accepted");
        }
    }
}
