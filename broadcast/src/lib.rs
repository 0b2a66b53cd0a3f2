//! The broadcast page (`GET /broadcast`): one button streams the camera and microphone from any
//! browser, with nothing installed, through the extension's own pipeline
//! (`chalkstream_pipeline`). The page adds only what is a page's: the session kept in
//! `localStorage` (a reload resumes the same stream), the ingest token field, and its panel.
//!
//! - [`session`]: pure decisions (which session, where a resumed stream goes on, what the
//!   panel says), tested natively.
//! - `page` (wasm32 only): the DOM, `localStorage`, and the pipeline's `Platform`.

pub mod session;

#[cfg(target_arch = "wasm32")]
mod page;
