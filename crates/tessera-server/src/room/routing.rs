//! Which tier each receiver gets (its layout, its bandwidth, an admin's choice), when a
//! tier makes a keyframe, and handing the engine's outputs to each member's queue.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use tessera_engine::{
    BandwidthConfig, BandwidthController, Input, LayoutSpec, Listener, Output, Probe, Rung, TierId,
    TierSettings,
};
use tessera_proto::ServerMessage;
use tessera_types::{ParticipantId, VideoCodec};
use tracing::{debug, info};

use super::{shown, AdminError, MediaOut, RoomThread, TierCaps};

/// A variant of each of `tiers` (those without a layout of their own) drawn in `layout`.
pub(super) fn layout_variants(
    tiers: &[TierSettings],
    name: &str,
    layout: &LayoutSpec,
) -> Vec<TierSettings> {
    tiers
        .iter()
        .filter(|t| t.layout.is_none())
        .map(|t| TierSettings {
            id: t.id.in_layout(name),
            layout: Some(layout.clone()),
            ..t.clone()
        })
        .collect()
}

impl RoomThread {
    /// Engine tiers in use: every tier some member receives.
    pub(super) fn tiers_in_use(&self) -> HashSet<&TierId> {
        self.members
            .values()
            .filter_map(|m| m.options.receive_tier.as_ref())
            .collect()
    }

    /// The engine tier member `id` gets for config tier variant `base`: `base` drawn in its
    /// own layout, if it chose one and that costs no encode beyond
    /// `rooms.max_encodes_per_room`; otherwise `base` (and its choice is dropped, with a
    /// `layout_refused`).
    pub(super) fn variant_for(
        &mut self,
        id: ParticipantId,
        base: Option<TierId>,
    ) -> Option<TierId> {
        let base = base?;
        let Some(layout) = self.members.get(&id).and_then(|m| m.layout.clone()) else {
            return Some(base);
        };
        let want = base.in_layout(&layout);
        let in_use = self.tiers_in_use();
        let mine = self
            .members
            .get(&id)
            .and_then(|m| m.options.receive_tier.as_ref());
        let receivers = |t: &TierId| {
            self.members
                .values()
                .filter(|m| m.options.receive_tier.as_ref() == Some(t))
                .count()
        };
        // The encodes that go on whatever this viewer does (its own tier stops if it was
        // the only one receiving it).
        let others = in_use
            .iter()
            .filter(|t| Some(**t) != mine || receivers(t) > 1)
            .count();
        let max = self.room().settings().max_encodes;
        if in_use.contains(&want) || others < max {
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
    pub(super) fn choose_layout(
        &mut self,
        id: ParticipantId,
        choice: Option<(String, LayoutSpec)>,
    ) {
        let Some(m) = self.members.get(&id) else {
            return;
        };
        let current = m.options.receive_tier.clone();
        let base = current.as_ref().map(TierId::without_layout);
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
    pub(super) fn set_tier(&mut self, id: ParticipantId, tier: &str) -> Result<String, AdminError> {
        let m = self.members.get(&id).ok_or(AdminError::NoSuchParticipant)?;
        let codec = m.codec_out.ok_or(AdminError::NoVideo)?;
        let room = self.room();
        let base = room
            .settings()
            .tiers
            .iter()
            .map(|t| &t.id)
            .find(|t| t.codec == codec && t.layout.is_none() && &*t.name == tier)
            .cloned()
            .ok_or_else(|| AdminError::UnknownTier(tier.to_string()))?;
        let id_tier = self.variant_for(id, Some(base.clone())).unwrap_or(base);
        self.input(Input::SetReceiveTier {
            id,
            tier: Some(id_tier.clone()),
        });
        if let Some(m) = self.members.get_mut(&id) {
            m.options.receive_tier = Some(id_tier.clone());
            m.held = true;
        }
        info!(participant = %id, tier = %id_tier, codec = %codec, "tier set by an administrator");
        self.report_bandwidth(id, Instant::now());
        Ok(id_tier.to_string())
    }

    /// The rungs a receiver of `codec` may get: the tiers of its codec within its caps
    /// (`max_tier`, the tier it asked for, its display size), plus audio only.
    pub(super) fn ladder(&self, codec: VideoCodec, audio_only: bool, caps: &TierCaps) -> Vec<Rung> {
        let tiers = &self.room().settings().tiers;
        let bitrate_of = |name: &Option<String>| {
            name.as_ref().and_then(|n| {
                tiers
                    .iter()
                    .find(|t| &*t.id.name == n)
                    .map(|t| t.bitrate_bps)
            })
        };
        let max_bps = [bitrate_of(&caps.max_tier), bitrate_of(&caps.requested)]
            .into_iter()
            .flatten()
            .min();
        let mut ours: Vec<_> = tiers
            .iter()
            .filter(|t| t.id.codec == codec && t.layout.is_none())
            .collect();
        ours.sort_by_key(|t| t.bitrate_bps);
        let smallest = ours.first().map(|t| t.id.clone());
        let mut ladder: Vec<Rung> = ours
            .iter()
            .filter(|t| {
                // A tier no bigger than the display shows (an eighth of slack for rounding).
                let shows = caps
                    .display
                    .is_none_or(|(w, h)| t.width <= w + w / 8 || t.height <= h + h / 8);
                let within = max_bps.is_none_or(|m| t.bitrate_bps <= m);
                Some(&t.id) == smallest.as_ref() || (shows && within)
            })
            .map(|t| Rung {
                tier: Some(t.id.clone()),
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

    pub(super) fn new_controller(
        &self,
        (cfg, audio_only, caps): &(BandwidthConfig, bool, TierCaps),
        codec: VideoCodec,
        now: Instant,
    ) -> BandwidthController {
        BandwidthController::new(cfg.clone(), self.ladder(codec, *audio_only, caps), now)
    }

    /// After a controller decided: follow a switch, hand a new probe to the writer.
    pub(super) fn after_decision(
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
        info!(participant = %id, tier = shown(tier.as_ref()), ?estimate, "tier changed by the receiver's bandwidth");
        self.input(Input::SetReceiveTier { id, tier });
        self.report_bandwidth(id, now);
    }

    /// A receiver lost its picture: hold it until its tier's next keyframe, and ask for
    /// one unless that would cost the tier's other receivers a keyframe again so soon.
    pub(super) fn lost_picture(&mut self, id: ParticipantId, now: Instant) {
        let interval = self.room().settings().receiver_keyframe_interval;
        let Some(tier) = self
            .members
            .get(&id)
            .and_then(|m| m.options.receive_tier.clone())
        else {
            return;
        };
        let shared = self
            .members
            .iter()
            .any(|(o, m)| *o != id && !m.held && m.options.receive_tier.as_ref() == Some(&tier));
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

    /// Recordings need keyframes to seek and cannot ask for one: every tier a recorder
    /// receives gets one at least every `recording.keyframe_interval_secs`. Tiers without
    /// one keep their keyframes on demand, so recording costs other rooms nothing.
    pub(super) fn egress_keyframes(&mut self, now: Instant) {
        let interval = self.room().settings().egress_keyframe_interval;
        let tiers: HashSet<TierId> = self
            .members
            .values()
            .filter(|m| m.kind.is_egress())
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

    pub(super) fn set_audio_only(&mut self, id: ParticipantId, enabled: bool) {
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
                        .find(|t| Some(t.id.codec) == codec && t.layout.is_none())
                        .map(|t| t.id.clone())
                })
                .map(|t| t.without_layout())
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

    /// The tier a snapshot shows: the most-watched one.
    pub(super) fn snapshot_tier(&self) -> Option<TierId> {
        let mut counts: HashMap<&TierId, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some(t) = &m.options.receive_tier {
                *counts.entry(t).or_default() += 1;
            }
        }
        // Ties go to the first tier in the room's settings, so the choice is stable.
        let tiers = &self.room().settings().tiers;
        let position = |t: &TierId| tiers.iter().position(|s| s.id == *t);
        counts
            .into_iter()
            .max_by_key(|(t, n)| (*n, std::cmp::Reverse(position(t))))
            .map(|(t, _)| t.clone())
    }

    pub(super) fn route(&mut self) {
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
                        .find(|t| t.id == tier)
                        .map_or(25, |t| t.fps);
                    let mut lost = Vec::new();
                    for (id, m) in self.members.iter_mut() {
                        if m.options.receive_tier.as_ref() != Some(&tier) {
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
}
