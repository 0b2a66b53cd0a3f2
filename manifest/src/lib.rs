//! Chalkstream's pure core: the stream and segment model, ingest validation, HLS playlist
//! rendering, and the retention and idle rules.
//!
//! This crate decides; it never does I/O. It knows nothing about Spin, HTTP or the browser, and it
//! has no clock: every function that depends on time takes `now` as Unix milliseconds. Durations
//! are integer milliseconds everywhere (decimal text is parsed exactly, never through floats).
//!
//! Code map:
//! - [`id`]: session secrets and the public stream id (lowercase hex SHA-1 of the secret).
//! - [`ingest`]: validation of one `PUT /ingest/{session}/{seq}.ts` (seq, headers, MPEG-TS body).
//! - [`decimal`], [`time`]: exact decimal parsing and RFC 3339 timestamps.
//! - [`segment`]: what is stored per segment and per stream (the serde records).
//! - [`part`]: v2 partial segments: part and commit validation, the part records.
//! - [`ll`]: low-latency decisions: delivery directives, blocking reloads, skips, part window.
//! - [`rules`]: target duration, retention, idle end, discontinuities, configuration values.
//! - [`window`]: which stored segments a playlist lists, given what the store returns.
//! - [`playlist`]: rendering the media playlist text (v1, and v2 with LL-HLS tags).
//! - [`wire`]: the wire contract's header names and paths, shared with the extension.

pub mod decimal;
pub mod id;
pub mod ingest;
pub mod ll;
pub mod part;
pub mod playlist;
pub mod rules;
pub mod segment;
pub mod time;
pub mod window;
pub mod wire;
