//! Tessera's live server: HTTP and WebSocket signalling (warp), one media reactor thread
//! that owns every participant's PeerConnection (`rtc`'s sans-IO core, in `media`) on one
//! UDP port, and one thread per room running the sans-IO `tessera_engine::Room`.
//!
//! Owns sockets, tasks, threads and the room registry. Must not do media work on tokio's
//! threads: decoding, composing, mixing and encoding happen on each room's own thread,
//! fed by bounded channels, so one busy or crashed room cannot stall another.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let cfg = tessera_config::Config::embedded();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = tessera_server::Server::new(cfg).expect("assets load");
//! server.serve(listener, std::future::pending()).await;
//! # Ok(()) }
//! ```

mod admin;
mod api;
pub mod auth;
#[cfg(feature = "test-kit")]
pub mod client;
mod cluster;
mod estimate;
#[cfg(feature = "test-kit")]
#[doc(hidden)]
pub mod fuzzing;
mod limits;
mod listen;
pub mod media;
mod metrics;
mod peer;
mod reassembly;
mod recording;
mod reload;
mod room;
mod sdp;
mod session;
mod web;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tessera_config::Config;
use tessera_engine::{Assets, EngineError, RoomSettings, TierId, TierSettings};
use tessera_types::{ParticipantId, VideoCodec};
use tracing::info;

pub use listen::TlsError;
pub use reload::ReloadStatus;
pub use room::RoomHandle;

/// The server: config, assets and the room registry. Cheap to share behind an `Arc`.
pub struct Server {
    /// The running config and its loaded assets; replaced whole by `reload`.
    live: RwLock<(Arc<Config>, Arc<Assets>)>,
    reload_status: Mutex<ReloadStatus>,
    rooms: Mutex<HashMap<String, RoomEntry>>,
    next_id: AtomicU64,
    /// The reactor that owns every PeerConnection and the media sockets.
    media: media::MediaPlane,
    /// WHIP/WHEP sessions by resource id, for DELETE.
    resources: Mutex<HashMap<u64, session::Resource>>,
    recordings: recording::Recordings,
    limits: limits::Limits,
    /// HTTPS, set up once at start (`server.tls_*` need a restart).
    tls: Option<listen::Tls>,
    /// WebSocket sessions running, so shutdown can wait for them to say goodbye.
    sessions: AtomicUsize,
    /// Flips to true when shutdown begins; every WebSocket session watches it, and joins
    /// are refused from then on.
    shutdown_tx: tokio::sync::watch::Sender<bool>,
    /// Redis-backed placement and routing when `cluster.redis_url` is set.
    cluster: Option<Arc<cluster::Cluster>>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Media(#[from] std::io::Error),
}

struct RoomEntry {
    handle: RoomHandle,
    participants: usize,
    created: Instant,
}

/// Why a join was refused.
#[derive(Debug)]
pub enum JoinError {
    BadRequest(String),
    Full(String),
    Internal(String),
    Shutdown,
}

impl Server {
    pub fn new(cfg: Config) -> Result<Arc<Server>, StartError> {
        let assets = Assets::load(&cfg)?;
        let tls = listen::tls_from_config(&cfg)?;
        Ok(Arc::new(Server {
            tls,
            limits: limits::Limits::default(),
            sessions: AtomicUsize::new(0),
            shutdown_tx: tokio::sync::watch::Sender::new(false),
            media: media::MediaPlane::start(&cfg.network)?,
            cluster: cluster::Cluster::new(&cfg.cluster),
            live: RwLock::new((Arc::new(cfg), Arc::new(assets))),
            reload_status: Mutex::new(ReloadStatus::default()),
            rooms: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            resources: Mutex::new(HashMap::new()),
            recordings: recording::Recordings::default(),
        }))
    }

    /// The running config (a snapshot: a reload replaces it, it never changes in place).
    pub fn config(&self) -> Arc<Config> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    fn assets(&self) -> Arc<Assets> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// Serves HTTP, WebSocket, WHIP/WHEP and the API on `listener` until `shutdown` ends.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, scheme = self.scheme(), "listening");
        }
        if let Some(t) = &self.tls {
            info!(fingerprint = %t.fingerprint, self_signed = t.self_signed_pem.is_some(), "HTTPS certificate (SHA-256)");
        }
        let routes = warp::service(api::routes(self.clone()));
        if let Some(c) = &self.cluster {
            c.start(
                Arc::downgrade(&self),
                self.config().cluster.redis_url.clone(),
            );
        }
        // In a cluster, the signal drains the node first.
        let stop = self.clone().stop_when(shutdown);
        listen::accept_loop(listener, routes, self.tls.clone(), stop).await;
        self.shut_down().await;
    }

    /// The certificate made at start (PEM), when `server.tls_self_signed` is on.
    pub fn self_signed_pem(&self) -> Option<String> {
        self.tls.as_ref().and_then(|t| t.self_signed_pem.clone())
    }

    /// `https` when TLS is configured, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Tells every participant the server is going away, closes every room and WHIP/WHEP
    /// resource, and waits (at most 3 s) for the WebSocket sessions to finish.
    async fn shut_down(&self) {
        self.shutdown_tx.send_replace(true);
        let rooms: Vec<_> = self
            .rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        info!(rooms = rooms.len(), "shutting down: closing every room");
        for (_, e) in rooms {
            e.handle.send(room::Command::Close {
                code: tessera_proto::ErrorCode::Shutdown,
                reason: "the server is shutting down".into(),
            });
        }
        let ids: Vec<u64> = self
            .resources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        for id in ids {
            if let Some(r) = self.take_resource(id) {
                r.member.leave().await;
            }
        }
        // The rooms are closing, which ends their recordings: wait for the files.
        self.recordings.stop_all(Duration::from_secs(10)).await;
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.sessions.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        info!(
            sessions_left = self.sessions.load(Ordering::SeqCst),
            "shut down"
        );
        if let Some(c) = &self.cluster {
            c.leave().await;
        }
    }

    fn new_id(&self) -> ParticipantId {
        ParticipantId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Reserves a place in `room` (creating it), or says why not; the bool says its thread
    /// was started now.
    fn enter(&self, room: &str) -> Result<(RoomHandle, bool), JoinError> {
        check_name("room", room)?;
        if *self.shutdown_tx.borrow() {
            return Err(JoinError::Shutdown);
        }
        let cfg = self.config();
        let declared = cfg.rooms.declared.get(room);
        if declared.is_none() && !cfg.rooms.auto_create {
            return Err(JoinError::BadRequest(format!(
                "room {room:?} does not exist (rooms.auto_create = false; declared rooms: {})",
                cfg.rooms
                    .declared
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let max_participants = declared
            .and_then(|d| d.max_participants)
            .unwrap_or(cfg.rooms.max_participants) as usize;
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = rooms.get(room) {
            if !e.handle.is_alive() {
                rooms.remove(room);
            }
        }
        let total: usize = rooms.values().map(|e| e.participants).sum();
        if total >= cfg.limits.max_participants_total as usize {
            self.limits.refused(limits::Limit::ServerParticipants);
            return Err(JoinError::Full(format!(
                "the server is full ({total} participants, limits.max_participants_total)"
            )));
        }
        if let Some(e) = rooms.get_mut(room) {
            if e.participants >= max_participants {
                self.limits.refused(limits::Limit::RoomParticipants);
                return Err(JoinError::Full(format!(
                    "room {room:?} is full ({} participants)",
                    e.participants
                )));
            }
            e.participants += 1;
            self.cluster_changed();
            return Ok((e.handle.clone(), false));
        }
        if rooms.len() >= cfg.rooms.max_rooms as usize {
            self.limits.refused(limits::Limit::Rooms);
            return Err(JoinError::Full(format!(
                "the server is full ({} rooms, rooms.max_rooms)",
                rooms.len()
            )));
        }
        let layout = declared
            .and_then(|d| d.layout.clone())
            .unwrap_or_else(|| cfg.rooms.default_layout.clone());
        let settings = self
            .room_settings(&self.config(), &self.assets(), &layout)
            .map_err(|e| JoinError::Internal(e.to_string()))?;
        let handle = room::spawn(room, layout, settings)
            .map_err(|e| JoinError::Internal(format!("cannot start a room thread: {e}")))?;
        rooms.insert(
            room.to_string(),
            RoomEntry {
                handle: handle.clone(),
                participants: 1,
                created: Instant::now(),
            },
        );
        self.cluster_changed();
        Ok((handle, true))
    }

    /// Gives back a place taken with `enter`; the last one out closes the room.
    fn exit(&self, handle: &RoomHandle) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let Some(e) = rooms.get_mut(&handle.name) else {
            return;
        };
        if !same_room(&e.handle, handle) {
            return;
        }
        e.participants = e.participants.saturating_sub(1);
        if e.participants == 0 {
            e.handle.send(room::Command::Stop);
            rooms.remove(&handle.name);
            self.cluster_room_closed(&handle.name);
        }
        self.cluster_changed();
    }

    fn room(&self, name: &str) -> Option<(RoomHandle, usize, Instant)> {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms
            .get(name)
            .filter(|e| e.handle.is_alive())
            .map(|e| (e.handle.clone(), e.participants, e.created))
    }

    fn room_names(&self) -> Vec<(String, usize, Instant)> {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = rooms
            .iter()
            .filter(|(_, e)| e.handle.is_alive())
            .map(|(n, e)| (n.clone(), e.participants, e.created))
            .collect();
        v.sort();
        v
    }

    /// The config's tiers, plus each one in the other codec for clients that lack its own.
    fn room_settings(
        &self,
        cfg: &Config,
        assets: &Assets,
        layout: &str,
    ) -> Result<RoomSettings, EngineError> {
        let mut s = RoomSettings::from_config(cfg, layout, assets)?;
        let variants: Vec<TierSettings> = s
            .tiers
            .iter()
            .map(|t| TierSettings {
                id: t.id.with_codec(other(t.id.codec)),
                ..t.clone()
            })
            .collect();
        s.tiers.extend(variants);
        Ok(s)
    }

    /// The tier (in the codec it is sent in) and its frame rate for a client asking for
    /// `tier` that can decode `codecs`.
    fn pick_tier(
        &self,
        room: &str,
        tier: Option<&str>,
        codecs: &[String],
    ) -> Result<(TierId, u32), JoinError> {
        let cfg = self.config();
        let name = tier.unwrap_or_else(|| self.default_tier(&cfg, room));
        let Some(t) = cfg.tiers.get(name) else {
            let known: Vec<&str> = cfg.tiers.keys().map(String::as_str).collect();
            return Err(JoinError::BadRequest(format!(
                "unknown tier {name:?}: must be one of {}",
                known.join(", ")
            )));
        };
        let own: VideoCodec = t.codec.into();
        let has = |c: VideoCodec| codecs.iter().any(|n| n == codec_sdp_name(c));
        if has(own) {
            Ok((TierId::new(name, own), t.fps))
        } else if has(other(own)) {
            Ok((TierId::new(name, other(own)), t.fps))
        } else {
            Err(JoinError::BadRequest(format!(
                "the offer's video section has neither VP8 nor H264 (it has {})",
                codecs.join(", ")
            )))
        }
    }
}

impl Server {
    /// The tier a participant of `room` gets unless it asks: the declared room's, else
    /// `rooms.default_tier`.
    fn default_tier<'a>(&self, cfg: &'a Config, room: &str) -> &'a str {
        cfg.rooms
            .declared
            .get(room)
            .and_then(|d| d.tier.as_deref())
            .unwrap_or(&cfg.rooms.default_tier)
    }
}

fn same_room(a: &RoomHandle, b: &RoomHandle) -> bool {
    a.same_channel(b)
}

fn other(c: VideoCodec) -> VideoCodec {
    match c {
        VideoCodec::H264 => VideoCodec::Vp8,
        VideoCodec::Vp8 => VideoCodec::H264,
    }
}

fn codec_sdp_name(c: VideoCodec) -> &'static str {
    match c {
        VideoCodec::H264 => "H264",
        VideoCodec::Vp8 => "VP8",
    }
}

/// Room and participant names: 1 to 64 characters, no control characters.
fn check_name(what: &str, v: &str) -> Result<(), JoinError> {
    let n = v.chars().count();
    if n == 0 || n > 64 || v.chars().any(char::is_control) {
        return Err(JoinError::BadRequest(format!(
            "{what} name {v:?}: must be 1 to 64 characters without control characters"
        )));
    }
    Ok(())
}
