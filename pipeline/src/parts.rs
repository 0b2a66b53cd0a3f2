//! Low-latency cutting: the recording's blocks, as they arrive, become parts (LL-HLS partial
//! segments) of segments.
//!
//! A segment starts at a keyframe, like a whole segment (see [`crate::timing`]), and is cut at
//! the first keyframe once about the segment length has passed. Inside it, parts are cut at video
//! frames (not at Clusters: Chrome's Clusters are too coarse for parts of a third of a second),
//! each at most the part target: a part ends at the frame after which the next one would not
//! fit, and when a frame comes too late for that, at the frame before it (or, after a capture
//! stall with no frame to cut at, in equal parts up to the next frame). The first part of every segment
//! starts with its keyframe; a part that happens to start with another keyframe is independent
//! too. A segment never grows past the longest duration its target allows: when no keyframe
//! comes in time, it ends there and the frames until the next keyframe are dropped, as whole
//! segments are trimmed.
//!
//! Audio is cut on the same broadcast-wide AAC frame grid as whole segments ([`AudioPlan`]),
//! with every part's boundaries: each part's remux gets the audio from [`PREROLL_MS`] before it
//! to past its end, and a part is handed out only once [`LOOKAHEAD_MS`] of audio past its end
//! has arrived (or [`LOOKAHEAD_WAIT_MS`] of media went by without it). Consecutive parts, and so
//! consecutive segments, tile the audio timeline exactly.

use std::collections::VecDeque;

use crate::ebml::{cluster_of, Block};
use crate::timing::{AudioPlan, FRAME_MS, LOOKAHEAD_MS, LOOKAHEAD_WAIT_MS, PREROLL_MS};

/// The part target this extension uses, in ms: ten frames at 30 fps (333.3 ms) fit.
pub const PART_TARGET_MS: u64 = 334;
/// Parts a segment may have at most (the server's `MAX_PARTS`).
pub const MAX_PARTS: u32 = 64;

/// What the cutter hands out, in upload order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// A part, ready to be remuxed.
    Part(CutPart),
    /// Segment `segment` is complete with `parts` parts (after its last part).
    Seal { segment: u64, parts: u32 },
}

/// One part and what its remux needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutPart {
    /// The segment it belongs to, counted from 0 in this recording.
    pub segment: u64,
    /// Its place in the segment, from 0.
    pub index: u32,
    /// Start on the recording's timeline in ms (part 0: the segment's keyframe).
    pub start_ms: u64,
    pub duration_ms: u64,
    /// Starts with a keyframe.
    pub independent: bool,
    /// Where the broadcast's audio frame grid starts.
    pub origin_ms: u64,
    /// The video frames placed in it (every one is in `cluster`, and its remux keeps them all).
    pub frames: u64,
    /// One Cluster: the audio from the pre-roll to past the end and the part's video frames.
    pub cluster: Vec<u8>,
}

impl CutPart {
    pub fn end_ms(&self) -> u64 {
        self.start_ms + self.duration_ms
    }

    /// Which AAC frames this part's remux encodes and keeps.
    pub fn audio_plan(&self) -> AudioPlan {
        AudioPlan::new(self.origin_ms, self.start_ms, self.end_ms())
    }

    /// The remux input: init bytes, then the part's Cluster.
    pub fn input(&self, init: &[u8]) -> Vec<u8> {
        [init, &self.cluster].concat()
    }
}

/// A part that is cut but waits for the audio after it, or a seal waiting behind it.
#[derive(Debug)]
enum Waiting {
    Part {
        segment: u64,
        index: u32,
        start_ms: u64,
        end_ms: u64,
        independent: bool,
        video: Vec<Block>,
    },
    Seal {
        segment: u64,
        parts: u32,
    },
}

/// The part being filled.
#[derive(Debug)]
struct Open {
    segment: u64,
    /// Start of the segment (its keyframe).
    segment_ms: u64,
    index: u32,
    start_ms: u64,
    independent: bool,
    video: Vec<Block>,
}

/// Cuts parts from blocks; see the module doc.
#[derive(Debug)]
pub struct PartCutter {
    part_target_ms: u64,
    segment_target_ms: u64,
    max_segment_ms: u64,
    origin_ms: Option<u64>,
    open: Option<Open>,
    next_segment: u64,
    waiting: VecDeque<Waiting>,
    audio: VecDeque<Block>,
    audio_end_ms: Option<u64>,
    latest_ms: u64,
    last_video_ms: Option<u64>,
    /// Video frames dropped (before the first keyframe, or after a segment hit its limit).
    pub skipped: u64,
    /// Video frames placed in the parts handed out so far. Every frame pushed is, once
    /// [`PartCutter::finish`] has run, either placed or skipped.
    pub placed: u64,
}

impl PartCutter {
    /// `segment_target_ms`: the segment length asked for; `max_segment_ms`: the longest
    /// segment the target duration allows.
    pub fn new(part_target_ms: u64, segment_target_ms: u64, max_segment_ms: u64) -> Self {
        PartCutter {
            part_target_ms,
            segment_target_ms,
            max_segment_ms,
            origin_ms: None,
            open: None,
            next_segment: 0,
            waiting: VecDeque::new(),
            audio: VecDeque::new(),
            audio_end_ms: None,
            latest_ms: 0,
            last_video_ms: None,
            skipped: 0,
            placed: 0,
        }
    }

    /// Adds a block; returns what is ready.
    pub fn push(&mut self, b: Block) -> Vec<Cut> {
        self.latest_ms = self.latest_ms.max(b.ms);
        if b.video {
            self.video(b);
        } else {
            if let Some(end) = b.end_ms {
                self.audio_end_ms = Some(self.audio_end_ms.map_or(end, |e| e.max(end)));
            }
            self.audio.push_back(b);
        }
        self.release(false)
    }

    /// Ends the recording: the open part ends after its last frame, its segment is sealed, and
    /// everything waiting goes out as it is.
    pub fn finish(&mut self) -> Vec<Cut> {
        if let Some(open) = &self.open {
            let last = self.last_video_ms.unwrap_or(open.start_ms);
            let end = (last + FRAME_MS)
                .min(open.segment_ms + self.max_segment_ms)
                .max(open.start_ms);
            self.fill(end);
            self.close(end, true);
        }
        self.release(true)
    }

    fn video(&mut self, b: Block) {
        let t = b.ms;
        if self.last_video_ms.is_some_and(|l| t <= l) {
            self.skipped += 1; // not after the previous frame: cannot be placed in a part
            return;
        }
        let Some(open) = &self.open else {
            if b.key {
                self.start_segment(b);
            } else {
                self.skipped += 1;
            }
            return;
        };
        self.last_video_ms = Some(t);
        let segment_ms = open.segment_ms;
        let limit = segment_ms + self.max_segment_ms;
        if t >= limit {
            // No keyframe in time: the segment ends at its limit.
            self.fill(limit);
            self.close(limit, true);
            if b.key {
                self.start_segment(b);
            } else {
                self.skipped += 1;
            }
            return;
        }
        if b.key && t + self.segment_target_ms / 4 >= segment_ms + self.segment_target_ms {
            self.fill(t);
            self.close(t, true);
            self.start_segment(b);
            return;
        }
        self.fill(t);
        if let Some(open) = self.open.as_mut() {
            let d = t - open.start_ms;
            if d > 0 && d + FRAME_MS > self.part_target_ms {
                // The next frame would not fit: the part ends here, or a frame or two earlier
                // where a player's buffer stays continuous.
                let frames: Vec<(u64, bool)> = open.video.iter().map(|v| (v.ms, v.key)).chain([(t, b.key)]).collect();
                let keep = continuous_cut(&frames, open.video.len(), open.start_ms + self.part_target_ms * MIN_PART_PERCENT / 100);
                let rest = open.video.split_off(keep);
                let (at, key) = rest.first().map_or((t, b.key), |v| (v.ms, v.key));
                self.close_before(at, rest, key);
            }
        }
        match self.open.as_mut() {
            Some(open) => open.video.push(b),
            // The segment ran out of parts: it ended, and a keyframe starts the next.
            None if b.key => self.start_segment(b),
            None => self.skipped += 1,
        }
    }

    /// Closes parts until the open one may end at `t` within the part target.
    fn fill(&mut self, t: u64) {
        loop {
            let Some(open) = self.open.as_mut() else {
                return;
            };
            if t <= open.start_ms + self.part_target_ms {
                return;
            }
            // End at the latest frame after the part's start, else at the part target.
            let min_ms = open.start_ms + self.part_target_ms * MIN_PART_PERCENT / 100;
            let split = open
                .video
                .iter()
                .rposition(|v| v.ms > open.start_ms)
                .filter(|&i| open.video[i].ms - open.start_ms <= self.part_target_ms)
                .map(|i| {
                    let frames: Vec<(u64, bool)> = open.video.iter().map(|v| (v.ms, v.key)).collect();
                    continuous_cut(&frames, i, min_ms)
                });
            match split {
                Some(i) => {
                    let rest = open.video.split_off(i);
                    let (at, key) = (rest[0].ms, rest[0].key);
                    self.close_before(at, rest, key);
                }
                None => {
                    // A stall: the time up to `t` in equal parts, so none is a sliver that
                    // holds no frame and not even one audio frame.
                    let (start, gap) = (open.start_ms, t - open.start_ms);
                    let n = gap.div_ceil(self.part_target_ms);
                    for k in 1..=n {
                        self.close(start + gap * k / n, false);
                    }
                }
            }
        }
    }

    /// Ends the open part at `at`; the next one opens with `rest`, the frames from `at` on
    /// (starting with a keyframe: `key`), or they are dropped if the segment ended.
    fn close_before(&mut self, at: u64, rest: Vec<Block>, key: bool) {
        self.close(at, false);
        match self.open.as_mut() {
            Some(open) => {
                open.video = rest;
                open.independent = key;
            }
            None => self.skipped += rest.len() as u64,
        }
    }

    fn start_segment(&mut self, b: Block) {
        let t = b.ms;
        self.origin_ms.get_or_insert(t);
        self.last_video_ms = Some(t);
        let segment = self.next_segment;
        self.next_segment += 1;
        self.open = Some(Open {
            segment,
            segment_ms: t,
            index: 0,
            start_ms: t,
            independent: true,
            video: vec![b],
        });
    }

    /// Ends the open part at `end_ms`; `last` also ends its segment, else the next part opens
    /// (unless the segment has all the parts it may have: then it ends, and frames are dropped
    /// until the next keyframe starts a segment).
    fn close(&mut self, end_ms: u64, last: bool) {
        let Some(open) = self.open.take() else {
            return;
        };
        let last = last || open.index + 1 >= MAX_PARTS;
        if end_ms <= open.start_ms {
            // Nothing to cut (an empty part after a stall): seal what the segment has.
            if last && open.index > 0 {
                self.waiting.push_back(Waiting::Seal {
                    segment: open.segment,
                    parts: open.index,
                });
            } else if !last {
                self.open = Some(open);
            }
            return;
        }
        self.waiting.push_back(Waiting::Part {
            segment: open.segment,
            index: open.index,
            start_ms: open.start_ms,
            end_ms,
            independent: open.independent,
            video: open.video,
        });
        if last {
            self.waiting.push_back(Waiting::Seal {
                segment: open.segment,
                parts: open.index + 1,
            });
        } else {
            self.open = Some(Open {
                segment: open.segment,
                segment_ms: open.segment_ms,
                index: open.index + 1,
                start_ms: end_ms,
                independent: false,
                video: Vec::new(),
            });
        }
    }

    /// Hands out the waiting parts whose audio has arrived (all of them when `all`).
    fn release(&mut self, all: bool) -> Vec<Cut> {
        let mut out = Vec::new();
        while let Some(w) = self.waiting.front() {
            match *w {
                Waiting::Seal { segment, parts } => {
                    self.waiting.pop_front();
                    out.push(Cut::Seal { segment, parts });
                }
                Waiting::Part { end_ms, .. } => {
                    let covered = self
                        .audio_end_ms
                        .is_some_and(|e| e >= end_ms + LOOKAHEAD_MS);
                    let no_audio = self.audio_end_ms.is_none();
                    let waited = self.latest_ms >= end_ms + LOOKAHEAD_WAIT_MS;
                    if !(all || covered || no_audio || waited) {
                        break;
                    }
                    let Some(Waiting::Part {
                        segment,
                        index,
                        start_ms,
                        end_ms,
                        independent,
                        video,
                    }) = self.waiting.pop_front()
                    else {
                        unreachable!("matched above");
                    };
                    let from = start_ms.saturating_sub(PREROLL_MS);
                    let to = end_ms + LOOKAHEAD_WAIT_MS;
                    let mut blocks: Vec<&Block> = self
                        .audio
                        .iter()
                        .filter(|a| a.ms >= from && a.ms < to)
                        .chain(video.iter())
                        .collect();
                    blocks.sort_by_key(|b| b.ms);
                    let frames = video.len() as u64;
                    self.placed += frames;
                    out.push(Cut::Part(CutPart {
                        segment,
                        index,
                        start_ms,
                        duration_ms: end_ms - start_ms,
                        independent,
                        origin_ms: self.origin_ms.unwrap_or(start_ms),
                        frames,
                        cluster: cluster_of(blocks),
                    }));
                }
            }
        }
        self.forget_audio();
        out
    }

    /// Drops audio no part will need: older than the pre-roll of the oldest part not yet out.
    fn forget_audio(&mut self) {
        let oldest = self
            .waiting
            .iter()
            .find_map(|w| match w {
                Waiting::Part { start_ms, .. } => Some(*start_ms),
                Waiting::Seal { .. } => None,
            })
            .or(self.open.as_ref().map(|o| o.start_ms))
            .unwrap_or(self.latest_ms);
        let keep_from = oldest.saturating_sub(PREROLL_MS + 100);
        while self.audio.front().is_some_and(|a| a.ms < keep_from) {
            self.audio.pop_front();
        }
    }
}

/// Frames a part's end may move back to keep a player's buffer continuous ([`continuous_cut`]).
const MAX_FRAMES_BACK: usize = 3;
/// How short such a part may get, in percent of the part target. The spec says a part
/// "SHOULD" be at least 85% of it; a shorter part costs a player one request sooner, a dropped
/// half segment a stall (at 85%, and still at 75%, a cut after a 68 ms gap 307 ms into a part
/// could not move back).
const MIN_PART_PERCENT: u64 = 60;

/// Where to end a part inside a segment: `frames` (timestamp in ms, keyframe) are the part's
/// frames and the next part's first one, `planned` the index of that first one. Returns the
/// index to cut at instead, which may be up to [`MAX_FRAMES_BACK`] frames earlier, never
/// before `min_ms` ([`MIN_PART_PERCENT`] of the part target).
///
/// Why: a player's Media Source buffer drops every frame up to the next keyframe when a frame
/// comes more than twice the previous frame's duration after it (a "discontinuity" in the
/// coded frame processing of the Media Source Extensions), and hls.js gives the last frame of
/// a part the duration of the gap before it. A capturer that delivers frames in bursts (13 ms,
/// then 38 ms) thus made the player drop the rest of a segment, up to 0.6 s, and stall. Inside
/// one part the gaps are the real ones, so the cut goes where the gap after the part's last
/// frame is at most twice the gap before it (or the next part starts with a keyframe).
fn continuous_cut(frames: &[(u64, bool)], planned: usize, min_ms: u64) -> usize {
    let continuous = |k: usize| {
        let (next, key) = frames[k];
        key || k < 2 || next - frames[k - 1].0 <= 2 * (frames[k - 1].0 - frames[k - 2].0)
    };
    (planned.saturating_sub(MAX_FRAMES_BACK)..=planned)
        .rev()
        .take_while(|&k| k >= 1 && (k == planned || frames[k].0 >= min_ms))
        .find(|&k| continuous(k))
        .unwrap_or(planned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 2000;
    const MAX: u64 = 2499;

    fn frame(ms: u64, key: bool) -> Block {
        Block::simple(2, ms, true, key, None)
    }

    fn packet(ms: u64) -> Block {
        Block::simple(1, ms, false, true, Some(ms + 60))
    }

    /// 30 fps video with a keyframe every second and 60 ms audio packets, in arrival order,
    /// from `from` ms to `to` ms.
    fn recording(from: u64, to: u64) -> Vec<Block> {
        let mut blocks = Vec::new();
        let mut next_audio = from;
        for i in 0.. {
            let ms = from + (i * 1000 + 15) / 30;
            if ms >= to {
                break;
            }
            while next_audio <= ms {
                blocks.push(packet(next_audio));
                next_audio += 60;
            }
            blocks.push(frame(ms, (ms - from) % 1000 < 33));
        }
        blocks
    }

    fn run(c: &mut PartCutter, blocks: Vec<Block>) -> Vec<Cut> {
        let mut out: Vec<Cut> = blocks.into_iter().flat_map(|b| c.push(b)).collect();
        out.extend(c.finish());
        out
    }

    fn parts(cuts: &[Cut]) -> Vec<&CutPart> {
        cuts.iter()
            .filter_map(|c| match c {
                Cut::Part(p) => Some(p),
                Cut::Seal { .. } => None,
            })
            .collect()
    }

    /// Every rule of the spec and of the wire contract a sequence of cuts must keep.
    fn assert_well_formed(cuts: &[Cut]) {
        assert_well_formed_up_to(cuts, MAX, true)
    }

    /// `full_parts`: also the spec's "should" that parts inside a segment are at least 85% of
    /// the target (a capture stall makes shorter ones, with no frame to cut at).
    fn assert_well_formed_up_to(cuts: &[Cut], max: u64, full_parts: bool) {
        let mut expect = (0u64, 0u32);
        let mut segment_ms = 0;
        let mut prev_end: Option<u64> = None;
        for (i, cut) in cuts.iter().enumerate() {
            match cut {
                Cut::Part(p) => {
                    assert_eq!((p.segment, p.index), expect, "in order: {cut:?}");
                    assert!(
                        p.duration_ms > 0 && p.duration_ms <= PART_TARGET_MS,
                        "{p:?}"
                    );
                    if p.index == 0 {
                        assert!(p.independent, "part 0 starts with its keyframe");
                        segment_ms = 0;
                    }
                    match prev_end {
                        Some(end) if p.index > 0 => {
                            assert_eq!(p.start_ms, end, "parts tile their segment")
                        }
                        // Segments tile too, but for frames dropped at a segment's limit.
                        Some(end) => assert!(p.start_ms >= end, "{p:?}"),
                        None => {}
                    }
                    prev_end = Some(p.end_ms());
                    segment_ms += p.duration_ms;
                    assert!(
                        segment_ms <= max,
                        "segment {} is {segment_ms} ms",
                        p.segment
                    );
                    let last = matches!(cuts.get(i + 1), Some(Cut::Seal { .. }) | None);
                    if full_parts && !last && !p.independent {
                        assert!(p.duration_ms * 100 >= PART_TARGET_MS * 85, "{p:?} is short");
                    }
                    expect.1 += 1;
                }
                Cut::Seal { segment, parts } => {
                    assert_eq!((*segment, *parts), expect, "seal after the last part");
                    expect = (expect.0 + 1, 0);
                }
            }
        }
        assert!(
            matches!(cuts.last(), Some(Cut::Seal { .. })),
            "the end seals"
        );
    }

    #[test]
    fn parts_of_a_steady_recording_are_ten_frames_and_segments_start_at_keyframes() {
        let mut c = PartCutter::new(PART_TARGET_MS, SEG, MAX);
        let cuts = run(&mut c, recording(100, 10_100));
        assert_well_formed(&cuts);
        for w in parts(&cuts).windows(2) {
            assert_eq!(
                w[0].end_ms(),
                w[1].start_ms,
                "nothing dropped: one timeline"
            );
        }
        let ps = parts(&cuts);
        let seals = cuts
            .iter()
            .filter(|c| matches!(c, Cut::Seal { .. }))
            .count();
        assert_eq!(seals, 5, "2 s segments over 10 s");
        assert!(ps.iter().all(|p| p.origin_ms == 100));
        // Inside a segment, parts are 10 frames (333 or 334 ms); the last is what is left.
        let full = ps
            .iter()
            .filter(|p| (333..=334).contains(&p.duration_ms))
            .count();
        assert!(
            full * 10 >= ps.len() * 8,
            "{:?}",
            ps.iter().map(|p| p.duration_ms).collect::<Vec<_>>()
        );
        assert_eq!(ps[0].start_ms, 100);
        assert_eq!(c.skipped, 0);
    }

    #[test]
    fn a_late_frame_ends_the_part_at_the_frame_before_it() {
        let mut c = PartCutter::new(PART_TARGET_MS, SEG, MAX);
        let mut cuts = Vec::new();
        for ms in [0, 33, 67, 100, 133, 167, 200, 233, 267, 300, 400] {
            cuts.extend(c.push(frame(ms, ms == 0)));
        }
        let ps = parts(&cuts);
        assert_eq!(ps.len(), 1);
        assert_eq!((ps[0].start_ms, ps[0].duration_ms), (0, 300));
        cuts.extend(c.finish());
        assert_well_formed(&cuts);
        assert_eq!(
            (parts(&cuts)[1].start_ms, parts(&cuts)[1].duration_ms),
            (300, 133)
        );
    }

    #[test]
    fn a_capture_stall_is_cut_in_equal_parts_up_to_the_next_frame() {
        let mut c = PartCutter::new(PART_TARGET_MS, SEG, MAX);
        let mut cuts = c.push(frame(0, true));
        cuts.extend(c.push(frame(1000, false)));
        cuts.extend(c.finish());
        assert_well_formed_up_to(&cuts, MAX, false);
        let spans: Vec<(u64, u64)> = parts(&cuts)
            .iter()
            .map(|p| (p.start_ms, p.duration_ms))
            .collect();
        assert_eq!(spans, vec![(0, 333), (333, 333), (666, 334), (1000, 33)]);
        // Just past the target: two halves, not a part and a sliver.
        let mut c = PartCutter::new(PART_TARGET_MS, SEG, MAX);
        let mut cuts = c.push(frame(0, true));
        cuts.extend(c.push(frame(340, false)));
        cuts.extend(c.finish());
        assert_well_formed_up_to(&cuts, MAX, false);
        let spans: Vec<(u64, u64)> = parts(&cuts)
            .iter()
            .map(|p| (p.start_ms, p.duration_ms))
            .collect();
        assert_eq!(spans, vec![(0, 170), (170, 170), (340, 33)]);
    }

    #[test]
    fn a_part_waits_for_the_audio_just_after_it() {
        let mut c = PartCutter::new(PART_TARGET_MS, SEG, MAX);
        let mut cuts = Vec::new();
        for i in 0..=10u64 {
            let ms = i * 100 / 3;
            cuts.extend(c.push(packet(ms)));
            cuts.extend(c.push(frame(ms, i == 0)));
        }
        // The part [0, 333) is cut, but the audio reaches 333 + 60 only: short of +64.
        assert!(parts(&cuts).is_empty());
        cuts.extend(c.push(packet(340)));
        let ps = parts(&cuts);
        assert_eq!(ps.len(), 1, "audio up to 400 covers 333 + {LOOKAHEAD_MS}");
        assert_eq!(ps[0].duration_ms, 333);
        // Its Cluster has the part's ten frames and all the audio that arrived, in time order.
        let mut s = crate::ebml::WebmSplitter::with_blocks();
        s.push(&crate::ebml::tests::init_bytes()).unwrap();
        s.push(&ps[0].cluster).unwrap();
        let back = s.take_blocks();
        let video: Vec<u64> = back.iter().filter(|b| b.video).map(|b| b.ms).collect();
        assert_eq!(video, (0..10u64).map(|i| i * 100 / 3).collect::<Vec<_>>());
        assert_eq!(back.iter().filter(|b| !b.video).count(), 12);
        assert!(back.windows(2).all(|w| w[0].ms <= w[1].ms));
    }

    #[test]
    fn a_part_does_not_wait_for_audio_that_stopped() {
        let mut c = PartCutter::new(PART_TARGET_MS, SEG, MAX);
        let mut cuts = c.push(packet(0));
        for i in 0..=10u64 {
            cuts.extend(c.push(frame(i * 100 / 3, i == 0)));
        }
        assert!(parts(&cuts).is_empty());
        for i in 11..=26u64 {
            cuts.extend(c.push(frame(i * 100 / 3, false)));
        }
        assert_eq!(
            parts(&cuts).len(),
            1,
            "{LOOKAHEAD_WAIT_MS} ms of media later it goes"
        );
    }

    #[test]
    fn a_segment_without_a_keyframe_in_time_ends_at_its_limit() {
        let mut c = PartCutter::new(PART_TARGET_MS, SEG, MAX);
        let mut cuts = Vec::new();
        for i in 0..120u64 {
            let ms = i * 100 / 3;
            // Keyframes at 0 and 3000 only.
            cuts.extend(c.push(frame(ms, ms == 0 || ms == 3000)));
        }
        cuts.extend(c.finish());
        assert_well_formed(&cuts);
        let ps = parts(&cuts);
        let first: u64 = ps
            .iter()
            .filter(|p| p.segment == 0)
            .map(|p| p.duration_ms)
            .sum();
        assert_eq!(first, MAX, "ends at its limit");
        let second = ps.iter().find(|p| p.segment == 1).unwrap();
        assert_eq!(
            second.start_ms, 3000,
            "the next segment starts at the next keyframe"
        );
        assert_eq!(c.skipped, 15, "frames from 2500 to 2967 are dropped");
    }

    #[test]
    fn frames_before_the_first_keyframe_are_skipped() {
        let mut c = PartCutter::new(PART_TARGET_MS, SEG, MAX);
        let mut cuts = c.push(frame(0, false));
        cuts.extend(run(&mut c, recording(33, 3000)));
        assert_well_formed(&cuts);
        assert_eq!(parts(&cuts)[0].start_ms, 33);
        assert_eq!(c.skipped, 1);
    }

    #[test]
    fn audio_plans_of_consecutive_parts_tile_the_grid() {
        let mut c = PartCutter::new(PART_TARGET_MS, SEG, MAX);
        let cuts = run(&mut c, recording(68, 6068));
        let plans: Vec<AudioPlan> = parts(&cuts).iter().map(|p| p.audio_plan()).collect();
        assert_eq!(plans[0].kept_from(), 68 * 48);
        for w in plans.windows(2) {
            assert_eq!(w[0].kept_to(), w[1].kept_from(), "no gap, no overlap");
        }
    }

    #[test]
    fn a_segment_ends_when_it_has_all_the_parts_it_may_have() {
        // A capture of a frame every 300 ms (a part each) with a keyframe after 45 s only.
        let mut c = PartCutter::new(PART_TARGET_MS, 60_000, 60_499);
        let mut cuts = Vec::new();
        for i in 0..200u64 {
            cuts.extend(c.push(frame(i * 300, i == 0 || i == 150)));
        }
        cuts.extend(c.finish());
        assert_well_formed_up_to(&cuts, 60_499, true);
        let first = parts(&cuts).iter().filter(|p| p.segment == 0).count() as u32;
        assert_eq!(first, MAX_PARTS);
        assert!(cuts.contains(&Cut::Seal {
            segment: 0,
            parts: MAX_PARTS
        }));
        let next = parts(&cuts).into_iter().find(|p| p.segment == 1).unwrap();
        assert_eq!(
            next.start_ms, 45_000,
            "frames are dropped until the next keyframe"
        );
    }

    /// Frames `deltas` ms apart (cycling) from `from` to `to` ms, a keyframe on the first
    /// frame at least 920 ms after the last one (as the extension asks the encoder), and 60 ms
    /// audio packets, in arrival order; with the frames' (ms, keyframe).
    fn jittery(from: u64, to: u64, deltas: impl Fn(usize) -> u64) -> (Vec<Block>, Vec<(u64, bool)>) {
        let (mut blocks, mut frames) = (Vec::new(), Vec::new());
        let (mut ms, mut next_audio, mut last_key) = (from, from, None::<u64>);
        for i in 0.. {
            if ms >= to {
                break;
            }
            while next_audio <= ms {
                blocks.push(packet(next_audio));
                next_audio += 60;
            }
            let key = last_key.is_none_or(|k| ms >= k + 920);
            if key {
                last_key = Some(ms);
            }
            blocks.push(frame(ms, key));
            frames.push((ms, key));
            ms += deltas(i);
        }
        (blocks, frames)
    }

    /// Parts inside a segment (not its last, not starting with a keyframe) are at least
    /// `percent` of the part target.
    fn assert_parts_at_least(cuts: &[Cut], percent: u64) {
        for (i, cut) in cuts.iter().enumerate() {
            if let Cut::Part(p) = cut {
                let last = matches!(cuts.get(i + 1), Some(Cut::Seal { .. }) | None);
                if !last && !p.independent {
                    assert!(p.duration_ms * 100 >= PART_TARGET_MS * percent, "{p:?} is short");
                }
            }
        }
    }

    /// Part boundaries inside a segment where a frame comes more than twice the previous
    /// frame's gap after the part's last frame (a Media Source buffer drops frames there).
    fn discontinuities(cuts: &[Cut], frames: &[(u64, bool)]) -> Vec<u64> {
        parts(cuts)
            .iter()
            .filter(|p| p.index > 0 && !p.independent)
            .filter_map(|p| {
                let j = frames.iter().position(|f| f.0 == p.start_ms)?;
                (j >= 2 && frames[j].0 - frames[j - 1].0 > 2 * (frames[j - 1].0 - frames[j - 2].0)).then_some(p.start_ms)
            })
            .collect()
    }

    #[test]
    fn parts_end_where_a_players_buffer_stays_continuous() {
        // A capturer that hands out frames in bursts: 17 ms, then 49 ms.
        let (blocks, frames) = jittery(100, 20_100, |i| [33, 33, 17, 49][i % 4]);
        let mut c = PartCutter::new(PART_TARGET_MS, SEG, MAX);
        let cuts = run(&mut c, blocks);
        assert_well_formed_up_to(&cuts, MAX, false);
        assert_parts_at_least(&cuts, MIN_PART_PERCENT);
        let inner = parts(&cuts).iter().filter(|p| p.index > 0 && !p.independent).count();
        assert!(inner > 40, "{inner} parts start inside a segment");
        assert_eq!(discontinuities(&cuts, &frames), Vec::<u64>::new());
        // Seen on this machine: a part's last frames 39 and 13 ms apart, the next 38 ms later.
        let seen = [20, 30, 17, 33, 17, 34, 16, 33, 32, 39, 13, 38, 16, 29, 17, 35, 16, 32, 17, 36, 40, 29, 12];
        let (blocks, frames) = jittery(0, 10_000, |i| seen[i % seen.len()]);
        let mut c = PartCutter::new(PART_TARGET_MS, SEG, MAX);
        let cuts = run(&mut c, blocks);
        assert_well_formed_up_to(&cuts, MAX, false);
        assert_parts_at_least(&cuts, MIN_PART_PERCENT);
        assert_eq!(discontinuities(&cuts, &frames), Vec::<u64>::new());
    }

    #[test]
    fn parts_stay_continuous_and_within_the_rules_under_random_frame_gaps() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let gaps: Vec<u64> = (0..4000)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                12 + seed % 60
            })
            .collect();
        let (blocks, frames) = jittery(100, 60_100, |i| gaps[i]);
        let mut c = PartCutter::new(PART_TARGET_MS, SEG, MAX);
        let cuts = run(&mut c, blocks);
        assert_well_formed_up_to(&cuts, MAX, false);
        let inner = parts(&cuts).iter().filter(|p| p.index > 0 && !p.independent).count();
        assert_parts_at_least(&cuts, MIN_PART_PERCENT);
        // Uniform gaps of 12-71 ms: without moving cuts back, 28 of 157 boundaries.
        assert!(inner > 150, "{inner} parts start inside a segment");
        assert_eq!(discontinuities(&cuts, &frames), Vec::<u64>::new());
    }

    /// Every video frame pushed is placed in exactly one part or counted as skipped, and each
    /// part's `frames` are the video blocks its Cluster holds.
    fn assert_every_frame_accounted(c: &PartCutter, cuts: &[Cut], pushed: u64) {
        let mut placed = 0;
        for p in parts(cuts) {
            let mut s = crate::ebml::WebmSplitter::with_blocks();
            s.push(&crate::ebml::tests::init_bytes()).unwrap();
            s.push(&p.cluster).unwrap();
            s.finish();
            let video = s.take_blocks().iter().filter(|b| b.video).count() as u64;
            assert_eq!(p.frames, video, "part {}.{}: frames counted = frames in its Cluster", p.segment, p.index);
            placed += p.frames;
        }
        assert_eq!(c.placed, placed, "the cutter's count is the sum over its parts");
        assert_eq!(c.placed + c.skipped, pushed, "placed {} + skipped {} of {pushed} frames", c.placed, c.skipped);
    }

    fn video_count(blocks: &[Block]) -> u64 {
        blocks.iter().filter(|b| b.video).count() as u64
    }

    #[test]
    fn every_frame_is_placed_or_skipped_and_counted() {
        // Steady.
        let blocks = recording(100, 10_100);
        let n = video_count(&blocks);
        let mut c = PartCutter::new(PART_TARGET_MS, SEG, MAX);
        let cuts = run(&mut c, blocks);
        assert_every_frame_accounted(&c, &cuts, n);
        assert_eq!((c.placed, c.skipped), (n, 0));
        // Frames before the first keyframe, and a repeated timestamp.
        let mut blocks = vec![frame(0, false), frame(10, false)];
        blocks.extend(recording(33, 3000));
        blocks.push(frame(2900, false));
        let n = video_count(&blocks);
        let mut c = PartCutter::new(PART_TARGET_MS, SEG, MAX);
        let cuts = run(&mut c, blocks);
        assert_every_frame_accounted(&c, &cuts, n);
        assert_eq!(c.skipped, 3);
        // No keyframe in time: frames past the segment's limit are dropped.
        let blocks: Vec<Block> = (0..120u64).map(|i| i * 100 / 3).map(|ms| frame(ms, ms == 0 || ms == 3000)).collect();
        let mut c = PartCutter::new(PART_TARGET_MS, SEG, MAX);
        let cuts = run(&mut c, blocks);
        assert_every_frame_accounted(&c, &cuts, 120);
        assert_eq!(c.skipped, 15);
        // A capture stall, and a segment that runs out of parts.
        let blocks = vec![frame(0, true), frame(1000, false), frame(1033, false)];
        let mut c = PartCutter::new(PART_TARGET_MS, SEG, MAX);
        let cuts = run(&mut c, blocks);
        assert_every_frame_accounted(&c, &cuts, 3);
        let blocks: Vec<Block> = (0..200u64).map(|i| frame(i * 300, i == 0 || i == 150)).collect();
        let mut c = PartCutter::new(PART_TARGET_MS, 60_000, 60_499);
        let cuts = run(&mut c, blocks);
        assert_every_frame_accounted(&c, &cuts, 200);
        assert!(c.skipped > 0, "frames until the next keyframe are dropped");
    }

    #[test]
    fn every_frame_is_placed_or_skipped_under_bursty_and_random_gaps() {
        let seen = [20, 30, 17, 33, 17, 34, 16, 33, 32, 39, 13, 38, 16, 29, 17, 35, 16, 32, 17, 36, 40, 29, 12];
        let (blocks, frames) = jittery(0, 20_000, |i| seen[i % seen.len()]);
        let mut c = PartCutter::new(PART_TARGET_MS, SEG, MAX);
        let cuts = run(&mut c, blocks);
        assert_every_frame_accounted(&c, &cuts, frames.len() as u64);
        assert_eq!(c.skipped, 0);
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let gaps: Vec<u64> = (0..4000)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Mostly frames, now and then a stall of up to 1.2 s.
                if seed % 50 == 0 { 300 + seed % 900 } else { 5 + seed % 70 }
            })
            .collect();
        let (blocks, frames) = jittery(100, 60_100, |i| gaps[i]);
        let mut c = PartCutter::new(PART_TARGET_MS, SEG, MAX);
        let cuts = run(&mut c, blocks);
        assert_every_frame_accounted(&c, &cuts, frames.len() as u64);
    }

    #[test]
    fn finish_without_blocks_is_nothing() {
        assert_eq!(PartCutter::new(PART_TARGET_MS, SEG, MAX).finish(), vec![]);
    }
}
