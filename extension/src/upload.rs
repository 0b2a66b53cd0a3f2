//! Upload: sends the queued segments to the server in order (the policy is [`crate::queue`]),
//! keeps the numbers the popup shows, and marks the stream ended once everything is sent.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use chalkstream_manifest::wire;
use js_sys::{Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::Response;

use crate::chrome;
use crate::messages::{refusal_message, unreachable_message};
use crate::queue::{classify, Backoff, Outcome, UploadQueue, MAX_BUFFER_MS};

/// How often an idle loop looks again.
const TICK_MS: i32 = 40;
/// How long a request may take before it counts as unanswered.
const REQUEST_TIMEOUT_MS: u32 = 20_000;

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
}

/// The queue and what has happened to it so far.
#[derive(Debug)]
pub struct Uploads {
    pub queue: UploadQueue<Segment>,
    /// Segments acknowledged.
    pub sent: u64,
    pub bytes_sent: f64,
    /// Requests made, answered or not.
    pub attempts: u64,
    /// (time, bytes) of the acknowledgements of the last 10 s.
    acks: VecDeque<(f64, f64)>,
    latency_sum: f64,
    pub latency_max: f64,
    /// Why the last request did not succeed; cleared by the next success.
    pub last_error: Option<String>,
}

impl Default for Uploads {
    fn default() -> Self {
        Uploads {
            queue: UploadQueue::new(Backoff::default(), MAX_BUFFER_MS),
            sent: 0,
            bytes_sent: 0.0,
            attempts: 0,
            acks: VecDeque::new(),
            latency_sum: 0.0,
            latency_max: 0.0,
            last_error: None,
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

    /// Mean time from a segment's end to its acknowledgement.
    pub fn latency_avg(&self) -> f64 {
        if self.sent > 0 {
            self.latency_sum / self.sent as f64
        } else {
            0.0
        }
    }

    fn acked(&mut self, now: f64, size: f64, end_wall_ms: f64) {
        self.sent += 1;
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
) -> Result<bool, String> {
    loop {
        let state = feed();
        if state == Feed::Aborted {
            return Ok(false);
        }
        let job = {
            let mut u = up.borrow_mut();
            let now = chrome::now_ms() as u64;
            u.queue.next(now).map(|s| {
                (
                    s.seq,
                    s.discontinuity,
                    s.duration_ms,
                    Uint8Array::from(&s.payload.ts[..]),
                    s.payload.pdt_ms,
                )
            })
        };
        let Some((seq, disc, duration_ms, body, pdt_ms)) = job else {
            if state == Feed::Done && up.borrow().queue.waiting() == 0 {
                return finish(&target)
                    .await
                    .map(|()| true)
                    .map_err(|e| format!("The stream could not be marked as ended: {e}"));
            }
            chrome::sleep(TICK_MS).await;
            continue;
        };
        let headers = target.headers();
        let set = |k: &str, v: &str| {
            let _ = Reflect::set(&headers, &k.into(), &v.into());
        };
        set("Content-Type", "video/mp2t");
        set(wire::DURATION, &wire::duration_text(duration_ms));
        let pdt = js_sys::Date::new(&JsValue::from_f64(pdt_ms)).to_iso_string();
        set(wire::PROGRAM_DATE_TIME, &String::from(pdt));
        if disc {
            set(wire::DISCONTINUITY, "1");
        }
        let url = target.url(&wire::ingest_segment_path(&target.session, seq));
        let answer = http(&url, "PUT", &headers, Some(&body)).await;
        let status = answer.as_ref().map(|a| a.0);
        let said = answer
            .map(|a| a.1)
            .filter(|e| !e.is_empty())
            .map(|e| format!(" The server said: {e}"))
            .unwrap_or_default();
        let mut u = up.borrow_mut();
        u.attempts += 1;
        let now = chrome::now_ms();
        let outcome = classify(status);
        let size = body.length() as f64;
        match u.queue.settle(outcome, now as u64, chrome::jitter()) {
            Some(entry) => u.acked(now, size, entry.payload.end_wall_ms),
            None => {
                let server = &target.server;
                u.last_error = Some(match outcome {
                    Outcome::Acked => unreachable!("acked entries are returned"),
                    Outcome::Retry => unreachable_message(server, status),
                    Outcome::Conflict => format!(
                        "The server at {server} already holds different bytes for segment {seq} (409); sending it as the next segment."
                    ),
                    Outcome::Fatal(s) => refusal_message(s, server) + &said,
                });
            }
        }
        if let Outcome::Fatal(_) = outcome {
            return Err(u.last_error.clone().unwrap_or_default());
        }
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
                chrome::sleep(Backoff::default().delay_ms(attempt, chrome::jitter()) as i32).await
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
