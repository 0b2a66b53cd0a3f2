//! Talk over the tab: the tab's sound and the microphone mixed (Web Audio) into the one audio
//! track the recorder encodes; the tab keeps playing for the streamer, the microphone never does.
//!
//! ```text
//! tab audio ──┬──────────────────────────> speakers (tab capture mutes the tab; this is how the streamer hears it)
//!             └──────────────┐
//! microphone ── gain (mute) ─┴──> MediaStreamAudioDestinationNode ──> recorder
//! ```
//!
//! With "Talk over the tab" on, the recorder takes the mix, so the panel can add, remove or mute
//! the microphone while live without touching the recorder. Without it only the playback half
//! exists and the recorder takes the tab's own track: a Web Audio render that misses its
//! deadline on a busy machine then glitches what the streamer hears, never the recording.

use serde_json::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    AudioContext, GainNode, MediaStream, MediaStreamAudioDestinationNode,
    MediaStreamAudioSourceNode, MediaStreamTrack,
};

use crate::js::{self, obj};
use crate::broadcast::{device_refusal, Device, Mic};

/// The running mix.
pub struct Mixer {
    ctx: AudioContext,
    /// The mix and the microphone's gain, when the recorder takes the mix.
    mix: Option<(MediaStreamAudioDestinationNode, GainNode)>,
    _tab: Option<MediaStreamAudioSourceNode>,
    mic: Option<(MediaStream, MediaStreamAudioSourceNode)>,
    muted: bool,
}

fn err(e: JsValue) -> String {
    js::js_error(&e)
}

impl Mixer {
    /// Builds the graph for a captured tab: its sound to the speakers and, when `mixing`, into
    /// the mix the recorder takes.
    pub fn new(tab: &MediaStream, mixing: bool) -> Result<Mixer, String> {
        let ctx = if mixing {
            // Opus runs at 48 kHz: mixing there spares the recorder a resampler.
            AudioContext::new_with_context_options(
                obj(json!({ "sampleRate": 48000 })).unchecked_ref(),
            )
            .or_else(|_| AudioContext::new())
        } else {
            AudioContext::new()
        }
        .map_err(err)?;
        let mix = if mixing {
            let out = ctx.create_media_stream_destination().map_err(err)?;
            let gain = ctx.create_gain().map_err(err)?;
            gain.connect_with_audio_node(&out).map_err(err)?;
            Some((out, gain))
        } else {
            None
        };
        let tab_node = if tab.get_audio_tracks().length() > 0 {
            let node = ctx.create_media_stream_source(tab).map_err(err)?;
            node.connect_with_audio_node(&ctx.destination())
                .map_err(err)?;
            if let Some((out, _)) = &mix {
                node.connect_with_audio_node(out).map_err(err)?;
            }
            Some(node)
        } else {
            None
        };
        // An offscreen document never gets a user gesture; ask to run anyway.
        let _ = ctx.resume();
        Ok(Mixer {
            ctx,
            mix,
            _tab: tab_node,
            mic: None,
            muted: false,
        })
    }

    /// Whether the recorder takes the mix (so the microphone can come and go).
    pub fn mixing(&self) -> bool {
        self.mix.is_some()
    }

    /// The mixed track to record, when mixing.
    pub fn track(&self) -> Option<MediaStreamTrack> {
        let (out, _) = self.mix.as_ref()?;
        out.stream()
            .get_audio_tracks()
            .get(0)
            .dyn_into::<MediaStreamTrack>()
            .ok()
    }

    /// Mixes an opened microphone in (replacing any other).
    pub fn attach_mic(&mut self, mic: MediaStream) -> Result<(), String> {
        self.detach_mic();
        let Some((_, gain)) = &self.mix else {
            stop_tracks(&mic);
            return Err("To talk over the tab, turn on “Talk over the tab” in Options before going live: this broadcast records the tab's sound alone.".into());
        };
        let node = self.ctx.create_media_stream_source(&mic).map_err(err)?;
        node.connect_with_audio_node(gain).map_err(err)?;
        self.mic = Some((mic, node));
        Ok(())
    }

    /// Takes the microphone out of the mix and releases it.
    pub fn detach_mic(&mut self) {
        if let Some((stream, node)) = self.mic.take() {
            let _ = node.disconnect();
            stop_tracks(&stream);
        }
    }

    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
        if let Some((_, gain)) = &self.mix {
            gain.gain().set_value(if muted { 0.0 } else { 1.0 });
        }
    }

    pub fn mic(&self) -> Mic {
        match (&self.mic, self.muted) {
            (None, _) => Mic::Off,
            (Some(_), false) => Mic::On,
            (Some(_), true) => Mic::Muted,
        }
    }

    /// Releases the microphone and the audio graph.
    pub fn close(&mut self) {
        self.detach_mic();
        let _ = self.ctx.close();
    }
}

fn stop_tracks(stream: &MediaStream) {
    for t in stream.get_tracks().iter() {
        t.unchecked_into::<MediaStreamTrack>().stop();
    }
}

/// Opens the microphone (permission must already be granted to the extension: an offscreen
/// document cannot ask). The error is the plain sentence for the panel.
pub async fn open_mic() -> Result<MediaStream, String> {
    let devices = web_sys::window()
        .ok_or("no window")?
        .navigator()
        .media_devices()
        .map_err(err)?;
    let c = obj(json!({ "audio": { "echoCancellation": true, "noiseSuppression": true } }));
    let p = devices
        .get_user_media_with_constraints(c.unchecked_ref())
        .map_err(err)?;
    JsFuture::from(p)
        .await
        .map(|s| s.unchecked_into())
        .map_err(|e| device_refusal(Device::Microphone, &error_name(&e)))
}

/// The DOMException's name (`NotAllowedError`, …).
pub fn error_name(e: &JsValue) -> String {
    js_sys::Reflect::get(e, &"name".into())
        .ok()
        .and_then(|n| n.as_string())
        .unwrap_or_else(|| js::js_error(e))
}
