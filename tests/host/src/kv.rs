//! Spin key-value on SQLite, in Spin's own table layout, and the
//! `fermyon:spin/key-value@2.0.0` host implementation over it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};
use wasmtime::component::Resource;

use crate::bindings::fermyon::spin::key_value::{Error as WitError, Host, HostStore};
use crate::State;

/// An open `store` resource: the label it was opened with.
pub struct KvStore {
    label: String,
}

/// The SQLite database behind every store (`<state-dir>/sqlite_key_value.db`).
/// One connection behind a mutex, as in Spin; WAL and a busy timeout let
/// other processes (tests, `sqlite3`) read it while the host writes.
#[derive(Clone)]
pub struct KvDb {
    conn: Arc<Mutex<Connection>>,
}

impl KvDb {
    pub fn open(path: &Path) -> rusqlite::Result<KvDb> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute(
            "CREATE TABLE IF NOT EXISTS spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL, \
             value BLOB NOT NULL, PRIMARY KEY (store, key))",
            [],
        )?;
        Ok(KvDb { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `f` on the connection in a blocking thread; SQLite errors become
    /// the WIT's `other` error, as in Spin.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, WitError> {
        let conn = self.conn.clone();
        let result = tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&conn)
        })
        .await;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(WitError::Other(e.to_string())),
            Err(e) => Err(WitError::Other(format!("key-value task failed: {e}"))),
        }
    }
}

impl Host for State {}

impl HostStore for State {
    async fn open(&mut self, label: String) -> wasmtime::Result<Result<Resource<KvStore>, WitError>> {
        // Spin answers `access-denied` for any label the component does not
        // list in `key_value_stores`, defined or not.
        if !self.kv_stores.contains(&label) {
            return Ok(Err(WitError::AccessDenied));
        }
        Ok(Ok(self.table.push(KvStore { label })?))
    }

    async fn get(&mut self, store: Resource<KvStore>, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, WitError>> {
        let label = self.table.get(&store)?.label.clone();
        Ok(self
            .kv
            .run(move |c| {
                c.prepare_cached("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                    .query_row((&label, &key), |row| row.get(0))
                    .optional()
            })
            .await)
    }

    async fn set(&mut self, store: Resource<KvStore>, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), WitError>> {
        let label = self.table.get(&store)?.label.clone();
        Ok(self
            .kv
            .run(move |c| {
                c.prepare_cached(
                    "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(store, key) DO UPDATE SET value = excluded.value",
                )?
                .execute((&label, &key, &value))
                .map(drop)
            })
            .await)
    }

    async fn delete(&mut self, store: Resource<KvStore>, key: String) -> wasmtime::Result<Result<(), WitError>> {
        let label = self.table.get(&store)?.label.clone();
        Ok(self
            .kv
            .run(move |c| {
                c.prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                    .execute((&label, &key))
                    .map(drop)
            })
            .await)
    }

    async fn exists(&mut self, store: Resource<KvStore>, key: String) -> wasmtime::Result<Result<bool, WitError>> {
        let label = self.table.get(&store)?.label.clone();
        Ok(self
            .kv
            .run(move |c| {
                c.prepare_cached("SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                    .exists((&label, &key))
            })
            .await)
    }

    async fn get_keys(&mut self, store: Resource<KvStore>) -> wasmtime::Result<Result<Vec<String>, WitError>> {
        let label = self.table.get(&store)?.label.clone();
        Ok(self
            .kv
            .run(move |c| {
                c.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1")?
                    .query_map([&label], |row| row.get(0))?
                    .collect()
            })
            .await)
    }

    async fn drop(&mut self, store: Resource<KvStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}
