//! The v2 (LL-HLS) playlist against golden files, each checked tag by tag against the draft's
//! rules by the tests' LL checker (m3u8-rs does not know the LL tags), and its ended form.

#[path = "../../tests/http/common/ll_check.rs"]
mod ll_check;

use chalkstream_manifest::ll::{LlView, OpenSegment};
use chalkstream_manifest::part::{PartHeaders, PartMeta};
use chalkstream_manifest::playlist::render_ll;
use chalkstream_manifest::segment::SegmentMeta;
use chalkstream_manifest::window::{Piece, PlaylistKind, State};
use std::path::PathBuf;

const STREAM: &str = "c436f0485bf34625ff7764ead634bccd875b514d";
const T0: i64 = 1_795_611_600_000; // 2026-11-25T13:00:00Z

fn assert_golden(name: &str, text: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.m3u8"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, text).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display()));
    assert_eq!(text, expected, "rendered playlist differs from {}", path.display());
}

/// Part `n` of segment `seq`: 500 ms parts, one every 500 ms from T0.
fn part(seq: u64, n: u32, discontinuity: bool) -> PartMeta {
    let headers = PartHeaders {
        duration_ms: 500,
        part_target_ms: 500,
        target_s: 2,
        independent: n == 0,
        pdt_ms: None,
        discontinuity,
    };
    let stored = T0 + (seq as i64 * 4 + i64::from(n) + 1) * 500;
    PartMeta::new(seq, n, &headers, discontinuity, &[0x47; 188], stored)
}

fn segment(seq: u64, discontinuity: bool) -> SegmentMeta {
    let parts: Vec<PartMeta> = (0..4).map(|n| part(seq, n, discontinuity)).collect();
    SegmentMeta::from_parts(seq, &parts, discontinuity, parts[3].stored_ms)
}

fn view(state: State) -> LlView {
    LlView {
        target_s: 2,
        part_target_ms: 500,
        kind: PlaylistKind::Sliding,
        first_seq: 3,
        discontinuity_sequence: 1,
        skipped: 0,
        pieces: (3..7).map(|seq| Piece::Segment(segment(seq, seq == 5))).collect(),
        open: Some(OpenSegment { seq: 7, parts: vec![part(7, 0, false), part(7, 1, false)] }),
        state,
    }
}

#[test]
fn live_ll_playlist_golden_passes_the_ll_rules() {
    let text = render_ll(STREAM, &view(State::Live));
    assert_golden("ll_live_sliding_window", &text);
    let p = ll_check::check(&text);
    assert_eq!(p.seqs(), vec![3, 4, 5, 6]);
    // Target 2 s makes the part window 6 s; with 1 s of open parts, segment 6 starts 3 s and 5
    // starts 5 s before the end (they list parts), 4 starts 7 s before (it does not).
    let with_parts: Vec<u64> = p.segments.iter().filter(|s| !s.parts.is_empty()).map(|s| s.seq).collect();
    assert_eq!(with_parts, vec![5, 6]);
    assert!(p.segments[2].discontinuity);
    assert_eq!(p.hint, Some((7, 2)));
    assert_eq!((p.part_hold_back_ms, p.can_skip_until_ms), (Some(1500), Some(12_000)));
}

#[test]
fn ended_ll_playlist_drops_parts_and_hint_and_keeps_the_head_golden() {
    let live = render_ll(STREAM, &view(State::Live));
    let text = render_ll(STREAM, &view(State::Ended));
    assert_golden("ll_ended_sliding_window", &text);
    let p = ll_check::check(&text);
    assert!(p.ended && p.open_parts.is_empty() && p.hint.is_none());
    let head_of = |t: &str| t.lines().take_while(|l| !l.starts_with("#EXT-X-PROGRAM-DATE-TIME")).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(head_of(&text), head_of(&live), "ending changes no head line");
    // Without the LL lines, the live playlist's segments are the ended one's.
    let plain: String = live
        .lines()
        .filter(|l| !l.starts_with("#EXT-X-PART:") && !l.starts_with("#EXT-X-PRELOAD-HINT"))
        .map(|l| format!("{l}\n"))
        .collect();
    let open_tail = "#EXT-X-PROGRAM-DATE-TIME:2026-11-25T13:00:14.000Z\n";
    assert_eq!(format!("{}#EXT-X-ENDLIST\n", plain.strip_suffix(open_tail).unwrap()), text);
}

#[test]
fn a_delta_update_writes_skip_after_the_head_and_lists_the_rest() {
    let mut v = view(State::Live);
    v.pieces.drain(..2);
    v.skipped = 2;
    let text = render_ll(STREAM, &v);
    let p = ll_check::check(&text);
    assert_eq!((p.media_sequence, p.skipped, p.seqs()), (3, 2, vec![5, 6]));
    assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n#EXT-X-SKIP:SKIPPED-SEGMENTS=2\n"), "{text}");
}
