//! The viewer link on the clipboard: copied in the offscreen document, announced by the worker.
//!
//! A service worker has no clipboard, and `navigator.clipboard` needs a focused document, which
//! an offscreen document never is; so the offscreen document (created with the `CLIPBOARD`
//! reason beside `USER_MEDIA`) copies with a selected textarea and `execCommand("copy")`,
//! allowed without a user gesture by the `clipboardWrite` permission. The worker then says so
//! where the streamer looks without opening anything: a notification that shows the link, and
//! the toolbar button's title.

use serde_json::json;
use wasm_bindgen::prelude::*;
use web_sys::{HtmlDocument, HtmlTextAreaElement};

use crate::chrome::{self, obj};

/// Offscreen document: puts `text` on the clipboard.
pub fn copy(text: &str) -> Result<(), String> {
    let doc: HtmlDocument = web_sys::window()
        .and_then(|w| w.document())
        .ok_or("no document to copy from")?
        .unchecked_into();
    let area: HtmlTextAreaElement = doc
        .create_element("textarea")
        .map_err(|e| chrome::js_error(&e))?
        .unchecked_into();
    area.set_value(text);
    let body = doc.body().ok_or("no body to copy from")?;
    body.append_child(&area).map_err(|e| chrome::js_error(&e))?;
    area.select();
    let copied = doc.exec_command("copy").unwrap_or(false);
    area.remove();
    if copied {
        Ok(())
    } else {
        Err("the browser refused to copy".into())
    }
}

/// Worker: tells the streamer the broadcast is live and where to watch it.
pub async fn announce(url: &str, copied: bool) {
    let (title, message) = if copied {
        (
            "Live — viewer link copied",
            format!("Paste it to your viewers: {url}"),
        )
    } else {
        (
            "Live",
            format!("Viewer link: {url} (copy it from the stream panel)"),
        )
    };
    notify(title, &message).await;
    let _ = chrome::action_set_title(&obj(json!({
        "title": format!("Chalkstream: live at {url}{} — click to stop, right-click for more",
            if copied { " (link copied)" } else { "" }),
    })))
    .await;
}

/// Worker: says the link was copied again (from the menu), or why not.
pub async fn announce_copy(url: &str, result: Result<(), String>) {
    match result {
        Ok(()) => notify("Viewer link copied", url).await,
        Err(e) => {
            notify(
                "Could not copy the viewer link",
                &format!("{e}. The link: {url}"),
            )
            .await
        }
    }
}

async fn notify(title: &str, message: &str) {
    // One notification at a time: a new one replaces the last.
    let _ = chrome::notifications_create(
        "chalkstream",
        &obj(json!({
            "type": "basic",
            "iconUrl": chrome::runtime_get_url("icons/128.png"),
            "title": title,
            "message": message,
            "priority": 1,
        })),
    )
    .await;
}
