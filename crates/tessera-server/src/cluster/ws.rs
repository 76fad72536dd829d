//! WebSocket joins in a cluster: the first message decides. A `join` for a room another
//! node holds (or that placement gives to another node) is proxied there: this node opens
//! the owner's `/ws` with a signed hop header carrying the client's address, passes the
//! `join` on and relays every message both ways. Anything else is a local session.
//!
//! When the owner's socket ends without a close (the node died) or this node shuts down,
//! the client gets `error` `moved` (fatal) and rejoins; a failed placement gets
//! `unavailable` or `full` (fatal: the socket closes).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tessera_proto::{ClientMessage, ErrorCode, ServerMessage};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as UpMessage;
use tracing::{debug, info, warn};
use warp::ws::{Message, WebSocket};

use super::net::{self, Hop};
use super::{Route, RouteError};
use crate::Server;

/// A WebSocket whose first message was already read: it is read again first.
pub struct Replay {
    first: Option<Message>,
    inner: WebSocket,
}

impl Stream for Replay {
    type Item = Result<Message, warp::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(m) = self.first.take() {
            return Poll::Ready(Some(Ok(m)));
        }
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl Sink<Message> for Replay {
    type Error = warp::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        Pin::new(&mut self.inner).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

fn fatal(code: ErrorCode, reason: String) -> Message {
    Message::text(
        ServerMessage::Error {
            code,
            reason,
            fatal: true,
        }
        .to_json(),
    )
}

/// One WebSocket connection to a node of a cluster: routes its `join`.
pub async fn accept(
    server: Arc<Server>,
    mut socket: WebSocket,
    addr: Option<SocketAddr>,
    hop: Hop,
) {
    let Some(cluster) = server.cluster.clone() else {
        return crate::session::run_ws(server, socket, addr).await;
    };
    let wait = Duration::from_secs(server.config().rooms.idle_timeout_secs as u64);
    let first = loop {
        match tokio::time::timeout(wait, socket.next()).await {
            Ok(Some(Ok(m))) if m.is_ping() || m.is_pong() => continue,
            Ok(Some(Ok(m))) => break m,
            _ => return,
        }
    };
    let room = first
        .to_str()
        .ok()
        .and_then(|t| match tessera_proto::parse_client(t) {
            Ok(ClientMessage::Join { room, .. }) => Some(room),
            _ => None,
        });
    let route = match room.as_deref() {
        Some(room) if !hop.is_hop() && server.room(room).is_none() => {
            Some((room.to_string(), cluster.route(room).await))
        }
        _ => None,
    };
    match route {
        Some((room, Ok(Route::Remote { node, url }))) => {
            proxy(&server, socket, first, &room, &node, &url, addr).await
        }
        Some((_, Err(e))) => {
            let (code, reason) = match e {
                RouteError::Unavailable(r) => (ErrorCode::Unavailable, r),
                RouteError::Full(r) => (ErrorCode::Full, r),
            };
            let _ = socket.send(fatal(code, reason)).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.close()).await;
        }
        _ => {
            let replay = Replay {
                first: Some(first),
                inner: socket,
            };
            crate::session::run_ws_on(server, replay, addr).await
        }
    }
}

/// Counts a proxied session among the WebSocket sessions while it lives.
struct Counted(Arc<Server>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Relays a client's session to the room's node at `url`.
async fn proxy(
    server: &Arc<Server>,
    mut socket: WebSocket,
    first: Message,
    room: &str,
    node: &str,
    url: &str,
    addr: Option<SocketAddr>,
) {
    let Some(cluster) = server.cluster.clone() else {
        return;
    };
    server.sessions.fetch_add(1, Ordering::SeqCst);
    let _count = Counted(server.clone());
    cluster.counters.proxied_ws.fetch_add(1, Ordering::Relaxed);
    let upstream = match open(server, url, addr).await {
        Ok(u) => u,
        Err(e) => {
            warn!(%room, %node, "cluster: cannot reach the room's node: {e}");
            let reason = format!(
                "room {room:?} is on node {node:?}, which cannot be reached ({e}); try again in a few seconds"
            );
            let _ = socket.send(fatal(ErrorCode::Unavailable, reason)).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.close()).await;
            return;
        }
    };
    info!(%room, %node, "cluster: proxying a WebSocket session to the room's node");
    let (mut up_tx, mut up_rx) = upstream.split();
    let (mut tx, mut rx) = socket.split();
    let mut shutdown = server.shutdown_tx.subscribe();
    let first_text = first.to_str().unwrap_or_default().to_string();
    let lost = if up_tx.send(UpMessage::text(first_text)).await.is_err() {
        true
    } else {
        loop {
            tokio::select! {
                m = rx.next() => match m {
                    Some(Ok(m)) if m.is_close() => {
                        let _ = up_tx.send(UpMessage::Close(None)).await;
                        break false;
                    }
                    Some(Ok(m)) => {
                        let out = if let Ok(t) = m.to_str() {
                            UpMessage::text(t.to_string())
                        } else if m.is_binary() {
                            UpMessage::binary(m.into_bytes())
                        } else {
                            continue;
                        };
                        if up_tx.send(out).await.is_err() {
                            break true;
                        }
                    }
                    Some(Err(e)) => {
                        debug!("cluster proxy: client: {e}");
                        let _ = up_tx.send(UpMessage::Close(None)).await;
                        break false;
                    }
                    None => {
                        let _ = up_tx.send(UpMessage::Close(None)).await;
                        break false;
                    }
                },
                m = up_rx.next() => match m {
                    Some(Ok(UpMessage::Text(t))) => {
                        if tx.send(Message::text(t.as_str())).await.is_err() {
                            let _ = up_tx.send(UpMessage::Close(None)).await;
                            break false;
                        }
                    }
                    Some(Ok(UpMessage::Binary(b))) => {
                        if tx.send(Message::binary(b.to_vec())).await.is_err() {
                            let _ = up_tx.send(UpMessage::Close(None)).await;
                            break false;
                        }
                    }
                    Some(Ok(UpMessage::Close(_))) => break false,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        debug!("cluster proxy: room's node: {e}");
                        break true;
                    }
                    None => break true,
                },
                Ok(()) = shutdown.changed() => {
                    let _ = up_tx.send(UpMessage::Close(None)).await;
                    let reason = "the node this connection came through is shutting down; join again".to_string();
                    let _ = tx.send(fatal(ErrorCode::Moved, reason)).await;
                    break false;
                }
            }
        }
    };
    if lost {
        info!(%room, %node, "cluster: lost the room's node; telling the client to rejoin");
        let reason =
            format!("lost the connection to node {node:?}, which holds room {room:?}; join again");
        let _ = tx.send(fatal(ErrorCode::Moved, reason)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), tx.close()).await;
}

type Upstream = tokio_tungstenite::WebSocketStream<Pin<Box<dyn net::Io>>>;

/// Opens the room's node's `/ws`, signed for `addr`.
async fn open(server: &Server, url: &str, addr: Option<SocketAddr>) -> Result<Upstream, String> {
    let cluster = server.cluster.as_ref().ok_or("not in a cluster")?;
    let t = net::Target::parse(url)?;
    let scheme = if t.tls { "wss" } else { "ws" };
    let mut req = format!("{scheme}://{}/ws", t.authority())
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let hop = cluster.sign(addr, "GET", "/ws");
    req.headers_mut().insert(
        net::HOP_HEADER,
        hop.parse().map_err(|_| "bad hop header".to_string())?,
    );
    let io = net::connect(&t).await?;
    let max = server.config().limits.ws_max_message_bytes as usize;
    let ws_cfg = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::client_async_with_config(req, io, Some(ws_cfg)),
    )
    .await
    .map_err(|_| {
        format!(
            "{} did not answer the WebSocket upgrade in time",
            t.authority()
        )
    })?
    .map_err(|e| format!("WebSocket to {}: {e}", t.authority()))?;
    Ok(ws)
}
