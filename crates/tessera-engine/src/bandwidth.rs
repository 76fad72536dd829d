//! Picks a receiver's output tier from an estimate of its downlink.
//!
//! The estimate comes from the best signal the receiver gives: the send-side GCC estimate
//! computed from its transport-wide congestion control feedback (the server's estimator),
//! else its REMB, else a loss-based estimate from its receiver reports. A rung "fits" when
//! the estimate covers the tier's bitrate, 10% for packet headers, and the audio: video
//! gives way first, audio keeps its share.
//!
//! - **Down** as soon as the estimate has stayed below the current rung's need for
//!   `down_after`, straight to the highest rung that fits (several at once if need be).
//!   The timer restarts only when the estimate covers the rung again, never on one clean
//!   report among lossy ones: the estimate is smoothed where it is made.
//! - **Up** only on evidence. An estimate cannot rise far above what is being sent (the
//!   estimators cap it at 1.5 times what was delivered), so the controller asks for a
//!   *probe*: the receiver's video padded up to the next rung's need times `up_headroom`
//!   for `up_after`. If the estimate reaches that rate, the receiver climbs one rung; if
//!   not, the next probe waits `probe_interval`, doubled after each failure (up to 4x),
//!   and reaches less far (1.4 times the estimate instead of 2). A probe stops at once
//!   when the estimator reports queueing or a burst of loss (`Feedback::overuse`).
//!
//! Pure: time is passed in.

use std::time::{Duration, Instant};

use crate::TierId;

/// Thresholds, from `[bandwidth]` in the config.
#[derive(Clone, Debug, PartialEq)]
pub struct BandwidthConfig {
    /// The estimate a new receiver is assumed to have.
    pub start_bps: u64,
    /// Receiver-report loss above this fraction (0..1) shrinks the loss-based estimate.
    pub down_loss: f32,
    /// Receiver-report loss below this fraction lets the loss-based estimate grow.
    pub up_loss: f32,
    /// The estimate must stay below the current rung's need this long before moving down.
    pub down_after: Duration,
    /// How long a probe lasts.
    pub up_after: Duration,
    /// A probe aims at the next rung's need times this.
    pub up_headroom: f32,
    /// Least time between probes (doubled after each failed probe, up to 8 times).
    pub probe_interval: Duration,
    /// What the receiver's audio takes on the wire, in bits per second.
    pub audio_bps: u32,
    /// A new receiver's estimate needs a moment to converge (the send-side one starts
    /// from `start_bps` and jumps to what is delivered): no moving down before this.
    pub startup_grace: Duration,
}

impl Default for BandwidthConfig {
    fn default() -> Self {
        BandwidthConfig {
            start_bps: 600_000,
            down_loss: 0.10,
            up_loss: 0.02,
            down_after: Duration::from_millis(1000),
            up_after: Duration::from_millis(1500),
            up_headroom: 1.15,
            probe_interval: Duration::from_millis(4000),
            audio_bps: 52_000,
            startup_grace: Duration::from_secs(3),
        }
    }
}

/// One rung: a tier and its bitrate, or audio only (`tier: None`, 0 bps).
#[derive(Clone, Debug, PartialEq)]
pub struct Rung {
    pub tier: Option<TierId>,
    pub bitrate_bps: u32,
}

/// What a receiver's feedback said since the last call. Each field is `None` when that
/// signal did not change.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Feedback {
    /// The send-side estimate from transport-wide CC feedback (GCC), in bits per second.
    pub twcc_bps: Option<u64>,
    /// The receiver's REMB, in bits per second.
    pub remb_bps: Option<u64>,
    /// Fraction lost (0..1) from a receiver report on the composite.
    pub loss: Option<f32>,
    /// What the server sent this receiver over the last second, padding included.
    pub sent_bps: Option<u64>,
    /// The send-side estimator saw the path's queue grow (GCC's delay-based overuse) or
    /// overflow (a burst of loss in one feedback) since its last report: a probe in
    /// progress is over the link and stops at once.
    pub overuse: bool,
}

/// Where the estimate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EstimateSource {
    Twcc,
    Remb,
    Loss,
}

impl EstimateSource {
    pub fn as_str(self) -> &'static str {
        match self {
            EstimateSource::Twcc => "twcc",
            EstimateSource::Remb => "remb",
            EstimateSource::Loss => "loss",
        }
    }
}

/// A request to pad a receiver's stream up to `bps` in total until `until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub bps: u64,
    pub until: Instant,
}

/// A signal older than this no longer decides the source.
const SOURCE_STALE: Duration = Duration::from_secs(5);
/// Loss reports are folded into the loss-based estimate at most this often.
const LOSS_INTERVAL: Duration = Duration::from_millis(300);
/// How far the loss-based estimate may rise above the most that was recently sent.
const SENT_HEADROOM: f64 = 1.5;
const SENT_WINDOW: Duration = Duration::from_secs(5);
/// Failed probes to a rung back off up to this many `probe_interval`s (16 s by default):
/// a restored link is found within that, and a gentle probe costs a poor link little.
const MAX_BACKOFF: u32 = 4;
/// An estimate between 80% and 100% of the rung's need must last this many `down_after`s.
const SLIGHT_SHORTFALL_WAIT: u32 = 4;
/// A probe may aim at most this many times the estimate ...
const PROBE_REACH: f64 = 2.0;
/// ... or this many after a probe failed: a link that just refused more gets a gentler
/// test (on the shaped 300k link a probe at twice the estimate overflowed its queue for a
/// second before the loss came back, and froze the picture for 3-4 s).
const PROBE_REACH_AFTER_FAILURE: f64 = 1.4;
/// A probe during which the estimate falls below this share of where it began has failed.
const PROBE_ABORT: f64 = 0.85;
/// Audio loss (0..1) at or above this holds probes back: a link that drops this much of a
/// 50 kbit/s stream is congested. Below it is the random loss of a poor link (1-2% on the
/// shaped 300k link), which gated every probe at `up_loss` (2%) and kept a receiver on
/// audio only for up to 26 s.
const AUDIO_LOSS_GATE: f32 = 0.05;
/// Feedback on a probe's last packets arrives a round trip after it ends.
const PROBE_GRACE: Duration = Duration::from_millis(500);
/// A transport-cc estimate moves a receiver down only this long after a sign of congestion
/// (an overuse, or loss at `up_loss` or more). Without one, a low estimate says only that
/// little was sent: the estimator never lets it rise far past what arrives, so a receiver
/// whose composite is simple (alone in a room, a still picture) would slide down the ladder
/// on a clean link and climb back by probing, over and over.
const CONGESTION_MEMORY: Duration = Duration::from_secs(10);

pub struct BandwidthController {
    cfg: BandwidthConfig,
    /// Lowest first.
    ladder: Vec<Rung>,
    current: usize,
    twcc: Option<(Instant, u64)>,
    remb: Option<(Instant, u64)>,
    loss: LossEstimate,
    /// Recent (time, sent bps) samples, oldest first.
    sent: Vec<(Instant, u64)>,
    below_since: Option<Instant>,
    probe: Option<Probe>,
    next_probe_at: Instant,
    /// Per rung: how much longer than `probe_interval` to wait after failed probes to it
    /// (doubling up to `MAX_BACKOFF` times), and when it may next be probed.
    rung_backoff: Vec<(u32, Instant)>,
    /// The rung being probed for, and the estimate when the probe began.
    probing_for: Option<(usize, u64)>,
    probes_started: u64,
    probes_succeeded: u64,
    /// The last probe failed: the next one reaches `PROBE_REACH_AFTER_FAILURE`.
    gentle: bool,
    /// No moving down before this: the first estimates are still converging.
    grace_until: Instant,
    /// The loss the receiver last reported on its audio, and when.
    audio_loss: Option<(Instant, f32)>,
    /// The last sign of congestion: an overuse, or loss at `up_loss` or more.
    congested_at: Option<Instant>,
}

/// The fallback for receivers that send neither transport-cc feedback nor REMB: grows
/// while reports are clean (never past 1.5 times what was sent), shrinks with heavy loss.
struct LossEstimate {
    bps: f64,
    pending: Vec<f32>,
    last_update: Option<Instant>,
    seen: Option<Instant>,
    /// The loss of the last interval folded in.
    last_avg: f32,
}

impl BandwidthController {
    /// `ladder` is sorted here (lowest bitrate first) and should hold only the rungs this
    /// receiver may get (its caps applied). Starts on the highest rung that fits
    /// `cfg.start_bps`.
    pub fn new(cfg: BandwidthConfig, mut ladder: Vec<Rung>, now: Instant) -> Self {
        ladder.sort_by_key(|r| r.bitrate_bps);
        if ladder.is_empty() {
            ladder.push(Rung {
                tier: None,
                bitrate_bps: 0,
            });
        }
        let mut c = BandwidthController {
            loss: LossEstimate {
                bps: cfg.start_bps as f64,
                pending: Vec::new(),
                last_update: None,
                seen: None,
                last_avg: 0.0,
            },
            current: 0,
            ladder,
            twcc: None,
            remb: None,
            sent: Vec::new(),
            below_since: None,
            probe: None,
            next_probe_at: now + cfg.probe_interval,
            rung_backoff: Vec::new(),
            probing_for: None,
            probes_started: 0,
            probes_succeeded: 0,
            gentle: false,
            grace_until: now,
            audio_loss: None,
            congested_at: None,
            cfg,
        };
        // The start estimate is a guess: when no tier fits it, start on the lowest one and
        // let the receiver's feedback move it down to audio only if need be.
        let lowest_video = c.ladder.iter().position(|r| r.tier.is_some()).unwrap_or(0);
        c.rung_backoff = vec![(1, now); c.ladder.len()];
        c.current = c.fitting(c.cfg.start_bps).max(lowest_video);
        // Receiver reports only tell of trouble: until they do, the start rung is covered.
        c.loss.bps = c.loss.bps.max(c.need_bps(c.current()) as f64);
        c.grace_until = now + c.cfg.startup_grace;
        c
    }

    pub fn current(&self) -> &Rung {
        &self.ladder[self.current]
    }

    /// What a rung takes on the wire: the tier's bitrate, 10% for headers, and the audio.
    pub fn need_bps(&self, rung: &Rung) -> u64 {
        if rung.tier.is_none() {
            return 0;
        }
        rung.bitrate_bps as u64 * 11 / 10 + self.cfg.audio_bps as u64
    }

    /// The highest rung whose need `bps` covers (the lowest if none does).
    fn fitting(&self, bps: u64) -> usize {
        self.ladder
            .iter()
            .rposition(|r| self.need_bps(r) <= bps)
            .unwrap_or(0)
    }

    /// The current estimate and where it comes from.
    pub fn estimate(&self, now: Instant) -> (u64, EstimateSource) {
        let fresh = |s: Option<(Instant, u64)>| {
            s.filter(|(at, _)| now.saturating_duration_since(*at) < SOURCE_STALE)
                .map(|(_, v)| v)
        };
        if let Some(t) = fresh(self.twcc) {
            return (t, EstimateSource::Twcc);
        }
        let loss = self.loss.bps as u64;
        // A better signal that went quiet (its feedback lost on a flooded uplink) still
        // bounds the fallback: the loss-based estimate only shrinks on reports about video,
        // so for a receiver on audio only it is still its start guess, and taking it would
        // climb without evidence.
        let last = |s: Option<(Instant, u64)>| s.map_or(u64::MAX, |(_, v)| v);
        if let Some(r) = fresh(self.remb) {
            // REMB is the receiver's view of delay; loss it reports still counts.
            let bound = if self.loss.seen.is_some() { loss } else { r };
            return (r.min(bound).min(last(self.twcc)), EstimateSource::Remb);
        }
        (
            loss.min(last(self.twcc)).min(last(self.remb)),
            EstimateSource::Loss,
        )
    }

    /// The probe in progress, if any.
    pub fn probe(&self) -> Option<Probe> {
        self.probe
    }

    /// (probes started, probes that ended in a climb).
    pub fn probe_counts(&self) -> (u64, u64) {
        (self.probes_started, self.probes_succeeded)
    }

    fn max_recent_sent(&self, now: Instant) -> Option<u64> {
        self.sent
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) < SENT_WINDOW)
            .map(|(_, b)| *b)
            .max()
    }

    /// Feedback at `now`. Returns the new rung on a switch.
    pub fn on_feedback(&mut self, now: Instant, fb: Feedback) -> Option<Rung> {
        if let Some(t) = fb.twcc_bps {
            self.twcc = Some((now, t));
        }
        if let Some(r) = fb.remb_bps {
            self.remb = Some((now, r));
        }
        if let Some(s) = fb.sent_bps {
            self.sent
                .retain(|(at, _)| now.saturating_duration_since(*at) < SENT_WINDOW);
            self.sent.push((now, s));
        }
        if let Some(l) = fb.loss {
            self.fold_loss(now, l);
        }
        if fb.overuse {
            self.congested_at = Some(now);
            // Queueing while probing: the probe is past what the link carries. Waiting for
            // the estimate to fall (it follows what arrives, and a queue first lets a burst
            // through) would keep flooding the link for the rest of the probe.
            if let (Some(_), Some((rung, _))) = (self.probe, self.probing_for) {
                self.probe_failed(rung, now);
            }
        }
        self.decide(now)
    }

    fn fold_loss(&mut self, now: Instant, loss: f32) {
        let max_sent = self.max_recent_sent(now);
        let cap = max_sent.map(|s| s as f64 * SENT_HEADROOM);
        // A probe that has run for a second or more with clean reports delivered its rate.
        let probed = self.probe.and_then(|p| {
            let started = p.until.checked_sub(self.cfg.up_after)?;
            (now.saturating_duration_since(started) >= Duration::from_secs(1))
                .then_some(max_sent?.min(p.bps) as f64)
        });
        let e = &mut self.loss;
        e.seen = Some(now);
        e.pending.push(loss.clamp(0.0, 1.0));
        let since = e.last_update.map(|t| now.saturating_duration_since(t));
        if since.is_some_and(|d| d < LOSS_INTERVAL) {
            return;
        }
        let elapsed = since.unwrap_or(LOSS_INTERVAL).min(Duration::from_secs(1));
        let avg = e.pending.iter().sum::<f32>() / e.pending.len() as f32;
        e.pending.clear();
        e.last_update = Some(now);
        e.last_avg = avg;
        if avg >= self.cfg.up_loss {
            self.congested_at = Some(now);
        }
        if avg > self.cfg.down_loss {
            e.bps *= 1.0 - 0.5 * avg as f64;
        } else if avg < self.cfg.up_loss {
            let grown = e.bps * 1.08f64.powf(elapsed.as_secs_f64());
            // No evidence, no growth: never far past what was actually sent.
            e.bps = match cap {
                Some(c) => grown.min(c.max(e.bps)),
                None => e.bps,
            };
            if let Some(p) = probed {
                e.bps = e.bps.max(p);
            }
        }
        e.bps = e.bps.max(10_000.0);
    }

    /// The loss the receiver reports on its audio (0..1): no probing while it loses audio.
    pub fn on_audio_loss(&mut self, now: Instant, loss: f32) {
        self.audio_loss = Some((now, loss));
        if loss >= self.cfg.up_loss {
            self.congested_at = Some(now);
        }
    }

    /// Whether a low estimate means a slow link: always for REMB and loss-based estimates;
    /// for transport-cc only after a sign of congestion (see `CONGESTION_MEMORY`).
    fn shortfall_counts(&self, now: Instant, source: EstimateSource) -> bool {
        source != EstimateSource::Twcc
            || self
                .congested_at
                .is_some_and(|at| now.saturating_duration_since(at) < CONGESTION_MEMORY)
    }

    fn losing_audio(&self, now: Instant) -> bool {
        self.audio_loss.is_some_and(|(at, l)| {
            now.saturating_duration_since(at) < SOURCE_STALE && l >= AUDIO_LOSS_GATE
        })
    }

    /// A probe for `rung` failed: wait longer before the next one to it.
    fn probe_failed(&mut self, rung: usize, now: Instant) {
        self.gentle = true;
        self.probe = None;
        self.probing_for = None;
        if let Some(b) = self.rung_backoff.get_mut(rung) {
            b.0 = (b.0 * 2).min(MAX_BACKOFF);
            b.1 = now + self.cfg.probe_interval * b.0;
        }
        self.next_probe_at = now + self.cfg.probe_interval;
    }

    /// Moves down, climbs after a successful probe, or starts and ends probes.
    pub fn decide(&mut self, now: Instant) -> Option<Rung> {
        let (est, source) = self.estimate(now);
        let need = self.need_bps(self.current());
        if est < need {
            if let Some((rung, _)) = self.probing_for {
                self.probe_failed(rung, now);
            }
            if !self.shortfall_counts(now, source) {
                self.below_since = None;
                return None;
            }
            // While a new receiver's estimate converges, only a clear shortfall counts.
            if now < self.grace_until && est >= need / 2 {
                return None;
            }
            // GCC answers an overuse with 0.85 times what arrived, which is just under what
            // the rung needs even on a link that carries it, and then climbs back: only a
            // clear shortfall (under 80%) moves down at once; a slight one must last.
            let since = *self.below_since.get_or_insert(now);
            let wait = if (est as f64) < need as f64 * 0.8 {
                self.cfg.down_after
            } else {
                self.cfg.down_after * SLIGHT_SHORTFALL_WAIT
            };
            if now.saturating_duration_since(since) >= wait {
                self.below_since = None;
                let to = self.fitting(est).min(self.current.saturating_sub(1));
                if to == self.current {
                    // Already on the lowest rung: nothing to switch to.
                    return None;
                }
                self.current = to;
                self.next_probe_at = self.next_probe_at.max(now + self.cfg.probe_interval);
                return Some(self.current().clone());
            }
            return None;
        }
        self.below_since = None;
        let next = self.current + 1;
        let Some(next_need) = self.ladder.get(next).map(|r| self.need_bps(r)) else {
            self.probe = None;
            self.probing_for = None;
            return None;
        };
        let target = (next_need as f64 * self.cfg.up_headroom as f64) as u64;
        if est >= target {
            // Evidence: the estimate reached the next rung's need with headroom.
            if self.probe.take().is_some() {
                self.probes_succeeded += 1;
            }
            self.gentle = false;
            self.probing_for = None;
            self.current = next;
            self.rung_backoff[next] = (1, now);
            self.next_probe_at = now + self.cfg.up_after;
            return Some(self.current().clone());
        }
        match (self.probe, self.probing_for) {
            // The link pushed back while probing: stop at once rather than flood it.
            (Some(_), Some((rung, start_est))) if (est as f64) < start_est as f64 * PROBE_ABORT => {
                self.probe_failed(rung, now);
            }
            (Some(p), Some((rung, _))) if now >= p.until + PROBE_GRACE => {
                if est as f64 >= p.bps as f64 * 0.9 {
                    // A step towards the next rung got through: take the next one soon.
                    self.gentle = false;
                    self.probe = None;
                    self.probing_for = None;
                    self.next_probe_at = now + self.cfg.up_after;
                } else {
                    self.probe_failed(rung, now);
                }
            }
            (Some(_), _) => {}
            // Probes step at most twice the estimate (a rung far above takes several),
            // and only on a link that reports no loss: a probe far past the link would
            // only flood it, and the audio with it.
            (None, _)
                if now >= self.next_probe_at
                    && now >= self.rung_backoff[next].1
                    && self.loss.last_avg < self.cfg.up_loss
                    && !self.losing_audio(now) =>
            {
                self.probes_started += 1;
                self.probing_for = Some((next, est));
                let reach = if self.gentle {
                    PROBE_REACH_AFTER_FAILURE
                } else {
                    PROBE_REACH
                };
                self.probe = Some(Probe {
                    bps: target.min((est as f64 * reach) as u64),
                    until: now + self.cfg.up_after,
                });
            }
            (None, _) => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_types::VideoCodec;

    fn id(name: &str) -> TierId {
        TierId::new(name, VideoCodec::Vp8)
    }

    fn ladder() -> Vec<Rung> {
        let rung = |t: &str, kbps: u32| Rung {
            tier: Some(id(t)),
            bitrate_bps: kbps * 1000,
        };
        vec![
            rung("default", 1500),
            Rung {
                tier: None,
                bitrate_bps: 0,
            },
            rung("low", 400),
            rung("tiny", 120),
        ]
    }

    fn tier(r: &Rung) -> &str {
        r.tier.as_ref().map_or("audio", |t| &t.name)
    }

    #[test]
    fn a_ladder_whose_every_tier_is_over_the_start_estimate_starts_on_its_lowest() {
        let t0 = Instant::now();
        let ladder = vec![
            Rung {
                tier: Some(id("default")),
                bitrate_bps: 1_500_000,
            },
            Rung {
                tier: None,
                bitrate_bps: 0,
            },
        ];
        let c = BandwidthController::new(BandwidthConfig::default(), ladder, t0);
        assert_eq!(tier(c.current()), "default");
    }

    /// Replays a trace of (ms, feedback) and returns every switch as (ms, tier).
    fn replay(
        c: &mut BandwidthController,
        t0: Instant,
        trace: &[(u64, Feedback)],
    ) -> Vec<(u64, String)> {
        trace
            .iter()
            .filter_map(|(ms, fb)| {
                c.on_feedback(t0 + Duration::from_millis(*ms), *fb)
                    .map(|r| (*ms, tier(&r).to_string()))
            })
            .collect()
    }

    fn twcc(bps: u64) -> Feedback {
        Feedback {
            twcc_bps: Some(bps),
            ..Default::default()
        }
    }

    /// A receiver whose GCC estimate follows a link of `link_bps`, probing included: the
    /// estimate tracks what is sent, capped by the link, as a real estimator does.
    fn simulate_twcc(
        c: &mut BandwidthController,
        t0: Instant,
        from_ms: u64,
        to_ms: u64,
        link_bps: impl Fn(u64) -> u64,
        (est, proven): (&mut u64, &mut u64),
    ) -> Vec<(u64, String)> {
        let mut switches = Vec::new();
        let mut ms = from_ms;
        while ms < to_ms {
            let now = t0 + Duration::from_millis(ms);
            let sending = c
                .probe()
                .map(|p| p.bps)
                .unwrap_or_else(|| c.need_bps(c.current()))
                .max(52_000);
            let link = link_bps(ms);
            // As the server's estimator does: on overuse 0.85 x what is delivered; else at
            // least what was delivered, growing slowly, never past 1.5 x what is sent or
            // what was delivered cleanly before.
            *est = if sending > link {
                *proven = (*proven).min(link * 85 / 100);
                link * 85 / 100
            } else {
                *proven = (*proven).max(sending);
                ((*est).max(sending) * 1008 / 1000).min((sending * 3 / 2).max(*proven))
            };
            // The server's estimator reports an overuse when a queue builds.
            let fb = Feedback {
                overuse: sending > link,
                ..twcc(*est)
            };
            if let Some(r) = c.on_feedback(now, fb) {
                switches.push((ms, tier(&r).to_string()));
            }
            ms += 100;
        }
        switches
    }

    #[test]
    fn a_low_estimate_without_congestion_keeps_the_rung_and_with_it_moves_down() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut c = BandwidthController::new(BandwidthConfig::default(), ladder(), t0);
        assert_eq!(tier(c.current()), "low");
        // A simple composite: the estimate follows what little is sent, on a clean link.
        for ms in (4_000..20_000).step_by(100) {
            assert_eq!(c.on_feedback(at(ms), twcc(250_000)), None, "at {ms} ms");
        }
        assert_eq!(tier(c.current()), "low");
        // A queue builds: the same estimate now moves it down.
        let mut switched = None;
        for ms in (20_000..23_000).step_by(100) {
            let fb = Feedback {
                overuse: ms == 20_000,
                ..twcc(250_000)
            };
            switched = switched.or(c.on_feedback(at(ms), fb));
        }
        assert_eq!(switched.as_ref().map(tier), Some("tiny"));
    }

    #[test]
    fn a_new_receiver_starts_on_the_highest_rung_within_the_start_estimate() {
        let t0 = Instant::now();
        let check = |start_kbps: u64, want: &str| {
            let cfg = BandwidthConfig {
                start_bps: start_kbps * 1000,
                ..Default::default()
            };
            let c = BandwidthController::new(cfg, ladder(), t0);
            assert_eq!(tier(c.current()), want, "start {start_kbps} kbit/s");
        };
        check(600, "low");
        check(3000, "default");
        check(250, "tiny");
        check(100, "tiny");
    }

    #[test]
    fn a_link_that_drops_to_300k_leaves_the_top_tier_within_seconds_even_with_clean_reports_between(
    ) {
        let t0 = Instant::now();
        let cfg = BandwidthConfig {
            start_bps: 3_000_000,
            ..Default::default()
        };
        let mut c = BandwidthController::new(cfg, ladder(), t0);
        assert_eq!(tier(c.current()), "default");
        // 40 reports a second: GCC's estimate falls to ~280k; loss reports alternate
        // between heavy and clean, which once restarted the timer for ever.
        let trace: Vec<(u64, Feedback)> = (0..400)
            .map(|i| {
                let ms = i * 25;
                let est = 2_500_000u64.saturating_sub(ms * 600).max(280_000);
                let loss = if i % 2 == 0 { 0.2 } else { 0.0 };
                (
                    ms,
                    Feedback {
                        twcc_bps: Some(est),
                        loss: Some(loss),
                        ..Default::default()
                    },
                )
            })
            .collect();
        let switches = replay(&mut c, t0, &trace);
        let first = switches.first().expect("moved down");
        assert!(first.0 <= 5000, "{switches:?}");
        assert_eq!(tier(c.current()), "tiny", "{switches:?}");
    }

    #[test]
    fn a_receiver_without_evidence_never_climbs() {
        let t0 = Instant::now();
        let cfg = BandwidthConfig {
            start_bps: 300_000,
            ..Default::default()
        };
        let mut c = BandwidthController::new(cfg, ladder(), t0);
        assert_eq!(tier(c.current()), "tiny");
        // No reports at all for a minute: it stays.
        for s in 0..60 {
            assert_eq!(c.decide(t0 + Duration::from_secs(s)), None);
        }
        // Clean receiver reports but nothing sent above the tiny rung: the loss-based
        // estimate is capped at 1.5x what was sent, so it never reaches "low".
        let mut c = BandwidthController::new(
            BandwidthConfig {
                start_bps: 300_000,
                ..Default::default()
            },
            ladder(),
            t0,
        );
        let trace: Vec<(u64, Feedback)> = (0..120)
            .map(|s| {
                (
                    s * 1000,
                    Feedback {
                        loss: Some(0.0),
                        sent_bps: Some(190_000),
                        ..Default::default()
                    },
                )
            })
            .collect();
        assert!(replay(&mut c, t0, &trace).is_empty());
        let (est, source) = c.estimate(t0 + Duration::from_secs(120));
        assert_eq!(source, EstimateSource::Loss);
        assert!(est <= 300_000, "{est}");
    }

    #[test]
    fn probes_climb_an_unshaped_link_to_the_top_and_stop_at_a_300k_link() {
        let t0 = Instant::now();
        let mut c = BandwidthController::new(BandwidthConfig::default(), ladder(), t0);
        assert_eq!(tier(c.current()), "low");
        let (mut est, mut proven) = (600_000, 0);
        let up = simulate_twcc(
            &mut c,
            t0,
            0,
            30_000,
            |_| 50_000_000,
            (&mut est, &mut proven),
        );
        assert_eq!(tier(c.current()), "default", "{up:?}");
        assert!(up.last().unwrap().0 <= 15_000, "{up:?}");
        // The link drops to 300 kbit/s: down within a few seconds, to tiny, and probes to
        // "low" fail without leaving it.
        let down = simulate_twcc(
            &mut c,
            t0,
            30_000,
            90_000,
            |_| 300_000,
            (&mut est, &mut proven),
        );
        assert_eq!(down.first().map(|s| s.1.as_str()), Some("tiny"), "{down:?}");
        assert!(down[0].0 <= 33_000, "{down:?}");
        assert_eq!(
            down.len(),
            1,
            "no climbing on a link that cannot carry it: {down:?}"
        );
        let (started, succeeded) = c.probe_counts();
        assert!(started >= 3, "probes keep testing the link ({started})");
        assert_eq!(succeeded, 1, "low -> default only");
        // The link is restored: back on top within 30 s.
        let back = simulate_twcc(
            &mut c,
            t0,
            90_000,
            120_000,
            |_| 50_000_000,
            (&mut est, &mut proven),
        );
        assert_eq!(tier(c.current()), "default", "{back:?}");
    }

    #[test]
    fn a_probe_stops_at_the_first_overuse_and_waits_before_the_next() {
        let t0 = Instant::now();
        let mut c = BandwidthController::new(BandwidthConfig::default(), ladder(), t0);
        // Settle on tiny (a 300k link: its queue built), then wait for a probe towards low.
        let trace: Vec<(u64, Feedback)> = (0..80)
            .map(|i| {
                let fb = Feedback {
                    overuse: i == 0,
                    ..twcc(275_000)
                };
                (i * 100, fb)
            })
            .collect();
        replay(&mut c, t0, &trace);
        assert_eq!(tier(c.current()), "tiny");
        let mut ms = 8_000;
        while c.probe().is_none() && ms < 30_000 {
            c.on_feedback(t0 + Duration::from_millis(ms), twcc(275_000));
            ms += 100;
        }
        assert!(c.probe().is_some(), "no probe within 30 s");
        // The queue grows while the estimate still rises (a burst got through): stop now,
        // not when the estimate falls.
        let at = t0 + Duration::from_millis(ms + 200);
        c.on_feedback(
            at,
            Feedback {
                twcc_bps: Some(340_000),
                overuse: true,
                ..Default::default()
            },
        );
        assert_eq!(c.probe(), None, "the probe went on through an overuse");
        assert_eq!(tier(c.current()), "tiny");
        assert_eq!(c.probe_counts(), (1, 0));
        // The next probe waits at least probe_interval.
        let mut next = None;
        for i in 1..200u64 {
            let now = at + Duration::from_millis(i * 100);
            c.on_feedback(now, twcc(275_000));
            if c.probe().is_some() {
                next = Some(i * 100);
                break;
            }
        }
        let next = next.expect("probing never resumed");
        assert!(next >= 4_000, "next probe after {next} ms");
    }

    #[test]
    fn an_80k_link_gets_audio_only() {
        let t0 = Instant::now();
        let mut c = BandwidthController::new(BandwidthConfig::default(), ladder(), t0);
        let (mut est, mut proven) = (600_000, 0);
        let s = simulate_twcc(&mut c, t0, 0, 20_000, |_| 80_000, (&mut est, &mut proven));
        assert_eq!(tier(c.current()), "audio", "{s:?}");
    }

    #[test]
    fn heavy_receiver_report_loss_shrinks_the_loss_estimate_and_moves_down() {
        let t0 = Instant::now();
        let mut c = BandwidthController::new(BandwidthConfig::default(), ladder(), t0);
        assert_eq!(tier(c.current()), "low");
        let trace: Vec<(u64, Feedback)> = (0..40)
            .map(|i| {
                (
                    i * 250,
                    Feedback {
                        loss: Some(0.25),
                        sent_bps: Some(500_000),
                        ..Default::default()
                    },
                )
            })
            .collect();
        let s = replay(&mut c, t0, &trace);
        assert!(!s.is_empty() && s[0].0 <= 4000, "{s:?}");
        // A clean probe lets a loss-only receiver climb: the rate it delivered counts.
        let mut c = BandwidthController::new(BandwidthConfig::default(), ladder(), t0);
        let mut switches = Vec::new();
        for i in 0..400u64 {
            let now = t0 + Duration::from_millis(i * 100);
            let sent = c.probe().map_or(c.need_bps(c.current()), |p| p.bps);
            let fb = Feedback {
                loss: (i % 10 == 0).then_some(0.0),
                sent_bps: Some(sent),
                ..Default::default()
            };
            if let Some(r) = c.on_feedback(now, fb) {
                switches.push((i * 100, tier(&r).to_string()));
            }
        }
        assert_eq!(tier(c.current()), "default", "{switches:?}");
        // REMB wins over loss-only once it arrives, and is bounded by the loss estimate.
        let mut c = BandwidthController::new(BandwidthConfig::default(), ladder(), t0);
        c.on_feedback(
            t0,
            Feedback {
                remb_bps: Some(2_000_000),
                ..Default::default()
            },
        );
        assert_eq!(c.estimate(t0), (2_000_000, EstimateSource::Remb));
    }

    #[test]
    fn random_audio_loss_lets_probes_run_but_heavy_audio_loss_holds_them() {
        let t0 = Instant::now();
        let probes_with_audio_loss = |loss: f32| {
            let mut c = BandwidthController::new(BandwidthConfig::default(), ladder(), t0);
            for i in 0..100u64 {
                let now = t0 + Duration::from_millis(i * 100);
                c.on_audio_loss(now, loss);
                c.on_feedback(now, twcc(560_000));
            }
            c.probe_counts().0
        };
        assert!(
            probes_with_audio_loss(0.03) > 0,
            "3% audio loss held every probe"
        );
        assert_eq!(
            probes_with_audio_loss(0.08),
            0,
            "8% audio loss let a probe start"
        );
    }

    #[test]
    fn a_receiver_on_the_lowest_rung_is_never_switched_to_it_again() {
        let t0 = Instant::now();
        let ladder = vec![Rung {
            tier: Some(id("test")),
            bitrate_bps: 600_000,
        }];
        let mut c = BandwidthController::new(BandwidthConfig::default(), ladder, t0);
        let trace: Vec<(u64, Feedback)> = (0..300).map(|i| (i * 100, twcc(400_000))).collect();
        assert_eq!(replay(&mut c, t0, &trace), vec![]);
    }

    #[test]
    fn an_audio_only_receiver_whose_feedback_goes_quiet_stays_on_audio_only() {
        let t0 = Instant::now();
        let mut c = BandwidthController::new(BandwidthConfig::default(), ladder(), t0);
        let mut switches = Vec::new();
        // An 80 kbit/s link: GCC settles at ~60k, below every tier (its queue built).
        for i in 0..100u64 {
            let fb = Feedback {
                twcc_bps: Some(60_000),
                sent_bps: Some(50_000),
                overuse: i == 0,
                ..Default::default()
            };
            if let Some(r) = c.on_feedback(t0 + Duration::from_millis(i * 100), fb) {
                switches.push((i * 100, tier(&r).to_string()));
            }
        }
        assert_eq!(tier(c.current()), "audio", "{switches:?}");
        // Then its feedback is lost for a minute; only the server's own sent rate goes in.
        for i in 100..700u64 {
            let fb = Feedback {
                sent_bps: Some(50_000),
                ..Default::default()
            };
            if let Some(r) = c.on_feedback(t0 + Duration::from_millis(i * 100), fb) {
                switches.push((i * 100, tier(&r).to_string()));
            }
        }
        assert_eq!(tier(c.current()), "audio", "{switches:?}");
        assert_eq!(c.estimate(t0 + Duration::from_secs(70)).0, 60_000);
    }
}
