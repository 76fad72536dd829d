//! Signal measurements on 16-bit PCM, used by the mixer's level meter and by tests across
//! the workspace to check that a mix contains or lacks a tone.

/// Level reported for digital silence (and the floor of every dBFS value here).
pub const SILENCE_DBFS: f32 = -120.0;

/// Full scale for RMS: a full-scale square wave is 0 dBFS, a full-scale sine about -3 dBFS.
const FULL_SCALE: f64 = 32768.0;

/// Power of `freq_hz` in `samples`, as (amplitude / full scale)²: a full-scale sine at
/// `freq_hz` gives about 1.0, at half amplitude about 0.25, whatever the length.
///
/// Uses a Hann window so a strong tone elsewhere leaks little into the measured frequency
/// (sidelobes fall fast); the price is a main lobe about ±2 bins (±2 · rate / len Hz) wide
/// and up to 1.4 dB less for a tone between bins. Empty input gives 0.
pub fn goertzel_power(samples: &[i16], freq_hz: f32, rate_hz: u32) -> f64 {
    let n = samples.len();
    if n == 0 || rate_hz == 0 {
        return 0.0;
    }
    let omega = std::f64::consts::TAU * f64::from(freq_hz) / f64::from(rate_hz);
    let coeff = 2.0 * omega.cos();
    let window_step = std::f64::consts::TAU / n as f64;
    let (mut s1, mut s2, mut window_sum) = (0.0f64, 0.0f64, 0.0f64);
    for (i, &x) in samples.iter().enumerate() {
        // Periodic Hann; a single sample would get weight 0, so fall back to rectangular.
        let w = if n == 1 {
            1.0
        } else {
            0.5 - 0.5 * (window_step * i as f64).cos()
        };
        window_sum += w;
        let s0 = f64::from(x) * w + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let magnitude_sq = (s1 * s1 + s2 * s2 - coeff * s1 * s2).max(0.0);
    // |X| = amplitude * sum(w) / 2 for a sine at the analysed frequency.
    let amplitude = 2.0 * magnitude_sq.sqrt() / window_sum;
    (amplitude / FULL_SCALE).powi(2)
}

/// RMS level in dBFS (full-scale square wave = 0, full-scale sine ≈ -3.01), at least
/// [`SILENCE_DBFS`]. Empty input is silence.
pub fn rms_dbfs(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return SILENCE_DBFS;
    }
    let energy: f64 = samples.iter().map(|&x| f64::from(x).powi(2)).sum();
    power_to_dbfs(energy / samples.len() as f64 / (FULL_SCALE * FULL_SCALE))
}

/// Mean square relative to full scale² -> dBFS, floored at [`SILENCE_DBFS`].
pub(crate) fn power_to_dbfs(power: f64) -> f32 {
    if power <= 0.0 {
        return SILENCE_DBFS;
    }
    ((10.0 * power.log10()) as f32).max(SILENCE_DBFS)
}

/// Mean square of `energy` (sum of squared samples) over one value count, relative to
/// full scale².
pub(crate) fn energy_to_power(energy: f64, count: usize) -> f64 {
    if count == 0 {
        return 0.0;
    }
    energy / count as f64 / (FULL_SCALE * FULL_SCALE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq_hz: f32, amplitude: f32, len: usize) -> Vec<i16> {
        (0..len)
            .map(|i| {
                let t = i as f32 / 48_000.0;
                (amplitude * (std::f32::consts::TAU * freq_hz * t).sin()).round() as i16
            })
            .collect()
    }

    #[test]
    fn goertzel_reads_amplitude_squared_at_any_length() {
        // (tone Hz, amplitude, length, analysed Hz, expected power, tolerance)
        #[rustfmt::skip]
        let cases: &[(f32, f32, usize, f32, f64, f64)] = &[
            (300.0, 32767.0, 960, 300.0, 1.0, 0.02),
            (300.0, 32767.0, 48_000, 300.0, 1.0, 0.02),
            (440.0, 32767.0, 7_000, 440.0, 1.0, 0.30), // between bins: scalloping
            (600.0, 16384.0, 960, 600.0, 0.25, 0.01),
            (600.0, 16384.0, 96_000, 600.0, 0.25, 0.01),
            (900.0, 32767.0, 960, 300.0, 0.0, 1e-6),   // other tone, bin-aligned
            (900.0, 32767.0, 10_001, 1500.0, 0.0, 1e-6), // other tone, not aligned
        ];
        for &(tone, amp, len, at, want, tol) in cases {
            let got = goertzel_power(&sine(tone, amp, len), at, 48_000);
            assert!(
                (got - want).abs() <= tol,
                "{tone} Hz x{amp} len {len} at {at} Hz: {got}, want {want}"
            );
        }
    }

    #[test]
    fn goertzel_of_nothing_is_zero() {
        assert_eq!(goertzel_power(&[], 300.0, 48_000), 0.0);
        assert_eq!(goertzel_power(&[0; 960], 300.0, 48_000), 0.0);
        assert_eq!(goertzel_power(&[1000; 10], 300.0, 0), 0.0);
        assert!(goertzel_power(&[1000], 0.0, 48_000) > 0.0);
    }

    #[test]
    fn rms_dbfs_levels() {
        let check = |samples: &[i16], want: f32, tol: f32| {
            let got = rms_dbfs(samples);
            assert!(
                (got - want).abs() <= tol,
                "{} samples: {got}, want {want}",
                samples.len()
            );
        };
        check(&[], SILENCE_DBFS, 0.0);
        check(&[0; 960], SILENCE_DBFS, 0.0);
        check(&[-32768; 960], 0.0, 1e-4);
        check(&sine(300.0, 32767.0, 960), -3.01, 0.01);
        check(&sine(300.0, 3277.0, 960), -23.01, 0.01);
        check(&[1; 960], -90.31, 0.01);
    }
}
