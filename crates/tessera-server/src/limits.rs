//! Limits against abuse: the refusal counters behind `tessera_limit_refusals_total`, the
//! per-IP join rate and the per-WebSocket message rate (`[limits]` in the config).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A limit that refused something; its name is the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Rooms,
    RoomParticipants,
    ServerParticipants,
    WsMessageSize,
    WsMessageRate,
    SdpSize,
    JoinRate,
    Token,
    IdleTimeout,
    IceTimeout,
}

impl Limit {
    pub const ALL: [Limit; 10] = [
        Limit::Rooms,
        Limit::RoomParticipants,
        Limit::ServerParticipants,
        Limit::WsMessageSize,
        Limit::WsMessageRate,
        Limit::SdpSize,
        Limit::JoinRate,
        Limit::Token,
        Limit::IdleTimeout,
        Limit::IceTimeout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Limit::Rooms => "rooms",
            Limit::RoomParticipants => "room_participants",
            Limit::ServerParticipants => "server_participants",
            Limit::WsMessageSize => "ws_message_size",
            Limit::WsMessageRate => "ws_message_rate",
            Limit::SdpSize => "sdp_size",
            Limit::JoinRate => "join_rate",
            Limit::Token => "token",
            Limit::IdleTimeout => "idle_timeout",
            Limit::IceTimeout => "ice_timeout",
        }
    }
}

const JOIN_WINDOW: Duration = Duration::from_secs(60);
/// Past this many tracked addresses, windows that ended are forgotten.
const PRUNE_AT: usize = 4096;

#[derive(Default)]
pub struct Limits {
    refusals: [AtomicU64; Limit::ALL.len()],
    /// Per client address: the start of its current minute and the joins in it.
    joins: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Limits {
    pub fn refused(&self, limit: Limit) {
        self.refusals[limit as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        Limit::ALL
            .iter()
            .map(|l| (l.name(), self.refusals[*l as usize].load(Ordering::Relaxed)))
            .collect()
    }

    /// Counts a join from `ip`; false (and counted as refused) past `per_minute`.
    pub fn allow_join(&self, ip: Option<IpAddr>, per_minute: u32, now: Instant) -> bool {
        let Some(ip) = ip else { return true };
        let mut joins = self.joins.lock().unwrap_or_else(|e| e.into_inner());
        if joins.len() >= PRUNE_AT {
            joins.retain(|_, (start, _)| now.duration_since(*start) < JOIN_WINDOW);
        }
        let (start, n) = joins.entry(ip).or_insert((now, 0));
        if now.duration_since(*start) >= JOIN_WINDOW {
            *start = now;
            *n = 0;
        }
        if *n >= per_minute {
            drop(joins);
            self.refused(Limit::JoinRate);
            return false;
        }
        *n += 1;
        true
    }
}

/// Messages per second with bursts: a token bucket.
pub struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(rate: u32, burst: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: burst as f64,
            rate: rate as f64,
            burst: burst as f64,
            last: now,
        }
    }

    pub fn take(&mut self, now: Instant) -> bool {
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_per_ip_are_limited_per_minute() {
        let l = Limits::default();
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!((0..3).all(|_| l.allow_join(Some(a), 3, t0)));
        assert!(!l.allow_join(Some(a), 3, t0));
        assert!(
            l.allow_join(Some(b), 3, t0),
            "another address is not affected"
        );
        assert!(l.allow_join(Some(a), 3, t0 + JOIN_WINDOW));
        assert_eq!(l.refusals()[Limit::JoinRate as usize], ("join_rate", 1));
    }

    #[test]
    fn the_bucket_allows_bursts_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, 5, t0);
        assert_eq!((0..8).filter(|_| b.take(t0)).count(), 5);
        // 0.5 s later five more tokens have come.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..8).filter(|_| b.take(t1)).count(), 5);
    }
}
