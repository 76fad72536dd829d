//! What the media plane and the test client share: the codecs we negotiate, the tracks we
//! send, and our interceptors (keyframe requests surfaced to the application, RTP of
//! unknown SSRCs counted, the retransmission budget).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio;
use tessera_types::VideoCodec;

use crate::room::NetStats;
use crate::sdp;

pub(crate) const MIME_VP8: &str = "video/VP8";
pub(crate) const MIME_H264: &str = "video/H264";
pub(crate) const MIME_OPUS: &str = "audio/opus";
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{0}")]
    BadSdp(String),
    #[error("WebRTC: {0}")]
    Webrtc(String),
}

fn werr(e: impl std::fmt::Display) -> PeerError {
    PeerError::Webrtc(e.to_string())
}

/// What the answer should carry back to the client.
pub struct AnswerPlan {
    /// Composite codec, or None when the client does not receive video.
    pub video_out: Option<VideoCodec>,
    /// The tier's frame rate: sets the composite's RTP timestamp step.
    pub video_fps: u32,
    pub audio_out: bool,
    /// The client's media is taken in (false for a WHEP viewer, whose answer then says
    /// `sendonly` whatever direction its offer asked for).
    pub accept_media: bool,
}

fn codec(mime: &str) -> RTCRtpCodec {
    let fb = |t: &str, p: &str| RTCPFeedback {
        typ: t.into(),
        parameter: p.into(),
    };
    let video_fb = vec![
        fb("nack", ""),
        fb("nack", "pli"),
        fb("ccm", "fir"),
        fb("goog-remb", ""),
        fb("transport-cc", ""),
    ];
    match mime {
        MIME_OPUS => RTCRtpCodec {
            mime_type: MIME_OPUS.into(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
            rtcp_feedback: vec![fb("transport-cc", "")],
        },
        MIME_H264 => RTCRtpCodec {
            mime_type: MIME_H264.into(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: H264_FMTP.into(),
            rtcp_feedback: video_fb,
        },
        _ => RTCRtpCodec {
            mime_type: MIME_VP8.into(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: video_fb,
        },
    }
}

const PT_VP8: u8 = 96;
const PT_H264: u8 = 102;
const PT_OPUS: u8 = 111;

fn parameters(mime: &str, payload_type: u8) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: codec(mime),
        payload_type,
    }
}

pub(crate) fn media_engine() -> Result<MediaEngine, PeerError> {
    let mut me = MediaEngine::default();
    me.register_codec(parameters(MIME_VP8, PT_VP8), RtpCodecKind::Video)
        .map_err(werr)?;
    me.register_codec(parameters(MIME_H264, PT_H264), RtpCodecKind::Video)
        .map_err(werr)?;
    me.register_codec(parameters(MIME_OPUS, PT_OPUS), RtpCodecKind::Audio)
        .map_err(werr)?;
    // Accepted so that padding packets may carry ballast under their ids (see
    // `VideoWriter::write_padding`); our media packets never carry them.
    for uri in BALLAST_EXTENSION_URIS {
        me.register_header_extension(
            rtc::rtp_transceiver::rtp_sender::RTCRtpHeaderExtensionCapability {
                uri: uri.to_string(),
            },
            RtpCodecKind::Video,
            None,
        )
        .map_err(werr)?;
    }
    Ok(me)
}

/// Both video codecs as `media_engine` registers them, `first` first (for the test client).
#[cfg(feature = "test-kit")]
pub(crate) fn video_codecs(first: VideoCodec) -> Vec<RTCRtpCodecParameters> {
    let vp8 = parameters(MIME_VP8, PT_VP8);
    let h264 = parameters(MIME_H264, PT_H264);
    match first {
        VideoCodec::Vp8 => vec![vp8, h264],
        VideoCodec::H264 => vec![h264, vp8],
    }
}

/// What one of our interceptors does to the packets passing it; by default nothing. Wrapped
/// in `Tapped`, which holds the queues every webrtc-rs interceptor needs.
pub(crate) trait Tap: Send + Sync + 'static {
    fn on_read(&mut self, _msg: &mut TaggedPacket) {}
    fn on_write(&mut self, _msg: &mut TaggedPacket) {}
    fn bind_remote(&mut self, _info: &StreamInfo) {}
    fn unbind_remote(&mut self, _info: &StreamInfo) {}
}

/// A pass-through interceptor that shows every packet to its `Tap` on the way.
pub(crate) struct Tapped<T> {
    tap: T,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl<T: Tap> Tapped<T> {
    pub(crate) fn new(tap: T) -> Self {
        Tapped {
            tap,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

impl<T: Tap> sansio::Protocol<TaggedPacket, TaggedPacket, ()> for Tapped<T> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        self.tap.on_read(&mut msg);
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        self.tap.on_write(&mut msg);
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl<T: Tap> Interceptor for Tapped<T> {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.tap.bind_remote(info);
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.tap.unbind_remote(info);
    }
}

/// Marks inbound PLI/FIR for the application, so `TrackLocal::poll` sees receivers'
/// keyframe requests (webrtc 0.21 stops inbound RTCP at the end of the chain otherwise).
#[derive(Default)]
pub(crate) struct KeyframeRequestForwarder;

pub(crate) fn is_keyframe_request(p: &dyn rtc::rtcp::Packet) -> bool {
    let any = p.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// RTCP the application acts on: keyframe requests, and receiver reports and REMB for
/// choosing a receiver's tier.
fn for_application(p: &dyn rtc::rtcp::Packet) -> bool {
    let any = p.as_any();
    is_keyframe_request(p)
        || any.is::<ReceiverReport>()
        || any.is::<ReceiverEstimatedMaximumBitrate>()
}

impl Tap for KeyframeRequestForwarder {
    fn on_read(&mut self, msg: &mut TaggedPacket) {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            if packets.iter().any(|p| for_application(p.as_ref())) {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
    }
}

/// Counts inbound RTP of an SSRC that no receiver is bound to. webrtc-rs drops such packets
/// before any track sees them (a second stream on an m-line, a stray SSRC), so this is the
/// only place they can be counted.
pub(crate) struct UnknownSsrcCounter {
    bound: HashSet<u32>,
    net: Arc<Mutex<NetStats>>,
}

impl UnknownSsrcCounter {
    pub(crate) fn new(net: Arc<Mutex<NetStats>>) -> Self {
        UnknownSsrcCounter {
            bound: HashSet::new(),
            net,
        }
    }
}

impl Tap for UnknownSsrcCounter {
    fn on_read(&mut self, msg: &mut TaggedPacket) {
        if let Packet::Rtp(p) = &msg.message.packet {
            if !self.bound.contains(&p.header.ssrc) {
                if let Ok(mut n) = self.net.lock() {
                    n.rtp_unknown_ssrc += 1;
                }
            }
        }
    }
    fn bind_remote(&mut self, info: &StreamInfo) {
        self.bound.extend(
            [Some(info.ssrc), info.ssrc_rtx, info.ssrc_fec]
                .into_iter()
                .flatten(),
        );
    }
    fn unbind_remote(&mut self, info: &StreamInfo) {
        self.bound.remove(&info.ssrc);
    }
}

/// Keeps the NACK responder's retransmissions within a share of the receiver's bandwidth
/// estimate: a NACK over budget is taken out of the compound packet before the responder
/// sees it. Without this, a receiver on a link that overflows NACKs most of what it lost,
/// every resend adds to the overflow, and the link stays flooded for seconds after the
/// composite itself has stepped down (measured on a 300 kbit/s shaped link).
pub(crate) struct RetransmitBudget {
    /// The composite's pacing rate (the estimate times `estimate::PACING_FACTOR`).
    pacing: Arc<std::sync::atomic::AtomicU64>,
    net: Arc<Mutex<NetStats>>,
    /// Bytes that may still be resent, and when that was last topped up.
    tokens: f64,
    at: Option<Instant>,
}

/// Retransmissions may take this share of the estimate...
const RETRANSMIT_SHARE: f64 = 0.25;
/// ... and save up at most this long of it.
const RETRANSMIT_BURST_SECS: f64 = 0.5;
/// What one resent composite packet is reckoned to cost.
const RETRANSMIT_PACKET_BYTES: f64 = 1_250.0;

impl RetransmitBudget {
    pub(crate) fn new(
        pacing: Arc<std::sync::atomic::AtomicU64>,
        net: Arc<Mutex<NetStats>>,
    ) -> Self {
        RetransmitBudget {
            pacing,
            net,
            tokens: 0.0,
            at: None,
        }
    }

    fn rate_bytes(&self) -> f64 {
        let pacing = self.pacing.load(std::sync::atomic::Ordering::Relaxed) as f64;
        pacing / crate::estimate::PACING_FACTOR * RETRANSMIT_SHARE / 8.0
    }

    /// Whether `packets` resends fit the budget at `now` (and if so, spends it).
    fn allow(&mut self, now: Instant, packets: u32) -> bool {
        let rate = self.rate_bytes();
        let elapsed = self.at.map_or(RETRANSMIT_BURST_SECS, |t| {
            now.saturating_duration_since(t).as_secs_f64()
        });
        self.at = Some(now);
        self.tokens = (self.tokens + elapsed * rate).min(rate * RETRANSMIT_BURST_SECS);
        let cost = packets as f64 * RETRANSMIT_PACKET_BYTES;
        if cost <= self.tokens {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

impl Tap for RetransmitBudget {
    fn on_read(&mut self, msg: &mut TaggedPacket) {
        use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
        let now = msg.now;
        let Packet::Rtcp(packets) = &mut msg.message.packet else {
            return;
        };
        let mut refused = 0u64;
        packets.retain(|p| {
            let Some(nack) = p.as_any().downcast_ref::<TransportLayerNack>() else {
                return true;
            };
            let asked: u32 = nack
                .nacks
                .iter()
                .map(|n| 1 + n.lost_packets.count_ones())
                .sum();
            let ok = self.allow(now, asked);
            if !ok {
                refused += asked as u64;
            }
            ok
        });
        if refused > 0 {
            if let Ok(mut n) = self.net.lock() {
                n.retransmissions_refused += refused;
            }
        }
    }
}

/// The payload types the answer accepted for incoming media, by kind.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReceiveCodecs {
    pub(crate) video: Vec<(u8, VideoCodec)>,
    pub(crate) audio: Vec<u8>,
}

impl ReceiveCodecs {
    /// From our answer: the sections we receive on, and the payload types they accept.
    pub(crate) fn of_answer(answer: &str) -> ReceiveCodecs {
        let mut out = ReceiveCodecs::default();
        let sections = sdp::sections(answer).unwrap_or_default();
        for s in sections.iter().filter(|s| s.direction.receives()) {
            for (pt, name) in &s.payload_types {
                match (s.kind.as_str(), name.as_str()) {
                    ("video", "VP8") => out.video.push((*pt, VideoCodec::Vp8)),
                    ("video", "H264") => out.video.push((*pt, VideoCodec::H264)),
                    ("audio", "OPUS") => out.audio.push(*pt),
                    _ => {}
                }
            }
        }
        out
    }
}

/// Padding packets for probes carry ballast in two-byte header extensions, under the ids
/// of extensions a receiver parses by size and ignores when the size is wrong (RTP padding
/// itself is limited to 255 bytes and `rtc` writes at most 4; `rtc` refuses ids that were
/// not negotiated). Receivers count the packet as padding (no payload), and transport-cc
/// feedback acknowledges its whole size. Chromium and Firefox offer both.
pub(crate) const BALLAST_EXTENSION_URIS: [&str; 2] = [
    "urn:ietf:params:rtp-hdrext:toffset",
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
];

pub(crate) fn media_track(kind: RtpCodecKind, mime: &str, ssrc: u32) -> MediaStreamTrack {
    let (kind_name, label) = match kind {
        RtpCodecKind::Audio => ("audio", "mix"),
        _ => ("video", "composite"),
    };
    // Unique per SSRC: webrtc-rs routes inbound RTCP (PLI, receiver reports) by track id,
    // to a remote track before a local one, so a peer whose camera had the same id as our
    // composite would hand its feedback about the composite to the camera's reader.
    MediaStreamTrack::new(
        "tessera".into(),
        format!("tessera-{kind_name}-{ssrc:08x}"),
        label.into(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            active: true,
            codec: codec(mime),
            ..Default::default()
        }],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
    use rtc::shared::{TransportContext, TransportMessage};
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    fn compound(now: Instant, lost: &[u16]) -> TaggedPacket {
        let rr: Box<dyn rtc::rtcp::Packet> = Box::new(ReceiverReport::default());
        let nack: Box<dyn rtc::rtcp::Packet> = Box::new(TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 2,
            nacks: lost
                .iter()
                .map(|s| NackPair {
                    packet_id: *s,
                    lost_packets: 0,
                })
                .collect(),
        });
        TransportMessage {
            now,
            transport: TransportContext::default(),
            message: rtc::interceptor::AttributedPacket::new(Packet::Rtcp(vec![rr, nack])),
        }
    }

    fn nacks_left(m: &TaggedPacket) -> usize {
        match &m.message.packet {
            Packet::Rtcp(p) => p
                .iter()
                .filter(|p| p.as_any().is::<TransportLayerNack>())
                .count(),
            _ => 0,
        }
    }

    #[test]
    fn nacks_over_a_quarter_of_the_estimate_are_not_answered() {
        // A 200 kbit/s estimate: 6250 bytes a second for resends, 3125 saved up at most.
        let pacing = Arc::new(AtomicU64::new(
            (200_000.0 * crate::estimate::PACING_FACTOR) as u64,
        ));
        let net = Arc::new(Mutex::new(NetStats::default()));
        let mut b = RetransmitBudget::new(pacing, net.clone());
        let t0 = Instant::now();
        let mut m = compound(t0, &[10, 11]);
        b.on_read(&mut m);
        assert_eq!(nacks_left(&m), 1, "two packets fit the saved-up budget");
        let mut m = compound(t0 + Duration::from_millis(10), &[12, 13]);
        b.on_read(&mut m);
        assert_eq!(nacks_left(&m), 0, "the budget is spent");
        match &m.message.packet {
            Packet::Rtcp(p) => assert_eq!(p.len(), 1, "the receiver report stays"),
            _ => unreachable!(),
        }
        assert_eq!(net.lock().unwrap().retransmissions_refused, 2);
        let mut m = compound(t0 + Duration::from_millis(500), &[14, 15]);
        b.on_read(&mut m);
        assert_eq!(nacks_left(&m), 1, "half a second later there is room again");
    }
}
