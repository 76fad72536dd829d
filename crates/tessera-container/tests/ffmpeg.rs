//! Files made by ffmpeg read correctly, and files we write decode cleanly in ffmpeg to the
//! same media. ffmpeg (Debian's, with libvpx, libx264, libopus) is a test dependency.

mod common;

use std::fs;

use common::{ffmpeg, ffmpeg_decodes_cleanly, ffmpeg_pcm, frame_md5s, s, tone_power, Scratch};
use tessera_container::{
    AnnexBReader, AnnexBWriter, IvfReader, IvfWriter, OggOpusReader, OggOpusWriter, OpusPacket,
    Result, SampleFormat, WavReader, WavWriter,
};

fn vp8_clip(dir: &Scratch, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let out = dir.join(name);
    let mut args = vec![
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=320x180:r=30:d=1",
        "-c:v",
        "libvpx",
        "-b:v",
        "300k",
    ];
    args.extend_from_slice(extra);
    args.push(s(&out));
    ffmpeg(&args);
    out
}

#[test]
fn ffmpeg_vp8_ivf_reads_and_rewrites_to_the_same_pictures() {
    let dir = Scratch::new("ivf");
    let src = vp8_clip(&dir, "in.ivf", &["-g", "10"]);
    let mut reader = IvfReader::open(&src).unwrap();
    let h = reader.header().clone();
    assert_eq!((&h.fourcc, h.width, h.height), (b"VP80", 320, 180));
    assert_eq!((h.timebase_num, h.timebase_den), (1, 30));
    let frames: Vec<_> = reader.by_ref().collect::<Result<_>>().unwrap();
    assert_eq!(frames.len(), 30);
    assert_eq!(h.frame_count, 30);
    assert!(
        frames.iter().enumerate().all(|(i, f)| f.pts == i as u64),
        "pts not 0..30"
    );
    // VP8 keyframes have bit 0 of the first byte clear; -g 10 gives three.
    let keyframes = frames.iter().filter(|f| f.data[0] & 1 == 0).count();
    assert_eq!(keyframes, 3);

    let out = dir.join("out.ivf");
    let mut w = IvfWriter::create(&out, h.width, h.height, h.timebase_num, h.timebase_den).unwrap();
    for f in &frames {
        w.write_frame(f.pts, &f.data).unwrap();
    }
    assert_eq!(w.frames_written(), 30);
    w.finish().unwrap();
    ffmpeg_decodes_cleanly(&out);
    assert_eq!(frame_md5s(&out), frame_md5s(&src));
    // Byte for byte what ffmpeg wrote, header (with the patched frame count) included.
    assert!(
        fs::read(&out).unwrap() == fs::read(&src).unwrap(),
        "IVF differs from ffmpeg's"
    );
}

fn h264_clip(dir: &Scratch, name: &str, x264_params: &str) -> std::path::PathBuf {
    let out = dir.join(name);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=320x180:r=30:d=1",
        "-c:v",
        "libx264",
        "-profile:v",
        "baseline",
        "-preset",
        "veryfast",
        "-g",
        "10",
        "-keyint_min",
        "10",
        "-sc_threshold",
        "0",
        "-x264-params",
        x264_params,
        "-bsf:v",
        "h264_mp4toannexb",
        "-f",
        "h264",
        s(&out),
    ]);
    out
}

#[test]
fn ffmpeg_h264_splits_into_one_access_unit_per_frame() {
    let dir = Scratch::new("h264");
    // Plain x264 output, with access unit delimiters, and with four slices per picture.
    for (name, params) in [
        ("plain.h264", "log=-1"),
        ("aud.h264", "aud=1"),
        ("slices.h264", "slices=4"),
    ] {
        let src = h264_clip(&dir, name, params);
        let bytes = fs::read(&src).unwrap();
        let aus: Vec<_> = AnnexBReader::open(&src)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(aus.len(), 30, "{name}: access units");
        let idr: Vec<usize> = aus
            .iter()
            .enumerate()
            .filter(|(_, a)| a.is_idr)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(idr, vec![0, 10, 20], "{name}: IDR access units");
        let slices = |a: &tessera_container::AccessUnit| {
            a.nal_units()
                .filter(|n| matches!(n[0] & 0x1f, 1 | 5))
                .count()
        };
        let want_slices = if name == "slices.h264" { 4 } else { 1 };
        assert!(
            aus.iter().all(|a| slices(a) == want_slices),
            "{name}: slices per access unit"
        );
        if name == "aud.h264" {
            assert!(
                aus.iter()
                    .all(|a| a.nal_units().next().unwrap()[0] & 0x1f == 9),
                "AUD first"
            );
        }
        let rejoined: Vec<u8> = aus.iter().flat_map(|a| a.data.iter().copied()).collect();
        assert_eq!(rejoined, bytes, "{name}: access units must tile the stream");

        // Written back one access unit at a time, it decodes to the same pictures.
        let out = dir.join(&format!("out-{name}"));
        let mut w = AnnexBWriter::create(&out).unwrap();
        for au in &aus {
            w.write_access_unit(&au.data).unwrap();
        }
        w.finish().unwrap();
        ffmpeg_decodes_cleanly(&out);
        assert_eq!(frame_md5s(&out).len(), 30);
    }
}

/// Total playable samples of a stream: the end of the last packet, trimmed, less pre-skip.
fn playable(packets: &[OpusPacket], pre_skip: u16) -> u64 {
    let last = packets.last().unwrap();
    last.pts + u64::from(last.duration) - u64::from(last.end_trim) - u64::from(pre_skip)
}

#[test]
fn ffmpeg_ogg_opus_reads_with_timing_and_rewrites_to_the_same_audio() {
    let dir = Scratch::new("ogg");
    for (channels, frame_ms, seconds) in [(1u8, "20", "1"), (2, "60", "1"), (1, "10", "0.5")] {
        let src = dir.join(&format!("in-{channels}-{frame_ms}.ogg"));
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            &format!("sine=frequency=440:sample_rate=44100:duration={seconds}"),
            "-ac",
            &channels.to_string(),
            "-c:a",
            "libopus",
            "-b:a",
            "48k",
            "-frame_duration",
            frame_ms,
            s(&src),
        ]);
        let mut reader = OggOpusReader::open(&src).unwrap();
        let head = reader.head().clone();
        assert_eq!(
            (head.channels, head.pre_skip, head.input_sample_rate_hz),
            (channels, 312, 48_000)
        );
        assert!(
            reader.tags().vendor.starts_with("Lavf"),
            "vendor {:?}",
            reader.tags().vendor
        );
        let packets: Vec<OpusPacket> = reader.by_ref().collect::<Result<_>>().unwrap();
        let frame: u32 = frame_ms.parse::<u32>().unwrap() * 48;
        assert!(
            packets.iter().all(|p| p.duration == frame),
            "{frame_ms} ms packets"
        );
        assert!(packets
            .windows(2)
            .all(|w| w[1].pts == w[0].pts + u64::from(w[0].duration)));
        assert_eq!(packets[0].pts, 0);
        let seconds: f64 = seconds.parse().unwrap();
        let want = (48_000.0 * seconds) as u64;
        let total = playable(&packets, head.pre_skip);
        assert_eq!(
            total, want,
            "{channels} ch, {frame_ms} ms: playable samples"
        );
        // ffmpeg agrees on the decoded length.
        let theirs = ffmpeg_pcm(&src);
        assert_eq!(theirs.len() as u64, total * u64::from(channels));

        let out = dir.join(&format!("out-{channels}-{frame_ms}.ogg"));
        let mut w = OggOpusWriter::create(&out, channels, head.pre_skip)
            .unwrap()
            .with_packets_per_page(7);
        for p in &packets {
            w.write_packet(&p.data).unwrap();
        }
        w.finish_with_length(total).unwrap();
        ffmpeg_decodes_cleanly(&out);
        assert_eq!(
            ffmpeg_pcm(&out),
            theirs,
            "{channels} ch, {frame_ms} ms: decoded audio differs"
        );
        // And our reader reads our file back the same.
        let again: Vec<OpusPacket> = OggOpusReader::open(&out)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(again, packets);
    }
}

#[test]
fn ffmpeg_wav_reads_every_sample_format() {
    let dir = Scratch::new("wav");
    // (ffmpeg codec, channels, rate, expected format, tolerance against ffmpeg's own s16)
    let cases = [
        ("pcm_s16le", 1, 16_000, SampleFormat::I16, 0),
        ("pcm_s16le", 2, 44_100, SampleFormat::I16, 0),
        ("pcm_u8", 1, 8_000, SampleFormat::U8, 0),
        ("pcm_s24le", 2, 48_000, SampleFormat::I24, 0),
        ("pcm_s32le", 1, 22_050, SampleFormat::I32, 0),
        ("pcm_f32le", 2, 48_000, SampleFormat::F32, 1),
        ("pcm_f64le", 1, 32_000, SampleFormat::F64, 1),
    ];
    for (codec, channels, rate, format, tolerance) in cases {
        let src = dir.join(&format!("{codec}-{channels}.wav"));
        // ffmpeg adds a LIST chunk (encoder tag) before the data.
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=1000:duration=0.5",
            "-af",
            "volume=4",
            "-ac",
            &channels.to_string(),
            "-ar",
            &rate.to_string(),
            "-c:a",
            codec,
            s(&src),
        ]);
        let reader = WavReader::open(&src).unwrap();
        let info = reader.info().clone();
        assert_eq!(
            (info.sample_rate_hz, info.channels, info.sample_format),
            (rate, channels, format),
            "{codec}"
        );
        assert_eq!(info.frames, Some(u64::from(rate) / 2), "{codec}");
        let ours = reader.read_all().unwrap();
        let theirs = ffmpeg_pcm(&src);
        assert_eq!(ours.len(), theirs.len(), "{codec}");
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
            .max()
            .unwrap();
        assert!(
            worst <= tolerance,
            "{codec}: differs from ffmpeg by up to {worst}"
        );
        let mono = tessera_container::downmix_to_mono(&ours, channels);
        assert!(
            tone_power(&mono, 1000.0, rate) > 100.0 * tone_power(&mono, 1500.0, rate),
            "{codec}"
        );
    }
}

#[test]
fn our_wav_decodes_in_ffmpeg_to_the_same_samples() {
    let dir = Scratch::new("wav-out");
    for (rate, channels) in [(16_000u32, 1u16), (48_000, 2)] {
        let samples: Vec<i16> = (0..rate as usize * usize::from(channels) / 4)
            .map(|i| ((i as f64 * 0.05).sin() * 20_000.0) as i16)
            .collect();
        let out = dir.join(&format!("out-{rate}-{channels}.wav"));
        let mut w = WavWriter::create(&out, rate, channels).unwrap();
        for chunk in samples.chunks(960 * usize::from(channels)) {
            w.write_samples(chunk).unwrap();
        }
        w.finish().unwrap();
        ffmpeg_decodes_cleanly(&out);
        assert_eq!(ffmpeg_pcm(&out), samples);
    }
}

/// Reads a whole file with the reader for its format, returning how many items it gave.
fn read_everything(kind: &str, bytes: &[u8]) -> Result<usize> {
    match kind {
        "ivf" => IvfReader::new(bytes)?
            .collect::<Result<Vec<_>>>()
            .map(|v| v.len()),
        "h264" => AnnexBReader::new(bytes)
            .collect::<Result<Vec<_>>>()
            .map(|v| v.len()),
        "ogg" => OggOpusReader::new(bytes)?
            .collect::<Result<Vec<_>>>()
            .map(|v| v.len()),
        "wav" => WavReader::new(bytes)?.read_all().map(|v| v.len()),
        _ => unreachable!(),
    }
}

#[test]
fn truncated_corrupted_and_garbage_files_are_errors_not_panics() {
    let dir = Scratch::new("damage");
    let ivf = vp8_clip(&dir, "a.ivf", &[]);
    let h264 = h264_clip(&dir, "a.h264", "log=-1");
    let ogg = dir.join("a.ogg");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=duration=1",
        "-c:a",
        "libopus",
        s(&ogg),
    ]);
    let wav = dir.join("a.wav");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=duration=1",
        "-c:a",
        "pcm_s16le",
        s(&wav),
    ]);

    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for (kind, path) in [("ivf", &ivf), ("h264", &h264), ("ogg", &ogg), ("wav", &wav)] {
        let good = fs::read(path).unwrap();
        let items = read_everything(kind, &good).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert!(items > 0);

        // Cut anywhere inside a structure: an error, except for Annex-B, which has no
        // lengths to disagree with (a cut only shortens the last NAL unit).
        for _ in 0..40 {
            let cut = 1 + (rand() as usize) % (good.len() - 1);
            let res = read_everything(kind, &good[..cut]);
            if kind != "h264" {
                if let Ok(n) = res {
                    // Only a cut between two frames/pages can read cleanly, and then short.
                    assert!(n < items, "{kind} cut at {cut} read all {n} items");
                    assert!(kind != "wav", "wav cut at {cut} read without error");
                }
            }
        }
        // The last byte missing is always detected (except in Annex-B).
        if kind != "h264" {
            let err = read_everything(kind, &good[..good.len() - 1]).expect_err(kind);
            assert!(err.to_string().contains("byte"), "{kind}: {err}");
        }

        // Flipped bytes anywhere: may or may not be an error, but never a panic.
        for _ in 0..300 {
            let mut bad = good.clone();
            for _ in 0..1 + rand() % 4 {
                let at = (rand() as usize) % bad.len();
                bad[at] ^= 1 << (rand() % 8);
            }
            let _ = read_everything(kind, &bad);
        }

        // Garbage: an error naming byte 0 of the bad header.
        let garbage: Vec<u8> = (0..4096).map(|_| (rand() % 255 + 1) as u8).collect();
        let err = read_everything(kind, &garbage).expect_err(kind);
        assert!(err.to_string().contains("at byte 0"), "{kind}: {err}");
        assert!(
            read_everything(kind, &[]).is_err() || kind == "h264",
            "{kind}: empty input"
        );
    }
    assert_eq!(read_everything("h264", &[]).unwrap(), 0);
}
