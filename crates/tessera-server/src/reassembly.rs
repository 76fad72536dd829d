//! RTP packets of one video stream back into whole encoded frames.
//!
//! A small jitter buffer instead of `rtc`'s `SampleBuilder` (which preallocates ~12 MB per
//! stream): packets are kept by 64-bit sequence number until a frame is complete (its
//! packets contiguous from a partition head to the marker), then depacketized in order. A
//! frame with a hole that the NACK responder did not fill within `max_wait_packets` is
//! dropped, and frames are then refused until the next keyframe (the caller sends PLI).

use std::collections::BTreeMap;

use bytes::Bytes;
use rtc::rtp::codec::h264::{H264Packet, STAPA_NALU_TYPE};
use rtc::rtp::packetizer::Depacketizer;
use rtc::shared::error::{Error, Result};

/// Extends 16-bit RTP sequence numbers to 64 bits, taking the nearest value to the last.
#[derive(Default, Debug)]
pub struct SeqExtender {
    last: Option<u64>,
}

impl SeqExtender {
    pub fn extend(&mut self, seq: u16) -> u64 {
        let Some(last) = self.last else {
            // Start high enough that early reordering cannot go below zero.
            let v = (1u64 << 16) + seq as u64;
            self.last = Some(v);
            return v;
        };
        let base = last & !0xffff;
        let candidates = [base.wrapping_sub(1 << 16), base, base + (1 << 16)];
        let v = candidates
            .into_iter()
            .map(|b| b + seq as u64)
            .min_by_key(|v| v.abs_diff(last))
            .unwrap_or(base + seq as u64);
        if v > last {
            self.last = Some(v);
        }
        v
    }
}

struct Buffered {
    timestamp: u32,
    marker: bool,
    payload: Bytes,
}

/// What happened to a frame; the caller counts these.
#[derive(Debug, PartialEq)]
pub enum Event {
    Frame(Vec<u8>),
    /// Packets were lost for good; frames are refused until a keyframe: send PLI.
    Lost,
}

pub struct Reassembler<D: Depacketizer> {
    depacketizer: D,
    is_keyframe: fn(&[u8]) -> bool,
    seq: SeqExtender,
    packets: BTreeMap<u64, Buffered>,
    /// The first sequence number not yet emitted or dropped.
    next: Option<u64>,
    max_wait_packets: u64,
    waiting_for_keyframe: bool,
    pub duplicates: u64,
    pub late: u64,
}

const MAX_BUFFERED: usize = 2048;

/// Packets the live server lets arrive past a hole before it gives the hole up: time for
/// a NACK to fill it.
pub const MAX_WAIT_PACKETS: u64 = 64;

impl<D: Depacketizer> Reassembler<D> {
    pub fn new(depacketizer: D, is_keyframe: fn(&[u8]) -> bool, max_wait_packets: u64) -> Self {
        Reassembler {
            depacketizer,
            is_keyframe,
            seq: SeqExtender::default(),
            packets: BTreeMap::new(),
            next: None,
            max_wait_packets,
            waiting_for_keyframe: true,
            duplicates: 0,
            late: 0,
        }
    }

    /// Adds one packet; returns whatever frames it completes, in order.
    pub fn push(&mut self, seq: u16, timestamp: u32, marker: bool, payload: Bytes) -> Vec<Event> {
        let ext = self.seq.extend(seq);
        let next = *self.next.get_or_insert(ext);
        if ext < next {
            self.late += 1;
            return Vec::new();
        }
        if self.packets.contains_key(&ext) {
            self.duplicates += 1;
            return Vec::new();
        }
        self.packets.insert(
            ext,
            Buffered {
                timestamp,
                marker,
                payload,
            },
        );
        let mut out = Vec::new();
        self.drain(&mut out);
        out
    }

    fn drain(&mut self, out: &mut Vec<Event>) {
        loop {
            let Some(next) = self.next else { return };
            match self.complete_frame(next) {
                Some(end) => self.emit(next, end, out),
                None => {
                    let newest = self.packets.keys().next_back().copied().unwrap_or(next);
                    let stale = newest.saturating_sub(next) > self.max_wait_packets
                        || self.packets.len() > MAX_BUFFERED;
                    if !stale {
                        return;
                    }
                    // A hole the NACKs did not fill, or a frame whose end never came.
                    self.skip_broken(out);
                }
            }
        }
    }

    /// The last sequence number of a complete frame starting at `start`, if all are here.
    fn complete_frame(&self, start: u64) -> Option<u64> {
        let first = self.packets.get(&start)?;
        let mut s = start;
        let mut p = first;
        loop {
            if p.marker {
                return Some(s);
            }
            let n = self.packets.get(&(s + 1))?;
            if n.timestamp != first.timestamp {
                // The marker was lost but the next frame began: the frame ends here.
                return Some(s);
            }
            s += 1;
            p = n;
        }
    }

    /// Drops everything up to the next packet that starts a frame after a timestamp change.
    fn skip_broken(&mut self, out: &mut Vec<Event>) {
        let Some(next) = self.next else { return };
        let broken_ts = self.packets.get(&next).map(|p| p.timestamp);
        let resume = self
            .packets
            .range(next + 1..)
            .find(|(_, p)| {
                Some(p.timestamp) != broken_ts && self.depacketizer.is_partition_head(&p.payload)
            })
            .map(|(s, _)| *s);
        let Some(resume) = resume else {
            // Nothing usable yet: drop all but wait for more.
            let newest = self.packets.keys().next_back().copied().unwrap_or(next);
            self.packets.clear();
            self.next = Some(newest + 1);
            self.mark_lost(out);
            return;
        };
        self.packets = self.packets.split_off(&resume);
        self.next = Some(resume);
        self.mark_lost(out);
    }

    fn mark_lost(&mut self, out: &mut Vec<Event>) {
        if !self.waiting_for_keyframe {
            self.waiting_for_keyframe = true;
            out.push(Event::Lost);
        }
    }

    fn emit(&mut self, start: u64, end: u64, out: &mut Vec<Event>) {
        let mut rest = self.packets.split_off(&(end + 1));
        std::mem::swap(&mut rest, &mut self.packets);
        self.next = Some(end + 1);
        if !self.depacketizer.is_partition_head(&rest[&start].payload) {
            self.mark_lost(out);
            return;
        }
        let mut frame = Vec::new();
        for p in rest.into_values() {
            match self.depacketizer.depacketize(&p.payload) {
                Ok(b) => frame.extend_from_slice(&b),
                Err(_) => {
                    self.mark_lost(out);
                    return;
                }
            }
        }
        if frame.is_empty() {
            return;
        }
        if self.waiting_for_keyframe {
            if !(self.is_keyframe)(&frame) {
                return;
            }
            self.waiting_for_keyframe = false;
        }
        out.push(Event::Frame(frame));
    }
}

/// webrtc-rs 0.21's H.264 depacketizer, minus its panic: it indexes past the end of a
/// STAP-A whose last NAL unit length is cut to one byte (found by `make fuzz`), so such a
/// payload is refused here first.
#[derive(Default)]
pub struct H264Depacketizer(H264Packet);

impl Depacketizer for H264Depacketizer {
    fn depacketize(&mut self, b: &Bytes) -> Result<Bytes> {
        if stap_a_length_cut_short(b) {
            return Err(Error::ErrShortPacket);
        }
        self.0.depacketize(b)
    }

    fn is_partition_head(&self, payload: &Bytes) -> bool {
        self.0.is_partition_head(payload)
    }

    fn is_partition_tail(&self, marker: bool, payload: &Bytes) -> bool {
        self.0.is_partition_tail(marker, payload)
    }
}

/// A STAP-A (payloads of 3 bytes or more; shorter ones webrtc-rs refuses itself) whose
/// walk of 2-byte lengths ends one byte before the end.
fn stap_a_length_cut_short(p: &[u8]) -> bool {
    if p.len() < 3 || p[0] & 0x1f != STAPA_NALU_TYPE {
        return false;
    }
    let mut at = 1;
    while at < p.len() {
        let Some(&[hi, lo]) = p.get(at..at + 2) else {
            return true;
        };
        at += 2 + u16::from_be_bytes([hi, lo]) as usize;
    }
    false
}

/// VP8: bit 0 of the first byte of the frame is 0 on a keyframe.
pub fn vp8_is_keyframe(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & 1 == 0)
}

/// H.264 Annex B: the access unit has an IDR slice (NAL type 5) or an SPS (7).
pub fn h264_is_keyframe(frame: &[u8]) -> bool {
    let mut i = 0;
    while i + 3 < frame.len() {
        if frame[i] == 0 && frame[i + 1] == 0 && frame[i + 2] == 1 {
            let t = frame[i + 3] & 0x1f;
            if t == 5 || t == 7 {
                return true;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp::codec::vp8::Vp8Packet;

    /// VP8 payload descriptor with S bit (start of partition 0) or not, then `body`
    /// (at least 3 bytes: the depacketizer refuses payloads under 4).
    fn vp8(start: bool, body: &[u8]) -> Bytes {
        let mut v = vec![if start { 0x10 } else { 0x00 }];
        v.extend_from_slice(body);
        Bytes::from(v)
    }

    fn frames(events: Vec<Event>) -> Vec<Vec<u8>> {
        events
            .into_iter()
            .filter_map(|e| match e {
                Event::Frame(f) => Some(f),
                Event::Lost => None,
            })
            .collect()
    }

    fn new() -> Reassembler<Vp8Packet> {
        Reassembler::new(Vp8Packet::default(), vp8_is_keyframe, 20)
    }

    #[test]
    fn seq_extender_wraps_both_ways() {
        let mut s = SeqExtender::default();
        let a = s.extend(65534);
        assert_eq!(s.extend(65535), a + 1);
        assert_eq!(s.extend(0), a + 2);
        assert_eq!(s.extend(65535), a + 1, "late packet from before the wrap");
        assert_eq!(s.extend(1), a + 3);
    }

    #[test]
    fn in_order_and_reordered_packets_make_whole_frames() {
        let mut r = new();
        // keyframe (first byte even) in two packets, then a delta frame.
        assert!(r.push(10, 0, false, vp8(true, &[0x10, 1, 1])).is_empty());
        assert_eq!(
            frames(r.push(11, 0, true, vp8(false, &[2, 3, 3]))),
            vec![vec![0x10, 1, 1, 2, 3, 3]]
        );
        // delta frame arriving out of order
        assert!(r.push(13, 3000, true, vp8(false, &[6, 6, 6])).is_empty());
        assert_eq!(
            frames(r.push(12, 3000, false, vp8(true, &[0x11, 5, 5]))),
            vec![vec![0x11, 5, 5, 6, 6, 6]]
        );
        assert_eq!(
            r.push(12, 3000, false, vp8(true, &[0x11, 5, 5])),
            vec![],
            "late duplicate"
        );
        assert_eq!(r.late, 1);
    }

    #[test]
    fn a_hole_drops_frames_until_a_keyframe() {
        let mut r = new();
        assert_eq!(
            frames(r.push(1, 0, true, vp8(true, &[0x10, 0, 0]))).len(),
            1
        );
        // seq 2 (start of a delta frame) never arrives
        let mut events = Vec::new();
        events.extend(r.push(3, 3000, true, vp8(false, &[9, 9, 9])));
        for i in 0..25u16 {
            // delta frames, one packet each
            events.extend(r.push(
                4 + i,
                6000 + i as u32 * 3000,
                true,
                vp8(true, &[0x11, 0, 0]),
            ));
        }
        assert!(events.contains(&Event::Lost), "{events:?}");
        assert!(
            frames(events).is_empty(),
            "delta frames after a loss are refused"
        );
        let got = frames(r.push(29, 90_000, true, vp8(true, &[0x10, 7, 7])));
        assert_eq!(got, vec![vec![0x10, 7, 7]], "the keyframe resumes output");
    }

    #[test]
    fn first_frame_must_be_a_keyframe() {
        let mut r = new();
        assert!(frames(r.push(100, 0, true, vp8(true, &[0x11, 0, 0]))).is_empty());
        assert_eq!(
            frames(r.push(101, 3000, true, vp8(true, &[0x10, 0, 0]))).len(),
            1
        );
    }

    #[test]
    fn stap_a_cut_short_is_refused_not_a_panic() {
        let mut d = H264Depacketizer::default();
        // One NAL unit of 1 byte, then a lone byte where the next length should be.
        let cut = Bytes::from_static(&[0x78, 0x00, 0x01, 0x09, 0x00]);
        assert!(stap_a_length_cut_short(&cut));
        assert!(d.depacketize(&cut).is_err());
        let whole = Bytes::from_static(&[0x78, 0x00, 0x01, 0x09, 0x00, 0x01, 0x09]);
        assert!(!stap_a_length_cut_short(&whole));
        assert_eq!(
            d.depacketize(&whole).ok().as_deref(),
            Some(&[0, 0, 0, 1, 0x09, 0, 0, 0, 1, 0x09][..])
        );
        // A length past the end is webrtc-rs's own error.
        let long = Bytes::from_static(&[0x78, 0x00, 0x09, 0x09]);
        assert!(!stap_a_length_cut_short(&long));
        assert!(d.depacketize(&long).is_err());
        let mut r = Reassembler::new(H264Depacketizer::default(), h264_is_keyframe, 64);
        assert!(r.push(1, 0, true, cut).is_empty(), "dropped, not a panic");
    }

    #[test]
    fn keyframe_detection() {
        assert!(vp8_is_keyframe(&[0x10]));
        assert!(!vp8_is_keyframe(&[0x11]));
        assert!(h264_is_keyframe(&[0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x65]));
        assert!(!h264_is_keyframe(&[0, 0, 0, 1, 0x41, 1]));
    }
}
