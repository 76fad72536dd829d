//! `scripts/make-fixtures.sh` makes what the manifest promises, and every file reads with
//! this crate's readers.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{ffmpeg, run_ok, s, tone_power, Scratch};
use tessera_container::{AnnexBReader, IvfReader, OggOpusReader, OpusPacket, Result, WavReader};

struct Row {
    name: String,
    rgb: [u8; 3],
    tone_hz: f64,
}

fn manifest(dir: &Path) -> Vec<Row> {
    let text = fs::read_to_string(dir.join("manifest.tsv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("name\trgb_hex\ttone_hz"));
    lines
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert_eq!(cols.len(), 3, "manifest line {l:?}");
            let hex = u32::from_str_radix(cols[1], 16).unwrap();
            Row {
                name: cols[0].to_string(),
                rgb: [(hex >> 16) as u8, (hex >> 8) as u8, hex as u8],
                tone_hz: cols[2].parse().unwrap(),
            }
        })
        .collect()
}

/// Mean RGB of the centre of frame `n` of a video, decoded by ffmpeg.
fn centre_colour(path: &Path, n: u32) -> [f64; 3] {
    let rgb = ffmpeg(&[
        "-i",
        s(path),
        "-vf",
        &format!("select=eq(n\\,{n}),crop=320:120:160:80"),
        "-frames:v",
        "1",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ]);
    assert_eq!(rgb.len(), 320 * 120 * 3);
    let mut sum = [0f64; 3];
    for px in rgb.chunks_exact(3) {
        for c in 0..3 {
            sum[c] += f64::from(px[c]);
        }
    }
    sum.map(|v| v / (320.0 * 120.0))
}

fn distance(a: [f64; 3], b: [u8; 3]) -> f64 {
    (0..3)
        .map(|i| (a[i] - f64::from(b[i])).powi(2))
        .sum::<f64>()
        .sqrt()
}

#[test]
fn generated_fixtures_match_the_manifest_and_read_back() {
    let dir = Scratch::new("fixtures");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-fixtures.sh");
    let out = run_ok(Command::new(&script).arg(&dir.0).arg("1"));
    let summary = String::from_utf8(out).unwrap();
    assert_eq!(
        summary.lines().count(),
        1,
        "one summary line, got {summary:?}"
    );

    let rows = manifest(&dir.0);
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9"]
    );
    for (i, a) in rows.iter().enumerate() {
        for b in &rows[i + 1..] {
            let d = distance(a.rgb.map(f64::from), b.rgb);
            assert!(
                d > 80.0,
                "{} and {} colours too close ({d:.0})",
                a.name,
                b.name
            );
            assert!(
                (a.tone_hz - b.tone_hz).abs() >= 100.0,
                "{} and {} tones too close",
                a.name,
                b.name
            );
        }
    }

    for row in &rows {
        let file = |ext: &str| dir.join(&format!("{}{ext}", row.name));

        let mut ivf = IvfReader::open(file(".ivf")).unwrap();
        let h = ivf.header().clone();
        assert_eq!(
            (&h.fourcc, h.width, h.height),
            (b"VP80", 640, 360),
            "{}",
            row.name
        );
        assert_eq!((h.timebase_num, h.timebase_den), (1, 30));
        let frames: Vec<_> = ivf.by_ref().collect::<Result<_>>().unwrap();
        assert_eq!(frames.len(), 30, "{}.ivf frames", row.name);
        assert!(
            frames[0].data[0] & 1 == 0,
            "{}.ivf starts with a keyframe",
            row.name
        );

        let aus: Vec<_> = AnnexBReader::open(file(".h264"))
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(aus.len(), 30, "{}.h264 access units", row.name);
        assert!(aus[0].is_idr, "{}.h264 starts with an IDR", row.name);
        // No B frames: every access unit's slices are P or I (baseline), one slice each.
        for au in &aus {
            let slices: Vec<&[u8]> = au
                .nal_units()
                .filter(|n| matches!(n[0] & 0x1f, 1 | 5))
                .collect();
            assert_eq!(slices.len(), 1, "{}.h264 slices per access unit", row.name);
        }

        // The picture is the participant's colour, after compression and 4:2:0.
        for ext in [".ivf", ".h264"] {
            let got = centre_colour(&file(ext), 29);
            let d = distance(got, row.rgb);
            assert!(
                d < 20.0,
                "{}{ext}: centre colour {got:?} vs {:?}",
                row.name,
                row.rgb
            );
        }

        let mut ogg = OggOpusReader::open(file(".ogg")).unwrap();
        assert_eq!(ogg.head().channels, 1);
        let pre_skip = ogg.head().pre_skip;
        let packets: Vec<OpusPacket> = ogg.by_ref().collect::<Result<_>>().unwrap();
        let last = packets.last().unwrap();
        let playable =
            last.pts + u64::from(last.duration) - u64::from(last.end_trim) - u64::from(pre_skip);
        assert!(
            playable.abs_diff(48_000) <= 960,
            "{}.ogg lasts {playable} samples",
            row.name
        );

        let wav = WavReader::open(file(".wav")).unwrap();
        let info = wav.info().clone();
        assert_eq!(
            (info.sample_rate_hz, info.channels),
            (16_000, 1),
            "{}.wav",
            row.name
        );
        let pcm = wav.read_all().unwrap();
        assert_eq!(pcm.len(), 16_000, "{}.wav samples", row.name);
        let own = tone_power(&pcm, row.tone_hz, 16_000);
        for other in rows.iter().filter(|o| o.name != row.name) {
            let p = tone_power(&pcm, other.tone_hz, 16_000);
            assert!(
                own > 1000.0 * p,
                "{}.wav: {} Hz not dominant over {} Hz",
                row.name,
                row.tone_hz,
                other.tone_hz
            );
        }

        let wav48 = WavReader::open(file("-48k.wav")).unwrap();
        assert_eq!(
            (wav48.info().sample_rate_hz, wav48.info().channels),
            (48_000, 1)
        );
        assert_eq!(
            wav48.read_all().unwrap().len(),
            48_000,
            "{}-48k.wav samples",
            row.name
        );

        // Y4M for Chromium: a plain 4:2:0 header and 30 whole frames (1 s).
        let y4m = fs::read(file(".y4m")).unwrap();
        let header_end = y4m.iter().position(|&b| b == b'\n').unwrap();
        let header = std::str::from_utf8(&y4m[..header_end]).unwrap();
        assert!(header.starts_with("YUV4MPEG2 W640 H360 F30:1 "), "{header}");
        assert!(header.contains(" C420"), "{header}");
        let frame = b"FRAME\n".len() + 640 * 360 * 3 / 2;
        assert_eq!(
            y4m.len() - header_end - 1,
            30 * frame,
            "{}.y4m frames",
            row.name
        );
    }

    // A second run with the same arguments does nothing.
    let before = fs::metadata(dir.join("p1.ivf"))
        .unwrap()
        .modified()
        .unwrap();
    let again = String::from_utf8(run_ok(Command::new(&script).arg(&dir.0).arg("1"))).unwrap();
    assert!(again.contains("up to date"), "{again}");
    assert_eq!(
        fs::metadata(dir.join("p1.ivf"))
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
}
