//! The offscreen document: owns a broadcast's pipeline and runs it, capture -> cut -> remux ->
//! upload. Each stage is its own module ([`crate::capture`], [`crate::timing`],
//! [`crate::remux`], [`crate::upload`]); this one only connects them and reports the status.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::Blob;

use crate::capture::{Capture, Events, Settings};
use crate::chrome::{self, to_js};
use crate::ebml::{Piece, WebmSplitter};
use crate::messages::{Broadcast, Msg, Phase, Status};
use crate::remux::{self, Job};
use crate::timing::{program_date_ms, CutSegment, Segmenter};
use crate::upload::{self, Feed, Segment, Target, Uploads};

/// How often the recorder hands out its bytes.
const TIMESLICE_MS: i32 = 250;
/// How often an idle loop looks again.
const TICK_MS: i32 = 40;

struct Pipeline {
    b: Broadcast,
    phase: Phase,
    splitter: WebmSplitter,
    init: Option<Vec<u8>>,
    segmenter: Segmenter,
    blobs: VecDeque<Blob>,
    capture: Option<Capture>,
    recorder_stopped: bool,
    ingest_done: bool,
    recording_start_wall: f64,
    /// Why the broadcast ended or failed; shown before any upload error.
    note: Option<String>,
    remux_ms_total: f64,
    media_ms_total: u64,
}

/// The broadcast running in this document, if any, and its uploads.
type Running = (Rc<RefCell<Pipeline>>, Rc<RefCell<Uploads>>);

thread_local! {
    static CURRENT: RefCell<Option<Running>> = const { RefCell::new(None) };
}

fn current() -> Option<Running> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Entry point of `offscreen.html`: ask the worker what to run.
#[wasm_bindgen]
pub async fn offscreen_main() -> Result<(), JsValue> {
    let answer = chrome::send(&Msg::OffscreenReady)
        .await
        .map_err(|e| JsValue::from_str(&e))?;
    if !answer.is_null() && !answer.is_undefined() {
        let b: Broadcast = chrome::from_js(answer).map_err(|e| JsValue::from_str(&e))?;
        begin(b).await;
    }
    Ok(())
}

/// A message addressed to the offscreen document; returns the answer.
#[wasm_bindgen]
pub async fn on_offscreen_message(msg: JsValue) -> Result<JsValue, JsValue> {
    let msg: Msg =
        chrome::from_js(msg).map_err(|e| JsValue::from_str(&format!("unknown message: {e}")))?;
    match msg {
        Msg::Begin { broadcast } => {
            begin(broadcast).await;
            Ok(JsValue::TRUE)
        }
        Msg::End => {
            end("");
            Ok(JsValue::TRUE)
        }
        Msg::GetStatus => Ok(current()
            .map(|(p, u)| to_js(&status(&p.borrow(), &u.borrow())))
            .unwrap_or(JsValue::NULL)),
        m @ (Msg::StartTab { .. }
        | Msg::StartCamera
        | Msg::Stop
        | Msg::OffscreenReady
        | Msg::Finished { .. }) => Err(JsValue::from_str(&format!(
            "{m:?} is for the worker, not the offscreen document"
        ))),
    }
}

async fn begin(b: Broadcast) {
    if let Some((p, _)) = current() {
        if matches!(
            p.borrow().phase,
            Phase::Starting | Phase::Live | Phase::Stopping
        ) {
            return; // already running this or another broadcast
        }
    }
    let target = Target {
        server: b.server.clone(),
        session: b.session.clone(),
        token: b.token.clone(),
    };
    let settings = Settings {
        source: b.source,
        media_stream_id: b.media_stream_id.clone(),
        // Two keyframes per segment: a late keyframe then costs half a segment, not a whole
        // one, so segments stay within the server's target duration even when frames come
        // slowly.
        keyframe_interval_ms: (b.segment_ms / 2).max(500),
        timeslice_ms: TIMESLICE_MS,
    };
    let p = Rc::new(RefCell::new(Pipeline {
        segmenter: Segmenter::new(b.segment_ms),
        b,
        phase: Phase::Starting,
        splitter: WebmSplitter::new(),
        init: None,
        blobs: VecDeque::new(),
        capture: None,
        recorder_stopped: false,
        ingest_done: false,
        recording_start_wall: chrome::now_ms(),
        note: None,
        remux_ms_total: 0.0,
        media_ms_total: 0,
    }));
    let up = Rc::new(RefCell::new(Uploads::default()));
    CURRENT.with(|c| *c.borrow_mut() = Some((p.clone(), up.clone())));
    match Capture::start(&settings, events(&p)).await {
        Ok(c) => p.borrow_mut().capture = Some(c),
        Err(e) => {
            fail(&p, &up, e).await;
            return;
        }
    }
    spawn_local(ingest_loop(p.clone(), up.clone()));
    spawn_local(upload_loop(p, up, target));
}

/// What the pipeline does with the capture's events.
fn events(p: &Rc<RefCell<Pipeline>>) -> Events {
    let (a, b, c) = (Rc::downgrade(p), Rc::downgrade(p), Rc::downgrade(p));
    Events {
        data: Box::new(move |blob| {
            if let Some(p) = a.upgrade() {
                p.borrow_mut().blobs.push_back(blob);
            }
        }),
        started: Box::new(move || {
            if let Some(p) = b.upgrade() {
                let mut st = p.borrow_mut();
                st.recording_start_wall = chrome::now_ms();
                st.phase = Phase::Live;
            }
        }),
        stopped: Box::new(move || {
            if let Some(p) = c.upgrade() {
                p.borrow_mut().recorder_stopped = true;
            }
        }),
        ended: Box::new(|| end("The captured tab or camera went away, so the broadcast ended.")),
    }
}

/// Stops recording; the loops then send what is left and end the stream.
fn end(reason: &str) {
    let Some((p, _)) = current() else { return };
    let mut st = p.borrow_mut();
    if !matches!(st.phase, Phase::Starting | Phase::Live) {
        return;
    }
    st.phase = Phase::Stopping;
    if !reason.is_empty() {
        st.note = Some(reason.to_string());
    }
    release(&mut st);
}

fn release(st: &mut Pipeline) {
    let recording = st.capture.as_mut().is_some_and(|c| c.stop());
    if !recording {
        st.recorder_stopped = true;
    }
}

async fn fail(p: &Rc<RefCell<Pipeline>>, up: &Rc<RefCell<Uploads>>, message: String) {
    let status = {
        let mut st = p.borrow_mut();
        st.phase = Phase::Failed;
        st.note = Some(message);
        release(&mut st);
        status(&st, &up.borrow())
    };
    let _ = chrome::send(&Msg::Finished { status }).await;
}

async fn ingest_loop(p: Rc<RefCell<Pipeline>>, up: Rc<RefCell<Uploads>>) {
    // Load ffmpeg.wasm while the first segment records.
    if let Err(e) = remux::preload().await {
        fail(&p, &up, e).await;
        return;
    }
    loop {
        let (blob, stopped) = {
            let mut st = p.borrow_mut();
            (st.blobs.pop_front(), st.recorder_stopped)
        };
        let cuts = match blob {
            Some(blob) => {
                let data = match JsFuture::from(blob.array_buffer()).await {
                    Ok(buf) => Uint8Array::new(&buf).to_vec(),
                    Err(e) => {
                        let e = format!("Reading the recording failed: {}", chrome::js_error(&e));
                        fail(&p, &up, e).await;
                        return;
                    }
                };
                let mut st = p.borrow_mut();
                match st.splitter.push(&data) {
                    Ok(pieces) => {
                        let mut cuts = Vec::new();
                        for piece in pieces {
                            match piece {
                                Piece::Init(init) => st.init = Some(init),
                                Piece::Cluster(c) => cuts.extend(st.segmenter.push(c)),
                            }
                        }
                        cuts
                    }
                    Err(e) => {
                        drop(st);
                        let e = format!("The recording is not readable WebM: {e}");
                        fail(&p, &up, e).await;
                        return;
                    }
                }
            }
            None if stopped => {
                let mut st = p.borrow_mut();
                let last = st.splitter.finish();
                let mut cuts: Vec<CutSegment> = last
                    .into_iter()
                    .flat_map(|c| st.segmenter.push(c))
                    .collect();
                cuts.extend(st.segmenter.finish());
                drop(st);
                for cut in cuts {
                    if !process(&p, &up, cut).await {
                        return;
                    }
                }
                p.borrow_mut().ingest_done = true;
                return;
            }
            None => {
                chrome::sleep(TICK_MS).await;
                continue;
            }
        };
        for cut in cuts {
            if !process(&p, &up, cut).await {
                return;
            }
        }
    }
}

/// Remuxes one cut and queues it; false when the broadcast failed.
async fn process(p: &Rc<RefCell<Pipeline>>, up: &Rc<RefCell<Uploads>>, cut: CutSegment) -> bool {
    let (input, start_wall) = {
        let st = p.borrow();
        let Some(init) = st.init.as_ref() else {
            return true;
        };
        (cut.input(init), st.recording_start_wall)
    };
    let t0 = chrome::now_ms();
    let job = Job {
        input: &input,
        plan: cut.audio_plan(),
        trim_at_ms: cut.trim_at_ms,
        copy_leading_delta_frames: false,
    };
    match remux::remux(&job).await {
        Ok(ts) => {
            let mut st = p.borrow_mut();
            st.remux_ms_total += chrome::now_ms() - t0;
            st.media_ms_total += cut.duration_ms;
            let seg = Segment {
                ts,
                pdt_ms: program_date_ms(start_wall as u64, cut.start_ms) as f64,
                end_wall_ms: start_wall + (cut.start_ms + cut.duration_ms) as f64,
            };
            up.borrow_mut().queue.push(seg, cut.duration_ms);
            true
        }
        Err(e) => {
            fail(p, up, format!("Turning the recording into HLS failed: {e}")).await;
            false
        }
    }
}

async fn upload_loop(p: Rc<RefCell<Pipeline>>, up: Rc<RefCell<Uploads>>, target: Target) {
    let weak = Rc::downgrade(&p);
    let feed = move || match weak.upgrade() {
        Some(p) if p.borrow().phase == Phase::Failed => Feed::Aborted,
        Some(p) if p.borrow().ingest_done => Feed::Done,
        Some(_) => Feed::Open,
        None => Feed::Aborted,
    };
    match upload::run(target, up.clone(), feed).await {
        Ok(false) => {}
        Ok(true) => {
            let status = {
                let mut st = p.borrow_mut();
                st.phase = Phase::Ended;
                status(&st, &up.borrow())
            };
            let _ = chrome::send(&Msg::Finished { status }).await;
        }
        Err(e) => fail(&p, &up, e).await,
    }
}

fn status(st: &Pipeline, up: &Uploads) -> Status {
    let now = chrome::now_ms();
    let heap = web_sys::window()
        .and_then(|w| Reflect::get(w.performance()?.as_ref(), &"memory".into()).ok())
        .and_then(|m| Reflect::get(&m, &"usedJSHeapSize".into()).ok())
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0);
    Status {
        phase: st.phase,
        stream: st.b.stream.clone(),
        server: st.b.server.clone(),
        viewer_url: st.b.viewer_url(),
        source: st.b.source,
        started_at_ms: st.b.started_at_ms,
        segments_sent: up.sent,
        segments_waiting: up.queue.waiting() as u64,
        segments_dropped: up.queue.dropped,
        bytes_sent: up.bytes_sent,
        upload_rate_bps: up.rate_bps(now),
        attempts: up.attempts,
        last_error: st.note.clone().or_else(|| up.last_error.clone()),
        remux_ms_total: st.remux_ms_total,
        media_ms_total: st.media_ms_total,
        ack_latency_ms_avg: up.latency_avg(),
        ack_latency_ms_max: up.latency_max,
        js_heap_bytes: heap,
    }
}
