//! Bindings to the few `chrome.*` APIs, ffmpeg.wasm and globals the extension uses.
//!
//! Works in every context: nothing here touches `window`; globals come from
//! `js_sys::global()`.

use js_sys::{Object, Promise, Reflect, Uint8Array};
use serde::{de::DeserializeOwned, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::messages::Msg;

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

/// ffmpeg.wasm's `FFmpeg` class, vendored beside the generated bindings.
#[wasm_bindgen(raw_module = "../vendor/ffmpeg/index.js")]
extern "C" {
    pub type FFmpeg;
    #[wasm_bindgen(constructor)]
    pub fn new() -> FFmpeg;
    #[wasm_bindgen(method, catch)]
    pub async fn load(this: &FFmpeg, config: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(method, catch, js_name = writeFile)]
    pub async fn write_file(
        this: &FFmpeg,
        path: &str,
        data: &Uint8Array,
    ) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(method, catch, js_name = readFile)]
    pub async fn read_file(this: &FFmpeg, path: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(method, catch)]
    pub async fn exec(this: &FFmpeg, args: &js_sys::Array) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(method)]
    pub fn on(this: &FFmpeg, event: &str, f: &js_sys::Function);
    #[wasm_bindgen(method)]
    pub fn terminate(this: &FFmpeg);
}

/// Converts a Rust value to a plain JS object.
pub fn to_js<T: Serialize + ?Sized>(v: &T) -> JsValue {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .unwrap_or(JsValue::NULL)
}

/// Converts a JS value to a Rust value; the error says what did not fit.
pub fn from_js<T: DeserializeOwned>(v: JsValue) -> Result<T, String> {
    serde_wasm_bindgen::from_value(v).map_err(|e| e.to_string())
}

/// Builds a JS object from a JSON literal.
pub fn obj(v: serde_json::Value) -> JsValue {
    to_js(&v)
}

/// A readable text for a thrown JS value.
pub fn js_error(e: &JsValue) -> String {
    if let Some(s) = e.as_string() {
        return s;
    }
    Reflect::get(e, &"message".into())
        .ok()
        .and_then(|m| m.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
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

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// Resolves after `ms` milliseconds (any context).
pub async fn sleep(ms: i32) {
    let p = Promise::new(&mut |resolve, _| {
        let set_timeout: js_sys::Function = Reflect::get(&js_sys::global(), &"setTimeout".into())
            .expect("setTimeout")
            .into();
        let _ = set_timeout.call2(&JsValue::NULL, &resolve, &ms.into());
    });
    let _ = JsFuture::from(p).await;
}

/// Fills `buf` from the platform CSPRNG (`crypto.getRandomValues`).
pub fn random_bytes(buf: &mut [u8]) -> Result<(), String> {
    let crypto: web_sys::Crypto = Reflect::get(&js_sys::global(), &"crypto".into())
        .map_err(|e| js_error(&e))?
        .unchecked_into();
    crypto
        .get_random_values_with_u8_array(buf)
        .map(|_| ())
        .map_err(|e| js_error(&e))
}

/// A float in `[0, 1)` for backoff jitter (not security relevant).
pub fn jitter() -> f64 {
    js_sys::Math::random()
}
