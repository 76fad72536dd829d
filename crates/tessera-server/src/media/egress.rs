//! The composite and the mix on their way out, sans IO.
//!
//! Each composite frame is packetized once for every receiver of its codec
//! (`FrameCache`); per receiver only the RTP header differs (SSRC, sequence number, and the
//! timestamp: the engine's 90 kHz pts plus the receiver's random base). A receiver's
//! packets leave through its pacer at the pacing rate its estimator sets, so a keyframe is
//! spread over time instead of overflowing a slow link's queue; audio never waits behind
//! it. While the room probes, the pacer pads the composite with padding-only packets up to
//! the probe's rate, counting the audio already sent.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtp::header::{Header, EXTENSION_PROFILE_TWO_BYTE};
use rtc::rtp::packetizer::Payloader;
use tessera_codec::EncodedVideo;
use tessera_types::VideoCodec;

/// RTP packets we write stay under this (IP, UDP, SRTP and header extensions come on top).
pub const RTP_MTU: usize = 1200;
const RTP_HEADER: usize = 12;
/// IP, UDP and SRTP bytes on top of each RTP packet, for rates.
pub const OVERHEAD_BYTES: usize = 40;
/// Composite frames that may wait for the pacer; a receiver further behind loses a frame
/// and is held until a keyframe.
pub const VIDEO_BACKLOG: usize = 8;
/// A probe's padding is topped up this often.
pub const PADDING_TICK: Duration = Duration::from_millis(10);
/// Bytes of ballast per padding header extension (two-byte header extensions hold 255).
pub const PADDING_EXTENSION_BYTES: usize = 255;
/// Frames kept packetized, for receivers that get the same frame a moment later.
const CACHE_FRAMES: usize = 24;

/// One frame's payloads, shared by every receiver of its codec.
pub struct Packetized {
    pub payloads: Vec<Bytes>,
    pub keyframe: bool,
    pub pts_90k: u64,
}

/// Packetizes each frame once per codec.
pub struct FrameCache {
    vp8: Box<dyn Payloader>,
    h264: Box<dyn Payloader>,
    recent: VecDeque<(Arc<EncodedVideo>, VideoCodec, Arc<Packetized>)>,
    pub packetized: u64,
    pub reused: u64,
}

impl Default for FrameCache {
    fn default() -> Self {
        FrameCache {
            vp8: Box::new(rtc::rtp::codec::vp8::Vp8Payloader::default()),
            h264: Box::new(rtc::rtp::codec::h264::H264Payloader::default()),
            recent: VecDeque::new(),
            packetized: 0,
            reused: 0,
        }
    }
}

impl FrameCache {
    /// `frame`'s payloads in `codec`'s format; the same `Arc` for every receiver.
    pub fn get(&mut self, frame: &Arc<EncodedVideo>, codec: VideoCodec) -> Arc<Packetized> {
        if let Some((_, _, p)) = self
            .recent
            .iter()
            .find(|(f, c, _)| Arc::ptr_eq(f, frame) && *c == codec)
        {
            self.reused += 1;
            return p.clone();
        }
        let payloader = match codec {
            VideoCodec::Vp8 => &mut self.vp8,
            VideoCodec::H264 => &mut self.h264,
        };
        let data = Bytes::copy_from_slice(&frame.data);
        let payloads = payloader
            .payload(RTP_MTU - RTP_HEADER, &data)
            .unwrap_or_default();
        let p = Arc::new(Packetized {
            payloads,
            keyframe: frame.keyframe,
            pts_90k: frame.pts_90k,
        });
        self.packetized += 1;
        if self.recent.len() >= CACHE_FRAMES {
            self.recent.pop_front();
        }
        // Holding the frame keeps its address from being reused by a later one.
        self.recent.push_back((frame.clone(), codec, p.clone()));
        p
    }
}

/// A probe in progress: pad up to `bps` in total until `until`.
struct Probing {
    bps: u64,
    started: Instant,
    until: Instant,
    bytes_at_start: u64,
}

/// What a receiver's RTP header carries for one of its streams.
pub struct Stamp {
    pub ssrc: u32,
    pub pt: u8,
    seq: u16,
    ts_base: u32,
    last_ts: Option<u32>,
}

impl Stamp {
    pub fn new(ssrc: u32, pt: u8, seq: u16, ts_base: u32) -> Stamp {
        Stamp {
            ssrc,
            pt,
            seq,
            ts_base,
            last_ts: None,
        }
    }

    fn next_seq(&mut self) -> u16 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// The RTP timestamp for a pts (in the stream's clock), never stepping back (tiers
    /// tick on slightly different grids, and a tier switch changes grid).
    fn timestamp(&mut self, pts: u64) -> u32 {
        let mut ts = self.ts_base.wrapping_add(pts as u32);
        if let Some(last) = self.last_ts {
            if (ts.wrapping_sub(last) as i32) < 0 {
                ts = last;
            }
        }
        self.last_ts = Some(ts);
        ts
    }

    pub fn header(&mut self, pts: u64, marker: bool) -> Header {
        Header {
            version: 2,
            marker,
            payload_type: self.pt,
            sequence_number: self.next_seq(),
            timestamp: self.timestamp(pts),
            ssrc: self.ssrc,
            ..Default::default()
        }
    }
}

/// One receiver's composite: stamped packets waiting for the pacer, and probe padding.
pub struct VideoOut {
    pub codec: VideoCodec,
    pub stamp: Stamp,
    queue: VecDeque<rtc::rtp::Packet>,
    /// Frames in `queue` (by marker bits).
    frames_queued: usize,
    /// When the pacer may send the next packet.
    next_send: Option<Instant>,
    /// A frame was dropped: deltas are useless until the next keyframe.
    broken: bool,
    /// Negotiated ids of the padding's ballast extensions; no probing without one.
    ballast_ids: Vec<u8>,
    probing: Option<Probing>,
    /// Bytes of every packet sent, headers included.
    pub bytes: u64,
    pub frames_dropped: u64,
    pub padding_packets: u64,
}

impl VideoOut {
    pub fn new(codec: VideoCodec, stamp: Stamp, ballast_ids: Vec<u8>) -> VideoOut {
        VideoOut {
            codec,
            stamp,
            queue: VecDeque::new(),
            frames_queued: 0,
            next_send: None,
            broken: false,
            ballast_ids,
            probing: None,
            bytes: 0,
            frames_dropped: 0,
            padding_packets: 0,
        }
    }

    /// Queues a frame's packets. False when the receiver is too far behind: the frame is
    /// dropped (as are deltas after it until a keyframe) and its picture is broken.
    pub fn push_frame(&mut self, p: &Packetized) -> bool {
        if p.payloads.is_empty() {
            return true;
        }
        if self.broken && !p.keyframe {
            self.frames_dropped += 1;
            return true;
        }
        if self.frames_queued >= VIDEO_BACKLOG {
            self.frames_dropped += 1;
            self.broken = true;
            return false;
        }
        if p.keyframe {
            self.broken = false;
        }
        let last = p.payloads.len() - 1;
        for (i, payload) in p.payloads.iter().enumerate() {
            let header = self.stamp.header(p.pts_90k, i == last);
            self.queue.push_back(rtc::rtp::Packet {
                header,
                payload: payload.clone(),
            });
        }
        self.frames_queued += 1;
        true
    }

    /// Starts (or with `bps == 0` stops) a probe; `sent` is what this receiver got so far.
    pub fn probe(&mut self, bps: u64, until: Instant, now: Instant, audio_bytes: u64) {
        self.probing =
            (until > now && bps > 0 && !self.ballast_ids.is_empty()).then_some(Probing {
                bps,
                started: now,
                until,
                bytes_at_start: self.bytes + audio_bytes,
            });
    }

    /// When `poll` has something to do.
    pub fn next_due(&self) -> Option<Instant> {
        let media = (!self.queue.is_empty()).then(|| self.next_send.unwrap_or(Instant::now()));
        let pad = self.probing.as_ref().map(|_| {
            self.next_send
                .unwrap_or_else(Instant::now)
                .max(Instant::now() + PADDING_TICK)
        });
        match (media, pad) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The packets due now at `rate_bps`, then padding if a probe is short of its rate.
    pub fn poll(
        &mut self,
        now: Instant,
        rate_bps: u64,
        audio_bytes: u64,
        out: &mut Vec<rtc::rtp::Packet>,
    ) {
        let rate = rate_bps.max(100_000) as f64;
        while let Some(p) = self.queue.front() {
            if !self.sendable(now) {
                break;
            }
            let size = p.payload.len() + RTP_HEADER + OVERHEAD_BYTES;
            self.spend(now, size as u64, rate);
            let p = self.queue.pop_front().expect("front exists");
            if p.header.marker {
                self.frames_queued = self.frames_queued.saturating_sub(1);
            }
            self.bytes += size as u64;
            out.push(p);
        }
        let Some(pr) = self.probing.as_ref() else {
            return;
        };
        if now >= pr.until {
            self.probing = None;
            return;
        }
        if !self.queue.is_empty() {
            return;
        }
        let due = (now.duration_since(pr.started).as_secs_f64() * pr.bps as f64 / 8.0) as u64;
        let target = pr.bytes_at_start + due;
        // Padding is paced like media, at the probe's rate (or the pacer's, if higher): a
        // probe that fell behind while a keyframe drained must not catch up in one burst,
        // which a shallow bottleneck queue drops, and the estimate with it.
        let pad_rate = (pr.bps as f64).max(rate);
        while self.bytes + audio_bytes < target && self.sendable(now) {
            let before = self.bytes;
            match self.padding() {
                Some(p) => {
                    self.spend(now, self.bytes - before, pad_rate);
                    out.push(p);
                }
                None => {
                    self.probing = None;
                    break;
                }
            }
        }
    }

    /// Whether the pacer lets a packet go at `now` (2 ms early is on time).
    fn sendable(&self, now: Instant) -> bool {
        self.next_send
            .is_none_or(|at| at <= now + Duration::from_millis(2))
    }

    /// Charges `size` bytes sent at `now` against the pacer at `rate` bits per second. Idle
    /// time earns at most 5 ms of burst.
    fn spend(&mut self, now: Instant, size: u64, rate: f64) {
        let floor = now.checked_sub(Duration::from_millis(5)).unwrap_or(now);
        let base = self.next_send.unwrap_or(now).max(floor);
        self.next_send = Some(base + Duration::from_secs_f64(size as f64 * 8.0 / rate));
    }

    /// One padding-only packet: ballast in two-byte header extensions under the ids of
    /// extensions a receiver parses by size and ignores when the size is wrong (RTP padding
    /// itself is limited to 255 bytes, and `rtc` writes at most 4). Receivers count it as
    /// padding; transport-cc feedback acknowledges its whole size.
    fn padding(&mut self) -> Option<rtc::rtp::Packet> {
        let ts = self.stamp.last_ts?;
        let mut header = Header {
            version: 2,
            padding: true,
            extension: true,
            extension_profile: EXTENSION_PROFILE_TWO_BYTE,
            payload_type: self.stamp.pt,
            sequence_number: self.stamp.next_seq(),
            timestamp: ts,
            ssrc: self.stamp.ssrc,
            ..Default::default()
        };
        static BALLAST: [u8; PADDING_EXTENSION_BYTES] = [0; PADDING_EXTENSION_BYTES];
        for id in &self.ballast_ids {
            header
                .set_extension(*id, Bytes::from_static(&BALLAST))
                .ok()?;
        }
        self.bytes += (self.ballast_ids.len() * (PADDING_EXTENSION_BYTES + 2) + 60) as u64;
        self.padding_packets += 1;
        Some(rtc::rtp::Packet {
            header,
            payload: Bytes::new(),
        })
    }
}

/// One receiver's mix: 20 ms Opus packets, timestamps on the engine's 48 kHz pts.
pub struct AudioOut {
    pub stamp: Stamp,
    pub bytes: u64,
}

impl AudioOut {
    pub fn packet(&mut self, payload: Vec<u8>, pts_48k: u64) -> rtc::rtp::Packet {
        self.bytes += (payload.len() + RTP_HEADER + OVERHEAD_BYTES) as u64;
        rtc::rtp::Packet {
            header: self.stamp.header(pts_48k, false),
            payload: Bytes::from(payload),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(size: usize, keyframe: bool, pts: u64) -> Arc<EncodedVideo> {
        // A VP8 frame header is enough for the payloader: it copies bytes.
        Arc::new(EncodedVideo {
            data: vec![if keyframe { 0x10 } else { 0x11 }; size],
            keyframe,
            pts_90k: pts,
        })
    }

    #[test]
    fn a_frame_is_packetized_once_for_every_receiver() {
        let mut cache = FrameCache::default();
        let f = frame(5000, true, 0);
        let a = cache.get(&f, VideoCodec::Vp8);
        let b = cache.get(&f, VideoCodec::Vp8);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!((cache.packetized, cache.reused), (1, 1));
        assert!(a.payloads.len() >= 5, "5000 bytes take several packets");
        assert!(a.payloads.iter().all(|p| p.len() <= RTP_MTU - RTP_HEADER));
        // Two receivers: same payload bytes (shared, not copied), own headers.
        let mut r1 = VideoOut::new(VideoCodec::Vp8, Stamp::new(1, 96, 100, 1000), vec![]);
        let mut r2 = VideoOut::new(VideoCodec::Vp8, Stamp::new(2, 97, 7, 5), vec![]);
        assert!(r1.push_frame(&a) && r2.push_frame(&b));
        let now = Instant::now();
        let (mut o1, mut o2) = (Vec::new(), Vec::new());
        r1.poll(now, 100_000_000, 0, &mut o1);
        r2.poll(now, 100_000_000, 0, &mut o2);
        assert_eq!(o1.len(), a.payloads.len());
        for (p, q) in o1.iter().zip(&o2) {
            assert_eq!(p.payload.as_ptr(), q.payload.as_ptr());
            assert_eq!((p.header.ssrc, q.header.ssrc), (1, 2));
            assert_eq!((p.header.payload_type, q.header.payload_type), (96, 97));
        }
        assert_eq!(o1[0].header.sequence_number, 101);
        assert_eq!(
            o2.last().unwrap().header.sequence_number,
            7 + o2.len() as u16
        );
        assert!(o1.last().unwrap().header.marker && !o1[0].header.marker);
    }

    #[test]
    fn timestamps_follow_the_room_pts_and_never_step_back() {
        let mut s = Stamp::new(1, 96, 0, u32::MAX - 10);
        assert_eq!(s.header(0, true).timestamp, u32::MAX - 10);
        // A skipped tick advances the timestamp by two frames, across the wrap.
        assert_eq!(s.header(7200, true).timestamp, 7189);
        assert_eq!(s.header(3600, true).timestamp, 7189, "never backwards");
    }

    #[test]
    fn the_pacer_spreads_a_keyframe_over_time() {
        let mut cache = FrameCache::default();
        let key = cache.get(&frame(30_000, true, 0), VideoCodec::Vp8);
        let mut r = VideoOut::new(VideoCodec::Vp8, Stamp::new(1, 96, 0, 0), vec![]);
        r.push_frame(&key);
        let t0 = Instant::now();
        let mut out = Vec::new();
        // 30 kB at 480 kbit/s: half a second.
        r.poll(t0, 480_000, 0, &mut out);
        assert!(
            out.len() < 4,
            "only a start goes at once, got {}",
            out.len()
        );
        let mut t = t0;
        while !r.queue.is_empty() {
            t = r.next_due().unwrap().max(t);
            r.poll(t, 480_000, 0, &mut out);
        }
        let spread = t.duration_since(t0).as_secs_f64();
        assert!((0.4..0.7).contains(&spread), "spread over {spread} s");
    }

    #[test]
    fn probe_padding_is_paced_even_after_a_keyframe_held_it_back() {
        let mut cache = FrameCache::default();
        let mut r = VideoOut::new(VideoCodec::Vp8, Stamp::new(1, 96, 0, 0), vec![5, 6]);
        let t0 = Instant::now();
        // A probe at 400 kbit/s starts as a 6 kB keyframe goes out at 100 kbit/s: by the
        // time it has drained, the probe is 18 kB short.
        r.push_frame(&cache.get(&frame(6_000, true, 0), VideoCodec::Vp8));
        r.probe(400_000, t0 + Duration::from_secs(3), t0, 0);
        let mut sent: Vec<(Duration, u64)> = Vec::new();
        let mut out = Vec::new();
        let mut t = t0;
        while t < t0 + Duration::from_millis(2500) {
            let before = r.bytes;
            r.poll(t, 100_000, 0, &mut out);
            sent.push((t - t0, r.bytes - before));
            t += Duration::from_millis(1);
        }
        assert!(
            r.padding_packets > 50,
            "{} padding packets",
            r.padding_packets
        );
        // No 50 ms window carries more than the probe's rate allows, plus two packets.
        let most = 400_000.0 / 8.0 * 0.05 + 2.0 * 1300.0;
        for (i, (at, _)) in sent.iter().enumerate() {
            let bytes: u64 = sent[i..]
                .iter()
                .take_while(|(b, _)| *b < *at + Duration::from_millis(50))
                .map(|(_, n)| n)
                .sum();
            assert!(bytes as f64 <= most, "{bytes} bytes in 50 ms from {at:?}");
        }
    }

    #[test]
    fn a_receiver_too_far_behind_drops_until_a_keyframe() {
        let mut cache = FrameCache::default();
        let mut r = VideoOut::new(VideoCodec::Vp8, Stamp::new(1, 96, 0, 0), vec![]);
        for i in 0..VIDEO_BACKLOG as u64 {
            assert!(r.push_frame(&cache.get(&frame(500, i == 0, i * 3600), VideoCodec::Vp8)));
        }
        assert!(!r.push_frame(&cache.get(&frame(500, false, 99_000), VideoCodec::Vp8)));
        let mut out = Vec::new();
        r.poll(Instant::now(), 100_000_000, 0, &mut out);
        assert_eq!(out.len(), VIDEO_BACKLOG);
        // Caught up, but a delta after the loss is useless: dropped.
        assert!(r.push_frame(&cache.get(&frame(500, false, 102_600), VideoCodec::Vp8)));
        assert!(r.queue.is_empty());
        assert!(r.push_frame(&cache.get(&frame(500, true, 106_200), VideoCodec::Vp8)));
        assert_eq!(r.queue.len(), 1);
        assert_eq!(r.frames_dropped, 2);
    }
}
