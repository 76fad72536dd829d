//! H.264 through openh264, built from its bundled source.

use openh264::decoder::{Decoder, DecoderConfig};
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, Profile, RateControlMode,
    UsageType,
};
use openh264::formats::{YUVSlices, YUVSource};
use openh264::{OpenH264API, Timestamp};

use crate::{
    CodecError, EncodedVideo, VideoCodec, VideoDecoder, VideoEncoder, VideoEncoderConfig,
    VideoFrame,
};

const CODEC: &str = "H.264";

pub struct H264Decoder {
    inner: Decoder,
}

impl H264Decoder {
    pub fn new() -> Result<H264Decoder, CodecError> {
        let inner = Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
            .map_err(|e| CodecError::Init {
                codec: CODEC,
                reason: e.to_string(),
            })?;
        Ok(H264Decoder { inner })
    }
}

impl VideoDecoder for H264Decoder {
    fn codec(&self) -> VideoCodec {
        VideoCodec::H264
    }

    fn decode_into(
        &mut self,
        access_unit: &[u8],
        out: &mut Option<VideoFrame>,
    ) -> Result<bool, CodecError> {
        if access_unit.is_empty() {
            return Err(CodecError::CorruptBitstream {
                codec: CODEC,
                reason: "empty access unit".into(),
            });
        }
        let decoded = self
            .inner
            .decode(access_unit)
            .map_err(|e| CodecError::CorruptBitstream {
                codec: CODEC,
                reason: e.to_string(),
            })?;
        let Some(yuv) = decoded else {
            return Ok(false);
        };
        let (w, h) = yuv.dimensions();
        let (sy, su, sv) = yuv.strides();
        VideoFrame::copy_planes_into(
            out,
            w as u32,
            h as u32,
            yuv.y(),
            sy,
            yuv.u(),
            su,
            yuv.v(),
            sv,
        );
        Ok(true)
    }
}

pub struct H264Encoder {
    inner: Encoder,
    config: VideoEncoderConfig,
}

fn encoder_config(c: &VideoEncoderConfig) -> EncoderConfig {
    EncoderConfig::new()
        .usage_type(UsageType::CameraVideoRealTime)
        .profile(Profile::Baseline)
        .rate_control_mode(RateControlMode::Bitrate)
        .bitrate(BitRate::from_bps(c.bitrate_bps))
        .max_frame_rate(FrameRate::from_hz(c.fps as f32))
        .complexity(Complexity::Low)
        // Keyframes come on demand only: scene-change IDRs double the p95 frame size.
        .scene_change_detect(false)
        .skip_frames(true)
        .num_threads(c.threads.clamp(1, 16) as u16)
}

impl H264Encoder {
    pub fn new(config: &VideoEncoderConfig) -> Result<H264Encoder, CodecError> {
        let inner = Encoder::with_api_config(OpenH264API::from_source(), encoder_config(config))
            .map_err(|e| CodecError::Init {
                codec: CODEC,
                reason: e.to_string(),
            })?;
        Ok(H264Encoder {
            inner,
            config: config.clone(),
        })
    }
}

impl VideoEncoder for H264Encoder {
    fn config(&self) -> &VideoEncoderConfig {
        &self.config
    }

    fn encode(
        &mut self,
        frame: &VideoFrame,
        pts_90k: u64,
        force_keyframe: bool,
    ) -> Result<Option<EncodedVideo>, CodecError> {
        self.config.check_frame(frame)?;
        if force_keyframe {
            self.inner.force_intra_frame();
        }
        let src = YUVSlices::new(
            (&frame.y, &frame.u, &frame.v),
            (frame.width as usize, frame.height as usize),
            (frame.stride_y(), frame.stride_uv(), frame.stride_uv()),
        );
        let bs = self
            .inner
            .encode_at(&src, Timestamp::from_millis(pts_90k / 90))
            .map_err(|e| CodecError::Encode {
                codec: CODEC,
                reason: e.to_string(),
            })?;
        let keyframe = matches!(bs.frame_type(), FrameType::IDR | FrameType::I);
        let data = bs.to_vec();
        if data.is_empty() || matches!(bs.frame_type(), FrameType::Skip) {
            return Ok(None);
        }
        Ok(Some(EncodedVideo {
            data,
            keyframe,
            pts_90k,
        }))
    }

    fn set_bitrate(&mut self, bitrate_bps: u32) -> Result<(), CodecError> {
        // openh264's Rust API sets the bitrate at construction: rebuild, keyframe next.
        let mut config = self.config.clone();
        config.bitrate_bps = bitrate_bps;
        *self = H264Encoder::new(&config)?;
        self.inner.force_intra_frame();
        Ok(())
    }
}
