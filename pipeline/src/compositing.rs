//! Face in the corner: the camera drawn into a corner of the tab's picture, frame by frame,
//! into the one video track the recorder encodes.
//!
//! Frames come from `MediaStreamTrackProcessor`s as `VideoFrame`s, are drawn on an
//! `OffscreenCanvas`, and leave as new `VideoFrame`s through a `MediaStreamTrackGenerator`. This
//! needs no rendering loop, so it runs in an offscreen document, which is never visible and
//! gets no animation frames (a `<video>` + canvas + `captureStream` design would need both), and
//! it measured cheaper per frame (ARCHITECTURE.md, "Compositing"). A frame leaves when the tab
//! gives one; when the tab is still (a slide), the camera's frames drive it, so the face moves.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{MediaStream, MediaStreamTrack};

use crate::js::{self, obj};
use crate::presets::{Overlay, Rect};

#[wasm_bindgen]
extern "C" {
    type MediaStreamTrackProcessor;
    #[wasm_bindgen(constructor, catch)]
    fn new(init: &JsValue) -> Result<MediaStreamTrackProcessor, JsValue>;
    #[wasm_bindgen(method, getter)]
    fn readable(this: &MediaStreamTrackProcessor) -> web_sys::ReadableStream;

    #[wasm_bindgen(extends = MediaStreamTrack)]
    type MediaStreamTrackGenerator;
    #[wasm_bindgen(constructor, catch)]
    fn new(init: &JsValue) -> Result<MediaStreamTrackGenerator, JsValue>;
    #[wasm_bindgen(method, getter)]
    fn writable(this: &MediaStreamTrackGenerator) -> web_sys::WritableStream;

    type VideoFrame;
    #[wasm_bindgen(constructor, catch)]
    fn new(image: &JsValue, init: &JsValue) -> Result<VideoFrame, JsValue>;
    #[wasm_bindgen(method)]
    fn close(this: &VideoFrame);
    #[wasm_bindgen(method, getter, js_name = displayWidth)]
    fn display_width(this: &VideoFrame) -> u32;
    #[wasm_bindgen(method, getter, js_name = displayHeight)]
    fn display_height(this: &VideoFrame) -> u32;

    type OffscreenCanvas;
    #[wasm_bindgen(constructor, catch)]
    fn new(width: u32, height: u32) -> Result<OffscreenCanvas, JsValue>;
    #[wasm_bindgen(method, js_name = getContext)]
    fn get_context(this: &OffscreenCanvas, kind: &str, opts: &JsValue) -> Ctx2d;
    #[wasm_bindgen(method, getter)]
    fn width(this: &OffscreenCanvas) -> u32;
    #[wasm_bindgen(method, setter)]
    fn set_width(this: &OffscreenCanvas, v: u32);
    #[wasm_bindgen(method, getter)]
    fn height(this: &OffscreenCanvas) -> u32;
    #[wasm_bindgen(method, setter)]
    fn set_height(this: &OffscreenCanvas, v: u32);

    #[wasm_bindgen(js_name = OffscreenCanvasRenderingContext2D)]
    type Ctx2d;
    #[wasm_bindgen(method, catch, js_name = drawImage)]
    fn draw_image(
        this: &Ctx2d,
        image: &JsValue,
        dx: f64,
        dy: f64,
        dw: f64,
        dh: f64,
    ) -> Result<(), JsValue>;
}

struct State {
    canvas: OffscreenCanvas,
    ctx: Ctx2d,
    size: (u32, u32),
    overlay: Overlay,
    /// The newest camera picture, already scaled to its corner (frames go back to the capturer
    /// at once: a held frame starves its buffer pool).
    cam_canvas: OffscreenCanvas,
    cam_ctx: Ctx2d,
    /// Where the camera goes, once its first frame told its aspect.
    cam_rect: Option<Rect>,
    has_tab: bool,
    writer: web_sys::WritableStreamDefaultWriter,
    last_out_ms: f64,
    frame_ms: f64,
    running: bool,
    frames: u64,
    busy_ms: f64,
}

/// A running compositor; [`Compositor::stop`] releases the camera and ends the output.
pub struct Compositor {
    out: MediaStreamTrackGenerator,
    camera: MediaStream,
    state: Rc<RefCell<State>>,
}

fn err(e: JsValue) -> String {
    js::js_error(&e)
}

impl Compositor {
    /// Starts drawing `camera` over `tab` at `overlay`'s corner into a `size` picture.
    pub fn start(
        tab: &MediaStreamTrack,
        camera: MediaStream,
        overlay: Overlay,
        size: (u32, u32),
        frame_rate: u32,
    ) -> Result<Compositor, String> {
        let cam_track: MediaStreamTrack = camera
            .get_video_tracks()
            .get(0)
            .dyn_into()
            .map_err(|_| "the camera gave no picture".to_string())?;
        let out = MediaStreamTrackGenerator::new(&obj(json!({ "kind": "video" }))).map_err(err)?;
        let writer = out.writable().get_writer().map_err(err)?;
        let canvas = OffscreenCanvas::new(size.0, size.1).map_err(err)?;
        let opts = obj(json!({ "alpha": false }));
        let ctx = canvas.get_context("2d", &opts);
        let cam_canvas = OffscreenCanvas::new(2, 2).map_err(err)?;
        let cam_ctx = cam_canvas.get_context("2d", &opts);
        let state = Rc::new(RefCell::new(State {
            canvas,
            ctx,
            size,
            overlay,
            cam_canvas,
            cam_ctx,
            cam_rect: None,
            has_tab: false,
            writer,
            last_out_ms: 0.0,
            frame_ms: 1000.0 / frame_rate.max(1) as f64,
            running: true,
            frames: 0,
            busy_ms: 0.0,
        }));
        spawn_local(pump(reader_of(tab)?, state.clone(), Side::Tab));
        spawn_local(pump(reader_of(&cam_track)?, state.clone(), Side::Camera));
        Ok(Compositor { out, camera, state })
    }

    /// The composited track to record.
    pub fn track(&self) -> MediaStreamTrack {
        self.out.clone().unchecked_into()
    }

    /// Frames composited so far and the main-thread time they took (ms).
    pub fn cost(&self) -> (u64, f64) {
        let s = self.state.borrow();
        (s.frames, s.busy_ms)
    }

    pub fn stop(&self) {
        self.state.borrow_mut().running = false;
        for t in self.camera.get_tracks().iter() {
            t.unchecked_into::<MediaStreamTrack>().stop();
        }
        self.out.unchecked_ref::<MediaStreamTrack>().stop();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Tab,
    Camera,
}

/// A frame reader on `track` that keeps only the newest frame: a late reader never works
/// through a backlog.
fn reader_of(track: &MediaStreamTrack) -> Result<web_sys::ReadableStreamDefaultReader, String> {
    let init = obj(json!({ "maxBufferSize": 1 }));
    let _ = js_sys::Reflect::set(&init, &"track".into(), track);
    let p = MediaStreamTrackProcessor::new(&init).map_err(err)?;
    p.readable()
        .get_reader()
        .dyn_into()
        .map_err(|_| "no frame reader".to_string())
}

/// Reads one side's frames until the track ends or the compositor stops.
async fn pump(reader: web_sys::ReadableStreamDefaultReader, state: Rc<RefCell<State>>, side: Side) {
    loop {
        let Ok(chunk) = JsFuture::from(reader.read()).await else {
            break;
        };
        let done = js_sys::Reflect::get(&chunk, &"done".into())
            .map(|d| d.is_truthy())
            .unwrap_or(true);
        if done {
            break;
        }
        let frame: VideoFrame = js_sys::Reflect::get(&chunk, &"value".into())
            .unwrap_or(JsValue::NULL)
            .unchecked_into();
        let write = {
            let mut s = state.borrow_mut();
            let now = now_ms();
            let out = if s.running {
                draw(&mut s, &frame, side, now)
            } else {
                None
            };
            frame.close();
            if !s.running {
                break;
            }
            out
        };
        if let Some((writer, out)) = write {
            let _ = JsFuture::from(writer.write_with_chunk(&out)).await;
            out.close();
        }
    }
    let _ = reader.cancel();
}

/// Draws one frame: a tab frame fills the picture and the camera goes on top; a camera frame
/// is scaled into its own small canvas and, when the tab has been still for more than a frame
/// and a half, drawn into the picture (the tab under it is unchanged). Returns the frame to
/// write, if one is due.
fn draw(
    s: &mut State,
    frame: &VideoFrame,
    side: Side,
    now: f64,
) -> Option<(web_sys::WritableStreamDefaultWriter, VideoFrame)> {
    let (w, h) = s.size;
    match side {
        Side::Camera => {
            let r = *s.cam_rect.get_or_insert_with(|| {
                s.overlay
                    .rect(w, h, frame.display_width(), frame.display_height())
            });
            if s.cam_canvas.width() != r.w || s.cam_canvas.height() != r.h {
                s.cam_canvas.set_width(r.w);
                s.cam_canvas.set_height(r.h);
            }
            s.cam_ctx
                .draw_image(frame.as_ref(), 0.0, 0.0, r.w as f64, r.h as f64)
                .ok()?;
            if !s.has_tab || now - s.last_out_ms < 1.5 * s.frame_ms {
                return None;
            }
        }
        Side::Tab => {
            s.ctx
                .draw_image(frame.as_ref(), 0.0, 0.0, w as f64, h as f64)
                .ok()?;
            s.has_tab = true;
        }
    }
    if let Some(r) = s.cam_rect {
        let _ = s.ctx.draw_image(
            s.cam_canvas.as_ref(),
            r.x as f64,
            r.y as f64,
            r.w as f64,
            r.h as f64,
        );
    }
    let init = obj(json!({ "timestamp": (now * 1000.0).round() }));
    let out = VideoFrame::new(s.canvas.as_ref(), &init).ok()?;
    s.last_out_ms = now;
    s.frames += 1;
    s.busy_ms += now_ms() - now;
    Some((s.writer.clone(), out))
}

fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map(|p| p.now())
        .unwrap_or_else(js::now_ms)
}

/// Opens the camera for the overlay, about as large as the corner needs. The error is the
/// plain sentence for the panel.
pub async fn open_camera(size: (u32, u32)) -> Result<MediaStream, String> {
    let devices = web_sys::window()
        .ok_or("no window")?
        .navigator()
        .media_devices()
        .map_err(err)?;
    let c = obj(json!({ "audio": false, "video": {
        "width": { "ideal": (size.0 / 3).max(320) }, "height": { "ideal": (size.1 / 3).max(240) },
        "frameRate": { "ideal": 30, "max": 30 } } }));
    let p = devices
        .get_user_media_with_constraints(c.unchecked_ref())
        .map_err(err)?;
    JsFuture::from(p)
        .await
        .map(|s| s.unchecked_into())
        .map_err(|e| {
            crate::broadcast::device_refusal(
                crate::broadcast::Device::Camera,
                &crate::mixing::error_name(&e),
            )
        })
}
