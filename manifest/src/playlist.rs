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
use crate::ll::{self, LlView, OpenSegment};
use crate::segment::SegmentMeta;
use crate::time::format_rfc3339_ms;
use crate::window::{EventView, Piece, PlaylistKind, State, StreamView};
use std::fmt::Write;

/// The protocol version: decimal `EXTINF` durations need 3; nothing here needs more.
pub const VERSION: u32 = 3;
/// The protocol version of a v2 (low-latency) stream's playlist: `EXT-X-SKIP` needs 9
/// (rfc8216bis §8), and a playlist keeps one version for its whole life.
pub const LL_VERSION: u32 = 9;

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

/// The playlist of a v2 stream. While live: `EXT-X-SERVER-CONTROL` and `EXT-X-PART-INF` in the
/// head, `EXT-X-SKIP` for a delta update, `EXT-X-PART` lines before the lines of each segment
/// that starts within three target durations of the end, the open segment's
/// `EXT-X-DISCONTINUITY`/`EXT-X-PROGRAM-DATE-TIME` and parts after the last segment (so they are
/// already the first lines that segment will have once sealed), and `EXT-X-PRELOAD-HINT` for the
/// next part. Once ended: the same head, every segment without parts, and `EXT-X-ENDLIST`.
pub fn render_ll(stream_id: &str, view: &LlView) -> String {
    let live = view.state == State::Live;
    let body: usize = view.pieces.iter().map(|piece| match piece {
        Piece::Segment(meta) => SEGMENT_LINES_LEN + meta.ll_parts.len() * PART_LINE_LEN,
        Piece::Lines { text, .. } => text.len(),
    }).sum();
    let mut out = String::with_capacity(400 + body);
    let _ = writeln!(out, "#EXTM3U");
    let _ = writeln!(out, "#EXT-X-VERSION:{LL_VERSION}");
    let _ = writeln!(out, "#EXT-X-INDEPENDENT-SEGMENTS");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", view.target_s);
    let (hold_back, skip_until, part_target) = ll::server_control(view.target_s, view.part_target_ms);
    let _ = writeln!(
        out,
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={hold_back},CAN-SKIP-UNTIL={skip_until}"
    );
    let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={part_target}");
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", view.first_seq);
    let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", view.discontinuity_sequence);
    if view.kind == PlaylistKind::Event {
        let _ = writeln!(out, "#EXT-X-PLAYLIST-TYPE:EVENT");
    }
    // After every head tag: hls.js counts EXT-X-SKIP as segments (hls.js issue 7554).
    if live && view.skipped > 0 {
        let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={}", view.skipped);
    }
    let with_parts = if live { part_window_start(view) } else { view.pieces.len() };
    for (i, piece) in view.pieces.iter().enumerate() {
        match piece {
            Piece::Segment(meta) if i >= with_parts => write_segment_with_parts(&mut out, stream_id, meta, view.part_target_ms),
            Piece::Segment(meta) => write_segment(&mut out, stream_id, meta),
            Piece::Lines { text, .. } => out.push_str(text),
        }
    }
    if live {
        if let Some(open) = &view.open {
            write_open(&mut out, stream_id, open);
            let (seq, part) = open.next_part();
            let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"/chunks/{stream_id}/{seq}.{part}.ts\"");
        }
    }
    write_end(&mut out, view.state);
    out
}

/// About how many bytes one `EXT-X-PART` line takes.
const PART_LINE_LEN: usize = 100;

/// The index of the first piece whose segment lists its parts: the trailing segments that start
/// within the part window, counted from the end of the open segment's parts.
fn part_window_start(view: &LlView) -> usize {
    let mut from_end = view.open.as_ref().map_or(0, OpenSegment::duration_ms);
    let mut start = view.pieces.len();
    for (i, piece) in view.pieces.iter().enumerate().rev() {
        let Piece::Segment(meta) = piece else { break };
        from_end += u64::from(meta.duration_ms);
        if !ll::in_part_window(from_end, view.target_s) {
            break;
        }
        start = i;
    }
    start
}

fn write_part(out: &mut String, stream_id: &str, seq: u64, part: usize, duration_ms: u32, independent: bool) {
    let _ = write!(
        out,
        "#EXT-X-PART:DURATION={},URI=\"/chunks/{stream_id}/{seq}.{part}.ts\"",
        format_millis(u64::from(duration_ms))
    );
    let _ = writeln!(out, "{}", if independent { ",INDEPENDENT=YES" } else { "" });
}

/// A segment's lines with its `EXT-X-PART` lines after the tags that apply to the whole segment.
/// A given-up seq (`EXT-X-GAP`) has no parts of its own: inside the part window it is listed as
/// parts of at most the part target marked `GAP=YES` (rfc8216bis §4.4.4.9: not available), so
/// every segment near the live edge lists parts, as clients expect once parts have begun (a
/// gap without them broke that rule for three target durations after every gap).
fn write_segment_with_parts(out: &mut String, stream_id: &str, meta: &SegmentMeta, part_target_ms: u32) {
    if meta.discontinuity {
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
    }
    let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", format_rfc3339_ms(meta.pdt_ms));
    for (n, part) in meta.ll_parts.iter().enumerate() {
        write_part(out, stream_id, meta.seq, n, part.duration_ms, part.independent);
    }
    if meta.gap && part_target_ms > 0 {
        let mut left = meta.duration_ms;
        let mut n = 0;
        while left > 0 {
            let duration_ms = left.min(part_target_ms);
            let _ = writeln!(
                out,
                "#EXT-X-PART:DURATION={},URI=\"/chunks/{stream_id}/{}.{n}.ts\",GAP=YES",
                format_millis(u64::from(duration_ms)),
                meta.seq
            );
            left -= duration_ms;
            n += 1;
        }
    }
    write_gap(out, meta);
    let _ = writeln!(out, "#EXTINF:{},", format_millis(u64::from(meta.duration_ms)));
    let _ = writeln!(out, "/chunks/{stream_id}/{}.ts", meta.seq);
}

/// The open segment: its tags (from part 0) and parts, without `EXTINF` or URI.
fn write_open(out: &mut String, stream_id: &str, open: &OpenSegment) {
    let Some(first) = open.parts.first() else {
        return;
    };
    if first.discontinuity {
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
    }
    let pdt = first.pdt_ms.unwrap_or(first.stored_ms - i64::from(first.duration_ms));
    let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", format_rfc3339_ms(pdt));
    for (n, part) in open.parts.iter().enumerate() {
        write_part(out, stream_id, open.seq, n, part.duration_ms, part.independent);
    }
}

/// The lines of the segments of a [`Piece::Lines`] starting at `first_seq` that come before
/// `at_seq` (the text up to the end of segment `at_seq - 1`'s URI line); `None` when that URI
/// line is not in the text.
pub fn lines_before<'t>(stream_id: &str, first_seq: u64, text: &'t str, at_seq: u64) -> Option<&'t str> {
    if at_seq <= first_seq {
        return Some("");
    }
    let uri = format!("\n/chunks/{stream_id}/{}.ts\n", at_seq - 1);
    text.find(&uri).map(|at| &text[..at + uri.len()])
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
/// `#EXT-X-PROGRAM-DATE-TIME`, an optional `#EXT-X-GAP`, an `#EXTINF` and the segment's own URI, and nothing else. A
/// truncated, foreign or misplaced text fails; the values inside the tags are not re-checked.
pub fn check_lines(stream_id: &str, first_seq: u64, len: u64, lines: &str) -> bool {
    // Byte by byte rather than line by line: a GET checks every stored block it copies.
    let mut rest = lines.as_bytes();
    let mut digits = [0u8; 20];
    for seq in first_seq..first_seq.saturating_add(len) {
        if let Some(after) = rest.strip_prefix(b"#EXT-X-DISCONTINUITY\n") {
            rest = after;
        }
        let Some((_, mut after)) = rest.strip_prefix(b"#EXT-X-PROGRAM-DATE-TIME:").and_then(split_line) else {
            return false;
        };
        if let Some(rest) = after.strip_prefix(b"#EXT-X-GAP\n") {
            after = rest;
        }
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
    write_gap(out, meta);
    let _ = writeln!(out, "#EXTINF:{},", format_millis(u64::from(meta.duration_ms)));
    let _ = writeln!(out, "/chunks/{stream_id}/{}.ts", meta.seq);
}

/// `#EXT-X-GAP` for a seq the broadcaster gave up (issue 11; rfc8216bis §4.4.4.7: the segment
/// is missing, clients must not load it). It keeps its seq as its media sequence number, so
/// `_HLS_msn` and `EXT-X-MEDIA-SEQUENCE` stay the seqs; it needs no higher `EXT-X-VERSION`
/// (rfc8216bis §8), and players that do not know the tag skip it as unknown and find the URI
/// answering `404`.
fn write_gap(out: &mut String, meta: &SegmentMeta) {
    if meta.gap {
        let _ = writeln!(out, "#EXT-X-GAP");
    }
}

fn write_end(out: &mut String, state: State) {
    if state == State::Ended {
        let _ = writeln!(out, "#EXT-X-ENDLIST");
    }
}
