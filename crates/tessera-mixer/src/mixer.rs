//! The per-tick mix: gain, sum, mix-minus, limiting, metering, speaker choice.

use tessera_types::ParticipantId;

use crate::analysis::{energy_to_power, power_to_dbfs, SILENCE_DBFS};
use crate::config::MixerConfig;
use crate::limiter::{Limiter, LimiterParams};
use crate::speaker::{Contender, SpeakerTracker};
use crate::{TICK_MS, TICK_SAMPLES};

/// Highest per-participant gain accepted by [`Mixer::set_gain`].
pub const MAX_GAIN: f32 = 4.0;

/// What one tick produced. Owned by the [`Mixer`] and overwritten by the next tick; the
/// buffers are reused, not reallocated.
#[derive(Clone, Debug, PartialEq)]
pub struct MixOutput {
    /// Everyone, limited: `TICK_SAMPLES` samples.
    pub full: Vec<i16>,
    /// One per added participant, in the order they were added: what that participant
    /// hears (everyone but itself with mix-minus, else the full mix), limited.
    pub listeners: Vec<(ParticipantId, Vec<i16>)>,
    /// One per added participant, same order: smoothed RMS dBFS of its contribution after
    /// gain, metered even while muted.
    pub levels: Vec<(ParticipantId, f32)>,
    pub active_speaker: Option<ParticipantId>,
    /// `active_speaker` differs from what it was before this tick. A speaker cleared by
    /// [`Mixer::remove`] is not reported again here.
    pub speaker_changed: bool,
}

impl MixOutput {
    /// What `id` hears this tick.
    pub fn listener(&self, id: ParticipantId) -> Option<&[i16]> {
        self.listeners
            .iter()
            .find(|(l, _)| *l == id)
            .map(|(_, pcm)| pcm.as_slice())
    }

    /// Smoothed level of `id` this tick.
    pub fn level(&self, id: ParticipantId) -> Option<f32> {
        self.levels
            .iter()
            .find(|(l, _)| *l == id)
            .map(|(_, db)| *db)
    }
}

/// Counters of odd input and of limiter work. Never errors: the mix always goes on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MixerStats {
    pub ticks: u64,
    /// Inputs for participants that were never added (or already removed); ignored.
    pub unknown_inputs: u64,
    /// A second input for the same participant in one tick; ignored.
    pub duplicate_inputs: u64,
    /// Inputs not `TICK_SAMPLES` long; zero-padded or truncated.
    pub wrong_length_inputs: u64,
    /// Outputs (full mix or a listener's) of a tick where the limiter reduced gain.
    pub limited_outputs: u64,
    /// Samples the safety soft-clip had to bend (0 unless the limiter misjudged).
    pub soft_clipped_samples: u64,
    pub speaker_changes: u64,
}

/// A participant's contribution and everything kept for it between ticks.
#[derive(Debug)]
struct Slot {
    id: ParticipantId,
    muted: bool,
    gain: f32,
    /// This tick's input after gain (before mute). Valid when `has_input`.
    contrib: Vec<i32>,
    has_input: bool,
    /// In this tick's sum: has input, not muted, not all zero.
    in_mix: bool,
    /// Smoothed mean square relative to full scale².
    power: f64,
    level_dbfs: f32,
    /// For this participant's listener output.
    limiter: Limiter,
}

/// Derived from the config once, not per tick.
#[derive(Clone, Copy, Debug)]
struct Derived {
    limiter: LimiterParams,
    /// Per-tick weight of the new value in the level smoothing.
    level_alpha: f64,
}

impl Derived {
    fn new(cfg: &MixerConfig) -> Self {
        let level_alpha = match cfg.speaker.smoothing_ms {
            0 => 1.0,
            ms => 1.0 - (-f64::from(TICK_MS) / f64::from(ms)).exp(),
        };
        Derived {
            limiter: LimiterParams::new(&cfg.limiter),
            level_alpha,
        }
    }
}

/// The audio mixer of one room. See the crate docs.
#[derive(Debug)]
pub struct Mixer {
    cfg: MixerConfig,
    derived: Derived,
    /// In the order participants were added; `out.listeners` and `out.levels` follow it.
    slots: Vec<Slot>,
    /// Sum of every contribution in the mix.
    sum: Vec<i32>,
    /// One listener's mix-minus before limiting.
    scratch: Vec<i32>,
    full_limiter: Limiter,
    speaker: SpeakerTracker,
    contenders: Vec<Contender>,
    out: MixOutput,
    stats: MixerStats,
}

impl Mixer {
    pub fn new(cfg: MixerConfig) -> Self {
        Mixer {
            cfg,
            derived: Derived::new(&cfg),
            slots: Vec::new(),
            sum: vec![0; TICK_SAMPLES],
            scratch: vec![0; TICK_SAMPLES],
            full_limiter: Limiter::default(),
            speaker: SpeakerTracker::default(),
            contenders: Vec::new(),
            out: MixOutput {
                full: vec![0; TICK_SAMPLES],
                listeners: Vec::new(),
                levels: Vec::new(),
                active_speaker: None,
                speaker_changed: false,
            },
            stats: MixerStats::default(),
        }
    }

    /// Replaces the config; takes effect at the next tick. Limiter, level and speaker state
    /// carry over.
    pub fn set_config(&mut self, cfg: MixerConfig) {
        self.cfg = cfg;
        self.derived = Derived::new(&cfg);
    }

    pub fn config(&self) -> &MixerConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &MixerStats {
        &self.stats
    }

    /// The speaker as of the last tick (or `None` after [`Mixer::remove`] of the speaker).
    pub fn active_speaker(&self) -> Option<ParticipantId> {
        self.speaker.current()
    }

    /// Participants in the order they were added.
    pub fn participants(&self) -> impl Iterator<Item = ParticipantId> + '_ {
        self.slots.iter().map(|s| s.id)
    }

    /// Adds a participant: a contributor and a listener. Returns false if already added.
    pub fn add(&mut self, id: ParticipantId) -> bool {
        if self.index_of(id).is_some() {
            return false;
        }
        self.slots.push(Slot {
            id,
            muted: false,
            gain: 1.0,
            contrib: vec![0; TICK_SAMPLES],
            has_input: false,
            in_mix: false,
            power: 0.0,
            level_dbfs: SILENCE_DBFS,
            // It hears the full mix until it says something, so start in step with it.
            limiter: self.full_limiter,
        });
        self.out.listeners.push((id, vec![0; TICK_SAMPLES]));
        self.out.levels.push((id, SILENCE_DBFS));
        true
    }

    /// Removes a participant. If it was the active speaker, nobody is until the next tick
    /// picks the loudest audible participant; that clear is not reported as
    /// `speaker_changed`, the caller already knows. Returns false if unknown.
    pub fn remove(&mut self, id: ParticipantId) -> bool {
        let Some(k) = self.index_of(id) else {
            return false;
        };
        self.slots.remove(k);
        self.out.listeners.remove(k);
        self.out.levels.remove(k);
        self.speaker.forget(id);
        self.out.active_speaker = self.speaker.current();
        true
    }

    /// A muted participant is left out of every mix and cannot become speaker; its level
    /// is still metered. Unknown ids are ignored.
    pub fn set_muted(&mut self, id: ParticipantId, muted: bool) {
        if let Some(k) = self.index_of(id) {
            self.slots[k].muted = muted;
        }
    }

    /// Linear gain applied to a participant's input, clamped to `0..=MAX_GAIN`. NaN and
    /// unknown ids are ignored.
    pub fn set_gain(&mut self, id: ParticipantId, gain: f32) {
        if gain.is_nan() {
            return;
        }
        if let Some(k) = self.index_of(id) {
            self.slots[k].gain = gain.clamp(0.0, MAX_GAIN);
        }
    }

    fn index_of(&self, id: ParticipantId) -> Option<usize> {
        self.slots.iter().position(|s| s.id == id)
    }

    /// Mixes one 20 ms tick. `inputs` holds this tick's samples of whoever has some;
    /// everyone else contributes silence. Inputs are expected `TICK_SAMPLES` long.
    pub fn mix(&mut self, inputs: &[(ParticipantId, &[i16])]) -> &MixOutput {
        self.stats.ticks += 1;
        for s in &mut self.slots {
            s.has_input = false;
            s.in_mix = false;
        }
        for (pos, &(id, samples)) in inputs.iter().enumerate() {
            // Inputs usually come in join order: try the same position first.
            let k = match self.slots.get(pos) {
                Some(s) if s.id == id => Some(pos),
                _ => self.index_of(id),
            };
            let Some(slot) = k.map(|k| &mut self.slots[k]) else {
                self.stats.unknown_inputs += 1;
                continue;
            };
            if slot.has_input {
                self.stats.duplicate_inputs += 1;
                continue;
            }
            if samples.len() != TICK_SAMPLES {
                self.stats.wrong_length_inputs += 1;
            }
            let energy = slot.load(samples);
            slot.has_input = true;
            slot.in_mix = !slot.muted && energy > 0;
            let power = energy_to_power(energy as f64, TICK_SAMPLES);
            slot.power += self.derived.level_alpha * (power - slot.power);
        }

        self.sum.fill(0);
        for s in self.slots.iter_mut() {
            if s.in_mix {
                for (acc, &c) in self.sum.iter_mut().zip(&s.contrib) {
                    *acc += c;
                }
            }
            if !s.has_input {
                s.power -= self.derived.level_alpha * s.power;
            }
            s.level_dbfs = power_to_dbfs(s.power);
        }

        let params = self.derived.limiter;
        let full_before = self.full_limiter;
        let report = self
            .full_limiter
            .process(&params, &self.sum, &mut self.out.full);
        self.stats.limited_outputs += u64::from(report.reduced);
        self.stats.soft_clipped_samples += u64::from(report.soft_clipped);

        for (slot, (_, pcm)) in self.slots.iter_mut().zip(&mut self.out.listeners) {
            let minus_own = self.cfg.mix_minus && slot.in_mix;
            if !minus_own && (!self.cfg.mix_minus || slot.limiter == full_before) {
                // Same signal and same limiter state as the full mix: same output.
                pcm.copy_from_slice(&self.out.full);
                slot.limiter = self.full_limiter;
                continue;
            }
            let signal = if minus_own {
                for ((d, &all), &own) in self.scratch.iter_mut().zip(&self.sum).zip(&slot.contrib) {
                    *d = all - own;
                }
                &self.scratch
            } else {
                &self.sum
            };
            let report = slot.limiter.process(&params, signal, pcm);
            self.stats.limited_outputs += u64::from(report.reduced);
            self.stats.soft_clipped_samples += u64::from(report.soft_clipped);
        }

        self.contenders.clear();
        self.contenders.extend(self.slots.iter().map(|s| Contender {
            id: s.id,
            level_dbfs: s.level_dbfs,
            muted: s.muted,
        }));
        for (level, s) in self.out.levels.iter_mut().zip(&self.slots) {
            level.1 = s.level_dbfs;
        }
        let changed = self.speaker.update(&self.cfg.speaker, &self.contenders);
        self.stats.speaker_changes += u64::from(changed);
        self.out.active_speaker = self.speaker.current();
        self.out.speaker_changed = changed;
        &self.out
    }
}

impl Slot {
    /// Stores `samples` after gain, zero-padded or truncated to a tick. Returns the energy
    /// (sum of squares) of what was stored.
    fn load(&mut self, samples: &[i16]) -> i64 {
        let n = samples.len().min(TICK_SAMPLES);
        let (head, tail) = self.contrib.split_at_mut(n);
        if self.gain == 1.0 {
            for (c, &x) in head.iter_mut().zip(samples) {
                *c = i32::from(x);
            }
        } else {
            let gain = self.gain;
            for (c, &x) in head.iter_mut().zip(samples) {
                // |x * gain| <= 131072: exact in f32 and i32.
                *c = (f32::from(x) * gain).round() as i32;
            }
        }
        tail.fill(0);
        // At most 960 * 131072², well inside i64.
        head.iter().map(|&c| i64::from(c) * i64::from(c)).sum()
    }
}
