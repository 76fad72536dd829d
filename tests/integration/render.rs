//! `tessera render` over generated fixtures, checked by ffmpeg.

use std::path::Path;

use tessera_mixer::analysis::goertzel_power;

use crate::{
    colour_distance, decode_audio, decode_video_rgb, fixtures, mean_rgb, run_ok, scratch, tessera,
};

/// Renders four participants (mixed input formats) into a 2x2 grid and checks that each
/// colour is in its tile and each tone is in the mix.
fn render_four(codec: &str, video_ext: &str, audio_ext: &str, test: &str) {
    let (dir, list) = fixtures();
    let out = scratch(test);
    let video_out = out.join(format!("out.{video_ext}"));
    let audio_out = out.join(format!("out.{audio_ext}"));
    let f = |name: &str| dir.join(name).display().to_string();
    let stdout = run_ok(
        tessera()
            .args([
                "render", "--layout", "grid", "--size", "640x360", "--fps", "15",
            ])
            .args(["--codec", codec, "--bitrate-kbps", "600"])
            .arg("--participant")
            .arg(format!(
                "name=Ann,video={},audio={}",
                f("p1.ivf"),
                f("p1.ogg")
            ))
            .arg("--participant")
            .arg(format!(
                "name=Bo,video={},audio={}",
                f("p2.h264"),
                f("p2.wav")
            ))
            .arg("--participant")
            .arg(format!(
                "name=Cy,video={},audio={}",
                f("p3.ivf"),
                f("p3.wav")
            ))
            .arg("--participant")
            .arg(format!(
                "name=Di,video={},audio={}",
                f("p4.h264"),
                f("p4.ogg")
            ))
            .arg("--video-out")
            .arg(&video_out)
            .arg("--audio-out")
            .arg(&audio_out),
    );
    let summary = String::from_utf8_lossy(&stdout);
    assert!(
        summary.contains("realtime factor"),
        "no summary line: {summary}"
    );

    let frames = decode_video_rgb(&video_out, 640, 360);
    assert!(
        frames.len() >= 30,
        "only {} frames for 3 s at 15 fps",
        frames.len()
    );
    let last = frames.last().unwrap();
    // Grid of 4: row by row in join order, tiles 320x180 minus gaps.
    for (i, fx) in list.iter().take(4).enumerate() {
        let (tx, ty) = ((i as u32 % 2) * 320, (i as u32 / 2) * 180);
        // The centre band of the tile, clear of the label and the moving box's worst case.
        let got = mean_rgb(last, 640, tx + 80, ty + 40, 160, 60);
        let d = colour_distance(got, fx.rgb);
        let others = list
            .iter()
            .take(4)
            .filter(|o| o.name != fx.name)
            .map(|o| colour_distance(got, o.rgb));
        assert!(
            d < 60.0,
            "{} tile {i}: got {got:?}, want {:?} (distance {d:.0})",
            fx.name,
            fx.rgb
        );
        for od in others {
            assert!(
                d < od,
                "{} tile {i} is closer to another participant's colour",
                fx.name
            );
        }
    }

    let pcm = decode_audio(&audio_out);
    assert!(
        pcm.len() >= 48_000 * 2,
        "mix too short: {} samples",
        pcm.len()
    );
    let body = &pcm[pcm.len() / 4..pcm.len() * 3 / 4];
    let floor = goertzel_power(body, 2500.0, 48_000);
    for fx in list.iter().take(4) {
        let p = goertzel_power(body, fx.tone_hz, 48_000);
        assert!(
            p > floor * 100.0,
            "{}'s {} Hz tone missing from the mix ({p} vs floor {floor})",
            fx.name,
            fx.tone_hz
        );
    }
}

#[test]
fn render_four_participants_vp8_ogg() {
    render_four("vp8", "ivf", "ogg", "render_vp8");
}

#[test]
fn render_four_participants_h264_wav() {
    render_four("h264", "h264", "wav", "render_h264");
}

#[test]
fn render_survives_a_truncated_and_corrupted_input() {
    let (dir, _) = fixtures();
    let out = scratch("render_corrupt");
    let mut ivf = std::fs::read(dir.join("p1.ivf")).unwrap();
    // Flip bits in the middle and cut the last frame in half.
    for i in (200..ivf.len() / 2).step_by(997) {
        ivf[i] ^= 0x5a;
    }
    ivf.truncate(ivf.len() - 300);
    let bad = out.join("bad.ivf");
    std::fs::write(&bad, &ivf).unwrap();
    let video_out = out.join("out.ivf");
    let f = |name: &str| dir.join(name).display().to_string();
    run_ok(
        tessera()
            .args([
                "render", "--size", "320x180", "--fps", "10", "--codec", "vp8",
            ])
            .arg("--participant")
            .arg(format!("name=Bad,video={}", bad.display()))
            .arg("--participant")
            .arg(format!("name=Good,video={}", f("p2.ivf")))
            .arg("--video-out")
            .arg(&video_out),
    );
    let frames = decode_video_rgb(&video_out, 320, 180);
    assert!(
        frames.len() >= 25,
        "composite stopped after {} frames",
        frames.len()
    );
}

#[test]
fn render_rejects_bad_arguments_clearly() {
    let out = tessera()
        .args([
            "render",
            "--participant",
            "name=A,video=/nonexistent.ivf",
            "--video-out",
        ])
        .arg(Path::new(env!("CARGO_TARGET_TMPDIR")).join("x.ivf"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent.ivf"),
        "error does not name the file: {err}"
    );

    let out = tessera()
        .args([
            "render",
            "--participant",
            "name=A,audio=a.ogg",
            "--video-out",
            "x.mp4",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(".ivf (VP8) or .h264"));
}

#[test]
fn render_a_custom_layout_from_the_config() {
    let (dir, list) = fixtures();
    let out = scratch("render_presenter");
    let video_out = out.join("out.ivf");
    let f = |name: &str| dir.join(name).display().to_string();
    // Only Bo has audio, so Bo is the active speaker and fills the large speaker tile.
    run_ok(
        tessera()
            .args([
                "render",
                "--layout",
                "presenter",
                "--size",
                "640x360",
                "--fps",
                "10",
            ])
            .args(["--codec", "vp8", "--bitrate-kbps", "500"])
            .arg("--participant")
            .arg(format!("name=Ann,video={}", f("p1.ivf")))
            .arg("--participant")
            .arg(format!(
                "name=Bo,video={},audio={}",
                f("p2.ivf"),
                f("p2.ogg")
            ))
            .arg("--participant")
            .arg(format!("name=Cy,video={}", f("p3.ivf")))
            .arg("--video-out")
            .arg(&video_out),
    );
    let frames = decode_video_rgb(&video_out, 640, 360);
    let last = frames.last().expect("no frames");
    // presenter: speaker tile is the left 75%, the others stack in the right column.
    let big = mean_rgb(last, 640, 120, 120, 240, 80);
    assert!(
        colour_distance(big, list[1].rgb) < 60.0,
        "speaker tile shows {big:?}, not Bo"
    );
    let first_small = mean_rgb(last, 640, 500, 30, 80, 30);
    let second_small = mean_rgb(last, 640, 500, 120, 80, 30);
    assert!(
        colour_distance(first_small, list[0].rgb) < 60.0,
        "first side tile: {first_small:?}"
    );
    assert!(
        colour_distance(second_small, list[2].rgb) < 60.0,
        "second side tile: {second_small:?}"
    );
}
