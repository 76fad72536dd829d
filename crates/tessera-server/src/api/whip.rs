//! WHIP (RFC 9725) and WHEP endpoints: `POST` on `/whip/{room}` and `/whep/{room}` makes a
//! session resource; `PATCH` on it trickles candidates or restarts ICE, `DELETE` ends it;
//! `OPTIONS` on either answers what they accept and, outside a CORS preflight, the ICE
//! servers. Every reply of these paths carries CORS headers for `server.cors_origins`.

use std::collections::HashMap;

use warp::http::HeaderValue;

use super::*;
use crate::media::RestartWith;
use crate::room::MemberKind;
use crate::sdp;
use crate::session::Resource;

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";
const ENDPOINT_METHODS: &str = "POST, OPTIONS";
const RESOURCE_METHODS: &str = "PATCH, DELETE, OPTIONS";

fn kind_of(kind: &str) -> Option<MemberKind> {
    match kind {
        "whip" => Some(MemberKind::Whip),
        "whep" => Some(MemberKind::Whep),
        _ => None,
    }
}

/// The WHIP/WHEP routes, with CORS on every reply.
pub(super) fn routes(server: Arc<Server>) -> warp::filters::BoxedFilter<(Resp,)> {
    let s = || with_server(server.clone());
    let all = [
        boxed(publish(server.clone())),
        boxed(patch(server.clone())),
        boxed(delete(server.clone())),
        boxed(options(server.clone())),
        boxed(not_on_endpoint()),
    ];
    let first = all[0].clone();
    let routes = all
        .into_iter()
        .skip(1)
        .fold(first, |acc, f| acc.or(f).unify().boxed());
    warp::header::optional::<String>("origin")
        .and(warp::path::full())
        .and(routes)
        .and(s())
        .map(
            |origin: Option<String>,
             path: warp::path::FullPath,
             mut resp: Resp,
             server: Arc<Server>| {
                let ours = ["/whip/", "/whep/"]
                    .iter()
                    .any(|p| path.as_str().starts_with(p));
                if let Some(allowed) = allowed_origin(&server, origin.as_deref()).filter(|_| ours) {
                    let h = resp.headers_mut();
                    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
                    h.insert(
                        header::ACCESS_CONTROL_EXPOSE_HEADERS,
                        HeaderValue::from_static("Location, Link, ETag, Accept-Patch, Accept-Post"),
                    );
                    if !server.config().server.cors_origins.iter().any(|o| o == "*") {
                        h.insert(header::VARY, HeaderValue::from_static("Origin"));
                    }
                }
                resp
            },
        )
        .boxed()
}

/// `Access-Control-Allow-Origin` for a request from `origin`, if that origin may call.
fn allowed_origin(server: &Server, origin: Option<&str>) -> Option<HeaderValue> {
    let origin = origin?;
    let cfg = server.config();
    let allowed = &cfg.server.cors_origins;
    if allowed.iter().any(|o| o == "*") {
        return Some(HeaderValue::from_static("*"));
    }
    allowed
        .iter()
        .any(|o| o.eq_ignore_ascii_case(origin))
        .then(|| HeaderValue::from_str(origin).ok())
        .flatten()
}

/// A refused join, token or request as an HTTP reply.
fn refusal(Refusal(code, reason): Refusal) -> Resp {
    let status = match code {
        ErrorCode::Full | ErrorCode::Shutdown | ErrorCode::Moved | ErrorCode::Unavailable => {
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
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

/// `415` with the header naming the type wanted (`Accept-Post` or `Accept-Patch`), unless
/// the request's `Content-Type` is that type.
fn wrong_type(ct: &Option<String>, accept: &'static str, want: &'static str) -> Option<Resp> {
    if ct.as_deref().is_some_and(|c| c.starts_with(want)) {
        return None;
    }
    let mut r = text(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!("the body must have Content-Type: {want}\n"),
    );
    r.headers_mut()
        .insert(accept, HeaderValue::from_static(want));
    Some(r)
}

fn bearer(auth: &Option<String>) -> Option<&str> {
    auth.as_deref().and_then(|a| a.strip_prefix("Bearer "))
}

/// Whether a token allows `kind` in `room` as `name` (always, when tokens are off).
fn token_allows(
    server: &Server,
    kind: MemberKind,
    room: &str,
    name: &str,
    token: Option<&str>,
) -> Result<(), Refusal> {
    let grants = session::authorize(server, token, room, name)?;
    let ok = if kind == MemberKind::Whip {
        grants.publish
    } else {
        grants.subscribe
    };
    if ok {
        Ok(())
    } else {
        Err(Refusal(
            ErrorCode::Forbidden,
            format!("the token does not allow {kind} in {room:?}"),
        ))
    }
}

/// `Link` headers for the ICE servers (RFC 9725 section 4.6), TURN ones with credentials.
fn add_links(resp: &mut Resp, server: &Server, name: &str) {
    for s in server.ice_servers_for(name) {
        for url in &s.urls {
            let quote = |v: &str| v.replace(['"', '\\'], "");
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(u), Some(c)) = (&s.username, &s.credential) {
                link.push_str(&format!(
                    "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                    quote(u),
                    quote(c)
                ));
            }
            if let Ok(v) = HeaderValue::from_str(&link) {
                resp.headers_mut().append(header::LINK, v);
            }
        }
    }
}

fn default_name(kind: MemberKind) -> &'static str {
    if kind == MemberKind::Whip {
        "Publisher"
    } else {
        "Viewer"
    }
}

/// `POST /whip/{room}` and `POST /whep/{room}`: an SDP offer in, `201` with the answer, the
/// session's `Location`, its `ETag` and the ICE servers out.
fn publish(server: Arc<Server>) -> impl Filter<Extract = (Resp,), Error = Rejection> + Clone {
    warp::path!(String / String)
        .and(warp::post())
        .and(client_addr())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::query::<HashMap<String, String>>())
        .and(forwardable(server.clone()))
        .and(warp::body::content_length_limit(
            tessera_proto::MAX_MESSAGE_BYTES as u64,
        ))
        .and(warp::body::bytes())
        .and(with_server(server))
        .then(
            |kind: String,
             room: String,
             addr: Option<SocketAddr>,
             auth: Option<String>,
             ct: Option<String>,
             q: HashMap<String, String>,
             fwd: Forwardable,
             body: Bytes,
             server: Arc<Server>| async move {
                let Some(kind) = kind_of(&kind) else {
                    return text(StatusCode::NOT_FOUND, "not found\n");
                };
                if let Some(r) = wrong_type(&ct, "accept-post", SDP) {
                    return r;
                }
                let Ok(offer) = std::str::from_utf8(&body) else {
                    return text(StatusCode::BAD_REQUEST, "the SDP offer is not UTF-8\n");
                };
                if let Some(r) = bad_hop(&fwd.hop) {
                    return r;
                }
                let addr = client_of(&fwd.hop, addr);
                // In a cluster, a room another node holds (or gets) is served there.
                if let Some(c) = &server.cluster {
                    if !fwd.hop.is_hop() && server.room(&room).is_none() {
                        match c.route(&room).await {
                            Ok(crate::cluster::Route::Remote { url, .. }) => {
                                return fwd.to(&server, &url, body.clone()).await
                            }
                            Ok(crate::cluster::Route::Local) => {}
                            Err(e) => return unavailable(e),
                        }
                    }
                }
                let name = q
                    .get("name")
                    .map(String::as_str)
                    .unwrap_or(default_name(kind));
                let tier = q.get("tier").cloned();
                // `kind=screen`: a WHIP publisher's screen share (shown in the share layout).
                let member = match (kind, q.get("kind").map(String::as_str)) {
                    (_, None | Some("camera")) => kind,
                    (MemberKind::Whip, Some("screen")) => MemberKind::Screen,
                    (_, Some(k)) => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            format!("kind={k:?}: must be camera, or screen on /whip\n"),
                        )
                    }
                };
                let who = (addr, bearer(&auth));
                match session::start_resource(&server, member, &room, name, tier, offer, who).await
                {
                    Ok((id, answer, secret)) => {
                        let etag = format!("\"{}\"", sdp::ice_ufrag(&answer).unwrap_or_default());
                        // `p7-SECRET`, or `p7-SECRET~NODE` in a cluster.
                        let rid = server.resource_id(id);
                        let rid = match rid.split_once('~') {
                            Some((local, node)) => format!("{local}-{secret}~{node}"),
                            None => format!("{rid}-{secret}"),
                        };
                        let mut resp = Response::builder()
                            .status(StatusCode::CREATED)
                            .header(header::CONTENT_TYPE, SDP)
                            .header(header::LOCATION, format!("/{kind}/{room}/{rid}"))
                            .header(header::ETAG, etag)
                            .header("accept-patch", SDPFRAG)
                            .body(answer.into())
                            .unwrap_or_default();
                        add_links(&mut resp, &server, name);
                        resp
                    }
                    Err(r) => refusal(r),
                }
            },
        )
}

/// A session found for a `PATCH` or `DELETE`.
struct Session {
    key: crate::media::PeerKey,
    etag: String,
    remote_ufrag: String,
    remote_pwd: String,
}

/// A session URL's local part, `p7-SECRET`: (7, SECRET).
fn local_session(id: &str) -> Option<(u64, &str)> {
    let (num, secret) = id.split_once('-')?;
    Some((num.strip_prefix('p')?.parse().ok()?, secret))
}

/// Finds resource `id` of `kind` in `room` and checks the request's token against the
/// name it joined under.
fn session_of(
    server: &Server,
    kind: MemberKind,
    room: &str,
    id: &str,
    auth: &Option<String>,
) -> Result<Session, Box<Resp>> {
    let missing = || Box::new(text(StatusCode::NOT_FOUND, "no such session\n"));
    let (num, secret) = local_session(id).ok_or_else(missing)?;
    let (session, name) = {
        let map = server.resources.lock().unwrap_or_else(|e| e.into_inner());
        let r: &Resource = map
            .get(&num)
            .filter(|r| r.kind == kind && r.room == room && r.secret == secret)
            .ok_or_else(missing)?;
        let session = Session {
            key: r.member.peer.ok_or_else(missing)?,
            etag: r.etag(),
            remote_ufrag: r.remote_ufrag.clone(),
            remote_pwd: r.remote_pwd.clone(),
        };
        (session, r.name.clone())
    };
    token_allows(server, kind, room, &name, bearer(auth)).map_err(|r| Box::new(refusal(r)))?;
    Ok(session)
}

/// `PATCH` on a session (RFC 9725 section 4.3): trickled candidates (`If-Match` with the
/// current entity-tag, `204`) or an ICE restart (`If-Match: *`, `200` with the server's new
/// credentials and a new `ETag`).
fn patch(server: Arc<Server>) -> impl Filter<Extract = (Resp,), Error = Rejection> + Clone {
    warp::path!(String / String / String)
        .and(warp::patch())
        .and(forwardable(server.clone()))
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<String>("if-match"))
        .and(body_at_most(tessera_proto::MAX_MESSAGE_BYTES as u64))
        .and(warp::body::bytes())
        .and(with_server(server))
        .then(
            |kind: String,
             room: String,
             id: String,
             fwd: Forwardable,
             auth: Option<String>,
             ct: Option<String>,
             if_match: Option<String>,
             body: Bytes,
             server: Arc<Server>| async move {
                let Some(kind) = kind_of(&kind) else {
                    return text(StatusCode::NOT_FOUND, "not found\n");
                };
                let id = match resource_node(&server, &id, &fwd.hop).await {
                    ResourceAt::Here(local) => local,
                    ResourceAt::Node(url) => return fwd.to(&server, &url, body).await,
                    ResourceAt::Refused(resp) => return resp,
                };
                let Session {
                    key,
                    etag,
                    remote_ufrag,
                    remote_pwd,
                } = match session_of(&server, kind, &room, &id, &auth) {
                    Ok(s) => s,
                    Err(resp) => return *resp,
                };
                if let Some(r) = wrong_type(&ct, "accept-patch", SDPFRAG) {
                    return r;
                }
                let Some(if_match) = if_match else {
                    return text(
                        StatusCode::PRECONDITION_REQUIRED,
                        "PATCH needs If-Match: the session's ETag to trickle candidates, or * to restart ICE\n",
                    );
                };
                let Ok(body) = std::str::from_utf8(&body) else {
                    return text(StatusCode::BAD_REQUEST, "the fragment is not UTF-8\n");
                };
                let frag = match sdp::fragment(body) {
                    Ok(f) => f,
                    Err(e) => {
                        return text(StatusCode::BAD_REQUEST, format!("bad fragment: {}\n", e.0))
                    }
                };
                let unprocessable = |why: String| text(StatusCode::UNPROCESSABLE_ENTITY, why + "\n");
                if if_match.trim() == "*" {
                    return restart(&server, &id, key, frag, unprocessable).await;
                }
                let matches = if_match
                    .split(',')
                    .map(|t| t.trim().trim_start_matches("W/"))
                    .any(|t| t == etag);
                if !matches {
                    return text(
                        StatusCode::PRECONDITION_FAILED,
                        format!("If-Match {if_match} is not the session's ETag {etag} (was ICE restarted?)\n"),
                    );
                }
                if let Some(u) = frag.ufrag.as_deref().filter(|u| *u != remote_ufrag) {
                    return unprocessable(format!(
                        "a=ice-ufrag:{u} is not this session's ICE ufrag; restart ICE with If-Match: *"
                    ));
                }
                if frag.pwd.as_deref().is_some_and(|p| p != remote_pwd) {
                    return unprocessable(
                        "a=ice-pwd is not this session's ICE password; restart ICE with If-Match: *"
                            .into(),
                    );
                }
                for (i, m) in frag.media.iter().enumerate() {
                    for c in &m.candidates {
                        let candidate = tessera_proto::IceCandidate {
                            candidate: c.clone(),
                            sdp_mid: m.mid.clone(),
                            sdp_m_line_index: u16::try_from(i).ok(),
                            username_fragment: Some(remote_ufrag.clone()),
                        };
                        if let Err(e) = server.media.add_candidate(key, candidate).await {
                            return unprocessable(format!("candidate {c:?}: {e}"));
                        }
                    }
                }
                Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(Default::default())
                    .unwrap_or_default()
            },
        )
}

/// An ICE restart by `PATCH`: the new credentials and candidates in, ours out.
async fn restart(
    server: &Server,
    id: &str,
    key: crate::media::PeerKey,
    frag: sdp::Fragment,
    unprocessable: impl Fn(String) -> Resp,
) -> Resp {
    let (Some(new_remote), Some(new_pwd)) = (frag.ufrag.clone(), frag.pwd.clone()) else {
        return unprocessable("an ICE restart needs a=ice-ufrag and a=ice-pwd".into());
    };
    let answer = match server.media.restart(key, RestartWith::Fragment(frag)).await {
        Ok(a) => a,
        Err(crate::media::PeerError::BadSdp(e)) => return unprocessable(e),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    };
    let ufrag = sdp::ice_ufrag(&answer).unwrap_or_default().to_string();
    let num = local_session(id).map(|(n, _)| n);
    let etag = {
        let mut map = server.resources.lock().unwrap_or_else(|e| e.into_inner());
        match num.and_then(|n| map.get_mut(&n)) {
            Some(r) => {
                r.ufrag = ufrag;
                r.remote_ufrag = new_remote;
                r.remote_pwd = new_pwd;
                r.etag()
            }
            None => return text(StatusCode::NOT_FOUND, "the session ended\n"),
        }
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, SDPFRAG)
        .header(header::ETAG, etag)
        .body(sdp::answer_fragment(&answer).into())
        .unwrap_or_default()
}

/// `DELETE` on a session ends it.
fn delete(server: Arc<Server>) -> impl Filter<Extract = (Resp,), Error = Rejection> + Clone {
    warp::path!(String / String / String)
        .and(warp::delete())
        .and(forwardable(server.clone()))
        .and(warp::header::optional::<String>("authorization"))
        .and(with_server(server))
        .then(
            |kind: String,
             room: String,
             id: String,
             fwd: Forwardable,
             auth: Option<String>,
             server: Arc<Server>| async move {
                let Some(kind) = kind_of(&kind) else {
                    return text(StatusCode::NOT_FOUND, "not found\n");
                };
                let id = match resource_at(&server, &id, &fwd).await {
                    Ok(local) => local,
                    Err(resp) => return resp,
                };
                if let Err(resp) = session_of(&server, kind, &room, &id, &auth) {
                    return *resp;
                }
                let num = local_session(&id).map(|(n, _)| n);
                match num.and_then(|n| server.take_resource(n)) {
                    Some(r) => {
                        r.member.leave().await;
                        text(StatusCode::OK, "")
                    }
                    None => text(StatusCode::NOT_FOUND, "no such session\n"),
                }
            },
        )
}

/// `OPTIONS` on an endpoint or a session. A CORS preflight (`Origin` and
/// `Access-Control-Request-Method`) gets the allowed methods and headers and never the ICE
/// servers; any other `OPTIONS` on an endpoint gets `Link` headers for them, when tokens
/// are off or it carries a token for the room (and `?name=`).
fn options(server: Arc<Server>) -> impl Filter<Extract = (Resp,), Error = Rejection> + Clone {
    warp::options()
        .and(warp::path::full())
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>(
            "access-control-request-method",
        ))
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::query::<HashMap<String, String>>())
        .and(with_server(server))
        .and_then(
            |path: warp::path::FullPath,
             origin: Option<String>,
             preflight: Option<String>,
             auth: Option<String>,
             q: HashMap<String, String>,
             server: Arc<Server>| async move {
                let parts: Vec<&str> = path.as_str().trim_start_matches('/').split('/').collect();
                let (kind, room, resource) = match parts.as_slice() {
                    [k, room] => (kind_of(k), *room, false),
                    [k, room, _] => (kind_of(k), *room, true),
                    _ => (None, "", false),
                };
                let Some(kind) = kind.filter(|_| !room.is_empty()) else {
                    return Err(warp::reject::not_found());
                };
                let methods = if resource {
                    RESOURCE_METHODS
                } else {
                    ENDPOINT_METHODS
                };
                let mut resp = Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .header(header::ALLOW, methods)
                    .body(Default::default())
                    .unwrap_or_default();
                let h = resp.headers_mut();
                if resource {
                    h.insert("accept-patch", HeaderValue::from_static(SDPFRAG));
                } else {
                    h.insert("accept-post", HeaderValue::from_static(SDP));
                }
                if origin.is_some() && preflight.is_some() {
                    if allowed_origin(&server, origin.as_deref()).is_none() {
                        return Ok(text(
                            StatusCode::FORBIDDEN,
                            "this origin may not use the WHIP/WHEP endpoints (server.cors_origins)\n",
                        ));
                    }
                    h.insert(
                        header::ACCESS_CONTROL_ALLOW_METHODS,
                        HeaderValue::from_static("POST, PATCH, DELETE, OPTIONS"),
                    );
                    h.insert(
                        header::ACCESS_CONTROL_ALLOW_HEADERS,
                        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
                    );
                    h.insert(
                        header::ACCESS_CONTROL_MAX_AGE,
                        HeaderValue::from_static("86400"),
                    );
                    return Ok(resp);
                }
                let name = q
                    .get("name")
                    .map(String::as_str)
                    .unwrap_or(default_name(kind));
                if !resource && token_allows(&server, kind, room, name, bearer(&auth)).is_ok() {
                    add_links(&mut resp, &server, name);
                }
                Ok::<_, Rejection>(resp)
            },
        )
}

/// `PATCH` and `DELETE` belong to sessions, not endpoints.
fn not_on_endpoint() -> impl Filter<Extract = (Resp,), Error = Rejection> + Clone {
    warp::path!(String / String)
        .and(warp::patch().or(warp::delete()).unify())
        .and_then(|kind: String, _room: String| async move {
            if kind_of(&kind).is_none() {
                return Err(warp::reject::not_found());
            }
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "PATCH and DELETE go to the session URL the POST answered in Location\n",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(ENDPOINT_METHODS));
            Ok::<_, Rejection>(r)
        })
}
