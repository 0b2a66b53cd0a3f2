//! Playlist rendering against golden files, every rendered playlist read back by a real parser
//! (m3u8-rs), and the RFC 8216 rule that a later playlist only appends, drops from the head, or
//! ends.

use chalkstream_manifest::ingest::SegmentHeaders;
use chalkstream_manifest::playlist::{check_lines, render, render_event, segment_lines};
use chalkstream_manifest::rules::{self, Retention};
use chalkstream_manifest::segment::{Breaks, EndMarker, SegmentMeta, StreamRecord};
use chalkstream_manifest::time::parse_rfc3339_ms;
use chalkstream_manifest::window::{self, EventView, Extent, LinesSource, MetaSource, Piece, PlaylistKind, State, StreamView};
use m3u8_rs::{MediaPlaylist, MediaPlaylistType};
use std::collections::BTreeMap;
use std::path::PathBuf;

const STREAM: &str = "c436f0485bf34625ff7764ead634bccd875b514d";
const T0: i64 = 1_795_611_600_000; // 2026-11-25T13:00:00Z

/// Compares `text` with `tests/golden/{name}.m3u8`; `UPDATE_GOLDEN=1` rewrites the file instead.
fn assert_golden(name: &str, text: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.m3u8"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, text).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display()));
    assert_eq!(text, expected, "rendered playlist differs from {}", path.display());
}

/// Parses a rendered playlist with m3u8-rs and checks that it says what the view says.
fn parse_and_check(text: &str, view: &StreamView) -> MediaPlaylist {
    let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("m3u8-rs parses our playlist");
    assert_eq!(parsed.version, Some(3));
    assert!(parsed.independent_segments);
    assert_eq!(parsed.target_duration, u64::from(view.target_s));
    assert_eq!(parsed.media_sequence, view.segments[0].seq);
    assert_eq!(parsed.discontinuity_sequence, view.discontinuity_sequence);
    assert_eq!(parsed.end_list, view.state == State::Ended);
    match view.kind {
        PlaylistKind::Event => assert_eq!(parsed.playlist_type, Some(MediaPlaylistType::Event)),
        PlaylistKind::Sliding => assert_eq!(parsed.playlist_type, None),
    }
    assert!(parsed.unknown_tags.is_empty(), "{:?}", parsed.unknown_tags);
    assert_eq!(parsed.segments.len(), view.segments.len());
    for (segment, meta) in parsed.segments.iter().zip(&view.segments) {
        assert_eq!(segment.uri, format!("/chunks/{STREAM}/{}.ts", meta.seq));
        assert_eq!((f64::from(segment.duration) * 1000.0).round() as u32, meta.duration_ms);
        assert!(rules::rounded_seconds(meta.duration_ms) <= view.target_s);
        assert_eq!(segment.discontinuity, meta.discontinuity);
        let pdt = segment.program_date_time.expect("every segment has a PROGRAM-DATE-TIME");
        assert_eq!(pdt.timestamp_millis(), meta.pdt_ms);
        assert!(segment.unknown_tags.is_empty(), "{:?}", segment.unknown_tags);
    }
    parsed
}

fn meta(seq: u64, duration_ms: u32, discontinuity: bool) -> SegmentMeta {
    let stored_ms = T0 + seq as i64 * 2000 + 2000;
    SegmentMeta {
        seq,
        duration_ms,
        pdt_ms: stored_ms - i64::from(duration_ms),
        discontinuity,
        stored_ms,
        len: 188 * 100,
        parts: 1,
        sha1: "0".repeat(40),
        ll_parts: Vec::new(),
        disc_seq: None,
        gap: false,
        folded: false,
    }
}

fn view(segments: Vec<SegmentMeta>, breaks: &[u64], kind: PlaylistKind, state: State) -> StreamView {
    let breaks = Breaks { before: 0, seqs: breaks.to_vec() };
    StreamView {
        target_s: 2,
        kind,
        discontinuity_sequence: breaks.count_before(segments[0].seq),
        segments,
        state,
    }
}

#[test]
fn live_sliding_window_golden() {
    let segments = vec![meta(5, 2000, false), meta(6, 2000, true), meta(7, 1967, false), meta(8, 2002, false)];
    let v = view(segments, &[2, 6], PlaylistKind::Sliding, State::Live);
    let text = render(STREAM, &v);
    assert_golden("live_sliding_window", &text);
    let parsed = parse_and_check(&text, &v);
    assert_eq!(parsed.discontinuity_sequence, 1, "the break at seq 2 slid out of the window");
}

#[test]
fn ended_playlist_is_the_live_one_plus_endlist_golden() {
    let segments = vec![meta(5, 2000, false), meta(6, 2000, true), meta(7, 1967, false), meta(8, 2002, false)];
    let live = render(STREAM, &view(segments.clone(), &[2, 6], PlaylistKind::Sliding, State::Live));
    let v = view(segments, &[2, 6], PlaylistKind::Sliding, State::Ended);
    let ended = render(STREAM, &v);
    assert_golden("ended_sliding_window", &ended);
    assert_eq!(ended, format!("{live}#EXT-X-ENDLIST\n"));
    parse_and_check(&ended, &v);
}

#[test]
fn retention_zero_is_an_event_playlist_from_seq_zero_golden() {
    let segments = vec![meta(0, 2000, false), meta(1, 2000, false), meta(2, 1500, false)];
    let v = view(segments, &[], PlaylistKind::Event, State::Live);
    let text = render(STREAM, &v);
    assert_golden("event_live", &text);
    let parsed = parse_and_check(&text, &v);
    assert_eq!(parsed.media_sequence, 0);
}

#[test]
fn program_date_time_comes_from_the_uploaded_header() {
    let headers = SegmentHeaders::parse(Some("2.000"), Some("2026-11-25T14:00:00.250+01:00"), None).unwrap();
    let m = SegmentMeta::new(0, &headers, false, &[0x47; 188], T0 + 5000);
    assert_eq!(m.pdt_ms, parse_rfc3339_ms("2026-11-25T13:00:00.250Z").unwrap());
    let v = view(vec![m], &[], PlaylistKind::Sliding, State::Live);
    let text = render(STREAM, &v);
    assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:2026-11-25T13:00:00.250Z\n"), "{text}");
    parse_and_check(&text, &v);
}

/// A stream simulated over time with the same rules the server applies, storage in a map.
struct Sim {
    metas: BTreeMap<u64, SegmentMeta>,
    head: u64,
    breaks: Breaks,
    end: Option<EndMarker>,
    record: Option<StreamRecord>,
    retention: Retention,
    idle_ms: u64,
}

impl MetaSource for Sim {
    type Error = std::convert::Infallible;
    fn meta(&mut self, seq: u64) -> Result<Option<SegmentMeta>, Self::Error> {
        Ok(self.metas.get(&seq).cloned())
    }
    fn head(&mut self) -> Result<u64, Self::Error> {
        Ok(self.head)
    }
}

impl Sim {
    fn new(retention: Retention) -> Self {
        Sim { metas: BTreeMap::new(), head: 0, breaks: Breaks::default(), end: None, record: None, retention, idle_ms: 5000 }
    }

    fn upload(&mut self, seq: u64, duration_ms: u32, now: i64) {
        let headers = SegmentHeaders { duration_ms, pdt_ms: None, discontinuity: false };
        let record = *self.record.get_or_insert(StreamRecord { target_s: rules::target_duration_s(duration_ms), created_ms: now, part_target_ms: None, first_seq: None });
        rules::check_target(duration_ms, record.target_s).unwrap();
        let prev = seq.checked_sub(1).and_then(|p| self.metas.get(&p));
        let disc = rules::starts_discontinuity(false, seq, self.end.as_ref(), prev, now, self.idle_ms);
        let carried = if seq == 0 { Some(0) } else { prev.and_then(SegmentMeta::disc_seq_after) };
        let mut meta = SegmentMeta::new(seq, &headers, disc, &[0x47; 188], now);
        meta.disc_seq = carried;
        self.metas.insert(seq, meta);
        if disc {
            self.breaks.insert(seq, self.head);
        }
        let tail = self.metas.keys().next_back().map_or(0, |s| s + 1);
        let (head, retention) = (self.head, self.retention);
        let walk = window::walk(self, head, tail, retention, now, Extent::ExpiredOnly { max: 1000 }).unwrap();
        self.head = walk.new_head();
        for m in walk.expired {
            self.metas.remove(&m.seq);
        }
    }

    fn render(&mut self, now: i64) -> Option<(String, StreamView)> {
        let tail = self.metas.keys().next_back().map_or(0, |s| s + 1);
        let (head, retention) = (self.head, self.retention);
        let walk = window::walk(self, head, tail, retention, now, Extent::Everything).unwrap();
        // The count each meta carries is the one the shared list of breaks gives.
        let first = walk.live.first()?.seq;
        let carried = walk.live[0].disc_seq;
        assert_eq!(carried, Some(self.breaks.count_before(first)), "the count carried to seq {first}");
        let v = StreamView::assemble(self.record.as_ref()?, carried?, self.end.as_ref(), walk.live, retention, self.idle_ms, now)?;
        Some((render(STREAM, &v), v))
    }
}

/// Checks RFC 8216 6.2.1/6.3.5: `next` may only drop segments from the head of `prev`, append
/// segments, or end; the target duration never changes; the discontinuity sequence follows the
/// dropped discontinuities. An ended playlist may be followed only by itself or by a resume whose
/// first new segment is a discontinuity.
fn assert_only_appends_drops_or_ends(prev: &MediaPlaylist, next: &MediaPlaylist) {
    assert_eq!(next.target_duration, prev.target_duration);
    assert_eq!(next.playlist_type, prev.playlist_type);
    assert!(next.media_sequence >= prev.media_sequence, "media sequence went back");
    let dropped = (next.media_sequence - prev.media_sequence) as usize;
    let kept = &prev.segments[dropped.min(prev.segments.len())..];
    assert_eq!(&next.segments[..kept.len()], kept, "kept segments changed");
    let dropped_breaks = prev.segments[..dropped.min(prev.segments.len())].iter().filter(|s| s.discontinuity).count();
    if dropped <= prev.segments.len() {
        assert_eq!(next.discontinuity_sequence, prev.discontinuity_sequence + dropped_breaks as u64);
    }
    let appended = &next.segments[kept.len()..];
    if prev.end_list {
        if appended.is_empty() {
            assert!(next.end_list, "an ended playlist lost its ENDLIST without new segments");
        } else {
            assert!(appended[0].discontinuity, "a resume must start with a discontinuity");
        }
    }
}

/// One moment of a simulated stream: ms after T0, an optional upload (seq, duration ms), and
/// whether the broadcaster pressed Stop.
type Step = (i64, Option<(u64, u32)>, bool);

fn run_and_check_pairs(mut sim: Sim, steps: &[Step]) -> usize {
    let mut previous: Option<MediaPlaylist> = None;
    let mut checked = 0;
    for &(at, upload, stop) in steps {
        let now = T0 + at;
        if let Some((seq, duration)) = upload {
            sim.upload(seq, duration, now);
        }
        if stop {
            let last = *sim.metas.keys().next_back().unwrap();
            sim.end = Some(EndMarker { after_seq: last, at_ms: now });
        }
        let Some((text, v)) = sim.render(now) else { continue };
        let parsed = parse_and_check(&text, &v);
        if let Some(prev) = &previous {
            assert_only_appends_drops_or_ends(prev, &parsed);
            checked += 1;
        }
        previous = Some(parsed);
    }
    checked
}

fn steady_then_stop_then_resume() -> Vec<Step> {
    let mut steps = Vec::new();
    for seq in 0..12u64 {
        steps.push((seq as i64 * 2000, Some((seq, 2000)), false));
        steps.push((seq as i64 * 2000 + 1000, None, false));
    }
    steps.push((24_000, None, true));
    steps.push((25_000, None, false));
    for seq in 12..16u64 {
        steps.push((26_000 + (seq as i64 - 12) * 2000, Some((seq, 1800)), false));
    }
    // Idle: no upload for longer than the idle timeout, then one more.
    steps.push((40_000, None, false));
    steps.push((41_000, Some((16, 2000)), false));
    steps.push((42_000, None, false));
    steps
}

#[test]
fn sliding_playlists_only_append_drop_from_the_head_or_end() {
    let checked = run_and_check_pairs(Sim::new(Retention::Millis(7000)), &steady_then_stop_then_resume());
    assert!(checked > 25, "{checked}");
}

#[test]
fn event_playlists_only_append_or_end() {
    let mut sim = Sim::new(Retention::Forever);
    let checked = run_and_check_pairs(Sim::new(Retention::Forever), &steady_then_stop_then_resume());
    assert!(checked > 25);
    for (at, upload, _) in steady_then_stop_then_resume() {
        if let Some((seq, duration)) = upload {
            sim.upload(seq, duration, T0 + at);
        }
    }
    let (text, v) = sim.render(T0 + 42_000).unwrap();
    assert_eq!(v.segments.len(), 17, "EVENT keeps everything from seq 0");
    assert_eq!(v.segments.iter().filter(|m| m.discontinuity).count(), 1, "only the idle resume (no Stop in this run)");
    assert_golden("event_resumed_after_idle", &text);
}

#[test]
fn resumed_stream_marks_the_break_and_keeps_the_discontinuity_sequence_as_it_slides() {
    let mut sim = Sim::new(Retention::Millis(5000));
    for seq in 0..4u64 {
        sim.upload(seq, 2000, T0 + seq as i64 * 2000);
    }
    sim.end = Some(EndMarker { after_seq: 3, at_ms: T0 + 7000 });
    let (_, ended) = sim.render(T0 + 7000).unwrap();
    assert_eq!(ended.state, State::Ended);
    sim.upload(4, 2000, T0 + 9000);
    sim.upload(5, 2000, T0 + 11_000);
    let (text, v) = sim.render(T0 + 11_000).unwrap();
    assert_eq!(v.state, State::Live);
    assert_golden("sliding_resumed_after_stop", &text);
    assert!(v.segments.iter().any(|m| m.seq == 4 && m.discontinuity));
    assert_eq!(v.discontinuity_sequence, 0);
    sim.upload(6, 2000, T0 + 13_000);
    sim.upload(7, 2000, T0 + 18_000);
    let (_, later) = sim.render(T0 + 18_000).unwrap();
    assert!(later.segments[0].seq > 4);
    assert_eq!(later.discontinuity_sequence, 1, "the break slid out and is counted");
}

#[test]
fn fully_expired_stream_has_no_playlist() {
    let mut sim = Sim::new(Retention::Millis(3000));
    sim.upload(0, 2000, T0);
    assert!(sim.render(T0 + 3000).is_some());
    assert!(sim.render(T0 + 3001).is_none());
}

/// A store of metas that also keeps the rendered lines of some 64-segment pages, the way the
/// Spin component stores them; `bad_pages` hold text that is not what `segment_lines` wrote.
struct Paged {
    metas: BTreeMap<u64, SegmentMeta>,
    head: u64,
    lines: BTreeMap<u64, String>,
    lines_taken: usize,
}

impl MetaSource for Paged {
    type Error = std::convert::Infallible;
    fn meta(&mut self, seq: u64) -> Result<Option<SegmentMeta>, Self::Error> {
        Ok(self.metas.get(&seq).cloned())
    }
    fn head(&mut self) -> Result<u64, Self::Error> {
        Ok(self.head)
    }
}

impl LinesSource for Paged {
    fn lines(&mut self, seq: u64) -> Result<Option<Piece>, Self::Error> {
        if seq % 64 != 0 {
            return Ok(None);
        }
        let Some(text) = self.lines.get(&(seq / 64)) else { return Ok(None) };
        if !check_lines(STREAM, seq, 64, text) {
            return Ok(None);
        }
        self.lines_taken += 1;
        Ok(Some(Piece::Lines { first_seq: seq, len: 64, text: text.clone() }))
    }
}

/// A stream of `count` segments with discontinuities (a resume at 70, others at 64 and 129,
/// the first of a page and the last of one) and uneven durations; lines stored for every
/// complete page except page 1, and page 3 damaged.
fn paged(count: u64, head: u64) -> Paged {
    let metas: BTreeMap<u64, SegmentMeta> = (head..count)
        .map(|seq| (seq, meta(seq, 1000 + (seq % 7) as u32 * 167, [64, 70, 127, 129].contains(&seq))))
        .collect();
    let mut lines = BTreeMap::new();
    for page in 0..count / 64 {
        let page_metas: Vec<SegmentMeta> = (page * 64..page * 64 + 64).filter_map(|s| metas.get(&s).cloned()).collect();
        if page == 1 || page_metas.len() < 64 {
            continue;
        }
        let mut text = segment_lines(STREAM, &page_metas);
        if page == 3 {
            text.truncate(text.len() - 30);
        }
        lines.insert(page, text);
    }
    Paged { metas, head, lines, lines_taken: 0 }
}

#[test]
fn event_playlists_from_stored_lines_are_byte_identical_to_rendering_every_meta() {
    let record = StreamRecord { target_s: 2, created_ms: T0, part_target_ms: None, first_seq: None };
    let breaks = Breaks { before: 1, seqs: vec![20, 64, 70, 127, 129] };
    let idle_ms = 30_000;
    let mut compared = 0;
    for count in [1u64, 63, 64, 65, 127, 128, 129, 200, 256, 300] {
        // head 0, and a head above seq 20 (a stream once served with retention).
        for head in [0u64, 21] {
            if head >= count {
                continue;
            }
            let last_stored = meta(count - 1, 1000, false).stored_ms;
            let stop = EndMarker { after_seq: count - 1, at_ms: last_stored + 10 };
            let moments = [(None, last_stored + 1), (Some(stop), last_stored + 20), (None, last_stored + idle_ms as i64 + 1)];
            for (end, now) in moments {
                let mut source = paged(count, head);
                let tail = count;
                let slow = window::walk(&mut source, head, tail, Retention::Forever, now, Extent::Everything).unwrap();
                let slow = StreamView::assemble(&record, breaks.count_before(head), end.as_ref(), slow.live, Retention::Forever, idle_ms, now).unwrap();
                let run = window::walk_event(&mut source, head, tail).unwrap();
                let fast = EventView::assemble(&record, breaks.count_before(head), end.as_ref(), run, idle_ms, now).unwrap();
                assert_eq!(fast.state, slow.state);
                let text = render_event(STREAM, &fast);
                assert_eq!(text, render(STREAM, &slow), "{count} segments from {head}, end {end:?}");
                parse_and_check(&text, &slow);
                compared += 1;
            }
        }
    }
    assert!(compared > 50);
    // The pieces really came from stored lines: pages 0 and 2 of 300 segments (1 has none, 3 is
    // damaged and falls back to its metas, 4 is incomplete).
    let mut source = paged(300, 0);
    let run = window::walk_event(&mut source, 0, 300).unwrap();
    assert_eq!(source.lines_taken, 2);
    assert_eq!(run.pieces.iter().map(Piece::len).sum::<u64>(), 300);
    let text = render_event(STREAM, &EventView::assemble(&record, breaks.count_before(0), None, run, idle_ms, T0).unwrap());
    assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{text}");
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 4);
}

#[test]
fn event_walk_over_lines_waits_at_a_hole_and_follows_a_moved_head() {
    let mut source = paged(200, 0);
    // A page with a hole never had its lines written.
    source.metas.remove(&150);
    source.lines.remove(&2);
    let run = window::walk_event(&mut source, 0, 140).unwrap();
    assert_eq!(run.pieces.iter().map(Piece::len).sum::<u64>(), 150, "the run stops at the hole");
    assert_eq!(run.last.unwrap().seq, 149);
    // A run that ends exactly at the end of stored lines reads that page's last meta.
    let mut source = paged(192, 0);
    let run = window::walk_event(&mut source, 0, 192).unwrap();
    assert!(matches!(run.pieces.last(), Some(Piece::Lines { first_seq: 128, .. })));
    assert_eq!(run.last.unwrap().seq, 191);
    // Past a stale tail the walk re-reads the head, as `walk` does.
    let mut source = paged(200, 0);
    for seq in 0..130 {
        source.metas.remove(&seq);
    }
    source.lines.clear();
    source.head = 130;
    let run = window::walk_event(&mut source, 0, 3).unwrap();
    assert_eq!(run.pieces.first().map(Piece::first_seq), Some(130));
    assert_eq!(run.pieces.iter().map(Piece::len).sum::<u64>(), 70);
}

#[test]
fn stored_lines_are_checked_against_their_place_in_the_stream() {
    let metas: Vec<SegmentMeta> = (64..128).map(|s| meta(s, 2000, s == 64 || s == 100)).collect();
    let text = segment_lines(STREAM, &metas);
    assert!(check_lines(STREAM, 64, 64, &text));
    assert!(!check_lines(STREAM, 0, 64, &text), "another page's place");
    assert!(!check_lines(STREAM, 64, 63, &text), "a segment too many");
    assert!(!check_lines(STREAM, 64, 65, &text), "a segment too few");
    assert!(!check_lines(&"0".repeat(40), 64, 64, &text), "another stream");
    assert!(!check_lines(STREAM, 64, 64, &text[..text.len() - 1]), "no final newline");
    assert!(!check_lines(STREAM, 64, 64, &text[..text.len() / 2]), "truncated");
    assert!(!check_lines(STREAM, 64, 64, &format!("{text}#EXT-X-ENDLIST\n")), "a trailing line");
    assert!(!check_lines(STREAM, 64, 64, &text.replace('\n', "\r\n")), "CRLF");
    assert!(!check_lines(STREAM, 64, 64, &text.replace("/64.ts", "/064.ts")), "a non-canonical seq");
    assert!(!check_lines(STREAM, 64, 64, &text.replacen("#EXTINF:2.000,", "#EXTINF:2.000", 1)));
    assert!(!check_lines(STREAM, 64, 64, ""));
    assert!(!check_lines(STREAM, 64, 64, "[{\"seq\":64}]\n"), "a meta page is not lines");
}

#[test]
fn a_given_up_seq_is_an_ext_x_gap_segment_and_the_next_one_starts_a_discontinuity_golden() {
    // Issue 11: seq 6 was given up; seq 7 after it starts a discontinuity (rules decide it).
    let gap = SegmentMeta::new_gap(6, 2000, T0 + 12_000, T0 + 20_000);
    assert!(rules::starts_discontinuity(false, 7, None, Some(&gap), T0 + 20_500, 30_000));
    let segments = vec![meta(5, 2000, false), gap, meta(7, 2000, true), meta(8, 2000, false)];
    let v = view(segments.clone(), &[7], PlaylistKind::Sliding, State::Live);
    let text = render(STREAM, &v);
    assert_golden("gap_sliding_window", &text);
    assert_eq!(text.matches("#EXT-X-GAP\n").count(), 1);
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
    assert!(text.contains("#EXT-X-GAP\n#EXTINF:2.000,\n/chunks/c436f0485bf34625ff7764ead634bccd875b514d/6.ts\n"), "{text}");
    // m3u8-rs keeps EXT-X-GAP as an unknown tag of that segment; everything else reads back.
    let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("parses");
    assert_eq!(parsed.media_sequence, 5);
    assert_eq!(parsed.segments.len(), 4, "the gap keeps its media sequence number");
    assert_eq!(parsed.segments[1].unknown_tags.len(), 1);
    assert_eq!(parsed.segments[1].unknown_tags[0].tag, "X-GAP");
    assert!(parsed.segments[2].discontinuity);
    // Stored lines blocks may hold a gap.
    let lines = segment_lines(STREAM, &segments);
    assert!(check_lines(STREAM, 5, 4, &lines));
    assert!(!check_lines(STREAM, 5, 4, &lines.replace("#EXT-X-GAP\n", "#EXT-X-GAP\n#EXT-X-GAP\n")));
    // A gap's meta reads and writes with its flag; other metas stay without it.
    let json = serde_json::to_value(&segments[1]).unwrap();
    assert_eq!(json["gap"], true);
    assert!(serde_json::to_value(&segments[0]).unwrap().get("gap").is_none());
}
