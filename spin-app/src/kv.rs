//! The key-value store behind a small trait: Spin's store in the component, a map in unit tests.
//!
//! Only `get`, `set` and `delete` exist here on purpose: nothing in Chalkstream lists keys
//! (`get_keys` is O(every key in the store)). Values are at most 1,000,000 bytes and keys at most 250
//! bytes, the limits every Spin key-value backend accepts; `set` refuses bigger ones so a bug
//! shows up in tests rather than on one cloud backend.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

/// Largest value any backend accepts.
pub const MAX_VALUE_LEN: usize = 1_000_000;
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

/// How late another request's write shows in a [`LaggedKv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lag {
    /// Every write shows to every other request exactly `ms` after it was made: each request
    /// reads a replica that applies the store's one order of writes `ms` late (a consistent
    /// prefix with bounded staleness: an asynchronous replica per region, a Redis or SQLite
    /// read replica). Writes of different keys show in the order they were made.
    Fixed(u64),
    /// Each write shows to each other request after a lag of its own in `[0, max_ms]`, drawn
    /// from `seed`, the write and the reader: writes of different keys may show out of order
    /// (a later write seen before an earlier one), as on a store that replicates each key on
    /// its own. Per key the newest visible write wins, so one key's value never goes back.
    Random { max_ms: u64, seed: u64 },
}

impl Lag {
    /// The longest lag: after it every write shows to everyone.
    pub fn max_ms(&self) -> u64 {
        match *self {
            Lag::Fixed(ms) => ms,
            Lag::Random { max_ms, .. } => max_ms,
        }
    }

    fn of(&self, write: u64, reader: u64) -> u64 {
        match *self {
            Lag::Fixed(ms) => ms,
            Lag::Random { max_ms, seed } => {
                // splitmix64 of (seed, write, reader)
                let mut z = seed
                    ^ write.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    ^ reader.wrapping_mul(0xD1B5_4A32_D192_ED03);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                z % (max_ms + 1)
            }
        }
    }
}

/// One write in a [`LaggedKv`]'s log: its place in the store's order, when it was made, by which
/// request, and the value (`None`: a delete).
#[derive(Debug, Clone)]
struct LaggedWrite {
    order: u64,
    at_ms: i64,
    session: u64,
    value: Option<Vec<u8>>,
}

/// An eventually consistent store for tests (Spin calls its key-value store BASE; Fermyon Wasm
/// Functions replicates worldwide with read-your-writes only within a request): each request
/// reads through a [`LaggedSession`] of its own, which sees its own writes at once and other
/// requests' writes (deletes too) only once they are as old as the [`Lag`] says, on `clock`
/// (milliseconds; the tests' fake clock). Per key the newest visible write wins (last writer
/// wins, as replicas converge). [`LaggedKv::primary`] reads the newest writes, as the store will
/// once every write has shown: the truth a test checks against.
pub struct LaggedKv {
    lag: Lag,
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
    log: Mutex<(u64, HashMap<String, Vec<LaggedWrite>>)>,
    sessions: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for LaggedKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaggedKv").field("lag", &self.lag).finish_non_exhaustive()
    }
}

impl LaggedKv {
    pub fn new(lag: Lag, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        LaggedKv {
            lag,
            clock: Box::new(clock),
            log: Mutex::new((0, HashMap::new())),
            sessions: std::sync::atomic::AtomicU64::new(1),
        }
    }

    pub fn lag(&self) -> Lag {
        self.lag
    }

    /// A new request's view of the store.
    pub fn session(&self) -> LaggedSession<'_> {
        let id = self.sessions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        LaggedSession { store: self, id }
    }

    /// The store once every write has shown (reads the newest write of each key; its writes
    /// are a request of their own).
    pub fn primary(&self) -> LaggedPrimary<'_> {
        LaggedPrimary(self.session())
    }

    /// Every key whose newest write is not a delete, sorted (tests only).
    pub fn keys(&self) -> Vec<String> {
        let log = self.lock();
        let mut keys: Vec<String> = log
            .1
            .iter()
            .filter(|(_, writes)| writes.last().is_some_and(|w| w.value.is_some()))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, HashMap<String, Vec<LaggedWrite>>)> {
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read(&self, session: u64, key: &str, newest: bool) -> Option<Vec<u8>> {
        let now = (self.clock)();
        let log = self.lock();
        let writes = log.1.get(key)?;
        writes
            .iter()
            .rev()
            .find(|w| newest || w.session == session || w.at_ms.saturating_add(self.lag.of(w.order, session) as i64) <= now)
            .and_then(|w| w.value.clone())
    }

    fn write(&self, session: u64, key: &str, value: Option<Vec<u8>>) {
        let now = (self.clock)();
        let max = self.lag.max_ms() as i64;
        let mut log = self.lock();
        log.0 += 1;
        let order = log.0;
        let writes = log.1.entry(key.to_owned()).or_default();
        writes.push(LaggedWrite { order, at_ms: now, session, value });
        // Writes older than the newest one everyone sees can never be read again.
        if let Some(seen) = writes.iter().rposition(|w| w.at_ms.saturating_add(max) <= now) {
            writes.drain(..seen);
        }
        if writes.len() == 1 && writes[0].value.is_none() && writes[0].at_ms.saturating_add(max) <= now {
            log.1.remove(key);
        }
    }
}

/// One request's view of a [`LaggedKv`]: its own writes at once, others' after their lag.
#[derive(Debug)]
pub struct LaggedSession<'a> {
    store: &'a LaggedKv,
    id: u64,
}

impl Kv for LaggedSession<'_> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.store.read(self.id, key, false))
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        check_limits(key, value)?;
        self.store.write(self.id, key, Some(value.to_vec()));
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.store.write(self.id, key, None);
        Ok(())
    }
}

/// A [`LaggedKv`] read as it will be once every write has shown (see [`LaggedKv::primary`]).
#[derive(Debug)]
pub struct LaggedPrimary<'a>(LaggedSession<'a>);

impl Kv for LaggedPrimary<'_> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.0.store.read(self.0.id, key, true))
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.0.set(key, value)
    }

    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.0.delete(key)
    }
}
