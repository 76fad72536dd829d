//! One thread per room: it owns the sans-IO `tessera_engine::Room`, feeds it what the
//! network tasks send, runs its clock, and routes its outputs to each participant's
//! bounded queue. Nothing here awaits or does IO; a full queue drops and counts.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tessera_codec::{EncodedVideo, VideoFrame};
use tessera_engine::{
    BandwidthConfig, BandwidthController, Feedback, Input, JoinOptions, LayoutSpec, Listener,
    Output, Probe, Room, RoomSettings, Rung, TierSettings,
};
use tessera_proto::{ErrorCode, ParticipantInfo, ServerMessage};
use tessera_types::{ParticipantId, VideoCodec};
use tokio::sync::{mpsc as tmpsc, oneshot};
use tracing::{debug, error, info, info_span, warn};

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
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Admin: move a receiver to tier `tier` (a config tier name; the codec variant that
    /// matches what the participant negotiated is chosen here).
    SetTier {
        id: ParticipantId,
        tier: String,
        reply: oneshot::Sender<Result<String, String>>,
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
    pub kind: &'static str,
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

/// The `kind` of a room member that records the room (egress): not a person, so not listed
/// among the participants; people are told it is there with a `recording` message.
pub const RECORDER_KIND: &str = "recorder";
/// A member that streams the room to an RTMP server (egress too).
pub const STREAM_KIND: &str = "stream";

fn is_egress(kind: &str) -> bool {
    kind == RECORDER_KIND || kind == STREAM_KIND
}

/// A participant's shared screen: a member of its own, shown in the share layout's
/// speaker tile, not listed among the participants (`sharing` says whose it is).
pub const SCREEN_KIND: &str = "screen";

/// Listed among the room's participants: not egress and not a screen share.
fn is_person(kind: &str) -> bool {
    !is_egress(kind) && kind != SCREEN_KIND
}

/// The largest picture a shared screen is asked for.
const MAX_SHARE_PIXELS: (u32, u32) = (1920, 1080);

/// The engine tier of config tier variant `base` (e.g. `low` or `low~h264`) drawn in
/// layout `layout`.
fn layout_variant(base: &str, layout: &str) -> String {
    format!("{base}{LAYOUT_VARIANT}{layout}")
}

/// Marks a tier variant with a layout of its own in an engine tier's name.
pub const LAYOUT_VARIANT: char = '@';

/// The config tier variant (`low`, `low~h264`) an engine tier is drawn from.
fn base_of_variant(tier: &str) -> String {
    tier.split(LAYOUT_VARIANT)
        .next()
        .unwrap_or(tier)
        .to_string()
}

/// A variant of each of `tiers` (those without a layout of their own) drawn in `layout`.
fn layout_variants(tiers: &[TierSettings], name: &str, layout: &LayoutSpec) -> Vec<TierSettings> {
    tiers
        .iter()
        .filter(|t| t.layout.is_none())
        .map(|t| TierSettings {
            name: layout_variant(&t.name, name),
            layout: Some(layout.clone()),
            ..t.clone()
        })
        .collect()
}

/// How often receivers' probes, held receivers and senders' hints are looked at.
const PERIODIC: Duration = Duration::from_millis(500);

/// For this long after its connection comes up, a receiver that has no picture yet (its
/// first keyframe was lost, or arrived before the far end could decrypt it) gets a keyframe
/// on request once per [`NEW_RECEIVER_KEYFRAME_INTERVAL`], however its tier is shared.
const NEW_RECEIVER_GRACE: Duration = Duration::from_secs(10);
const NEW_RECEIVER_KEYFRAME_INTERVAL: Duration = Duration::from_secs(1);

/// The least and most a send hint asks of a camera, in bits per second.
const MIN_HINT_BPS: u32 = 30_000;
const MAX_HINT_BPS: u32 = 4_000_000;

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

#[derive(Debug, Serialize)]
pub struct RoomInfo {
    pub room: String,
    pub layout: String,
    pub uptime_secs: u64,
    pub participants: Vec<ParticipantReport>,
    pub tiers: Vec<TierReport>,
    pub audio_ticks: u64,
    pub audio_ticks_skipped: u64,
    pub active_speaker: Option<String>,
    /// The participant whose screen is shared (or the share itself, if it has none).
    pub sharing: Option<String>,
    pub commands_dropped: u64,
    /// Time the room thread spent working (not waiting), a proxy for its CPU time.
    pub busy_secs: f64,
    /// Camera frame arrival to the first composite showing it.
    pub mix_latency: LatencyHistogram,
}

#[derive(Debug, Serialize)]
pub struct ParticipantReport {
    pub id: String,
    pub name: String,
    pub kind: &'static str,
    /// The layout this viewer chose (`None`: the room's).
    pub layout: Option<String>,
    pub codec_in: Option<String>,
    pub codec_out: Option<String>,
    pub tier: Option<String>,
    pub audio_muted: bool,
    pub video_muted: bool,
    pub video_fps_in: f64,
    pub video_kbps_in: f64,
    pub video_frames_in: u64,
    pub video_decode_errors: u64,
    pub audio_packets_in: u64,
    pub audio_decode_errors: u64,
    pub keyframe_requests: u64,
    pub media_dropped: u64,
    pub net: NetStats,
    /// Receiver reports and REMB packets received for the composite.
    pub feedback_reports: u64,
    /// Tier changes made from that feedback.
    pub tier_switches: u64,
    /// From the receiver's last report on the composite: fraction lost, jitter in ms.
    pub report_loss: Option<f32>,
    pub report_jitter_ms: Option<f64>,
    /// The bandwidth estimate for this receiver's downlink and where it comes from
    /// (`twcc`, `remb` or `loss`).
    pub estimate_bps: Option<u64>,
    pub estimate_source: Option<&'static str>,
    /// The receiver asked for audio only.
    pub audio_only: bool,
    /// Probes started, and probes that ended in a climb.
    pub probes: (u64, u64),
    /// Waiting for a keyframe after losing its picture.
    pub held: bool,
    pub held_frames_dropped: u64,
    pub keyframe_requests_deferred: u64,
    /// The last send hint given to this participant's camera.
    pub send_hint: Option<Hint>,
}

/// What a sender's camera is asked for: the largest tile it has on any composite in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Hint {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub max_bitrate_bps: u32,
    pub on_canvas: bool,
}

#[derive(Debug, Serialize)]
pub struct TierReport {
    pub name: String,
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub receivers: usize,
    pub fps_out: f64,
    pub kbps_out: f64,
    pub frames_encoded: u64,
    pub keyframes: u64,
    pub late_ticks: u64,
    /// Time spent composing and encoding this tier since the room started.
    pub compose_secs: f64,
    pub encode_secs: f64,
    /// Each tile of the last composite, in canvas pixels.
    pub tiles: Vec<TileReport>,
}

#[derive(Debug, Serialize)]
pub struct TileReport {
    pub id: String,
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

struct Member {
    info: ParticipantInfo,
    kind: &'static str,
    /// A screen share's participant.
    owner: Option<ParticipantId>,
    /// The layout this viewer chose, if not the room's.
    layout: Option<String>,
    options: JoinOptions,
    codec_in: Option<VideoCodec>,
    codec_out: Option<VideoCodec>,
    sink: Sink,
    media_dropped: u64,
    net: NetStats,
    rate: Rate,
    bandwidth: Option<BandwidthController>,
    /// The ladder's settings and caps, to rebuild it (after "audio only" is turned off).
    ladder: Option<(BandwidthConfig, bool, TierCaps)>,
    /// The participant asked for audio only.
    audio_only: bool,
    /// Lost its picture (PLI/FIR, or its queue overflowed): delta frames are dropped until
    /// its tier's next keyframe.
    held: bool,
    /// When this receiver last forced its tier to make a keyframe.
    last_forced_keyframe: Option<Instant>,
    /// When its connection last came up (see [`NEW_RECEIVER_GRACE`]).
    connected_at: Option<Instant>,
    /// Delta frames not sent while held, and keyframe requests not passed on (the tier is
    /// shared and this receiver forced one recently).
    held_frames_dropped: u64,
    keyframe_requests_deferred: u64,
    joined_at: Instant,
    last_hint: Option<Hint>,
    /// When the participant was last told its tier and estimate.
    last_bandwidth_msg: Option<Instant>,
    feedback_reports: u64,
    tier_switches: u64,
    /// When this participant's newest camera frame reached the room, and whether a
    /// composite has shown it yet (each frame is measured once).
    last_video_at: Option<Instant>,
    latency_pending: bool,
    /// The receiver's last report: fraction lost (0..1) and interarrival jitter (ms).
    report_loss: Option<f32>,
    report_jitter_ms: Option<f64>,
}

impl Member {
    /// Whether this receiver may force its tier to make a keyframe again: `interval` after
    /// its last one, or [`NEW_RECEIVER_KEYFRAME_INTERVAL`] in its first
    /// [`NEW_RECEIVER_GRACE`] after connecting. Without that, a receiver whose first
    /// keyframe was lost (sent before the far end could decrypt it, or dropped on the way)
    /// waited `interval` (10 s by default) for its first picture.
    fn keyframe_due(&self, now: Instant, interval: Duration) -> bool {
        let new = self
            .connected_at
            .is_some_and(|at| now.saturating_duration_since(at) < NEW_RECEIVER_GRACE);
        let interval = if new {
            interval.min(NEW_RECEIVER_KEYFRAME_INTERVAL)
        } else {
            interval
        };
        self.last_forced_keyframe
            .is_none_or(|t| now.saturating_duration_since(t) >= interval)
    }
}

/// Upper bounds (seconds) of the mix-latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 9] = [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28];

/// Time from a camera frame's arrival at the room to the first composite that shows it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencyHistogram {
    /// Counts per bucket of `LATENCY_BUCKETS`, plus one for larger values (not cumulative).
    pub counts: Vec<u64>,
    pub sum_secs: f64,
    pub count: u64,
}

impl LatencyHistogram {
    fn record(&mut self, secs: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; LATENCY_BUCKETS.len() + 1];
        }
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i] += 1;
        self.sum_secs += secs;
        self.count += 1;
    }
}

/// Counts over the last second, for fps/kbps in reports.
#[derive(Default, Clone, Copy)]
struct Rate {
    at: Option<Instant>,
    frames: u64,
    bytes: u64,
    fps: f64,
    kbps: f64,
}

impl Rate {
    fn update(&mut self, now: Instant, frames: u64, bytes: u64) {
        match self.at {
            Some(at) if now.duration_since(at) >= Duration::from_secs(1) => {
                let s = now.duration_since(at).as_secs_f64();
                self.fps = (frames - self.frames) as f64 / s;
                self.kbps = (bytes - self.bytes) as f64 * 8.0 / 1000.0 / s;
            }
            Some(_) => return,
            None => {}
        }
        self.at = Some(now);
        self.frames = frames;
        self.bytes = bytes;
    }
}

/// Starts the room's thread. `settings.layout` and tiers come from the config.
pub fn spawn(
    name: &str,
    layout_name: String,
    settings: RoomSettings,
) -> std::io::Result<RoomHandle> {
    let (tx, rx) = mpsc::sync_channel(COMMAND_QUEUE);
    let (control, control_rx) = mpsc::channel();
    let alive = Arc::new(AtomicBool::new(true));
    let dropped = Arc::new(AtomicU64::new(0));
    let handle = RoomHandle {
        name: name.to_string(),
        tx,
        control,
        alive: alive.clone(),
        dropped: dropped.clone(),
    };
    let room_name = name.to_string();
    std::thread::Builder::new()
        .name(format!(
            "room-{}",
            name.chars().take(10).collect::<String>()
        ))
        .spawn(move || {
            let span = info_span!("room", room = %room_name);
            let _enter = span.enter();
            let mut thread = RoomThread {
                name: room_name,
                layout_name,
                room: None,
                settings: Some(settings),
                members: HashMap::new(),
                order: Vec::new(),
                tier_rates: HashMap::new(),
                started: Instant::now(),
                dropped,
                busy: Duration::ZERO,
                admin_layout: None,
                latency: LatencyHistogram::default(),
                egress_keyframes: HashMap::new(),
                share: None,
                variant_layouts: HashMap::new(),
            };
            let result =
                std::panic::catch_unwind(AssertUnwindSafe(|| thread.run(&control_rx, &rx)));
            alive.store(false, Ordering::Release);
            if result.is_err() {
                error!("room thread panicked; closing the room");
                for m in thread.members.values() {
                    let _ = m.sink.events.send(ServerMessage::Error {
                        code: ErrorCode::Internal,
                        reason: "the room failed; join again".into(),
                        fatal: true,
                    });
                }
            }
            info!("room closed");
        })?;
    Ok(handle)
}

struct RoomThread {
    name: String,
    layout_name: String,
    room: Option<Room>,
    settings: Option<RoomSettings>,
    members: HashMap<ParticipantId, Member>,
    order: Vec<ParticipantId>,
    tier_rates: HashMap<String, Rate>,
    started: Instant,
    dropped: Arc<AtomicU64>,
    busy: Duration,
    /// A layout an admin chose; config reloads keep it while it exists.
    admin_layout: Option<String>,
    latency: LatencyHistogram,
    /// When each tier with a recording last got its periodic keyframe.
    egress_keyframes: HashMap<String, Instant>,
    /// The member that is the room's shared screen.
    share: Option<ParticipantId>,
    /// Layouts viewers chose, for which the room has tier variants.
    variant_layouts: HashMap<String, LayoutSpec>,
}

impl RoomThread {
    /// Takes every waiting control command; false when the room should stop.
    fn take_control(&mut self, control: &mpsc::Receiver<Command>) -> bool {
        while let Ok(cmd) = control.try_recv() {
            if !self.handle(cmd) {
                return false;
            }
        }
        true
    }

    fn run(&mut self, control: &mpsc::Receiver<Command>, rx: &mpsc::Receiver<Command>) {
        let now = Instant::now();
        let settings = self.settings.take().expect("settings are set at spawn");
        let room = match Room::new(settings, now) {
            Ok(mut r) => {
                r.set_cost_clock(Instant::now);
                r
            }
            Err(e) => {
                error!("cannot start room: {e}");
                return;
            }
        };
        self.room = Some(room);
        info!("room started");
        let mut next_rates = now;
        let mut next_periodic = now + PERIODIC;
        loop {
            let deadline = self.room().poll_timeout().min(next_periodic);
            let now = Instant::now();
            let cmd = if deadline > now {
                match rx.recv_timeout(deadline - now) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            } else {
                rx.try_recv().ok()
            };
            let work_started = Instant::now();
            if !self.take_control(control) {
                return;
            }
            if let Some(cmd) = cmd {
                if !self.handle(cmd) {
                    return;
                }
                // Drain what else is waiting before running the clock, control first.
                while let Ok(cmd) = rx.try_recv() {
                    if !self.take_control(control) || !self.handle(cmd) {
                        return;
                    }
                }
            }
            let now = Instant::now();
            if self.room().poll_timeout() <= now {
                self.room_mut().handle_timeout(now);
            }
            self.route();
            if now >= next_rates {
                self.update_rates(now);
                next_rates = now + Duration::from_secs(1);
            }
            if now >= next_periodic {
                self.periodic(now);
                self.route();
                next_periodic = now + PERIODIC;
            }
            self.busy += work_started.elapsed();
        }
    }

    fn room(&self) -> &Room {
        self.room.as_ref().expect("room is running")
    }

    fn room_mut(&mut self) -> &mut Room {
        self.room.as_mut().expect("room is running")
    }

    fn input(&mut self, input: Input) {
        let now = Instant::now();
        self.room_mut().handle_input(input, now);
    }

    fn broadcast(&self, msg: ServerMessage, except: Option<ParticipantId>) {
        for (id, m) in &self.members {
            if Some(*id) != except {
                let _ = m.sink.events.send(msg.clone());
            }
        }
    }

    /// Returns false when the room should stop.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Join(req) => {
                let JoinRequest {
                    id,
                    name,
                    kind,
                    owner,
                    mut options,
                    codec_out,
                    bandwidth,
                    caps,
                    sink,
                } = *req;
                let now = Instant::now();
                let ladder = bandwidth.map(|(cfg, audio_only)| (cfg, audio_only, caps));
                let controller = match (&ladder, codec_out) {
                    (Some(l), Some(codec)) => Some(self.new_controller(l, codec, now)),
                    _ => None,
                };
                if let Some(c) = &controller {
                    options.receive_tier = c.current().tier.clone();
                }
                info!(participant = %id, %name, kind, tier = ?options.receive_tier, "joined");
                let info = ParticipantInfo {
                    id: id.to_string(),
                    name: name.clone(),
                    audio_muted: false,
                    video_muted: false,
                };
                let owner = (kind == SCREEN_KIND)
                    .then(|| {
                        owner.or_else(|| {
                            self.members
                                .iter()
                                .find(|(_, m)| is_person(m.kind) && m.info.name == name)
                                .map(|(id, _)| *id)
                        })
                    })
                    .flatten();
                let label = if kind == SCREEN_KIND {
                    format!("{name} (screen)")
                } else {
                    name
                };
                self.input(Input::Join {
                    id,
                    name: label,
                    options: options.clone(),
                });
                self.members.insert(
                    id,
                    Member {
                        info: info.clone(),
                        kind,
                        owner,
                        layout: None,
                        options,
                        codec_in: None,
                        codec_out,
                        sink,
                        media_dropped: 0,
                        net: NetStats::default(),
                        rate: Rate::default(),
                        bandwidth: controller,
                        ladder,
                        audio_only: false,
                        held: true,
                        last_forced_keyframe: None,
                        connected_at: None,
                        held_frames_dropped: 0,
                        keyframe_requests_deferred: 0,
                        joined_at: now,
                        last_hint: None,
                        last_bandwidth_msg: None,
                        feedback_reports: 0,
                        tier_switches: 0,
                        last_video_at: None,
                        latency_pending: false,
                        report_loss: None,
                        report_jitter_ms: None,
                    },
                );
                self.order.push(id);
                if is_egress(kind) {
                    self.announce_egress(None);
                    return true;
                }
                if kind == SCREEN_KIND {
                    self.start_share(id);
                    return true;
                }
                if let Some(m) = self.members.get(&id) {
                    let msgs = [self.egress_message(), self.sharing_message()];
                    for msg in msgs.into_iter().flatten() {
                        let _ = m.sink.events.send(msg);
                    }
                }
                self.broadcast(
                    ServerMessage::ParticipantJoined { participant: info },
                    Some(id),
                );
                // The newcomer's `joined` list was taken at its WebSocket join; whoever
                // entered the room since (before this offer) is only known from here.
                if let Some(m) = self.members.get(&id) {
                    for other in self.order.iter().filter(|o| **o != id) {
                        if let Some(o) = self.members.get(other).filter(|o| is_person(o.kind)) {
                            let _ = m.sink.events.send(ServerMessage::ParticipantUpdated {
                                participant: o.info.clone(),
                            });
                        }
                    }
                }
                self.report_bandwidth(id, now);
            }
            Command::Leave { id } => {
                if let Some(m) = self.members.remove(&id) {
                    info!(participant = %id, "left");
                    self.forget(id, &m);
                }
            }
            Command::Video { id, codec, data } => {
                // Media from one who may not publish (a subscribe-only token, or a join
                // without `video`) never reaches the engine.
                if self
                    .members
                    .get(&id)
                    .is_some_and(|m| !m.options.sends_video)
                {
                    return true;
                }
                if let Some(m) = self.members.get_mut(&id) {
                    m.codec_in = Some(codec);
                    m.last_video_at = Some(Instant::now());
                    m.latency_pending = true;
                }
                self.input(Input::Video { id, codec, data });
            }
            Command::Audio { id, packet } => {
                if self.members.get(&id).is_some_and(|m| m.options.sends_audio) {
                    self.input(Input::Audio { id, packet });
                }
            }
            Command::Mute { id, audio, video } => {
                if let Some(muted) = audio {
                    self.input(Input::SetMuted { id, muted });
                }
                if let Some(off) = video {
                    self.input(Input::SetCameraOff { id, off });
                }
                if let Some(m) = self.members.get_mut(&id) {
                    m.info.audio_muted = audio.unwrap_or(m.info.audio_muted);
                    m.info.video_muted = video.unwrap_or(m.info.video_muted);
                    let msg = ServerMessage::ParticipantUpdated {
                        participant: m.info.clone(),
                    };
                    self.broadcast(msg, None);
                }
            }
            Command::ReceiverKeyframe { id } => {
                debug!(participant = %id, "receiver asked for a keyframe");
                self.lost_picture(id, Instant::now());
            }
            Command::Feedback {
                id,
                feedback,
                jitter_ms,
            } => {
                let now = Instant::now();
                let Some(m) = self.members.get_mut(&id) else {
                    return true;
                };
                if feedback.loss.is_some() || feedback.remb_bps.is_some() {
                    m.feedback_reports += 1;
                }
                m.report_loss = feedback.loss.or(m.report_loss);
                m.report_jitter_ms = jitter_ms.or(m.report_jitter_ms);
                let Some(b) = m.bandwidth.as_mut() else {
                    return true;
                };
                let probe_before = b.probe();
                if feedback.overuse {
                    debug!(participant = %id, probing = probe_before.is_some(), "overuse");
                }
                let switched = b.on_feedback(now, feedback);
                self.after_decision(id, probe_before, switched, now);
            }
            Command::AudioLoss { id, loss_pct } => {
                if let Some(b) = self.members.get_mut(&id).and_then(|m| m.bandwidth.as_mut()) {
                    b.on_audio_loss(Instant::now(), loss_pct as f32 / 100.0);
                }
                self.input(Input::SetAudioLoss { id, loss_pct });
            }
            Command::AudioOnly { id, enabled } => self.set_audio_only(id, enabled),
            Command::ReceiverConnected { id } => {
                if let Some(m) = self.members.get_mut(&id) {
                    let now = Instant::now();
                    m.held = true;
                    m.connected_at = Some(now);
                    if let Some(tier) = m.options.receive_tier.clone() {
                        m.last_forced_keyframe = Some(now);
                        self.input(Input::ReceiverReady { tier });
                    }
                }
            }
            Command::NetStats { id, stats } => {
                if let Some(m) = self.members.get_mut(&id) {
                    m.net = stats;
                }
            }
            Command::List { reply } => {
                let list = self
                    .order
                    .iter()
                    .filter_map(|id| self.members.get(id))
                    .filter(|m| is_person(m.kind))
                    .map(|m| m.info.clone())
                    .collect();
                let _ = reply.send((list, self.layout_name.clone()));
            }
            Command::Info { reply } => {
                let _ = reply.send(self.info());
            }
            Command::Snapshot { reply } => {
                let frame = self
                    .snapshot_tier()
                    .and_then(|t| self.room().canvas(&t).cloned());
                let _ = reply.send(frame);
            }
            Command::Reconfigure {
                settings,
                layout,
                layouts,
            } => {
                info!(%layout, "applying a new config");
                let mut settings = settings;
                // Viewers' layout variants follow their tiers' new settings.
                self.variant_layouts
                    .retain(|name, _| layouts.iter().any(|(n, _)| n == name));
                for (n, spec) in &mut self.variant_layouts {
                    if let Some((_, new)) = layouts.iter().find(|(l, _)| l == n) {
                        *spec = new.clone();
                    }
                }
                let variants: Vec<TierSettings> = self
                    .variant_layouts
                    .iter()
                    .flat_map(|(n, spec)| layout_variants(&settings.tiers, n, spec))
                    .collect();
                settings.tiers.extend(variants);
                self.input(Input::Reconfigure(settings));
                let admin = self
                    .admin_layout
                    .as_ref()
                    .and_then(|name| layouts.iter().find(|(n, _)| n == name).cloned());
                match admin {
                    // An admin's choice outlives reloads while the config still has it.
                    Some((name, spec)) => {
                        self.input(Input::SetLayout(spec));
                        self.set_layout_name(name);
                    }
                    None => {
                        self.admin_layout = None;
                        self.set_layout_name(layout);
                    }
                }
            }
            Command::ChooseLayout { id, layout } => self.choose_layout(id, layout),
            Command::SetLayout { name, spec } => {
                info!(layout = %name, "layout set by an administrator");
                self.input(Input::SetLayout(spec));
                self.admin_layout = Some(name.clone());
                self.set_layout_name(name);
            }
            Command::Pin { id, reply } => {
                let ok = id.is_none_or(|id| self.members.contains_key(&id));
                if ok {
                    self.input(Input::Pin(id));
                }
                let _ = reply.send(if ok {
                    Ok(())
                } else {
                    Err("no such participant in this room".into())
                });
            }
            Command::SetTier { id, tier, reply } => {
                let result = self.set_tier(id, &tier);
                let _ = reply.send(result);
            }
            Command::Kick { id, reason, reply } => {
                let found = self.members.remove(&id);
                if let Some(m) = &found {
                    info!(participant = %id, %reason, "removed by an administrator");
                    let _ = m.sink.events.send(ServerMessage::Error {
                        code: ErrorCode::Removed,
                        reason,
                        fatal: true,
                    });
                    self.forget(id, m);
                }
                let _ = reply.send(found.is_some());
            }
            Command::Close { code, reason } => {
                info!(%reason, "room closed");
                for m in self.members.values() {
                    let _ = m.sink.events.send(ServerMessage::Error {
                        code,
                        reason: reason.clone(),
                        fatal: true,
                    });
                }
                self.members.clear();
                return false;
            }
            Command::Stop => return false,
            Command::Wake => {}
            #[cfg(test)]
            Command::Crash => panic!("crash requested by a test"),
            #[cfg(test)]
            Command::Stall(d) => std::thread::sleep(d),
        }
        true
    }

    fn set_layout_name(&mut self, layout: String) {
        if layout != self.layout_name {
            self.layout_name = layout.clone();
            // Viewers with a layout of their own keep seeing it.
            for m in self.members.values().filter(|m| m.layout.is_none()) {
                let _ = m.sink.events.send(ServerMessage::LayoutChanged {
                    layout: layout.clone(),
                });
            }
        }
    }

    /// After a member left or was removed: the engine forgets it, and the others are told.
    fn forget(&mut self, id: ParticipantId, m: &Member) {
        self.order.retain(|p| *p != id);
        self.input(Input::Leave { id });
        if is_egress(m.kind) {
            self.announce_egress(Some(true));
        } else if m.kind == SCREEN_KIND {
            if self.share == Some(id) {
                self.share = None;
                info!(share = %id, "screen share ended");
                self.broadcast(
                    ServerMessage::Sharing {
                        id: None,
                        name: None,
                    },
                    None,
                );
            }
        } else {
            self.broadcast(ServerMessage::ParticipantLeft { id: id.to_string() }, None);
        }
    }

    /// `sharing` for people in the room, if a screen is shared.
    fn sharing_message(&self) -> Option<ServerMessage> {
        let id = self.share?;
        let m = self.members.get(&id)?;
        Some(ServerMessage::Sharing {
            id: Some(m.owner.unwrap_or(id).to_string()),
            name: Some(m.info.name.clone()),
        })
    }

    /// A screen share joined: it replaces the room's share, if any (whose sharer is told),
    /// and the room shows it.
    fn start_share(&mut self, id: ParticipantId) {
        if let Some(old) = self.share.take() {
            let name = self.members.get(&id).map(|m| m.info.name.clone());
            if let Some(m) = self.members.remove(&old) {
                info!(share = %old, by = ?name, "screen share replaced");
                let _ = m.sink.events.send(ServerMessage::Error {
                    code: ErrorCode::Removed,
                    reason: format!(
                        "{} shares a screen now; one share at a time",
                        name.as_deref().unwrap_or("someone")
                    ),
                    fatal: true,
                });
                self.order.retain(|p| *p != old);
                self.input(Input::Leave { id: old });
            }
        }
        self.share = Some(id);
        info!(share = %id, "screen share started");
        self.input(Input::SetShare(Some(id)));
        if let Some(msg) = self.sharing_message() {
            self.broadcast(msg, None);
        }
    }

    /// Engine tiers in use: every tier some member receives.
    fn tiers_in_use(&self) -> HashSet<&str> {
        self.members
            .values()
            .filter_map(|m| m.options.receive_tier.as_deref())
            .collect()
    }

    /// The engine tier member `id` gets for config tier variant `base`: `base` drawn in its
    /// own layout, if it chose one and that costs no encode beyond
    /// `rooms.max_encodes_per_room`; otherwise `base` (and its choice is dropped, with a
    /// `layout_refused`).
    fn variant_for(&mut self, id: ParticipantId, base: Option<String>) -> Option<String> {
        let base = base?;
        let Some(layout) = self.members.get(&id).and_then(|m| m.layout.clone()) else {
            return Some(base);
        };
        let want = layout_variant(&base, &layout);
        let in_use = self.tiers_in_use();
        let mine = self
            .members
            .get(&id)
            .and_then(|m| m.options.receive_tier.as_deref());
        let receivers = |t: &str| {
            self.members
                .values()
                .filter(|m| m.options.receive_tier.as_deref() == Some(t))
                .count()
        };
        // The encodes that go on whatever this viewer does (its own tier stops if it was
        // the only one receiving it).
        let others = in_use
            .iter()
            .filter(|t| Some(**t) != mine || receivers(t) > 1)
            .count();
        let max = self.room().settings().max_encodes;
        if in_use.contains(want.as_str()) || others < max {
            return Some(want);
        }
        let reason =
            format!("the room runs {others} encodes already (rooms.max_encodes_per_room = {max})");
        info!(participant = %id, %layout, "layout choice refused: {reason}");
        let room_layout = self.layout_name.clone();
        if let Some(m) = self.members.get_mut(&id) {
            m.layout = None;
            let _ = m
                .sink
                .events
                .send(ServerMessage::LayoutRefused { layout, reason });
            let _ = m.sink.events.send(ServerMessage::LayoutChanged {
                layout: room_layout,
            });
        }
        Some(base)
    }

    /// A viewer chose a layout of its own, or the room's again.
    fn choose_layout(&mut self, id: ParticipantId, choice: Option<(String, LayoutSpec)>) {
        let Some(m) = self.members.get(&id) else {
            return;
        };
        let current = m.options.receive_tier.clone();
        let base = current.as_deref().map(base_of_variant);
        if let Some((name, spec)) = &choice {
            if !self.variant_layouts.contains_key(name) {
                let variants = layout_variants(&self.room().settings().tiers, name, spec);
                self.variant_layouts.insert(name.clone(), spec.clone());
                self.input(Input::AddTiers(variants));
            }
        }
        if let Some(m) = self.members.get_mut(&id) {
            m.layout = choice.as_ref().map(|(n, _)| n.clone());
        }
        let tier = self.variant_for(id, base);
        let room_layout = self.layout_name.clone();
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        // A refused choice was answered by `variant_for`.
        if m.layout.is_some() || choice.is_none() {
            let shown = m.layout.clone().unwrap_or(room_layout);
            info!(participant = %id, layout = %shown, "layout chosen by the viewer");
            let _ = m
                .sink
                .events
                .send(ServerMessage::LayoutChanged { layout: shown });
        }
        if tier != current && tier.is_some() {
            m.options.receive_tier = tier.clone();
            m.held = true;
            self.input(Input::SetReceiveTier { id, tier });
        }
    }

    /// Moves a receiver to the variant of config tier `tier` in its negotiated codec.
    fn set_tier(&mut self, id: ParticipantId, tier: &str) -> Result<String, String> {
        let m = self
            .members
            .get(&id)
            .ok_or("no such participant in this room")?;
        let codec = m
            .codec_out
            .ok_or("the participant does not receive video")?;
        let room = self.room();
        let name = room
            .settings()
            .tiers
            .iter()
            .find(|t| {
                t.codec == codec
                    && t.layout.is_none()
                    && (t.name == tier || t.name.split('~').next() == Some(tier))
            })
            .map(|t| t.name.clone())
            .ok_or_else(|| format!("unknown tier {tier:?}"))?;
        let name = self.variant_for(id, Some(name.clone())).unwrap_or(name);
        self.input(Input::SetReceiveTier {
            id,
            tier: Some(name.clone()),
        });
        if let Some(m) = self.members.get_mut(&id) {
            m.options.receive_tier = Some(name.clone());
            m.held = true;
        }
        info!(participant = %id, tier = %name, "tier set by an administrator");
        self.report_bandwidth(id, Instant::now());
        Ok(name)
    }

    /// The rungs a receiver of `codec` may get: the tiers of its codec within its caps
    /// (`max_tier`, the tier it asked for, its display size), plus audio only.
    fn ladder(&self, codec: VideoCodec, audio_only: bool, caps: &TierCaps) -> Vec<Rung> {
        let tiers = &self.room().settings().tiers;
        let base = |n: &str| n.split('~').next().unwrap_or(n).to_string();
        let bitrate_of = |name: &Option<String>| {
            name.as_ref().and_then(|n| {
                tiers
                    .iter()
                    .find(|t| t.name == *n || base(&t.name) == base(n))
                    .map(|t| t.bitrate_bps)
            })
        };
        let max_bps = [bitrate_of(&caps.max_tier), bitrate_of(&caps.requested)]
            .into_iter()
            .flatten()
            .min();
        let mut ours: Vec<_> = tiers
            .iter()
            .filter(|t| t.codec == codec && t.layout.is_none())
            .collect();
        ours.sort_by_key(|t| t.bitrate_bps);
        let smallest = ours.first().map(|t| t.name.clone());
        let mut ladder: Vec<Rung> = ours
            .iter()
            .filter(|t| {
                // A tier no bigger than the display shows (an eighth of slack for rounding).
                let shows = caps
                    .display
                    .is_none_or(|(w, h)| t.width <= w + w / 8 || t.height <= h + h / 8);
                let within = max_bps.is_none_or(|m| t.bitrate_bps <= m);
                Some(&t.name) == smallest.as_ref() || (shows && within)
            })
            .map(|t| Rung {
                tier: Some(t.name.clone()),
                bitrate_bps: t.bitrate_bps,
            })
            .collect();
        if audio_only {
            ladder.push(Rung {
                tier: None,
                bitrate_bps: 0,
            });
        }
        ladder
    }

    fn new_controller(
        &self,
        (cfg, audio_only, caps): &(BandwidthConfig, bool, TierCaps),
        codec: VideoCodec,
        now: Instant,
    ) -> BandwidthController {
        BandwidthController::new(cfg.clone(), self.ladder(codec, *audio_only, caps), now)
    }

    /// After a controller decided: follow a switch, hand a new probe to the writer.
    fn after_decision(
        &mut self,
        id: ParticipantId,
        probe_before: Option<Probe>,
        switched: Option<Rung>,
        now: Instant,
    ) {
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        if m.audio_only {
            return;
        }
        let probe = m.bandwidth.as_ref().and_then(|b| b.probe());
        if probe.is_none() && probe_before.is_some() {
            // Over (a climb, a failure or congestion): no more padding.
            debug!(participant = %id, switched = switched.is_some(), "probe over");
            let _ = m
                .sink
                .media
                .try_send(MediaOut::Probe { bps: 0, until: now });
        }
        if let Some(p) = probe.filter(|p| Some(*p) != probe_before) {
            debug!(participant = %id, bps = p.bps, "probing");
            let _ = m.sink.media.try_send(MediaOut::Probe {
                bps: p.bps,
                until: p.until,
            });
        }
        let Some(rung) = switched else {
            return;
        };
        let estimate = m.bandwidth.as_ref().map(|b| b.estimate(now));
        let tier = self.variant_for(id, rung.tier);
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        m.tier_switches += 1;
        m.held = true;
        m.options.receive_tier = tier.clone();
        info!(participant = %id, ?tier, ?estimate, "tier changed by the receiver's bandwidth");
        self.input(Input::SetReceiveTier { id, tier });
        self.report_bandwidth(id, now);
    }

    /// A receiver lost its picture: hold it until its tier's next keyframe, and ask for
    /// one unless that would cost the tier's other receivers a keyframe again so soon.
    fn lost_picture(&mut self, id: ParticipantId, now: Instant) {
        let interval = self.room().settings().receiver_keyframe_interval;
        let Some(tier) = self
            .members
            .get(&id)
            .and_then(|m| m.options.receive_tier.clone())
        else {
            return;
        };
        let shared = self.members.iter().any(|(o, m)| {
            *o != id && !m.held && m.options.receive_tier.as_deref() == Some(tier.as_str())
        });
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        m.held = true;
        let allowed = !shared || m.keyframe_due(now, interval);
        if allowed {
            m.last_forced_keyframe = Some(now);
            self.input(Input::RequestKeyframe { tier });
        } else {
            m.keyframe_requests_deferred += 1;
        }
    }

    /// `recording` for people in the room, if anything records or streams it.
    fn egress_message(&self) -> Option<ServerMessage> {
        let has = |kind: &str| self.members.values().any(|m| m.kind == kind);
        let (recording, streaming) = (has(RECORDER_KIND), has(STREAM_KIND));
        (recording || streaming).then_some(ServerMessage::Recording {
            recording,
            streaming,
        })
    }

    /// Tells everyone whether the room is recorded now (`stopped`: a recorder just left).
    fn announce_egress(&self, stopped: Option<bool>) {
        let msg = self
            .egress_message()
            .or(stopped.map(|_| ServerMessage::Recording {
                recording: false,
                streaming: false,
            }));
        if let Some(msg) = msg {
            for m in self.members.values().filter(|m| !is_egress(m.kind)) {
                let _ = m.sink.events.send(msg.clone());
            }
        }
    }

    /// Recordings need keyframes to seek and cannot ask for one: every tier a recorder
    /// receives gets one at least every `recording.keyframe_interval_secs`. Tiers without
    /// one keep their keyframes on demand, so recording costs other rooms nothing.
    fn egress_keyframes(&mut self, now: Instant) {
        let interval = self.room().settings().egress_keyframe_interval;
        let tiers: std::collections::HashSet<String> = self
            .members
            .values()
            .filter(|m| is_egress(m.kind))
            .filter_map(|m| m.options.receive_tier.clone())
            .collect();
        self.egress_keyframes.retain(|t, _| tiers.contains(t));
        for tier in tiers {
            let last = *self.egress_keyframes.entry(tier.clone()).or_insert(now);
            if now.saturating_duration_since(last) >= interval {
                self.egress_keyframes.insert(tier.clone(), now);
                self.input(Input::RequestKeyframe { tier });
            }
        }
    }

    fn set_audio_only(&mut self, id: ParticipantId, enabled: bool) {
        let now = Instant::now();
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        if m.audio_only == enabled || m.codec_out.is_none() {
            m.audio_only = enabled;
            self.report_bandwidth(id, now);
            return;
        }
        m.audio_only = enabled;
        let tier = if enabled {
            None
        } else {
            // Back on the ladder, from the start estimate.
            let (ladder, codec) = (m.ladder.clone(), m.codec_out);
            let controller = match (ladder, codec) {
                (Some(l), Some(c)) => Some(self.new_controller(&l, c, now)),
                _ => None,
            };
            let m = self.members.get_mut(&id).expect("checked above");
            if let Some(c) = controller {
                m.bandwidth = Some(c);
            }
            m.bandwidth
                .as_ref()
                .and_then(|b| b.current().tier.clone())
                .or_else(|| m.options.receive_tier.clone())
                .or_else(|| {
                    self.room()
                        .settings()
                        .tiers
                        .iter()
                        .find(|t| Some(t.codec) == codec && t.layout.is_none())
                        .map(|t| t.name.clone())
                })
                .map(|t| base_of_variant(&t))
        };
        let tier = self.variant_for(id, tier);
        info!(participant = %id, enabled, "audio only");
        if let Some(m) = self.members.get_mut(&id) {
            m.options.receive_tier = tier.clone();
            m.held = true;
        }
        self.input(Input::SetReceiveTier { id, tier });
        self.report_bandwidth(id, now);
    }

    /// Tells a WebSocket participant its tier and estimate.
    fn report_bandwidth(&mut self, id: ParticipantId, now: Instant) {
        let Some(m) = self.members.get_mut(&id).filter(|m| m.codec_out.is_some()) else {
            return;
        };
        let (estimate_bps, source) = match m.bandwidth.as_ref() {
            Some(b) => {
                let (e, s) = b.estimate(now);
                (Some(e), s.as_str())
            }
            None => (None, "none"),
        };
        m.last_bandwidth_msg = Some(now);
        let _ = m.sink.events.send(ServerMessage::Bandwidth {
            tier: m.options.receive_tier.clone(),
            estimate_bps,
            source: source.into(),
            audio_only: m.audio_only,
        });
    }

    /// Twice a second: probes that are due or over, held receivers whose keyframe can be
    /// asked for again, senders' hints, and everyone's tier and estimate now and then.
    fn periodic(&mut self, now: Instant) {
        let ids: Vec<ParticipantId> = self.members.keys().copied().collect();
        for id in &ids {
            let Some(m) = self.members.get_mut(id) else {
                continue;
            };
            if let Some(b) = m.bandwidth.as_mut().filter(|_| !m.audio_only) {
                let before = b.probe();
                let switched = b.decide(now);
                self.after_decision(*id, before, switched, now);
            }
        }
        let interval = self.room().settings().receiver_keyframe_interval;
        let retry: Vec<ParticipantId> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.held && m.options.receive_tier.is_some() && m.keyframe_due(now, interval)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in retry {
            self.lost_picture(id, now);
        }
        self.egress_keyframes(now);
        for id in ids {
            let due = self.members.get(&id).is_some_and(|m| {
                m.last_bandwidth_msg
                    .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(3))
            });
            if due {
                self.report_bandwidth(id, now);
            }
        }
        self.update_hints(now);
    }

    /// Each sender's largest tile on any composite in use; a changed one is sent as a
    /// `send_hint` (WebSocket clients) and as a REMB cap (every sender).
    fn update_hints(&mut self, now: Instant) {
        let settings = self.room().settings();
        if !settings.sender_hints {
            return;
        }
        let bpp = settings.hint_bits_per_pixel as f64;
        let share_fps = settings.share_fps;
        let in_use: HashSet<&str> = self
            .members
            .values()
            .filter_map(|m| m.options.receive_tier.as_deref())
            .collect();
        let letterbox = settings.compose.fit == tessera_compose::Fit::Letterbox;
        let share = self.room().share();
        // Per sender: its largest tile (w, h), the most fps, and the pixels of its picture
        // in that tile (a letterboxed picture fills less than its tile: a 16:9 camera in a
        // tall tile shows in about half of it, and its bitrate should follow).
        let mut best: HashMap<ParticipantId, (u32, u32, u32, u64)> = HashMap::new();
        for t in settings
            .tiers
            .iter()
            .filter(|t| in_use.contains(t.name.as_str()))
        {
            for (id, r) in self.room().tile_rects(&t.name) {
                let e = best.entry(id).or_insert((0, 0, 0, 0));
                if r.w * r.h > e.0 * e.1 {
                    let shown = match self.room().picture_size(id) {
                        Some((pw, ph)) if pw > 0 && ph > 0 && (letterbox || share == Some(id)) => {
                            let scale = (r.w as f64 / pw as f64).min(r.h as f64 / ph as f64);
                            (pw as f64 * scale * ph as f64 * scale) as u64
                        }
                        _ => r.w as u64 * r.h as u64,
                    };
                    (e.0, e.1, e.3) = (r.w, r.h, shown);
                }
                e.2 = e.2.max(t.fps);
            }
        }
        for (id, m) in self.members.iter_mut() {
            if !m.options.sends_video {
                continue;
            }
            // Links are seldom much faster up than down: a camera whose own downlink is
            // measured slow is asked for no more than 80% of it (in 50 kbit/s steps, so
            // the hint does not follow every wobble of the estimate).
            let link_cap = m
                .bandwidth
                .as_ref()
                .map(|b| b.estimate(now))
                .filter(|(_, src)| *src != tessera_engine::EstimateSource::Loss)
                .map(|(e, _)| ((e * 8 / 10) / 50_000 * 50_000).max(MIN_HINT_BPS as u64))
                .map_or(u32::MAX, |c| c.min(u32::MAX as u64) as u32);
            let screen = m.kind == SCREEN_KIND;
            let hint = match best.get(id) {
                Some(&(w, h, fps, shown)) => {
                    // A screen: its largest tile (at most 1080p) at a low frame rate, since
                    // text wants pixels, not motion.
                    let (w, h, fps, shown) = if screen {
                        let (mw, mh) = MAX_SHARE_PIXELS;
                        let scale = (mw as f64 / w as f64).min(mh as f64 / h as f64).min(1.0);
                        let (w, h) = ((w as f64 * scale) as u32, (h as f64 * scale) as u32);
                        (w, h, share_fps, shown as f64 * scale * scale)
                    } else {
                        (w, h, fps, shown as f64)
                    };
                    Hint {
                        width: w & !1,
                        height: h & !1,
                        fps,
                        max_bitrate_bps: ((shown * fps as f64 * bpp) as u32)
                            .clamp(MIN_HINT_BPS, MAX_HINT_BPS)
                            .min(link_cap),
                        on_canvas: true,
                    }
                }
                // On no canvas: almost nothing (after a grace period, since a new
                // participant's tile appears with the next composite).
                None if now.saturating_duration_since(m.joined_at) >= Duration::from_secs(2) => {
                    Hint {
                        width: 160,
                        height: 90,
                        fps: 5,
                        max_bitrate_bps: MIN_HINT_BPS,
                        on_canvas: false,
                    }
                }
                None => continue,
            };
            if m.last_hint == Some(hint) {
                continue;
            }
            debug!(participant = %id, ?hint, "send hint");
            m.last_hint = Some(hint);
            let _ = m.sink.media.try_send(MediaOut::Remb(hint.max_bitrate_bps));
            let _ = m.sink.events.send(ServerMessage::SendHint {
                kind: if screen { "screen" } else { "camera" }.into(),
                width: hint.width,
                height: hint.height,
                fps: hint.fps,
                max_bitrate_bps: hint.max_bitrate_bps,
                on_canvas: hint.on_canvas,
            });
        }
    }

    /// The tier a snapshot shows: the most-watched one.
    fn snapshot_tier(&self) -> Option<String> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some(t) = &m.options.receive_tier {
                *counts.entry(t.as_str()).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .max_by_key(|(name, n)| (*n, std::cmp::Reverse(*name)))
            .map(|(t, _)| t.to_string())
    }

    fn route(&mut self) {
        while let Some(out) = self.room_mut().poll_output() {
            match out {
                Output::Video { tier, frame } => {
                    let now = Instant::now();
                    for m in self.members.values_mut() {
                        if let (true, Some(at)) = (m.latency_pending, m.last_video_at) {
                            m.latency_pending = false;
                            self.latency.record(now.duration_since(at).as_secs_f64());
                        }
                    }
                    let fps = self
                        .room()
                        .settings()
                        .tiers
                        .iter()
                        .find(|t| t.name == tier)
                        .map_or(25, |t| t.fps);
                    let mut lost = Vec::new();
                    for (id, m) in self.members.iter_mut() {
                        if m.options.receive_tier.as_deref() != Some(tier.as_str()) {
                            continue;
                        }
                        // A held receiver cannot use deltas: it waits for a keyframe.
                        if m.held && !frame.keyframe {
                            m.held_frames_dropped += 1;
                            continue;
                        }
                        match m.sink.media.try_send(MediaOut::Video(frame.clone(), fps)) {
                            Ok(()) => m.held = false,
                            Err(_) => {
                                m.media_dropped += 1;
                                lost.push(*id);
                            }
                        }
                    }
                    // A receiver that missed a frame is held until a keyframe repairs it.
                    for id in lost {
                        self.lost_picture(id, now);
                    }
                }
                Output::Audio {
                    listener,
                    packet,
                    pts_48k,
                } => match listener {
                    Listener::Participant(id) => {
                        if let Some(m) = self.members.get_mut(&id) {
                            if m.options.receives_audio
                                && m.sink
                                    .media
                                    .try_send(MediaOut::Audio(packet, pts_48k))
                                    .is_err()
                            {
                                m.media_dropped += 1;
                            }
                        }
                    }
                    Listener::FullMix => {
                        for m in self.members.values_mut() {
                            if m.options.receives_audio
                                && !m.options.sends_audio
                                && m.sink
                                    .media
                                    .try_send(MediaOut::Audio(packet.clone(), pts_48k))
                                    .is_err()
                            {
                                m.media_dropped += 1;
                            }
                        }
                    }
                },
                Output::KeyframeNeeded { participant } => {
                    if let Some(m) = self.members.get(&participant) {
                        debug!(%participant, "asking the sender for a keyframe");
                        let _ = m.sink.media.try_send(MediaOut::Pli);
                    }
                }
                Output::ActiveSpeakerChanged { participant } => {
                    self.broadcast(
                        ServerMessage::ActiveSpeaker {
                            id: participant.map(|p| p.to_string()),
                        },
                        None,
                    );
                }
            }
        }
    }

    fn update_rates(&mut self, now: Instant) {
        let room = self.room.as_ref().expect("room is running");
        for (id, m) in self.members.iter_mut() {
            if let Some(s) = room.participant_stats(*id) {
                m.rate.update(now, s.video_frames, s.video_bytes);
            }
        }
        for t in &room.settings().tiers {
            if let Some(s) = room.tier_stats(&t.name) {
                self.tier_rates.entry(t.name.clone()).or_default().update(
                    now,
                    s.frames_encoded,
                    s.bytes,
                );
            }
        }
    }

    fn info(&self) -> RoomInfo {
        let room = self.room();
        let participants = self
            .order
            .iter()
            .filter_map(|id| self.members.get(id).map(|m| (id, m)))
            .filter(|(_, m)| !is_egress(m.kind))
            .map(|(id, m)| {
                let s = room.participant_stats(*id).cloned().unwrap_or_default();
                ParticipantReport {
                    id: id.to_string(),
                    name: m.info.name.clone(),
                    kind: m.kind,
                    layout: m.layout.clone(),
                    codec_in: m.codec_in.map(|c| c.to_string()),
                    codec_out: m.codec_out.map(|c| c.to_string()),
                    tier: m.options.receive_tier.clone(),
                    audio_muted: m.info.audio_muted,
                    video_muted: m.info.video_muted,
                    video_fps_in: m.rate.fps,
                    video_kbps_in: m.rate.kbps,
                    video_frames_in: s.video_frames,
                    video_decode_errors: s.video_decode_errors,
                    audio_packets_in: s.audio_packets,
                    audio_decode_errors: s.audio_decode_errors,
                    keyframe_requests: s.keyframe_requests,
                    media_dropped: m.media_dropped,
                    net: m.net,
                    feedback_reports: m.feedback_reports,
                    tier_switches: m.tier_switches,
                    report_loss: m.report_loss,
                    report_jitter_ms: m.report_jitter_ms,
                    estimate_bps: m.bandwidth.as_ref().map(|b| b.estimate(Instant::now()).0),
                    estimate_source: m
                        .bandwidth
                        .as_ref()
                        .map(|b| b.estimate(Instant::now()).1.as_str()),
                    audio_only: m.audio_only,
                    probes: m.bandwidth.as_ref().map_or((0, 0), |b| b.probe_counts()),
                    held: m.held,
                    held_frames_dropped: m.held_frames_dropped,
                    keyframe_requests_deferred: m.keyframe_requests_deferred,
                    send_hint: m.last_hint,
                }
            })
            .collect();
        let tiers = room
            .settings()
            .tiers
            .iter()
            .filter_map(|t| {
                let receivers = self
                    .members
                    .values()
                    .filter(|m| m.options.receive_tier.as_deref() == Some(t.name.as_str()))
                    .count();
                let s = room.tier_stats(&t.name)?;
                if receivers == 0 && s.frames_composed == 0 {
                    return None;
                }
                let rate = self.tier_rates.get(&t.name).copied().unwrap_or_default();
                Some(TierReport {
                    name: t.name.clone(),
                    codec: t.codec.to_string(),
                    width: t.width,
                    height: t.height,
                    receivers,
                    fps_out: rate.fps,
                    kbps_out: rate.kbps,
                    frames_encoded: s.frames_encoded,
                    keyframes: s.keyframes,
                    late_ticks: s.late_ticks,
                    compose_secs: s.compose_ns as f64 / 1e9,
                    encode_secs: s.encode_ns as f64 / 1e9,
                    tiles: room
                        .tile_rects(&t.name)
                        .into_iter()
                        .map(|(id, r)| TileReport {
                            id: id.to_string(),
                            x: r.x,
                            y: r.y,
                            w: r.w,
                            h: r.h,
                        })
                        .collect(),
                })
            })
            .collect();
        let stats = room.stats();
        RoomInfo {
            room: self.name.clone(),
            layout: self.layout_name.clone(),
            uptime_secs: self.started.elapsed().as_secs(),
            participants,
            tiers,
            audio_ticks: stats.audio_ticks,
            audio_ticks_skipped: stats.audio_ticks_skipped,
            active_speaker: room.active_speaker().map(|p| p.to_string()),
            sharing: self.share.and_then(|s| {
                self.members
                    .get(&s)
                    .map(|m| m.owner.unwrap_or(s).to_string())
            }),
            commands_dropped: self.dropped.load(Ordering::Relaxed),
            busy_secs: self.busy.as_secs_f64(),
            mix_latency: self.latency.clone(),
        }
    }
}

impl Drop for RoomThread {
    fn drop(&mut self) {
        if !self.members.is_empty() {
            warn!(
                participants = self.members.len(),
                "room ended with participants in it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RoomSettings {
        let cfg = tessera_config::Config::embedded();
        let assets = tessera_engine::Assets::load(&cfg).unwrap();
        RoomSettings::from_config(&cfg, "grid", &assets).unwrap()
    }

    fn sink() -> (Sink, tmpsc::UnboundedReceiver<ServerMessage>) {
        let (media, _) = crate::media::MediaTx::channel(4);
        let (events, rx) = tmpsc::unbounded_channel();
        (Sink { media, events }, rx)
    }

    fn join(room: &RoomHandle, id: u64, sink: Sink) {
        assert!(room.send(Command::Join(Box::new(JoinRequest {
            id: ParticipantId(id),
            name: format!("P{id}"),
            kind: "test",
            owner: None,
            options: JoinOptions {
                sends_video: false,
                sends_audio: true,
                receive_tier: None,
                receives_audio: true,
            },
            codec_out: None,
            bandwidth: None,
            caps: TierCaps::default(),
            sink,
        }))));
    }

    async fn tier_of(room: &RoomHandle, id: &str) -> Option<String> {
        let info = room.ask(|reply| Command::Info { reply }).await.unwrap();
        info.participants
            .iter()
            .find(|p| p.id == id)
            .unwrap()
            .tier
            .clone()
    }

    fn receiver(id: u64, media: crate::media::MediaTx) -> Command {
        let (events, _) = tmpsc::unbounded_channel();
        Command::Join(Box::new(JoinRequest {
            id: ParticipantId(id),
            name: format!("R{id}"),
            kind: "test",
            owner: None,
            options: JoinOptions {
                sends_video: false,
                sends_audio: true,
                receive_tier: Some("low".into()),
                receives_audio: true,
            },
            codec_out: Some(VideoCodec::Vp8),
            bandwidth: None,
            caps: TierCaps::default(),
            sink: Sink { media, events },
        }))
    }

    fn screen(id: u64, name: &str, owner: Option<u64>, sink: Sink) -> Command {
        Command::Join(Box::new(JoinRequest {
            id: ParticipantId(id),
            name: name.into(),
            kind: SCREEN_KIND,
            owner: owner.map(ParticipantId),
            options: JoinOptions {
                sends_video: true,
                sends_audio: true,
                receive_tier: None,
                receives_audio: false,
            },
            codec_out: None,
            bandwidth: None,
            caps: TierCaps::default(),
            sink,
        }))
    }

    /// The next `sharing` message in `rx`, skipping others, within 5 s.
    async fn next_sharing(
        rx: &mut tmpsc::UnboundedReceiver<ServerMessage>,
    ) -> (Option<String>, Option<String>) {
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(ServerMessage::Sharing { id, name })) => return (id, name),
                Ok(Some(_)) => {}
                other => panic!("no sharing message: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn one_share_at_a_time_a_new_one_replaces_the_old_and_everyone_is_told() {
        let room = spawn("share", "grid".into(), settings()).unwrap();
        let (ann, mut ann_rx) = sink();
        let (bo, mut bo_rx) = sink();
        join(&room, 1, ann);
        join(&room, 2, bo);
        // P1's share, found by its name.
        let (share1, mut share1_rx) = sink();
        assert!(room.send(screen(11, "P1", None, share1)));
        let p1 = ParticipantId(1).to_string();
        assert_eq!(
            next_sharing(&mut bo_rx).await,
            (Some(p1.clone()), Some("P1".into()))
        );
        assert_eq!(next_sharing(&mut ann_rx).await.0, Some(p1.clone()));
        let info = room.ask(|reply| Command::Info { reply }).await.unwrap();
        assert_eq!(info.sharing, Some(p1));
        let (list, _) = room.ask(|reply| Command::List { reply }).await.unwrap();
        assert_eq!(
            list.len(),
            2,
            "a share is not listed as a participant: {list:?}"
        );
        // P2 shares: P1's share is removed (and told), everyone hears of P2's.
        let (share2, _share2_rx) = sink();
        assert!(room.send(screen(12, "P2", Some(2), share2)));
        let p2 = ParticipantId(2).to_string();
        assert_eq!(next_sharing(&mut ann_rx).await.0, Some(p2.clone()));
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(until, share1_rx.recv()).await {
                Ok(Some(ServerMessage::Error {
                    code: ErrorCode::Removed,
                    fatal: true,
                    reason,
                })) => {
                    assert!(reason.contains("P2 shares a screen now"), "{reason}");
                    break;
                }
                Ok(Some(_)) => {}
                other => panic!("the replaced share was not told: {other:?}"),
            }
        }
        let info = room.ask(|reply| Command::Info { reply }).await.unwrap();
        let kinds: Vec<&str> = info.participants.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, ["test", "test", SCREEN_KIND], "{kinds:?}");
        // The share ends: nobody shares.
        room.send(Command::Leave {
            id: ParticipantId(12),
        });
        assert_eq!(
            next_sharing(&mut bo_rx).await,
            (Some(p2), Some("P2".into()))
        );
        assert_eq!(next_sharing(&mut bo_rx).await, (None, None));
        room.send(Command::Stop);
    }

    /// How a second receiver of the healthy one's tier misbehaves.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Other {
        Absent,
        /// Never reads its queue.
        Stalled,
        /// Reads everything but sends a keyframe request every 100 ms.
        Lossy,
    }

    /// Runs a room for `secs` with a healthy receiver (and `other`), returning the healthy
    /// receiver's (frames, keyframes) and the room's info at the end.
    async fn run_receivers(name: &str, other: Other, secs: u64) -> ((u32, u32), RoomInfo) {
        let room = spawn(name, "grid".into(), settings()).unwrap();
        let (tx, mut rx) = crate::media::MediaTx::channel(160);
        assert!(room.send(receiver(2, tx)));
        let (other_tx, mut other_rx) = crate::media::MediaTx::channel(4);
        if other != Other::Absent {
            assert!(room.send(receiver(1, other_tx)));
        }
        let until = tokio::time::Instant::now() + Duration::from_secs(secs);
        if other == Other::Lossy {
            let room = room.clone();
            tokio::spawn(async move {
                while tokio::time::Instant::now() < until {
                    while other_rx.try_recv().is_ok() {}
                    room.send(Command::ReceiverKeyframe {
                        id: ParticipantId(1),
                    });
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
        let (mut frames, mut keyframes) = (0u32, 0u32);
        while let Ok(Some((_, m))) = tokio::time::timeout_at(until, rx.recv()).await {
            if let MediaOut::Video(v, _) = m {
                frames += 1;
                keyframes += v.keyframe as u32;
            }
        }
        let info = room.ask(|reply| Command::Info { reply }).await.unwrap();
        room.send(Command::Stop);
        ((frames, keyframes), info)
    }

    #[tokio::test]
    async fn a_stalled_or_lossy_receiver_costs_the_others_at_most_one_keyframe() {
        // Side by side: the same 8 s without the other receiver, with it stalled, and with
        // it asking for keyframes ten times a second.
        let (alone, stalled, lossy) = tokio::join!(
            run_receivers("alone", Other::Absent, 8),
            run_receivers("stalled", Other::Stalled, 8),
            run_receivers("lossy", Other::Lossy, 8),
        );
        let ((_, base), _) = alone;
        for (what, ((frames, keyframes), info)) in [("stalled", stalled), ("lossy", lossy)] {
            let p = |id: &str| info.participants.iter().find(|p| p.id == id).unwrap();
            // The low tier runs at 15 fps: the healthy reader got (nearly) all of 8 s.
            assert!(frames >= 100, "{what}: {frames} frames in 8 s");
            assert!(
                keyframes <= base + 1,
                "{what}: the healthy receiver got {keyframes} keyframes, {base} without it"
            );
            assert_eq!(p("p2").media_dropped, 0, "{what}");
            assert!(p("p1").keyframe_requests_deferred + p("p1").held_frames_dropped > 0);
        }
    }

    #[tokio::test]
    async fn a_new_receiver_whose_first_keyframe_was_lost_gets_another_within_seconds() {
        // A healthy receiver shares the tier, so keyframe requests are rate-limited. The new
        // one connects, receives its keyframe, and (as if the keyframe never arrived) keeps
        // asking for one: it must not wait `receiver_keyframe_interval` (10 s).
        let room = spawn("new-receiver", "grid".into(), settings()).unwrap();
        let (healthy_tx, mut healthy_rx) = crate::media::MediaTx::channel(160);
        assert!(room.send(receiver(2, healthy_tx)));
        tokio::spawn(async move { while healthy_rx.recv().await.is_some() {} });
        let (tx, mut rx) = crate::media::MediaTx::channel(160);
        assert!(room.send(receiver(1, tx)));
        // It connects just after its tier's keyframe (the one its join caused).
        let joined_keyframe = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some((_, m)) = rx.recv().await {
                if matches!(m, MediaOut::Video(ref v, _) if v.keyframe) {
                    return;
                }
            }
        })
        .await;
        assert!(joined_keyframe.is_ok(), "no keyframe after joining");
        assert!(room.send(Command::ReceiverConnected {
            id: ParticipantId(1)
        }));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut keyframes = 0u32;
        let mut next_pli = tokio::time::Instant::now();
        while keyframes < 3 {
            let m = tokio::time::timeout_at(next_pli.min(deadline), rx.recv()).await;
            assert!(
                tokio::time::Instant::now() < deadline,
                "{keyframes} keyframes in 5 s after connecting"
            );
            if let Ok(Some((_, MediaOut::Video(v, _)))) = m {
                keyframes += v.keyframe as u32;
            }
            if tokio::time::Instant::now() >= next_pli {
                room.send(Command::ReceiverKeyframe {
                    id: ParticipantId(1),
                });
                next_pli += Duration::from_millis(100);
            }
        }
        room.send(Command::Stop);
    }

    #[tokio::test]
    async fn the_bandwidth_estimate_moves_a_receiver_down_to_audio_only_and_back_up() {
        let room = spawn("bw", "grid".into(), settings()).unwrap();
        let (sink, mut events) = sink();
        let cfg = tessera_engine::BandwidthConfig {
            start_bps: 3_000_000,
            // Switch on the first report that calls for it: the controller's own tests
            // cover the timing.
            down_after: Duration::ZERO,
            startup_grace: Duration::ZERO,
            ..Default::default()
        };
        assert!(room.send(Command::Join(Box::new(JoinRequest {
            id: ParticipantId(1),
            name: "Ann".into(),
            kind: "test",
            owner: None,
            options: JoinOptions {
                sends_video: false,
                sends_audio: true,
                receive_tier: Some("default".into()),
                receives_audio: true,
            },
            codec_out: Some(VideoCodec::Vp8),
            bandwidth: Some((cfg, true)),
            caps: TierCaps::default(),
            sink,
        }))));
        let feedback = |bps: u64| Command::Feedback {
            id: ParticipantId(1),
            feedback: Feedback {
                twcc_bps: Some(bps),
                loss: Some(0.0),
                ..Default::default()
            },
            jitter_ms: None,
        };
        // Control (Info) overtakes media (Feedback): wait for each switch.
        let wait_tier = |want: Option<&'static str>| {
            let room = room.clone();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                loop {
                    let got = tier_of(&room, "p1").await;
                    if got.as_deref() == want {
                        return;
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "tier {got:?}, want {want:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        wait_tier(Some("default")).await;
        // The link drops to 300 kbit/s: straight to the tier that fits.
        room.send(feedback(300_000));
        wait_tier(Some("tiny")).await;
        // Audio only below the lowest tier.
        room.send(feedback(60_000));
        wait_tier(None).await;
        // It recovers (the estimate has the evidence): up one rung per report.
        for want in ["tiny", "low", "default"] {
            room.send(feedback(3_000_000));
            wait_tier(Some(want)).await;
        }
        let info = room.ask(|reply| Command::Info { reply }).await.unwrap();
        assert_eq!(info.participants[0].tier_switches, 5);
        assert_eq!(info.participants[0].estimate_source, Some("twcc"));
        // The client was told each tier.
        let mut told = Vec::new();
        while let Ok(m) = events.try_recv() {
            if let ServerMessage::Bandwidth { tier, .. } = m {
                told.push(tier);
            }
        }
        assert!(
            told.contains(&None) && told.contains(&Some("tiny".into())),
            "{told:?}"
        );
        room.send(Command::Stop);
    }

    #[tokio::test]
    async fn caps_keep_a_receiver_below_its_display_and_the_room_maximum() {
        let room = spawn("caps", "grid".into(), settings()).unwrap();
        let join = |id: u64, caps: TierCaps| {
            let (sink, _events) = sink();
            Command::Join(Box::new(JoinRequest {
                id: ParticipantId(id),
                name: format!("C{id}"),
                kind: "test",
                owner: None,
                options: JoinOptions {
                    sends_video: false,
                    sends_audio: true,
                    receive_tier: Some("default".into()),
                    receives_audio: true,
                },
                codec_out: Some(VideoCodec::Vp8),
                bandwidth: Some((
                    tessera_engine::BandwidthConfig {
                        start_bps: 10_000_000,
                        ..Default::default()
                    },
                    true,
                )),
                caps,
                sink,
            }))
        };
        room.send(join(1, TierCaps::default()));
        room.send(join(
            2,
            TierCaps {
                display: Some((640, 360)),
                ..Default::default()
            },
        ));
        room.send(join(
            3,
            TierCaps {
                max_tier: Some("tiny".into()),
                ..Default::default()
            },
        ));
        room.send(join(
            4,
            TierCaps {
                display: Some((100, 50)),
                ..Default::default()
            },
        ));
        assert_eq!(tier_of(&room, "p1").await.as_deref(), Some("default"));
        assert_eq!(tier_of(&room, "p2").await.as_deref(), Some("low"));
        assert_eq!(tier_of(&room, "p3").await.as_deref(), Some("tiny"));
        assert_eq!(
            tier_of(&room, "p4").await.as_deref(),
            Some("tiny"),
            "the smallest tier whatever the display"
        );
        room.send(Command::Stop);
    }

    #[tokio::test]
    async fn a_newcomer_hears_of_everyone_already_in_the_room() {
        let room = spawn("newcomer", "grid".into(), settings()).unwrap();
        let (s1, _e1) = sink();
        let (s2, mut e2) = sink();
        join(&room, 1, s1);
        join(&room, 2, s2);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, e2.recv()).await {
                Ok(Some(ServerMessage::ParticipantUpdated { participant })) => {
                    assert_eq!(participant.id, "p1");
                    break;
                }
                Ok(Some(_)) => {}
                other => panic!("p2 never heard of p1: {other:?}"),
            }
        }
        room.send(Command::Stop);
    }

    #[tokio::test]
    async fn a_leave_sent_while_the_media_queue_is_full_still_removes_the_participant() {
        let room = spawn("full", "grid".into(), settings()).unwrap();
        let (s1, _e1) = sink();
        let (s2, _e2) = sink();
        join(&room, 1, s1);
        join(&room, 2, s2);
        assert!(room.send(Command::Stall(Duration::from_millis(500))));
        // Media until the queue refuses it: the room is stalled.
        let mut refused = false;
        for _ in 0..COMMAND_QUEUE * 2 {
            if !room.send(Command::Audio {
                id: ParticipantId(1),
                packet: vec![0xf8, 0xff, 0xfe],
            }) {
                refused = true;
                break;
            }
        }
        assert!(refused, "the media queue fills while the room is stalled");
        assert!(room.send(Command::Leave {
            id: ParticipantId(1)
        }));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (list, _) = room.ask(|reply| Command::List { reply }).await.unwrap();
            if list.iter().all(|p| p.id != "p1") {
                assert!(
                    list.iter().any(|p| p.id == "p2"),
                    "the other stays: {list:?}"
                );
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "p1 never left: {list:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let info = room.ask(|reply| Command::Info { reply }).await.unwrap();
        assert!(info.commands_dropped > 0, "the shed media is counted");
        room.send(Command::Stop);
    }

    #[tokio::test]
    async fn a_panicking_room_ends_alone_and_tells_its_participants() {
        let a = spawn("a", "grid".into(), settings()).unwrap();
        let b = spawn("b", "grid".into(), settings()).unwrap();
        let (sa, mut ea) = sink();
        let (sb, _eb) = sink();
        join(&a, 1, sa);
        join(&b, 2, sb);
        assert!(a.send(Command::Crash));

        let fatal = tokio::time::timeout(Duration::from_secs(5), ea.recv())
            .await
            .unwrap();
        assert!(
            matches!(
                fatal,
                Some(ServerMessage::Error {
                    fatal: true,
                    code: ErrorCode::Internal,
                    ..
                })
            ),
            "{fatal:?}"
        );
        for _ in 0..50 {
            if !a.is_alive() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!a.is_alive(), "the crashed room is marked dead");
        let info = b
            .ask(|reply| Command::Info { reply })
            .await
            .expect("the other room answers");
        assert_eq!(info.participants.len(), 1);
        assert!(b.is_alive());
        b.send(Command::Stop);
    }
}
