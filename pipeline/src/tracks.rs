//! The recorder for a captured tab on Chromium: both tracks are read with
//! `MediaStreamTrackProcessor`s, encoded with WebCodecs (`VideoEncoder` H.264, `AudioEncoder`
//! Opus), and [`crate::webm`] writes them as the WebM byte stream a MediaRecorder would hand
//! out, through the same [`Events`]. Everything after the recorder is unchanged.
//!
//! Why not Chromium's MediaRecorder, which a camera still uses: while it records a captured
//! tab's sound, Chromium's renderer keeps about 140 KiB a minute that it never gives back (about
//! 16 MiB in a two-hour broadcast). `node bench/tabcapture.mjs` shows it with none of our code,
//! and shows this path flat (BENCHMARKS.md, "Extension memory").
//!
//! Timing: each track's timestamps are the browser's own (capture time, in µs), placed on the
//! recording's timeline where that track's first frame arrived. Pictures are encoded as they
//! come, at most [`MAX_VIDEO_QUEUE`] waiting in the encoder; when the tab shows nothing new for
//! [`REPEAT_AFTER_MS`] (a still page gives no frames), the last picture is encoded again, so
//! the cutter always has pictures and keyframes to cut at.
//!
//! The sound is read and encoded in a worker ([`SOUND_WORKER`]), not on this document's main
//! thread: there, while the camera was composed into 1080p pictures, three sound frames in four
//! never reached the reader (283 of about 1,000 in 10 s; the recording had over 40 gaps and
//! lost its last 3 s). Read in the worker, all of them did. Pictures stay here: a picture lost
//! lowers the frame rate, a sound frame lost is a gap.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Object, Reflect};
use serde_json::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{MediaStream, MediaStreamTrack};

use crate::capture::{Events, Settings};
use crate::encode::{call, class, drain, fail, now, number, stopping, State, MAX_VIDEO_QUEUE};
use crate::js::{self, obj};
use crate::webm::Chunk;

/// A still tab gets its last picture encoded again after this long without a new one.
pub const REPEAT_AFTER_MS: f64 = 250.0;
/// How often the repeat is checked.
const REPEAT_CHECK_MS: i32 = 50;
/// The header waits this long for the sound's format (its first samples) before it is written
/// with [`DEFAULT_SOUND`].
const SOUND_FORMAT_WAIT_MS: f64 = 3_000.0;
/// Chromium's tab and Web Audio tracks: 48 kHz stereo.
const DEFAULT_SOUND: (u8, u32) = (2, 48_000);
/// Sound frames (10 ms each) the processor may hold while the encoder is busy: none is dropped
/// short of a two-second stall.
const SOUND_BUFFER: u32 = 200;
const SOUND_BPS: u32 = 128_000;
/// The worker that reads and encodes the sound (`extension/static/sound-worker.js`, beside the
/// offscreen document).
pub const SOUND_WORKER: &str = "sound-worker.js";
/// How long a stop waits for the worker to hand out the sound it still holds.
const SOUND_STOP_WAIT_MS: i32 = 3_000;

/// Whether this browser has what [`TrackRecorder`] needs (Chromium 94+) and its encoders take
/// the preset's H.264 and 48 kHz stereo Opus; where not, a tab keeps Chromium's MediaRecorder.
pub async fn available(settings: &Settings) -> bool {
    let global = js_sys::global();
    let present = ["MediaStreamTrackProcessor", "VideoEncoder", "VideoFrame", "AudioEncoder", "Worker"]
        .iter()
        .all(|name| Reflect::get(&global, &(*name).into()).is_ok_and(|v| v.is_function()));
    present
        && supported("VideoEncoder", video_config(settings)).await
        && supported("AudioEncoder", sound_config(DEFAULT_SOUND)).await
}

/// `isConfigSupported`'s answer.
async fn supported(class_name: &str, config: JsValue) -> bool {
    let Ok(class) = class(class_name) else { return false };
    let Ok(p) = call(&class, "isConfigSupported", &[&config]) else { return false };
    match JsFuture::from(js_sys::Promise::from(p)).await {
        Ok(r) => Reflect::get(&r, &"supported".into()).ok().and_then(|v| v.as_bool()).unwrap_or(false),
        Err(_) => false,
    }
}

fn video_config(settings: &Settings) -> JsValue {
    let size = settings.quality.size();
    obj(json!({
        "codec": settings.quality.avc_codec(), "width": size.0, "height": size.1,
        "bitrate": settings.quality.video_bps(), "framerate": settings.quality.frame_rate(),
        "latencyMode": "realtime", "avc": { "format": "avc" },
    }))
}

fn sound_config((channels, rate): (u8, u32)) -> JsValue {
    obj(json!({ "codec": "opus", "sampleRate": rate, "numberOfChannels": channels, "bitrate": SOUND_BPS }))
}

/// Where a track's frames go on the recording's timeline.
#[derive(Clone, Copy)]
struct Clock {
    /// The first frame's own timestamp (µs).
    first_us: f64,
    /// Its place on the timeline (µs since the recording started).
    at_us: f64,
}

impl Clock {
    fn place(&self, us: f64) -> f64 {
        self.at_us + (us - self.first_us)
    }
}

/// The picture side: the encoder and what it needs to pace keyframes and repeats.
struct Pictures {
    encoder: JsValue,
    clock: Option<Clock>,
    /// The last picture given to the encoder (ours, re-stamped), kept to encode again.
    last: Option<JsValue>,
    /// Its time on the timeline (µs).
    last_us: f64,
    last_key_us: Option<f64>,
    keyframe_interval_us: f64,
    frame_class: js_sys::Function,
}

impl Pictures {
    /// Encodes `frame` (the browser's or a repeat) as the picture at `us` on the timeline.
    /// The frame given stays the caller's to close.
    fn encode(&mut self, state: &RefCell<State>, frame: &JsValue, us: f64) {
        if us <= self.last_us || number(&self.encoder, "encodeQueueSize") as u32 > MAX_VIDEO_QUEUE {
            return;
        }
        let us = us.round();
        let Ok(ours) = Reflect::construct(&self.frame_class, &Array::of2(frame, &obj(json!({ "timestamp": us })))) else {
            return;
        };
        let key = self.last_key_us.is_none_or(|k| us - k >= self.keyframe_interval_us);
        if call(&self.encoder, "encode", &[&ours, &obj(json!({ "keyFrame": key }))]).is_err() {
            let _ = call(&ours, "close", &[]);
            return;
        }
        if key {
            self.last_key_us = Some(us);
        }
        self.last_us = us;
        state.borrow_mut().encoding(us);
        if let Some(old) = self.last.replace(ours) {
            let _ = call(&old, "close", &[]);
        }
    }

    fn release(&mut self) {
        if let Some(old) = self.last.take() {
            let _ = call(&old, "close", &[]);
        }
    }
}

/// The sound side: read and encoded by the worker, placed and muxed here.
struct Sound {
    worker: JsValue,
    clock: Option<Clock>,
    /// The sound came in another format than the header declared: it is left out.
    off: bool,
    last_flush: f64,
    /// Resolves a stop's wait once the worker handed out everything.
    stopped: Option<js_sys::Function>,
    /// The stop's wait is over and the recording was written to its end: whatever the worker
    /// still says is too late.
    done: bool,
}

impl Sound {
    /// What the worker says ([`SOUND_WORKER`]'s messages). True when the recording must fail
    /// (the caller does so with this side released: failing stops the recorder).
    fn message(&mut self, state: &Rc<RefCell<State>>, data: &JsValue, t0: f64, timeslice: f64) -> bool {
        if self.done {
            return false;
        }
        let get = |key: &str| Reflect::get(data, &key.into()).unwrap_or(JsValue::UNDEFINED);
        let format = get("format");
        if let Some(format) = format.dyn_ref::<Array>() {
            let format = (format.get(0).as_f64().unwrap_or(0.0) as u8, format.get(1).as_f64().unwrap_or(0.0) as u32);
            let mut st = state.borrow_mut();
            if st.header_written && st.sound_format != format {
                self.off = true; // the header went out without it, declaring another format
            } else {
                st.sound_format = format;
                st.sound_format_due = None;
            }
            // The worker's clock counts from the Unix epoch; this document's from its own origin.
            let origin = web_sys::window().and_then(|w| w.performance()).map_or(0.0, |p| p.time_origin());
            let at_ms = number(data, "at_ms") - origin;
            self.clock = Some(Clock { first_us: number(data, "first_us"), at_us: (at_ms - t0).max(0.0) * 1000.0 });
        }
        let chunks = get("chunks");
        if let (Some(chunks), Some(clock), false) = (chunks.dyn_ref::<Array>(), self.clock, self.off) {
            let mut st = state.borrow_mut();
            for c in chunks.iter() {
                let c: Array = c.unchecked_into();
                // The encoder's chunks carry its input's timestamps: placed on the timeline.
                let ms = (clock.place(c.get(0).as_f64().unwrap_or(0.0)) / 1000.0).round().max(0.0) as u64;
                let data = js_sys::Uint8Array::new(&c.get(1)).to_vec();
                st.muxer.push_audio(Chunk { ms, key: true, data });
            }
            let t = now();
            if t - self.last_flush >= timeslice {
                self.last_flush = t;
                st.flush(false);
            }
        }
        if get("off").is_truthy() {
            // Its format cannot be encoded: the broadcast goes on without sound, and a header
            // still to come declares the default.
            self.off = true;
            let mut st = state.borrow_mut();
            if !st.header_written {
                st.sound_format = DEFAULT_SOUND;
            }
        }
        if get("stopped").is_truthy() {
            if let Some(resolve) = self.stopped.take() {
                let _ = resolve.call0(&JsValue::NULL);
            }
        }
        get("error").is_string() && state.borrow().active()
    }
}

/// A running recording of a captured tab's (composed) stream, its first video and audio tracks.
pub struct TrackRecorder {
    state: Rc<RefCell<State>>,
    pictures: Rc<RefCell<Pictures>>,
    sound: Option<Rc<RefCell<Sound>>>,
    reader: JsValue,
    timer: i32,
    _tick: Closure<dyn FnMut()>,
    _closures: Vec<Closure<dyn FnMut(JsValue)>>,
    _on_video: Closure<dyn FnMut(JsValue, JsValue)>,
}

/// The `ReadableStream` of the track's frames.
fn readable(track: &MediaStreamTrack, max_buffer: Option<u32>) -> Result<JsValue, String> {
    let init = Object::new();
    let _ = Reflect::set(&init, &"track".into(), track);
    if let Some(n) = max_buffer {
        let _ = Reflect::set(&init, &"maxBufferSize".into(), &n.into());
    }
    let processor = Reflect::construct(&class("MediaStreamTrackProcessor")?, &Array::of1(&init)).map_err(|e| js::js_error(&e))?;
    Reflect::get(&processor, &"readable".into()).map_err(|e| js::js_error(&e))
}

/// The next frame, or `None` when the track ended or the reader was cancelled.
async fn next(reader: &JsValue) -> Result<Option<JsValue>, String> {
    let p: js_sys::Promise = call(reader, "read", &[])?.unchecked_into();
    let r = JsFuture::from(p).await.map_err(|e| js::js_error(&e))?;
    if Reflect::get(&r, &"done".into()).ok().and_then(|d| d.as_bool()).unwrap_or(true) {
        return Ok(None);
    }
    Ok(Reflect::get(&r, &"value".into()).ok())
}

/// The next frame while the recording goes on: `None` once the track ended, the recorder
/// stopped (a frame read meanwhile is closed) or the reader failed (the recording fails).
async fn next_while_recording(reader: &JsValue, state: &Rc<RefCell<State>>) -> Option<JsValue> {
    let frame = match next(reader).await {
        Ok(f) => f?,
        Err(_) => {
            if !state.borrow().stopped {
                fail(state);
            }
            return None;
        }
    };
    if state.borrow().stopped {
        let _ = call(&frame, "close", &[]);
        return None;
    }
    Some(frame)
}

fn encoder(name: &str, output: &Closure<dyn FnMut(JsValue, JsValue)>, error: &Closure<dyn FnMut(JsValue)>) -> Result<JsValue, String> {
    let init = Object::new();
    let _ = Reflect::set(&init, &"output".into(), output.as_ref());
    let _ = Reflect::set(&init, &"error".into(), error.as_ref());
    Reflect::construct(&class(name)?, &Array::of1(&init)).map_err(|e| js::js_error(&e))
}

impl TrackRecorder {
    /// Starts encoding `stream`; `events.started` fires at once (the timeline's zero).
    pub fn start(stream: &MediaStream, settings: &Settings, mut events: Events) -> Result<TrackRecorder, String> {
        let video: MediaStreamTrack =
            stream.get_video_tracks().get(0).dyn_into().map_err(|_| "The tab gave no picture.".to_string())?;
        let audio: Option<MediaStreamTrack> = stream.get_audio_tracks().get(0).dyn_into().ok();
        let size = settings.quality.size();
        (events.started)();
        let t0 = now();
        let state = State::new(events, size, DEFAULT_SOUND, audio.as_ref().map(|_| t0 + SOUND_FORMAT_WAIT_MS));
        let s = state.clone();
        let on_error = Closure::<dyn FnMut(JsValue)>::new(move |_e: JsValue| fail(&s));

        // Pictures.
        let s = state.clone();
        let on_video = Closure::<dyn FnMut(JsValue, JsValue)>::new(move |chunk: JsValue, meta: JsValue| {
            s.borrow_mut().video_output(&chunk, &meta);
        });
        let video_encoder = encoder("VideoEncoder", &on_video, &on_error)?;
        call(&video_encoder, "configure", &[&video_config(settings)])
            .map_err(|e| format!("This browser cannot encode H.264 ({e})."))?;
        let pictures = Rc::new(RefCell::new(Pictures {
            encoder: video_encoder,
            clock: None,
            last: None,
            last_us: f64::NEG_INFINITY,
            last_key_us: None,
            keyframe_interval_us: settings.keyframe_interval_ms as f64 * 1000.0,
            frame_class: class("VideoFrame")?,
        }));
        let reader = call(&readable(&video, None)?, "getReader", &[])?;
        spawn_local(picture_loop(reader.clone(), pictures.clone(), state.clone(), t0));

        // Sound: read and encoded by the worker; flushed with the pictures, or on its own when
        // the tab shows nothing new.
        let mut closures = vec![on_error];
        let sound = match audio {
            Some(track) => {
                let worker = Reflect::construct(&class("Worker")?, &Array::of1(&SOUND_WORKER.into())).map_err(|e| js::js_error(&e))?;
                let sound = Rc::new(RefCell::new(Sound { worker: worker.clone(), clock: None, off: false, last_flush: f64::NEG_INFINITY, stopped: None, done: false }));
                let (snd, s) = (sound.clone(), state.clone());
                let timeslice = f64::from(settings.timeslice_ms.max(1));
                let on_message = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
                    let data = Reflect::get(&ev, &"data".into()).unwrap_or(JsValue::UNDEFINED);
                    if snd.borrow_mut().message(&s, &data, t0, timeslice) {
                        fail(&s);
                    }
                });
                let _ = Reflect::set(&worker, &"onmessage".into(), on_message.as_ref());
                let _ = Reflect::set(&worker, &"onerror".into(), closures[0].as_ref());
                closures.push(on_message);
                let sound_readable = readable(&track, Some(SOUND_BUFFER))?;
                let init = obj(json!({ "bitrate": SOUND_BPS }));
                let _ = Reflect::set(&init, &"readable".into(), &sound_readable);
                let start = Object::new();
                let _ = Reflect::set(&start, &"start".into(), &init);
                call(&worker, "postMessage", &[&start, &Array::of1(&sound_readable)])?;
                Some(sound)
            }
            None => None,
        };

        // A still tab: its last picture again.
        let (p, s) = (pictures.clone(), state.clone());
        let tick = Closure::<dyn FnMut()>::new(move || {
            let mut p = p.borrow_mut();
            // Placed right after the last picture, so a new one (placed at its capture time,
            // a little before now) still comes after it.
            let us = p.last_us + REPEAT_AFTER_MS * 1000.0;
            if s.borrow().stopped || (now() - t0) * 1000.0 < us {
                return;
            }
            if let Some(last) = p.last.clone() {
                p.encode(&s, &last, us);
            }
        });
        let window = web_sys::window().ok_or("no window")?;
        let timer = window
            .set_interval_with_callback_and_timeout_and_arguments_0(tick.as_ref().unchecked_ref(), REPEAT_CHECK_MS)
            .map_err(|e| js::js_error(&e))?;

        Ok(TrackRecorder { state, pictures, sound, reader, timer, _tick: tick, _closures: closures, _on_video: on_video })
    }

    /// Still recording.
    pub fn active(&self) -> bool {
        self.state.borrow().active()
    }

    /// Stops reading, flushes both encoders, writes what is left, then fires `stopped`. False
    /// when it had already stopped.
    pub fn stop(&self) -> bool {
        if !stopping(&self.state, self.timer) {
            return false;
        }
        let _ = call(&self.reader, "cancel", &[]);
        let video = self.pictures.borrow().encoder.clone();
        // The worker hands out what its encoder holds, then says so (or is given up on).
        let sound_done = self.sound.as_ref().map(|sound| {
            let done = js_sys::Promise::new(&mut |resolve, _| sound.borrow_mut().stopped = Some(resolve));
            let _ = call(&sound.borrow().worker, "postMessage", &[&obj(json!({ "stop": true }))]);
            (sound.clone(), done)
        });
        let (pictures, state) = (self.pictures.clone(), self.state.clone());
        spawn_local(async move {
            drain(&video).await;
            if let Some((sound, done)) = sound_done {
                let timeout = js_sys::Promise::new(&mut |resolve, _| {
                    if let Some(w) = web_sys::window() {
                        let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, SOUND_STOP_WAIT_MS);
                    }
                });
                let _ = JsFuture::from(js_sys::Promise::race(&Array::of2(&done, &timeout))).await;
                let mut sound = sound.borrow_mut();
                sound.done = true;
                let _ = call(&sound.worker, "terminate", &[]);
            }
            pictures.borrow_mut().release();
            state.borrow_mut().finish();
        });
        true
    }
}

/// Reads the pictures as they come and encodes each at its own time.
async fn picture_loop(reader: JsValue, pictures: Rc<RefCell<Pictures>>, state: Rc<RefCell<State>>, t0: f64) {
    while let Some(frame) = next_while_recording(&reader, &state).await {
        let own = number(&frame, "timestamp");
        let mut p = pictures.borrow_mut();
        let clock = *p.clock.get_or_insert(Clock { first_us: own, at_us: (now() - t0) * 1000.0 });
        p.encode(&state, &frame, clock.place(own));
        drop(p);
        let _ = call(&frame, "close", &[]);
    }
}
