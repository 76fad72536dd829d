//! Picks a receiver's output tier from its feedback (REMB estimates and receiver-report
//! loss), moving one rung at a time down a ladder of tiers ordered by bitrate, with
//! hysteresis: down quickly when the link cannot carry the tier, up slowly when it has
//! clearly had room for the next one for a while. The lowest rung can be "audio only".
//! Pure: time is passed in.

use std::time::{Duration, Instant};

/// Thresholds, from `[bandwidth]` in the config.
#[derive(Clone, Debug, PartialEq)]
pub struct BandwidthConfig {
    /// Loss above this fraction (0..1) counts as congestion.
    pub down_loss: f32,
    /// Loss below this fraction counts as a clean link.
    pub up_loss: f32,
    /// Congestion must last this long before moving down.
    pub down_after: Duration,
    /// A clean link with room for the next rung must last this long before moving up.
    pub up_after: Duration,
    /// An estimate must exceed the next rung's bitrate by this factor to move up.
    pub up_headroom: f32,
}

/// One rung: a tier name and its bitrate, or audio only (`tier: None`, 0 bps).
#[derive(Clone, Debug, PartialEq)]
pub struct Rung {
    pub tier: Option<String>,
    pub bitrate_bps: u32,
}

pub struct BandwidthController {
    cfg: BandwidthConfig,
    /// Lowest first.
    ladder: Vec<Rung>,
    current: usize,
    bad_since: Option<Instant>,
    good_since: Option<Instant>,
}

impl BandwidthController {
    /// `ladder` is sorted here (lowest bitrate first); starts on the rung of `start`.
    pub fn new(cfg: BandwidthConfig, mut ladder: Vec<Rung>, start: Option<&str>) -> Self {
        ladder.sort_by_key(|r| r.bitrate_bps);
        let current = ladder
            .iter()
            .position(|r| r.tier.as_deref() == start)
            .unwrap_or(ladder.len().saturating_sub(1));
        BandwidthController {
            cfg,
            ladder,
            current,
            bad_since: None,
            good_since: None,
        }
    }

    pub fn current(&self) -> &Rung {
        &self.ladder[self.current]
    }

    /// Feedback at `now`: a bandwidth estimate (REMB) if the receiver sent one, and the
    /// fraction of packets lost since its last report. Returns the new rung on a switch.
    pub fn on_feedback(
        &mut self,
        now: Instant,
        estimate_bps: Option<u64>,
        loss: Option<f32>,
    ) -> Option<Rung> {
        let need = self.current().bitrate_bps as u64;
        let congested = loss.is_some_and(|l| l > self.cfg.down_loss)
            || estimate_bps.is_some_and(|e| need > 0 && e < need);
        let next_up = self
            .ladder
            .get(self.current + 1)
            .map(|r| r.bitrate_bps as u64);
        let room_to_grow = loss.is_none_or(|l| l < self.cfg.up_loss)
            && next_up.is_some_and(|n| {
                estimate_bps.is_none_or(|e| e as f64 >= n as f64 * self.cfg.up_headroom as f64)
            });
        if congested {
            self.good_since = None;
            let since = *self.bad_since.get_or_insert(now);
            if self.current > 0 && now.duration_since(since) >= self.cfg.down_after {
                self.current -= 1;
                self.bad_since = None;
                return Some(self.current().clone());
            }
        } else {
            self.bad_since = None;
            if room_to_grow {
                let since = *self.good_since.get_or_insert(now);
                if now.duration_since(since) >= self.cfg.up_after {
                    self.current += 1;
                    self.good_since = None;
                    return Some(self.current().clone());
                }
            } else {
                self.good_since = None;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder() -> Vec<Rung> {
        vec![
            Rung {
                tier: Some("default".into()),
                bitrate_bps: 1_500_000,
            },
            Rung {
                tier: None,
                bitrate_bps: 0,
            },
            Rung {
                tier: Some("low".into()),
                bitrate_bps: 400_000,
            },
        ]
    }

    fn cfg() -> BandwidthConfig {
        BandwidthConfig {
            down_loss: 0.10,
            up_loss: 0.02,
            down_after: Duration::from_secs(2),
            up_after: Duration::from_secs(8),
            up_headroom: 1.3,
        }
    }

    /// Feeds one report a second for `secs`, returning every switch as (second, tier).
    fn feed(
        c: &mut BandwidthController,
        t0: Instant,
        from: u64,
        secs: u64,
        estimate: Option<u64>,
        loss: Option<f32>,
    ) -> Vec<(u64, Option<String>)> {
        (from..from + secs)
            .filter_map(|s| {
                c.on_feedback(t0 + Duration::from_secs(s), estimate, loss)
                    .map(|r| (s, r.tier))
            })
            .collect()
    }

    #[test]
    fn a_bandwidth_drop_moves_down_a_rung_at_a_time_and_recovery_moves_back_up_slowly() {
        let t0 = Instant::now();
        let mut c = BandwidthController::new(cfg(), ladder(), Some("default"));
        assert_eq!(c.current().tier.as_deref(), Some("default"));
        // A healthy link: nothing changes.
        assert!(feed(&mut c, t0, 0, 10, Some(3_000_000), Some(0.0)).is_empty());
        // The link drops to 300 kbit/s: down to low after 2 s, then, still congested there for
        // 2 s more, to audio only.
        let down = feed(&mut c, t0, 10, 10, Some(300_000), Some(0.05));
        assert_eq!(down, vec![(12, Some("low".into())), (15, None)]);
        // Audio only needs nothing, so a 300 kbit/s link is fine there: it stays.
        assert!(feed(&mut c, t0, 20, 5, Some(300_000), Some(0.0)).is_empty());
        // Recovery: up one rung only after 8 s of room for it, then again.
        let up = feed(&mut c, t0, 25, 20, Some(2_500_000), Some(0.0));
        assert_eq!(
            up,
            vec![(33, Some("low".into())), (42, Some("default".into()))]
        );
    }

    #[test]
    fn loss_alone_moves_down_and_short_blips_do_not() {
        let t0 = Instant::now();
        let mut c = BandwidthController::new(cfg(), ladder(), Some("default"));
        // One bad second between good ones: no switch (it must last 2 s).
        assert!(feed(&mut c, t0, 0, 1, None, Some(0.3)).is_empty());
        assert!(feed(&mut c, t0, 1, 1, None, Some(0.0)).is_empty());
        assert!(feed(&mut c, t0, 2, 1, None, Some(0.3)).is_empty());
        assert!(feed(&mut c, t0, 3, 1, None, Some(0.0)).is_empty());
        // Sustained loss without any estimate.
        let down = feed(&mut c, t0, 4, 3, None, Some(0.2));
        assert_eq!(down, vec![(6, Some("low".into()))]);
        // Up from the top rung never happens.
        let mut top = BandwidthController::new(cfg(), ladder(), Some("default"));
        assert!(feed(&mut top, t0, 0, 30, Some(10_000_000), Some(0.0)).is_empty());
    }
}
