//! The recorder for browsers whose MediaRecorder makes no H.264 (Firefox): WebCodecs encodes
//! the camera's picture as H.264 (`avc1`, constrained baseline, as Chromium's recorder), the
//! sound is recorded as Opus, and [`crate::webm`] writes both as the WebM byte stream a MediaRecorder
//! would hand out, through the same [`Events`]. Everything after the recorder is unchanged.
//!
//! Frames come from a muted `<video>` playing the stream (`new VideoFrame(video)`: Firefox has
//! no `MediaStreamTrackProcessor`), taken when the video shows a new one, at most at the
//! preset's frame rate; a keyframe is asked for every `keyframe_interval_ms`, as the
//! MediaRecorder path asks Chromium. The sound is the browser's own MediaRecorder's Opus (a
//! second recorder, audio only), its packets read back with [`crate::ebml`]. Timestamps are
//! one clock (`performance.now()` since the start) for both tracks.
//!
//! WebCodecs is bound here by hand (`Reflect`), not through web-sys, whose WebCodecs types need
//! `--cfg web_sys_unstable_apis` for the whole build.

use std::cell::RefCell;
use std::rc::Rc;

use std::collections::VecDeque;

use js_sys::{Array, Function, Object, Reflect, Uint8Array};
use serde_json::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{Blob, BlobEvent, HtmlVideoElement, MediaRecorder, MediaStream};

use crate::bell::Bell;
use crate::capture::{Events, Settings};
use crate::ebml::WebmSplitter;
use crate::js::{self, obj};
use crate::webm::{self, Chunk, Muxer, Tracks};

/// H.264 constrained baseline 3.0, what Chromium's MediaRecorder makes.
const VIDEO_CODEC: &str = "avc1.42E01E";
/// The sound: the browser's MediaRecorder makes Opus WebM (48 kHz).
const OPUS_WEBM: &str = "audio/webm;codecs=opus";
const SAMPLE_RATE: u32 = 48_000;
/// How often the sound recorder hands out its bytes.
const SOUND_TIMESLICE_MS: i32 = 40;
/// Frames waiting in the video encoder past which a new frame is dropped (a slow machine).
pub(crate) const MAX_VIDEO_QUEUE: u32 = 3;

/// Whether this browser has what [`CodecRecorder`] needs.
pub fn available() -> bool {
    let global = js_sys::global();
    ["VideoEncoder", "VideoFrame"].iter().all(|name| Reflect::get(&global, &(*name).into()).is_ok_and(|v| v.is_function()))
        && MediaRecorder::is_type_supported(OPUS_WEBM)
}

pub(crate) fn class(name: &str) -> Result<Function, String> {
    Reflect::get(&js_sys::global(), &name.into())
        .ok()
        .and_then(|v| v.dyn_into().ok())
        .ok_or_else(|| format!("this browser has no {name}"))
}

pub(crate) fn call(target: &JsValue, method: &str, args: &[&JsValue]) -> Result<JsValue, String> {
    let f: Function = Reflect::get(target, &method.into())
        .ok()
        .and_then(|v| v.dyn_into().ok())
        .ok_or_else(|| format!("no {method}"))?;
    f.apply(target, &args.iter().copied().collect::<Array>()).map_err(|e| js::js_error(&e))
}

pub(crate) fn number(target: &JsValue, key: &str) -> f64 {
    Reflect::get(target, &key.into()).ok().and_then(|v| v.as_f64()).unwrap_or(0.0)
}

/// An encoded chunk's bytes.
pub(crate) fn chunk_bytes(chunk: &JsValue) -> Result<Vec<u8>, String> {
    let len = number(chunk, "byteLength") as u32;
    let buf = Uint8Array::new_with_length(len);
    call(chunk, "copyTo", &[&buf])?;
    Ok(buf.to_vec())
}

pub(crate) fn now() -> f64 {
    web_sys::window().and_then(|w| w.performance()).map_or_else(js::now_ms, |p| p.now())
}

/// The recorder's state, shared with the callbacks (and with [`crate::tracks`]'s recorder).
pub(crate) struct State {
    pub(crate) events: Events,
    pub(crate) muxer: Muxer,
    /// The H.264 decoder configuration, once the encoder gave it; the header waits for it.
    pub(crate) avcc: Option<Vec<u8>>,
    pub(crate) size: (u32, u32),
    /// The sound's channels and sample rate, as the header declares them.
    pub(crate) sound_format: (u8, u32),
    /// Until this time (`now()`), the header waits for the sound's format to be known.
    pub(crate) sound_format_due: Option<f64>,
    pub(crate) header_written: bool,
    pub(crate) failed: bool,
    pub(crate) stopped: bool,
    /// The times (ms) of the pictures given to the video encoder and not yet out of it, oldest
    /// first: the muxer holds the sound back for them ([`Muxer::video_pending`]).
    pub(crate) in_flight: VecDeque<u64>,
}

impl State {
    /// A recording that starts now, shared with its callbacks.
    pub(crate) fn new(events: Events, size: (u32, u32), sound_format: (u8, u32), sound_format_due: Option<f64>) -> Rc<RefCell<State>> {
        Rc::new(RefCell::new(State {
            events,
            muxer: Muxer::default(),
            avcc: None,
            size,
            sound_format,
            sound_format_due,
            header_written: false,
            failed: false,
            stopped: false,
            in_flight: VecDeque::new(),
        }))
    }

    /// Hands out what is ready to write, the header first.
    pub(crate) fn flush(&mut self, all: bool) {
        let mut out = Vec::new();
        if !self.header_written {
            let Some(avcc) = self.avcc.clone() else { return };
            if !all && self.sound_format_due.is_some_and(|due| now() < due) {
                return;
            }
            let (channels, sample_rate) = self.sound_format;
            out = webm::header(&Tracks { width: self.size.0, height: self.size.1, avcc, channels, sample_rate });
            self.header_written = true;
        }
        out.extend(self.muxer.drain(all));
        if out.is_empty() {
            return;
        }
        let parts = Array::of1(&Uint8Array::from(out.as_slice()));
        if let Ok(blob) = Blob::new_with_u8_array_sequence(&parts) {
            (self.events.data)(blob);
        }
    }

    /// Still recording: neither stopped nor failed.
    pub(crate) fn active(&self) -> bool {
        !self.stopped && !self.failed
    }

    /// The encoders are drained: everything left is written, then `stopped` fires.
    pub(crate) fn finish(&mut self) {
        self.flush(true);
        (self.events.stopped)();
    }

    /// A picture of timestamp `us` went into the video encoder: the sound waits for it.
    pub(crate) fn encoding(&mut self, us: f64) {
        // On the chunk's clock ([`State::video_output`]): whole ms of the same timestamp.
        self.in_flight.push_back((us / 1000.0).round().max(0.0) as u64);
        let oldest = self.in_flight.front().copied();
        self.muxer.video_pending(oldest);
    }

    /// The video encoder's output: the decoder configuration from the first chunk's metadata,
    /// the chunk into the muxer, and what is ready handed out.
    pub(crate) fn video_output(&mut self, chunk: &JsValue, meta: &JsValue) {
        if self.avcc.is_none() {
            let description = Reflect::get(meta, &"decoderConfig".into())
                .and_then(|c| Reflect::get(&c, &"description".into()))
                .ok()
                .filter(|d| !d.is_undefined());
            if let Some(d) = description {
                self.avcc = Some(Uint8Array::new(&d).to_vec());
            }
        }
        let key = Reflect::get(chunk, &"type".into()).ok().and_then(|t| t.as_string()).as_deref() == Some("key");
        let ms = (number(chunk, "timestamp") / 1000.0).round().max(0.0) as u64;
        // This picture is out, and any the encoder skipped before it.
        while self.in_flight.front().is_some_and(|&t| t <= ms) {
            self.in_flight.pop_front();
        }
        let oldest = self.in_flight.front().copied();
        self.muxer.video_pending(oldest);
        if let Ok(data) = chunk_bytes(chunk) {
            self.muxer.push_video(Chunk { ms, key, data });
        }
        self.flush(false);
    }
}

/// Marks the recording stopped and clears its timer; false when it already was.
pub(crate) fn stopping(state: &RefCell<State>, timer: i32) -> bool {
    if state.borrow().stopped {
        return false;
    }
    state.borrow_mut().stopped = true;
    if let Some(w) = web_sys::window() {
        w.clear_interval_with_handle(timer);
    }
    true
}

/// Hands out everything a WebCodecs encoder still holds (its output callback takes it), then
/// closes it.
pub(crate) async fn drain(encoder: &JsValue) {
    if let Ok(p) = call(encoder, "flush", &[]) {
        let _ = JsFuture::from(js_sys::Promise::from(p)).await;
    }
    let _ = call(encoder, "close", &[]);
}

/// An encoder failed: the broadcast ends as when the camera goes away. The callback runs with
/// the state released, since ending stops this recorder.
pub(crate) fn fail(state: &Rc<RefCell<State>>) {
    let mut ended = {
        let mut st = state.borrow_mut();
        if st.failed {
            return;
        }
        st.failed = true;
        std::mem::replace(&mut st.events.ended, Box::new(|| {}))
    };
    ended();
    state.borrow_mut().events.ended = ended;
}

/// The sound's recording, read in order by [`sound_loop`].
#[derive(Default)]
struct Sound {
    blobs: VecDeque<Blob>,
    /// When the sound recorder started, on the pictures' clock.
    offset_ms: Option<f64>,
    /// The recorder stopped: no more blobs come.
    stopped: bool,
    /// Everything it recorded is in the muxer.
    done: bool,
    /// Rung for every blob and when the recorder stops: [`sound_loop`] waits on it rather than
    /// polling (every timer is an object in the page's garbage-collected heap, see
    /// [`crate::bell`]).
    bell: Bell,
}

/// Reads the sound recorder's WebM as it comes and puts its Opus packets into the muxer.
async fn sound_loop(sound: Rc<RefCell<Sound>>, state: Rc<RefCell<State>>) {
    let mut splitter = WebmSplitter::with_blocks();
    let bell = sound.borrow().bell.clone();
    loop {
        let (blob, stopped) = {
            let mut s = sound.borrow_mut();
            (s.blobs.pop_front(), s.stopped)
        };
        let Some(blob) = blob else {
            if stopped {
                break;
            }
            bell.wait().await;
            continue;
        };
        let Ok(buf) = JsFuture::from(blob.array_buffer()).await else { break };
        if splitter.push(&Uint8Array::new(&buf).to_vec()).is_err() {
            break;
        }
        let offset = sound.borrow().offset_ms.unwrap_or(0.0).max(0.0) as u64;
        let mut st = state.borrow_mut();
        for block in splitter.take_blocks() {
            if let (false, Some(data)) = (block.video, block.payload()) {
                st.muxer.push_audio(Chunk { ms: offset + block.ms, key: true, data: data.to_vec() });
            }
        }
        st.flush(false);
    }
    sound.borrow_mut().done = true;
}

/// A running WebCodecs recording of a MediaStream (its first video and audio tracks).
pub struct CodecRecorder {
    state: Rc<RefCell<State>>,
    video: HtmlVideoElement,
    video_encoder: JsValue,
    sound_recorder: Option<MediaRecorder>,
    sound: Rc<RefCell<Sound>>,
    timer: i32,
    _closures: Vec<Closure<dyn FnMut(JsValue)>>,
    /// The encoder output callbacks (chunk, metadata).
    _outputs: Vec<Closure<dyn FnMut(JsValue, JsValue)>>,
    _tick: Closure<dyn FnMut()>,
}

impl CodecRecorder {
    /// Starts encoding `stream`; `events.started` fires at once (the timeline's zero).
    pub async fn start(stream: &MediaStream, settings: &Settings, mut events: Events) -> Result<CodecRecorder, String> {
        let document = web_sys::window().and_then(|w| w.document()).ok_or("no document")?;
        let video: HtmlVideoElement = document.create_element("video").map_err(|e| js::js_error(&e))?.unchecked_into();
        video.set_muted(true);
        let _ = Reflect::set(&video, &"playsInline".into(), &JsValue::TRUE);
        let picture = MediaStream::new_with_tracks(&stream.get_video_tracks()).map_err(|e| js::js_error(&e))?;
        video.set_src_object(Some(&picture));
        JsFuture::from(video.play().map_err(|e| js::js_error(&e))?)
            .await
            .map_err(|e| format!("The camera's picture did not start: {}", js::js_error(&e)))?;
        // The encoder is configured at the picture's own size.
        for _ in 0..200 {
            if video.video_width() > 0 {
                break;
            }
            js::sleep(10).await;
        }
        let size = (video.video_width() & !1, video.video_height() & !1);
        if size.0 == 0 {
            return Err("The camera gave no picture.".into());
        }
        (events.started)();
        let t0 = now();
        let state = State::new(events, size, (1, SAMPLE_RATE), None);

        // Video: encoder, output into the muxer.
        let s = state.clone();
        let on_video = Closure::<dyn FnMut(JsValue, JsValue)>::new(move |chunk: JsValue, meta: JsValue| {
            s.borrow_mut().video_output(&chunk, &meta);
        });
        let s = state.clone();
        let on_error = Closure::<dyn FnMut(JsValue)>::new(move |_e: JsValue| fail(&s));
        let init = Object::new();
        let _ = Reflect::set(&init, &"output".into(), on_video.as_ref());
        let _ = Reflect::set(&init, &"error".into(), on_error.as_ref());
        let video_encoder = Reflect::construct(&class("VideoEncoder")?, &Array::of1(&init)).map_err(|e| js::js_error(&e))?;
        let fps = settings.quality.frame_rate();
        call(
            &video_encoder,
            "configure",
            &[&obj(json!({
                "codec": VIDEO_CODEC, "width": size.0, "height": size.1,
                "bitrate": settings.quality.video_bps(), "framerate": fps,
                "latencyMode": "realtime", "avc": { "format": "avc" },
            }))],
        )
        .map_err(|e| format!("This browser cannot encode H.264 ({e})."))?;

        // Sound: the browser's own recorder makes Opus in WebM (Firefox does); its packets go into
        // the muxer on the same clock. (Web Audio would need an output device to run at all,
        // which a headless or muted machine lacks.)
        let mut closures = vec![on_error];
        let sound = Rc::new(RefCell::new(Sound::default()));
        let mut sound_recorder = None;
        if let Ok(track) = stream.get_audio_tracks().get(0).dyn_into::<web_sys::MediaStreamTrack>() {
            let tracks = MediaStream::new_with_tracks(&Array::of1(&track)).map_err(|e| js::js_error(&e))?;
            let options = obj(json!({ "mimeType": OPUS_WEBM, "audioBitsPerSecond": 128_000 }));
            let recorder = MediaRecorder::new_with_media_stream_and_media_recorder_options(&tracks, options.unchecked_ref())
                .map_err(|e| format!("This browser cannot record Opus: {}", js::js_error(&e)))?;
            let (a, b, c) = (sound.clone(), sound.clone(), sound.clone());
            let on_start = Closure::<dyn FnMut(JsValue)>::new(move |_| a.borrow_mut().offset_ms = Some(now() - t0));
            let on_data = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
                if let Some(blob) = ev.unchecked_into::<BlobEvent>().data() {
                    let bell = {
                        let mut s = b.borrow_mut();
                        s.blobs.push_back(blob);
                        s.bell.clone()
                    };
                    bell.ring();
                }
            });
            let on_stop = Closure::<dyn FnMut(JsValue)>::new(move |_| {
                let bell = {
                    let mut s = c.borrow_mut();
                    s.stopped = true;
                    s.bell.clone()
                };
                bell.ring();
            });
            recorder.set_onstart(Some(on_start.as_ref().unchecked_ref()));
            recorder.set_ondataavailable(Some(on_data.as_ref().unchecked_ref()));
            recorder.set_onstop(Some(on_stop.as_ref().unchecked_ref()));
            recorder.start_with_time_slice(SOUND_TIMESLICE_MS).map_err(|e| js::js_error(&e))?;
            closures.extend([on_start, on_data, on_stop]);
            spawn_local(sound_loop(sound.clone(), state.clone()));
            sound_recorder = Some(recorder);
        } else {
            sound.borrow_mut().stopped = true;
        }

        // Pictures: a new frame of the video, when it shows one, with a keyframe now and then.
        let frame_class = class("VideoFrame")?;
        let encoder = video_encoder.clone();
        let s = state.clone();
        let v = video.clone();
        let interval = settings.keyframe_interval_ms as f64;
        let mut last_time = -1.0;
        let mut last_key: Option<f64> = None;
        // A live video's clock moves on between frames too: pictures are taken at most at the
        // preset's frame rate.
        let spacing = 1000.0 / f64::from(fps.max(1)) - 2.0;
        let mut last_frame = f64::NEG_INFINITY;
        let tick = Closure::<dyn FnMut()>::new(move || {
            let shown = v.current_time();
            if v.ready_state() < 2 || shown == last_time || number(&encoder, "encodeQueueSize") as u32 > MAX_VIDEO_QUEUE {
                return;
            }
            let ms = now() - t0;
            if ms - last_frame < spacing {
                return;
            }
            last_time = shown;
            last_frame = ms;
            let key = last_key.is_none_or(|k| ms - k >= interval);
            let us = (ms * 1000.0).round();
            let init = obj(json!({ "timestamp": us }));
            if let Ok(frame) = Reflect::construct(&frame_class, &Array::of2(&v, &init)) {
                if call(&encoder, "encode", &[&frame, &obj(json!({ "keyFrame": key }))]).is_ok() {
                    if key {
                        last_key = Some(ms);
                    }
                    s.borrow_mut().encoding(us);
                }
                let _ = call(&frame, "close", &[]);
            }
        });
        let window = web_sys::window().ok_or("no window")?;
        // Twice the frame rate: a new picture is taken within half a frame of being shown.
        let timer = window
            .set_interval_with_callback_and_timeout_and_arguments_0(tick.as_ref().unchecked_ref(), (500 / fps.max(1)) as i32)
            .map_err(|e| js::js_error(&e))?;

        Ok(CodecRecorder {
            state,
            video,
            video_encoder,
            sound_recorder,
            sound,
            timer,
            _closures: closures,
            _outputs: vec![on_video],
            _tick: tick,
        })
    }

    /// Still recording.
    pub fn active(&self) -> bool {
        self.state.borrow().active()
    }

    /// Stops taking pictures and sound, flushes both encoders, writes what is left, then fires
    /// `stopped`. False when it had already stopped.
    pub fn stop(&self) -> bool {
        if !stopping(&self.state, self.timer) {
            return false;
        }
        if let Some(r) = &self.sound_recorder {
            if r.state() != web_sys::RecordingState::Inactive {
                let _ = r.stop();
            }
        }
        self.video.set_src_object(None);
        let (video, sound, state) = (self.video_encoder.clone(), self.sound.clone(), self.state.clone());
        spawn_local(async move {
            drain(&video).await;
            // The sound recorder's last bytes, at most a second later.
            for _ in 0..100 {
                if sound.borrow().done {
                    break;
                }
                js::sleep(10).await;
            }
            state.borrow_mut().finish();
        });
        true
    }
}
