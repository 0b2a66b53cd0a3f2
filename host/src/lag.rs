//! A replicated store for tests: `CHALKSTREAM_KV_LAG_MS=N` makes the host's key-value store
//! behave like an eventually consistent one (Spin calls its store BASE; Fermyon Wasm Functions
//! replicates worldwide with read-your-writes only within a request). Each request sees its own
//! writes at once (an overlay of what it wrote) and every other request's writes — on this
//! host or another one sharing the store — only once they are `N` ms old: a write goes to the
//! backend (SQLite, Redis) `N` ms after it was made, in the order writes were made (the model
//! `spin-app`'s `LaggedKv` calls `Lag::Fixed`: a replica applying the store's one order late).
//!
//! Test only: writes still queued when the host dies are lost (an acknowledged upload too), so
//! `scripts/up` never sets it. The module is bookkeeping only (no I/O): the host routes the
//! component's `get`/`set`/`delete` through it and runs one task that writes due entries to the
//! backend ([`Lag::take_due`]).
//!
//! How the host uses it (`kv.rs`, `main.rs`):
//!
//! - `main.rs`: `lag::Lag::from_env()` at start-up, kept as `Option<Arc<Lag>>` in `kv::Stores`;
//!   when set, it spawns the applier (`Stores::apply_lagged`): loop { sleep until
//!   `lag.next_due()` (or 5 ms); for each `(label, key, value)` of `lag.take_due(Instant::now())`
//!   call the backend's `set` (`Some`) or `delete` (`None`) }, and on SIGINT/SIGTERM writes
//!   what is still queued (`Stores::flush_lagged`).
//! - the per-request `State`: one `lag::Overlay` (a new one per request, like the instance).
//! - `HostStore::get` (and `exists`): `if let Some(value) = state.overlay.read(&label, &key) { return value }`,
//!   else the backend's `get`.
//! - `HostStore::set` / `delete`: the limit checks (value size; the key count sees the backend
//!   plus the writes still queued, [`Lag::pending_in`]), then
//!   `lag.write(&mut state.overlay, label, key, Some(value) / None)` instead of the backend call.
//! - `get_keys`: the backend's, then the overlay's keys added and deleted ones removed.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The environment variable that turns the replicated mode on (milliseconds; `0` or unset: off).
pub const LAG_ENV: &str = "CHALKSTREAM_KV_LAG_MS";

/// One write waiting to reach the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub due: Instant,
    pub label: String,
    pub key: String,
    /// `None`: a delete.
    pub value: Option<Vec<u8>>,
}

/// The writes of every request, each applied to the backend `delay` after it was made.
#[derive(Debug)]
pub struct Lag {
    delay: Duration,
    queue: Mutex<VecDeque<Pending>>,
}

impl Lag {
    pub fn new(delay: Duration) -> Lag {
        Lag { delay, queue: Mutex::new(VecDeque::new()) }
    }

    /// `Some` when [`LAG_ENV`] names a lag above 0 ms; an error when it does not parse.
    pub fn from_env() -> Result<Option<Lag>, String> {
        match std::env::var(LAG_ENV) {
            Err(_) => Ok(None),
            Ok(text) => match text.trim().parse::<u64>() {
                Ok(0) => Ok(None),
                Ok(ms) => Ok(Some(Lag::new(Duration::from_millis(ms)))),
                Err(e) => Err(format!("{LAG_ENV}={text:?}: {e}")),
            },
        }
    }

    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// A request's write: shown to the request at once (its overlay), to everyone else once
    /// the backend has it, `delay` from now.
    pub fn write(&self, overlay: &mut Overlay, label: &str, key: &str, value: Option<Vec<u8>>) {
        self.write_at(overlay, label, key, value, Instant::now());
    }

    pub fn write_at(&self, overlay: &mut Overlay, label: &str, key: &str, value: Option<Vec<u8>>, now: Instant) {
        overlay.writes.insert((label.to_owned(), key.to_owned()), value.clone());
        let mut queue = self.lock();
        // Due times never go back (an `Instant` is monotonic and the delay fixed), so the queue
        // stays in write order; a racing writer's slightly earlier `now` is clamped to keep it.
        let due = queue.back().map_or(now + self.delay, |last| last.due.max(now + self.delay));
        queue.push_back(Pending { due, label: label.to_owned(), key: key.to_owned(), value });
    }

    /// Takes the writes due by `now`, oldest first: the applier writes them to the backend in
    /// this order.
    pub fn take_due(&self, now: Instant) -> Vec<Pending> {
        let mut queue = self.lock();
        let n = queue.iter().take_while(|p| p.due <= now).count();
        queue.drain(..n).collect()
    }

    /// When the next write is due, if any is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        self.lock().front().map(|p| p.due)
    }

    /// Writes not yet applied (for a clean shutdown: the host applies them all before exiting).
    pub fn pending(&self) -> usize {
        self.lock().len()
    }

    /// What the writes still queued for store `label` will leave, key by key: `true` for a key
    /// the last queued write sets, `false` for one it deletes. For the key count of
    /// `--kv-limits`, which must see the store as the backend plus these writes.
    pub fn pending_in(&self, label: &str) -> HashMap<String, bool> {
        let queue = self.lock();
        let mut last = HashMap::new();
        for p in queue.iter().filter(|p| p.label == label) {
            last.insert(p.key.clone(), p.value.is_some());
        }
        last
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What one request wrote, which it reads back at once (read-your-writes within a request).
#[derive(Debug, Default)]
pub struct Overlay {
    writes: HashMap<(String, String), Option<Vec<u8>>>,
}

impl Overlay {
    pub fn new() -> Overlay {
        Overlay::default()
    }

    /// `Some(value)` when this request wrote `key` (`Some(None)`: it deleted it); `None`: read
    /// the backend.
    pub fn read(&self, label: &str, key: &str) -> Option<Option<Vec<u8>>> {
        self.writes.get(&(label.to_owned(), key.to_owned())).cloned()
    }

    /// The keys this request wrote (`true`) or deleted (`false`) in store `label`, for
    /// `get_keys`.
    pub fn keys<'a>(&'a self, label: &'a str) -> impl Iterator<Item = (&'a str, bool)> + 'a {
        self.writes.iter().filter(move |((l, _), _)| l == label).map(|((_, k), v)| (k.as_str(), v.is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A backend and the applier, by hand.
    fn apply(lag: &Lag, backend: &mut BTreeMap<String, Vec<u8>>, now: Instant) {
        for p in lag.take_due(now) {
            match p.value {
                Some(v) => backend.insert(p.key, v),
                None => backend.remove(&p.key),
            };
        }
    }

    fn read(overlay: &Overlay, backend: &BTreeMap<String, Vec<u8>>, key: &str) -> Option<Vec<u8>> {
        overlay.read("default", key).unwrap_or_else(|| backend.get(key).cloned())
    }

    #[test]
    fn own_writes_at_once_others_after_the_lag_in_order() {
        let lag = Lag::new(Duration::from_millis(200));
        let mut backend = BTreeMap::new();
        let t0 = Instant::now();
        let (mut a, b) = (Overlay::new(), Overlay::new());
        lag.write_at(&mut a, "default", "k", Some(b"1".to_vec()), t0);
        lag.write_at(&mut a, "default", "j", Some(b"2".to_vec()), t0 + Duration::from_millis(10));
        assert_eq!(read(&a, &backend, "k").as_deref(), Some(&b"1"[..]));
        apply(&lag, &mut backend, t0 + Duration::from_millis(199));
        assert_eq!(read(&b, &backend, "k"), None, "not yet for another request");
        apply(&lag, &mut backend, t0 + Duration::from_millis(205));
        assert_eq!(read(&b, &backend, "k").as_deref(), Some(&b"1"[..]));
        assert_eq!(read(&b, &backend, "j"), None, "in order: the later write later");
        assert_eq!(lag.pending(), 1);
        // A delete lags the same way.
        let mut c = Overlay::new();
        lag.write_at(&mut c, "default", "k", None, t0 + Duration::from_millis(300));
        assert_eq!(read(&c, &backend, "k"), None);
        apply(&lag, &mut backend, t0 + Duration::from_millis(400));
        assert_eq!(read(&b, &backend, "k").as_deref(), Some(&b"1"[..]));
        apply(&lag, &mut backend, t0 + Duration::from_millis(500));
        assert_eq!(read(&b, &backend, "k"), None);
        assert_eq!(read(&b, &backend, "j").as_deref(), Some(&b"2"[..]));
        assert_eq!(lag.next_due(), None);
        assert_eq!(c.keys("default").collect::<Vec<_>>(), vec![("k", false)]);
    }

    #[test]
    fn pending_in_is_the_last_queued_write_of_each_key_of_one_store() {
        let lag = Lag::new(Duration::from_millis(200));
        let t0 = Instant::now();
        let mut a = Overlay::new();
        lag.write_at(&mut a, "default", "k", Some(b"1".to_vec()), t0);
        lag.write_at(&mut a, "default", "j", None, t0);
        lag.write_at(&mut a, "other", "m", Some(b"1".to_vec()), t0);
        lag.write_at(&mut a, "default", "k", None, t0 + Duration::from_millis(1));
        lag.write_at(&mut a, "default", "j", Some(b"2".to_vec()), t0 + Duration::from_millis(1));
        let pending = lag.pending_in("default");
        assert_eq!(pending, HashMap::from([("k".to_owned(), false), ("j".to_owned(), true)]));
        assert_eq!(lag.pending_in("other"), HashMap::from([("m".to_owned(), true)]));
        lag.take_due(t0 + Duration::from_secs(1));
        assert!(lag.pending_in("default").is_empty());
    }
}
