//! Chalkstream's browser extension: capture a tab or the camera, cut HLS segments (or, for low
//! latency, their parts), upload them.
//!
//! Pure parts (`audio`, `ebml`, `timing`, `parts`, `ts`, `queue`, `ids`, `messages`) have unit
//! tests and no browser dependencies; `worker`, `offscreen` and `ui` are the thin browser edges
//! that the JavaScript loaders call into, and `offscreen` runs its pipeline through `capture`,
//! `remux` and `upload`.
//! The wire contract (stream id, header names, paths, duration text) is
//! `chalkstream_manifest`'s, shared with the server.

pub mod audio;
pub mod ebml;
pub mod ids;
pub mod messages;
pub mod parts;
pub mod presets;
pub mod queue;
pub mod timing;
pub mod ts;

#[cfg(target_arch = "wasm32")]
mod capture;
#[cfg(target_arch = "wasm32")]
mod chrome;
#[cfg(target_arch = "wasm32")]
mod clipboard;
#[cfg(target_arch = "wasm32")]
mod compositing;
#[cfg(target_arch = "wasm32")]
mod menus;
#[cfg(target_arch = "wasm32")]
mod mixing;
#[cfg(target_arch = "wasm32")]
pub mod offscreen;
#[cfg(target_arch = "wasm32")]
mod remux;
#[cfg(target_arch = "wasm32")]
pub mod ui;
#[cfg(target_arch = "wasm32")]
mod upload;
#[cfg(target_arch = "wasm32")]
pub mod worker;
