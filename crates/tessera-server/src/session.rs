//! A participant's life on the network side: joining a room, answering its offer, relaying
//! signalling, and leaving exactly once. WebSocket sessions and WHIP/WHEP resources share
//! `start_media` and `Membership`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tessera_engine::JoinOptions;
use tessera_proto::{ClientMessage, ErrorCode, IceCandidate, ServerMessage};
use tessera_types::ParticipantId;
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};
use warp::ws::{Message, WebSocket};
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState};

use crate::peer::{self, AnswerPlan, PeerContext, PeerEvent};
use crate::room::{Command, JoinRequest, RoomHandle, Sink};
use crate::{sdp, JoinError, Server};

/// Room output a participant may have queued before frames are dropped (about 2 s of
/// video and audio at the default tier).
const MEDIA_QUEUE: usize = 160;

/// A place in a room. Dropping it without `leave` is a bug, so `leave` consumes it.
pub struct Membership {
    pub id: ParticipantId,
    pub room: RoomHandle,
    server: Arc<Server>,
    pc: Option<Arc<dyn PeerConnection>>,
}

impl Membership {
    pub async fn leave(self) {
        self.room.send(Command::Leave { id: self.id });
        self.server.exit(&self.room);
        if let Some(pc) = &self.pc {
            if let Err(e) = pc.close().await {
                debug!("close: {e}");
            }
        }
        info!(participant = %self.id, room = %self.room.name, "session ended");
    }
}

/// What a client wants, before its offer says what it can.
pub struct Wants {
    pub name: String,
    pub kind: &'static str,
    pub video: bool,
    pub audio: bool,
    pub tier: Option<String>,
}

pub struct Refusal(pub ErrorCode, pub String);

impl From<JoinError> for Refusal {
    fn from(e: JoinError) -> Refusal {
        match e {
            JoinError::BadRequest(r) => Refusal(ErrorCode::BadRequest, r),
            JoinError::Full(r) => Refusal(ErrorCode::Full, r),
            JoinError::Internal(r) => Refusal(ErrorCode::Internal, r),
        }
    }
}

/// Answers `offer` for participant `m.id` and adds it to the room; returns the answer.
pub async fn start_media(
    m: &mut Membership,
    wants: &Wants,
    offer: &str,
    events: mpsc::UnboundedSender<ServerMessage>,
    peer_events: mpsc::UnboundedSender<PeerEvent>,
) -> Result<(String, Option<String>), Refusal> {
    let sections = sdp::sections(offer).map_err(|e| Refusal(ErrorCode::BadSdp, e.0))?;
    let video = sdp::find(&sections, "video");
    let audio = sdp::find(&sections, "audio");
    let has_opus = audio.is_some_and(|a| a.codecs.iter().any(|c| c == "OPUS"));
    let mut receive_tier = None;
    let mut plan = AnswerPlan {
        video_out: None,
        video_fps: 25,
        audio_out: has_opus && audio.is_some_and(|a| a.direction.receives()),
    };
    if let Some(v) = video.filter(|v| v.direction.receives()) {
        let (tier, codec, fps) = m
            .server
            .pick_tier(&m.room.name, wants.tier.as_deref(), &v.codecs)
            .map_err(|e| match e {
                JoinError::BadRequest(r) if r.contains("neither") => Refusal(ErrorCode::BadSdp, r),
                e => e.into(),
            })?;
        receive_tier = Some(tier);
        plan.video_out = Some(codec);
        plan.video_fps = fps;
    }
    let sends_video = wants.video
        && video.is_some_and(|v| {
            v.direction.sends() && v.codecs.iter().any(|c| c == "VP8" || c == "H264")
        });
    let sends_audio = wants.audio && has_opus && audio.is_some_and(|a| a.direction.sends());
    if !sends_video && !sends_audio && receive_tier.is_none() && !plan.audio_out {
        return Err(Refusal(
            ErrorCode::BadSdp,
            "the offer neither sends nor receives any usable media".into(),
        ));
    }
    let (media_tx, media_rx) = mpsc::channel(MEDIA_QUEUE);
    let ctx = PeerContext {
        id: m.id,
        room: m.room.clone(),
        network: m.server.config().network.clone(),
        events: peer_events,
        ports: m.server.ports.clone(),
    };
    let p = peer::answer(ctx, offer, &plan, media_rx)
        .await
        .map_err(|e| match e {
            peer::PeerError::BadSdp(r) => Refusal(ErrorCode::BadSdp, r),
            e => Refusal(ErrorCode::Internal, e.to_string()),
        })?;
    m.pc = Some(p.pc);
    let sent = m.room.send(Command::Join(Box::new(JoinRequest {
        id: m.id,
        name: wants.name.clone(),
        kind: wants.kind,
        options: JoinOptions {
            sends_video,
            sends_audio,
            receive_tier: receive_tier.clone(),
            receives_audio: plan.audio_out,
        },
        codec_out: plan.video_out,
        bandwidth: bandwidth_config(&m.server.config().bandwidth),
        sink: Sink {
            media: media_tx,
            events,
        },
    })));
    if !sent {
        return Err(Refusal(
            ErrorCode::Internal,
            "the room is not running".into(),
        ));
    }
    Ok((p.answer, receive_tier))
}

fn bandwidth_config(
    b: &tessera_config::BandwidthConfig,
) -> Option<(tessera_engine::BandwidthConfig, bool)> {
    b.enabled.then(|| {
        (
            tessera_engine::BandwidthConfig {
                down_loss: b.down_loss_pct / 100.0,
                up_loss: b.up_loss_pct / 100.0,
                down_after: Duration::from_millis(b.down_after_ms as u64),
                up_after: Duration::from_millis(b.up_after_ms as u64),
                up_headroom: b.up_headroom,
            },
            b.audio_only,
        )
    })
}

/// Joins `room` (creating it) or says why not.
pub fn enter(server: &Arc<Server>, room: &str, name: &str) -> Result<Membership, Refusal> {
    crate::check_name("participant", name)?;
    let handle = server.enter(room)?;
    Ok(Membership {
        id: server.new_id(),
        room: handle,
        server: server.clone(),
        pc: None,
    })
}

fn idle_timeout(server: &Server) -> Duration {
    Duration::from_secs(server.config().rooms.idle_timeout_secs as u64)
}

/// Sleeps until `at`, or forever if there is no deadline.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn send_json(msg: &ServerMessage) -> Message {
    Message::text(msg.to_json())
}

/// One WebSocket client from `join` to leave or disconnect.
pub async fn run_ws(server: Arc<Server>, ws: WebSocket) {
    let (mut tx, mut rx) = ws.split();
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<ServerMessage>();
    let (peer_tx, mut peer_rx) = mpsc::unbounded_channel::<PeerEvent>();
    let mut member: Option<(Membership, Wants)> = None;
    let mut offered = false;
    // Set at join, cleared once media connects: a session stuck before that is removed.
    let mut connect_by: Option<tokio::time::Instant> = None;
    let mut early_candidates: Vec<IceCandidate> = Vec::new();
    let span = info_span!("ws");
    async {
        loop {
            let reply: Option<ServerMessage> = tokio::select! {
                msg = rx.next() => {
                    let Some(Ok(msg)) = msg else { break };
                    if msg.is_close() { break; }
                    if msg.is_ping() || msg.is_pong() { continue; }
                    let Ok(text) = msg.to_str() else {
                        let _ = tx.send(send_json(&ServerMessage::error(ErrorCode::BadMessage, "binary messages are not part of the protocol"))).await;
                        continue;
                    };
                    let parsed = tessera_proto::parse_client(text);
                    match parsed {
                        Err(e) => Some(ServerMessage::error(ErrorCode::BadMessage, e.0)),
                        Ok(ClientMessage::Ping) => Some(ServerMessage::Pong),
                        Ok(ClientMessage::Leave) => break,
                        Ok(ClientMessage::Join { room, name, video, audio, tier }) => {
                            if member.is_some() {
                                Some(ServerMessage::error(ErrorCode::BadState, "already joined"))
                            } else {
                                let known_tier = tier.as_ref().is_none_or(|t| server.config().tiers.contains_key(t));
                                match enter(&server, &room, &name).and_then(|m| if known_tier { Ok(m) } else {
                                    let t = tier.clone().unwrap_or_default();
                                    let cfg = server.config(); let known: Vec<&str> = cfg.tiers.keys().map(String::as_str).collect();
                                    // Give the place back before refusing.
                                    server.exit(&m.room);
                                    Err(Refusal(ErrorCode::BadRequest, format!("unknown tier {t:?}: must be one of {}", known.join(", "))))
                                }) {
                                    Err(Refusal(code, reason)) => Some(ServerMessage::error(code, reason)),
                                    Ok(m) => {
                                        let (others, layout) = m.room.ask(|reply| Command::List { reply }).await.unwrap_or_default();
                                        info!(participant = %m.id, %room, %name, "join");
                                        let tier_name = tier.clone().unwrap_or_else(|| server.default_tier(&server.config(), &room).to_string());
                                        let msg = ServerMessage::Joined {
                                            room,
                                            id: m.id.to_string(),
                                            participants: others,
                                            ice_servers: server.ice_servers(),
                                            layout,
                                            tier: tier_name,
                                        };
                                        member = Some((m, Wants { name, kind: "ws", video, audio, tier }));
                                        connect_by = Some(tokio::time::Instant::now() + idle_timeout(&server));
                                        Some(msg)
                                    }
                                }
                            }
                        }
                        Ok(ClientMessage::Offer { sdp }) => match member.as_mut() {
                            None => Some(ServerMessage::error(ErrorCode::BadState, "send join before offer")),
                            Some(_) if offered => Some(ServerMessage::error(ErrorCode::BadState, "one offer per session; renegotiation is never needed")),
                            Some((m, wants)) => {
                                offered = true;
                                match start_media(m, wants, &sdp, ev_tx.clone(), peer_tx.clone()).await {
                                    Err(Refusal(code, reason)) => {
                                        warn!(participant = %m.id, %reason, "offer refused");
                                        offered = false;
                                        Some(ServerMessage::error(code, reason))
                                    }
                                    Ok((answer, _tier)) => {
                                        let _ = tx.send(send_json(&ServerMessage::Answer { sdp: answer })).await;
                                        if let Some(pc) = &m.pc {
                                            for c in early_candidates.drain(..) {
                                                if let Err(e) = peer::add_candidate(pc, c).await {
                                                    debug!("candidate refused: {e}");
                                                }
                                            }
                                        }
                                        None
                                    }
                                }
                            }
                        },
                        Ok(ClientMessage::Candidate { candidate }) => {
                            match (candidate, member.as_ref().and_then(|(m, _)| m.pc.as_ref())) {
                                (None, _) => None,
                                (Some(c), Some(pc)) => peer::add_candidate(pc, c).await.err().map(|e| ServerMessage::error(ErrorCode::BadMessage, format!("candidate refused: {e}"))),
                                (Some(c), None) => {
                                    if early_candidates.len() < 64 { early_candidates.push(c); }
                                    None
                                }
                            }
                        }
                        Ok(ClientMessage::Mute { audio, video }) => match &member {
                            Some((m, _)) => { m.room.send(Command::Mute { id: m.id, audio, video }); None }
                            None => Some(ServerMessage::error(ErrorCode::BadState, "send join before mute")),
                        },
                    }
                }
                ev = ev_rx.recv() => {
                    let Some(ev) = ev else { continue };
                    let fatal = matches!(ev, ServerMessage::Error { fatal: true, .. });
                    let _ = tx.send(send_json(&ev)).await;
                    if fatal { break; }
                    None
                }
                _ = sleep_until(connect_by) => {
                    let _ = tx.send(send_json(&ServerMessage::Error {
                        code: ErrorCode::Timeout,
                        reason: format!("no media connection within {} s of joining (rooms.idle_timeout_secs)", idle_timeout(&server).as_secs()),
                        fatal: true,
                    })).await;
                    break;
                }
                pev = peer_rx.recv() => match pev {
                    Some(PeerEvent::Candidate(c)) => Some(ServerMessage::Candidate { candidate: c }),
                    Some(PeerEvent::State(RTCPeerConnectionState::Connected)) => {
                        connect_by = None;
                        None
                    }
                    Some(PeerEvent::State(RTCPeerConnectionState::Failed)) => {
                        let _ = tx.send(send_json(&ServerMessage::Error {
                            code: ErrorCode::Internal,
                            reason: "the media connection failed (ICE timeout)".into(),
                            fatal: true,
                        })).await;
                        break;
                    }
                    _ => None,
                },
            };
            if let Some(reply) = reply {
                if tx.send(send_json(&reply)).await.is_err() {
                    break;
                }
            }
        }
        if let Some((m, _)) = member {
            m.leave().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), tx.close()).await;
    }
    .instrument(span)
    .await
}

/// A WHIP publisher or WHEP viewer: kept until DELETE or until its connection fails.
pub struct Resource {
    pub room: String,
    pub kind: &'static str,
    pub member: Membership,
}

/// Handles `POST /whip/{room}` and `POST /whep/{room}`: returns (id, answer).
pub async fn start_resource(
    server: &Arc<Server>,
    kind: &'static str,
    room: &str,
    name: &str,
    tier: Option<String>,
    offer: &str,
) -> Result<(ParticipantId, String), Refusal> {
    sdp::sections(offer).map_err(|e| Refusal(ErrorCode::BadSdp, e.0))?;
    let mut m = enter(server, room, name)?;
    let wants = Wants {
        name: name.to_string(),
        kind,
        video: kind == "whip",
        audio: kind == "whip",
        tier,
    };
    // Nobody reads a WHIP/WHEP client's signalling events.
    let (ev_tx, _) = mpsc::unbounded_channel();
    let (peer_tx, mut peer_rx) = mpsc::unbounded_channel();
    let answer = match start_media(&mut m, &wants, offer, ev_tx, peer_tx).await {
        Ok((answer, _)) => answer,
        Err(e) => {
            m.leave().await;
            return Err(e);
        }
    };
    let id = m.id;
    server
        .resources
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            id.0,
            Resource {
                room: room.to_string(),
                kind,
                member: m,
            },
        );
    let server = server.clone();
    tokio::spawn(async move {
        let mut connect_by = Some(tokio::time::Instant::now() + idle_timeout(&server));
        loop {
            let ev = tokio::select! {
                ev = peer_rx.recv() => ev,
                _ = sleep_until(connect_by) => {
                    info!(participant = %id, "{kind} never connected; removing it");
                    break;
                }
            };
            match ev {
                None
                | Some(PeerEvent::State(
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed,
                )) => {
                    info!(participant = %id, "{kind} connection ended");
                    break;
                }
                Some(PeerEvent::State(RTCPeerConnectionState::Connected)) => connect_by = None,
                _ => {}
            }
        }
        if let Some(r) = server.take_resource(id.0) {
            r.member.leave().await;
        }
    });
    Ok((id, answer))
}

impl Server {
    pub(crate) fn take_resource(&self, id: u64) -> Option<Resource> {
        self.resources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    }

    pub(crate) fn ice_servers(&self) -> Vec<tessera_proto::IceServer> {
        self.config()
            .network
            .ice_servers
            .iter()
            .map(|s| tessera_proto::IceServer {
                urls: s.urls.clone(),
                username: (!s.username.is_empty()).then(|| s.username.clone()),
                credential: (!s.credential.is_empty()).then(|| s.credential.clone()),
            })
            .collect()
    }
}
