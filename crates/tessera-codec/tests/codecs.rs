//! Codec round trips with a PSNR floor, rate control sanity, keyframes on demand, and
//! corrupt bitstreams that must neither panic nor wedge a decoder.

use tessera_codec::scale::fill_rect;
use tessera_codec::{
    new_audio_decoder, new_audio_encoder, new_video_decoder, new_video_encoder, Rect, VideoCodec,
    VideoEncoderConfig, VideoFrame, FRAME_SAMPLES,
};
use tessera_types::Yuv;

/// A deterministic camera-like picture: gradient, a moving square and some noise.
fn picture(w: u32, h: u32, k: u32) -> VideoFrame {
    let mut f = VideoFrame::filled(
        w,
        h,
        Yuv {
            y: 100,
            u: 110,
            v: 150,
        },
    );
    let mut seed = 0x9E3779B9u32.wrapping_mul(k + 1);
    for y in 0..h {
        for x in 0..w {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let noise = (seed % 9) as i32 - 4;
            f.y[(y * w + x) as usize] = ((x * 160 / w) as i32 + 40 + noise).clamp(16, 235) as u8;
        }
    }
    let side = (w.min(h) / 4) & !1;
    let x = (k * 6) % (w - side);
    fill_rect(
        &mut f,
        Rect::new(x, h / 3, side, side),
        Yuv {
            y: 220,
            u: 60,
            v: 200,
        },
    );
    f
}

struct Run {
    psnr_min: f64,
    bytes: usize,
    keyframes: Vec<usize>,
    decoded: usize,
}

fn round_trip(codec: VideoCodec, w: u32, h: u32, frames: u32, bitrate_bps: u32) -> Run {
    let fps = 30;
    let mut enc = new_video_encoder(&VideoEncoderConfig {
        codec,
        width: w,
        height: h,
        fps,
        bitrate_bps,
        vp8_cpu_used: -12,
        threads: 1,
    })
    .unwrap();
    let mut dec = new_video_decoder(codec).unwrap();
    let mut run = Run {
        psnr_min: f64::INFINITY,
        bytes: 0,
        keyframes: Vec::new(),
        decoded: 0,
    };
    for k in 0..frames {
        let src = picture(w, h, k);
        let force = k == 0 || k == frames / 2;
        let Some(out) = enc
            .encode(&src, k as u64 * 90_000 / fps as u64, force)
            .unwrap()
        else {
            continue;
        };
        run.bytes += out.data.len();
        if out.keyframe {
            run.keyframes.push(k as usize);
        }
        if let Some(pic) = dec.decode(&out.data).unwrap() {
            assert_eq!((pic.width, pic.height), (w, h));
            run.decoded += 1;
            // Let the rate controller settle before judging quality.
            if k >= 5 {
                run.psnr_min = run.psnr_min.min(pic.psnr_y(&src));
            }
        }
    }
    run
}

fn check_round_trip(codec: VideoCodec, w: u32, h: u32, bitrate_bps: u32, psnr_floor: f64) {
    let frames = 60;
    let run = round_trip(codec, w, h, frames, bitrate_bps);
    assert!(
        run.decoded >= frames as usize - 2,
        "{codec} {w}x{h}: decoded {}",
        run.decoded
    );
    assert!(
        run.psnr_min >= psnr_floor,
        "{codec} {w}x{h}: min PSNR {:.1} dB < {psnr_floor}",
        run.psnr_min
    );
    assert_eq!(
        run.keyframes,
        vec![0, frames as usize / 2],
        "{codec}: keyframes only when forced"
    );
    let kbps = run.bytes as f64 * 8.0 / (frames as f64 / 30.0) / 1000.0;
    // The openh264 trap: its defaults came out at 25x the target. Two keyframes in two
    // seconds cost extra, hence the generous bound.
    assert!(
        kbps < 2.5 * bitrate_bps as f64 / 1000.0,
        "{codec} {w}x{h}: {kbps:.0} kbit/s for a {} kbit/s target",
        bitrate_bps / 1000
    );
    eprintln!(
        "{codec} {w}x{h}: min PSNR {:.1} dB, {kbps:.0} kbit/s (target {})",
        run.psnr_min,
        bitrate_bps / 1000
    );
}

#[test]
fn vp8_round_trip() {
    check_round_trip(VideoCodec::Vp8, 640, 360, 800_000, 30.0);
    check_round_trip(VideoCodec::Vp8, 176, 144, 200_000, 28.0);
}

#[test]
fn h264_round_trip() {
    check_round_trip(VideoCodec::H264, 640, 360, 800_000, 30.0);
    check_round_trip(VideoCodec::H264, 176, 144, 200_000, 28.0);
}

#[test]
fn encoder_rejects_bad_configs_and_frames() {
    let cfg = |codec, width, height, fps, bitrate_bps| VideoEncoderConfig {
        codec,
        width,
        height,
        fps,
        bitrate_bps,
        vp8_cpu_used: -12,
        threads: 1,
    };
    for codec in [VideoCodec::Vp8, VideoCodec::H264] {
        assert!(new_video_encoder(&cfg(codec, 321, 240, 30, 100_000)).is_err());
        assert!(new_video_encoder(&cfg(codec, 320, 240, 0, 100_000)).is_err());
        assert!(new_video_encoder(&cfg(codec, 320, 240, 30, 0)).is_err());
        let mut enc = new_video_encoder(&cfg(codec, 320, 240, 30, 100_000)).unwrap();
        assert!(enc.encode(&picture(160, 120, 0), 0, true).is_err());
        assert!(enc
            .encode(&picture(320, 240, 0), 0, true)
            .unwrap()
            .is_some());
    }
}

/// A small deterministic PRNG for corruption.
struct Rng(u32);
impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
}

fn encoded_stream(codec: VideoCodec, frames: u32) -> Vec<Vec<u8>> {
    let mut enc = new_video_encoder(&VideoEncoderConfig {
        codec,
        width: 320,
        height: 180,
        fps: 30,
        bitrate_bps: 300_000,
        vp8_cpu_used: -12,
        threads: 1,
    })
    .unwrap();
    (0..frames)
        .filter_map(|k| {
            enc.encode(&picture(320, 180, k), k as u64 * 3000, k == 0)
                .unwrap()
        })
        .map(|e| e.data)
        .collect()
}

#[test]
fn corrupt_bitstreams_neither_panic_nor_wedge_the_decoder() {
    for codec in [VideoCodec::Vp8, VideoCodec::H264] {
        let stream = encoded_stream(codec, 20);
        let mut rng = Rng(0xC0FFEE);
        let mut dec = new_video_decoder(codec).unwrap();
        let mut errors = 0;
        // Empty, garbage, truncated and bit-flipped input: results are values, never panics.
        let _ = dec.decode(&[]).map_err(|_| errors += 1);
        for round in 0..200 {
            let frame = &stream[round % stream.len()];
            let mut bad = frame.clone();
            match round % 4 {
                0 => bad.truncate(rng.next() as usize % bad.len()),
                1 => {
                    for _ in 0..8 {
                        let i = rng.next() as usize % bad.len();
                        bad[i] ^= 1 << (rng.next() % 8);
                    }
                }
                2 => bad = (0..(rng.next() % 2000)).map(|_| rng.next() as u8).collect(),
                _ => bad.extend((0..64).map(|_| rng.next() as u8)),
            }
            if dec.decode(&bad).is_err() {
                errors += 1;
            }
        }
        assert!(errors > 0, "{codec}: no corruption was detected at all");
        // A fresh keyframe brings the same decoder back.
        let mut recovered = false;
        for frame in &stream {
            if let Ok(Some(pic)) = dec.decode(frame) {
                recovered = pic.width == 320 && pic.height == 180;
            }
        }
        assert!(recovered, "{codec}: decoder did not recover on a keyframe");
    }
}

/// A VP8 keyframe header claiming `w`x`h`, then junk (libvpx allocates before it looks).
fn vp8_keyframe_header(w: u16, h: u16) -> Vec<u8> {
    let tag: u32 = (10 << 5) | (1 << 4); // keyframe, version 0, shown, partition of 10
    let mut f = tag.to_le_bytes()[..3].to_vec();
    f.extend_from_slice(&[0x9d, 0x01, 0x2a]);
    f.extend_from_slice(&w.to_le_bytes());
    f.extend_from_slice(&h.to_le_bytes());
    f.extend_from_slice(&[0; 64]);
    f
}

#[test]
fn oversized_vp8_keyframes_are_refused_before_libvpx() {
    let mut dec = new_video_decoder(VideoCodec::Vp8).unwrap();
    for (w, h) in [(16383, 16383), (4096, 4096), (16383, 2400)] {
        let err = dec.decode(&vp8_keyframe_header(w, h)).unwrap_err();
        assert!(err.to_string().contains("macroblocks"), "{w}x{h}: {err}");
    }
    // Within the limit, the junk reaches libvpx and is its error.
    for (w, h) in [(3840, 2160), (4096, 2304), (640, 360)] {
        let err = dec.decode(&vp8_keyframe_header(w, h)).unwrap_err();
        assert!(!err.to_string().contains("macroblocks"), "{w}x{h}: {err}");
    }
    // The decoder still decodes a real stream afterwards.
    let stream = encoded_stream(VideoCodec::Vp8, 3);
    assert!(stream.iter().any(|f| matches!(dec.decode(f), Ok(Some(_)))));
}

fn tone(freq: f32, samples: usize) -> Vec<i16> {
    (0..samples)
        .map(|i| ((i as f32 * freq / 48_000.0 * std::f32::consts::TAU).sin() * 10_000.0) as i16)
        .collect()
}

fn goertzel(x: &[i16], freq: f32) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq as f64 / 48_000.0;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = v as f64 + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2
}

#[test]
fn opus_round_trip_keeps_the_tone() {
    let pcm = tone(440.0, 48_000);
    let mut enc = new_audio_encoder(32_000).unwrap();
    let mut dec = new_audio_decoder().unwrap();
    let mut out = Vec::new();
    let mut frame = Vec::new();
    for chunk in pcm.chunks(FRAME_SAMPLES) {
        let packet = enc.encode(chunk).unwrap();
        assert!(packet.len() < 400);
        dec.decode(&packet, &mut frame).unwrap();
        assert_eq!(frame.len(), FRAME_SAMPLES);
        out.extend_from_slice(&frame);
    }
    let body = &out[4800..];
    assert!(goertzel(body, 440.0) > 1000.0 * goertzel(body, 1000.0));
    assert!(
        enc.encode(&pcm[..100]).is_err(),
        "wrong frame size must be an error"
    );
}

#[test]
fn corrupt_opus_is_an_error_and_concealment_fills_gaps() {
    let mut dec = new_audio_decoder().unwrap();
    let mut out = Vec::new();
    let mut rng = Rng(7);
    assert!(dec.decode(&[], &mut out).is_err());
    for _ in 0..500 {
        let garbage: Vec<u8> = (0..(rng.next() % 300 + 1))
            .map(|_| rng.next() as u8)
            .collect();
        let _ = dec.decode(&garbage, &mut out);
    }
    dec.conceal(FRAME_SAMPLES, &mut out).unwrap();
    assert_eq!(out.len(), FRAME_SAMPLES);
}

#[test]
fn decoding_into_the_last_frame_reuses_its_buffers_and_matches_a_fresh_decode() {
    for codec in [VideoCodec::Vp8, VideoCodec::H264] {
        let stream = encoded_stream(codec, 10);
        let mut reusing = new_video_decoder(codec).unwrap();
        let mut fresh = new_video_decoder(codec).unwrap();
        let mut last: Option<VideoFrame> = None;
        let mut buffers = None;
        for (i, au) in stream.iter().enumerate() {
            let got = reusing.decode_into(au, &mut last).unwrap();
            let want = fresh.decode(au).unwrap();
            assert_eq!(got, want.is_some(), "{codec:?} frame {i}");
            let Some(want) = want else { continue };
            let frame = last.as_ref().unwrap();
            assert_eq!(frame, &want, "{codec:?} frame {i}");
            let ptrs = (frame.y.as_ptr(), frame.u.as_ptr(), frame.v.as_ptr());
            match buffers {
                None => buffers = Some(ptrs),
                Some(b) => assert_eq!(b, ptrs, "{codec:?} frame {i}: the planes were reallocated"),
            }
        }
        assert!(buffers.is_some(), "{codec:?}: nothing decoded");
    }
}
