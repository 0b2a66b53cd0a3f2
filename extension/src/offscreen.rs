//! The offscreen document: runs the broadcast the worker hands it through the shared pipeline
//! (`chalkstream_pipeline::run`) and answers the worker's and the panel's messages. What is
//! Chrome's here: where the pipeline's files are (`chrome.runtime.getURL`), the viewer link on
//! the clipboard when it goes live, and the `Live` / `Finished` messages to the worker.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use chalkstream_pipeline::mixing;
use chalkstream_pipeline::run::{self, Platform};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;

use crate::chrome::{self, to_js};
use crate::clipboard;
use crate::messages::{Broadcast, Msg, Status};

/// The extension as the pipeline's [`Platform`].
struct Offscreen;

impl Platform for Offscreen {
    fn asset_url(&self, path: &str) -> String {
        chrome::runtime_get_url(path)
    }

    /// Live: the link goes on the clipboard and the worker tells the streamer.
    fn live(&self, broadcast: &Broadcast) {
        let copied = clipboard::copy(&broadcast.viewer_url()).is_ok();
        spawn_local(async move {
            let _ = chrome::send(&Msg::Live { copied }).await;
        });
    }

    fn finished(&self, status: Status) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(async move {
            let _ = chrome::send(&Msg::Finished { status }).await;
        })
    }
}

async fn begin(b: Broadcast) {
    run::begin(b, Rc::new(Offscreen)).await;
}

/// Entry point of `offscreen.html`: ask the worker what to run.
#[wasm_bindgen]
pub async fn offscreen_main() -> Result<(), JsValue> {
    // A panic's message in the document's console (the test harness prints it when a broadcast
    // stalls), not only wasm's "unreachable".
    std::panic::set_hook(Box::new(|info| web_sys::console::error_1(&format!("panic: {info}").into())));
    let answer = chrome::send(&Msg::OffscreenReady)
        .await
        .map_err(|e| JsValue::from_str(&e))?;
    if !answer.is_null() && !answer.is_undefined() {
        let b: Broadcast = chrome::from_js(answer).map_err(|e| JsValue::from_str(&e))?;
        begin(b).await;
    }
    Ok(())
}

/// A message addressed to the offscreen document; returns the answer.
#[wasm_bindgen]
pub async fn on_offscreen_message(msg: JsValue) -> Result<JsValue, JsValue> {
    let msg: Msg =
        chrome::from_js(msg).map_err(|e| JsValue::from_str(&format!("unknown message: {e}")))?;
    match msg {
        Msg::Begin { broadcast } => {
            begin(broadcast).await;
            Ok(JsValue::TRUE)
        }
        Msg::End => {
            run::end("");
            Ok(JsValue::TRUE)
        }
        Msg::GetStatus => Ok(run::current_status().map(|s| to_js(&s)).unwrap_or(JsValue::NULL)),
        Msg::CopyLink => {
            let url = run::viewer_url();
            let url = url.ok_or_else(|| JsValue::from_str("Nothing is streaming."))?;
            clipboard::copy(&url)
                .map(|_| JsValue::TRUE)
                .map_err(|e| JsValue::from_str(&e))
        }
        Msg::SetMic { on } => {
            let mic = if on {
                Some(
                    mixing::open_mic()
                        .await
                        .map_err(|e| JsValue::from_str(&e))?,
                )
            } else {
                None
            };
            run::with_capture(|c| c.set_mic(mic))
        }
        Msg::SetMuted { muted } => run::with_capture(|c| {
            c.set_muted(muted);
            Ok(())
        }),
        m @ (Msg::StartTab { .. }
        | Msg::StartCamera
        | Msg::Stop
        | Msg::OffscreenReady
        | Msg::Finished { .. }
        | Msg::Live { .. }) => Err(JsValue::from_str(&format!(
            "{m:?} is for the worker, not the offscreen document"
        ))),
    }
}
