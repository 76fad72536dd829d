//! `tessera render`: the room engine on files instead of sockets.
//!
//! Every participant's files become timed inputs, merged in time order and fed to a
//! [`Room`] on a clock that runs as fast as the CPU allows. The room's composite and its
//! full mix (what a viewer who contributes nothing hears) are written to files.

use std::collections::BinaryHeap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use tessera_codec::{VideoCodec, FRAME_SAMPLES, SAMPLE_RATE_HZ};
use tessera_config::Config;
use tessera_engine::{
    Assets, Input, JoinOptions, Listener, Output, Room, RoomSettings, TierId, TierSettings,
};
use tessera_types::ParticipantId;

use crate::render::media::{open_audio, open_video, Event, Source};

mod media;
mod sinks;

#[derive(Args, Debug)]
pub struct RenderArgs {
    /// A participant: `name=N,video=FILE,audio=FILE` (video .ivf VP8 or .h264 Annex-B,
    /// audio .ogg/.opus Ogg Opus or .wav; either may be left out; `fps=N` sets the frame
    /// rate of an Annex-B file, default 30). Repeat in join order.
    #[arg(long = "participant", required = true)]
    participants: Vec<String>,
    /// Layout: grid, speaker, or a custom layout from the config.
    #[arg(long)]
    layout: Option<String>,
    /// Canvas size, e.g. 1280x720 (default: the config's default tier).
    #[arg(long)]
    size: Option<String>,
    /// Output frame rate (default: the config's default tier).
    #[arg(long)]
    fps: Option<u32>,
    /// Output video codec, h264 or vp8 (default: the config's default tier).
    #[arg(long)]
    codec: Option<String>,
    /// Output video bitrate in kbit/s (default: the config's default tier).
    #[arg(long)]
    bitrate_kbps: Option<u32>,
    /// Composite video file: .ivf (VP8) or .h264 (Annex-B H.264).
    #[arg(long)]
    video_out: Option<PathBuf>,
    /// Full mix: .ogg/.opus (Ogg Opus) or .wav (16-bit PCM, 48 kHz mono).
    #[arg(long)]
    audio_out: Option<PathBuf>,
    /// Config file (default: the embedded default).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Stop after this many seconds of media.
    #[arg(long)]
    duration_secs: Option<f64>,
}

/// One `--participant` flag, parsed.
#[derive(Debug, PartialEq)]
struct ParticipantSpec {
    name: String,
    video: Option<PathBuf>,
    audio: Option<PathBuf>,
    fps: u32,
}

fn parse_participant(spec: &str) -> Result<ParticipantSpec> {
    let mut p = ParticipantSpec {
        name: String::new(),
        video: None,
        audio: None,
        fps: 30,
    };
    for part in spec.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("--participant {spec:?}: {part:?} is not key=value"))?;
        match k {
            "name" => p.name = v.to_string(),
            "video" => p.video = Some(PathBuf::from(v)),
            "audio" => p.audio = Some(PathBuf::from(v)),
            "fps" => {
                p.fps = v
                    .parse()
                    .ok()
                    .filter(|f| (1..=120).contains(f))
                    .ok_or_else(|| anyhow!("--participant {spec:?}: fps={v} must be 1..=120"))?
            }
            _ => bail!(
                "--participant {spec:?}: unknown key {k:?} (expected name, video, audio, fps)"
            ),
        }
    }
    if p.name.is_empty() {
        bail!("--participant {spec:?}: name=... is required");
    }
    if p.video.is_none() && p.audio.is_none() {
        bail!("--participant {spec:?}: give video=FILE, audio=FILE or both");
    }
    Ok(p)
}

fn parse_size(s: &str) -> Result<(u32, u32)> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| anyhow!("--size {s:?}: expected WIDTHxHEIGHT, e.g. 1280x720"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| anyhow!("--size {s:?}: {v:?} is not a number"))
    };
    let (w, h) = (parse(w)?, parse(h)?);
    if w < 16 || h < 16 || w > 3840 || h > 2160 || w % 2 != 0 || h % 2 != 0 {
        bail!("--size {s}: width and height must be even, 16..=3840 x 16..=2160");
    }
    Ok((w, h))
}

/// The single output tier of a render, from the flags over the config's default tier.
fn render_tier(args: &RenderArgs, cfg: &Config) -> Result<TierSettings> {
    let base = cfg
        .tiers
        .get(&cfg.rooms.default_tier)
        .ok_or_else(|| anyhow!("config has no tier {:?}", cfg.rooms.default_tier))?;
    let (width, height) = match &args.size {
        Some(s) => parse_size(s)?,
        None => (base.width, base.height),
    };
    let fps = args.fps.unwrap_or(base.fps);
    if !(1..=60).contains(&fps) {
        bail!("--fps {fps}: must be 1..=60");
    }
    let bitrate_kbps = args.bitrate_kbps.unwrap_or(base.bitrate_kbps);
    if !(50..=20_000).contains(&bitrate_kbps) {
        bail!("--bitrate-kbps {bitrate_kbps}: must be 50..=20000");
    }
    let codec = match &args.codec {
        Some(c) => c
            .parse::<VideoCodec>()
            .map_err(|e| anyhow!("--codec: {e}"))?,
        None => base.codec.into(),
    };
    if let Some(out) = &args.video_out {
        let want = match out.extension().and_then(|e| e.to_str()) {
            Some("ivf") => VideoCodec::Vp8,
            Some("h264") | Some("264") => VideoCodec::H264,
            _ => bail!(
                "--video-out {}: expected a .ivf (VP8) or .h264 (H.264) file",
                out.display()
            ),
        };
        if want != codec {
            bail!(
                "--video-out {} holds {want}, but --codec is {codec}",
                out.display()
            );
        }
    }
    Ok(TierSettings {
        id: TierId::new("render", codec),
        width,
        height,
        fps,
        bitrate_bps: bitrate_kbps * 1000,
        layout: None,
    })
}

/// Pending events of all sources, earliest first.
struct Timeline {
    sources: Vec<Source>,
    heap: BinaryHeap<std::cmp::Reverse<(Duration, usize)>>,
}

impl Timeline {
    fn new(sources: Vec<Source>) -> Result<Timeline> {
        let mut t = Timeline {
            sources,
            heap: BinaryHeap::new(),
        };
        for i in 0..t.sources.len() {
            t.refill(i)?;
        }
        Ok(t)
    }

    fn refill(&mut self, i: usize) -> Result<()> {
        if let Some(at) = self.sources[i].peek_time()? {
            self.heap.push(std::cmp::Reverse((at, i)));
        }
        Ok(())
    }

    fn next_time(&self) -> Option<Duration> {
        self.heap.peek().map(|r| r.0 .0)
    }

    fn pop(&mut self) -> Result<Option<(ParticipantId, Event)>> {
        let Some(std::cmp::Reverse((_, i))) = self.heap.pop() else {
            return Ok(None);
        };
        let ev = self.sources[i].take()?;
        self.refill(i)?;
        Ok(ev.map(|e| (self.sources[i].participant, e)))
    }
}

pub fn run(args: RenderArgs) -> Result<()> {
    let wall = Instant::now();
    let cfg = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded(),
    };
    let specs = args
        .participants
        .iter()
        .map(|s| parse_participant(s))
        .collect::<Result<Vec<_>>>()?;
    if args.video_out.is_none() && args.audio_out.is_none() {
        bail!("nothing to write: give --video-out and/or --audio-out");
    }
    let tier = render_tier(&args, &cfg)?;
    let layout = args
        .layout
        .clone()
        .unwrap_or_else(|| cfg.rooms.default_layout.clone());
    let assets = Assets::load(&cfg)?;
    let mut settings = RoomSettings::from_config(&cfg, &layout, &assets)?;
    settings.tiers = vec![tier.clone()];
    settings.always_encode = if args.video_out.is_some() {
        vec![tier.id.clone()]
    } else {
        Vec::new()
    };
    settings.always_full_mix = args.audio_out.is_some();

    let mut sources = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let id = ParticipantId(i as u64 + 1);
        if let Some(v) = &spec.video {
            sources.push(
                open_video(id, v, spec.fps)
                    .with_context(|| format!("participant {}", spec.name))?,
            );
        }
        if let Some(a) = &spec.audio {
            sources.push(open_audio(id, a).with_context(|| format!("participant {}", spec.name))?);
        }
    }
    let total = sources
        .iter()
        .map(|s| s.duration_hint)
        .max()
        .unwrap_or_default();
    let end = match args.duration_secs {
        Some(s) if s > 0.0 => Duration::from_secs_f64(s).min(total),
        Some(_) => bail!("--duration-secs must be positive"),
        None => total,
    };

    let t0 = Instant::now();
    let mut room = Room::new(settings, t0)?;
    for (i, spec) in specs.iter().enumerate() {
        let options = JoinOptions {
            sends_video: spec.video.is_some(),
            sends_audio: spec.audio.is_some(),
            receive_tier: None,
            receives_audio: false,
        };
        room.handle_input(
            Input::Join {
                id: ParticipantId(i as u64 + 1),
                name: spec.name.clone(),
                options,
            },
            t0,
        );
    }

    let mut video_sink = args
        .video_out
        .as_deref()
        .map(|p| sinks::VideoSink::create(p, &tier))
        .transpose()?;
    let mut audio_sink = args
        .audio_out
        .as_deref()
        .map(sinks::AudioSink::create)
        .transpose()?;

    let progress = indicatif::ProgressBar::new(end.as_millis() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {percent:>3}% media {msg} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut timeline = Timeline::new(sources)?;
    let mut now;
    loop {
        let tick = room.poll_timeout().saturating_duration_since(t0);
        match timeline.next_time() {
            Some(at) if at <= tick && at < end => {
                now = at;
                if let Some((id, ev)) = timeline.pop()? {
                    room.handle_input(ev.into_input(id), t0 + at);
                }
            }
            _ if tick < end => {
                now = tick;
                room.handle_timeout(t0 + tick);
            }
            _ => break,
        }
        while let Some(out) = room.poll_output() {
            match out {
                Output::Video { frame, .. } => {
                    if let Some(s) = video_sink.as_mut() {
                        s.write(&frame)?;
                    }
                }
                Output::Audio {
                    listener: Listener::FullMix,
                    packet,
                    ..
                } => {
                    if let Some(s) = audio_sink.as_mut() {
                        s.write(&packet)?;
                    }
                }
                _ => {}
            }
        }
        progress.set_position(now.as_millis() as u64);
        progress.set_message(format!("{:.1}s", now.as_secs_f64()));
    }
    progress.finish_and_clear();

    let frames = video_sink
        .as_mut()
        .map(|s| s.finish())
        .transpose()?
        .unwrap_or(0);
    let packets = audio_sink
        .as_mut()
        .map(|s| s.finish())
        .transpose()?
        .unwrap_or(0);
    let wall = wall.elapsed().as_secs_f64();
    let media = end.as_secs_f64();
    println!(
        "rendered {frames} video frames ({}x{} {} fps {}) and {packets} audio packets ({:.1} s of {} kHz mix) from {} participants: {media:.2} s of media in {wall:.2} s wall, realtime factor {:.1}x",
        tier.width,
        tier.height,
        tier.fps,
        tier.id.codec,
        packets as f64 * FRAME_SAMPLES as f64 / SAMPLE_RATE_HZ as f64,
        SAMPLE_RATE_HZ / 1000,
        specs.len(),
        if wall > 0.0 { media / wall } else { 0.0 },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_flags_parse_or_say_why_not() {
        let ok = parse_participant("name=Ann,video=a.ivf,audio=a.ogg").unwrap();
        assert_eq!(ok.name, "Ann");
        assert_eq!(ok.video, Some(PathBuf::from("a.ivf")));
        assert_eq!(ok.fps, 30);
        assert_eq!(parse_participant("name=B,audio=b.wav").unwrap().video, None);
        assert_eq!(
            parse_participant("name=C,video=c.h264,fps=25").unwrap().fps,
            25
        );
        let err = |s: &str| parse_participant(s).unwrap_err().to_string();
        assert!(err("video=a.ivf").contains("name=... is required"));
        assert!(err("name=A").contains("give video=FILE"));
        assert!(err("name=A,colour=red").contains("unknown key \"colour\""));
        assert!(err("name=A,video").contains("is not key=value"));
        assert!(err("name=A,video=a.h264,fps=0").contains("fps=0 must be 1..=120"));
    }

    #[test]
    fn sizes_parse_or_say_why_not() {
        assert_eq!(parse_size("1280x720").unwrap(), (1280, 720));
        assert!(parse_size("1281x720").is_err());
        assert!(parse_size("wide").is_err());
        assert!(parse_size("8x8").is_err());
    }
}
