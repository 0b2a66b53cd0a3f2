//! Spin key-value: the `fermyon:spin/key-value@2.0.0` host implementation
//! over the stores the runtime config names, each on one of the two backends
//! `spin up` has built in, keeping data exactly as Spin keeps it so that a
//! store written by one runtime reads the same in the other:
//!
//! - SQLite (Spin's `key-value-spin`): table `spin_key_value(store, key,
//!   value)` with `PRIMARY KEY (store, key)`, `store` being the label;
//! - Redis (Spin's `key-value-redis`): the key as the Redis key, with no
//!   prefix and no trace of the label, the value as raw bytes; `get`, `set`,
//!   `delete`, `exists` and `get-keys` are `GET`, `SET`, `DEL`, `EXISTS` and
//!   `KEYS *`, and every `open` sends a `PING` whose failure is ignored.
//!   One multiplexed connection per store, opened at the first `open` and
//!   re-established by the client when it breaks (`ConnectionManager`).
//!
//! Optionally it enforces a platform's limits ([`Limits`], `--kv-limits`): `spin up` has
//! none, but Fermyon Cloud caps a store at 1,024 keys, 1 MB values and 255-byte keys, so an
//! app can be tested against that envelope here. A `set` past a limit writes nothing and fails
//! with the WIT's `other(..)` error naming the limit, as a platform's store refuses it.
//!
//! With `CHALKSTREAM_KV_LAG_MS=N` (tests only, [`crate::lag`]) every store behaves like an
//! eventually consistent one: a request reads its own writes at once (its [`crate::lag::Overlay`]) and
//! everyone else's once the backend has them, `N` ms after they were made, in the order they
//! were made ([`Stores::apply_lagged`] writes them). Unset, nothing of it runs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use rusqlite::{Connection, OptionalExtension};
use tokio::sync::OnceCell;
use wasmtime::component::Resource;

use crate::bindings::fermyon::spin::key_value::{Error as WitError, Host, HostStore};
use crate::lag::{Lag, Pending};
use crate::runtime_config::StoreConfig;
use crate::State;

/// A platform's limits on each key-value store; `None` is unlimited (as `spin up`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Most keys one store holds: a `set` of a new key beyond it is refused (an overwrite is
    /// not a new key; a delete frees one).
    pub keys: Option<u64>,
    /// Largest value in bytes.
    pub value_bytes: Option<usize>,
    /// Longest key in bytes.
    pub key_bytes: Option<usize>,
}

impl Limits {
    /// Fermyon Cloud's quotas ("Quotas, Limitations, and Technical FAQ"): 1,024 keys, values of
    /// "1 MB" (taken as 1,000,000 bytes, the smaller reading, below 1 MiB) and keys of 255
    /// bytes (Spin's own docs say 256; the smaller again).
    pub const FERMYON_CLOUD: Limits = Limits { keys: Some(1024), value_bytes: Some(1_000_000), key_bytes: Some(255) };

    /// Parses `--kv-limits` / `CHALKSTREAM_KV_LIMITS`: comma-separated items, later ones
    /// overriding earlier ones: `fermyon-cloud` (all three of Fermyon Cloud's), `none`,
    /// `keys=N`, `value=BYTES`, `key=BYTES` (`N` may be `none`). The empty text is `none`.
    pub fn parse(text: &str) -> anyhow::Result<Limits> {
        let mut limits = Limits::default();
        for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            let number = |value: &str| -> anyhow::Result<Option<u64>> {
                if value == "none" {
                    return Ok(None);
                }
                let n: u64 = value.parse().map_err(|_| anyhow::anyhow!("{item:?}: {value:?} is not a whole number"))?;
                anyhow::ensure!(n > 0, "{item:?}: a limit is at least 1 (or none)");
                Ok(Some(n))
            };
            match item.split_once('=') {
                None if item == "fermyon-cloud" => limits = Limits::FERMYON_CLOUD,
                None if item == "none" => limits = Limits::default(),
                Some(("keys", value)) => limits.keys = number(value)?,
                Some(("value", value)) => limits.value_bytes = number(value)?.map(|n| n as usize),
                Some(("key", value)) => limits.key_bytes = number(value)?.map(|n| n as usize),
                _ => anyhow::bail!(
                    "unknown key-value limit {item:?}: use fermyon-cloud, none, keys=N, value=BYTES or key=BYTES, comma-separated"
                ),
            }
        }
        Ok(limits)
    }

    /// For the startup log.
    pub fn summary(&self) -> String {
        let show = |n: Option<u64>| n.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
        format!(
            "at most {} keys per store, values of {} bytes, keys of {} bytes",
            show(self.keys),
            show(self.value_bytes.map(|n| n as u64)),
            show(self.key_bytes.map(|n| n as u64))
        )
    }

    /// The sizes of a write, checked before it reaches the backend.
    fn check_sizes(&self, key: &str, value: &[u8]) -> Result<(), WitError> {
        if let Some(max) = self.key_bytes.filter(|&max| key.len() > max) {
            return Err(WitError::Other(format!(
                "key of {} bytes is longer than this store's limit of {max} bytes",
                key.len()
            )));
        }
        if let Some(max) = self.value_bytes.filter(|&max| value.len() > max) {
            return Err(WitError::Other(format!(
                "value of {} bytes is larger than this store's limit of {max} bytes",
                value.len()
            )));
        }
        Ok(())
    }
}

/// What a `set` refused by the key count answers.
fn store_full(max: u64) -> WitError {
    WitError::Other(format!("the store is full: it holds {max} keys, this store's limit on keys"))
}

/// An open `store` resource: the label it was opened with and its backend.
pub struct KvStore {
    label: String,
    backend: Backend,
}

/// Every store the app may open, by label, and the limits each one enforces.
pub struct Stores {
    by_label: HashMap<String, Backend>,
    limits: Limits,
    /// The replicated mode (`CHALKSTREAM_KV_LAG_MS`): writes wait here until they are due.
    lag: Option<Arc<Lag>>,
    /// The replicated mode: held while due writes move from the queue to the backend (so the
    /// applier and a shutdown's flush never write out of order), and, under a key limit, while a
    /// `set` counts keys and queues its write, so a count never sees a write in both places or
    /// in neither.
    counting: tokio::sync::Mutex<()>,
}

impl Stores {
    /// Opens each store's backend: SQLite files are created (with their
    /// parent directories, as Spin does), Redis URLs are checked; Redis is
    /// only connected to at the first `open`, as in Spin.
    pub fn open(configs: &BTreeMap<String, StoreConfig>, limits: Limits) -> anyhow::Result<Stores> {
        use anyhow::Context;
        let mut by_label = HashMap::new();
        for (label, config) in configs {
            let backend = match config {
                StoreConfig::Sqlite(path) => Backend::Sqlite(
                    SqliteKv::open(path.as_deref())
                        .with_context(|| format!("key-value store {label:?}: cannot open {}", sqlite_name(path.as_deref())))?,
                ),
                StoreConfig::Redis(url) => {
                    Backend::Redis(RedisKv::new(url).with_context(|| format!("key-value store {label:?}"))?)
                }
            };
            by_label.insert(label.clone(), backend);
        }
        Ok(Stores { by_label, limits, lag: None, counting: tokio::sync::Mutex::new(()) })
    }

    /// Turns the replicated mode on (`Some`): reads see other requests' writes `lag.delay()`
    /// late. The caller runs [`Stores::apply_lagged`].
    pub fn with_lag(mut self, lag: Option<Lag>) -> Stores {
        self.lag = lag.map(Arc::new);
        self
    }

    pub fn is_lagged(&self) -> bool {
        self.lag.is_some()
    }

    /// The applier of the replicated mode: writes each queued write to its backend once it is
    /// due, in the order the writes were made. Runs for ever (returns at once without a lag).
    pub async fn apply_lagged(self: Arc<Self>) {
        let Some(lag) = self.lag.clone() else {
            return;
        };
        loop {
            match lag.next_due() {
                Some(due) if due > Instant::now() => tokio::time::sleep_until(due.into()).await,
                Some(_) => {}
                None => tokio::time::sleep(Duration::from_millis(5)).await,
            }
            self.apply_due(&lag, Instant::now()).await;
        }
    }

    /// Writes every queued write to the backend now, due or not: a clean shutdown loses none.
    pub async fn flush_lagged(&self) {
        if let Some(lag) = &self.lag {
            let pending = lag.pending();
            self.apply_due(lag, Instant::now() + lag.delay() + Duration::from_secs(3600)).await;
            if pending > 0 {
                eprintln!("chalkstream-host: applied {pending} lagged key-value writes before exiting");
            }
        }
    }

    async fn apply_due(&self, lag: &Lag, now: Instant) {
        let _counting = self.counting.lock().await;
        for pending in lag.take_due(now) {
            self.apply(pending).await;
        }
    }

    /// One queued write, to its backend. Its limits were checked when it was made (and it was
    /// acknowledged to the component then), so none is checked again: refusing it now would
    /// lose a write the component was told had succeeded. A backend error is retried for about
    /// ten seconds, then the write is given up, loudly.
    async fn apply(&self, Pending { label, key, value, .. }: Pending) {
        let Some(backend) = self.by_label.get(&label) else {
            return;
        };
        for attempt in 0.. {
            let written = match &value {
                Some(value) => backend.set(label.clone(), key.clone(), value.clone(), Limits::default()).await,
                None => backend.delete(label.clone(), key.clone()).await,
            };
            match written {
                Ok(()) => return,
                Err(e) if attempt < 500 => {
                    if attempt == 0 {
                        eprintln!("chalkstream-host: lagged write of {key:?} to store {label:?} failed ({e:?}); retrying");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    eprintln!("chalkstream-host: lagged write of {key:?} to store {label:?} lost: {e:?}");
                    return;
                }
            }
        }
    }

    /// Whether a `set` of `key` fits the key limit `max` in the replicated mode, counting the
    /// store as it will be once this host's queued writes are applied: the backend's keys, plus
    /// the keys queued writes add, minus those they delete. Called with `counting` held, and the
    /// write is queued before it is released, so racing requests on this host never overshoot.
    ///
    /// The approximation: another host on the same store queues its writes in its own memory,
    /// so until they reach the backend (one lag) this host does not count them. Two hosts can
    /// therefore together pass the limit by the new keys the other one queued within the last
    /// lag, and the applier then writes them anyway (a write is never refused after it was
    /// acknowledged). One host alone keeps the limit exactly.
    async fn lagged_has_room(&self, lag: &Lag, backend: &Backend, label: &str, key: &str, max: u64) -> Result<bool, WitError> {
        let pending = lag.pending_in(label);
        let queued = pending.get(key).copied();
        if queued == Some(true) {
            return Ok(true); // an overwrite of a key a queued write sets
        }
        let (count, in_backend) = backend.count_after(label.to_owned(), key.to_owned(), pending.into_iter().collect()).await?;
        // A key a queued write deletes is new again.
        let exists = in_backend && queued.is_none();
        Ok(exists || count < max)
    }

    pub fn is_defined(&self, label: &str) -> bool {
        self.by_label.contains_key(label)
    }

    /// One line per store for the startup log; never shows a password.
    pub fn summary(&self) -> Vec<String> {
        let mut lines: Vec<String> =
            self.by_label.iter().map(|(label, backend)| format!("key-value store {label:?}: {}", backend.summary())).collect();
        lines.sort();
        if self.limits != Limits::default() {
            lines.push(format!("key-value limits: {}", self.limits.summary()));
        }
        if let Some(lag) = &self.lag {
            lines.push(format!(
                "key-value lag: a request sees other requests' writes {} ms late ({}; tests only: writes \
                 still queued when the host is killed are lost)",
                lag.delay().as_millis(),
                crate::lag::LAG_ENV
            ));
        }
        lines
    }
}

fn sqlite_name(path: Option<&Path>) -> String {
    path.map_or_else(|| "an in-memory SQLite database".to_owned(), |p| p.display().to_string())
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqliteKv),
    Redis(RedisKv),
}

impl Backend {
    fn summary(&self) -> String {
        match self {
            Backend::Sqlite(db) => format!("SQLite {}", sqlite_name(db.path.as_deref())),
            Backend::Redis(redis) => format!("Redis at {}", redis.address),
        }
    }

    async fn after_open(&self) -> Result<(), WitError> {
        match self {
            Backend::Sqlite(_) => Ok(()),
            Backend::Redis(redis) => {
                let mut conn = redis.connection().await?;
                // Spin pings on every open and ignores the answer: a broken
                // connection is being re-established in the background.
                let _ = redis::cmd("PING").query_async::<()>(&mut conn).await;
                Ok(())
            }
        }
    }

    async fn get(&self, label: String, key: String) -> Result<Option<Vec<u8>>, WitError> {
        match self {
            Backend::Sqlite(db) => {
                db.run(move |c| {
                    c.prepare_cached("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                        .query_row((&label, &key), |row| row.get(0))
                        .optional()
                })
                .await
            }
            Backend::Redis(redis) => redis.query(redis::cmd("GET").arg(key)).await,
        }
    }

    /// Writes `value` under `key` within `limits`: past a size limit nothing is written; with a
    /// key limit, a new key is only added while the store holds fewer keys, checked and written
    /// atomically (one SQLite statement; one Redis script), so racing requests and other hosts
    /// on the same store never overshoot it.
    async fn set(&self, label: String, key: String, value: Vec<u8>, limits: Limits) -> Result<(), WitError> {
        limits.check_sizes(&key, &value)?;
        match (self, limits.keys) {
            (Backend::Sqlite(db), None) => {
                db.run(move |c| {
                    c.prepare_cached(
                        "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3) \
                         ON CONFLICT(store, key) DO UPDATE SET value = excluded.value",
                    )?
                    .execute((&label, &key, &value))
                    .map(drop)
                })
                .await
            }
            (Backend::Sqlite(db), Some(max)) => {
                // count(*) walks the label's part of the primary key's index: a few thousand
                // entries at most while a limit holds, and only when the key is new.
                let written = db
                    .run(move |c| {
                        c.prepare_cached(
                            "INSERT INTO spin_key_value (store, key, value) SELECT ?1, ?2, ?3 \
                             WHERE EXISTS (SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2) \
                             OR (SELECT count(*) FROM spin_key_value WHERE store = ?1) < ?4 \
                             ON CONFLICT(store, key) DO UPDATE SET value = excluded.value",
                        )?
                        .execute((&label, &key, &value, max as i64))
                    })
                    .await?;
                if written == 0 {
                    return Err(store_full(max));
                }
                Ok(())
            }
            (Backend::Redis(redis), None) => redis.query(redis::cmd("SET").arg(key).arg(value)).await,
            (Backend::Redis(redis), Some(max)) => {
                // Spin's Redis store has no labels: the store is the whole database, so DBSIZE
                // counts its keys.
                const SET_WITHIN: &str = "if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('DBSIZE') < tonumber(ARGV[2]) then \
                     redis.call('SET', KEYS[1], ARGV[1]) return 1 end return 0";
                let written: i64 = redis.query(redis::cmd("EVAL").arg(SET_WITHIN).arg(1).arg(key).arg(value).arg(max)).await?;
                if written == 0 {
                    return Err(store_full(max));
                }
                Ok(())
            }
        }
    }

    async fn delete(&self, label: String, key: String) -> Result<(), WitError> {
        match self {
            Backend::Sqlite(db) => {
                db.run(move |c| {
                    c.prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                        .execute((&label, &key))
                        .map(drop)
                })
                .await
            }
            Backend::Redis(redis) => redis.query(redis::cmd("DEL").arg(key)).await,
        }
    }

    async fn exists(&self, label: String, key: String) -> Result<bool, WitError> {
        match self {
            Backend::Sqlite(db) => {
                db.run(move |c| {
                    c.prepare_cached("SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                        .exists((&label, &key))
                })
                .await
            }
            Backend::Redis(redis) => redis.query(redis::cmd("EXISTS").arg(key)).await,
        }
    }

    async fn get_keys(&self, label: String) -> Result<Vec<String>, WitError> {
        match self {
            Backend::Sqlite(db) => {
                db.run(move |c| {
                    c.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1")?
                        .query_map([&label], |row| row.get(0))?
                        .collect()
                })
                .await
            }
            // Every key of the Redis database, whatever the label: Spin's
            // Redis store has no notion of labels.
            Backend::Redis(redis) => redis.query(redis::cmd("KEYS").arg("*")).await,
        }
    }

    /// For the replicated mode's key limit: how many keys store `label` will hold once
    /// `pending` (key, `true` set / `false` delete) is applied, and whether `key` is in the
    /// backend now. One SQLite call, or one Redis script: a consistent view.
    async fn count_after(&self, label: String, key: String, pending: Vec<(String, bool)>) -> Result<(u64, bool), WitError> {
        match self {
            Backend::Sqlite(db) => {
                db.run(move |c| {
                    let mut count: i64 =
                        c.prepare_cached("SELECT count(*) FROM spin_key_value WHERE store = ?1")?.query_row([&label], |row| row.get(0))?;
                    let mut exists = c.prepare_cached("SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2")?;
                    for (pending_key, set) in &pending {
                        match (exists.exists((&label, pending_key))?, set) {
                            (false, true) => count += 1,
                            (true, false) => count -= 1,
                            _ => {}
                        }
                    }
                    Ok((count.max(0) as u64, exists.exists((&label, &key))?))
                })
                .await
            }
            Backend::Redis(redis) => {
                // DBSIZE, as `set` counts the Redis store: the whole database.
                const COUNT_AFTER: &str = "local n = redis.call('DBSIZE') \
                     for i = 2, #KEYS do \
                       local e = redis.call('EXISTS', KEYS[i]) \
                       if ARGV[i - 1] == '1' and e == 0 then n = n + 1 elseif ARGV[i - 1] == '0' and e == 1 then n = n - 1 end \
                     end \
                     return {n, redis.call('EXISTS', KEYS[1])}";
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(COUNT_AFTER).arg(1 + pending.len()).arg(&key);
                for (pending_key, _) in &pending {
                    cmd.arg(pending_key);
                }
                for (_, set) in &pending {
                    cmd.arg(if *set { "1" } else { "0" });
                }
                let (count, exists): (i64, i64) = redis.query(&cmd).await?;
                Ok((count.max(0) as u64, exists == 1))
            }
        }
    }
}

/// A SQLite database (a file, or in memory). One connection behind a
/// mutex, as in Spin; unlike Spin, WAL and a busy timeout let other
/// processes (tests, `sqlite3`, a second host) use the file at the same time.
#[derive(Clone)]
struct SqliteKv {
    path: Option<PathBuf>,
    conn: Arc<Mutex<Connection>>,
}

impl SqliteKv {
    fn open(path: Option<&Path>) -> anyhow::Result<SqliteKv> {
        let conn = match path {
            Some(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)?;
                }
                let conn = Connection::open(path)?;
                conn.busy_timeout(Duration::from_secs(10))?;
                // Switching a new file to WAL takes an exclusive lock and answers "database is
                // locked" at once, without the busy handler, while another process does the same
                // (two hosts started side by side on one file): retry for the busy timeout.
                while_busy(|| conn.pragma_update(None, "journal_mode", "WAL"))?;
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                conn
            }
            None => Connection::open_in_memory()?,
        };
        while_busy(|| {
            conn.execute(
                "CREATE TABLE IF NOT EXISTS spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL, \
                 value BLOB NOT NULL, PRIMARY KEY (store, key))",
                [],
            )
            .map(drop)
        })?;
        Ok(SqliteKv { path: path.map(Path::to_owned), conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `f` on the connection where the request runs, as Spin's SQLite
    /// store does (`tokio::task::block_in_place`: the runtime moves its other
    /// tasks off this worker meanwhile, no hand-off to a blocking thread);
    /// SQLite errors become the WIT's `other` error, as in Spin.
    async fn run<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, WitError> {
        tokio::task::block_in_place(|| {
            let conn = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&conn)
        })
        .map_err(|e| WitError::Other(e.to_string()))
    }
}

/// Runs `f` again while SQLite answers "busy" or "locked", for up to 10 s (the busy timeout).
fn while_busy(mut f: impl FnMut() -> rusqlite::Result<()>) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// A Redis server, as Spin's `key-value-redis` uses it.
#[derive(Clone)]
struct RedisKv {
    client: redis::Client,
    /// `host:port` (or socket path) for logs: never the password.
    address: String,
    connection: Arc<OnceCell<ConnectionManager>>,
}

impl RedisKv {
    fn new(url: &str) -> anyhow::Result<RedisKv> {
        // Spin: `parse_redis_url(&address).context("Invalid Redis URL")`.
        let url = redis::parse_redis_url(url).ok_or_else(|| anyhow::anyhow!("invalid Redis URL"))?;
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("invalid Redis URL: {e}"))?;
        let address = client.get_connection_info().addr.to_string();
        Ok(RedisKv { client, address, connection: Arc::new(OnceCell::new()) })
    }

    async fn connection(&self) -> Result<ConnectionManager, WitError> {
        self.connection
            .get_or_try_init(|| self.client.get_connection_manager())
            .await
            .cloned()
            .map_err(|e| WitError::Other(e.to_string()))
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, WitError> {
        let mut conn = self.connection().await?;
        cmd.query_async(&mut conn).await.map_err(|e| WitError::Other(e.to_string()))
    }
}

impl Host for State {}

impl HostStore for State {
    async fn open(&mut self, label: String) -> wasmtime::Result<Result<Resource<KvStore>, WitError>> {
        // Spin answers `access-denied` for any label the component does not
        // list in `key_value_stores`; the labels it lists were checked to be
        // defined at startup.
        if !self.kv_stores.contains(&label) {
            return Ok(Err(WitError::AccessDenied));
        }
        let Some(backend) = self.kv.by_label.get(&label).cloned() else {
            return Ok(Err(WitError::NoSuchStore));
        };
        if let Err(e) = backend.after_open().await {
            return Ok(Err(e));
        }
        Ok(Ok(self.table.push(KvStore { label, backend })?))
    }

    async fn get(&mut self, store: Resource<KvStore>, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, WitError>> {
        self.kv_reads += 1;
        let store = self.table.get(&store)?;
        let (label, backend) = (store.label.clone(), store.backend.clone());
        if self.kv.lag.is_some() {
            if let Some(value) = self.overlay.read(&label, &key) {
                return Ok(Ok(value));
            }
        }
        Ok(backend.get(label, key).await)
    }

    async fn set(&mut self, store: Resource<KvStore>, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), WitError>> {
        self.kv_writes += 1;
        let store = self.table.get(&store)?;
        let (label, backend) = (store.label.clone(), store.backend.clone());
        let (stores, limits) = (self.kv.clone(), self.kv.limits);
        let Some(lag) = &stores.lag else {
            return Ok(backend.set(label, key, value, limits).await);
        };
        // The replicated mode: the same limits, checked now (the write is acknowledged now),
        // then the write queued; this request reads it back at once from its overlay.
        if let Err(e) = limits.check_sizes(&key, &value) {
            return Ok(Err(e));
        }
        match limits.keys {
            None => lag.write(&mut self.overlay, &label, &key, Some(value)),
            Some(max) => {
                let _counting = stores.counting.lock().await;
                match stores.lagged_has_room(lag, &backend, &label, &key, max).await {
                    Ok(true) => lag.write(&mut self.overlay, &label, &key, Some(value)),
                    Ok(false) => return Ok(Err(store_full(max))),
                    Err(e) => return Ok(Err(e)),
                }
            }
        }
        Ok(Ok(()))
    }

    async fn delete(&mut self, store: Resource<KvStore>, key: String) -> wasmtime::Result<Result<(), WitError>> {
        self.kv_writes += 1;
        let store = self.table.get(&store)?;
        let (label, backend) = (store.label.clone(), store.backend.clone());
        let stores = self.kv.clone();
        let Some(lag) = &stores.lag else {
            return Ok(backend.delete(label, key).await);
        };
        // Queued like a set (under `counting` with a key limit, so a count sees it in the queue
        // or in the backend, never in neither).
        let _counting = match stores.limits.keys {
            Some(_) => Some(stores.counting.lock().await),
            None => None,
        };
        lag.write(&mut self.overlay, &label, &key, None);
        Ok(Ok(()))
    }

    async fn exists(&mut self, store: Resource<KvStore>, key: String) -> wasmtime::Result<Result<bool, WitError>> {
        self.kv_reads += 1;
        let store = self.table.get(&store)?;
        let (label, backend) = (store.label.clone(), store.backend.clone());
        if self.kv.lag.is_some() {
            if let Some(value) = self.overlay.read(&label, &key) {
                return Ok(Ok(value.is_some()));
            }
        }
        Ok(backend.exists(label, key).await)
    }

    async fn get_keys(&mut self, store: Resource<KvStore>) -> wasmtime::Result<Result<Vec<String>, WitError>> {
        let store = self.table.get(&store)?;
        let (label, backend) = (store.label.clone(), store.backend.clone());
        let keys = backend.get_keys(label.clone()).await;
        if self.kv.lag.is_none() {
            return Ok(keys);
        }
        // The backend's keys as this request sees them: its own sets added, its deletes gone.
        Ok(keys.map(|keys| {
            let mut keys: std::collections::BTreeSet<String> = keys.into_iter().collect();
            for (key, set) in self.overlay.keys(&label) {
                if set {
                    keys.insert(key.to_owned());
                } else {
                    keys.remove(key);
                }
            }
            keys.into_iter().collect()
        }))
    }

    async fn drop(&mut self, store: Resource<KvStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(e: &WitError) -> bool {
        matches!(e, WitError::Other(text) if text.contains("full") && text.contains("keys"))
    }

    #[test]
    fn limits_parse_presets_and_overrides() {
        assert_eq!(Limits::parse("").unwrap(), Limits::default());
        assert_eq!(Limits::parse("none").unwrap(), Limits::default());
        let cloud = Limits::parse("fermyon-cloud").unwrap();
        assert_eq!(cloud, Limits { keys: Some(1024), value_bytes: Some(1_000_000), key_bytes: Some(255) });
        assert_eq!(Limits::parse("fermyon-cloud, keys=40").unwrap(), Limits { keys: Some(40), ..cloud });
        assert_eq!(Limits::parse("keys=5,value=none").unwrap(), Limits { keys: Some(5), ..Limits::default() });
        for bad in ["keys=0", "keys=-1", "value=1MB", "fermyon", "keys"] {
            assert!(Limits::parse(bad).is_err(), "{bad}");
        }
    }

    /// The SQLite store with a key limit: new keys up to it, then `other("… full …")` with
    /// nothing written; overwrites always; a delete makes room; sizes checked on every set.
    #[tokio::test(flavor = "multi_thread")]
    async fn sqlite_refuses_writes_past_the_limits_and_takes_them_once_keys_are_freed() {
        let db = Backend::Sqlite(SqliteKv::open(None).unwrap());
        let limits = Limits { keys: Some(2), value_bytes: Some(10), key_bytes: Some(8) };
        let set = |key: &str, value: &[u8]| db.set("default".into(), key.into(), value.to_vec(), limits);
        set("a", b"1").await.unwrap();
        set("b", b"1").await.unwrap();
        let refused = set("c", b"1").await.unwrap_err();
        assert!(full(&refused), "{refused:?}");
        assert_eq!(db.exists("default".into(), "c".into()).await.unwrap(), false);
        // Another label is another store with its own count.
        db.set("other".into(), "c".into(), b"1".to_vec(), limits).await.unwrap();
        set("a", b"2").await.unwrap();
        assert_eq!(db.get("default".into(), "a".into()).await.unwrap(), Some(b"2".to_vec()));
        db.delete("default".into(), "b".into()).await.unwrap();
        set("c", b"1").await.unwrap();

        let too_long = set("123456789", b"1").await.unwrap_err();
        assert!(matches!(&too_long, WitError::Other(t) if t.contains("key of 9 bytes")), "{too_long:?}");
        let too_big = set("a", &[0; 11]).await.unwrap_err();
        assert!(matches!(&too_big, WitError::Other(t) if t.contains("value of 11 bytes")), "{too_big:?}");
        assert_eq!(db.get("default".into(), "a".into()).await.unwrap(), Some(b"2".to_vec()));

        // Without limits nothing is refused.
        for n in 0..10 {
            db.set("default".into(), format!("k{n}"), vec![0; 100], Limits::default()).await.unwrap();
        }
    }

    /// The replicated mode under a key limit counts the backend plus the queued writes: a queued
    /// set takes a key, a queued delete frees one, and the applier writes what was queued.
    #[tokio::test(flavor = "multi_thread")]
    async fn lagged_key_count_sees_the_backend_plus_the_queued_writes() {
        let db = Backend::Sqlite(SqliteKv::open(None).unwrap());
        let limits = Limits { keys: Some(2), ..Limits::default() };
        let stores = Stores {
            by_label: HashMap::from([("default".to_owned(), db.clone()), ("other".to_owned(), db.clone())]),
            limits,
            lag: None,
            counting: tokio::sync::Mutex::new(()),
        }
        .with_lag(Some(Lag::new(Duration::from_secs(60))));
        let lag = stores.lag.clone().unwrap();
        let room = |key: &'static str| stores.lagged_has_room(&lag, &db, "default", key, 2);
        let mut overlay = crate::lag::Overlay::new();
        db.set("default".into(), "a".into(), b"1".to_vec(), limits).await.unwrap();
        assert!(room("b").await.unwrap(), "one key of two");
        lag.write(&mut overlay, "default", "b", Some(b"1".to_vec()));
        assert!(!room("c").await.unwrap(), "a in the backend and b queued: full");
        assert!(room("a").await.unwrap() && room("b").await.unwrap(), "overwrites");
        // Another store's queued writes count there only.
        lag.write(&mut overlay, "other", "x", Some(b"1".to_vec()));
        lag.write(&mut overlay, "default", "a", None);
        assert!(room("c").await.unwrap(), "a's delete is queued: room for one");
        assert!(room("a").await.unwrap(), "a is new again, and fits");
        lag.write(&mut overlay, "default", "c", Some(b"1".to_vec()));
        assert!(!room("a").await.unwrap(), "b and c queued: full");
        stores.flush_lagged().await;
        assert_eq!(lag.pending(), 0);
        let mut keys = db.get_keys("default".into()).await.unwrap();
        keys.sort();
        assert_eq!(keys, ["b", "c"]);
        assert_eq!(db.get_keys("other".into()).await.unwrap(), ["x"]);
        assert!(!room("d").await.unwrap(), "b and c in the backend: full");
    }
}
