//! Segment timing: where to cut the recording and how long each segment is.
//!
//! Cuts happen only at Clusters that start with a video keyframe, once about the target
//! length (at least three quarters of it) has accumulated. A segment's duration is the next
//! cut's timecode minus its own, in integer milliseconds, so durations add up exactly to the
//! recording's timeline.

use crate::ebml::Cluster;

/// A cut segment: the Clusters between two cuts, ready to be remuxed after the init bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutSegment {
    /// Timecode of the first Cluster (ms since the recording started).
    pub start_ms: u64,
    /// Next cut's timecode minus this one's (or up to the last frame for the final segment).
    pub duration_ms: u64,
    /// The Clusters, concatenated.
    pub bytes: Vec<u8>,
    /// When set, media after this timecode is dropped so the segment fits the target duration.
    pub trim_at_ms: Option<u64>,
}

/// Accumulates Clusters and cuts segments at keyframes.
#[derive(Debug)]
pub struct Segmenter {
    target_ms: u64,
    start_ms: Option<u64>,
    last_block_ms: u64,
    bytes: Vec<u8>,
    /// Clusters dropped because the recording did not start with a keyframe.
    pub skipped: u64,
    /// Longest segment the server accepts: the first segment's rounded seconds + 499 ms.
    max_ms: Option<u64>,
}

/// Length of one video frame at 30 fps, used to close the final segment.
pub const FRAME_MS: u64 = 33;

/// Segment length bounds users may choose, in seconds.
pub const MIN_SEGMENT_S: u32 = 1;
pub const MAX_SEGMENT_S: u32 = 6;
pub const DEFAULT_SEGMENT_S: u32 = 2;

/// Clamps a user's segment length to the supported range.
pub fn clamp_segment_seconds(s: u32) -> u32 {
    s.clamp(MIN_SEGMENT_S, MAX_SEGMENT_S)
}

impl Segmenter {
    pub fn new(target_ms: u64) -> Self {
        Segmenter {
            target_ms,
            start_ms: None,
            last_block_ms: 0,
            bytes: Vec::new(),
            skipped: 0,
            max_ms: None,
        }
    }

    /// Adds a Cluster; returns the segment that ends where this Cluster begins, if it is a cut.
    pub fn push(&mut self, c: Cluster) -> Option<CutSegment> {
        let Some(start) = self.start_ms else {
            if !c.keyframe {
                self.skipped += 1;
                return None;
            }
            self.start_ms = Some(c.timecode_ms);
            self.last_block_ms = c.last_block_ms;
            self.bytes = c.bytes;
            return None;
        };
        // A keyframe that Chrome forced a frame or two early still counts as the boundary.
        if c.keyframe && c.timecode_ms + self.target_ms / 4 >= start + self.target_ms {
            let bytes = std::mem::replace(&mut self.bytes, c.bytes);
            let seg = self.cut(start, c.timecode_ms - start, bytes);
            self.start_ms = Some(c.timecode_ms);
            self.last_block_ms = c.last_block_ms;
            return Some(seg);
        }
        self.last_block_ms = self.last_block_ms.max(c.last_block_ms);
        self.bytes.extend_from_slice(&c.bytes);
        None
    }

    /// Ends the recording: the rest becomes the final segment, lasting until its last frame.
    pub fn finish(&mut self) -> Option<CutSegment> {
        let start = self.start_ms.take()?;
        let end = self.last_block_ms.max(start) + FRAME_MS;
        let bytes = std::mem::take(&mut self.bytes);
        Some(self.cut(start, end - start, bytes))
    }

    /// Makes a segment; the first fixes the server's target duration, later ones are trimmed
    /// to fit it (only when keyframes came late, e.g. on a starved CPU, or at Stop).
    fn cut(&mut self, start_ms: u64, duration_ms: u64, bytes: Vec<u8>) -> CutSegment {
        let max = *self
            .max_ms
            .get_or_insert(((duration_ms + 500) / 1000).max(1) * 1000 + 499);
        let trim = duration_ms > max;
        CutSegment {
            start_ms,
            duration_ms: duration_ms.min(max),
            bytes,
            trim_at_ms: trim.then_some(start_ms + max),
        }
    }
}

/// Formats milliseconds as the decimal seconds `X-Duration` wants ("2.016").
pub fn duration_header(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Wall-clock capture time of a cut: the recording's start plus the cut's timecode.
pub fn program_date_ms(recording_start_ms: u64, cut_ms: u64) -> u64 {
    recording_start_ms + cut_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(tc: u64, key: bool) -> Cluster {
        Cluster {
            timecode_ms: tc,
            keyframe: key,
            last_block_ms: tc + 990,
            bytes: vec![tc as u8],
        }
    }

    #[test]
    fn cuts_only_at_keyframes_after_the_target_length() {
        let mut s = Segmenter::new(2000);
        assert_eq!(s.push(c(0, true)), None);
        assert_eq!(s.push(c(1000, true)), None, "too short");
        assert_eq!(s.push(c(2000, false)), None, "not a keyframe");
        let seg = s.push(c(2500, true)).unwrap();
        assert_eq!((seg.start_ms, seg.duration_ms), (0, 2500));
        assert_eq!(seg.bytes, vec![0, 232, 208]);
    }

    #[test]
    fn durations_are_exact_and_continuous() {
        let mut s = Segmenter::new(2000);
        let mut segs = Vec::new();
        for tc in (0..=10_000).step_by(1001) {
            segs.extend(s.push(c(tc, true)));
        }
        segs.extend(s.finish());
        for w in segs.windows(2) {
            assert_eq!(w[0].start_ms + w[0].duration_ms, w[1].start_ms);
        }
        let total: u64 = segs.iter().map(|s| s.duration_ms).sum();
        assert_eq!(
            total,
            9009 + 990 + FRAME_MS,
            "ends at the last frame of the last cluster"
        );
    }

    #[test]
    fn a_recording_that_starts_without_a_keyframe_waits_for_one() {
        let mut s = Segmenter::new(1000);
        assert_eq!(s.push(c(0, false)), None);
        assert_eq!(s.skipped, 1);
        s.push(c(500, true));
        assert_eq!(s.push(c(1500, true)).unwrap().start_ms, 500);
    }

    #[test]
    fn late_keyframes_are_trimmed_to_the_target_the_first_segment_fixed() {
        let mut s = Segmenter::new(2000);
        s.push(c(0, true));
        let first = s.push(c(2100, true)).unwrap();
        assert_eq!((first.duration_ms, first.trim_at_ms), (2100, None));
        let late = s.push(c(5100, true)).unwrap();
        assert_eq!(
            (late.start_ms, late.duration_ms, late.trim_at_ms),
            (2100, 2499, Some(4599))
        );
        let last = s.finish().unwrap();
        assert_eq!((last.start_ms, last.duration_ms), (5100, 990 + FRAME_MS));
    }

    #[test]
    fn finish_without_clusters_is_none() {
        assert_eq!(Segmenter::new(2000).finish(), None);
    }

    #[test]
    fn headers_are_formatted_from_integers() {
        assert_eq!(duration_header(2016), "2.016");
        assert_eq!(duration_header(999), "0.999");
        assert_eq!(program_date_ms(1_700_000_000_000, 2000), 1_700_000_002_000);
        assert_eq!(clamp_segment_seconds(0), 1);
        assert_eq!(clamp_segment_seconds(9), 6);
    }
}
