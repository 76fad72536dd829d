//! One participant's PeerConnection inside the reactor: `rtc`'s sans-IO core plus what we
//! do with its packets. Inbound RTP goes through `ingest` to the room; the room's output
//! goes out through `egress`; receivers' RTCP becomes room commands (`feedback`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::ice::tcp_type::TcpType;
use rtc::interceptor::{
    CongestionControlBuilder, NackGeneratorBuilder, NackResponderBuilder, Registry, Slot,
};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_twcc,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::RTCRtpTransceiverDirection;
use rtc::sansio::Protocol;
use rtc::shared::TaggedBytesMut;
use tessera_engine::Feedback;
use tessera_proto::IceCandidate;
use tessera_types::{ParticipantId, VideoCodec};
use tracing::{debug, info, warn};

use super::egress::{AudioOut, FrameCache, Stamp, VideoOut};
use super::ingest::{self, RtpIn, VideoIngest};
use super::{ConnState, OpenPeer, PeerEvent, PeerKey, RestartWith};
use crate::estimate::{self, Estimator};
use crate::peer::{
    self, is_keyframe_request, KeyframeRequestForwarder, PeerError, ReceiveCodecs,
    RetransmitBudget, Tapped, UnknownSsrcCounter, BALLAST_EXTENSION_URIS, MIME_H264, MIME_OPUS,
    MIME_VP8,
};
use crate::room::{Command, MediaOut, NetStats, RoomHandle};
use crate::sdp;

/// How often our ICE agent checks while connecting.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// Checks of a pair before it fails: 32 x 50 ms keeps `rtc`'s default window (7 x 200 ms)
/// for an ICE-lite offerer, whose pairs we check as the controlling agent without its
/// checks to trigger ours.
const ICE_MAX_CHECKS: u16 = 32;

/// Our DTLS role: the server (`a=setup:passive`) unless the offer is passive itself (an
/// ffmpeg-shaped WHIP publisher). As the DTLS server we answer the client's ClientHello the
/// moment it arrives; as the client `rtc` sends its own only on its next ICE tick.
fn answering_dtls_role(offer: &str) -> RTCDtlsRole {
    if sdp::setup_is_passive(offer) {
        RTCDtlsRole::Client
    } else {
        RTCDtlsRole::Server
    }
}

/// How often the room hears what was sent, and the network counters.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// What a track the participant sends is to us.
enum Inbound {
    Audio,
    Video(Box<VideoIngest>),
    /// A second track of a kind we already read: counted, dropped.
    Extra,
}

pub struct Conn {
    pub key: PeerKey,
    pub id: ParticipantId,
    pub pc: RTCPeerConnection,
    /// Our current ICE username fragment (a restart adds a new one).
    pub ufrag: String,
    /// `network.public_ip`: candidates in our answers are rewritten to it.
    public_ip: String,
    room: RoomHandle,
    events: tokio::sync::mpsc::UnboundedSender<PeerEvent>,
    connected: bool,
    pub closed: bool,
    receive: ReceiveCodecs,
    inbound: HashMap<String, (Inbound, RTCRtpReceiverId, u32)>,
    /// Track ids a renegotiation gave a receiver already in `inbound`, to its first id.
    aliases: HashMap<String, String>,
    /// The camera's receiver and SSRC, where PLIs and REMBs go.
    camera: Option<(RTCRtpReceiverId, u32)>,
    video_taken: bool,
    audio_taken: bool,
    net: NetStats,
    /// Counted by the unknown-SSRC interceptor.
    net_tap: Arc<Mutex<NetStats>>,
    video: Option<(String, VideoOut)>,
    audio: Option<(String, AudioOut)>,
    /// The composite's pacing rate (2.5 times the estimate), set by the estimator.
    pacing: Arc<AtomicU64>,
    last_report: (Instant, u64),
    write_errors: u64,
}

/// How often a lost camera packet is asked for again (every 100 ms). Unlimited (`rtc`'s
/// default) NACKs each loss every 100 ms while it stays in the 512-packet window: on a
/// sender's uplink that overflows, every drop was asked for dozens of times and answered
/// with a retransmission each, which flooded the link further (an 80 kbit/s client sent
/// 400-500 kbit/s into it). libwebrtc's receiver asks about once per round trip, a few times.
const NACKS_PER_PACKET: u16 = 3;
/// Packets kept per sent stream for retransmission: about 8 s of a 640x360 tier, far more
/// than any NACK that still helps (`rtc`'s default of 1024 kept half a minute alive).
const NACK_BUFFER: u16 = 256;

/// The ICE network types the agent uses: UDP, and TCP when ICE-TCP is on.
fn network_types(tcp: bool) -> Vec<rtc::ice::network_type::NetworkType> {
    use rtc::ice::network_type::NetworkType;
    let mut t = vec![NetworkType::Udp4, NetworkType::Udp6];
    if tcp {
        t.extend([NetworkType::Tcp4, NetworkType::Tcp6]);
    }
    t
}

fn random_u32() -> u32 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 4];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u32::from_le_bytes(b)
}

fn werr(e: impl std::fmt::Display) -> PeerError {
    PeerError::Webrtc(e.to_string())
}

impl Conn {
    /// Builds the PeerConnection for `req.offer` with host candidates on `locals`, and
    /// returns it with the answer.
    pub fn open(
        key: PeerKey,
        req: OpenPeer,
        locals: &[SocketAddr],
        tcp_locals: &[SocketAddr],
        now: Instant,
    ) -> Result<(Conn, String), PeerError> {
        let OpenPeer {
            id,
            room,
            network,
            plan,
            offer,
            events,
            start_bps,
            max_tier_bps,
        } = req;
        let mut me = peer::media_engine()?;
        // The codecs already carry `nack` and `nack pli` (peer::media_engine).
        let registry = Registry::new()
            .with(
                Slot::NackResponder,
                NackResponderBuilder::new().with_size(NACK_BUFFER).build(),
            )
            .with(
                Slot::NackGenerator,
                NackGeneratorBuilder::new()
                    .with_max_nacks_per_packet(NACKS_PER_PACKET)
                    .build(),
            );
        let registry = configure_rtcp_reports(registry);
        let registry = configure_twcc(registry, &mut me).map_err(werr)?;
        let net_tap = Arc::new(Mutex::new(NetStats::default()));
        // Before any transport-cc feedback (and for receivers that never send any): the
        // richest tier with room for its keyframes.
        let pacing = Arc::new(AtomicU64::new(
            ((start_bps.max(max_tier_bps) as f64 + 100_000.0) * estimate::PACING_FACTOR) as u64,
        ));
        let estimator = Estimator::new(
            start_bps as f64,
            Some(estimate::Report {
                room: room.clone(),
                id,
                pacing: pacing.clone(),
            }),
        );
        let registry = registry
            .with(
                Slot::CongestionControl,
                CongestionControlBuilder::new(estimator).build(),
            )
            .with(Slot::from(14_000), Tapped::new(KeyframeRequestForwarder))
            .with(
                Slot::from(14_100),
                Tapped::new(UnknownSsrcCounter::new(net_tap.clone())),
            )
            // Wire-ward of the NACK responder (4_000): it sees NACKs first.
            .with(
                Slot::from(3_500),
                Tapped::new(RetransmitBudget::new(pacing.clone(), net_tap.clone())),
            );
        let se = SettingEngineBuilder::new()
            // Full ICE, not lite: our agent's own checks keep the pair alive for clients
            // that send consent checks rarely (aiortc: every 5 s).
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_ice_timeouts(
                Some(Duration::from_millis(
                    network.ice_disconnected_timeout_ms as u64,
                )),
                Some(Duration::from_millis(network.ice_failed_timeout_ms as u64)),
                Some(Duration::from_millis(500)),
            )
            .with_network_types(network_types(!tcp_locals.is_empty()))
            // Checks every 50 ms while connecting (not 200): `rtc` also starts DTLS on this
            // tick, so it is most of the wait between ICE and media.
            .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_MAX_CHECKS))
            .with_answering_dtls_role(answering_dtls_role(&offer))
            .build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(me)
            .with_setting_engine(se)
            .with_interceptor_registry(registry)
            .build(now)
            .map_err(werr)?;
        let desc =
            RTCSessionDescription::offer(offer).map_err(|e| PeerError::BadSdp(e.to_string()))?;
        pc.set_remote_description(now, desc)
            .map_err(|e| PeerError::BadSdp(e.to_string()))?;

        let base_ssrc = random_u32() | 1;
        let mut video_sender = None;
        if let Some(c) = plan.video_out {
            let mime = match c {
                VideoCodec::H264 => MIME_H264,
                VideoCodec::Vp8 => MIME_VP8,
            };
            let track = peer::media_track(RtpCodecKind::Video, mime, base_ssrc);
            let track_id = track.track_id().to_string();
            let sender = pc
                .add_track(track)
                .map_err(|e| PeerError::BadSdp(format!("cannot send {mime}: {e}")))?;
            video_sender = Some((sender, track_id, mime, c));
        }
        let mut audio_sender = None;
        if plan.audio_out {
            let track =
                peer::media_track(RtpCodecKind::Audio, MIME_OPUS, base_ssrc.wrapping_add(1));
            let track_id = track.track_id().to_string();
            let sender = pc
                .add_track(track)
                .map_err(|e| PeerError::BadSdp(format!("cannot send Opus: {e}")))?;
            audio_sender = Some((sender, track_id));
        }
        if !plan.accept_media {
            // A viewer: send what we added, take in nothing.
            let ours: Vec<_> = [
                video_sender.as_ref().map(|v| v.0),
                audio_sender.as_ref().map(|a| a.0),
            ]
            .into_iter()
            .flatten()
            .collect();
            let ids: Vec<_> = pc.get_transceivers().collect();
            for id in ids {
                if let Some(mut t) = pc.rtp_transceiver(id) {
                    let direction = if t.sender().is_some_and(|s| ours.contains(&s)) {
                        RTCRtpTransceiverDirection::Sendonly
                    } else {
                        RTCRtpTransceiverDirection::Inactive
                    };
                    t.set_direction(direction);
                }
            }
        }
        let udp = locals.iter().map(|l| (l, "udp", TcpType::Unspecified));
        let tcp = tcp_locals.iter().map(|l| (l, "tcp", TcpType::Passive));
        for (local, network, tcp_type) in udp.chain(tcp) {
            let candidate = CandidateHostConfig {
                base_config: CandidateConfig {
                    network: network.to_owned(),
                    address: local.ip().to_string(),
                    port: local.port(),
                    component: 1,
                    ..Default::default()
                },
                tcp_type,
            }
            .new_candidate_host()
            .map_err(werr)?;
            let init = RTCIceCandidate::from(&candidate).to_json().map_err(werr)?;
            pc.add_local_candidate(init).map_err(werr)?;
        }
        let answer = pc.create_answer(None).map_err(werr)?;
        pc.set_local_description(now, answer).map_err(werr)?;
        let mut sdp_out = pc.local_description().map(|d| d.sdp).unwrap_or_default();
        if !network.public_ip.is_empty() {
            sdp_out = sdp::rewrite_candidates(&sdp_out, &network.public_ip);
        }

        let mut video = None;
        if let Some((sender, track_id, mime, codec)) = video_sender {
            let mut s = pc
                .rtp_sender(sender)
                .ok_or_else(|| werr("no video sender"))?;
            let params = s.get_parameters();
            let pt = params
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
                .map(|c| c.payload_type)
                .ok_or_else(|| PeerError::BadSdp(format!("{mime} was not negotiated")))?;
            let ballast_ids = params
                .rtp_parameters
                .header_extensions
                .iter()
                .filter(|e| BALLAST_EXTENSION_URIS.contains(&e.uri.as_str()))
                .filter_map(|e| u8::try_from(e.id).ok())
                .collect();
            let stamp = Stamp::new(base_ssrc, pt, random_u32() as u16, random_u32());
            video = Some((track_id, VideoOut::new(codec, stamp, ballast_ids)));
        }
        let mut audio = None;
        if let Some((sender, track_id)) = audio_sender {
            let mut s = pc
                .rtp_sender(sender)
                .ok_or_else(|| werr("no audio sender"))?;
            let pt = s
                .get_parameters()
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_OPUS))
                .map_or(111, |c| c.payload_type);
            let stamp = Stamp::new(
                base_ssrc.wrapping_add(1),
                pt,
                random_u32() as u16,
                random_u32(),
            );
            audio = Some((track_id, AudioOut { stamp, bytes: 0 }));
        }
        tracing::trace!(participant = %id, answer = %sdp_out, "answer");
        let receive = ReceiveCodecs::of_answer(&sdp_out);
        // The agent's random credentials (fixed ones in the setting engine would be reused
        // by an ICE restart); the demultiplexer routes by this.
        let ufrag = sdp::ice_ufrag(&sdp_out)
            .ok_or_else(|| werr("the answer has no a=ice-ufrag"))?
            .to_string();
        debug!(participant = %id, codecs = ?receive, "payload types accepted");
        let conn = Conn {
            key,
            id,
            pc,
            ufrag,
            public_ip: network.public_ip.clone(),
            room,
            events,
            connected: false,
            closed: false,
            receive,
            inbound: HashMap::new(),
            aliases: HashMap::new(),
            camera: None,
            video_taken: false,
            audio_taken: false,
            net: NetStats::default(),
            net_tap,
            video,
            audio,
            pacing,
            last_report: (now, 0),
            write_errors: 0,
        };
        Ok((conn, sdp_out))
    }

    /// An ICE restart: the client's new offer differs from its first only in its ICE
    /// credentials. The agent takes new local credentials and checks anew (the DTLS and
    /// SRTP sessions and the media carry on); returns the answer with our new ufrag in
    /// `self.ufrag`. Any other renegotiation is refused.
    pub fn restart(&mut self, with: RestartWith, now: Instant) -> Result<String, PeerError> {
        let kinds = |sdp: &str| -> Vec<String> {
            sdp::sections(sdp)
                .map(|s| s.into_iter().map(|s| s.kind).collect())
                .unwrap_or_default()
        };
        let before = self
            .pc
            .remote_description()
            .map(|d| d.sdp.clone())
            .unwrap_or_default();
        let offer = match with {
            RestartWith::Offer(o) => o,
            RestartWith::Fragment(f) => {
                sdp::restart_offer(&before, &f).map_err(|e| PeerError::BadSdp(e.0))?
            }
        };
        let ufrag = sdp::ice_ufrag(&offer)
            .ok_or_else(|| PeerError::BadSdp("the offer has no a=ice-ufrag".into()))?;
        if sdp::ice_ufrag(&before) == Some(ufrag) {
            return Err(PeerError::BadSdp(
                "a second offer must be an ICE restart (a new a=ice-ufrag): nothing else is renegotiated"
                    .into(),
            ));
        }
        if kinds(&offer) != kinds(&before) {
            return Err(PeerError::BadSdp(format!(
                "an ICE restart must offer the same media sections ({})",
                kinds(&before).join(", ")
            )));
        }
        let desc =
            RTCSessionDescription::offer(offer).map_err(|e| PeerError::BadSdp(e.to_string()))?;
        self.pc
            .set_remote_description(now, desc)
            .map_err(|e| PeerError::BadSdp(e.to_string()))?;
        let answer = self.pc.create_answer(None).map_err(werr)?;
        self.pc.set_local_description(now, answer).map_err(werr)?;
        let mut sdp_out = self
            .pc
            .local_description()
            .map(|d| d.sdp)
            .unwrap_or_default();
        if !self.public_ip.is_empty() {
            sdp_out = sdp::rewrite_candidates(&sdp_out, &self.public_ip);
        }
        let local = sdp::ice_ufrag(&sdp_out)
            .ok_or_else(|| werr("the answer has no a=ice-ufrag"))?
            .to_string();
        info!(participant = %self.id, old = %self.ufrag, new = %local, "ICE restart");
        self.ufrag = local;
        Ok(sdp_out)
    }

    pub fn add_candidate(&mut self, c: IceCandidate) -> Result<(), PeerError> {
        debug!(participant = %self.id, candidate = %c.candidate, "remote candidate");
        self.pc
            .add_remote_candidate(RTCIceCandidateInit {
                candidate: c.candidate,
                sdp_mid: c.sdp_mid,
                sdp_mline_index: c.sdp_m_line_index,
                username_fragment: c.username_fragment,
                ..Default::default()
            })
            .map_err(werr)
    }

    /// Whether ICE and DTLS are up (media flows).
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// A datagram for this connection.
    pub fn read(&mut self, msg: TaggedBytesMut) {
        if let Err(e) = self.pc.handle_read(msg) {
            debug!(participant = %self.id, "read: {e}");
        }
    }

    /// When this connection next needs `on_timeout`.
    pub fn next_due(&mut self) -> Option<Instant> {
        let pc = self.pc.poll_timeout();
        let video = self
            .video
            .as_ref()
            .filter(|_| self.connected)
            .and_then(|(_, v)| v.next_due());
        match (pc, video) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn on_timeout(&mut self, now: Instant) {
        if self.pc.poll_timeout().is_some_and(|t| t <= now) {
            if let Err(e) = self.pc.handle_timeout(now) {
                debug!(participant = %self.id, "timeout: {e}");
            }
        }
        self.pace(now);
        self.report(now);
    }

    /// Sends what the pacer lets go now.
    fn pace(&mut self, now: Instant) {
        if !self.connected {
            return;
        }
        let audio_bytes = self.audio.as_ref().map_or(0, |(_, a)| a.bytes);
        let rate = self.pacing.load(Ordering::Relaxed);
        let Some((track_id, v)) = self.video.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        v.poll(now, rate, audio_bytes, &mut out);
        let track_id = track_id.clone();
        for p in out {
            self.write_rtp(now, &track_id, p);
        }
    }

    fn write_rtp(&mut self, now: Instant, track_id: &str, packet: rtc::rtp::Packet) {
        let msg = TaggedRTCMessage {
            now,
            message: RTCMessage::RtpPacket(track_id.to_string(), packet),
        };
        if let Err(e) = self.pc.handle_write(msg) {
            self.write_errors += 1;
            if self.write_errors.is_power_of_two() {
                debug!(participant = %self.id, errors = self.write_errors, "write failed: {e}");
            }
        }
    }

    /// What the room sends this participant.
    pub fn media(&mut self, m: MediaOut, cache: &mut FrameCache, now: Instant) {
        match m {
            MediaOut::Video(frame, _) => {
                if !self.connected {
                    return;
                }
                let Some((_, v)) = self.video.as_mut() else {
                    return;
                };
                let p = cache.get(&frame, v.codec);
                if !v.push_frame(&p) {
                    // Too far behind: it lost a frame, like a receiver's PLI.
                    self.room.send(Command::ReceiverKeyframe { id: self.id });
                }
                self.pace(now);
            }
            MediaOut::Audio(payload, pts) => {
                if !self.connected {
                    return;
                }
                let Some((track_id, a)) = self.audio.as_mut() else {
                    return;
                };
                let p = a.packet(payload, pts);
                let track_id = track_id.clone();
                self.write_rtp(now, &track_id, p);
            }
            MediaOut::Probe { bps, until } => {
                let audio_bytes = self.audio.as_ref().map_or(0, |(_, a)| a.bytes);
                if let Some((_, v)) = self.video.as_mut() {
                    v.probe(bps, until, now, audio_bytes);
                }
            }
            MediaOut::Pli => self.send_pli(now),
            MediaOut::Remb(bps) => {
                if let Some((rid, ssrc)) = self.camera {
                    let remb = ReceiverEstimatedMaximumBitrate {
                        sender_ssrc: 0,
                        bitrate: bps as f32,
                        ssrcs: vec![ssrc],
                    };
                    if let Some(mut r) = self.pc.rtp_receiver(rid) {
                        let _ = r.write_rtcp(now, vec![Box::new(remb)]);
                    }
                }
            }
        }
    }

    fn send_pli(&mut self, now: Instant) {
        if let Some((rid, ssrc)) = self.camera {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            };
            if let Some(mut r) = self.pc.rtp_receiver(rid) {
                if let Err(e) = r.write_rtcp(now, vec![Box::new(pli)]) {
                    debug!("PLI not sent: {e}");
                }
            }
        }
    }

    /// Drains the core: datagrams to send (into `out`), events, and media read.
    pub fn drain(&mut self, now: Instant, out: &mut Vec<TaggedBytesMut>) {
        loop {
            let mut busy = false;
            while let Some(ev) = self.pc.poll_event() {
                busy = true;
                self.event(ev, now);
            }
            while let Some(m) = self.pc.poll_read() {
                busy = true;
                self.message(m.message, now);
            }
            while let Some(w) = self.pc.poll_write() {
                busy = true;
                out.push(w);
            }
            if !busy {
                break;
            }
        }
    }

    fn event(&mut self, ev: RTCPeerConnectionEvent, now: Instant) {
        match ev {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                debug!(participant = %self.id, %state, "connection state");
                let was = self.connected;
                self.connected = state == RTCPeerConnectionState::Connected;
                let s = match state {
                    RTCPeerConnectionState::Connected => ConnState::Connected,
                    RTCPeerConnectionState::Failed => ConnState::Failed,
                    RTCPeerConnectionState::Closed => ConnState::Closed,
                    _ => return,
                };
                if self.connected && !was {
                    // Nothing was sent before the path was up: start with a keyframe.
                    self.room.send(Command::ReceiverConnected { id: self.id });
                    self.last_report = (now, self.sent_bytes());
                }
                let _ = self.events.send(PeerEvent::State(s));
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                let kind = self
                    .pc
                    .rtp_receiver(init.receiver_id)
                    .map(|r| r.track().kind());
                let audio = kind == Some(RtpCodecKind::Audio);
                // A renegotiation (ICE restart) opens the same stream again, under a new
                // receiver (and perhaps a new track id): its packets keep going to the state the first one
                // has, and keyframe requests go through the new receiver.
                if let Some(first) = self
                    .inbound
                    .iter()
                    .find(|(_, (_, _, ssrc))| *ssrc == init.ssrc)
                    .map(|(id, _)| id.clone())
                {
                    debug!(participant = %self.id, ssrc = init.ssrc, audio, "track opened again after renegotiation");
                    if let Some(entry) = self.inbound.get_mut(&first) {
                        entry.1 = init.receiver_id;
                    }
                    if self.camera.is_some_and(|(_, ssrc)| ssrc == init.ssrc) {
                        self.camera = Some((init.receiver_id, init.ssrc));
                    }
                    if first != init.track_id {
                        self.aliases.insert(init.track_id, first);
                    }
                    return;
                }
                let taken = if audio {
                    &mut self.audio_taken
                } else {
                    &mut self.video_taken
                };
                let inbound = if std::mem::replace(taken, true) {
                    warn!(participant = %self.id, ssrc = init.ssrc, audio, "a second track of one kind; ignoring it");
                    self.net.extra_tracks += 1;
                    Inbound::Extra
                } else if audio {
                    info!(participant = %self.id, ssrc = init.ssrc, "receiving audio");
                    Inbound::Audio
                } else {
                    info!(participant = %self.id, ssrc = init.ssrc, "receiving video");
                    self.camera = Some((init.receiver_id, init.ssrc));
                    Inbound::Video(Box::new(VideoIngest::new(self.receive.video.clone(), now)))
                };
                self.inbound
                    .insert(init.track_id, (inbound, init.receiver_id, init.ssrc));
            }
            _ => {}
        }
    }

    fn message(&mut self, m: RTCMessage, now: Instant) {
        match m {
            RTCMessage::RtpPacket(track_id, p) => {
                let track_id = self.aliases.get(&track_id).cloned().unwrap_or(track_id);
                let Some((inbound, _, _)) = self.inbound.get_mut(&track_id) else {
                    self.net.rtp_unknown_ssrc += 1;
                    return;
                };
                let rtp = RtpIn::from(p);
                match inbound {
                    Inbound::Audio => {
                        if let Some(payload) =
                            ingest::audio(&mut self.net, &self.receive.audio, &rtp)
                        {
                            self.room.send(Command::Audio {
                                id: self.id,
                                packet: payload.to_vec(),
                            });
                        }
                    }
                    Inbound::Video(v) => {
                        let out = v.push(rtp, now, &mut self.net);
                        for (codec, data) in out.frames {
                            self.room.send(Command::Video {
                                id: self.id,
                                codec,
                                data,
                            });
                        }
                        if out.pli {
                            self.send_pli(now);
                        }
                    }
                    Inbound::Extra => {}
                }
            }
            RTCMessage::RtcpPacket(track_id, packets) => {
                let ours = self.video.as_ref().is_some_and(|(t, _)| *t == track_id)
                    || self.audio.as_ref().is_some_and(|(t, _)| *t == track_id);
                if ours {
                    self.feedback(&packets);
                }
            }
            _ => {}
        }
    }

    /// Receivers' feedback on the composite and mix: PLI/FIR make the tier emit a
    /// keyframe; receiver reports (loss) and REMB (estimate) go to the room's tier choice,
    /// and the loss on the audio to its Opus encoder's FEC. (Transport-cc feedback is read
    /// by the congestion-control interceptor, whose estimator reports to the room itself.)
    fn feedback(&mut self, packets: &[Box<dyn rtc::rtcp::Packet>]) {
        let video_ssrc = self.video.as_ref().map(|(_, v)| v.stamp.ssrc);
        let audio_ssrc = self.audio.as_ref().map(|(_, a)| a.stamp.ssrc);
        let mut feedback = Feedback::default();
        let mut jitter_ms = None;
        for p in packets {
            let any = p.as_any();
            if is_keyframe_request(p.as_ref()) {
                self.room.send(Command::ReceiverKeyframe { id: self.id });
            } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                for r in &rr.reports {
                    if Some(r.ssrc) == video_ssrc {
                        feedback.loss = Some(r.fraction_lost as f32 / 256.0);
                        // Interarrival jitter is in RTP timestamp units (90 kHz for video).
                        jitter_ms = Some(r.jitter as f64 / 90.0);
                    } else if Some(r.ssrc) == audio_ssrc {
                        let loss_pct = (r.fraction_lost as u32 * 100 / 256) as u8;
                        self.room.send(Command::AudioLoss {
                            id: self.id,
                            loss_pct,
                        });
                    }
                }
            } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                feedback.remb_bps = Some(remb.bitrate.max(0.0) as u64);
            }
        }
        if feedback.loss.is_some() || feedback.remb_bps.is_some() {
            self.room.send(Command::Feedback {
                id: self.id,
                feedback,
                jitter_ms,
            });
        }
    }

    fn sent_bytes(&self) -> u64 {
        self.video.as_ref().map_or(0, |(_, v)| v.bytes)
            + self.audio.as_ref().map_or(0, |(_, a)| a.bytes)
    }

    /// Tells the room what was sent and the network counters, once a second.
    fn report(&mut self, now: Instant) {
        let elapsed = now.duration_since(self.last_report.0);
        if elapsed < REPORT_EVERY {
            return;
        }
        let total = self.sent_bytes();
        if self.connected && self.video.is_some() {
            let sent_bps =
                ((total - self.last_report.1) as f64 * 8.0 / elapsed.as_secs_f64()) as u64;
            self.room.send(Command::Feedback {
                id: self.id,
                feedback: Feedback {
                    sent_bps: Some(sent_bps),
                    ..Default::default()
                },
                jitter_ms: None,
            });
        }
        self.last_report = (now, total);
        if let Ok(t) = self.net_tap.lock() {
            self.net.rtp_unknown_ssrc = self.net.rtp_unknown_ssrc.max(t.rtp_unknown_ssrc);
            self.net.retransmissions_refused = t.retransmissions_refused;
        }
        self.room.send(Command::NetStats {
            id: self.id,
            stats: self.net,
        });
    }

    pub fn close(&mut self) {
        self.closed = true;
        if let Err(e) = self.pc.close() {
            debug!(participant = %self.id, "close: {e}");
        }
    }
}
