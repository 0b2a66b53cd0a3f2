//! The offscreen document: owns the MediaStream, the one MediaRecorder, the segmenter
//! (WebM splitter + ffmpeg.wasm remux to MPEG-TS) and the upload queue of a broadcast.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use js_sys::{Array, Object, Promise, Reflect, Uint8Array};
use serde_json::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{AudioContext, Blob, BlobEvent, MediaRecorder, MediaStream, Response};

use crate::chrome::{self, obj, to_js, FFmpeg};
use crate::ebml::{Piece, WebmSplitter};
use crate::messages::{
    refusal_message, unreachable_message, Broadcast, Msg, Phase, Source, Status,
};
use crate::queue::{classify, Backoff, Outcome, UploadQueue, MAX_BUFFER_MS};
use crate::timing::{duration_header, program_date_ms, CutSegment, Segmenter};

const MIME: &str = "video/webm;codecs=avc1.42E01E,opus";
const TIMESLICE_MS: i32 = 250;
const TICK_MS: i32 = 40;
/// Segments one ffmpeg.wasm core remuxes before it is replaced by a fresh one (measured: the
/// 0.12.10 core traps with "memory access out of bounds" after about 120 runs).
const FFMPEG_RUNS_PER_CORE: u32 = 50;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(url: &str, init: &JsValue) -> Promise;
}

/// A remuxed segment waiting for upload.
struct Segment {
    ts: Vec<u8>,
    pdt_ms: f64,
    /// Wall-clock time of the segment's last frame, for the latency numbers.
    end_wall_ms: f64,
}

struct Pipeline {
    b: Broadcast,
    phase: Phase,
    splitter: WebmSplitter,
    init: Option<Vec<u8>>,
    segmenter: Segmenter,
    queue: UploadQueue<Segment>,
    blobs: VecDeque<Blob>,
    recorder: Option<MediaRecorder>,
    stream: Option<MediaStream>,
    audio: Option<AudioContext>,
    recorder_stopped: bool,
    ingest_done: bool,
    recording_start_wall: f64,
    last_error: Option<String>,
    sent: u64,
    bytes_sent: f64,
    attempts: u64,
    acks: VecDeque<(f64, f64)>,
    remux_ms_total: f64,
    media_ms_total: u64,
    latency_sum: f64,
    latency_max: f64,
    remuxed: u64,
    _closures: Vec<Closure<dyn FnMut(JsValue)>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<RefCell<Pipeline>>>> = const { RefCell::new(None) };
    static FFMPEG: RefCell<Option<Rc<FFmpeg>>> = const { RefCell::new(None) };
    static FFMPEG_LOG: RefCell<VecDeque<String>> = const { RefCell::new(VecDeque::new()) };
    static FFMPEG_RUNS: RefCell<u32> = const { RefCell::new(0) };
}

fn current() -> Option<Rc<RefCell<Pipeline>>> {
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
            end("").await;
            Ok(JsValue::TRUE)
        }
        Msg::GetStatus => Ok(current()
            .map(|p| to_js(&status(&p.borrow())))
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
    if let Some(p) = current() {
        if matches!(
            p.borrow().phase,
            Phase::Starting | Phase::Live | Phase::Stopping
        ) {
            return; // already running this or another broadcast
        }
    }
    let p = Rc::new(RefCell::new(Pipeline {
        segmenter: Segmenter::new(b.segment_ms),
        b,
        phase: Phase::Starting,
        splitter: WebmSplitter::new(),
        init: None,
        queue: UploadQueue::new(Backoff::default(), MAX_BUFFER_MS),
        blobs: VecDeque::new(),
        recorder: None,
        stream: None,
        audio: None,
        recorder_stopped: false,
        ingest_done: false,
        recording_start_wall: chrome::now_ms(),
        last_error: None,
        sent: 0,
        bytes_sent: 0.0,
        attempts: 0,
        acks: VecDeque::new(),
        remux_ms_total: 0.0,
        media_ms_total: 0,
        latency_sum: 0.0,
        latency_max: 0.0,
        remuxed: 0,
        _closures: Vec::new(),
    }));
    CURRENT.with(|c| *c.borrow_mut() = Some(p.clone()));
    if let Err(e) = capture(&p).await {
        fail(&p, e).await;
        return;
    }
    spawn_local(ingest_loop(p.clone()));
    spawn_local(upload_loop(p));
}

async fn capture(p: &Rc<RefCell<Pipeline>>) -> Result<(), String> {
    let (source, id, segment_ms) = {
        let st = p.borrow();
        (st.b.source, st.b.media_stream_id.clone(), st.b.segment_ms)
    };
    let constraints = match source {
        Source::Tab => {
            let id = id.ok_or("No tab to capture: click the toolbar icon on the tab to stream.")?;
            obj(json!({
                "audio": { "mandatory": { "chromeMediaSource": "tab", "chromeMediaSourceId": id } },
                "video": { "mandatory": { "chromeMediaSource": "tab", "chromeMediaSourceId": id,
                    "maxWidth": 1280, "maxHeight": 720, "maxFrameRate": 30 } },
            }))
        }
        Source::Camera => obj(json!({
            "audio": true,
            "video": { "width": { "ideal": 1280 }, "height": { "ideal": 720 },
                       "frameRate": { "ideal": 30, "max": 30 } },
        })),
    };
    let window = web_sys::window().ok_or("the offscreen document has no window")?;
    let devices = window
        .navigator()
        .media_devices()
        .map_err(|e| chrome::js_error(&e))?;
    let promise = devices
        .get_user_media_with_constraints(constraints.unchecked_ref())
        .map_err(|e| chrome::js_error(&e))?;
    let stream: MediaStream = JsFuture::from(promise)
        .await
        .map_err(|e| match source {
            Source::Tab => format!("Could not capture the tab: {}", chrome::js_error(&e)),
            Source::Camera => format!(
                "Could not open the camera and microphone ({}) — allow them for Chalkstream and try again.",
                chrome::js_error(&e)
            ),
        })?
        .unchecked_into();

    let audio = if source == Source::Tab && stream.get_audio_tracks().length() > 0 {
        // Tab capture mutes the tab for the user; play it back so the streamer still hears it.
        let ctx = AudioContext::new().map_err(|e| chrome::js_error(&e))?;
        let node = ctx
            .create_media_stream_source(&stream)
            .map_err(|e| chrome::js_error(&e))?;
        node.connect_with_audio_node(&ctx.destination())
            .map_err(|e| chrome::js_error(&e))?;
        Some(ctx)
    } else {
        None
    };

    let options = obj(json!({
        "mimeType": MIME,
        "videoBitsPerSecond": 2_500_000,
        "audioBitsPerSecond": 128_000,
        // Two keyframes per segment: a late keyframe then costs half a segment, not a whole one,
        // so segments stay within the server's target duration even when frames come slowly.
        "videoKeyFrameIntervalDuration": (segment_ms / 2).max(500),
    }));
    let recorder = MediaRecorder::new_with_media_stream_and_media_recorder_options(
        &stream,
        options.unchecked_ref(),
    )
    .map_err(|e| {
        format!(
            "This browser cannot record H.264 + Opus WebM: {}",
            chrome::js_error(&e)
        )
    })?;

    let weak = Rc::downgrade(p);
    let on_data = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
        let ev: BlobEvent = ev.unchecked_into();
        if let (Some(p), Some(blob)) = (weak.upgrade(), ev.data()) {
            p.borrow_mut().blobs.push_back(blob);
        }
    });
    let weak = Rc::downgrade(p);
    let on_stop = Closure::<dyn FnMut(JsValue)>::new(move |_| {
        if let Some(p) = weak.upgrade() {
            p.borrow_mut().recorder_stopped = true;
        }
    });
    let on_start = {
        let weak = Rc::downgrade(p);
        Closure::<dyn FnMut(JsValue)>::new(move |_| {
            if let Some(p) = weak.upgrade() {
                let mut st = p.borrow_mut();
                st.recording_start_wall = chrome::now_ms();
                st.phase = Phase::Live;
            }
        })
    };
    let on_ended = Closure::<dyn FnMut(JsValue)>::new(move |_| {
        spawn_local(end(
            "The captured tab or camera went away, so the broadcast ended.",
        ));
    });
    recorder.set_ondataavailable(Some(on_data.as_ref().unchecked_ref()));
    recorder.set_onstop(Some(on_stop.as_ref().unchecked_ref()));
    recorder.set_onstart(Some(on_start.as_ref().unchecked_ref()));
    for track in stream.get_video_tracks().iter() {
        let track: web_sys::MediaStreamTrack = track.unchecked_into();
        track.set_onended(Some(on_ended.as_ref().unchecked_ref()));
    }
    recorder
        .start_with_time_slice(TIMESLICE_MS)
        .map_err(|e| chrome::js_error(&e))?;

    let mut st = p.borrow_mut();
    st._closures.extend([on_data, on_stop, on_start, on_ended]);
    st.recorder = Some(recorder);
    st.stream = Some(stream);
    st.audio = audio;
    Ok(())
}

/// Stops recording; the loops then send what is left and end the stream.
async fn end(reason: &str) {
    let Some(p) = current() else { return };
    let mut st = p.borrow_mut();
    if !matches!(st.phase, Phase::Starting | Phase::Live) {
        return;
    }
    st.phase = Phase::Stopping;
    if !reason.is_empty() {
        st.last_error = Some(reason.to_string());
    }
    release(&mut st);
}

fn release(st: &mut Pipeline) {
    if let Some(r) = &st.recorder {
        if r.state() != web_sys::RecordingState::Inactive {
            let _ = r.stop();
        } else {
            st.recorder_stopped = true;
        }
    } else {
        st.recorder_stopped = true;
    }
    if let Some(s) = &st.stream {
        for t in s.get_tracks().iter() {
            t.unchecked_into::<web_sys::MediaStreamTrack>().stop();
        }
    }
    if let Some(a) = st.audio.take() {
        let _ = a.close();
    }
}

async fn fail(p: &Rc<RefCell<Pipeline>>, message: String) {
    let status = {
        let mut st = p.borrow_mut();
        st.phase = Phase::Failed;
        st.last_error = Some(message);
        release(&mut st);
        status(&st)
    };
    let _ = chrome::send(&Msg::Finished { status }).await;
}

async fn ffmpeg() -> Result<Rc<FFmpeg>, String> {
    if let Some(f) = FFMPEG.with(|f| f.borrow().clone()) {
        return Ok(f);
    }
    let ff = FFmpeg::new();
    let log = Closure::<dyn FnMut(JsValue)>::new(|ev: JsValue| {
        if let Some(m) = Reflect::get(&ev, &"message".into())
            .ok()
            .and_then(|m| m.as_string())
        {
            FFMPEG_LOG.with(|l| {
                let mut l = l.borrow_mut();
                l.push_back(m);
                if l.len() > 20 {
                    l.pop_front();
                }
            });
        }
    });
    ff.on("log", log.as_ref().unchecked_ref());
    log.forget(); // lives as long as the FFmpeg instance, which lives as long as the document
    let config = obj(json!({
        "coreURL": chrome::runtime_get_url("vendor/core/ffmpeg-core.js"),
        "wasmURL": chrome::runtime_get_url("vendor/core/ffmpeg-core.wasm"),
    }));
    ff.load(&config)
        .await
        .map_err(|e| format!("ffmpeg.wasm did not load: {}", chrome::js_error(&e)))?;
    let ff = Rc::new(ff);
    FFMPEG.with(|f| *f.borrow_mut() = Some(ff.clone()));
    Ok(ff)
}

/// Remuxes one cut to MPEG-TS: video copied, Opus -> AAC on the broadcast's frame grid, input
/// timestamps kept.
///
/// The input is the cut's pre-roll audio, its Clusters and the lookahead audio. The audio is
/// placed by its timestamps from the plan's first sample on (silence where the recording has
/// none; any offset over 5 ms is filled or trimmed at once, so every remux places a packet at
/// the same sample: the splitter already made the timestamps continuous), cut to exactly the
/// plan's samples, encoded, and only the packets of the frames inside the segment are kept: the
/// AAC encoder's priming frame and the lead and tail frames are dropped by packet index, so
/// consecutive segments tile the timeline.
async fn remux(input: &[u8], n: u64, cut: &CutSegment) -> Result<Vec<u8>, String> {
    let ff = ffmpeg().await?;
    let (src, dst) = (format!("in{n}.webm"), format!("out{n}.ts"));
    ff.write_file(&src, &Uint8Array::from(input))
        .await
        .map_err(|e| chrome::js_error(&e))?;
    FFMPEG_LOG.with(|l| l.borrow_mut().clear());
    let plan = cut.audio_plan();
    let audio_filter = format!(
        "aresample=async=1:min_hard_comp=0.005:first_pts={from},apad,atrim=start_pts={from}:end_pts={to}",
        from = plan.from_sample,
        to = plan.to_sample
    );
    let keep_packets = match plan.packets {
        0 => "noise=drop=1".to_string(),
        k => format!(
            "noise=drop='not(between(n\\,{}\\,{}))'",
            plan.first_packet,
            plan.first_packet + k - 1
        ),
    };
    // A cut trimmed to the target duration loses its media after `trim_at_ms` (output option:
    // compared with the kept input timestamps).
    let to = cut
        .trim_at_ms
        .map(|ms| format!("{}.{:03}", ms / 1000, ms % 1000));
    let mut args: Vec<&str> = vec![
        "-hide_banner",
        "-loglevel",
        "error",
        // The WebM header has every parameter a copy and the Opus decoder need: probing the
        // stream (decoding H.264 frames in wasm) only cost time, ~30% of a 720p remux.
        "-probesize",
        "32",
        "-analyzeduration",
        "0",
        "-i",
        &src,
        "-map",
        "0:v:0",
        "-map",
        "0:a:0?",
        "-c:v",
        "copy",
        "-af",
        &audio_filter,
        "-c:a",
        "aac",
        "-ar",
        "48000",
        "-b:a",
        "128k",
        "-bsf:a",
        &keep_packets,
    ];
    if let Some(to) = &to {
        args.extend(["-to", to]);
    }
    args.extend([
        "-copyts",
        "-output_ts_offset",
        "10",
        "-muxdelay",
        "0",
        "-muxpreload",
        "0",
        "-f",
        "mpegts",
        &dst,
    ]);
    let args: Array = args.into_iter().map(JsValue::from_str).collect();
    let code = ff.exec(&args).await.map_err(|e| chrome::js_error(&e));
    let out = match code {
        Ok(c) if c.as_f64() == Some(0.0) => ff
            .read_file(&dst)
            .await
            .map(|d| d.unchecked_into::<Uint8Array>().to_vec())
            .map_err(|e| chrome::js_error(&e)),
        Ok(c) => Err(format!(
            "ffmpeg.wasm failed ({:?}): {}",
            c.as_f64(),
            FFMPEG_LOG.with(|l| l.borrow().iter().cloned().collect::<Vec<_>>().join(" / "))
        )),
        Err(e) => Err(e),
    };
    // Keep memory flat: ffmpeg's in-memory files go away whatever happened, and the core is
    // restarted now and then, as its wasm heap can only grow.
    let _ = ff.delete_file(&src).await;
    let _ = ff.delete_file(&dst).await;
    let runs = FFMPEG_RUNS.with(|r| {
        *r.borrow_mut() += 1;
        *r.borrow()
    });
    if runs % FFMPEG_RUNS_PER_CORE == 0 || out.is_err() {
        ff.terminate();
        FFMPEG.with(|f| *f.borrow_mut() = None);
    }
    out
}

async fn ingest_loop(p: Rc<RefCell<Pipeline>>) {
    // Load ffmpeg.wasm while the first segment records.
    if let Err(e) = ffmpeg().await {
        fail(&p, e).await;
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
                        fail(
                            &p,
                            format!("Reading the recording failed: {}", chrome::js_error(&e)),
                        )
                        .await;
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
                        fail(&p, format!("The recording is not readable WebM: {e}")).await;
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
                    if !process(&p, cut).await {
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
            if !process(&p, cut).await {
                return;
            }
        }
    }
}

/// Remuxes one cut and queues it; false when the broadcast failed.
async fn process(p: &Rc<RefCell<Pipeline>>, cut: CutSegment) -> bool {
    let (input, n, start_wall) = {
        let mut st = p.borrow_mut();
        let Some(init) = st.init.clone() else {
            return true;
        };
        st.remuxed += 1;
        (cut.input(&init), st.remuxed, st.recording_start_wall)
    };
    let t0 = chrome::now_ms();
    let mut result = remux(&input, n, &cut).await;
    if result.is_err() {
        // A failed run replaced the core; one retry on the fresh core.
        result = remux(&input, n, &cut).await;
    }
    match result {
        Ok(ts) => {
            let mut st = p.borrow_mut();
            st.remux_ms_total += chrome::now_ms() - t0;
            st.media_ms_total += cut.duration_ms;
            let seg = Segment {
                ts,
                pdt_ms: program_date_ms(start_wall as u64, cut.start_ms) as f64,
                end_wall_ms: start_wall + (cut.start_ms + cut.duration_ms) as f64,
            };
            st.queue.push(seg, cut.duration_ms);
            true
        }
        Err(e) => {
            fail(p, format!("Turning the recording into HLS failed: {e}")).await;
            false
        }
    }
}

async fn upload_loop(p: Rc<RefCell<Pipeline>>) {
    loop {
        if p.borrow().phase == Phase::Failed {
            return;
        }
        let job = {
            let mut st = p.borrow_mut();
            let now = chrome::now_ms() as u64;
            st.queue.next(now).map(|s| {
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
            let (done, empty) = {
                let st = p.borrow();
                (st.ingest_done, st.queue.waiting() == 0)
            };
            if done && empty {
                finish(&p).await;
                return;
            }
            chrome::sleep(TICK_MS).await;
            continue;
        };
        let (server, session, token) = {
            let st = p.borrow();
            (
                st.b.server.clone(),
                st.b.session.clone(),
                st.b.token.clone(),
            )
        };
        let headers = Object::new();
        let set = |k: &str, v: &str| {
            let _ = Reflect::set(&headers, &k.into(), &v.into());
        };
        set("Content-Type", "video/mp2t");
        set("X-Duration", &duration_header(duration_ms));
        let pdt = js_sys::Date::new(&JsValue::from_f64(pdt_ms)).to_iso_string();
        set("X-Program-Date-Time", &String::from(pdt));
        if disc {
            set("X-Discontinuity", "1");
        }
        if !token.is_empty() {
            set("Authorization", &format!("Bearer {token}"));
        }
        let url = format!("{server}/ingest/{session}/{seq}.ts");
        let answer = http(&url, "PUT", &headers, Some(&body)).await;
        let status = answer.as_ref().map(|a| a.0);
        let said = answer
            .map(|a| a.1)
            .filter(|e| !e.is_empty())
            .map(|e| format!(" The server said: {e}"))
            .unwrap_or_default();
        let mut st = p.borrow_mut();
        st.attempts += 1;
        let now = chrome::now_ms();
        let outcome = classify(status);
        let size = body.length() as f64;
        match st.queue.settle(outcome, now as u64, chrome::jitter()) {
            Some(entry) => {
                st.sent += 1;
                st.bytes_sent += size;
                st.acks.push_back((now, size));
                while st.acks.front().is_some_and(|(t, _)| now - t > 10_000.0) {
                    st.acks.pop_front();
                }
                let latency = now - entry.payload.end_wall_ms;
                st.latency_sum += latency;
                st.latency_max = st.latency_max.max(latency);
                st.last_error = None;
            }
            None => {
                let server = st.b.server.clone();
                st.last_error = Some(match outcome {
                    Outcome::Acked => unreachable!("acked entries are returned"),
                    Outcome::Retry => unreachable_message(&server, status),
                    Outcome::Conflict => format!(
                        "The server at {server} already holds different bytes for segment {seq} (409); sending it as the next segment."
                    ),
                    Outcome::Fatal(s) => refusal_message(s, &server) + &said,
                });
            }
        }
        if let Outcome::Fatal(_) = outcome {
            let msg = st.last_error.clone().unwrap_or_default();
            drop(st);
            fail(&p, msg).await;
            return;
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
    if let Ok(signal) = abort_after(20_000) {
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

async fn finish(p: &Rc<RefCell<Pipeline>>) {
    let (server, session, token) = {
        let st = p.borrow();
        (
            st.b.server.clone(),
            st.b.session.clone(),
            st.b.token.clone(),
        )
    };
    let headers = Object::new();
    if !token.is_empty() {
        let _ = Reflect::set(
            &headers,
            &"Authorization".into(),
            &format!("Bearer {token}").into(),
        );
    }
    let url = format!("{server}/ingest/{session}/end");
    let mut attempt = 0;
    let outcome = loop {
        let status = http(&url, "POST", &headers, None).await.map(|a| a.0);
        attempt += 1;
        match (status, classify(status)) {
            (Some(200 | 201 | 404), _) => break Ok(()),
            (_, Outcome::Retry) if attempt < 20 => {
                chrome::sleep(Backoff::default().delay_ms(attempt, chrome::jitter()) as i32).await
            }
            (Some(s), _) => break Err(refusal_message(s, &server)),
            (None, _) => break Err(unreachable_message(&server, None)),
        }
    };
    let status = {
        let mut st = p.borrow_mut();
        match outcome {
            Ok(()) => st.phase = Phase::Ended,
            Err(e) => {
                st.phase = Phase::Failed;
                st.last_error = Some(format!("The stream could not be marked as ended: {e}"));
            }
        }
        status(&st)
    };
    let _ = chrome::send(&Msg::Finished { status }).await;
}

fn status(st: &Pipeline) -> Status {
    let now = chrome::now_ms();
    let window: f64 = st
        .acks
        .iter()
        .filter(|(t, _)| now - t <= 10_000.0)
        .map(|(_, b)| b)
        .sum();
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
        segments_sent: st.sent,
        segments_waiting: st.queue.waiting() as u64,
        segments_dropped: st.queue.dropped,
        bytes_sent: st.bytes_sent,
        upload_rate_bps: window * 8.0 / 10.0,
        attempts: st.attempts,
        last_error: st.last_error.clone(),
        remux_ms_total: st.remux_ms_total,
        media_ms_total: st.media_ms_total,
        ack_latency_ms_avg: if st.sent > 0 {
            st.latency_sum / st.sent as f64
        } else {
            0.0
        },
        ack_latency_ms_max: st.latency_max,
        js_heap_bytes: heap,
    }
}
