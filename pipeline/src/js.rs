//! Bindings to the browser globals and to ffmpeg.wasm that the pipeline uses, and the JS value
//! conversions. Works in every context (a page, an offscreen document, a worker): nothing here
//! touches `window`; globals come from `js_sys::global()`.

use js_sys::{Promise, Reflect, Uint8Array};
use serde::{de::DeserializeOwned, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

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
