//! Upload: sends the queued segments, or the parts and commits of low-latency segments, to the
//! server in order (the policy is [`crate::queue`]), keeps the numbers the popup shows, and
//! marks the stream ended once everything is sent.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use chalkstream_manifest::wire;
use js_sys::{Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::Response;

use crate::bell::Bell;
use crate::js;
use crate::broadcast::{refusal_message, unreachable_message, PlacedFrames, Sending};
use crate::queue::{
    classify, classify_answer, Acked, Backoff, Gap, GapSettled, Item, Outcome, PartQueue,
    UploadQueue, MAX_BUFFER_MS,
};

/// How long a request may take before it counts as unanswered.
const REQUEST_TIMEOUT_MS: u32 = 20_000;
/// How often the loop looks again when nobody rang: a retry's backoff (250 ms and more) is the
/// one thing that comes due without a ring.
const RECHECK_MS: i32 = 50;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(url: &str, init: &JsValue) -> Promise;
}

/// Where uploads go and how they are authorised.
#[derive(Debug, Clone)]
pub struct Target {
    pub server: String,
    pub session: String,
    pub token: String,
}

/// A remuxed segment waiting for upload.
#[derive(Debug)]
pub struct Segment {
    pub ts: Vec<u8>,
    pub pdt_ms: f64,
    /// Wall-clock time of the segment's end, for the latency numbers.
    pub end_wall_ms: f64,
    /// The video frames the cutter placed in it.
    pub frames: u64,
}

/// A remuxed part of a low-latency segment waiting for upload.
#[derive(Debug)]
pub struct Part {
    pub ts: Vec<u8>,
    /// Starts with a keyframe.
    pub independent: bool,
    /// Capture time of the part's first frame (sent with part 0).
    pub pdt_ms: f64,
    /// Wall-clock time of the part's end, for the latency numbers.
    pub end_wall_ms: f64,
    /// The video frames the cutter placed in it.
    pub frames: u64,
}

/// Whole segments (v1) or parts (v2).
#[derive(Debug)]
pub enum Queue {
    Segments(UploadQueue<Segment>),
    Parts {
        queue: PartQueue<Part>,
        part_target_ms: u64,
        target_duration_s: u64,
    },
}

impl Queue {
    /// Segments not yet stored (sealed) on the server.
    pub fn waiting(&self) -> usize {
        match self {
            Queue::Segments(q) => q.waiting(),
            Queue::Parts { queue, .. } => queue.waiting(),
        }
    }

    /// Segments the outage bound dropped.
    pub fn dropped(&self) -> u64 {
        match self {
            Queue::Segments(q) => q.dropped(),
            Queue::Parts { queue, .. } => queue.dropped(),
        }
    }

    /// The status that stopped the queue for good, if any.
    pub fn halted(&self) -> Option<u16> {
        match self {
            Queue::Segments(q) => q.halted(),
            Queue::Parts { queue, .. } => queue.halted(),
        }
    }
}

/// One request to make.
struct Request {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Uint8Array>,
    /// What it carries, for messages ("segment 3", "part 1 of segment 3").
    what: String,
    /// A gap (`POST …/{seq}/gap`), settled as one.
    gap: bool,
}

/// The queue and what has happened to it so far.
#[derive(Debug)]
pub struct Uploads {
    pub queue: Queue,
    /// Segments acknowledged (whole, or sealed from their parts).
    pub sent: u64,
    /// Parts acknowledged.
    pub parts_sent: u64,
    /// Media items (segments or parts) acknowledged, for the mean latency.
    media_acked: u64,
    pub bytes_sent: f64,
    /// Requests made, answered or not.
    pub attempts: u64,
    /// (time, bytes) of the acknowledgements of the last 10 s.
    acks: VecDeque<(f64, f64)>,
    latency_sum: f64,
    pub latency_max: f64,
    /// Why the last request did not succeed; cleared by the next success.
    pub last_error: Option<String>,
    /// The video frames of the segments the server holds.
    pub placed: PlacedFrames,
}

impl Uploads {
    /// Uploads of whole segments (wire contract v1).
    pub fn segments() -> Self {
        Self::with(Queue::Segments(UploadQueue::new(
            Backoff::default(),
            MAX_BUFFER_MS,
        )))
    }

    /// Uploads of parts (v2) with the stream's part target and target duration.
    pub fn parts(part_target_ms: u64, target_duration_s: u64) -> Self {
        Self::with(Queue::Parts {
            queue: PartQueue::new(Backoff::default(), MAX_BUFFER_MS),
            part_target_ms,
            target_duration_s,
        })
    }

    /// Continues a stream that holds seqs below `next_seq` ([`crate::queue::Core::resume_at`]).
    pub fn resume_at(&mut self, next_seq: u64) {
        match &mut self.queue {
            Queue::Segments(q) => q.resume_at(next_seq),
            Queue::Parts { queue, .. } => queue.resume_at(next_seq),
        }
    }

    fn with(queue: Queue) -> Self {
        Uploads {
            queue,
            sent: 0,
            parts_sent: 0,
            media_acked: 0,
            bytes_sent: 0.0,
            attempts: 0,
            acks: VecDeque::new(),
            latency_sum: 0.0,
            latency_max: 0.0,
            last_error: None,
            placed: PlacedFrames::default(),
        }
    }
}

impl Uploads {
    /// Upload rate over the last 10 s, bits per second.
    pub fn rate_bps(&self, now: f64) -> f64 {
        let bytes: f64 = self
            .acks
            .iter()
            .filter(|(t, _)| now - t <= 10_000.0)
            .map(|(_, b)| b)
            .sum();
        bytes * 8.0 / 10.0
    }

    /// Mean time from a segment's (or part's) end to its acknowledgement.
    pub fn latency_avg(&self) -> f64 {
        if self.media_acked > 0 {
            self.latency_sum / self.media_acked as f64
        } else {
            0.0
        }
    }

    fn acked(&mut self, now: f64, size: f64, end_wall_ms: f64) {
        self.media_acked += 1;
        self.bytes_sent += size;
        self.acks.push_back((now, size));
        while self.acks.front().is_some_and(|(t, _)| now - t > 10_000.0) {
            self.acks.pop_front();
        }
        let latency = now - end_wall_ms;
        self.latency_sum += latency;
        self.latency_max = self.latency_max.max(latency);
        self.last_error = None;
    }
}

/// What the producer of segments is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// More segments may come.
    Open,
    /// Every segment has been queued.
    Done,
    /// The broadcast failed elsewhere: stop without ending the stream.
    Aborted,
}

/// Sends the queue until the feed is done and the queue is empty, then ends the stream.
/// `Ok(true)`: ended; `Ok(false)`: aborted; `Err`: what to tell the user.
pub async fn run(
    target: Target,
    up: Rc<RefCell<Uploads>>,
    feed: impl Fn() -> Feed,
    bell: Bell,
) -> Result<bool, String> {
    let _recheck = bell.ring_every(RECHECK_MS);
    loop {
        let state = feed();
        if state == Feed::Aborted {
            return Ok(false);
        }
        let request = up.borrow_mut().next_request(&target.session);
        let Some(request) = request else {
            if state == Feed::Done && up.borrow().queue.waiting() == 0 {
                return finish(&target)
                    .await
                    .map(|()| true)
                    .map_err(|e| format!("The stream could not be marked as ended: {e}"));
            }
            // Rung when the queue gets work or the feed ends, and every RECHECK_MS.
            bell.wait().await;
            continue;
        };
        let headers = target.headers();
        for (k, v) in &request.headers {
            let _ = Reflect::set(&headers, &(*k).into(), &v.into());
        }
        let url = target.url(&request.path);
        let answer = http(&url, request.method, &headers, request.body.as_ref()).await;
        let status = answer.as_ref().map(|a| a.0);
        let error = answer.map(|a| a.1).unwrap_or_default();
        let said = if error.is_empty() {
            String::new()
        } else {
            format!(" The server said: {error}")
        };
        let mut u = up.borrow_mut();
        u.attempts += 1;
        let now = js::now_ms();
        // A 409 is read by what it says of the seq: settled, or left to a gap.
        let outcome = classify_answer(status, &error);
        let size = request.body.as_ref().map_or(0.0, |b| b.length() as f64);
        if !u.settle(outcome, now, size, request.gap) {
            let server = &target.server;
            let what = &request.what;
            let halted = u.queue.halted();
            u.last_error = Some(match (outcome, halted) {
                (Outcome::Acked, _) => unreachable!("acked requests are settled"),
                // An answer says why (a full store, a seq too far ahead): shown with it.
                (Outcome::Retry, _) => unreachable_message(server, status) + &said,
                (Outcome::Fatal(s), _) => refusal_message(s, server) + &said,
                (Outcome::Conflict | Outcome::Held, Some(s)) => refusal_message(s, server) + &said,
                (Outcome::Conflict, None) => format!(
                    "The server at {server} refused {what} (409); giving that seq up and sending the segment again as the next one.{said}"
                ),
                (Outcome::Held, None) => format!(
                    "The server at {server} refused {what} (409); sending the segment again as the next one.{said}"
                ),
            });
        }
        if u.queue.halted().is_some() {
            return Err(u.last_error.clone().unwrap_or_default());
        }
    }
}

impl Uploads {
    /// The request the queue wants made now, if any.
    fn next_request(&mut self, session: &str) -> Option<Request> {
        let now = js::now_ms() as u64;
        let pdt = |ms: f64| String::from(js_sys::Date::new(&JsValue::from_f64(ms)).to_iso_string());
        let media = |ts: &[u8]| Some(Uint8Array::from(ts));
        match &mut self.queue {
            Queue::Segments(q) => {
                if let Some(gap) = q.next_gap(now) {
                    self.placed.sending(Sending::Gap { seq: gap.seq });
                    return Some(gap_request(session, gap));
                }
                let s = q.next(now)?;
                self.placed.sending(Sending::Media {
                    seq: s.seq,
                    part: 0,
                    frames: s.payload.frames,
                });
                let mut headers = vec![
                    ("Content-Type", "video/mp2t".to_string()),
                    (wire::DURATION, wire::duration_text(s.duration_ms)),
                    (wire::PROGRAM_DATE_TIME, pdt(s.payload.pdt_ms)),
                ];
                if s.discontinuity {
                    headers.push((wire::DISCONTINUITY, "1".into()));
                }
                Some(Request {
                    method: "PUT",
                    path: wire::ingest_segment_path(session, s.seq),
                    headers,
                    body: media(&s.payload.ts),
                    what: format!("segment {}", s.seq),
                    gap: false,
                })
            }
            Queue::Parts {
                queue,
                part_target_ms,
                target_duration_s,
            } => {
                let (part_target_ms, target_duration_s) = (*part_target_ms, *target_duration_s);
                let item = queue.next(now)?;
                match &item {
                    Item::Commit { seq, .. } => self.placed.sending(Sending::Commit { seq: *seq }),
                    Item::Gap(gap) => self.placed.sending(Sending::Gap { seq: gap.seq }),
                    Item::Part { .. } => {}
                }
                match item {
                    Item::Part {
                        seq,
                        part,
                        discontinuity,
                        duration_ms,
                        payload,
                    } => {
                        self.placed.sending(Sending::Media {
                            seq,
                            part,
                            frames: payload.frames,
                        });
                        let mut headers = vec![
                            ("Content-Type", "video/mp2t".to_string()),
                            (wire::DURATION, wire::duration_text(duration_ms)),
                            (wire::PART_TARGET, wire::duration_text(part_target_ms)),
                            (wire::TARGET_DURATION, target_duration_s.to_string()),
                        ];
                        if payload.independent {
                            headers.push((wire::INDEPENDENT, "1".into()));
                        }
                        if part == 0 {
                            headers.push((wire::PROGRAM_DATE_TIME, pdt(payload.pdt_ms)));
                            if discontinuity {
                                headers.push((wire::DISCONTINUITY, "1".into()));
                            }
                        }
                        Some(Request {
                            method: "PUT",
                            path: wire::ingest_part_path(session, seq, part),
                            headers,
                            body: media(&payload.ts),
                            what: format!("part {part} of segment {seq}"),
                            gap: false,
                        })
                    }
                    Item::Commit { seq, parts } => Some(Request {
                        method: "POST",
                        path: wire::ingest_commit_path(session, seq),
                        headers: vec![(wire::PARTS, parts.to_string())],
                        body: None,
                        what: format!("the commit of segment {seq}"),
                        gap: false,
                    }),
                    Item::Gap(gap) => Some(gap_request(session, gap)),
                }
            }
        }
    }

    /// Records the answer to the last request; false when it was not acknowledged. A gap's
    /// `409` means the dropped segment's late upload was stored after all: it counts as sent.
    fn settle(&mut self, outcome: Outcome, now: f64, size: f64, gap: bool) -> bool {
        let jitter = js::jitter();
        let (end_wall, segment_done) = match &mut self.queue {
            Queue::Segments(q) if gap => match q.settle_gap(outcome, now as u64, jitter) {
                GapSettled::Recorded(_) => (None, false),
                GapSettled::SegmentHeld(_) => (None, true),
                // The seq a 409 left: its segment goes on under a fresh seq.
                GapSettled::Abandoned { .. } => (None, false),
                GapSettled::Pending => return false,
            },
            Queue::Segments(q) => match q.settle(outcome, now as u64, jitter) {
                Some(entry) => (Some(entry.payload.end_wall_ms), true),
                None => return false,
            },
            Queue::Parts { queue, .. } => match queue.settle(outcome, now as u64, jitter) {
                Some(Acked::Part(p)) => (Some(p.end_wall_ms), false),
                Some(Acked::Commit { .. }) => (None, true),
                Some(Acked::Gap { recorded, .. }) => (None, !recorded),
                Some(Acked::Abandoned { .. }) => (None, false),
                None => return false,
            },
        };
        if let Some(end_wall) = end_wall {
            if !segment_done {
                self.parts_sent += 1;
            }
            self.acked(now, size, end_wall);
        }
        if segment_done {
            self.sent += 1;
        }
        self.placed.acked(segment_done);
        self.last_error = None;
        true
    }
}

/// The request that gives up seq `gap.seq` (its segment was sent, not answered, and dropped by
/// the outage bound, or a 409 moved it to a fresh seq): the server records a gap, and the
/// playlist moves on.
fn gap_request(session: &str, gap: Gap) -> Request {
    Request {
        method: "POST",
        path: wire::ingest_gap_path(session, gap.seq),
        headers: vec![(wire::DURATION, wire::duration_text(gap.duration_ms))],
        body: None,
        what: format!("the gap for segment {}", gap.seq),
        gap: true,
    }
}

impl Target {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    /// Headers every ingest request carries.
    fn headers(&self) -> Object {
        let headers = Object::new();
        if !self.token.is_empty() {
            let _ = Reflect::set(
                &headers,
                &wire::AUTHORIZATION.into(),
                &format!("Bearer {}", self.token).into(),
            );
        }
        headers
    }
}

/// Marks the stream ended, retrying while the server cannot be reached.
async fn finish(target: &Target) -> Result<(), String> {
    let url = target.url(&wire::ingest_end_path(&target.session));
    let headers = target.headers();
    let mut attempt = 0;
    loop {
        let status = http(&url, "POST", &headers, None).await.map(|a| a.0);
        attempt += 1;
        match (status, classify(status)) {
            (Some(200 | 201 | 404), _) => return Ok(()),
            (_, Outcome::Retry) if attempt < 20 => {
                js::sleep(Backoff::default().delay_ms(attempt, js::jitter()) as i32).await
            }
            (Some(s), _) => return Err(refusal_message(s, &target.server)),
            (None, _) => return Err(unreachable_message(&target.server, None)),
        }
    }
}

/// Sends a request; `None` when no answer came, else the status and the server's `error` text.
async fn http(
    url: &str,
    method: &str,
    headers: &Object,
    body: Option<&Uint8Array>,
) -> Option<(u16, String)> {
    let init = Object::new();
    let _ = Reflect::set(&init, &"method".into(), &method.into());
    let _ = Reflect::set(&init, &"headers".into(), headers);
    let _ = Reflect::set(&init, &"cache".into(), &"no-store".into());
    if let Some(b) = body {
        let _ = Reflect::set(&init, &"body".into(), b);
    }
    if let Ok(signal) = abort_after(REQUEST_TIMEOUT_MS) {
        let _ = Reflect::set(&init, &"signal".into(), &signal);
    }
    let resp: Response = JsFuture::from(global_fetch(url, &init))
        .await
        .ok()?
        .unchecked_into();
    let status = resp.status();
    let mut error = String::new();
    if let Ok(p) = resp.text() {
        if let Ok(text) = JsFuture::from(p).await {
            let text = text.as_string().unwrap_or_default();
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                error = v
                    .get("error")
                    .and_then(|e| e.as_str())
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect();
            }
        }
    }
    Some((status, error))
}

fn abort_after(ms: u32) -> Result<JsValue, JsValue> {
    let class = Reflect::get(&js_sys::global(), &"AbortSignal".into())?;
    let timeout: js_sys::Function = Reflect::get(&class, &"timeout".into())?.dyn_into()?;
    timeout.call1(&class, &ms.into())
}
