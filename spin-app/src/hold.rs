//! Held requests (LL-HLS): a blocking playlist reload (`_HLS_msn`/`_HLS_part`) or a request for
//! the preload-hinted part that cannot be answered yet. The handler answers a [`Hold`]; whoever
//! runs it calls [`Hold::check`] and sleeps for as long as it says in between ([`wait`]): the
//! Spin edge on a `wasi:clocks/monotonic-clock` pollable, unit tests on a fake clock.
//!
//! What a check costs: a hold knows the live edge it started from and probes only the keys
//! that move it: the next part of the open segment and the open segment's own meta (sealed).
//! The first check is scheduled for when the next part is due (the newest part's stored time
//! plus its duration), later ones every fifth of a part target (20 to 200 ms) and at least an
//! eighth of the time waited so far, so a held request typically costs two or three reads
//! besides the answer it renders, and never more than [`MAX_CHECKS`] checks (each a few reads:
//! the next part, the seal, the end marker) whatever part target and target duration the
//! broadcaster chose. When the next part
//! is overdue by a part target it also reads the end marker, so a stream that ends answers at
//! once (`EXT-X-ENDLIST`, no directive applies, rfc8216bis §6.2.5.2). A held part that is due
//! but missing also reads its segment's meta: a seal without it answers `404` at that check. After three target
//! durations a playlist gets `503` with `Retry-After` (§6.2.5.2), a part `503` too; a part that
//! can no longer come (its segment sealed without it, or the stream ended) gets `404` (§6.2.6).

use crate::kv::{Kv, KvError};
use crate::reply::{finish, part_reply, playlist_reply, ApiError, Reply};
use crate::route::{Family, Method};
use crate::store::{LiveEdge, Streams};
use chalkstream_manifest::id::StreamId;
use chalkstream_manifest::ll::{self, Edge, Reload};
use chalkstream_manifest::part::{PartMeta, MAX_PARTS};
use chalkstream_manifest::rules::{self, Config};
use chalkstream_manifest::segment::{SegmentMeta, StreamRecord};
use serde_json::json;

/// A check comes this long after the moment the awaited part is due (upload jitter).
const WAKE_SLACK_MS: i64 = 10;
/// Bounds of the interval between checks once the part is overdue.
const RETRY_MIN_MS: i64 = 20;
const RETRY_MAX_MS: i64 = 200;
/// Checks are also spaced by at least this fraction of how long the request has waited, so the
/// number of checks grows with the logarithm of the wait, not with the part target (issue 18: a
/// stranger's 20 ms part target and 30 s target duration made one held GET read 13,502 keys).
/// A hold of the longest allowed (three 30 s target durations) checks at most [`MAX_CHECKS`]
/// times: 8 at the shortest interval (20 ms), then each interval 1/8 of the wait so far, from
/// 160 ms to 90 s (54 more), plus the check when the part is due and the one at the deadline.
const BACKOFF_DIVISOR: i64 = 8;
/// The most checks a hold makes, whatever the stream's part target and target duration.
pub const MAX_CHECKS: u32 = 64;

/// What a held request waits for.
#[derive(Debug, Clone)]
enum Kind {
    /// A blocking reload, with the edge as last seen.
    Playlist { msn: u64, part: Option<u64>, skip: bool, edge: Edge },
    /// The part `seq.part`.
    Part { seq: u64, part: u32 },
}

/// A request waiting for the stream to move.
#[derive(Debug)]
pub struct Hold {
    id: StreamId,
    config: Config,
    method: Method,
    kind: Kind,
    part_target_ms: u32,
    /// The last sealed segment as last seen (decides the idle end); `None` for a part held
    /// from its predecessor alone ([`Hold::next_part`]), which then decides from that part.
    last: Option<SegmentMeta>,
    /// When the newest part seen was stored (Unix ms).
    newest_ms: i64,
    /// When the next part is due (Unix ms).
    expect_ms: i64,
    next_check_ms: i64,
    /// When the request started waiting (Unix ms).
    started_ms: i64,
    deadline_ms: i64,
    checks: u32,
}

/// What to do after a check.
#[derive(Debug)]
pub enum Check {
    /// Answer this.
    Reply(Reply),
    /// Check again after this many milliseconds.
    Sleep(u64),
}

impl Hold {
    fn new(id: StreamId, config: Config, method: Method, kind: Kind, live: &LiveEdge, now_ms: i64) -> Hold {
        let expect_ms = live.next_part_expected_ms();
        let newest_ms = live.open.parts.last().map_or(live.last.stored_ms, |p| p.stored_ms);
        let mut hold = Hold {
            id,
            config,
            method,
            kind,
            part_target_ms: live.record.part_target_ms.unwrap_or(1000),
            last: Some(live.last.clone()),
            newest_ms,
            expect_ms,
            next_check_ms: now_ms,
            started_ms: now_ms,
            deadline_ms: now_ms + ll::hold_limit_ms(live.record.target_s) as i64,
            checks: 0,
        };
        hold.schedule(now_ms);
        hold
    }

    /// Holds a request for part `previous.part + 1` of segment `previous.seq`, decided from the
    /// part before it alone (two reads instead of the live edge's ten): the part is the next one
    /// of a segment being uploaded, or its segment was sealed without it, which the first check
    /// (when the part is due) finds and answers `404`.
    pub(crate) fn next_part(id: StreamId, config: Config, method: Method, record: &StreamRecord, previous: &PartMeta, now_ms: i64) -> Hold {
        let kind = Kind::Part { seq: previous.seq, part: previous.part + 1 };
        Hold::after_part(id, config, method, kind, record, previous, now_ms)
    }

    /// Holds a blocking reload for part `previous.part + 1` of segment `previous.seq` (the
    /// preload hint of the playlist a player holds), decided from the part before it as
    /// [`Hold::next_part`] is; the checks move over a seal as for any blocking reload.
    pub(crate) fn next_reload(id: StreamId, config: Config, method: Method, record: &StreamRecord, previous: &PartMeta, skip: bool, now_ms: i64) -> Hold {
        // `last_parts` is not known without reading the segment before; a request for the open
        // segment never needs it (`ll::reload`).
        let edge = Edge { last_seq: previous.seq.saturating_sub(1), last_parts: 0, open_parts: previous.part + 1 };
        let kind = Kind::Playlist { msn: previous.seq, part: Some(u64::from(previous.part) + 1), skip, edge };
        Hold::after_part(id, config, method, kind, record, previous, now_ms)
    }

    fn after_part(id: StreamId, config: Config, method: Method, kind: Kind, record: &StreamRecord, previous: &PartMeta, now_ms: i64) -> Hold {
        let mut hold = Hold {
            id,
            config,
            method,
            kind,
            part_target_ms: record.part_target_ms.unwrap_or(1000),
            last: None,
            newest_ms: previous.stored_ms,
            expect_ms: previous.stored_ms + i64::from(previous.duration_ms),
            next_check_ms: now_ms,
            started_ms: now_ms,
            deadline_ms: now_ms + ll::hold_limit_ms(record.target_s) as i64,
            checks: 0,
        };
        hold.schedule(now_ms);
        hold
    }

    /// Holds a blocking reload the live edge cannot answer yet.
    pub(crate) fn playlist(id: StreamId, config: Config, method: Method, live: &LiveEdge, msn: u64, part: Option<u64>, skip: bool, now_ms: i64) -> Hold {
        let kind = Kind::Playlist { msn, part, skip, edge: live.edge() };
        Hold::new(id, config, method, kind, live, now_ms)
    }

    /// Holds a request for a part that is not stored yet.
    pub(crate) fn part(id: StreamId, config: Config, method: Method, live: &LiveEdge, seq: u64, part: u32, now_ms: i64) -> Hold {
        Hold::new(id, config, method, Kind::Part { seq, part }, live, now_ms)
    }

    /// When the hold gives up (Unix ms).
    pub fn deadline_ms(&self) -> i64 {
        self.deadline_ms
    }

    /// How many checks read the store so far.
    pub fn checks(&self) -> u32 {
        self.checks
    }

    /// Checks whether the request can be answered at `now_ms` (reading the store only when a
    /// check is due).
    pub fn check(&mut self, kv: &dyn Kv, now_ms: i64) -> Check {
        if now_ms < self.next_check_ms {
            return Check::Sleep((self.next_check_ms - now_ms) as u64);
        }
        self.checks += 1;
        let family = Family::Playback;
        match self.step(kv, now_ms) {
            Ok(Some(reply)) => Check::Reply(finish(reply, &self.method, family)),
            Ok(None) => {
                self.schedule(now_ms);
                Check::Sleep((self.next_check_ms - now_ms).max(1) as u64)
            }
            Err(error) => Check::Reply(finish(error.into_reply(), &self.method, family)),
        }
    }

    fn schedule(&mut self, now_ms: i64) {
        let due = self.expect_ms + WAKE_SLACK_MS;
        let waited = now_ms - self.started_ms;
        let retry = (i64::from(self.part_target_ms) / 5).clamp(RETRY_MIN_MS, RETRY_MAX_MS).max(waited / BACKOFF_DIVISOR);
        let next = if due > now_ms { due.max(now_ms + waited / BACKOFF_DIVISOR) } else { now_ms + retry };
        // The budget's last check is the deadline's.
        let next = if self.checks + 1 >= MAX_CHECKS { self.deadline_ms } else { next };
        self.next_check_ms = next.min(self.deadline_ms).max(now_ms + 1);
    }

    fn overdue(&self, now_ms: i64) -> bool {
        now_ms > self.expect_ms + i64::from(self.part_target_ms)
    }

    fn step(&mut self, kv: &dyn Kv, now_ms: i64) -> Result<Option<Reply>, ApiError> {
        let config = self.config.clone();
        let streams = Streams::new(kv, &config);
        let Kind::Playlist { msn, part, skip, mut edge } = self.kind.clone() else {
            return self.step_part(&streams, now_ms);
        };
        self.advance(&streams, &mut edge, msn, part)?;
        self.kind = Kind::Playlist { msn, part, skip, edge };
        let ready = ll::reload(&edge, msn, part, self.part_target_ms) == Reload::Ready;
        if ready || ((self.overdue(now_ms) || now_ms >= self.deadline_ms) && self.ended(&streams, now_ms)?) {
            return match streams.playlist_with(&self.id, now_ms, skip)? {
                Some(playlist) => Ok(Some(playlist_reply(playlist))),
                None => Err(ApiError::not_found("no such stream, or all of its segments are past the retention window")),
            };
        }
        if now_ms >= self.deadline_ms {
            return Ok(Some(unavailable("the requested segment or part did not arrive within three target durations")));
        }
        Ok(None)
    }

    /// Moves `edge` over what arrived since: new parts of the open segment, and the open
    /// segment's seal (then over the next one's parts), until the request is ready or nothing
    /// more is there. Two reads when nothing moved.
    fn advance<K: Kv + ?Sized>(&mut self, streams: &Streams<'_, K>, edge: &mut Edge, msn: u64, part: Option<u64>) -> Result<(), KvError> {
        loop {
            let open = edge.last_seq + 1;
            while edge.open_parts < MAX_PARTS {
                match streams.part_meta(&self.id, open, edge.open_parts)? {
                    Some(meta) => {
                        edge.open_parts += 1;
                        self.expect_ms = meta.stored_ms + i64::from(meta.duration_ms);
                    }
                    None => break,
                }
            }
            if ll::reload(edge, msn, part, self.part_target_ms) == Reload::Ready {
                return Ok(());
            }
            match streams.meta(&self.id, open)? {
                Some(meta) => {
                    *edge = Edge { last_seq: open, last_parts: meta.ll_parts.len() as u32, open_parts: 0 };
                    let last_part = meta.ll_parts.last().map_or(0, |p| p.duration_ms);
                    self.expect_ms = self.expect_ms.max(meta.stored_ms + i64::from(last_part));
                    self.newest_ms = self.newest_ms.max(meta.stored_ms);
                    self.last = Some(meta);
                }
                None => return Ok(()),
            }
        }
    }

    /// Whether the stream has ended (Stop, or idle since the last sealed segment): one read.
    fn ended<K: Kv + ?Sized>(&self, streams: &Streams<'_, K>, now_ms: i64) -> Result<bool, KvError> {
        let end = streams.end_marker(&self.id)?;
        let idle_ms = self.config.idle_ms;
        Ok(match (&self.last, &self.kind) {
            (Some(last), _) => rules::is_ended(last, end.as_ref(), now_ms, idle_ms),
            // Held from the part before: ended by a Stop after the segment before this one, or idle
            // since that part.
            (None, Kind::Part { seq, .. }) => {
                end.is_some_and(|end| end.after_seq + 1 >= *seq) || rules::is_idle(self.newest_ms, now_ms, idle_ms)
            }
            (None, Kind::Playlist { .. }) => rules::is_idle(self.newest_ms, now_ms, idle_ms),
        })
    }

    fn step_part<K: Kv + ?Sized>(&mut self, streams: &Streams<'_, K>, now_ms: i64) -> Result<Option<Reply>, ApiError> {
        let Kind::Part { seq, part } = self.kind else {
            return Ok(None);
        };
        if let Some(media) = streams.part_chunk(&self.id, seq, part, now_ms)? {
            return Ok(Some(part_reply(media)));
        }
        // Once the part is due, a seal without it means it will never come: `404` at once, rather
        // than a part target later (a player's request for the hint past a segment's last part
        // would otherwise hold its part loader that long, every segment).
        if now_ms >= self.expect_ms || now_ms >= self.deadline_ms {
            if let Some(meta) = streams.meta(&self.id, seq)? {
                // Parts are stored before their segment is sealed: a seal listing this part means
                // it arrived between the read above and this one.
                if (part as usize) < meta.ll_parts.len() {
                    if let Some(media) = streams.sealed_part_chunk(&self.id, seq, part, now_ms)? {
                        return Ok(Some(part_reply(media)));
                    }
                }
                return Err(ApiError::not_found(format!("segment {seq} was sealed without part {part}")));
            }
        }
        if self.overdue(now_ms) || now_ms >= self.deadline_ms {
            if self.ended(streams, now_ms)? {
                return Err(ApiError::not_found("no such part: the stream has ended"));
            }
        }
        if now_ms >= self.deadline_ms {
            return Ok(Some(unavailable("the requested part did not arrive within three target durations")));
        }
        Ok(None)
    }
}

/// `503` with `Retry-After`: the server could not answer in time (rfc8216bis §6.2.5.2).
fn unavailable(message: &str) -> Reply {
    Reply::json(503, &json!({ "error": message })).header("retry-after", "1")
}

/// Runs a hold to its answer: checks, and sleeps with `sleep_ms` for as long as each check
/// says. `now_ms` is the wall clock the deadline and the stored times are in.
pub fn wait(mut hold: Hold, kv: &dyn Kv, mut now_ms: impl FnMut() -> i64, mut sleep_ms: impl FnMut(u64)) -> Reply {
    loop {
        match hold.check(kv, now_ms()) {
            Check::Reply(reply) => return reply,
            Check::Sleep(ms) => sleep_ms(ms),
        }
    }
}
