//! Chalkstream's browser pipeline, shared by the extension and the broadcast page: capture a
//! camera (or, in the extension, a tab), cut the recording into HLS segments or low-latency
//! parts, remux them with ffmpeg.wasm and upload them in order through a bounded queue that
//! survives outages. What a context adds (Chrome's APIs, a page's storage and UI) comes in
//! through [`run::Platform`]; nothing here names `chrome.*`.
//!
//! Pure parts (`audio`, `ebml`, `webm`, `timing`, `parts`, `ts`, `queue`, `ids`, `presets`,
//! `broadcast`) have unit tests and no browser dependencies; `capture`, `compositing`, `mixing`,
//! `remux`, `upload` and `run` (which connects them) are the browser edges, built for wasm32.
//! The wire contract (stream id, header names, paths, duration text) is
//! `chalkstream_manifest`'s, shared with the server.

pub mod audio;
pub mod broadcast;
pub mod ebml;
pub mod ids;
pub mod parts;
pub mod presets;
pub mod queue;
pub mod timing;
pub mod ts;
pub mod webm;

#[cfg(target_arch = "wasm32")]
pub mod bell;
#[cfg(target_arch = "wasm32")]
pub mod capture;
#[cfg(target_arch = "wasm32")]
pub mod compositing;
#[cfg(target_arch = "wasm32")]
pub mod encode;
#[cfg(target_arch = "wasm32")]
pub mod js;
#[cfg(target_arch = "wasm32")]
pub mod mixing;
#[cfg(target_arch = "wasm32")]
pub mod remux;
#[cfg(target_arch = "wasm32")]
pub mod run;
#[cfg(target_arch = "wasm32")]
pub mod tracks;
#[cfg(target_arch = "wasm32")]
pub mod upload;
