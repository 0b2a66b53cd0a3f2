//! The sweep (issue 10): retention for streams nobody requests any more, without listing keys.
//!
//! # Keys
//!
//! | key | value | written |
//! | --- | --- | --- |
//! | `due/{minute}/{shard}` | JSON array of the stream ids of one shard (`shard` = the id's first hex digit, 16 shards) due in that minute | an upload whose due minute moved: read, append if absent, write, read back; the sweep, forward |
//! | `sweep/next` | JSON [`Next`] `{minute, shard}`: the oldest shard value not yet known empty (a hint) | by the sweep as it moves on; lowered by a registration below it |
//! | `stream/{id}` field `due_minute` | the minute the stream last registered in (a hint; other fields untouched) | after a registration read back |
//!
//! A stream's *due minute* is `ceil((stored + retention) / 1 min)`: once that minute has passed,
//! everything the upload stored has expired. Uploads ([`after_upload`]: v1 `PUT`, v2 commit and
//! part 0 of every segment, so a stream that only ever uploaded parts is reached too) register
//! their stream when that minute differs from the one in its record, and otherwise check with
//! one read that the recorded registration is still there (re-adding it if a racing writer
//! dropped it). Retention 0 streams are never registered.
//!
//! Every request, after its own work ([`after_request`]), reads `sweep/next`; when that minute
//! has passed it reads shard values from there (at most [`SHARD_READS`]), and in the first
//! non-empty one visits at most [`STREAMS_PER_STEP`] streams ([`Streams::sweep_stream`]):
//! retention's usual capped batch; a stream that still holds unexpired uploads is registered
//! again at its newest upload's due minute; one whose uploads have all expired is deleted
//! entirely (metas, slices, parts of committed and never-committed segments, `breaks`, `end`,
//! `tail`, `head`, `stream`). The visited ids leave the shard value (re-read just before), the
//! value is deleted once empty, and `sweep/next` moves on.
//!
//! # Why nothing acknowledged and unexpired is deleted
//!
//! The sweep deletes segments only through retention (expired ones, from the head, head
//! written first), and deletes a stream's records only when retention left no segment in its
//! run and no unexpired part in its open segment, re-checking the first seq after the run just
//! before the records go. Being due or listed never decides a deletion; the stored times do.
//!
//! # Why lost updates only delay, never leak
//!
//! With no compare-and-swap, two writers of one shard value can lose one append. Writers of
//! `due/{m}/*` are uploads (only before minute `m` has passed: `m` lies at least a retention
//! after the upload's clock) and sweeps of earlier minutes registering streams forward; the
//! sweep of `m` itself runs after `m` has passed. A registration lost after its read-back is
//! repaired by (1) the stream's next upload (it checks its registration with one read, or
//! registers a new minute), (2) the sweep of any earlier minute the stream is still listed in
//! (it finds the stream unexpired and registers it again, reading the later value back; with a
//! retention of a minute or more, that happens after every upload writing that later minute is
//! done), and (3) `POST /admin/sweep`, which runs the same work when there is no traffic.
//! A stream's first registration is also written to the opposite shard of the same minute, so a
//! stream that uploads once is listed by two values with different writers. What can still
//! escape: a stream whose every listing is dropped by a writer that read before the id was
//! (re)added and wrote after the stream's last upload checked it — at least two such races at
//! once; without compare-and-swap that window cannot be closed, only made this narrow.
//!
//! A lost update of `sweep/next` moves it back (shards read again) or leaves it behind; it is
//! only moved past a shard value the sweep itself found empty or emptied.

use crate::kv::{get_json, set_json, Kv, KvError};
use crate::store::layout::{due_key, stream_key, SWEEP_NEXT_KEY};
use crate::store::{Streams, Visit};
use chalkstream_manifest::id::StreamId;
use chalkstream_manifest::rules::{Config, Retention};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Shard values per minute (the id's first hex digit).
pub const SHARDS: u32 = 16;
/// Streams visited per request.
pub const STREAMS_PER_STEP: usize = 4;
/// Ids looked at per request (one read each when the stream is already gone).
pub const IDS_PER_STEP: usize = 32;
/// Shard values read per request (empty ones are skipped, then the first non-empty is worked).
pub const SHARD_READS: usize = 17;
/// Steps `POST /admin/sweep` runs.
pub const ADMIN_STEPS: usize = 64;
/// Attempts to make a registration stick against racing writers of the same value.
const ATTEMPTS: usize = 3;
/// The `stream/{id}` field holding the minute the stream last registered in.
const DUE_FIELD: &str = "due_minute";
const MINUTE_MS: i64 = 60_000;

/// `sweep/next`: the oldest shard value not yet known to be empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Next {
    pub minute: i64,
    pub shard: u32,
}

/// What one sweep step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Streams visited.
    pub visited: usize,
    /// Streams deleted entirely.
    pub deleted: usize,
    /// Shard values read.
    pub shards_read: usize,
    /// Whether work may remain for a passed minute (another step would do more).
    pub pending: bool,
}

/// The minute (minutes since the Unix epoch) by whose end an upload stored at `stored_ms` has
/// expired: `ceil((stored + retention) / 1 min)`.
pub fn due_minute(stored_ms: i64, retention_ms: u64) -> i64 {
    (stored_ms + retention_ms as i64 + MINUTE_MS - 1).div_euclid(MINUTE_MS)
}

fn shard_of(id: &StreamId) -> u32 {
    id.as_str().chars().next().and_then(|c| c.to_digit(16)).unwrap_or(0)
}

fn listed(kv: &(impl Kv + ?Sized), key: &str) -> Result<Vec<String>, KvError> {
    // A value that does not parse is treated as empty: it names nothing we could act on.
    Ok(kv.get(key)?.and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default())
}

fn write_list(kv: &(impl Kv + ?Sized), key: &str, ids: &[String]) -> Result<(), KvError> {
    if ids.is_empty() {
        kv.delete(key)
    } else {
        set_json(kv, key, &ids)
    }
}

/// Registers stream `id` as due in `minute` (or later, when that minute's sweep may already be
/// under way): append if absent, write, read back. Returns the minute it is listed in, or
/// `None` if racing writers kept dropping it (the next upload tries again).
pub fn register(kv: &(impl Kv + ?Sized), id: &StreamId, minute: i64, now_ms: i64) -> Result<Option<i64>, KvError> {
    let next = get_json::<Next>(kv, SWEEP_NEXT_KEY)?;
    let minute = match next {
        Some(next) if now_ms > next.minute * MINUTE_MS && minute <= next.minute => next.minute + 1,
        _ => minute,
    };
    if !register_in(kv, id, minute, shard_of(id))? {
        return Ok(None);
    }
    // The sweep must start no later than this minute.
    for _ in 0..ATTEMPTS {
        match get_json::<Next>(kv, SWEEP_NEXT_KEY)? {
            Some(next) if next.minute <= minute => break,
            _ => set_json(kv, SWEEP_NEXT_KEY, &Next { minute, shard: 0 })?,
        }
    }
    Ok(Some(minute))
}

/// Appends `id` to `due/{minute}/{shard}` unless listed, and reads it back; `false` if racing
/// writers kept dropping it.
fn register_in(kv: &(impl Kv + ?Sized), id: &StreamId, minute: i64, shard: u32) -> Result<bool, KvError> {
    let key = due_key(minute, shard);
    let mut confirmed = false;
    for _ in 0..ATTEMPTS {
        let mut ids = listed(kv, &key)?;
        if ids.iter().any(|listed| listed == id.as_str()) {
            confirmed = true;
            break;
        }
        ids.push(id.as_str().to_owned());
        set_json(kv, &key, &ids)?;
    }
    Ok(confirmed)
}

/// After an upload of stream `id` was stored (or answered as a retry): registers the stream at
/// its due minute when that differs from the recorded one, or checks the recorded registration.
pub fn after_upload(kv: &(impl Kv + ?Sized), config: &Config, id: &StreamId, now_ms: i64) -> Result<(), KvError> {
    let Retention::Millis(keep) = config.retention else {
        return Ok(());
    };
    let key = stream_key(id);
    let Some(mut record) = get_json::<Map<String, Value>>(kv, &key)? else {
        return Ok(());
    };
    let due = due_minute(now_ms, keep);
    if let Some(recorded) = record.get(DUE_FIELD).and_then(Value::as_i64) {
        if recorded >= due {
            let listed_there = listed(kv, &due_key(recorded, shard_of(id)))?;
            if !listed_there.iter().any(|listed| listed == id.as_str()) {
                register(kv, id, recorded, now_ms)?;
            }
            return Ok(());
        }
    }
    let first = !record.contains_key(DUE_FIELD);
    if let Some(minute) = register(kv, id, due, now_ms)? {
        // A stream's first registration is also written to the opposite shard of the same
        // minute (other writers, so an independent race): a stream that uploads once and never
        // again has no next upload and no earlier minute to repair a lost registration.
        if first {
            register_in(kv, id, minute, (shard_of(id) + SHARDS / 2) % SHARDS)?;
        }
        record.insert(DUE_FIELD.to_owned(), Value::from(minute));
        set_json(kv, &key, &record)?;
    }
    Ok(())
}

/// Runs after every request's own work: one bounded sweep step. Errors are logged, never
/// answered (the request is already answered).
pub fn after_request(kv: &(impl Kv + ?Sized), config: &Config, now_ms: i64) {
    if let Err(e) = step(kv, config, now_ms) {
        eprintln!("chalkstream: sweep: {e}");
    }
}

/// One bounded sweep step: reads `sweep/next`; when its minute has passed, reads at most
/// [`SHARD_READS`] shard values from there and visits at most [`STREAMS_PER_STEP`] streams of
/// the first non-empty one.
pub fn step(kv: &(impl Kv + ?Sized), config: &Config, now_ms: i64) -> Result<Report, KvError> {
    let mut report = Report::default();
    if config.retention == Retention::Forever {
        return Ok(report);
    }
    let Some(start) = get_json::<Next>(kv, SWEEP_NEXT_KEY)? else {
        return Ok(report);
    };
    let mut next = start;
    let streams = Streams::new(kv, config);
    while now_ms > next.minute * MINUTE_MS && report.shards_read < SHARD_READS {
        let key = due_key(next.minute, next.shard);
        let ids = listed(kv, &key)?;
        report.shards_read += 1;
        if ids.is_empty() {
            next = advance(next);
            continue;
        }
        let mut done: Vec<String> = Vec::new();
        let mut segments_deleted = 0u64;
        let mut visits = 0;
        for text in ids.iter().take(IDS_PER_STEP) {
            if segments_deleted >= 64 || visits >= STREAMS_PER_STEP {
                break;
            }
            let Ok(id) = StreamId::parse(text) else {
                done.push(text.clone());
                continue;
            };
            // The record is written before anything else of a stream and deleted last: without
            // it there is nothing to delete (a stream already swept, listed twice). One read.
            if kv.get(&stream_key(&id))?.is_none() {
                done.push(text.clone());
                continue;
            }
            visits += 1;
            report.visited += 1;
            let (visit, deleted) = streams.sweep_stream(&id, now_ms)?;
            segments_deleted += deleted;
            match visit {
                Visit::Gone => {
                    report.deleted += 1;
                    done.push(text.clone());
                }
                Visit::Holds { newest_ms } => {
                    let keep = match config.retention {
                        Retention::Millis(keep) => keep,
                        Retention::Forever => 0,
                    };
                    let minute = due_minute(newest_ms, keep).max(next.minute + 1);
                    if let Some(minute) = register(kv, &id, minute, now_ms)? {
                        record_due(kv, &id, minute)?;
                        done.push(text.clone());
                    }
                }
                Visit::More => {}
            }
        }
        // Re-read just before writing, so a concurrent sweeper's removals are kept.
        let remaining: Vec<String> = listed(kv, &key)?.into_iter().filter(|id| !done.contains(id)).collect();
        write_list(kv, &key, &remaining)?;
        if remaining.is_empty() {
            next = advance(next);
        }
        report.pending = true;
        break;
    }
    if next != start {
        set_json(kv, SWEEP_NEXT_KEY, &next)?;
    }
    if now_ms > next.minute * MINUTE_MS {
        report.pending = true;
    }
    Ok(report)
}

/// Runs up to [`ADMIN_STEPS`] steps, stopping when nothing is pending (`POST /admin/sweep`).
pub fn run(kv: &(impl Kv + ?Sized), config: &Config, now_ms: i64) -> Result<Report, KvError> {
    let mut total = Report::default();
    for _ in 0..ADMIN_STEPS {
        let report = step(kv, config, now_ms)?;
        total.visited += report.visited;
        total.deleted += report.deleted;
        total.shards_read += report.shards_read;
        total.pending = report.pending;
        if !report.pending {
            break;
        }
    }
    Ok(total)
}

fn advance(next: Next) -> Next {
    if next.shard + 1 >= SHARDS {
        Next { minute: next.minute + 1, shard: 0 }
    } else {
        Next { minute: next.minute, shard: next.shard + 1 }
    }
}

/// Notes in the stream's record where it is registered now (only if the record still exists).
fn record_due(kv: &(impl Kv + ?Sized), id: &StreamId, minute: i64) -> Result<(), KvError> {
    let key = stream_key(id);
    if let Some(mut record) = get_json::<Map<String, Value>>(kv, &key)? {
        if record.get(DUE_FIELD).and_then(Value::as_i64) != Some(minute) {
            record.insert(DUE_FIELD.to_owned(), Value::from(minute));
            set_json(kv, &key, &record)?;
        }
    }
    Ok(())
}

/// The sweep's view of the stream record: whether it is registered, and where.
pub fn recorded_due(kv: &(impl Kv + ?Sized), id: &StreamId) -> Result<Option<i64>, KvError> {
    Ok(get_json::<Map<String, Value>>(kv, &stream_key(id))?.and_then(|r| r.get(DUE_FIELD).and_then(Value::as_i64)))
}
