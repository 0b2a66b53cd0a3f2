//! Waking a loop when it has work, instead of polling for it.
//!
//! The pipeline's two loops used to poll every 5 ms: 400 `setTimeout`s a second, each a timer
//! object in Blink's garbage-collected heap, and over a broadcast the renderer's heap grew
//! (~0.35 MiB a minute with a collection forced before every reading). A per-wait timeout,
//! started and cleared for every wait, still left small objects behind at the same pace. So a
//! [`Bell`] is rung by whoever gives its loop work, and the one thing that comes due with no
//! ring (a retry's backoff running out) is covered by one repeating timer per loop
//! ([`Bell::ring_every`]), made once and cleared when the loop ends.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setInterval)]
    fn set_interval(handler: &js_sys::Function, ms: i32) -> JsValue;
    #[wasm_bindgen(js_name = clearInterval)]
    fn clear_interval(id: &JsValue);
}

/// A wake-up call for one waiting loop. Clones ring the same bell.
#[derive(Clone, Default)]
pub struct Bell(Rc<RefCell<Ringing>>);

#[derive(Default)]
struct Ringing {
    /// Rung since the last wait ended.
    rung: bool,
    waker: Option<Waker>,
}

impl Bell {
    /// Ends the loop's current wait, or its next one if it is not waiting.
    pub fn ring(&self) {
        let waker = {
            let mut r = self.0.borrow_mut();
            r.rung = true;
            r.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Resolves once the bell has rung: at once if it rang since the last wait ended.
    pub fn wait(&self) -> Wait {
        Wait { bell: self.clone() }
    }

    /// Rings the bell every `ms` until the returned guard is dropped: the loop looks again
    /// that often even when nobody rang.
    pub fn ring_every(&self, ms: i32) -> Ringer {
        let bell = self.clone();
        let callback = Closure::<dyn FnMut()>::new(move || bell.ring());
        let id = set_interval(callback.as_ref().unchecked_ref(), ms);
        Ringer {
            id,
            _callback: callback,
        }
    }
}

/// The future of [`Bell::wait`].
pub struct Wait {
    bell: Bell,
}

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut r = self.bell.0.borrow_mut();
        if r.rung {
            r.rung = false;
            r.waker = None;
            return Poll::Ready(());
        }
        r.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The repeating timer of [`Bell::ring_every`]; cleared when dropped.
pub struct Ringer {
    id: JsValue,
    // Dropped after `drop` has cleared the interval, so it is never called once gone.
    _callback: Closure<dyn FnMut()>,
}

impl Drop for Ringer {
    fn drop(&mut self) {
        clear_interval(&self.id);
    }
}
