//! Peak limiter without hard clipping, one instance per output signal.
//!
//! The tick is processed as a whole, so the limiter looks ahead inside it for free: gain is
//! decided per 1 ms block and ramps linearly across each block, reaching a loud block's
//! gain at that block's start. Every sample of a block is multiplied by a gain no higher
//! than the block needs, so output peaks stay at or under the ceiling. Reduction is held
//! for [`HOLD_BLOCKS`] (so a low voice's waveform is not gain-modulated between its peaks,
//! which would distort), then released exponentially. A tick that is under the ceiling
//! while no reduction is in force is copied unchanged, bit for bit.

use crate::config::LimiterConfig;
use crate::TICK_SAMPLES;

/// Samples per gain block (1 ms at 48 kHz).
pub(crate) const BLOCK: usize = 48;
const BLOCKS: usize = TICK_SAMPLES / BLOCK;
/// Gain reduction is held this many blocks (20 ms: one period of a 50 Hz fundamental) before
/// release starts.
pub(crate) const HOLD_BLOCKS: u32 = 20;
/// A released gain this close to 1 snaps to 1, so the unchanged-copy path comes back.
const UNITY_SNAP: f32 = 1e-5;
const I16_PEAK: f32 = 32767.0;

/// Values derived from [`LimiterConfig`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LimiterParams {
    /// Largest output magnitude, a whole number of LSBs.
    pub ceiling: f32,
    /// Per-block factor applied to (1 - gain) while releasing.
    pub release_coef: f32,
}

impl LimiterParams {
    pub fn new(cfg: &LimiterConfig) -> Self {
        // `min` ignores NaN, so a NaN threshold means 0 dBFS rather than a NaN ceiling.
        let threshold = cfg.threshold_dbfs.min(0.0);
        let ceiling = (I16_PEAK * 10f32.powf(threshold / 20.0)).floor().max(1.0);
        let block_ms = (BLOCK * 1000) as f32 / crate::SAMPLE_RATE_HZ as f32;
        let release_coef = if cfg.release_ms == 0 {
            0.0
        } else {
            (-block_ms / cfg.release_ms as f32).exp()
        };
        LimiterParams {
            ceiling,
            release_coef,
        }
    }
}

/// Per-output limiter state, carried from tick to tick.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Limiter {
    /// Gain at the end of the last tick, in (0, 1].
    gain: f32,
    hold_blocks: u32,
}

/// What one tick of limiting did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LimitReport {
    pub reduced: bool,
    pub soft_clipped: u32,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            gain: 1.0,
            hold_blocks: 0,
        }
    }
}

impl Limiter {
    #[cfg(test)]
    pub fn gain(&self) -> f32 {
        self.gain
    }

    /// Limits one tick of `input` (a wide sum) into `out`. Both are `TICK_SAMPLES` long.
    pub fn process(&mut self, p: &LimiterParams, input: &[i32], out: &mut [i16]) -> LimitReport {
        debug_assert_eq!(input.len(), TICK_SAMPLES);
        debug_assert_eq!(out.len(), TICK_SAMPLES);
        let mut peaks = [0f32; BLOCKS];
        for (peak, block) in peaks.iter_mut().zip(input.chunks_exact(BLOCK)) {
            *peak = block.iter().map(|x| x.unsigned_abs()).max().unwrap_or(0) as f32;
        }
        if self.gain == 1.0 && peaks.iter().all(|&pk| pk <= p.ceiling) {
            self.hold_blocks = 0;
            // |x| <= ceiling <= 32767: the cast is exact.
            for (o, &x) in out.iter_mut().zip(input) {
                *o = x as i16;
            }
            return LimitReport::default();
        }

        // Gain each block needs, with hold and release; `target[b] * peaks[b] <= ceiling`.
        let mut target = [1f32; BLOCKS];
        let (mut gain, mut hold) = (self.gain, self.hold_blocks);
        for (t, &peak) in target.iter_mut().zip(&peaks) {
            let need = if peak > p.ceiling {
                p.ceiling / peak
            } else {
                1.0
            };
            if need <= gain {
                gain = need;
                hold = HOLD_BLOCKS;
            } else if hold > 0 {
                hold -= 1;
            } else {
                gain = 1.0 - (1.0 - gain) * p.release_coef;
                if 1.0 - gain < UNITY_SNAP {
                    gain = 1.0;
                }
                gain = gain.min(need);
            }
            *t = gain;
        }

        // Block b ramps from min(target[b-1], target[b]) to min(target[b], target[b+1]):
        // both ends are within what block b needs. A block 0 needing less than the previous
        // tick ended with steps down at the tick edge (instant attack).
        let mut report = LimitReport {
            reduced: true,
            soft_clipped: 0,
        };
        let mut start = self.gain.min(target[0]);
        for (b, (block_in, block_out)) in input
            .chunks_exact(BLOCK)
            .zip(out.chunks_exact_mut(BLOCK))
            .enumerate()
        {
            let end = match target.get(b + 1) {
                Some(&next) => target[b].min(next),
                None => target[b],
            };
            let step = (end - start) / BLOCK as f32;
            for (i, (o, &x)) in block_out.iter_mut().zip(block_in).enumerate() {
                let y = x as f32 * (start + step * i as f32);
                *o = soft_clip(y, p.ceiling, &mut report.soft_clipped);
            }
            start = end;
        }
        self.gain = gain;
        self.hold_blocks = hold;
        report
    }
}

/// Rounds to i16, bending anything beyond `ceiling` smoothly (tanh knee, slope 1 at the
/// ceiling) towards full scale instead of flattening it. The gain stage keeps samples under
/// the ceiling, so this only catches rounding and is the safety net if that ever fails.
fn soft_clip(y: f32, ceiling: f32, clipped: &mut u32) -> i16 {
    let a = y.abs();
    if a < ceiling + 0.5 {
        return y.round() as i16;
    }
    *clipped += 1;
    let room = I16_PEAK - ceiling;
    let bent = if room < 1.0 {
        ceiling
    } else {
        ceiling + room * ((a - ceiling) / room).tanh()
    };
    (bent.round().copysign(y)) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(threshold_dbfs: f32, release_ms: u32) -> LimiterParams {
        LimiterParams::new(&LimiterConfig {
            threshold_dbfs,
            release_ms,
        })
    }

    /// Deterministic pseudo-random numbers in [-1, 1) (xorshift32).
    struct Noise(u32);
    impl Noise {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 17;
            self.0 ^= self.0 << 5;
            self.0 as f32 / u32::MAX as f32 * 2.0 - 1.0
        }
    }

    #[test]
    fn ceiling_follows_threshold() {
        let check = |db: f32, want: f32| assert_eq!(params(db, 200).ceiling, want, "{db} dBFS");
        check(0.0, 32767.0);
        check(3.0, 32767.0);
        check(-1.0, 29203.0);
        check(-6.0, 16422.0);
        check(f32::NAN, 32767.0);
        check(-200.0, 1.0);
    }

    #[test]
    fn under_the_ceiling_is_copied_bit_for_bit() {
        let p = params(-1.0, 200);
        let mut lim = Limiter::default();
        let input: Vec<i32> = (0..TICK_SAMPLES as i32)
            .map(|i| (i * 37) % 29203 - 14000)
            .collect();
        let mut out = vec![0i16; TICK_SAMPLES];
        let r = lim.process(&p, &input, &mut out);
        assert!(!r.reduced);
        assert!(out.iter().zip(&input).all(|(&o, &x)| i32::from(o) == x));
    }

    #[test]
    fn random_loud_input_never_exceeds_the_ceiling() {
        // (threshold dBFS, release ms, input scale): wide input, including bursts that start
        // exactly at tick edges and release times of zero.
        let cases = [
            (-1.0, 200, 8.0),
            (-6.0, 0, 3.0),
            (0.0, 50, 40.0),
            (-20.0, 1, 1.0),
        ];
        for (threshold, release_ms, scale) in cases {
            let p = params(threshold, release_ms);
            let mut lim = Limiter::default();
            let mut noise = Noise(0x1234_5678);
            let mut out = vec![0i16; TICK_SAMPLES];
            for tick in 0..200 {
                // Bursts on odd ticks of varying loudness, quiet on even ones.
                let level = if tick % 2 == 1 {
                    scale * (1 + tick % 7) as f32 / 7.0
                } else {
                    0.05
                };
                let input: Vec<i32> = (0..TICK_SAMPLES)
                    .map(|_| (noise.next() * 32767.0 * level) as i32)
                    .collect();
                let r = lim.process(&p, &input, &mut out);
                let peak = out.iter().map(|x| x.unsigned_abs()).max().unwrap();
                assert!(
                    f32::from(peak) <= p.ceiling,
                    "{threshold} dB tick {tick}: peak {peak} > {}",
                    p.ceiling
                );
                assert_eq!(
                    r.soft_clipped, 0,
                    "the gain stage alone should hold the ceiling"
                );
            }
        }
    }

    #[test]
    fn gain_is_held_then_released_back_to_unity() {
        let p = params(-1.0, 100);
        let mut lim = Limiter::default();
        let mut out = vec![0i16; TICK_SAMPLES];
        lim.process(&p, &vec![60_000; TICK_SAMPLES], &mut out);
        let reduced = lim.gain();
        assert!(
            (reduced - p.ceiling / 60_000.0).abs() < 1e-6,
            "gain {reduced}"
        );
        // Quiet: the first HOLD_BLOCKS ms keep the gain, then it recovers.
        let quiet = vec![1000; TICK_SAMPLES];
        lim.process(&p, &quiet, &mut out);
        assert_eq!(lim.gain(), reduced, "held through the hold time");
        assert_eq!(out[0], (1000.0 * reduced).round() as i16);
        lim.process(&p, &quiet, &mut out);
        assert!(
            lim.gain() > reduced && lim.gain() < 1.0,
            "releasing: {}",
            lim.gain()
        );
        let mut ticks = 0;
        while lim.gain() < 1.0 {
            lim.process(&p, &quiet, &mut out);
            ticks += 1;
            assert!(ticks < 200, "never got back to unity");
        }
        // About ln(1 / (1 - reduced) / 1e-5) time constants of 100 ms.
        assert!((40..70).contains(&ticks), "released in {ticks} ticks");
        lim.process(&p, &quiet, &mut out);
        assert!(out.iter().all(|&x| x == 1000), "back to bit-identical");
    }

    #[test]
    fn soft_clip_bends_instead_of_flattening() {
        let mut n = 0;
        let ceiling = 29203.0;
        assert_eq!(soft_clip(1000.4, ceiling, &mut n), 1000);
        assert_eq!(soft_clip(-29203.3, ceiling, &mut n), -29203);
        assert_eq!(n, 0);
        let outs: Vec<i16> = [30_000.0, 31_000.0, 40_000.0, 100_000.0]
            .iter()
            .map(|&y| soft_clip(y, ceiling, &mut n))
            .collect();
        assert_eq!(n, 4);
        assert!(
            outs.windows(2).all(|w| w[0] < w[1]),
            "not monotonic: {outs:?}"
        );
        assert!(outs[0] > 29203 && outs[2] < 32767, "{outs:?}");
        assert_eq!(soft_clip(-100_000.0, ceiling, &mut n), -outs[3]);
        assert_eq!(soft_clip(1e9, 32767.0, &mut n), 32767);
    }
}
