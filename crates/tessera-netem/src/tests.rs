use super::*;

fn spec(delay_ms: u64, loss_pct: f64, seed: u64) -> QueueSpec {
    QueueSpec {
        queue: 0,
        delay: Duration::from_millis(delay_ms),
        loss_pct,
        seed,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Pushes packets 0..n at the given arrival offsets (ms), then steps the clock 1 ms at a
/// time and returns (packet, release offset in ms) in release order, plus the dropped ones.
fn run(spec: &QueueSpec, arrivals_ms: &[u64]) -> (Vec<(usize, u64)>, Vec<usize>) {
    let t0 = Instant::now();
    let mut link = Link::new(spec);
    let mut released = Vec::new();
    let mut dropped = Vec::new();
    let end = arrivals_ms.iter().max().copied().unwrap_or(0) + spec.delay.as_millis() as u64 + 2;
    let mut next = 0;
    for t in 0..=end {
        let now = t0 + ms(t);
        while next < arrivals_ms.len() && arrivals_ms[next] == t {
            if let Some(p) = link.push(next, now) {
                dropped.push(p);
            }
            next += 1;
        }
        while let Some(p) = link.pop_due(now) {
            released.push((p, t));
        }
    }
    assert_eq!(link.held(), 0, "everything released by the end");
    (released, dropped)
}

#[test]
fn delay_holds_each_packet_exactly_its_delay_and_keeps_order() {
    // (delay ms, arrivals ms) -> every packet released at arrival + delay, in order.
    let check = |delay: u64, arrivals: &[u64]| {
        let (released, dropped) = run(&spec(delay, 0.0, 7), arrivals);
        assert!(dropped.is_empty());
        let want: Vec<(usize, u64)> = arrivals
            .iter()
            .enumerate()
            .map(|(i, &a)| (i, a + delay))
            .collect();
        assert_eq!(released, want, "delay {delay} ms, arrivals {arrivals:?}");
    };
    check(0, &[0, 0, 1, 5]);
    check(50, &[0, 1, 1, 1, 2, 30, 31, 200]);
    check(150, &[0, 10, 20, 20, 20, 149, 150, 151]);
    check(1, &[3, 3, 3]);
}

#[test]
fn not_released_a_moment_early() {
    let t0 = Instant::now();
    let mut link = Link::new(&spec(50, 0.0, 1));
    assert!(link.push('a', t0).is_none());
    assert!(link.push('b', t0 + ms(10)).is_none());
    assert_eq!(link.next_due(), Some(t0 + ms(50)));
    assert_eq!(link.pop_due(t0 + ms(50) - Duration::from_nanos(1)), None);
    assert_eq!(link.pop_due(t0 + ms(50)), Some('a'));
    assert_eq!(link.pop_due(t0 + ms(50)), None);
    assert_eq!(link.next_due(), Some(t0 + ms(60)));
    assert_eq!(link.pop_due(t0 + ms(100)), Some('b'));
    assert_eq!(link.next_due(), None);
}

#[test]
fn order_is_kept_even_if_the_clock_steps_back() {
    let t0 = Instant::now() + ms(1000);
    let mut link = Link::new(&spec(20, 0.0, 1));
    assert!(link.push(1, t0).is_none());
    assert!(link.push(2, t0 - ms(5)).is_none());
    assert_eq!(link.pop_due(t0 + ms(15)), None, "2 may not overtake 1");
    assert_eq!(link.pop_due(t0 + ms(20)), Some(1));
    assert_eq!(link.pop_due(t0 + ms(20)), Some(2));
}

#[test]
fn loss_drops_about_the_asked_share() {
    // (loss %, seed) over 100 000 packets: within 4 standard deviations of the mean.
    let check = |pct: f64, seed: u64| {
        let n = 100_000u64;
        let t0 = Instant::now();
        let mut link = Link::new(&spec(0, pct, seed));
        let dropped = (0..n).filter(|&i| link.push(i, t0).is_some()).count() as f64;
        let p = pct / 100.0;
        let mean = n as f64 * p;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (dropped - mean).abs() <= 4.0 * sd,
            "{pct}% seed {seed}: dropped {dropped}, want {mean} +- {}",
            4.0 * sd
        );
        let s = link.stats();
        assert_eq!(s.received, n);
        assert_eq!(s.dropped as f64, dropped);
    };
    check(0.0, 1);
    check(1.0, 1);
    check(1.0, 2);
    check(3.0, 3);
    check(0.5, 4);
    check(50.0, 5);
    check(100.0, 6);
}

#[test]
fn no_loss_never_drops_and_full_loss_always_does() {
    let t0 = Instant::now();
    let mut none = Link::new(&spec(0, 0.0, 9));
    let mut all = Link::new(&spec(0, 100.0, 9));
    for i in 0..10_000 {
        assert!(none.push(i, t0).is_none());
        assert_eq!(all.push(i, t0), Some(i));
    }
}

#[test]
fn the_same_seed_drops_the_same_packets() {
    let arrivals: Vec<u64> = (0..2000).map(|i| i / 10).collect();
    let (a_rel, a_drop) = run(&spec(30, 3.0, 42), &arrivals);
    let (b_rel, b_drop) = run(&spec(30, 3.0, 42), &arrivals);
    let (_, c_drop) = run(&spec(30, 3.0, 43), &arrivals);
    assert_eq!(a_drop, b_drop);
    assert_eq!(a_rel, b_rel);
    assert!(!a_drop.is_empty());
    assert_ne!(a_drop, c_drop, "another seed drops other packets");
    // The survivors still come out in order, each exactly 30 ms after it arrived.
    assert!(a_rel.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(a_rel.iter().all(|&(p, t)| t == arrivals[p] + 30));
    assert_eq!(a_rel.len() + a_drop.len(), arrivals.len());
}

#[test]
fn drain_hands_back_everything_held_in_order() {
    let t0 = Instant::now();
    let mut link = Link::new(&spec(500, 0.0, 1));
    for i in 0..5 {
        assert!(link.push(i, t0 + ms(i)).is_none());
    }
    assert_eq!(link.drain().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    assert_eq!(link.held(), 0);
    assert_eq!(link.stats().released, 5);
}

#[test]
fn command_line() {
    let check = |args: &[&str], want: Result<Option<Args>, &str>| {
        let got = parse_args(args).map_err(|e| e.0);
        match want {
            Ok(w) => assert_eq!(got, Ok(w), "{args:?}"),
            Err(msg) => {
                let e = got.expect_err("want an error");
                assert!(e.contains(msg), "{args:?}: {e:?} lacks {msg:?}");
            }
        }
    };
    let q = |queue: u16, delay_ms: u64, loss_pct: f64, seed: u64| QueueSpec {
        queue,
        delay: ms(delay_ms),
        loss_pct,
        seed,
    };
    check(
        &["--queue", "0", "--delay-ms", "50", "--loss-pct", "1"],
        Ok(Some(Args {
            queues: vec![q(0, 50, 1.0, 1)],
            stats_every: None,
        })),
    );
    check(
        &[
            "--queue",
            "3",
            "--delay-ms",
            "150",
            "--loss-pct",
            "3",
            "--seed",
            "9",
            "--queue",
            "4",
            "--delay-ms",
            "150",
            "--stats-every-s",
            "5",
        ],
        Ok(Some(Args {
            queues: vec![q(3, 150, 3.0, 9), q(4, 150, 0.0, 5)],
            stats_every: Some(Duration::from_secs(5)),
        })),
    );
    check(&["--help"], Ok(None));
    check(&[], Err("no --queue"));
    check(&["--delay-ms", "5"], Err("must follow a --queue"));
    check(&["--queue", "70000"], Err("--queue \"70000\""));
    check(&["--queue", "1", "--queue", "1"], Err("given twice"));
    check(&["--queue", "1", "--loss-pct", "101"], Err("at most 100"));
    check(&["--queue", "1", "--loss-pct", "-1"], Err("percentage"));
    check(&["--queue", "1", "--delay-ms"], Err("needs a value"));
    check(&["--queue", "1", "--jitter", "3"], Err("unknown argument"));
}
