//! Capture: the MediaStream (tab or camera), the one MediaRecorder that encodes it, and what is
//! composed into a tab's stream before it is recorded (its audio played back to the streamer and
//! mixed with the microphone by `mixing`, the camera in a corner by `compositing`).
//!
//! The pipeline sees a [`Capture`] and the [`Events`] it asked for, nothing else. The stream is
//! opened by [`open`] and recorded by [`record`]; whatever composes a stream before it is
//! recorded (microphone mixing, a camera overlay) goes between the two and stays in this module.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, BlobEvent, MediaRecorder, MediaStream, MediaStreamTrack};

use crate::js::{self, obj};
use crate::compositing::{self, Compositor};
use crate::encode::{self, CodecRecorder};
use crate::tracks::{self, TrackRecorder};
use crate::broadcast::{Mic, Source};
use crate::mixing::{self, Mixer};
use crate::presets::{Overlay, Quality};

/// H.264 + Opus in WebM: the one format the segmenter reads.
pub const MIME: &str = "video/webm;codecs=avc1.42E01E,opus";

/// Whether this browser's MediaRecorder makes [`MIME`] (Chromium does; Firefox records VP8
/// only, and Safari no WebM).
pub fn records_h264() -> bool {
    MediaRecorder::is_type_supported(MIME)
}

/// Whether this browser can record a camera for the pipeline: with its MediaRecorder, or with
/// WebCodecs ([`crate::encode`]; Firefox).
pub fn can_record() -> bool {
    records_h264() || encode::available()
}

/// Whether this browser can share a screen or window (`getDisplayMedia`; desktop browsers, not
/// phones).
pub fn can_share_screen() -> bool {
    web_sys::window()
        .and_then(|w| w.navigator().media_devices().ok())
        .and_then(|d| js_sys::Reflect::get(&d, &"getDisplayMedia".into()).ok())
        .is_some_and(|f| f.is_function())
}

/// What records: Chromium's MediaRecorder (a camera or a screen), WebCodecs fed by track
/// processors (a tab, on Chromium: [`crate::tracks`] says why), or WebCodecs fed by a video
/// element where the MediaRecorder makes no H.264 (Firefox).
enum Recorder {
    Media(MediaRecorder),
    Tracks(TrackRecorder),
    Codecs(CodecRecorder),
}

impl Recorder {
    fn active(&self) -> bool {
        match self {
            Recorder::Media(r) => r.state() != web_sys::RecordingState::Inactive,
            Recorder::Tracks(r) => r.active(),
            Recorder::Codecs(r) => r.active(),
        }
    }

    /// Stops; false when it had already stopped (no `stopped` event will come).
    fn stop(&self) -> bool {
        match self {
            Recorder::Media(r) => {
                let recording = r.state() != web_sys::RecordingState::Inactive;
                if recording {
                    let _ = r.stop();
                }
                recording
            }
            Recorder::Tracks(r) => r.stop(),
            Recorder::Codecs(r) => r.stop(),
        }
    }
}

/// What to capture and how to encode it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub source: Source,
    /// `chrome.tabCapture` stream id, for a tab.
    pub media_stream_id: Option<String>,
    /// The recorder forces a keyframe at least this often.
    pub keyframe_interval_ms: u64,
    /// The recorder hands out its bytes this often.
    pub timeslice_ms: i32,
    pub quality: Quality,
    /// Mix the microphone into a tab's sound from the start.
    pub mic: bool,
    /// The camera in a corner of a tab's picture.
    pub overlay: Overlay,
}

/// Callbacks from the recorder and the tracks. They run on the document's event loop.
pub struct Events {
    /// A slice of the WebM byte stream.
    pub data: Box<dyn FnMut(Blob)>,
    /// The recorder started: its timeline's zero is now.
    pub started: Box<dyn FnMut()>,
    /// The recorder stopped; every byte has been handed out.
    pub stopped: Box<dyn FnMut()>,
    /// The captured tab or camera went away.
    pub ended: Box<dyn FnMut()>,
}

/// The closures the recorder and tracks call; kept alive as long as the capture.
type Handlers = Vec<Closure<dyn FnMut(JsValue)>>;

/// A running capture. [`Capture::stop`] releases everything it holds.
pub struct Capture {
    stream: MediaStream,
    recorder: Recorder,
    added: Added,
    _closures: Handlers,
}

/// What a tab's stream gets before it is recorded.
#[derive(Default)]
struct Added {
    /// The tab's sound (played back to the streamer) and the microphone, mixed for the recorder.
    mixer: Option<Mixer>,
    compositor: Option<Compositor>,
    /// What could not be added (microphone or camera refused), in the panel's words.
    notice: Option<String>,
}

impl Added {
    fn release(&mut self) {
        if let Some(c) = self.compositor.take() {
            c.stop();
        }
        if let Some(mut m) = self.mixer.take() {
            m.close();
        }
    }
}

impl Capture {
    /// The opened source (the camera and microphone, or the tab), before anything is added:
    /// what a page shows the streamer as its preview.
    pub fn source(&self) -> &MediaStream {
        &self.stream
    }

    /// Opens the source, composes what the settings add to a tab (the microphone mixed into its
    /// sound, the camera in a corner of its picture) and starts recording. A refused microphone
    /// or camera is left out and said in [`Capture::notice`]; only the source itself is required.
    pub async fn start(settings: &Settings, events: Events) -> Result<Capture, String> {
        let stream = open(
            settings.source,
            settings.media_stream_id.clone(),
            settings.quality,
        )
        .await?;
        let mut added = Added::default();
        let recorded = compose(&stream, settings, &mut added).await;
        let by_tracks = settings.source == Source::Tab && tracks::available(settings).await;
        let recorder = match recorded {
            Ok(r) if by_tracks => {
                let (events, on_ended) = ends_with(events, &stream);
                TrackRecorder::start(&r, settings, events).map(|recorder| (Recorder::Tracks(recorder), vec![on_ended]))
            }
            Ok(r) if records_h264() || settings.source == Source::Tab => {
                record(&r, &stream, settings, events).map(|(recorder, closures)| (Recorder::Media(recorder), closures))
            }
            Ok(r) => {
                let (events, on_ended) = ends_with(events, &stream);
                match CodecRecorder::start(&r, settings, events).await {
                    Ok(recorder) => Ok((Recorder::Codecs(recorder), vec![on_ended])),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match recorder {
            Ok((recorder, closures)) => Ok(Capture {
                stream,
                recorder,
                added,
                _closures: closures,
            }),
            Err(e) => {
                added.release();
                stop_tracks(&stream);
                Err(e)
            }
        }
    }

    /// What could not be added to the broadcast, said plainly.
    pub fn notice(&self) -> Option<String> {
        self.added.notice.clone()
    }

    /// Mixes an opened microphone into a tab's sound, or (`None`) takes it out.
    pub fn set_mic(&mut self, mic: Option<MediaStream>) -> Result<(), String> {
        let Some(mixer) = self.added.mixer.as_mut() else {
            if let Some(m) = mic {
                stop_tracks(&m);
            }
            return Err("A camera broadcast already carries your microphone; use Mute.".into());
        };
        match mic {
            Some(m) => mixer.attach_mic(m),
            None => {
                mixer.detach_mic();
                Ok(())
            }
        }
    }

    /// Silences the microphone (the mixed one, or a camera broadcast's own) or lets it be heard.
    pub fn set_muted(&mut self, muted: bool) {
        match self.added.mixer.as_mut() {
            Some(m) => m.set_muted(muted),
            None => {
                for t in self.stream.get_audio_tracks().iter() {
                    t.unchecked_into::<MediaStreamTrack>().set_enabled(!muted);
                }
            }
        }
    }

    /// Whether viewers hear the streamer's microphone.
    pub fn mic(&self) -> Mic {
        if !self.recorder.active() {
            return Mic::Off; // stopped: nothing is heard any more
        }
        match &self.added.mixer {
            Some(m) => m.mic(),
            None => match self
                .stream
                .get_audio_tracks()
                .get(0)
                .dyn_into::<MediaStreamTrack>()
            {
                Ok(t) if t.enabled() => Mic::On,
                Ok(_) => Mic::Muted,
                Err(_) => Mic::Off,
            },
        }
    }

    /// Whether the microphone can be mixed in while live (a tab broadcast started with "Talk
    /// over the tab").
    pub fn mixing(&self) -> bool {
        self.added.mixer.as_ref().is_some_and(|m| m.mixing())
    }

    /// Whether the camera is composited into the picture.
    pub fn overlay(&self) -> bool {
        self.added.compositor.is_some()
    }

    /// What encodes (`Status::recorder`).
    pub fn recorder(&self) -> &'static str {
        match self.recorder {
            Recorder::Media(_) => "media-recorder",
            Recorder::Tracks(_) => "track-processors",
            Recorder::Codecs(_) => "video-element",
        }
    }

    /// Main-thread time per composited frame so far (ms); 0 without the overlay.
    pub fn composite_ms_avg(&self) -> f64 {
        self.added.compositor.as_ref().map_or(0.0, |c| {
            let (frames, ms) = c.cost();
            ms / frames.max(1) as f64
        })
    }

    /// Stops the recorder (its last bytes and `stopped` follow), the tracks and the playback.
    /// Returns false when the recorder had already stopped, so no `stopped` event will come.
    pub fn stop(&mut self) -> bool {
        let recording = self.recorder.stop();
        stop_tracks(&self.stream);
        self.added.release();
        recording
    }
}

/// The stream the recorder encodes: the source's, or for a tab its picture with the camera
/// composited in and its sound mixed with the microphone.
async fn compose(
    stream: &MediaStream,
    settings: &Settings,
    added: &mut Added,
) -> Result<MediaStream, String> {
    if settings.source != Source::Tab {
        return Ok(stream.clone());
    }
    let mut notices = Vec::new();
    let mut mixer = Mixer::new(stream, settings.mic)?;
    if settings.mic {
        match mixing::open_mic().await {
            Ok(m) => mixer.attach_mic(m)?,
            Err(e) => notices.push(e),
        }
    }
    let tab_video: Option<MediaStreamTrack> = stream.get_video_tracks().get(0).dyn_into().ok();
    let mut video = tab_video.clone();
    added.mixer = Some(mixer);
    if let (true, Some(tab)) = (settings.overlay.on, tab_video) {
        let size = settings.quality.size();
        match compositing::open_camera(size).await {
            Ok(camera) => {
                let fps = settings.quality.frame_rate();
                let c = Compositor::start(&tab, camera, settings.overlay, size, fps)?;
                video = Some(c.track());
                added.compositor = Some(c);
            }
            Err(e) => notices.push(e),
        }
    }
    added.notice = (!notices.is_empty()).then(|| notices.join(" "));
    let tracks = js_sys::Array::new();
    if let Some(v) = video {
        tracks.push(&v);
    }
    // The mix when talking over the tab, else the tab's own sound.
    let audio = match added.mixer.as_ref().and_then(|m| m.track()) {
        Some(mix) => JsValue::from(mix),
        None => stream.get_audio_tracks().get(0),
    };
    if !audio.is_undefined() {
        tracks.push(&audio);
    }
    MediaStream::new_with_tracks(&tracks).map_err(|e| js::js_error(&e))
}

/// Wires `source`'s picture ending to `events.ended`, for a recorder that owns its events: both
/// it (an encoder failing) and the track may end the broadcast, whichever comes first, once.
fn ends_with(mut events: Events, source: &MediaStream) -> (Events, Closure<dyn FnMut(JsValue)>) {
    let ended = Rc::new(RefCell::new(std::mem::replace(&mut events.ended, Box::new(|| {}))));
    let e = ended.clone();
    // Ending stops the recorder, which may end again: the inner call finds it busy.
    events.ended = Box::new(move || {
        if let Ok(mut f) = e.try_borrow_mut() {
            f();
        }
    });
    let on_ended = Closure::<dyn FnMut(JsValue)>::new(move |_| {
        if let Ok(mut f) = ended.try_borrow_mut() {
            f();
        }
    });
    for track in source.get_video_tracks().iter() {
        track.unchecked_into::<MediaStreamTrack>().set_onended(Some(on_ended.as_ref().unchecked_ref()));
    }
    (events, on_ended)
}

fn stop_tracks(stream: &MediaStream) {
    for t in stream.get_tracks().iter() {
        t.unchecked_into::<MediaStreamTrack>().stop();
    }
}

/// Opens the tab's or the camera's MediaStream at the preset's size and frame rate. A tab is
/// captured at exactly that size (min = max: Chrome scales the tab into it, letterboxed when
/// the aspect differs), so every segment of a broadcast has the preset's dimensions.
pub async fn open(
    source: Source,
    media_stream_id: Option<String>,
    quality: Quality,
) -> Result<MediaStream, String> {
    let ((w, h), fps) = (quality.size(), quality.frame_rate());
    let constraints = match source {
        Source::Tab => {
            let id = media_stream_id
                .ok_or("No tab to capture: click the toolbar icon on the tab to stream.")?;
            obj(json!({
                "audio": { "mandatory": { "chromeMediaSource": "tab", "chromeMediaSourceId": id } },
                "video": { "mandatory": { "chromeMediaSource": "tab", "chromeMediaSourceId": id,
                    "minWidth": w, "maxWidth": w, "minHeight": h, "maxHeight": h, "maxFrameRate": fps } },
            }))
        }
        Source::Camera => obj(json!({
            "audio": true,
            "video": { "width": { "ideal": w }, "height": { "ideal": h },
                       "frameRate": { "ideal": fps, "max": fps } },
        })),
        // A screen has its own size: at most the preset's, scaled down with its aspect kept
        // (`min` and `exact` are not allowed here). Its sound where the browser shares it.
        Source::Screen => obj(json!({
            "audio": true,
            "video": { "width": { "max": w }, "height": { "max": h },
                       "frameRate": { "ideal": fps, "max": fps } },
        })),
    };
    let window = web_sys::window().ok_or("the offscreen document has no window")?;
    let devices = window
        .navigator()
        .media_devices()
        .map_err(|e| js::js_error(&e))?;
    let promise = match source {
        Source::Screen => devices.get_display_media_with_constraints(constraints.unchecked_ref()),
        _ => devices.get_user_media_with_constraints(constraints.unchecked_ref()),
    }
    .map_err(|e| match source {
        // Where there is no screen sharing at all (phones), the call itself throws.
        Source::Screen => format!("This browser cannot share a screen: {}", js::js_error(&e)),
        _ => js::js_error(&e),
    })?;
    Ok(JsFuture::from(promise)
        .await
        .map_err(|e| match source {
            Source::Tab => format!("Could not capture the tab: {}", js::js_error(&e)),
            Source::Screen => match mixing::error_name(&e).as_str() {
                "NotAllowedError" | "AbortError" => {
                    "Nothing is shared: the screen sharing was cancelled or refused. Choose what to share again to go live.".into()
                }
                "NotFoundError" | "NotSupportedError" => "This browser has no screen or window to share.".into(),
                _ => format!("Could not share the screen ({}).", js::js_error(&e)),
            },
            Source::Camera => {
                let name = mixing::error_name(&e);
                let say = |d| crate::broadcast::device_refusal(d, &name);
                match name.as_str() {
                    "NotFoundError" | "OverconstrainedError" => say(crate::broadcast::Device::Camera),
                    _ => format!(
                        "Could not open the camera and microphone ({}) — allow them for Chalkstream and try again.",
                        js::js_error(&e)
                    ),
                }
            }
        })?
        .unchecked_into())
}

/// Records `stream` as H.264 + Opus WebM and wires the events (`source`'s video ending ends
/// the broadcast).
fn record(
    stream: &MediaStream,
    source: &MediaStream,
    settings: &Settings,
    events: Events,
) -> Result<(MediaRecorder, Handlers), String> {
    let options = obj(json!({
        "mimeType": MIME,
        "videoBitsPerSecond": settings.quality.video_bps(),
        "audioBitsPerSecond": 128_000,
        "videoKeyFrameIntervalDuration": settings.keyframe_interval_ms,
    }));
    let recorder = MediaRecorder::new_with_media_stream_and_media_recorder_options(
        stream,
        options.unchecked_ref(),
    )
    .map_err(|e| {
        format!(
            "This browser cannot record H.264 + Opus WebM: {}",
            js::js_error(&e)
        )
    })?;
    let Events {
        mut data,
        mut started,
        mut stopped,
        mut ended,
    } = events;
    let on_data = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
        if let Some(blob) = ev.unchecked_into::<BlobEvent>().data() {
            data(blob);
        }
    });
    let on_start = Closure::<dyn FnMut(JsValue)>::new(move |_| started());
    let on_stop = Closure::<dyn FnMut(JsValue)>::new(move |_| stopped());
    let on_ended = Closure::<dyn FnMut(JsValue)>::new(move |_| ended());
    recorder.set_ondataavailable(Some(on_data.as_ref().unchecked_ref()));
    recorder.set_onstop(Some(on_stop.as_ref().unchecked_ref()));
    recorder.set_onstart(Some(on_start.as_ref().unchecked_ref()));
    for track in source.get_video_tracks().iter() {
        let track: MediaStreamTrack = track.unchecked_into();
        track.set_onended(Some(on_ended.as_ref().unchecked_ref()));
    }
    recorder
        .start_with_time_slice(settings.timeslice_ms)
        .map_err(|e| js::js_error(&e))?;
    Ok((recorder, vec![on_data, on_stop, on_start, on_ended]))
}
