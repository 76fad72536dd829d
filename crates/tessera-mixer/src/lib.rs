//! The audio mixer of a Tessera room: one call per 20 ms tick turns every participant's
//! 48 kHz mono PCM into a full mix and one mix per listener.
//!
//! Owns: per-participant gain and mute, the sum in a wide type, mix-minus (each listener
//! hears everyone but itself), a peak limiter per output that never hard-clips, smoothed
//! level metering, and the choice of active speaker with hysteresis. Also [`analysis`]
//! (Goertzel tone power, RMS dBFS), which tests across the workspace use to check that a
//! mix contains or lacks a tone.
//!
//! Must not: do IO, read a clock (time advances exactly one tick per [`Mixer::mix`]), decode
//! or encode, or fail: unknown participants, duplicate and wrong-length inputs are counted
//! in [`MixerStats`] and the tick still produces output.
//!
//! Decisions worth knowing:
//! - **Limiter**: gain decided per 1 ms block with look-ahead inside the tick, so a block's
//!   samples never exceed the ceiling; reduction held 20 ms then released exponentially
//!   (`release_ms`); a tanh soft knee catches anything left over. A tick under the ceiling
//!   with no reduction in force passes bit for bit. State is per output, as each listener's
//!   mix differs.
//! - **Metering**: RMS of the contribution after gain and before mute, smoothed in the power
//!   domain over `smoothing_ms`; so a muted participant's level still shows (e.g. "you are
//!   muted") but it never becomes, or stays, the active speaker.
//! - **Speaker**: see the rules in `speaker.rs`; in short, a challenger must be
//!   `switch_margin_db` louder for `switch_after_ms` after the speaker held `min_hold_ms`; an
//!   inaudible speaker is replaced after `switch_after_ms`; in silence the last speaker stays.
//!
//! ```
//! use tessera_mixer::{analysis::goertzel_power, Mixer, MixerConfig, TICK_SAMPLES};
//! use tessera_types::ParticipantId;
//!
//! let (a, b) = (ParticipantId(1), ParticipantId(2));
//! let mut mixer = Mixer::new(MixerConfig::default());
//! mixer.add(a);
//! mixer.add(b);
//! let tone = |hz: f32, amplitude: f32| -> Vec<i16> {
//!     (0..TICK_SAMPLES)
//!         .map(|i| (amplitude * (std::f32::consts::TAU * hz * i as f32 / 48_000.0).sin()) as i16)
//!         .collect()
//! };
//! let (ta, tb) = (tone(300.0, 8000.0), tone(600.0, 4000.0));
//! let out = mixer.mix(&[(a, &ta), (b, &tb)]);
//! // A hears B's tone and not its own; the full mix is the plain sum (no limiting needed).
//! let heard_by_a = out.listener(a).unwrap();
//! assert!(goertzel_power(heard_by_a, 600.0, 48_000) > 0.01);
//! assert!(goertzel_power(heard_by_a, 300.0, 48_000) < 1e-9);
//! assert_eq!(out.full[100], ta[100] + tb[100]);
//! assert_eq!(out.active_speaker, Some(a)); // the louder one
//! ```

pub mod analysis;
mod config;
mod limiter;
mod mixer;
mod speaker;

pub use config::{LimiterConfig, MixerConfig, SpeakerConfig};
pub use mixer::{MixOutput, Mixer, MixerStats, MAX_GAIN};

/// Sample rate of every input and output.
pub const SAMPLE_RATE_HZ: u32 = 48_000;
/// Length of one mixer tick.
pub const TICK_MS: u32 = 20;
/// Mono samples per tick, in every input and output buffer.
pub const TICK_SAMPLES: usize = (SAMPLE_RATE_HZ / 1000 * TICK_MS) as usize;

#[cfg(test)]
mod tests;
