//! End-to-end tests of the `tessera` binary: real files in, real files out, checked with
//! ffmpeg as an independent decoder. One test binary for the workspace (ripgrep-style).

mod admin;
mod bad_input;
mod bad_rtp;
mod check_config;
mod churn;
mod cluster;
mod hints;
mod layouts;
mod live;
mod media_plane;
mod preview;
mod recording;
mod reload;
mod render;
mod rooms;
mod security;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// One generated fixture participant: its colour and tone.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub name: String,
    pub rgb: [u8; 3],
    pub tone_hz: f32,
}

/// The fixture directory, generated once by `scripts/make-fixtures.sh` if needed.
pub fn fixtures() -> &'static (PathBuf, Vec<Fixture>) {
    static FIXTURES: OnceLock<(PathBuf, Vec<Fixture>)> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = std::env::var_os("TESSERA_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/fixtures"));
        let status = Command::new(root.join("scripts/make-fixtures.sh"))
            .arg(&dir)
            .status()
            .expect("run scripts/make-fixtures.sh");
        assert!(status.success(), "make-fixtures.sh failed");
        let manifest = std::fs::read_to_string(dir.join("manifest.tsv")).expect("manifest.tsv");
        let list = manifest
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("name"))
            .filter_map(|l| {
                let cols: Vec<&str> = l.split('\t').collect();
                let hex = cols.get(1)?.trim_start_matches('#');
                let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
                Some(Fixture {
                    name: cols[0].to_string(),
                    rgb: [byte(0)?, byte(2)?, byte(4)?],
                    tone_hz: cols.get(2)?.parse().ok()?,
                })
            })
            .collect();
        (dir, list)
    })
}

/// A fresh directory for one test's outputs.
pub fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn tessera() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
}

/// Runs a command, returning stdout; panics with stderr if it fails.
pub fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Every decoded frame of a video file as packed RGB24 at its own size, via ffmpeg.
pub fn decode_video_rgb(path: &Path, width: u32, height: u32) -> Vec<Vec<u8>> {
    let raw = run_ok(
        Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(path)
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]),
    );
    let size = (width * height * 3) as usize;
    raw.chunks_exact(size).map(|c| c.to_vec()).collect()
}

/// A file's audio as 48 kHz mono s16, via ffmpeg.
pub fn decode_audio(path: &Path) -> Vec<i16> {
    let raw = run_ok(
        Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(path)
            .args(["-f", "s16le", "-ac", "1", "-ar", "48000", "-"]),
    );
    raw.chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Mean RGB of a rectangle of a packed RGB24 picture.
pub fn mean_rgb(rgb: &[u8], width: u32, x: u32, y: u32, w: u32, h: u32) -> [f64; 3] {
    let mut sum = [0f64; 3];
    for yy in y..y + h {
        for xx in x..x + w {
            let i = ((yy * width + xx) * 3) as usize;
            for c in 0..3 {
                sum[c] += rgb[i + c] as f64;
            }
        }
    }
    let n = (w * h) as f64;
    sum.map(|s| s / n)
}

pub fn colour_distance(a: [f64; 3], b: [u8; 3]) -> f64 {
    (0..3)
        .map(|i| (a[i] - b[i] as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}
