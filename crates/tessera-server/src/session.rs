//! A participant's life on the network side: joining a room, answering its offer, relaying
//! signalling, and leaving exactly once. WebSocket sessions and WHIP/WHEP resources share
//! `start_media` and `Membership`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tessera_engine::{JoinOptions, TierId};
use tessera_proto::{ClientMessage, ErrorCode, IceCandidate, ServerMessage};
use tessera_types::ParticipantId;
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};
use warp::ws::{Message, WebSocket};

use crate::auth::{self, Perm};
use crate::limits::{Bucket, Limit};
use crate::media::{AnswerPlan, ConnState, OpenPeer, PeerError, PeerEvent, PeerKey, RestartWith};
use crate::room::{Command, JoinRequest, MemberKind, RoomHandle, Sink, TierCaps};
use crate::{sdp, JoinError, Server};

/// A place in a room. Dropping it without `leave` is a bug, so `leave` consumes it.
pub struct Membership {
    pub id: ParticipantId,
    pub room: RoomHandle,
    server: Arc<Server>,
    /// The participant's connection in the media reactor, once its offer is answered.
    pub peer: Option<PeerKey>,
}

impl Membership {
    pub async fn leave(self) {
        self.room.send(Command::Leave { id: self.id });
        self.server.exit(&self.room);
        if let Some(key) = self.peer {
            self.server.media.close(key);
        }
        info!(participant = %self.id, room = %self.room.name, "session ended");
    }
}

/// What a client wants, before its offer says what it can.
pub struct Wants {
    pub name: String,
    pub kind: MemberKind,
    pub video: bool,
    pub audio: bool,
    pub tier: Option<String>,
    /// The token allows receiving the composite and the mix.
    pub receive: bool,
    /// The token allows publishing (a camera, a microphone or a screen).
    pub publish: bool,
    /// The size the client shows the composite at (`join`'s `display`).
    pub display: Option<(u32, u32)>,
    /// A screen share's participant.
    pub owner: Option<ParticipantId>,
    /// The layout the client asked for in `join` (applied once its media starts).
    pub layout: Option<String>,
}

/// What a join token allows; everything when `auth.token_secret` is "".
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grants {
    pub publish: bool,
    pub subscribe: bool,
}

/// Checks a join's token against `auth.token_secret` (if set) for `room` and `name`.
pub fn authorize(
    server: &Server,
    token: Option<&str>,
    room: &str,
    name: &str,
) -> Result<Grants, Refusal> {
    let cfg = server.config();
    let secret = &cfg.auth.token_secret;
    if secret.is_empty() {
        return Ok(Grants {
            publish: true,
            subscribe: true,
        });
    }
    let refuse = |code, reason: String| {
        server.limits.refused(Limit::Token);
        Err(Refusal(code, reason))
    };
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return refuse(
            ErrorCode::Unauthorized,
            "this server needs a join token (auth.token_secret is set)".into(),
        );
    };
    let claims = match auth::verify(secret, token, auth::now_unix()) {
        Ok(c) => c,
        Err(e) => return refuse(ErrorCode::Unauthorized, e.to_string()),
    };
    if !claims.allows_room(room) {
        return refuse(
            ErrorCode::Forbidden,
            format!("the token is for room {:?}, not {room:?}", claims.room),
        );
    }
    if let Some(n) = claims.name.as_deref().filter(|n| *n != name) {
        return refuse(
            ErrorCode::Forbidden,
            format!("the token is for participant {n:?}, not {name:?}"),
        );
    }
    let grants = Grants {
        publish: claims.has(Perm::Publish),
        subscribe: claims.has(Perm::Subscribe),
    };
    if !grants.publish && !grants.subscribe {
        return refuse(
            ErrorCode::Forbidden,
            "the token allows neither publish nor subscribe".into(),
        );
    }
    Ok(grants)
}

pub struct Refusal(pub ErrorCode, pub String);

impl From<JoinError> for Refusal {
    fn from(e: JoinError) -> Refusal {
        match e {
            JoinError::BadRequest(r) => Refusal(ErrorCode::BadRequest, r),
            JoinError::Full(r) => Refusal(ErrorCode::Full, r),
            JoinError::Internal(r) => Refusal(ErrorCode::Internal, r),
            JoinError::Shutdown => {
                Refusal(ErrorCode::Shutdown, "the server is shutting down".into())
            }
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
) -> Result<(String, Option<TierId>), Refusal> {
    check_sdp_size(&m.server, offer)?;
    let sections = sdp::sections(offer).map_err(|e| Refusal(ErrorCode::BadSdp, e.0))?;
    let video = sdp::find(&sections, "video");
    let audio = sdp::find(&sections, "audio");
    let has_opus = audio.is_some_and(|a| a.codecs.iter().any(|c| c == "OPUS"));
    let mut receive_tier = None;
    let mut plan = AnswerPlan {
        video_out: None,
        video_fps: 25,
        audio_out: wants.receive && has_opus && audio.is_some_and(|a| a.direction.receives()),
        accept_media: wants.video || wants.audio,
    };
    if let Some(v) = video.filter(|v| wants.receive && v.direction.receives()) {
        let (tier, fps) = m
            .server
            .pick_tier(&m.room.name, wants.tier.as_deref(), &v.codecs)
            .map_err(|e| match e {
                JoinError::BadRequest(r) if r.contains("neither") => Refusal(ErrorCode::BadSdp, r),
                e => e.into(),
            })?;
        plan.video_out = Some(tier.codec);
        receive_tier = Some(tier);
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
    let req = OpenPeer {
        id: m.id,
        room: m.room.clone(),
        network: m.server.config().network.clone(),
        plan,
        offer: offer.to_string(),
        events: peer_events,
        start_bps: m.server.config().bandwidth.start_kbps as u64 * 1000,
        max_tier_bps: m
            .server
            .config()
            .tiers
            .values()
            .map(|t| t.bitrate_kbps as u64 * 1000)
            .max()
            .unwrap_or(0),
    };
    let (audio_out, video_out) = (req.plan.audio_out, req.plan.video_out);
    let (key, answer) = m.server.media.open(req).await.map_err(|e| match e {
        PeerError::BadSdp(r) => Refusal(ErrorCode::BadSdp, r),
        e => Refusal(ErrorCode::Internal, e.to_string()),
    })?;
    m.peer = Some(key);
    let sent = m.room.send(Command::Join(Box::new(JoinRequest {
        id: m.id,
        name: wants.name.clone(),
        kind: wants.kind,
        owner: wants.owner,
        options: JoinOptions {
            sends_video,
            sends_audio,
            receive_tier: receive_tier.clone(),
            receives_audio: audio_out,
        },
        codec_out: video_out,
        bandwidth: bandwidth_config(&m.server.config()),
        caps: TierCaps {
            max_tier: {
                let cfg = m.server.config();
                cfg.rooms
                    .declared
                    .get(&m.room.name)
                    .and_then(|d| d.max_tier.clone())
                    .or_else(|| Some(cfg.rooms.max_tier.clone()).filter(|t| !t.is_empty()))
            },
            requested: wants.tier.clone(),
            display: wants.display,
        },
        sink: Sink {
            media: m.server.media.media_tx(key),
            events,
        },
    })));
    if !sent {
        return Err(Refusal(
            ErrorCode::Internal,
            "the room is not running".into(),
        ));
    }
    Ok((answer, receive_tier))
}

/// Counts a join from `addr`, refusing it past `limits.joins_per_minute_per_ip`.
fn check_join_rate(server: &Server, addr: Option<SocketAddr>) -> Result<(), Refusal> {
    let limit = server.config().limits.joins_per_minute_per_ip;
    let now = std::time::Instant::now();
    if server.limits.allow_join(addr.map(|a| a.ip()), limit, now) {
        return Ok(());
    }
    Err(Refusal(
        ErrorCode::RateLimited,
        format!("too many joins from this address (limits.joins_per_minute_per_ip = {limit})"),
    ))
}

/// Refuses an offer over `limits.sdp_max_bytes`.
pub fn check_sdp_size(server: &Server, offer: &str) -> Result<(), Refusal> {
    let max = server.config().limits.sdp_max_bytes as usize;
    if offer.len() > max {
        server.limits.refused(Limit::SdpSize);
        return Err(Refusal(
            ErrorCode::BadSdp,
            format!(
                "the SDP offer has {} bytes, over limits.sdp_max_bytes = {max}",
                offer.len()
            ),
        ));
    }
    Ok(())
}

fn bandwidth_config(
    cfg: &tessera_config::Config,
) -> Option<(tessera_engine::BandwidthConfig, bool)> {
    let b = &cfg.bandwidth;
    b.enabled.then(|| {
        (
            tessera_engine::BandwidthConfig {
                start_bps: b.start_kbps as u64 * 1000,
                down_loss: b.down_loss_pct / 100.0,
                up_loss: b.up_loss_pct / 100.0,
                down_after: Duration::from_millis(b.down_after_ms as u64),
                up_after: Duration::from_millis(b.up_after_ms as u64),
                up_headroom: b.up_headroom,
                probe_interval: Duration::from_millis(b.probe_interval_ms as u64),
                // The mix and its packet headers (50 packets a second).
                audio_bps: cfg.audio.bitrate_kbps * 1000 + 20_000,
                ..Default::default()
            },
            b.audio_only,
        )
    })
}

/// Joins `room` (creating it) or says why not.
pub fn enter(server: &Arc<Server>, room: &str, name: &str) -> Result<Membership, Refusal> {
    crate::check_name("participant", name)?;
    let (handle, started) = server.enter(room)?;
    if started {
        crate::recording::room_started(server, room, handle.clone());
    }
    Ok(Membership {
        id: server.new_id(),
        room: handle,
        server: server.clone(),
        peer: None,
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

/// Counts a running WebSocket session while it lives.
struct SessionCount(Arc<Server>);

impl SessionCount {
    fn new(server: &Arc<Server>) -> SessionCount {
        server.sessions.fetch_add(1, Ordering::SeqCst);
        SessionCount(server.clone())
    }
}

impl Drop for SessionCount {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The fields of a `join` message.
struct JoinFields {
    room: String,
    name: String,
    video: bool,
    audio: bool,
    tier: Option<String>,
    token: Option<String>,
    display: Option<tessera_proto::DisplaySize>,
    layout: Option<String>,
}

/// Admits a WebSocket `join`: rate, token, tier and a place in the room.
async fn join_ws(
    server: &Arc<Server>,
    addr: Option<SocketAddr>,
    j: JoinFields,
) -> Result<(Membership, Wants, ServerMessage), Refusal> {
    check_join_rate(server, addr)?;
    let grants = authorize(server, j.token.as_deref(), &j.room, &j.name)?;
    if let Some(t) = j.tier.as_ref() {
        let cfg = server.config();
        if !cfg.tiers.contains_key(t) {
            let known: Vec<&str> = cfg.tiers.keys().map(String::as_str).collect();
            return Err(Refusal(
                ErrorCode::BadRequest,
                format!("unknown tier {t:?}: must be one of {}", known.join(", ")),
            ));
        }
    }
    server.admit(&j.room).await?;
    let m = enter(server, &j.room, &j.name)?;
    let (others, layout) = m
        .room
        .ask(|reply| Command::List { reply })
        .await
        .unwrap_or_default();
    info!(participant = %m.id, room = %j.room, name = %j.name, "join");
    let tier_name = j
        .tier
        .clone()
        .unwrap_or_else(|| server.default_tier(&server.config(), &j.room).to_string());
    let msg = ServerMessage::Joined {
        room: j.room,
        id: m.id.to_string(),
        participants: others,
        ice_servers: server.ice_servers_for(&j.name),
        layout,
        tier: tier_name,
        layouts: server.layout_names(),
    };
    let wants = Wants {
        name: j.name,
        kind: MemberKind::WebSocket,
        video: j.video && grants.publish,
        audio: j.audio && grants.publish,
        tier: j.tier,
        receive: grants.subscribe,
        publish: grants.publish,
        display: j.display.map(|d| (d.width, d.height)),
        owner: None,
        layout: j.layout,
    };
    Ok((m, wants, msg))
}

/// One WebSocket client from `join` to leave or disconnect.
pub async fn run_ws(server: Arc<Server>, ws: WebSocket, addr: Option<SocketAddr>) {
    run_ws_on(server, ws, addr).await
}

/// `run_ws` on any WebSocket-like stream (in a cluster: one whose `join` was already read).
pub async fn run_ws_on<W>(server: Arc<Server>, ws: W, addr: Option<SocketAddr>)
where
    W: futures_util::Stream<Item = Result<Message, warp::Error>>
        + futures_util::Sink<Message, Error = warp::Error>
        + Send
        + 'static,
{
    let _count = SessionCount::new(&server);
    let (mut tx, mut rx) = ws.split();
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<ServerMessage>();
    let (peer_tx, mut peer_rx) = mpsc::unbounded_channel::<PeerEvent>();
    let mut member: Option<(Membership, Wants)> = None;
    // The participant's screen share: a member of its own, with its own PeerConnection.
    let mut share: Option<Membership> = None;
    let (share_ev_tx, mut share_ev_rx) = mpsc::unbounded_channel::<ServerMessage>();
    let (share_peer_tx, mut share_peer_rx) = mpsc::unbounded_channel::<PeerEvent>();
    // Set when a share starts, cleared once its media connects: a share that never does
    // is ended rather than left as an empty big tile.
    let mut share_connect_by: Option<tokio::time::Instant> = None;
    let mut offered = false;
    // Set at join, cleared once media connects: a session stuck before that is removed.
    let mut connect_by: Option<tokio::time::Instant> = None;
    let mut early_candidates: Vec<IceCandidate> = Vec::new();
    let limits = server.config().limits.clone();
    let mut bucket = Bucket::new(
        limits.ws_messages_per_sec,
        limits.ws_message_burst,
        std::time::Instant::now(),
    );
    let mut over_rate = 0u32;
    let mut shutdown = server.shutdown_tx.subscribe();
    let span = info_span!("ws");
    async {
        loop {
            let reply: Option<ServerMessage> = tokio::select! {
                msg = rx.next() => {
                    let msg = match msg {
                        Some(Ok(msg)) => msg,
                        Some(Err(e)) => {
                            if e.to_string().contains("too long") {
                                server.limits.refused(Limit::WsMessageSize);
                            }
                            debug!("websocket: {e}");
                            break;
                        }
                        None => break,
                    };
                    if msg.is_close() { break; }
                    if msg.is_ping() || msg.is_pong() { continue; }
                    if !bucket.take(std::time::Instant::now()) {
                        server.limits.refused(Limit::WsMessageRate);
                        over_rate += 1;
                        let fatal = over_rate > 2 * limits.ws_message_burst;
                        let _ = tx.send(send_json(&ServerMessage::Error {
                            code: ErrorCode::RateLimited,
                            reason: format!("over limits.ws_messages_per_sec = {}; message dropped", limits.ws_messages_per_sec),
                            fatal,
                        })).await;
                        if fatal { break; }
                        continue;
                    }
                    let Ok(text) = msg.to_str() else {
                        let _ = tx.send(send_json(&ServerMessage::error(ErrorCode::BadMessage, "binary messages are not part of the protocol"))).await;
                        continue;
                    };
                    let parsed = tessera_proto::parse_client(text);
                    match parsed {
                        Err(e) => Some(ServerMessage::error(ErrorCode::BadMessage, e.0)),
                        Ok(ClientMessage::Ping) => Some(ServerMessage::Pong),
                        Ok(ClientMessage::Leave) => break,
                        Ok(ClientMessage::Join { room, name, video, audio, tier, token, display, layout }) => {
                            if member.is_some() {
                                Some(ServerMessage::error(ErrorCode::BadState, "already joined"))
                            } else {
                                let j = JoinFields { room, name, video, audio, tier, token, display, layout };
                                match join_ws(&server, addr, j).await {
                                    Err(Refusal(code, reason)) => Some(ServerMessage::error(code, reason)),
                                    Ok((m, wants, msg)) => {
                                        member = Some((m, wants));
                                        connect_by = Some(tokio::time::Instant::now() + idle_timeout(&server));
                                        Some(msg)
                                    }
                                }
                            }
                        }
                        Ok(ClientMessage::Offer { sdp }) => match member.as_mut() {
                            None => Some(ServerMessage::error(ErrorCode::BadState, "send join before offer")),
                            // A later offer is an ICE restart (the client's network changed).
                            Some((m, _)) if offered => match m.peer {
                                None => Some(ServerMessage::error(ErrorCode::BadState, "the first offer is still being answered")),
                                Some(key) => match server.media.restart(key, RestartWith::Offer(sdp)).await {
                                    Ok(answer) => Some(ServerMessage::Answer { sdp: answer }),
                                    Err(e) => Some(ServerMessage::error(ErrorCode::BadSdp, format!("ICE restart refused: {e}"))),
                                },
                            },
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
                                        let layout = wants.layout.clone();
                                        if let Some(refused) = layout.and_then(|l| choose_layout(&server, m, wants, Some(l))) {
                                            let _ = tx.send(send_json(&refused)).await;
                                        }
                                        if let Some(key) = m.peer {
                                            for c in early_candidates.drain(..) {
                                                if let Err(e) = server.media.add_candidate(key, c).await {
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
                            match (candidate, member.as_ref().and_then(|(m, _)| m.peer)) {
                                (None, _) => None,
                                (Some(c), Some(key)) => server.media.add_candidate(key, c).await.err().map(|e| ServerMessage::error(ErrorCode::BadMessage, format!("candidate refused: {e}"))),
                                (Some(c), None) => {
                                    if early_candidates.len() < 64 { early_candidates.push(c); }
                                    None
                                }
                            }
                        }
                        Ok(ClientMessage::Layout { layout }) => match member.as_mut() {
                            Some((m, wants)) => choose_layout(&server, m, wants, layout),
                            None => Some(ServerMessage::error(ErrorCode::BadState, "send join before layout")),
                        },
                        Ok(ClientMessage::Share { sdp }) => match member.as_ref() {
                            None => Some(ServerMessage::error(ErrorCode::BadState, "send join before share")),
                            Some((m, _)) if m.peer.is_none() => Some(ServerMessage::error(ErrorCode::BadState, "send your offer before sharing a screen")),
                            Some((_, wants)) if !wants.publish => Some(ServerMessage::error(ErrorCode::Forbidden, "the token does not allow publish")),
                            Some((m, wants)) => {
                                if let Some(old) = share.take() {
                                    old.leave().await;
                                }
                                match start_share(&server, m, wants, &sdp, share_ev_tx.clone(), share_peer_tx.clone()).await {
                                    Ok((s, answer)) => {
                                        share = Some(s);
                                        share_connect_by = Some(tokio::time::Instant::now() + idle_timeout(&server));
                                        Some(ServerMessage::ShareAnswer { sdp: answer })
                                    }
                                    Err(Refusal(code, reason)) => Some(ServerMessage::error(code, reason)),
                                }
                            }
                        },
                        Ok(ClientMessage::ShareStop) => {
                            if let Some(s) = share.take() {
                                s.leave().await;
                            }
                            None
                        }
                        Ok(ClientMessage::AudioOnly { enabled }) => match &member {
                            Some((m, _)) => { m.room.send(Command::AudioOnly { id: m.id, enabled }); None }
                            None => Some(ServerMessage::error(ErrorCode::BadState, "send join before audio_only")),
                        },
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
                ev = share_ev_rx.recv() => match ev {
                    // The share's hint is for this client; other room events it already
                    // gets as a participant.
                    Some(hint @ ServerMessage::SendHint { .. }) => Some(hint),
                    Some(ServerMessage::Error { fatal: true, reason, .. }) => match share.take() {
                        Some(s) => {
                            s.leave().await;
                            Some(ServerMessage::ShareEnded { reason })
                        }
                        None => None,
                    },
                    _ => None,
                },
                _ = sleep_until(share_connect_by) => {
                    share_connect_by = None;
                    match share.take() {
                        Some(s) => {
                            s.leave().await;
                            Some(ServerMessage::ShareEnded { reason: format!("the share's media connection did not come up within {} s (rooms.idle_timeout_secs)", idle_timeout(&server).as_secs()) })
                        }
                        None => None,
                    }
                }
                pev = share_peer_rx.recv() => match pev {
                    Some(PeerEvent::State(ConnState::Connected)) => {
                        share_connect_by = None;
                        None
                    }
                    Some(PeerEvent::State(ConnState::Failed)) => match share.take() {
                        Some(s) => {
                            s.leave().await;
                            Some(ServerMessage::ShareEnded { reason: "the share's media connection was lost".into() })
                        }
                        None => None,
                    },
                    _ => None,
                },
                Ok(()) = shutdown.changed() => {
                    let _ = tx.send(send_json(&ServerMessage::Error {
                        code: ErrorCode::Shutdown,
                        reason: "the server is shutting down".into(),
                        fatal: true,
                    })).await;
                    break;
                }
                _ = sleep_until(connect_by) => {
                    server.limits.refused(Limit::IdleTimeout);
                    let _ = tx.send(send_json(&ServerMessage::Error {
                        code: ErrorCode::Timeout,
                        reason: format!("no media connection within {} s of joining (rooms.idle_timeout_secs)", idle_timeout(&server).as_secs()),
                        fatal: true,
                    })).await;
                    break;
                }
                pev = peer_rx.recv() => match pev {
                    Some(PeerEvent::State(ConnState::Connected)) => {
                        connect_by = None;
                        None
                    }
                    Some(PeerEvent::State(ConnState::Failed)) => {
                        server.limits.refused(Limit::IceTimeout);
                        let _ = tx.send(send_json(&ServerMessage::Error {
                            code: ErrorCode::Timeout,
                            reason: "the media connection was lost (network.ice_failed_timeout_ms)".into(),
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
        if let Some(s) = share {
            s.leave().await;
        }
        if let Some((m, _)) = member {
            m.leave().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), tx.close()).await;
    }
    .instrument(span)
    .await
}

/// A viewer's `layout` choice (in `join` or later): checked against the config, then handed
/// to the room once the viewer's media runs. Returns the refusal to send, if any.
fn choose_layout(
    server: &Server,
    m: &Membership,
    wants: &mut Wants,
    layout: Option<String>,
) -> Option<ServerMessage> {
    let choice = match layout {
        None => None,
        Some(name) => match server.layout_choice(&name) {
            Ok(spec) => Some((name, spec)),
            Err(reason) => {
                return Some(ServerMessage::LayoutRefused {
                    layout: name,
                    reason,
                })
            }
        },
    };
    wants.layout = choice.as_ref().map(|(n, _)| n.clone());
    if m.peer.is_some() {
        m.room.send(Command::ChooseLayout {
            id: m.id,
            layout: choice,
        });
    }
    None
}

/// Starts participant `m`'s screen share from the offer of its second PeerConnection: a
/// member of kind `screen` that only sends. Returns it and the answer.
async fn start_share(
    server: &Arc<Server>,
    m: &Membership,
    wants: &Wants,
    offer: &str,
    events: mpsc::UnboundedSender<ServerMessage>,
    peer_events: mpsc::UnboundedSender<PeerEvent>,
) -> Result<(Membership, String), Refusal> {
    let mut s = enter(server, &m.room.name, &wants.name)?;
    let share = Wants {
        name: wants.name.clone(),
        kind: MemberKind::Screen,
        video: true,
        audio: true,
        tier: None,
        receive: false,
        publish: true,
        display: None,
        owner: Some(m.id),
        layout: None,
    };
    match start_media(&mut s, &share, offer, events, peer_events).await {
        Ok((answer, _)) => {
            info!(participant = %m.id, share = %s.id, "screen share offered");
            Ok((s, answer))
        }
        Err(e) => {
            s.leave().await;
            Err(e)
        }
    }
}

/// A WHIP publisher or WHEP viewer: kept until DELETE or until its connection fails.
pub struct Resource {
    pub room: String,
    pub kind: MemberKind,
    /// The participant name it joined under (tokens are checked against it).
    pub name: String,
    pub member: Membership,
    /// The ICE session: the server's and the client's `a=ice-ufrag` (and the client's
    /// `a=ice-pwd`). The server's is the resource's entity-tag (`ETag`); all change with an
    /// ICE restart.
    pub ufrag: String,
    pub remote_ufrag: String,
    pub remote_pwd: String,
    /// Random, in the session's URL: participant ids are public (every participant sees
    /// them), so the id alone must not let anyone PATCH or DELETE the session.
    pub secret: String,
}

impl Resource {
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.ufrag)
    }
}

/// Handles `POST /whip/{room}` and `POST /whep/{room}`: returns (id, answer, the session's
/// URL secret). `member` is the room member's kind: `whip`, `whep`, or `screen` (a WHIP
/// publisher's screen share).
pub async fn start_resource(
    server: &Arc<Server>,
    member: MemberKind,
    room: &str,
    name: &str,
    tier: Option<String>,
    offer: &str,
    who: (Option<SocketAddr>, Option<&str>),
) -> Result<(ParticipantId, String, String), Refusal> {
    let (addr, token) = who;
    let kind = if member == MemberKind::Screen {
        MemberKind::Whip
    } else {
        member
    };
    check_join_rate(server, addr)?;
    let grants = authorize(server, token, room, name)?;
    let allowed = if kind == MemberKind::Whip {
        grants.publish
    } else {
        grants.subscribe
    };
    if !allowed {
        server.limits.refused(Limit::Token);
        let perm = if kind == MemberKind::Whip {
            "publish"
        } else {
            "subscribe"
        };
        return Err(Refusal(
            ErrorCode::Forbidden,
            format!("the token does not allow {perm}"),
        ));
    }
    check_sdp_size(server, offer)?;
    sdp::sections(offer).map_err(|e| Refusal(ErrorCode::BadSdp, e.0))?;
    server.admit(room).await?;
    let mut m = enter(server, room, name)?;
    let wants = Wants {
        name: name.to_string(),
        kind: member,
        video: kind == MemberKind::Whip,
        audio: kind == MemberKind::Whip,
        tier,
        receive: kind == MemberKind::Whep,
        publish: kind == MemberKind::Whip,
        display: None,
        owner: None,
        layout: None,
    };
    // Signalling events have no one to go to, but a fatal one (removed by an admin, a
    // share replaced by another) ends the resource.
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let (peer_tx, mut peer_rx) = mpsc::unbounded_channel();
    let answer = match start_media(&mut m, &wants, offer, ev_tx, peer_tx).await {
        Ok((answer, _)) => answer,
        Err(e) => {
            m.leave().await;
            return Err(e);
        }
    };
    let id = m.id;
    let secret = crate::auth::random_hex(16);
    server
        .resources
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            id.0,
            Resource {
                room: room.to_string(),
                kind,
                name: name.to_string(),
                member: m,
                ufrag: sdp::ice_ufrag(&answer).unwrap_or_default().to_string(),
                remote_ufrag: sdp::ice_ufrag(offer).unwrap_or_default().to_string(),
                remote_pwd: sdp::ice_pwd(offer).unwrap_or_default().to_string(),
                secret: secret.clone(),
            },
        );
    let server = server.clone();
    tokio::spawn(async move {
        let mut connect_by = Some(tokio::time::Instant::now() + idle_timeout(&server));
        loop {
            let ev = tokio::select! {
                ev = peer_rx.recv() => ev,
                Some(msg) = ev_rx.recv() => match msg {
                    ServerMessage::Error { fatal: true, reason, .. } => {
                        info!(participant = %id, %reason, "{kind} removed by its room");
                        break;
                    }
                    _ => continue,
                },
                _ = sleep_until(connect_by) => {
                    server.limits.refused(Limit::IdleTimeout);
                    info!(participant = %id, "{kind} never connected; removing it");
                    break;
                }
            };
            match ev {
                Some(PeerEvent::State(ConnState::Failed)) => {
                    server.limits.refused(Limit::IceTimeout);
                    info!(participant = %id, "{kind} connection lost (ICE timeout); removing it");
                    break;
                }
                None | Some(PeerEvent::State(ConnState::Closed)) => {
                    info!(participant = %id, "{kind} connection ended");
                    break;
                }
                Some(PeerEvent::State(ConnState::Connected)) => connect_by = None,
            }
        }
        if let Some(r) = server.take_resource(id.0) {
            r.member.leave().await;
        }
    });
    Ok((id, answer, secret))
}

impl Server {
    /// The layouts a viewer may choose: the built-in ones and the config's.
    pub(crate) fn layout_names(&self) -> Vec<String> {
        let cfg = self.config();
        tessera_config::BUILTIN_LAYOUTS
            .iter()
            .map(|l| l.to_string())
            .chain(cfg.layouts.keys().cloned())
            .collect()
    }

    /// The layout named `name`, if a viewer may choose it.
    pub(crate) fn layout_choice(&self, name: &str) -> Result<tessera_engine::LayoutSpec, String> {
        let cfg = self.config();
        tessera_engine::layout_by_name(&cfg, name).map_err(|e| e.to_string())
    }

    pub(crate) fn take_resource(&self, id: u64) -> Option<Resource> {
        self.resources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    }

    /// The STUN/TURN servers for a client named `name`: with `network.turn_secret` set, the
    /// TURN entries carry credentials of its own that expire (the TURN REST scheme coturn's
    /// `use-auth-secret` checks), else the configured ones.
    pub(crate) fn ice_servers_for(&self, name: &str) -> Vec<tessera_proto::IceServer> {
        let cfg = self.config();
        let n = &cfg.network;
        let expiry = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            + n.turn_credential_ttl_secs as u64;
        n.ice_servers
            .iter()
            .map(|s| {
                let turn = s
                    .urls
                    .iter()
                    .any(|u| u.starts_with("turn:") || u.starts_with("turns:"));
                let (username, credential) = if turn && !n.turn_secret.is_empty() {
                    let (u, c) = auth::turn_credentials(&n.turn_secret, expiry, name);
                    (Some(u), Some(c))
                } else {
                    (
                        (!s.username.is_empty()).then(|| s.username.clone()),
                        (!s.credential.is_empty()).then(|| s.credential.clone()),
                    )
                };
                tessera_proto::IceServer {
                    urls: s.urls.clone(),
                    username,
                    credential,
                }
            })
            .collect()
    }
}
