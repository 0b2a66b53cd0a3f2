//! Chalkstream's browser extension: capture a tab or the camera, cut HLS segments (or, for low
//! latency, their parts), upload them.
//!
//! The pipeline itself (capture, cutting, parts, remux, the upload queue) is
//! `chalkstream_pipeline`, shared with the broadcast page; its modules are re-exported here under
//! their old names. What is Chrome's stays here: `worker` (the service worker), `offscreen` (the
//! document that runs the pipeline, as its `Platform`), `ui` (popup panel and options), `menus`,
//! `clipboard`, `chrome` (the `chrome.*` bindings) and `messages` (the one closed message enum).
//! The wire contract (stream id, header names, paths, duration text) is
//! `chalkstream_manifest`'s, shared with the server.

pub use chalkstream_pipeline::{audio, ebml, ids, parts, presets, queue, timing, ts};
pub mod messages;

#[cfg(target_arch = "wasm32")]
mod chrome;
#[cfg(target_arch = "wasm32")]
mod clipboard;
#[cfg(target_arch = "wasm32")]
mod menus;
#[cfg(target_arch = "wasm32")]
pub mod offscreen;
#[cfg(target_arch = "wasm32")]
pub mod ui;
#[cfg(target_arch = "wasm32")]
pub mod worker;
