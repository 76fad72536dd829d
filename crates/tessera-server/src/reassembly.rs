//! RTP packets of one video stream back into whole encoded frames.
//!
//! A small jitter buffer instead of `rtc`'s `SampleBuilder` (which preallocates ~12 MB per
//! stream): packets are kept by 64-bit sequence number until a frame is complete (its
//! packets contiguous from a partition head to the marker), then depacketized in order. A
//! hole that the NACK responder did not fill within `max_wait_packets`, or within
//! [`MAX_HOLE_WAIT`], drops its frame, and frames are then refused until the next keyframe
//! (the caller sends PLI). The time limit matters for a camera that sends a packet or two a
//! frame: after an outage (a network change, an ICE restart) its hole of a few dozen packets
//! would otherwise wait seconds for 64 more packets before anyone asked for a keyframe.
//!
//! Bad input is counted, never fatal: an empty payload (padding, or a packet the caller
//! refused) only uses up its sequence number; a payload the depacketizer refuses is
//! `malformed`; a frame over [`MAX_FRAME_BYTES`] is `too_large`; a sequence number far from
//! the stream's (a sender that restarted its numbering, or a stray packet) starts the
//! stream afresh (`resyncs`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;

/// Larger than any frame a camera or screen share sends (a 4K keyframe is about 1 MB).
pub const MAX_FRAME_BYTES: usize = 2 << 20;
/// Packets held at most; a frame of more is dropped.
const MAX_BUFFERED: usize = 2048;
/// A packet this far from the stream's sequence numbers is not late or early but from a
/// restarted (or bogus) numbering. Above `MAX_BUFFERED`, which a frame may legitimately span.
/// (Under SRTP only a jump forward gets here: replay protection drops packets more than 64
/// behind the highest seen.)
const RESYNC_DISTANCE: u64 = 4096;
/// How long a hole may wait for retransmissions: several round trips plus the queue of a
/// congested 300 kbit/s uplink (libwebrtc waits up to 3 s for a decodable frame).
pub const MAX_HOLE_WAIT: Duration = Duration::from_millis(1000);

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
    /// Empty: a packet with nothing for the decoder (padding, or one the caller refused).
    payload: Bytes,
}

/// What happened to a frame; the caller counts these.
#[derive(Debug, PartialEq)]
pub enum Event {
    Frame(Vec<u8>),
    /// Packets were lost for good; frames are refused until a keyframe: send PLI.
    Lost,
}

pub struct Reassembler<D: Depacketizer + Clone> {
    /// Cloned fresh for every frame: H.264's keeps FU-A fragments between calls, which
    /// must not leak from a broken frame into the next.
    depacketizer: D,
    is_keyframe: fn(&[u8]) -> bool,
    seq: SeqExtender,
    packets: BTreeMap<u64, Buffered>,
    /// The first sequence number not yet emitted or dropped.
    next: Option<u64>,
    max_wait_packets: u64,
    /// The first missing sequence number with packets after it, and when it was first seen.
    hole: Option<(u64, Instant)>,
    waiting_for_keyframe: bool,
    pub duplicates: u64,
    pub late: u64,
    /// Payloads the depacketizer refused.
    pub malformed: u64,
    /// Frames over `MAX_FRAME_BYTES`, dropped.
    pub too_large: u64,
    /// Times the stream started afresh after a jump in sequence numbers.
    pub resyncs: u64,
}

impl<D: Depacketizer + Clone> Reassembler<D> {
    pub fn new(depacketizer: D, is_keyframe: fn(&[u8]) -> bool, max_wait_packets: u64) -> Self {
        Reassembler {
            depacketizer,
            is_keyframe,
            seq: SeqExtender::default(),
            packets: BTreeMap::new(),
            next: None,
            max_wait_packets,
            hole: None,
            waiting_for_keyframe: true,
            duplicates: 0,
            late: 0,
            malformed: 0,
            too_large: 0,
            resyncs: 0,
        }
    }

    /// Forgets the stream (keeping the counters): the next packet starts a new one, and
    /// frames are refused until a keyframe.
    pub fn restart(&mut self) {
        self.seq = SeqExtender::default();
        self.packets.clear();
        self.next = None;
        self.hole = None;
        self.waiting_for_keyframe = true;
    }

    /// Adds one packet; returns whatever frames it completes, in order. An empty `payload`
    /// takes up its sequence number and nothing else.
    #[cfg(test)]
    pub fn push(&mut self, seq: u16, timestamp: u32, marker: bool, payload: Bytes) -> Vec<Event> {
        self.push_at(Instant::now(), seq, timestamp, marker, payload)
    }

    /// [`Reassembler::push`] at `now` (how long a hole has waited).
    pub fn push_at(
        &mut self,
        now: Instant,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: Bytes,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        let mut ext = self.seq.extend(seq);
        if let Some(next) = self.next {
            if ext.abs_diff(next) > RESYNC_DISTANCE {
                self.resyncs += 1;
                if !self.waiting_for_keyframe {
                    out.push(Event::Lost);
                }
                self.restart();
                ext = self.seq.extend(seq);
            }
        }
        let next = *self.next.get_or_insert(ext);
        if ext < next {
            self.late += 1;
            return out;
        }
        if self.packets.contains_key(&ext) {
            self.duplicates += 1;
            return out;
        }
        self.packets.insert(
            ext,
            Buffered {
                timestamp,
                marker,
                payload,
            },
        );
        self.drain(now, &mut out);
        out
    }

    fn drain(&mut self, now: Instant, out: &mut Vec<Event>) {
        loop {
            let Some(next) = self.next else { return };
            if self
                .packets
                .get(&next)
                .is_some_and(|p| p.payload.is_empty())
            {
                self.packets.remove(&next);
                self.next = Some(next + 1);
                continue;
            }
            match self.complete_frame(next) {
                Some(end) => self.emit(next, end, out),
                None if self.stale(next, now) => {
                    // A hole the NACKs did not fill, or a frame too long to hold.
                    self.hole = None;
                    self.skip_broken(out);
                }
                None => return,
            }
        }
    }

    /// Whether the frame at `next` will never complete: a hole older than
    /// `max_wait_packets` or [`MAX_HOLE_WAIT`], or more packets than can be held. A frame
    /// still arriving in order is not stale, however many packets it has.
    fn stale(&mut self, next: u64, now: Instant) -> bool {
        if self.packets.len() > MAX_BUFFERED {
            return true;
        }
        let Some(newest) = self.packets.keys().next_back().copied() else {
            return false;
        };
        let mut hole = next;
        for s in self.packets.range(next..).map(|(s, _)| *s) {
            if s != hole {
                break;
            }
            hole += 1;
        }
        if hole >= newest {
            self.hole = None;
            return false;
        }
        let since = match self.hole {
            Some((h, since)) if h == hole => since,
            _ => {
                self.hole = Some((hole, now));
                now
            }
        };
        newest - hole > self.max_wait_packets
            || now.saturating_duration_since(since) >= MAX_HOLE_WAIT
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
            if n.timestamp != first.timestamp || n.payload.is_empty() {
                // The marker was lost but the next frame (or a packet with nothing for the
                // decoder) came: the frame ends here.
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
        let mut depacketizer = self.depacketizer.clone();
        let mut frame = Vec::new();
        for p in rest.into_values() {
            match depacketizer.depacketize(&p.payload) {
                Ok(b) => frame.extend_from_slice(&b),
                Err(_) => {
                    self.malformed += 1;
                    self.mark_lost(out);
                    return;
                }
            }
        }
        if frame.len() > MAX_FRAME_BYTES {
            self.too_large += 1;
            self.mark_lost(out);
            return;
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

/// H.264 depacketization that refuses a malformed STAP-A instead of panicking on it
/// (`rtc` 0.21.1 indexes past the end of one whose last NAL unit lacks its length).
#[derive(Clone, Debug, Default)]
pub struct SafeH264(H264Packet);

impl Depacketizer for SafeH264 {
    fn depacketize(&mut self, b: &Bytes) -> rtc::shared::error::Result<Bytes> {
        if !stap_a_well_formed(b) {
            return Err(rtc::shared::error::Error::ErrShortPacket);
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

/// True unless `payload` is a STAP-A (NAL type 24) whose length fields overrun it.
fn stap_a_well_formed(payload: &[u8]) -> bool {
    if payload.first().is_none_or(|b| b & 0x1f != 24) {
        return true;
    }
    let mut at = 1;
    while at < payload.len() {
        let Some(len) = payload.get(at..at + 2) else {
            return false;
        };
        at += 2 + u16::from_be_bytes([len[0], len[1]]) as usize;
    }
    at == payload.len()
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
    fn a_hole_is_given_up_after_a_time_limit_on_a_slow_stream() {
        // One packet a frame at 15 fps after an outage: 20 packets behind a hole are well
        // under max_wait_packets, so only the time limit can call the loss (and get a PLI).
        let mut r = new();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(
            frames(r.push_at(at(0), 1, 0, true, vp8(true, &[0x10, 0, 0]))).len(),
            1
        );
        // 2..=6 were lost in the outage; the stream comes back at 7, every 66 ms.
        let mut lost_at = None;
        for i in 0..30u16 {
            let now = at(1000 + i as u64 * 66);
            let events = r.push_at(
                now,
                7 + i,
                3000 * (i as u32 + 1),
                true,
                vp8(true, &[0x11, 0, 0]),
            );
            if lost_at.is_none() && events.contains(&Event::Lost) {
                lost_at = Some(now - at(1000));
            }
        }
        let lost_at = lost_at.expect("the hole was never given up");
        assert!(
            lost_at >= MAX_HOLE_WAIT && lost_at < MAX_HOLE_WAIT + Duration::from_millis(100),
            "given up {lost_at:?} after the stream came back"
        );
        // Retransmissions filling a hole in time still complete the frame.
        let mut r = new();
        r.push_at(at(0), 1, 0, true, vp8(true, &[0x10, 0, 0]));
        assert!(r
            .push_at(at(10), 3, 3000, true, vp8(false, &[6, 6, 6]))
            .is_empty());
        let got = r.push_at(at(300), 2, 3000, false, vp8(true, &[0x11, 5, 5]));
        assert_eq!(frames(got), vec![vec![0x11, 5, 5, 6, 6, 6]]);
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

    /// One single-packet frame per call: (seq, timestamp, keyframe).
    fn feed(r: &mut Reassembler<Vp8Packet>, packets: &[(u16, u32, bool)]) -> Vec<Event> {
        packets
            .iter()
            .flat_map(|&(seq, ts, key)| {
                r.push(
                    seq,
                    ts,
                    true,
                    vp8(true, &[if key { 0x10 } else { 0x11 }, 0, 0]),
                )
            })
            .collect()
    }

    #[test]
    fn a_keyframe_of_many_packets_is_not_a_stale_hole() {
        let mut r = new();
        let mut got = Vec::new();
        for i in 0..200u16 {
            let body = if i == 0 { [0x10, 1, 1] } else { [1, 1, 1] };
            got.extend(r.push(1000 + i, 0, i == 199, vp8(i == 0, &body)));
        }
        assert_eq!(frames(got).first().map(Vec::len), Some(600));
    }

    #[test]
    fn empty_payloads_only_use_up_their_sequence_number() {
        let mut r = new();
        let mut events = feed(&mut r, &[(1, 0, true)]);
        events.extend(r.push(2, 0, false, Bytes::new()));
        events.extend(r.push(3, 0, false, Bytes::new()));
        events.extend(feed(&mut r, &[(4, 3000, false)]));
        assert_eq!(frames(events).len(), 2, "no loss, no refused delta frame");
    }

    #[test]
    fn malformed_and_oversized_frames_are_counted_and_dropped() {
        let mut r = new();
        let mut events = feed(&mut r, &[(1, 0, true)]);
        // Too short for a VP8 payload descriptor.
        events.extend(r.push(2, 3000, true, Bytes::from_static(&[0x10, 0])));
        assert_eq!(r.malformed, 1);
        assert!(events.contains(&Event::Lost));
        // Real-sized packets, in order: too large, not a hole.
        let big = MAX_FRAME_BYTES / 1400 + 1;
        for i in 0..big {
            events.extend(r.push(3 + i as u16, 6000, i + 1 == big, vp8(i == 0, &[0x10; 1400])));
        }
        assert_eq!(r.too_large, 1);
        events.extend(feed(&mut r, &[(3 + big as u16, 9000, true)]));
        assert_eq!(frames(events).len(), 2, "the first and the last keyframe");
    }

    #[test]
    fn sequence_jumps_restart_the_stream_at_the_next_keyframe() {
        // (first seq after the jump, resyncs expected)
        let check = |jump_to: u16, resyncs: u64| {
            let mut r = new();
            let mut events = feed(&mut r, &[(1000, 0, true), (1001, 3000, false)]);
            let before = frames(std::mem::take(&mut events)).len();
            assert_eq!(before, 2);
            // Delta frames after the jump are refused; a keyframe resumes the picture.
            let mut seq = jump_to;
            for i in 0..40u32 {
                events.extend(feed(&mut r, &[(seq, 6000 + i * 3000, i == 39)]));
                seq = seq.wrapping_add(1);
            }
            events.extend(feed(&mut r, &[(seq, 200_000, false)]));
            assert_eq!(r.resyncs, resyncs, "jump to {jump_to}");
            assert_eq!(
                events.iter().filter(|e| **e == Event::Lost).count(),
                1,
                "jump to {jump_to}: one keyframe request"
            );
            assert_eq!(
                frames(events).len(),
                2,
                "jump to {jump_to}: keyframe, delta"
            );
        };
        check(30_000, 1); // far ahead
        check(1002 + 3000, 0); // ahead, within reach: a hole, skipped
        check(60_000, 1); // far behind (across the wrap)
    }

    #[test]
    fn timestamp_jumps_do_not_matter() {
        let mut r = new();
        let events = feed(
            &mut r,
            &[
                (1, 0, true),
                (2, 3000, false),
                (3, 3_000_000_000, false),
                (4, 17, false),
            ],
        );
        assert_eq!(frames(events).len(), 4);
    }

    #[test]
    fn a_malformed_stap_a_is_refused_not_a_panic() {
        let mut r = Reassembler::new(SafeH264::default(), h264_is_keyframe, 20);
        // STAP-A: one NAL unit (SPS), then a length field cut short.
        let events = r.push(1, 0, true, Bytes::from_static(&[24, 0, 2, 0x67, 1, 0]));
        assert!(frames(events).is_empty());
        assert_eq!(r.malformed, 1);
        assert!(stap_a_well_formed(&[24, 0, 2, 0x67, 1, 0, 1, 0x68]));
        assert!(!stap_a_well_formed(&[24, 0, 9, 0x67]));
    }

    #[test]
    fn keyframe_detection() {
        assert!(vp8_is_keyframe(&[0x10]));
        assert!(!vp8_is_keyframe(&[0x11]));
        assert!(h264_is_keyframe(&[0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x65]));
        assert!(!h264_is_keyframe(&[0, 0, 0, 1, 0x41, 1]));
    }
}
