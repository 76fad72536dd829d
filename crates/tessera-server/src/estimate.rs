//! Send-side bandwidth estimation for one receiver (GCC, after draft-ietf-rmcat-gcc-02),
//! driven by `rtc`'s congestion-control interceptor with the transport-wide feedback the
//! receiver sends about our packets.
//!
//! Built from `rtc`'s GCC parts (trend filter, overuse detector, AIMD and loss controllers,
//! delivered-rate window) rather than its ready `Gcc`, for two things a server that climbs
//! a ladder needs and that `Gcc` lacks:
//! - **evidence**: the estimate never rises past 1.5 times what the receiver acknowledged
//!   (plus a little), so it cannot drift up while we send little; and
//! - **probe results**: when clearly more arrives than the estimate (our padding probe) with
//!   no overuse and no loss, the estimate jumps to what arrived, as libwebrtc's probe
//!   controller does, instead of crawling up at 8% a second.
//!
//! It also reports **overuse** on its own terms (`Feedback::overuse`): GCC's trend filter
//! never flagged a probe into a tail-drop link (tbf) in our shaped tests, so a feedback whose
//! every packet is 60 ms past the path's least delay, or that lost a burst, counts too.
//!
//! The estimate goes to the room as [`Command::Feedback`] (at most every 200 ms), and 2.5
//! times it to the composite's writer as its pacing rate, so a keyframe drains in a
//! fraction of a second instead of in one burst.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{
    BandwidthEstimator, EstimatorStats, LossController, OveruseDetector, PacketReport,
    RateController, SlopeEstimator, Usage,
};
use std::collections::VecDeque;
use tessera_engine::Feedback;
use tessera_types::ParticipantId;

use crate::room::{Command, RoomHandle};

/// The pacer releases packets at this multiple of the estimate (libwebrtc's factor).
pub const PACING_FACTOR: f64 = 2.5;
/// The estimate never rises past this multiple of the acknowledged rate, plus `EVIDENCE_SLACK_BPS`.
const EVIDENCE_FACTOR: f64 = 1.5;
const EVIDENCE_SLACK_BPS: f64 = 10_000.0;
/// The delivered rate is measured over this much of the receiver's arrival clock.
const DELIVERED_WINDOW: Duration = Duration::from_millis(1000);
/// More than this multiple of the estimate arriving cleanly is a probe result.
const PROBE_JUMP: f64 = 1.15;
/// No probe result is taken this soon after a decrease.
const AFTER_DECREASE: Duration = Duration::from_secs(1);
const REPORT_EVERY: Duration = Duration::from_millis(200);
/// At least this many packets, and this share of one feedback's packets, lost: a burst
/// (random loss of a few percent seldom loses 3 of one feedback's 10-30 packets).
const BURST_LOSS_PACKETS: usize = 3;
const BURST_LOSS_FRACTION: f64 = 0.1;
/// Every packet of one feedback delayed this much past the path's base delay is a queue
/// building (an overuse), whatever the trend filter says: a probe into a tail-drop link
/// fills its queue steadily, so even the least delayed packet shows it, while jitter
/// delays only some.
const QUEUE_DELAY_OVERUSE: Duration = Duration::from_millis(60);
/// The base delay is the least one-way delay (receiver's clock minus ours, offset
/// included) over this much of the past.
const BASE_DELAY_WINDOW: Duration = Duration::from_secs(10);
pub const MIN_BPS: f64 = 30_000.0;
pub const MAX_BPS: f64 = 50_000_000.0;

/// Where estimates go: the room, for one participant. `None` in tests.
pub struct Report {
    pub room: RoomHandle,
    pub id: ParticipantId,
    /// The composite's writer paces at this rate (bits per second).
    pub pacing: Arc<AtomicU64>,
}

pub struct Estimator {
    slope: SlopeEstimator,
    detector: OveruseDetector,
    /// Acknowledged packets as (arrival on the receiver's clock, bytes), oldest first.
    delivered: VecDeque<(Duration, usize)>,
    delay: RateController,
    loss: LossController,
    estimate: f64,
    /// The most the receiver got cleanly (no overuse, no loss) since the last decrease:
    /// evidence that outlives a quiet encoder. A video encoder seldom fills its budget on
    /// easy content, so the delivered rate alone would drag the estimate below the very
    /// tier that is being sent.
    proven: f64,
    last_decrease: Option<Instant>,
    report: Option<Report>,
    last_report: Option<(Instant, u64)>,
    /// An overuse (the trend filter's `Over`, a queue building, or a burst of loss in one
    /// feedback) since the last report: the next report says so, at once if it is new.
    overuse: bool,
    /// The path's base delay: (departure, one-way delay in µs) with increasing delays, a
    /// sliding minimum over `BASE_DELAY_WINDOW`; delays count from `epoch`.
    base_delay: VecDeque<(Instant, i64)>,
    epoch: Option<Instant>,
    /// Feedbacks that showed an overuse (the trend, a queue or a burst of loss).
    overuses: u64,
    /// The last report said overuse.
    overuse_reported: bool,
}

impl Estimator {
    pub fn new(start_bps: f64, report: Option<Report>) -> Estimator {
        let start = start_bps.clamp(MIN_BPS, MAX_BPS);
        Estimator {
            slope: SlopeEstimator::new(),
            detector: OveruseDetector::new(),
            delivered: VecDeque::new(),
            delay: RateController::new(start, MIN_BPS, MAX_BPS),
            loss: LossController::new(start, MIN_BPS, MAX_BPS),
            estimate: start,
            proven: 0.0,
            last_decrease: None,
            report,
            last_report: None,
            overuse: false,
            base_delay: VecDeque::new(),
            epoch: None,
            overuses: 0,
            overuse_reported: false,
        }
    }

    /// The estimate, in bits per second.
    #[cfg(test)]
    pub fn estimate_bps(&self) -> f64 {
        self.estimate
    }

    /// What the receiver got over the last window of its own arrival times, in bits per
    /// second; `None` until half a window has arrived.
    fn delivered_bps(&mut self) -> Option<f64> {
        let newest = self.delivered.back()?.0;
        while self
            .delivered
            .front()
            .is_some_and(|(at, _)| newest.saturating_sub(*at) > DELIVERED_WINDOW)
        {
            self.delivered.pop_front();
        }
        let oldest = self.delivered.front()?.0;
        let span = newest.saturating_sub(oldest);
        if span < DELIVERED_WINDOW / 2 {
            return None;
        }
        // The first packet's bytes arrived before the span began.
        let bytes: usize = self.delivered.iter().skip(1).map(|(_, b)| b).sum();
        Some(bytes as f64 * 8.0 / span.as_secs_f64())
    }

    /// Whether every arrived packet of this feedback was at least `QUEUE_DELAY_OVERUSE`
    /// later than the path's base delay (then updated with them).
    fn queue_building(&mut self, reports: &[PacketReport]) -> bool {
        let mut least: Option<i64> = None;
        for r in reports {
            let (true, Some(arrival)) = (r.arrived, r.arrival) else {
                continue;
            };
            let epoch = *self.epoch.get_or_insert(r.departure);
            let sent = r.departure.saturating_duration_since(epoch).as_micros() as i64;
            let delay = arrival.as_micros() as i64 - sent;
            least = Some(least.map_or(delay, |l| l.min(delay)));
            while self.base_delay.back().is_some_and(|(_, d)| *d >= delay) {
                self.base_delay.pop_back();
            }
            self.base_delay.push_back((r.departure, delay));
            while self.base_delay.front().is_some_and(|(at, _)| {
                r.departure.saturating_duration_since(*at) > BASE_DELAY_WINDOW
            }) {
                self.base_delay.pop_front();
            }
        }
        let (Some(least), Some((_, base))) = (least, self.base_delay.front()) else {
            return false;
        };
        least - base >= QUEUE_DELAY_OVERUSE.as_micros() as i64
    }

    fn restart_from(&mut self, bps: f64) {
        self.delay = RateController::new(bps, MIN_BPS, MAX_BPS);
        self.loss = LossController::new(bps, MIN_BPS, MAX_BPS);
        self.estimate = bps;
    }

    fn send_report(&mut self, now: Instant) {
        let bps = self.estimate as u64;
        // A new overuse goes out at once: it stops a probe that is flooding the link. One
        // that goes on waits for the usual cadence (on a busy machine every feedback may
        // show one, and a command per feedback only loads the room).
        let due = (self.overuse && !self.overuse_reported)
            || self.last_report.is_none_or(|(at, last)| {
                now.saturating_duration_since(at) >= REPORT_EVERY
                    && (last != bps || now.saturating_duration_since(at) >= Duration::from_secs(1))
            });
        if !due {
            return;
        }
        self.last_report = Some((now, bps));
        let overuse = std::mem::take(&mut self.overuse);
        self.overuse_reported = overuse;
        if let Some(r) = &self.report {
            r.room.send(Command::Feedback {
                id: r.id,
                feedback: Feedback {
                    twcc_bps: Some(bps),
                    overuse,
                    ..Default::default()
                },
                jitter_ms: None,
            });
        }
    }
}

impl BandwidthEstimator for Estimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        let queued = self.queue_building(reports);
        let mut usage = self.detector.usage();
        for r in reports {
            if let (true, Some(at)) = (r.arrived, r.arrival) {
                // Feedback lists packets in send order; arrivals may be reordered a little.
                let at = self.delivered.back().map_or(at, |(last, _)| at.max(*last));
                self.delivered.push_back((at, r.size));
            }
            if let Some(trend) = self.slope.accumulate(r) {
                usage = self.detector.update(trend.at, trend.estimate_ms);
            }
        }
        let received = self.delivered_bps();
        let before = self.estimate;
        let delay = self.delay.update(now, usage, received);
        let lost = reports.iter().filter(|r| !r.arrived).count();
        let loss = self.loss.update(now, lost, reports.len());
        // A burst of loss in one feedback is a queue overflowing (a tail-drop link such as
        // tbf drops instead of delaying once its queue is full, and the delay trend may never
        // say `Over`): it stops a probe as an overuse does.
        let burst_loss =
            lost >= BURST_LOSS_PACKETS && lost as f64 >= reports.len() as f64 * BURST_LOSS_FRACTION;
        if burst_loss || queued || usage == Usage::Over {
            self.overuse = true;
            self.overuses += 1;
        }
        let mut estimate = delay.min(loss);
        if estimate < before * 0.95 {
            self.last_decrease = Some(now);
            self.proven = self.proven.min(estimate);
        }
        if let Some(rx) = received {
            let clean = usage != Usage::Over
                && !burst_loss
                && !queued
                && self.loss.average_loss().is_none_or(|l| l < 0.02)
                && self
                    .last_decrease
                    .is_none_or(|t| now.saturating_duration_since(t) >= AFTER_DECREASE);
            if clean {
                self.proven = self.proven.max(rx);
                if rx > estimate * PROBE_JUMP {
                    // A probe (or a burst) got through without queueing or loss.
                    self.restart_from(rx.min(MAX_BPS));
                    estimate = self.estimate;
                }
            }
            // Evidence: never far above what the receiver got, now or cleanly before.
            estimate = estimate.min((rx * EVIDENCE_FACTOR + EVIDENCE_SLACK_BPS).max(self.proven));
        }
        self.estimate = estimate.clamp(MIN_BPS, MAX_BPS);
        if let Some(r) = &self.report {
            r.pacing
                .store((self.estimate * PACING_FACTOR) as u64, Ordering::Relaxed);
        }
        tracing::trace!(
            reports = reports.len(),
            lost,
            ?received,
            ?usage,
            delay,
            loss,
            estimate = self.estimate,
            "transport-cc feedback"
        );
        self.send_report(now);
    }

    fn target_bitrate(&self) -> f64 {
        self.estimate
    }

    fn stats(&self) -> EstimatorStats {
        let mut s = EstimatorStats::default();
        s.delay_based_bitrate = Some(self.delay.target());
        s.loss_based_bitrate = Some(self.loss.target());
        s.packet_loss = self.loss.average_loss();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

    /// A sender pacing `rate_bps` in 1200-byte packets through a bottleneck of `link_bps`
    /// with a queue of `queue_ms`, feedback every 100 ms: the packet reports a real
    /// receiver would send. Returns the estimate after each feedback.
    struct Link {
        t0: Instant,
        sent_at: f64,
        queue_free_at: f64,
        id: u64,
    }

    impl Link {
        fn new(t0: Instant) -> Link {
            Link {
                t0,
                sent_at: 0.0,
                queue_free_at: 0.0,
                id: 0,
            }
        }

        /// Sends for `secs` at `rate_bps` into `link_bps` (loss every `loss_every`th
        /// packet, 0 = none) and feeds the estimator every 100 ms.
        fn run(
            &mut self,
            est: &mut Estimator,
            secs: f64,
            rate_bps: f64,
            link_bps: f64,
            loss_every: u64,
        ) -> Vec<f64> {
            let size = 1200usize;
            let gap = size as f64 * 8.0 / rate_bps;
            let service = size as f64 * 8.0 / link_bps;
            let end = self.sent_at + secs;
            let mut pending = Vec::new();
            let mut next_feedback = self.sent_at + 0.1;
            let mut out = Vec::new();
            while self.sent_at < end {
                let depart = self.sent_at;
                let start = self.queue_free_at.max(depart);
                let queue_delay = start - depart;
                // A 300 ms drop-tail queue.
                let dropped =
                    queue_delay > 0.3 || (loss_every > 0 && self.id.is_multiple_of(loss_every));
                if !dropped {
                    self.queue_free_at = start + service;
                }
                let arrival = self.queue_free_at + 0.02;
                pending.push(PacketReport {
                    ssrc: 1,
                    id: self.id,
                    rtp_sequence_number: self.id as u16,
                    is_twcc: true,
                    twcc_sequence_number: self.id as u16,
                    size,
                    arrived: !dropped,
                    departure: self.t0 + Duration::from_secs_f64(depart),
                    arrival: (!dropped).then(|| Duration::from_secs_f64(arrival)),
                    ecn: Ecn::default(),
                });
                self.id += 1;
                self.sent_at += gap;
                if self.sent_at >= next_feedback {
                    let now = self.t0 + Duration::from_secs_f64(next_feedback + 0.05);
                    est.on_reports(now, &pending);
                    pending.clear();
                    out.push(est.estimate_bps());
                    next_feedback += 0.1;
                }
            }
            out
        }
    }

    #[test]
    fn the_estimate_never_runs_far_ahead_of_what_is_sent() {
        let t0 = Instant::now();
        let mut est = Estimator::new(600_000.0, None);
        let mut link = Link::new(t0);
        // 200 kbit/s sent on a 50 Mbit/s link for 30 s: no overuse, yet no evidence.
        let trace = link.run(&mut est, 30.0, 200_000.0, 50_000_000.0, 0);
        let last = *trace.last().unwrap();
        assert!(last <= 200_000.0 * 1.6 + 30_000.0, "{last}");
    }

    #[test]
    fn a_probe_that_gets_through_raises_the_estimate_to_its_rate() {
        let t0 = Instant::now();
        let mut est = Estimator::new(600_000.0, None);
        let mut link = Link::new(t0);
        link.run(&mut est, 5.0, 500_000.0, 50_000_000.0, 0);
        let before = est.estimate_bps();
        let probe = link.run(&mut est, 2.0, 2_000_000.0, 50_000_000.0, 0);
        let after = *probe.last().unwrap();
        assert!(before < 1_000_000.0, "{before}");
        assert!(after >= 1_800_000.0, "{probe:?}");
    }

    #[test]
    fn a_probe_into_a_300k_link_fails_and_the_estimate_falls_to_the_link() {
        let t0 = Instant::now();
        let mut est = Estimator::new(600_000.0, None);
        let mut link = Link::new(t0);
        let trace = link.run(&mut est, 10.0, 1_500_000.0, 300_000.0, 0);
        let last = *trace.last().unwrap();
        assert!(last <= 360_000.0, "{trace:?}");
        // Sending what the link carries, it holds near the link.
        let steady = link.run(&mut est, 20.0, 250_000.0, 300_000.0, 0);
        let last = *steady.last().unwrap();
        assert!((150_000.0..=420_000.0).contains(&last), "{steady:?}");
        // A probe to 600 kbit/s overflows the queue: no jump.
        let probe = link.run(&mut est, 2.0, 600_000.0, 300_000.0, 0);
        assert!(probe.iter().all(|e| *e < 500_000.0), "{probe:?}");
    }

    #[test]
    fn a_probe_into_a_300k_link_is_reported_as_overuse_before_the_queue_overflows() {
        let t0 = Instant::now();
        let mut est = Estimator::new(300_000.0, None);
        let mut link = Link::new(t0);
        // 250 kbit/s on the 300k link for 10 s: no queue, no overuse.
        link.run(&mut est, 10.0, 250_000.0, 300_000.0, 0);
        assert_eq!(est.overuses, 0, "overuse with no queue");
        // A probe at 1.4 times: the queue grows 33 ms per 100 ms of probe.
        let mut flagged_after = None;
        for step in 1..=10 {
            // `run` feeds back every 100 ms of its own: one feedback per step.
            link.run(&mut est, 0.101, 420_000.0, 300_000.0, 0);
            if est.overuses > 0 {
                flagged_after = Some(step * 100);
                break;
            }
        }
        let ms = flagged_after.expect("a 1.4x probe into a 300k link was never an overuse");
        // The queue (300 ms) overflows after about 900 ms of it.
        assert!(ms <= 500, "overuse after {ms} ms");
    }

    #[test]
    fn a_quiet_encoder_keeps_the_estimate_a_probe_proved() {
        let t0 = Instant::now();
        let mut est = Estimator::new(300_000.0, None);
        let mut link = Link::new(t0);
        link.run(&mut est, 3.0, 200_000.0, 50_000_000.0, 0);
        link.run(&mut est, 2.0, 600_000.0, 50_000_000.0, 0);
        // The tier's encoder then sends half its budget on easy content: the estimate
        // stays at what the probe delivered, not 1.5 x the quiet rate.
        let quiet = link.run(&mut est, 10.0, 250_000.0, 50_000_000.0, 0);
        assert!(quiet.iter().all(|e| *e >= 540_000.0), "{quiet:?}");
        // Until the link says otherwise.
        let congested = link.run(&mut est, 10.0, 600_000.0, 300_000.0, 0);
        assert!(*congested.last().unwrap() < 400_000.0, "{congested:?}");
    }

    #[test]
    fn heavy_loss_brings_the_estimate_down() {
        let t0 = Instant::now();
        let mut est = Estimator::new(1_000_000.0, None);
        let mut link = Link::new(t0);
        link.run(&mut est, 5.0, 1_000_000.0, 50_000_000.0, 0);
        let trace = link.run(&mut est, 5.0, 1_000_000.0, 50_000_000.0, 5);
        assert!(*trace.last().unwrap() < 800_000.0, "{trace:?}");
    }
}
