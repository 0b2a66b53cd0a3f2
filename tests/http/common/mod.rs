//! Harness for the HTTP integration tests: runs the real component in `chalkstream-host` on a
//! free loopback port with its own state directory, speaks HTTP to it with `ureq`, reads its
//! key-value SQLite file, and makes real H.264/AAC MPEG-TS segments with Debian's ffmpeg.

#![allow(dead_code)] // each test file uses a different part of the harness

pub mod ll_check;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha1::{Digest, Sha1};

/// Largest value the storage rules allow (Fermyon Cloud and Akamai cap values at 1 MB).
pub const MAX_VALUE_BYTES: usize = 1_000_000;
/// Size of one MPEG-TS packet.
pub const TS_PACKET: usize = 188;

/// The repository root (the parent of `host/`, whose test targets these are).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

/// The component `spin.toml` points at; the tests need it built.
pub fn component_wasm() -> PathBuf {
    repo_root().join("target/wasm32-wasip2/release/chalkstream_spin_app.wasm")
}

/// The `spin.toml` the host runs: the repository's, or `CHALKSTREAM_SPIN_TOML` (to run these
/// tests against another build of the component, e.g. a deliberately broken one).
pub fn spin_toml() -> PathBuf {
    match std::env::var_os("CHALKSTREAM_SPIN_TOML") {
        Some(path) => PathBuf::from(path),
        None => repo_root().join("spin.toml"),
    }
}

// ---------------------------------------------------------------------------------------------
// The host process
// ---------------------------------------------------------------------------------------------

/// One running `chalkstream-host` with its own state directory; killed on drop.
pub struct Host {
    child: Option<Child>,
    addr: String,
    state: tempfile::TempDir,
    vars: Vec<(String, String)>,
    /// More command-line arguments (e.g. `--runtime-config-file FILE`), kept for restarts.
    args: Vec<String>,
    log: Arc<Mutex<String>>,
    agent: ureq::Agent,
}

impl Host {
    /// Starts a host with default Spin variables.
    pub fn start() -> Host {
        Host::with_vars(&[])
    }

    /// Starts a host with the given Spin variables, by name (`("idle_timeout", "2")`).
    pub fn with_vars(vars: &[(&str, &str)]) -> Host {
        Host::with_args(vars, &[])
    }

    /// Starts a host with Spin variables and more command-line arguments, such as
    /// `["--runtime-config-file", path]`.
    pub fn with_args(vars: &[(&str, &str)], args: &[&str]) -> Host {
        let wasm = component_wasm();
        assert!(
            wasm.is_file() || std::env::var_os("CHALKSTREAM_SPIN_TOML").is_some(),
            "the component {} is missing: run scripts/build first (or `sh scripts/build-component`)",
            wasm.display()
        );
        let state = tempfile::Builder::new()
            .prefix("chalkstream-itest-")
            .tempdir()
            .expect("temp state dir");
        let vars: Vec<(String, String)> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let log = Arc::new(Mutex::new(String::new()));
        let (child, addr) = spawn_host("127.0.0.1:0", state.path(), &vars, &args, &log);
        Host { child: Some(child), addr, state, vars, args, log, agent: new_agent() }
    }

    /// Kills the host (SIGKILL, like a crash) and starts it again on the same port and state.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match try_spawn_host(&self.addr, self.state.path(), &self.vars, &self.args, &self.log) {
                Ok((child, addr)) => {
                    assert_eq!(addr, self.addr, "host restarted on another address");
                    self.child = Some(child);
                    break;
                }
                Err(why) if Instant::now() < deadline => {
                    eprintln!("restart on {} failed ({why}); retrying", self.addr);
                    thread::sleep(Duration::from_millis(300));
                }
                Err(why) => panic!("could not restart the host on {}: {why}", self.addr),
            }
        }
        // Pooled connections died with the old process.
        self.agent = new_agent();
    }

    /// Kills the host with SIGKILL, like a crash, and waits for it (idempotent).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The state directory (holds `sqlite_key_value.db`).
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// Everything the host printed on stdout and stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends one request; `path` is sent as written (no normalisation of dots or escapes).
    /// 4xx and 5xx answers are returned like any other, with their bodies.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        try_request(&self.agent, &self.base(), method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: transport error: {e}"))
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], None)
    }

    /// `PUT /ingest/{session}/{seq}.ts` with the given extra headers.
    pub fn put_segment(&self, session: &str, seq: u64, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        self.request("PUT", &format!("/ingest/{session}/{seq}.ts"), headers, Some(body))
    }

    /// `PUT` of one segment with `X-Duration` and, when given, `X-Program-Date-Time`.
    pub fn upload(&self, session: &str, seq: u64, duration: &str, pdt: Option<&str>, body: &[u8]) -> Resp {
        let mut headers = vec![("X-Duration", duration)];
        if let Some(pdt) = pdt {
            headers.push(("X-Program-Date-Time", pdt));
        }
        self.put_segment(session, seq, &headers, body)
    }

    /// `PUT /ingest/{session}/{seq}/{part}.ts` (v2) with the given headers.
    pub fn put_part(&self, session: &str, seq: u64, part: u32, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        self.request("PUT", &format!("/ingest/{session}/{seq}/{part}.ts"), headers, Some(body))
    }

    /// `PUT` of one part with the v2 headers: its duration, the stream's part target and target
    /// duration, `X-Independent: 1` on part 0.
    pub fn upload_part(&self, session: &str, seq: u64, part: u32, duration: &str, part_target: &str, target: &str, body: &[u8]) -> Resp {
        let independent = if part == 0 { "1" } else { "0" };
        let headers = [
            ("X-Duration", duration),
            ("X-Part-Target", part_target),
            ("X-Target-Duration", target),
            ("X-Independent", independent),
        ];
        self.put_part(session, seq, part, &headers, body)
    }

    /// `POST /ingest/{session}/{seq}/commit` with `X-Parts`.
    pub fn commit(&self, session: &str, seq: u64, parts: u32) -> Resp {
        let parts = parts.to_string();
        self.request("POST", &format!("/ingest/{session}/{seq}/commit"), &[("X-Parts", &parts)], Some(b""))
    }

    /// `POST /ingest/{session}/end`
    pub fn end(&self, session: &str) -> Resp {
        self.request("POST", &format!("/ingest/{session}/end"), &[], Some(b""))
    }

    /// `GET /playlist/{id}.m3u8`, asserted 200 and parsed.
    pub fn playlist(&self, id: &str) -> (Resp, Playlist) {
        let resp = self.get(&format!("/playlist/{id}.m3u8"));
        resp.assert_status(200);
        let playlist = Playlist::parse(&resp.text());
        (resp, playlist)
    }

    /// `GET /api/streams/{id}`, asserted 200, as JSON.
    pub fn status(&self, id: &str) -> serde_json::Value {
        let resp = self.get(&format!("/api/streams/{id}"));
        resp.assert_status(200);
        resp.json()
    }

    /// Every row of the `spin_key_value` table, ordered by store and key.
    pub fn kv_rows(&self) -> Vec<KvRow> {
        let path = self.state.path().join("sqlite_key_value.db");
        assert!(path.is_file(), "no key-value file at {}", path.display());
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .expect("open the key-value SQLite file");
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        let mut stmt = conn
            .prepare("SELECT store, key, value FROM spin_key_value ORDER BY store, key")
            .expect("the spin_key_value(store, key, value) table");
        let rows = stmt
            .query_map([], |row| {
                Ok(KvRow { store: row.get(0)?, key: row.get(1)?, value: row.get(2)? })
            })
            .expect("query spin_key_value")
            .collect::<Result<Vec<_>, _>>()
            .expect("read spin_key_value");
        rows
    }

    /// Rows of store `default` whose key starts with `prefix`.
    pub fn kv_with_prefix(&self, prefix: &str) -> Vec<KvRow> {
        self.kv_rows()
            .into_iter()
            .filter(|r| r.store == "default" && r.key.starts_with(prefix))
            .collect()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!("--- chalkstream-host log ({}) ---\n{}", self.addr, self.log());
        }
    }
}

/// Sends one request to `base` (`http://IP:PORT`); `Err` only for transport errors (refused,
/// reset, timed out), so a caller can retry them as a client behind a load balancer would.
pub fn try_request(
    agent: &ureq::Agent,
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Resp, String> {
    let url = format!("{base}{path}");
    let mut builder = ureq::http::Request::builder().method(method).uri(&url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let result = match body {
        Some(body) => agent.run(builder.body(body.to_vec()).expect("request")),
        None => agent.run(builder.body(()).expect("request")),
    };
    let mut resp = result.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = resp
        .body_mut()
        .with_config()
        .limit(256 * 1024 * 1024)
        .read_to_vec()
        .map_err(|e| format!("reading the body: {e}"))?;
    Ok(Resp { method: method.to_string(), path: path.to_string(), status, headers, body })
}

/// An HTTP agent as the tests use it: statuses are answers, not errors; no redirects.
pub fn new_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn spawn_host(
    listen: &str,
    state: &Path,
    vars: &[(String, String)],
    args: &[String],
    log: &Arc<Mutex<String>>,
) -> (Child, String) {
    try_spawn_host(listen, state, vars, args, log).unwrap_or_else(|why| panic!("chalkstream-host did not start: {why}"))
}

/// Starts the host and waits for its `listening on http://ADDR` line.
fn try_spawn_host(
    listen: &str,
    state: &Path,
    vars: &[(String, String)],
    args: &[String],
    log: &Arc<Mutex<String>>,
) -> Result<(Child, String), String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chalkstream-host"));
    cmd.arg("--listen")
        .arg(listen)
        .arg("--spin-toml")
        .arg(spin_toml())
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Only the variables this test sets, whatever the environment of `cargo test` holds.
    for (key, _) in std::env::vars() {
        if key.starts_with("SPIN_VARIABLE_") {
            cmd.env_remove(key);
        }
    }
    for (name, value) in vars {
        cmd.env(format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()), value);
    }
    let mut child = cmd.spawn().map_err(|e| format!("spawning chalkstream-host: {e}"))?;

    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let out_log = Arc::clone(log);
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
            out_log.lock().unwrap().push_str(&line);
            if let Some(at) = line.find("listening on http://") {
                let addr = line[at + "listening on http://".len()..].trim().trim_end_matches('/');
                let _ = tx.send(addr.to_string());
            }
            line.clear();
        }
    });
    let stderr = child.stderr.take().unwrap();
    let err_log = Arc::clone(log);
    thread::spawn(move || {
        // Whole lines only, as for stdout: the two streams share one log, and a test that
        // parses a line (`flood.rs`'s kv counts) must never see the first half of one.
        let mut reader = BufReader::new(stderr);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            err_log.lock().unwrap().push_str(&String::from_utf8_lossy(&line));
            line.clear();
        }
    });

    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(addr) => Ok((child, addr)),
        Err(_) => {
            let _ = child.kill();
            let status = child.wait().ok();
            thread::sleep(Duration::from_millis(100)); // let the log readers finish
            Err(format!(
                "no `listening on` line (exit status {status:?}); its output:\n{}",
                log.lock().unwrap()
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Responses, playlists, key-value rows
// ---------------------------------------------------------------------------------------------

/// One HTTP answer, kept whole for assertions and failure messages.
#[derive(Clone)]
pub struct Resp {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{self}: body is not JSON ({e})"))
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "{self}");
        self
    }

    /// `max-age` of `Cache-Control`, if any.
    pub fn max_age(&self) -> Option<u64> {
        let cc = self.header("cache-control")?;
        cc.split(',')
            .map(str::trim)
            .find_map(|d| d.strip_prefix("max-age="))
            .and_then(|v| v.parse().ok())
    }
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = if self.body.len() > 600 {
            format!("<{} bytes>", self.body.len())
        } else {
            self.text()
        };
        write!(f, "{} {} -> {} {:?} {}", self.method, self.path, self.status, self.headers, body)
    }
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct KvRow {
    pub store: String,
    pub key: String,
    pub value: Vec<u8>,
}

impl std::fmt::Debug for KvRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} ({} bytes)", self.store, self.key, self.value.len())
    }
}

/// One media segment entry of a playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub uri: String,
    /// The `{seq}` of the URI's `{seq}.ts`.
    pub seq: u64,
    /// `EXTINF` duration in milliseconds (parsed exactly from the decimal text).
    pub duration_ms: u64,
    pub pdt: Option<String>,
    pub discontinuity: bool,
}

/// A media playlist, parsed line by line (strictly enough for these tests; ffmpeg is the
/// independent parser).
#[derive(Debug, Clone)]
pub struct Playlist {
    pub text: String,
    pub lines: Vec<String>,
    pub target_duration: Option<u64>,
    pub media_sequence: Option<u64>,
    pub discontinuity_sequence: Option<u64>,
    pub playlist_type: Option<String>,
    pub ended: bool,
    pub entries: Vec<Entry>,
}

impl Playlist {
    pub fn parse(text: &str) -> Playlist {
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        assert_eq!(lines.first().map(String::as_str), Some("#EXTM3U"), "playlist must start with #EXTM3U:\n{text}");
        let mut p = Playlist {
            text: text.to_string(),
            lines: lines.clone(),
            target_duration: None,
            media_sequence: None,
            discontinuity_sequence: None,
            playlist_type: None,
            ended: false,
            entries: Vec::new(),
        };
        let (mut duration_ms, mut pdt, mut disc) = (None, None, false);
        for line in &lines[1..] {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                p.target_duration = Some(v.parse().unwrap_or_else(|_| panic!("bad TARGETDURATION {v:?}")));
            } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                p.media_sequence = Some(v.parse().unwrap_or_else(|_| panic!("bad MEDIA-SEQUENCE {v:?}")));
            } else if let Some(v) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
                p.discontinuity_sequence = Some(v.parse().unwrap_or_else(|_| panic!("bad DISCONTINUITY-SEQUENCE {v:?}")));
            } else if let Some(v) = line.strip_prefix("#EXT-X-PLAYLIST-TYPE:") {
                p.playlist_type = Some(v.to_string());
            } else if line == "#EXT-X-ENDLIST" {
                p.ended = true;
            } else if line == "#EXT-X-DISCONTINUITY" {
                disc = true;
            } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
                pdt = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("#EXTINF:") {
                let d = v.split(',').next().unwrap();
                duration_ms = Some(decimal_ms(d).unwrap_or_else(|| panic!("bad EXTINF {v:?}")));
            } else if !line.starts_with('#') {
                assert!(!p.ended, "segment after #EXT-X-ENDLIST:\n{text}");
                let name = line.rsplit('/').next().unwrap();
                let seq = name
                    .strip_suffix(".ts")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("segment URI {line:?} does not end in {{seq}}.ts"));
                p.entries.push(Entry {
                    uri: line.to_string(),
                    seq,
                    duration_ms: duration_ms.take().unwrap_or_else(|| panic!("no #EXTINF before {line}:\n{text}")),
                    pdt: pdt.take(),
                    discontinuity: std::mem::take(&mut disc),
                });
            }
        }
        p
    }

    pub fn seqs(&self) -> Vec<u64> {
        self.entries.iter().map(|e| e.seq).collect()
    }

    pub fn count(&self, line: &str) -> usize {
        self.lines.iter().filter(|l| l.trim_end() == line).count()
    }

    /// The request path of an entry's URI, resolved against `/playlist/{id}.m3u8`.
    pub fn entry_path(&self, entry: &Entry) -> String {
        resolve("/playlist/x.m3u8", &entry.uri)
    }
}

/// Resolves a URI reference against an absolute path (enough for `/a/b`, `../a`, `a`, `http://…`).
pub fn resolve(base: &str, uri: &str) -> String {
    if let Some(rest) = uri.strip_prefix("http://").or_else(|| uri.strip_prefix("https://")) {
        return rest.find('/').map(|i| rest[i..].to_string()).unwrap_or_else(|| "/".into());
    }
    if uri.starts_with('/') {
        return uri.to_string();
    }
    let mut parts: Vec<&str> = base.split('/').collect();
    parts.pop(); // the file name
    for seg in uri.split('/') {
        match seg {
            ".." => {
                if parts.len() > 1 {
                    parts.pop();
                }
            }
            "." => {}
            s => parts.push(s),
        }
    }
    parts.join("/")
}

/// Parses a plain decimal (`2`, `2.5`, `2.000000`) into whole milliseconds, rounding to nearest.
pub fn decimal_ms(text: &str) -> Option<u64> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut ms: u64 = int.parse::<u64>().ok()? * 1000;
    let mut digits = frac.bytes().map(|b| (b - b'0') as u64);
    ms += digits.next().unwrap_or(0) * 100 + digits.next().unwrap_or(0) * 10 + digits.next().unwrap_or(0);
    if digits.next().unwrap_or(0) >= 5 {
        ms += 1;
    }
    Some(ms)
}

// ---------------------------------------------------------------------------------------------
// Identity, time, synthetic TS
// ---------------------------------------------------------------------------------------------

/// A fresh session secret: 32 characters of `[A-Za-z0-9_-]` from the OS CSPRNG.
pub fn new_session() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).expect("/dev/urandom");
    bytes.iter().map(|b| ALPHABET[(*b & 63) as usize] as char).collect()
}

/// The public stream id: lowercase hex SHA-1 of the secret.
pub fn stream_id(session: &str) -> String {
    Sha1::digest(session.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-25T13:04:05.123Z`.
pub fn rfc3339_ms(epoch_ms: u64) -> String {
    let secs = epoch_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        epoch_ms % 1000
    )
}

/// `count` valid MPEG-TS packets (sync byte, null PID) whose payload spells `tag`, so that
/// different tags give different bytes.
pub fn ts_packets(count: usize, tag: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * TS_PACKET);
    for i in 0..count {
        out.extend_from_slice(&[0x47, 0x1F, 0xFF, 0x10 | (i as u8 & 0x0F)]);
        let mut payload = [0xFFu8; TS_PACKET - 4];
        payload[..8].copy_from_slice(&tag.to_be_bytes());
        payload[8..16].copy_from_slice(&(i as u64).to_be_bytes());
        out.extend_from_slice(&payload);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Real media from ffmpeg
// ---------------------------------------------------------------------------------------------

/// One real MPEG-TS segment and its duration as the muxer listed it.
pub struct Segment {
    pub bytes: Vec<u8>,
    /// Duration in whole milliseconds (from the muxer's `EXTINF`).
    pub duration_ms: u64,
}

impl Segment {
    /// The `X-Duration` header value: seconds with millisecond precision.
    pub fn x_duration(&self) -> String {
        format!("{}.{:03}", self.duration_ms / 1000, self.duration_ms % 1000)
    }
}

/// Real H.264 (keyframe every 2 s) + AAC segments, cut by ffmpeg's HLS muxer into ~2 s
/// MPEG-TS pieces; made once per test binary.
pub fn media() -> &'static [Segment] {
    static MEDIA: OnceLock<Vec<Segment>> = OnceLock::new();
    MEDIA.get_or_init(make_media)
}

fn make_media() -> Vec<Segment> {
    let dir = tempfile::Builder::new().prefix("chalkstream-media-").tempdir().expect("temp dir");
    let list = dir.path().join("index.m3u8");
    // 11 s at 30 fps with a keyframe every 60 frames: five 2 s segments and a 1 s tail.
    let out = Command::new("ffmpeg")
        .current_dir(dir.path())
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", "11", "-map", "0:v", "-map", "1:a"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"])
        .args(["-g", "60", "-keyint_min", "60", "-sc_threshold", "0"])
        .args(["-c:a", "aac", "-b:a", "64k"])
        .args(["-f", "hls", "-hls_time", "2", "-hls_list_size", "0"])
        .args(["-hls_segment_filename", "seg%d.ts", "index.m3u8"])
        .output()
        .expect("run ffmpeg (Debian package `ffmpeg`; scripts/setup --test installs it)");
    assert!(out.status.success(), "ffmpeg failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&list).expect("ffmpeg's segment list");
    let mut segments = Vec::new();
    let mut duration_ms = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXTINF:") {
            duration_ms = decimal_ms(v.split(',').next().unwrap());
        } else if !line.starts_with('#') && !line.is_empty() {
            let bytes = std::fs::read(dir.path().join(line)).expect("segment file");
            segments.push(Segment { bytes, duration_ms: duration_ms.take().expect("EXTINF before segment") });
        }
    }
    assert!(segments.len() >= 5, "ffmpeg made only {} segments:\n{text}", segments.len());
    segments
}

/// One segment of [`media_parts`]: its bytes cut into parts at packet boundaries.
pub struct PartedSegment {
    pub segment: Segment,
    /// The parts' bytes, in order; together the segment's bytes.
    pub parts: Vec<Vec<u8>>,
    /// Each part's `X-Duration` (the segment's duration shared out, in whole milliseconds).
    pub durations_ms: Vec<u64>,
}

/// How many parts [`media_parts`] cuts each segment into.
pub const PARTS_PER_SEGMENT: usize = 4;

/// Real H.264 (a keyframe every second) + AAC segments of about 1 s from ffmpeg's HLS muxer,
/// each cut into [`PARTS_PER_SEGMENT`] parts at 188-byte packet boundaries (part 0 starts with
/// the segment, so with its IDR frame); made once per test binary.
pub fn media_parts() -> &'static [PartedSegment] {
    static MEDIA: OnceLock<Vec<PartedSegment>> = OnceLock::new();
    MEDIA.get_or_init(make_media_parts)
}

fn make_media_parts() -> Vec<PartedSegment> {
    let dir = tempfile::Builder::new().prefix("chalkstream-parts-").tempdir().expect("temp dir");
    let out = Command::new("ffmpeg")
        .current_dir(dir.path())
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", "8", "-map", "0:v", "-map", "1:a"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"])
        .args(["-g", "30", "-keyint_min", "30", "-sc_threshold", "0"])
        .args(["-c:a", "aac", "-b:a", "64k"])
        .args(["-f", "hls", "-hls_time", "1", "-hls_list_size", "0"])
        .args(["-hls_segment_filename", "seg%d.ts", "index.m3u8"])
        .output()
        .expect("run ffmpeg (Debian package `ffmpeg`; scripts/setup --test installs it)");
    assert!(out.status.success(), "ffmpeg failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(dir.path().join("index.m3u8")).expect("ffmpeg's segment list");
    let mut segments = Vec::new();
    let mut duration_ms = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXTINF:") {
            duration_ms = decimal_ms(v.split(',').next().unwrap());
        } else if !line.starts_with('#') && !line.is_empty() {
            let bytes = std::fs::read(dir.path().join(line)).expect("segment file");
            let duration_ms = duration_ms.take().expect("EXTINF before segment");
            let packets = bytes.len() / TS_PACKET;
            assert!(packets >= PARTS_PER_SEGMENT, "segment of {packets} packets");
            let per = packets.div_ceil(PARTS_PER_SEGMENT);
            let parts: Vec<Vec<u8>> = bytes.chunks(per * TS_PACKET).map(<[u8]>::to_vec).collect();
            let n = parts.len() as u64;
            let durations_ms = (0..n).map(|i| duration_ms / n + u64::from(i + 1 == n) * (duration_ms % n)).collect();
            segments.push(PartedSegment { segment: Segment { bytes, duration_ms }, parts, durations_ms });
        }
    }
    assert!(segments.len() >= 6, "ffmpeg made only {} segments:\n{text}", segments.len());
    segments
}

/// The part target for [`media_parts`]: its longest part, so every part but a segment's last
/// lasts at least 85 % of it.
pub fn part_target() -> String {
    let ms = media_parts().iter().flat_map(|s| s.durations_ms.iter().copied()).max().unwrap();
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Whole milliseconds as a header's decimal seconds (`1.250`).
pub fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Uploads part `part` of [`media_parts`] segment `seq` (media repeats past its end) with the
/// v2 headers, target duration 1 s.
pub fn upload_part(host: &Host, session: &str, seq: u64, part: usize) -> Resp {
    let m = &media_parts()[seq as usize % media_parts().len()];
    host.upload_part(session, seq, part as u32, &secs(m.durations_ms[part]), &part_target(), "1", &m.parts[part])
}

/// Runs a command, returning (success, stdout, stderr).
pub fn run(program: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// A real Redis server
// ---------------------------------------------------------------------------------------------

/// A `redis-server` (Debian package `redis-server`) of this test's own on a free loopback port,
/// with no persistence: nothing outlives it. Killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let dir = tempfile::Builder::new().prefix("chalkstream-redis-").tempdir().expect("temp dir");
        // A port the OS just handed out; another process may take it before redis-server binds
        // it, so a server that does not come up is retried on a new port.
        for _attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "yes"])
                .args(["--daemonize", "no", "--loglevel", "warning"])
                .arg("--dir")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run redis-server (Debian package `redis-server`; scripts/setup --test installs it)");
            // Up when it answers PING; gone if it exited (port taken).
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
                if let Ok(mut conn) = client.get_connection() {
                    if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                        return RedisServer { child: Some(child), port, _dir: dir };
                    }
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err);
            }
            eprintln!("redis-server on port {port} did not come up; retrying: {err}");
        }
        panic!("redis-server did not start");
    }

    /// `redis://127.0.0.1:PORT`, as a runtime config's `url`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A plain blocking connection, to look at the data as Redis holds it.
    pub fn connect(&self) -> redis::Connection {
        redis::Client::open(self.url()).unwrap().get_connection().expect("connect to redis-server")
    }

    /// Every key and its raw value, sorted by key.
    pub fn dump(&self) -> Vec<(String, Vec<u8>)> {
        let mut conn = self.connect();
        let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
        keys.sort();
        keys.into_iter()
            .map(|key| {
                let value: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
                (key, value)
            })
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes a Spin runtime config file `name` in `dir` and returns its path.
pub fn write_runtime_config(dir: &Path, name: &str, toml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, toml).expect("write the runtime config file");
    path
}

// ---------------------------------------------------------------------------------------------
// A store shared by hosts
// ---------------------------------------------------------------------------------------------

/// A runtime config file in a directory of its own, and the Redis server it may name: one
/// key-value store several hosts run on, as instances behind a load balancer do.
pub struct SharedStore {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub redis: Option<RedisServer>,
}

impl SharedStore {
    pub fn redis() -> SharedStore {
        let redis = RedisServer::start();
        let dir = tempdir("chalkstream-scale-");
        let toml = format!("[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n", redis.url());
        let config = write_runtime_config(dir.path(), "runtime-config.toml", &toml);
        SharedStore { dir, config, redis: Some(redis) }
    }

    /// SQLite at `shared/kv.db`, relative to the runtime config file as Spin resolves it.
    pub fn sqlite() -> SharedStore {
        let dir = tempdir("chalkstream-scale-");
        let toml = "[key_value_store.default]\ntype = \"spin\"\npath = \"shared/kv.db\"\n";
        let config = write_runtime_config(dir.path(), "runtime-config.toml", toml);
        SharedStore { dir, config, redis: None }
    }

    pub fn sqlite_file(&self) -> PathBuf {
        self.dir.path().join("shared/kv.db")
    }

    /// Two hosts on this store, started side by side (each compiles the component).
    pub fn start_pair(&self) -> (Host, Host) {
        self.start_pair_with(&[])
    }

    /// Two hosts on this store with the given Spin variables, started side by side.
    pub fn start_pair_with(&self, vars: &[(&str, &str)]) -> (Host, Host) {
        thread::scope(|s| {
            let a = s.spawn(|| self.start_with(vars));
            let b = s.spawn(|| self.start_with(vars));
            (a.join().unwrap(), b.join().unwrap())
        })
    }

    /// One host on this store, which says where the store is.
    pub fn start(&self) -> Host {
        self.start_with(&[])
    }

    /// One host on this store with the given Spin variables, which says where the store is.
    pub fn start_with(&self, vars: &[(&str, &str)]) -> Host {
        let host = Host::with_args(vars, &["--runtime-config-file", self.config.to_str().unwrap()]);
        let expect = match &self.redis {
            Some(redis) => format!("key-value store \"default\": Redis at {}", redis.url().trim_start_matches("redis://")),
            None => format!("key-value store \"default\": SQLite {}", self.sqlite_file().display()),
        };
        assert!(host.log().contains(&expect), "the host does not say `{expect}`:\n{}", host.log());
        host
    }
}

pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().expect("temp dir")
}

/// The key-value reads and writes of the `n`-th (from 0) request whose log line names
/// `request` (`"GET /playlist/…"`), from the host's `CHALKSTREAM_COUNT_KV` lines (written once
/// the request's work is done, so waited for).
pub fn kv_cost(host: &Host, request: &str, n: usize) -> (u64, u64) {
    let needle = format!("chalkstream-host: kv {request}: ");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = host.log();
        if let Some(line) = log.lines().filter(|l| l.starts_with(&needle)).nth(n) {
            let counts: Vec<u64> =
                line[needle.len()..].split(", ").map(|part| part.split(' ').next().unwrap().parse().unwrap()).collect();
            return (counts[0], counts[1]);
        }
        assert!(std::time::Instant::now() < deadline, "no kv line for {request} #{n}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
