//! Rendering the HLS media playlist (RFC 8216, version 3) for a [`StreamView`].
//!
//! One set of functions writes every line, so a live playlist and its ended form differ only by
//! the final `#EXT-X-ENDLIST`, and each later playlist only appends, drops from the head, or ends.
//!
//! A segment's lines depend on nothing but its stored meta and the stream id, so a store may
//! keep the lines of a complete page of segments ([`segment_lines`]) and hand them back for an
//! `EVENT` playlist ([`render_event`]), which then concatenates text instead of formatting every
//! segment again. Everything that depends on the window or the moment (the head lines, the end)
//! is written per request. [`check_lines`] tells stored lines that are not what
//! [`segment_lines`] wrote, so the caller can fall back to the metas.

use crate::decimal::format_millis;
use crate::segment::SegmentMeta;
use crate::time::format_rfc3339_ms;
use crate::window::{EventView, Piece, PlaylistKind, State, StreamView};
use std::fmt::Write;

/// The protocol version: decimal `EXTINF` durations need 3; nothing here needs more.
pub const VERSION: u32 = 3;

/// About how many bytes one segment's lines take (for reserving).
const SEGMENT_LINES_LEN: usize = 120;

/// The media playlist for stream `stream_id`; segment URIs are absolute paths
/// `/chunks/{stream}/{seq}.ts`.
pub fn render(stream_id: &str, view: &StreamView) -> String {
    let mut out = String::with_capacity(160 + view.segments.len() * SEGMENT_LINES_LEN);
    let first_seq = view.segments.first().map(|m| m.seq).unwrap_or(0);
    write_head(&mut out, view.target_s, first_seq, view.discontinuity_sequence, view.kind);
    for meta in &view.segments {
        write_segment(&mut out, stream_id, meta);
    }
    write_end(&mut out, view.state);
    out
}

/// The `EVENT` playlist for an [`EventView`]: byte for byte what [`render`] writes for the
/// same segments, with stored lines copied where the view has them.
pub fn render_event(stream_id: &str, view: &EventView) -> String {
    let body: usize = view
        .pieces
        .iter()
        .map(|piece| match piece {
            Piece::Segment(_) => SEGMENT_LINES_LEN,
            Piece::Lines { text, .. } => text.len(),
        })
        .sum();
    let mut out = String::with_capacity(160 + body);
    write_head(&mut out, view.target_s, view.first_seq, view.discontinuity_sequence, PlaylistKind::Event);
    for piece in &view.pieces {
        match piece {
            Piece::Segment(meta) => write_segment(&mut out, stream_id, meta),
            Piece::Lines { text, .. } => out.push_str(text),
        }
    }
    write_end(&mut out, view.state);
    out
}

/// The lines of `metas`, in order, exactly as [`render`] writes them inside a playlist.
pub fn segment_lines(stream_id: &str, metas: &[SegmentMeta]) -> String {
    let mut out = String::with_capacity(metas.len() * SEGMENT_LINES_LEN);
    for meta in metas {
        write_segment(&mut out, stream_id, meta);
    }
    out
}

/// Whether `lines` have the shape [`segment_lines`] gives the `len` segments from `first_seq`
/// of stream `stream_id`: per segment an optional `#EXT-X-DISCONTINUITY`, a
/// `#EXT-X-PROGRAM-DATE-TIME`, an `#EXTINF` and the segment's own URI, and nothing else. A
/// truncated, foreign or misplaced text fails; the values inside the tags are not re-checked.
pub fn check_lines(stream_id: &str, first_seq: u64, len: u64, lines: &str) -> bool {
    // Byte by byte rather than line by line: a GET checks every stored block it copies.
    let mut rest = lines.as_bytes();
    let mut digits = [0u8; 20];
    for seq in first_seq..first_seq.saturating_add(len) {
        if let Some(after) = rest.strip_prefix(b"#EXT-X-DISCONTINUITY\n") {
            rest = after;
        }
        let Some((_, after)) = rest.strip_prefix(b"#EXT-X-PROGRAM-DATE-TIME:").and_then(split_line) else {
            return false;
        };
        let Some((extinf, after)) = after.strip_prefix(b"#EXTINF:").and_then(split_line) else {
            return false;
        };
        if !extinf.ends_with(b",") {
            return false;
        }
        let uri = after
            .strip_prefix(b"/chunks/")
            .and_then(|r| r.strip_prefix(stream_id.as_bytes()))
            .and_then(|r| r.strip_prefix(b"/"))
            .and_then(|r| r.strip_prefix(decimal(seq, &mut digits)))
            .and_then(|r| r.strip_prefix(b".ts\n"));
        let Some(after) = uri else {
            return false;
        };
        rest = after;
    }
    rest.is_empty()
}

/// The line at the start of `bytes` (without its newline) and what follows it; `None` when no
/// newline ends it.
fn split_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().position(|&b| b == b'\n')?;
    Some((&bytes[..end], &bytes[end + 1..]))
}

/// `n` in decimal, written into the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

fn write_head(out: &mut String, target_s: u32, first_seq: u64, discontinuity_sequence: u64, kind: PlaylistKind) {
    // `write!` into a String cannot fail.
    let _ = writeln!(out, "#EXTM3U");
    let _ = writeln!(out, "#EXT-X-VERSION:{VERSION}");
    let _ = writeln!(out, "#EXT-X-INDEPENDENT-SEGMENTS");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target_s}");
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first_seq}");
    let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}");
    if kind == PlaylistKind::Event {
        let _ = writeln!(out, "#EXT-X-PLAYLIST-TYPE:EVENT");
    }
}

fn write_segment(out: &mut String, stream_id: &str, meta: &SegmentMeta) {
    if meta.discontinuity {
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
    }
    let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", format_rfc3339_ms(meta.pdt_ms));
    let _ = writeln!(out, "#EXTINF:{},", format_millis(u64::from(meta.duration_ms)));
    let _ = writeln!(out, "/chunks/{stream_id}/{}.ts", meta.seq);
}

fn write_end(out: &mut String, state: State) {
    if state == State::Ended {
        let _ = writeln!(out, "#EXT-X-ENDLIST");
    }
}
