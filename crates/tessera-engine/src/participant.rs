//! One participant's inbound media: decoders, last picture, audio queue.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tessera_codec::{AudioDecoder, AudioEncoder, VideoDecoder, VideoFrame, FRAME_SAMPLES};
use tessera_types::{ParticipantId, VideoCodec};

use crate::room::ParticipantStats;
use crate::JoinOptions;

/// Audio is played once this much is queued, so that ordinary jitter does not underrun.
pub const AUDIO_PREBUFFER_SAMPLES: usize = 2 * FRAME_SAMPLES;
/// After this many ticks without audio a participant counts as stopped (no more concealment).
const MAX_CONCEAL_TICKS: u32 = 3;

pub struct Participant {
    pub id: ParticipantId,
    pub name: String,
    pub options: JoinOptions,
    pub receive_tier: Option<usize>,
    pub video: Option<(VideoCodec, Box<dyn VideoDecoder>)>,
    pub last_frame: Option<VideoFrame>,
    pub last_frame_at: Option<Instant>,
    /// A keyframe is needed; `KeyframeNeeded` goes out when the rate limit allows.
    pub keyframe_wanted: bool,
    /// Camera turned off by the participant: show the placeholder.
    pub camera_off: bool,
    pub last_keyframe_request: Option<Instant>,
    pub audio_decoder: Option<Box<dyn AudioDecoder>>,
    pub audio_queue: VecDeque<i16>,
    pub playing: bool,
    pub conceal_ticks: u32,
    /// Encodes this participant's mix-minus (only for participants that send audio).
    pub audio_encoder: Option<Box<dyn AudioEncoder>>,
    pub stats: ParticipantStats,
    /// The loss this participant reports on its audio, in percent (tunes Opus FEC).
    pub audio_loss_pct: u8,
    scratch: Vec<i16>,
}

impl Participant {
    pub fn new(
        id: ParticipantId,
        name: String,
        options: JoinOptions,
        receive_tier: Option<usize>,
    ) -> Participant {
        Participant {
            id,
            name,
            options,
            receive_tier,
            video: None,
            last_frame: None,
            last_frame_at: None,
            keyframe_wanted: false,
            last_keyframe_request: None,
            audio_decoder: None,
            audio_queue: VecDeque::new(),
            playing: false,
            conceal_ticks: 0,
            audio_encoder: None,
            camera_off: false,
            stats: ParticipantStats::default(),
            audio_loss_pct: 0,
            scratch: Vec::with_capacity(FRAME_SAMPLES * 6),
        }
    }

    /// Has a tile in the layout: anyone who sends media (audio-only shows a placeholder).
    pub fn has_tile(&self) -> bool {
        self.options.sends_video || self.options.sends_audio
    }

    /// The picture to show, or `None` for the placeholder once it is older than `after`.
    pub fn tile_frame(&self, now: Instant, after: Duration) -> Option<&VideoFrame> {
        if self.camera_off {
            return None;
        }
        match (&self.last_frame, self.last_frame_at) {
            (Some(f), Some(at)) if now.saturating_duration_since(at) < after => Some(f),
            _ => None,
        }
    }

    /// Whether a `KeyframeNeeded` may go out now (rate limit), marking it sent if so.
    pub fn take_keyframe_request(&mut self, now: Instant, interval: Duration) -> bool {
        if !self.keyframe_wanted {
            return false;
        }
        let allowed = self
            .last_keyframe_request
            .is_none_or(|last| now.saturating_duration_since(last) >= interval);
        if allowed {
            self.keyframe_wanted = false;
            self.last_keyframe_request = Some(now);
            self.stats.keyframe_requests += 1;
        } else {
            self.stats.keyframe_requests_throttled += 1;
        }
        allowed
    }

    /// Queues decoded samples; the oldest are dropped past `max_samples` (the jitter buffer).
    pub fn queue_audio(&mut self, samples: &[i16], max_samples: usize) {
        self.audio_queue.extend(samples.iter().copied());
        let excess = self
            .audio_queue
            .len()
            .saturating_sub(max_samples.max(AUDIO_PREBUFFER_SAMPLES));
        if excess > 0 {
            self.audio_queue.drain(..excess);
            self.stats.audio_samples_dropped += excess as u64;
        }
    }

    /// Decodes one Opus packet into the queue; errors are counted, never fatal.
    pub fn decode_audio(&mut self, packet: &[u8], max_samples: usize) {
        if self.audio_decoder.is_none() {
            match tessera_codec::new_audio_decoder() {
                Ok(d) => self.audio_decoder = Some(d),
                Err(_) => {
                    self.stats.audio_decode_errors += 1;
                    return;
                }
            }
        }
        let mut pcm = std::mem::take(&mut self.scratch);
        let result = self
            .audio_decoder
            .as_mut()
            .map(|d| d.decode(packet, &mut pcm));
        match result {
            Some(Ok(())) => {
                self.stats.audio_packets += 1;
                self.queue_audio(&pcm, max_samples);
            }
            _ => self.stats.audio_decode_errors += 1,
        }
        self.scratch = pcm;
    }

    /// Takes this tick's 20 ms into `out`; `false` means the participant contributes nothing.
    pub fn pull_audio(&mut self, out: &mut Vec<i16>) -> bool {
        out.clear();
        if !self.playing {
            if self.audio_queue.len() < AUDIO_PREBUFFER_SAMPLES {
                return false;
            }
            self.playing = true;
        }
        if self.audio_queue.len() >= FRAME_SAMPLES {
            self.conceal_ticks = 0;
            out.extend(self.audio_queue.drain(..FRAME_SAMPLES));
            return true;
        }
        // Underrun: a short gap is concealed, a long one means the sender stopped.
        self.stats.audio_underruns += 1;
        self.conceal_ticks += 1;
        if self.conceal_ticks > MAX_CONCEAL_TICKS {
            self.playing = false;
            return false;
        }
        out.extend(self.audio_queue.drain(..));
        let missing = FRAME_SAMPLES - out.len();
        let mut pcm = std::mem::take(&mut self.scratch);
        let concealed = self
            .audio_decoder
            .as_mut()
            .is_some_and(|d| d.conceal(missing, &mut pcm).is_ok());
        if concealed {
            out.extend(pcm.iter().copied().take(missing));
        }
        self.scratch = pcm;
        out.resize(FRAME_SAMPLES, 0);
        true
    }
}
