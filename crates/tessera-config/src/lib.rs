//! Tessera's configuration: the TOML schema, its embedded default and its validation.
//!
//! Owns the serde types of the config file and the rules for valid values. Errors name the
//! file, the line and the key, and say what would be valid. Unknown keys are errors.
//! Must not start anything or touch media: other crates map these types onto their own.
//!
//! ```
//! use tessera_config::Config;
//! let tier = "[rooms]\ndefault_tier = \"low\"\n[tiers.low]\nwidth = 320\nheight = 180\nbitrate_kbps = 200\ncodec = \"vp8\"\n";
//! let cfg = Config::from_toml(&format!("{tier}fps = 10\n"), "ok.toml").unwrap();
//! assert_eq!(cfg.tiers["low"].fps, 10);
//! let err = Config::from_toml(&format!("{tier}fps = 0\n"), "bad.toml").unwrap_err();
//! assert_eq!(err.to_string(), "bad.toml:8: tiers.low.fps = 0: must be 1..=60");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tessera_types::{Rgb, VideoCodec};

mod locate;
mod validate;

/// The default configuration, exactly as `config/default.toml` in the repository.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Names of the layouts that exist without a `[layouts]` table.
pub const BUILTIN_LAYOUTS: [&str; 2] = ["grid", "speaker"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub network: NetworkConfig,
    pub rooms: RoomsConfig,
    pub video: VideoConfig,
    pub labels: LabelsConfig,
    pub placeholder: PlaceholderConfig,
    pub audio: AudioConfig,
    pub encoder: EncoderConfig,
    pub tiers: BTreeMap<String, TierConfig>,
    pub layouts: BTreeMap<String, LayoutConfig>,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub bandwidth: BandwidthConfig,
    pub logging: LoggingConfig,
    pub cluster: ClusterConfig,
    pub recording: RecordingConfig,
}

/// Recordings of a room's composite and full mix (docs/operations.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// Directory files are written to (created when missing).
    pub dir: String,
    /// `webm` (VP8 + Opus), `mp4` (H.264 + Opus) or `mkv` (the tier's codec + Opus).
    pub format: String,
    /// Tier recorded; "" = the room's default tier.
    pub tier: String,
    /// A command run (no shell) with the finished file's path as its last argument.
    pub on_complete: Vec<String>,
    /// A declared room's automatic recording is finished after the room has been empty
    /// this long.
    pub empty_close_secs: u32,
    /// Tiers with a recording get a keyframe at least this often (seeking).
    pub keyframe_interval_secs: u32,
    /// The ffmpeg that muxes the files.
    pub ffmpeg: String,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            dir: "recordings".into(),
            format: "webm".into(),
            tier: String::new(),
            on_complete: Vec::new(),
            empty_close_secs: 30,
            keyframe_interval_secs: 2,
            ffmpeg: "ffmpeg".into(),
        }
    }
}

/// Several nodes as one service, through Redis; `redis_url = ""` is a single node.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://[:password@]host:port[/db]`; "" = a single node (no cluster).
    pub redis_url: String,
    /// This node's name in the cluster: unique, 1..=64 of `A-Za-z0-9_.-`.
    pub node_id: String,
    /// The base URL (`http://host:port` or `https://host:port`) clients and other nodes
    /// use to reach this node.
    pub advertise_url: String,
    /// Shared by the nodes (at least 32 characters): signs node-to-node calls.
    pub secret: String,
    /// Share of this node's cores (0.1..=1.0) above which it takes no new rooms.
    pub max_load: f32,
    /// A draining node keeps its rooms at most this long before it shuts down, in s.
    pub drain_timeout_secs: u32,
    /// A node whose heartbeat stops is gone from the cluster after this long, in s (2..=10).
    pub node_ttl_secs: u32,
    /// Prefix of every Redis key, so that several clusters can share one Redis.
    pub key_prefix: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: String::new(),
            node_id: String::new(),
            advertise_url: String::new(),
            secret: String::new(),
            max_load: 0.8,
            drain_timeout_secs: 300,
            node_ttl_secs: 10,
            key_prefix: "tessera".into(),
        }
    }
}

impl ClusterConfig {
    /// Whether this node is part of a cluster (`redis_url` set).
    pub fn enabled(&self) -> bool {
        !self.redis_url.is_empty()
    }

    /// `redis_url` with any password replaced by `***`, for logs.
    pub fn redis_url_redacted(&self) -> String {
        redact_url_password(&self.redis_url)
    }
}

/// `scheme://user:password@host` -> `scheme://user:***@host`; other URLs unchanged.
fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((auth, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    let user = auth.split_once(':').map_or(auth, |(u, _)| u);
    if auth.contains(':') {
        format!("{scheme}://{user}:***@{host}")
    } else {
        format!("{scheme}://***@{host}")
    }
}

/// Never prints the secret or the Redis password.
impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis_url", &self.redis_url_redacted())
            .field("node_id", &self.node_id)
            .field("advertise_url", &self.advertise_url)
            .field(
                "secret",
                &format_args!(
                    "{}",
                    if self.secret.is_empty() {
                        "\"\""
                    } else {
                        "<redacted>"
                    }
                ),
            )
            .field("max_load", &self.max_load)
            .field("drain_timeout_secs", &self.drain_timeout_secs)
            .field("node_ttl_secs", &self.node_ttl_secs)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// Per-client and per-server limits against abuse; each refusal is counted in `/metrics`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_participants_total: u32,
    pub ws_max_message_bytes: u32,
    pub ws_messages_per_sec: u32,
    pub ws_message_burst: u32,
    pub sdp_max_bytes: u32,
    pub joins_per_minute_per_ip: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_participants_total: 500,
            ws_max_message_bytes: 65_536,
            ws_messages_per_sec: 20,
            ws_message_burst: 100,
            sdp_max_bytes: 32_768,
            joins_per_minute_per_ip: 60,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BandwidthConfig {
    pub enabled: bool,
    pub audio_only: bool,
    pub down_loss_pct: f32,
    pub up_loss_pct: f32,
    pub down_after_ms: u32,
    pub up_after_ms: u32,
    pub up_headroom: f32,
    pub start_kbps: u32,
    pub probe_interval_ms: u32,
    pub sender_hints: bool,
    pub hint_bits_per_pixel: f32,
}

impl Default for BandwidthConfig {
    fn default() -> Self {
        BandwidthConfig {
            enabled: true,
            audio_only: true,
            down_loss_pct: 10.0,
            up_loss_pct: 2.0,
            down_after_ms: 1000,
            up_after_ms: 1500,
            up_headroom: 1.15,
            start_kbps: 600,
            probe_interval_ms: 4000,
            sender_hints: true,
            hint_bits_per_pixel: 0.1,
        }
    }
}

#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub admin_token: String,
    /// HMAC key for join tokens; "" means joins need no token.
    pub token_secret: String,
}

/// Never prints the secrets, only whether they are set.
impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |s: &str| if s.is_empty() { "\"\"" } else { "<redacted>" };
        f.debug_struct("AuthConfig")
            .field("admin_token", &format_args!("{}", set(&self.admin_token)))
            .field("token_secret", &format_args!("{}", set(&self.token_secret)))
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    pub web_dir: String,
    pub tls_cert: String,
    pub tls_key: String,
    pub tls_self_signed: bool,
    /// Origins allowed to call the WHIP and WHEP endpoints from a browser page (CORS):
    /// `"*"` for any, or origins like `"https://studio.example.org"`; [] = none.
    pub cors_origins: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Addresses media is received on; empty = every interface address of the machine.
    pub host_ips: Vec<String>,
    pub public_ip: String,
    /// The one UDP port every participant's media uses, on each host address (0 = OS-chosen).
    pub udp_port: u16,
    /// The ICE-TCP port (passive, RFC 6544) on each host address, for networks that block
    /// UDP; 0 = off.
    pub tcp_port: u16,
    /// Replaced by `udp_port`; a config that still sets them is refused with that name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_port_min: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_port_max: Option<u16>,
    pub ice_disconnected_timeout_ms: u32,
    pub ice_failed_timeout_ms: u32,
    pub ice_servers: Vec<IceServerConfig>,
    /// coturn's `static-auth-secret`: when set, every client gets its own time-limited
    /// credentials for the `turn:`/`turns:` entries of `ice_servers` (TURN REST scheme).
    pub turn_secret: String,
    /// How long those credentials stay valid, in seconds.
    pub turn_credential_ttl_secs: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServerConfig {
    pub urls: Vec<String>,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub credential: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsConfig {
    pub default_layout: String,
    pub default_tier: String,
    pub max_participants: u32,
    pub max_rooms: u32,
    pub idle_timeout_secs: u32,
    pub auto_create: bool,
    /// The richest tier a receiver of any room may get ("" = no cap).
    pub max_tier: String,
    /// The layout while a screen is shared (the share in its speaker tile). The default,
    /// "presenter", falls back to "speaker" in a config without that layout.
    pub share_layout: String,
    /// Frame rate a shared screen is asked to send (text wants pixels, not motion).
    pub share_fps: u32,
    /// Most video encodes one room runs for viewers' own layout choices; a choice that
    /// would need another gets the room's layout (`layout_refused`).
    pub max_encodes_per_room: u32,
    pub declared: BTreeMap<String, DeclaredRoom>,
}

/// A room named in the config, with its own layout, tier and size.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredRoom {
    #[serde(default)]
    pub layout: Option<String>,
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub max_participants: Option<u32>,
    #[serde(default)]
    pub max_tier: Option<String>,
    /// Recorded whenever it has people in it ([recording]).
    #[serde(default)]
    pub record: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    Letterbox,
    Crop,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoConfig {
    pub background: String,
    pub gap_px: u32,
    pub fit: Fit,
    pub placeholder_after_ms: u32,
    pub speaker_highlight: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelsConfig {
    pub enabled: bool,
    pub font: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlaceholderConfig {
    pub image: String,
    pub colour: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
    pub bitrate_kbps: u32,
    pub mix_minus: bool,
    pub jitter_buffer_ms: u32,
    pub speaker: SpeakerConfig,
    pub limiter: LimiterConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpeakerConfig {
    pub threshold_dbfs: f32,
    pub switch_margin_db: f32,
    pub switch_after_ms: u32,
    pub min_hold_ms: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimiterConfig {
    pub threshold_dbfs: f32,
    pub release_ms: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncoderConfig {
    pub vp8_cpu_used: i32,
    pub threads: u32,
    pub keyframe_min_interval_ms: u32,
    pub keyframe_request_interval_ms: u32,
    pub receiver_keyframe_interval_ms: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecName {
    H264,
    Vp8,
}

impl From<CodecName> for VideoCodec {
    fn from(c: CodecName) -> VideoCodec {
        match c {
            CodecName::H264 => VideoCodec::H264,
            CodecName::Vp8 => VideoCodec::Vp8,
        }
    }
}

/// One output tier: what the composite is encoded as for the participants in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    pub codec: CodecName,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutConfig {
    pub tiles: Vec<TileConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TileConfig {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    #[serde(default)]
    pub z: i32,
    #[serde(default)]
    pub speaker: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            web_dir: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_self_signed: false,
            cors_origins: vec!["*".into()],
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            host_ips: Vec::new(),
            public_ip: String::new(),
            udp_port: 8080,
            tcp_port: 8081,
            udp_port_min: None,
            udp_port_max: None,
            ice_disconnected_timeout_ms: 5000,
            ice_failed_timeout_ms: 10_000,
            ice_servers: Vec::new(),
            turn_secret: String::new(),
            turn_credential_ttl_secs: 86_400,
        }
    }
}

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            default_layout: "grid".into(),
            default_tier: "default".into(),
            max_participants: 16,
            max_rooms: 100,
            idle_timeout_secs: 30,
            auto_create: true,
            max_tier: String::new(),
            share_layout: "presenter".into(),
            share_fps: 5,
            max_encodes_per_room: 4,
            declared: BTreeMap::new(),
        }
    }
}

impl Default for VideoConfig {
    fn default() -> Self {
        VideoConfig {
            background: "#1c1f26".into(),
            gap_px: 4,
            fit: Fit::Letterbox,
            placeholder_after_ms: 2000,
            speaker_highlight: "#f5b400".into(),
        }
    }
}

impl Default for LabelsConfig {
    fn default() -> Self {
        LabelsConfig {
            enabled: true,
            font: "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf".into(),
        }
    }
}

impl Default for PlaceholderConfig {
    fn default() -> Self {
        PlaceholderConfig {
            image: String::new(),
            colour: "#3b4252".into(),
        }
    }
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            bitrate_kbps: 32,
            mix_minus: true,
            jitter_buffer_ms: 100,
            speaker: SpeakerConfig::default(),
            limiter: LimiterConfig::default(),
        }
    }
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        SpeakerConfig {
            threshold_dbfs: -45.0,
            switch_margin_db: 6.0,
            switch_after_ms: 400,
            min_hold_ms: 1000,
        }
    }
}

impl Default for LimiterConfig {
    fn default() -> Self {
        LimiterConfig {
            threshold_dbfs: -1.0,
            release_ms: 200,
        }
    }
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            vp8_cpu_used: -12,
            threads: 1,
            keyframe_min_interval_ms: 500,
            keyframe_request_interval_ms: 1000,
            receiver_keyframe_interval_ms: 10000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let tier = |width, height, fps, bitrate_kbps| TierConfig {
            width,
            height,
            fps,
            bitrate_kbps,
            codec: CodecName::Vp8,
        };
        let tile = |x, y, w, h, z, speaker| TileConfig {
            x,
            y,
            w,
            h,
            z,
            speaker,
        };
        Config {
            server: ServerConfig::default(),
            network: NetworkConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            bandwidth: BandwidthConfig::default(),
            logging: LoggingConfig::default(),
            cluster: ClusterConfig::default(),
            recording: RecordingConfig::default(),
            rooms: RoomsConfig::default(),
            video: VideoConfig::default(),
            labels: LabelsConfig::default(),
            placeholder: PlaceholderConfig::default(),
            audio: AudioConfig::default(),
            encoder: EncoderConfig::default(),
            tiers: BTreeMap::from([
                ("default".to_string(), tier(1280, 720, 25, 1500)),
                ("low".to_string(), tier(640, 360, 15, 400)),
                ("tiny".to_string(), tier(320, 180, 15, 120)),
            ]),
            layouts: BTreeMap::from([
                (
                    "presenter".to_string(),
                    LayoutConfig {
                        tiles: vec![
                            tile(0.0, 0.0, 0.75, 1.0, 0, true),
                            tile(0.75, 0.0, 0.25, 0.25, 0, false),
                            tile(0.75, 0.25, 0.25, 0.25, 0, false),
                            tile(0.75, 0.5, 0.25, 0.25, 0, false),
                            tile(0.75, 0.75, 0.25, 0.25, 0, false),
                        ],
                    },
                ),
                (
                    "pip".to_string(),
                    LayoutConfig {
                        tiles: vec![
                            tile(0.0, 0.0, 1.0, 1.0, 0, true),
                            tile(0.72, 0.70, 0.25, 0.25, 1, false),
                        ],
                    },
                ),
            ]),
        }
    }
}

/// One thing wrong with a config file.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// 1-based line of the offending key, when known.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `tiers.low.fps`; empty for syntax errors.
    pub key: String,
    pub message: String,
}

/// A config that could not be read, parsed or validated. Lists every problem found.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    pub origin: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.origin)?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
            }
            write!(f, ": ")?;
            if !p.key.is_empty() && !p.message.starts_with(&p.key) {
                write!(f, "{}: ", p.key)?;
            }
            write!(f, "{}", p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses and validates TOML text; `origin` names it in errors (usually the path).
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError {
            origin: origin.to_string(),
            problems: vec![locate::serde_problem(text, &e)],
        })?;
        let problems: Vec<Problem> = cfg
            .problems()
            .into_iter()
            .map(|(key, message)| Problem {
                line: locate::line_of_key(text, &key),
                key,
                message,
            })
            .collect();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError {
                origin: origin.to_string(),
                problems,
            })
        }
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            problems: vec![Problem {
                line: None,
                key: String::new(),
                message: format!("cannot read: {e}"),
            }],
        })?;
        Config::from_toml(&text, &origin)
    }

    /// The embedded default.
    pub fn embedded() -> Config {
        Config::from_toml(DEFAULT_TOML, "<embedded default>")
            .expect("the embedded default config is valid (tested)")
    }

    /// Every value that parses but is out of range, as (dotted key, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        validate::problems(self)
    }

    /// Whether `name` is a layout this config can use.
    pub fn has_layout(&self, name: &str) -> bool {
        BUILTIN_LAYOUTS.contains(&name) || self.layouts.contains_key(name)
    }

    /// The layout shown while a screen is shared: `rooms.share_layout`, or "speaker" when
    /// that is the default "presenter" and the config has no such layout.
    pub fn share_layout(&self) -> &str {
        let name = self.rooms.share_layout.as_str();
        if name == "presenter" && !self.has_layout(name) {
            "speaker"
        } else {
            name
        }
    }
}

/// Parses `#rrggbb` for colour keys (validation guarantees the shape).
pub fn colour(value: &str) -> Option<Rgb> {
    Rgb::parse_hex(value)
}

#[cfg(test)]
mod tests;
