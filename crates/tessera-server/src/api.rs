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

use crate::cluster::Hop;
use crate::listen::ClientAddr;
use crate::room::Command;
use crate::session::{self, Refusal};
use crate::{web, Server};

mod whip;

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

/// The hop header of a request forwarded by another node of the cluster (`Hop::None` on a
/// single node, or from a client).
fn hop(server: Arc<Server>) -> warp::filters::BoxedFilter<(Hop,)> {
    warp::method()
        .and(warp::path::full())
        .and(warp::header::optional::<String>(
            crate::cluster::net::HOP_HEADER,
        ))
        .map(
            move |m: warp::http::Method, p: warp::path::FullPath, v: Option<String>| match &server
                .cluster
            {
                Some(c) => c.check_hop(v.as_deref(), m.as_str(), p.as_str()),
                None => Hop::None,
            },
        )
        .boxed()
}

/// Refuses a declared body over `max` bytes. Bodiless requests (GET, DELETE) carry no
/// Content-Length; only cap those that do.
fn body_at_most(max: u64) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and_then(move |n: Option<u64>| async move {
            match n {
                Some(n) if n > max => Err(warp::reject::custom(TooLarge)),
                _ => Ok(()),
            }
        })
        .untuple_one()
}

/// The raw query string, "" if none.
fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// The client's address: the one a valid hop carries, else the connection's.
fn client_of(hop: &Hop, addr: Option<SocketAddr>) -> Option<SocketAddr> {
    match hop {
        Hop::Valid {
            client: Some(c), ..
        } => Some(*c),
        _ => addr,
    }
}

fn bad_hop(hop: &Hop) -> Option<Resp> {
    match hop {
        Hop::Invalid(reason) => Some(text(
            StatusCode::FORBIDDEN,
            format!("refused node-to-node call: {reason}\n"),
        )),
        _ => None,
    }
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
        .and(hop(server.clone()))
        .and(s())
        .map(
            |ws: warp::ws::Ws, addr: Option<SocketAddr>, hop: Hop, server: Arc<Server>| -> Resp {
                if let Some(r) = bad_hop(&hop) {
                    return r;
                }
                let addr = client_of(&hop, addr);
                let max = server.config().limits.ws_max_message_bytes as usize;
                let ws = ws.max_message_size(max).max_frame_size(max);
                if server.cluster.is_some() {
                    ws.on_upgrade(move |socket| {
                        crate::cluster::ws::accept(server, socket, addr, hop)
                    })
                    .into_response()
                } else {
                    ws.on_upgrade(move |socket| session::run_ws(server, socket, addr))
                        .into_response()
                }
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
                    cluster: server.cluster.as_ref().map(|c| c.stats()),
                    recordings: server.recordings.counts(),
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
        .and(body_at_most(64 * 1024))
        .and(forwardable(server.clone()))
        .and(warp::body::bytes())
        .and(s())
        .then(
            |method: warp::http::Method,
             tail: warp::path::Tail,
             auth: Option<String>,
             fwd: Forwardable,
             body: Bytes,
             server: Arc<Server>| async move {
                if let Some(r) = bad_hop(&fwd.hop) {
                    return r;
                }
                if server.cluster.is_some() && !fwd.hop.is_hop() {
                    let parts: Vec<&str> =
                        tail.as_str().split('/').filter(|p| !p.is_empty()).collect();
                    match parts.as_slice() {
                        ["rooms", room, ..] => match server.owner_elsewhere(room, &fwd.hop).await {
                            Ok(Some(url)) => return fwd.to(&server, &url, body).await,
                            Ok(None) => {}
                            Err(e) => return unavailable(e),
                        },
                        ["rooms"] if method == warp::http::Method::GET => {
                            let local =
                                crate::admin::handle(server.clone(), method, "rooms", auth, body)
                                    .await;
                            return admin_rooms_everywhere(&server, local, &fwd).await;
                        }
                        _ => {}
                    }
                }
                crate::admin::handle(server, method, tail.as_str(), auth, body).await
            },
        );
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .and(s())
        .map(|server: Arc<Server>| match &server.cluster {
            Some(c) => c.healthz(),
            None => text(StatusCode::OK, "ok\n"),
        });
    let nodes = warp::path!("api" / "cluster" / "nodes")
        .and(warp::get())
        .and(s())
        .then(|server: Arc<Server>| async move {
            let Some(c) = &server.cluster else {
                return text(
                    StatusCode::NOT_FOUND,
                    "not in a cluster: cluster.redis_url is empty (a single node)\n",
                );
            };
            match c.nodes().await {
                Ok(rows) => json(&rows),
                Err(e) => unavailable(e),
            }
        });
    let rooms = warp::path!("api" / "rooms").and(warp::get()).and(s()).then(
        |server: Arc<Server>| async move {
            if let Some(c) = &server.cluster {
                return match c.rooms().await {
                    Ok(rows) => json(&rows),
                    Err(e) => unavailable(e),
                };
            }
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
        },
    );
    let room = warp::path!("api" / "rooms" / String)
        .and(warp::get())
        .and(forwardable(server.clone()))
        .and(s())
        .then(
            |name: String, fwd: Forwardable, server: Arc<Server>| async move {
                let Some((handle, _, _)) = server.room(&name) else {
                    return elsewhere(&server, &name, fwd).await;
                };
                match handle.ask(|reply| Command::Info { reply }).await {
                    Some(info) => {
                        let mut v = serde_json::to_value(&info).unwrap_or_default();
                        v["recordings"] = crate::recording::json_for(&server, &name, false);
                        v["streams"] = crate::recording::json_for(&server, &name, true);
                        json(&v)
                    }
                    None => text(StatusCode::SERVICE_UNAVAILABLE, "the room did not answer\n"),
                }
            },
        );
    let snapshot = warp::path!("api" / "rooms" / String / "snapshot.png")
        .and(warp::get())
        .and(forwardable(server.clone()))
        .and(s())
        .then(
            |name: String, fwd: Forwardable, server: Arc<Server>| async move {
                let Some((handle, _, _)) = server.room(&name) else {
                    return elsewhere(&server, &name, fwd).await;
                };
                let Some(Some(frame)) = handle.ask(|reply| Command::Snapshot { reply }).await
                else {
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
    // Each route boxed, tried in this order: one flat type (a deep `Or` chain overflows
    // the compiler's recursion limit).
    let all = [
        boxed(ws),
        boxed(cert),
        boxed(admin),
        boxed(healthz),
        boxed(status),
        boxed(metrics),
        boxed(snapshot),
        boxed(room),
        boxed(rooms),
        whip::routes(server.clone()),
        boxed(nodes),
        boxed(files),
    ];
    let first = all[0].clone();
    all.into_iter()
        .skip(1)
        .fold(first, |acc, f| acc.or(f).unify().boxed())
        .with(warp::trace::request())
}

fn boxed<F, R>(f: F) -> warp::filters::BoxedFilter<(Resp,)>
where
    F: Filter<Extract = (R,), Error = Rejection> + Clone + Send + Sync + 'static,
    R: Reply + 'static,
{
    f.map(|r: R| r.into_response()).boxed()
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

/// What a request needs to be forwarded to another node as it came.
struct Forwardable {
    hop: Hop,
    method: warp::http::Method,
    path: String,
    query: String,
    headers: warp::http::HeaderMap,
    addr: Option<SocketAddr>,
}

fn forwardable(server: Arc<Server>) -> warp::filters::BoxedFilter<(Forwardable,)> {
    hop(server)
        .and(warp::method())
        .and(warp::path::full())
        .and(raw_query())
        .and(warp::header::headers_cloned())
        .and(client_addr())
        .map(
            |hop, method, path: warp::path::FullPath, query, headers, addr| Forwardable {
                hop,
                method,
                path: path.as_str().to_string(),
                query,
                headers,
                addr,
            },
        )
        .boxed()
}

impl Forwardable {
    async fn to(&self, server: &Server, url: &str, body: Bytes) -> Resp {
        let Some(c) = &server.cluster else {
            return text(StatusCode::NOT_FOUND, "not found\n");
        };
        c.forward(
            url,
            self.method.clone(),
            &self.path,
            &self.query,
            &self.headers,
            body,
            client_of(&self.hop, self.addr),
        )
        .await
    }
}

/// A request for a room that is not here: forwarded to its node in a cluster, else 404.
async fn elsewhere(server: &Server, room: &str, fwd: Forwardable) -> Resp {
    if let Some(r) = bad_hop(&fwd.hop) {
        return r;
    }
    match server.owner_elsewhere(room, &fwd.hop).await {
        Ok(Some(url)) => fwd.to(server, &url, Bytes::new()).await,
        Ok(None) => text(StatusCode::NOT_FOUND, format!("no room {room:?}\n")),
        Err(e) => unavailable(e),
    }
}

fn unavailable(e: crate::cluster::RouteError) -> Resp {
    let reason = match e {
        crate::cluster::RouteError::Unavailable(r) | crate::cluster::RouteError::Full(r) => r,
    };
    text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n"))
}

/// Where a WHIP/WHEP resource id (`p7`, or `p7~NODE` in a cluster) lives.
enum ResourceAt {
    /// Here, under this id.
    Here(String),
    /// On another live node, at this URL.
    Node(String),
    /// A bad hop, a node that is gone, or Redis down.
    Refused(Resp),
}

async fn resource_node(server: &Server, id: &str, hop: &Hop) -> ResourceAt {
    if let Some(r) = bad_hop(hop) {
        return ResourceAt::Refused(r);
    }
    let (Some(c), Some((local, node))) = (&server.cluster, id.split_once('~')) else {
        return ResourceAt::Here(id.to_string());
    };
    if node == c.id || hop.is_hop() {
        return ResourceAt::Here(local.to_string());
    }
    match c.node_url(node).await {
        Ok(Some(url)) => ResourceAt::Node(url),
        Ok(None) => ResourceAt::Refused(text(
            StatusCode::NOT_FOUND,
            format!("no such session: node {node:?} is not in the cluster (any more)\n"),
        )),
        Err(e) => ResourceAt::Refused(unavailable(e)),
    }
}

/// The local id of a resource this request is for, or the response (forwarded, or a
/// refusal) when it lives elsewhere.
async fn resource_at(server: &Server, id: &str, fwd: &Forwardable) -> Result<String, Resp> {
    match resource_node(server, id, &fwd.hop).await {
        ResourceAt::Here(local) => Ok(local),
        ResourceAt::Node(url) => Err(fwd.to(server, &url, Bytes::new()).await),
        ResourceAt::Refused(r) => Err(r),
    }
}

/// `GET /api/admin/rooms` in a cluster: this node's rooms (`local`, already checked for
/// the token) and every other live node's, each with a `node` field.
async fn admin_rooms_everywhere(server: &Server, local: Resp, fwd: &Forwardable) -> Resp {
    let Some(c) = &server.cluster else {
        return local;
    };
    if local.status() != StatusCode::OK {
        return local;
    }
    let tag = |v: serde_json::Value, node: &str| -> Vec<serde_json::Value> {
        let mut rows = v.as_array().cloned().unwrap_or_default();
        for r in &mut rows {
            r["node"] = serde_json::Value::from(node);
        }
        rows
    };
    let body = http_body_util::BodyExt::collect(local.into_body())
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut rows = tag(serde_json::from_slice(&body).unwrap_or_default(), &c.id);
    let nodes = match c.nodes().await {
        Ok(n) => n,
        Err(e) => return unavailable(e),
    };
    for n in nodes.into_iter().filter(|n| !n.this) {
        let resp = fwd.to(server, &n.url, Bytes::new()).await;
        if resp.status() != StatusCode::OK {
            tracing::warn!(node = %n.id, status = %resp.status(), "cluster: a node did not list its rooms");
            continue;
        }
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        rows.extend(tag(
            serde_json::from_slice(&body).unwrap_or_default(),
            &n.id,
        ));
    }
    json(&rows)
}
