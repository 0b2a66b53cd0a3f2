//! The key-value store behind a small trait: Spin's store in the component, a map in unit tests.
//!
//! Only `get`, `set` and `delete` exist here on purpose: nothing in Chalkstream lists keys
//! (`get_keys` is O(every key in the store)). Values are at most 1 MiB and keys at most 250
//! bytes, the limits every Spin key-value backend accepts; `set` refuses bigger ones so a bug
//! shows up in tests rather than on one cloud backend.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

/// Largest value any backend accepts.
pub const MAX_VALUE_LEN: usize = 1_048_576;
/// Longest key any backend accepts.
pub const MAX_KEY_LEN: usize = 250;

/// A storage failure. Its text goes to the server log, never to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvError(pub String);

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key-value store: {}", self.0)
    }
}

impl std::error::Error for KvError {}

/// A key-value store without transactions.
pub trait Kv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError>;
    fn delete(&self, key: &str) -> Result<(), KvError>;
}

/// Checks the portable limits before a write.
pub fn check_limits(key: &str, value: &[u8]) -> Result<(), KvError> {
    if key.len() > MAX_KEY_LEN {
        return Err(KvError(format!("key of {} bytes is longer than {MAX_KEY_LEN}", key.len())));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(KvError(format!("value of {} bytes is larger than {MAX_VALUE_LEN}", value.len())));
    }
    Ok(())
}

/// Reads a JSON record; a value that does not parse is a storage failure.
pub fn get_json<T: DeserializeOwned>(kv: &(impl Kv + ?Sized), key: &str) -> Result<Option<T>, KvError> {
    match kv.get(key)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| KvError(format!("record under {key} does not parse: {e}"))),
        None => Ok(None),
    }
}

/// Writes a JSON record.
pub fn set_json<T: Serialize>(kv: &(impl Kv + ?Sized), key: &str, value: &T) -> Result<(), KvError> {
    let bytes = serde_json::to_vec(value).map_err(|e| KvError(format!("cannot encode {key}: {e}")))?;
    kv.set(key, &bytes)
}

/// An in-memory store for tests; safe to share between threads.
#[derive(Debug, Default)]
pub struct MemoryKv {
    map: Mutex<HashMap<String, Vec<u8>>>,
}

impl MemoryKv {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every key, sorted (tests only: the server never lists keys).
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.lock().keys().cloned().collect();
        keys.sort();
        keys
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Kv for MemoryKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.lock().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        check_limits(key, value)?;
        self.lock().insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.lock().remove(key);
        Ok(())
    }
}
