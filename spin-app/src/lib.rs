//! The Chalkstream Spin component: HTTP routing, segment storage in Spin key-value, the
//! playlists and status API, and the embedded player pages.
//!
//! Thin by design: what is valid, what a playlist lists and when a stream ends are decided in
//! `chalkstream_manifest`; this crate carries bytes between HTTP, the store and that core.
//!
//! - [`route`]: the typed router (`Route::parse`, allowed methods).
//! - [`api`]: the handlers, over [`kv::Kv`]; they run natively in unit tests.
//! - [`hold`]: blocking reloads and held part requests (LL-HLS): what to re-read and when.
//! - [`store`]: streams in the key-value store (key layout and the no-lost-segment argument).
//! - [`sweep`]: the sweep index that lets retention reach streams nobody requests (issue 10).
//! - [`kv`]: the storage trait and an in-memory implementation.
//! - [`reply`]: responses and the one error type, [`reply::ApiError`].
//! - [`web`]: the landing and viewer pages and their assets (owned by the player).
//! - [`files`]: the broadcast page's files, read from the component's `files` mount.
//! - `edge` (wasm32 only): the Spin entry point, Spin key-value, variables and the clock.

pub mod api;
pub mod files;
pub mod hold;
pub mod kv;
pub mod reply;
pub mod route;
pub mod store;
pub mod sweep;
pub mod web;

#[cfg(target_arch = "wasm32")]
mod edge;
