//! Bindings to the few `chrome.*` APIs the extension uses: messaging, storage, capture, the
//! toolbar button. The browser globals and ffmpeg.wasm are the pipeline's
//! (`chalkstream_pipeline::js`), re-exported here so the extension's modules name one place.
//!
//! Works in every context: nothing here touches `window`; globals come from
//! `js_sys::global()`.

use js_sys::{Object, Promise, Reflect};
use serde::{de::DeserializeOwned, Serialize};
use wasm_bindgen::prelude::*;

use crate::messages::Msg;

pub use chalkstream_pipeline::js::{from_js, js_error, now_ms, obj, random_bytes, sleep, to_js};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = ["chrome", "runtime"], js_name = sendMessage, catch)]
    async fn runtime_send_message(msg: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_namespace = ["chrome", "runtime"], js_name = getURL)]
    pub fn runtime_get_url(path: &str) -> String;
    #[wasm_bindgen(js_namespace = ["chrome", "runtime"], js_name = getContexts, catch)]
    pub async fn runtime_get_contexts(filter: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_namespace = ["chrome", "runtime"], js_name = openOptionsPage, catch)]
    pub async fn runtime_open_options_page() -> Result<JsValue, JsValue>;

    #[wasm_bindgen(js_namespace = ["chrome", "storage", "local"], js_name = get, catch)]
    async fn storage_get(keys: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_namespace = ["chrome", "storage", "local"], js_name = set, catch)]
    async fn storage_set(items: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_namespace = ["chrome", "storage", "local"], js_name = remove, catch)]
    async fn storage_remove(key: &str) -> Result<JsValue, JsValue>;

    #[wasm_bindgen(js_namespace = ["chrome", "tabCapture"], js_name = getMediaStreamId, catch)]
    pub async fn tab_capture_get_media_stream_id(opts: &JsValue) -> Result<JsValue, JsValue>;

    #[wasm_bindgen(js_namespace = ["chrome", "offscreen"], js_name = createDocument, catch)]
    pub async fn offscreen_create_document(opts: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_namespace = ["chrome", "offscreen"], js_name = closeDocument, catch)]
    pub async fn offscreen_close_document() -> Result<JsValue, JsValue>;

    #[wasm_bindgen(js_namespace = ["chrome", "action"], js_name = setBadgeText, catch)]
    pub async fn action_set_badge_text(opts: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_namespace = ["chrome", "action"], js_name = setBadgeBackgroundColor, catch)]
    pub async fn action_set_badge_background_color(opts: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_namespace = ["chrome", "action"], js_name = setTitle, catch)]
    pub async fn action_set_title(opts: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_namespace = ["chrome", "action"], js_name = setPopup, catch)]
    pub async fn action_set_popup(opts: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_namespace = ["chrome", "action"], js_name = openPopup, catch)]
    pub async fn action_open_popup() -> Result<JsValue, JsValue>;

    #[wasm_bindgen(js_namespace = ["chrome", "tabs"], js_name = query, catch)]
    pub async fn tabs_query(q: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_namespace = ["chrome", "tabs"], js_name = create, catch)]
    pub async fn tabs_create(q: &JsValue) -> Result<JsValue, JsValue>;

    #[wasm_bindgen(js_namespace = ["chrome", "contextMenus"], js_name = create, catch)]
    pub fn context_menus_create(props: &JsValue, done: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_namespace = ["chrome", "contextMenus"], js_name = removeAll, catch)]
    pub async fn context_menus_remove_all() -> Result<JsValue, JsValue>;

    #[wasm_bindgen(js_namespace = ["chrome", "notifications"], js_name = create, catch)]
    pub async fn notifications_create(id: &str, opts: &JsValue) -> Result<JsValue, JsValue>;

    #[wasm_bindgen(js_namespace = ["chrome", "permissions"], js_name = request)]
    pub fn permissions_request(p: &JsValue) -> Promise;
    #[wasm_bindgen(js_namespace = ["chrome", "permissions"], js_name = contains, catch)]
    pub async fn permissions_contains(p: &JsValue) -> Result<JsValue, JsValue>;
}

/// Sends a message to the context it is addressed to; resolves to the answer.
pub async fn send(msg: &Msg) -> Result<JsValue, String> {
    let v = to_js(msg);
    let to = to_js(&msg.recipient());
    Reflect::set(&v, &"to".into(), &to).map_err(|e| js_error(&e))?;
    runtime_send_message(&v).await.map_err(|e| js_error(&e))
}

/// Reads one key from `chrome.storage.local`; `None` when absent or unreadable.
pub async fn load<T: DeserializeOwned>(key: &str) -> Option<T> {
    let all = storage_get(&JsValue::from_str(key)).await.ok()?;
    let v = Reflect::get(&all, &key.into()).ok()?;
    if v.is_undefined() || v.is_null() {
        return None;
    }
    from_js(v).ok()
}

/// Writes one key to `chrome.storage.local`.
pub async fn save<T: Serialize>(key: &str, value: &T) -> Result<(), String> {
    let items = Object::new();
    Reflect::set(&items, &key.into(), &to_js(value)).map_err(|e| js_error(&e))?;
    storage_set(&items)
        .await
        .map(|_| ())
        .map_err(|e| js_error(&e))
}

/// Removes one key from `chrome.storage.local`.
pub async fn forget(key: &str) {
    let _ = storage_remove(key).await;
}
