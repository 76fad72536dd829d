//! One output tier: a compositor, an encoder (while someone receives it) and its clock.

use std::time::{Duration, Instant};

use tessera_codec::{VideoEncoder, VideoEncoderConfig, VIDEO_CLOCK_HZ};
use tessera_compose::Compositor;

use crate::room::TierStats;
use crate::settings::TierSettings;

pub struct Tier {
    pub settings: TierSettings,
    pub compositor: Compositor,
    pub encoder: Option<Box<dyn VideoEncoder>>,
    /// Index of the next video tick on the room clock.
    pub next_tick: u64,
    /// The next encoded frame must be a keyframe as soon as the rate limit allows.
    pub keyframe_wanted: bool,
    pub last_forced_keyframe: Option<Instant>,
    pub stats: TierStats,
    /// Tick 0 of this tier: the room's start, or when its frame rate last changed.
    pub epoch: Instant,
    /// The 90 kHz timestamp of tick 0 (non-zero after a frame-rate change).
    pub pts_base: u64,
}

impl Tier {
    /// When tick `k` of this tier falls, counted from its epoch.
    pub fn tick_time(&self, k: u64) -> Instant {
        self.epoch + Duration::from_nanos(k * 1_000_000_000 / self.settings.fps as u64)
    }

    /// The 90 kHz timestamp of tick `k`: exact multiples of the frame period, never drifting.
    pub fn pts_90k(&self, k: u64) -> u64 {
        self.pts_base + k * VIDEO_CLOCK_HZ / self.settings.fps as u64
    }

    /// First tick at or after `now`.
    pub fn tick_at_or_after(&self, now: Instant) -> u64 {
        let ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        (ns * self.settings.fps as u64).div_ceil(1_000_000_000)
    }

    pub fn encoder_config(&self, vp8_cpu_used: i32, threads: u32) -> VideoEncoderConfig {
        VideoEncoderConfig {
            codec: self.settings.id.codec,
            width: self.settings.width,
            height: self.settings.height,
            fps: self.settings.fps,
            bitrate_bps: self.settings.bitrate_bps,
            vp8_cpu_used,
            threads,
        }
    }

    /// Continues the clock at a new frame rate from the next tick on: timestamps stay
    /// monotonic and the new rate's ticks are exact multiples from there.
    pub fn set_fps(&mut self, fps: u32) {
        if fps == self.settings.fps {
            return;
        }
        let k = self.next_tick;
        self.epoch = self.tick_time(k);
        self.pts_base = self.pts_90k(k);
        self.next_tick = 0;
        self.settings.fps = fps;
    }

    /// Whether the next frame is forced to a keyframe now (rate-limited, never lost).
    pub fn take_keyframe(&mut self, now: Instant, min_interval: Duration) -> bool {
        if !self.keyframe_wanted {
            return false;
        }
        let allowed = self
            .last_forced_keyframe
            .is_none_or(|last| now.saturating_duration_since(last) >= min_interval);
        if allowed {
            self.keyframe_wanted = false;
            self.last_forced_keyframe = Some(now);
        }
        allowed
    }
}
