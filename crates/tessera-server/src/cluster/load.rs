//! This process's CPU use as a share of the machine's cores, from `/proc/self/stat`.

use std::time::Instant;

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`: 100 on every Linux port).
const TICKS_PER_SEC: f64 = 100.0;

/// Samples the process's CPU time; each `sample` is the share of all cores used since the
/// previous one (0.0..=1.0). Where `/proc` is missing it reads 0.
pub struct CpuMeter {
    cores: f64,
    last: Option<(Instant, f64)>,
    share: f32,
}

/// Shorter intervals repeat the last share: one 10 ms clock tick over a few ms would read
/// as a full machine.
const MIN_INTERVAL_SECS: f64 = 0.25;

impl CpuMeter {
    pub fn new() -> CpuMeter {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let mut m = CpuMeter {
            cores,
            last: None,
            share: 0.0,
        };
        m.last = cpu_secs().map(|s| (Instant::now(), s));
        m
    }

    pub fn sample(&mut self) -> f32 {
        let Some(now_cpu) = cpu_secs() else {
            return 0.0;
        };
        let now = Instant::now();
        if let Some((t, cpu)) = self.last {
            let wall = now.duration_since(t).as_secs_f64();
            if wall < MIN_INTERVAL_SECS {
                return self.share;
            }
            self.share = ((now_cpu - cpu) / (wall * self.cores)).clamp(0.0, 1.0) as f32;
        }
        self.last = Some((now, now_cpu));
        self.share
    }
}

/// User plus system CPU seconds of every thread of this process.
fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat(&stat)
}

/// utime and stime are fields 14 and 15; the command name (field 2) may hold spaces and
/// parentheses, so count from the last `)`.
fn parse_stat(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: f64 = f.next()?.parse().ok()?;
    let stime: f64 = f.next()?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_read_past_a_name_with_spaces() {
        let stat = "4242 (tessera (io) x) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 9 0";
        assert_eq!(parse_stat(stat), Some(4.0));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn the_meter_reads_a_share() {
        let mut m = CpuMeter::new();
        assert_eq!(m.sample(), 0.0, "too soon for a share");
        let t = Instant::now();
        // Burn CPU so the share is above zero where /proc exists.
        let mut x = 0u64;
        while t.elapsed().as_millis() < 300 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let s = m.sample();
        assert!((0.0..=1.0).contains(&s), "{s}");
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(s > 0.0, "a busy thread shows");
        }
    }
}
