//! A broadcast's pipeline, capture -> cut -> remux -> upload, and its status. Each stage is its
//! own module ([`crate::capture`], [`crate::timing`] / [`crate::parts`], [`crate::remux`],
//! [`crate::upload`]); this one only connects them and reports the status. Whoever runs it (the
//! extension's offscreen document, the broadcast page) says where the pipeline's files are and
//! hears when it goes live or ends through [`Platform`]; one broadcast runs per document.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::Blob;

use crate::broadcast::{Broadcast, Phase, Status};
use crate::capture::{Capture, Events, Settings};
use crate::ebml::{Piece, WebmSplitter};
use crate::js;
use crate::parts::{Cut, CutPart, PartCutter, PART_TARGET_MS};
use crate::remux::{self, Job};
use crate::timing::{program_date_ms, CutSegment, Segmenter};
use crate::ts::Continuity;
use crate::bell::Bell;
use crate::upload::{self, Feed, Part, Queue, Segment, Target, Uploads};

/// What the pipeline needs from the context that runs it.
pub trait Platform {
    /// The URL of a file shipped beside the pipeline's module, such as
    /// `vendor/core/ffmpeg-core.js` (an extension's `chrome.runtime.getURL`, a page's base URL).
    fn asset_url(&self, path: &str) -> String;
    /// The recorder started: the broadcast is live (called once, during the recorder's event).
    fn live(&self, broadcast: &Broadcast);
    /// The broadcast is over, ended or failed, with its last status; awaited before the
    /// pipeline lets go.
    fn finished(&self, status: Status) -> Pin<Box<dyn Future<Output = ()>>>;
}

/// How often the recorder hands out its bytes, for whole segments.
const TIMESLICE_MS: i32 = 250;
/// The same with parts: every block is read within a few ms of being encoded, and a part is
/// cut, remuxed and sent as soon as its last frame and the audio after it are in (the loops are
/// rung awake when there is work: see [`crate::bell`]).
const LL_TIMESLICE_MS: i32 = 30;
/// How often the ingest loop looks again when nobody rang.
const RECHECK_MS: i32 = 1000;
/// With parts, keyframes are asked for this much before each half segment (see `begin`).
const KEYFRAME_EARLY_MS: u64 = 80;

/// How the recording is cut: whole segments (wire contract v1) or parts (v2).
enum Cutter {
    Segments(Segmenter),
    Parts {
        cutter: PartCutter,
        /// Continuity counters across all parts of the broadcast.
        cc: Continuity,
        /// The program tables of the last part, the body of a part with no media at all.
        tables: Vec<u8>,
    },
}

/// What the cutter hands out, in upload order.
enum Work {
    Segment(CutSegment),
    Part(CutPart),
    Seal,
}

struct Pipeline {
    b: Broadcast,
    platform: Rc<dyn Platform>,
    phase: Phase,
    splitter: WebmSplitter,
    init: Option<Vec<u8>>,
    cutter: Cutter,
    /// Rung when a blob comes or the recorder stops: the ingest loop has work.
    ingest_bell: Bell,
    /// Rung when the upload queue gets work or the feed's state changes.
    upload_bell: Bell,
    blobs: VecDeque<Blob>,
    capture: Option<Capture>,
    recorder_stopped: bool,
    ingest_done: bool,
    recording_start_wall: f64,
    /// The wall-clock time of media time 0 as the blocks' arrivals bound it: the least
    /// `arrival - timestamp` so far (a block cannot arrive before it was captured). The latency
    /// numbers use it: `recording_start_wall` comes from the recorder's start event, which can
    /// lag the first frame by a hundred ms or more.
    media_zero_wall: f64,
    /// The wall-clock time every `X-Program-Date-Time` counts from: fixed at the first remux
    /// (so the stamps stay evenly spaced) to the earlier of the recorder's start event and
    /// `media_zero_wall` as bounded by then (the start event alone stamped about 0.27 s late,
    /// and a player's "behind live" read that much short).
    pdt_zero_wall: Option<f64>,
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

/// The health of the broadcast running in this document, if any.
pub fn current_status() -> Option<Status> {
    current().map(|(p, u)| status(&p.borrow(), &u.borrow()))
}

/// The viewer link of the broadcast running in this document, if any.
pub fn viewer_url() -> Option<String> {
    current().map(|(p, _)| p.borrow().b.viewer_url())
}

/// Runs `f` on the live capture; the error says why not.
pub fn with_capture(f: impl FnOnce(&mut Capture) -> Result<(), String>) -> Result<JsValue, JsValue> {
    let (p, _) = current().ok_or_else(|| JsValue::from_str("Nothing is streaming."))?;
    let mut st = p.borrow_mut();
    let c = st
        .capture
        .as_mut()
        .ok_or_else(|| JsValue::from_str("Nothing is streaming."))?;
    f(c).map(|_| JsValue::TRUE)
        .map_err(|e| JsValue::from_str(&e))
}

/// Runs broadcast `b` unless one is already running here; returns once it is recording (or
/// failed: `platform` then hears [`Platform::finished`]).
pub async fn begin(b: Broadcast, platform: Rc<dyn Platform>) {
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
        // slowly. With parts, less: Chrome forces the keyframe on the first frame at least the
        // interval after the last one, and a part ends at the last frame that keeps it within
        // the part target, so six parts cover only about 1.86-2.0 s when frames come 33-40 ms
        // apart (a loaded machine: 25-30 fps). At 1000 or 980 ms most segments (1.96-2.03 s) got
        // a seventh part of 30-120 ms: an ffmpeg run, an upload and two requests per viewer for
        // a sliver, and hls.js, starting on one, reloaded it in a loop. At 920 ms a segment is
        // 1.84-1.91 s, and its sixth part ends at the keyframe.
        keyframe_interval_ms: if b.low_latency {
            (b.segment_ms / 2).max(500) - KEYFRAME_EARLY_MS
        } else {
            (b.segment_ms / 2).max(500)
        },
        timeslice_ms: if b.low_latency {
            LL_TIMESLICE_MS
        } else {
            TIMESLICE_MS
        },
        quality: b.quality,
        mic: b.mic,
        overlay: b.overlay,
    };
    // A segment may last up to its target duration's rounding limit (as v1's first segment).
    let target_s = (b.segment_ms / 1000).max(1);
    let (cutter, splitter, mut uploads) = if b.low_latency {
        let cutter = PartCutter::new(PART_TARGET_MS, b.segment_ms, target_s * 1000 + 499);
        (
            Cutter::Parts {
                cutter,
                cc: Continuity::default(),
                tables: Vec::new(),
            },
            WebmSplitter::with_blocks(),
            Uploads::parts(PART_TARGET_MS, target_s),
        )
    } else {
        (
            Cutter::Segments(Segmenter::new(b.segment_ms)),
            WebmSplitter::new(),
            Uploads::segments(),
        )
    };
    if let Some(seq) = b.resume_at_seq {
        uploads.resume_at(seq);
    }
    remux::set_core(platform.asset_url("vendor/core/ffmpeg-core.js"), platform.asset_url("vendor/core/ffmpeg-core.wasm"));
    let p = Rc::new(RefCell::new(Pipeline {
        platform,
        cutter,
        ingest_bell: Bell::default(),
        upload_bell: Bell::default(),
        b,
        phase: Phase::Starting,
        splitter,
        init: None,
        blobs: VecDeque::new(),
        capture: None,
        recorder_stopped: false,
        ingest_done: false,
        recording_start_wall: js::now_ms(),
        media_zero_wall: f64::INFINITY,
        pdt_zero_wall: None,
        note: None,
        remux_ms_total: 0.0,
        media_ms_total: 0,
    }));
    let up = Rc::new(RefCell::new(uploads));
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
                let mut st = p.borrow_mut();
                st.blobs.push_back(blob);
                st.ingest_bell.ring();
            }
        }),
        started: Box::new(move || {
            if let Some(p) = b.upgrade() {
                let mut st = p.borrow_mut();
                st.recording_start_wall = js::now_ms();
                st.phase = Phase::Live;
                st.platform.live(&st.b);
            }
        }),
        stopped: Box::new(move || {
            if let Some(p) = c.upgrade() {
                let mut st = p.borrow_mut();
                st.recorder_stopped = true;
                st.ingest_bell.ring();
            }
        }),
        ended: Box::new(|| end("The captured tab or camera went away, so the broadcast ended.")),
    }
}

/// Stops recording; the loops then send what is left and end the stream. `reason`, when not
/// empty, is shown as the broadcast's last word.
pub fn end(reason: &str) {
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
    st.ingest_bell.ring();
    st.upload_bell.ring();
}

async fn fail(p: &Rc<RefCell<Pipeline>>, up: &Rc<RefCell<Uploads>>, message: String) {
    let (status, platform) = {
        let mut st = p.borrow_mut();
        st.phase = Phase::Failed;
        st.note = Some(message);
        release(&mut st);
        (status(&st, &up.borrow()), st.platform.clone())
    };
    platform.finished(status).await;
}

async fn ingest_loop(p: Rc<RefCell<Pipeline>>, up: Rc<RefCell<Uploads>>) {
    // Load ffmpeg.wasm while the first segment records.
    if let Err(e) = remux::preload().await {
        fail(&p, &up, e).await;
        return;
    }
    let bell = p.borrow().ingest_bell.clone();
    // Every event that gives this loop work rings; the timer only guards against a missed one.
    let _recheck = bell.ring_every(RECHECK_MS);
    loop {
        let (blob, stopped) = {
            let mut st = p.borrow_mut();
            (st.blobs.pop_front(), st.recorder_stopped)
        };
        let work = match blob {
            Some(blob) => {
                let data = match JsFuture::from(blob.array_buffer()).await {
                    Ok(buf) => Uint8Array::new(&buf).to_vec(),
                    Err(e) => {
                        let e = format!("Reading the recording failed: {}", js::js_error(&e));
                        fail(&p, &up, e).await;
                        return;
                    }
                };
                let cut = p.borrow_mut().cut(&data);
                match cut {
                    Ok(work) => work,
                    Err(e) => {
                        let e = format!("The recording is not readable WebM: {e}");
                        fail(&p, &up, e).await;
                        return;
                    }
                }
            }
            None if stopped => {
                let work = p.borrow_mut().finish();
                for w in work {
                    if !process(&p, &up, w).await {
                        return;
                    }
                }
                let mut st = p.borrow_mut();
                st.ingest_done = true;
                st.upload_bell.ring();
                return;
            }
            None => {
                bell.wait().await;
                continue;
            }
        };
        for w in work {
            if !process(&p, &up, w).await {
                return;
            }
        }
    }
}

impl Pipeline {
    /// Reads recorded bytes; returns the work they complete.
    fn cut(&mut self, data: &[u8]) -> Result<Vec<Work>, crate::ebml::WebmError> {
        let pieces = self.splitter.push(data)?;
        let now = js::now_ms();
        let mut work = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Init(init) => self.init = Some(init),
                Piece::Cluster(c) => {
                    self.media_zero_wall = self.media_zero_wall.min(now - c.last_block_ms as f64);
                    if let Cutter::Segments(s) = &mut self.cutter {
                        work.extend(s.push(c).into_iter().map(Work::Segment));
                    }
                }
            }
        }
        if let Cutter::Parts { cutter, .. } = &mut self.cutter {
            for b in self.splitter.take_blocks() {
                self.media_zero_wall = self.media_zero_wall.min(now - b.ms as f64);
                work.extend(cutter.push(b).into_iter().map(Work::from));
            }
        }
        Ok(work)
    }

    /// The recording ended: what is left.
    fn finish(&mut self) -> Vec<Work> {
        let last = self.splitter.finish();
        match &mut self.cutter {
            Cutter::Segments(s) => {
                let mut cuts: Vec<CutSegment> = last.into_iter().flat_map(|c| s.push(c)).collect();
                cuts.extend(s.finish());
                cuts.into_iter().map(Work::Segment).collect()
            }
            Cutter::Parts { cutter, .. } => {
                let mut work: Vec<Work> = Vec::new();
                for b in self.splitter.take_blocks() {
                    work.extend(cutter.push(b).into_iter().map(Work::from));
                }
                work.extend(cutter.finish().into_iter().map(Work::from));
                work
            }
        }
    }
}

impl From<Cut> for Work {
    fn from(c: Cut) -> Self {
        match c {
            Cut::Part(p) => Work::Part(p),
            Cut::Seal { .. } => Work::Seal,
        }
    }
}

/// Remuxes one cut and queues it; false when the broadcast failed.
async fn process(p: &Rc<RefCell<Pipeline>>, up: &Rc<RefCell<Uploads>>, work: Work) -> bool {
    let (input, start_wall, frames) = {
        let st = p.borrow();
        let Some(init) = st.init.as_ref() else {
            return true;
        };
        // The video frames the cutter placed in it (all of which its remux keeps).
        let (input, frames) = match &work {
            Work::Segment(cut) => (cut.input(init), cut.video_frames(init)),
            Work::Part(part) => (part.input(init), part.frames),
            Work::Seal => (Vec::new(), 0),
        };
        (input, st.recording_start_wall, frames)
    };
    let zero_wall = p.borrow().media_zero_wall;
    let (job, start_ms, duration_ms) = match &work {
        Work::Segment(cut) => (
            Job {
                input: &input,
                plan: cut.audio_plan(),
                trim_at_ms: cut.trim_at_ms,
                copy_leading_delta_frames: false,
            },
            cut.start_ms,
            cut.duration_ms,
        ),
        Work::Part(part) => (
            Job {
                input: &input,
                plan: part.audio_plan(),
                trim_at_ms: None,
                copy_leading_delta_frames: true,
            },
            part.start_ms,
            part.duration_ms,
        ),
        Work::Seal => {
            if let Queue::Parts { queue, .. } = &mut up.borrow_mut().queue {
                queue.seal();
            }
            p.borrow().upload_bell.ring();
            return true;
        }
    };
    let t0 = js::now_ms();
    match remux::remux(&job).await {
        Ok(mut ts) => {
            let mut st = p.borrow_mut();
            st.remux_ms_total += js::now_ms() - t0;
            st.media_ms_total += duration_ms;
            let zero = if zero_wall.is_finite() {
                zero_wall
            } else {
                start_wall
            };
            let pdt_zero = *st.pdt_zero_wall.get_or_insert(zero.min(start_wall));
            let pdt_ms = program_date_ms(pdt_zero as u64, start_ms) as f64;
            let end_wall_ms = zero + (start_ms + duration_ms) as f64;
            match (&work, &mut st.cutter, &mut up.borrow_mut().queue) {
                (Work::Segment(_), _, Queue::Segments(q)) => q.push(
                    Segment {
                        ts,
                        pdt_ms,
                        end_wall_ms,
                        frames,
                    },
                    duration_ms,
                ),
                (
                    Work::Part(part),
                    Cutter::Parts { cc, tables, .. },
                    Queue::Parts { queue, .. },
                ) => {
                    // A part of a capture stall in a recording without sound holds no media,
                    // and ffmpeg writes nothing for it: it is still a part, of tables only.
                    if ts.is_empty() {
                        ts = tables.clone();
                    } else {
                        *tables = crate::ts::tables(&ts);
                    }
                    cc.rewrite(&mut ts);
                    let payload = Part {
                        ts,
                        independent: part.independent,
                        pdt_ms,
                        end_wall_ms,
                        frames,
                    };
                    queue.push_part(payload, duration_ms, part.index == 0);
                }
                _ => unreachable!("the cutter and the queue are of one kind"),
            }
            st.upload_bell.ring();
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
    let bell = p.borrow().upload_bell.clone();
    match upload::run(target, up.clone(), feed, bell).await {
        Ok(false) => {}
        Ok(true) => {
            let (status, platform) = {
                let mut st = p.borrow_mut();
                st.phase = Phase::Ended;
                (status(&st, &up.borrow()), st.platform.clone())
            };
            platform.finished(status).await;
        }
        Err(e) => fail(&p, &up, e).await,
    }
}

/// The byte length of this module's linear memory.
fn wasm_memory_bytes() -> f64 {
    wasm_bindgen::memory()
        .unchecked_into::<js_sys::WebAssembly::Memory>()
        .buffer()
        .unchecked_into::<js_sys::ArrayBuffer>()
        .byte_length() as f64
}

fn status(st: &Pipeline, up: &Uploads) -> Status {
    let (ffmpeg_switches, ffmpeg_spares_used) = remux::switches();
    let now = js::now_ms();
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
        parts_sent: up.parts_sent,
        segments_waiting: up.queue.waiting() as u64,
        segments_dropped: up.queue.dropped(),
        bytes_sent: up.bytes_sent,
        upload_rate_bps: up.rate_bps(now),
        attempts: up.attempts,
        last_error: st.note.clone().or_else(|| up.last_error.clone()),
        remux_ms_total: st.remux_ms_total,
        media_ms_total: st.media_ms_total,
        ack_latency_ms_avg: up.latency_avg(),
        ack_latency_ms_max: up.latency_max,
        ffmpeg_switches,
        ffmpeg_spares_used,
        video_skipped: match &st.cutter {
            Cutter::Segments(s) => s.skipped,
            Cutter::Parts { cutter, .. } => cutter.skipped,
        },
        video_placed: up.placed.stored,
        js_heap_bytes: heap,
        wasm_memory_bytes: wasm_memory_bytes(),
        quality: st.b.quality,
        mic: st.capture.as_ref().map(|c| c.mic()).unwrap_or_default(),
        overlay: st.capture.as_ref().is_some_and(|c| c.overlay()),
        mixing: st.capture.as_ref().is_some_and(|c| c.mixing()),
        notice: st.capture.as_ref().and_then(|c| c.notice()),
        composite_ms_avg: st.capture.as_ref().map_or(0.0, |c| c.composite_ms_avg()),
        recorder: st.capture.as_ref().map(|c| c.recorder().to_string()).unwrap_or_default(),
    }
}
