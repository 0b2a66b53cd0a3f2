//! MPEG-TS continuity counters across separately muxed pieces.
//!
//! Every ffmpeg.wasm run starts each PID's 4-bit continuity counter afresh, so the parts of a
//! segment, concatenated as the server serves the segment, would show a counter jump at every
//! part boundary (a decoder reports lost packets). [`Continuity`] renumbers each PID's counters
//! across everything it has seen, so the broadcast's parts concatenate into one continuous
//! transport stream. It runs once per part before the part is queued, so a retry sends exactly
//! the same bytes.

use std::collections::HashMap;

/// TS packet size.
pub const PACKET: usize = 188;
const SYNC: u8 = 0x47;
const NULL_PID: u16 = 0x1FFF;

/// The next continuity counter of every PID seen so far.
#[derive(Debug, Default)]
pub struct Continuity {
    next: HashMap<u16, u8>,
}

impl Continuity {
    /// Renumbers the counters of `ts` (whole 188-byte packets) to follow what came before.
    /// Packets with a payload count up; packets with only an adaptation field repeat the last
    /// value, as ISO/IEC 13818-1 says. Bytes that are not TS packets are left alone.
    pub fn rewrite(&mut self, ts: &mut [u8]) {
        for p in ts.chunks_exact_mut(PACKET) {
            if p[0] != SYNC {
                continue;
            }
            let pid = u16::from(p[1] & 0x1F) << 8 | u16::from(p[2]);
            if pid == NULL_PID {
                continue;
            }
            let has_payload = p[3] & 0x10 != 0;
            let next = self.next.entry(pid).or_insert(0);
            let cc = if has_payload {
                let cc = *next;
                *next = (cc + 1) & 0x0F;
                cc
            } else {
                next.wrapping_sub(1) & 0x0F
            };
            p[3] = (p[3] & 0xF0) | cc;
        }
    }
}

/// The program tables (PAT, PMT, SDT) a muxer writes before the first media packet of `ts`: a
/// valid transport stream with no media, for a part of a capture stall that holds none.
pub fn tables(ts: &[u8]) -> Vec<u8> {
    ts.chunks_exact(PACKET)
        .take_while(|p| {
            let pusi = p[1] & 0x40 != 0;
            let payload = match (p[3] >> 4) & 3 {
                1 => Some(4),
                3 => Some(5 + usize::from(p[4])),
                _ => None,
            };
            let pes = pusi && payload.is_some_and(|at| p.get(at..at + 3) == Some(&[0, 0, 1]));
            p[0] == SYNC && !pes && (p[3] >> 4) & 3 != 2
        })
        .flatten()
        .copied()
        .collect()
}

/// The continuity counter errors a decoder would see in `ts`: (packet index, pid).
pub fn continuity_errors(ts: &[u8]) -> Vec<(usize, u16)> {
    let mut last: HashMap<u16, u8> = HashMap::new();
    let mut errors = Vec::new();
    for (i, p) in ts.chunks_exact(PACKET).enumerate() {
        let pid = u16::from(p[1] & 0x1F) << 8 | u16::from(p[2]);
        if p[0] != SYNC || pid == NULL_PID {
            continue;
        }
        let cc = p[3] & 0x0F;
        let has_payload = p[3] & 0x10 != 0;
        if let Some(&prev) = last.get(&pid) {
            let expect = if has_payload { (prev + 1) & 0x0F } else { prev };
            if cc != expect {
                errors.push((i, pid));
            }
        }
        last.insert(pid, cc);
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A piece as one ffmpeg run writes it: PAT, PMT, then video and audio, counters from 0.
    fn piece(video: usize, audio: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut cc: HashMap<u16, u8> = HashMap::new();
        let mut packet = |pid: u16, payload: bool, fill: u8| {
            let c = cc.entry(pid).or_insert(0);
            let mut p = vec![fill; PACKET];
            p[0] = SYNC;
            p[1] = (pid >> 8) as u8 | 0x40;
            p[2] = pid as u8;
            if payload {
                p[3] = 0x10 | *c;
                *c = (*c + 1) & 0x0F;
            } else {
                p[3] = 0x20 | (c.wrapping_sub(1) & 0x0F); // repeats the last counter
            }
            out.extend(p);
        };
        packet(0, true, 1);
        packet(0x1000, true, 2);
        for i in 0..video.max(audio) {
            if i < video {
                packet(0x100, true, 3);
            }
            if i == 0 {
                packet(0x100, false, 4); // adaptation field only (a PCR)
            }
            if i < audio {
                packet(0x101, true, 5);
            }
        }
        out
    }

    #[test]
    fn concatenated_pieces_count_on_across_every_boundary() {
        let pieces = [piece(20, 7), piece(3, 0), piece(17, 40), piece(1, 1)];
        let naive: Vec<u8> = pieces.concat();
        assert!(
            !continuity_errors(&naive).is_empty(),
            "ffmpeg's pieces restart their counters"
        );
        let mut cc = Continuity::default();
        let mut out = Vec::new();
        for p in &pieces {
            let mut p = p.clone();
            cc.rewrite(&mut p);
            out.extend(p);
        }
        assert_eq!(continuity_errors(&out), vec![]);
        // Only the counter nibble changed.
        for (a, b) in naive.chunks(PACKET).zip(out.chunks(PACKET)) {
            assert_eq!(
                (a[..3].to_vec(), a[3] & 0xF0, a[4..].to_vec()),
                (b[..3].to_vec(), b[3] & 0xF0, b[4..].to_vec())
            );
        }
    }

    #[test]
    fn a_piece_rewritten_again_from_the_same_state_is_identical() {
        let p = piece(30, 30);
        let (mut a, mut b) = (p.clone(), p);
        Continuity::default().rewrite(&mut a);
        Continuity::default().rewrite(&mut b);
        assert_eq!(a, b, "deterministic: a retry sends the same bytes");
    }

    #[test]
    fn the_tables_are_the_packets_before_the_first_pes() {
        let mut p = piece(2, 2);
        // Make the media packets start PES packets, as a muxer's do.
        for pkt in p.chunks_mut(PACKET).skip(2) {
            if pkt[3] & 0x10 != 0 {
                pkt[1] |= 0x40;
                pkt[4..7].copy_from_slice(&[0, 0, 1]);
            }
        }
        assert_eq!(tables(&p), p[..2 * PACKET].to_vec());
        assert_eq!(tables(&[]), Vec::<u8>::new());
    }

    #[test]
    fn a_single_piece_is_left_as_ffmpeg_wrote_it() {
        let p = piece(25, 9);
        let mut q = p.clone();
        Continuity::default().rewrite(&mut q);
        assert_eq!(p, q);
    }
}
