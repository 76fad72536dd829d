//! Sample-rate conversion to and from 48 kHz with `rubato` (synchronous FFT resampler).

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};

use crate::CodecError;

/// Converts a whole mono clip from `from_hz` to `to_hz`; the resampler's start-up delay is
/// trimmed, so the output lines up with the input. Equal rates are a plain copy.
pub fn resample_clip(samples: &[i16], from_hz: u32, to_hz: u32) -> Result<Vec<i16>, CodecError> {
    let invalid = |reason: String| CodecError::InvalidInput {
        what: "sample rate",
        reason,
    };
    if from_hz == 0 || to_hz == 0 || from_hz > 384_000 || to_hz > 384_000 {
        return Err(invalid(format!(
            "{from_hz} Hz -> {to_hz} Hz: rates must be 1..=384000"
        )));
    }
    if from_hz == to_hz || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let input: Vec<f32> = samples.iter().map(|s| *s as f32 / 32768.0).collect();
    let mut resampler =
        Fft::<f32>::new(from_hz as usize, to_hz as usize, 1024, 1, FixedSync::Input)
            .map_err(|e| invalid(e.to_string()))?;
    let adapter =
        InterleavedSlice::new(&input, 1, input.len()).map_err(|e| invalid(e.to_string()))?;
    let out = resampler
        .process_all(&adapter, input.len(), None)
        .map_err(|e| invalid(e.to_string()))?;
    Ok(out
        .take_data()
        .into_iter()
        .map(|s| (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f32, rate: u32, secs: f32) -> Vec<i16> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| {
                ((i as f32 * freq / rate as f32 * std::f32::consts::TAU).sin() * 10_000.0) as i16
            })
            .collect()
    }

    /// Power of `freq` in `x` (Goertzel), relative.
    fn power(x: &[i16], freq: f32, rate: u32) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq as f64 / rate as f64;
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &v in x {
            let s = v as f64 + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) / (x.len() as f64).powi(2)
    }

    #[test]
    fn upsampling_keeps_length_and_pitch() {
        for from in [8_000u32, 16_000, 44_100] {
            let input = tone(1000.0, from, 1.0);
            let out = resample_clip(&input, from, 48_000).unwrap();
            assert!(
                (out.len() as i64 - 48_000).abs() <= 48,
                "{from} Hz: {} samples",
                out.len()
            );
            assert!(
                power(&out, 1000.0, 48_000) > 1000.0 * power(&out, 1500.0, 48_000),
                "{from} Hz lost its tone"
            );
        }
    }

    #[test]
    fn downsampling_and_identity() {
        let input = tone(440.0, 48_000, 0.5);
        let out = resample_clip(&input, 48_000, 16_000).unwrap();
        assert!((out.len() as i64 - 8_000).abs() <= 16);
        assert_eq!(resample_clip(&input, 48_000, 48_000).unwrap(), input);
        assert!(resample_clip(&input, 0, 48_000).is_err());
    }
}
