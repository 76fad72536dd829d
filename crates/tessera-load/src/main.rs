//! `tessera-load`: opens R rooms x P participants against a running `tessera serve`, each
//! sending pre-encoded fixture media (VP8 IVF + Ogg Opus from `make fixtures`, so the tool
//! itself is cheap), and reports join-to-first-frame time, the composite frame rate each
//! participant receives, and (with `--pid`) the server's CPU use and RSS.
//!
//! Each camera follows the server's `send_hint` as a browser would: it has its clip at every
//! size `make fixtures` made (`sizes.txt`), starts at 640x360 30 fps, and switches (at a
//! keyframe) to the largest size inside its tile, at no more than the tile's fps.
//! `--no-hints` sends 640x360 at 30 fps whatever the server asks.
//!
//! `--layouts grid,speaker` has the participants of each room choose those layouts in turn
//! (in `join`), so a room runs one encode per layout and tier; the report counts them.
//!
//! ```text
//! tessera-load --url http://127.0.0.1:8080 --rooms 1 --participants 4 --seconds 30 --pid $(pidof tessera)
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tessera_container::{IvfReader, OggOpusReader};
use tessera_server::client::{Client, Ladder, Media, Rendition, Sending};
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
    /// Ignore the server's `send_hint`: every camera sends 640x360 at 30 fps throughout.
    #[arg(long)]
    no_hints: bool,
    /// Seconds between the last join and the start of the measured window.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Ask for this output tier in `join` (a key under the server's [tiers]).
    #[arg(long)]
    tier: Option<String>,
    /// Participants send and receive audio only: no camera, and the join asks for no video
    /// (an audio-only room, as Janus AudioBridge hosts).
    #[arg(long)]
    audio_only: bool,
    /// Layouts the participants of each room choose in `join`, in turn (participant p gets
    /// the (p mod N)th), e.g. `grid,speaker`. None: the room's layout.
    #[arg(long, value_delimiter = ',')]
    layouts: Vec<String>,
    /// Rooms are named PREFIX-0, PREFIX-1, ...
    #[arg(long, default_value = "load")]
    room_prefix: String,
}

/// Frames of one IVF file.
fn read_ivf(path: &std::path::Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let frames = IvfReader::open(path)
        .with_context(|| format!("{}: run `make fixtures` first", path.display()))?
        .map(|f| f.map(|f| f.data))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(frames)
}

/// Participant `n`'s camera at every size in the fixtures' `sizes.txt`, starting at 640x360
/// (what `--no-hints` sends).
fn load_ladder(dir: &std::path::Path, n: usize) -> anyhow::Result<Ladder> {
    let name = format!("p{}", n % 9 + 1);
    let list = dir.join("sizes.txt");
    let text = std::fs::read_to_string(&list).with_context(|| {
        format!(
            "{}: run `make fixtures` (scripts/make-fixtures.sh) again",
            list.display()
        )
    })?;
    let mut renditions = Vec::new();
    for size in text.split_whitespace() {
        let (w, h) = size
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
            .with_context(|| format!("{}: bad size {size:?}", list.display()))?;
        renditions.push(Rendition {
            width: w,
            height: h,
            frames: read_ivf(&dir.join(format!("{name}-{size}.ivf")))?,
        });
    }
    let start = renditions
        .iter()
        .position(|r| (r.width, r.height) == (640, 360))
        .with_context(|| format!("{}: no 640x360", list.display()))?;
    Ok(Ladder { renditions, start })
}

/// The layout participant `p` of a room chooses (`--layouts`), if any.
fn layout_of(args: &Args, p: usize) -> Option<String> {
    (!args.layouts.is_empty()).then(|| args.layouts[p % args.layouts.len()].clone())
}

fn load(dir: &std::path::Path, n: usize, args: &Args) -> anyhow::Result<Media> {
    let name = format!("p{}", n % 9 + 1);
    let frames = if args.audio_only {
        None
    } else {
        Some((VideoCodec::Vp8, read_ivf(&dir.join(format!("{name}.ivf")))?))
    };
    let mut audio = Vec::new();
    let mut r = OggOpusReader::open(dir.join(format!("{name}.ogg")))?;
    while let Some(p) = r.next_packet()? {
        audio.push(p.data);
    }
    Ok(Media {
        video: frames,
        video_fps: 30,
        audio,
        token: None,
        tier: args.tier.clone(),
        receive_video: !args.audio_only,
        layout: layout_of(args, n % args.participants.max(1)),
    })
}

/// How often the tool looks at what each participant received.
const SAMPLE: Duration = Duration::from_millis(50);
/// A gap between composite frames this long counts as a freeze (about 6 frames at 25 fps).
const FREEZE: Duration = Duration::from_millis(250);

/// One participant's received composite: frames, and gaps of `FREEZE` or more.
struct Watch {
    frames: usize,
    last_frame: Instant,
    freezes: usize,
    frozen_secs: f64,
    in_freeze: bool,
}

impl Watch {
    fn new(now: Instant) -> Watch {
        Watch {
            frames: 0,
            last_frame: now,
            freezes: 0,
            frozen_secs: 0.0,
            in_freeze: false,
        }
    }

    fn sample(&mut self, new_frames: usize, now: Instant) {
        if new_frames > 0 {
            if self.in_freeze {
                self.frozen_secs += now.duration_since(self.last_frame).as_secs_f64();
                self.in_freeze = false;
            }
            self.frames += new_frames;
            self.last_frame = now;
        } else if !self.in_freeze && now.duration_since(self.last_frame) >= FREEZE {
            self.in_freeze = true;
            self.freezes += 1;
        }
    }
}

/// Totals over every tier of rooms `PREFIX-0..rooms`, from the server's `/api/rooms/{room}`.
#[derive(Clone, Copy, Default)]
struct TierCounts {
    frames_encoded: u64,
    /// Ticks skipped because the room was behind.
    late_ticks: u64,
    /// Time spent composing and encoding (the room's own accounting).
    compose_secs: f64,
    encode_secs: f64,
}

/// Frames encoded so far by each tier of each room, keyed by (room index, tier name and
/// codec: a tier's two codec variants share its name).
type TierFrames = std::collections::BTreeMap<(usize, String), u64>;

async fn tier_counts(base: &str, prefix: &str, rooms: usize) -> (TierCounts, TierFrames) {
    let mut out = TierCounts::default();
    let mut frames = TierFrames::new();
    for r in 0..rooms {
        let Some(v) = get_json(base, &format!("/api/rooms/{prefix}-{r}")).await else {
            continue;
        };
        for t in v["tiers"].as_array().into_iter().flatten() {
            let n = t["frames_encoded"].as_u64().unwrap_or(0);
            let name = t["name"].as_str().unwrap_or("");
            let codec = t["codec"].as_str().unwrap_or("");
            frames.insert((r, format!("{name} {codec}")), n);
            out.frames_encoded += n;
            out.late_ticks += t["late_ticks"].as_u64().unwrap_or(0);
            out.compose_secs += t["compose_secs"].as_f64().unwrap_or(0.0);
            out.encode_secs += t["encode_secs"].as_f64().unwrap_or(0.0);
        }
    }
    (out, frames)
}

fn sending_of(c: &Client) -> Sending {
    c.sending.lock().map(|s| *s).unwrap_or_default()
}

/// Rooms `PREFIX-0..rooms` as the server reports them now.
struct RoomSummary {
    /// `tier: receivers` over all rooms, e.g. `low: 64`.
    tiers: String,
    /// `layout: participants` over all rooms (`(room's)` for no choice of their own).
    layouts: String,
    /// Per room: tiers with receivers now, and tiers that encoded frames during the window.
    encodes: Vec<(usize, usize)>,
}

fn counts(map: &std::collections::BTreeMap<String, usize>) -> String {
    map.iter()
        .map(|(t, n)| format!("{t}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn room_summary(
    base: &str,
    prefix: &str,
    rooms: usize,
    (before, after): (&TierFrames, &TierFrames),
) -> RoomSummary {
    let mut tiers: std::collections::BTreeMap<String, usize> = Default::default();
    let mut layouts: std::collections::BTreeMap<String, usize> = Default::default();
    let mut encodes = Vec::new();
    for r in 0..rooms {
        let Some(v) = get_json(base, &format!("/api/rooms/{prefix}-{r}")).await else {
            continue;
        };
        for p in v["participants"].as_array().into_iter().flatten() {
            let tier = p["tier"].as_str().unwrap_or("(audio only)").to_string();
            *tiers.entry(tier).or_default() += 1;
            let layout = p["layout"].as_str().unwrap_or("(room's)").to_string();
            *layouts.entry(layout).or_default() += 1;
        }
        let with_receivers = v["tiers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["receivers"].as_u64().unwrap_or(0) > 0)
            .count();
        let encoding = after
            .iter()
            .filter(|((room, tier), n)| {
                *room == r && **n > before.get(&(r, tier.clone())).copied().unwrap_or(0)
            })
            .count();
        encodes.push((with_receivers, encoding));
    }
    RoomSummary {
        tiers: counts(&tiers),
        layouts: counts(&layouts),
        encodes,
    }
}

/// GET a JSON document over plain HTTP/1.1.
async fn get_json(base: &str, path: &str) -> Option<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.strip_prefix("http://")?;
    let mut s = tokio::net::TcpStream::connect(host).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    serde_json::from_slice(&buf[end + 4..]).ok()
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
            let n = r * args.participants + p;
            let media = load(&fixtures, n, &args)?;
            let room = format!("{}-{r}", args.room_prefix);
            let name = format!("L{r}-{p}");
            let ladder = if args.no_hints || args.audio_only {
                None
            } else {
                Some(load_ladder(&fixtures, n)?)
            };
            let join = async {
                match ladder {
                    None => Client::join(&args.url, &room, &name, media).await,
                    Some(l) => {
                        Client::join_following_hints(&args.url, &room, &name, media, l).await
                    }
                }
            };
            let c = tokio::time::timeout(Duration::from_secs(20), join)
                .await
                .context("join timed out")??;
            clients.push(c);
        }
    }
    println!(
        "joined {} participants in {} rooms ({})",
        clients.len(),
        args.rooms,
        if args.no_hints {
            "cameras ignore send_hint"
        } else {
            "cameras follow send_hint"
        }
    );
    // Let every first frame arrive (and cameras settle on their hints), then measure a
    // steady window.
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let start = Instant::now();
    let cpu0 = args.pid.and_then(proc_usage);
    let own0 = proc_usage(std::process::id());
    let sending0: Vec<Sending> = clients.iter().map(sending_of).collect();
    let (tiers0, frames0) = tier_counts(&args.url, &args.room_prefix, args.rooms).await;
    // Frames from before the window are not counted.
    for c in &clients {
        if let Ok(mut r) = c.received.lock() {
            r.video.clear();
            r.audio.clear();
        }
    }
    let mut watch: Vec<Watch> = clients.iter().map(|_| Watch::new(start)).collect();
    let mut tick = tokio::time::interval(SAMPLE);
    let mut next_report = start + Duration::from_secs(60);
    while start.elapsed() < Duration::from_secs(args.seconds) {
        tick.tick().await;
        let now = Instant::now();
        for (c, w) in clients.iter().zip(watch.iter_mut()) {
            // Count and drop what arrived, so a long soak holds no frames.
            let n = c
                .received
                .lock()
                .map(|mut r| {
                    r.audio.clear();
                    std::mem::take(&mut r.video).len()
                })
                .unwrap_or(0);
            w.sample(n, now);
        }
        if now >= next_report {
            next_report += Duration::from_secs(60);
            let frames: usize = watch.iter().map(|w| w.frames).sum();
            let freezes: usize = watch.iter().map(|w| w.freezes).sum();
            let rss = args.pid.and_then(proc_usage).map(|u| u.1).unwrap_or(0.0);
            println!(
                "{:>4.0} s: {:.1} fps per participant, {freezes} freezes, server RSS {rss:.0} MiB",
                start.elapsed().as_secs_f64(),
                frames as f64 / start.elapsed().as_secs_f64() / clients.len() as f64
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu1 = args.pid.and_then(proc_usage);
    let own1 = proc_usage(std::process::id());
    let (tiers1, frames1) = tier_counts(&args.url, &args.room_prefix, args.rooms).await;
    let sending1: Vec<Sending> = clients.iter().map(sending_of).collect();
    let rooms = room_summary(
        &args.url,
        &args.room_prefix,
        args.rooms,
        (&frames0, &frames1),
    )
    .await;
    let mut firsts = Vec::new();
    for c in &clients {
        let r = c.received.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        if let Some(t) = r.first_frame_at {
            firsts.push((t - c.joined_at).as_secs_f64() * 1000.0);
        }
    }
    let mut fps: Vec<f64> = watch.iter().map(|w| w.frames as f64 / secs).collect();
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
    let freezes: usize = watch.iter().map(|w| w.freezes).sum();
    let frozen: f64 = watch.iter().map(|w| w.frozen_secs).sum();
    println!(
        "freezes (no composite frame for {} ms or more): {freezes}, {:.1} s frozen in all",
        FREEZE.as_millis(),
        frozen
    );
    let encoded = tiers1.frames_encoded.saturating_sub(tiers0.frames_encoded);
    let late = tiers1.late_ticks.saturating_sub(tiers0.late_ticks);
    println!(
        "late composite frames (ticks the server skipped): {late} of {} = {:.2}%",
        encoded + late,
        late as f64 * 100.0 / (encoded + late).max(1) as f64
    );
    println!(
        "composing and encoding (the rooms' own accounting): {:.1}% and {:.1}% of one core per room",
        (tiers1.compose_secs - tiers0.compose_secs) / secs * 100.0 / args.rooms as f64,
        (tiers1.encode_secs - tiers0.encode_secs) / secs * 100.0 / args.rooms as f64
    );
    if let (Some((c0, _)), Some((c1, rss))) = (cpu0, cpu1) {
        println!(
            "server: {:.1}% of one core ({:.1}% per room), RSS {:.0} MiB",
            (c1 - c0) / secs * 100.0,
            (c1 - c0) / secs * 100.0 / args.rooms as f64,
            rss
        );
    }
    if let (Some((c0, _)), Some((c1, _))) = (own0, own1) {
        println!(
            "load tool: {:.1}% of one core (shares the machine)",
            (c1 - c0) / secs * 100.0
        );
    }
    println!("receivers per tier: {}", rooms.tiers);
    println!("participants per layout: {}", rooms.layouts);
    println!(
        "video encodes per room (tiers with receivers / tiers that encoded in the window): {}",
        rooms
            .encodes
            .iter()
            .map(|(r, e)| format!("{r}/{e}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let sent_bytes: u64 = sending1
        .iter()
        .zip(&sending0)
        .map(|(b, a)| b.bytes_sent - a.bytes_sent)
        .sum();
    let sent_frames: u64 = sending1
        .iter()
        .zip(&sending0)
        .map(|(b, a)| b.frames_sent - a.frames_sent)
        .sum();
    println!(
        "camera video sent: {:.0} kbit/s and {:.1} fps per participant (mean over the window)",
        sent_bytes as f64 * 8.0 / 1000.0 / secs / clients.len() as f64,
        sent_frames as f64 / secs / clients.len() as f64
    );
    if !args.no_hints {
        // What the cameras send at the end, and what changed during the window.
        let mut sizes: std::collections::BTreeMap<(u32, u32, u32), usize> = Default::default();
        for s in &sending1 {
            *sizes.entry((s.width, s.height, s.fps)).or_default() += 1;
        }
        let list: Vec<String> = sizes
            .iter()
            .rev()
            .map(|((w, h, f), n)| format!("{n} x {w}x{h}@{f}"))
            .collect();
        let hints: u64 = sending1.iter().map(|s| s.hints).sum();
        let switches: u64 = sending1.iter().map(|s| s.switches).sum();
        let hints_in: u64 = sending1
            .iter()
            .zip(&sending0)
            .map(|(b, a)| b.hints - a.hints)
            .sum();
        let switches_in: u64 = sending1
            .iter()
            .zip(&sending0)
            .map(|(b, a)| b.switches - a.switches)
            .sum();
        println!(
            "cameras send: {}; {hints} hints and {switches} size switches in all, \
             {hints_in} and {switches_in} during the measured window",
            list.join(", ")
        );
    }
    for c in clients {
        c.leave().await;
    }
    Ok(())
}
