//! Delay and loss for a shaped test link, as a netfilter queue (NFQUEUE) program: the
//! kernels we test on have no `netem`, and `tc tbf` only limits the rate.
//!
//! This crate owns the pure part: the command line ([`parse_args`]) and, per queue, a
//! [`Link`] that holds each packet for a fixed delay, keeps their order and drops a
//! seeded-random share. Time is passed in; nothing here reads the clock or touches netlink.
//! `main.rs` is the IO edge: it binds the queues, feeds packets in and issues the verdicts
//! [`Link`] releases. It must not grow policy of its own (rate stays with `tc tbf`).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use tessera_netem::{Link, QueueSpec};
//!
//! let spec = QueueSpec { queue: 0, delay: Duration::from_millis(50), loss_pct: 0.0, seed: 1 };
//! let mut link = Link::new(&spec);
//! let t0 = Instant::now();
//! assert!(link.push("pkt", t0).is_none()); // held, not dropped
//! assert_eq!(link.pop_due(t0 + Duration::from_millis(49)), None);
//! assert_eq!(link.pop_due(t0 + Duration::from_millis(50)), Some("pkt"));
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// One netfilter queue and what happens to the packets on it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    /// The `--queue-num` of the iptables NFQUEUE rule.
    pub queue: u16,
    /// Every accepted packet is released this long after it arrived.
    pub delay: Duration,
    /// Share of packets dropped, in percent (0..=100).
    pub loss_pct: f64,
    /// Seed of the drop sequence: the same seed drops the same packets in the same order.
    pub seed: u64,
}

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    pub queues: Vec<QueueSpec>,
    /// Print each queue's counters to stderr this often; `None`: only at exit.
    pub stats_every: Option<Duration>,
}

pub const USAGE: &str = "\
usage: tessera-netem --queue N [--delay-ms D] [--loss-pct P] [--seed S] [--queue M ...]
                     [--stats-every-s T]

Binds netfilter queue N (iptables ... -j NFQUEUE --queue-num N, in the same network
namespace), holds every packet D ms (default 0) in arrival order, drops a seeded-random
P% (default 0; seed default N+1) and accepts the rest. --delay-ms, --loss-pct and --seed
apply to the --queue before them. Prints \"ready\" on stdout once every queue is bound;
on SIGTERM or SIGINT accepts what it holds and exits. Counters go to stderr every T s
(default: only at exit).";

/// A command-line error, with the offending argument.
#[derive(Debug, Clone, PartialEq)]
pub struct ArgError(pub String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n\n{USAGE}", self.0)
    }
}

impl std::error::Error for ArgError {}

/// Parses the arguments after the program name. `Ok(None)` means `--help`.
pub fn parse_args<I, S>(args: I) -> Result<Option<Args>, ArgError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut queues: Vec<QueueSpec> = Vec::new();
    let mut stats_every = None;
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let flag = flag.as_ref().to_owned();
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let value = it
            .next()
            .ok_or_else(|| ArgError(format!("{flag} needs a value")))?;
        let value = value.as_ref();
        let number = |what: &str| -> Result<f64, ArgError> {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| ArgError(format!("{flag} {value:?}: {what}")))
        };
        let last = |queues: &mut Vec<QueueSpec>| -> Result<usize, ArgError> {
            if queues.is_empty() {
                Err(ArgError(format!("{flag} must follow a --queue")))
            } else {
                Ok(queues.len() - 1)
            }
        };
        match flag.as_str() {
            "--queue" => {
                let queue = value
                    .parse::<u16>()
                    .map_err(|_| ArgError(format!("--queue {value:?}: want 0..=65535")))?;
                if queues.iter().any(|q| q.queue == queue) {
                    return Err(ArgError(format!("--queue {queue} given twice")));
                }
                queues.push(QueueSpec {
                    queue,
                    delay: Duration::ZERO,
                    loss_pct: 0.0,
                    seed: u64::from(queue) + 1,
                });
            }
            "--delay-ms" => {
                let ms = number("want milliseconds >= 0")?;
                if ms > 60_000.0 {
                    return Err(ArgError(format!("--delay-ms {value}: at most 60000")));
                }
                let i = last(&mut queues)?;
                queues[i].delay = Duration::from_secs_f64(ms / 1000.0);
            }
            "--loss-pct" => {
                let pct = number("want a percentage 0..=100")?;
                if pct > 100.0 {
                    return Err(ArgError(format!("--loss-pct {value}: at most 100")));
                }
                let i = last(&mut queues)?;
                queues[i].loss_pct = pct;
            }
            "--seed" => {
                let seed = value
                    .parse::<u64>()
                    .map_err(|_| ArgError(format!("--seed {value:?}: want an integer")))?;
                let i = last(&mut queues)?;
                queues[i].seed = seed;
            }
            "--stats-every-s" => {
                let s = number("want seconds >= 0")?;
                stats_every = (s > 0.0).then(|| Duration::from_secs_f64(s));
            }
            _ => return Err(ArgError(format!("unknown argument {flag:?}"))),
        }
    }
    if queues.is_empty() {
        return Err(ArgError("no --queue given".into()));
    }
    Ok(Some(Args {
        queues,
        stats_every,
    }))
}

/// SplitMix64: small, seedable and good enough to pick which packets a test link drops.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Counters of one queue since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub received: u64,
    pub dropped: u64,
    pub released: u64,
}

/// One direction of a link: a FIFO of held packets with the time each is due.
#[derive(Debug)]
pub struct Link<T> {
    delay: Duration,
    /// A packet is dropped when a draw is below this (loss_pct of the u64 range).
    drop_below: u64,
    /// 100%: every packet, including a draw of u64::MAX.
    drop_all: bool,
    rng: Rng,
    held: VecDeque<(Instant, T)>,
    stats: LinkStats,
}

impl<T> Link<T> {
    pub fn new(spec: &QueueSpec) -> Self {
        let frac = (spec.loss_pct / 100.0).clamp(0.0, 1.0);
        Link {
            delay: spec.delay,
            // 2^64 * frac; the cast saturates at u64::MAX.
            drop_below: (frac * 18_446_744_073_709_551_616.0) as u64,
            drop_all: frac >= 1.0,
            rng: Rng::new(spec.seed),
            held: VecDeque::new(),
            stats: LinkStats::default(),
        }
    }

    /// A packet arrived at `now`. Returns it back if it is to be dropped now; otherwise
    /// holds it until [`pop_due`](Self::pop_due) releases it.
    pub fn push(&mut self, packet: T, now: Instant) -> Option<T> {
        self.stats.received += 1;
        let draw = self.rng.next_u64();
        if self.drop_all || draw < self.drop_below {
            self.stats.dropped += 1;
            return Some(packet);
        }
        // Never due before the packet ahead of it: the order on the wire is kept even if
        // `now` were to step back.
        let mut due = now + self.delay;
        if let Some(&(last, _)) = self.held.back() {
            due = due.max(last);
        }
        self.held.push_back((due, packet));
        None
    }

    /// The oldest held packet if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        match self.held.front() {
            Some(&(due, _)) if due <= now => {
                self.stats.released += 1;
                self.held.pop_front().map(|(_, p)| p)
            }
            _ => None,
        }
    }

    /// When the next held packet is due, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.held.front().map(|&(due, _)| due)
    }

    /// Every held packet, oldest first, due or not (for a clean exit).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.stats.released += self.held.len() as u64;
        self.held.drain(..).map(|(_, p)| p)
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }
}

#[cfg(test)]
mod tests;
