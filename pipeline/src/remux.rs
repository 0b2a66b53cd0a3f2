//! Remux: ffmpeg.wasm turns one cut of the WebM recording into MPEG-TS (video copied, Opus ->
//! AAC on the broadcast's frame grid, input timestamps kept).
//!
//! One ffmpeg.wasm core serves the document and is replaced now and then (its heap only grows)
//! and after any failure; a failed run is retried once on the fresh core. The replacement is
//! loaded a few runs ahead, so the switch costs the pipeline nothing: loading a core takes over
//! a second here, and with parts a stalled second empties the player's buffer.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use js_sys::{Array, Reflect, Uint8Array};
use serde_json::json;
use wasm_bindgen::prelude::*;

use crate::js::{self, obj, FFmpeg};
use crate::timing::AudioPlan;

/// Runs one ffmpeg.wasm core does before it is replaced by a fresh one (measured: the 0.12.10
/// core traps with "memory access out of bounds" after about 120 runs).
const FFMPEG_RUNS_PER_CORE: u32 = 50;
/// The replacement core starts loading this many runs before the switch (with 334 ms parts
/// about 3 s ahead, with whole segments more): the two cores coexist only that long.
const SPARE_AHEAD_RUNS: u32 = 10;
/// ffmpeg.wasm's in-memory input and output files: the same two every run (see [`run`]).
const SRC: &str = "in.webm";
const DST: &str = "out.ts";

thread_local! {
    /// The core in use.
    static FFMPEG: RefCell<Option<Rc<FFmpeg>>> = const { RefCell::new(None) };
    /// Its replacement, loaded ahead of the switch.
    static SPARE: RefCell<Option<Rc<FFmpeg>>> = const { RefCell::new(None) };
    /// The replacement is loading in the background.
    static LOADING: RefCell<bool> = const { RefCell::new(false) };
    static FFMPEG_LOG: RefCell<VecDeque<String>> = const { RefCell::new(VecDeque::new()) };
    static FFMPEG_RUNS: RefCell<u32> = const { RefCell::new(0) };
    /// Cores replaced, and replacements that took a warmed-up spare.
    static SWITCHES: RefCell<(u32, u32)> = const { RefCell::new((0, 0)) };
    /// Where the core is: the URLs of `ffmpeg-core.js` and `ffmpeg-core.wasm` ([`set_core`]).
    static CORE: RefCell<(String, String)> = const { RefCell::new((String::new(), String::new())) };
}

/// Where ffmpeg.wasm's core is (both files ship with whoever runs the pipeline); set before the
/// first remux.
pub fn set_core(js_url: String, wasm_url: String) {
    CORE.with(|c| *c.borrow_mut() = (js_url, wasm_url));
}

/// One remux: the WebM input (init bytes first) and what to keep of it.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    /// Init bytes, pre-roll audio, the cut's media, lookahead audio.
    pub input: &'a [u8],
    /// The AAC frames to encode and keep.
    pub plan: AudioPlan,
    /// Media after this timecode (ms) is dropped.
    pub trim_at_ms: Option<u64>,
    /// The cut's video may start with a frame that is not a keyframe (a part inside a
    /// segment): copy it anyway instead of dropping frames until the next keyframe.
    pub copy_leading_delta_frames: bool,
}

/// Cores replaced so far, and how many of them by a spare loaded ahead ([`load_spare`]).
pub fn switches() -> (u32, u32) {
    SWITCHES.with(|s| *s.borrow())
}

/// Loads the core ahead of the first remux.
pub async fn preload() -> Result<(), String> {
    ffmpeg().await.map(|_| ())
}

/// Remuxes `job` to MPEG-TS; a failed run is retried once on a fresh core.
pub async fn remux(job: &Job<'_>) -> Result<Vec<u8>, String> {
    match run(job).await {
        Ok(ts) => Ok(ts),
        // A failed run replaced the core; one retry on the fresh core.
        Err(_) => run(job).await,
    }
}

/// The core in use; when there is none (the first run, a switch, a failure), the spare,
/// waited for while it loads, or else a core loaded now.
async fn ffmpeg() -> Result<Rc<FFmpeg>, String> {
    if let Some(f) = FFMPEG.with(|f| f.borrow().clone()) {
        return Ok(f);
    }
    // A replacement loading in the background (see `run`) is waited for, not loaded twice.
    while LOADING.with(|l| *l.borrow()) {
        js::sleep(5).await;
    }
    let ff = match SPARE.with(|s| s.borrow_mut().take()) {
        Some(spare) => {
            SWITCHES.with(|s| s.borrow_mut().1 += 1);
            spare
        }
        None => ffmpeg_load().await?,
    };
    FFMPEG.with(|f| *f.borrow_mut() = Some(ff.clone()));
    Ok(ff)
}

/// Starts loading the replacement core in the background, unless one is loaded or loading,
/// and warms it up with a copy of a real run (`input` and `args`): a fresh core's first run
/// compiles the code it touches and took over a second here, a stall the player's buffer of
/// three parts does not survive. The warm-up's output is never read.
fn load_spare(input: Vec<u8>, args: Array) {
    if LOADING.with(|l| *l.borrow()) || SPARE.with(|s| s.borrow().is_some()) {
        return;
    }
    LOADING.with(|l| *l.borrow_mut() = true);
    wasm_bindgen_futures::spawn_local(async move {
        let loaded = match ffmpeg_load().await {
            Ok(ff) => {
                let warm = async {
                    ff.write_file(SRC, &Uint8Array::from(&input[..])).await?;
                    ff.exec(&args).await
                };
                match warm.await {
                    Ok(code) if code.as_f64() == Some(0.0) => Some(ff),
                    // A core that cannot run the job is not kept: the switch loads another.
                    _ => {
                        ff.terminate();
                        None
                    }
                }
            }
            Err(_) => None,
        };
        LOADING.with(|l| *l.borrow_mut() = false);
        SPARE.with(|s| *s.borrow_mut() = loaded);
    });
}

/// Loads a fresh ffmpeg.wasm core.
async fn ffmpeg_load() -> Result<Rc<FFmpeg>, String> {
    let ff = FFmpeg::new();
    let log = Closure::<dyn FnMut(JsValue)>::new(|ev: JsValue| {
        if let Some(m) = Reflect::get(&ev, &"message".into())
            .ok()
            .and_then(|m| m.as_string())
        {
            FFMPEG_LOG.with(|l| {
                let mut l = l.borrow_mut();
                l.push_back(m);
                if l.len() > 20 {
                    l.pop_front();
                }
            });
        }
    });
    ff.on("log", log.as_ref().unchecked_ref());
    log.forget(); // lives as long as the FFmpeg instance, which lives as long as the document
    let (core_url, wasm_url) = CORE.with(|c| c.borrow().clone());
    let config = obj(json!({ "coreURL": core_url, "wasmURL": wasm_url }));
    ff.load(&config)
        .await
        .map_err(|e| format!("ffmpeg.wasm did not load: {}", js::js_error(&e)))?;
    Ok(Rc::new(ff))
}

/// The ffmpeg command line for `job`, reading `src` and writing `dst` (see [`run`]).
fn ffmpeg_args(job: &Job<'_>, src: &str, dst: &str) -> Array {
    let plan = job.plan;
    let audio_filter = format!(
        "aresample=async=1:min_hard_comp=0.005:first_pts={from},apad,atrim=start_pts={from}:end_pts={to}",
        from = plan.from_sample,
        to = plan.to_sample
    );
    let keep_packets = match plan.packets {
        0 => "noise=drop=1".to_string(),
        k => format!(
            "noise=drop='not(between(n\\,{}\\,{}))'",
            plan.first_packet,
            plan.first_packet + k - 1
        ),
    };
    // A cut trimmed to the target duration loses its media after `trim_at_ms` (output option:
    // compared with the kept input timestamps).
    let to = job
        .trim_at_ms
        .map(|ms| format!("{}.{:03}", ms / 1000, ms % 1000));
    let mut args: Vec<&str> = vec![
        "-hide_banner",
        "-loglevel",
        "error",
        // The WebM header has every parameter a copy and the Opus decoder need: probing the
        // stream (decoding H.264 frames in wasm) only cost time, ~30% of a 720p remux.
        "-probesize",
        "32",
        "-analyzeduration",
        "0",
        "-i",
        src,
        "-map",
        "0:v:0",
        "-map",
        "0:a:0?",
        "-c:v",
        "copy",
    ];
    if job.copy_leading_delta_frames {
        args.push("-copyinkf");
    }
    args.extend([
        "-af",
        &audio_filter,
        "-c:a",
        "aac",
        // The fast search, not the default two-loop one: on real sound (a microphone, a tab
        // playing music) the two-loop coder made ffmpeg.wasm's worker 3.6x busier than on a
        // silent tab and added ~0.5 s glass-to-glass; on silence the two cost about the same.
        "-aac_coder",
        "fast",
        "-ar",
        "48000",
        "-b:a",
        "128k",
        "-bsf:a",
        &keep_packets,
    ]);
    if let Some(to) = &to {
        args.extend(["-to", to]);
    }
    args.extend([
        "-copyts",
        "-output_ts_offset",
        "10",
        "-muxdelay",
        "0",
        "-muxpreload",
        "0",
        "-f",
        "mpegts",
        dst,
    ]);
    args.into_iter().map(JsValue::from_str).collect()
}

/// One ffmpeg.wasm run.
///
/// The audio is placed by its timestamps from the plan's first sample on (silence where the
/// recording has none; any offset over 5 ms is filled or trimmed at once, so every remux places
/// a packet at the same sample: the splitter already made the timestamps continuous), cut to
/// exactly the plan's samples, encoded, and only the packets of the frames inside the cut are
/// kept: the AAC encoder's priming frame and the lead and tail frames are dropped by packet
/// index, so consecutive cuts tile the timeline.
async fn run(job: &Job<'_>) -> Result<Vec<u8>, String> {
    let ff = ffmpeg().await?;
    // The same two names every run: writing the input replaces the last one and ffmpeg
    // overwrites its output (`-y`), so no deletes are needed. Each call to the core is a round
    // trip to its worker, which waits whenever this document is busy: 3 round trips, not 5.
    let (src, dst) = (SRC, DST);
    ff.write_file(src, &Uint8Array::from(job.input))
        .await
        .map_err(|e| js::js_error(&e))?;
    FFMPEG_LOG.with(|l| l.borrow_mut().clear());
    let args = ffmpeg_args(job, src, dst);
    let spare_due = FFMPEG_RUNS.with(|r| (*r.borrow() + 1) % FFMPEG_RUNS_PER_CORE)
        == FFMPEG_RUNS_PER_CORE - SPARE_AHEAD_RUNS;
    let warm_up = spare_due.then(|| (job.input.to_vec(), args.clone()));
    let code = ff.exec(&args).await.map_err(|e| js::js_error(&e));
    let out = match code {
        Ok(c) if c.as_f64() == Some(0.0) => ff
            .read_file(dst)
            .await
            .map(|d| d.unchecked_into::<Uint8Array>().to_vec())
            .map_err(|e| js::js_error(&e)),
        Ok(c) => Err(format!(
            "ffmpeg.wasm failed ({:?}): {}",
            c.as_f64(),
            FFMPEG_LOG.with(|l| l.borrow().iter().cloned().collect::<Vec<_>>().join(" / "))
        )),
        Err(e) => Err(e),
    };
    // Keep memory flat: the core is restarted now and then, as its wasm heap can only grow (its
    // in-memory files are the two above, replaced every run, and go with it).
    let runs = FFMPEG_RUNS.with(|r| {
        *r.borrow_mut() += 1;
        *r.borrow()
    });
    if runs % FFMPEG_RUNS_PER_CORE == 0 || out.is_err() {
        // The next run takes the spare (loaded by now, or waited for); after a failure with
        // no spare under way, it loads a core itself.
        ff.terminate();
        FFMPEG.with(|f| *f.borrow_mut() = None);
        SWITCHES.with(|s| s.borrow_mut().0 += 1);
    } else if let (Some((input, args)), Ok(_)) = (warm_up, &out) {
        load_spare(input, args);
    }
    out
}
