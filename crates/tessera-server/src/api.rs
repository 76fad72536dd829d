//! HTTP routes: the web client, `/ws`, WHIP/WHEP, the JSON API, snapshots and health.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use tessera_codec::VideoFrame;
use tessera_proto::ErrorCode;
use warp::http::{header, Response, StatusCode};
use warp::{Filter, Rejection, Reply};

use crate::listen::ClientAddr;
use crate::room::Command;
use crate::session::{self, Refusal};
use crate::{web, Server};

type Resp = warp::reply::Response;

#[derive(Debug)]
struct TooLarge;
impl warp::reject::Reject for TooLarge {}

fn with_server(
    server: Arc<Server>,
) -> impl Filter<Extract = (Arc<Server>,), Error = Infallible> + Clone {
    warp::any().map(move || server.clone())
}

/// The client's address, as the accept loop recorded it.
fn client_addr() -> impl Filter<Extract = (Option<SocketAddr>,), Error = Infallible> + Clone {
    warp::ext::optional::<ClientAddr>().map(|a: Option<ClientAddr>| a.map(|a| a.0))
}

fn text(status: StatusCode, body: impl Into<String>) -> Resp {
    let body: String = body.into();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body.into())
        .unwrap_or_default()
}

fn json<T: Serialize>(v: &T) -> Resp {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(serde_json::to_string(v).unwrap_or_default().into())
        .unwrap_or_default()
}

pub fn routes(
    server: Arc<Server>,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let s = || with_server(server.clone());
    let ws = warp::path!("ws")
        .and(warp::ws())
        .and(client_addr())
        .and(s())
        .map(
            |ws: warp::ws::Ws, addr: Option<SocketAddr>, server: Arc<Server>| {
                let max = server.config().limits.ws_max_message_bytes as usize;
                ws.max_message_size(max)
                    .max_frame_size(max)
                    .on_upgrade(move |socket| session::run_ws(server, socket, addr))
            },
        );
    let cert = warp::path!("cert.pem")
        .and(warp::get())
        .and(s())
        .map(|server: Arc<Server>| match server.self_signed_pem() {
            Some(pem) => Response::builder()
                .header(header::CONTENT_TYPE, "application/x-pem-file")
                .body(pem.into())
                .unwrap_or_default(),
            None => text(
                StatusCode::NOT_FOUND,
                "not found: only a self-signed server (server.tls_self_signed) serves its certificate\n",
            ),
        });
    let status = warp::path!("api" / "status")
        .and(warp::get())
        .and(s())
        .map(|server: Arc<Server>| json(&server.reload_status()));
    let metrics =
        warp::path!("metrics")
            .and(warp::get())
            .and(s())
            .then(|server: Arc<Server>| async move {
                let mut rooms = Vec::new();
                for (name, _, _) in server.room_names() {
                    if let Some((h, _, _)) = server.room(&name) {
                        if let Some(info) = h.ask(|reply| Command::Info { reply }).await {
                            rooms.push(info);
                        }
                    }
                }
                let body = crate::metrics::render(crate::metrics::Snapshot {
                    rooms,
                    reload: server.reload_status(),
                    refusals: server.limits.refusals(),
                    sessions: server.sessions.load(std::sync::atomic::Ordering::SeqCst),
                    tasks: tokio::runtime::Handle::current()
                        .metrics()
                        .num_alive_tasks(),
                    media: server.media.stats().await,
                });
                let resp: Resp = Response::builder()
                    .header(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                    .body(body.into())
                    .unwrap_or_default();
                resp
            });
    let admin = warp::path("api")
        .and(warp::path("admin"))
        .and(warp::method())
        .and(warp::path::tail())
        .and(warp::header::optional::<String>("authorization"))
        // Bodiless requests (GET, DELETE) carry no Content-Length; only cap those that do.
        .and(
            warp::header::optional::<u64>("content-length")
                .and_then(|n: Option<u64>| async move {
                    match n {
                        Some(n) if n > 64 * 1024 => Err(warp::reject::custom(TooLarge)),
                        _ => Ok(()),
                    }
                })
                .untuple_one(),
        )
        .and(warp::body::bytes())
        .and(s())
        .then(
            |method,
             tail: warp::path::Tail,
             auth: Option<String>,
             body: Bytes,
             server: Arc<Server>| async move {
                crate::admin::handle(server, method, tail.as_str(), auth, body).await
            },
        );
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| text(StatusCode::OK, "ok\n"));
    let rooms =
        warp::path!("api" / "rooms")
            .and(warp::get())
            .and(s())
            .map(|server: Arc<Server>| {
                #[derive(Serialize)]
                struct Row {
                    room: String,
                    participants: usize,
                    created_secs_ago: u64,
                }
                let rows: Vec<Row> = server
                    .room_names()
                    .into_iter()
                    .map(|(room, participants, created)| Row {
                        room,
                        participants,
                        created_secs_ago: created.elapsed().as_secs(),
                    })
                    .collect();
                json(&rows)
            });
    let room = warp::path!("api" / "rooms" / String)
        .and(warp::get())
        .and(s())
        .then(|name: String, server: Arc<Server>| async move {
            let Some((handle, _, _)) = server.room(&name) else {
                return text(StatusCode::NOT_FOUND, format!("no room {name:?}\n"));
            };
            match handle.ask(|reply| Command::Info { reply }).await {
                Some(info) => json(&info),
                None => text(StatusCode::SERVICE_UNAVAILABLE, "the room did not answer\n"),
            }
        });
    let snapshot = warp::path!("api" / "rooms" / String / "snapshot.png")
        .and(warp::get())
        .and(s())
        .then(|name: String, server: Arc<Server>| async move {
            let Some((handle, _, _)) = server.room(&name) else {
                return text(StatusCode::NOT_FOUND, format!("no room {name:?}\n"));
            };
            let Some(Some(frame)) = handle.ask(|reply| Command::Snapshot { reply }).await else {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no composite yet: nobody in the room receives video\n",
                );
            };
            match tokio::task::spawn_blocking(move || png(&frame)).await {
                Ok(Ok(bytes)) => Response::builder()
                    .header(header::CONTENT_TYPE, "image/png")
                    .header(header::CACHE_CONTROL, "no-store")
                    .body(bytes.into())
                    .unwrap_or_default(),
                _ => text(StatusCode::INTERNAL_SERVER_ERROR, "PNG encoding failed\n"),
            }
        });
    let publish = warp::path!(String / String)
        .and(warp::post())
        .and(client_addr())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .and(warp::body::content_length_limit(
            tessera_proto::MAX_MESSAGE_BYTES as u64,
        ))
        .and(warp::body::bytes())
        .and(s())
        .then(
            |kind: String,
             room: String,
             addr: Option<SocketAddr>,
             auth: Option<String>,
             ct: Option<String>,
             q: std::collections::HashMap<String, String>,
             body: Bytes,
             server: Arc<Server>| async move {
                let kind: &'static str = match kind.as_str() {
                    "whip" => "whip",
                    "whep" => "whep",
                    _ => return text(StatusCode::NOT_FOUND, "not found\n"),
                };
                if !ct
                    .as_deref()
                    .is_some_and(|c| c.starts_with("application/sdp"))
                {
                    return text(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "the body must be an SDP offer with Content-Type: application/sdp\n",
                    );
                }
                let Ok(offer) = std::str::from_utf8(&body) else {
                    return text(StatusCode::BAD_REQUEST, "the SDP offer is not UTF-8\n");
                };
                let default_name = if kind == "whip" {
                    "Publisher"
                } else {
                    "Viewer"
                };
                let name = q.get("name").map(String::as_str).unwrap_or(default_name);
                let tier = q.get("tier").cloned();
                let token = auth.as_deref().and_then(|a| a.strip_prefix("Bearer "));
                let who = (addr, token);
                match session::start_resource(&server, kind, &room, name, tier, offer, who).await {
                    Ok((id, answer)) => Response::builder()
                        .status(StatusCode::CREATED)
                        .header(header::CONTENT_TYPE, "application/sdp")
                        .header(header::LOCATION, format!("/{kind}/{room}/{id}"))
                        .body(answer.into())
                        .unwrap_or_default(),
                    Err(Refusal(code, reason)) => {
                        let status = match code {
                            ErrorCode::Full | ErrorCode::Shutdown => {
                                StatusCode::SERVICE_UNAVAILABLE
                            }
                            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
                            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
                            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
                            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                            ErrorCode::BadSdp if reason.contains("limits.sdp_max_bytes") => {
                                StatusCode::PAYLOAD_TOO_LARGE
                            }
                            _ => StatusCode::BAD_REQUEST,
                        };
                        let mut resp = text(status, format!("{reason}\n"));
                        if status == StatusCode::UNAUTHORIZED {
                            resp.headers_mut().insert(
                                header::WWW_AUTHENTICATE,
                                header::HeaderValue::from_static("Bearer"),
                            );
                        }
                        resp
                    }
                }
            },
        );
    let delete = warp::path!(String / String / String)
        .and(warp::delete())
        .and(s())
        .then(
            |kind: String, room: String, id: String, server: Arc<Server>| async move {
                let num = id.strip_prefix('p').and_then(|n| n.parse::<u64>().ok());
                let found = num.and_then(|n| {
                    let r = server.take_resource(n)?;
                    if r.kind == kind && r.room == room {
                        Some(r)
                    } else {
                        // Wrong path for this id: put it back.
                        server
                            .resources
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(n, r);
                        None
                    }
                });
                match found {
                    Some(r) => {
                        r.member.leave().await;
                        text(StatusCode::OK, "")
                    }
                    None => text(StatusCode::NOT_FOUND, "no such session\n"),
                }
            },
        );
    let web_dir = server.config().server.web_dir.clone();
    let files = warp::get()
        .and(warp::path::tail())
        .and(warp::any().map(move || web_dir.clone()))
        .then(|tail: warp::path::Tail, dir: String| async move {
            let path = tail.as_str();
            if !dir.is_empty() {
                let file = if path.is_empty() { "index.html" } else { path };
                if file.split('/').any(|p| p == ".." || p.is_empty()) {
                    return text(StatusCode::NOT_FOUND, "not found\n");
                }
                return match tokio::fs::read(std::path::Path::new(&dir).join(file)).await {
                    Ok(body) => Response::builder()
                        .header(header::CONTENT_TYPE, content_type(file))
                        .body(body.into())
                        .unwrap_or_default(),
                    Err(_) => text(StatusCode::NOT_FOUND, "not found\n"),
                };
            }
            match web::embedded(path) {
                Some((ct, body)) => Response::builder()
                    .header(header::CONTENT_TYPE, ct)
                    .body(body.into())
                    .unwrap_or_default(),
                None => text(StatusCode::NOT_FOUND, "not found\n"),
            }
        });
    ws.or(cert)
        .or(admin)
        .or(healthz)
        .or(status)
        .or(metrics)
        .or(snapshot)
        .or(room)
        .or(rooms)
        .or(publish)
        .or(delete)
        .or(files)
        .with(warp::trace::request())
}

fn content_type(file: &str) -> &'static str {
    match file.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// The I420 canvas as an RGB PNG.
fn png(frame: &VideoFrame) -> Result<Vec<u8>, image::ImageError> {
    let mut out = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut out),
        &frame.to_rgb24(),
        frame.width,
        frame.height,
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(out)
}
