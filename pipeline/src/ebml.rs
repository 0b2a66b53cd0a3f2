//! A small incremental WebM (EBML) reader: keeps the init bytes and splits the rest at Clusters.
//!
//! MediaRecorder hands out the WebM byte stream in arbitrary slices. [`WebmSplitter`] buffers
//! only what it has not yet understood, copies the EBML header, the Segment start, Info and
//! Tracks into the *init* bytes, and then yields one [`Cluster`] at a time with its timecode
//! and whether its first video block is a keyframe. Chrome writes Clusters of unknown size,
//! so a Cluster also ends where the next level-1 element begins.

use crate::audio::{opus_samples, AudioClock};

const ID_EBML: u32 = 0x1A45_DFA3;
const ID_SEGMENT: u32 = 0x1853_8067;
const ID_INFO: u32 = 0x1549_A966;
const ID_TIMECODE_SCALE: u32 = 0x2A_D7B1;
const ID_TRACKS: u32 = 0x1654_AE6B;
const ID_TRACK_ENTRY: u32 = 0xAE;
const ID_TRACK_NUMBER: u32 = 0xD7;
const ID_TRACK_TYPE: u32 = 0x83;
const ID_CLUSTER: u32 = 0x1F43_B675;
const ID_TIMECODE: u32 = 0xE7;
const ID_SIMPLE_BLOCK: u32 = 0xA3;
const ID_BLOCK_GROUP: u32 = 0xA0;
const ID_BLOCK: u32 = 0xA1;
const ID_REFERENCE_BLOCK: u32 = 0xFB;
/// Level-1 elements that end a Cluster of unknown size.
const LEVEL1: [u32; 9] = [
    ID_CLUSTER,
    0x1C53_BB6B,
    0x1254_C367,
    0x1043_A770,
    0x1941_A469,
    0x114D_9B74,
    ID_INFO,
    ID_TRACKS,
    ID_EBML,
];

/// What went wrong while reading WebM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebmError {
    /// An element ID or size field is not a valid EBML variable-length integer.
    BadVint(usize),
    /// The stream does not start with an EBML header followed by a Segment.
    NotWebm(u32),
    /// An element other than a Segment or Cluster has an unknown size.
    UnknownSize(u32),
    /// A block inside a Cluster is too short to hold its header.
    BadBlock,
}

impl core::fmt::Display for WebmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WebmError::BadVint(at) => write!(f, "invalid EBML number at byte {at}"),
            WebmError::NotWebm(id) => write!(f, "not a WebM stream (element {id:#x} at top level)"),
            WebmError::UnknownSize(id) => write!(f, "element {id:#x} has an unknown size"),
            WebmError::BadBlock => write!(f, "truncated WebM block"),
        }
    }
}

/// One Cluster, as bytes ready to append after the init bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Cluster timecode in milliseconds.
    pub timecode_ms: u64,
    /// The first video block in this Cluster is a keyframe.
    pub keyframe: bool,
    /// Timestamp of the first video block in milliseconds (a Cluster may open with audio).
    pub video_ms: Option<u64>,
    /// Latest block timestamp seen in this Cluster, in milliseconds.
    pub last_block_ms: u64,
    /// The whole Cluster element.
    pub bytes: Vec<u8>,
    /// The same Cluster without its video blocks (Timecode and audio only): the audio a
    /// neighbouring segment needs around its boundary, see [`crate::timing`].
    pub audio: Vec<u8>,
    /// Where the audio of this Cluster's last Opus packet ends, in milliseconds.
    pub audio_end_ms: Option<u64>,
}

/// One block (a video frame or an audio packet) with its place on the recording's timeline, for
/// cutting at frames rather than at Clusters (see [`crate::parts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Absolute timestamp in ms (audio: its continuous position, see [`crate::audio`]).
    pub ms: u64,
    /// A block of the video track.
    pub video: bool,
    /// A keyframe (audio blocks always are).
    pub key: bool,
    /// Audio: where the packet's sound ends, in ms.
    pub end_ms: Option<u64>,
    /// The SimpleBlock or BlockGroup element.
    element: Vec<u8>,
    /// Offset in `element` of the block's 16-bit timestamp, relative to its Cluster.
    ts_at: usize,
}

impl Block {
    /// The frame a SimpleBlock without lacing carries (an Opus packet, say); `None` for any
    /// other block.
    pub fn payload(&self) -> Option<&[u8]> {
        let flags = *self.element.get(self.ts_at + 2)?;
        (self.element.first() == Some(&(ID_SIMPLE_BLOCK as u8)) && flags & 0x06 == 0).then(|| &self.element[self.ts_at + 3..])
    }

    /// A SimpleBlock of `track` at `ms` (for tests of what consumes blocks).
    #[cfg(test)]
    pub(crate) fn simple(track: u8, ms: u64, video: bool, key: bool, end_ms: Option<u64>) -> Block {
        let mut body = vec![0x80 | track, 0, 0, if key { 0x80 } else { 0 }];
        body.extend_from_slice(&ms.to_be_bytes());
        let mut element = vec![ID_SIMPLE_BLOCK as u8, 0x80 | body.len() as u8];
        element.extend_from_slice(&body);
        Block {
            ms,
            video,
            key,
            end_ms,
            element,
            ts_at: 3,
        }
    }
}

/// A Cluster of known size holding `blocks` (in the order given), with its timecode at the first
/// block's time: a cut of the recording at any block boundary, readable after the init bytes.
pub fn cluster_of<'a>(blocks: impl IntoIterator<Item = &'a Block>) -> Vec<u8> {
    let blocks: Vec<&Block> = blocks.into_iter().collect();
    let tc = blocks.iter().map(|b| b.ms).min().unwrap_or(0);
    let mut children =
        Vec::with_capacity(blocks.iter().map(|b| b.element.len()).sum::<usize>() + 10);
    children.extend_from_slice(&[0xE7, 0x88]);
    children.extend_from_slice(&tc.to_be_bytes());
    for b in blocks {
        let mut e = b.element.clone();
        let rel = i16::try_from(b.ms - tc).unwrap_or(i16::MAX);
        e[b.ts_at..b.ts_at + 2].copy_from_slice(&rel.to_be_bytes());
        children.extend_from_slice(&e);
    }
    cluster_element(&children)
}

/// Where a SimpleBlock's or BlockGroup's block header is: (track, relative time, keyframe,
/// offset of the relative time in the element). `hl` is the element's header length.
fn block_header(id: u32, element: &[u8], hl: usize) -> Option<(u64, i16, bool, usize)> {
    let (at, referenced) = match id {
        ID_SIMPLE_BLOCK => (hl, None),
        ID_BLOCK_GROUP => {
            let (mut pos, mut block, mut referenced) = (hl, None, false);
            while let Ok(Some((cid, Some(size), chl))) = header(&element[pos..], pos) {
                let end = pos + chl + size as usize;
                if end > element.len() {
                    break;
                }
                match cid {
                    ID_BLOCK => block = Some(pos + chl),
                    ID_REFERENCE_BLOCK => referenced = true,
                    _ => {}
                }
                pos = end;
            }
            (block?, Some(referenced))
        }
        _ => return None,
    };
    let (track, len, _) = vint(&element[at..], false).ok().flatten()?;
    let ts_at = at + len;
    if element.len() < ts_at + 3 {
        return None;
    }
    let rel = i16::from_be_bytes([element[ts_at], element[ts_at + 1]]);
    let key = match referenced {
        Some(r) => !r,
        None => element[ts_at + 2] & 0x80 != 0,
    };
    Some((track, rel, key, ts_at))
}

/// What the splitter found in the bytes pushed so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// EBML header + Segment header + everything before the first Cluster.
    Init(Vec<u8>),
    Cluster(Cluster),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Top,
    Segment,
    /// Inside a Cluster; `Some(n)` = n body bytes left, `None` = unknown size.
    Cluster(Option<u64>),
}

#[derive(Debug, Default)]
struct Building {
    timecode: u64,
    first_video_key: Option<bool>,
    first_video_rel: i64,
    max_rel: i64,
    bytes: Vec<u8>,
    /// Children of the Cluster that are not video blocks.
    audio: Vec<u8>,
    /// End of the latest placed audio packet, in milliseconds.
    audio_end: Option<u64>,
}

/// Incremental WebM splitter; feed it with [`WebmSplitter::push`].
#[derive(Debug)]
pub struct WebmSplitter {
    buf: Vec<u8>,
    consumed: usize,
    state: State,
    init: Vec<u8>,
    init_done: bool,
    timecode_scale: u64,
    video_track: Option<u64>,
    audio_track: Option<u64>,
    audio_clock: AudioClock,
    cluster: Option<Building>,
    /// Collect every block for [`WebmSplitter::take_blocks`].
    collect_blocks: bool,
    blocks: Vec<Block>,
}

impl Default for WebmSplitter {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads an EBML variable-length integer; returns (value, length, all-ones marker).
fn vint(data: &[u8], keep_marker: bool) -> Result<Option<(u64, usize, bool)>, usize> {
    let Some(&first) = data.first() else {
        return Ok(None);
    };
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return Err(0);
    }
    if data.len() < len {
        return Ok(None);
    }
    let mut value = if keep_marker {
        first as u64
    } else {
        (first as u64) & (0xFF >> len)
    };
    for &b in &data[1..len] {
        value = (value << 8) | b as u64;
    }
    let ones = if keep_marker {
        false
    } else {
        value == (1u64 << (7 * len)) - 1
    };
    Ok(Some((value, len, ones)))
}

/// An element header: id, size (None when unknown) and header length.
fn header(data: &[u8], at: usize) -> Result<Option<(u32, Option<u64>, usize)>, WebmError> {
    let Some((id, id_len, _)) = vint(data, true).map_err(|_| WebmError::BadVint(at))? else {
        return Ok(None);
    };
    if id_len > 4 {
        return Err(WebmError::BadVint(at));
    }
    let Some((size, size_len, unknown)) =
        vint(&data[id_len..], false).map_err(|_| WebmError::BadVint(at + id_len))?
    else {
        return Ok(None);
    };
    Ok(Some((
        id as u32,
        (!unknown).then_some(size),
        id_len + size_len,
    )))
}

/// Wraps Cluster children into a Cluster element of known size.
fn cluster_element(children: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(children.len() + 12);
    out.extend_from_slice(&ID_CLUSTER.to_be_bytes());
    // An 8-byte size: marker bit in the first byte, then the length.
    out.extend_from_slice(&((1u64 << 56) | children.len() as u64).to_be_bytes());
    out.extend_from_slice(children);
    out
}

fn uint(data: &[u8]) -> u64 {
    data.iter().take(8).fold(0, |v, &b| (v << 8) | b as u64)
}

/// Calls `f(id, body)` for each complete child element in `data`.
fn children(data: &[u8], mut f: impl FnMut(u32, &[u8])) {
    let mut pos = 0;
    while let Ok(Some((id, Some(size), hl))) = header(&data[pos..], pos) {
        let end = pos + hl + size as usize;
        if end > data.len() {
            return;
        }
        f(id, &data[pos + hl..end]);
        pos = end;
    }
}

impl WebmSplitter {
    pub fn new() -> Self {
        WebmSplitter {
            buf: Vec::new(),
            consumed: 0,
            state: State::Top,
            init: Vec::new(),
            init_done: false,
            timecode_scale: 1_000_000,
            video_track: None,
            audio_track: None,
            audio_clock: AudioClock::default(),
            cluster: None,
            collect_blocks: false,
            blocks: Vec::new(),
        }
    }

    /// A splitter that also hands out every block as soon as it is read
    /// ([`WebmSplitter::take_blocks`]), without waiting for its Cluster to end.
    pub fn with_blocks() -> Self {
        WebmSplitter {
            collect_blocks: true,
            ..Self::new()
        }
    }

    /// The blocks read since the last call, in stream order (only [`WebmSplitter::with_blocks`]).
    pub fn take_blocks(&mut self) -> Vec<Block> {
        std::mem::take(&mut self.blocks)
    }

    /// Number of the video track, once Tracks has been read.
    pub fn video_track(&self) -> Option<u64> {
        self.video_track
    }

    /// Appends bytes and returns every piece that is now complete, in stream order.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Piece>, WebmError> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let rest = &self.buf[pos..];
            let at = self.consumed + pos;
            match self.state {
                State::Cluster(Some(0)) => {
                    out.push(Piece::Cluster(self.close_cluster()));
                    self.state = State::Segment;
                    continue;
                }
                _ => {}
            }
            let Some((id, size, hl)) = header(rest, at)? else {
                break;
            };
            match self.state {
                State::Top => match (id, size) {
                    (ID_EBML, Some(size)) => {
                        let end = hl + size as usize;
                        if rest.len() < end {
                            break;
                        }
                        self.init.extend_from_slice(&rest[..end]);
                        pos += end;
                    }
                    (ID_SEGMENT, _) => {
                        self.init.extend_from_slice(&rest[..hl]);
                        pos += hl;
                        self.state = State::Segment;
                    }
                    (id, _) => return Err(WebmError::NotWebm(id)),
                },
                State::Segment => {
                    if id == ID_CLUSTER {
                        if !self.init_done {
                            self.init_done = true;
                            out.push(Piece::Init(self.init.clone()));
                        }
                        self.cluster = Some(Building {
                            bytes: rest[..hl].to_vec(),
                            ..Default::default()
                        });
                        pos += hl;
                        self.state = State::Cluster(size);
                        continue;
                    }
                    let size = size.ok_or(WebmError::UnknownSize(id))?;
                    let end = hl + size as usize;
                    if rest.len() < end {
                        break;
                    }
                    if !self.init_done {
                        let element = rest[..end].to_vec();
                        self.read_level1(id, &element[hl..]);
                        self.init.extend_from_slice(&element);
                    }
                    pos += end;
                }
                State::Cluster(left) => {
                    if left.is_none() && LEVEL1.contains(&id) {
                        out.push(Piece::Cluster(self.close_cluster()));
                        self.state = State::Segment;
                        continue;
                    }
                    let size = size.ok_or(WebmError::UnknownSize(id))?;
                    let end = hl + size as usize;
                    if rest.len() < end {
                        break;
                    }
                    let mut element = rest[..end].to_vec();
                    if id == ID_SIMPLE_BLOCK {
                        self.place_audio(&mut element[hl..]);
                    }
                    let video = self.read_cluster_child(id, &element[hl..])?;
                    if self.collect_blocks {
                        self.collect(id, &element, hl);
                    }
                    if let Some(c) = self.cluster.as_mut() {
                        c.bytes.extend_from_slice(&element);
                        if !video {
                            c.audio.extend_from_slice(&element);
                        }
                    }
                    pos += end;
                    self.state = State::Cluster(left.map(|l| l.saturating_sub(end as u64)));
                }
            }
        }
        self.buf.drain(..pos);
        self.consumed += pos;
        Ok(out)
    }

    /// Ends the stream: returns the Cluster still being read, if any.
    pub fn finish(&mut self) -> Option<Cluster> {
        self.state = State::Segment;
        self.cluster.is_some().then(|| self.close_cluster())
    }

    fn close_cluster(&mut self) -> Cluster {
        let c = self.cluster.take().unwrap_or_default();
        let timecode_ms = self.to_ms(c.timecode);
        let last = (c.timecode as i64 + c.max_rel).max(0) as u64;
        let video = (c.timecode as i64 + c.first_video_rel).max(0) as u64;
        Cluster {
            timecode_ms,
            keyframe: c.first_video_key == Some(true),
            video_ms: c.first_video_key.is_some().then(|| self.to_ms(video)),
            last_block_ms: self.to_ms(last),
            bytes: c.bytes,
            audio: cluster_element(&c.audio),
            audio_end_ms: c.audio_end,
        }
    }

    fn to_ms(&self, ticks: u64) -> u64 {
        ticks.saturating_mul(self.timecode_scale) / 1_000_000
    }

    fn read_level1(&mut self, id: u32, body: &[u8]) {
        match id {
            ID_INFO => children(body, |id, b| {
                if id == ID_TIMECODE_SCALE && uint(b) > 0 {
                    self.timecode_scale = uint(b);
                }
            }),
            ID_TRACKS => children(body, |id, entry| {
                if id != ID_TRACK_ENTRY {
                    return;
                }
                let (mut number, mut kind) = (None, None);
                children(entry, |id, b| match id {
                    ID_TRACK_NUMBER => number = Some(uint(b)),
                    ID_TRACK_TYPE => kind = Some(uint(b)),
                    _ => {}
                });
                if kind == Some(1) && self.video_track.is_none() {
                    self.video_track = number;
                }
                if kind == Some(2) && self.audio_track.is_none() {
                    self.audio_track = number;
                }
            }),
            _ => {}
        }
    }

    /// Moves an unlaced audio SimpleBlock to its continuous position (see [`crate::audio`]),
    /// rewriting its relative timestamp in place. Anything else is left as it is.
    fn place_audio(&mut self, body: &mut [u8]) {
        let (Some(c), Some(audio)) = (self.cluster.as_ref(), self.audio_track) else {
            return;
        };
        if self.timecode_scale != 1_000_000 {
            return;
        }
        let Ok(Some((track, len, _))) = vint(body, false) else {
            return;
        };
        if track != audio || body.len() < len + 4 || body[len + 2] & 0x06 != 0 {
            return;
        }
        let Some(samples) = opus_samples(&body[len + 3..]) else {
            return;
        };
        let rel = i16::from_be_bytes([body[len], body[len + 1]]) as i64;
        let placed = self.audio_clock.place(c.timecode as i64 + rel, samples);
        let Ok(rel) = i16::try_from(placed - c.timecode as i64) else {
            return;
        };
        body[len..len + 2].copy_from_slice(&rel.to_be_bytes());
        let end = placed.max(0) as u64 + samples / 48;
        if let Some(c) = self.cluster.as_mut() {
            c.audio_end = Some(c.audio_end.map_or(end, |e| e.max(end)));
        }
    }

    /// Keeps a block of the video or audio track with its absolute time.
    fn collect(&mut self, id: u32, element: &[u8], hl: usize) {
        let Some((track, rel, key, ts_at)) = block_header(id, element, hl) else {
            return;
        };
        let Some(c) = self.cluster.as_ref() else {
            return;
        };
        let video = Some(track) == self.video_track;
        if !video && Some(track) != self.audio_track {
            return;
        }
        let ms = self.to_ms((c.timecode as i64 + rel as i64).max(0) as u64);
        let end_ms = (!video)
            .then(|| opus_samples(element.get(ts_at + 3..)?))
            .flatten()
            .map(|samples| ms + samples / 48);
        self.blocks.push(Block {
            ms,
            video,
            key,
            end_ms,
            element: element.to_vec(),
            ts_at,
        });
    }

    /// Reads what the splitter needs from a Cluster child; true when it is a video block.
    fn read_cluster_child(&mut self, id: u32, body: &[u8]) -> Result<bool, WebmError> {
        let video = self.video_track;
        let Some(c) = self.cluster.as_mut() else {
            return Ok(false);
        };
        let block = |data: &[u8], key: bool, c: &mut Building| -> Result<bool, WebmError> {
            let (track, len, _) = vint(data, false)
                .ok()
                .flatten()
                .ok_or(WebmError::BadBlock)?;
            if data.len() < len + 3 {
                return Err(WebmError::BadBlock);
            }
            let rel = i16::from_be_bytes([data[len], data[len + 1]]) as i64;
            c.max_rel = c.max_rel.max(rel);
            let keyframe = key || data[len + 2] & 0x80 != 0;
            if Some(track) == video && c.first_video_key.is_none() {
                c.first_video_key = Some(keyframe);
                c.first_video_rel = rel;
            }
            Ok(Some(track) == video)
        };
        match id {
            ID_TIMECODE => c.timecode = uint(body),
            ID_SIMPLE_BLOCK => return block(body, false, c),
            ID_BLOCK_GROUP => {
                let (mut data, mut referenced) = (None, false);
                children(body, |id, b| match id {
                    ID_BLOCK => data = Some(b.to_vec()),
                    ID_REFERENCE_BLOCK => referenced = true,
                    _ => {}
                });
                if let Some(data) = data {
                    // A Block has no keyframe flag: it is a keyframe when nothing is referenced.
                    let mut d = data;
                    if d.len() > 3 {
                        let (_, len, _) =
                            vint(&d, false).ok().flatten().ok_or(WebmError::BadBlock)?;
                        if d.len() > len + 2 {
                            d[len + 2] &= 0x7F;
                        }
                    }
                    return block(&d, !referenced, c);
                }
            }
            _ => {}
        }
        Ok(false)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Encodes an element with a 1..4-byte id and an 8-byte (or unknown) size.
    pub(crate) fn el(id: u32, body: &[u8], unknown: bool) -> Vec<u8> {
        let mut v: Vec<u8> = id
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|&b| b == 0)
            .collect();
        if unknown {
            v.push(0x01);
            v.extend_from_slice(&[0xFF; 7]);
        } else {
            v.push(0x01);
            v.extend_from_slice(&(body.len() as u64).to_be_bytes()[1..]);
        }
        v.extend_from_slice(body);
        v
    }

    pub(crate) fn simple_block(track: u8, rel: i16, key: bool) -> Vec<u8> {
        let mut b = vec![0x80 | track];
        b.extend_from_slice(&rel.to_be_bytes());
        b.push(if key { 0x80 } else { 0 });
        b.extend_from_slice(&[1, 2, 3]);
        el(ID_SIMPLE_BLOCK, &b, false)
    }

    pub(crate) fn init_bytes() -> Vec<u8> {
        let mut v = el(ID_EBML, &el(0x4282, b"webm", false), false);
        v.extend(el(ID_SEGMENT, &[], true));
        v.extend(el(
            ID_INFO,
            &el(ID_TIMECODE_SCALE, &[0x0F, 0x42, 0x40], false),
            false,
        ));
        let audio = [
            el(ID_TRACK_NUMBER, &[1], false),
            el(ID_TRACK_TYPE, &[2], false),
        ]
        .concat();
        let video = [
            el(ID_TRACK_NUMBER, &[2], false),
            el(ID_TRACK_TYPE, &[1], false),
        ]
        .concat();
        let tracks = [
            el(ID_TRACK_ENTRY, &audio, false),
            el(ID_TRACK_ENTRY, &video, false),
        ]
        .concat();
        v.extend(el(ID_TRACKS, &tracks, false));
        v
    }

    pub(crate) fn cluster(tc: u64, key: bool, unknown: bool) -> Vec<u8> {
        let body = [
            el(ID_TIMECODE, &tc.to_be_bytes(), false),
            simple_block(1, 0, true),
            simple_block(2, 0, key),
            simple_block(2, 33, false),
            // The test payload's TOC byte (1) says 20 ms: this block follows the first.
            simple_block(1, 20, true),
        ]
        .concat();
        el(ID_CLUSTER, &body, unknown)
    }

    fn run(stream: &[u8], step: usize) -> (Vec<Piece>, Option<Cluster>) {
        let mut s = WebmSplitter::new();
        let mut out = Vec::new();
        for chunk in stream.chunks(step) {
            out.extend(s.push(chunk).unwrap());
        }
        let last = s.finish();
        (out, last)
    }

    #[test]
    fn init_is_everything_before_the_first_cluster() {
        let stream = [init_bytes(), cluster(0, true, true)].concat();
        let (pieces, last) = run(&stream, 7);
        assert_eq!(pieces, vec![Piece::Init(init_bytes())]);
        let last = last.unwrap();
        assert_eq!(last.bytes, cluster(0, true, true));
        assert!(last.keyframe);
        assert_eq!(
            last.last_block_ms, 33,
            "the latest block, the video one at 33"
        );
    }

    #[test]
    fn unknown_size_clusters_end_at_the_next_cluster_for_any_slicing() {
        let stream = [
            init_bytes(),
            cluster(0, true, true),
            cluster(1000, false, true),
            cluster(2000, true, true),
        ]
        .concat();
        for step in [1, 3, 64, 4096] {
            let (pieces, last) = run(&stream, step);
            assert_eq!(pieces.len(), 3, "step {step}");
            let Piece::Cluster(a) = &pieces[1] else {
                panic!()
            };
            let Piece::Cluster(b) = &pieces[2] else {
                panic!()
            };
            assert_eq!((a.timecode_ms, a.keyframe), (0, true));
            assert_eq!((b.timecode_ms, b.keyframe), (1000, false));
            assert_eq!(b.bytes, cluster(1000, false, true));
            assert_eq!(last.unwrap().timecode_ms, 2000);
        }
    }

    #[test]
    fn known_size_clusters_are_emitted_as_soon_as_complete() {
        let stream = [
            init_bytes(),
            cluster(0, true, false),
            cluster(500, true, false),
        ]
        .concat();
        let mut s = WebmSplitter::new();
        let pieces = s.push(&stream).unwrap();
        assert_eq!(pieces.len(), 3);
        assert_eq!(s.video_track(), Some(2));
        assert!(s.finish().is_none());
    }

    #[test]
    fn the_audio_copy_keeps_the_timecode_and_audio_blocks_and_drops_video() {
        let stream = [
            init_bytes(),
            cluster(700, true, true),
            cluster(900, true, true),
        ]
        .concat();
        let (pieces, _) = run(&stream, 7);
        let Some(Piece::Cluster(c)) = pieces.get(1) else {
            panic!("expected a cluster, got {pieces:?}");
        };
        let expected = el(
            ID_CLUSTER,
            &[
                el(ID_TIMECODE, &700u64.to_be_bytes(), false),
                simple_block(1, 0, true),
                simple_block(1, 20, true),
            ]
            .concat(),
            false,
        );
        assert_eq!(c.audio, expected);
        // The copy reads back as a Cluster with the same timecode and no video at all.
        let mut s = WebmSplitter::new();
        s.push(&init_bytes()).unwrap();
        let back = [
            s.push(&c.audio).unwrap(),
            s.finish().into_iter().map(Piece::Cluster).collect(),
        ]
        .concat();
        let Some(Piece::Cluster(back)) = back.last() else {
            panic!("the audio copy did not read back: {back:?}");
        };
        assert_eq!(
            (back.timecode_ms, back.keyframe, back.last_block_ms),
            (700, false, 720)
        );
        assert_eq!((c.video_ms, back.video_ms), (Some(700), None));
        assert_eq!(c.audio_end_ms, Some(740), "the packet at 720 lasts 20 ms");
    }

    #[test]
    fn a_cluster_that_opens_with_audio_reports_when_its_video_starts() {
        let body = [
            el(ID_TIMECODE, &2014u64.to_be_bytes(), false),
            simple_block(1, 0, true),
            simple_block(2, 21, true),
            simple_block(2, 54, false),
        ]
        .concat();
        let stream = [init_bytes(), el(ID_CLUSTER, &body, true)].concat();
        let (_, last) = run(&stream, 3);
        let c = last.unwrap();
        assert_eq!(
            (c.timecode_ms, c.keyframe, c.video_ms),
            (2014, true, Some(2035))
        );
    }

    #[test]
    fn audio_blocks_are_moved_to_continuous_positions_in_both_copies() {
        // 20 ms packets stamped 0, 27 (wobble), 33 and 60 in the next cluster; video untouched.
        let body = [
            el(ID_TIMECODE, &0u64.to_be_bytes(), false),
            simple_block(1, 0, true),
            simple_block(2, 0, true),
            simple_block(1, 27, true),
            simple_block(2, 33, false),
        ]
        .concat();
        let next = [
            el(ID_TIMECODE, &33u64.to_be_bytes(), false),
            simple_block(1, 0, true),
            simple_block(1, 27, true),
        ]
        .concat();
        let stream = [
            init_bytes(),
            el(ID_CLUSTER, &body, true),
            el(ID_CLUSTER, &next, true),
        ]
        .concat();
        let (pieces, last) = run(&stream, 4);
        let Some(Piece::Cluster(first)) = pieces.get(1) else {
            panic!("expected a cluster, got {pieces:?}");
        };
        let expected = [
            el(ID_TIMECODE, &0u64.to_be_bytes(), false),
            simple_block(1, 0, true),
            simple_block(2, 0, true),
            simple_block(1, 20, true),
            simple_block(2, 33, false),
        ]
        .concat();
        assert_eq!(first.bytes, el(ID_CLUSTER, &expected, true));
        let audio = [
            el(ID_TIMECODE, &0u64.to_be_bytes(), false),
            simple_block(1, 0, true),
            simple_block(1, 20, true),
        ]
        .concat();
        assert_eq!(first.audio, el(ID_CLUSTER, &audio, false));
        let last = last.unwrap();
        let moved = [
            el(ID_TIMECODE, &33u64.to_be_bytes(), false),
            simple_block(1, 7, true),
            simple_block(1, 27, true),
        ]
        .concat();
        assert_eq!(
            last.bytes,
            el(ID_CLUSTER, &moved, true),
            "40 and 60 ms, relative to 33"
        );
    }

    #[test]
    fn keyframe_is_judged_by_the_first_video_block_not_audio() {
        // Audio (track 1) blocks are always "key"; a cluster whose video starts with a
        // delta frame must not count as a cut point.
        let stream = [init_bytes(), cluster(0, false, true)].concat();
        let (_, last) = run(&stream, 5);
        assert!(!last.unwrap().keyframe);
    }

    #[test]
    fn timecode_scale_is_applied() {
        let mut init = el(ID_EBML, &[], false);
        init.extend(el(ID_SEGMENT, &[], true));
        // 10 ms per tick
        init.extend(el(
            ID_INFO,
            &el(ID_TIMECODE_SCALE, &[0x98, 0x96, 0x80], false),
            false,
        ));
        let stream = [init, cluster(150, true, true)].concat();
        let (_, last) = run(&stream, 9);
        assert_eq!(last.unwrap().timecode_ms, 1500);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut s = WebmSplitter::new();
        assert!(matches!(
            s.push(&[0x00, 0x00, 0x00]),
            Err(WebmError::BadVint(_))
        ));
        let mut s = WebmSplitter::new();
        assert!(matches!(
            s.push(&el(0x4286, &[1], false)),
            Err(WebmError::NotWebm(0x4286))
        ));
    }
}
