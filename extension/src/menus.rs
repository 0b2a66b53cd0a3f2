//! The toolbar button's right-click menu (`chrome.contextMenus`, context `action`): which
//! entries exist, rebuilt from `chrome.storage` state whenever that state changes.
//!
//! Chrome keeps the entries while the worker sleeps; the worker rebuilds them on install, on
//! browser start and after every start or end of a broadcast, reading whether one is live from
//! storage, never from a global. A click is answered by `worker::on_menu_clicked`.

use serde_json::json;
use wasm_bindgen::prelude::*;

use crate::chrome::{self, obj};

/// One entry of the menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    CopyLink,
    OpenPanel,
    Stop,
    StreamTab,
    StreamCamera,
}

impl Item {
    /// The entries while live and while idle, in menu order.
    pub fn shown(live: bool) -> &'static [Item] {
        if live {
            &[Item::CopyLink, Item::OpenPanel, Item::Stop]
        } else {
            &[Item::StreamTab, Item::StreamCamera, Item::OpenPanel]
        }
    }

    /// The menu item id (what `onClicked` reports as `menuItemId`).
    pub fn id(self) -> &'static str {
        match self {
            Item::CopyLink => "copy-link",
            Item::OpenPanel => "open-panel",
            Item::Stop => "stop",
            Item::StreamTab => "stream-tab",
            Item::StreamCamera => "stream-camera",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Item::CopyLink => "Copy the viewer link",
            Item::OpenPanel => "Open the stream panel",
            Item::Stop => "Stop streaming",
            Item::StreamTab => "Stream this tab",
            Item::StreamCamera => "Stream my camera",
        }
    }

    pub fn from_id(id: &str) -> Option<Item> {
        [
            Item::CopyLink,
            Item::OpenPanel,
            Item::Stop,
            Item::StreamTab,
            Item::StreamCamera,
        ]
        .into_iter()
        .find(|i| i.id() == id)
    }
}

/// Replaces the menu with the entries for the state `live()` reads from storage. Rebuilds that
/// overlap (a broadcast failing as it starts) converge: a rebuild whose state changed under it
/// runs again, and a duplicate id from a racing rebuild is ignored.
pub async fn rebuild<F, Fut>(live: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut state = live().await;
    for _ in 0..3 {
        let _ = chrome::context_menus_remove_all().await;
        for item in Item::shown(state) {
            let props = obj(json!({
                "id": item.id(),
                "title": item.title(),
                "contexts": ["action"],
            }));
            // Errors (a duplicate id from a racing rebuild) arrive in runtime.lastError: read
            // it so Chrome does not log it as unchecked.
            let done = Closure::once_into_js(|| {
                let _ = js_sys::Reflect::get(&js_sys::global(), &"chrome".into())
                    .and_then(|c| js_sys::Reflect::get(&c, &"runtime".into()))
                    .and_then(|r| js_sys::Reflect::get(&r, &"lastError".into()));
            });
            let _ = chrome::context_menus_create(&props, &done);
        }
        let now = live().await;
        if now == state {
            return;
        }
        state = now;
    }
}
