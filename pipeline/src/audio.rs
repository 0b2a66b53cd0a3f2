//! Audio packet timing: Opus packet durations, and a clock that puts Chrome's audio packets
//! back on a continuous timeline.
//!
//! MediaRecorder's Opus packets carry continuous audio (60 ms each), but their WebM timestamps
//! wobble by up to about 10 ms around the true position (measured: steps of 52, 59 and 69 ms).
//! Every segment's remux decodes a different run of packets, so each would place the audio a
//! few ms differently, and where two segments meet the same sound would be put at two
//! positions: a dip or a click at every boundary. [`AudioClock`] gives each packet the position
//! that follows from the one before it (position + duration), the same for every remux because
//! it is computed once, in stream order, and it re-anchors on the packet's own timestamp only
//! when that is far away (a real hole in the capture, or drift).

/// Sample rate of the timeline the clock counts in (Opus always decodes at 48 kHz).
const RATE_PER_MS: i64 = 48;

/// How far, in ms, a packet's own timestamp may be from the continuous position before the
/// clock follows the timestamp instead.
pub const REANCHOR_MS: i64 = 30;

/// Duration of an Opus packet in 48 kHz samples, from its TOC byte (RFC 6716, section 3.1).
pub fn opus_samples(packet: &[u8]) -> Option<u64> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let frame: u64 = match config {
        0..=11 => [480, 960, 1920, 2880][(config & 3) as usize],
        12..=15 => [480, 960][(config & 1) as usize],
        _ => [120, 240, 480, 960][(config & 3) as usize],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => (*packet.get(1)? & 0x3F) as u64,
    };
    (frames > 0).then_some(frame * frames)
}

/// Continuous positions for audio packets, in whole milliseconds.
#[derive(Debug, Default)]
pub struct AudioClock {
    /// Where the next packet starts, in samples.
    next: Option<i64>,
}

impl AudioClock {
    /// The position of a packet stamped `ts_ms` that lasts `samples`.
    pub fn place(&mut self, ts_ms: i64, samples: u64) -> i64 {
        let own = ts_ms * RATE_PER_MS;
        let at = match self.next {
            Some(next) if (next - own).abs() <= REANCHOR_MS * RATE_PER_MS => next,
            _ => own,
        };
        self.next = Some(at + samples as i64);
        (at + RATE_PER_MS / 2).div_euclid(RATE_PER_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_durations_follow_the_toc() {
        assert_eq!(opus_samples(&[3 << 3]), Some(2880), "SILK 60 ms, one frame");
        assert_eq!(
            opus_samples(&[(19 << 3) | 3, 3]),
            Some(2880),
            "CELT 20 ms, three frames"
        );
        assert_eq!(
            opus_samples(&[(31 << 3) | 1]),
            Some(1920),
            "CELT 20 ms, two frames"
        );
        assert_eq!(
            opus_samples(&[(16 << 3) | 2]),
            Some(240),
            "CELT 2.5 ms, two frames"
        );
        assert_eq!(opus_samples(&[13 << 3]), Some(960), "hybrid 20 ms");
        assert_eq!(opus_samples(&[]), None);
        assert_eq!(
            opus_samples(&[(19 << 3) | 3]),
            None,
            "frame count byte missing"
        );
        assert_eq!(opus_samples(&[(19 << 3) | 3, 0]), None, "zero frames");
    }

    #[test]
    fn wobbling_timestamps_become_continuous() {
        // Chrome's stamps for 60 ms packets (measured pattern).
        let stamps = [34, 93, 162, 214, 273, 342, 394, 453, 522];
        let mut clock = AudioClock::default();
        let placed: Vec<i64> = stamps.iter().map(|&t| clock.place(t, 2880)).collect();
        assert_eq!(placed, vec![34, 94, 154, 214, 274, 334, 394, 454, 514]);
    }

    #[test]
    fn a_real_hole_reanchors_on_the_packets_own_time() {
        let mut clock = AudioClock::default();
        assert_eq!(clock.place(1000, 2880), 1000);
        assert_eq!(
            clock.place(1060 + REANCHOR_MS + 1, 2880),
            1060 + REANCHOR_MS + 1
        );
        assert_eq!(
            clock.place(1160, 2880),
            1151,
            "continues from the new anchor"
        );
    }
}
