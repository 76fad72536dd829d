//! Range and cross-reference checks on a parsed config.

use crate::{colour, Config, BUILTIN_LAYOUTS};

struct Problems(Vec<(String, String)>);

impl Problems {
    fn range<T: PartialOrd + std::fmt::Display>(&mut self, key: &str, v: T, lo: T, hi: T) {
        if v < lo || v > hi {
            self.0
                .push((key.to_string(), format!("{key} = {v}: must be {lo}..={hi}")));
        }
    }

    fn colour(&mut self, key: &str, v: &str, allow_none: bool) {
        if allow_none && v == "none" {
            return;
        }
        if colour(v).is_none() {
            let also = if allow_none { " or \"none\"" } else { "" };
            self.0.push((
                key.to_string(),
                format!("{key} = {v:?}: must be a colour like \"#1c1f26\"{also}"),
            ));
        }
    }

    fn push(&mut self, key: String, message: String) {
        self.0.push((key, message));
    }
}

pub fn problems(cfg: &Config) -> Vec<(String, String)> {
    let mut p = Problems(Vec::new());

    if cfg.server.listen.parse::<std::net::SocketAddr>().is_err() {
        p.push(
            "server.listen".into(),
            format!(
                "server.listen = {:?}: must be an IP address and port like \"127.0.0.1:8080\"",
                cfg.server.listen
            ),
        );
    }

    let n = &cfg.network;
    for (i, ip) in n.host_ips.iter().enumerate() {
        if ip.parse::<std::net::IpAddr>().is_err() {
            p.push(
                "network.host_ips".into(),
                format!(
                    "network.host_ips[{i}] = {ip:?}: must be an IP address like \"192.168.1.10\""
                ),
            );
        }
    }
    if !n.public_ip.is_empty() && n.public_ip.parse::<std::net::IpAddr>().is_err() {
        p.push(
            "network.public_ip".into(),
            format!(
                "network.public_ip = {:?}: must be an IP address or \"\"",
                n.public_ip
            ),
        );
    }
    if n.udp_port_min.is_some() || n.udp_port_max.is_some() {
        let key = if n.udp_port_min.is_some() {
            "network.udp_port_min"
        } else {
            "network.udp_port_max"
        };
        p.push(
            key.into(),
            format!(
                "{key}: media now uses one UDP port for every participant: set network.udp_port instead (0 = OS-chosen) and remove udp_port_min/udp_port_max"
            ),
        );
    }
    p.range(
        "network.ice_disconnected_timeout_ms",
        n.ice_disconnected_timeout_ms,
        500,
        60_000,
    );
    p.range(
        "network.ice_failed_timeout_ms",
        n.ice_failed_timeout_ms,
        500,
        120_000,
    );
    for (i, s) in n.ice_servers.iter().enumerate() {
        let bad = s.urls.is_empty()
            || s.urls.iter().any(|u| {
                !(u.starts_with("stun:") || u.starts_with("turn:") || u.starts_with("turns:"))
            });
        if bad {
            p.push(
                "network.ice_servers".into(),
                format!(
                    "network.ice_servers[{i}].urls = {:?}: must be one or more \"stun:\", \"turn:\" or \"turns:\" URLs",
                    s.urls
                ),
            );
        }
    }
    p.range(
        "network.turn_credential_ttl_secs",
        n.turn_credential_ttl_secs,
        60,
        604_800,
    );
    if !n.turn_secret.is_empty() {
        let has_turn = n
            .ice_servers
            .iter()
            .flat_map(|s| &s.urls)
            .any(|u| u.starts_with("turn:") || u.starts_with("turns:"));
        if !has_turn {
            p.push(
                "network.turn_secret".into(),
                "network.turn_secret is set but network.ice_servers has no \"turn:\" or \"turns:\" URL to hand credentials out for".into(),
            );
        }
        if n.turn_secret.len() < 16 {
            p.push(
                "network.turn_secret".into(),
                "network.turn_secret: must be \"\" (off) or at least 16 characters (coturn's static-auth-secret)".into(),
            );
        }
    }
    for (i, o) in cfg.server.cors_origins.iter().enumerate() {
        if !valid_origin(o) {
            p.push(
                "server.cors_origins".into(),
                format!(
                    "server.cors_origins[{i}] = {o:?}: must be \"*\" or an origin like \"https://example.org\" or \"http://localhost:3000\" (scheme, host, optional port; no path)"
                ),
            );
        }
    }
    let token = &cfg.auth.admin_token;
    if !token.is_empty() && (token.len() < 16 || token.chars().any(|c| c.is_whitespace())) {
        p.push(
            "auth.admin_token".into(),
            "auth.admin_token: must be \"\" (admin API off) or at least 16 characters without spaces".into(),
        );
    }
    let secret = &cfg.auth.token_secret;
    if !secret.is_empty() && secret.len() < 32 {
        p.push(
            "auth.token_secret".into(),
            "auth.token_secret: must be \"\" (no tokens needed) or at least 32 characters".into(),
        );
    }
    cluster(&mut p, &cfg.cluster);
    recording(&mut p, cfg);
    let s = &cfg.server;
    if s.tls_cert.is_empty() != s.tls_key.is_empty() {
        p.push(
            "server.tls_cert".into(),
            "server.tls_cert and server.tls_key: set both (PEM files) or neither".into(),
        );
    }
    if s.tls_self_signed && !s.tls_cert.is_empty() {
        p.push(
            "server.tls_self_signed".into(),
            "server.tls_self_signed = true: conflicts with server.tls_cert; use one or the other"
                .into(),
        );
    }
    let l = &cfg.limits;
    p.range(
        "limits.max_participants_total",
        l.max_participants_total,
        1,
        100_000,
    );
    p.range(
        "limits.ws_max_message_bytes",
        l.ws_max_message_bytes,
        4096,
        1 << 20,
    );
    p.range(
        "limits.ws_messages_per_sec",
        l.ws_messages_per_sec,
        1,
        10_000,
    );
    p.range("limits.ws_message_burst", l.ws_message_burst, 1, 100_000);
    p.range(
        "limits.sdp_max_bytes",
        l.sdp_max_bytes,
        1024,
        l.ws_max_message_bytes.max(1024),
    );
    p.range(
        "limits.joins_per_minute_per_ip",
        l.joins_per_minute_per_ip,
        1,
        100_000,
    );
    if !["error", "warn", "info", "debug", "trace"].contains(&cfg.logging.level.as_str()) {
        p.push(
            "logging.level".into(),
            format!(
                "logging.level = {:?}: must be one of error, warn, info, debug, trace",
                cfg.logging.level
            ),
        );
    }
    let b = &cfg.bandwidth;
    p.range("bandwidth.down_loss_pct", b.down_loss_pct, 0.5, 50.0);
    p.range(
        "bandwidth.up_loss_pct",
        b.up_loss_pct,
        0.0,
        b.down_loss_pct.max(0.0),
    );
    p.range("bandwidth.down_after_ms", b.down_after_ms, 100, 60_000);
    p.range("bandwidth.up_after_ms", b.up_after_ms, 500, 600_000);
    p.range("bandwidth.up_headroom", b.up_headroom, 1.0, 4.0);
    p.range("bandwidth.start_kbps", b.start_kbps, 30, 100_000);
    p.range(
        "bandwidth.probe_interval_ms",
        b.probe_interval_ms,
        1000,
        600_000,
    );
    p.range(
        "bandwidth.hint_bits_per_pixel",
        b.hint_bits_per_pixel,
        0.01,
        1.0,
    );
    p.range(
        "encoder.receiver_keyframe_interval_ms",
        cfg.encoder.receiver_keyframe_interval_ms,
        0,
        120_000,
    );
    if !cfg.rooms.max_tier.is_empty() && !cfg.tiers.contains_key(&cfg.rooms.max_tier) {
        p.push(
            "rooms.max_tier".into(),
            format!(
                "rooms.max_tier = {:?}: must be \"\" or a tier under [tiers]",
                cfg.rooms.max_tier
            ),
        );
    }
    p.range("rooms.max_participants", cfg.rooms.max_participants, 1, 100);
    p.range("rooms.max_rooms", cfg.rooms.max_rooms, 1, 10_000);
    p.range(
        "rooms.idle_timeout_secs",
        cfg.rooms.idle_timeout_secs,
        2,
        3600,
    );
    for (name, d) in &cfg.rooms.declared {
        let key = format!("rooms.declared.{name}");
        if let Some(l) = &d.layout {
            if !cfg.has_layout(l) {
                p.push(
                    format!("{key}.layout"),
                    format!(
                        "{key}.layout = {l:?}: must be grid, speaker or a layout under [layouts]"
                    ),
                );
            }
        }
        if let Some(t) = &d.tier {
            if !cfg.tiers.contains_key(t) {
                p.push(
                    format!("{key}.tier"),
                    format!("{key}.tier = {t:?}: must be a tier under [tiers]"),
                );
            }
        }
        if let Some(m) = d.max_participants {
            p.range(&format!("{key}.max_participants"), m, 1, 100);
        }
        if let Some(t) = &d.max_tier {
            if !cfg.tiers.contains_key(t) {
                p.push(
                    format!("{key}.max_tier"),
                    format!("{key}.max_tier = {t:?}: must be a tier under [tiers]"),
                );
            }
        }
    }

    for (key, name, checked) in [
        (
            "rooms.default_layout",
            &cfg.rooms.default_layout,
            cfg.rooms.default_layout.as_str(),
        ),
        (
            "rooms.share_layout",
            &cfg.rooms.share_layout,
            cfg.share_layout(),
        ),
    ] {
        if !cfg.has_layout(checked) {
            let mut known: Vec<&str> = BUILTIN_LAYOUTS.to_vec();
            known.extend(cfg.layouts.keys().map(String::as_str));
            p.push(
                key.into(),
                format!("{key} = {name:?}: must be one of {}", known.join(", ")),
            );
        }
    }
    p.range("rooms.share_fps", cfg.rooms.share_fps, 1, 30);
    p.range(
        "rooms.max_encodes_per_room",
        cfg.rooms.max_encodes_per_room,
        1,
        64,
    );
    if !cfg.tiers.contains_key(&cfg.rooms.default_tier) {
        let known: Vec<&str> = cfg.tiers.keys().map(String::as_str).collect();
        p.push(
            "rooms.default_tier".into(),
            format!(
                "rooms.default_tier = {:?}: must be a tier under [tiers] ({})",
                cfg.rooms.default_tier,
                if known.is_empty() {
                    "none defined".to_string()
                } else {
                    known.join(", ")
                }
            ),
        );
    }

    p.colour("video.background", &cfg.video.background, false);
    p.range("video.gap_px", cfg.video.gap_px, 0, 64);
    p.range(
        "video.placeholder_after_ms",
        cfg.video.placeholder_after_ms,
        100,
        60_000,
    );
    p.colour(
        "video.speaker_highlight",
        &cfg.video.speaker_highlight,
        true,
    );

    if cfg.labels.enabled && cfg.labels.font.is_empty() {
        p.push(
            "labels.font".into(),
            "labels.font = \"\": must name a TrueType font when labels.enabled = true".into(),
        );
    }
    p.colour("placeholder.colour", &cfg.placeholder.colour, false);

    let a = &cfg.audio;
    p.range("audio.bitrate_kbps", a.bitrate_kbps, 6, 510);
    p.range("audio.jitter_buffer_ms", a.jitter_buffer_ms, 20, 1000);
    p.range(
        "audio.speaker.threshold_dbfs",
        a.speaker.threshold_dbfs,
        -90.0,
        0.0,
    );
    p.range(
        "audio.speaker.switch_margin_db",
        a.speaker.switch_margin_db,
        0.0,
        40.0,
    );
    p.range(
        "audio.speaker.switch_after_ms",
        a.speaker.switch_after_ms,
        0,
        10_000,
    );
    p.range(
        "audio.speaker.min_hold_ms",
        a.speaker.min_hold_ms,
        0,
        60_000,
    );
    p.range(
        "audio.limiter.threshold_dbfs",
        a.limiter.threshold_dbfs,
        -20.0,
        0.0,
    );
    p.range("audio.limiter.release_ms", a.limiter.release_ms, 1, 5000);

    let e = &cfg.encoder;
    p.range("encoder.vp8_cpu_used", e.vp8_cpu_used, -16, -4);
    p.range("encoder.threads", e.threads, 1, 16);
    p.range(
        "encoder.keyframe_min_interval_ms",
        e.keyframe_min_interval_ms,
        0,
        10_000,
    );
    p.range(
        "encoder.keyframe_request_interval_ms",
        e.keyframe_request_interval_ms,
        0,
        10_000,
    );

    if cfg.tiers.is_empty() {
        p.push(
            "tiers".into(),
            "tiers: at least one tier must be defined".into(),
        );
    }
    for (name, t) in &cfg.tiers {
        let k = |f: &str| format!("tiers.{name}.{f}");
        for (field, v, hi) in [("width", t.width, 3840), ("height", t.height, 2160)] {
            if v < 16 || v > hi || v % 2 != 0 {
                p.push(
                    k(field),
                    format!("{} = {v}: must be even and 16..={hi}", k(field)),
                );
            }
        }
        p.range(&k("fps"), t.fps, 1, 60);
        p.range(&k("bitrate_kbps"), t.bitrate_kbps, 50, 20_000);
    }

    for (name, layout) in &cfg.layouts {
        let base = format!("layouts.{name}");
        if BUILTIN_LAYOUTS.contains(&name.as_str()) {
            p.push(
                base.clone(),
                format!("{base}: \"{name}\" is a built-in layout; pick another name"),
            );
        }
        if layout.tiles.is_empty() {
            p.push(
                format!("{base}.tiles"),
                format!("{base}.tiles: must list at least one tile"),
            );
        }
        if layout.tiles.iter().filter(|t| t.speaker).count() > 1 {
            p.push(
                format!("{base}.tiles"),
                format!("{base}.tiles: at most one tile may have speaker = true"),
            );
        }
        for (i, t) in layout.tiles.iter().enumerate() {
            let k = |f: &str| format!("{base}.tiles[{i}].{f}");
            for (f, v) in [("x", t.x), ("y", t.y)] {
                p.range(&k(f), v, 0.0, 1.0);
            }
            for (f, v) in [("w", t.w), ("h", t.h)] {
                if !(v > 0.0 && v <= 1.0) {
                    p.push(
                        k(f),
                        format!("{} = {v}: must be above 0 and at most 1", k(f)),
                    );
                }
            }
            if t.x + t.w > 1.0 + 1e-4 {
                p.push(
                    k("w"),
                    format!(
                        "{}: x + w = {}: the tile must end inside the canvas (<= 1)",
                        k("w"),
                        t.x + t.w
                    ),
                );
            }
            if t.y + t.h > 1.0 + 1e-4 {
                p.push(
                    k("h"),
                    format!(
                        "{}: y + h = {}: the tile must end inside the canvas (<= 1)",
                        k("h"),
                        t.y + t.h
                    ),
                );
            }
        }
    }
    p.0
}

/// `[cluster]`: with `redis_url` set, a node needs its id, its URL and the shared secret.
fn cluster(p: &mut Problems, c: &crate::ClusterConfig) {
    p.range("cluster.max_load", c.max_load, 0.1, 1.0);
    p.range(
        "cluster.drain_timeout_secs",
        c.drain_timeout_secs,
        0,
        86_400,
    );
    p.range("cluster.node_ttl_secs", c.node_ttl_secs, 2, 10);
    if c.key_prefix.is_empty()
        || c.key_prefix.len() > 64
        || c.key_prefix
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control())
    {
        p.push(
            "cluster.key_prefix".into(),
            format!(
                "cluster.key_prefix = {:?}: must be 1 to 64 characters without spaces",
                c.key_prefix
            ),
        );
    }
    if !c.enabled() {
        return;
    }
    let url = &c.redis_url;
    if !(url.starts_with("redis://")
        || url.starts_with("redis+unix://")
        || url.starts_with("unix://"))
    {
        p.push(
            "cluster.redis_url".into(),
            format!(
                "cluster.redis_url = {:?}: must be \"\" (a single node) or a URL like \"redis://10.0.0.5:6379\" (or unix:///path/to/redis.sock); rediss:// (TLS) is not supported",
                c.redis_url_redacted()
            ),
        );
    }
    let required = |what: &str| -> String {
        format!("cluster.redis_url is set, so cluster.{what} is required")
    };
    if c.node_id.is_empty() {
        p.push(
            "cluster.redis_url".into(),
            format!(
                "{}: this node's unique name, 1 to 64 of A-Z a-z 0-9 _ . -",
                required("node_id")
            ),
        );
    } else if c.node_id.len() > 64
        || !c
            .node_id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "_.-".contains(ch))
    {
        p.push(
            "cluster.node_id".into(),
            format!(
                "cluster.node_id = {:?}: must be 1 to 64 of A-Z a-z 0-9 _ . -",
                c.node_id
            ),
        );
    }
    if c.advertise_url.is_empty() {
        p.push(
            "cluster.redis_url".into(),
            format!(
                "{}: the base URL clients and other nodes reach this node at, like \"http://10.0.0.5:8080\"",
                required("advertise_url")
            ),
        );
    } else if !is_base_url(&c.advertise_url) {
        p.push(
            "cluster.advertise_url".into(),
            format!(
                "cluster.advertise_url = {:?}: must be a base URL like \"http://10.0.0.5:8080\" or \"https://node1.example.org\" (http or https, a host, an optional port, no path)",
                c.advertise_url
            ),
        );
    }
    if c.secret.is_empty() {
        p.push(
            "cluster.redis_url".into(),
            format!(
                "{}: at least 32 characters, the same on every node",
                required("secret")
            ),
        );
    } else if c.secret.len() < 32 {
        p.push(
            "cluster.secret".into(),
            "cluster.secret: must be at least 32 characters, the same on every node".into(),
        );
    }
}

/// `http(s)://host[:port]` with an optional trailing `/`.
fn is_base_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) || rest.contains(char::is_whitespace)
    {
        return false;
    }
    // An IPv6 literal is bracketed; a port follows the host after a colon.
    let port = match rest.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((ip, "")) if ip.parse::<std::net::Ipv6Addr>().is_ok() => None,
            Some((ip, tail)) if ip.parse::<std::net::Ipv6Addr>().is_ok() => {
                match tail.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => return false,
                }
            }
            _ => return false,
        },
        None => rest.split_once(':').map(|(_, p)| p),
    };
    port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0))
}

/// `*`, or `scheme://host[:port]` with no path, query or trailing slash.
fn valid_origin(o: &str) -> bool {
    if o == "*" {
        return true;
    }
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    let host = match rest.rsplit_once(':') {
        // `[::1]` alone has colons but no port.
        Some((h, port)) if !rest.ends_with(']') => {
            if port.parse::<u16>().is_err() {
                return false;
            }
            h
        }
        _ => rest,
    };
    !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !host.is_empty()
        && !host.contains(['/', '?', '#', ' ', '@'])
}

fn recording(p: &mut Problems, cfg: &Config) {
    let r = &cfg.recording;
    if !["webm", "mp4", "mkv"].contains(&r.format.as_str()) {
        p.push(
            "recording.format".into(),
            format!(
                "recording.format = {:?}: must be \"webm\", \"mp4\" or \"mkv\"",
                r.format
            ),
        );
    }
    if r.dir.is_empty() {
        p.push(
            "recording.dir".into(),
            "recording.dir: must name a directory".into(),
        );
    }
    if !r.tier.is_empty() && !cfg.tiers.contains_key(&r.tier) {
        p.push(
            "recording.tier".into(),
            format!(
                "recording.tier = {:?}: not a tier (one of {})",
                r.tier,
                cfg.tiers.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        );
    }
    if r.on_complete.first().is_some_and(|c| c.is_empty()) {
        p.push(
            "recording.on_complete".into(),
            "recording.on_complete: the first element is the program to run; [] = none".into(),
        );
    }
    if r.ffmpeg.is_empty() {
        p.push(
            "recording.ffmpeg".into(),
            "recording.ffmpeg: must name the ffmpeg program".into(),
        );
    }
    p.range("recording.empty_close_secs", r.empty_close_secs, 0, 86_400);
    p.range(
        "recording.keyframe_interval_secs",
        r.keyframe_interval_secs,
        1,
        60,
    );
}
