use super::*;

#[test]
fn embedded_default_parses_to_the_rust_default() {
    let parsed = Config::from_toml(DEFAULT_TOML, "default.toml").unwrap();
    assert_eq!(parsed, Config::default());
}

#[test]
fn empty_file_is_the_default() {
    assert_eq!(
        Config::from_toml("", "empty.toml").unwrap(),
        Config::default()
    );
}

#[test]
fn partial_file_keeps_other_defaults() {
    let cfg = Config::from_toml("[video]\ngap_px = 0\n", "p.toml").unwrap();
    assert_eq!(cfg.video.gap_px, 0);
    assert_eq!(cfg.video.fit, Fit::Letterbox);
    assert_eq!(cfg.tiers, Config::default().tiers);
}

/// Asserts that `toml` is rejected with exactly `want` (file:line: message).
fn check(toml: &str, want: &str) {
    match Config::from_toml(toml, "t.toml") {
        Ok(_) => panic!("accepted:\n{toml}"),
        Err(e) => assert_eq!(e.to_string(), want, "for:\n{toml}"),
    }
}

const TIER: &str =
    "[tiers.low]\nwidth = 320\nheight = 180\nfps = 10\nbitrate_kbps = 200\ncodec = \"vp8\"\n";

#[test]
fn bad_values_are_named_with_line_and_valid_range() {
    let tier = |field: &str, value: &str| {
        let mut t = TIER.replace(&format!("{field} = "), &format!("{field} = {value}\n#"));
        t.push_str("[rooms]\ndefault_tier = \"low\"\n");
        t
    };
    check(
        &tier("fps", "0"),
        "t.toml:4: tiers.low.fps = 0: must be 1..=60",
    );
    check(
        &tier("fps", "61"),
        "t.toml:4: tiers.low.fps = 61: must be 1..=60",
    );
    check(
        &tier("width", "321"),
        "t.toml:2: tiers.low.width = 321: must be even and 16..=3840",
    );
    check(
        &tier("height", "8"),
        "t.toml:3: tiers.low.height = 8: must be even and 16..=2160",
    );
    check(
        &tier("bitrate_kbps", "10"),
        "t.toml:5: tiers.low.bitrate_kbps = 10: must be 50..=20000",
    );
    check(
        "[video]\nbackground = \"blue\"\n",
        "t.toml:2: video.background = \"blue\": must be a colour like \"#1c1f26\"",
    );
    check(
        "[video]\ngap_px = 65\n",
        "t.toml:2: video.gap_px = 65: must be 0..=64",
    );
    check(
        "[video]\nplaceholder_after_ms = 5\n",
        "t.toml:2: video.placeholder_after_ms = 5: must be 100..=60000",
    );
    check(
        "[video]\nspeaker_highlight = \"yes\"\n",
        "t.toml:2: video.speaker_highlight = \"yes\": must be a colour like \"#1c1f26\" or \"none\"",
    );
    check(
        "[placeholder]\ncolour = \"#12\"\n",
        "t.toml:2: placeholder.colour = \"#12\": must be a colour like \"#1c1f26\"",
    );
    check(
        "[labels]\nfont = \"\"\n",
        "t.toml:2: labels.font = \"\": must name a TrueType font when labels.enabled = true",
    );
    check(
        "[audio]\nbitrate_kbps = 1000\n",
        "t.toml:2: audio.bitrate_kbps = 1000: must be 6..=510",
    );
    check(
        "[audio]\njitter_buffer_ms = 0\n",
        "t.toml:2: audio.jitter_buffer_ms = 0: must be 20..=1000",
    );
    check(
        "[audio.speaker]\nthreshold_dbfs = 3.0\n",
        "t.toml:2: audio.speaker.threshold_dbfs = 3: must be -90..=0",
    );
    check(
        "[audio.speaker]\nswitch_margin_db = -1.0\n",
        "t.toml:2: audio.speaker.switch_margin_db = -1: must be 0..=40",
    );
    check(
        "[audio.speaker]\nswitch_after_ms = 20000\n",
        "t.toml:2: audio.speaker.switch_after_ms = 20000: must be 0..=10000",
    );
    check(
        "[audio.speaker]\nmin_hold_ms = 70000\n",
        "t.toml:2: audio.speaker.min_hold_ms = 70000: must be 0..=60000",
    );
    check(
        "[audio.limiter]\nthreshold_dbfs = -30.0\n",
        "t.toml:2: audio.limiter.threshold_dbfs = -30: must be -20..=0",
    );
    check(
        "[audio.limiter]\nrelease_ms = 0\n",
        "t.toml:2: audio.limiter.release_ms = 0: must be 1..=5000",
    );
    check(
        "[encoder]\nvp8_cpu_used = 4\n",
        "t.toml:2: encoder.vp8_cpu_used = 4: must be -16..=-4",
    );
    check(
        "[encoder]\nthreads = 0\n",
        "t.toml:2: encoder.threads = 0: must be 1..=16",
    );
    check(
        "[encoder]\nkeyframe_min_interval_ms = 10001\n",
        "t.toml:2: encoder.keyframe_min_interval_ms = 10001: must be 0..=10000",
    );
    check(
        "[encoder]\nkeyframe_request_interval_ms = 10001\n",
        "t.toml:2: encoder.keyframe_request_interval_ms = 10001: must be 0..=10000",
    );
    check(
        "[server]\nlisten = \"localhost\"\n",
        "t.toml:2: server.listen = \"localhost\": must be an IP address and port like \"127.0.0.1:8080\"",
    );
    check(
        "[rooms]\ndefault_layout = \"mosaic\"\n",
        "t.toml:2: rooms.default_layout = \"mosaic\": must be one of grid, speaker, pip, presenter",
    );
    check(
        "[rooms]\ndefault_tier = \"hd\"\n",
        "t.toml:2: rooms.default_tier = \"hd\": must be a tier under [tiers] (default, low, tiny)",
    );
}

#[test]
fn bad_custom_layouts_are_named() {
    check(
        "[layouts.side]\ntiles = [\n  { x = 0.0, y = 0.0, w = 0.5, h = 1.0 },\n  { x = 0.6, y = 0.0, w = 0.5, h = 1.0 },\n]\n",
        "t.toml:4: layouts.side.tiles[1].w: x + w = 1.1: the tile must end inside the canvas (<= 1)",
    );
    check(
        "[layouts.side]\ntiles = [{ x = -0.1, y = 0.0, w = 0.5, h = 1.0 }]\n",
        "t.toml:2: layouts.side.tiles[0].x = -0.1: must be 0..=1",
    );
    check(
        "[layouts.side]\ntiles = [{ x = 0.0, y = 0.0, w = 0.0, h = 1.0 }]\n",
        "t.toml:2: layouts.side.tiles[0].w = 0: must be above 0 and at most 1",
    );
    check(
        "[layouts.side]\ntiles = []\n",
        "t.toml:2: layouts.side.tiles: must list at least one tile",
    );
    check(
        "[layouts.grid]\ntiles = [{ x = 0.0, y = 0.0, w = 1.0, h = 1.0 }]\n",
        "t.toml:1: layouts.grid: \"grid\" is a built-in layout; pick another name",
    );
    check(
        "[layouts.two]\ntiles = [{ x = 0.0, y = 0.0, w = 1.0, h = 1.0, speaker = true }, { x = 0.0, y = 0.0, w = 1.0, h = 1.0, speaker = true }]\n",
        "t.toml:2: layouts.two.tiles: at most one tile may have speaker = true",
    );
}

#[test]
fn unknown_keys_and_wrong_types_are_errors_with_lines() {
    let err =
        Config::from_toml("[video]\ngap_px = 2\nbackgrund = \"#000000\"\n", "t.toml").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("t.toml:3: video.backgrund: unknown field `backgrund`"),
        "{text}"
    );

    let err = Config::from_toml("[tiers.low]\nwidth = \"wide\"\n", "t.toml").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("t.toml:2: tiers.low.width: invalid type"),
        "{text}"
    );

    let err = Config::from_toml(
        "[tiers.low]\nwidth = 320\nheight = 180\nfps = 10\nbitrate_kbps = 200\ncodec = \"vp9\"\n",
        "t.toml",
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("t.toml:6: tiers.low.codec: unknown variant `vp9`"),
        "{text}"
    );

    let err = Config::from_toml("[video\n", "t.toml").unwrap_err();
    assert!(err.to_string().starts_with("t.toml:1: "), "{err}");

    let err = Config::from_toml("[vidoe]\ngap_px = 2\n", "t.toml").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("t.toml:1: vidoe: unknown field `vidoe`"),
        "{err}"
    );
}

#[test]
fn several_problems_are_all_reported() {
    let err = Config::from_toml(
        "[video]\ngap_px = 99\n[audio]\nbitrate_kbps = 1\n",
        "t.toml",
    )
    .unwrap_err();
    assert_eq!(err.problems.len(), 2);
    assert_eq!(
        err.to_string(),
        "t.toml:2: video.gap_px = 99: must be 0..=64\nt.toml:4: audio.bitrate_kbps = 1: must be 6..=510"
    );
}

#[test]
fn unreadable_file_is_an_error_naming_it() {
    let err = Config::load(Path::new("/nonexistent/tessera.toml")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/tessera.toml: cannot read"),
        "{err}"
    );
}

#[test]
fn bad_server_network_auth_and_bandwidth_values_are_named() {
    let cases = [
        (
            "[network]\nhost_ips = [\"127.0.0.1\", \"lan\"]\n",
            "t.toml:2: network.host_ips[1] = \"lan\": must be an IP address like \"192.168.1.10\"",
        ),
        (
            "[network]\npublic_ip = \"example.org\"\n",
            "t.toml:2: network.public_ip = \"example.org\": must be an IP address or \"\"",
        ),
        (
            "[network]\nudp_port_min = 50000\n",
            "t.toml:2: network.udp_port_min: media now uses one UDP port for every participant: set network.udp_port instead (0 = OS-chosen) and remove udp_port_min/udp_port_max",
        ),
        (
            "[network]\nice_failed_timeout_ms = 100\n",
            "t.toml:2: network.ice_failed_timeout_ms = 100: must be 500..=120000",
        ),
        (
            "[network]\nice_disconnected_timeout_ms = 70000\n",
            "t.toml:2: network.ice_disconnected_timeout_ms = 70000: must be 500..=60000",
        ),
        (
            "[network]\nice_servers = [{ urls = [\"http://x\"] }]\n",
            "t.toml:2: network.ice_servers[0].urls = [\"http://x\"]: must be one or more \"stun:\", \"turn:\" or \"turns:\" URLs",
        ),
        (
            "[network]\nturn_secret = \"0123456789abcdef\"\nice_servers = [{ urls = [\"stun:s:3478\"] }]\n",
            "t.toml:2: network.turn_secret is set but network.ice_servers has no \"turn:\" or \"turns:\" URL to hand credentials out for",
        ),
        (
            "[network]\nturn_secret = \"short\"\nice_servers = [{ urls = [\"turn:t:3478\"] }]\n",
            "t.toml:2: network.turn_secret: must be \"\" (off) or at least 16 characters (coturn's static-auth-secret)",
        ),
        (
            "[network]\nturn_credential_ttl_secs = 10\n",
            "t.toml:2: network.turn_credential_ttl_secs = 10: must be 60..=604800",
        ),
        (
            "[server]\ncors_origins = [\"*\", \"https://ok.example:8443\", \"http://[::1]:3000\", \"https://bad.example/path\"]\n",
            "t.toml:2: server.cors_origins[3] = \"https://bad.example/path\": must be \"*\" or an origin like \"https://example.org\" or \"http://localhost:3000\" (scheme, host, optional port; no path)",
        ),
        (
            "[rooms]\nmax_participants = 0\n",
            "t.toml:2: rooms.max_participants = 0: must be 1..=100",
        ),
        (
            "[auth]\nadmin_token = \"short\"\n",
            "t.toml:2: auth.admin_token: must be \"\" (admin API off) or at least 16 characters without spaces",
        ),
        (
            "[auth]\ntoken_secret = \"too-short\"\n",
            "t.toml:2: auth.token_secret: must be \"\" (no tokens needed) or at least 32 characters",
        ),
        (
            "[server]\ntls_cert = \"c.pem\"\n",
            "t.toml:2: server.tls_cert and server.tls_key: set both (PEM files) or neither",
        ),
        (
            "[server]\ntls_self_signed = true\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
            "t.toml:2: server.tls_self_signed = true: conflicts with server.tls_cert; use one or the other",
        ),
        (
            "[limits]\nws_messages_per_sec = 0\n",
            "t.toml:2: limits.ws_messages_per_sec = 0: must be 1..=10000",
        ),
        (
            "[limits]\nsdp_max_bytes = 100000\n",
            "t.toml:2: limits.sdp_max_bytes = 100000: must be 1024..=65536",
        ),
        (
            "[limits]\nmax_participants_total = 0\n",
            "t.toml:2: limits.max_participants_total = 0: must be 1..=100000",
        ),
        (
            "[bandwidth]\ndown_loss_pct = 80\n",
            "t.toml:2: bandwidth.down_loss_pct = 80: must be 0.5..=50",
        ),
        (
            "[bandwidth]\nup_loss_pct = 20\n",
            "t.toml:2: bandwidth.up_loss_pct = 20: must be 0..=10",
        ),
        (
            "[bandwidth]\ndown_after_ms = 10\n",
            "t.toml:2: bandwidth.down_after_ms = 10: must be 100..=60000",
        ),
        (
            "[bandwidth]\nup_after_ms = 100\n",
            "t.toml:2: bandwidth.up_after_ms = 100: must be 500..=600000",
        ),
        (
            "[bandwidth]\nup_headroom = 0.5\n",
            "t.toml:2: bandwidth.up_headroom = 0.5: must be 1..=4",
        ),
        (
            "[logging]\nlevel = \"loud\"\n",
            "t.toml:2: logging.level = \"loud\": must be one of error, warn, info, debug, trace",
        ),
        (
            "[rooms.declared.x]\nlayout = \"mosaic\"\n",
            "t.toml:2: rooms.declared.x.layout = \"mosaic\": must be grid, speaker or a layout under [layouts]",
        ),
        (
            "[rooms]\nidle_timeout_secs = 1\n",
            "t.toml:2: rooms.idle_timeout_secs = 1: must be 2..=3600",
        ),
        (
            "[rooms]\nmax_rooms = 0\n",
            "t.toml:2: rooms.max_rooms = 0: must be 1..=10000",
        ),
        (
            "[bandwidth]\nenabled = \"yes\"\n",
            "t.toml:2: bandwidth.enabled: invalid type: string \"yes\", expected a boolean",
        ),
    ];
    for (toml, want) in cases {
        check(toml, want);
    }
}

/// Every key of the embedded default is documented in docs/config.md.
#[test]
fn every_default_key_is_documented() {
    let docs = include_str!("../../../docs/config.md");
    let table: toml::Table = toml::from_str(crate::DEFAULT_TOML).unwrap();
    let mut missing = Vec::new();
    for (section, v) in &table {
        let Some(t) = v.as_table() else { continue };
        if section == "tiers" || section == "layouts" {
            continue; // user-named tables, documented by their fields
        }
        for (key, v) in t {
            let keys: Vec<String> = match v.as_table() {
                Some(sub) => sub.keys().map(|k| format!("{key}.{k}")).collect(),
                None => vec![key.clone()],
            };
            for k in keys {
                let last = k.rsplit('.').next().unwrap_or(&k).to_string();
                let full = format!("`{section}.{k}`");
                if !docs.contains(&format!("`{last}`"))
                    && !docs.contains(&format!("`{k}`"))
                    && !docs.contains(&full)
                {
                    missing.push(format!("{section}.{k}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys missing from docs/config.md: {missing:?}"
    );
}

#[test]
fn a_cluster_needs_its_id_url_and_secret() {
    let cases = [
        (
            "[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\n",
            "t.toml:2: cluster.redis_url is set, so cluster.node_id is required: this node's unique name, 1 to 64 of A-Z a-z 0-9 _ . -\n\
             t.toml:2: cluster.redis_url is set, so cluster.advertise_url is required: the base URL clients and other nodes reach this node at, like \"http://10.0.0.5:8080\"\n\
             t.toml:2: cluster.redis_url is set, so cluster.secret is required: at least 32 characters, the same on every node",
        ),
        (
            "[cluster]\nredis_url = \"http://x:1\"\nnode_id = \"a\"\nadvertise_url = \"http://127.0.0.1:8080\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
            "t.toml:2: cluster.redis_url = \"http://x:1\": must be \"\" (a single node) or a URL like \"redis://10.0.0.5:6379\" (or unix:///path/to/redis.sock); rediss:// (TLS) is not supported",
        ),
        (
            "[cluster]\nredis_url = \"redis://:hunter2hunter2@x:1\"\nnode_id = \"node 1\"\nadvertise_url = \"http://127.0.0.1:8080/app\"\nsecret = \"short\"\n",
            "t.toml:3: cluster.node_id = \"node 1\": must be 1 to 64 of A-Z a-z 0-9 _ . -\n\
             t.toml:4: cluster.advertise_url = \"http://127.0.0.1:8080/app\": must be a base URL like \"http://10.0.0.5:8080\" or \"https://node1.example.org\" (http or https, a host, an optional port, no path)\n\
             t.toml:5: cluster.secret: must be at least 32 characters, the same on every node",
        ),
        (
            "[cluster]\nmax_load = 1.5\ndrain_timeout_secs = 100000\nnode_ttl_secs = 30\n",
            "t.toml:2: cluster.max_load = 1.5: must be 0.1..=1\n\
             t.toml:3: cluster.drain_timeout_secs = 100000: must be 0..=86400\n\
             t.toml:4: cluster.node_ttl_secs = 30: must be 2..=10",
        ),
    ];
    for (toml, want) in cases {
        let err = Config::from_toml(toml, "t.toml").unwrap_err().to_string();
        assert_eq!(err, want, "{toml}");
        assert!(
            !err.contains("hunter2"),
            "the Redis password is never shown: {err}"
        );
    }
    let ok = "[cluster]\nredis_url = \"redis://127.0.0.1:6379/0\"\nnode_id = \"tessera-0\"\nadvertise_url = \"http://[::1]:8080/\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n";
    let cfg = Config::from_toml(ok, "t.toml").unwrap();
    assert!(cfg.cluster.enabled());
    for url in [
        "https://node1.example.org",
        "http://10.0.0.5:8080",
        "http://h:8080/",
    ] {
        let t = ok.replace("http://[::1]:8080/", url);
        assert!(Config::from_toml(&t, "t.toml").is_ok(), "{url}");
    }
    for url in [
        "ftp://h",
        "http://",
        "http://h:0",
        "http://h:x",
        "http://[::1",
        "http://a b",
    ] {
        let t = ok.replace("http://[::1]:8080/", url);
        assert!(Config::from_toml(&t, "t.toml").is_err(), "{url}");
    }
    let shown = format!(
        "{:?}",
        Config::from_toml(&ok.replace("redis://", "redis://:pw@"), "t.toml")
            .unwrap()
            .cluster
    );
    assert!(
        !shown.contains("pw@") && !shown.contains("0123456789abcdef"),
        "{shown}"
    );
}
