//! A tag-by-tag checker for low-latency media playlists (draft-pantos-hls-rfc8216bis), because
//! no Rust HLS parser knows the LL tags. `check` parses a playlist strictly, asserts the
//! draft's rules and Chalkstream's own, and returns what it read so tests can compare
//! playlists. Standard library only: the HTTP tests (`tests/http/`), spin-app's and manifest's tests include it
//! by path.
//!
//! Rules (section numbers of the draft):
//! - `#EXTM3U` first; one `EXT-X-VERSION`, 9 whenever LL tags are present (EXT-X-SKIP needs 9, §8);
//! - `EXT-X-TARGETDURATION`: every `EXTINF` rounded to whole seconds is at most it (§4.4.3.1);
//! - `EXT-X-PART-INF` whenever `EXT-X-PART` appears (§4.4.3.7), once, before any segment;
//! - `EXT-X-SERVER-CONTROL`: `PART-HOLD-BACK` present with `PART-INF`, at least 3 part targets
//!   (§4.4.3.8: MUST >= 2, SHOULD >= 3); `CAN-SKIP-UNTIL` at least 6 target durations;
//! - `EXT-X-PART`: `DURATION` at most `PART-TARGET` (§4.4.4.9); at least 85 % of it unless
//!   `INDEPENDENT=YES` or the last part of its parent segment (the open segment's last listed part
//!   may still become its last); quoted `URI`; the parts of a segment are `{seq}.0`, `{seq}.1`, …
//!   of that segment, part 0 `INDEPENDENT=YES`, and add up to its `EXTINF`;
//! - parts only near the live edge: every listed part starts at most 3 target durations before
//!   the end of the playlist (§6.2.2);
//! - `EXT-X-SKIP` before every segment and after `EXT-X-DISCONTINUITY-SEQUENCE` (hls.js reads it
//!   as segments), only with `CAN-SKIP-UNTIL`, and `SKIPPED-SEGMENTS` offsets the first listed
//!   seq (§4.4.5.2);
//! - at most one `EXT-X-PRELOAD-HINT` of `TYPE=PART`, last, naming the part after the last
//!   listed one (§4.4.5.3, §6.2.6);
//! - ended (`EXT-X-ENDLIST`): no part, no hint, no skip;
//! - every segment has `EXT-X-PROGRAM-DATE-TIME` and a URI `/chunks/{id}/{seq}.ts` whose seq
//!   follows `EXT-X-MEDIA-SEQUENCE` (plus skipped) one by one.

#![allow(dead_code)]

/// One `EXT-X-PART` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlPart {
    pub seq: u64,
    pub part: u32,
    pub duration_ms: u64,
    pub independent: bool,
    /// `GAP=YES`: not available (the parts of a given-up seq).
    pub gap: bool,
    pub uri: String,
}

/// One media segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlSegment {
    pub seq: u64,
    pub duration_ms: u64,
    pub discontinuity: bool,
    /// `#EXT-X-GAP`: a given-up seq, no media.
    pub gap: bool,
    pub pdt: String,
    pub parts: Vec<LlPart>,
    pub uri: String,
}

/// What a checked playlist says.
#[derive(Debug, Clone, Default)]
pub struct LlPlaylist {
    pub version: u32,
    pub target_s: u64,
    pub part_target_ms: Option<u64>,
    pub part_hold_back_ms: Option<u64>,
    pub can_skip_until_ms: Option<u64>,
    pub can_block_reload: bool,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    pub event: bool,
    pub skipped: u64,
    pub segments: Vec<LlSegment>,
    /// Parts after the last segment (the open segment).
    pub open_parts: Vec<LlPart>,
    /// `(seq, part)` of `EXT-X-PRELOAD-HINT:TYPE=PART`.
    pub hint: Option<(u64, u32)>,
    pub ended: bool,
}

impl LlPlaylist {
    pub fn seqs(&self) -> Vec<u64> {
        self.segments.iter().map(|s| s.seq).collect()
    }

    pub fn last_seq(&self) -> Option<u64> {
        self.segments.last().map(|s| s.seq)
    }

    /// Every listed part, in order, the open segment's included.
    pub fn parts(&self) -> Vec<LlPart> {
        self.segments.iter().flat_map(|s| s.parts.iter().cloned()).chain(self.open_parts.iter().cloned()).collect()
    }
}

/// Milliseconds of a plain decimal of seconds (at most three decimals, as Chalkstream writes).
fn ms(text: &str) -> u64 {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    assert!(!int.is_empty() && int.bytes().all(|b| b.is_ascii_digit()), "not a decimal: {text:?}");
    assert!(frac.len() <= 3 && frac.bytes().all(|b| b.is_ascii_digit()), "not a millisecond decimal: {text:?}");
    int.parse::<u64>().unwrap() * 1000 + format!("{frac:0<3}").parse::<u64>().unwrap()
}

/// Attribute list `A=B,C="D,E"` into pairs (quoted values keep no quotes; `quoted` tells).
fn attributes(list: &str) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let mut rest = list;
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').unwrap_or_else(|| panic!("attribute without value in {list:?}"));
        assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-'), "bad attribute name {name:?} in {list:?}");
        let (value, quoted, after) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or_else(|| panic!("unterminated quoted value in {list:?}"));
            (q[..end].to_string(), true, &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].to_string(), false, &after[end..])
        };
        assert!(out.iter().all(|(n, _, _): &(String, String, bool)| n != name), "attribute {name} twice in {list:?}");
        out.push((name.to_string(), value, quoted));
        rest = after.strip_prefix(',').unwrap_or(after);
        assert!(after.is_empty() || after.starts_with(','), "junk after attribute in {list:?}");
    }
    out
}

fn attr<'a>(attrs: &'a [(String, String, bool)], name: &str) -> Option<(&'a str, bool)> {
    attrs.iter().find(|(n, _, _)| n == name).map(|(_, v, q)| (v.as_str(), *q))
}

/// `/chunks/{id}/{seq}.{part}.ts` -> (seq, part).
fn part_uri(uri: &str) -> (u64, u32) {
    let name = uri.rsplit('/').next().unwrap();
    let stem = name.strip_suffix(".ts").unwrap_or_else(|| panic!("part URI {uri:?} is not .ts"));
    let (seq, part) = stem.split_once('.').unwrap_or_else(|| panic!("part URI {uri:?} is not {{seq}}.{{part}}.ts"));
    (seq.parse().unwrap(), part.parse().unwrap())
}

/// Checks `text` (see the module doc) and returns what it says. Panics with the playlist on
/// the first broken rule.
pub fn check(text: &str) -> LlPlaylist {
    std::panic::catch_unwind(|| check_inner(text)).unwrap_or_else(|e| {
        let why = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
        panic!("LL playlist rule broken: {}\n--- playlist ---\n{text}", why.unwrap_or_default())
    })
}

fn check_inner(text: &str) -> LlPlaylist {
    let mut p = LlPlaylist::default();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("#EXTM3U"), "first line");
    assert!(text.ends_with('\n'), "last line not terminated");
    let (mut seen_version, mut seen_target, mut seen_part_inf, mut seen_control, mut seen_msn, mut seen_dseq) =
        (false, false, false, false, false, false);
    let mut seen_skip = false;
    let mut any_segment_or_part = false;
    let mut pending_parts: Vec<LlPart> = Vec::new();
    let (mut pending_extinf, mut pending_pdt, mut pending_disc): (Option<u64>, Option<String>, bool) = (None, None, false);
    let mut pending_gap = false;
    let mut hint_seen = false;
    let mut after_hint = false;
    for line in lines {
        assert!(!line.is_empty() && line == line.trim(), "blank or padded line {line:?}");
        assert!(!after_hint || line == "#EXT-X-ENDLIST", "{line:?} after EXT-X-PRELOAD-HINT");
        if let Some(v) = line.strip_prefix("#EXT-X-VERSION:") {
            assert!(!seen_version, "EXT-X-VERSION twice");
            seen_version = true;
            p.version = v.parse().unwrap();
        } else if line == "#EXT-X-INDEPENDENT-SEGMENTS" {
        } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            assert!(!seen_target && !any_segment_or_part, "EXT-X-TARGETDURATION twice or late");
            seen_target = true;
            p.target_s = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXT-X-SERVER-CONTROL:") {
            assert!(!seen_control && !any_segment_or_part, "EXT-X-SERVER-CONTROL twice or late");
            seen_control = true;
            let a = attributes(v);
            for (name, _, _) in &a {
                assert!(["CAN-BLOCK-RELOAD", "PART-HOLD-BACK", "CAN-SKIP-UNTIL", "HOLD-BACK", "CAN-SKIP-DATERANGES"].contains(&name.as_str()), "unknown SERVER-CONTROL attribute {name}");
            }
            p.can_block_reload = attr(&a, "CAN-BLOCK-RELOAD").map(|(v, _)| v) == Some("YES");
            p.part_hold_back_ms = attr(&a, "PART-HOLD-BACK").map(|(v, _)| ms(v));
            p.can_skip_until_ms = attr(&a, "CAN-SKIP-UNTIL").map(|(v, _)| ms(v));
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART-INF:") {
            assert!(!seen_part_inf && !any_segment_or_part, "EXT-X-PART-INF twice or late");
            seen_part_inf = true;
            let a = attributes(v);
            assert_eq!(a.len(), 1, "PART-INF takes PART-TARGET only");
            p.part_target_ms = Some(ms(attr(&a, "PART-TARGET").expect("PART-TARGET").0));
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            assert!(!seen_msn && !any_segment_or_part, "EXT-X-MEDIA-SEQUENCE twice or late");
            seen_msn = true;
            p.media_sequence = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
            assert!(!seen_dseq && !any_segment_or_part && !seen_skip, "EXT-X-DISCONTINUITY-SEQUENCE twice, late or after EXT-X-SKIP");
            seen_dseq = true;
            p.discontinuity_sequence = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXT-X-PLAYLIST-TYPE:") {
            assert_eq!(v, "EVENT", "only EVENT playlists here");
            assert!(!any_segment_or_part, "EXT-X-PLAYLIST-TYPE late");
            p.event = true;
        } else if let Some(v) = line.strip_prefix("#EXT-X-SKIP:") {
            assert!(!seen_skip && !any_segment_or_part, "EXT-X-SKIP twice or after a segment");
            seen_skip = true;
            let a = attributes(v);
            p.skipped = attr(&a, "SKIPPED-SEGMENTS").expect("SKIPPED-SEGMENTS").0.parse().unwrap();
            assert!(p.skipped > 0, "EXT-X-SKIP of nothing");
        } else if line == "#EXT-X-GAP" {
            assert!(!pending_gap && pending_pdt.is_some() && pending_extinf.is_none(), "EXT-X-GAP must be inside a segment, once");
            pending_gap = true;
        } else if line == "#EXT-X-DISCONTINUITY" {
            assert!(!pending_disc, "EXT-X-DISCONTINUITY twice for one segment");
            pending_disc = true;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            assert!(pending_pdt.is_none() && pending_parts.is_empty() && pending_extinf.is_none(), "EXT-X-PROGRAM-DATE-TIME must open a segment");
            assert!(v.ends_with('Z') && v.len() == 24, "PDT {v:?} not as Chalkstream writes it");
            pending_pdt = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
            any_segment_or_part = true;
            let a = attributes(v);
            for (name, _, _) in &a {
                assert!(["DURATION", "URI", "INDEPENDENT", "BYTERANGE", "GAP"].contains(&name.as_str()), "unknown PART attribute {name}");
            }
            let (uri, quoted) = attr(&a, "URI").expect("PART URI");
            assert!(quoted, "PART URI must be quoted");
            let independent = match attr(&a, "INDEPENDENT") {
                None => false,
                Some(("YES", false)) => true,
                other => panic!("INDEPENDENT={other:?}"),
            };
            let (seq, part) = part_uri(uri);
            assert!(pending_extinf.is_none(), "EXT-X-PART between EXTINF and its URI");
            let gap = match attr(&a, "GAP") {
                None => false,
                Some(("YES", false)) => true,
                other => panic!("GAP={other:?}"),
            };
            pending_parts.push(LlPart { seq, part, duration_ms: ms(attr(&a, "DURATION").expect("PART DURATION").0), independent, gap, uri: uri.to_string() });
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let d = v.strip_suffix(',').unwrap_or_else(|| panic!("EXTINF {v:?} without the comma"));
            pending_extinf = Some(ms(d));
        } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            assert!(!hint_seen, "more than one EXT-X-PRELOAD-HINT");
            hint_seen = true;
            after_hint = true;
            let a = attributes(v);
            assert_eq!(attr(&a, "TYPE"), Some(("PART", false)), "hint TYPE");
            let (uri, quoted) = attr(&a, "URI").expect("hint URI");
            assert!(quoted, "hint URI must be quoted");
            p.hint = Some(part_uri(uri));
        } else if line == "#EXT-X-ENDLIST" {
            assert!(!p.ended, "EXT-X-ENDLIST twice");
            p.ended = true;
        } else if line.starts_with('#') {
            panic!("unexpected tag {line:?}");
        } else {
            any_segment_or_part = true;
            assert!(!p.ended, "segment after EXT-X-ENDLIST");
            let duration_ms = pending_extinf.take().unwrap_or_else(|| panic!("URI {line:?} without EXTINF"));
            let name = line.rsplit('/').next().unwrap();
            let seq: u64 = name.strip_suffix(".ts").and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("segment URI {line:?}"));
            let pdt = pending_pdt.take().unwrap_or_else(|| panic!("segment {seq} without EXT-X-PROGRAM-DATE-TIME"));
            p.segments.push(LlSegment { seq, duration_ms, discontinuity: std::mem::take(&mut pending_disc), gap: std::mem::take(&mut pending_gap), pdt, parts: std::mem::take(&mut pending_parts), uri: line.to_string() });
        }
    }
    assert!(pending_extinf.is_none(), "EXTINF without URI at the end");
    p.open_parts = pending_parts;
    assert!(seen_version && seen_target && seen_msn, "EXT-X-VERSION, TARGETDURATION and MEDIA-SEQUENCE are required here");
    assert!(!p.segments.is_empty(), "a playlist lists at least one segment");

    // Segments: consecutive seqs from MEDIA-SEQUENCE + skipped, within the target duration.
    for (i, s) in p.segments.iter().enumerate() {
        assert_eq!(s.seq, p.media_sequence + p.skipped + i as u64, "segment seqs follow EXT-X-MEDIA-SEQUENCE");
        assert!((s.duration_ms + 500) / 1000 <= p.target_s, "segment {} lasts {} ms, over the target duration", s.seq, s.duration_ms);
        assert!(s.uri.ends_with(&format!("/{}.ts", s.seq)));
    }
    let ll = seen_part_inf || seen_control || !p.open_parts.is_empty() || p.hint.is_some() || seen_skip;
    if ll {
        assert_eq!(p.version, 9, "a low-latency playlist is version 9");
        assert!(seen_part_inf && seen_control, "EXT-X-PART-INF and EXT-X-SERVER-CONTROL go together here");
    }
    let has_parts = p.segments.iter().any(|s| !s.parts.is_empty()) || !p.open_parts.is_empty();
    if has_parts {
        assert!(seen_part_inf, "EXT-X-PART without EXT-X-PART-INF (§4.4.3.7)");
    }
    if let Some(part_target) = p.part_target_ms {
        let hold_back = p.part_hold_back_ms.expect("PART-HOLD-BACK is required with PART-INF (§4.4.3.8)");
        assert!(hold_back >= 3 * part_target, "PART-HOLD-BACK {hold_back} ms is under three part targets");
        assert!(p.can_block_reload, "CAN-BLOCK-RELOAD=YES");
    }
    if let Some(skip_until) = p.can_skip_until_ms {
        assert!(skip_until >= 6000 * p.target_s, "CAN-SKIP-UNTIL under six target durations");
    }
    if seen_skip {
        assert!(p.can_skip_until_ms.is_some(), "EXT-X-SKIP without CAN-SKIP-UNTIL");
    }
    if p.ended {
        assert!(!has_parts && p.hint.is_none() && !seen_skip, "an ended playlist has no parts, hint or skip");
        return p;
    }

    // Parts: per segment 0, 1, … of that segment, part 0 independent, summing to EXTINF.
    let part_target = p.part_target_ms.unwrap_or(0);
    let check_parts = |parts: &[LlPart], seq: u64| {
        for (n, part) in parts.iter().enumerate() {
            assert_eq!((part.seq, part.part), (seq, n as u32), "parts of segment {seq} in order");
            assert!(part.duration_ms <= part_target, "part {seq}.{n} lasts {} ms, over PART-TARGET (§4.4.4.9)", part.duration_ms);
            let last = n + 1 == parts.len();
            if !part.independent && !last {
                assert!(part.duration_ms * 100 >= part_target * 85, "part {seq}.{n} lasts {} ms, under 85% of PART-TARGET (§4.4.4.9)", part.duration_ms);
            }
        }
        if let Some(first) = parts.first() {
            assert!(first.independent || first.gap, "part 0 of segment {seq} starts with an IDR frame (INDEPENDENT=YES)");
            assert!(parts.iter().all(|p| p.gap == first.gap), "segment {seq}: GAP=YES on some parts only");
        }
    };
    for s in &p.segments {
        check_parts(&s.parts, s.seq);
        assert!(s.parts.iter().all(|part| part.gap == s.gap), "segment {}: GAP=YES parts exactly when it is EXT-X-GAP", s.seq);
        if !s.parts.is_empty() {
            let sum: u64 = s.parts.iter().map(|x| x.duration_ms).sum();
            assert_eq!(sum, s.duration_ms, "the parts of segment {} add up to its EXTINF", s.seq);
        }
    }
    let open_seq = p.last_seq().unwrap() + 1;
    check_parts(&p.open_parts, open_seq);

    // Parts near the live edge only, and once a segment lists parts every later one does.
    let end: u64 = p.segments.iter().map(|s| s.duration_ms).sum::<u64>() + p.open_parts.iter().map(|x| x.duration_ms).sum::<u64>();
    let mut at = 0u64;
    let mut listing = false;
    for s in &p.segments {
        if !s.parts.is_empty() {
            assert!(end - at <= 3000 * p.target_s, "segment {} lists parts {} ms before the end (§6.2.2)", s.seq, end - at);
            listing = true;
        } else {
            assert!(!listing, "segment {} without parts after segments with parts", s.seq);
        }
        at += s.duration_ms;
    }

    // The hint names the part after the last listed one.
    if let Some((seq, part)) = p.hint {
        let expected = match p.open_parts.last() {
            Some(last) if last.part + 1 < 64 => (open_seq, last.part + 1),
            Some(_) => (open_seq + 1, 0),
            None => (open_seq, 0),
        };
        assert_eq!((seq, part), expected, "EXT-X-PRELOAD-HINT names the next part");
    } else {
        assert!(!seen_part_inf, "a live low-latency playlist hints the next part");
    }
    p
}
