//! Codecs, scaling and resampling for Tessera: everything that turns bytes into raw media
//! and back.
//!
//! Owns the codec traits ([`VideoDecoder`], [`VideoEncoder`], [`AudioDecoder`],
//! [`AudioEncoder`]) and their implementations: Opus (`opus`), H.264 (`openh264` built from
//! source) and VP8 (libvpx). Raw video is [`VideoFrame`] (I420); raw audio is 48 kHz mono
//! `i16` in 20 ms frames of [`FRAME_SAMPLES`].
//!
//! Must not do IO, read clocks or know about rooms or networks. Corrupt input is an
//! `Err(CodecError)`, never a panic.
//!
//! ```
//! use tessera_codec::{Rect, VideoFrame, scale::{fill_rect, scaled, Filter}};
//! use tessera_types::Rgb;
//! let mut f = VideoFrame::filled(64, 64, Rgb::BLACK.to_yuv());
//! fill_rect(&mut f, Rect::new(0, 0, 32, 32), Rgb::WHITE.to_yuv());
//! assert_eq!(scaled(&f, 32, 32, Filter::Box).width, 32);
//! ```

pub mod frame;
mod h264;
mod opus;
pub mod resample;
pub mod scale;
mod vp8;

pub use frame::{Rect, VideoFrame};
pub use tessera_types::VideoCodec;

/// Sample rate of every raw audio buffer inside Tessera.
pub const SAMPLE_RATE_HZ: u32 = 48_000;
/// Samples in one 20 ms mono frame at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;
/// RTP clock rate of video timestamps.
pub const VIDEO_CLOCK_HZ: u64 = 90_000;
/// Largest picture a decoder accepts, in 16x16 macroblocks: H.264 level 5.1's limit, which
/// openh264 enforces itself (4096x2304 fits; 3840x2160 too).
pub const MAX_DECODE_MACROBLOCKS: u32 = 36_864;

/// Everything a codec can report. Corrupt input is a value, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("{codec} decoder rejected the bitstream: {reason}")]
    CorruptBitstream { codec: &'static str, reason: String },
    #[error("{codec} encoder failed: {reason}")]
    Encode { codec: &'static str, reason: String },
    #[error("{codec} could not be set up: {reason}")]
    Init { codec: &'static str, reason: String },
    #[error("invalid {what}: {reason}")]
    InvalidInput { what: &'static str, reason: String },
}

/// One encoded video frame (an access unit: Annex-B for H.264, one frame for VP8).
#[derive(Clone, Debug)]
pub struct EncodedVideo {
    pub data: Vec<u8>,
    pub keyframe: bool,
    /// Presentation time on the 90 kHz clock.
    pub pts_90k: u64,
}

/// Decodes one codec's access units to I420 frames.
pub trait VideoDecoder: Send {
    fn codec(&self) -> VideoCodec;
    /// Decodes one access unit into `out`, reusing its buffers when it holds a frame (a
    /// camera's frames are all one size: no allocation per frame). `Ok(false)` means no
    /// picture yet (e.g. parameter sets only) and leaves `out` as it was. After an `Err` the
    /// caller should request a keyframe from the sender.
    fn decode_into(
        &mut self,
        access_unit: &[u8],
        out: &mut Option<VideoFrame>,
    ) -> Result<bool, CodecError>;

    /// Decodes one access unit into a new frame. `Ok(None)` means no picture yet.
    fn decode(&mut self, access_unit: &[u8]) -> Result<Option<VideoFrame>, CodecError> {
        let mut out = None;
        self.decode_into(access_unit, &mut out)?;
        Ok(out)
    }
}

/// Settings for a real-time video encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoEncoderConfig {
    pub codec: VideoCodec,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_bps: u32,
    /// libvpx `cpu-used` (negative = fixed real-time speed, -6..-16); ignored by H.264.
    pub vp8_cpu_used: i32,
    /// Encoder worker threads (1 = none).
    pub threads: u32,
}

impl VideoEncoderConfig {
    /// An encoder takes frames of exactly its configured size.
    pub fn check_frame(&self, frame: &VideoFrame) -> Result<(), CodecError> {
        if (frame.width, frame.height) == (self.width, self.height) {
            return Ok(());
        }
        Err(CodecError::InvalidInput {
            what: "frame size",
            reason: format!(
                "{}x{} frame for a {}x{} encoder",
                frame.width, frame.height, self.width, self.height
            ),
        })
    }
}

/// Encodes I420 frames for real-time delivery: bitrate rate control, no scene-change
/// keyframes, a keyframe on request.
pub trait VideoEncoder: Send {
    fn config(&self) -> &VideoEncoderConfig;
    /// Encodes one frame. `Ok(None)` when the rate controller skipped it.
    fn encode(
        &mut self,
        frame: &VideoFrame,
        pts_90k: u64,
        force_keyframe: bool,
    ) -> Result<Option<EncodedVideo>, CodecError>;
    /// Changes the target bitrate without restarting.
    fn set_bitrate(&mut self, bitrate_bps: u32) -> Result<(), CodecError>;
}

/// Decodes Opus packets to 48 kHz mono.
pub trait AudioDecoder: Send {
    /// Decodes one packet, replacing `out` with its samples (usually [`FRAME_SAMPLES`]).
    fn decode(&mut self, packet: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError>;
    /// Fills `out` with `samples` of packet-loss concealment.
    fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) -> Result<(), CodecError>;
}

/// Encodes 20 ms of 48 kHz mono into one Opus packet.
pub trait AudioEncoder: Send {
    fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>, CodecError>;
    fn set_bitrate(&mut self, bitrate_bps: u32) -> Result<(), CodecError>;
    /// The packet loss the listeners see, in percent (0..=100): the encoder spends more of
    /// its bitrate on in-band FEC as it rises.
    fn set_packet_loss_pct(&mut self, _loss_pct: u8) -> Result<(), CodecError> {
        Ok(())
    }
}

/// A decoder for `codec`.
pub fn new_video_decoder(codec: VideoCodec) -> Result<Box<dyn VideoDecoder>, CodecError> {
    Ok(match codec {
        VideoCodec::H264 => Box::new(h264::H264Decoder::new()?),
        VideoCodec::Vp8 => Box::new(vp8::Vp8Decoder::new()?),
    })
}

/// A real-time encoder; the config is checked first.
pub fn new_video_encoder(cfg: &VideoEncoderConfig) -> Result<Box<dyn VideoEncoder>, CodecError> {
    let bad = |reason: String| {
        Err(CodecError::InvalidInput {
            what: "encoder config",
            reason,
        })
    };
    if cfg.width < 16
        || cfg.height < 16
        || !cfg.width.is_multiple_of(2)
        || !cfg.height.is_multiple_of(2)
        || cfg.width > 4096
        || cfg.height > 4096
    {
        return bad(format!(
            "{}x{}: width and height must be even and 16..=4096",
            cfg.width, cfg.height
        ));
    }
    if !(1..=60).contains(&cfg.fps) {
        return bad(format!("fps {}: must be 1..=60", cfg.fps));
    }
    if cfg.bitrate_bps == 0 {
        return bad("bitrate must be above 0".into());
    }
    Ok(match cfg.codec {
        VideoCodec::H264 => Box::new(h264::H264Encoder::new(cfg)?),
        VideoCodec::Vp8 => Box::new(vp8::Vp8Encoder::new(cfg)?),
    })
}

/// An Opus decoder producing 48 kHz mono.
pub fn new_audio_decoder() -> Result<Box<dyn AudioDecoder>, CodecError> {
    Ok(Box::new(opus::OpusDecoder::new()?))
}

/// An Opus encoder for 20 ms of 48 kHz mono at `bitrate_bps`.
pub fn new_audio_encoder(bitrate_bps: u32) -> Result<Box<dyn AudioEncoder>, CodecError> {
    Ok(Box::new(opus::OpusEncoder::new(bitrate_bps)?))
}
