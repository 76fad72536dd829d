//! The server's media plane for one participant, without sockets: a sans-IO `rtc` offerer
//! (a camera and a microphone) joined to a real `Conn` (the connection the reactor drives),
//! datagrams passed in memory, DTLS and SRTP for real. For the reactor's benches.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp::header::Header;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tessera_codec::EncodedVideo;
use tessera_types::{ParticipantId, VideoCodec};
use tokio::sync::mpsc;

use crate::media::conn::Conn;
use crate::media::egress::FrameCache;
use crate::media::{AnswerPlan, OpenPeer, PeerEvent, PeerKey};
use crate::peer::{self, MIME_OPUS, MIME_VP8};
use crate::room::{Detached, MediaOut, RoomHandle};

/// A connected pair: `client` (the offerer) and the server's `Conn` for it.
pub struct Loopback {
    client: RTCPeerConnection,
    server: Conn,
    client_addr: SocketAddr,
    server_addr: SocketAddr,
    video_track: String,
    video_ssrc: u32,
    video_pt: u8,
    seq: u16,
    cache: FrameCache,
    out: Vec<TaggedBytesMut>,
    /// Both ends run on this clock, moved on by the calls (media at real rates, however
    /// fast the calls come).
    clock: Instant,
    _events: mpsc::UnboundedReceiver<PeerEvent>,
    _room: Detached,
}

fn to(local: SocketAddr, peer: SocketAddr, now: Instant, message: BytesMut) -> TaggedBytesMut {
    TaggedBytesMut {
        now,
        transport: TransportContext {
            local_addr: local,
            peer_addr: peer,
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        },
        message,
    }
}

impl Loopback {
    /// Negotiates (VP8 and Opus both ways) and runs ICE and DTLS until both ends are
    /// connected.
    pub fn connect() -> Result<Loopback, String> {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        let client_addr: SocketAddr = "127.0.0.1:40000".parse().expect("an address");
        let server_addr: SocketAddr = "127.0.0.1:50000".parse().expect("an address");
        let now = Instant::now();
        let mut client = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(peer::media_engine().map_err(|e| err(&e))?)
            .with_setting_engine(SettingEngineBuilder::new().build())
            .build(now)
            .map_err(|e| err(&e))?;
        let video_ssrc = 0x1000;
        let video = peer::media_track(RtpCodecKind::Video, MIME_VP8, video_ssrc);
        let video_track = video.track_id().to_string();
        let sender = client.add_track(video).map_err(|e| err(&e))?;
        client
            .add_track(peer::media_track(
                RtpCodecKind::Audio,
                MIME_OPUS,
                video_ssrc + 1,
            ))
            .map_err(|e| err(&e))?;
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: client_addr.ip().to_string(),
                port: client_addr.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .map_err(|e| err(&e))?;
        let init = RTCIceCandidate::from(&candidate)
            .to_json()
            .map_err(|e| err(&e))?;
        client.add_local_candidate(init).map_err(|e| err(&e))?;
        let offer = client.create_offer(None).map_err(|e| err(&e))?;
        client
            .set_local_description(now, offer.clone())
            .map_err(|e| err(&e))?;

        let (room, detached) = RoomHandle::detached("bench");
        let (events, events_rx) = mpsc::unbounded_channel();
        let req = OpenPeer {
            id: ParticipantId(1),
            room,
            network: tessera_config::NetworkConfig::default(),
            plan: AnswerPlan {
                video_out: Some(VideoCodec::Vp8),
                video_fps: 15,
                audio_out: true,
                accept_media: true,
            },
            offer: offer.sdp,
            events,
            start_bps: 10_000_000,
            max_tier_bps: 10_000_000,
        };
        let (server, answer) =
            Conn::open(PeerKey(1), req, &[server_addr], &[], now).map_err(|e| err(&e))?;
        let answer = RTCSessionDescription::answer(answer).map_err(|e| err(&e))?;
        client
            .set_remote_description(now, answer)
            .map_err(|e| err(&e))?;
        let video_pt = client
            .rtp_sender(sender)
            .and_then(|mut s| {
                s.get_parameters()
                    .rtp_parameters
                    .codecs
                    .iter()
                    .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_VP8))
                    .map(|c| c.payload_type)
            })
            .ok_or("VP8 was not negotiated")?;
        let mut pair = Loopback {
            client,
            server,
            client_addr,
            server_addr,
            video_track,
            video_ssrc,
            video_pt,
            seq: 0,
            cache: FrameCache::default(),
            out: Vec::new(),
            clock: now,
            _events: events_rx,
            _room: detached,
        };
        let mut client_up = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(client_up && pair.server.is_connected()) {
            if Instant::now() > deadline {
                return Err("ICE and DTLS did not complete in 10 s".into());
            }
            pair.clock = Instant::now();
            pair.pump();
            while let Some(ev) = pair.client.poll_event() {
                if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
                    RTCPeerConnectionState::Connected,
                ) = ev
                {
                    client_up = true;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(pair)
    }

    /// Moves the clock on by `d`.
    pub fn advance(&mut self, d: Duration) {
        self.clock += d;
    }

    /// Runs both ends' timers and moves every datagram between them until none is left.
    pub fn pump(&mut self) {
        let now = self.clock;
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            let _ = self.client.handle_timeout(now);
        }
        self.server.on_timeout(now);
        loop {
            let mut moved = false;
            self.server.drain(now, &mut self.out);
            for d in self.out.drain(..) {
                moved = true;
                let _ =
                    self.client
                        .handle_read(to(self.client_addr, self.server_addr, now, d.message));
            }
            while self.client.poll_read().is_some() {}
            while let Some(d) = self.client.poll_write() {
                moved = true;
                self.server
                    .read(to(self.server_addr, self.client_addr, now, d.message));
            }
            if !moved {
                break;
            }
        }
    }

    /// `n` camera packets from the client, SRTP-protected and not yet delivered: each a
    /// whole VP8 keyframe of `payload_len` bytes (descriptor included).
    pub fn client_video(&mut self, n: usize, payload_len: usize) -> Vec<BytesMut> {
        let now = self.clock;
        let mut datagrams = Vec::with_capacity(n);
        for _ in 0..n {
            self.seq = self.seq.wrapping_add(1);
            // VP8 payload descriptor (start of partition 0), then a keyframe's first byte.
            let mut payload = vec![0u8; payload_len.max(3)];
            payload[0] = 0x10;
            payload[1] = 0x50;
            let packet = rtc::rtp::Packet {
                header: Header {
                    version: 2,
                    marker: true,
                    payload_type: self.video_pt,
                    sequence_number: self.seq,
                    timestamp: u32::from(self.seq) * 6000,
                    ssrc: self.video_ssrc,
                    ..Default::default()
                },
                payload: payload.into(),
            };
            let _ = self.client.handle_write(TaggedRTCMessage {
                now,
                message: RTCMessage::RtpPacket(self.video_track.clone(), packet),
            });
            while let Some(d) = self.client.poll_write() {
                datagrams.push(d.message);
            }
        }
        datagrams
    }

    /// The server takes one datagram from the client: SRTP, interceptors, ingest. Whatever
    /// it answers (feedback) is dropped.
    pub fn server_read(&mut self, datagram: BytesMut) {
        let now = self.clock;
        self.server
            .read(to(self.server_addr, self.client_addr, now, datagram));
        self.server.drain(now, &mut self.out);
        self.out.clear();
    }

    /// The server sends one Opus packet of the mix (20 ms on); returns the datagrams it made.
    pub fn server_audio(&mut self, payload: Vec<u8>, pts_48k: u64) -> usize {
        self.clock += Duration::from_millis(20);
        let now = self.clock;
        self.server
            .media(MediaOut::Audio(payload, pts_48k), &mut self.cache, now);
        self.server.drain(now, &mut self.out);
        let n = self.out.len();
        self.out.clear();
        n
    }

    /// The server sends one composite frame (15 fps: packetized, stamped, paced over the
    /// next 66 ms); returns the datagrams it made.
    pub fn server_video(&mut self, frame: Arc<EncodedVideo>) -> usize {
        let now = self.clock;
        self.server
            .media(MediaOut::Video(frame, 15), &mut self.cache, now);
        let end = now + Duration::from_millis(66);
        while let Some(due) = self.server.next_due().filter(|d| *d <= end) {
            self.clock = due.max(self.clock);
            self.server.on_timeout(self.clock);
        }
        self.clock = end;
        self.server.drain(self.clock, &mut self.out);
        let n = self.out.len();
        self.out.clear();
        n
    }
}
