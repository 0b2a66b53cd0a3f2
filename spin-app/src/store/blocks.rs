//! The immutable pages and lines blocks that keep an `EVENT` stream's (retention 0) playlist
//! cheap to read.
//!
//! Pages keep playlist reads bounded for long `EVENT` streams (retention 0), whose playlist
//! lists every segment: 3600 segments cost 57 page reads instead of 3600 meta reads. A page is
//! immutable (metas never change and nothing is deleted without retention), so whoever writes
//! it writes the same bytes; a missing page only means reading its metas one by one.
//!
//! A lines block is what the renderer writes for its segments' metas
//! (`chalkstream_manifest::playlist::segment_lines`): it depends on nothing but those committed
//! metas and the stream id, so it is as immutable as a page, and racing writers write the same
//! bytes. A playlist GET of an `EVENT` stream copies blocks, largest first, instead of parsing
//! and formatting metas ([`Streams::playlist`]): 3600 segments cost 7 blocks of 512 and 2 of 8,
//! about 20 reads in all instead of 81, because each read through the host costs far more than
//! its bytes. The head lines, the state and the end are decided per request as before. The
//! request that moves the tail hint writes the blocks it completed (the one whose lost update
//! left the hint behind covers the same seqs again, so every completed block has a writer); a
//! block that is missing or does not check out (`check_lines`) only means taking the smaller
//! blocks or the metas under it.

use super::ingest::SHOWN_WITHIN_MS;
use super::layout::{lines_key, meta_key, metas_key, page_key, MetasBlock, LINES_FAN, LINES_LENS, METAS_LEN, PAGE_LEN};
use super::run::Source;
use super::Streams;
use crate::kv::{set_json, Kv, KvError};
use chalkstream_manifest::id::StreamId;
use chalkstream_manifest::playlist;
use chalkstream_manifest::segment::SegmentMeta;
use chalkstream_manifest::window::MetaSource;

/// The metas block whose keys a commit deletes lies this many seqs or more below the newest
/// segment: written at least three segments after its last one (once that one has settled),
/// its keys go three segments later (once the block has shown), so a meta key lives about 13
/// segments (26 s at 2 s) instead of the whole retention.
const UNKEY_BEHIND: u64 = 13;

impl<'a, K: Kv + ?Sized> Streams<'a, K> {
    /// A sliding window's metas blocks (`metas/{id}/{n}`), run by every write path's epilogue with
    /// the tail hint it left: one stream keeps about one key a segment, its body, instead of two.
    ///
    /// - The block that ends just below `tail` is written once all eight metas are stored and
    ///   each was stored [`SHOWN_WITHIN_MS`] ago: a meta is immutable once it has shown
    ///   (a gap's handshake replaces one only before it is acknowledged), so racing writers
    ///   write the same bytes. Checked by each commit until written (one read once it is).
    /// - The meta keys of the block [`UNKEY_BEHIND`] seqs back are deleted once it was written
    ///   [`SHOWN_WITHIN_MS`] ago: every reader that misses a key finds the block
    ///   ([`Streams::sealed_meta`], the walks' `Source`). By then the tail hint (written by
    ///   every commit, and read by every probe) is past the block for every reader, so no probe
    ///   starts among keys that are gone. A block retention passes is deleted with its metas.
    pub(super) fn block_metas(&self, id: &StreamId, tail: u64, now_ms: i64) -> Result<(), KvError> {
        if let Some(number) = (tail / METAS_LEN).checked_sub(1) {
            self.write_metas_block(id, number, now_ms)?;
        }
        let Some(behind) = tail.checked_sub(UNKEY_BEHIND + 1) else {
            return Ok(());
        };
        let number = behind / METAS_LEN;
        let last = number * METAS_LEN + METAS_LEN - 1;
        let Some(block) = self.metas_block(id, number)? else {
            return Ok(());
        };
        if now_ms - block.written_ms < SHOWN_WITHIN_MS || self.meta(id, last)?.is_none() {
            return Ok(());
        }
        for seq in number * METAS_LEN..=last {
            self.kv.delete(&meta_key(id, seq))?;
        }
        Ok(())
    }

    fn write_metas_block(&self, id: &StreamId, number: u64, now_ms: i64) -> Result<(), KvError> {
        let key = metas_key(id, number);
        if self.kv.get(&key)?.is_some() {
            return Ok(());
        }
        let first = number * METAS_LEN;
        let last = first + METAS_LEN - 1;
        match self.meta(id, last)? {
            Some(newest) if now_ms - newest.stored_ms >= SHOWN_WITHIN_MS => {}
            _ => return Ok(()),
        }
        let mut metas = Vec::with_capacity(METAS_LEN as usize);
        for seq in first..=last {
            match self.meta(id, seq)? {
                // Each one settled (one stored out of order may be younger than the newest).
                Some(meta) if now_ms - meta.stored_ms >= SHOWN_WITHIN_MS => metas.push(meta),
                _ => return Ok(()),
            }
        }
        set_json(self.kv, &key, &MetasBlock { written_ms: now_ms, metas })?;
        // Retention passed the block meanwhile (a retention shorter than a few segments): it
        // would not delete it again.
        if self.head(id)? > last {
            self.kv.delete(&key)?;
        }
        Ok(())
    }

    /// Writes the page that ends just below `tail`, if it is complete and not yet stored.
    pub(super) fn write_page(&self, id: &StreamId, tail: u64) -> Result<(), KvError> {
        let Some(number) = (tail / PAGE_LEN).checked_sub(1) else {
            return Ok(());
        };
        let key = page_key(id, number);
        if self.kv.get(&key)?.is_some() {
            return Ok(());
        }
        let mut metas = Vec::with_capacity(PAGE_LEN as usize);
        for seq in number * PAGE_LEN..(number + 1) * PAGE_LEN {
            match self.meta(id, seq)? {
                Some(meta) => metas.push(meta),
                None => return Ok(()),
            }
        }
        set_json(self.kv, &key, &metas)
    }


    /// Writes the lines blocks that end in `(from, to]` (this request moved the tail hint from
    /// `from` to `to`), smaller sizes first so a larger block joins the smaller ones.
    pub(super) fn write_lines(&self, id: &StreamId, from: u64, to: u64) -> Result<(), KvError> {
        for (level, len) in LINES_LENS.into_iter().enumerate() {
            for n in from / len..to / len {
                let key = lines_key(id, len, n);
                if self.kv.get(&key)?.is_some() {
                    continue;
                }
                let joined = match level.checked_sub(1).map(|below| LINES_LENS[below]) {
                    Some(small) => self.join_lines(id, small, n * LINES_FAN)?,
                    None => None,
                };
                let text = match joined {
                    Some(text) => text,
                    None => match self.metas(id, n * len, len)? {
                        Some(metas) => playlist::segment_lines(id.as_str(), &metas),
                        None => continue,
                    },
                };
                self.kv.set(&key, text.as_bytes())?;
            }
        }
        Ok(())
    }


    /// The [`LINES_FAN`] blocks of `len` from block `first` joined, if all are stored and check out.
    pub(super) fn join_lines(&self, id: &StreamId, len: u64, first: u64) -> Result<Option<String>, KvError> {
        let mut joined = String::new();
        for n in first..first + LINES_FAN {
            match self.lines(id, len, n)? {
                Some(text) => joined.push_str(&text),
                None => return Ok(None),
            }
        }
        Ok(Some(joined))
    }


    /// The `len` committed metas from `first` (from pages where stored), or `None` if one is missing.
    pub(super) fn metas(&self, id: &StreamId, first: u64, len: u64) -> Result<Option<Vec<SegmentMeta>>, KvError> {
        let mut source = Source::new(self, id);
        let mut metas = Vec::with_capacity(len as usize);
        for seq in first..first + len {
            match source.meta(seq)? {
                Some(meta) => metas.push(meta),
                None => return Ok(None),
            }
        }
        Ok(Some(metas))
    }
}
