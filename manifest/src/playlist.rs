//! Rendering the HLS media playlist (RFC 8216, version 3) for a [`StreamView`].
//!
//! One function writes every line, so a live playlist and its ended form differ only by the
//! final `#EXT-X-ENDLIST`, and each later playlist only appends, drops from the head, or ends.

use crate::decimal::format_millis;
use crate::time::format_rfc3339_ms;
use crate::window::{PlaylistKind, State, StreamView};
use std::fmt::Write;

/// The protocol version: decimal `EXTINF` durations need 3; nothing here needs more.
pub const VERSION: u32 = 3;

/// The media playlist for stream `stream_id`; segment URIs are absolute paths
/// `/chunks/{stream}/{seq}.ts`.
pub fn render(stream_id: &str, view: &StreamView) -> String {
    let mut out = String::with_capacity(160 + view.segments.len() * 120);
    let first_seq = view.segments.first().map(|m| m.seq).unwrap_or(0);
    // `write!` into a String cannot fail.
    let _ = writeln!(out, "#EXTM3U");
    let _ = writeln!(out, "#EXT-X-VERSION:{VERSION}");
    let _ = writeln!(out, "#EXT-X-INDEPENDENT-SEGMENTS");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", view.target_s);
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first_seq}");
    let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", view.discontinuity_sequence);
    if view.kind == PlaylistKind::Event {
        let _ = writeln!(out, "#EXT-X-PLAYLIST-TYPE:EVENT");
    }
    for meta in &view.segments {
        if meta.discontinuity {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
        }
        let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", format_rfc3339_ms(meta.pdt_ms));
        let _ = writeln!(out, "#EXTINF:{},", format_millis(u64::from(meta.duration_ms)));
        let _ = writeln!(out, "/chunks/{stream_id}/{}.ts", meta.seq);
    }
    if view.state == State::Ended {
        let _ = writeln!(out, "#EXT-X-ENDLIST");
    }
    out
}
