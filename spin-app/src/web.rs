//! The pages and static assets a browser gets: the landing page, the viewer
//! page and the player's assets (embedded at build time from `player/dist`).
//!
//! Placeholder until the player lands: plain pages, no assets.

/// The landing page (`GET /`). `base_url` is this server's origin, e.g. `http://127.0.0.1:3000`.
pub fn landing_page(base_url: &str) -> String {
    format!("<!doctype html><meta charset=utf-8><title>Chalkstream</title><h1>Chalkstream</h1><p>This server ({base_url}) takes live streams from the Chalkstream browser extension.</p>")
}

/// The viewer page (`GET /play/{stream}`); `stream` is an already validated stream id.
/// `embed` is true for `?embed=1` (no page chrome).
pub fn play_page(stream: &str, base_url: &str, embed: bool) -> String {
    let _ = embed;
    format!("<!doctype html><meta charset=utf-8><title>Chalkstream {stream}</title><p>Playlist: <a href=\"{base_url}/playlist/{stream}.m3u8\">{base_url}/playlist/{stream}.m3u8</a></p>")
}

/// A static asset under `/assets/{name}`: its content type and bytes.
pub fn asset(name: &str) -> Option<(&'static str, &'static [u8])> {
    let _ = name;
    None
}
