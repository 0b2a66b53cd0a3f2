//! Playlist assembly: the sliding window, the `EVENT` playlist from stored lines blocks, the
//! low-latency playlist with its parts and preload hint, and delta updates (`_HLS_skip`).

use super::run::Source;
use super::Streams;
use crate::kv::{Kv, KvError};
use chalkstream_manifest::id::StreamId;
use chalkstream_manifest::ll::{self, LlView};
use chalkstream_manifest::playlist;
use chalkstream_manifest::rules::{self, Retention};
use chalkstream_manifest::segment::{SegmentMeta, StreamRecord};
use chalkstream_manifest::window::{self, EventView, Piece, PlaylistKind, State};

/// A rendered playlist and what its response headers need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaylistText {
    pub text: String,
    pub state: State,
    pub target_s: u32,
}

impl<K: Kv + ?Sized> Streams<'_, K> {
    /// The playlist of stream `id` now; `None` for an unknown or entirely expired stream. An
    /// `EVENT` playlist copies the stored lines of complete pages ([`window::walk_event`]); it
    /// is byte for byte what rendering the [`Streams::view`] gives, which is also the answer
    /// whenever the fast walk cannot tell the state.
    pub fn playlist(&self, id: &StreamId, now_ms: i64) -> Result<Option<PlaylistText>, KvError> {
        self.playlist_with(id, now_ms, false)
    }

    /// [`Streams::playlist`], as a delta update (`_HLS_skip=YES`) when `skip` and the stream is
    /// a live v2 stream. A v2 stream's playlist is [`Streams::ll_playlist`]'s; a v1 stream's is
    /// byte for byte what it was before v2 existed.
    pub fn playlist_with(&self, id: &StreamId, now_ms: i64, skip: bool) -> Result<Option<PlaylistText>, KvError> {
        let Some(record) = self.record(id)? else {
            return Ok(None);
        };
        if record.part_target_ms.is_some() {
            return self.ll_playlist(id, &record, now_ms, skip);
        }
        if self.config.retention == Retention::Forever {
            let head = self.head(id)?;
            let tail = self.tail(id)?;
            let run = window::walk_event(&mut Source::new(self, id), head, tail)?;
            let disc_seq = self.event_disc_seq(id, &run)?;
            let end = self.end_marker(id)?;
            if let Some(view) = disc_seq.and_then(|disc_seq| {
                EventView::assemble(&record, disc_seq, end.as_ref(), run, self.config.idle_ms, now_ms)
            }) {
                return Ok(Some(PlaylistText {
                    text: playlist::render_event(id.as_str(), &view),
                    state: view.state,
                    target_s: view.target_s,
                }));
            }
        }
        Ok(self.view_of(id, &record, now_ms)?.map(|view| PlaylistText {
            text: playlist::render(id.as_str(), &view),
            state: view.state,
            target_s: view.target_s,
        }))
    }

    /// The discontinuity count of an `EVENT` run: from its first piece (nothing is deleted
    /// without retention, so it is known; `None` sends the caller the slow way).
    pub(super) fn event_disc_seq(&self, id: &StreamId, run: &window::EventRun) -> Result<Option<u64>, KvError> {
        match run.pieces.first() {
            Some(Piece::Segment(meta)) => self.disc_seq_at(id, meta.seq, Some(meta)),
            Some(piece) => self.disc_seq_at(id, piece.first_seq(), None),
            None => Ok(Some(0)),
        }
    }

    /// The playlist of v2 stream `id` ([`playlist::render_ll`]): the run as for v1 (stored lines
    /// blocks for `EVENT`), with the segments in the part window read as metas; while live the
    /// open segment's parts and, for a delta update, the head of the run replaced by a count. A
    /// delta update reads backwards from the end, only the metas it lists (a sliding window's
    /// too while its head segment is unexpired, so a long window costs a reload no more).
    pub fn ll_playlist(&self, id: &StreamId, record: &StreamRecord, now_ms: i64, skip: bool) -> Result<Option<PlaylistText>, KvError> {
        let part_target_ms = record.part_target_ms.unwrap_or(1000);
        let kind = PlaylistKind::from(self.config.retention);
        let idle_ms = self.config.idle_ms;
        let mut view = None;
        if skip {
            if let Some(last) = self.run_last(id, now_ms)? {
                let end = self.end_marker(id)?;
                if !rules::is_ended(&last, end.as_ref(), now_ms, idle_ms) {
                    let head = self.head(id)?;
                    // A sliding window starts at the head while the head's segment is unexpired
                    // (later ones are younger); otherwise the whole walk below runs retention.
                    let first = match kind {
                        PlaylistKind::Event => Some(None),
                        PlaylistKind::Sliding => self
                            .sealed_meta(id, head)?
                            .filter(|meta| !self.config.retention.is_expired(meta.stored_ms, now_ms))
                            .map(Some),
                    };
                    let (metas, disc_seq) = match first {
                        Some(first) => (self.skip_tail(id, head, last, record.target_s)?, self.disc_seq_at(id, head, first.as_ref())?),
                        None => (None, None),
                    };
                    if let (Some(metas), Some(disc_seq)) = (metas, disc_seq) {
                        let first_kept = metas[0].seq;
                        view = Some(LlView {
                            target_s: record.target_s,
                            part_target_ms,
                            kind,
                            first_seq: head,
                            discontinuity_sequence: disc_seq,
                            skipped: first_kept - head,
                            pieces: metas.into_iter().map(Piece::Segment).collect(),
                            open: None,
                            state: State::Live,
                        });
                    }
                }
            }
        }
        if view.is_none() && kind == PlaylistKind::Event {
            let head = self.head(id)?;
            let tail = self.tail(id)?;
            let run = window::walk_event(&mut Source::new(self, id), head, tail)?;
            let disc_seq = self.event_disc_seq(id, &run)?;
            let end = self.end_marker(id)?;
            view = disc_seq.and_then(|disc_seq| EventView::assemble(record, disc_seq, end.as_ref(), run, idle_ms, now_ms)).map(|v| LlView {
                target_s: record.target_s,
                part_target_ms,
                kind,
                first_seq: v.first_seq,
                discontinuity_sequence: v.discontinuity_sequence,
                skipped: 0,
                pieces: v.pieces,
                open: None,
                state: v.state,
            });
        }
        let mut view = match view {
            Some(view) => view,
            None => match self.view_of(id, record, now_ms)? {
                Some(v) => LlView {
                    target_s: record.target_s,
                    part_target_ms,
                    kind,
                    first_seq: v.first().seq,
                    discontinuity_sequence: v.discontinuity_sequence,
                    skipped: 0,
                    pieces: v.segments.into_iter().map(Piece::Segment).collect(),
                    open: None,
                    state: v.state,
                },
                None => return Ok(None),
            },
        };
        if view.state == State::Live {
            let last_seq = view.pieces.last().map_or(view.first_seq, |p| p.first_seq() + p.len() - 1);
            let open = self.open_segment(id, last_seq + 1)?;
            if skip && view.skipped == 0 {
                let durations: Option<Vec<u32>> = view
                    .pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Segment(meta) => Some(meta.duration_ms),
                        Piece::Lines { .. } => None,
                    })
                    .collect();
                if let Some(durations) = durations {
                    let n = ll::skip_count(&durations, record.target_s);
                    view.pieces.drain(..n);
                    view.skipped = n as u64;
                }
            }
            self.unroll_part_window(id, &mut view.pieces, open.duration_ms(), record.target_s)?;
            view.open = Some(open);
        }
        Ok(Some(PlaylistText {
            text: playlist::render_ll(id.as_str(), &view),
            state: view.state,
            target_s: view.target_s,
        }))
    }

    /// The metas a delta update of an `EVENT` stream lists, read backwards from `last`: every
    /// segment not wholly past the skip boundary ([`ll::skip_count`]'s rule). `None` when a
    /// meta is missing (the caller then walks the run the usual way).
    pub(super) fn skip_tail(&self, id: &StreamId, head: u64, last: SegmentMeta, target_s: u32) -> Result<Option<Vec<SegmentMeta>>, KvError> {
        let boundary = u64::from(ll::SKIP_UNTIL_TARGETS * target_s) * 1000;
        let mut after = u64::from(last.duration_ms);
        let mut seq = last.seq;
        let mut metas = vec![last];
        while seq > head && after <= boundary {
            seq -= 1;
            let Some(meta) = self.meta(id, seq)? else {
                return Ok(None);
            };
            after += u64::from(meta.duration_ms);
            metas.push(meta);
        }
        metas.reverse();
        Ok(Some(metas))
    }

    /// Makes the trailing segments that start within the part window [`Piece::Segment`]s, so
    /// they get their `EXT-X-PART` lines: a lines block reaching into the window is cut before
    /// them ([`playlist::lines_before`]) and their metas are read.
    pub(super) fn unroll_part_window(&self, id: &StreamId, pieces: &mut Vec<Piece>, open_ms: u64, target_s: u32) -> Result<(), KvError> {
        let mut from_end = open_ms;
        let mut i = pieces.len();
        while i > 0 {
            i -= 1;
            let (first, len, text) = match &pieces[i] {
                Piece::Segment(meta) => {
                    from_end += u64::from(meta.duration_ms);
                    if !ll::in_part_window(from_end, target_s) {
                        return Ok(());
                    }
                    continue;
                }
                Piece::Lines { first_seq, len, text } => (*first_seq, *len, text),
            };
            let mut metas = Vec::new();
            let mut inside = true;
            let mut seq = first + len;
            while seq > first && inside {
                seq -= 1;
                let Some(meta) = self.meta(id, seq)? else {
                    return Ok(());
                };
                from_end += u64::from(meta.duration_ms);
                inside = ll::in_part_window(from_end, target_s);
                metas.push(meta);
            }
            metas.reverse();
            let split = metas[0].seq;
            let Some(prefix) = playlist::lines_before(id.as_str(), first, text, split) else {
                return Ok(());
            };
            let mut replacement = Vec::with_capacity(metas.len() + 1);
            if !prefix.is_empty() {
                replacement.push(Piece::Lines { first_seq: first, len: split - first, text: prefix.to_owned() });
            }
            replacement.extend(metas.into_iter().map(Piece::Segment));
            pieces.splice(i..=i, replacement);
            if !inside {
                return Ok(());
            }
        }
        Ok(())
    }
}
