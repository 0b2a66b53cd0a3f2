//! What a broadcast encodes: the quality presets, where the camera overlay sits, and when the
//! panel should suggest a lower preset.
//!
//! Pure: the panel feeds [`Strain`] the health it polls, with the time passed in.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// A quality preset: picture size, frame rate and video bitrate, fixed for a broadcast.
///
/// All three run at 30 fps: a tab (slides, a demo, scrolling text) gains little from 60 and the
/// software H.264 encoder would pay twice. Bitrates keep about 0.08–0.1 bit per pixel per frame
/// (constrained-baseline H.264, the only profile MediaRecorder offers, on screen content):
/// 1, 2.5 and 5 Mbit/s, so even 1080p leaves headroom on a 10 Mbit/s uplink for the queue to
/// catch up after a hiccup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Quality {
    #[serde(rename = "480p")]
    P480,
    #[default]
    #[serde(rename = "720p")]
    P720,
    #[serde(rename = "1080p")]
    P1080,
}

/// [`Quality::avc_codec`] for any picture size.
pub fn avc_codec((w, h): (u32, u32)) -> &'static str {
    let macroblocks = w.div_ceil(16) * h.div_ceil(16);
    match macroblocks {
        0..=1_620 => "avc1.42E01E",
        1_621..=3_600 => "avc1.42E01F",
        3_601..=8_192 => "avc1.42E028",
        _ => "avc1.42E033",
    }
}

impl Quality {
    pub const ALL: [Quality; 3] = [Quality::P480, Quality::P720, Quality::P1080];

    /// Width and height of the encoded picture.
    pub fn size(self) -> (u32, u32) {
        match self {
            Quality::P480 => (854, 480),
            Quality::P720 => (1280, 720),
            Quality::P1080 => (1920, 1080),
        }
    }

    pub fn frame_rate(self) -> u32 {
        30
    }

    /// Video bits per second asked of the recorder.
    pub fn video_bps(self) -> u32 {
        match self {
            Quality::P480 => 1_000_000,
            Quality::P720 => 2_500_000,
            Quality::P1080 => 5_000_000,
        }
    }

    /// The WebCodecs codec string for H.264 constrained baseline at this size: the lowest level
    /// whose frame size holds the picture (3.0 up to 720×576, 3.1 up to 1280×720, 4.0 up to
    /// 2048×1024 in macroblocks; ITU-T H.264 Table A-1). An encoder may refuse a picture larger
    /// than its level allows.
    pub fn avc_codec(self) -> &'static str {
        avc_codec(self.size())
    }

    /// The name people see and `chrome.storage` keeps ("720p").
    pub fn name(self) -> &'static str {
        match self {
            Quality::P480 => "480p",
            Quality::P720 => "720p",
            Quality::P1080 => "1080p",
        }
    }

    pub fn from_name(name: &str) -> Option<Quality> {
        Quality::ALL.into_iter().find(|q| q.name() == name)
    }

    /// The next preset down, if any.
    pub fn lower(self) -> Option<Quality> {
        match self {
            Quality::P480 => None,
            Quality::P720 => Some(Quality::P480),
            Quality::P1080 => Some(Quality::P720),
        }
    }
}

/// Which corner of the tab's picture the camera covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Corner {
    TopLeft,
    TopRight,
    BottomLeft,
    #[default]
    BottomRight,
}

/// How wide the camera is, as a share of the picture's width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OverlaySize {
    Small,
    #[default]
    Medium,
    Large,
}

/// The camera composited into a corner of the tab's picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Overlay {
    pub on: bool,
    pub corner: Corner,
    pub size: OverlaySize,
}

/// A rectangle in picture pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Overlay {
    /// Where the camera goes in a `width` x `height` picture, for a camera of `cam_w` x `cam_h`:
    /// its aspect kept, a margin of 1/40 of the picture's height from the two edges, even sizes.
    pub fn rect(&self, width: u32, height: u32, cam_w: u32, cam_h: u32) -> Rect {
        let share = match self.size {
            OverlaySize::Small => 0.20,
            OverlaySize::Medium => 0.25,
            OverlaySize::Large => 1.0 / 3.0,
        };
        let w = ((width as f64 * share) as u32) & !1;
        let h = if cam_w == 0 || cam_h == 0 {
            w * 9 / 16
        } else {
            ((w as u64 * cam_h as u64 / cam_w as u64) as u32).min(height / 2)
        } & !1;
        let m = height / 40;
        let x = match self.corner {
            Corner::TopLeft | Corner::BottomLeft => m,
            Corner::TopRight | Corner::BottomRight => width.saturating_sub(w + m),
        };
        let y = match self.corner {
            Corner::TopLeft | Corner::TopRight => m,
            Corner::BottomLeft | Corner::BottomRight => height.saturating_sub(h + m),
        };
        Rect { x, y, w, h }
    }
}

/// What the panel should say about the broadcast keeping up with its preset.
#[derive(Debug, Clone, PartialEq)]
pub enum Advice {
    /// Uploads fall behind: segments waiting keep growing (or stay high).
    UploadsBehind { waiting: u64 },
    /// This computer turns a second of video into HLS in nearly a second or more.
    CannotKeepUp { remux_per_media_s: f64 },
}

impl Advice {
    /// The plain sentence for the panel, naming the lower preset to choose.
    pub fn message(&self, quality: Quality) -> String {
        let lower = match quality.lower() {
            Some(l) => format!(" — choose {} in Options and start again", l.name()),
            None => " — close other busy tabs or apps".to_string(),
        };
        match self {
            Advice::UploadsBehind { waiting } => format!(
                "Uploads are falling behind: {waiting} segments are waiting, so viewers fall behind too. The connection cannot carry {} ({:.1} Mbit/s){lower}.",
                quality.name(),
                quality.video_bps() as f64 / 1e6
            ),
            Advice::CannotKeepUp { remux_per_media_s } => format!(
                "This computer cannot keep up with {}: turning each second of video into HLS takes {:.1} s{lower}.",
                quality.name(),
                remux_per_media_s
            ),
        }
    }
}

/// One reading of the broadcast's health, as the panel polls it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub at_ms: f64,
    pub waiting: u64,
    pub remux_ms_total: f64,
    pub media_ms_total: u64,
}

/// Readings over the last [`Strain::WINDOW_MS`], and the advice they add up to.
#[derive(Debug, Default)]
pub struct Strain {
    readings: VecDeque<Reading>,
}

impl Strain {
    /// How long uploads must stay behind before the panel says so.
    pub const WINDOW_MS: f64 = 6_000.0;
    /// Segments waiting that count as behind (one is normal: it is being sent).
    pub const BEHIND: u64 = 2;
    /// Remux time per media second above which the computer cannot keep up.
    pub const TOO_SLOW: f64 = 0.85;

    pub fn push(&mut self, r: Reading) {
        if self.readings.back().is_some_and(|b| r.at_ms < b.at_ms) {
            self.readings.clear();
        }
        self.readings.push_back(r);
        while self
            .readings
            .get(1)
            .is_some_and(|second| r.at_ms - second.at_ms >= Self::WINDOW_MS)
        {
            self.readings.pop_front();
        }
    }

    /// Forgets everything (a new broadcast, or a server outage that explains the backlog).
    pub fn reset(&mut self) {
        self.readings.clear();
    }

    pub fn advice(&self) -> Option<Advice> {
        let (first, last) = (self.readings.front()?, self.readings.back()?);
        if last.at_ms - first.at_ms < Self::WINDOW_MS {
            return None;
        }
        let media = last.media_ms_total.saturating_sub(first.media_ms_total);
        if media >= 4_000 {
            let per_s = (last.remux_ms_total - first.remux_ms_total) / media as f64;
            if per_s > Self::TOO_SLOW {
                return Some(Advice::CannotKeepUp {
                    remux_per_media_s: per_s,
                });
            }
        }
        let behind = self.readings.iter().all(|r| r.waiting >= Self::BEHIND);
        (behind && last.waiting >= first.waiting).then_some(Advice::UploadsBehind {
            waiting: last.waiting,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_preset_gets_the_lowest_h264_level_that_holds_its_picture() {
        assert_eq!(Quality::P480.avc_codec(), "avc1.42E01E"); // 54 x 30 macroblocks
        assert_eq!(Quality::P720.avc_codec(), "avc1.42E01F"); // 3,600: level 3.1's limit
        assert_eq!(Quality::P1080.avc_codec(), "avc1.42E028"); // 120 x 68 = 8,160
        assert_eq!(avc_codec((720, 576)), "avc1.42E01E"); // 1,620: level 3.0's limit
        assert_eq!(avc_codec((736, 576)), "avc1.42E01F");
        assert_eq!(avc_codec((2560, 1440)), "avc1.42E033");
    }

    #[test]
    fn presets_have_even_sizes_and_rising_bitrates() {
        for q in Quality::ALL {
            let (w, h) = q.size();
            assert_eq!((w % 2, h % 2), (0, 0));
            assert_eq!(Quality::from_name(q.name()), Some(q));
            assert_eq!(serde_json::to_value(q).unwrap(), q.name());
        }
        assert_eq!(Quality::P1080.size(), (1920, 1080));
        assert!(Quality::P480.video_bps() < Quality::P720.video_bps());
        assert!(Quality::P720.video_bps() < Quality::P1080.video_bps());
        assert_eq!(Quality::default(), Quality::P720);
        assert_eq!(Quality::P480.lower(), None);
    }

    #[test]
    fn overlay_sits_in_its_corner_with_the_cameras_aspect() {
        let o = Overlay {
            on: true,
            corner: Corner::BottomRight,
            size: OverlaySize::Medium,
        };
        assert_eq!(
            o.rect(1280, 720, 640, 480),
            Rect {
                x: 1280 - 320 - 18,
                y: 720 - 240 - 18,
                w: 320,
                h: 240
            }
        );
        let tl = Overlay {
            corner: Corner::TopLeft,
            size: OverlaySize::Small,
            ..o
        }
        .rect(1920, 1080, 1280, 720);
        assert_eq!(
            tl,
            Rect {
                x: 27,
                y: 27,
                w: 384,
                h: 216
            }
        );
        let tall = o.rect(854, 480, 100, 1000);
        assert!(tall.h <= 240 && tall.y + tall.h <= 480);
    }

    fn reading(s: f64, waiting: u64, remux_s: f64, media_s: u64) -> Reading {
        Reading {
            at_ms: s * 1000.0,
            waiting,
            remux_ms_total: remux_s * 1000.0,
            media_ms_total: media_s * 1000,
        }
    }

    #[test]
    fn growing_backlog_suggests_a_lower_preset() {
        let mut s = Strain::default();
        for t in 0..=6 {
            s.push(reading(t as f64, 2 + t / 2, t as f64 * 0.3, t));
        }
        let a = s.advice().unwrap();
        assert_eq!(a, Advice::UploadsBehind { waiting: 5 });
        let m = a.message(Quality::P1080);
        assert!(
            m.contains("falling behind") && m.contains("choose 720p in Options"),
            "{m}"
        );
    }

    #[test]
    fn a_short_or_shrinking_backlog_is_fine() {
        let mut s = Strain::default();
        for t in 0..=3 {
            s.push(reading(t as f64, 4, 0.0, t));
        }
        assert_eq!(s.advice(), None, "not for long enough");
        let mut s = Strain::default();
        for t in 0..=8 {
            s.push(reading(t as f64, 9 - t, 0.0, t));
        }
        assert_eq!(s.advice(), None, "catching up");
        let mut s = Strain::default();
        for t in 0..=8 {
            s.push(reading(t as f64, (t % 2) as u64, 0.0, t));
        }
        assert_eq!(s.advice(), None, "one at a time is normal");
    }

    #[test]
    fn slow_remux_says_the_computer_cannot_keep_up() {
        let mut s = Strain::default();
        for t in 0..=8 {
            s.push(reading(t as f64, 0, t as f64 * 0.95, t));
        }
        match s.advice() {
            Some(Advice::CannotKeepUp { remux_per_media_s }) => {
                assert!((remux_per_media_s - 0.95).abs() < 1e-9)
            }
            a => panic!("{a:?}"),
        }
        assert!(s
            .advice()
            .unwrap()
            .message(Quality::P720)
            .contains("cannot keep up with 720p"));
    }
}
