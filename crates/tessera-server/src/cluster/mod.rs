//! Many nodes, one service: nodes register in Redis with a heartbeat, rooms are claimed
//! atomically for the least-loaded live node, and any node routes a join, a WHIP/WHEP
//! request or an API call to the room's node (proxied; media always flows directly between
//! the client and the room's node). Off (`None` in `Server`) when `cluster.redis_url = ""`.
//!
//! Owns the Redis connection, the heartbeat task, this node's room claims and the
//! node-to-node calls. Must not touch rooms itself: it asks the `Server` (close a room,
//! list rooms) and the server asks it (`admit`, `room_closed`).
//!
//! Redis down: joins to rooms already running here go on, new rooms are refused
//! (`unavailable`, HTTP 503), `/healthz` answers 503, and the heartbeat keeps retrying.
//! A claim that lapsed meanwhile and was taken by another node is lost: its participants
//! are told to rejoin (`moved`).

mod load;
pub mod net;
mod store;
pub mod ws;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;
use tessera_config::ClusterConfig;
use tessera_proto::ErrorCode;
use tracing::{info, warn};
use warp::http::{HeaderMap, Method, StatusCode};

use crate::session::Refusal;
use crate::Server;
pub use net::Hop;
use store::{Placed, Store};

type Resp = warp::reply::Response;

const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Keys under `[cluster]` that apply only at start.
pub fn restart_needed(old: &ClusterConfig, new: &ClusterConfig) -> bool {
    let fixed = |c: &ClusterConfig| {
        (
            c.redis_url.clone(),
            c.node_id.clone(),
            c.advertise_url.clone(),
            c.secret.clone(),
            c.node_ttl_secs,
            c.key_prefix.clone(),
        )
    };
    fixed(old) != fixed(new)
}

/// Where a join for a room goes.
#[derive(Debug, PartialEq)]
pub enum Route {
    /// This node holds (or just claimed) the room.
    Local,
    /// Another node does.
    Remote { node: String, url: String },
}

/// Why a room could not be routed.
#[derive(Debug)]
pub enum RouteError {
    /// Redis cannot be asked (down, or not reached yet).
    Unavailable(String),
    /// Every live node is draining, over `max_load` or at `rooms.max_rooms`.
    Full(String),
}

impl From<RouteError> for Refusal {
    fn from(e: RouteError) -> Refusal {
        match e {
            RouteError::Unavailable(r) => Refusal(ErrorCode::Unavailable, r),
            RouteError::Full(r) => Refusal(ErrorCode::Full, r),
        }
    }
}

/// Redis as this node last found it.
#[derive(Default)]
struct Health {
    /// The last heartbeat reached Redis.
    ok: bool,
    error: Option<String>,
    /// Heartbeats that failed in a row.
    failures: u32,
}

/// Counts for `/metrics`.
#[derive(Default)]
pub struct Counters {
    pub bad_hops: AtomicU64,
    pub proxied_ws: AtomicU64,
    pub proxied_http: AtomicU64,
    pub rooms_lost: AtomicU64,
    pub redis_errors: AtomicU64,
}

pub struct Cluster {
    pub id: String,
    /// `cluster.advertise_url` without a trailing `/`.
    pub url: String,
    secret: String,
    redis_url: String,
    ttl: Duration,
    started_unix: u64,
    store: Store,
    con: Mutex<Option<ConnectionManager>>,
    health: Mutex<Health>,
    /// This node's claims: room -> (claim, when claimed). A claim made for a join that
    /// never came is forgotten after a TTL (its key expires in Redis too).
    claims: Mutex<HashMap<String, (String, Instant)>>,
    draining: AtomicBool,
    /// Set when the node deregisters: the heartbeat stops, so it cannot register again.
    left: AtomicBool,
    /// Held through a heartbeat and through leaving, so that no beat lands after it.
    beat_gate: tokio::sync::Mutex<()>,
    /// Set by SIGTERM or `POST /api/admin/drain`; `Server::serve` watches it.
    drain_tx: tokio::sync::watch::Sender<bool>,
    /// Wakes the heartbeat task to publish the room table at once.
    dirty: tokio::sync::Notify,
    cpu: Mutex<f32>,
    pub counters: Counters,
}

impl Cluster {
    pub fn new(cfg: &ClusterConfig) -> Option<Arc<Cluster>> {
        if !cfg.enabled() {
            return None;
        }
        let ttl = Duration::from_secs(cfg.node_ttl_secs as u64);
        Some(Arc::new(Cluster {
            id: cfg.node_id.clone(),
            url: cfg.advertise_url.trim_end_matches('/').to_string(),
            secret: cfg.secret.clone(),
            redis_url: cfg.redis_url_redacted(),
            ttl,
            started_unix: crate::auth::now_unix(),
            store: Store::new(&cfg.key_prefix, &cfg.node_id, ttl.as_millis() as u64),
            con: Mutex::new(None),
            health: Mutex::new(Health::default()),
            claims: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            left: AtomicBool::new(false),
            beat_gate: tokio::sync::Mutex::new(()),
            drain_tx: tokio::sync::watch::Sender::new(false),
            dirty: tokio::sync::Notify::new(),
            cpu: Mutex::new(0.0),
            counters: Counters::default(),
        }))
    }

    /// Starts the heartbeat task (needs a tokio runtime).
    pub fn start(self: &Arc<Self>, server: Weak<Server>, redis_url: String) {
        info!(node = %self.id, url = %self.url, redis = %self.redis_url, "cluster node starting");
        let me = self.clone();
        tokio::spawn(async move { me.heartbeat_loop(server, redis_url).await });
    }

    /// The connection, if one was made.
    fn con(&self) -> Result<ConnectionManager, RouteError> {
        let con = self.con.lock().unwrap_or_else(|e| e.into_inner()).clone();
        con.ok_or_else(|| RouteError::Unavailable(self.redis_down_text()))
    }

    fn redis_down_text(&self) -> String {
        let h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        format!(
            "Redis at {} is unreachable ({}); new rooms cannot be placed now, try again shortly",
            self.redis_url,
            h.error.as_deref().unwrap_or("not connected yet")
        )
    }

    fn redis_error(&self, e: redis::RedisError) -> RouteError {
        self.counters.redis_errors.fetch_add(1, Ordering::Relaxed);
        RouteError::Unavailable(format!(
            "Redis at {} failed ({e}); new rooms cannot be placed now, try again shortly",
            self.redis_url
        ))
    }

    /// Makes the connection if there is none (each heartbeat tries again).
    async fn connect(&self, redis_url: &str) -> Result<ConnectionManager, String> {
        if let Ok(c) = self.con() {
            return Ok(c);
        }
        let client = redis::Client::open(redis_url).map_err(|e| format!("bad redis_url: {e}"))?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let con = tokio::time::timeout(
            REDIS_TIMEOUT * 2,
            ConnectionManager::new_with_config(client, cfg),
        )
        .await
        .map_err(|_| "connecting timed out".to_string())?
        .map_err(|e| e.to_string())?;
        *self.con.lock().unwrap_or_else(|e| e.into_inner()) = Some(con.clone());
        Ok(con)
    }

    async fn heartbeat_loop(self: Arc<Self>, server: Weak<Server>, redis_url: String) {
        let mut meter = load::CpuMeter::new();
        let period = self.ttl / 3;
        let mut next = tokio::time::Instant::now();
        loop {
            let full = tokio::select! {
                _ = tokio::time::sleep_until(next) => true,
                _ = self.dirty.notified() => {
                    // Let a burst of joins settle into one write.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    false
                }
            };
            if full {
                *self.cpu.lock().unwrap_or_else(|e| e.into_inner()) = meter.sample();
                next = tokio::time::Instant::now() + period;
            }
            let Some(server) = server.upgrade() else {
                return;
            };
            let _gate = self.beat_gate.lock().await;
            if self.left.load(Ordering::SeqCst) {
                return;
            }
            let result = match self.connect(&redis_url).await {
                Ok(mut con) => self.beat(&server, &mut con, full).await,
                Err(e) => Err(e),
            };
            self.record(result);
        }
    }

    fn record(&self, result: Result<(), String>) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(()) => {
                if !h.ok {
                    info!(redis = %self.redis_url, node = %self.id, "cluster: Redis reached; node registered");
                }
                *h = Health {
                    ok: true,
                    error: None,
                    failures: 0,
                };
            }
            Err(e) => {
                self.counters.redis_errors.fetch_add(1, Ordering::Relaxed);
                if h.ok || h.failures.is_multiple_of(30) {
                    warn!(redis = %self.redis_url, "cluster: Redis unreachable: {e}; running rooms go on, new rooms are refused");
                }
                h.ok = false;
                h.error = Some(e);
                h.failures += 1;
                // A connection that keeps failing is made anew.
                if h.failures >= 2 {
                    *self.con.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
            }
        }
    }

    /// Publishes the heartbeat and room table; with `renew`, renews this node's claims
    /// and closes the rooms whose claim another node won.
    async fn beat(
        &self,
        server: &Arc<Server>,
        con: &mut ConnectionManager,
        renew: bool,
    ) -> Result<(), String> {
        let rooms = server.room_names();
        let now = crate::auth::now_unix();
        let participants: usize = rooms.iter().map(|r| r.1).sum();
        let cpu = *self.cpu.lock().unwrap_or_else(|e| e.into_inner());
        let cfg = server.config();
        // What one more room costs here: this node's CPU per room, or a guess for the first.
        let room_cost = if rooms.is_empty() {
            0.05
        } else {
            (cpu / rooms.len() as f32).clamp(0.01, 0.5)
        };
        let draining = if self.is_draining() { "1" } else { "0" };
        let mut fields = vec![
            ("participants", participants.to_string()),
            ("draining", draining.to_string()),
            ("beat", now.to_string()),
        ];
        // The load placement reads changes only with a CPU sample (`renew`, the full
        // heartbeat): `rooms` and `pending` (claims since) must describe the same moment.
        if renew {
            fields.extend([
                ("url", self.url.clone()),
                ("cpu", format!("{cpu:.3}")),
                ("rooms", rooms.len().to_string()),
                ("pending", "0".to_string()),
                ("room_cost", format!("{room_cost:.3}")),
                ("max_load", format!("{:.3}", cfg.cluster.max_load)),
                ("max_rooms", cfg.rooms.max_rooms.to_string()),
                ("started", self.started_unix.to_string()),
            ]);
        }
        let table: Vec<(String, String)> = rooms
            .iter()
            .map(|(name, n, created)| {
                let info = serde_json::json!({
                    "participants": n,
                    "created": now.saturating_sub(created.elapsed().as_secs()),
                });
                (name.clone(), info.to_string())
            })
            .collect();
        self.store
            .beat(con, &fields, &table)
            .await
            .map_err(|e| e.to_string())?;
        if !renew {
            return Ok(());
        }
        let held: Vec<(String, String)> = {
            let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
            let ttl = self.ttl;
            claims.retain(|room, (_, at)| {
                at.elapsed() < ttl || rooms.iter().any(|(r, _, _)| r == room)
            });
            rooms
                .iter()
                .map(|(r, _, _)| {
                    let claim = claims.get(r).map(|c| c.0.clone()).unwrap_or_default();
                    (r.clone(), claim)
                })
                .collect()
        };
        let now_held = self
            .store
            .renew(con, &held)
            .await
            .map_err(|e| e.to_string())?;
        let mut lost = Vec::new();
        {
            let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
            for ((room, _), claim) in held.iter().zip(now_held) {
                if claim.is_empty() {
                    claims.remove(room);
                    lost.push(room.clone());
                } else {
                    claims.insert(room.clone(), (claim, Instant::now()));
                }
            }
        }
        for room in lost {
            self.counters.rooms_lost.fetch_add(1, Ordering::Relaxed);
            warn!(%room, "cluster: this node's claim lapsed and another node took the room; its participants are told to rejoin");
            server
                .close_room_code(
                    &room,
                    ErrorCode::Moved,
                    "the room moved to another node (this node lost it while cut off from Redis); join again",
                )
                .await;
        }
        Ok(())
    }

    /// Finds (or claims) the node for `room`.
    pub async fn route(&self, room: &str) -> Result<Route, RouteError> {
        let mut con = self.con()?;
        let placed = self
            .store
            .place(&mut con, room)
            .await
            .map_err(|e| self.redis_error(e))?;
        match placed {
            Placed::At {
                node, claim, new, ..
            } if node == self.id => {
                if new {
                    info!(%room, "cluster: room claimed for this node");
                }
                self.claims
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(room.to_string(), (claim, Instant::now()));
                Ok(Route::Local)
            }
            Placed::At { node, url, new, .. } => {
                if new {
                    info!(%room, %node, "cluster: room claimed for another node");
                }
                Ok(Route::Remote { node, url })
            }
            Placed::Nowhere(reason) => Err(RouteError::Full(reason)),
        }
    }

    /// The live node holding `room`, if another node does.
    pub async fn owner(&self, room: &str) -> Result<Option<(String, String)>, RouteError> {
        let mut con = self.con()?;
        let owner = self
            .store
            .owner(&mut con, room)
            .await
            .map_err(|e| self.redis_error(e))?;
        Ok(owner.filter(|(node, _)| *node != self.id))
    }

    /// A live node's URL by its id.
    pub async fn node_url(&self, node: &str) -> Result<Option<String>, RouteError> {
        Ok(self
            .nodes()
            .await?
            .into_iter()
            .find(|n| n.id == node)
            .map(|n| n.url))
    }

    /// Gives a closed room's claim back (if it is still this node's).
    pub fn room_closed(self: &Arc<Self>, room: &str) {
        let claim = self
            .claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(room);
        self.dirty.notify_one();
        let Some((claim, _)) = claim else { return };
        let me = self.clone();
        let room = room.to_string();
        tokio::spawn(async move {
            if let Ok(mut con) = me.con() {
                if let Err(e) = me.store.release(&mut con, &[(room.clone(), claim)]).await {
                    // The claim expires with its TTL anyway.
                    warn!(%room, "cluster: could not release the room's claim: {e}");
                }
            }
        });
    }

    /// A local room gained or lost a participant: publish soon.
    pub fn changed(&self) {
        self.dirty.notify_one();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Asks `Server::serve` to drain this node.
    pub fn request_drain(&self) {
        self.drain_tx.send_replace(true);
    }

    /// Resolves once a drain is requested.
    pub async fn drain_requested(&self) {
        let mut rx = self.drain_tx.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// `/healthz`: 200 while Redis answers and the node is not draining.
    pub fn healthz(&self) -> Resp {
        let h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_draining() {
            return net::text(
                StatusCode::SERVICE_UNAVAILABLE,
                "draining: this node takes no new rooms\n",
            );
        }
        if !h.ok {
            return net::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "redis unreachable: {} ({}); running rooms go on, new rooms are refused\n",
                    self.redis_url,
                    h.error.as_deref().unwrap_or("not connected yet")
                ),
            );
        }
        net::text(StatusCode::OK, "ok\n")
    }

    pub async fn nodes(&self) -> Result<Vec<NodeRow>, RouteError> {
        let mut con = self.con()?;
        let recs = self
            .store
            .nodes(&mut con)
            .await
            .map_err(|e| self.redis_error(e))?;
        let now = crate::auth::now_unix();
        let num = |s: &str| s.parse::<f64>().unwrap_or(0.0);
        let mut rows: Vec<NodeRow> = recs
            .into_iter()
            .map(|r| {
                let cpu = num(&r.cpu);
                let max_load = num(&r.max_load);
                let rooms = num(&r.rooms) as u64;
                let draining = r.draining == "1";
                NodeRow {
                    accepts_rooms: !draining
                        && cpu < max_load
                        && rooms + (num(&r.pending) as u64) < num(&r.max_rooms) as u64,
                    this: r.id == self.id,
                    id: r.id,
                    url: r.url,
                    rooms,
                    participants: num(&r.participants) as u64,
                    load: cpu,
                    max_load,
                    draining,
                    uptime_secs: now.saturating_sub(num(&r.started) as u64),
                    heartbeat_secs_ago: now.saturating_sub(num(&r.beat) as u64),
                }
            })
            .collect();
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(rows)
    }

    pub async fn rooms(&self) -> Result<Vec<RoomRow>, RouteError> {
        let mut con = self.con()?;
        let recs = self
            .store
            .rooms(&mut con)
            .await
            .map_err(|e| self.redis_error(e))?;
        let now = crate::auth::now_unix();
        let mut rows: Vec<RoomRow> = recs
            .into_iter()
            .map(|r| {
                let info: serde_json::Value = serde_json::from_str(&r.info).unwrap_or_default();
                RoomRow {
                    room: r.room,
                    participants: info["participants"].as_u64().unwrap_or(0),
                    created_secs_ago: now.saturating_sub(info["created"].as_u64().unwrap_or(now)),
                    node: r.node,
                }
            })
            .collect();
        rows.sort_by(|a, b| a.room.cmp(&b.room).then(a.node.cmp(&b.node)));
        Ok(rows)
    }

    /// Deregisters this node and gives its claims back (clean shutdown).
    pub async fn leave(&self) {
        let _gate = self.beat_gate.lock().await;
        self.left.store(true, Ordering::SeqCst);
        let claims: Vec<(String, String)> = self
            .claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(room, (claim, _))| (room, claim))
            .collect();
        if let Ok(mut con) = self.con() {
            match self.store.leave(&mut con, &claims).await {
                Ok(()) => info!(node = %self.id, "cluster: node deregistered"),
                Err(e) => warn!("cluster: could not deregister (the TTL will): {e}"),
            }
        }
    }

    /// Gives back the claims of every room still here (a drain that timed out).
    async fn release_all(&self) {
        let claims: Vec<(String, String)> = self
            .claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(room, (claim, _))| (room, claim))
            .collect();
        if let Ok(mut con) = self.con() {
            if let Err(e) = self.store.release(&mut con, &claims).await {
                warn!("cluster: could not release the rooms' claims (their TTL will): {e}");
            }
        }
    }

    /// Signs a request `method path` forwarded for `client`.
    pub fn sign(&self, client: Option<std::net::SocketAddr>, method: &str, path: &str) -> String {
        net::sign(
            &self.secret,
            &self.id,
            client,
            method,
            path,
            crate::auth::now_unix(),
        )
    }

    /// Checks a request's hop header (`None` if absent).
    pub fn check_hop(&self, value: Option<&str>, method: &str, path: &str) -> Hop {
        let Some(v) = value else { return Hop::None };
        let hop = net::verify(&self.secret, v, method, path, crate::auth::now_unix());
        if let Hop::Invalid(reason) = &hop {
            self.counters.bad_hops.fetch_add(1, Ordering::Relaxed);
            warn!(%reason, "cluster: refused a node-to-node call");
        }
        hop
    }

    /// Forwards a request to the node at `url`, signed for `client`.
    #[allow(clippy::too_many_arguments)]
    pub async fn forward(
        &self,
        url: &str,
        method: Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: Bytes,
        client: Option<std::net::SocketAddr>,
    ) -> Resp {
        self.counters.proxied_http.fetch_add(1, Ordering::Relaxed);
        let hop = self.sign(client, method.as_str(), path);
        let pq = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
        match net::request(url, method, &pq, headers, hop, body).await {
            Ok(r) => r,
            Err(e) => net::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the node at {url} cannot be reached: {e}; try again shortly\n"),
            ),
        }
    }
}

/// The cluster's part of `/metrics`.
#[derive(Debug)]
pub struct Stats {
    pub redis_up: bool,
    pub draining: bool,
    pub proxied_ws: u64,
    pub proxied_http: u64,
    pub bad_hops: u64,
    pub rooms_lost: u64,
    pub redis_errors: u64,
}

impl Cluster {
    pub fn stats(&self) -> Stats {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = &self.counters;
        Stats {
            redis_up: self.health.lock().unwrap_or_else(|e| e.into_inner()).ok,
            draining: self.is_draining(),
            proxied_ws: n(&c.proxied_ws),
            proxied_http: n(&c.proxied_http),
            bad_hops: n(&c.bad_hops),
            rooms_lost: n(&c.rooms_lost),
            redis_errors: n(&c.redis_errors),
        }
    }
}

/// A row of `GET /api/cluster/nodes`.
#[derive(Debug, Serialize)]
pub struct NodeRow {
    pub id: String,
    pub url: String,
    pub rooms: u64,
    pub participants: u64,
    /// The server process's CPU time over the last heartbeat, as a share of all cores.
    pub load: f64,
    pub max_load: f64,
    pub draining: bool,
    /// Not draining, under `max_load` and under `rooms.max_rooms`.
    pub accepts_rooms: bool,
    /// The node that answered.
    pub this: bool,
    pub uptime_secs: u64,
    pub heartbeat_secs_ago: u64,
}

/// A row of `GET /api/rooms` in a cluster.
#[derive(Debug, Serialize)]
pub struct RoomRow {
    pub room: String,
    pub participants: u64,
    pub created_secs_ago: u64,
    pub node: String,
}

impl Server {
    /// Lets a join for `room` in here: always on a single node; in a cluster when the room
    /// runs here or this node could claim it.
    pub(crate) async fn admit(&self, room: &str) -> Result<(), Refusal> {
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        if self.room(room).is_some() {
            return Ok(());
        }
        match c.route(room).await? {
            Route::Local => Ok(()),
            Route::Remote { node, .. } => Err(Refusal(
                ErrorCode::Moved,
                format!("room {room:?} is on node {node:?}; join again (a new connection is routed there)"),
            )),
        }
    }

    /// Where a request for `room` should be forwarded: `Some(url)` when another live node
    /// holds it and this request may be forwarded.
    pub(crate) async fn owner_elsewhere(
        &self,
        room: &str,
        hop: &Hop,
    ) -> Result<Option<String>, RouteError> {
        let Some(c) = &self.cluster else {
            return Ok(None);
        };
        if hop.is_hop() || self.room(room).is_some() {
            return Ok(None);
        }
        Ok(c.owner(room).await?.map(|(_, url)| url))
    }

    /// Called whenever a local room opened, closed or changed size.
    pub(crate) fn cluster_changed(&self) {
        if let Some(c) = &self.cluster {
            c.changed();
        }
    }

    /// Called when a local room is gone from the registry.
    pub(crate) fn cluster_room_closed(&self, room: &str) {
        if let Some(c) = &self.cluster {
            c.room_closed(room);
        }
    }

    /// A WHIP/WHEP resource's id as its `Location` shows it: `p7`, or `p7~NODE` in a
    /// cluster so that any node can route a `DELETE` or `PATCH` to it.
    pub(crate) fn resource_id(&self, id: tessera_types::ParticipantId) -> String {
        match &self.cluster {
            Some(c) => format!("{id}~{}", c.id),
            None => id.to_string(),
        }
    }

    /// Resolves when the server should stop accepting: at `shutdown` on a single node; in a
    /// cluster at `shutdown` or a drain request, once the drain is over.
    pub(crate) async fn stop_when(
        self: Arc<Self>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let Some(c) = self.cluster.clone() else {
            return shutdown.await;
        };
        tokio::select! {
            _ = shutdown => {}
            _ = c.drain_requested() => {}
        }
        self.drain().await;
    }

    /// Drains this node (cluster only): no new rooms, wait until the local rooms are empty
    /// or `cluster.drain_timeout_secs` passed, then release and close what is left with
    /// `moved` so its participants rejoin on another node.
    pub(crate) async fn drain(&self) {
        let Some(c) = &self.cluster else { return };
        if c.draining.swap(true, Ordering::SeqCst) {
            return;
        }
        c.request_drain();
        c.changed();
        let timeout = Duration::from_secs(self.config().cluster.drain_timeout_secs as u64);
        let deadline = Instant::now() + timeout;
        info!(
            rooms = self.room_names().len(),
            timeout_secs = timeout.as_secs(),
            "cluster: draining: no new rooms; waiting for the rooms here to end"
        );
        let mut last_log = Instant::now();
        loop {
            let rooms = self.room_names();
            if rooms.is_empty() {
                info!("cluster: drained: no rooms left");
                break;
            }
            if Instant::now() >= deadline {
                info!(
                    rooms = rooms.len(),
                    "cluster: drain timeout (cluster.drain_timeout_secs): moving the participants left"
                );
                c.release_all().await;
                for (room, _, _) in rooms {
                    self.close_room_code(
                        &room,
                        ErrorCode::Moved,
                        "this node is shutting down; join again to continue on another node",
                    )
                    .await;
                }
                // Let the sessions pass `moved` on before shutdown tells them `shutdown`.
                let flushed = Instant::now() + Duration::from_secs(2);
                while self.sessions.load(Ordering::SeqCst) > 0 && Instant::now() < flushed {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                break;
            }
            if last_log.elapsed() > Duration::from_secs(30) {
                info!(rooms = rooms.len(), "cluster: still draining");
                last_log = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
