//! `tessera preview-layout`: draws a layout with numbered tiles to a PNG, so an operator sees
//! a custom layout before a room uses it. Tile n shows the placeholder with "n"; tile 1 is
//! the active speaker (a layout's `speaker = true` tile, with the highlight).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tessera_compose::{Compositor, TileInput};
use tessera_config::Config;
use tessera_engine::{Assets, RoomSettings};

#[derive(Args)]
pub struct PreviewArgs {
    /// Config file; the embedded default if absent.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Layout name: grid, speaker, or one under [layouts].
    #[arg(long)]
    layout: String,
    /// How many participants to place (1..=64).
    #[arg(long, default_value_t = 4)]
    participants: usize,
    /// Tier whose canvas size to use (default: rooms.default_tier).
    #[arg(long)]
    tier: Option<String>,
    /// Output PNG.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: PreviewArgs) -> anyhow::Result<()> {
    let cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::embedded(),
    };
    anyhow::ensure!(
        (1..=64).contains(&args.participants),
        "--participants {}: must be 1..=64",
        args.participants
    );
    let assets = Assets::load(&cfg)?;
    let settings = RoomSettings::from_config(&cfg, &args.layout, &assets)?;
    let mut compose = settings.compose.clone();
    if let Some(t) = &args.tier {
        let tier = cfg.tiers.get(t).with_context(|| {
            let known: Vec<&str> = cfg.tiers.keys().map(String::as_str).collect();
            format!("--tier {t:?}: must be one of {}", known.join(", "))
        })?;
        compose.width = tier.width;
        compose.height = tier.height;
    }
    let (w, h) = (compose.width, compose.height);
    let mut compositor = Compositor::new(compose)?;
    let names: Vec<String> = (1..=args.participants).map(|n| n.to_string()).collect();
    let tiles: Vec<TileInput> = names
        .iter()
        .map(|n| TileInput {
            name: n,
            frame: None,
            fit: None,
        })
        .collect();
    let rgb = compositor
        .compose(&settings.layout, &tiles, Some(0))
        .to_rgb24();
    let shown = compositor.placements().len();
    image::save_buffer(&args.out, &rgb, w, h, image::ExtendedColorType::Rgb8)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "{}: layout {:?}, {w}x{h}, {shown} of {} participants shown",
        args.out.display(),
        args.layout,
        args.participants
    );
    Ok(())
}
