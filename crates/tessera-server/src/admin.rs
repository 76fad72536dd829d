//! The admin API (`/api/admin/...`, bearer token `auth.admin_token`): list rooms with their
//! participants, change a room's layout, pin a participant to the speaker tile, mute or
//! remove a participant, set its tier, close a room, start and stop recordings. Answers are
//! JSON; errors are `{"error": "..."}` with 400/401/403/404 (500 when a recording cannot
//! start: its directory or ffmpeg).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use tessera_types::ParticipantId;
use warp::http::{header, Method, Response, StatusCode};

use crate::room::Command;
use crate::Server;

type Resp = warp::reply::Response;

fn reply(status: StatusCode, v: serde_json::Value) -> Resp {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(v.to_string().into())
        .unwrap_or_default()
}

fn error(status: StatusCode, msg: impl Into<String>) -> Resp {
    reply(status, json!({ "error": msg.into() }))
}

/// Equal length and contents, without an early exit on the first difference.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A refusal, turned into a JSON response at the end.
struct ApiError(StatusCode, String);

impl ApiError {
    fn resp(self) -> Resp {
        error(self.0, self.1)
    }
}

/// Which rooms a caller may administer.
enum Scope {
    All,
    Room(String),
}

impl Scope {
    fn allows(&self, room: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Room(r) => r == room,
        }
    }
}

/// `auth.admin_token` gives every room; a join token with `admin` gives its own room.
fn check_token(server: &Server, auth: Option<&str>) -> Result<Scope, ApiError> {
    let cfg = server.config();
    let token = &cfg.auth.admin_token;
    let secret = &cfg.auth.token_secret;
    if token.is_empty() && secret.is_empty() {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "the admin API is off: set auth.admin_token in the config".into(),
        ));
    }
    let Some(given) = auth.and_then(|a| a.strip_prefix("Bearer ")).map(str::trim) else {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "send the admin token as \"Authorization: Bearer TOKEN\"".into(),
        ));
    };
    if !token.is_empty() && same_secret(given.as_bytes(), token.as_bytes()) {
        return Ok(Scope::All);
    }
    if !secret.is_empty() {
        if let Ok(c) = crate::auth::verify(secret, given, crate::auth::now_unix()) {
            if c.has(crate::auth::Perm::Admin) {
                return Ok(if c.room == "*" {
                    Scope::All
                } else {
                    Scope::Room(c.room)
                });
            }
        }
    }
    Err(ApiError(StatusCode::FORBIDDEN, "wrong admin token".into()))
}

fn participant_id(s: &str) -> Option<ParticipantId> {
    s.strip_prefix('p')?.parse().ok().map(ParticipantId)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamBody {
    url: String,
    tier: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordingBody {
    format: Option<String>,
    tier: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LayoutBody {
    layout: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinBody {
    participant: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MuteBody {
    audio: Option<bool>,
    video: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TierBody {
    tier: String,
}

/// A recording or stream that could not start.
fn refused(r: crate::recording::Refused) -> Resp {
    error(
        StatusCode::from_u16(r.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        r.to_string(),
    )
}

fn body<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

pub async fn handle(
    server: Arc<Server>,
    method: Method,
    path: &str,
    auth: Option<String>,
    bytes: bytes::Bytes,
) -> Resp {
    let scope = match check_token(&server, auth.as_deref()) {
        Ok(s) => s,
        Err(r) => return r.resp(),
    };
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match (method.clone(), parts.as_slice()) {
        (Method::GET, ["rooms"]) => {
            let mut rooms = Vec::new();
            for (name, _, _) in server.room_names() {
                if !scope.allows(&name) {
                    continue;
                }
                if let Some((h, _, _)) = server.room(&name) {
                    if let Some(info) = h.ask(|reply| Command::Info { reply }).await {
                        rooms.push(info);
                    }
                }
            }
            reply(StatusCode::OK, json!(rooms))
        }
        (Method::POST, ["drain"]) => match &server.cluster {
            Some(c) => {
                c.request_drain();
                reply(
                    StatusCode::ACCEPTED,
                    json!({
                        "node": c.id,
                        "draining": true,
                        "rooms": server.room_names().len(),
                        "drain_timeout_secs": server.config().cluster.drain_timeout_secs,
                    }),
                )
            }
            None => error(
                StatusCode::CONFLICT,
                "drain is for a node of a cluster (cluster.redis_url is empty); a single node shuts down on SIGTERM",
            ),
        },
        (Method::GET, ["config"]) => {
            let cfg = server.config();
            let layouts: Vec<String> = tessera_config::BUILTIN_LAYOUTS
                .iter()
                .map(|l| l.to_string())
                .chain(cfg.layouts.keys().cloned())
                .collect();
            let tiers: Vec<&String> = cfg.tiers.keys().collect();
            reply(
                StatusCode::OK,
                json!({ "layouts": layouts, "tiers": tiers, "default_layout": cfg.rooms.default_layout, "reload": server.reload_status() }),
            )
        }
        (_, ["rooms", room, rest @ ..]) => {
            if !scope.allows(room) {
                return error(
                    StatusCode::FORBIDDEN,
                    format!("this token is not for room {room:?}"),
                );
            }
            // A recording outlives its room: stopping or listing it needs no running room.
            match (&method, rest) {
                (&Method::DELETE, [what @ ("recordings" | "streams"), id]) => {
                    let streams = *what == "streams";
                    let Some(r) = server.recordings.get(room, id, streams) else {
                        return error(StatusCode::NOT_FOUND, format!("no {what} {id:?} in {room:?}"));
                    };
                    let report = r.stop(std::time::Duration::from_secs(30)).await;
                    return reply(StatusCode::OK, json!(report));
                }
                (&Method::GET, [what @ ("recordings" | "streams")]) => {
                    let list = server.recordings.in_room(room, *what == "streams");
                    return reply(StatusCode::OK, json!(list));
                }
                _ => {}
            }
            let Some((h, _, _)) = server.room(room) else {
                return error(StatusCode::NOT_FOUND, format!("no room {room:?}"));
            };
            match (method, rest) {
                (Method::POST, ["streams"]) => {
                    let b: StreamBody = match body(&bytes) {
                        Ok(b) => b,
                        Err(r) => return r.resp(),
                    };
                    let (srv, name) = (server.clone(), room.to_string());
                    let started = tokio::task::spawn_blocking(move || {
                        crate::recording::start_stream(&srv, &name, h, &b.url, b.tier.as_deref())
                    })
                    .await
                    .unwrap_or_else(|e| {
                        Err(crate::recording::Refused::Internal(format!("stream start failed: {e}")))
                    });
                    match started {
                        Ok(r) => reply(
                            StatusCode::CREATED,
                            json!({ "id": r.id, "url": r.report().url }),
                        ),
                        Err(r) => refused(r),
                    }
                }
                (Method::POST, ["recordings"]) => {
                    let b: RecordingBody = if bytes.iter().all(u8::is_ascii_whitespace) {
                        RecordingBody::default()
                    } else {
                        match body(&bytes) {
                            Ok(b) => b,
                            Err(r) => return r.resp(),
                        }
                    };
                    // Files and a fork: off the async threads.
                    let (srv, name) = (server.clone(), room.to_string());
                    let started = tokio::task::spawn_blocking(move || {
                        crate::recording::start(
                            &srv,
                            &name,
                            h,
                            b.format.as_deref(),
                            b.tier.as_deref(),
                            false,
                        )
                    })
                    .await
                    .unwrap_or_else(|e| {
                        Err(crate::recording::Refused::Internal(format!("recording start failed: {e}")))
                    });
                    match started {
                        Ok(r) => reply(
                            StatusCode::CREATED,
                            json!({ "id": r.id, "file": r.report().file }),
                        ),
                        Err(r) => refused(r),
                    }
                }
                (Method::DELETE, []) => {
                    server
                        .close_room(room, "the room was closed by an administrator")
                        .await;
                    reply(StatusCode::OK, json!({ "closed": room }))
                }
                (Method::POST, ["layout"]) => {
                    let b: LayoutBody = match body(&bytes) {
                        Ok(b) => b,
                        Err(r) => return r.resp(),
                    };
                    match tessera_engine::layout_by_name(&server.config(), &b.layout) {
                        Ok(spec) => {
                            h.send(Command::SetLayout {
                                name: b.layout.clone(),
                                spec,
                            });
                            reply(StatusCode::OK, json!({ "layout": b.layout }))
                        }
                        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
                    }
                }
                (Method::POST, ["pin"]) => {
                    let b: PinBody = match body(&bytes) {
                        Ok(b) => b,
                        Err(r) => return r.resp(),
                    };
                    let id = match b.participant.as_deref().map(participant_id) {
                        Some(None) => {
                            return error(
                                StatusCode::BAD_REQUEST,
                                "participant ids look like \"p7\"",
                            )
                        }
                        Some(Some(id)) => Some(id),
                        None => None,
                    };
                    match h.ask(|reply| Command::Pin { id, reply }).await {
                        Some(Ok(())) => reply(StatusCode::OK, json!({ "pinned": b.participant })),
                        Some(Err(e)) => error(StatusCode::NOT_FOUND, e.to_string()),
                        None => error(StatusCode::SERVICE_UNAVAILABLE, "the room did not answer"),
                    }
                }
                (m, ["participants", pid, action @ ..]) => {
                    let Some(id) = participant_id(pid) else {
                        return error(StatusCode::BAD_REQUEST, "participant ids look like \"p7\"");
                    };
                    match (m, action) {
                        (Method::DELETE, []) => {
                            if let Some(r) = server.take_resource_in(room, id) {
                                r.member.leave().await;
                                return reply(StatusCode::OK, json!({ "removed": pid }));
                            }
                            let reason = "removed by an administrator".to_string();
                            match h.ask(|reply| Command::Kick { id, reason, reply }).await {
                                Some(true) => reply(StatusCode::OK, json!({ "removed": pid })),
                                _ => error(
                                    StatusCode::NOT_FOUND,
                                    format!("no participant {pid} in {room:?}"),
                                ),
                            }
                        }
                        (Method::POST, ["mute"]) => {
                            let b: MuteBody = match body(&bytes) {
                                Ok(b) => b,
                                Err(r) => return r.resp(),
                            };
                            h.send(Command::Mute {
                                id,
                                audio: b.audio,
                                video: b.video,
                            });
                            reply(
                                StatusCode::OK,
                                json!({ "participant": pid, "audio": b.audio, "video": b.video }),
                            )
                        }
                        (Method::POST, ["tier"]) => {
                            let b: TierBody = match body(&bytes) {
                                Ok(b) => b,
                                Err(r) => return r.resp(),
                            };
                            let tier = b.tier;
                            match h.ask(|reply| Command::SetTier { id, tier, reply }).await {
                                Some(Ok(t)) => {
                                    reply(StatusCode::OK, json!({ "participant": pid, "tier": t }))
                                }
                                Some(Err(e)) => error(StatusCode::BAD_REQUEST, e.to_string()),
                                None => error(
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "the room did not answer",
                                ),
                            }
                        }
                        _ => error(StatusCode::NOT_FOUND, "unknown admin action"),
                    }
                }
                _ => error(StatusCode::NOT_FOUND, "unknown admin action"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "unknown admin action"),
    }
}

impl Server {
    /// Removes `room` from the registry (the next join creates a new one), tells its
    /// participants, and ends WHIP/WHEP sessions in it.
    pub(crate) async fn close_room(&self, room: &str, reason: &str) {
        self.close_room_code(room, tessera_proto::ErrorCode::Removed, reason)
            .await
    }

    /// `close_room`, telling the participants `code` (`moved`: rejoin elsewhere).
    pub(crate) async fn close_room_code(
        &self,
        room: &str,
        code: tessera_proto::ErrorCode,
        reason: &str,
    ) {
        let entry = self
            .rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(room);
        if let Some(e) = entry {
            e.handle.send(Command::Close {
                code,
                reason: reason.to_string(),
            });
            self.cluster_room_closed(room);
        }
        let ids: Vec<u64> = self
            .resources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, r)| r.room == room)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(r) = self.take_resource(id) {
                r.member.leave().await;
            }
        }
    }

    fn take_resource_in(&self, room: &str, id: ParticipantId) -> Option<crate::session::Resource> {
        let mut res = self.resources.lock().unwrap_or_else(|e| e.into_inner());
        if res.get(&id.0).is_some_and(|r| r.room == room) {
            res.remove(&id.0)
        } else {
            None
        }
    }
}
