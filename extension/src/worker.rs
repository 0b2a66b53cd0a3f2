//! The service worker: decides and forwards. It keeps nothing in globals; the running
//! broadcast lives in `chrome.storage.local` and in the offscreen document.

use js_sys::Reflect;
use serde_json::json;
use wasm_bindgen::prelude::*;

use crate::chrome::{self, obj, to_js};
use crate::clipboard;
use crate::ids;
use crate::menus::{self, Item};
use crate::messages::{Broadcast, Msg, Options, Phase, Source, Status};
use crate::timing::clamp_segment_seconds;

pub const KEY_BROADCAST: &str = "broadcast";
pub const KEY_LAST: &str = "last_status";
pub const KEY_OPTIONS: &str = "options";

/// Toolbar click: stop the running broadcast, or start one with the default source.
#[wasm_bindgen]
pub async fn on_action_clicked(tab: JsValue) -> Result<(), JsValue> {
    let tab_id = Reflect::get(&tab, &"id".into())?.as_f64().map(|v| v as i32);
    let result =
        if chrome::load::<Broadcast>(KEY_BROADCAST).await.is_some() && offscreen_exists().await {
            stop().await
        } else {
            let options = chrome::load::<Options>(KEY_OPTIONS)
                .await
                .unwrap_or_default();
            match (options.default_source, tab_id) {
                (Source::Tab, Some(id)) => start_tab(id).await,
                // The camera permission must be asked from an extension page (and the extension
                // offers no screen sharing: the broadcast page does).
                (Source::Camera | Source::Screen, _) | (_, None) => open_panel().await,
            }
        };
    result.map_err(|e| JsValue::from_str(&e))
}

/// A message addressed to the worker; returns the answer.
#[wasm_bindgen]
pub async fn on_worker_message(msg: JsValue) -> Result<JsValue, JsValue> {
    let msg: Msg =
        chrome::from_js(msg).map_err(|e| JsValue::from_str(&format!("unknown message: {e}")))?;
    let answer = match msg {
        Msg::StartTab { tab_id } => start_tab(tab_id).await.map(|_| JsValue::TRUE),
        Msg::StartCamera => start(Source::Camera, None).await.map(|_| JsValue::TRUE),
        Msg::Stop => stop().await.map(|_| JsValue::TRUE),
        Msg::OffscreenReady => Ok(chrome::load::<Broadcast>(KEY_BROADCAST)
            .await
            .map(|b| to_js(&b))
            .unwrap_or(JsValue::NULL)),
        Msg::Finished { status } => finished(status).await.map(|_| JsValue::TRUE),
        Msg::Live { copied } => {
            if let Some(b) = chrome::load::<Broadcast>(KEY_BROADCAST).await {
                clipboard::announce(&b.viewer_url(), copied).await;
            }
            Ok(JsValue::TRUE)
        }
        m @ (Msg::Begin { .. }
        | Msg::End
        | Msg::GetStatus
        | Msg::CopyLink
        | Msg::SetMic { .. }
        | Msg::SetMuted { .. }) => Err(format!(
            "{m:?} is for the offscreen document, not the worker"
        )),
    };
    answer.map_err(|e| JsValue::from_str(&e))
}

/// Install, update or browser start: the right-click menu for the state in storage.
#[wasm_bindgen]
pub async fn on_installed() {
    menus::rebuild(is_live).await;
}

/// A click on an entry of the toolbar button's right-click menu.
#[wasm_bindgen]
pub async fn on_menu_clicked(info: JsValue, tab: JsValue) -> Result<(), JsValue> {
    let id = Reflect::get(&info, &"menuItemId".into())?
        .as_string()
        .unwrap_or_default();
    let item =
        Item::from_id(&id).ok_or_else(|| JsValue::from_str(&format!("no menu entry {id}")))?;
    let live = is_live().await;
    let result = match item {
        Item::OpenPanel => open_panel().await,
        Item::CopyLink | Item::Stop if !live => {
            // A menu from before the broadcast ended: show the right one.
            menus::rebuild(is_live).await;
            Ok(())
        }
        Item::CopyLink => copy_link().await,
        Item::Stop => stop().await,
        Item::StreamTab | Item::StreamCamera if live => {
            menus::rebuild(is_live).await;
            Err("A broadcast is already running — stop it first.".into())
        }
        Item::StreamTab => match Reflect::get(&tab, &"id".into())?.as_f64() {
            Some(id) => start_tab(id as i32).await,
            None => open_panel().await,
        },
        Item::StreamCamera if camera_allowed().await => start(Source::Camera, None).await,
        // The camera permission must be asked from an extension page.
        Item::StreamCamera => open_panel().await,
    };
    result.map_err(|e| JsValue::from_str(&e))
}

/// A click on the notification: open the panel.
#[wasm_bindgen]
pub async fn on_notification_clicked() -> Result<(), JsValue> {
    open_panel().await.map_err(|e| JsValue::from_str(&e))
}

async fn copy_link() -> Result<(), String> {
    let url = chrome::load::<Broadcast>(KEY_BROADCAST)
        .await
        .map(|b| b.viewer_url())
        .ok_or("Nothing is streaming.")?;
    let result = match chrome::send(&Msg::CopyLink).await {
        Ok(v) if v.as_bool() == Some(true) => Ok(()),
        Ok(v) => Err(Reflect::get(&v, &"error".into())
            .ok()
            .and_then(|e| e.as_string())
            .unwrap_or_else(|| "the recorder did not answer".into())),
        Err(e) => Err(e),
    };
    clipboard::announce_copy(&url, result.clone()).await;
    result
}

/// Whether this extension may use the camera and microphone without asking.
async fn camera_allowed() -> bool {
    let Ok(perms) = Reflect::get(&js_sys::global(), &"navigator".into())
        .and_then(|n| Reflect::get(&n, &"permissions".into()))
    else {
        return false;
    };
    let Ok(query) =
        Reflect::get(&perms, &"query".into()).and_then(|q| q.dyn_into::<js_sys::Function>())
    else {
        return false;
    };
    for name in ["camera", "microphone"] {
        let Ok(p) = query.call1(&perms, &obj(json!({ "name": name }))) else {
            return false;
        };
        let state = match wasm_bindgen_futures::JsFuture::from(js_sys::Promise::from(p)).await {
            Ok(s) => Reflect::get(&s, &"state".into())
                .ok()
                .and_then(|s| s.as_string()),
            Err(_) => None,
        };
        if state.as_deref() != Some("granted") {
            return false;
        }
    }
    true
}

/// Live when storage holds a broadcast and its offscreen document runs.
async fn is_live() -> bool {
    chrome::load::<Broadcast>(KEY_BROADCAST).await.is_some() && offscreen_exists().await
}

async fn open_panel() -> Result<(), String> {
    let url = chrome::runtime_get_url("popup.html");
    chrome::tabs_create(&obj(json!({ "url": url })))
        .await
        .map(|_| ())
        .map_err(|e| chrome::js_error(&e))
}

async fn start_tab(tab_id: i32) -> Result<(), String> {
    let id = chrome::tab_capture_get_media_stream_id(&obj(json!({ "targetTabId": tab_id })))
        .await
        .map_err(|e| {
            format!(
                "Chrome did not allow capturing this tab: {}",
                chrome::js_error(&e)
            )
        })?;
    start(Source::Tab, id.as_string()).await
}

async fn start(source: Source, media_stream_id: Option<String>) -> Result<(), String> {
    if chrome::load::<Broadcast>(KEY_BROADCAST).await.is_some() {
        if offscreen_exists().await {
            return Err("A broadcast is already running — stop it first.".into());
        }
        chrome::forget(KEY_BROADCAST).await; // left over from a crashed browser
    }
    let options = chrome::load::<Options>(KEY_OPTIONS)
        .await
        .unwrap_or_default();
    let mut random = [0u8; 32];
    chrome::random_bytes(&mut random)?;
    let session = ids::session_secret(&random);
    let broadcast = Broadcast {
        stream: ids::stream_id(&session)?,
        session,
        server: options.server.clone(),
        token: options.token.clone(),
        segment_ms: u64::from(clamp_segment_seconds(options.segment_seconds)) * 1000,
        source,
        started_at_ms: chrome::now_ms(),
        media_stream_id,
        low_latency: options.low_latency,
        quality: options.quality,
        mic: options.mic,
        overlay: options.overlay,
        resume_at_seq: None,
    };
    chrome::save(KEY_BROADCAST, &broadcast).await?;
    chrome::forget(KEY_LAST).await;
    if offscreen_exists().await {
        chrome::send(&Msg::Begin { broadcast }).await?;
    } else {
        // The document asks for the broadcast (OffscreenReady) once it has loaded.
        chrome::offscreen_create_document(&obj(json!({
            "url": "offscreen.html",
            "reasons": ["USER_MEDIA", "CLIPBOARD"],
            "justification": "Records the tab or camera and uploads it as HLS segments; puts the viewer link on the clipboard.",
        })))
        .await
        .map_err(|e| chrome::js_error(&e))?;
    }
    badge("LIVE", "#c62828", "Chalkstream: live — click to stop").await;
    menus::rebuild(is_live).await;
    Ok(())
}

async fn stop() -> Result<(), String> {
    if offscreen_exists().await {
        badge("…", "#616161", "Chalkstream: finishing the upload").await;
        chrome::send(&Msg::End).await.map(|_| ())
    } else {
        chrome::forget(KEY_BROADCAST).await;
        badge("", "#616161", "Chalkstream: stream this tab").await;
        menus::rebuild(is_live).await;
        Ok(())
    }
}

async fn finished(status: Status) -> Result<(), String> {
    chrome::save(KEY_LAST, &status).await?;
    chrome::forget(KEY_BROADCAST).await;
    match status.phase {
        Phase::Failed => {
            badge(
                "ERR",
                "#b26a00",
                "Chalkstream: stopped — open the panel for details",
            )
            .await
        }
        _ => badge("", "#616161", "Chalkstream: stream this tab").await,
    }
    let _ = chrome::offscreen_close_document().await;
    menus::rebuild(is_live).await;
    Ok(())
}

async fn offscreen_exists() -> bool {
    let filter = obj(json!({ "contextTypes": ["OFFSCREEN_DOCUMENT"] }));
    match chrome::runtime_get_contexts(&filter).await {
        Ok(list) => js_sys::Array::from(&list).length() > 0,
        Err(_) => false,
    }
}

async fn badge(text: &str, color: &str, title: &str) {
    let _ = chrome::action_set_badge_text(&obj(json!({ "text": text }))).await;
    let _ = chrome::action_set_badge_background_color(&obj(json!({ "color": color }))).await;
    let _ = chrome::action_set_title(&obj(json!({ "title": title }))).await;
}
