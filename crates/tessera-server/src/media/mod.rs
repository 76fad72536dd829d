//! The media plane: one reactor thread owns one UDP socket per host address and every
//! participant's PeerConnection (`rtc`'s sans-IO core). Signalling asks it to open and
//! close connections and awaits the replies; rooms hand it their output through
//! `MediaTx`, a bounded queue that only ever sheds media.
//!
//! - `reactor`: the thread, its sockets, timers and queues.
//! - `demux`: which connection a datagram belongs to (STUN ufrag, then learnt address).
//! - `conn`: one PeerConnection and what we do with its packets.
//! - `ingest`: camera and microphone RTP into frames (sans IO).
//! - `egress`: packetize once per frame, stamp per receiver, pace, pad for probes.

pub mod conn;
pub mod demux;
pub mod egress;
pub mod ingest;
mod reactor;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tessera_config::NetworkConfig;
use tessera_proto::IceCandidate;
use tessera_types::ParticipantId;
use tokio::sync::{mpsc, oneshot};

pub use crate::peer::{AnswerPlan, PeerError};
use crate::room::{MediaOut, RoomHandle};

/// A connection's handle in the reactor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey(pub u64);

/// Connection states a session cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    Connected,
    Failed,
    Closed,
}

/// Events a connection reports to the session that owns it.
#[derive(Debug)]
pub enum PeerEvent {
    State(ConnState),
}

/// Everything a participant's PeerConnection needs.
pub struct OpenPeer {
    pub id: ParticipantId,
    pub room: RoomHandle,
    pub network: NetworkConfig,
    pub plan: AnswerPlan,
    pub offer: String,
    pub events: mpsc::UnboundedSender<PeerEvent>,
    /// The bandwidth estimate a new receiver starts from (`bandwidth.start_kbps`).
    pub start_bps: u64,
    /// The richest tier's bitrate: what the pacer allows before any feedback.
    pub max_tier_bps: u64,
}

/// What an ICE restart starts from.
#[derive(Debug)]
pub enum RestartWith {
    /// A whole new offer with a new `a=ice-ufrag`.
    Offer(String),
    /// Only the new credentials and candidates: the rest of the last offer stands.
    Fragment(crate::sdp::Fragment),
}

/// Control for the reactor: never dropped (an unbounded queue), answered by `reply`.
enum Control {
    Open {
        key: PeerKey,
        req: Box<OpenPeer>,
        reply: oneshot::Sender<Result<String, PeerError>>,
    },
    Candidate {
        key: PeerKey,
        candidate: IceCandidate,
        reply: oneshot::Sender<Result<(), PeerError>>,
    },
    Restart {
        key: PeerKey,
        with: RestartWith,
        reply: oneshot::Sender<Result<String, PeerError>>,
    },
    Close {
        key: PeerKey,
    },
    Stats {
        reply: oneshot::Sender<PlaneStats>,
    },
}

/// How many media items may wait for the reactor before rooms' output is shed.
const MEDIA_QUEUE: usize = 16_384;

/// Counters of the whole media plane.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PlaneStats {
    pub udp_sockets: usize,
    /// ICE-TCP connections open (routed or not yet).
    pub tcp_connections: usize,
    /// ICE-TCP connections refused because `MAX_TCP_LINKS` were open.
    pub tcp_refused: u64,
    pub connections: usize,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    /// Datagrams from an address no connection has verified, and no ufrag of ours.
    pub datagrams_unroutable: u64,
    /// Sends the socket refused (buffer full, no route).
    pub send_errors: u64,
    /// Room output dropped because the reactor's queue was full.
    pub media_shed: u64,
    /// Composite frames packetized, and handed to a further receiver without packetizing.
    pub frames_packetized: u64,
    pub frames_reused: u64,
}

/// The signalling side's handle on the reactor. Cheap to clone.
#[derive(Clone)]
pub struct MediaPlane {
    control: mpsc::UnboundedSender<Control>,
    media: mpsc::Sender<(PeerKey, MediaOut)>,
    next_key: Arc<AtomicU64>,
    shed: Arc<AtomicU64>,
    local: Arc<Vec<SocketAddr>>,
}

/// A room's way to one participant's connection: `try_send` never blocks; a full queue
/// returns the item (the room counts it and treats a lost frame as a lost picture).
#[derive(Clone)]
pub struct MediaTx {
    key: PeerKey,
    tx: mpsc::Sender<(PeerKey, MediaOut)>,
    shed: Arc<AtomicU64>,
}

impl MediaTx {
    pub fn try_send(&self, m: MediaOut) -> Result<(), MediaOut> {
        self.tx.try_send((self.key, m)).map_err(|e| {
            self.shed.fetch_add(1, Ordering::Relaxed);
            e.into_inner().1
        })
    }

    /// A queue read by the caller instead of a reactor (tests).
    pub fn channel(capacity: usize) -> (MediaTx, mpsc::Receiver<(PeerKey, MediaOut)>) {
        let (tx, rx) = mpsc::channel(capacity);
        let m = MediaTx {
            key: PeerKey(0),
            tx,
            shed: Arc::new(AtomicU64::new(0)),
        };
        (m, rx)
    }
}

impl MediaPlane {
    /// Binds one UDP socket per `network.host_ips` address on `network.udp_port` and starts
    /// the reactor thread.
    pub fn start(network: &NetworkConfig) -> std::io::Result<MediaPlane> {
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (media_tx, media_rx) = mpsc::channel(MEDIA_QUEUE);
        let shed = Arc::new(AtomicU64::new(0));
        let local = reactor::spawn(network, control_rx, media_rx, shed.clone())?;
        Ok(MediaPlane {
            control: control_tx,
            media: media_tx,
            next_key: Arc::new(AtomicU64::new(1)),
            shed,
            local: Arc::new(local),
        })
    }

    /// The addresses media is received on.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    /// Opens a connection for `req` and returns its key and the answer.
    pub async fn open(&self, req: OpenPeer) -> Result<(PeerKey, String), PeerError> {
        let key = PeerKey(self.next_key.fetch_add(1, Ordering::Relaxed));
        let (reply, rx) = oneshot::channel();
        self.control
            .send(Control::Open {
                key,
                req: Box::new(req),
                reply,
            })
            .map_err(|_| PeerError::Webrtc("the media plane has stopped".into()))?;
        let answer = rx
            .await
            .map_err(|_| PeerError::Webrtc("the media plane has stopped".into()))??;
        Ok((key, answer))
    }

    pub async fn add_candidate(
        &self,
        key: PeerKey,
        candidate: IceCandidate,
    ) -> Result<(), PeerError> {
        let (reply, rx) = oneshot::channel();
        let _ = self.control.send(Control::Candidate {
            key,
            candidate,
            reply,
        });
        rx.await
            .map_err(|_| PeerError::Webrtc("the media plane has stopped".into()))?
    }

    /// An ICE restart with the client's new offer (WebSocket), or with the ICE fragment of
    /// one (WHIP/WHEP `PATCH`): returns the answer, with our new ICE credentials, which the
    /// demultiplexer routes from then on.
    pub async fn restart(&self, key: PeerKey, with: RestartWith) -> Result<String, PeerError> {
        let (reply, rx) = oneshot::channel();
        let _ = self.control.send(Control::Restart { key, with, reply });
        rx.await
            .map_err(|_| PeerError::Webrtc("the media plane has stopped".into()))?
    }

    pub fn close(&self, key: PeerKey) {
        let _ = self.control.send(Control::Close { key });
    }

    /// The queue a room writes this connection's media to.
    pub fn media_tx(&self, key: PeerKey) -> MediaTx {
        MediaTx {
            key,
            tx: self.media.clone(),
            shed: self.shed.clone(),
        }
    }

    pub async fn stats(&self) -> PlaneStats {
        let (reply, rx) = oneshot::channel();
        let _ = self.control.send(Control::Stats { reply });
        rx.await.unwrap_or_default()
    }
}
