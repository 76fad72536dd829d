//! The room state machine.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_codec::{AudioEncoder, VideoFrame, FRAME_SAMPLES, SAMPLE_RATE_HZ};
use tessera_compose::{ComposeConfig, Compositor, Fit, TileInput};
use tessera_mixer::Mixer;
use tessera_types::{ParticipantId, VideoCodec};

use crate::participant::Participant;
use crate::settings::{RoomSettings, TierId, TierSettings};
use crate::tier::Tier;
use crate::{EngineError, Input, JoinOptions, Listener, Output};

const AUDIO_TICK: Duration = Duration::from_millis(20);
/// Audio ticks run to catch up after a stall before the rest are skipped.
const MAX_AUDIO_CATCH_UP: u32 = 10;

/// Counters for one participant's inbound media.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParticipantStats {
    pub video_frames: u64,
    pub video_bytes: u64,
    pub video_decode_errors: u64,
    pub keyframe_requests: u64,
    pub keyframe_requests_throttled: u64,
    pub audio_packets: u64,
    pub audio_decode_errors: u64,
    pub audio_underruns: u64,
    pub audio_samples_dropped: u64,
}

/// Counters for one output tier.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TierStats {
    pub frames_composed: u64,
    pub frames_encoded: u64,
    pub frames_skipped_by_encoder: u64,
    pub keyframes: u64,
    pub bytes: u64,
    pub encode_errors: u64,
    /// Ticks dropped because the room fell behind its clock.
    pub late_ticks: u64,
    /// Time spent composing and encoding, if the owner gave the room a cost clock.
    pub compose_ns: u64,
    pub encode_ns: u64,
}

/// Room-wide counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoomStats {
    pub audio_ticks: u64,
    pub audio_ticks_skipped: u64,
    pub audio_encode_errors: u64,
    pub inputs_for_unknown_participants: u64,
    pub speaker_changes: u64,
    /// Settings a live reconfiguration could not apply (a compositor that refused them).
    pub reconfigure_errors: u64,
}

/// One conference room. See the crate documentation.
pub struct Room {
    settings: RoomSettings,
    start: Instant,
    participants: Vec<Participant>,
    tiers: Vec<Tier>,
    mixer: Mixer,
    full_mix_encoder: Option<Box<dyn AudioEncoder>>,
    next_audio_tick: u64,
    active_speaker: Option<ParticipantId>,
    pinned: Option<ParticipantId>,
    /// The participant that is a shared screen.
    share: Option<ParticipantId>,
    /// Measures compose/encode cost when the owner provides one (the engine never reads
    /// the clock itself; offline runs and tests leave it unset).
    cost_clock: Option<fn() -> Instant>,
    outputs: VecDeque<Output>,
    stats: RoomStats,
    contributions: Vec<(ParticipantId, Vec<i16>)>,
}

impl Room {
    /// A room whose clock starts at `now`.
    pub fn new(settings: RoomSettings, now: Instant) -> Result<Room, EngineError> {
        if settings.tiers.is_empty() {
            return Err(EngineError::NoTiers);
        }
        let mut room = Room {
            mixer: Mixer::new(settings.mixer),
            tiers: Vec::new(),
            settings,
            start: now,
            participants: Vec::new(),
            full_mix_encoder: None,
            next_audio_tick: 0,
            active_speaker: None,
            pinned: None,
            share: None,
            cost_clock: None,
            outputs: VecDeque::new(),
            stats: RoomStats::default(),
            contributions: Vec::new(),
        };
        room.tiers = room.build_tiers()?;
        room.update_active_tiers(now)?;
        Ok(room)
    }

    fn build_tiers(&self) -> Result<Vec<Tier>, EngineError> {
        self.settings
            .tiers
            .iter()
            .map(|t| self.new_tier(t, self.start))
            .collect()
    }

    fn new_tier(&self, t: &TierSettings, epoch: Instant) -> Result<Tier, EngineError> {
        Ok(Tier {
            settings: t.clone(),
            compositor: Compositor::new(self.tier_compose(t))?,
            encoder: None,
            next_tick: 0,
            keyframe_wanted: false,
            last_forced_keyframe: None,
            stats: Default::default(),
            epoch,
            pts_base: 0,
        })
    }

    fn tier_compose(&self, t: &TierSettings) -> ComposeConfig {
        ComposeConfig {
            width: t.width,
            height: t.height,
            ..self.settings.compose.clone()
        }
    }

    /// Applies new settings to the running room without dropping anyone: layout, canvas
    /// look, mixer, audio bitrate and timing apply at once; a tier whose size, codec or
    /// frame rate changed restarts its encoder (the next frame is a keyframe), one whose
    /// bitrate changed retunes it. Tiers missing from `new` keep serving their receivers;
    /// new tiers are added.
    fn reconfigure(&mut self, new: RoomSettings, now: Instant) {
        let old_audio = self.settings.audio_bitrate_bps;
        let mut tiers = std::mem::take(&mut self.settings.tiers);
        for t in &new.tiers {
            match tiers.iter_mut().find(|o| o.id == t.id) {
                Some(o) => *o = t.clone(),
                None => tiers.push(t.clone()),
            }
        }
        self.settings = RoomSettings { tiers, ..new };
        self.mixer.set_config(self.settings.mixer);
        if self.settings.audio_bitrate_bps != old_audio {
            let bps = self.settings.audio_bitrate_bps;
            for p in &mut self.participants {
                if let Some(e) = p.audio_encoder.as_mut() {
                    if e.set_bitrate(bps).is_err() {
                        p.audio_encoder = None;
                    }
                }
            }
            if let Some(e) = self.full_mix_encoder.as_mut() {
                if e.set_bitrate(bps).is_err() {
                    self.full_mix_encoder = None;
                }
            }
        }
        for i in 0..self.settings.tiers.len() {
            let t = self.settings.tiers[i].clone();
            if i >= self.tiers.len() {
                match self.new_tier(&t, now) {
                    Ok(tier) => self.tiers.push(tier),
                    Err(_) => self.stats.reconfigure_errors += 1,
                }
                continue;
            }
            let compose = self.tier_compose(&t);
            let tier = &mut self.tiers[i];
            let old = tier.settings.clone();
            if tier.compositor.set_config(compose).is_err() {
                self.stats.reconfigure_errors += 1;
            }
            tier.set_fps(t.fps);
            tier.settings = t.clone();
            let restart = (old.width, old.height, old.id.codec, old.fps)
                != (t.width, t.height, t.id.codec, t.fps);
            if restart {
                // update_active_tiers starts a new encoder, which begins with a keyframe.
                tier.encoder = None;
            } else if old.bitrate_bps != t.bitrate_bps {
                if let Some(e) = tier.encoder.as_mut() {
                    if e.set_bitrate(t.bitrate_bps).is_err() {
                        tier.encoder = None;
                    }
                }
            }
        }
        let _ = self.update_active_tiers(now);
    }

    /// Lets the room time its compose and encode work with `clock` (`TierStats::compose_ns`,
    /// `encode_ns`), for metrics. Pass `Instant::now`.
    pub fn set_cost_clock(&mut self, clock: fn() -> Instant) {
        self.cost_clock = Some(clock);
    }

    pub fn settings(&self) -> &RoomSettings {
        &self.settings
    }

    pub fn stats(&self) -> &RoomStats {
        &self.stats
    }

    pub fn participant_stats(&self, id: ParticipantId) -> Option<&ParticipantStats> {
        self.participant(id).map(|p| &p.stats)
    }

    pub fn tier_stats(&self, id: &TierId) -> Option<&TierStats> {
        self.tiers
            .iter()
            .find(|t| t.settings.id == *id)
            .map(|t| &t.stats)
    }

    /// The tier's last composed canvas (for snapshots), if it has composed one.
    pub fn canvas(&self, tier: &TierId) -> Option<&VideoFrame> {
        self.tiers
            .iter()
            .find(|t| t.settings.id == *tier && t.stats.frames_composed > 0)
            .map(|t| t.compositor.canvas())
    }

    /// Pixel rectangles of the last composite of `tier`, by participant.
    pub fn tile_rects(&self, tier: &TierId) -> Vec<(ParticipantId, tessera_codec::Rect)> {
        let Some(t) = self.tiers.iter().find(|t| t.settings.id == *tier) else {
            return Vec::new();
        };
        let ids: Vec<ParticipantId> = self
            .participants
            .iter()
            .filter(|p| p.has_tile())
            .map(|p| p.id)
            .collect();
        t.compositor
            .placements()
            .iter()
            .filter_map(|(i, r)| ids.get(*i).map(|id| (*id, *r)))
            .collect()
    }

    /// The tiers encoding now.
    pub fn encoding_tiers(&self) -> Vec<&TierId> {
        self.tiers
            .iter()
            .filter(|t| t.encoder.is_some())
            .map(|t| &t.settings.id)
            .collect()
    }

    /// The size of a participant's last decoded picture.
    pub fn picture_size(&self, id: ParticipantId) -> Option<(u32, u32)> {
        self.participant(id)
            .and_then(|p| p.last_frame.as_ref())
            .map(|f| (f.width, f.height))
    }

    /// The shared screen, if one is shown.
    pub fn share(&self) -> Option<ParticipantId> {
        self.share
    }

    pub fn active_speaker(&self) -> Option<ParticipantId> {
        self.active_speaker
    }

    pub fn participant_ids(&self) -> Vec<ParticipantId> {
        self.participants.iter().map(|p| p.id).collect()
    }

    fn participant(&self, id: ParticipantId) -> Option<&Participant> {
        self.participants.iter().find(|p| p.id == id)
    }

    fn participant_mut(&mut self, id: ParticipantId) -> Option<&mut Participant> {
        self.participants.iter_mut().find(|p| p.id == id)
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the room next needs [`Room::handle_timeout`].
    pub fn poll_timeout(&self) -> Instant {
        let mut next = self.start + AUDIO_TICK * self.next_audio_tick as u32;
        for t in self.tiers.iter().filter(|t| t.encoder.is_some()) {
            next = next.min(t.tick_time(t.next_tick));
        }
        next
    }

    /// Handles one input that arrived at `now`. Bad input is counted, never fatal.
    pub fn handle_input(&mut self, input: Input, now: Instant) {
        match input {
            Input::Join { id, name, options } => self.join(id, name, options, now),
            Input::Leave { id } => {
                if let Some(pos) = self.participants.iter().position(|p| p.id == id) {
                    self.participants.remove(pos);
                    self.mixer.remove(id);
                    if self.share == Some(id) {
                        self.share = None;
                    }
                    if self.active_speaker == Some(id) {
                        self.active_speaker = None;
                        self.outputs
                            .push_back(Output::ActiveSpeakerChanged { participant: None });
                    }
                    self.refresh_tiers(now);
                }
            }
            Input::Video { id, codec, data } => self.video_in(id, codec, &data, now),
            Input::Audio { id, packet } => {
                let max = self.jitter_samples();
                match self.participant_mut(id) {
                    Some(p) => p.decode_audio(&packet, max),
                    None => self.stats.inputs_for_unknown_participants += 1,
                }
            }
            Input::AudioPcm { id, samples } => {
                let max = self.jitter_samples();
                match self.participant_mut(id) {
                    Some(p) => {
                        p.stats.audio_packets += 1;
                        p.queue_audio(&samples, max);
                    }
                    None => self.stats.inputs_for_unknown_participants += 1,
                }
            }
            Input::SetMuted { id, muted } => self.mixer.set_muted(id, muted),
            Input::SetGain { id, gain } => self.mixer.set_gain(id, gain),
            Input::SetCameraOff { id, off } => {
                match self.participants.iter_mut().find(|p| p.id == id) {
                    Some(p) => p.camera_off = off,
                    None => self.stats.inputs_for_unknown_participants += 1,
                }
            }
            Input::RequestKeyframe { tier } => {
                if let Some(t) = self.tiers.iter_mut().find(|t| t.settings.id == tier) {
                    t.keyframe_wanted = true;
                }
            }
            Input::ReceiverReady { tier } => {
                if let Some(t) = self.tiers.iter_mut().find(|t| t.settings.id == tier) {
                    t.keyframe_wanted = true;
                    t.last_forced_keyframe = None;
                }
            }
            Input::Reconfigure(settings) => self.reconfigure(*settings, now),
            Input::Pin(id) => self.pinned = id,
            Input::SetReceiveTier { id, tier } => {
                let index = match tier.as_ref().map(|t| self.settings.tier_index(t)) {
                    Some(None) => {
                        self.stats.inputs_for_unknown_participants += 1;
                        return;
                    }
                    Some(Some(t)) => Some(t),
                    None => None,
                };
                match self.participants.iter_mut().find(|p| p.id == id) {
                    Some(p) => {
                        p.receive_tier = index;
                        p.options.receive_tier = tier;
                        if let Some(t) = index {
                            self.tiers[t].keyframe_wanted = true;
                            self.tiers[t].last_forced_keyframe = None;
                        }
                        self.refresh_tiers(now);
                    }
                    None => self.stats.inputs_for_unknown_participants += 1,
                }
            }
            Input::SetLayout(layout) => self.settings.layout = layout,
            Input::SetShare(id) => self.share = id,
            Input::AddTiers(tiers) => {
                for t in tiers {
                    if self.settings.tier_index(&t.id).is_some() {
                        continue;
                    }
                    match self.new_tier(&t, now) {
                        Ok(tier) => {
                            self.settings.tiers.push(t);
                            self.tiers.push(tier);
                        }
                        Err(_) => self.stats.reconfigure_errors += 1,
                    }
                }
            }
            Input::SetAudioLoss { id, loss_pct } => {
                let Some(p) = self.participants.iter_mut().find(|p| p.id == id) else {
                    self.stats.inputs_for_unknown_participants += 1;
                    return;
                };
                p.audio_loss_pct = loss_pct;
                if let Some(e) = p.audio_encoder.as_mut() {
                    if e.set_packet_loss_pct(loss_pct).is_err() {
                        self.stats.audio_encode_errors += 1;
                    }
                }
                self.tune_full_mix_loss();
            }
        }
    }

    /// The shared full-mix encode protects for the worst loss among its listeners.
    fn tune_full_mix_loss(&mut self) {
        let worst = self.full_mix_loss_pct();
        if let Some(e) = self.full_mix_encoder.as_mut() {
            if e.set_packet_loss_pct(worst).is_err() {
                self.stats.audio_encode_errors += 1;
            }
        }
    }

    /// The loss the shared full-mix encoder is tuned for, in percent.
    pub fn full_mix_loss_pct(&self) -> u8 {
        self.participants
            .iter()
            .filter(|p| p.options.receives_audio && p.audio_encoder.is_none())
            .map(|p| p.audio_loss_pct)
            .max()
            .unwrap_or(0)
    }

    fn jitter_samples(&self) -> usize {
        (self.settings.jitter_buffer.as_millis() as usize) * (SAMPLE_RATE_HZ as usize / 1000)
    }

    fn join(&mut self, id: ParticipantId, name: String, options: JoinOptions, now: Instant) {
        if self.participant(id).is_some() {
            return;
        }
        let receive_tier = options
            .receive_tier
            .as_ref()
            .and_then(|t| self.settings.tier_index(t));
        let mut p = Participant::new(id, name, options, receive_tier);
        if p.options.sends_audio {
            self.mixer.add(id);
            if p.options.receives_audio {
                match tessera_codec::new_audio_encoder(self.settings.audio_bitrate_bps) {
                    Ok(e) => p.audio_encoder = Some(e),
                    Err(_) => self.stats.audio_encode_errors += 1,
                }
            }
        }
        // A new tile needs a picture at once.
        p.keyframe_wanted = p.options.sends_video;
        self.participants.push(p);
        self.send_keyframe_requests(now);
        if let Some(t) = receive_tier {
            self.tiers[t].keyframe_wanted = true;
        }
        self.refresh_tiers(now);
    }

    fn refresh_tiers(&mut self, now: Instant) {
        // Encoder set-up failures are counted on the tier; the room goes on without it.
        let _ = self.update_active_tiers(now);
    }

    /// Starts encoders for tiers that gained a receiver and drops those that lost all.
    fn update_active_tiers(&mut self, now: Instant) -> Result<(), EngineError> {
        let mut result = Ok(());
        for i in 0..self.tiers.len() {
            let wanted = self
                .settings
                .always_encode
                .contains(&self.tiers[i].settings.id)
                || self.participants.iter().any(|p| p.receive_tier == Some(i));
            let (cpu, threads) = (self.settings.vp8_cpu_used, self.settings.encoder_threads);
            let tier = &mut self.tiers[i];
            match (wanted, tier.encoder.is_some()) {
                (true, false) => {
                    match tessera_codec::new_video_encoder(&tier.encoder_config(cpu, threads)) {
                        Ok(e) => {
                            tier.encoder = Some(e);
                            tier.next_tick = tier.tick_at_or_after(now);
                            tier.keyframe_wanted = true;
                        }
                        Err(source) => {
                            tier.stats.encode_errors += 1;
                            result = Err(EngineError::Encoder {
                                tier: tier.settings.id.to_string(),
                                source,
                            });
                        }
                    }
                }
                (false, true) => tier.encoder = None,
                _ => {}
            }
        }
        result
    }

    fn video_in(&mut self, id: ParticipantId, codec: VideoCodec, data: &[u8], now: Instant) {
        let Some(p) = self.participants.iter_mut().find(|p| p.id == id) else {
            self.stats.inputs_for_unknown_participants += 1;
            return;
        };
        p.stats.video_bytes += data.len() as u64;
        if p.video.as_ref().map(|(c, _)| *c) != Some(codec) {
            // First frame or a codec switch: a fresh decoder, which needs a keyframe.
            match tessera_codec::new_video_decoder(codec) {
                Ok(d) => p.video = Some((codec, d)),
                Err(_) => {
                    p.stats.video_decode_errors += 1;
                    return;
                }
            }
        }
        let Some((_, decoder)) = p.video.as_mut() else {
            return;
        };
        // Into the last frame's buffers: a camera's pictures are all one size, so decoding
        // allocates nothing (per-frame allocations of ~350 KB made glibc trim and fault pages
        // back in on every frame, which cost late ticks).
        match decoder.decode_into(data, &mut p.last_frame) {
            Ok(true) => {
                p.stats.video_frames += 1;
                p.last_frame_at = Some(now);
            }
            Ok(false) => {}
            Err(_) => {
                p.stats.video_decode_errors += 1;
                p.keyframe_wanted = true;
            }
        }
        self.send_keyframe_requests(now);
    }

    fn send_keyframe_requests(&mut self, now: Instant) {
        let interval = self.settings.keyframe_request_interval;
        for p in &mut self.participants {
            if p.take_keyframe_request(now, interval) {
                self.outputs
                    .push_back(Output::KeyframeNeeded { participant: p.id });
            }
        }
    }

    /// Runs every audio and video tick due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.send_keyframe_requests(now);
        let mut audio_run = 0;
        loop {
            let audio_at = self.start + AUDIO_TICK * self.next_audio_tick as u32;
            let video = self
                .tiers
                .iter()
                .enumerate()
                .filter(|(_, t)| t.encoder.is_some())
                .map(|(i, t)| (t.tick_time(t.next_tick), i))
                .min();
            match video {
                Some((at, i)) if at <= now && at < audio_at => self.video_tick(i, now),
                _ if audio_at <= now => {
                    audio_run += 1;
                    if audio_run > MAX_AUDIO_CATCH_UP {
                        // Far behind (a stalled thread): skip ahead instead of bursting.
                        let due = (now.saturating_duration_since(self.start).as_nanos()
                            / AUDIO_TICK.as_nanos()) as u64;
                        self.stats.audio_ticks_skipped += due + 1 - self.next_audio_tick;
                        self.next_audio_tick = due + 1;
                        continue;
                    }
                    self.audio_tick();
                }
                _ => break,
            }
        }
    }

    fn video_tick(&mut self, i: usize, now: Instant) {
        let tier = &mut self.tiers[i];
        // Behind by more than one frame: encode the newest tick only.
        let newest_due = tier
            .tick_at_or_after(now + Duration::from_nanos(1))
            .saturating_sub(1);
        if newest_due > tier.next_tick {
            tier.stats.late_ticks += newest_due - tier.next_tick;
            tier.next_tick = newest_due;
        }
        let k = tier.next_tick;
        tier.next_tick += 1;
        let tick_time = tier.tick_time(k);

        let after = self.settings.placeholder_after;
        let share = self.share.filter(|id| {
            self.participants
                .iter()
                .any(|p| p.id == *id && p.has_tile())
        });
        let tiles: Vec<TileInput<'_>> = self
            .participants
            .iter()
            .filter(|p| p.has_tile())
            .map(|p| TileInput {
                name: &p.name,
                frame: p.tile_frame(tick_time, after),
                fit: (Some(p.id) == share).then_some(Fit::Letterbox),
            })
            .collect();
        // An administrator's pin, else the shared screen, else whoever speaks.
        let shown = self
            .pinned
            .filter(|id| {
                self.participants
                    .iter()
                    .any(|p| p.id == *id && p.has_tile())
            })
            .or(share)
            .or(self.active_speaker);
        let speaker = shown.and_then(|s| {
            self.participants
                .iter()
                .filter(|p| p.has_tile())
                .position(|p| p.id == s)
        });
        let force = tier.take_keyframe(now, self.settings.keyframe_min_interval);
        let pts = tier.pts_90k(k);
        tier.stats.frames_composed += 1;
        let clock = self.cost_clock;
        let t0 = clock.map(|c| c());
        let layout = match (&tier.settings.layout, share) {
            (Some(own), _) => own,
            (None, Some(_)) => &self.settings.share_layout,
            (None, None) => &self.settings.layout,
        };
        let canvas = tier.compositor.compose(layout, &tiles, speaker);
        let t1 = clock.map(|c| c());
        let Some(encoder) = tier.encoder.as_mut() else {
            return;
        };
        let encoded = encoder.encode(canvas, pts, force);
        if let (Some(c), Some(t0), Some(t1)) = (clock, t0, t1) {
            tier.stats.compose_ns += t1.duration_since(t0).as_nanos() as u64;
            tier.stats.encode_ns += c().duration_since(t1).as_nanos() as u64;
        }
        match encoded {
            Ok(Some(frame)) => {
                tier.stats.frames_encoded += 1;
                tier.stats.bytes += frame.data.len() as u64;
                tier.stats.keyframes += frame.keyframe as u64;
                self.outputs.push_back(Output::Video {
                    tier: tier.settings.id.clone(),
                    frame: Arc::new(frame),
                });
            }
            Ok(None) => {
                tier.stats.frames_skipped_by_encoder += 1;
                if force {
                    tier.keyframe_wanted = true;
                    tier.last_forced_keyframe = None;
                }
            }
            Err(_) => tier.stats.encode_errors += 1,
        }
    }

    fn audio_tick(&mut self) {
        let k = self.next_audio_tick;
        self.next_audio_tick += 1;
        self.stats.audio_ticks += 1;
        let pts_48k = k * FRAME_SAMPLES as u64;

        let mut contributions = std::mem::take(&mut self.contributions);
        let mut used = 0;
        for p in self
            .participants
            .iter_mut()
            .filter(|p| p.options.sends_audio)
        {
            if used == contributions.len() {
                contributions.push((p.id, Vec::with_capacity(FRAME_SAMPLES)));
            }
            let slot = &mut contributions[used];
            if p.pull_audio(&mut slot.1) {
                slot.0 = p.id;
                used += 1;
            }
        }
        let inputs: Vec<(ParticipantId, &[i16])> = contributions[..used]
            .iter()
            .map(|(id, s)| (*id, s.as_slice()))
            .collect();
        let mix = self.mixer.mix(&inputs);

        if mix.speaker_changed {
            self.active_speaker = mix.active_speaker;
            self.stats.speaker_changes += 1;
            self.outputs.push_back(Output::ActiveSpeakerChanged {
                participant: mix.active_speaker,
            });
        }
        let mut full_mix_needed = self.settings.always_full_mix;
        for p in &mut self.participants {
            if !p.options.receives_audio {
                continue;
            }
            let Some(enc) = p.audio_encoder.as_mut() else {
                full_mix_needed = true;
                continue;
            };
            let Some((_, pcm)) = mix.listeners.iter().find(|(id, _)| *id == p.id) else {
                continue;
            };
            match enc.encode(pcm) {
                Ok(packet) => self.outputs.push_back(Output::Audio {
                    listener: Listener::Participant(p.id),
                    packet,
                    pts_48k,
                }),
                Err(_) => self.stats.audio_encode_errors += 1,
            }
        }
        if full_mix_needed {
            if self.full_mix_encoder.is_none() {
                match tessera_codec::new_audio_encoder(self.settings.audio_bitrate_bps) {
                    Ok(mut e) => {
                        let worst = self
                            .participants
                            .iter()
                            .filter(|p| p.options.receives_audio && p.audio_encoder.is_none())
                            .map(|p| p.audio_loss_pct)
                            .max()
                            .unwrap_or(0);
                        if e.set_packet_loss_pct(worst).is_err() {
                            self.stats.audio_encode_errors += 1;
                        }
                        self.full_mix_encoder = Some(e);
                    }
                    Err(_) => self.stats.audio_encode_errors += 1,
                }
            }
            if let Some(enc) = self.full_mix_encoder.as_mut() {
                match enc.encode(&mix.full) {
                    Ok(packet) => self.outputs.push_back(Output::Audio {
                        listener: Listener::FullMix,
                        packet,
                        pts_48k,
                    }),
                    Err(_) => self.stats.audio_encode_errors += 1,
                }
            }
        }
        self.contributions = contributions;
    }
}
