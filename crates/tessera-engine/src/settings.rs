//! What a room needs to know, mapped from the config file onto the media crates' own types.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tessera_compose::{ComposeConfig, CustomLayout, CustomTile, Fit, LayoutSpec};
use tessera_config::Config;
use tessera_mixer::{LimiterConfig, MixerConfig, SpeakerConfig};
use tessera_types::{Rgb, VideoCodec};

use crate::EngineError;

/// Which shared encode: a config tier (`[tiers.NAME]`) in one codec, drawn in the room's
/// layout or in a layout some viewers chose. Cheap to clone (its strings are shared).
///
/// Shown as `NAME` or `NAME@LAYOUT`; the codec is told apart by its own field wherever a
/// tier is reported.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TierId {
    /// The config tier it is drawn from.
    pub name: Arc<str>,
    /// The codec it is encoded in: the config tier's own, or the other one for clients
    /// that lack it.
    pub codec: VideoCodec,
    /// A layout of its own (`None`: the room's).
    pub layout: Option<Arc<str>>,
}

impl TierId {
    pub fn new(name: &str, codec: VideoCodec) -> TierId {
        TierId {
            name: name.into(),
            codec,
            layout: None,
        }
    }

    /// This tier in another codec.
    pub fn with_codec(&self, codec: VideoCodec) -> TierId {
        TierId {
            codec,
            ..self.clone()
        }
    }

    /// This tier drawn in layout `layout`.
    pub fn in_layout(&self, layout: &str) -> TierId {
        TierId {
            layout: Some(layout.into()),
            ..self.clone()
        }
    }

    /// This tier in the room's layout.
    pub fn without_layout(&self) -> TierId {
        TierId {
            layout: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for TierId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(l) = &self.layout {
            write!(f, "@{l}")?;
        }
        Ok(())
    }
}

/// One output tier: canvas size, frame rate, bitrate and codec of a shared encode.
#[derive(Clone, Debug, PartialEq)]
pub struct TierSettings {
    pub id: TierId,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_bps: u32,
    /// A layout of its own (a variant some viewers chose); `None`: the room's layout
    /// (`rooms.share_layout` while a screen is shared).
    pub layout: Option<LayoutSpec>,
}

/// Everything a [`crate::Room`] is configured with. Build it with [`RoomSettings::from_config`].
#[derive(Clone, Debug)]
pub struct RoomSettings {
    pub layout: LayoutSpec,
    /// The layout tiers without a layout of their own show while a screen is shared
    /// (`rooms.share_layout`); the share sits in its speaker tile.
    pub share_layout: LayoutSpec,
    /// Canvas size in `compose` is replaced by each tier's own size.
    pub compose: ComposeConfig,
    pub tiers: Vec<TierSettings>,
    pub mixer: MixerConfig,
    pub audio_bitrate_bps: u32,
    pub jitter_buffer: Duration,
    pub placeholder_after: Duration,
    pub vp8_cpu_used: i32,
    pub encoder_threads: u32,
    pub keyframe_min_interval: Duration,
    pub keyframe_request_interval: Duration,
    /// Encode these tiers even with nobody receiving them (offline render).
    pub always_encode: Vec<TierId>,
    /// Emit the full mix even with no listener that needs it (offline render, WHEP).
    pub always_full_mix: bool,
    /// Least time between two keyframes one receiver may force on a tier it shares.
    /// (Used by the room's owner, which routes frames to receivers.)
    pub receiver_keyframe_interval: Duration,
    /// A tier that a recording or stream receives gets a keyframe at least this often
    /// (`recording.keyframe_interval_secs`; also used by the room's owner).
    pub egress_keyframe_interval: Duration,
    /// Tell senders the largest tile they occupy (`bandwidth.sender_hints`), asking for
    /// `hint_bits_per_pixel` per pixel per frame.
    pub sender_hints: bool,
    pub hint_bits_per_pixel: f32,
    /// The frame rate a shared screen is asked for (`rooms.share_fps`; used by the owner).
    pub share_fps: u32,
    /// Most encodes viewers' own layout choices may bring the room to
    /// (`rooms.max_encodes_per_room`; used by the owner).
    pub max_encodes: usize,
}

/// Font and placeholder image bytes named by the config, read from disk by the caller.
#[derive(Clone, Debug, Default)]
pub struct Assets {
    pub font: Option<Vec<u8>>,
    pub placeholder_image: Option<Vec<u8>>,
}

impl Assets {
    /// Reads the files the config names. This is the engine's only IO, done once at set-up.
    pub fn load(cfg: &Config) -> Result<Assets, EngineError> {
        let read = |key: &'static str, path: &str| {
            std::fs::read(Path::new(path)).map_err(|e| EngineError::Asset {
                key,
                path: path.to_string(),
                reason: e.to_string(),
            })
        };
        Ok(Assets {
            font: if cfg.labels.enabled || cfg.placeholder.image.is_empty() {
                Some(read("labels.font", &cfg.labels.font)?)
            } else {
                None
            },
            placeholder_image: if cfg.placeholder.image.is_empty() {
                None
            } else {
                Some(read("placeholder.image", &cfg.placeholder.image)?)
            },
        })
    }
}

/// Maps a layout name (built-in or `[layouts.NAME]`) to a layout.
pub fn layout_by_name(cfg: &Config, name: &str) -> Result<LayoutSpec, EngineError> {
    match name {
        "grid" => Ok(LayoutSpec::Grid),
        "speaker" => Ok(LayoutSpec::Speaker),
        _ => {
            let l = cfg
                .layouts
                .get(name)
                .ok_or_else(|| EngineError::UnknownLayout {
                    name: name.to_string(),
                    known: std::iter::once("grid".to_string())
                        .chain(std::iter::once("speaker".to_string()))
                        .chain(cfg.layouts.keys().cloned())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            Ok(LayoutSpec::Custom(CustomLayout {
                name: name.to_string(),
                tiles: l
                    .tiles
                    .iter()
                    .map(|t| CustomTile {
                        x: t.x,
                        y: t.y,
                        w: t.w,
                        h: t.h,
                        z: t.z,
                        speaker: t.speaker,
                    })
                    .collect(),
            }))
        }
    }
}

fn colour(v: &str) -> Rgb {
    // Validation already checked the shape; a bad value here can only come from code.
    Rgb::parse_hex(v).unwrap_or(Rgb::BLACK)
}

impl RoomSettings {
    /// Settings for a room using `layout` and the config's tiers.
    pub fn from_config(
        cfg: &Config,
        layout: &str,
        assets: &Assets,
    ) -> Result<RoomSettings, EngineError> {
        let first = cfg
            .tiers
            .get(&cfg.rooms.default_tier)
            .or_else(|| cfg.tiers.values().next())
            .ok_or(EngineError::NoTiers)?;
        let compose = ComposeConfig {
            width: first.width,
            height: first.height,
            background: colour(&cfg.video.background),
            gap_px: cfg.video.gap_px,
            fit: match cfg.video.fit {
                tessera_config::Fit::Letterbox => Fit::Letterbox,
                tessera_config::Fit::Crop => Fit::Crop,
            },
            labels: cfg.labels.enabled,
            label_font: assets.font.clone(),
            placeholder_image: assets.placeholder_image.clone(),
            placeholder_colour: colour(&cfg.placeholder.colour),
            speaker_highlight: match cfg.video.speaker_highlight.as_str() {
                "none" => None,
                c => Some(colour(c)),
            },
        };
        let a = &cfg.audio;
        let mixer = MixerConfig {
            mix_minus: a.mix_minus,
            speaker: SpeakerConfig {
                threshold_dbfs: a.speaker.threshold_dbfs,
                switch_margin_db: a.speaker.switch_margin_db,
                switch_after_ms: a.speaker.switch_after_ms,
                min_hold_ms: a.speaker.min_hold_ms,
                ..SpeakerConfig::default()
            },
            limiter: LimiterConfig {
                threshold_dbfs: a.limiter.threshold_dbfs,
                release_ms: a.limiter.release_ms,
            },
        };
        Ok(RoomSettings {
            layout: layout_by_name(cfg, layout)?,
            share_layout: layout_by_name(cfg, cfg.share_layout())?,
            compose,
            tiers: cfg
                .tiers
                .iter()
                .map(|(name, t)| TierSettings {
                    id: TierId::new(name, t.codec.into()),
                    width: t.width,
                    height: t.height,
                    fps: t.fps,
                    bitrate_bps: t.bitrate_kbps * 1000,
                    layout: None,
                })
                .collect(),
            mixer,
            audio_bitrate_bps: a.bitrate_kbps * 1000,
            jitter_buffer: Duration::from_millis(a.jitter_buffer_ms as u64),
            placeholder_after: Duration::from_millis(cfg.video.placeholder_after_ms as u64),
            vp8_cpu_used: cfg.encoder.vp8_cpu_used,
            encoder_threads: cfg.encoder.threads,
            keyframe_min_interval: Duration::from_millis(
                cfg.encoder.keyframe_min_interval_ms as u64,
            ),
            keyframe_request_interval: Duration::from_millis(
                cfg.encoder.keyframe_request_interval_ms as u64,
            ),
            always_encode: Vec::new(),
            always_full_mix: false,
            receiver_keyframe_interval: Duration::from_millis(
                cfg.encoder.receiver_keyframe_interval_ms as u64,
            ),
            egress_keyframe_interval: Duration::from_secs(
                cfg.recording.keyframe_interval_secs as u64,
            ),
            sender_hints: cfg.bandwidth.sender_hints,
            hint_bits_per_pixel: cfg.bandwidth.hint_bits_per_pixel,
            share_fps: cfg.rooms.share_fps,
            max_encodes: cfg.rooms.max_encodes_per_room as usize,
        })
    }

    pub fn tier_index(&self, id: &TierId) -> Option<usize> {
        self.tiers.iter().position(|t| t.id == *id)
    }
}
