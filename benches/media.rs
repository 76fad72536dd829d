//! Criterion benches of the room engine's hot paths: compose (4 and 9 tiles into
//! 1280x720) and mix (4 and 50 participants, one 20 ms tick).
//! Run with `make bench` (release profile).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tessera_codec::{Rect, VideoFrame};
use tessera_compose::{ComposeConfig, Compositor, Fit, LayoutSpec, TileInput};
use tessera_mixer::{Mixer, MixerConfig};
use tessera_types::{ParticipantId, Rgb, Yuv};

/// A 640x360 camera-like frame: a colour with a moving bright square.
fn camera(i: usize) -> VideoFrame {
    let colours = [
        Rgb {
            r: 220,
            g: 40,
            b: 40,
        },
        Rgb {
            r: 40,
            g: 200,
            b: 60,
        },
        Rgb {
            r: 40,
            g: 60,
            b: 220,
        },
        Rgb {
            r: 230,
            g: 210,
            b: 40,
        },
    ];
    let mut f = VideoFrame::filled(640, 360, colours[i % colours.len()].to_yuv());
    tessera_codec::scale::fill_rect(
        &mut f,
        Rect::new(40 * i as u32 % 600, 100, 40, 40),
        Yuv {
            y: 235,
            u: 128,
            v: 128,
        },
    );
    f
}

fn compose(c: &mut Criterion) {
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf").ok();
    let mut group = c.benchmark_group("compose_1280x720");
    for n in [4usize, 9] {
        let frames: Vec<VideoFrame> = (0..n).map(camera).collect();
        let names: Vec<String> = (0..n).map(|i| format!("Participant {i}")).collect();
        let mut compositor = Compositor::new(ComposeConfig {
            width: 1280,
            height: 720,
            background: Rgb {
                r: 28,
                g: 31,
                b: 38,
            },
            gap_px: 4,
            fit: Fit::Letterbox,
            labels: font.is_some(),
            label_font: font.clone(),
            placeholder_image: None,
            placeholder_colour: Rgb {
                r: 59,
                g: 66,
                b: 82,
            },
            speaker_highlight: Some(Rgb {
                r: 245,
                g: 180,
                b: 0,
            }),
        })
        .expect("compositor");
        group.bench_with_input(BenchmarkId::new("grid_labels", n), &n, |b, _| {
            b.iter(|| {
                let tiles: Vec<TileInput<'_>> = frames
                    .iter()
                    .zip(&names)
                    .map(|(f, name)| TileInput {
                        name,
                        frame: Some(f),
                        fit: None,
                    })
                    .collect();
                compositor.compose(&LayoutSpec::Grid, &tiles, Some(0)).y[0]
            })
        });
    }
    group.finish();
}

fn mix(c: &mut Criterion) {
    let mut group = c.benchmark_group("mix_20ms_tick");
    for n in [4usize, 50] {
        let mut mixer = Mixer::new(MixerConfig::default());
        let signals: Vec<Vec<i16>> = (0..n)
            .map(|i| {
                (0..960)
                    .map(|s| {
                        ((s as f32 * (200.0 + 37.0 * i as f32) / 48_000.0 * std::f32::consts::TAU)
                            .sin()
                            * 6000.0) as i16
                    })
                    .collect()
            })
            .collect();
        for i in 0..n {
            mixer.add(ParticipantId(i as u64));
        }
        group.bench_with_input(BenchmarkId::new("mix_minus", n), &n, |b, _| {
            b.iter(|| {
                let inputs: Vec<(ParticipantId, &[i16])> = signals
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (ParticipantId(i as u64), s.as_slice()))
                    .collect();
                mixer.mix(&inputs).full[0]
            })
        });
    }
    group.finish();
}

criterion_group!(benches, compose, mix);
criterion_main!(benches);
