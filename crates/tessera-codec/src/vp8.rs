//! VP8 through libvpx (Debian libvpx-dev), real-time CBR.

use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_long, c_ulong};
use std::ptr;

use vpx_sys as vpx;

use crate::{
    CodecError, EncodedVideo, VideoCodec, VideoDecoder, VideoEncoder, VideoEncoderConfig,
    VideoFrame, MAX_DECODE_MACROBLOCKS,
};

const CODEC: &str = "VP8";

fn check(
    err: vpx::vpx_codec_err_t,
    what: &str,
    kind: fn(String) -> CodecError,
) -> Result<(), CodecError> {
    if err == vpx::vpx_codec_err_t::VPX_CODEC_OK {
        Ok(())
    } else {
        Err(kind(format!("{what}: {err:?}")))
    }
}

fn init_err(reason: String) -> CodecError {
    CodecError::Init {
        codec: CODEC,
        reason,
    }
}

fn enc_err(reason: String) -> CodecError {
    CodecError::Encode {
        codec: CODEC,
        reason,
    }
}

fn corrupt(reason: String) -> CodecError {
    CodecError::CorruptBitstream {
        codec: CODEC,
        reason,
    }
}

/// Width and height of a VP8 keyframe (RFC 6386 9.1: 3-byte frame tag with bit 0 clear,
/// start code 9d 01 2a, then 14-bit width and height); `None` for anything else.
fn keyframe_size(data: &[u8]) -> Option<(u32, u32)> {
    match data {
        [tag, _, _, 0x9d, 0x01, 0x2a, w0, w1, h0, h1, ..] if tag & 1 == 0 => Some((
            u16::from_le_bytes([*w0, *w1]) as u32 & 0x3fff,
            u16::from_le_bytes([*h0, *h1]) as u32 & 0x3fff,
        )),
        _ => None,
    }
}

pub struct Vp8Decoder {
    ctx: Box<vpx::vpx_codec_ctx_t>,
}

// SAFETY: the context is only touched through &mut self.
unsafe impl Send for Vp8Decoder {}

impl Vp8Decoder {
    pub fn new() -> Result<Vp8Decoder, CodecError> {
        // SAFETY: a zeroed context is what vpx_codec_dec_init expects to fill in.
        let mut ctx: Box<vpx::vpx_codec_ctx_t> =
            Box::new(unsafe { MaybeUninit::zeroed().assume_init() });
        let cfg = vpx::vpx_codec_dec_cfg_t {
            threads: 1,
            w: 0,
            h: 0,
        };
        // SAFETY: valid pointers; the iface is a static from libvpx.
        let err = unsafe {
            vpx::vpx_codec_dec_init_ver(
                &mut *ctx,
                vpx::vpx_codec_vp8_dx(),
                &cfg,
                0,
                vpx::VPX_DECODER_ABI_VERSION as c_int,
            )
        };
        check(err, "vpx_codec_dec_init", init_err)?;
        Ok(Vp8Decoder { ctx })
    }
}

impl Drop for Vp8Decoder {
    fn drop(&mut self) {
        // SAFETY: initialised in new().
        unsafe { vpx::vpx_codec_destroy(&mut *self.ctx) };
    }
}

impl VideoDecoder for Vp8Decoder {
    fn codec(&self) -> VideoCodec {
        VideoCodec::Vp8
    }

    fn decode_into(
        &mut self,
        data: &[u8],
        out: &mut Option<VideoFrame>,
    ) -> Result<bool, CodecError> {
        if data.is_empty() {
            return Err(corrupt("empty frame".into()));
        }
        // libvpx allocates for whatever size a keyframe claims before it finds the frame
        // corrupt: 16383x16383 in an 80-byte packet costs ~870 MB and 0.7 s.
        if let Some((w, h)) = keyframe_size(data) {
            if w.div_ceil(16) * h.div_ceil(16) > MAX_DECODE_MACROBLOCKS {
                return Err(corrupt(format!(
                    "keyframe of {w}x{h} is over the limit of {MAX_DECODE_MACROBLOCKS} macroblocks"
                )));
            }
        }
        // SAFETY: data outlives the call; libvpx copies what it keeps.
        let err = unsafe {
            vpx::vpx_codec_decode(
                &mut *self.ctx,
                data.as_ptr(),
                data.len() as _,
                ptr::null_mut(),
                0,
            )
        };
        check(err, "vpx_codec_decode", corrupt)?;
        let mut iter: vpx::vpx_codec_iter_t = ptr::null();
        let mut got = false;
        loop {
            // SAFETY: iterating frames of the context we just fed.
            let img = unsafe { vpx::vpx_codec_get_frame(&mut *self.ctx, &mut iter) };
            if img.is_null() {
                break;
            }
            // SAFETY: libvpx returned a valid image that lives until the next decode call.
            let img = unsafe { &*img };
            if img.fmt != vpx::vpx_img_fmt::VPX_IMG_FMT_I420 {
                return Err(corrupt(format!("unsupported image format {:?}", img.fmt)));
            }
            let (w, h) = (img.d_w, img.d_h);
            let (cw, ch) = crate::frame::chroma_size(w, h);
            let plane = |i: usize, rows: u32| {
                let stride = img.stride[i] as usize;
                // SAFETY: each plane holds `rows` rows of `stride` bytes.
                unsafe {
                    std::slice::from_raw_parts(
                        img.planes[i],
                        stride * (rows as usize - 1) + if i == 0 { w } else { cw } as usize,
                    )
                }
            };
            VideoFrame::copy_planes_into(
                out,
                w,
                h,
                plane(0, h),
                img.stride[0] as usize,
                plane(1, ch),
                img.stride[1] as usize,
                plane(2, ch),
                img.stride[2] as usize,
            );
            got = true;
        }
        Ok(got)
    }
}

pub struct Vp8Encoder {
    ctx: Box<vpx::vpx_codec_ctx_t>,
    cfg: Box<vpx::vpx_codec_enc_cfg_t>,
    config: VideoEncoderConfig,
    frame_duration: c_ulong,
}

// SAFETY: the context is only touched through &mut self.
unsafe impl Send for Vp8Encoder {}

impl Vp8Encoder {
    pub fn new(config: &VideoEncoderConfig) -> Result<Vp8Encoder, CodecError> {
        let mut cfg = MaybeUninit::<vpx::vpx_codec_enc_cfg_t>::uninit();
        // SAFETY: vpx_codec_enc_config_default fully initialises cfg (mem::zeroed would
        // be UB: the struct contains Rust enums).
        let err = unsafe {
            vpx::vpx_codec_enc_config_default(vpx::vpx_codec_vp8_cx(), cfg.as_mut_ptr(), 0)
        };
        check(err, "vpx_codec_enc_config_default", init_err)?;
        // SAFETY: initialised above.
        let mut cfg = Box::new(unsafe { cfg.assume_init() });
        cfg.g_w = config.width;
        cfg.g_h = config.height;
        cfg.g_timebase = vpx::vpx_rational {
            num: 1,
            den: 90_000,
        };
        cfg.g_threads = config.threads.max(1);
        cfg.g_lag_in_frames = 0;
        // As libwebrtc for a single layer: resilience costs bitrate; PLI recovers losses.
        cfg.g_error_resilient = 0;
        cfg.g_pass = vpx::vpx_enc_pass::VPX_RC_ONE_PASS;
        cfg.rc_end_usage = vpx::vpx_rc_mode::VPX_CBR;
        cfg.rc_target_bitrate = (config.bitrate_bps / 1000).max(1);
        cfg.rc_min_quantizer = 4;
        cfg.rc_max_quantizer = 56;
        cfg.rc_undershoot_pct = 50;
        cfg.rc_overshoot_pct = 50;
        cfg.rc_buf_initial_sz = 500;
        cfg.rc_buf_optimal_sz = 600;
        cfg.rc_buf_sz = 1000;
        cfg.rc_dropframe_thresh = 0;
        cfg.rc_resize_allowed = 0;
        // Keyframes come on demand (join, PLI); a long automatic interval is a safety net.
        cfg.kf_mode = vpx::vpx_kf_mode::VPX_KF_AUTO;
        cfg.kf_min_dist = 0;
        cfg.kf_max_dist = 3000;

        // SAFETY: zeroed context to be filled by init.
        let mut ctx: Box<vpx::vpx_codec_ctx_t> =
            Box::new(unsafe { MaybeUninit::zeroed().assume_init() });
        // SAFETY: valid cfg and ctx.
        let err = unsafe {
            vpx::vpx_codec_enc_init_ver(
                &mut *ctx,
                vpx::vpx_codec_vp8_cx(),
                &*cfg,
                0,
                vpx::VPX_ENCODER_ABI_VERSION as c_int,
            )
        };
        check(err, "vpx_codec_enc_init", init_err)?;
        let mut enc = Vp8Encoder {
            ctx,
            cfg,
            config: config.clone(),
            frame_duration: (90_000 / config.fps.max(1)) as c_ulong,
        };
        // SAFETY: variadic control with an int argument, as libvpx documents.
        let err = unsafe {
            vpx::vpx_codec_control_(
                &mut *enc.ctx,
                vpx::vp8e_enc_control_id::VP8E_SET_CPUUSED as c_int,
                config.vp8_cpu_used as c_int,
            )
        };
        check(err, "VP8E_SET_CPUUSED", init_err)?;
        // SAFETY: as above; static threshold skips encoding of unchanged blocks cheaply.
        unsafe {
            vpx::vpx_codec_control_(
                &mut *enc.ctx,
                vpx::vp8e_enc_control_id::VP8E_SET_NOISE_SENSITIVITY as c_int,
                0 as c_int,
            );
            vpx::vpx_codec_control_(
                &mut *enc.ctx,
                vpx::vp8e_enc_control_id::VP8E_SET_STATIC_THRESHOLD as c_int,
                1 as c_int,
            );
            vpx::vpx_codec_control_(
                &mut *enc.ctx,
                vpx::vp8e_enc_control_id::VP8E_SET_TOKEN_PARTITIONS as c_int,
                0 as c_int,
            );
            // Keyframes no larger than half the optimal buffer's worth of frames (as
            // libwebrtc does): an unbounded one overflows a slow link's queue at once.
            vpx::vpx_codec_control_(
                &mut *enc.ctx,
                vpx::vp8e_enc_control_id::VP8E_SET_MAX_INTRA_BITRATE_PCT as c_int,
                max_intra_bitrate_pct(config.fps) as c_int,
            );
        }
        Ok(enc)
    }
}

/// The largest keyframe, in percent of an average frame: libwebrtc's
/// `optimal_buffer_ms * 0.5 * fps / 10`, at least 300.
fn max_intra_bitrate_pct(fps: u32) -> u32 {
    (600 * fps / 20).max(300)
}

impl Drop for Vp8Encoder {
    fn drop(&mut self) {
        // SAFETY: initialised in new().
        unsafe { vpx::vpx_codec_destroy(&mut *self.ctx) };
    }
}

impl VideoEncoder for Vp8Encoder {
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
        // SAFETY: a zeroed vpx_image is filled by vpx_img_wrap (fmt is set there).
        let mut img: vpx::vpx_image_t = unsafe { MaybeUninit::zeroed().assume_init() };
        // SAFETY: wrap points at the Y plane only to get the struct set up; the planes
        // and strides are then pointed at our three separate buffers, which outlive encode.
        unsafe {
            vpx::vpx_img_wrap(
                &mut img,
                vpx::vpx_img_fmt::VPX_IMG_FMT_I420,
                frame.width,
                frame.height,
                1,
                frame.y.as_ptr() as *mut u8,
            );
        }
        img.planes[0] = frame.y.as_ptr() as *mut u8;
        img.planes[1] = frame.u.as_ptr() as *mut u8;
        img.planes[2] = frame.v.as_ptr() as *mut u8;
        img.stride[0] = frame.stride_y() as c_int;
        img.stride[1] = frame.stride_uv() as c_int;
        img.stride[2] = frame.stride_uv() as c_int;
        let flags: c_long = if force_keyframe {
            vpx::VPX_EFLAG_FORCE_KF as c_long
        } else {
            0
        };
        // SAFETY: img points at live buffers; ctx initialised.
        let err = unsafe {
            vpx::vpx_codec_encode(
                &mut *self.ctx,
                &img,
                pts_90k as i64,
                self.frame_duration,
                flags,
                vpx::VPX_DL_REALTIME as c_ulong,
            )
        };
        check(err, "vpx_codec_encode", enc_err)?;
        let mut out: Option<EncodedVideo> = None;
        let mut iter: vpx::vpx_codec_iter_t = ptr::null();
        loop {
            // SAFETY: iterating packets of this context.
            let pkt = unsafe { vpx::vpx_codec_get_cx_data(&mut *self.ctx, &mut iter) };
            if pkt.is_null() {
                break;
            }
            // SAFETY: non-null packet from libvpx; `frame` is the active union member for
            // VPX_CODEC_CX_FRAME_PKT.
            let pkt = unsafe { &*pkt };
            if pkt.kind != vpx::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                continue;
            }
            let f = unsafe { pkt.data.frame };
            // SAFETY: buf/sz describe the packet's bytes, valid until the next call.
            let bytes = unsafe { std::slice::from_raw_parts(f.buf as *const u8, f.sz as usize) };
            let e = out.get_or_insert_with(|| EncodedVideo {
                data: Vec::with_capacity(bytes.len()),
                keyframe: false,
                pts_90k,
            });
            e.data.extend_from_slice(bytes);
            e.keyframe |= f.flags & vpx::VPX_FRAME_IS_KEY != 0;
        }
        Ok(out)
    }

    fn set_bitrate(&mut self, bitrate_bps: u32) -> Result<(), CodecError> {
        self.cfg.rc_target_bitrate = (bitrate_bps / 1000).max(1);
        // SAFETY: cfg is the live config of ctx.
        let err = unsafe { vpx::vpx_codec_enc_config_set(&mut *self.ctx, &*self.cfg) };
        check(err, "vpx_codec_enc_config_set", enc_err)?;
        self.config.bitrate_bps = bitrate_bps;
        Ok(())
    }
}
