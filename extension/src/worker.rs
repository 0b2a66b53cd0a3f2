//! The service worker: decides and forwards. It keeps nothing in globals; the running
//! broadcast lives in `chrome.storage.local` and in the offscreen document.

use js_sys::Reflect;
use serde_json::json;
use wasm_bindgen::prelude::*;

use crate::chrome::{self, obj, to_js};
use crate::ids;
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
                // The camera permission must be asked from an extension page.
                (Source::Camera, _) | (_, None) => open_panel().await,
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
        m @ (Msg::Begin { .. } | Msg::End | Msg::GetStatus) => Err(format!(
            "{m:?} is for the offscreen document, not the worker"
        )),
    };
    answer.map_err(|e| JsValue::from_str(&e))
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
    };
    chrome::save(KEY_BROADCAST, &broadcast).await?;
    chrome::forget(KEY_LAST).await;
    if offscreen_exists().await {
        chrome::send(&Msg::Begin { broadcast }).await?;
    } else {
        // The document asks for the broadcast (OffscreenReady) once it has loaded.
        chrome::offscreen_create_document(&obj(json!({
            "url": "offscreen.html",
            "reasons": ["USER_MEDIA"],
            "justification": "Records the tab or camera and uploads it as HLS segments.",
        })))
        .await
        .map_err(|e| chrome::js_error(&e))?;
    }
    badge("LIVE", "#c62828", "Chalkstream: live — click to stop").await;
    Ok(())
}

async fn stop() -> Result<(), String> {
    if offscreen_exists().await {
        badge("…", "#616161", "Chalkstream: finishing the upload").await;
        chrome::send(&Msg::End).await.map(|_| ())
    } else {
        chrome::forget(KEY_BROADCAST).await;
        badge("", "#616161", "Chalkstream: stream this tab").await;
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
