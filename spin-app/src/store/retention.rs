//! Retention: expired segments (and those below every window) leave from the head, their
//! discontinuity counts kept, the head written before anything is deleted.

use super::layout::{dseq_key, gap_key, head_key, meta_key, metas_key, part_meta_key, part_slice_key, segment_slice_key, METAS_LEN, RETENTION_BATCH};
use super::run::Source;
use super::Streams;
use crate::kv::{get_json, set_json, Kv, KvError};
use chalkstream_manifest::id::StreamId;
use chalkstream_manifest::part::{PartMeta, MAX_PARTS};
use chalkstream_manifest::rules::Retention;
use chalkstream_manifest::segment::{HeadMark, SegmentMeta};
use chalkstream_manifest::window::{self, Extent};

impl<K: Kv + ?Sized> Streams<'_, K> {
    /// Deletes expired segments from the head: records their discontinuities, writes the new
    /// head, then deletes parts and metas.
    ///
    /// Every seq below `floor` goes too, expired or not, and so does every seq more than
    /// [`window::MAX_WINDOW_SEGMENTS`] below the tail hint: it is below the start of every window
    /// from now on (the count cap, or a window that starts after its newest expired segment), so
    /// deleting it hides nothing a playlist could list, and a stream stores at most about that
    /// many segments plus what one batch per request has not reached yet.
    pub(super) fn apply_retention(&self, id: &StreamId, now_ms: i64, floor: u64) -> Result<(), KvError> {
        if self.config.retention == Retention::Forever {
            return Ok(());
        }
        let head = self.head(id)?;
        let tail = self.tail(id)?;
        self.retain_from(id, head, tail, now_ms, floor)
    }

    /// [`Streams::apply_retention`] with the hints already read.
    pub(super) fn retain_from(&self, id: &StreamId, head: u64, tail: u64, now_ms: i64, floor: u64) -> Result<(), KvError> {
        let mut source = Source::new(self, id);
        let walk = window::walk(
            &mut source,
            head,
            tail,
            self.config.retention,
            now_ms,
            Extent::BelowWindow { max: RETENTION_BATCH, floor: floor.max(tail.saturating_sub(window::MAX_WINDOW_SEGMENTS as u64)) },
        )?;
        self.delete_expired(id, head, &walk.expired, walk.new_head())
    }

    /// Deletes `expired` (a walk's, oldest first, counts filled in along it) and moves the head
    /// to `new_head`. First keeps the count of each seq whose predecessor goes and who does not
    /// (`dseq/{id}/{seq}`); stops before a segment whose count it cannot tell.
    pub(super) fn delete_expired(&self, id: &StreamId, head: u64, expired: &[SegmentMeta], new_head: u64) -> Result<(), KvError> {
        if expired.is_empty() || new_head <= head {
            return Ok(());
        }
        let mut after = Vec::with_capacity(expired.len());
        let mut new_head = new_head;
        for (i, meta) in expired.iter().enumerate() {
            let follows = i > 0 && expired[i - 1].seq + 1 == meta.seq;
            let own = match meta.disc_seq {
                Some(count) => Some(count),
                None if follows => after.last().copied(),
                None => get_json(self.kv, &dseq_key(id, meta.seq))?,
            };
            let Some(own) = own else {
                new_head = meta.seq;
                break;
            };
            after.push(own + u64::from(meta.discontinuity));
        }
        let expired = &expired[..after.len()];
        if expired.is_empty() || new_head <= head {
            return Ok(());
        }
        match self.mark_deleted(id, expired, &after, new_head) {
            // A full store (a platform's key cap) refuses the marks, new keys both the first
            // time: the bodies of what expired go first, which frees keys and hides nothing (no
            // playlist lists an expired segment, and its meta, which walks read, stays until
            // after the marks).
            Err(e) if e.is_refused() => {
                for meta in expired {
                    self.delete_parts(id, meta)?;
                }
                self.mark_deleted(id, expired, &after, new_head)?;
            }
            other => other?,
        }
        for (i, meta) in expired.iter().enumerate() {
            self.delete_parts(id, meta)?;
            self.kv.delete(&meta_key(id, meta.seq))?;
            if i == 0 || expired[i - 1].seq + 1 != meta.seq {
                self.kv.delete(&dseq_key(id, meta.seq))?;
            }
        }
        // Metas blocks (sliding windows) whose every seq went.
        let mut blocks: Vec<u64> = expired.iter().map(|m| m.seq / METAS_LEN).filter(|b| (b + 1) * METAS_LEN <= new_head).collect();
        blocks.dedup();
        for block in blocks {
            self.kv.delete(&metas_key(id, block))?;
        }
        // A slower request may have written an older head over ours while we deleted: the
        // hints would then point below segments that are gone, where a walk cannot tell a
        // deletion from the end of the run. Put ours back (this narrows the lost update to a
        // write landing after this read; readers still re-read the head at a gap).
        if self.head(id)? < new_head {
            set_json(self.kv, &head_key(id), &HeadMark { first_seq: new_head })?;
        }
        Ok(())
    }

    /// What a reader needs before `expired` goes: the discontinuity count of each seq after a
    /// deleted run (`after[i]` follows `expired[i]`), then the head.
    fn mark_deleted(&self, id: &StreamId, expired: &[SegmentMeta], after: &[u64], new_head: u64) -> Result<(), KvError> {
        for (i, meta) in expired.iter().enumerate() {
            if expired.get(i + 1).is_none_or(|next| next.seq != meta.seq + 1) {
                set_json(self.kv, &dseq_key(id, meta.seq + 1), &after[i])?;
            }
        }
        // Re-read so a slow request does not move the head back (a lost update is still
        // possible; readers tolerate a head that lags).
        if self.head(id)? < new_head {
            set_json(self.kv, &head_key(id), &HeadMark { first_seq: new_head })?;
        }
        Ok(())
    }

    pub(super) fn delete_parts(&self, id: &StreamId, meta: &SegmentMeta) -> Result<(), KvError> {
        if meta.gap {
            // No bytes of its own; the record the gap wrote first, and the parts an open segment
            // had when it was given up (v2), which no commit names.
            self.kv.delete(&gap_key(id, meta.seq))?;
            for n in 0..MAX_PARTS {
                match self.part_meta(id, meta.seq, n)? {
                    Some(orphan) => self.delete_part(id, &orphan)?,
                    None => break,
                }
            }
            return Ok(());
        }
        if !meta.is_part_built() {
            for part in 0..meta.parts {
                self.kv.delete(&segment_slice_key(id, meta.seq, meta.sha1_prefix(), part))?;
            }
            return Ok(());
        }
        self.delete_folded(id, meta)?;
        for (n, part) in meta.ll_parts.iter().enumerate() {
            let n = n as u32;
            for slice in 0..part.slices {
                self.kv.delete(&part_slice_key(id, meta.seq, n, &part.sha1, slice))?;
            }
            self.kv.delete(&part_meta_key(id, meta.seq, n))?;
        }
        // Parts stored past the ones the commit named (only a racing upload can leave one).
        for n in meta.ll_parts.len() as u32..MAX_PARTS {
            match self.part_meta(id, meta.seq, n)? {
                Some(orphan) => self.delete_part(id, &orphan)?,
                None => break,
            }
        }
        Ok(())
    }

    /// Deletes one part: its slices, then its meta.
    pub(super) fn delete_part(&self, id: &StreamId, part: &PartMeta) -> Result<(), KvError> {
        for slice in 0..part.slices {
            self.kv.delete(&part_slice_key(id, part.seq, part.part, part.sha1_prefix(), slice))?;
        }
        self.kv.delete(&part_meta_key(id, part.seq, part.part))
    }
}
