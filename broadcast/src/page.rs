//! The page itself: its panel in the DOM, the session and token in `localStorage`, and the
//! pipeline's [`Platform`] for a page (its files under `/broadcast/`, its own panel to tell).
//! Decisions are [`crate::session`]'s.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use chalkstream_manifest::wire;
use chalkstream_pipeline::broadcast::{clock, Broadcast, Phase, Source, Status};
use chalkstream_pipeline::js;
use chalkstream_pipeline::run::{self, Platform};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{Document, HtmlButtonElement, HtmlElement, HtmlInputElement, HtmlSelectElement, Storage};

use crate::session::{self, KEY_LIVE, KEY_QUALITY, KEY_SESSION, KEY_TOKEN};
use chalkstream_pipeline::presets::{Advice, Quality, Reading, Strain};
use chalkstream_pipeline::capture::can_share_screen;

/// How often the panel reads the pipeline's status.
const REFRESH_MS: i32 = 500;
/// How long the pipeline must go on saying this computer cannot keep up before the page goes on
/// at a lower preset by itself (on top of the 6 s its judgement takes).
const FALL_BACK_AFTER_MS: f64 = 6_000.0;

/// The page's state besides the pipeline's.
struct Page {
    doc: Document,
    storage: Option<Storage>,
    /// This server's origin (`location.origin`): where the page uploads and viewers watch.
    origin: String,
    session: RefCell<String>,
    /// Between the click and the pipeline's first status.
    starting: Cell<bool>,
    /// What the page streams, or last streamed: the camera, or a shared screen.
    source: Cell<Source>,
    /// A failure before the pipeline ran (no camera, say).
    error: RefCell<Option<String>>,
    /// Recent readings of the live broadcast's health (its stream id beside them): whether it
    /// keeps up with its preset, as the extension's panel says.
    strain: RefCell<(String, Strain)>,
    /// Set when this broadcast went on at a lower preset because the computer could not keep up:
    /// what the page says about it. Once per broadcast the streamer starts.
    fell_back: RefCell<Option<String>>,
    /// Since when (ms) the pipeline has said without a break that this computer cannot keep up.
    behind_since: Cell<Option<f64>>,
}

impl Page {
    fn get(&self, key: &str) -> Option<String> {
        self.storage.as_ref()?.get_item(key).ok().flatten()
    }

    fn set(&self, key: &str, value: &str) {
        if let Some(s) = &self.storage {
            let _ = s.set_item(key, value);
        }
    }

    fn forget(&self, key: &str) {
        if let Some(s) = &self.storage {
            let _ = s.remove_item(key);
        }
    }

    fn stream(&self) -> String {
        chalkstream_pipeline::ids::stream_id(&self.session.borrow()).unwrap_or_default()
    }

    fn viewer_url(&self) -> String {
        format!("{}{}", self.origin, wire::player_path(&self.stream()))
    }

    fn el<T: JsCast>(&self, id: &str) -> Option<T> {
        self.doc.get_element_by_id(id).and_then(|e| e.dyn_into::<T>().ok())
    }

    fn set_text(&self, id: &str, text: &str) {
        if let Some(e) = self.el::<HtmlElement>(id) {
            if e.text_content().as_deref() != Some(text) {
                e.set_text_content(Some(text));
            }
        }
    }

    fn show(&self, id: &str, visible: bool) {
        if let Some(e) = self.el::<HtmlElement>(id) {
            e.set_hidden(!visible);
        }
    }

    fn token(&self) -> String {
        self.el::<HtmlInputElement>("token").map(|i| i.value()).unwrap_or_default()
    }
}

/// The page as the pipeline's [`Platform`].
struct Web(Rc<Page>);

impl Platform for Web {
    fn asset_url(&self, path: &str) -> String {
        format!("{}/broadcast/{path}", self.0.origin)
    }

    fn live(&self, _broadcast: &Broadcast) {
        self.0.starting.set(false);
    }

    fn finished(&self, status: Status) -> Pin<Box<dyn Future<Output = ()>>> {
        let page = self.0.clone();
        Box::pin(async move {
            // Over, whether ended or refused: a reload must not start it again by itself.
            page.forget(KEY_LIVE);
            page.starting.set(false);
            preview(&page, false);
            render(&page, Some(&status));
        })
    }
}

/// Entry point of the page's loader (`broadcast.js`).
#[wasm_bindgen]
pub fn broadcast_main() -> Result<(), JsValue> {
    let window = web_sys::window().ok_or("no window")?;
    let doc = window.document().ok_or("no document")?;
    let origin = window.location().origin()?;
    let storage = window.local_storage().ok().flatten();
    let page = Rc::new(Page {
        doc,
        storage,
        origin,
        session: RefCell::new(String::new()),
        starting: Cell::new(false),
        source: Cell::new(Source::Camera),
        error: RefCell::new(None),
        strain: RefCell::new((String::new(), Strain::default())),
        fell_back: RefCell::new(None),
        behind_since: Cell::new(None),
    });
    if page.storage.is_none() {
        *page.error.borrow_mut() =
            Some("This browser keeps no local storage for this page, so a reload will start a new stream.".into());
    }
    let kept = page.get(KEY_SESSION);
    let (session, new) = session::keep_or_new(kept.as_deref(), &random()?);
    if new {
        page.set(KEY_SESSION, &session);
    }
    *page.session.borrow_mut() = session;
    if let Some(input) = page.el::<HtmlInputElement>("token") {
        input.set_value(&page.get(KEY_TOKEN).unwrap_or_default());
    }
    if let Some(select) = page.el::<HtmlSelectElement>("quality") {
        select.set_value(session::quality(page.get(KEY_QUALITY).as_deref()).name());
    }

    if !chalkstream_pipeline::capture::can_record() {
        if let Some(body) = page.doc.body() {
            body.set_attribute("data-unsupported", "1")?;
        }
        for id in ["go", "share"] {
            if let Some(b) = page.el::<HtmlButtonElement>(id) {
                b.set_disabled(true);
            }
        }
        page.forget(KEY_LIVE);
    }
    let p = page.clone();
    on(&page, "go", move || {
        let p = p.clone();
        spawn_local(async move { start(p, Source::Camera).await });
    });
    let p = page.clone();
    on(&page, "share", move || {
        let p = p.clone();
        spawn_local(async move { start(p, Source::Screen).await });
    });
    let p = page.clone();
    on(&page, "stop", move || {
        // Also calls off a fall-back restart that waits for the run to end.
        p.fell_back.borrow_mut().take();
        p.forget(KEY_LIVE);
        run::end("");
        render(&p, run::current_status().as_ref());
    });
    let p = page.clone();
    on(&page, "new", move || new_stream(&p));
    let p = page.clone();
    on(&page, "copy", move || {
        let p = p.clone();
        spawn_local(async move { copy(&p).await });
    });
    let p = page.clone();
    let keep_token = Closure::<dyn FnMut()>::new(move || {
        let token = p.token();
        if token.trim().is_empty() {
            p.forget(KEY_TOKEN);
        } else {
            p.set(KEY_TOKEN, token.trim());
        }
    });
    if let Some(input) = page.el::<HtmlElement>("token") {
        input.add_event_listener_with_callback("input", keep_token.as_ref().unchecked_ref())?;
    }
    keep_token.forget();
    let p = page.clone();
    let keep_quality = Closure::<dyn FnMut()>::new(move || {
        if let Some(select) = p.el::<HtmlSelectElement>("quality") {
            p.set(KEY_QUALITY, session::quality(Some(&select.value())).name());
        }
    });
    if let Some(select) = page.el::<HtmlElement>("quality") {
        select.add_event_listener_with_callback("change", keep_quality.as_ref().unchecked_ref())?;
    }
    keep_quality.forget();

    let p = page.clone();
    let tick = Closure::<dyn FnMut()>::new(move || {
        let status = run::current_status();
        render(&p, status.as_ref());
        fall_back_if_needed(&p, status.as_ref());
    });
    window.set_interval_with_callback_and_timeout_and_arguments_0(tick.as_ref().unchecked_ref(), REFRESH_MS)?;
    tick.forget();
    render(&page, None);

    // A reload while live goes on under the same session: the camera by itself; a screen only
    // when the streamer picks it again (only a click may open the sharing dialog).
    match page.get(KEY_LIVE).map(|kept| session::live_source(&kept)) {
        Some(Source::Screen) => {
            page.forget(KEY_LIVE);
            page.source.set(Source::Screen);
            *page.error.borrow_mut() = Some(session::SHARE_AGAIN.into());
            render(&page, None);
        }
        Some(source) => spawn_local(async move { start(page, source).await }),
        None => {}
    }
    Ok(())
}

fn random() -> Result<[u8; 32], JsValue> {
    let mut bytes = [0u8; 32];
    js::random_bytes(&mut bytes).map_err(|e| JsValue::from_str(&e))?;
    Ok(bytes)
}

fn on(page: &Page, id: &str, mut f: impl FnMut() + 'static) {
    if let Some(e) = page.el::<HtmlElement>(id) {
        let c = Closure::<dyn FnMut()>::new(move || f());
        e.set_onclick(Some(c.as_ref().unchecked_ref()));
        c.forget();
    }
}

fn running(status: Option<&Status>) -> bool {
    matches!(status.map(|s| s.phase), Some(Phase::Starting | Phase::Live | Phase::Stopping))
}

/// Goes live under the page's session with `source`, going on after what the server already
/// holds, at the preset chosen under Settings.
async fn start(page: Rc<Page>, source: Source) {
    go(page, source, None).await;
}

/// [`start`], or with `fallback` a restart at that preset (the page's own, not the streamer's).
async fn go(page: Rc<Page>, source: Source, fallback: Option<Quality>) {
    if page.starting.get() || running(run::current_status().as_ref()) || !chalkstream_pipeline::capture::can_record() {
        return;
    }
    if fallback.is_none() {
        page.fell_back.borrow_mut().take();
    }
    page.behind_since.set(None);
    page.starting.set(true);
    page.source.set(source);
    page.error.borrow_mut().take();
    page.set(KEY_LIVE, session::live_value(source));
    render(&page, None);
    let status = stream_status(&page).await;
    let session = page.session.borrow().clone();
    let resume = session::resume_seq(status.as_ref());
    let quality = fallback.unwrap_or_else(|| session::quality(page.get(KEY_QUALITY).as_deref()));
    let b = match session::broadcast(&session, &page.origin, &page.token(), source, quality, js::now_ms(), resume) {
        Ok(b) => b,
        Err(e) => {
            fail(&page, format!("This page's session is not valid ({e}) — choose New stream."));
            return;
        }
    };
    run::begin(b, Rc::new(Web(page.clone()))).await;
    page.starting.set(false);
    preview(&page, running(run::current_status().as_ref()));
    render(&page, run::current_status().as_ref());
}

/// Shows the streamer the camera's picture while it is streamed (muted: the microphone is not
/// played back), and lets go of it when the broadcast is over. Runs outside the pipeline's
/// callbacks, since it borrows the running capture.
fn preview(page: &Page, on: bool) {
    let Some(video) = page.el::<web_sys::HtmlVideoElement>("preview") else { return };
    let picture = on
        .then(|| {
            let mut picture = None;
            let _ = run::with_capture(|c| {
                picture = web_sys::MediaStream::new_with_tracks(&c.source().get_video_tracks()).ok();
                Ok(())
            });
            picture
        })
        .flatten();
    video.set_muted(true);
    video.set_src_object(picture.as_ref());
    page.show("preview", picture.is_some());
    if picture.is_some() {
        // A muted video may play without a gesture; a refusal leaves the first frame showing.
        if let Ok(p) = video.play() {
            spawn_local(async move {
                let _ = JsFuture::from(p).await;
            });
        }
    }
}

fn fail(page: &Page, message: String) {
    page.forget(KEY_LIVE);
    page.starting.set(false);
    *page.error.borrow_mut() = Some(message);
    render(page, run::current_status().as_ref());
}

/// The server's status of this page's stream (`None` when it has none, or cannot be asked:
/// the upload then says what is wrong).
async fn stream_status(page: &Page) -> Option<serde_json::Value> {
    let init = web_sys::RequestInit::new();
    init.set_cache(web_sys::RequestCache::NoStore);
    let url = format!("{}/api/streams/{}", page.origin, page.stream());
    let window = web_sys::window()?;
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str_and_init(&url, &init)).await.ok()?.dyn_into().ok()?;
    if response.status() != 200 {
        return None;
    }
    let json = JsFuture::from(response.json().ok()?).await.ok()?;
    js::from_js(json).ok()
}

/// A new session (a new stream id), kept instead of the old one; only while not streaming.
fn new_stream(page: &Page) {
    if page.starting.get() || running(run::current_status().as_ref()) {
        return;
    }
    match random() {
        Ok(bytes) => {
            let (session, _) = session::keep_or_new(None, &bytes);
            page.set(KEY_SESSION, &session);
            *page.session.borrow_mut() = session;
            *page.error.borrow_mut() = None;
            page.set_text("copied", "");
            render(page, None);
        }
        Err(e) => fail(page, format!("No random numbers for a new stream: {}", js::js_error(&e))),
    }
}

async fn copy(page: &Page) {
    let url = page.viewer_url();
    let copied = match web_sys::window().map(|w| w.navigator().clipboard()) {
        Some(clipboard) => JsFuture::from(clipboard.write_text(&url)).await.is_ok(),
        None => false,
    };
    if copied {
        page.set_text("copied", "Copied.");
    } else {
        if let Some(input) = page.el::<HtmlInputElement>("link") {
            input.select();
        }
        page.set_text("copied", "Selected: press Ctrl+C (or ⌘C) to copy.");
    }
}

/// Draws the panel from the pipeline's status (`None` before it runs here).
fn render(page: &Page, status: Option<&Status>) {
    let phase = match status.map(|s| s.phase) {
        _ if page.starting.get() => "starting",
        Some(Phase::Starting) => "starting",
        Some(Phase::Live) => "live",
        Some(Phase::Stopping) => "stopping",
        Some(Phase::Ended) => "ended",
        Some(Phase::Failed) => "failed",
        None => "idle",
    };
    let body = page.doc.body();
    if let Some(body) = &body {
        let _ = body.set_attribute("data-phase", phase);
        let _ = body.set_attribute("data-stream", &page.stream());
        match status {
            Some(s) => {
                let _ = body.set_attribute("data-status", &serde_json::to_string(s).unwrap_or_default());
            }
            None => {
                let _ = body.remove_attribute("data-status");
            }
        }
    }
    let busy = page.starting.get() || running(status);
    let source = status.map_or(page.source.get(), |s| s.source);
    page.set_text("state", &session::state_line(status, page.starting.get(), source));
    let url = page.viewer_url();
    if let Some(link) = page.el::<HtmlInputElement>("link") {
        if link.value() != url {
            link.set_value(&url);
        }
    }
    if let Some(open) = page.el::<web_sys::HtmlAnchorElement>("open") {
        if open.href() != url {
            open.set_href(&url);
        }
    }
    page.show("go", !busy);
    page.show("share", !busy && can_share_screen());
    page.show("stop", busy);
    if let Some(b) = page.el::<HtmlButtonElement>("new") {
        b.set_disabled(busy);
    }
    if let Some(t) = page.el::<HtmlInputElement>("token") {
        t.set_disabled(busy);
    }
    if let Some(q) = page.el::<HtmlSelectElement>("quality") {
        q.set_disabled(busy);
    }
    let live = status.filter(|s| s.phase == Phase::Live);
    page.set_text("uptime", &live.map_or("—".into(), |s| clock(((js::now_ms() - s.started_at_ms).max(0.0) / 1000.0) as u64)));
    page.set_text("health", &status.map_or("—".into(), session::health_line));
    let error = (!chalkstream_pipeline::capture::can_record())
        .then(|| session::CANNOT_RECORD.to_owned())
        .or_else(|| page.error.borrow().clone())
        .or_else(|| status.and_then(|s| s.last_error.clone()))
        .or_else(|| advice(page, status))
        .or_else(|| page.fell_back.borrow().clone());
    page.set_text("error", &error.as_deref().map(session::for_page).unwrap_or_default());
}

/// Says when the live broadcast does not keep up with its preset (this computer turning video
/// into HLS too slowly, or uploads falling behind), and which preset to choose instead: the
/// pipeline's own judgement, as the extension's panel shows it.
fn advice(page: &Page, status: Option<&Status>) -> Option<String> {
    let (stream, strain) = &mut *page.strain.borrow_mut();
    let s = status.filter(|s| s.phase == Phase::Live)?;
    if *stream != s.stream || s.last_error.is_some() {
        // A new broadcast, or an outage that the error line already explains.
        stream.clone_from(&s.stream);
        strain.reset();
    }
    strain.push(Reading {
        at_ms: js::now_ms(),
        waiting: s.segments_waiting,
        remux_ms_total: s.remux_ms_total,
        media_ms_total: s.media_ms_total,
    });
    strain.advice().map(|a| a.message(s.quality))
}

/// Falls back once: when this computer cannot turn the camera's video into HLS as fast as it
/// comes (the pipeline's [`Advice::CannotKeepUp`] over its 6 s of readings, said without a break
/// for [`FALL_BACK_AFTER_MS`] more, so a moment's load elsewhere does not count), the page ends
/// this run and goes on at the preset below, under the same stream (viewers see one
/// discontinuity), and says so. A shared screen is left as it is (only a click may share again); a slow connection is only
/// said (a lower preset may not help it).
fn fall_back_if_needed(page: &Rc<Page>, status: Option<&Status>) {
    let Some(s) = status.filter(|s| s.phase == Phase::Live && s.source == Source::Camera) else { return };
    if page.fell_back.borrow().is_some() {
        return;
    }
    let Some(Advice::CannotKeepUp { remux_per_media_s }) = page.strain.borrow().1.advice() else {
        page.behind_since.set(None);
        return;
    };
    let now = js::now_ms();
    let since = page.behind_since.get().unwrap_or(now);
    page.behind_since.set(Some(since));
    if now - since < FALL_BACK_AFTER_MS {
        return;
    }
    let Some(lower) = s.quality.lower() else { return };
    page.behind_since.set(None);
    *page.fell_back.borrow_mut() = Some(session::fell_back(s.quality, lower, remux_per_media_s));
    let page = page.clone();
    spawn_local(async move {
        run::end("");
        // The run sends what it has and ends (at most the queue's bound); then the same session
        // goes on after the server's last seq.
        for _ in 0..600 {
            if !running(run::current_status().as_ref()) {
                break;
            }
            js::sleep(100).await;
        }
        page.strain.borrow_mut().1.reset();
        if page.fell_back.borrow().is_none() {
            return; // the streamer pressed Stop meanwhile
        }
        go(page, Source::Camera, Some(lower)).await;
    });
}
