//! The popup (stream panel) and the options page.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::Reflect;
use serde_json::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{Document, HtmlElement, HtmlInputElement, HtmlSelectElement};

use crate::chrome::{self, obj};
use crate::messages::{
    device_refusal, is_loopback, normalize_server, Broadcast, Device, Mic, Msg, Options, Phase,
    Source, Status,
};
use crate::presets::{Corner, Overlay, OverlaySize, Quality, Reading, Strain};
use crate::timing::clamp_segment_seconds;
use crate::worker::{KEY_BROADCAST, KEY_LAST, KEY_OPTIONS};

fn document() -> Result<Document, JsValue> {
    web_sys::window()
        .and_then(|w| w.document())
        .ok_or_else(|| JsValue::from_str("no document"))
}

fn el(doc: &Document, id: &str) -> Option<HtmlElement> {
    doc.get_element_by_id(id).and_then(|e| e.dyn_into().ok())
}

fn set_text(doc: &Document, id: &str, text: &str) {
    if let Some(e) = el(doc, id) {
        e.set_text_content(Some(text));
    }
}

fn show(doc: &Document, id: &str, visible: bool) {
    if let Some(e) = el(doc, id) {
        e.set_hidden(!visible);
    }
}

fn on_click(doc: &Document, id: &str, f: impl FnMut() + 'static) {
    let mut f = f;
    if let Some(e) = el(doc, id) {
        let c = Closure::<dyn FnMut()>::new(move || f());
        e.set_onclick(Some(c.as_ref().unchecked_ref()));
        c.forget(); // handlers live as long as the page
    }
}

// The panel's number formats are the pipeline's, shared with the broadcast page.
pub use chalkstream_pipeline::broadcast::{clock, rate};

/// Entry point of `popup.html`.
#[wasm_bindgen]
pub fn popup_main() -> Result<(), JsValue> {
    let doc = Rc::new(document()?);
    let d = doc.clone();
    on_click(&doc, "start-tab", move || {
        let d = d.clone();
        spawn_local(async move {
            let q = obj(json!({ "active": true, "currentWindow": true }));
            let tabs = chrome::tabs_query(&q)
                .await
                .map(|t| js_sys::Array::from(&t))
                .unwrap_or_default();
            let tab = tabs.get(0);
            let url = Reflect::get(&tab, &"url".into())
                .ok()
                .and_then(|u| u.as_string())
                .unwrap_or_default();
            let id = Reflect::get(&tab, &"id".into())
                .ok()
                .and_then(|v| v.as_f64());
            match id {
                Some(id) if !url.starts_with(&chrome::runtime_get_url("")) => {
                    report(&d, chrome::send(&Msg::StartTab { tab_id: id as i32 }).await)
                }
                _ => set_text(
                    &d,
                    "error",
                    "Open the tab you want to stream and click the Chalkstream icon there.",
                ),
            }
            refresh(&d).await;
        });
    });
    let d = doc.clone();
    on_click(&doc, "start-camera", move || {
        let d = d.clone();
        spawn_local(async move {
            set_text(&d, "error", "");
            match ask_camera().await {
                Ok(()) => report(&d, chrome::send(&Msg::StartCamera).await),
                Err(e) => set_text(&d, "error", &e),
            }
            refresh(&d).await;
        });
    });
    let d = doc.clone();
    on_click(&doc, "stop", move || {
        let d = d.clone();
        spawn_local(async move {
            report(&d, chrome::send(&Msg::Stop).await);
            refresh(&d).await;
        });
    });
    let d = doc.clone();
    on_click(&doc, "copy", move || {
        let d = d.clone();
        spawn_local(async move {
            let link = d
                .get_element_by_id("link")
                .and_then(|e| e.dyn_into::<HtmlInputElement>().ok())
                .map(|i| i.value())
                .unwrap_or_default();
            let Some(w) = web_sys::window() else { return };
            let copied = JsFuture::from(w.navigator().clipboard().write_text(&link))
                .await
                .is_ok();
            set_text(
                &d,
                "copy",
                if copied { "Copied" } else { "Select and copy" },
            );
        });
    });
    let d = doc.clone();
    on_click(&doc, "mic", move || {
        let d = d.clone();
        spawn_local(async move {
            set_text(&d, "error", "");
            let on = d
                .body()
                .and_then(|b| b.get_attribute("data-mic"))
                .as_deref()
                == Some("off");
            let result = if on {
                ask_device(Device::Microphone).await
            } else {
                Ok(())
            };
            match result {
                Ok(()) => report(&d, answer(chrome::send(&Msg::SetMic { on }).await)),
                Err(e) => set_text(&d, "error", &e),
            }
            refresh(&d).await;
        });
    });
    let d = doc.clone();
    on_click(&doc, "mute", move || {
        let d = d.clone();
        spawn_local(async move {
            let muted = d
                .body()
                .and_then(|b| b.get_attribute("data-mic"))
                .as_deref()
                == Some("on");
            report(&d, answer(chrome::send(&Msg::SetMuted { muted }).await));
            refresh(&d).await;
        });
    });
    on_click(&doc, "open-options", || {
        spawn_local(async {
            let _ = chrome::runtime_open_options_page().await;
        });
    });
    let d = doc.clone();
    spawn_local(async move {
        loop {
            refresh(&d).await;
            chrome::sleep(1000).await;
        }
    });
    Ok(())
}

/// An answer that carries `{ error }` is an error.
fn answer(r: Result<JsValue, String>) -> Result<JsValue, String> {
    let v = r?;
    match Reflect::get(&v, &"error".into())
        .ok()
        .and_then(|e| e.as_string())
    {
        Some(e) => Err(e.trim_start_matches("Error: ").to_string()),
        None => Ok(v),
    }
}

/// Asks for one device from this extension page (an offscreen document cannot ask); the error
/// is the plain sentence for the panel.
async fn ask_device(device: Device) -> Result<(), String> {
    let w = web_sys::window().ok_or("no window")?;
    let devices = w
        .navigator()
        .media_devices()
        .map_err(|e| chrome::js_error(&e))?;
    let c = match device {
        Device::Microphone => obj(json!({ "audio": true })),
        Device::Camera => obj(json!({ "video": true })),
    };
    let p = devices
        .get_user_media_with_constraints(c.unchecked_ref())
        .map_err(|e| chrome::js_error(&e))?;
    let stream: web_sys::MediaStream = JsFuture::from(p)
        .await
        .map_err(|e| {
            let name = Reflect::get(&e, &"name".into())
                .ok()
                .and_then(|n| n.as_string())
                .unwrap_or_default();
            device_refusal(device, &name)
        })?
        .unchecked_into();
    for t in stream.get_tracks().iter() {
        t.unchecked_into::<web_sys::MediaStreamTrack>().stop();
    }
    Ok(())
}

fn report(doc: &Document, r: Result<JsValue, String>) {
    if let Err(e) = r {
        set_text(doc, "error", &e);
    }
}

/// Asks for camera + microphone from this extension page (the offscreen document cannot).
async fn ask_camera() -> Result<(), String> {
    let w = web_sys::window().ok_or("no window")?;
    let devices = w
        .navigator()
        .media_devices()
        .map_err(|e| chrome::js_error(&e))?;
    let c = obj(json!({ "video": true, "audio": true }));
    let p = devices
        .get_user_media_with_constraints(c.unchecked_ref())
        .map_err(|e| chrome::js_error(&e))?;
    let stream: web_sys::MediaStream = JsFuture::from(p)
        .await
        .map_err(|e| {
            format!(
                "Chalkstream may not use the camera and microphone ({}). Allow them in the address bar's site settings, then try again.",
                chrome::js_error(&e)
            )
        })?
        .unchecked_into();
    for t in stream.get_tracks().iter() {
        t.unchecked_into::<web_sys::MediaStreamTrack>().stop();
    }
    Ok(())
}

async fn refresh(doc: &Document) {
    let live: Option<Status> = match chrome::send(&Msg::GetStatus).await {
        Ok(v) if !v.is_null() && !v.is_undefined() => chrome::from_js(v).ok(),
        _ => None,
    };
    let status = match live {
        Some(s) => Some(s),
        None => chrome::load::<Status>(KEY_LAST).await,
    };
    let starting = chrome::load::<Broadcast>(KEY_BROADCAST).await;
    render(doc, status.as_ref(), starting.as_ref());
    advise(doc, status.as_ref());
}

thread_local! {
    /// The panel's recent readings of the broadcast's health (page state, not the worker's).
    static STRAIN: RefCell<(String, Strain)> = RefCell::new((String::new(), Strain::default()));
}

/// Says when the broadcast does not keep up with its preset, and which one to choose.
fn advise(doc: &Document, s: Option<&Status>) {
    let advice = STRAIN.with(|cell| {
        let (stream, strain) = &mut *cell.borrow_mut();
        let s = s.filter(|s| s.phase == Phase::Live)?;
        if *stream != s.stream || s.last_error.is_some() {
            // A new broadcast, or an outage that the error line already explains.
            *stream = s.stream.clone();
            strain.reset();
        }
        strain.push(Reading {
            at_ms: chrome::now_ms(),
            waiting: s.segments_waiting,
            remux_ms_total: s.remux_ms_total,
            media_ms_total: s.media_ms_total,
        });
        strain.advice().map(|a| a.message(s.quality))
    });
    set_text(doc, "advice", advice.as_deref().unwrap_or(""));
}

fn render(doc: &Document, s: Option<&Status>, pending: Option<&Broadcast>) {
    let running = s
        .is_some_and(|s| matches!(s.phase, Phase::Starting | Phase::Live | Phase::Stopping))
        || (s.is_none() && pending.is_some());
    let body = doc.body();
    if let Some(b) = body.as_ref() {
        b.set_attribute(
            "data-phase",
            match s.map(|s| s.phase) {
                Some(Phase::Starting) => "starting",
                Some(Phase::Live) => "live",
                Some(Phase::Stopping) => "stopping",
                Some(Phase::Ended) => "ended",
                Some(Phase::Failed) => "failed",
                None if pending.is_some() => "starting",
                None => "idle",
            },
        )
        .ok();
    }
    show(doc, "idle-actions", !running);
    show(doc, "stop", running);
    let mic = s
        .filter(|s| s.phase == Phase::Live)
        .map(|s| (s.source, s.mic, s.mixing));
    if let Some(b) = body.as_ref() {
        let m = match mic.map(|m| m.1) {
            Some(Mic::On) => "on",
            Some(Mic::Muted) => "muted",
            _ => "off",
        };
        let _ = b.set_attribute("data-mic", m);
    }
    show(doc, "voice", mic.is_some());
    show(doc, "mic", mic.is_some_and(|(_, _, mixing)| mixing));
    show(doc, "mute", mic.is_some_and(|(_, m, _)| m != Mic::Off));
    if let Some((src, m, mixing)) = mic {
        set_text(
            doc,
            "mic",
            if m == Mic::Off {
                "Mix my microphone in"
            } else {
                "Take my microphone out"
            },
        );
        set_text(doc, "mute", if m == Mic::Muted { "Unmute" } else { "Mute" });
        set_text(
            doc,
            "mic-state",
            match (src, m) {
                (_, Mic::On) => "Viewers hear your microphone.",
                (_, Mic::Muted) => "Your microphone is muted.",
                (Source::Tab, Mic::Off) if mixing => "Viewers hear the tab only.",
                (Source::Tab, Mic::Off) => {
                    "Viewers hear the tab only. To talk over it, turn on “Talk over the tab” in Options before going live."
                }
                (Source::Camera, Mic::Off) => "No microphone.",
                (Source::Screen, Mic::Off) => "Viewers hear the shared screen's sound, if it has any.",
            },
        );
    }
    let state = match s {
        Some(s) => match s.phase {
            Phase::Starting => "Starting…".to_string(),
            Phase::Live => format!(
                "Live — {}, {}",
                match (s.source, s.overlay) {
                    (Source::Tab, false) => "this tab",
                    (Source::Tab, true) => "this tab with your camera in the corner",
                    (Source::Camera, _) => "camera",
                    (Source::Screen, _) => "a shared screen",
                },
                s.quality.name()
            ),
            Phase::Stopping => "Stopping — sending the last segments…".into(),
            Phase::Ended => "Ended. The recording stays watchable at the link.".into(),
            Phase::Failed => "Stopped because of an error.".into(),
        },
        None if pending.is_some() => "Starting…".into(),
        None => "Not streaming. Click the Chalkstream icon on a tab to stream it.".into(),
    };
    set_text(doc, "state", &state);
    let Some(s) = s else {
        show(doc, "details", false);
        return;
    };
    show(doc, "details", true);
    if let Some(input) = doc
        .get_element_by_id("link")
        .and_then(|e| e.dyn_into::<HtmlInputElement>().ok())
    {
        if input.value() != s.viewer_url {
            input.set_value(&s.viewer_url);
        }
    }
    let uptime = if running {
        ((chrome::now_ms() - s.started_at_ms) / 1000.0).max(0.0) as u64
    } else {
        s.media_ms_total / 1000
    };
    set_text(doc, "uptime", &clock(uptime));
    set_text(doc, "sent", &s.segments_sent.to_string());
    set_text(doc, "waiting", &s.segments_waiting.to_string());
    set_text(doc, "rate", &rate(s.upload_rate_bps));
    set_text(doc, "error", s.last_error.as_deref().unwrap_or(""));
    set_text(doc, "notice", s.notice.as_deref().unwrap_or(""));
    if let Some(b) = body.as_ref() {
        let _ = b.set_attribute("data-status", &serde_json::to_string(s).unwrap_or_default());
    }
}

/// Entry point of `options.html`.
#[wasm_bindgen]
pub fn options_main() -> Result<(), JsValue> {
    let doc = Rc::new(document()?);
    let d = doc.clone();
    spawn_local(async move {
        let o = chrome::load::<Options>(KEY_OPTIONS)
            .await
            .unwrap_or_default();
        input(&d, "server").map(|i| i.set_value(&o.server));
        input(&d, "token").map(|i| i.set_value(&o.token));
        if let Some(sel) = d
            .get_element_by_id("segment")
            .and_then(|e| e.dyn_into::<HtmlSelectElement>().ok())
        {
            sel.set_value(&clamp_segment_seconds(o.segment_seconds).to_string());
        }
        let id = if o.default_source == Source::Camera {
            "source-camera"
        } else {
            "source-tab"
        };
        input(&d, id).map(|i| i.set_checked(true));
        input(&d, "low-latency").map(|i| i.set_checked(o.low_latency));
        select(&d, "quality").map(|s| s.set_value(o.quality.name()));
        input(&d, "mic").map(|i| i.set_checked(o.mic));
        input(&d, "overlay").map(|i| i.set_checked(o.overlay.on));
        select(&d, "corner").map(|s| s.set_value(&serde_name(&o.overlay.corner)));
        select(&d, "overlay-size").map(|s| s.set_value(&serde_name(&o.overlay.size)));
    });
    let d = doc.clone();
    on_click(&doc, "save", move || {
        // Runs inside the click: permissions.request needs the user gesture.
        let server =
            match normalize_server(&input(&d, "server").map(|i| i.value()).unwrap_or_default()) {
                Ok(s) => s,
                Err(e) => {
                    set_text(&d, "message", &e);
                    return;
                }
            };
        let segment = d
            .get_element_by_id("segment")
            .and_then(|e| e.dyn_into::<HtmlSelectElement>().ok())
            .and_then(|s| s.value().parse().ok())
            .unwrap_or(crate::timing::DEFAULT_SEGMENT_S);
        let mut options = Options {
            server: server.clone(),
            token: input(&d, "token")
                .map(|i| i.value().trim().to_string())
                .unwrap_or_default(),
            segment_seconds: clamp_segment_seconds(segment),
            default_source: if input(&d, "source-camera").is_some_and(|i| i.checked()) {
                Source::Camera
            } else {
                Source::Tab
            },
            low_latency: input(&d, "low-latency").is_none_or(|i| i.checked()),
            quality: select(&d, "quality")
                .and_then(|s| Quality::from_name(&s.value()))
                .unwrap_or_default(),
            mic: input(&d, "mic").is_some_and(|i| i.checked()),
            overlay: Overlay {
                on: input(&d, "overlay").is_some_and(|i| i.checked()),
                corner: select(&d, "corner")
                    .and_then(|s| from_serde_name::<Corner>(&s.value()))
                    .unwrap_or_default(),
                size: select(&d, "overlay-size")
                    .and_then(|s| from_serde_name::<OverlaySize>(&s.value()))
                    .unwrap_or_default(),
            },
        };
        let grant = (!is_loopback(&server)).then(|| {
            chrome::permissions_request(&obj(json!({ "origins": [origin_pattern(&server)] })))
        });
        let d = d.clone();
        spawn_local(async move {
            if let Some(p) = grant {
                if JsFuture::from(p).await.ok().and_then(|v| v.as_bool()) != Some(true) {
                    set_text(&d, "message", &format!("Not saved: Chalkstream needs your permission to send video to {server}."));
                    return;
                }
            }
            // Ask for the microphone and camera here, where Chrome can ask the streamer: the
            // offscreen document that records cannot. A refusal turns the option off.
            let mut refused = Vec::new();
            if options.mic {
                if let Err(e) = ask_device(Device::Microphone).await {
                    options.mic = false;
                    input(&d, "mic").map(|i| i.set_checked(false));
                    refused.push(e);
                }
            }
            if options.overlay.on {
                if let Err(e) = ask_device(Device::Camera).await {
                    options.overlay.on = false;
                    input(&d, "overlay").map(|i| i.set_checked(false));
                    refused.push(e);
                }
            }
            match chrome::save(KEY_OPTIONS, &options).await {
                Ok(()) if refused.is_empty() => {
                    set_text(&d, "message", "Saved. New broadcasts use these settings.")
                }
                Ok(()) => set_text(&d, "message", &format!("Saved, but: {}", refused.join(" "))),
                Err(e) => set_text(&d, "message", &format!("Could not save: {e}")),
            }
        });
    });
    Ok(())
}

fn select(doc: &Document, id: &str) -> Option<HtmlSelectElement> {
    doc.get_element_by_id(id).and_then(|e| e.dyn_into().ok())
}

/// A unit enum's name as `chrome.storage` keeps it (`"bottom-right"`).
fn serde_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn from_serde_name<T: serde::de::DeserializeOwned>(name: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(name.into())).ok()
}

fn input(doc: &Document, id: &str) -> Option<HtmlInputElement> {
    doc.get_element_by_id(id).and_then(|e| e.dyn_into().ok())
}

/// The host permission pattern for a server (match patterns carry no port).
pub fn origin_pattern(server: &str) -> String {
    let (scheme, rest) = server.split_once("://").unwrap_or(("https", server));
    let host = rest.split(['/', ':']).next().unwrap_or(rest);
    format!("{scheme}://{host}/*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_for_people() {
        assert_eq!(clock(5), "0:05");
        assert_eq!(clock(3725), "1:02:05");
        assert_eq!(rate(2_500_000.0), "2.5 Mbit/s");
        assert_eq!(rate(64_000.0), "64 kbit/s");
        assert_eq!(
            origin_pattern("https://live.example.com:8443"),
            "https://live.example.com/*"
        );
    }
}
