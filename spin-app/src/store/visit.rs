//! The sweep's visit of one stream ([`crate::sweep`] finds whom to visit): retention for a
//! stream nobody requests, and deleting a stream whose uploads have all expired.

use super::layout::{breaks_key, dseq_key, end_key, head_key, retire_key, stream_key, tail_key, RETENTION_BATCH};
use super::Streams;
use crate::kv::{Kv, KvError};
use chalkstream_manifest::id::StreamId;
use chalkstream_manifest::rules::Retention;

/// What the sweep found when it visited a stream ([`Streams::sweep_stream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// Nothing of the stream is left in the store.
    Gone,
    /// It still holds an unexpired upload, the newest stored at `newest_ms` (Unix ms).
    Holds { newest_ms: i64 },
    /// Expired segments remain past this visit's retention batch.
    More,
}

/// The sweep (`crate::sweep`): retention for a stream nobody requests, and deleting a stream
/// whose uploads have all expired.
impl<K: Kv + ?Sized> Streams<'_, K> {
    /// Applies retention (one capped batch) to stream `id`; then, when neither its run nor its
    /// open segment holds anything unexpired, deletes the open segment's parts and the stream's
    /// records, `stream/{id}` last. Returns what is left and how many segments retention deleted.
    ///
    /// A stream is deleted only when the seq after its run has no meta and no part 0 (checked
    /// again right before the records go), so an acknowledged, unexpired upload keeps its
    /// records. Not reached (stated in ARCHITECTURE.md): segments stored beyond a hole in the
    /// run, parts of a segment past the open one, and slices of an upload that died before its
    /// commit point.
    pub fn sweep_stream(&self, id: &StreamId, now_ms: i64) -> Result<(Visit, u64), KvError> {
        let retention = self.config.retention;
        if retention == Retention::Forever {
            return Ok((Visit::Holds { newest_ms: now_ms }, 0));
        }
        let before = self.head(id)?;
        self.apply_retention(id, now_ms, 0)?;
        let head = self.head(id)?;
        let deleted = head.saturating_sub(before);
        if let Some(last) = self.run_last(id, now_ms)? {
            let open = self.open_segment(id, last.seq + 1)?;
            let newest_ms = open.parts.iter().map(|p| p.stored_ms).fold(last.stored_ms, i64::max);
            return Ok((Visit::Holds { newest_ms }, deleted));
        }
        if deleted >= RETENTION_BATCH as u64 {
            return Ok((Visit::More, deleted));
        }
        let start = head.max(self.tail(id)?);
        if self.meta(id, start)?.is_some() || self.sealed_meta(id, head)?.is_some() {
            // Something retention's walk did not reach this time: look again in a minute.
            return Ok((Visit::Holds { newest_ms: now_ms }, deleted));
        }
        let open = self.open_segment(id, start)?;
        if let Some(newest_ms) = open.parts.iter().map(|p| p.stored_ms).filter(|&t| !retention.is_expired(t, now_ms)).max() {
            return Ok((Visit::Holds { newest_ms }, deleted));
        }
        for part in open.parts.iter().rev() {
            self.delete_part(id, part)?;
        }
        // A session resuming right now stores at `start`: keep the records that list it.
        if self.meta(id, start)?.is_some() || self.part_meta(id, start, 0)?.is_some() {
            return Ok((Visit::Holds { newest_ms: now_ms }, deleted));
        }
        // `dseq/{id}/{n}` is the discontinuity count retention keeps for the first seq after a
        // batch it deleted (issue 11): normally only `start`'s is left, but a retention pass that
        // raced another one may have written its count for a seq the other had deleted, at most
        // a batch below. Absent keys cost a delete.
        let mut keys: Vec<String> = (start.saturating_sub(RETENTION_BATCH as u64)..=start).map(|n| dseq_key(id, n)).collect();
        keys.extend([breaks_key(id), end_key(id), retire_key(id), tail_key(id), head_key(id), stream_key(id)]);
        for key in keys {
            self.kv.delete(&key)?;
        }
        Ok((Visit::Gone, deleted))
    }
}
