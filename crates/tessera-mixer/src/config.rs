//! What the mixer is configured with. Plain values; the config crate validates ranges, the
//! mixer only guards against values that would break its arithmetic.

/// Mixer settings. Replace them live with [`crate::Mixer::set_config`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MixerConfig {
    /// Each listener hears everyone but themselves; `false`: everyone hears the full mix.
    pub mix_minus: bool,
    pub speaker: SpeakerConfig,
    pub limiter: LimiterConfig,
}

impl Default for MixerConfig {
    fn default() -> Self {
        MixerConfig {
            mix_minus: true,
            speaker: SpeakerConfig::default(),
            limiter: LimiterConfig::default(),
        }
    }
}

/// Active-speaker detection with hysteresis. Levels are smoothed RMS dBFS (see
/// [`crate::analysis::rms_dbfs`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpeakerConfig {
    /// Below this smoothed level a participant counts as silent.
    pub threshold_dbfs: f32,
    /// A challenger must be this much louder than the current speaker ...
    pub switch_margin_db: f32,
    /// ... for this long without a break to take over. Also how long the current speaker
    /// must be silent before the loudest other participant takes over.
    pub switch_after_ms: u32,
    /// After a change, no challenger may take over for this long (a silent speaker may).
    pub min_hold_ms: u32,
    /// Time constant of the exponential level smoothing (in the power domain); 0: none.
    pub smoothing_ms: u32,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        SpeakerConfig {
            threshold_dbfs: -45.0,
            switch_margin_db: 6.0,
            switch_after_ms: 400,
            min_hold_ms: 1000,
            smoothing_ms: 100,
        }
    }
}

/// Peak limiter applied to every output (full mix and each listener's mix).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LimiterConfig {
    /// Output peaks are held at or below this level (0 dBFS = 32767).
    pub threshold_dbfs: f32,
    /// Time constant of the gain recovery after the peak hold ends.
    pub release_ms: u32,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        LimiterConfig {
            threshold_dbfs: -1.0,
            release_ms: 200,
        }
    }
}
