//! The wire contract's names, shared by the server and the extension: header names, the paths a
//! client builds, and how segment and part files are named. One copy, so a test on either side
//! guards the other (docs/API.md is the prose form of this module).

/// Duration of a segment (v1) or a part (v2), in seconds as a plain decimal (`2.000`).
pub const DURATION: &str = "X-Duration";
/// RFC 3339 capture time of the first frame (segment, or part 0 of a segment).
pub const PROGRAM_DATE_TIME: &str = "X-Program-Date-Time";
/// `1` on the first segment (or part 0) after a break in the timestamps.
pub const DISCONTINUITY: &str = "X-Discontinuity";
/// v2, on a part: `1` when the part starts with an IDR frame (required on part 0).
pub const INDEPENDENT: &str = "X-Independent";
/// v2, on a part: the stream's part target duration, seconds as a plain decimal.
pub const PART_TARGET: &str = "X-Part-Target";
/// v2, on a part: the stream's target duration, whole seconds.
pub const TARGET_DURATION: &str = "X-Target-Duration";
/// v2, on a commit: how many parts (0..N) make the segment.
pub const PARTS: &str = "X-Parts";
/// Bearer token when the server has an `ingest_token`.
pub const AUTHORIZATION: &str = "Authorization";

/// Formats integer milliseconds as the decimal seconds the duration headers carry.
pub fn duration_text(ms: u64) -> String {
    crate::decimal::format_millis(ms)
}

/// `PUT` here to store segment `seq` whole (v1).
pub fn ingest_segment_path(session: &str, seq: u64) -> String {
    format!("/ingest/{session}/{seq}.ts")
}

/// `PUT` here to store part `part` of segment `seq` (v2).
pub fn ingest_part_path(session: &str, seq: u64, part: u32) -> String {
    format!("/ingest/{session}/{seq}/{part}.ts")
}

/// `POST` here (with [`PARTS`]) to seal segment `seq` from its parts (v2).
pub fn ingest_commit_path(session: &str, seq: u64) -> String {
    format!("/ingest/{session}/{seq}/commit")
}

/// `POST` here (optionally with [`DURATION`]) to give up segment `seq` for good: the server
/// records a gap, so the playlist moves on with a discontinuity (issue 11; v1 and v2).
pub fn ingest_gap_path(session: &str, seq: u64) -> String {
    format!("/ingest/{session}/{seq}/gap")
}

/// `POST` here when the broadcaster stops.
pub fn ingest_end_path(session: &str) -> String {
    format!("/ingest/{session}/end")
}

/// A whole segment as viewers fetch it.
pub fn chunk_path(stream: &str, seq: u64) -> String {
    format!("/chunks/{stream}/{seq}.ts")
}

/// One part of a segment as viewers fetch it (v2).
pub fn part_path(stream: &str, seq: u64, part: u32) -> String {
    format!("/chunks/{stream}/{seq}.{part}.ts")
}

/// The media playlist.
pub fn playlist_path(stream: &str) -> String {
    format!("/playlist/{stream}.m3u8")
}

/// The viewer page.
pub fn player_path(stream: &str) -> String {
    format!("/play/{stream}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_the_documented_ones() {
        assert_eq!(ingest_segment_path("S", 3), "/ingest/S/3.ts");
        assert_eq!(ingest_part_path("S", 3, 0), "/ingest/S/3/0.ts");
        assert_eq!(ingest_commit_path("S", 3), "/ingest/S/3/commit");
        assert_eq!(ingest_end_path("S"), "/ingest/S/end");
        assert_eq!(ingest_gap_path("S", 3), "/ingest/S/3/gap");
        assert_eq!(chunk_path("ab", 7), "/chunks/ab/7.ts");
        assert_eq!(part_path("ab", 7, 2), "/chunks/ab/7.2.ts");
        assert_eq!(playlist_path("ab"), "/playlist/ab.m3u8");
        assert_eq!(player_path("ab"), "/play/ab");
        assert_eq!(duration_text(333), "0.333");
    }
}
