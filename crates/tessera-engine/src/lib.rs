//! The room engine: Tessera's MCU as a sans-IO state machine.
//!
//! Owns one room's media state: every participant's decoders and audio queue, a compositor
//! and an encoder per output tier in use, the audio mixer and one Opus encoder per listener.
//! Encoded frames with arrival times go in through [`Room::handle_input`]; composite video
//! per tier, audio per listener and requests for keyframes come out of [`Room::poll_output`].
//! The room composes and mixes on its own clock: [`Room::poll_timeout`] says when it next
//! needs [`Room::handle_timeout`], and output timestamps count the room's ticks.
//!
//! Must not read the clock, sleep, spawn threads or touch sockets: time is always passed in,
//! so tests run a whole room faster than real time. (The one exception is
//! [`Assets::load`], which reads the font and placeholder files at set-up.)
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use tessera_engine::{Assets, Input, JoinOptions, Output, Room, RoomSettings};
//! use tessera_types::ParticipantId;
//!
//! let cfg = tessera_config::Config::embedded();
//! let mut settings = RoomSettings::from_config(&cfg, "grid", &Assets::load(&cfg).unwrap()).unwrap();
//! settings.always_encode = vec![settings.tiers[0].id.clone()];
//! let t0 = Instant::now();
//! let mut room = Room::new(settings, t0).unwrap();
//! room.handle_input(Input::Join { id: ParticipantId(1), name: "Ann".into(), options: JoinOptions::default() }, t0);
//! let now = t0 + Duration::from_millis(40);
//! room.handle_timeout(now);
//! while let Some(out) = room.poll_output() {
//!     if let Output::Video { tier, frame } = out { println!("{tier}: {} bytes", frame.data.len()); }
//! }
//! ```

mod bandwidth;
mod participant;
mod room;
mod settings;
mod tier;

use std::sync::Arc;

pub use bandwidth::{BandwidthConfig, BandwidthController, EstimateSource, Feedback, Probe, Rung};
pub use room::{ParticipantStats, Room, RoomStats, TierStats};
pub use settings::{layout_by_name, Assets, RoomSettings, TierId, TierSettings};
pub use tessera_codec::EncodedVideo;
pub use tessera_compose::LayoutSpec;
use tessera_types::{ParticipantId, VideoCodec};

/// What a participant sends and receives, fixed at join.
#[derive(Clone, Debug, PartialEq)]
pub struct JoinOptions {
    /// Sends a camera: gets a tile (audio-only senders get a placeholder tile).
    pub sends_video: bool,
    /// Sends a microphone: contributes to the mix and hears a mix-minus.
    pub sends_audio: bool,
    /// Receives the composite of this tier (one of `settings.tiers`); `None` receives no video.
    pub receive_tier: Option<TierId>,
    /// Receives audio: its mix-minus if it sends audio, else the shared full mix.
    pub receives_audio: bool,
}

impl Default for JoinOptions {
    fn default() -> Self {
        JoinOptions {
            sends_video: true,
            sends_audio: true,
            receive_tier: None,
            receives_audio: false,
        }
    }
}

/// Everything the outside world tells a room. Arrival time is the `now` passed with it.
#[derive(Debug)]
pub enum Input {
    Join {
        id: ParticipantId,
        name: String,
        options: JoinOptions,
    },
    Leave {
        id: ParticipantId,
    },
    /// One encoded access unit from a participant's camera.
    Video {
        id: ParticipantId,
        codec: VideoCodec,
        data: Vec<u8>,
    },
    /// One Opus packet from a participant's microphone.
    Audio {
        id: ParticipantId,
        packet: Vec<u8>,
    },
    /// Raw 48 kHz mono samples from a participant (files that are not Opus, tests).
    AudioPcm {
        id: ParticipantId,
        samples: Vec<i16>,
    },
    SetMuted {
        id: ParticipantId,
        muted: bool,
    },
    SetGain {
        id: ParticipantId,
        gain: f32,
    },
    /// The participant turned its camera off (or on): its tile shows the placeholder.
    SetCameraOff {
        id: ParticipantId,
        off: bool,
    },
    /// A receiver of `tier` lost its picture (PLI/FIR): the tier's next frame is a keyframe.
    RequestKeyframe {
        tier: TierId,
    },
    /// A receiver of `tier` can now decode (its connection is up): the next frame is a
    /// keyframe, not held back by `keyframe_min_interval`, since the last one went nowhere.
    ReceiverReady {
        tier: TierId,
    },
    SetLayout(LayoutSpec),
    /// New settings from a config reload, applied without dropping anyone.
    Reconfigure(Box<RoomSettings>),
    /// Show this participant in the layout's speaker tile whoever speaks (`None`: the
    /// active speaker again).
    Pin(Option<ParticipantId>),
    /// Move a receiver to another tier (a name under `settings.tiers`; its first frame
    /// there is a keyframe), or to no video at all (`None`: audio only).
    SetReceiveTier {
        id: ParticipantId,
        tier: Option<TierId>,
    },
    /// The loss a listener reports on its audio, in percent: its Opus encoder (or the
    /// shared full-mix one, for the worst of its listeners) spends more on in-band FEC.
    SetAudioLoss {
        id: ParticipantId,
        loss_pct: u8,
    },
    /// This participant is a shared screen (`None`: nobody shares): tiers without a layout
    /// of their own show `settings.share_layout` with it in the speaker tile, letterboxed
    /// whatever `fit` says, so nothing of it is cut.
    SetShare(Option<ParticipantId>),
    /// More tiers (variants with a layout of their own); names already known are ignored.
    AddTiers(Vec<TierSettings>),
}

/// Whose ears an encoded audio packet is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Listener {
    /// A participant that sends audio: the mix without its own voice.
    Participant(ParticipantId),
    /// The mix of everyone, shared by every listener that contributes nothing.
    FullMix,
}

/// Everything a room tells the outside world.
#[derive(Debug)]
pub enum Output {
    /// One encoded composite frame, shared by every receiver of `tier`.
    Video {
        tier: TierId,
        frame: Arc<EncodedVideo>,
    },
    /// 20 ms of Opus for one listener; `pts_48k` counts the room's audio ticks.
    Audio {
        listener: Listener,
        packet: Vec<u8>,
        pts_48k: u64,
    },
    /// The room cannot decode this participant's video until it sends a keyframe (send PLI).
    KeyframeNeeded {
        participant: ParticipantId,
    },
    ActiveSpeakerChanged {
        participant: Option<ParticipantId>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{key} = {path:?}: cannot read: {reason}")]
    Asset {
        key: &'static str,
        path: String,
        reason: String,
    },
    #[error("unknown layout {name:?}: expected one of {known}")]
    UnknownLayout { name: String, known: String },
    #[error("no output tiers are configured")]
    NoTiers,
    #[error("tier {tier}: {source}")]
    Encoder {
        tier: String,
        source: tessera_codec::CodecError,
    },
    #[error("compositor: {0}")]
    Compose(#[from] tessera_compose::ComposeError),
    #[error("audio encoder: {0}")]
    AudioEncoder(tessera_codec::CodecError),
}
