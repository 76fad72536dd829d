//! What each command does to the room: joins and leaves, media, feedback, mutes, screen
//! shares, layouts and admin actions.

use std::time::Instant;

use tessera_engine::{Feedback, Input, LayoutSpec, RoomSettings, TierSettings};
use tessera_proto::{ErrorCode, ParticipantInfo, ServerMessage};
use tessera_types::{ParticipantId, VideoCodec};
use tracing::{debug, info};

use super::routing::layout_variants;
use super::{shown, AdminError, Command, JoinRequest, Member, MemberKind, RoomThread};

impl RoomThread {
    /// Returns false when the room should stop.
    pub(super) fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Join(req) => self.join(*req),
            Command::Leave { id } => {
                if let Some(m) = self.members.remove(&id) {
                    info!(participant = %id, "left");
                    self.forget(id, &m);
                }
            }
            Command::Video { id, codec, data } => self.video(id, codec, data),
            Command::Audio { id, packet } => {
                if self.members.get(&id).is_some_and(|m| m.options.sends_audio) {
                    self.input(Input::Audio { id, packet });
                }
            }
            Command::Mute { id, audio, video } => self.mute(id, audio, video),
            Command::ReceiverKeyframe { id } => {
                debug!(participant = %id, "receiver asked for a keyframe");
                self.lost_picture(id, Instant::now());
            }
            Command::Feedback {
                id,
                feedback,
                jitter_ms,
            } => self.feedback(id, feedback, jitter_ms),
            Command::AudioLoss { id, loss_pct } => {
                if let Some(b) = self.members.get_mut(&id).and_then(|m| m.bandwidth.as_mut()) {
                    b.on_audio_loss(Instant::now(), loss_pct as f32 / 100.0);
                }
                self.input(Input::SetAudioLoss { id, loss_pct });
            }
            Command::AudioOnly { id, enabled } => self.set_audio_only(id, enabled),
            Command::ReceiverConnected { id } => self.receiver_connected(id),
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
                    .filter(|m| m.kind.is_person())
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
            } => self.reconfigure(*settings, layout, layouts),
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
                    Err(AdminError::NoSuchParticipant)
                });
            }
            Command::SetTier { id, tier, reply } => {
                let result = self.set_tier(id, &tier);
                let _ = reply.send(result);
            }
            Command::Kick { id, reason, reply } => {
                let _ = reply.send(self.kick(id, reason));
            }
            Command::Close { code, reason } => {
                self.close(code, reason);
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

    /// A member joins: the engine gets it, and everyone is told (a share starts, egress is
    /// announced).
    fn join(&mut self, req: JoinRequest) {
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
        } = req;
        let now = Instant::now();
        let ladder = bandwidth.map(|(cfg, audio_only)| (cfg, audio_only, caps));
        let controller = match (&ladder, codec_out) {
            (Some(l), Some(codec)) => Some(self.new_controller(l, codec, now)),
            _ => None,
        };
        if let Some(c) = &controller {
            options.receive_tier = c.current().tier.clone();
        }
        info!(participant = %id, %name, %kind, tier = shown(options.receive_tier.as_ref()), "joined");
        let info = ParticipantInfo {
            id: id.to_string(),
            name: name.clone(),
            audio_muted: false,
            video_muted: false,
        };
        let owner = (kind == MemberKind::Screen)
            .then(|| {
                owner.or_else(|| {
                    self.members
                        .iter()
                        .find(|(_, m)| m.kind.is_person() && m.info.name == name)
                        .map(|(id, _)| *id)
                })
            })
            .flatten();
        let label = if kind == MemberKind::Screen {
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
            Member::new(info.clone(), kind, owner, options, codec_out, sink, now)
                .with_bandwidth(controller, ladder),
        );
        self.order.push(id);
        if kind.is_egress() {
            self.announce_egress(None);
            return;
        }
        if kind == MemberKind::Screen {
            self.start_share(id);
            return;
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
                if let Some(o) = self.members.get(other).filter(|o| o.kind.is_person()) {
                    let _ = m.sink.events.send(ServerMessage::ParticipantUpdated {
                        participant: o.info.clone(),
                    });
                }
            }
        }
        self.report_bandwidth(id, now);
    }

    /// A camera frame, from one who may publish.
    fn video(&mut self, id: ParticipantId, codec: VideoCodec, data: Vec<u8>) {
        // Media from one who may not publish (a subscribe-only token, or a join
        // without `video`) never reaches the engine.
        if self
            .members
            .get(&id)
            .is_some_and(|m| !m.options.sends_video)
        {
            return;
        }
        if let Some(m) = self.members.get_mut(&id) {
            m.codec_in = Some(codec);
            m.last_video_at = Some(Instant::now());
            m.latency_pending = true;
        }
        self.input(Input::Video { id, codec, data });
    }

    /// A participant muted or unmuted its microphone or camera: everyone is told.
    fn mute(&mut self, id: ParticipantId, audio: Option<bool>, video: Option<bool>) {
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

    /// A receiver's feedback on the composite: its reports, and its controller's decision.
    fn feedback(&mut self, id: ParticipantId, feedback: Feedback, jitter_ms: Option<f64>) {
        let now = Instant::now();
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        if feedback.loss.is_some() || feedback.remb_bps.is_some() {
            m.feedback_reports += 1;
        }
        m.report_loss = feedback.loss.or(m.report_loss);
        m.report_jitter_ms = jitter_ms.or(m.report_jitter_ms);
        let Some(b) = m.bandwidth.as_mut() else {
            return;
        };
        let probe_before = b.probe();
        if feedback.overuse {
            debug!(participant = %id, probing = probe_before.is_some(), "overuse");
        }
        let switched = b.on_feedback(now, feedback);
        self.after_decision(id, probe_before, switched, now);
    }

    /// A receiver's connection came up: it is held until its tier's next keyframe, asked for now.
    fn receiver_connected(&mut self, id: ParticipantId) {
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

    /// New settings from a config reload; an admin's layout outlives it while the config
    /// still has it.
    fn reconfigure(
        &mut self,
        mut settings: RoomSettings,
        layout: String,
        layouts: Vec<(String, LayoutSpec)>,
    ) {
        info!(%layout, "applying a new config");
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
        self.input(Input::Reconfigure(Box::new(settings)));
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

    /// An administrator removes a member, which is told why; false if it is not here.
    fn kick(&mut self, id: ParticipantId, reason: String) -> bool {
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
        found.is_some()
    }

    /// Tells everyone the room is closing (fatal `code`) and forgets them.
    fn close(&mut self, code: ErrorCode, reason: String) {
        info!(%reason, "room closed");
        for m in self.members.values() {
            let _ = m.sink.events.send(ServerMessage::Error {
                code,
                reason: reason.clone(),
                fatal: true,
            });
        }
        self.members.clear();
    }

    pub(super) fn set_layout_name(&mut self, layout: String) {
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
    pub(super) fn forget(&mut self, id: ParticipantId, m: &Member) {
        self.order.retain(|p| *p != id);
        self.input(Input::Leave { id });
        if m.kind.is_egress() {
            self.announce_egress(Some(true));
        } else if m.kind == MemberKind::Screen {
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
    pub(super) fn sharing_message(&self) -> Option<ServerMessage> {
        let id = self.share?;
        let m = self.members.get(&id)?;
        Some(ServerMessage::Sharing {
            id: Some(m.owner.unwrap_or(id).to_string()),
            name: Some(m.info.name.clone()),
        })
    }

    /// A screen share joined: it replaces the room's share, if any (whose sharer is told),
    /// and the room shows it.
    pub(super) fn start_share(&mut self, id: ParticipantId) {
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

    /// `recording` for people in the room, if anything records or streams it.
    pub(super) fn egress_message(&self) -> Option<ServerMessage> {
        let has = |kind: MemberKind| self.members.values().any(|m| m.kind == kind);
        let (recording, streaming) = (has(MemberKind::Recorder), has(MemberKind::Stream));
        (recording || streaming).then_some(ServerMessage::Recording {
            recording,
            streaming,
        })
    }

    /// Tells everyone whether the room is recorded now (`stopped`: a recorder just left).
    pub(super) fn announce_egress(&self, stopped: Option<bool>) {
        let msg = self
            .egress_message()
            .or(stopped.map(|_| ServerMessage::Recording {
                recording: false,
                streaming: false,
            }));
        if let Some(msg) = msg {
            for m in self.members.values().filter(|m| !m.kind.is_egress()) {
                let _ = m.sink.events.send(msg.clone());
            }
        }
    }
}
