//! What a room tells about itself: the admin API's report, rates, the mix-latency
//! histogram, and each receiver's tier and estimate.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use tessera_proto::ServerMessage;
use tessera_types::ParticipantId;

use super::{MemberKind, NetStats, RoomThread};

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
    pub kind: MemberKind,
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
    /// `TIER` or `TIER@LAYOUT`: with `codec`, tells the room's encodes apart.
    pub name: String,
    /// The config tier (`[tiers.TIER]`).
    pub tier: String,
    pub codec: String,
    /// The layout viewers chose for it (`None`: the room's).
    pub layout: Option<String>,
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
    pub(super) fn record(&mut self, secs: f64) {
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
pub(super) struct Rate {
    pub(super) at: Option<Instant>,
    pub(super) frames: u64,
    pub(super) bytes: u64,
    pub(super) fps: f64,
    pub(super) kbps: f64,
}

impl Rate {
    pub(super) fn update(&mut self, now: Instant, frames: u64, bytes: u64) {
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

impl RoomThread {
    /// Tells a WebSocket participant its tier and estimate.
    pub(super) fn report_bandwidth(&mut self, id: ParticipantId, now: Instant) {
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
            tier: m.options.receive_tier.as_ref().map(|t| t.to_string()),
            estimate_bps,
            source: source.into(),
            audio_only: m.audio_only,
        });
    }

    pub(super) fn update_rates(&mut self, now: Instant) {
        let room = self.room.as_ref().expect("room is running");
        for (id, m) in self.members.iter_mut() {
            if let Some(s) = room.participant_stats(*id) {
                m.rate.update(now, s.video_frames, s.video_bytes);
            }
        }
        for t in &room.settings().tiers {
            if let Some(s) = room.tier_stats(&t.id) {
                self.tier_rates.entry(t.id.clone()).or_default().update(
                    now,
                    s.frames_encoded,
                    s.bytes,
                );
            }
        }
    }

    pub(super) fn info(&self) -> RoomInfo {
        let room = self.room();
        let participants = self
            .order
            .iter()
            .filter_map(|id| self.members.get(id).map(|m| (id, m)))
            .filter(|(_, m)| !m.kind.is_egress())
            .map(|(id, m)| {
                let s = room.participant_stats(*id).cloned().unwrap_or_default();
                ParticipantReport {
                    id: id.to_string(),
                    name: m.info.name.clone(),
                    kind: m.kind,
                    layout: m.layout.clone(),
                    codec_in: m.codec_in.map(|c| c.to_string()),
                    codec_out: m.codec_out.map(|c| c.to_string()),
                    tier: m.options.receive_tier.as_ref().map(|t| t.to_string()),
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
                    .filter(|m| m.options.receive_tier.as_ref() == Some(&t.id))
                    .count();
                let s = room.tier_stats(&t.id)?;
                if receivers == 0 && s.frames_composed == 0 {
                    return None;
                }
                let rate = self.tier_rates.get(&t.id).copied().unwrap_or_default();
                Some(TierReport {
                    name: t.id.to_string(),
                    tier: t.id.name.to_string(),
                    codec: t.id.codec.to_string(),
                    layout: t.id.layout.as_ref().map(|l| l.to_string()),
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
                        .tile_rects(&t.id)
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
