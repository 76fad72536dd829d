//! Live config reload: on a change of the config file (polled twice a second) or SIGHUP,
//! the new file is validated and, if good, applied to every running room; a bad file is
//! logged and the running config kept. Settings that only take effect at start are
//! reported as needing a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tessera_config::Config;
use tessera_engine::Assets;
use tracing::{error, info, warn};

use crate::room::Command;
use crate::Server;

/// What the last reloads did, for `GET /api/status` and the logs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReloadStatus {
    pub config_file: Option<String>,
    pub reloads: u64,
    pub rejected: u64,
    /// The last rejected file's problems, verbatim (file:line: key = value: must be ...).
    pub last_error: Option<String>,
    /// Keys changed in the file that apply only after a restart.
    pub restart_needed: Vec<String>,
}

/// Keys whose new values apply only to a restarted server.
fn restart_keys(old: &Config, new: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    if old.server.listen != new.server.listen {
        keys.push("server.listen".to_string());
    }
    if old.server.web_dir != new.server.web_dir {
        keys.push("server.web_dir".to_string());
    }
    let tls = |s: &tessera_config::ServerConfig| {
        (s.tls_cert.clone(), s.tls_key.clone(), s.tls_self_signed)
    };
    if tls(&old.server) != tls(&new.server) {
        keys.push("server.tls_cert/tls_key/tls_self_signed".to_string());
    }
    if crate::cluster::restart_needed(&old.cluster, &new.cluster) {
        keys.push("cluster (all but max_load and drain_timeout_secs)".to_string());
    }
    if old.logging != new.logging {
        keys.push("logging".to_string());
    }
    let (o, n) = (&old.network, &new.network);
    if o.udp_port != n.udp_port || o.tcp_port != n.tcp_port || o.host_ips != n.host_ips {
        keys.push("network.udp_port/tcp_port/host_ips".to_string());
    }
    keys
}

impl Server {
    /// Applies `new` to the server and every running room. Errors leave everything as it was.
    pub fn reload(&self, new: Config) -> Result<Vec<String>, String> {
        let assets = Assets::load(&new).map_err(|e| e.to_string())?;
        let layout = new.rooms.default_layout.clone();
        let settings = self
            .room_settings(&new, &assets, &layout)
            .map_err(|e| e.to_string())?;
        let layouts: Vec<_> = tessera_config::BUILTIN_LAYOUTS
            .iter()
            .map(|n| n.to_string())
            .chain(new.layouts.keys().cloned())
            .filter_map(|n| {
                tessera_engine::layout_by_name(&new, &n)
                    .ok()
                    .map(|s| (n, s))
            })
            .collect();
        let restart = restart_keys(&self.config(), &new);
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = (Arc::new(new), Arc::new(assets));
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        for e in rooms.values() {
            e.handle.send(Command::Reconfigure {
                settings: Box::new(settings.clone()),
                layout: layout.clone(),
                layouts: layouts.clone(),
            });
        }
        Ok(restart)
    }

    /// Loads `path` and applies it, recording the outcome.
    pub fn reload_from(&self, path: &Path) {
        let result = Config::load(path)
            .map_err(|e| e.to_string())
            .and_then(|cfg| self.reload(cfg));
        let mut st = self.reload_status.lock().unwrap_or_else(|e| e.into_inner());
        st.config_file = Some(path.display().to_string());
        match result {
            Ok(restart) => {
                st.reloads += 1;
                if restart.is_empty() {
                    info!(file = %path.display(), "config reloaded and applied to running rooms");
                } else {
                    warn!(file = %path.display(), needs_restart = ?restart, "config reloaded; some changes need a restart");
                }
                st.restart_needed = restart;
            }
            Err(e) => {
                st.rejected += 1;
                error!(file = %path.display(), "config rejected, keeping the running one:\n{e}");
                st.last_error = Some(e);
            }
        }
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.reload_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Watches `path` (modification time and size, twice a second) and, on Unix, SIGHUP;
    /// reloads on either.
    pub fn watch_config(self: &Arc<Self>, path: PathBuf) {
        self.reload_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .config_file = Some(path.display().to_string());
        let server = self.clone();
        tokio::spawn(async move {
            let stamp = |p: &Path| -> Option<(SystemTime, u64)> {
                let m = std::fs::metadata(p).ok()?;
                Some((m.modified().ok()?, m.len()))
            };
            let mut last = stamp(&path);
            #[cfg(unix)]
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                #[cfg(unix)]
                let hangup = async {
                    match hup.as_mut() {
                        Some(h) => {
                            h.recv().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup = std::future::pending::<()>();
                let forced = tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => false,
                    _ = hangup => true,
                };
                let now = stamp(&path);
                if forced || now != last {
                    last = now;
                    if forced {
                        info!(file = %path.display(), "SIGHUP: reloading the config");
                    }
                    server.reload_from(&path);
                }
            }
        });
    }
}
