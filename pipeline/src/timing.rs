//! Segment timing: where to cut the recording and how long each segment is.
//!
//! Cuts happen only at Clusters whose first video block is a keyframe, once about the target
//! length (at least three quarters of it) has accumulated. A segment's duration is the next
//! cut's timecode minus its own, in integer milliseconds, so durations add up exactly to the
//! recording's timeline.
//!
//! Audio does not break at keyframes: Chrome writes Opus packets of about 60 ms wherever they
//! fall, so the packet playing across a cut sits in the Clusters before it, and each segment's
//! AAC has to be encoded on its own. So every segment's remux also gets the audio of the
//! Clusters just before it (pre-roll) and of the Cluster that starts the next one (lookahead),
//! and [`AudioPlan`] puts its AAC frames on one grid of 1024-sample frames shared by the whole
//! broadcast: the encoder starts two frames early, and only the frames whose grid start lies
//! inside the segment are kept. Consecutive segments then tile the audio timeline exactly, and
//! the encoder's priming frame never reaches a viewer.

use std::collections::VecDeque;

use crate::ebml::{Cluster, WebmSplitter};

/// A cut segment: the Clusters between two cuts, ready to be remuxed after the init bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutSegment {
    /// Timestamp of the segment's keyframe, its first frame (ms since the recording started).
    pub start_ms: u64,
    /// Next cut's timecode minus this one's (or up to the last frame for the final segment).
    pub duration_ms: u64,
    /// The Clusters, concatenated.
    pub bytes: Vec<u8>,
    /// When set, media after this timecode is dropped so the segment fits the target duration.
    pub trim_at_ms: Option<u64>,
    /// Audio-only copies of the Clusters just before `start_ms` (empty for the first segment).
    pub preroll: Vec<u8>,
    /// Audio-only copy of the Cluster that starts the next segment (empty for the last one).
    pub lookahead: Vec<u8>,
    /// Where the broadcast's audio frame grid starts: the first segment's `start_ms`.
    pub origin_ms: u64,
}

impl CutSegment {
    /// The remux input after the init bytes: pre-roll audio, the segment, lookahead audio.
    pub fn input(&self, init: &[u8]) -> Vec<u8> {
        [init, &self.preroll, &self.bytes, &self.lookahead].concat()
    }

    /// Last media timecode (exclusive) the segment keeps.
    pub fn end_ms(&self) -> u64 {
        self.start_ms + self.duration_ms
    }

    /// Which AAC frames this segment's remux encodes and keeps.
    pub fn audio_plan(&self) -> AudioPlan {
        AudioPlan::new(self.origin_ms, self.start_ms, self.end_ms())
    }

    /// The video frames placed in this segment: its Clusters' video blocks, but for those at or
    /// after `trim_at_ms`, which the remux drops (`init`: the recording's init bytes, which say
    /// which track is video). Pre-roll and lookahead are audio only.
    pub fn video_frames(&self, init: &[u8]) -> u64 {
        let mut s = WebmSplitter::with_blocks();
        let _ = s.push(init);
        let _ = s.push(&self.bytes);
        s.finish();
        s.take_blocks()
            .iter()
            .filter(|b| b.video && self.trim_at_ms.is_none_or(|t| b.ms < t))
            .count() as u64
    }
}

/// Audio sample rate of the segments (Opus decodes at 48 kHz; AAC is encoded at it).
pub const SAMPLE_RATE: u64 = 48_000;
/// Samples in one AAC frame.
pub const AAC_FRAME: u64 = 1024;
/// Frames the encoder runs before a segment's first kept frame: its priming frame overlaps
/// them, and the first kept frame then overlaps audio the previous segment also encoded.
const LEAD_FRAMES: u64 = 2;
/// Frames encoded after the last kept one, so that frame is complete.
const TAIL_FRAMES: u64 = 2;
/// How much audio past a segment's end its lookahead must hold before the segment is remuxed:
/// the frame straddling the end and the tail frames. A cut waits for later Clusters until then.
pub const LOOKAHEAD_MS: u64 = 64;
/// How long (in media time past the cut) a cut waits for that audio at most.
pub const LOOKAHEAD_WAIT_MS: u64 = 500;
/// How much audio before a cut the next segment's pre-roll holds at least: the lead frames,
/// Opus's pre-skip (312 samples) and its 80 ms of recommended decoder pre-roll, with room.
pub const PREROLL_MS: u64 = 200;

/// A segment's audio on the broadcast's 1024-sample frame grid (sample numbers on the
/// recording's timeline at 48 kHz).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioPlan {
    /// First sample fed to the encoder (silence where the recording has none).
    pub from_sample: i64,
    /// Sample after the last one fed to the encoder.
    pub to_sample: i64,
    /// Index, among the encoder's output packets, of the first one kept (packet 0 is the
    /// priming frame that starts one frame before `from_sample`).
    pub first_packet: u64,
    /// Packets kept: the frames whose grid start lies in the segment.
    pub packets: u64,
}

impl AudioPlan {
    pub fn new(origin_ms: u64, start_ms: u64, end_ms: u64) -> Self {
        // The grid frame nearest to a timecode; timecodes before the origin map to frame 0.
        let frame = |ms: u64| {
            (ms.saturating_sub(origin_ms) * SAMPLE_RATE / 1000 + AAC_FRAME / 2) / AAC_FRAME
        };
        let (first, end) = (frame(start_ms), frame(end_ms).max(frame(start_ms)));
        let sample = |f: u64| (origin_ms * SAMPLE_RATE / 1000 + f * AAC_FRAME) as i64;
        AudioPlan {
            from_sample: sample(first) - (LEAD_FRAMES * AAC_FRAME) as i64,
            to_sample: sample(end) + (TAIL_FRAMES * AAC_FRAME) as i64,
            first_packet: LEAD_FRAMES + 1,
            packets: end - first,
        }
    }

    /// First sample of the first kept frame.
    pub fn kept_from(&self) -> i64 {
        self.from_sample + (LEAD_FRAMES * AAC_FRAME) as i64
    }

    /// Sample after the last kept frame.
    pub fn kept_to(&self) -> i64 {
        self.kept_from() + (self.packets * AAC_FRAME) as i64
    }
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
    /// The first segment's start: the origin of the audio frame grid.
    origin_ms: Option<u64>,
    /// Audio-only copies of the current segment's latest Clusters (at least `PREROLL_MS`).
    recent: VecDeque<(u64, Vec<u8>)>,
    /// Pre-roll for the segment being accumulated, taken at the cut that started it.
    preroll: Vec<u8>,
    /// A cut segment whose lookahead does not yet reach `LOOKAHEAD_MS` past its end.
    pending: Option<CutSegment>,
    /// Whether the recording has audio at all (any Cluster ended an audio packet).
    has_audio: bool,
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
            origin_ms: None,
            recent: VecDeque::new(),
            preroll: Vec::new(),
            pending: None,
            has_audio: false,
        }
    }

    /// Adds a Cluster's audio to the waiting cut; returns the cut once its lookahead is enough
    /// (or it waited long enough, or there is no audio to wait for).
    fn extend_pending(&mut self, c: &Cluster) -> Option<CutSegment> {
        let seg = self.pending.as_mut()?;
        seg.lookahead.extend_from_slice(&c.audio);
        let end = seg.trim_at_ms.unwrap_or(seg.end_ms());
        let covered = c.audio_end_ms.is_some_and(|e| e >= end + LOOKAHEAD_MS);
        if covered || !self.has_audio || c.timecode_ms >= end + LOOKAHEAD_WAIT_MS {
            return self.pending.take();
        }
        None
    }

    /// Keeps the audio of the latest Clusters, dropping what is older than the pre-roll needs.
    fn remember(&mut self, timecode_ms: u64, audio: Vec<u8>) {
        self.recent.push_back((timecode_ms, audio));
        while self.recent.len() > 1 && self.recent[1].0 + PREROLL_MS <= timecode_ms {
            self.recent.pop_front();
        }
    }

    /// Adds a Cluster; returns the segment that ends where this Cluster's keyframe is, if it
    /// is a cut. Cuts are at the keyframe's own timestamp, not the Cluster's: Chrome may open
    /// the Cluster with an audio packet, and a segment's declared start is its first frame.
    ///
    /// A cut is returned once the audio after it has arrived (see `LOOKAHEAD_MS`), usually with
    /// the Cluster that makes the cut, at most a Cluster or two later.
    pub fn push(&mut self, mut c: Cluster) -> Vec<CutSegment> {
        self.has_audio |= c.audio_end_ms.is_some();
        let mut out: Vec<CutSegment> = self.extend_pending(&c).into_iter().collect();
        if let Some(cut) = self.accumulate(&mut c) {
            // A new cut while the previous one still waits (no audio came for a whole
            // segment): the previous one goes as it is. The cut's lookahead starts with the
            // audio of the Cluster that made it.
            out.extend(self.pending.replace(cut));
            out.extend(self.extend_pending(&c));
        }
        out
    }

    /// Adds a Cluster's video and audio to the segment being accumulated (taking its bytes, and
    /// its audio unless it makes a cut, which needs it as lookahead); returns that cut, if any.
    fn accumulate(&mut self, c: &mut Cluster) -> Option<CutSegment> {
        let at = c.video_ms.unwrap_or(c.timecode_ms);
        let Some(start) = self.start_ms else {
            if !c.keyframe {
                self.skipped += 1;
                return None;
            }
            self.start_ms = Some(at);
            self.origin_ms.get_or_insert(at);
            self.last_block_ms = c.last_block_ms;
            self.bytes = std::mem::take(&mut c.bytes);
            self.remember(c.timecode_ms, std::mem::take(&mut c.audio));
            return None;
        };
        // A keyframe that Chrome forced a frame or two early still counts as the boundary.
        if c.keyframe && at + self.target_ms / 4 >= start + self.target_ms {
            let bytes = std::mem::replace(&mut self.bytes, std::mem::take(&mut c.bytes));
            let seg = self.cut(start, at - start, bytes);
            self.preroll = self.recent.drain(..).flat_map(|(_, a)| a).collect();
            self.start_ms = Some(at);
            self.last_block_ms = c.last_block_ms;
            self.remember(c.timecode_ms, c.audio.clone());
            return Some(seg);
        }
        self.last_block_ms = self.last_block_ms.max(c.last_block_ms);
        self.bytes.extend_from_slice(&c.bytes);
        self.remember(c.timecode_ms, std::mem::take(&mut c.audio));
        None
    }

    /// Ends the recording: a cut still waiting for audio goes as it is, and the rest becomes
    /// the final segment, lasting until its last frame.
    pub fn finish(&mut self) -> Vec<CutSegment> {
        let mut out: Vec<CutSegment> = self.pending.take().into_iter().collect();
        if let Some(start) = self.start_ms.take() {
            let end = self.last_block_ms.max(start) + FRAME_MS;
            let bytes = std::mem::take(&mut self.bytes);
            out.push(self.cut(start, end - start, bytes));
        }
        out
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
            preroll: std::mem::take(&mut self.preroll),
            lookahead: Vec::new(),
            origin_ms: self.origin_ms.unwrap_or(start_ms),
        }
    }
}

/// Wall-clock capture time of a cut: the recording's start plus the cut's timecode.
pub fn program_date_ms(recording_start_ms: u64, cut_ms: u64) -> u64 {
    recording_start_ms + cut_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one segment a push returned.
    fn one(mut v: Vec<CutSegment>) -> CutSegment {
        assert_eq!(v.len(), 1, "expected exactly one segment");
        v.remove(0)
    }

    fn c(tc: u64, key: bool) -> Cluster {
        Cluster {
            timecode_ms: tc,
            keyframe: key,
            video_ms: Some(tc),
            last_block_ms: tc + 990,
            bytes: vec![tc as u8],
            audio: format!("a{tc};").into_bytes(),
            audio_end_ms: None,
        }
    }

    #[test]
    fn cuts_only_at_keyframes_after_the_target_length() {
        let mut s = Segmenter::new(2000);
        assert_eq!(s.push(c(0, true)), vec![]);
        assert_eq!(s.push(c(1000, true)), vec![], "too short");
        assert_eq!(s.push(c(2000, false)), vec![], "not a keyframe");
        let seg = one(s.push(c(2500, true)));
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
    fn a_segment_counts_the_video_frames_its_remux_keeps() {
        use crate::ebml::tests::{cluster, init_bytes};
        use crate::ebml::{Piece, WebmSplitter};
        // Clusters of two frames (at tc and tc + 33) every 500 ms, a keyframe every second.
        let stream: Vec<u8> = std::iter::once(init_bytes())
            .chain((0..12u64).map(|i| cluster(i * 500, i % 2 == 0, false)))
            .collect::<Vec<_>>()
            .concat();
        let mut w = WebmSplitter::new();
        let pieces = w.push(&stream).unwrap();
        let init = match &pieces[0] {
            Piece::Init(i) => i.clone(),
            p => panic!("{p:?}"),
        };
        let mut s = Segmenter::new(1000);
        let mut segs = Vec::new();
        for p in pieces.into_iter().skip(1) {
            if let Piece::Cluster(c) = p {
                segs.extend(s.push(c));
            }
        }
        segs.extend(w.finish().into_iter().flat_map(|c| s.push(c)));
        segs.extend(s.finish());
        let frames: Vec<u64> = segs.iter().map(|g| g.video_frames(&init)).collect();
        assert_eq!(frames, vec![4; 6], "two Clusters of two frames each");
        // A trimmed segment keeps the frames before its trim only.
        let trimmed = CutSegment {
            trim_at_ms: Some(segs[1].start_ms + 33),
            ..segs[1].clone()
        };
        assert_eq!(trimmed.video_frames(&init), 1);
        let trimmed = CutSegment {
            trim_at_ms: Some(segs[1].start_ms + 534),
            ..segs[1].clone()
        };
        assert_eq!(trimmed.video_frames(&init), 4, "a trim after the last frame keeps all");
    }

    #[test]
    fn a_recording_that_starts_without_a_keyframe_waits_for_one() {
        let mut s = Segmenter::new(1000);
        assert_eq!(s.push(c(0, false)), vec![]);
        assert_eq!(s.skipped, 1);
        s.push(c(500, true));
        assert_eq!(one(s.push(c(1500, true))).start_ms, 500);
    }

    #[test]
    fn late_keyframes_are_trimmed_to_the_target_the_first_segment_fixed() {
        let mut s = Segmenter::new(2000);
        s.push(c(0, true));
        let first = one(s.push(c(2100, true)));
        assert_eq!((first.duration_ms, first.trim_at_ms), (2100, None));
        let late = one(s.push(c(5100, true)));
        assert_eq!(
            (late.start_ms, late.duration_ms, late.trim_at_ms),
            (2100, 2499, Some(4599))
        );
        let last = one(s.finish());
        assert_eq!((last.start_ms, last.duration_ms), (5100, 990 + FRAME_MS));
    }

    #[test]
    fn each_segment_gets_the_audio_around_its_cuts() {
        let mut s = Segmenter::new(1000);
        let mut segs = Vec::new();
        // Clusters every 120 ms (as Chrome writes them), a keyframe every 960 ms.
        for tc in (0..=3000).step_by(120) {
            segs.extend(s.push(c(tc, tc % 960 == 0)));
        }
        segs.extend(s.finish());
        let audio = |tcs: &[u64]| tcs.iter().map(|t| format!("a{t};")).collect::<String>();
        assert_eq!(segs[0].preroll, b"", "nothing before the first segment");
        assert_eq!(String::from_utf8_lossy(&segs[0].lookahead), audio(&[960]));
        assert_eq!(
            String::from_utf8_lossy(&segs[1].preroll),
            audio(&[600, 720, 840]),
            "the clusters from the last one starting PREROLL_MS before the newest"
        );
        assert_eq!(String::from_utf8_lossy(&segs[1].lookahead), audio(&[1920]));
        let last = segs.last().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&last.preroll),
            audio(&[2520, 2640, 2760])
        );
        assert_eq!(last.lookahead, b"", "nothing after the last segment");
        assert!(segs.iter().all(|g| g.origin_ms == 0));
        let input = segs[1].input(b"init;");
        assert_eq!(
            input,
            [&b"init;"[..], b"a600;a720;a840;", &segs[1].bytes, b"a1920;"].concat()
        );
    }

    #[test]
    fn audio_frames_tile_the_timeline_across_any_cuts() {
        // Cuts at uneven keyframe times, starting off the origin and off the frame grid.
        let origin = 37;
        let mut cuts = vec![origin];
        let mut t = origin;
        for i in 0..200u64 {
            t += 750 + (i * 7919) % 1500;
            cuts.push(t);
        }
        let plans: Vec<AudioPlan> = cuts
            .windows(2)
            .map(|w| AudioPlan::new(origin, w[0], w[1]))
            .collect();
        for (w, p) in cuts.windows(2).zip(&plans) {
            assert_eq!(p.first_packet, LEAD_FRAMES + 1);
            assert_eq!(
                p.kept_from() - p.from_sample,
                (LEAD_FRAMES * AAC_FRAME) as i64
            );
            assert_eq!(p.to_sample - p.kept_to(), (TAIL_FRAMES * AAC_FRAME) as i64);
            // Kept audio starts and ends within half a frame of the segment's cuts.
            let off = |sample: i64, ms: u64| (sample - (ms * SAMPLE_RATE / 1000) as i64).abs();
            assert!(
                off(p.kept_from(), w[0]) <= (AAC_FRAME / 2) as i64,
                "{p:?} {w:?}"
            );
            assert!(
                off(p.kept_to(), w[1]) <= (AAC_FRAME / 2) as i64,
                "{p:?} {w:?}"
            );
        }
        assert_eq!(
            plans[0].kept_from(),
            (origin * 48) as i64,
            "the grid starts at the origin"
        );
        for pair in plans.windows(2) {
            assert_eq!(pair[0].kept_to(), pair[1].kept_from(), "no gap, no overlap");
        }
    }

    #[test]
    fn a_tiny_last_segment_keeps_no_audio_rather_than_overlapping() {
        let p = AudioPlan::new(0, 2000, 2005);
        assert_eq!(p.packets, 0);
        assert_eq!(p.kept_from(), p.kept_to());
    }

    #[test]
    fn cuts_are_at_the_keyframe_even_when_its_cluster_opens_with_audio() {
        let mut s = Segmenter::new(1000);
        let at = |tc: u64, video: u64| Cluster {
            video_ms: Some(video),
            ..c(tc, true)
        };
        s.push(at(0, 68));
        let seg = one(s.push(at(1014, 1035)));
        assert_eq!(
            (seg.start_ms, seg.duration_ms, seg.origin_ms),
            (68, 967, 68)
        );
        let seg = one(s.push(at(2040, 2040)));
        assert_eq!((seg.start_ms, seg.duration_ms), (1035, 1005));
    }

    #[test]
    fn a_cut_waits_for_the_audio_just_after_it() {
        let mut s = Segmenter::new(1000);
        // Audio reaching only 20 ms past each cluster's start.
        let a = |tc: u64, key: bool| Cluster {
            audio_end_ms: Some(tc + 20),
            ..c(tc, key)
        };
        for tc in (0..960).step_by(120) {
            assert_eq!(s.push(a(tc, tc == 0)), vec![]);
        }
        assert_eq!(
            s.push(a(960, true)),
            vec![],
            "980 is short of 960 + LOOKAHEAD_MS"
        );
        let seg = one(s.push(a(1080, false)));
        assert_eq!((seg.start_ms, seg.duration_ms), (0, 960));
        assert_eq!(seg.lookahead, b"a960;a1080;");
        // Audio that already covers the cut: no wait.
        let mut s = Segmenter::new(1000);
        let far = |tc: u64, key: bool| Cluster {
            audio_end_ms: Some(tc + 100),
            ..c(tc, key)
        };
        s.push(far(0, true));
        assert_eq!(one(s.push(far(1000, true))).lookahead, b"a1000;");
    }

    #[test]
    fn a_cut_does_not_wait_for_audio_that_stopped() {
        let mut s = Segmenter::new(1000);
        s.push(Cluster {
            audio_end_ms: Some(60),
            ..c(0, true)
        });
        assert_eq!(s.push(c(1000, true)), vec![]);
        assert_eq!(s.push(c(1200, false)), vec![]);
        let seg = one(s.push(c(1000 + LOOKAHEAD_WAIT_MS, false)));
        assert_eq!((seg.start_ms, seg.duration_ms), (0, 1000));
        // At Stop, a waiting cut goes first, then the rest.
        let mut s = Segmenter::new(1000);
        s.push(Cluster {
            audio_end_ms: Some(60),
            ..c(0, true)
        });
        assert_eq!(s.push(c(1000, true)), vec![]);
        let starts: Vec<u64> = s.finish().iter().map(|g| g.start_ms).collect();
        assert_eq!(starts, vec![0, 1000]);
    }

    #[test]
    fn finish_without_clusters_is_none() {
        assert_eq!(Segmenter::new(2000).finish(), vec![]);
    }

    #[test]
    fn headers_are_formatted_from_integers() {
        use chalkstream_manifest::wire::duration_text;
        assert_eq!(duration_text(2016), "2.016");
        assert_eq!(duration_text(999), "0.999");
        assert_eq!(program_date_ms(1_700_000_000_000, 2000), 1_700_000_002_000);
        assert_eq!(clamp_segment_seconds(0), 1);
        assert_eq!(clamp_segment_seconds(9), 6);
    }
}
