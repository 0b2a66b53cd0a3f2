//! A small WebM writer for encoded frames: WebCodecs' H.264 and Opus chunks become the byte
//! stream Chromium's MediaRecorder hands out (an EBML header, a Segment of unknown size, Info,
//! Tracks, then Clusters of unknown size, a new one at each video keyframe), so that everything
//! after the recorder, [`crate::ebml`] onwards, is the same for browsers whose MediaRecorder
//! makes no H.264 (Firefox). Pure: the browser side is `encode`.
//!
//! The two encoders answer on their own schedules, so [`Muxer`] interleaves their chunks by
//! timestamp before they are written: a Cluster's blocks only ever move forward in time.

use std::collections::VecDeque;

const ID_EBML: u32 = 0x1A45_DFA3;
const ID_DOC_TYPE: u32 = 0x4282;
const ID_DOC_TYPE_VERSION: u32 = 0x4287;
const ID_DOC_TYPE_READ_VERSION: u32 = 0x4285;
const ID_SEGMENT: u32 = 0x1853_8067;
const ID_INFO: u32 = 0x1549_A966;
const ID_TIMECODE_SCALE: u32 = 0x2A_D7B1;
const ID_MUXING_APP: u32 = 0x4D80;
const ID_WRITING_APP: u32 = 0x5741;
const ID_TRACKS: u32 = 0x1654_AE6B;
const ID_TRACK_ENTRY: u32 = 0xAE;
const ID_TRACK_NUMBER: u32 = 0xD7;
const ID_TRACK_UID: u32 = 0x73C5;
const ID_TRACK_TYPE: u32 = 0x83;
const ID_CODEC_ID: u32 = 0x86;
const ID_CODEC_PRIVATE: u32 = 0x63A2;
const ID_VIDEO: u32 = 0xE0;
const ID_PIXEL_WIDTH: u32 = 0xB0;
const ID_PIXEL_HEIGHT: u32 = 0xBA;
const ID_AUDIO: u32 = 0xE1;
const ID_SAMPLING_FREQUENCY: u32 = 0xB5;
const ID_CHANNELS: u32 = 0x9F;
const ID_CLUSTER: u32 = 0x1F43_B675;
const ID_TIMECODE: u32 = 0xE7;
const ID_SIMPLE_BLOCK: u32 = 0xA3;

/// The track numbers written.
pub const AUDIO_TRACK: u8 = 1;
pub const VIDEO_TRACK: u8 = 2;

/// How far one track may run ahead of the other before it is written anyway: a track that gives
/// nothing (a stalled camera, a sound path that never started) must not hold the other back for
/// ever. A chunk of the other track older than what was written must then be written late (at
/// the last time written), which the cutter counts as a skipped frame. While the video encoder
/// still holds pictures older than the sound, the sound waits for them longer
/// ([`MAX_ENCODER_WAIT_MS`]).
const MAX_WAIT_MS: u64 = 3_000;

/// How far the sound may run ahead of a picture the video encoder still holds before it is
/// written anyway. Firefox's H.264 encoder hands each picture out about 42 pictures later
/// (1.4 s at 30 fps, BENCHMARKS.md), and later still when the machine is starved and pictures
/// come slowly: 42 at 8 a second are over 5 s. With only [`MAX_WAIT_MS`], the sound went ahead
/// and those pictures were written late, several at one time: the likely cause of the decoding
/// time 52 ms back that a CI run saw once under a load average of 16. Past this bound the
/// encoder has stalled, and the sound goes on without it, as with [`MAX_WAIT_MS`].
const MAX_ENCODER_WAIT_MS: u64 = 20_000;

/// A Cluster is closed before a block's offset from its timecode would leave a signed 16-bit
/// field; well inside it.
const MAX_CLUSTER_MS: u64 = 30_000;

/// What the Tracks element says about the two tracks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracks {
    pub width: u32,
    pub height: u32,
    /// The H.264 decoder configuration record (`avcC`): WebCodecs' `decoderConfig.description`.
    pub avcc: Vec<u8>,
    pub channels: u8,
    pub sample_rate: u32,
}

/// The `OpusHead` (RFC 7845 §5.1) for the Opus track's CodecPrivate, with no pre-skip: the
/// timestamps the encoder gives are where the sound is.
pub fn opus_head(channels: u8, sample_rate: u32) -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.push(1);
    head.push(channels);
    head.extend_from_slice(&0u16.to_le_bytes());
    head.extend_from_slice(&sample_rate.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes());
    head.push(0);
    head
}

/// An element with its size as an 8-byte EBML number (or unknown).
fn el(id: u32, body: &[u8]) -> Vec<u8> {
    let mut v = id_bytes(id);
    v.push(0x01);
    v.extend_from_slice(&(body.len() as u64).to_be_bytes()[1..]);
    v.extend_from_slice(body);
    v
}

fn el_unknown(id: u32) -> Vec<u8> {
    let mut v = id_bytes(id);
    v.push(0x01);
    v.extend_from_slice(&[0xFF; 7]);
    v
}

fn id_bytes(id: u32) -> Vec<u8> {
    id.to_be_bytes().iter().copied().skip_while(|&b| b == 0).collect()
}

fn uint(id: u32, value: u64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take(7).take_while(|&&b| b == 0).count();
    el(id, &bytes[skip..])
}

/// Everything before the first Cluster: what [`crate::ebml::WebmSplitter`] keeps as init bytes.
pub fn header(tracks: &Tracks) -> Vec<u8> {
    let ebml = [el(ID_DOC_TYPE, b"webm"), uint(ID_DOC_TYPE_VERSION, 4), uint(ID_DOC_TYPE_READ_VERSION, 2)].concat();
    let info = [
        uint(ID_TIMECODE_SCALE, 1_000_000),
        el(ID_MUXING_APP, b"Chalkstream"),
        el(ID_WRITING_APP, b"Chalkstream (WebCodecs)"),
    ]
    .concat();
    let audio = [
        uint(ID_TRACK_NUMBER, AUDIO_TRACK.into()),
        uint(ID_TRACK_UID, AUDIO_TRACK.into()),
        uint(ID_TRACK_TYPE, 2),
        el(ID_CODEC_ID, b"A_OPUS"),
        el(ID_CODEC_PRIVATE, &opus_head(tracks.channels, tracks.sample_rate)),
        el(
            ID_AUDIO,
            &[el(ID_SAMPLING_FREQUENCY, &f64::from(tracks.sample_rate).to_be_bytes()), uint(ID_CHANNELS, tracks.channels.into())]
                .concat(),
        ),
    ]
    .concat();
    let video = [
        uint(ID_TRACK_NUMBER, VIDEO_TRACK.into()),
        uint(ID_TRACK_UID, VIDEO_TRACK.into()),
        uint(ID_TRACK_TYPE, 1),
        el(ID_CODEC_ID, b"V_MPEG4/ISO/AVC"),
        el(ID_CODEC_PRIVATE, &tracks.avcc),
        el(ID_VIDEO, &[uint(ID_PIXEL_WIDTH, tracks.width.into()), uint(ID_PIXEL_HEIGHT, tracks.height.into())].concat()),
    ]
    .concat();
    let tracks = [el(ID_TRACK_ENTRY, &audio), el(ID_TRACK_ENTRY, &video)].concat();
    [el(ID_EBML, &ebml), el_unknown(ID_SEGMENT), el(ID_INFO, &info), el(ID_TRACKS, &tracks)].concat()
}

/// One encoded chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Milliseconds on the recording's timeline.
    pub ms: u64,
    pub key: bool,
    pub data: Vec<u8>,
}

/// Writes Clusters of blocks, interleaving the two tracks by time.
#[derive(Debug, Default)]
pub struct Muxer {
    video: VecDeque<Chunk>,
    audio: VecDeque<Chunk>,
    /// The open Cluster's timecode.
    cluster_ms: Option<u64>,
    /// The last block written, so no block goes back in time.
    last_ms: u64,
    /// The time of the oldest picture the video encoder still holds ([`Muxer::video_pending`]).
    video_pending: Option<u64>,
}

impl Muxer {
    pub fn push_video(&mut self, chunk: Chunk) {
        self.video.push_back(chunk);
    }

    pub fn push_audio(&mut self, chunk: Chunk) {
        self.audio.push_back(chunk);
    }

    /// The time of the oldest picture given to the video encoder and not yet out of it, or
    /// `None` when it holds none: sound after that time waits for it (up to
    /// [`MAX_ENCODER_WAIT_MS`]), however long the encoder takes.
    pub fn video_pending(&mut self, oldest_ms: Option<u64>) {
        self.video_pending = oldest_ms;
    }

    /// Writes every chunk whose turn has come: the older of the two queues' heads, while both
    /// have one (a later chunk of the other track could still come before it otherwise), or one
    /// track's alone once it runs [`MAX_WAIT_MS`] ahead of nothing; sound after a picture the
    /// encoder still holds, only once it runs [`MAX_ENCODER_WAIT_MS`] ahead. With `all`,
    /// everything (the encoders were flushed). Nothing is written before the first video
    /// keyframe: the recording starts there (earlier sound is dropped).
    pub fn drain(&mut self, all: bool) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let ahead =
                |q: &VecDeque<Chunk>, by: u64| q.front().zip(q.back()).is_some_and(|(f, b)| b.ms >= f.ms + by);
            let held = |a: &Chunk| self.video_pending.is_some_and(|v| v <= a.ms);
            let take_video = match (self.video.front(), self.audio.front()) {
                (Some(v), Some(a)) => v.ms <= a.ms,
                (Some(_), None) if all || ahead(&self.video, MAX_WAIT_MS) => true,
                (None, Some(_)) if all => false,
                (None, Some(a)) if held(a) => {
                    if !ahead(&self.audio, MAX_ENCODER_WAIT_MS) {
                        break;
                    }
                    false
                }
                (None, Some(_)) if ahead(&self.audio, MAX_WAIT_MS) => false,
                _ => break,
            };
            let chunk = if take_video { self.video.pop_front() } else { self.audio.pop_front() };
            let Some(chunk) = chunk else { break };
            self.write(&mut out, chunk, take_video);
        }
        out
    }

    fn write(&mut self, out: &mut Vec<u8>, chunk: Chunk, video: bool) {
        let ms = chunk.ms.max(self.last_ms);
        let open = match self.cluster_ms {
            None => video && chunk.key,
            Some(start) => (video && chunk.key) || ms - start > MAX_CLUSTER_MS,
        };
        if self.cluster_ms.is_none() && !open {
            return; // before the first keyframe
        }
        if open {
            out.extend(el_unknown(ID_CLUSTER));
            out.extend(uint(ID_TIMECODE, ms));
            self.cluster_ms = Some(ms);
        }
        self.last_ms = ms;
        let rel = (ms - self.cluster_ms.expect("a cluster is open")) as i16;
        let mut body = vec![0x80 | if video { VIDEO_TRACK } else { AUDIO_TRACK }];
        body.extend_from_slice(&rel.to_be_bytes());
        body.push(if chunk.key || !video { 0x80 } else { 0 });
        body.extend_from_slice(&chunk.data);
        out.extend(el(ID_SIMPLE_BLOCK, &body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebml::{Piece, WebmSplitter};

    fn tracks() -> Tracks {
        Tracks { width: 1280, height: 720, avcc: vec![1, 0x42, 0xC0, 0x1F, 0xFF, 0xE0, 0x00], channels: 1, sample_rate: 48_000 }
    }

    /// One 20 ms Opus packet (TOC config 1 = SILK NB 20 ms, code 0: one frame).
    fn opus(ms: u64) -> Chunk {
        Chunk { ms, key: true, data: vec![0x08, 0xAA] }
    }

    fn frame(ms: u64, key: bool) -> Chunk {
        Chunk { ms, key, data: vec![0, 0, 0, 2, 0x65, ms as u8] }
    }

    #[test]
    fn what_the_muxer_writes_is_read_back_as_clusters_opening_at_keyframes() {
        let mut m = Muxer::default();
        let mut stream = header(&tracks());
        // Sound before the first keyframe is dropped; then a keyframe every second at 25 fps.
        m.push_audio(opus(0));
        for i in 0..100u64 {
            m.push_video(frame(20 + i * 40, i % 25 == 0));
        }
        for i in 1..205u64 {
            m.push_audio(opus(i * 20));
        }
        stream.extend(m.drain(false));
        stream.extend(m.drain(true));

        let mut s = WebmSplitter::new();
        let mut pieces = Vec::new();
        for slice in stream.chunks(97) {
            pieces.extend(s.push(slice).unwrap());
        }
        pieces.extend(s.finish().map(Piece::Cluster));
        assert_eq!(pieces[0], Piece::Init(header(&tracks())));
        let clusters: Vec<_> = pieces[1..]
            .iter()
            .map(|p| match p {
                Piece::Cluster(c) => (c.timecode_ms, c.keyframe, c.video_ms),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(clusters, [(20, true, Some(20)), (1020, true, Some(1020)), (2020, true, Some(2020)), (3020, true, Some(3020))]);
    }

    #[test]
    fn blocks_never_go_back_in_time_and_wait_for_the_other_track() {
        let mut m = Muxer::default();
        m.push_video(frame(100, true));
        assert!(m.drain(false).is_empty(), "a sound at 90 could still come");
        m.push_audio(opus(120));
        let first = m.drain(false);
        assert!(!first.is_empty(), "the keyframe at 100 goes");
        m.push_audio(opus(90)); // late: written at 120's place, not before it
        m.push_video(frame(140, false));
        let mut stream = [header(&tracks()), first, m.drain(true)].concat();
        stream.extend(el_unknown(ID_CLUSTER));
        let mut s = WebmSplitter::with_blocks();
        s.push(&stream).unwrap();
        let blocks = s.take_blocks();
        let times: Vec<u64> = blocks.iter().filter(|b| b.video).map(|b| b.ms).collect();
        assert_eq!(times, [100, 140]);
        // What goes in comes out: the reader hands back each block's frame.
        assert_eq!(blocks[0].payload(), Some(frame(100, true).data.as_slice()));
        assert_eq!(blocks.iter().filter(|b| !b.video).map(|b| b.payload().unwrap().to_vec()).next(), Some(opus(120).data));
    }

    #[test]
    fn a_track_that_gives_nothing_holds_the_other_back_only_briefly() {
        let mut m = Muxer::default();
        m.push_video(frame(0, true));
        m.push_video(frame(2_900, false));
        assert!(m.drain(false).is_empty(), "sound may still come");
        m.push_video(frame(3_000, false));
        let out = m.drain(false);
        assert!(!out.is_empty(), "three seconds of pictures with no sound: they go");
    }

    /// Firefox's encoder holds about 42 pictures, and a starved machine gives few a second: the
    /// sound runs seconds ahead of the pictures still in the encoder. It waits for them, so every
    /// picture is written at its own time.
    #[test]
    fn sound_waits_for_pictures_a_slow_encoder_still_holds() {
        let mut m = Muxer::default();
        let mut out = header(&tracks());
        // Pictures every 125 ms (8 a second) from 0; the encoder hands each out 42 pictures
        // (5.25 s) later. Sound every 20 ms.
        let (mut given, mut handed) = (0u64, 0u64);
        for t in (0..20_000u64).step_by(20) {
            m.push_audio(opus(t));
            if t % 125 == 0 {
                given = t / 125 + 1;
            }
            while handed + 42 < given {
                m.push_video(frame(handed * 125, handed % 16 == 0));
                handed += 1;
            }
            m.video_pending((handed < given).then_some(handed * 125));
            out.extend(m.drain(false));
        }
        out.extend(m.drain(true));
        out.extend(el_unknown(ID_CLUSTER));
        let mut s = WebmSplitter::with_blocks();
        s.push(&out).unwrap();
        let blocks = s.take_blocks();
        let times: Vec<u64> = blocks.iter().filter(|b| b.video).map(|b| b.ms).collect();
        assert_eq!(times, (0..handed).map(|k| k * 125).collect::<Vec<_>>(), "each picture at its own time");
        let all: Vec<u64> = blocks.iter().map(|b| b.ms).collect();
        assert!(all.windows(2).all(|w| w[0] <= w[1]), "blocks in time order");
        assert_eq!(blocks.iter().filter(|b| !b.video).count(), 1000, "no sound lost");
    }

    #[test]
    fn sound_waits_for_a_held_picture_only_so_long() {
        let mut m = Muxer::default();
        m.push_video(frame(0, true));
        m.video_pending(Some(20));
        assert!(!m.drain(true).is_empty());
        for t in (20..20_020u64).step_by(20) {
            m.push_audio(opus(t));
        }
        assert!(m.drain(false).is_empty(), "19.98 s of sound after a picture the encoder holds: it waits");
        m.push_audio(opus(20_020));
        assert!(!m.drain(false).is_empty(), "an encoder that hands nothing out for 20 s holds the sound back no longer");
    }

    #[test]
    fn with_no_picture_held_the_sound_waits_only_the_usual_time() {
        let mut m = Muxer::default();
        m.push_video(frame(0, true));
        assert!(!m.drain(true).is_empty());
        for t in (20..3_020u64).step_by(20) {
            m.push_audio(opus(t));
        }
        assert!(m.drain(false).is_empty(), "the camera may still give a picture");
        m.push_audio(opus(3_040));
        assert!(!m.drain(false).is_empty(), "three seconds of sound and no picture coming: it goes");
    }

    #[test]
    fn opus_head_follows_rfc_7845() {
        let h = opus_head(2, 48_000);
        assert_eq!(&h[..8], b"OpusHead");
        assert_eq!(h.len(), 19);
        assert_eq!((h[8], h[9]), (1, 2));
        assert_eq!(u32::from_le_bytes([h[12], h[13], h[14], h[15]]), 48_000);
    }
}
