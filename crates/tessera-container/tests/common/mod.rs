//! Helpers shared by the integration tests: scratch directories and running ffmpeg.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh directory for one test, removed when dropped (kept if the test panicked, for
/// a look at the files).
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(test: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("tessera-container-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Runs a command; panics with its stderr if it fails. Returns stdout.
pub fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs ffmpeg quietly with these arguments.
pub fn ffmpeg(args: &[&str]) -> Vec<u8> {
    run_ok(
        Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-v", "error", "-y"])
            .args(args),
    )
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Decodes a file fully with ffmpeg (which must report no error) and returns its audio
/// as s16le at the stream's own rate and channel count.
pub fn ffmpeg_pcm(path: &Path) -> Vec<i16> {
    let raw = ffmpeg(&["-xerror", "-i", s(path), "-f", "s16le", "-"]);
    raw.chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Checks that ffmpeg decodes the whole file without a single error message.
pub fn ffmpeg_decodes_cleanly(path: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i", s(path), "-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success(), "ffmpeg failed on {}", path.display());
    assert!(
        out.stderr.is_empty(),
        "ffmpeg complained about {}:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Per-frame checksums of the decoded video, via ffmpeg's framemd5 (timestamps dropped).
pub fn frame_md5s(path: &Path) -> Vec<String> {
    let out = ffmpeg(&["-i", s(path), "-f", "framemd5", "-"]);
    String::from_utf8(out)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.rsplit(',').next().unwrap().trim().to_string())
        .collect()
}

/// Power of `hz` in `samples` (Goertzel), normalised by length.
pub fn tone_power(samples: &[i16], hz: f64, rate_hz: u32) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(rate_hz);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in samples {
        let s0 = f64::from(x) / 32768.0 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (samples.len() as f64).powi(2)
}
