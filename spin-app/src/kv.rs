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
pub struct KvError {
    pub kind: KvErrorKind,
    pub message: String,
}

/// What kind of failure a [`KvError`] is: the HTTP edge answers each kind in one place
/// (`From<KvError> for ApiError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvErrorKind {
    /// The store failed, or a record does not parse, or a key or value broke the portable
    /// limits (a bug): `500`.
    Failed,
    /// The store refused a write: it is full (a platform's key count, Fermyon Cloud's 1,024) or
    /// would not take it now. Nothing is acknowledged, reads still work, and the same write may
    /// succeed once retention frees keys: `503` with `Retry-After`.
    Refused,
}

impl KvError {
    /// A failure (`500`).
    pub fn new(message: impl Into<String>) -> Self {
        KvError { kind: KvErrorKind::Failed, message: message.into() }
    }

    /// A write the store refused (`503`).
    pub fn refused(message: impl Into<String>) -> Self {
        KvError { kind: KvErrorKind::Refused, message: message.into() }
    }

    pub fn is_refused(&self) -> bool {
        self.kind == KvErrorKind::Refused
    }
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            KvErrorKind::Failed => write!(f, "key-value store: {}", self.message),
            KvErrorKind::Refused => write!(f, "key-value store refused a write: {}", self.message),
        }
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
        return Err(KvError::new(format!("key of {} bytes is longer than {MAX_KEY_LEN}", key.len())));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(KvError::new(format!("value of {} bytes is larger than {MAX_VALUE_LEN}", value.len())));
    }
    Ok(())
}

/// Reads a JSON record; a value that does not parse is a storage failure.
pub fn get_json<T: DeserializeOwned>(kv: &(impl Kv + ?Sized), key: &str) -> Result<Option<T>, KvError> {
    match kv.get(key)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| KvError::new(format!("record under {key} does not parse: {e}"))),
        None => Ok(None),
    }
}

/// Writes a JSON record.
pub fn set_json<T: Serialize>(kv: &(impl Kv + ?Sized), key: &str, value: &T) -> Result<(), KvError> {
    let bytes = serde_json::to_vec(value).map_err(|e| KvError::new(format!("cannot encode {key}: {e}")))?;
    kv.set(key, &bytes)
}

/// An in-memory store for tests; safe to share between threads.
#[derive(Debug, Default)]
pub struct MemoryKv {
    map: Mutex<HashMap<String, Vec<u8>>>,
    /// The most keys it holds, as a platform caps its store (Fermyon Cloud: 1,024): a write of
    /// a new key past it is refused; overwrites and deletes always work.
    max_keys: Option<usize>,
}

impl MemoryKv {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that holds at most `max_keys` keys, as a platform's does.
    pub fn with_max_keys(max_keys: usize) -> Self {
        MemoryKv { max_keys: Some(max_keys), ..Self::default() }
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
        let mut map = self.lock();
        if let Some(max) = self.max_keys.filter(|&max| map.len() >= max && !map.contains_key(key)) {
            return Err(KvError::refused(format!("the store is full ({max} keys, its limit): no room for {key}")));
        }
        map.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.lock().remove(key);
        Ok(())
    }
}
