//! `tessera-load`: opens R rooms x P participants against a running `tessera serve`, each
//! sending pre-encoded fixture media (VP8 IVF + Ogg Opus from `make fixtures`, so the tool
//! itself is cheap), and reports join-to-first-frame time, the composite frame rate each
//! participant receives, and (with `--pid`) the server's CPU use and RSS.
//!
//! ```text
//! tessera-load --url http://127.0.0.1:8080 --rooms 1 --participants 4 --seconds 30 --pid $(pidof tessera)
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tessera_container::{IvfReader, OggOpusReader};
use tessera_server::client::{Client, Media};
use tessera_types::VideoCodec;

#[derive(Parser)]
#[command(
    name = "tessera-load",
    about = "Load a Tessera server with WebRTC participants"
)]
struct Args {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    #[arg(long, default_value_t = 4)]
    participants: usize,
    /// How long to keep everyone in after the last join.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Fixture directory (`make fixtures` writes target/fixtures; also $TESSERA_FIXTURES).
    #[arg(long)]
    fixtures: Option<PathBuf>,
    /// The server's process id, to report its CPU time and RSS.
    #[arg(long)]
    pid: Option<u32>,
}

fn load(dir: &std::path::Path, n: usize) -> anyhow::Result<Media> {
    let name = format!("p{}", n % 9 + 1);
    let ivf = dir.join(format!("{name}.ivf"));
    let frames = IvfReader::open(&ivf)
        .with_context(|| format!("{}: run `make fixtures` first", ivf.display()))?
        .map(|f| f.map(|f| f.data))
        .collect::<Result<Vec<_>, _>>()?;
    let mut audio = Vec::new();
    let mut r = OggOpusReader::open(dir.join(format!("{name}.ogg")))?;
    while let Some(p) = r.next_packet()? {
        audio.push(p.data);
    }
    Ok(Media {
        video: Some((VideoCodec::Vp8, frames)),
        video_fps: 30,
        audio,
        token: None,
    })
}

/// (CPU seconds user+system, RSS MiB) of a process, from /proc.
fn proc_usage(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    // USER_HZ is 100 on Linux.
    Some((ticks / 100.0, rss_kb / 1024.0))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fixtures = args
        .fixtures
        .clone()
        .or_else(|| std::env::var_os("TESSERA_FIXTURES").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target/fixtures"));
    let mut clients = Vec::new();
    for r in 0..args.rooms {
        for p in 0..args.participants {
            let media = load(&fixtures, r * args.participants + p)?;
            let room = format!("load-{r}");
            let c = tokio::time::timeout(
                Duration::from_secs(20),
                Client::join(&args.url, &room, &format!("L{r}-{p}"), media),
            )
            .await
            .context("join timed out")??;
            clients.push(c);
        }
    }
    println!(
        "joined {} participants in {} rooms",
        clients.len(),
        args.rooms
    );
    // Let every first frame arrive, then measure a steady window.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let start = Instant::now();
    let cpu0 = args.pid.and_then(proc_usage);
    let frames0: Vec<usize> = clients
        .iter()
        .map(|c| c.received.lock().map(|r| r.video.len()).unwrap_or(0))
        .collect();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let secs = start.elapsed().as_secs_f64();
    let cpu1 = args.pid.and_then(proc_usage);
    let mut firsts = Vec::new();
    let mut fps = Vec::new();
    for (c, f0) in clients.iter().zip(frames0) {
        let r = c.received.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        if let Some(t) = r.first_frame_at {
            firsts.push((t - c.joined_at).as_secs_f64() * 1000.0);
        }
        fps.push((r.video.len() - f0) as f64 / secs);
    }
    firsts.sort_by(f64::total_cmp);
    fps.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "join -> first composite frame: median {:.0} ms, max {:.0} ms ({} of {} got a frame)",
        median(&firsts),
        firsts.last().copied().unwrap_or(f64::NAN),
        firsts.len(),
        clients.len()
    );
    println!(
        "composite fps received: min {:.1}, median {:.1} over {:.0} s",
        fps.first().copied().unwrap_or(0.0),
        median(&fps),
        secs
    );
    if let (Some((c0, _)), Some((c1, rss))) = (cpu0, cpu1) {
        println!(
            "server: {:.1}% of one core ({:.1}% per room), RSS {:.0} MiB",
            (c1 - c0) / secs * 100.0,
            (c1 - c0) / secs * 100.0 / args.rooms as f64,
            rss
        );
    }
    for c in clients {
        c.leave().await;
    }
    Ok(())
}
