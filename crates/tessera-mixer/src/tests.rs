//! Whole-mixer tests: sums, mix-minus, mute and gain, limiting, speaker, scale.

use tessera_types::ParticipantId;

use crate::analysis::{goertzel_power, rms_dbfs};
use crate::{LimiterConfig, MixOutput, Mixer, MixerConfig, TICK_SAMPLES};

const RATE: u32 = 48_000;

fn id(n: u64) -> ParticipantId {
    ParticipantId(n)
}

fn mixer(n: u64, cfg: MixerConfig) -> Mixer {
    let mut m = Mixer::new(cfg);
    for i in 1..=n {
        assert!(m.add(id(i)));
    }
    m
}

/// Tick `tick` of a continuous sine.
fn sine(freq_hz: f32, amplitude: f32, tick: usize) -> Vec<i16> {
    (0..TICK_SAMPLES)
        .map(|i| {
            let t = (tick * TICK_SAMPLES + i) as f64 / f64::from(RATE);
            (f64::from(amplitude) * (std::f64::consts::TAU * f64::from(freq_hz) * t).sin()).round()
                as i16
        })
        .collect()
}

fn mix_owned<'a>(m: &'a mut Mixer, inputs: &[(ParticipantId, Vec<i16>)]) -> &'a MixOutput {
    let refs: Vec<(ParticipantId, &[i16])> =
        inputs.iter().map(|(i, s)| (*i, s.as_slice())).collect();
    m.mix(&refs)
}

/// Longest run of consecutive equal samples whose magnitude is the signal's peak.
fn longest_peak_plateau(pcm: &[i16]) -> usize {
    let peak = pcm.iter().map(|x| x.unsigned_abs()).max().unwrap_or(0);
    let (mut best, mut run) = (0, 0);
    for (i, &x) in pcm.iter().enumerate() {
        if x.unsigned_abs() == peak && i > 0 && pcm[i - 1] == x {
            run += 1;
        } else {
            run = usize::from(x.unsigned_abs() == peak);
        }
        best = best.max(run);
    }
    best
}

#[test]
fn constant_inputs_sum_exactly() {
    struct P {
        value: Option<i16>,
        gain: f32,
        muted: bool,
    }
    let p = |value: i16| P {
        value: Some(value),
        gain: 1.0,
        muted: false,
    };
    let absent = P {
        value: None,
        gain: 1.0,
        muted: false,
    };
    let gain = |value: i16, gain: f32| P {
        value: Some(value),
        gain,
        muted: false,
    };
    let muted = |value: i16| P {
        value: Some(value),
        gain: 1.0,
        muted: true,
    };

    // Every sample of every output is a constant: the full mix and each listener's.
    let check = |name: &str,
                 mix_minus: bool,
                 threshold_dbfs: f32,
                 ps: &[P],
                 full: i16,
                 listeners: &[i16]| {
        let cfg = MixerConfig {
            mix_minus,
            limiter: LimiterConfig {
                threshold_dbfs,
                ..LimiterConfig::default()
            },
            ..MixerConfig::default()
        };
        let mut m = mixer(ps.len() as u64, cfg);
        for (i, p) in ps.iter().enumerate() {
            m.set_gain(id(i as u64 + 1), p.gain);
            m.set_muted(id(i as u64 + 1), p.muted);
        }
        let inputs: Vec<(ParticipantId, Vec<i16>)> = ps
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.value.map(|v| (id(i as u64 + 1), vec![v; TICK_SAMPLES])))
            .collect();
        let out = mix_owned(&mut m, &inputs);
        assert!(
            out.full.iter().all(|&x| x == full),
            "{name}: full {:?}, want {full}",
            &out.full[..4]
        );
        assert_eq!(out.listeners.len(), listeners.len(), "{name}");
        for (i, (&want, (lid, pcm))) in listeners.iter().zip(&out.listeners).enumerate() {
            assert_eq!(*lid, id(i as u64 + 1), "{name}: listener order");
            assert!(
                pcm.iter().all(|&x| x == want),
                "{name}: listener {lid} hears {:?}, want {want}",
                &pcm[..4]
            );
        }
    };

    check("nobody", true, -1.0, &[], 0, &[]);
    check("one", true, -1.0, &[p(1000)], 1000, &[0]);
    check(
        "three",
        true,
        -1.0,
        &[p(100), p(200), p(-50)],
        250,
        &[150, 50, 300],
    );
    check(
        "three, no mix-minus",
        false,
        -1.0,
        &[p(100), p(200), p(-50)],
        250,
        &[250, 250, 250],
    );
    check(
        "one without input",
        true,
        -1.0,
        &[p(100), absent, p(300)],
        400,
        &[300, 400, 100],
    );
    check(
        "muted",
        true,
        -1.0,
        &[muted(100), p(200), p(300)],
        500,
        &[500, 300, 200],
    );
    check(
        "gain 0.5",
        true,
        -1.0,
        &[gain(1000, 0.5), p(200)],
        700,
        &[200, 500],
    );
    check(
        "gain 0.5 rounds",
        true,
        -1.0,
        &[gain(-3, 0.5), p(0)],
        -2,
        &[0, -2],
    );
    check(
        "gain 4",
        true,
        -1.0,
        &[gain(1000, 4.0), p(-2000)],
        2000,
        &[-2000, 4000],
    );
    check(
        "gain above 4 clamps",
        true,
        -1.0,
        &[gain(1000, 9.0), p(0)],
        4000,
        &[0, 4000],
    );
    check("gain 0", true, -1.0, &[gain(1000, 0.0), p(5)], 5, &[5, 0]);
    check(
        "negative gain clamps to 0",
        true,
        -1.0,
        &[gain(1000, -1.0), p(5)],
        5,
        &[5, 0],
    );
    check(
        "extremes at 0 dBFS",
        true,
        0.0,
        &[p(-32768), p(32767)],
        -1,
        &[32767, -32767],
    );
    check(
        "over i16, cancels",
        true,
        -1.0,
        &[p(30000), p(30000), p(-30000)],
        29203, // the limiter's -1 dBFS ceiling
        &[0, 0, 29203],
    );
}

/// Three participants with their own tone each, `ticks` ticks; returns the last output.
fn three_tones(m: &mut Mixer, ticks: usize) -> MixOutput {
    let tones = [(1, 300.0), (2, 600.0), (3, 900.0)];
    let mut last = None;
    for t in 0..ticks {
        let inputs: Vec<(ParticipantId, Vec<i16>)> = tones
            .iter()
            .map(|&(i, hz)| (id(i), sine(hz, 10_000.0, t)))
            .collect();
        last = Some(mix_owned(m, &inputs).clone());
    }
    last.unwrap()
}

#[test]
fn mix_minus_each_listener_lacks_its_own_tone() {
    let mut m = mixer(3, MixerConfig::default());
    let out = three_tones(&mut m, 10);
    let tones = [(id(1), 300.0), (id(2), 600.0), (id(3), 900.0)];
    let floor = goertzel_power(&out.full, 1500.0, RATE);
    for &(_, hz) in &tones {
        let full = goertzel_power(&out.full, hz, RATE);
        assert!(
            full > 0.05 && full > floor * 1e4,
            "full mix lacks {hz} Hz: {full} (floor {floor})"
        );
    }
    for &(listener, own_hz) in &tones {
        let pcm = out.listener(listener).unwrap();
        let own = goertzel_power(pcm, own_hz, RATE);
        for &(other, hz) in tones.iter().filter(|t| t.0 != listener) {
            let p = goertzel_power(pcm, hz, RATE);
            assert!(p > 0.05, "{listener} does not hear {other}: {p}");
            assert!(
                own < p * 1e-3,
                "{listener} hears itself at {own}, {other} at {p}"
            );
        }
    }
}

#[test]
fn without_mix_minus_everyone_hears_the_full_mix_and_it_switches_live() {
    let mut m = mixer(
        3,
        MixerConfig {
            mix_minus: false,
            ..MixerConfig::default()
        },
    );
    let out = three_tones(&mut m, 5);
    for (_, pcm) in &out.listeners {
        assert_eq!(pcm, &out.full);
    }
    assert!(goertzel_power(out.listener(id(1)).unwrap(), 300.0, RATE) > 0.05);
    m.set_config(MixerConfig::default());
    let out = three_tones(&mut m, 1);
    assert!(goertzel_power(out.listener(id(1)).unwrap(), 300.0, RATE) < 1e-9);
}

#[test]
fn a_muted_participant_is_absent_but_still_metered() {
    let mut m = mixer(3, MixerConfig::default());
    m.set_muted(id(2), true);
    let out = three_tones(&mut m, 20);
    for (listener, pcm) in &out.listeners {
        let muted = goertzel_power(pcm, 600.0, RATE);
        assert!(muted < 1e-9, "{listener} hears the muted 600 Hz at {muted}");
    }
    assert!(
        goertzel_power(out.listener(id(2)).unwrap(), 300.0, RATE) > 0.05,
        "muted still hears"
    );
    assert!(
        goertzel_power(out.listener(id(2)).unwrap(), 900.0, RATE) > 0.05,
        "muted still hears"
    );
    // A 10000-amplitude sine is about -13.3 dBFS RMS.
    let level = out.level(id(2)).unwrap();
    assert!((level - -13.3).abs() < 0.5, "muted level {level}");
    assert_ne!(out.active_speaker, Some(id(2)));

    m.set_muted(id(2), false);
    let out = three_tones(&mut m, 1);
    assert!(
        goertzel_power(out.listener(id(1)).unwrap(), 600.0, RATE) > 0.05,
        "unmuted"
    );
}

#[test]
fn gain_scales_amplitude() {
    let mut m = mixer(2, MixerConfig::default());
    let tone = sine(300.0, 12_000.0, 0);
    let plain = m.listener_after(&[(id(1), tone.clone())], id(2));
    m.set_gain(id(1), 0.5);
    let half = m.listener_after(&[(id(1), tone.clone())], id(2));
    assert_eq!(plain, tone);
    for ((&h, &x), i) in half.iter().zip(&tone).zip(0..) {
        assert_eq!(h, (f32::from(x) * 0.5).round() as i16, "sample {i}");
    }
    let ratio = goertzel_power(&half, 300.0, RATE) / goertzel_power(&plain, 300.0, RATE);
    assert!((ratio - 0.25).abs() < 1e-3, "power ratio {ratio}");
    let level_drop = rms_dbfs(&plain) - rms_dbfs(&half);
    assert!((level_drop - 6.02).abs() < 0.01, "{level_drop} dB");
}

impl Mixer {
    /// Mixes one tick and returns what `listener` hears.
    fn listener_after(
        &mut self,
        inputs: &[(ParticipantId, Vec<i16>)],
        listener: ParticipantId,
    ) -> Vec<i16> {
        mix_owned(self, inputs).listener(listener).unwrap().to_vec()
    }
}

#[test]
fn bad_inputs_are_counted_and_the_tick_goes_on() {
    let mut m = mixer(2, MixerConfig::default());
    let short = vec![1000i16; 100];
    let long = vec![7i16; 2000];
    let stray = vec![5000i16; TICK_SAMPLES];
    let dup = vec![3000i16; TICK_SAMPLES];
    let out = m.mix(&[
        (id(1), &short),
        (id(9), &stray),
        (id(2), &long),
        (id(1), &dup),
        (id(2), &[]),
    ]);
    assert!(
        out.full[..100].iter().all(|&x| x == 1007),
        "{:?}",
        &out.full[..4]
    );
    assert!(out.full[100..].iter().all(|&x| x == 7));
    let heard_by_2 = out.listener(id(2)).unwrap();
    assert!(
        heard_by_2[..100].iter().all(|&x| x == 1000) && heard_by_2[100..].iter().all(|&x| x == 0)
    );
    let s = m.stats();
    assert_eq!(
        (
            s.ticks,
            s.unknown_inputs,
            s.duplicate_inputs,
            s.wrong_length_inputs
        ),
        (1, 1, 2, 2),
        "{s:?}"
    );
    // Unknown ids in control calls are ignored too.
    m.set_gain(id(9), 2.0);
    m.set_muted(id(9), true);
    m.set_gain(id(1), f32::NAN);
    assert!(!m.remove(id(9)));
    assert!(!m.add(id(1)));
    let out = m.mix(&[(id(1), &dup)]);
    assert!(out.full.iter().all(|&x| x == 3000), "NaN gain ignored");
}

#[test]
fn eight_full_scale_talkers_are_limited_without_clipping() {
    let ceiling = 29_203; // -1 dBFS
    let n = 8;
    // 100 Hz: a low voice, whose peaks are 5 ms apart (the gain must not recover between
    // them); 300 Hz: peaks every 1.7 ms.
    for hz in [100.0, 300.0] {
        let mut m = mixer(n, MixerConfig::default());
        let mut full = Vec::new();
        let mut heard_by_1 = Vec::new();
        for t in 0..50 {
            let tone = sine(hz, 32767.0, t);
            let inputs: Vec<(ParticipantId, Vec<i16>)> =
                (1..=n).map(|i| (id(i), tone.clone())).collect();
            let out = mix_owned(&mut m, &inputs);
            for pcm in std::iter::once(&out.full).chain(out.listeners.iter().map(|l| &l.1)) {
                let peak = pcm.iter().map(|x| x.unsigned_abs()).max().unwrap();
                assert!(
                    peak <= ceiling,
                    "{hz} Hz tick {t}: peak {peak} over the ceiling"
                );
                assert!(
                    !pcm.iter().any(|&x| x == i16::MAX || x == i16::MIN),
                    "{hz} Hz tick {t}: at full scale"
                );
            }
            full.extend_from_slice(&out.full);
            heard_by_1.extend_from_slice(out.listener(id(1)).unwrap());
        }
        for (name, pcm) in [("full", &full), ("listener", &heard_by_1)] {
            let plateau = longest_peak_plateau(pcm);
            assert!(
                plateau <= 2,
                "{hz} Hz {name}: {plateau} equal samples at the peak: clipped"
            );
            // Limited, not crushed: the fundamental is near the ceiling, harmonics tiny.
            let fundamental = goertzel_power(pcm, hz, RATE);
            let second = goertzel_power(pcm, 2.0 * hz, RATE);
            let third = goertzel_power(pcm, 3.0 * hz, RATE);
            assert!(
                fundamental > 0.7,
                "{hz} Hz {name}: fundamental {fundamental}"
            );
            assert!(
                second.max(third) < fundamental * 1e-6,
                "{hz} Hz {name}: harmonics {second}, {third} vs {fundamental}"
            );
        }
        assert_eq!(m.stats().soft_clipped_samples, 0);
        assert_eq!(m.stats().limited_outputs, 50 * (n + 1));
    }

    // The same checks catch a hard clipper.
    let clipped: Vec<i16> = (0..10)
        .flat_map(|t| sine(300.0, 32767.0, t))
        .map(|x| (i32::from(x) * 8).clamp(-i32::from(ceiling), i32::from(ceiling)) as i16)
        .collect();
    assert!(longest_peak_plateau(&clipped) > 2);
    assert!(goertzel_power(&clipped, 900.0, RATE) > goertzel_power(&clipped, 300.0, RATE) * 1e-6);
}

#[test]
fn a_quiet_single_talker_passes_bit_for_bit() {
    let mut m = mixer(3, MixerConfig::default());
    for t in 0..20 {
        // Two tones near -14 dBFS peak -6 dBFS: a normal voice level.
        let voice: Vec<i16> = sine(220.0, 9000.0, t)
            .iter()
            .zip(sine(1330.0, 7000.0, t))
            .map(|(&a, b)| a + b)
            .collect();
        let silence = vec![0i16; TICK_SAMPLES];
        let out = mix_owned(&mut m, &[(id(1), voice.clone()), (id(2), silence)]);
        assert_eq!(out.full, voice, "tick {t}");
        assert_eq!(out.listener(id(2)).unwrap(), voice.as_slice());
        assert_eq!(out.listener(id(3)).unwrap(), voice.as_slice());
        assert!(out.listener(id(1)).unwrap().iter().all(|&x| x == 0));
    }
    assert_eq!(m.stats().limited_outputs, 0);
}

/// Runs `ticks` ticks where `amplitude(tick, participant)` gives each of `n` participants'
/// 300 Hz tone amplitude (0: silent). Returns (tick, speaker) for every change.
fn speaker_run(
    m: &mut Mixer,
    n: u64,
    ticks: usize,
    amplitude: impl Fn(usize, u64) -> f32,
) -> Vec<(usize, Option<ParticipantId>)> {
    let mut changes = Vec::new();
    for t in 0..ticks {
        let inputs: Vec<(ParticipantId, Vec<i16>)> = (1..=n)
            .map(|i| (id(i), sine(300.0 * i as f32, amplitude(t, i), t)))
            .collect();
        let out = mix_owned(m, &inputs);
        if out.speaker_changed {
            changes.push((t, out.active_speaker));
        }
    }
    changes
}

#[test]
fn a_louder_sustained_challenger_takes_over_after_switch_after_ms() {
    let mut m = mixer(2, MixerConfig::default());
    // A at about -24 dBFS alone for 1.2 s, then B at about -12 dBFS too.
    let changes = speaker_run(&mut m, 2, 150, |t, i| match i {
        1 => 3000.0,
        _ if t >= 60 => 12_000.0,
        _ => 0.0,
    });
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0], (0, Some(id(1))));
    assert_eq!(changes[1].1, Some(id(2)));
    let after_ms = (changes[1].0 - 60) * 20;
    assert!(
        (400..=500).contains(&after_ms),
        "switched {after_ms} ms after B started"
    );
}

#[test]
fn alternating_talkers_do_not_flap() {
    // (A amplitude, B amplitude): equal, B 4 dB louder, B 20 dB louder.
    for (a, b) in [(8000.0, 8000.0), (8000.0, 12_700.0), (2000.0, 20_000.0)] {
        let mut m = mixer(2, MixerConfig::default());
        // Every 200 ms the other one talks, for 3 s.
        let changes = speaker_run(&mut m, 2, 150, |t, i| match (t / 10 % 2, i) {
            (0, 1) => a,
            (1, 2) => b,
            _ => 0.0,
        });
        assert!((1..=2).contains(&changes.len()), "{a}/{b}: {changes:?}");
        for w in changes.windows(2) {
            assert!(
                w[1].0 - w[0].0 >= 50,
                "{a}/{b}: changes within 1 s: {changes:?}"
            );
        }
    }
}

#[test]
fn the_last_speaker_stays_through_silence() {
    let mut m = mixer(2, MixerConfig::default());
    let changes = speaker_run(
        &mut m,
        2,
        200,
        |t, i| if i == 1 && t < 50 { 8000.0 } else { 0.0 },
    );
    assert_eq!(changes, vec![(0, Some(id(1)))]);
    assert_eq!(m.active_speaker(), Some(id(1)));
    // Levels decayed to silence meanwhile.
    let out = m.mix(&[]);
    assert!(
        out.levels.iter().all(|&(_, db)| db < -100.0),
        "{:?}",
        out.levels
    );
    // Then B speaks: A has been silent long enough, B takes over at once.
    let changes = speaker_run(&mut m, 2, 5, |_, i| if i == 2 { 8000.0 } else { 0.0 });
    assert_eq!(changes, vec![(0, Some(id(2)))]);
}

#[test]
fn removing_the_speaker_clears_then_hands_over() {
    let mut m = mixer(3, MixerConfig::default());
    let changes = speaker_run(&mut m, 3, 20, |_, i| [0.0, 8000.0, 3000.0, 0.0][i as usize]);
    assert_eq!(changes, vec![(0, Some(id(1)))]);
    assert!(m.remove(id(1)));
    assert_eq!(m.active_speaker(), None);
    assert_eq!(m.participants().collect::<Vec<_>>(), vec![id(2), id(3)]);
    let tone = sine(600.0, 3000.0, 0);
    let out = m.mix(&[(id(2), &tone), (id(1), &tone)]);
    assert_eq!(
        (out.active_speaker, out.speaker_changed),
        (Some(id(2)), true)
    );
    assert_eq!(out.listeners.len(), 2);
    assert_eq!(out.levels.len(), 2);
    assert_eq!(
        m.stats().unknown_inputs,
        1,
        "input of the removed participant"
    );
    // Removing someone else leaves the speaker alone.
    assert!(m.remove(id(3)));
    let out = m.mix(&[(id(2), &tone)]);
    assert_eq!(
        (out.active_speaker, out.speaker_changed),
        (Some(id(2)), false)
    );
    // Nobody left.
    assert!(m.remove(id(2)));
    let out = m.mix(&[]);
    assert_eq!((out.active_speaker, out.speaker_changed), (None, false));
    assert!(out.listeners.is_empty() && out.full.iter().all(|&x| x == 0));
}

#[test]
fn fifty_participants_mix_exactly() {
    let n = 50u64;
    let mut m = mixer(n, MixerConfig::default());
    let mut seed = 0x9e37_79b9u32;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        (seed % 401) as i16 - 200
    };
    for t in 0..60 {
        // Everyone but every 7th participant (rotating) sends noise under ±200: the sum stays
        // under the ceiling, so every output must be the exact integer sum.
        let inputs: Vec<(ParticipantId, Vec<i16>)> = (1..=m.participants().count() as u64)
            .map(|k| m.participants().nth(k as usize - 1).unwrap())
            .filter(|p| (p.0 + t) % 7 != 0)
            .map(|p| (p, (0..TICK_SAMPLES).map(|_| noise()).collect()))
            .collect();
        let mut sum = vec![0i32; TICK_SAMPLES];
        for (_, pcm) in &inputs {
            for (s, &x) in sum.iter_mut().zip(pcm) {
                *s += i32::from(x);
            }
        }
        let out = mix_owned(&mut m, &inputs);
        assert!(
            out.full.iter().zip(&sum).all(|(&o, &s)| i32::from(o) == s),
            "tick {t}: full"
        );
        for (listener, pcm) in &out.listeners {
            let own = inputs
                .iter()
                .find(|(i, _)| i == listener)
                .map(|(_, p)| p.as_slice());
            for (i, (&o, &s)) in pcm.iter().zip(&sum).enumerate() {
                let want = s - own.map_or(0, |p| i32::from(p[i]));
                assert_eq!(i32::from(o), want, "tick {t}: {listener} sample {i}");
            }
        }
        assert_eq!(out.levels.len(), out.listeners.len());
        // Uniform ±200 noise is about -49 dBFS: metered, but under the speaker threshold.
        assert!(
            out.levels.iter().all(|&(_, db)| db < -48.0),
            "tick {t}: {:?}",
            out.levels
        );
        assert!(
            t < 15 || out.levels.iter().any(|&(_, db)| db > -51.0),
            "tick {t}: {:?}",
            out.levels
        );
        assert_eq!(out.active_speaker, None);
        if t == 30 {
            // Half leave mid-call.
            for k in (1..=n).step_by(2) {
                assert!(m.remove(id(k)));
            }
        }
    }
    assert_eq!(m.participants().count(), 25);
    assert_eq!(m.stats().limited_outputs, 0);
}
