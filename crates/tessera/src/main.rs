//! `tessera`: the MCU's command line. `serve` runs the live server; `render` runs the room
//! engine offline on files; `check-config` validates a config file.
// warp's filter chain for the whole API is a deep type; the release build needs more room
// to check it.
#![recursion_limit = "256"]

mod preview;
mod render;
mod serve;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tessera_config::Config;

#[derive(Parser)]
#[command(name = "tessera", version, about = "An MCU video-conference server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the conference server (HTTP, WebSocket, WHIP/WHEP, WebRTC media).
    Serve(serve::ServeArgs),
    /// Mix participants' media files into one composite video and one audio mix, offline.
    Render(render::RenderArgs),
    /// Draw a layout with numbered tiles to a PNG, to see it before a room uses it.
    PreviewLayout(preview::PreviewArgs),
    /// Mint a join token signed with the config's `auth.token_secret`.
    Token(token::TokenArgs),
    /// Validate a config file without starting anything.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
}

/// Logs to stderr at `level` (RUST_LOG overrides it), as text or JSON lines.
pub fn init_logging(level: &str, json: bool) {
    // webrtc-rs warns about harmless start-up races on every connection.
    let filter = format!(
        "{level},warp=warn,webrtc=error,rtc=error,rtc_ice=error,rtc_dtls=error,rtc_srtp=error"
    );
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` sets up logging from its config; the offline tools only warn.
    if !matches!(cli.command, Command::Serve(_)) {
        init_logging("warn", false);
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Render(args) => render::run(args),
        Command::PreviewLayout(args) => preview::run(args),
        Command::Token(args) => token::run(args),
        Command::CheckConfig { file } => Config::load(&file)
            .map(|_| println!("{}: ok", file.display()))
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
