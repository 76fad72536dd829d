//! The room thread: its state, its loop (commands, the engine's clock, periodic work) and
//! how it starts and ends.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_engine::{
    BandwidthConfig, BandwidthController, Input, JoinOptions, LayoutSpec, Room, RoomSettings,
    TierId,
};
use tessera_proto::{ErrorCode, ParticipantInfo, ServerMessage};
use tessera_types::{ParticipantId, VideoCodec};
use tracing::{error, info, info_span, warn};

use super::reports::Rate;
use super::{
    Command, Hint, LatencyHistogram, MemberKind, NetStats, RoomHandle, Sink, TierCaps,
    COMMAND_QUEUE,
};

/// How often receivers' probes, held receivers and senders' hints are looked at.
const PERIODIC: Duration = Duration::from_millis(500);

/// For this long after its connection comes up, a receiver that has no picture yet (its
/// first keyframe was lost, or arrived before the far end could decrypt it) gets a keyframe
/// on request once per [`NEW_RECEIVER_KEYFRAME_INTERVAL`], however its tier is shared.
const NEW_RECEIVER_GRACE: Duration = Duration::from_secs(10);
const NEW_RECEIVER_KEYFRAME_INTERVAL: Duration = Duration::from_secs(1);

pub(super) struct Member {
    pub(super) info: ParticipantInfo,
    pub(super) kind: MemberKind,
    /// A screen share's participant.
    pub(super) owner: Option<ParticipantId>,
    /// The layout this viewer chose, if not the room's.
    pub(super) layout: Option<String>,
    pub(super) options: JoinOptions,
    pub(super) codec_in: Option<VideoCodec>,
    pub(super) codec_out: Option<VideoCodec>,
    pub(super) sink: Sink,
    pub(super) media_dropped: u64,
    pub(super) net: NetStats,
    pub(super) rate: Rate,
    pub(super) bandwidth: Option<BandwidthController>,
    /// The ladder's settings and caps, to rebuild it (after "audio only" is turned off).
    pub(super) ladder: Option<(BandwidthConfig, bool, TierCaps)>,
    /// The participant asked for audio only.
    pub(super) audio_only: bool,
    /// Lost its picture (PLI/FIR, or its queue overflowed): delta frames are dropped until
    /// its tier's next keyframe.
    pub(super) held: bool,
    /// When this receiver last forced its tier to make a keyframe.
    pub(super) last_forced_keyframe: Option<Instant>,
    /// When its connection last came up (see [`NEW_RECEIVER_GRACE`]).
    pub(super) connected_at: Option<Instant>,
    /// Delta frames not sent while held, and keyframe requests not passed on (the tier is
    /// shared and this receiver forced one recently).
    pub(super) held_frames_dropped: u64,
    pub(super) keyframe_requests_deferred: u64,
    pub(super) joined_at: Instant,
    pub(super) last_hint: Option<Hint>,
    /// When the participant was last told its tier and estimate.
    pub(super) last_bandwidth_msg: Option<Instant>,
    pub(super) feedback_reports: u64,
    pub(super) tier_switches: u64,
    /// When this participant's newest camera frame reached the room, and whether a
    /// composite has shown it yet (each frame is measured once).
    pub(super) last_video_at: Option<Instant>,
    pub(super) latency_pending: bool,
    /// The receiver's last report: fraction lost (0..1) and interarrival jitter (ms).
    pub(super) report_loss: Option<f32>,
    pub(super) report_jitter_ms: Option<f64>,
}

impl Member {
    pub(super) fn new(
        info: ParticipantInfo,
        kind: MemberKind,
        owner: Option<ParticipantId>,
        options: JoinOptions,
        codec_out: Option<VideoCodec>,
        sink: Sink,
        now: Instant,
    ) -> Member {
        Member {
            info,
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
            bandwidth: None,
            ladder: None,
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
        }
    }

    /// Moves this receiver between tiers by its bandwidth (`[bandwidth]`).
    pub(super) fn with_bandwidth(
        mut self,
        controller: Option<BandwidthController>,
        ladder: Option<(BandwidthConfig, bool, TierCaps)>,
    ) -> Member {
        self.bandwidth = controller;
        self.ladder = ladder;
        self
    }

    /// Whether this receiver may force its tier to make a keyframe again: `interval` after
    /// its last one, or [`NEW_RECEIVER_KEYFRAME_INTERVAL`] in its first
    /// [`NEW_RECEIVER_GRACE`] after connecting. Without that, a receiver whose first
    /// keyframe was lost (sent before the far end could decrypt it, or dropped on the way)
    /// waited `interval` (10 s by default) for its first picture.
    pub(super) fn keyframe_due(&self, now: Instant, interval: Duration) -> bool {
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

pub(super) struct RoomThread {
    pub(super) name: String,
    pub(super) layout_name: String,
    pub(super) room: Option<Room>,
    pub(super) settings: Option<RoomSettings>,
    pub(super) members: HashMap<ParticipantId, Member>,
    pub(super) order: Vec<ParticipantId>,
    pub(super) tier_rates: HashMap<TierId, Rate>,
    pub(super) started: Instant,
    pub(super) dropped: Arc<AtomicU64>,
    pub(super) busy: Duration,
    /// A layout an admin chose; config reloads keep it while it exists.
    pub(super) admin_layout: Option<String>,
    pub(super) latency: LatencyHistogram,
    /// When each tier with a recording last got its periodic keyframe.
    pub(super) egress_keyframes: HashMap<TierId, Instant>,
    /// The member that is the room's shared screen.
    pub(super) share: Option<ParticipantId>,
    /// Layouts viewers chose, for which the room has tier variants.
    pub(super) variant_layouts: HashMap<String, LayoutSpec>,
}

impl RoomThread {
    /// Takes every waiting control command; false when the room should stop.
    pub(super) fn take_control(&mut self, control: &mpsc::Receiver<Command>) -> bool {
        while let Ok(cmd) = control.try_recv() {
            if !self.handle(cmd) {
                return false;
            }
        }
        true
    }

    pub(super) fn run(&mut self, control: &mpsc::Receiver<Command>, rx: &mpsc::Receiver<Command>) {
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

    pub(super) fn room(&self) -> &Room {
        self.room.as_ref().expect("room is running")
    }

    pub(super) fn room_mut(&mut self) -> &mut Room {
        self.room.as_mut().expect("room is running")
    }

    pub(super) fn input(&mut self, input: Input) {
        let now = Instant::now();
        self.room_mut().handle_input(input, now);
    }

    pub(super) fn broadcast(&self, msg: ServerMessage, except: Option<ParticipantId>) {
        for (id, m) in &self.members {
            if Some(*id) != except {
                let _ = m.sink.events.send(msg.clone());
            }
        }
    }
}

impl RoomThread {
    /// Twice a second: probes that are due or over, held receivers whose keyframe can be
    /// asked for again, senders' hints, and everyone's tier and estimate now and then.
    pub(super) fn periodic(&mut self, now: Instant) {
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
