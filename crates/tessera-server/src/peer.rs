//! WebRTC PeerConnections (webrtc-rs 0.21): the only module that touches `webrtc`/`rtc`.
//!
//! One PeerConnection per participant, always the answerer. Incoming RTP is reassembled
//! into frames here and handed to the room thread; what the room sends back is written to
//! this participant's two outgoing tracks by one task. Keyframe requests flow both ways:
//! a receiver's PLI/FIR goes to the room (its tier emits a keyframe), the room's
//! `KeyframeNeeded` becomes a PLI to this participant's camera.

use std::collections::{HashSet, VecDeque};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::interceptor::{
    Attribute, CongestionControlBuilder, Interceptor, Packet, Slot, StreamInfo, TaggedPacket,
};
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::header::{Header, EXTENSION_PROFILE_TWO_BYTE};
use rtc::rtp::packetizer::Packetizer;
use rtc::rtp::sequence::Sequencer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio;
use tessera_config::NetworkConfig;
use tessera_engine::{EncodedVideo, Feedback};
use tessera_proto::IceCandidate;
use tessera_types::{ParticipantId, VideoCodec};
use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    configure_nack, configure_rtcp_reports, configure_twcc, MediaEngine, PeerConnection,
    PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
};
use webrtc::rtp_transceiver::RtpSender;

use crate::estimate::{self, Estimator};
use crate::reassembly::{self, Event, Reassembler, SafeH264};
use crate::room::{Command, MediaOut, NetStats, RoomHandle};
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

/// The participant's camera track and SSRC, once it arrives: where PLIs go.
type Camera = Arc<Mutex<Option<(Arc<dyn TrackRemote>, u32)>>>;

/// Events a PeerConnection reports to the session that owns it.
#[derive(Debug)]
pub enum PeerEvent {
    Candidate(Option<IceCandidate>),
    State(RTCPeerConnectionState),
}

/// What the answer should carry back to the client.
pub struct AnswerPlan {
    /// Composite codec, or None when the client does not receive video.
    pub video_out: Option<VideoCodec>,
    /// The tier's frame rate: sets the composite's RTP timestamp step.
    pub video_fps: u32,
    pub audio_out: bool,
}

pub struct Peer {
    pub pc: Arc<dyn PeerConnection>,
    pub answer: String,
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

/// Both video codecs as `media_engine` registers them, `first` first.
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
    type Error = webrtc::error::Error;
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
    fn new(net: Arc<Mutex<NetStats>>) -> Self {
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

/// UDP ports for media when `network.udp_port_min..=max` is set (webrtc 0.21 has no port
/// range of its own): round-robin, skipping ports something else holds.
pub struct PortAllocator {
    min: u16,
    max: u16,
    next: AtomicU32,
}

impl PortAllocator {
    pub fn new(net: &NetworkConfig) -> PortAllocator {
        PortAllocator {
            min: net.udp_port_min,
            max: net.udp_port_max,
            next: AtomicU32::new(0),
        }
    }

    /// `ip:port` bind addresses, one per host IP.
    fn addrs(&self, ips: &[String]) -> Vec<String> {
        ips.iter()
            .map(|ip| {
                if self.min == 0 {
                    return format!("{ip}:0");
                }
                let span = (self.max - self.min) as u32 + 1;
                for _ in 0..span {
                    let port = self.min as u32 + self.next.fetch_add(1, Ordering::Relaxed) % span;
                    let addr = format!("{ip}:{port}");
                    // Probe: a port in use would make webrtc skip the address silently.
                    if UdpSocket::bind(&addr).is_ok() {
                        return addr;
                    }
                }
                format!("{ip}:{}", self.min)
            })
            .collect()
    }
}

/// Everything a participant's PeerConnection needs from the server.
pub struct PeerContext {
    pub id: ParticipantId,
    pub room: RoomHandle,
    pub network: NetworkConfig,
    pub events: mpsc::UnboundedSender<PeerEvent>,
    pub ports: Arc<PortAllocator>,
    /// The bandwidth estimate a new receiver starts from (`bandwidth.start_kbps`).
    pub start_bps: u64,
    /// The richest tier's bitrate: what the pacer allows before any feedback.
    pub max_tier_bps: u64,
}

struct Handler {
    id: ParticipantId,
    connected: Arc<AtomicBool>,
    room: RoomHandle,
    events: mpsc::UnboundedSender<PeerEvent>,
    public_ip: String,
    camera: Camera,
    net: Arc<Mutex<NetStats>>,
    /// Set once the answer is made, before any media can arrive.
    receive: Arc<OnceLock<ReceiveCodecs>>,
    /// Whether a camera / microphone track is already being read: one of each per
    /// participant, so a second can never feed the same tile or voice.
    video_taken: AtomicBool,
    audio_taken: AtomicBool,
}

/// The payload types the answer accepted for incoming media, by kind.
#[derive(Clone, Debug, Default)]
struct ReceiveCodecs {
    video: Vec<(u8, VideoCodec)>,
    audio: Vec<u8>,
}

impl ReceiveCodecs {
    /// From our answer: the sections we receive on, and the payload types they accept.
    fn of_answer(answer: &str) -> ReceiveCodecs {
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

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Some(mut c) = candidate_of(&event) {
            if !self.public_ip.is_empty() {
                c.candidate = sdp::rewrite_candidates(&c.candidate, &self.public_ip);
            }
            let _ = self.events.send(PeerEvent::Candidate(Some(c)));
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.events.send(PeerEvent::Candidate(None));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        debug!(participant = %self.id, %state, "connection state");
        self.connected.store(
            state == RTCPeerConnectionState::Connected,
            Ordering::Release,
        );
        if state == RTCPeerConnectionState::Connected {
            // Nothing was sent before the path was up: start with a keyframe.
            self.room.send(Command::ReceiverConnected { id: self.id });
        }
        let _ = self.events.send(PeerEvent::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let Some((ssrc, mime)) = track_codec(&track).await else {
            return;
        };
        let id = self.id;
        let audio = track.kind().await == RtpCodecKind::Audio;
        let taken = if audio {
            &self.audio_taken
        } else {
            &self.video_taken
        };
        if taken.swap(true, Ordering::AcqRel) {
            let kind = if audio { "audio" } else { "video" };
            warn!(participant = %id, %mime, ssrc, kind, "a second track of one kind; ignoring it");
            if let Ok(mut n) = self.net.lock() {
                n.extra_tracks += 1;
            }
            // Read and discard: unread, webrtc-rs logs an error for every packet it drops.
            tokio::spawn(async move { while track.poll().await.is_some() {} });
            return;
        }
        let codecs = self.receive.get().cloned().unwrap_or_default();
        let reader = Reader {
            id,
            room: self.room.clone(),
            net: self.net.clone(),
            last_report: Instant::now(),
        };
        let span = tracing::info_span!("track", participant = %id, %mime);
        info!(participant = %id, %mime, ssrc, "receiving");
        if audio {
            tokio::spawn(read_audio(track, codecs.audio, reader).instrument(span));
        } else {
            if let Ok(mut c) = self.camera.lock() {
                *c = Some((track.clone(), ssrc));
            }
            tokio::spawn(read_video(track, ssrc, codecs.video, reader).instrument(span));
        }
    }
}

/// A remote track's first SSRC and its codec's MIME type (empty if unknown).
pub(crate) async fn track_codec(track: &Arc<dyn TrackRemote>) -> Option<(u32, String)> {
    let ssrc = track.ssrcs().await.first().copied()?;
    let mime = track
        .codec(ssrc)
        .await
        .map(|c| c.mime_type)
        .unwrap_or_default();
    Some((ssrc, mime))
}

/// A gathered candidate in the protocol's shape.
pub(crate) fn candidate_of(event: &RTCPeerConnectionIceEvent) -> Option<IceCandidate> {
    let init = event.candidate.to_json().ok()?;
    Some(IceCandidate {
        candidate: init.candidate,
        sdp_mid: init.sdp_mid,
        sdp_m_line_index: init.sdp_mline_index,
        username_fragment: None,
    })
}

/// The payload type `sender` negotiated for `mime`.
pub(crate) async fn negotiated_pt(sender: &Arc<dyn RtpSender>, mime: &str) -> Option<u8> {
    let params = sender.get_parameters().await.ok()?;
    params
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
        .map(|c| c.payload_type)
}

/// Larger RTP payloads cannot have crossed a 1500-byte MTU (IP, UDP, RTP and SRTP headers
/// come on top), and no WebRTC stack sends them.
const MAX_RTP_PAYLOAD_BYTES: usize = 1500;

/// What a track's reader reports to, and how often.
struct Reader {
    id: ParticipantId,
    room: RoomHandle,
    net: Arc<Mutex<NetStats>>,
    last_report: Instant,
}

impl Reader {
    /// Counts one packet refused before reassembly or decoding.
    fn count(&self, field: fn(&mut NetStats) -> &mut u64) {
        if let Ok(mut n) = self.net.lock() {
            *field(&mut n) += 1;
        }
    }

    /// Whether a payload is media to use; counts it if not.
    fn usable(&self, p: &rtc::rtp::Packet, payload_type_ok: bool) -> bool {
        if !payload_type_ok {
            self.count(|n| &mut n.rtp_bad_payload_type);
        } else if p.payload.is_empty() {
            self.count(|n| &mut n.rtp_empty);
        } else if p.payload.len() > MAX_RTP_PAYLOAD_BYTES {
            self.count(|n| &mut n.rtp_oversized);
        } else {
            return true;
        }
        false
    }

    /// Sends the counters to the room, at most once a second.
    fn report(&mut self, update: impl FnOnce(&mut NetStats)) {
        let now = Instant::now();
        if now.duration_since(self.last_report) < Duration::from_secs(1) {
            return;
        }
        self.last_report = now;
        let Ok(mut n) = self.net.lock() else { return };
        update(&mut n);
        let stats = *n;
        drop(n);
        self.room.send(Command::NetStats { id: self.id, stats });
    }
}

async fn read_audio(track: Arc<dyn TrackRemote>, payload_types: Vec<u8>, mut reader: Reader) {
    while let Some(ev) = track.poll().await {
        match ev {
            TrackRemoteEvent::OnRtpPacket(p) => {
                let pt_ok =
                    payload_types.is_empty() || payload_types.contains(&p.header.payload_type);
                if reader.usable(&p, pt_ok) {
                    reader.room.send(Command::Audio {
                        id: reader.id,
                        packet: p.payload.to_vec(),
                    });
                }
                reader.report(|_| {});
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}

/// Least time between two PLIs this side sends on its own (after a loss).
const PLI_INTERVAL: Duration = Duration::from_millis(500);

/// Reads the camera: packets of a payload type the answer accepted go to that codec's
/// reassembler (a change of codec mid-stream is followed: the room makes a new decoder),
/// anything else only uses up its sequence number.
async fn read_video(
    track: Arc<dyn TrackRemote>,
    ssrc: u32,
    payload_types: Vec<(u8, VideoCodec)>,
    mut reader: Reader,
) {
    let id = reader.id;
    let first = track.codec(ssrc).await.map(|c| c.mime_type);
    let codec_of = |pt: u8| match payload_types.iter().find(|(p, _)| *p == pt) {
        Some((_, c)) => Some(*c),
        // No answer to go by: the first packet's codec, which webrtc-rs resolved.
        None if payload_types.is_empty() => match first.as_deref() {
            Some(m) if m.eq_ignore_ascii_case(MIME_H264) => Some(VideoCodec::H264),
            Some(m) if m.eq_ignore_ascii_case(MIME_VP8) => Some(VideoCodec::Vp8),
            _ => None,
        },
        None => None,
    };
    let mut vp8 = Reassembler::new(Vp8Packet::default(), reassembly::vp8_is_keyframe, 64);
    let mut h264 = Reassembler::new(SafeH264::default(), reassembly::h264_is_keyframe, 64);
    let mut codec: Option<VideoCodec> = None;
    let mut last_pli: Option<Instant> = None;
    let mut lost = 0u64;
    let mut waiting_since = Some(Instant::now());
    while let Some(ev) = track.poll().await {
        let p = match ev {
            TrackRemoteEvent::OnRtpPacket(p) => p,
            TrackRemoteEvent::OnEnded => break,
            _ => continue,
        };
        let pt_codec = codec_of(p.header.payload_type);
        if let Some(c) = pt_codec.filter(|c| Some(*c) != codec) {
            if codec.is_some() {
                info!(participant = %id, from = ?codec, to = ?c, "the camera changed codec");
                reader.count(|n| &mut n.codec_switches);
            }
            codec = Some(c);
            match c {
                VideoCodec::Vp8 => vp8.restart(),
                VideoCodec::H264 => h264.restart(),
            }
            waiting_since = Some(Instant::now());
        }
        let Some(current) = codec else {
            reader.usable(&p, false);
            continue;
        };
        let (seq, ts, marker) = (
            p.header.sequence_number,
            p.header.timestamp,
            p.header.marker,
        );
        // A refused packet still takes up its sequence number, so it is no hole to wait on.
        let payload = if reader.usable(&p, pt_codec.is_some()) {
            p.payload
        } else {
            Bytes::new()
        };
        let events = match current {
            VideoCodec::Vp8 => vp8.push(seq, ts, marker, payload),
            VideoCodec::H264 => h264.push(seq, ts, marker, payload),
        };
        let mut want_pli = false;
        for e in events {
            match e {
                Event::Frame(data) => {
                    waiting_since = None;
                    reader.room.send(Command::Video {
                        id,
                        codec: current,
                        data,
                    });
                }
                Event::Lost => {
                    lost += 1;
                    want_pli = true;
                    waiting_since.get_or_insert_with(Instant::now);
                }
            }
        }
        // Still waiting for a keyframe: ask again now and then.
        let now = Instant::now();
        if waiting_since.is_some() {
            want_pli = true;
        }
        if want_pli && last_pli.is_none_or(|t| now.duration_since(t) >= PLI_INTERVAL) {
            last_pli = Some(now);
            send_pli_to(&track, ssrc).await;
        }
        reader.report(|n| {
            n.video_frames_lost = lost;
            n.rtp_late = vp8.late + h264.late;
            n.rtp_duplicates = vp8.duplicates + h264.duplicates;
            n.rtp_malformed = vp8.malformed + h264.malformed;
            n.video_frames_too_large = vp8.too_large + h264.too_large;
            n.rtp_resyncs = vp8.resyncs + h264.resyncs;
        });
    }
}

pub(crate) async fn send_pli_to(track: &Arc<dyn TrackRemote>, ssrc: u32) {
    let pli = PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc: ssrc,
    };
    if let Err(e) = track.write_rtcp(vec![Box::new(pli)]).await {
        debug!("PLI not sent: {e}");
    }
}

/// Builds the PeerConnection for `offer`, adds the outgoing tracks `plan` asks for, and
/// returns it with the answer (which already lists the host candidates). Spawns the task
/// that writes what the room sends (`media`) to those tracks.
pub async fn answer(
    ctx: PeerContext,
    offer: &str,
    plan: &AnswerPlan,
    media: mpsc::Receiver<MediaOut>,
) -> Result<Peer, PeerError> {
    let PeerContext {
        id,
        room,
        network,
        events,
        ports,
        start_bps,
        max_tier_bps,
    } = ctx;
    let mut me = media_engine()?;
    let registry = configure_nack(Registry::new(), &mut me);
    let registry = configure_rtcp_reports(registry);
    let registry = configure_twcc(registry, &mut me).map_err(werr)?;
    let net = Arc::new(Mutex::new(NetStats::default()));
    // What the composite is paced at before any transport-cc feedback (and for receivers
    // that never send any): the richest tier with room for its keyframes.
    let pacing = Arc::new(AtomicU64::new(
        ((start_bps.max(max_tier_bps) as f64 + 100_000.0) * estimate::PACING_FACTOR) as u64,
    ));
    // Send-side estimation from the receiver's transport-cc feedback, wire-most so that it
    // sees every packet as it leaves. Pacing is ours (`write_video`): `rtc`'s pacer is one
    // FIFO for every packet, so audio waited behind video and padding and was lost on
    // slow links.
    let estimator = Estimator::new(
        start_bps as f64,
        Some(estimate::Report {
            room: room.clone(),
            id,
            pacing: pacing.clone(),
        }),
    );
    let registry = registry.with(
        Slot::CongestionControl,
        CongestionControlBuilder::new(estimator).build(),
    );
    let registry = registry
        .with(Slot::from(14_000), Tapped::new(KeyframeRequestForwarder))
        .with(
            Slot::from(14_100),
            Tapped::new(UnknownSsrcCounter::new(net.clone())),
        );
    let se = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_network_types(vec![rtc::ice::network_type::NetworkType::Udp4])
        .with_ice_timeouts(
            Some(Duration::from_millis(
                network.ice_disconnected_timeout_ms as u64,
            )),
            Some(Duration::from_millis(network.ice_failed_timeout_ms as u64)),
            Some(Duration::from_millis(500)),
        )
        .with_ice_connection_attempts(Some(Duration::from_millis(50)), None)
        .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
        .build();
    let ice_servers = network
        .ice_servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone(),
            credential: s.credential.clone(),
        })
        .collect();
    let camera = Arc::new(Mutex::new(None));
    let connected = Arc::new(AtomicBool::new(false));
    let receive = Arc::new(OnceLock::new());
    let handler = Handler {
        id,
        connected: connected.clone(),
        room: room.clone(),
        events,
        public_ip: network.public_ip.clone(),
        camera: camera.clone(),
        net,
        receive: receive.clone(),
        video_taken: AtomicBool::new(false),
        audio_taken: AtomicBool::new(false),
    };
    let pc: Arc<dyn PeerConnection> = Arc::new(
        PeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_ice_servers(ice_servers)
                    .build(),
            )
            .with_media_engine(me)
            .with_setting_engine(se)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(handler))
            .with_udp_addrs(ports.addrs(&network.host_ips))
            .build()
            .await
            .map_err(werr)?,
    );
    let link = Link {
        media,
        camera,
        connected,
        pacing,
    };
    match negotiate(&pc, id, offer, plan, link, room, &network.public_ip).await {
        Ok(answer) => {
            // The client has no answer yet, so no packet can have arrived.
            let codecs = ReceiveCodecs::of_answer(&answer);
            debug!(participant = %id, ?codecs, "payload types accepted");
            let _ = receive.set(codecs);
            Ok(Peer { pc, answer })
        }
        Err(e) => {
            let _ = pc.close().await;
            Err(e)
        }
    }
}

/// The room's queue for this participant, and what writing to the network depends on.
struct Link {
    media: mpsc::Receiver<MediaOut>,
    camera: Camera,
    connected: Arc<AtomicBool>,
    /// The composite's pacing rate, bits per second (2.5 times the receiver's estimate).
    pacing: Arc<AtomicU64>,
}

struct Outgoing {
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    pt: u8,
    duration: Duration,
}

/// The composite's track: packetized here, so that its timestamps are the room's and
/// padding for bandwidth probes can share its sequence numbers.
struct VideoWriter {
    track: Arc<TrackLocalStaticRTP>,
    packetizer: Box<dyn Packetizer>,
    sequencer: Box<dyn Sequencer>,
    ssrc: u32,
    pt: u8,
    /// Random start of the RTP timestamps; the engine's 90 kHz pts is added to it.
    ts_base: u32,
    last_ts: Option<u32>,
    /// Bytes of every packet written, for the receiver's sent rate.
    bytes: u64,
    /// Negotiated ids of `BALLAST_EXTENSION_URIS`; no probing without one.
    ballast_ids: Vec<u8>,
}

/// Padding packets for probes carry ballast in two-byte header extensions, under the ids
/// of extensions a receiver parses by size and ignores when the size is wrong (RTP padding
/// itself is limited to 255 bytes and `rtc` writes at most 4; `rtc` refuses ids that were
/// not negotiated). Receivers count the packet as padding (no payload), and transport-cc
/// feedback acknowledges its whole size. Chromium and Firefox offer both.
const BALLAST_EXTENSION_URIS: [&str; 2] = [
    "urn:ietf:params:rtp-hdrext:toffset",
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
];
const PADDING_EXTENSION_BYTES: usize = 255;

impl VideoWriter {
    fn new(
        track: Arc<TrackLocalStaticRTP>,
        mime: &str,
        ssrc: u32,
        pt: u8,
        ballast_ids: Vec<u8>,
    ) -> Result<Self, PeerError> {
        let payloader = codec(mime).payloader().map_err(werr)?;
        let sequencer: Box<dyn Sequencer> = Box::new(rtc::rtp::sequence::new_random_sequencer());
        let packetizer = rtc::rtp::packetizer::new_packetizer(
            Instant::now(),
            RTP_MTU,
            pt,
            ssrc,
            payloader,
            sequencer.clone(),
            90_000,
        );
        Ok(VideoWriter {
            track,
            packetizer: Box::new(packetizer),
            sequencer,
            ssrc,
            pt,
            ts_base: rand_ssrc(),
            last_ts: None,
            bytes: 0,
            ballast_ids,
        })
    }

    /// Writes one frame, its packets no faster than `rate_bps`.
    async fn write_frame(&mut self, frame: &EncodedVideo, rate_bps: u64) -> Result<(), String> {
        let data = Bytes::copy_from_slice(&frame.data);
        let packets = self
            .packetizer
            .packetize(Instant::now(), &data, 0)
            .map_err(|e| e.to_string())?;
        // The room's clock, never stepping back (tiers tick on slightly different grids).
        let mut ts = self.ts_base.wrapping_add(frame.pts_90k as u32);
        if let Some(last) = self.last_ts {
            if (ts.wrapping_sub(last) as i32) <= 0 {
                ts = last.wrapping_add(1);
            }
        }
        self.last_ts = Some(ts);
        let started = tokio::time::Instant::now();
        let mut sent = 0u64;
        for mut p in packets {
            p.header.timestamp = ts;
            p.header.payload_type = self.pt;
            let size = (p.payload.len() + 40) as u64;
            // Released when the bytes before it have had their time at the pacing rate.
            let at = started + Duration::from_secs_f64(sent as f64 * 8.0 / rate_bps as f64);
            if at > tokio::time::Instant::now() + Duration::from_millis(2) {
                tokio::time::sleep_until(at).await;
            }
            sent += size;
            self.bytes += size;
            self.track.write_rtp(p).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// One padding-only packet of about 1 KiB, on the composite's SSRC after a whole frame.
    async fn write_padding(&mut self) -> Result<(), String> {
        let Some(ts) = self.last_ts.filter(|_| !self.ballast_ids.is_empty()) else {
            return Err("no extension to carry padding".into());
        };
        let mut header = Header {
            version: 2,
            padding: true,
            extension: true,
            extension_profile: EXTENSION_PROFILE_TWO_BYTE,
            payload_type: self.pt,
            sequence_number: self.sequencer.next_sequence_number(),
            timestamp: ts,
            ssrc: self.ssrc,
            ..Default::default()
        };
        static BALLAST: [u8; PADDING_EXTENSION_BYTES] = [0; PADDING_EXTENSION_BYTES];
        for id in &self.ballast_ids {
            header
                .set_extension(*id, Bytes::from_static(&BALLAST))
                .map_err(|e| e.to_string())?;
        }
        let size = self.ballast_ids.len() * (PADDING_EXTENSION_BYTES + 2) + 60;
        self.bytes += size as u64;
        self.track
            .write_rtp(rtc::rtp::Packet {
                header,
                payload: Bytes::new(),
            })
            .await
            .map_err(|e| e.to_string())
    }
}

/// RTP packets we write stay under this (IP, UDP, SRTP and header extensions come on top).
const RTP_MTU: usize = 1200;

pub(crate) fn new_track(
    kind: RtpCodecKind,
    mime: &str,
    ssrc: u32,
) -> Result<Arc<TrackLocalStaticSample>, PeerError> {
    TrackLocalStaticSample::new(Instant::now(), media_track(kind, mime, ssrc))
        .map(Arc::new)
        .map_err(werr)
}

fn media_track(kind: RtpCodecKind, mime: &str, ssrc: u32) -> MediaStreamTrack {
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

async fn negotiate(
    pc: &Arc<dyn PeerConnection>,
    id: ParticipantId,
    offer: &str,
    plan: &AnswerPlan,
    link: Link,
    room: RoomHandle,
    public_ip: &str,
) -> Result<String, PeerError> {
    let desc = RTCSessionDescription::offer(offer.to_string())
        .map_err(|e| PeerError::BadSdp(e.to_string()))?;
    pc.set_remote_description(desc)
        .await
        .map_err(|e| PeerError::BadSdp(e.to_string()))?;

    let base_ssrc: u32 = rand_ssrc();
    let mut video = None;
    if let Some(c) = plan.video_out {
        let mime = match c {
            VideoCodec::H264 => MIME_H264,
            VideoCodec::Vp8 => MIME_VP8,
        };
        let track = Arc::new(TrackLocalStaticRTP::new(media_track(
            RtpCodecKind::Video,
            mime,
            base_ssrc,
        )));
        let sender = pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| PeerError::BadSdp(format!("cannot send {mime}: {e}")))?;
        video = Some((track, sender, mime));
    }
    let mut audio = None;
    if plan.audio_out {
        let track = new_track(RtpCodecKind::Audio, MIME_OPUS, base_ssrc.wrapping_add(1))?;
        let sender = pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| PeerError::BadSdp(format!("cannot send Opus: {e}")))?;
        audio = Some((track, sender));
    }

    let answer = pc.create_answer(None).await.map_err(werr)?;
    pc.set_local_description(answer).await.map_err(werr)?;
    // Host candidates gather in milliseconds; STUN/TURN ones may take longer and trickle.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut sdp = pc
        .local_description()
        .await
        .map(|d| d.sdp)
        .unwrap_or_default();
    while !sdp.contains("a=candidate") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        sdp = pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .unwrap_or_default();
    }
    if !public_ip.is_empty() {
        sdp = sdp::rewrite_candidates(&sdp, public_ip);
    }

    let mut video_out = None;
    if let Some((track, sender, mime)) = video {
        let pt = negotiated_pt(&sender, mime)
            .await
            .ok_or_else(|| PeerError::BadSdp(format!("{mime} was not negotiated")))?;
        spawn_receiver_feedback(track.clone(), base_ssrc, id, room.clone());
        let ballast_ids = match sender.get_parameters().await {
            Ok(p) => p
                .rtp_parameters
                .header_extensions
                .iter()
                .filter(|e| BALLAST_EXTENSION_URIS.contains(&e.uri.as_str()))
                .filter_map(|e| u8::try_from(e.id).ok())
                .collect(),
            Err(_) => Vec::new(),
        };
        video_out = Some(VideoWriter::new(track, mime, base_ssrc, pt, ballast_ids)?);
    }
    let mut audio_out = None;
    if let Some((track, sender)) = audio {
        let pt = negotiated_pt(&sender, MIME_OPUS).await.unwrap_or(111);
        if plan.video_out.is_some() {
            // A compound RTCP packet reaches the track of its first report block, which may
            // be the audio: look for the video's reports there too.
            spawn_receiver_feedback(track.clone(), base_ssrc, id, room.clone());
        }
        audio_out = Some(Outgoing {
            track,
            ssrc: base_ssrc.wrapping_add(1),
            pt,
            duration: Duration::from_secs_f64(960.5 / 48_000.0),
        });
    }
    tokio::spawn(
        write_media(link, video_out, audio_out, (room, id))
            .instrument(tracing::info_span!("send", participant = %id)),
    );
    Ok(sdp)
}

fn rand_ssrc() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() as u32) | 1
}

/// Receivers' feedback on the composite track: PLI/FIR make the tier emit a keyframe;
/// receiver reports (loss) and REMB (estimate) go to the room's tier choice, and the loss
/// on the audio to its Opus encoder's FEC. (Transport-cc feedback is read by the
/// congestion-control interceptor, whose estimator reports to the room itself.)
fn spawn_receiver_feedback<T: TrackLocal + ?Sized + 'static>(
    track: Arc<T>,
    ssrc: u32,
    id: ParticipantId,
    room: RoomHandle,
) {
    tokio::spawn(async move {
        while let Some(ev) = track.poll().await {
            let TrackLocalEvent::OnRtcpPacket(packets) = ev else {
                continue;
            };
            let mut feedback = Feedback::default();
            let mut jitter_ms = None;
            for p in &packets {
                let any = p.as_any();
                if is_keyframe_request(p.as_ref()) {
                    room.send(Command::ReceiverKeyframe { id });
                } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                    for r in &rr.reports {
                        if r.ssrc == ssrc {
                            feedback.loss = Some(r.fraction_lost as f32 / 256.0);
                            // Interarrival jitter is in RTP timestamp units (90 kHz for video).
                            jitter_ms = Some(r.jitter as f64 / 90.0);
                        } else if r.ssrc == ssrc.wrapping_add(1) {
                            let loss_pct = (r.fraction_lost as u32 * 100 / 256) as u8;
                            room.send(Command::AudioLoss { id, loss_pct });
                        }
                    }
                } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                    feedback.remb_bps = Some(remb.bitrate.max(0.0) as u64);
                }
            }
            if feedback.loss.is_some() || feedback.remb_bps.is_some() {
                room.send(Command::Feedback {
                    id,
                    feedback,
                    jitter_ms,
                });
            }
        }
    });
}

/// How often the writer tells the room what it sent.
const SENT_REPORT_EVERY: Duration = Duration::from_secs(1);
/// Composite frames that may wait for the pacer; a receiver further behind than this loses
/// one and is held until a keyframe.
const VIDEO_BACKLOG: usize = 8;
/// A probe's padding goes out in steps of this.
const PADDING_TICK: Duration = Duration::from_millis(10);

/// What the audio task hands the video task.
enum VideoJob {
    Frame(Arc<EncodedVideo>),
    /// Pad up to `bps` in total until `until` (0: stop).
    Probe {
        bps: u64,
        until: Instant,
    },
}

/// Writes the room's output for one participant: audio, PLIs and REMBs at once, composite
/// frames through a second task that paces them (a keyframe is spread over time instead of
/// overflowing a slow link's queue, and audio never waits behind it) and pads for probes.
/// Reports what it sent. Ends when the room drops the participant's queue.
async fn write_media(
    link: Link,
    video: Option<VideoWriter>,
    audio: Option<Outgoing>,
    (room, id): (RoomHandle, ParticipantId),
) {
    let Link {
        mut media,
        camera,
        connected,
        pacing,
    } = link;
    let video_bytes = Arc::new(AtomicU64::new(0));
    let audio_bytes = Arc::new(AtomicU64::new(0));
    let (video_tx, video_rx) = mpsc::channel(VIDEO_BACKLOG);
    if let Some(v) = video {
        let counters = (video_bytes.clone(), audio_bytes.clone());
        tokio::spawn(
            write_video(v, video_rx, connected.clone(), pacing, counters).in_current_span(),
        );
    }
    let mut errors = 0u64;
    let mut last_sent_report = (Instant::now(), 0u64);
    while let Some(m) = media.recv().await {
        let now = Instant::now();
        let result = match m {
            MediaOut::Video(f, _) => {
                if video_tx.try_send(VideoJob::Frame(f)).is_err() {
                    // Too far behind: it lost a frame, like a receiver's PLI.
                    room.send(Command::ReceiverKeyframe { id });
                }
                Ok(())
            }
            MediaOut::Probe { bps, until } => {
                let _ = video_tx.try_send(VideoJob::Probe { bps, until });
                Ok(())
            }
            MediaOut::Audio(p) => match audio.as_ref() {
                // Before DTLS is up a write only fails; the keyframe on connect starts the picture.
                Some(out) if connected.load(Ordering::Acquire) => {
                    audio_bytes.fetch_add((p.len() + 40) as u64, Ordering::Relaxed);
                    let sample = Sample {
                        data: Bytes::from(p),
                        duration: out.duration,
                        ..Sample::new(now)
                    };
                    out.track
                        .write_sample(out.ssrc, out.pt, &sample, &[])
                        .await
                        .map_err(|e| e.to_string())
                }
                _ => Ok(()),
            },
            MediaOut::Pli => {
                let cam = camera.lock().ok().and_then(|c| c.clone());
                if let Some((track, ssrc)) = cam {
                    send_pli_to(&track, ssrc).await;
                }
                Ok(())
            }
            MediaOut::Remb(bps) => {
                let cam = camera.lock().ok().and_then(|c| c.clone());
                if let Some((track, ssrc)) = cam {
                    send_remb_to(&track, ssrc, bps).await;
                }
                Ok(())
            }
        };
        if let Err(e) = result {
            errors += 1;
            if errors.is_power_of_two() {
                debug!(errors, "write failed: {e}");
            }
        }
        let total = video_bytes.load(Ordering::Relaxed) + audio_bytes.load(Ordering::Relaxed);
        let elapsed = now.duration_since(last_sent_report.0);
        if elapsed >= SENT_REPORT_EVERY {
            let sent_bps =
                ((total - last_sent_report.1) as f64 * 8.0 / elapsed.as_secs_f64()) as u64;
            last_sent_report = (now, total);
            room.send(Command::Feedback {
                id,
                feedback: Feedback {
                    sent_bps: Some(sent_bps),
                    ..Default::default()
                },
                jitter_ms: None,
            });
        }
    }
}

/// A probe in progress: pad the composite up to `bps` in total until `until`.
struct Probing {
    bps: u64,
    started: Instant,
    until: Instant,
    bytes_at_start: u64,
}

/// The composite's writer: each frame's packets no faster than the pacing rate, padding
/// between frames while probing.
async fn write_video(
    mut v: VideoWriter,
    mut jobs: mpsc::Receiver<VideoJob>,
    connected: Arc<AtomicBool>,
    pacing: Arc<AtomicU64>,
    (bytes_out, audio_bytes): (Arc<AtomicU64>, Arc<AtomicU64>),
) {
    let mut probing: Option<Probing> = None;
    let mut errors = 0u64;
    loop {
        let job = if probing.is_some() {
            match tokio::time::timeout(PADDING_TICK, jobs.recv()).await {
                Ok(Some(j)) => Some(j),
                Ok(None) => return,
                Err(_) => None,
            }
        } else {
            match jobs.recv().await {
                Some(j) => Some(j),
                None => return,
            }
        };
        let now = Instant::now();
        match job {
            Some(VideoJob::Frame(f)) if connected.load(Ordering::Acquire) => {
                let rate = pacing.load(Ordering::Relaxed).max(100_000);
                if let Err(e) = v.write_frame(&f, rate).await {
                    errors += 1;
                    if errors.is_power_of_two() {
                        debug!(errors, "video write failed: {e}");
                    }
                }
            }
            Some(VideoJob::Frame(_)) => {}
            Some(VideoJob::Probe { bps, until }) => {
                probing = (until > now && bps > 0).then_some(Probing {
                    bps,
                    started: now,
                    until,
                    bytes_at_start: v.bytes + audio_bytes.load(Ordering::Relaxed),
                });
            }
            None => {}
        }
        if let Some(p) = probing.as_ref() {
            if now >= p.until {
                probing = None;
            } else if connected.load(Ordering::Acquire) {
                // Pad up to the probe's rate, counting what video and audio already sent:
                // on a link barely above the audio, padding on top of it would drown it.
                let due = (now.duration_since(p.started).as_secs_f64() * p.bps as f64 / 8.0) as u64;
                while v.bytes + audio_bytes.load(Ordering::Relaxed) < p.bytes_at_start + due {
                    if v.write_padding().await.is_err() {
                        probing = None;
                        break;
                    }
                }
            }
        }
        bytes_out.store(v.bytes, Ordering::Relaxed);
    }
}

/// Caps a sender's bitrate (REMB): how WHIP publishers, and browsers as an upper bound
/// beside their own estimate, learn what their tile needs.
pub(crate) async fn send_remb_to(track: &Arc<dyn TrackRemote>, ssrc: u32, bps: u32) {
    let remb = ReceiverEstimatedMaximumBitrate {
        sender_ssrc: 0,
        bitrate: bps as f32,
        ssrcs: vec![ssrc],
    };
    if let Err(e) = track.write_rtcp(vec![Box::new(remb)]).await {
        debug!("REMB not sent: {e}");
    }
}

/// Adds a candidate the client trickled.
pub async fn add_candidate(pc: &Arc<dyn PeerConnection>, c: IceCandidate) -> Result<(), PeerError> {
    pc.add_ice_candidate(RTCIceCandidateInit {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_mline_index: c.sdp_m_line_index,
        username_fragment: c.username_fragment,
        ..Default::default()
    })
    .await
    .map_err(werr)
}
