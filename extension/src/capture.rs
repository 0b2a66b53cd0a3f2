//! Capture: the MediaStream (tab or camera), the one MediaRecorder that encodes it, and the tab's
//! audio played back to the streamer.
//!
//! The pipeline sees a [`Capture`] and the [`Events`] it asked for, nothing else. The stream is
//! opened by [`open`] and recorded by [`record`]; whatever composes a stream before it is
//! recorded (microphone mixing, a camera overlay) goes between the two and stays in this module.

use serde_json::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{AudioContext, Blob, BlobEvent, MediaRecorder, MediaStream, MediaStreamTrack};

use crate::chrome::{self, obj};
use crate::messages::Source;

/// H.264 + Opus in WebM: the one format the segmenter reads.
const MIME: &str = "video/webm;codecs=avc1.42E01E,opus";

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
    recorder: MediaRecorder,
    playback: Option<AudioContext>,
    _closures: Handlers,
}

impl Capture {
    /// Opens the source, plays a tab's audio back and starts recording.
    pub async fn start(settings: &Settings, events: Events) -> Result<Capture, String> {
        let stream = open(settings.source, settings.media_stream_id.clone()).await?;
        let playback = if settings.source == Source::Tab {
            play_back(&stream)?
        } else {
            None
        };
        let (recorder, closures) = match record(&stream, settings, events) {
            Ok(r) => r,
            Err(e) => {
                stop_tracks(&stream);
                if let Some(a) = playback {
                    let _ = a.close();
                }
                return Err(e);
            }
        };
        Ok(Capture {
            stream,
            recorder,
            playback,
            _closures: closures,
        })
    }

    /// Stops the recorder (its last bytes and `stopped` follow), the tracks and the playback.
    /// Returns false when the recorder had already stopped, so no `stopped` event will come.
    pub fn stop(&mut self) -> bool {
        let recording = self.recorder.state() != web_sys::RecordingState::Inactive;
        if recording {
            let _ = self.recorder.stop();
        }
        stop_tracks(&self.stream);
        if let Some(a) = self.playback.take() {
            let _ = a.close();
        }
        recording
    }
}

fn stop_tracks(stream: &MediaStream) {
    for t in stream.get_tracks().iter() {
        t.unchecked_into::<MediaStreamTrack>().stop();
    }
}

/// Opens the tab's or the camera's MediaStream.
pub async fn open(source: Source, media_stream_id: Option<String>) -> Result<MediaStream, String> {
    let constraints = match source {
        Source::Tab => {
            let id = media_stream_id
                .ok_or("No tab to capture: click the toolbar icon on the tab to stream.")?;
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
    Ok(JsFuture::from(promise)
        .await
        .map_err(|e| match source {
            Source::Tab => format!("Could not capture the tab: {}", chrome::js_error(&e)),
            Source::Camera => format!(
                "Could not open the camera and microphone ({}) — allow them for Chalkstream and try again.",
                chrome::js_error(&e)
            ),
        })?
        .unchecked_into())
}

/// Tab capture mutes the tab for the user; plays it back so the streamer still hears it.
fn play_back(stream: &MediaStream) -> Result<Option<AudioContext>, String> {
    if stream.get_audio_tracks().length() == 0 {
        return Ok(None);
    }
    let ctx = AudioContext::new().map_err(|e| chrome::js_error(&e))?;
    let node = ctx
        .create_media_stream_source(stream)
        .map_err(|e| chrome::js_error(&e))?;
    node.connect_with_audio_node(&ctx.destination())
        .map_err(|e| chrome::js_error(&e))?;
    Ok(Some(ctx))
}

/// Records `stream` as H.264 + Opus WebM and wires the events.
fn record(
    stream: &MediaStream,
    settings: &Settings,
    events: Events,
) -> Result<(MediaRecorder, Handlers), String> {
    let options = obj(json!({
        "mimeType": MIME,
        "videoBitsPerSecond": 2_500_000,
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
            chrome::js_error(&e)
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
    for track in stream.get_video_tracks().iter() {
        let track: MediaStreamTrack = track.unchecked_into();
        track.set_onended(Some(on_ended.as_ref().unchecked_ref()));
    }
    recorder
        .start_with_time_slice(settings.timeslice_ms)
        .map_err(|e| chrome::js_error(&e))?;
    Ok((recorder, vec![on_data, on_stop, on_start, on_ended]))
}
