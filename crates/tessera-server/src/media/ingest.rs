//! Camera and microphone RTP into what the room takes, sans IO: the only code that turns a
//! participant's packets into frames (the reactor, the test client and the fuzz targets all
//! call it). Payload types the answer did not accept, empty and oversized payloads are
//! counted and dropped; a change of codec mid-stream is followed; a lost frame asks the
//! sender for a keyframe, again every `PLI_INTERVAL` until one arrives.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtp::codec::vp8::Vp8Packet;
use tessera_types::VideoCodec;
use tracing::info;

use crate::reassembly::{self, Event, Reassembler, SafeH264};
use crate::room::NetStats;

/// Larger RTP payloads cannot have crossed a 1500-byte MTU (IP, UDP, RTP and SRTP headers
/// come on top), and no WebRTC stack sends them.
pub const MAX_RTP_PAYLOAD_BYTES: usize = 1500;

/// Least time between two PLIs this side sends on its own (after a loss).
pub const PLI_INTERVAL: Duration = Duration::from_millis(500);

/// One RTP packet's fields that ingest looks at.
pub struct RtpIn {
    pub payload_type: u8,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Bytes,
}

impl From<rtc::rtp::Packet> for RtpIn {
    fn from(p: rtc::rtp::Packet) -> RtpIn {
        RtpIn {
            payload_type: p.header.payload_type,
            sequence_number: p.header.sequence_number,
            timestamp: p.header.timestamp,
            marker: p.header.marker,
            payload: p.payload,
        }
    }
}

/// What a packet produced.
#[derive(Debug, Default)]
pub struct Ingested {
    /// Whole frames, in order.
    pub frames: Vec<(VideoCodec, Vec<u8>)>,
    /// Ask the sender for a keyframe now.
    pub pli: bool,
}

/// Whether a payload is media to use; counts it in `net` if not.
pub fn usable(net: &mut NetStats, payload: &[u8], payload_type_ok: bool) -> bool {
    if !payload_type_ok {
        net.rtp_bad_payload_type += 1;
    } else if payload.is_empty() {
        net.rtp_empty += 1;
    } else if payload.len() > MAX_RTP_PAYLOAD_BYTES {
        net.rtp_oversized += 1;
    } else {
        return true;
    }
    false
}

/// A microphone's packet: the Opus payload to pass on, if usable.
pub fn audio(net: &mut NetStats, payload_types: &[u8], p: &RtpIn) -> Option<Bytes> {
    let pt_ok = payload_types.is_empty() || payload_types.contains(&p.payload_type);
    usable(net, &p.payload, pt_ok).then(|| p.payload.clone())
}

/// One camera's reassembly and keyframe decisions.
pub struct VideoIngest {
    /// Payload types the answer accepted, and their codecs.
    payload_types: Vec<(u8, VideoCodec)>,
    vp8: Reassembler<Vp8Packet>,
    h264: Reassembler<SafeH264>,
    codec: Option<VideoCodec>,
    last_pli: Option<Instant>,
    /// Since when the picture is broken (no frame yet, or a loss): PLIs repeat until a frame.
    waiting_since: Option<Instant>,
    lost: u64,
    switches: u64,
}

impl VideoIngest {
    pub fn new(payload_types: Vec<(u8, VideoCodec)>, now: Instant) -> VideoIngest {
        VideoIngest {
            payload_types,
            vp8: Reassembler::new(Vp8Packet::default(), reassembly::vp8_is_keyframe, 64),
            h264: Reassembler::new(SafeH264::default(), reassembly::h264_is_keyframe, 64),
            codec: None,
            last_pli: None,
            waiting_since: Some(now),
            lost: 0,
            switches: 0,
        }
    }

    fn codec_of(&self, pt: u8) -> Option<VideoCodec> {
        self.payload_types
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, c)| *c)
    }

    /// Takes one packet. A packet of a payload type the answer did not accept still takes
    /// up its sequence number, so it is no hole to wait on.
    pub fn push(&mut self, p: RtpIn, now: Instant, net: &mut NetStats) -> Ingested {
        let mut out = Ingested::default();
        let pt_codec = self.codec_of(p.payload_type);
        if let Some(c) = pt_codec.filter(|c| Some(*c) != self.codec) {
            if self.codec.is_some() {
                info!(from = ?self.codec, to = ?c, "the camera changed codec");
                self.switches += 1;
            }
            self.codec = Some(c);
            match c {
                VideoCodec::Vp8 => self.vp8.restart(),
                VideoCodec::H264 => self.h264.restart(),
            }
            self.waiting_since = Some(now);
        }
        let Some(current) = self.codec else {
            usable(net, &p.payload, false);
            return out;
        };
        let payload = if usable(net, &p.payload, pt_codec.is_some()) {
            p.payload
        } else {
            Bytes::new()
        };
        let (seq, ts, marker) = (p.sequence_number, p.timestamp, p.marker);
        let events = match current {
            VideoCodec::Vp8 => self.vp8.push_at(now, seq, ts, marker, payload),
            VideoCodec::H264 => self.h264.push_at(now, seq, ts, marker, payload),
        };
        let mut want_pli = false;
        for e in events {
            match e {
                Event::Frame(data) => {
                    self.waiting_since = None;
                    out.frames.push((current, data));
                }
                Event::Lost => {
                    self.lost += 1;
                    want_pli = true;
                    self.waiting_since.get_or_insert(now);
                }
            }
        }
        // Still waiting for a keyframe: ask again now and then.
        if self.waiting_since.is_some() {
            want_pli = true;
        }
        if want_pli
            && self
                .last_pli
                .is_none_or(|t| now.duration_since(t) >= PLI_INTERVAL)
        {
            self.last_pli = Some(now);
            out.pli = true;
        }
        self.count(net);
        out
    }

    /// Copies the reassemblers' counters into `net`.
    fn count(&self, net: &mut NetStats) {
        let (v, h) = (&self.vp8, &self.h264);
        net.video_frames_lost = self.lost;
        net.codec_switches = self.switches;
        net.rtp_late = v.late + h.late;
        net.rtp_duplicates = v.duplicates + h.duplicates;
        net.rtp_malformed = v.malformed + h.malformed;
        net.video_frames_too_large = v.too_large + h.too_large;
        net.rtp_resyncs = v.resyncs + h.resyncs;
    }
}
