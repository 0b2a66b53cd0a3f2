//! The key layout: every key the component stores is formatted here and nowhere else, with the
//! limits that shape it and the plain reads of one record each.
//!
//! | key | value | written |
//! | --- | --- | --- |
//! | `seg/{id}/{seq}/{sha1-12}/{slice}` | a whole segment's bytes, slices of <= 1,000,000 bytes (v1 uploads, and a v2 commit's folded parts) | before its meta |
//! | `seg/{id}/{seq}/meta` | JSON [`SegmentMeta`] | last: the commit point of a segment |
//! | `seg/{id}/{seq}/p{n}` | JSON [`PartMeta`] | last: the commit point of a part (v2); deleted once its sealed segment left every part window |
//! | `seg/{id}/{seq}/p{n}/{sha1-12}/{slice}` | a part's bytes | before its part meta; deleted one commit after it when the segment is folded |
//! | `stream/{id}` | JSON [`StreamRecord`] | once, with the first upload |
//! | `head/{id}` | JSON [`HeadMark`] `{first_seq}` | by retention, before it deletes |
//! | `tail/{id}` | JSON [`TailHint`] `{next_seq}` | after each commit (a hint, may lag) |
//! | `retire/{id}` | JSON [`RetireMark`] `{records_from, bodies_from}` | by a v2 commit that retired part records or bodies (a hint, may lag) |
//! | `dseq/{id}/{seq}` | JSON number: discontinuities before `seq` | by retention, before it deletes `seq - 1` |
//! | `breaks/{id}` | JSON [`Breaks`] | never now: read only for streams stored before counts were carried |
//! | `end/{id}` | JSON [`EndMarker`] | by `POST /ingest/{session}/end` |
//! | `page/{id}/{n}` | JSON array of the 64 metas of seqs `64n..64n+63` | retention 0 only, once all 64 exist |
//! | `metas/{id}/{n}` | JSON [`MetasBlock`]: the 8 metas of seqs `8n..8n+7` | sliding windows only, once all 8 have settled; their meta keys are deleted once it has shown |
//! | `lines/{id}/{len}/{n}` | playlist lines of seqs `len*n..len*n+len-1` | retention 0 only |
//! | `gap/{id}/{seq}` | JSON [`SegmentMeta`] with `gap: true` | by `POST …/{seq}/gap`, before the meta |
//! | `due/{minute}/{shard}`, `sweep/next` | the sweep index ([`crate::sweep`]) | by uploads and the sweep |
//!
//! `{id}` is always the public stream id, never the secret. Every key is at most 250 bytes: the
//! longest, a part slice, is `seg/` + 40 hex + two numbers + 12 hex, under 100.

use super::Streams;
use crate::kv::{get_json, Kv, KvError};
use chalkstream_manifest::id::StreamId;
use chalkstream_manifest::part::PartMeta;
use chalkstream_manifest::playlist;
use chalkstream_manifest::rules::Retention;
use chalkstream_manifest::segment::{Breaks, EndMarker, HeadMark, SegmentMeta, StreamRecord, TailHint};
use serde::{Deserialize, Serialize};

/// The metas of seqs `8n..8n+7` of a sliding-window stream, once all have settled: what their
/// meta keys said, kept in one value so the keys can go (a stream keeps about one key a segment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetasBlock {
    /// When it was written (Unix ms): its metas' keys are deleted once it has shown to every
    /// reader ([`super::ingest::SHOWN_WITHIN_MS`] later).
    pub written_ms: i64,
    pub metas: Vec<SegmentMeta>,
}

/// How far a v2 stream's part records and part bodies have been retired
/// (`Streams::retire_parts`): below `records_from` no sealed segment keeps its part records, below
/// `bodies_from` no folded one keeps its part bodies. A hint written after the deletes it
/// counts: a lost or late update only makes a later commit delete some keys again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetireMark {
    pub records_from: u64,
    pub bodies_from: u64,
}

/// At most this many expired segments are deleted per request; the next request continues.
pub(crate) const RETENTION_BATCH: usize = 64;
/// At most this many metas are probed when a forward walk looks for the end of the run.
pub(super) const TAIL_PROBE: u64 = 256;
/// An upload (segment, part or commit) may name a seq at most this far past the start of the
/// unstored seqs (`max(head, tail)`); further ones get `429`. So nothing is ever stored beyond a
/// hole that no walk reaches: every walk past the tail stops within this many seqs, and retention,
/// which stops at a hole, leaves at most this many segments behind one.
pub const MAX_AHEAD: u64 = 64;
/// Segments per page (`page/{id}/{n}`).
pub(super) const PAGE_LEN: u64 = 64;
/// Segments per metas block (`metas/{id}/{n}`, sliding windows).
pub(super) const METAS_LEN: u64 = 8;
/// Sizes of lines blocks, smallest first; each is [`LINES_FAN`] of the one before.
pub(super) const LINES_LENS: [u64; 3] = [8, 64, 512];
pub(super) const LINES_FAN: u64 = 8;

pub(super) fn meta_key(id: &StreamId, seq: u64) -> String {
    format!("seg/{id}/{seq}/meta")
}

/// Slice `slice` of a whole segment (v1), named by the body's SHA-1 prefix.
pub(super) fn segment_slice_key(id: &StreamId, seq: u64, sha1_prefix: &str, slice: u32) -> String {
    format!("seg/{id}/{seq}/{sha1_prefix}/{slice}")
}

/// The meta of part `part` of segment `seq` (v2): its commit point.
pub(super) fn part_meta_key(id: &StreamId, seq: u64, part: u32) -> String {
    format!("seg/{id}/{seq}/p{part}")
}

/// Slice `slice` of part `part` of segment `seq`, named by the part body's SHA-1 prefix.
pub(super) fn part_slice_key(id: &StreamId, seq: u64, part: u32, sha1_prefix: &str, slice: u32) -> String {
    format!("seg/{id}/{seq}/p{part}/{sha1_prefix}/{slice}")
}

pub(crate) fn stream_key(id: &StreamId) -> String {
    format!("stream/{id}")
}

pub(super) fn head_key(id: &StreamId) -> String {
    format!("head/{id}")
}

pub(super) fn tail_key(id: &StreamId) -> String {
    format!("tail/{id}")
}

pub(super) fn retire_key(id: &StreamId) -> String {
    format!("retire/{id}")
}

pub(super) fn breaks_key(id: &StreamId) -> String {
    format!("breaks/{id}")
}

/// The count of discontinuities before `seq`, kept for a seq whose predecessor retention deleted.
pub(super) fn dseq_key(id: &StreamId, seq: u64) -> String {
    format!("dseq/{id}/{seq}")
}

/// A gap declared for `seq` (issue 11): the gap's meta, written before the gap tries the commit
/// point, so an upload of `seq` that commits meanwhile finds it (see [`Streams::put_gap`]).
pub(super) fn gap_key(id: &StreamId, seq: u64) -> String {
    format!("gap/{id}/{seq}")
}

pub(super) fn end_key(id: &StreamId) -> String {
    format!("end/{id}")
}

pub(super) fn page_key(id: &StreamId, page: u64) -> String {
    format!("page/{id}/{page}")
}

pub(super) fn metas_key(id: &StreamId, n: u64) -> String {
    format!("metas/{id}/{n}")
}

pub(super) fn lines_key(id: &StreamId, len: u64, n: u64) -> String {
    format!("lines/{id}/{len}/{n}")
}

/// The sweep's list of the streams (of one shard) due in `minute` ([`crate::sweep`]).
pub(crate) fn due_key(minute: i64, shard: u32) -> String {
    format!("due/{minute}/{shard:x}")
}

/// The sweep's hint: the oldest shard value not yet known to be empty ([`crate::sweep`]).
pub(crate) const SWEEP_NEXT_KEY: &str = "sweep/next";

/// Plain reads: one record each.
impl<K: Kv + ?Sized> Streams<'_, K> {
    pub fn meta(&self, id: &StreamId, seq: u64) -> Result<Option<SegmentMeta>, KvError> {
        get_json(self.kv, &meta_key(id, seq))
    }

    pub fn part_meta(&self, id: &StreamId, seq: u64, part: u32) -> Result<Option<PartMeta>, KvError> {
        get_json(self.kv, &part_meta_key(id, seq, part))
    }

    /// The stream's record.
    pub fn record(&self, id: &StreamId) -> Result<Option<StreamRecord>, KvError> {
        get_json(self.kv, &stream_key(id))
    }

    /// Page `number`, if stored and well-formed.
    pub(super) fn page(&self, id: &StreamId, number: u64) -> Result<Option<Vec<SegmentMeta>>, KvError> {
        let page: Option<Vec<SegmentMeta>> = get_json(self.kv, &page_key(id, number))?;
        Ok(page.filter(|metas| {
            metas.len() as u64 == PAGE_LEN
                && metas.iter().enumerate().all(|(i, m)| m.seq == number * PAGE_LEN + i as u64)
        }))
    }

    /// Metas block `n`, if stored and well-formed.
    pub(super) fn metas_block(&self, id: &StreamId, n: u64) -> Result<Option<MetasBlock>, KvError> {
        let block: Option<MetasBlock> = get_json(self.kv, &metas_key(id, n))?;
        Ok(block.filter(|block| {
            block.metas.len() as u64 == METAS_LEN
                && block.metas.iter().enumerate().all(|(i, m)| m.seq == n * METAS_LEN + i as u64)
        }))
    }

    /// The meta of `seq` wherever it is: its own key, or (a sliding window's segment whose
    /// key went once its block had shown, `Streams::block_metas`) its metas block. One read
    /// more than [`Streams::meta`] when the seq has no meta key, so only for readers of seqs
    /// that may be old.
    pub fn sealed_meta(&self, id: &StreamId, seq: u64) -> Result<Option<SegmentMeta>, KvError> {
        if let Some(meta) = self.meta(id, seq)? {
            return Ok(Some(meta));
        }
        if self.config.retention == Retention::Forever {
            return Ok(None);
        }
        Ok(self.metas_block(id, seq / METAS_LEN)?.map(|mut block| block.metas.swap_remove((seq % METAS_LEN) as usize)))
    }

    /// [`Streams::meta`], or with `deep` [`Streams::sealed_meta`].
    pub(super) fn meta_at(&self, id: &StreamId, seq: u64, deep: bool) -> Result<Option<SegmentMeta>, KvError> {
        if deep {
            self.sealed_meta(id, seq)
        } else {
            self.meta(id, seq)
        }
    }

    /// Block `n` of `len` segments' lines, if stored and it checks out.
    pub(super) fn lines(&self, id: &StreamId, len: u64, n: u64) -> Result<Option<String>, KvError> {
        let Some(bytes) = self.kv.get(&lines_key(id, len, n))? else {
            return Ok(None);
        };
        Ok(String::from_utf8(bytes).ok().filter(|text| playlist::check_lines(id.as_str(), n * len, len, text)))
    }

    pub(super) fn head(&self, id: &StreamId) -> Result<u64, KvError> {
        Ok(get_json::<HeadMark>(self.kv, &head_key(id))?.unwrap_or_default().first_seq)
    }

    pub(super) fn tail(&self, id: &StreamId) -> Result<u64, KvError> {
        Ok(get_json::<TailHint>(self.kv, &tail_key(id))?.unwrap_or_default().next_seq)
    }

    pub(super) fn breaks(&self, id: &StreamId) -> Result<Breaks, KvError> {
        Ok(get_json(self.kv, &breaks_key(id))?.unwrap_or_default())
    }

    pub(crate) fn end_marker(&self, id: &StreamId) -> Result<Option<EndMarker>, KvError> {
        get_json(self.kv, &end_key(id))
    }
}
