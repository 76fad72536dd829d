//! One thread per room: it owns the sans-IO `tessera_engine::Room`, feeds it what the
//! network tasks send, runs its clock, and routes its outputs to each participant's
//! bounded queue. Nothing here awaits or does IO; a full queue drops and counts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tessera_codec::{EncodedVideo, VideoFrame};
use tessera_engine::{BandwidthConfig, Feedback, JoinOptions, LayoutSpec, RoomSettings, TierId};
use tessera_proto::{ParticipantInfo, ServerMessage};
use tessera_types::{ParticipantId, VideoCodec};
use tokio::sync::{mpsc as tmpsc, oneshot};

mod commands;
mod hints;
mod reports;
mod routing;
#[cfg(test)]
mod tests;
mod thread;

pub use reports::{
    Hint, LatencyHistogram, ParticipantReport, RoomInfo, TierReport, LATENCY_BUCKETS,
};
pub use thread::spawn;
use thread::{Member, RoomThread};

/// Commands a room thread accepts. Sent with `RoomHandle::send`, never blocking.
pub enum Command {
    Join(Box<JoinRequest>),
    Leave {
        id: ParticipantId,
    },
    Video {
        id: ParticipantId,
        codec: VideoCodec,
        data: Vec<u8>,
    },
    Audio {
        id: ParticipantId,
        packet: Vec<u8>,
    },
    Mute {
        id: ParticipantId,
        audio: Option<bool>,
        video: Option<bool>,
    },
    /// A receiver lost its picture (PLI/FIR).
    ReceiverKeyframe {
        id: ParticipantId,
    },
    /// A receiver's feedback on the composite: its send-side estimate (transport-cc),
    /// REMB, receiver-report loss, or what was sent to it.
    Feedback {
        id: ParticipantId,
        feedback: Feedback,
        /// Interarrival jitter the receiver reports, in ms.
        jitter_ms: Option<f64>,
    },
    /// The loss a receiver reports on its audio, in percent (tunes Opus FEC).
    AudioLoss {
        id: ParticipantId,
        loss_pct: u8,
    },
    /// The participant asked for audio only (no video in or out), or back.
    AudioOnly {
        id: ParticipantId,
        enabled: bool,
    },
    /// A receiver's connection came up: it needs a keyframe now.
    ReceiverConnected {
        id: ParticipantId,
    },
    /// Counters the network side keeps for a participant (packets lost, frames dropped).
    NetStats {
        id: ParticipantId,
        stats: NetStats,
    },
    /// Who is in the room, and its layout's name.
    List {
        reply: oneshot::Sender<(Vec<ParticipantInfo>, String)>,
    },
    Info {
        reply: oneshot::Sender<RoomInfo>,
    },
    Snapshot {
        reply: oneshot::Sender<Option<VideoFrame>>,
    },
    /// New settings from a config reload; `layout` names the layout they carry, `layouts`
    /// are all the new config's layouts (a room whose layout an admin chose keeps it).
    Reconfigure {
        settings: Box<RoomSettings>,
        layout: String,
        layouts: Vec<(String, LayoutSpec)>,
    },
    /// A viewer chose a layout of its own (`None`: the room's again).
    ChooseLayout {
        id: ParticipantId,
        layout: Option<(String, LayoutSpec)>,
    },
    /// Admin: use this layout until the room closes.
    SetLayout {
        name: String,
        spec: LayoutSpec,
    },
    /// Admin: show this participant in the speaker tile (`None`: the active speaker).
    Pin {
        id: Option<ParticipantId>,
        reply: oneshot::Sender<Result<(), AdminError>>,
    },
    /// Admin: move a receiver to tier `tier` (a config tier name; the codec variant that
    /// matches what the participant negotiated is chosen here).
    SetTier {
        id: ParticipantId,
        tier: String,
        reply: oneshot::Sender<Result<String, AdminError>>,
    },
    /// Admin: remove a participant; it is told why and its session ends.
    Kick {
        id: ParticipantId,
        reason: String,
        reply: oneshot::Sender<bool>,
    },
    /// Admin or shutdown: tell everyone the room is closing (fatal `code`), then stop.
    Close {
        code: tessera_proto::ErrorCode,
        reason: String,
    },
    Stop,
    /// Look at the control queue (sent with every control command).
    Wake,
    /// Makes the room thread panic, to test that a crash stays in its room.
    #[cfg(test)]
    Crash,
    /// Blocks the room thread this long, to test a room that falls behind.
    #[cfg(test)]
    Stall(Duration),
}

pub struct JoinRequest {
    pub id: ParticipantId,
    pub name: String,
    pub kind: MemberKind,
    /// A screen share's participant (`None`: the one with the same name, if any).
    pub owner: Option<ParticipantId>,
    pub options: JoinOptions,
    pub codec_out: Option<VideoCodec>,
    /// Move this receiver between tiers from its feedback (`[bandwidth]`), if enabled.
    pub bandwidth: Option<(BandwidthConfig, bool)>,
    /// The richest tier this receiver may get.
    pub caps: TierCaps,
    pub sink: Sink,
}

/// What limits a receiver's tier, whatever its bandwidth.
#[derive(Clone, Debug, Default)]
pub struct TierCaps {
    /// `rooms.max_tier` or the declared room's `max_tier` (a config tier name).
    pub max_tier: Option<String>,
    /// A tier the client asked for in `join`: it gets no richer one.
    pub requested: Option<String>,
    /// The size the client shows the composite at, in device pixels.
    pub display: Option<(u32, u32)>,
}

/// A receiver's tier for logs: `low vp8`, `low@speaker h264`, or `none`.
fn shown(tier: Option<&TierId>) -> String {
    tier.map_or_else(|| "none".into(), |t| format!("{t} {}", t.codec))
}

/// Why a room refused an administrator's action.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no such participant in this room")]
    NoSuchParticipant,
    #[error("the participant does not receive video")]
    NoVideo,
    #[error("unknown tier {0:?}")]
    UnknownTier(String),
}

/// What a room sends one participant's network task.
#[derive(Debug)]
pub enum MediaOut {
    /// A composite frame and its tier's frame rate (which sets the RTP timestamp step).
    Video(Arc<EncodedVideo>, u32),
    /// An Opus packet and its pts on the engine's 48 kHz clock.
    Audio(Vec<u8>, u64),
    /// Ask this participant's camera for a keyframe (send PLI).
    Pli,
    /// Cap this participant's camera at this many bits per second (send REMB).
    Remb(u32),
    /// Pad the composite up to `bps` in total until `until`: a bandwidth probe.
    Probe { bps: u64, until: Instant },
}

/// A participant's two queues: media (bounded: a stalled receiver loses frames, not the
/// room) and signalling events (small and rare).
#[derive(Clone)]
pub struct Sink {
    pub media: crate::media::MediaTx,
    pub events: tmpsc::UnboundedSender<ServerMessage>,
}

/// Counters the network side keeps for a participant's incoming RTP. Bad input from the
/// peer lands here: counted and dropped (or followed), never an error.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct NetStats {
    pub video_frames_lost: u64,
    pub rtp_late: u64,
    pub rtp_duplicates: u64,
    pub commands_dropped: u64,
    /// Packets whose payload type the answer did not accept as this kind's media: dropped.
    pub rtp_bad_payload_type: u64,
    /// Packets whose payload is larger than fits a 1500-byte MTU: dropped.
    pub rtp_oversized: u64,
    /// Packets with no payload (padding): skipped.
    pub rtp_empty: u64,
    /// Camera payloads the depacketizer refused (garbage, truncated headers).
    pub rtp_malformed: u64,
    /// Camera frames larger than any real one (2 MiB): dropped.
    pub video_frames_too_large: u64,
    /// Jumps in the camera's sequence numbers after which its stream started afresh.
    pub rtp_resyncs: u64,
    /// Times the camera changed codec mid-stream (followed with a fresh decoder).
    pub codec_switches: u64,
    /// Audio or video tracks beyond the first of each kind: ignored.
    pub extra_tracks: u64,
    /// Packets of an SSRC no track was bound to (webrtc-rs drops them).
    pub rtp_unknown_ssrc: u64,
    /// Composite packets a receiver's NACKs asked for that were not resent: over its
    /// retransmission budget (a share of its bandwidth estimate).
    pub retransmissions_refused: u64,
}

/// What a room member is. Serialized (the admin API's `kind`) as `ws`, `whip`, `whep`,
/// `screen`, `recorder` or `stream`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberKind {
    /// A person on the web client (WebSocket signalling).
    #[serde(rename = "ws")]
    WebSocket,
    /// A WHIP publisher (a camera and a microphone).
    Whip,
    /// A WHEP viewer.
    Whep,
    /// A participant's shared screen: a member of its own, shown in the share layout's
    /// speaker tile, not listed among the participants (`sharing` says whose it is).
    Screen,
    /// Records the room to a file (egress): not a person, so not listed among the
    /// participants; people are told it is there with a `recording` message.
    Recorder,
    /// Streams the room to an RTMP server (egress too).
    Stream,
}

impl MemberKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberKind::WebSocket => "ws",
            MemberKind::Whip => "whip",
            MemberKind::Whep => "whep",
            MemberKind::Screen => "screen",
            MemberKind::Recorder => "recorder",
            MemberKind::Stream => "stream",
        }
    }

    /// Records or streams the room.
    pub fn is_egress(self) -> bool {
        matches!(self, MemberKind::Recorder | MemberKind::Stream)
    }

    /// Listed among the room's participants: not egress and not a screen share.
    pub fn is_person(self) -> bool {
        !self.is_egress() && self != MemberKind::Screen
    }
}

impl std::fmt::Display for MemberKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many media commands may wait for a room thread before senders start dropping them.
const COMMAND_QUEUE: usize = 4096;

impl Command {
    /// Media and feedback, which an overloaded room may shed; everything else is control
    /// (joins, leaves, mutes, admin actions), which is never dropped.
    fn is_media(&self) -> bool {
        matches!(
            self,
            Command::Video { .. }
                | Command::Audio { .. }
                | Command::Feedback { .. }
                | Command::AudioLoss { .. }
                | Command::NetStats { .. }
                | Command::ReceiverKeyframe { .. }
        )
    }
}

/// The sending side of a room thread. Cheap to clone; `send` never blocks.
///
/// Two queues: media is bounded and sheds (counted) when the room falls behind; control is
/// unbounded and never dropped, and the room takes it before any media. A control command
/// also leaves a `Wake` on the media queue, so the thread notices it at once.
#[derive(Clone)]
pub struct RoomHandle {
    pub name: String,
    tx: SyncSender<Command>,
    control: mpsc::Sender<Command>,
    alive: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

/// The control queue of a [`RoomHandle::detached`] (media is taken and dropped by a thread
/// of its own, as a room that keeps up would).
#[cfg(feature = "test-kit")]
pub struct Detached {
    _control: mpsc::Receiver<Command>,
}

#[cfg(feature = "test-kit")]
impl RoomHandle {
    /// A handle with no room behind it (benches of the media plane): a thread takes each
    /// media command and drops it; control waits in the returned queue.
    pub fn detached(name: &str) -> (RoomHandle, Detached) {
        let (tx, media) = mpsc::sync_channel::<Command>(COMMAND_QUEUE);
        std::thread::spawn(move || while media.recv().is_ok() {});
        let (control, control_rx) = mpsc::channel();
        let handle = RoomHandle {
            name: name.to_string(),
            tx,
            control,
            alive: Arc::new(AtomicBool::new(true)),
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (
            handle,
            Detached {
                _control: control_rx,
            },
        )
    }
}

impl RoomHandle {
    /// Queues a command; false if the room is gone, or (counted) if it is overloaded and
    /// the command is media.
    pub fn send(&self, cmd: Command) -> bool {
        if !cmd.is_media() {
            if self.control.send(cmd).is_err() {
                return false;
            }
            // Full: the room is busy and will reach the control queue first anyway.
            let _ = self.tx.try_send(Command::Wake);
            return true;
        }
        match self.tx.try_send(cmd) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Whether both handles lead to the same room thread (a room can be re-created).
    pub fn same_channel(&self, other: &RoomHandle) -> bool {
        Arc::ptr_eq(&self.alive, &other.alive)
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Asks the room something and waits for the answer (None if the room is gone).
    pub async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        if !self.send(make(tx)) {
            return None;
        }
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .ok()?
            .ok()
    }
}
