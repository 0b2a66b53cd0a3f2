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

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use rusqlite::{Connection, OptionalExtension};
use tokio::sync::OnceCell;
use wasmtime::component::Resource;

use crate::bindings::fermyon::spin::key_value::{Error as WitError, Host, HostStore};
use crate::runtime_config::StoreConfig;
use crate::State;

/// An open `store` resource: the label it was opened with and its backend.
pub struct KvStore {
    label: String,
    backend: Backend,
}

/// Every store the app may open, by label.
pub struct Stores {
    by_label: HashMap<String, Backend>,
}

impl Stores {
    /// Opens each store's backend: SQLite files are created (with their
    /// parent directories, as Spin does), Redis URLs are checked; Redis is
    /// only connected to at the first `open`, as in Spin.
    pub fn open(configs: &BTreeMap<String, StoreConfig>) -> anyhow::Result<Stores> {
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
        Ok(Stores { by_label })
    }

    pub fn is_defined(&self, label: &str) -> bool {
        self.by_label.contains_key(label)
    }

    /// One line per store for the startup log; never shows a password.
    pub fn summary(&self) -> Vec<String> {
        let mut lines: Vec<String> =
            self.by_label.iter().map(|(label, backend)| format!("key-value store {label:?}: {}", backend.summary())).collect();
        lines.sort();
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

    async fn set(&self, label: String, key: String, value: Vec<u8>) -> Result<(), WitError> {
        match self {
            Backend::Sqlite(db) => {
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
            Backend::Redis(redis) => redis.query(redis::cmd("SET").arg(key).arg(value)).await,
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
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                conn
            }
            None => Connection::open_in_memory()?,
        };
        conn.execute(
            "CREATE TABLE IF NOT EXISTS spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL, \
             value BLOB NOT NULL, PRIMARY KEY (store, key))",
            [],
        )?;
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
        Ok(backend.get(label, key).await)
    }

    async fn set(&mut self, store: Resource<KvStore>, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), WitError>> {
        self.kv_writes += 1;
        let store = self.table.get(&store)?;
        let (label, backend) = (store.label.clone(), store.backend.clone());
        Ok(backend.set(label, key, value).await)
    }

    async fn delete(&mut self, store: Resource<KvStore>, key: String) -> wasmtime::Result<Result<(), WitError>> {
        self.kv_writes += 1;
        let store = self.table.get(&store)?;
        let (label, backend) = (store.label.clone(), store.backend.clone());
        Ok(backend.delete(label, key).await)
    }

    async fn exists(&mut self, store: Resource<KvStore>, key: String) -> wasmtime::Result<Result<bool, WitError>> {
        self.kv_reads += 1;
        let store = self.table.get(&store)?;
        let (label, backend) = (store.label.clone(), store.backend.clone());
        Ok(backend.exists(label, key).await)
    }

    async fn get_keys(&mut self, store: Resource<KvStore>) -> wasmtime::Result<Result<Vec<String>, WitError>> {
        let store = self.table.get(&store)?;
        let (label, backend) = (store.label.clone(), store.backend.clone());
        Ok(backend.get_keys(label).await)
    }

    async fn drop(&mut self, store: Resource<KvStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}
