//! `tessera serve`: loads the config (or the embedded default), binds, and runs the server
//! until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tessera_config::Config;

#[derive(Args)]
pub struct ServeArgs {
    /// Config file (TOML); without it the embedded default is used.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address, overriding `server.listen` (port 0 picks a free port).
    #[arg(long)]
    listen: Option<String>,
    /// The media UDP port, overriding `network.udp_port` (0 picks a free port).
    #[arg(long)]
    udp_port: Option<u16>,
    /// The ICE-TCP port, overriding `network.tcp_port` (0 turns ICE-TCP off).
    #[arg(long)]
    tcp_port: Option<u16>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut cfg = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded(),
    };
    if let Some(l) = args.listen {
        cfg.server.listen = l;
    }
    if let Some(p) = args.tcp_port {
        cfg.network.tcp_port = p;
    }
    if let Some(p) = args.udp_port {
        cfg.network.udp_port = p;
    }
    crate::init_logging(
        &cfg.logging.level,
        cfg.logging.format == tessera_config::LogFormat::Json,
    );
    let addr: std::net::SocketAddr = cfg.server.listen.parse().with_context(|| {
        format!(
            "--listen {:?}: must be an IP address and port",
            cfg.server.listen
        )
    })?;
    let server = tessera_server::Server::new(cfg)?;
    let watch = args.config.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tessera-io")
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        if let Some(path) = watch {
            // Live reload on change and on SIGHUP.
            server.watch_config(path);
        }
        // Scripts and tests read this line to find the port.
        println!("listening on {}://{local}", server.scheme());
        server.serve(listener, shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
