//! A WebRTC participant in Rust, for tests and load tools: joins over `/ws`, sends
//! pre-encoded media (so the client itself costs almost nothing), and records the
//! composite and audio the server sends back. Answers a PLI by restarting its video at
//! the file's first (key) frame.
//!
//! A client joined with `join_following_hints` has its camera at several sizes and follows
//! the server's `send_hint` as a browser would: it sends the largest size inside the
//! hinted tile, switching at the next keyframe, and no more frames per second than hinted.
//!
//! A raw client (`join_raw`) sends nothing by itself: a test puts each RTP packet on the
//! wire with `send_rtp`, header fields and payload as it likes, for testing bad input.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rtc::interceptor::{Packet, Slot, TaggedPacket};
use rtc::media::Sample;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::codec::vp8::Vp8Payloader;
use rtc::rtp::packetizer::Payloader;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tessera_proto::{parse_server, ClientMessage, IceCandidate, ServerMessage};
use tessera_types::VideoCodec;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::Track;
use webrtc::peer_connection::{
    configure_nack, configure_rtcp_reports, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, Registry,
    SettingEngineBuilder,
};

mod calls;
pub mod loopback;

use crate::media::ingest::{RtpIn, VideoIngest};
use crate::peer::{self, KeyframeRequestForwarder, Tap, Tapped};
use crate::reassembly;
use crate::room::NetStats;

/// Encoded media to send: whole frames (IVF VP8 frames or Annex-B access units), first
/// one a keyframe, and Opus packets of 20 ms. The default sends nothing and receives both.
#[derive(Clone)]
pub struct Media {
    pub video: Option<(VideoCodec, Vec<Vec<u8>>)>,
    pub video_fps: u32,
    pub audio: Vec<Vec<u8>>,
    /// Join token to present (`tessera token`), for servers with `auth.token_secret`.
    pub token: Option<String>,
    /// The output tier to ask for in `join` (None: the room's default).
    pub tier: Option<String>,
    /// Offer to receive the composite (false with no camera: an audio-only participant).
    pub receive_video: bool,
    /// The layout to ask for in `join` (None: the room's).
    pub layout: Option<String>,
}

impl Default for Media {
    fn default() -> Self {
        Media {
            video: None,
            video_fps: 30,
            audio: Vec::new(),
            token: None,
            tier: None,
            receive_video: true,
            layout: None,
        }
    }
}

/// One size of a camera clip, for a client that follows `send_hint`.
#[derive(Clone, Debug)]
pub struct Rendition {
    pub width: u32,
    pub height: u32,
    /// Whole frames, as in `Media::video`. The renditions of one camera are the same clip:
    /// frame `i` of each shows the same moment, keyframes at the same indices.
    pub frames: Vec<Vec<u8>>,
}

/// A camera at several sizes: what `join_following_hints` switches between.
#[derive(Clone, Debug, Default)]
pub struct Ladder {
    pub renditions: Vec<Rendition>,
    /// The rendition sent until the first hint arrives.
    pub start: usize,
}

impl Ladder {
    /// The rendition a hint of `width` x `height` asks for: the largest (by area) inside it,
    /// else the smallest.
    pub fn pick(&self, width: u32, height: u32) -> usize {
        let area = |i: &usize| {
            let r = &self.renditions[*i];
            r.width as u64 * r.height as u64
        };
        let all = 0..self.renditions.len();
        all.clone()
            .filter(|&i| self.renditions[i].width <= width && self.renditions[i].height <= height)
            .max_by_key(area)
            .or_else(|| all.min_by_key(area))
            .unwrap_or(0)
    }
}

/// What a client following hints sends now, and how it got there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sending {
    pub width: u32,
    pub height: u32,
    /// Frames per second: the clip's, or the hint's if that is lower.
    pub fps: u32,
    /// `send_hint` messages received.
    pub hints: u64,
    /// Size changes made (each at a keyframe).
    pub switches: u64,
    pub frames_sent: u64,
    /// Encoded video bytes sent (frames, before RTP).
    pub bytes_sent: u64,
}

/// A `send_hint` for the camera as the sending task needs it: width, height, fps.
type HintSize = Option<(u32, u32, u32)>;

/// Tracks a raw client offers; it sends on them only what `Client::send_rtp` is given.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawTracks {
    /// A camera track offering every video codec, this one first.
    pub video: Option<VideoCodec>,
    /// A microphone track (Opus).
    pub audio: bool,
    /// A second camera track, with its own m-line and SSRC.
    pub second_video: bool,
}

/// Which of a raw client's tracks a packet goes out on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawTrack {
    Video,
    Audio,
    SecondVideo,
}

/// One RTP packet as a test wants it on the wire.
#[derive(Clone, Debug, Default)]
pub struct RtpPacket {
    /// `None`: the track's own SSRC; anything else goes out as given, unannounced.
    pub ssrc: Option<u32>,
    /// `None`: the payload type negotiated for the track's codec; anything else goes out as
    /// given, negotiated or not.
    pub payload_type: Option<u8>,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Vec<u8>,
}

/// An encoded frame (a VP8 frame or an Annex-B access unit) cut into RTP payloads the size
/// `TrackLocalStaticSample` makes, for `Client::send_rtp`.
pub fn packetize(codec: VideoCodec, frame: &[u8]) -> Vec<Vec<u8>> {
    // 1200-byte packets less the 12-byte RTP header, as webrtc-rs sends.
    const MTU: usize = 1188;
    let frame = Bytes::copy_from_slice(frame);
    let payloads = match codec {
        VideoCodec::Vp8 => Vp8Payloader::default().payload(MTU, &frame),
        VideoCodec::H264 => H264Payloader::default().payload(MTU, &frame),
    };
    payloads
        .map(|v| v.into_iter().map(|p| p.to_vec()).collect())
        .unwrap_or_default()
}

/// Packets to re-address on their way out, by (SSRC, sequence number) as sent: the SSRC and
/// payload type they carry on the wire.
type Rewrites = Arc<Mutex<HashMap<(u32, u16), (u32, u8)>>>;

/// Re-addresses the packets `send_rtp` marked. It sits wire-side of every other interceptor,
/// past webrtc-rs's sender, which only lets a track send its own SSRC and negotiated payload
/// types; retransmissions pass it too, so they go out as the original did.
struct Rewriter {
    rewrites: Rewrites,
}

impl Tap for Rewriter {
    fn on_write(&mut self, msg: &mut TaggedPacket) {
        if let Packet::Rtp(p) = &mut msg.message.packet {
            let key = (p.header.ssrc, p.header.sequence_number);
            if let Some((ssrc, pt)) = self.rewrites.lock().ok().and_then(|r| r.get(&key).copied()) {
                p.header.ssrc = ssrc;
                p.header.payload_type = pt;
            }
        }
    }
}

/// At most this many RTP arrivals and sender reports are kept per client.
const MAX_TIMING: usize = 4000;

/// When RTP and RTCP sender reports arrived, for lip-sync checks: what a browser pairs to
/// line audio up with video.
#[derive(Default)]
pub struct Timing {
    /// (SSRC, RTP timestamp, wall clock at arrival) of the first packet of each timestamp.
    pub rtp: Vec<(u32, u32, std::time::SystemTime)>,
    /// (SSRC, NTP time, RTP time) of each sender report.
    pub sender_reports: Vec<(u32, u64, u32)>,
}

/// Records `Timing` on the read side.
struct TimingTap {
    timing: Arc<Mutex<Timing>>,
    last: HashMap<u32, u32>,
}

impl Tap for TimingTap {
    fn on_read(&mut self, msg: &mut TaggedPacket) {
        let Ok(mut t) = self.timing.lock() else {
            return;
        };
        match &msg.message.packet {
            Packet::Rtp(p) => {
                let (ssrc, ts) = (p.header.ssrc, p.header.timestamp);
                if self.last.insert(ssrc, ts) != Some(ts) && t.rtp.len() < MAX_TIMING {
                    t.rtp.push((ssrc, ts, std::time::SystemTime::now()));
                }
            }
            Packet::Rtcp(packets) => {
                for sr in packets
                    .iter()
                    .filter_map(|p| p.as_any().downcast_ref::<SenderReport>())
                {
                    if t.sender_reports.len() < MAX_TIMING {
                        t.sender_reports.push((sr.ssrc, sr.ntp_time, sr.rtp_time));
                    }
                }
            }
            _ => {}
        }
    }
}

/// What the client received and saw, for assertions.
#[derive(Default)]
pub struct Received {
    pub codec: Option<VideoCodec>,
    /// Encoded composite frames, in order, starting at a keyframe.
    pub video: Vec<Vec<u8>>,
    pub audio: Vec<Vec<u8>>,
    pub messages: Vec<ServerMessage>,
    pub first_frame_at: Option<Instant>,
    pub plis_received: u64,
    pub connected_at: Option<Instant>,
    /// The SSRCs of the composite's audio and video, once their tracks arrived.
    pub audio_ssrc: Option<u32>,
    pub video_ssrc: Option<u32>,
}

pub struct Client {
    pub id: String,
    pub received: Arc<Mutex<Received>>,
    /// RTP arrivals and sender reports (see `Timing`).
    pub timing: Arc<Mutex<Timing>>,
    pub joined_at: Instant,
    /// What the camera sends now (size and hints: clients from `join_following_hints` only).
    pub sending: Arc<Mutex<Sending>>,
    pc: Arc<dyn PeerConnection>,
    ws_out: mpsc::UnboundedSender<ClientMessage>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The tracks `send_rtp` writes to, with their SSRCs.
    raw: Vec<(RawTrack, Arc<TrackLocalStaticSample>, u32)>,
    rewrites: Rewrites,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("signalling: {0}")]
    Signalling(String),
    #[error("WebRTC: {0}")]
    Webrtc(String),
    #[error("server refused: {0:?}")]
    Refused(Box<ServerMessage>),
}

fn werr(e: impl std::fmt::Display) -> ClientError {
    ClientError::Webrtc(e.to_string())
}

struct ClientHandler {
    candidates: mpsc::UnboundedSender<Option<IceCandidate>>,
    received: Arc<Mutex<Received>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for ClientHandler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Some(c) = calls::candidate_of(&event) {
            let _ = self.candidates.send(Some(c));
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.candidates.send(None);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected {
            if let Ok(mut r) = self.received.lock() {
                r.connected_at.get_or_insert_with(Instant::now);
            }
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let Some((ssrc, mime)) = calls::track_codec(&track).await else {
            return;
        };
        let received = self.received.clone();
        if mime.eq_ignore_ascii_case("audio/opus") {
            if let Ok(mut r) = received.lock() {
                r.audio_ssrc = Some(ssrc);
            }
            tokio::spawn(async move {
                while let Some(ev) = track.poll().await {
                    match ev {
                        TrackRemoteEvent::OnRtpPacket(p) => {
                            if let Ok(mut r) = received.lock() {
                                r.audio.push(p.payload.to_vec());
                            }
                        }
                        TrackRemoteEvent::OnEnded => break,
                        _ => {}
                    }
                }
            });
            return;
        }
        let codec = if mime.eq_ignore_ascii_case("video/H264") {
            VideoCodec::H264
        } else {
            VideoCodec::Vp8
        };
        if let Ok(mut r) = received.lock() {
            r.codec = Some(codec);
            r.video_ssrc = Some(ssrc);
        }
        tokio::spawn(async move {
            // The server's own ingest: every payload type is this track's codec.
            let mut ingest =
                VideoIngest::new((0..128).map(|pt| (pt, codec)).collect(), Instant::now());
            let mut net = NetStats::default();
            let (mut lost, mut broken, mut seen_frame) = (0, false, false);
            let started = Instant::now();
            while let Some(ev) = track.poll().await {
                let p = match ev {
                    TrackRemoteEvent::OnRtpPacket(p) => p,
                    TrackRemoteEvent::OnEnded => break,
                    _ => continue,
                };
                let rtp = RtpIn::from(p);
                let out = ingest.push(rtp, Instant::now(), &mut net);
                let got_frame = !out.frames.is_empty();
                if got_frame {
                    if let Ok(mut r) = received.lock() {
                        r.first_frame_at.get_or_insert_with(Instant::now);
                        r.video.extend(out.frames.into_iter().map(|(_, f)| f));
                    }
                }
                // Only after a loss, until a frame repairs it: the server sends each new
                // receiver a keyframe on its own, and a browser does not ask for one before
                // its first frame either.
                broken = (broken || net.video_frames_lost > lost) && !got_frame;
                lost = net.video_frames_lost;
                // No picture a second after the first packet: the first keyframe was lost.
                seen_frame |= got_frame;
                let late = !seen_frame && started.elapsed() >= Duration::from_secs(1);
                if out.pli && (broken || late) {
                    calls::send_pli_to(&track, ssrc).await;
                }
            }
        });
    }
}

impl Client {
    /// Joins `room` on the server at `base` (`http://127.0.0.1:PORT`) and starts sending
    /// `media`. Returns once the server has answered.
    pub async fn join(
        base: &str,
        room: &str,
        name: &str,
        media: Media,
    ) -> Result<Client, ClientError> {
        Self::start(base, room, name, media, RawTracks::default(), None).await
    }

    /// Joins like `join`, with the camera at every size in `ladder` (in `media.video`'s
    /// codec; `media.video`'s own frames are not sent): it starts with `ladder.start` and
    /// follows each `send_hint` for the camera, switching to `Ladder::pick`'s size at the
    /// next keyframe of that size and sending at most the hinted fps (the clip's frames
    /// paced slower, so every frame still decodes). `Client::sending` shows where it is.
    pub async fn join_following_hints(
        base: &str,
        room: &str,
        name: &str,
        media: Media,
        ladder: Ladder,
    ) -> Result<Client, ClientError> {
        if ladder.renditions.is_empty() || media.video.is_none() {
            return Err(ClientError::Webrtc(
                "join_following_hints needs a camera and at least one rendition".into(),
            ));
        }
        Self::start(base, room, name, media, RawTracks::default(), Some(ladder)).await
    }

    /// Joins with `tracks` and sends nothing: the caller writes every packet with
    /// `send_rtp`. PLIs on the camera track are counted in `Received::plis_received`.
    pub async fn join_raw(
        base: &str,
        room: &str,
        name: &str,
        tracks: RawTracks,
    ) -> Result<Client, ClientError> {
        let media = Media {
            video: tracks.video.map(|c| (c, Vec::new())),
            video_fps: 30,
            audio: Vec::new(),
            receive_video: true,
            ..Media::default()
        };
        Self::start(base, room, name, media, tracks, None).await
    }

    async fn start(
        base: &str,
        room: &str,
        name: &str,
        media: Media,
        raw: RawTracks,
        ladder: Option<Ladder>,
    ) -> Result<Client, ClientError> {
        let joined_at = Instant::now();
        let url = format!("{}/ws", base.replacen("http", "ws", 1));
        let (ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .map_err(|e| ClientError::Signalling(format!("{url}: {e}")))?;
        let (mut ws_tx, mut ws_rx) = ws.split();
        let send = |m: ClientMessage| Message::text(m.to_json());
        ws_tx
            .send(send(ClientMessage::Join {
                room: room.into(),
                name: name.into(),
                video: media.video.is_some(),
                audio: !media.audio.is_empty() || raw.audio,
                tier: media.tier.clone(),
                token: media.token.clone(),
                display: None,
                layout: media.layout.clone(),
            }))
            .await
            .map_err(|e| ClientError::Signalling(e.to_string()))?;
        let next = |m: Option<Result<Message, _>>| -> Result<ServerMessage, ClientError> {
            match m {
                Some(Ok(Message::Text(t))) => {
                    parse_server(&t).map_err(|e| ClientError::Signalling(e.0))
                }
                other => Err(ClientError::Signalling(format!("unexpected {other:?}"))),
            }
        };
        let id = match next(ws_rx.next().await)? {
            ServerMessage::Joined { id, .. } => id,
            other => return Err(ClientError::Refused(Box::new(other))),
        };

        let received = Arc::new(Mutex::new(Received::default()));
        let sending = Arc::new(Mutex::new(Sending::default()));
        let (cand_tx, mut cand_rx) = mpsc::unbounded_channel();
        let mut me = peer::media_engine().map_err(werr)?;
        let registry = configure_nack(Registry::new(), &mut me);
        let rewrites = Rewrites::default();
        let timing = Arc::new(Mutex::new(Timing::default()));
        let registry = configure_rtcp_reports(registry)
            .with(Slot::from(14_000), Tapped::new(KeyframeRequestForwarder))
            .with(
                Slot::from(200),
                Tapped::new(TimingTap {
                    timing: timing.clone(),
                    last: HashMap::new(),
                }),
            )
            .with(
                Slot::from(100),
                Tapped::new(Rewriter {
                    rewrites: rewrites.clone(),
                }),
            );
        let se = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_network_types(vec![rtc::ice::network_type::NetworkType::Udp4])
            .with_ice_connection_attempts(Some(Duration::from_millis(50)), None)
            .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
            .build();
        let pc: Arc<dyn PeerConnection> = Arc::new(
            PeerConnectionBuilder::new()
                .with_configuration(RTCConfigurationBuilder::new().build())
                .with_media_engine(me)
                .with_setting_engine(se)
                .with_interceptor_registry(registry)
                .with_handler(Arc::new(ClientHandler {
                    candidates: cand_tx,
                    received: received.clone(),
                }))
                .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
                .build()
                .await
                .map_err(werr)?,
        );

        let mut tasks = Vec::new();
        let ssrc =
            0x5e55_0000 | (id.len() as u32) << 8 | (joined_at.elapsed().subsec_nanos() & 0xff);
        let mut video_track = None;
        let mut raw_tracks = Vec::new();
        match &media.video {
            Some((codec, _)) => {
                let mime = match codec {
                    VideoCodec::Vp8 => peer::MIME_VP8,
                    VideoCodec::H264 => peer::MIME_H264,
                };
                let t = calls::new_track(RtpCodecKind::Video, mime, ssrc).map_err(werr)?;
                pc.add_track(t.clone() as Arc<dyn TrackLocal>)
                    .await
                    .map_err(werr)?;
                if raw.video.is_some() {
                    // Offer every video codec on this m-line, so a test can switch between
                    // them mid-stream (webrtc-rs offers only the track's codec otherwise).
                    let track_id = t.track_id().await;
                    for tr in pc.get_transceivers().await {
                        let Ok(Some(sender)) = tr.sender().await else {
                            continue;
                        };
                        if sender.track().track_id().await == track_id {
                            tr.set_codec_preferences(peer::video_codecs(*codec))
                                .await
                                .map_err(werr)?;
                        }
                    }
                    raw_tracks.push((RawTrack::Video, t.clone(), ssrc));
                }
                if raw.second_video {
                    let s2 = ssrc + 2;
                    let t2 = calls::new_track(RtpCodecKind::Video, mime, s2).map_err(werr)?;
                    pc.add_track(t2.clone() as Arc<dyn TrackLocal>)
                        .await
                        .map_err(werr)?;
                    raw_tracks.push((RawTrack::SecondVideo, t2, s2));
                }
                video_track = Some(t);
            }
            None if !media.receive_video => {}
            None => {
                pc.add_transceiver_from_kind(
                    RtpCodecKind::Video,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(werr)?;
            }
        }
        let mut audio_track = None;
        if media.audio.is_empty() && !raw.audio {
            pc.add_transceiver_from_kind(
                RtpCodecKind::Audio,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .await
            .map_err(werr)?;
        } else {
            let t =
                calls::new_track(RtpCodecKind::Audio, peer::MIME_OPUS, ssrc + 1).map_err(werr)?;
            pc.add_track(t.clone() as Arc<dyn TrackLocal>)
                .await
                .map_err(werr)?;
            if raw.audio {
                raw_tracks.push((RawTrack::Audio, t.clone(), ssrc + 1));
            }
            audio_track = Some(t);
        }

        let offer = pc.create_offer(None).await.map_err(werr)?;
        pc.set_local_description(offer.clone())
            .await
            .map_err(werr)?;
        ws_tx
            .send(send(ClientMessage::Offer { sdp: offer.sdp }))
            .await
            .map_err(|e| ClientError::Signalling(e.to_string()))?;

        // Signalling loop: answers, candidates both ways, events into `received`.
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<ClientMessage>();
        let (hint_tx, hint_rx) = tokio::sync::watch::channel::<HintSize>(None);
        let pc2 = pc.clone();
        let rec2 = received.clone();
        tasks.push(tokio::spawn(async move {
            let mut answered = false;
            let mut early: Vec<IceCandidate> = Vec::new();
            loop {
                tokio::select! {
                    c = cand_rx.recv() => {
                        let Some(c) = c else { break };
                        if ws_tx.send(send(ClientMessage::Candidate { candidate: c })).await.is_err() { break; }
                    }
                    m = out_rx.recv() => {
                        let Some(m) = m else { break };
                        let leave = m == ClientMessage::Leave;
                        let _ = ws_tx.send(send(m)).await;
                        if leave { let _ = ws_tx.close().await; break; }
                    }
                    m = ws_rx.next() => {
                        let Ok(msg) = next(m) else { break };
                        match &msg {
                            ServerMessage::Answer { sdp } => {
                                if let Ok(d) = RTCSessionDescription::answer(sdp.clone()) {
                                    let _ = pc2.set_remote_description(d).await;
                                }
                                answered = true;
                                for c in early.drain(..) {
                                    let _ = calls::add_candidate(&pc2, c).await;
                                }
                            }
                            ServerMessage::Candidate { candidate: Some(c) } => {
                                if answered {
                                    let _ = calls::add_candidate(&pc2, c.clone()).await;
                                } else {
                                    early.push(c.clone());
                                }
                            }
                            ServerMessage::SendHint { kind, width, height, fps, .. }
                                if kind == "camera" =>
                            {
                                hint_tx.send_replace(Some((*width, *height, *fps)));
                            }
                            _ => {}
                        }
                        if let Ok(mut r) = rec2.lock() {
                            r.messages.push(msg);
                        }
                    }
                }
            }
        }));

        if let (Some(track), Some((_, frames))) = (video_track, media.video.clone()) {
            let restart = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (r2, t2, rec3) = (restart.clone(), track.clone(), received.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(ev) = t2.poll().await {
                    let TrackLocalEvent::OnRtcpPacket(packets) = ev else {
                        continue;
                    };
                    if packets
                        .iter()
                        .any(|p| peer::is_keyframe_request(p.as_ref()))
                    {
                        r2.store(true, std::sync::atomic::Ordering::Relaxed);
                        if let Ok(mut r) = rec3.lock() {
                            r.plis_received += 1;
                        }
                    }
                }
            }));
            let fps = media.video_fps.max(1);
            match (ladder, media.video.as_ref()) {
                (Some(ladder), Some((codec, _))) => {
                    tasks.push(tokio::spawn(ladder_loop(
                        LadderSender {
                            track,
                            ssrc,
                            codec: *codec,
                            ladder,
                            clip_fps: fps,
                            restart,
                            pc: pc.clone(),
                            sending: sending.clone(),
                        },
                        hint_rx,
                    )));
                }
                _ => {
                    tasks.push(tokio::spawn(send_loop(
                        track,
                        ssrc,
                        frames,
                        fps,
                        Some(restart),
                        pc.clone(),
                        Some(sending.clone()),
                    )));
                }
            }
        }
        if let Some(track) = audio_track {
            tasks.push(tokio::spawn(send_loop(
                track,
                ssrc + 1,
                media.audio.clone(),
                50,
                None,
                pc.clone(),
                None,
            )));
        }
        Ok(Client {
            id,
            received,
            timing,
            joined_at,
            sending,
            pc,
            ws_out: out_tx,
            tasks,
            raw: raw_tracks,
            rewrites,
        })
    }

    pub fn send(&self, msg: ClientMessage) {
        let _ = self.ws_out.send(msg);
    }

    /// Puts one packet on the wire on a raw client's `track` (once connected).
    pub async fn send_rtp(&self, track: RawTrack, packet: RtpPacket) -> Result<(), ClientError> {
        let (t, ssrc) = self
            .raw
            .iter()
            .find(|(k, _, _)| *k == track)
            .map(|(_, t, ssrc)| (t.clone(), *ssrc))
            .ok_or_else(|| werr(format!("this client has no raw {track:?} track")))?;
        let pt = negotiated_pt(&self.pc, &t)
            .await
            .ok_or_else(|| werr(format!("no payload type negotiated for {track:?}")))?;
        let seq = packet.sequence_number;
        let wire = (
            packet.ssrc.unwrap_or(ssrc),
            packet.payload_type.unwrap_or(pt),
        );
        if let Ok(mut r) = self.rewrites.lock() {
            if wire == (ssrc, pt) {
                r.remove(&(ssrc, seq));
            } else {
                r.insert((ssrc, seq), wire);
            }
        }
        let p = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                marker: packet.marker,
                payload_type: pt,
                sequence_number: seq,
                timestamp: packet.timestamp,
                ssrc,
                ..Default::default()
            },
            payload: Bytes::from(packet.payload),
        };
        t.write_rtp(p).await.map_err(werr)
    }

    /// The payload type the server's answer gives `codec` for video.
    pub async fn video_payload_type(&self, codec: VideoCodec) -> Option<u8> {
        let answer = self.pc.remote_description().await?.sdp;
        let sections = crate::sdp::sections(&answer).ok()?;
        let video = crate::sdp::find(&sections, "video")?;
        let name = codec.as_str().to_ascii_uppercase();
        video
            .payload_types
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(pt, _)| *pt)
    }

    /// Leaves the room and closes everything.
    pub async fn leave(self) {
        let _ = self.ws_out.send(ClientMessage::Leave);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = self.pc.close().await;
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Sends `items` (frames or packets) at `rate` per second, looping; a PLI restarts at item 0.
async fn send_loop(
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    items: Vec<Vec<u8>>,
    rate: u32,
    restart: Option<Arc<std::sync::atomic::AtomicBool>>,
    pc: Arc<dyn PeerConnection>,
    sending: Option<Arc<Mutex<Sending>>>,
) {
    if items.is_empty() {
        return;
    }
    let clock = if rate == 50 { 48_000.0 } else { 90_000.0 };
    let duration = Duration::from_secs_f64(((clock / rate as f64).round() + 0.5) / clock);
    let mut pt = None;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let mut i = 0usize;
    loop {
        tick.tick().await;
        if pt.is_none() {
            pt = negotiated_pt(&pc, &track).await;
            if pt.is_none() {
                continue;
            }
        }
        if restart
            .as_ref()
            .is_some_and(|r| r.swap(false, std::sync::atomic::Ordering::Relaxed))
        {
            i = 0;
        }
        let sample = Sample {
            data: Bytes::from(items[i % items.len()].clone()),
            duration,
            ..Sample::new(Instant::now())
        };
        let _ = track
            .write_sample(ssrc, pt.unwrap_or(96), &sample, &[])
            .await;
        if let Some(mut st) = sending.as_ref().and_then(|s| s.lock().ok()) {
            st.fps = rate;
            st.frames_sent += 1;
            st.bytes_sent += items[i % items.len()].len() as u64;
        }
        i += 1;
    }
}

/// What `ladder_loop` sends with.
struct LadderSender {
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    codec: VideoCodec,
    ladder: Ladder,
    /// The rate the clips were made at: the most it sends.
    clip_fps: u32,
    restart: Arc<std::sync::atomic::AtomicBool>,
    pc: Arc<dyn PeerConnection>,
    sending: Arc<Mutex<Sending>>,
}

/// The camera of a client following hints: `send_loop` over a ladder of sizes. A new hint
/// picks a size and a rate; the size changes at the next frame index where that size has a
/// keyframe (a PLI restarts at index 0, a keyframe in every size), the rate at once.
async fn ladder_loop(s: LadderSender, mut hints: tokio::sync::watch::Receiver<HintSize>) {
    let rungs = &s.ladder.renditions;
    let len = rungs.iter().map(|r| r.frames.len()).min().unwrap_or(0);
    if len == 0 {
        return;
    }
    let keys: Vec<Vec<bool>> = rungs
        .iter()
        .map(|r| {
            r.frames[..len]
                .iter()
                .map(|f| match s.codec {
                    VideoCodec::Vp8 => reassembly::vp8_is_keyframe(f),
                    VideoCodec::H264 => reassembly::h264_is_keyframe(f),
                })
                .collect()
        })
        .collect();
    let period = |fps: u32| Duration::from_secs_f64(1.0 / fps as f64);
    let mut cur = s.ladder.start.min(rungs.len() - 1);
    let mut want = cur;
    let mut fps = s.clip_fps;
    let mut tick = tokio::time::interval(period(fps));
    let mut pt = None;
    let mut i = 0usize;
    loop {
        tick.tick().await;
        if pt.is_none() {
            pt = negotiated_pt(&s.pc, &s.track).await;
            if pt.is_none() {
                continue;
            }
        }
        if hints.has_changed().unwrap_or(false) {
            if let Some((w, h, hint_fps)) = *hints.borrow_and_update() {
                want = s.ladder.pick(w, h);
                let f = hint_fps.clamp(1, s.clip_fps);
                if f != fps {
                    fps = f;
                    tick = tokio::time::interval_at(
                        tokio::time::Instant::now() + period(fps),
                        period(fps),
                    );
                }
                if let Ok(mut st) = s.sending.lock() {
                    st.hints += 1;
                }
            }
        }
        if s.restart.swap(false, std::sync::atomic::Ordering::Relaxed) {
            i = 0;
        }
        let idx = i % len;
        let switched = want != cur && keys[want][idx];
        if switched {
            cur = want;
        }
        let duration = Duration::from_secs_f64(((90_000.0 / fps as f64).round() + 0.5) / 90_000.0);
        let sample = Sample {
            data: Bytes::from(rungs[cur].frames[idx].clone()),
            duration,
            ..Sample::new(Instant::now())
        };
        let _ = s
            .track
            .write_sample(s.ssrc, pt.unwrap_or(96), &sample, &[])
            .await;
        if let Ok(mut st) = s.sending.lock() {
            st.width = rungs[cur].width;
            st.height = rungs[cur].height;
            st.fps = fps;
            st.switches += switched as u64;
            st.frames_sent += 1;
            st.bytes_sent += rungs[cur].frames[idx].len() as u64;
        }
        i += 1;
    }
}

async fn negotiated_pt(
    pc: &Arc<dyn PeerConnection>,
    track: &Arc<TrackLocalStaticSample>,
) -> Option<u8> {
    let want = track
        .codec(track.ssrcs().await.first().copied()?)
        .await?
        .mime_type;
    for s in pc.get_senders().await {
        if let Some(pt) = calls::negotiated_pt(&s, &want).await {
            return Some(pt);
        }
    }
    None
}
