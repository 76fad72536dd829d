//! Many nodes, one service: a private `redis-server` on loopback (Debian's, started and
//! killed by each test) and real `tessera serve` processes as nodes. Every wait polls the
//! API against a deadline; the TTL is 3 s so that failures show within seconds.

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tessera_proto::{ErrorCode, ServerMessage};
use tessera_server::client::{Client, Media};
use tessera_types::VideoCodec;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::bad_input::{reply, Ws};
use crate::live::{
    decode_audio, decode_last, distance, http, http_get, http_with, load_media, room_tiles, settle,
    tile_colour, wait_until,
};
use crate::{fixtures, scratch};

const SECRET: &str = "cluster-test-secret-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789";
const TTL_SECS: u64 = 3;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private redis-server on 127.0.0.1, killed when dropped.
struct Redis {
    child: tokio::process::Child,
    port: u16,
}

impl Redis {
    async fn start(port: u16) -> Redis {
        let child = tokio::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (Debian package redis-server; scripts/setup.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").await.is_ok()
                    && s.read_exact(&mut buf).await.is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Redis { child, port }
    }

    async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A `tessera serve` node of the cluster, killed when dropped. Its log is `ID.log` in the
/// test's scratch directory.
struct Node {
    id: String,
    base: String,
    child: tokio::process::Child,
    log: std::path::PathBuf,
}

/// Node `id` on Redis at `redis_port`, media on UDP port `udp` (each node its own, above
/// the ephemeral range); `tables` adds
/// config tables, `cluster` keys under `[cluster]`.
async fn node(
    dir: &std::path::Path,
    redis_port: u16,
    id: &str,
    udp: u16,
    tables: &str,
    cluster: &str,
) -> Node {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let cfg = dir.join(format!("{id}.toml"));
    std::fs::write(
        &cfg,
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
[network]
udp_port = {udp}
tcp_port = 0
[rooms]
default_tier = "test"
[tiers.test]
width = 640
height = 360
fps = 15
bitrate_kbps = 800
codec = "vp8"
[auth]
admin_token = "{ADMIN}"
{tables}
[cluster]
redis_url = "redis://127.0.0.1:{redis_port}"
node_id = "{id}"
advertise_url = "{base}"
secret = "{SECRET}"
node_ttl_secs = {TTL_SECS}
{cluster}
"#
        ),
    )
    .unwrap();
    let log = dir.join(format!("{id}.log"));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
        .await
        .expect("the node starts in time")
        .unwrap()
        .expect("listening line");
    assert_eq!(line, format!("listening on {base}"));
    Node {
        id: id.to_string(),
        base,
        child,
        log,
    }
}

impl Node {
    fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running").to_string();
        assert!(std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

async fn get_json(base: &str, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http_get(base, path).await;
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

/// Live node ids as `base` sees them (empty if the API cannot answer).
async fn live_nodes(base: &str) -> Vec<serde_json::Value> {
    let (status, v) = get_json(base, "/api/cluster/nodes").await;
    if status != 200 {
        return Vec::new();
    }
    v.as_array().cloned().unwrap_or_default()
}

async fn node_ids(base: &str) -> Vec<String> {
    live_nodes(base)
        .await
        .iter()
        .filter_map(|n| n["id"].as_str().map(String::from))
        .collect()
}

/// The node holding `room`, from `/api/rooms` at `base`.
async fn owner(base: &str, room: &str) -> Option<String> {
    let (_, v) = get_json(base, "/api/rooms").await;
    v.as_array()?
        .iter()
        .find(|r| r["room"] == room)
        .and_then(|r| r["node"].as_str().map(String::from))
}

/// The node holding `room` once `/api/rooms` at `base` lists it: a new room is listed from
/// its node's next heartbeat. Panics after 10 s.
async fn owner_soon(base: &str, room: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(o) = owner(base, room).await {
            return o;
        }
        assert!(Instant::now() < deadline, "{room} never listed at {base}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `check` every 100 ms until it holds; panics after `timeout`.
async fn poll<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ws_from(base: &str, local_ip: &str) -> Ws {
    let host = base.trim_start_matches("http://");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("{local_ip}:0").parse().unwrap())
        .unwrap();
    let tcp = socket.connect(host.parse().unwrap()).await.unwrap();
    let url = format!("ws://{host}/ws");
    tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
        .await
        .unwrap()
        .0
}

fn join_msg(room: &str, name: &str) -> Message {
    Message::text(serde_json::json!({ "type": "join", "room": room, "name": name }).to_string())
}

/// Joins `room` over a WebSocket to `base` from `local_ip` (no media); returns the socket
/// and the server's answer.
async fn ws_join_from(base: &str, local_ip: &str, room: &str, name: &str) -> (Ws, ServerMessage) {
    let mut ws = ws_from(base, local_ip).await;
    let m = reply(&mut ws, join_msg(room, name)).await;
    (ws, m)
}

async fn ws_join(base: &str, room: &str, name: &str) -> (Ws, ServerMessage) {
    ws_join_from(base, "127.0.0.1", room, name).await
}

fn joined(m: &ServerMessage) -> bool {
    matches!(m, ServerMessage::Joined { .. })
}

fn code(m: &ServerMessage) -> Option<ErrorCode> {
    match m {
        ServerMessage::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// The next `error` on `ws` within `timeout` (other messages skipped), if any.
async fn next_error(ws: &mut Ws, timeout: Duration) -> Option<(ErrorCode, bool)> {
    let deadline = tokio::time::Instant::now() + timeout;
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Message::Text(t) = m {
            if let Ok(ServerMessage::Error { code, fatal, .. }) = tessera_proto::parse_server(&t) {
                return Some((code, fatal));
            }
        }
    }
    None
}

/// Waits for a fatal `moved` error at `c`.
async fn told_to_move(c: &Client, what: &str) {
    let moved = |m: &ServerMessage| {
        matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::Moved,
                fatal: true,
                ..
            }
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c.received.lock().unwrap().messages.iter().any(moved) {
        if Instant::now() > deadline {
            let r = c.received.lock().unwrap();
            panic!("timed out waiting for {what}; messages: {:?}", r.messages);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_on_two_nodes_and_a_viewer_on_a_third_share_one_composite() {
    let dir = scratch("cluster-media");
    let redis = Redis::start(free_port()).await;
    let mut nodes = Vec::new();
    for (i, id) in ["n1", "n2", "n3"].iter().enumerate() {
        nodes.push(node(&dir, redis.port, id, 61000 + 200 * i as u16, "", "").await);
    }
    for n in &nodes {
        poll("three live nodes", Duration::from_secs(15), || async {
            node_ids(&n.base).await.len() == 3
        })
        .await;
    }
    let (_, list) = fixtures();
    let people = [&list[0], &list[1]];
    let ann = Client::join(
        &nodes[0].base,
        "conf",
        "Ann",
        load_media(people[0], VideoCodec::Vp8),
    )
    .await
    .expect("Ann joins through n1");
    let bo = Client::join(
        &nodes[1].base,
        "conf",
        "Bo",
        load_media(people[1], VideoCodec::Vp8),
    )
    .await
    .expect("Bo joins through n2");
    let viewer = Client::join(&nodes[2].base, "conf", "View", Media::default())
        .await
        .expect("the viewer joins through n3");
    let clients = [&ann, &bo, &viewer];
    wait_until(
        "composite and audio at every client",
        Duration::from_secs(40),
        || {
            clients.iter().all(|c| {
                let r = c.received.lock().unwrap();
                r.video.len() > 30 && r.audio.len() > 150
            })
        },
    )
    .await;
    // Wait (for a condition, with a deadline) until both tiles are filled in every
    // composite and the viewer hears both tones; the asserts below say what is wrong if not.
    settle(Duration::from_secs(30), || async {
        let (_, _, tiles) = room_tiles(&nodes[0].base, "conf").await;
        let settled = tiles.len() == 2
            && clients.iter().all(|c| {
                let r = c.received.lock().unwrap();
                let Some(frame) = r.codec.and_then(|k| decode_last(k, &r.video)) else {
                    return false;
                };
                [(&ann, people[0]), (&bo, people[1])].iter().all(|(p, fx)| {
                    tiles
                        .get(&p.id)
                        .is_some_and(|rect| distance(tile_colour(&frame, *rect), fx.rgb) < 60)
                })
            });
        (settled, ())
    })
    .await;

    let home = owner_soon(&nodes[2].base, "conf").await;
    let others: Vec<&Node> = nodes.iter().filter(|n| n.id != home).collect();
    // Every node lists the room on its node; a node without it answers for it.
    for n in &nodes {
        assert_eq!(owner(&n.base, "conf").await.as_deref(), Some(home.as_str()));
    }
    let (w, h, tiles) = room_tiles(&others[0].base, "conf").await;
    assert_eq!((w, h, tiles.len()), (640, 360, 2), "{tiles:?}");
    // Everyone sees both publishers in the one composite.
    for (who, c) in [("Ann", &ann), ("Bo", &bo), ("the viewer", &viewer)] {
        let r = c.received.lock().unwrap();
        let frame = decode_last(r.codec.unwrap(), &r.video).expect("the composite decodes");
        for (p, fx) in [(&ann, people[0]), (&bo, people[1])] {
            let got = tile_colour(&frame, tiles[&p.id]);
            assert!(
                distance(got, fx.rgb) < 60,
                "{who} sees {}'s tile as {got:?}, want {:?}",
                fx.name,
                fx.rgb
            );
        }
    }
    {
        let r = viewer.received.lock().unwrap();
        let pcm = decode_audio(&r.audio);
        let body = &pcm[pcm.len().saturating_sub(48_000 * 2)..];
        let floor = tessera_mixer::analysis::goertzel_power(body, 2500.0, 48_000).max(1e-12);
        for fx in people {
            let p = tessera_mixer::analysis::goertzel_power(body, fx.tone_hz, 48_000);
            assert!(p > floor * 100.0, "the viewer misses {}'s tone", fx.name);
        }
    }
    for (c, me, other) in [(&ann, people[0], people[1]), (&bo, people[1], people[0])] {
        let r = c.received.lock().unwrap();
        let pcm = decode_audio(&r.audio);
        let body = &pcm[pcm.len().saturating_sub(48_000 * 2)..];
        let power = |hz| tessera_mixer::analysis::goertzel_power(body, hz, 48_000);
        assert!(
            power(me.tone_hz) * 1000.0 < power(other.tone_hz),
            "{} hears {} and not itself",
            me.name,
            other.name
        );
    }

    // The snapshot and the admin API from a node that does not hold the room.
    let (st, png) = http_get(&others[1].base, "/api/rooms/conf/snapshot.png").await;
    assert_eq!(st, 200);
    assert!(png.starts_with(b"\x89PNG"));
    let (st, body) = http(
        &others[0].base,
        "POST",
        "/api/admin/rooms/conf/layout",
        Some(ADMIN),
        Some(r#"{"layout":"speaker"}"#),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    poll(
        "the layout set through another node",
        Duration::from_secs(10),
        || async { get_json(&others[1].base, "/api/rooms/conf").await.1["layout"] == "speaker" },
    )
    .await;
    let (st, body) = http(
        &others[1].base,
        "GET",
        "/api/admin/rooms",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(st, 200);
    let rooms: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        rooms
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["room"] == "conf" && r["node"] == home.as_str()),
        "{rooms}"
    );
    let (st, _) = http(
        &others[1].base,
        "GET",
        "/api/admin/rooms",
        Some("wrong-token-0123456789"),
        None,
    )
    .await;
    assert_eq!(st, 403);

    // WHIP/WHEP reach the room's node (its answer comes back as it is); DELETE and PATCH
    // at a `Location` go to the node the id names.
    let sdp = Some(("application/sdp", "v=0\r\n"));
    let (st, body) = http_with(&others[0].base, "POST", "/whip/conf?name=P", None, sdp).await;
    assert_eq!(
        st,
        400,
        "the room's node parses the offer: {}",
        String::from_utf8_lossy(&body)
    );
    let path = format!("/whip/conf/p999~{home}");
    let (st, body) = http(&others[0].base, "DELETE", &path, None, None).await;
    assert_eq!(
        (st, String::from_utf8_lossy(&body).as_ref()),
        (404, "no such session\n")
    );
    let (st, body) = http(&others[0].base, "PATCH", &path, None, None).await;
    assert_eq!(
        (st, String::from_utf8_lossy(&body).as_ref()),
        (404, "no such session\n"),
        "PATCH reaches the node the id names"
    );
    let (st, body) = http(&others[0].base, "DELETE", "/whep/conf/p1~gone", None, None).await;
    assert_eq!(st, 404);
    assert!(String::from_utf8_lossy(&body).contains("not in the cluster"));

    // A forged hop header is refused and counted.
    let host = others[0].base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let forged = format!(
        "GET /api/rooms/conf HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nx-tessera-hop: n1 10.0.0.1:1 {} AAAA\r\n\r\n",
        tessera_server::auth::now_unix()
    );
    s.write_all(forged.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 403"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    let (_, metrics) = http_get(&others[0].base, "/metrics").await;
    let metrics = String::from_utf8_lossy(&metrics).to_string();
    for counted in [
        "tessera_cluster_hop_refused_total 1",
        "tessera_cluster_redis_up 1",
    ] {
        assert!(
            metrics.contains(counted),
            "{counted} in /metrics:\n{metrics}"
        );
    }

    for c in [ann, bo, viewer] {
        c.leave().await;
    }
    poll(
        "the room closed everywhere",
        Duration::from_secs(15),
        || async { owner(&nodes[0].base, "conf").await.is_none() },
    )
    .await;
    drop(nodes);
    redis.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_rooms_spread_and_proxied_joins_keep_the_client_address() {
    let dir = scratch("cluster-spread");
    let redis = Redis::start(free_port()).await;
    let limits = "[limits]\njoins_per_minute_per_ip = 12\n";
    let a = node(&dir, redis.port, "a", 61600, limits, "").await;
    let b = node(&dir, redis.port, "b", 61800, limits, "").await;
    poll("two live nodes", Duration::from_secs(15), || async {
        node_ids(&a.base).await.len() == 2
    })
    .await;

    // Ten new rooms, all joined through a: both nodes get some.
    let t0 = Instant::now();
    let mut sockets = Vec::new();
    for i in 0..10 {
        let (ws, m) = ws_join(&a.base, &format!("spread-{i}"), "P").await;
        assert!(joined(&m), "{m:?}");
        sockets.push(ws);
    }
    eprintln!(
        "10 new rooms placed and joined through one node in {:?}",
        t0.elapsed()
    );
    let per_node = || async {
        let (_, v) = get_json(&b.base, "/api/rooms").await;
        let mut count = std::collections::HashMap::<String, usize>::new();
        for r in v.as_array().cloned().unwrap_or_default() {
            *count
                .entry(r["node"].as_str().unwrap_or("").to_string())
                .or_default() += 1;
        }
        count
    };
    poll("ten rooms listed", Duration::from_secs(10), || async {
        per_node().await.values().sum::<usize>() == 10
    })
    .await;
    let per_node = per_node().await;
    eprintln!("rooms per node: {per_node:?}");
    assert!(
        per_node.get("a") > Some(&0) && per_node.get("b") > Some(&0),
        "neither node holds all ten: {per_node:?}"
    );
    drop(sockets);

    // Per-IP limits see the client's address through the proxy: 127.0.0.2 joining a room
    // on the other node is refused on its 13th join a minute, 127.0.0.3 is not.
    let (ws, m) = ws_join_from(&a.base, "127.0.0.4", "far", "Host").await;
    assert!(joined(&m), "{m:?}");
    let home = owner_soon(&a.base, "far").await;
    let entry = if home == "a" { &b } else { &a };
    let mut keep = vec![ws];
    for i in 0..12 {
        let (ws, m) = ws_join_from(&entry.base, "127.0.0.2", "far", &format!("G{i}")).await;
        assert!(joined(&m), "join {i}: {m:?}");
        keep.push(ws);
    }
    let (_, m) = ws_join_from(&entry.base, "127.0.0.2", "far", "G12").await;
    assert_eq!(code(&m), Some(ErrorCode::RateLimited), "{m:?}");
    let (_, m) = ws_join_from(&entry.base, "127.0.0.3", "far", "H").await;
    assert!(joined(&m), "another address is not limited: {m:?}");
    drop(keep);
    drop((a, b));
    redis.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_disappears_and_its_rooms_rejoin_on_a_live_node() {
    let dir = scratch("cluster-kill");
    let redis = Redis::start(free_port()).await;
    let mut a = node(&dir, redis.port, "a", 62000, "", "").await;
    let mut b = node(&dir, redis.port, "b", 62200, "", "").await;
    poll("two live nodes", Duration::from_secs(15), || async {
        node_ids(&a.base).await.len() == 2
    })
    .await;
    let (_first, m) = ws_join(&a.base, "phoenix", "Ann").await;
    assert!(joined(&m), "{m:?}");
    let home = owner_soon(&a.base, "phoenix").await;
    let (dead, live) = if home == "a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    // Bo comes through the other node: proxied to the room's node.
    let (mut bo, m) = ws_join(&live.base, "phoenix", "Bo").await;
    assert!(joined(&m), "{m:?}");

    dead.child.start_kill().unwrap();
    let killed = Instant::now();
    assert_eq!(
        next_error(&mut bo, Duration::from_secs(10)).await,
        Some((ErrorCode::Moved, true)),
        "the proxy tells Bo to rejoin"
    );
    let mut attempts = 0;
    let landed = loop {
        attempts += 1;
        let (ws, m) = ws_join(&live.base, "phoenix", "Bo").await;
        if joined(&m) {
            break (ws, killed.elapsed());
        }
        assert!(
            matches!(code(&m), Some(ErrorCode::Unavailable)),
            "while the dead node's claim lasts, a rejoin is told to retry: {m:?}"
        );
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "no rejoin within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "rejoin landed {:?} after SIGKILL of the room's node ({attempts} attempts)",
        landed.1
    );
    assert!(landed.1 < Duration::from_secs(15));
    poll(
        "phoenix listed on the live node",
        Duration::from_secs(10),
        || async { owner(&live.base, "phoenix").await.as_deref() == Some(live.id.as_str()) },
    )
    .await;
    poll(
        "the dead node gone from the list",
        Duration::from_secs(TTL_SECS + 5),
        || async { node_ids(&live.base).await == vec![live.id.clone()] },
    )
    .await;
    eprintln!(
        "dead node gone from /api/cluster/nodes {:?} after SIGKILL",
        killed.elapsed()
    );
    drop((a, b));
    redis.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_takes_no_new_rooms_and_exits_when_empty() {
    let dir = scratch("cluster-drain");
    let redis = Redis::start(free_port()).await;
    let mut a = node(&dir, redis.port, "a", 62400, "", "drain_timeout_secs = 60").await;
    let mut b = node(&dir, redis.port, "b", 62600, "", "drain_timeout_secs = 60").await;
    poll("two live nodes", Duration::from_secs(15), || async {
        node_ids(&a.base).await.len() == 2
    })
    .await;
    let (first, m) = ws_join(&a.base, "stay", "Ann").await;
    assert!(joined(&m), "{m:?}");
    let home = owner_soon(&a.base, "stay").await;
    let (drained, other) = if home == "a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };

    drained.signal("-TERM");
    poll(
        "the node shown draining",
        Duration::from_secs(10),
        || async {
            live_nodes(&other.base)
                .await
                .iter()
                .any(|n| n["id"] == drained.id.as_str() && n["draining"] == true)
        },
    )
    .await;
    let (st, body) = http_get(&drained.base, "/healthz").await;
    assert_eq!(st, 503, "{}", String::from_utf8_lossy(&body));
    // New rooms joined through the draining node go to the other one; its own room still
    // takes participants.
    let mut keep = Vec::new();
    for i in 0..3 {
        let room = format!("fresh-{i}");
        let (ws, m) = ws_join(&drained.base, &room, "P").await;
        assert!(joined(&m), "{m:?}");
        keep.push(ws);
        assert_eq!(owner_soon(&other.base, &room).await, other.id);
    }
    let (second, m) = ws_join(&other.base, "stay", "Bo").await;
    assert!(joined(&m), "{m:?}");
    assert_eq!(
        owner(&other.base, "stay").await.as_deref(),
        Some(drained.id.as_str())
    );
    assert!(
        drained.child.try_wait().unwrap().is_none(),
        "still running with a room"
    );

    drop(first);
    drop(second);
    let status = tokio::time::timeout(Duration::from_secs(20), drained.child.wait())
        .await
        .expect("the drained node exits once its room is empty")
        .unwrap();
    assert!(status.success(), "{status}");
    let log = drained.log();
    assert!(log.contains("drained"), "{log}");
    assert_eq!(
        node_ids(&other.base).await,
        vec![other.id.clone()],
        "deregistered at exit"
    );
    drop(keep);
    drop((a, b));
    redis.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_timeout_moves_the_participants_and_a_stalled_nodes_lost_room_rejoins() {
    let dir = scratch("cluster-moves");
    let redis = Redis::start(free_port()).await;
    let a = node(&dir, redis.port, "a", 62800, "", "drain_timeout_secs = 1").await;
    let b = node(&dir, redis.port, "b", 63000, "", "drain_timeout_secs = 1").await;
    poll("two live nodes", Duration::from_secs(15), || async {
        node_ids(&a.base).await.len() == 2
    })
    .await;

    // A node stalled past its TTL (SIGSTOP) loses its room to a newer claim; when it runs
    // again it tells its participants to rejoin.
    // Ann offers (a viewer): only participants with media are members of the room thread.
    let ann = Client::join(&a.base, "stolen", "Ann", Media::default())
        .await
        .expect("Ann joins");
    wait_until("Ann's composite", Duration::from_secs(20), || {
        !ann.received.lock().unwrap().video.is_empty()
    })
    .await;
    let home = owner_soon(&a.base, "stolen").await;
    let (stalled, other) = if home == "a" { (&a, &b) } else { (&b, &a) };
    stalled.signal("-STOP");
    poll(
        "the stalled node gone",
        Duration::from_secs(TTL_SECS + 5),
        || async { node_ids(&other.base).await == vec![other.id.clone()] },
    )
    .await;
    let (_bo, m) = ws_join(&other.base, "stolen", "Bo").await;
    assert!(
        joined(&m),
        "the room is claimed anew on the live node: {m:?}"
    );
    stalled.signal("-CONT");
    told_to_move(&ann, "the old node tells Ann to rejoin").await;
    poll(
        "stolen listed on the live node",
        Duration::from_secs(10),
        || async { owner(&other.base, "stolen").await.as_deref() == Some(other.id.as_str()) },
    )
    .await;

    // An admin drain with drain_timeout_secs = 1: the participant left is moved, the node
    // exits, and the rejoin lands on the other node.
    poll("the stalled node back", Duration::from_secs(10), || async {
        node_ids(&other.base).await.len() == 2
    })
    .await;
    let cy = Client::join(&other.base, "lingering", "Cy", Media::default())
        .await
        .expect("Cy joins");
    let home = owner_soon(&other.base, "lingering").await;
    let (mut drained, survivor) = if home == "a" { (a, b) } else { (b, a) };
    let (st, body) = http(&drained.base, "POST", "/api/admin/drain", Some(ADMIN), None).await;
    assert_eq!(st, 202, "{}", String::from_utf8_lossy(&body));
    told_to_move(&cy, "the drain timeout moves Cy").await;
    let status = tokio::time::timeout(Duration::from_secs(20), drained.child.wait())
        .await
        .expect("the drained node exits after its timeout")
        .unwrap();
    assert!(status.success(), "{status}");
    let (_cy, m) = ws_join(&survivor.base, "lingering", "Cy").await;
    assert!(joined(&m), "{m:?}");
    assert_eq!(owner_soon(&survivor.base, "lingering").await, survivor.id);
    for c in [ann, cy] {
        c.leave().await;
    }
    drop(survivor);
    redis.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_running_rooms_go_on_and_new_rooms_are_refused() {
    let dir = scratch("cluster-redis-down");
    let redis_port = free_port();
    let n = node(&dir, redis_port, "solo", 63200, "", "").await;
    // Redis not there at start: the node serves, says so, and refuses new rooms.
    let (st, body) = http_get(&n.base, "/healthz").await;
    let text = String::from_utf8_lossy(&body).to_string();
    assert_eq!(st, 503, "{text}");
    assert!(text.contains("redis unreachable"), "{text}");
    let (_, m) = ws_join(&n.base, "early", "Ann").await;
    assert_eq!(code(&m), Some(ErrorCode::Unavailable), "{m:?}");
    let sdp = Some(("application/sdp", "v=0\r\n"));
    let (st, _) = http_with(&n.base, "POST", "/whip/early?name=P", None, sdp).await;
    assert_eq!(st, 503);
    let (st, _) = http_get(&n.base, "/api/cluster/nodes").await;
    assert_eq!(st, 503);

    // Redis comes: the node registers and takes rooms.
    let redis = Redis::start(redis_port).await;
    poll(
        "healthy once Redis is up",
        Duration::from_secs(20),
        || async { http_get(&n.base, "/healthz").await.0 == 200 },
    )
    .await;
    let (_ann, m) = ws_join(&n.base, "steady", "Ann").await;
    assert!(joined(&m), "{m:?}");

    // Redis goes: the running room keeps taking joins, a new room is refused.
    redis.kill().await;
    poll(
        "unhealthy once Redis is gone",
        Duration::from_secs(20),
        || async { http_get(&n.base, "/healthz").await.0 == 503 },
    )
    .await;
    let (_bo, m) = ws_join(&n.base, "steady", "Bo").await;
    assert!(joined(&m), "a running room goes on: {m:?}");
    let (_, m) = ws_join(&n.base, "another", "Cy").await;
    assert_eq!(code(&m), Some(ErrorCode::Unavailable), "{m:?}");
}
