//! The live server over real loopback WebRTC: three webrtc-rs participants join one room
//! over the WebSocket protocol, each sending its fixture colour and tone, and each must
//! see the others in the composite and hear them, but not itself.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tessera_codec::{new_audio_decoder, new_video_decoder, Rect, VideoFrame};
use tessera_config::Config;
use tessera_container::{AnnexBReader, IvfReader, OggOpusReader};
use tessera_mixer::analysis::goertzel_power;
use tessera_server::client::{Client, Media};
use tessera_types::{Rgb, VideoCodec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{fixtures, Fixture};

const TEST_CONFIG: &str = r#"
[rooms]
default_tier = "test"
[tiers.test]
width = 640
height = 360
fps = 15
bitrate_kbps = 800
codec = "vp8"
"#;

/// Starts the real server on 127.0.0.1:0; returns its base URL.
pub async fn start_server(extra: &str) -> String {
    start_server_text(&format!("{TEST_CONFIG}{extra}")).await
}

/// Starts the real server on 127.0.0.1:0 with exactly this config text.
pub async fn start_server_text(text: &str) -> String {
    let mut cfg = Config::from_toml(text, "test.toml").expect("test config");
    // Media on an OS-chosen port: tests run many servers side by side.
    cfg.network.udp_port = 0;
    cfg.network.tcp_port = 0;
    let server = tessera_server::Server::new(cfg).expect("server");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener, std::future::pending()));
    format!("http://{addr}")
}

/// A minimal HTTP/1.1 GET: (status, body).
pub async fn http_get(base: &str, path: &str) -> (u16, Vec<u8>) {
    http(base, "GET", path, None, None).await
}

/// A minimal HTTP/1.1 request with an optional bearer token and JSON body: (status, body).
pub async fn http(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<&str>,
) -> (u16, Vec<u8>) {
    let body = json.map(|b| ("application/json", b));
    http_with(base, method, path, token, body).await
}

/// `http` with a body of any content type: `(content_type, body)`.
pub async fn http_with(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
) -> (u16, Vec<u8>) {
    let host = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    match body {
        Some((ct, b)) => req.push_str(&format!(
            "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => req.push_str("\r\n"),
    }
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("HTTP response in time")
        .unwrap();
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP header end");
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = buf[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(p) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&b[..p]).unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if n == 0 || b.len() < p + 2 + n {
            break;
        }
        out.extend_from_slice(&b[p + 2..p + 2 + n]);
        b = &b[p + 2 + n + 2..];
    }
    out
}

pub fn load_media(fx: &Fixture, codec: VideoCodec) -> Media {
    let (dir, _) = fixtures();
    let frames: Vec<Vec<u8>> = match codec {
        VideoCodec::Vp8 => IvfReader::open(dir.join(format!("{}.ivf", fx.name)))
            .unwrap()
            .map(|f| f.unwrap().data)
            .collect(),
        VideoCodec::H264 => {
            let mut r = AnnexBReader::open(dir.join(format!("{}.h264", fx.name))).unwrap();
            let mut v = Vec::new();
            while let Some(au) = r.next_access_unit().unwrap() {
                v.push(au.data);
            }
            v
        }
    };
    let mut audio = Vec::new();
    let mut r = OggOpusReader::open(dir.join(format!("{}.ogg", fx.name))).unwrap();
    while let Some(p) = r.next_packet().unwrap() {
        audio.push(p.data);
    }
    Media {
        video: Some((codec, frames)),
        video_fps: 30,
        audio,
        token: None,
        tier: None,
        receive_video: true,
        layout: None,
    }
}

pub(crate) fn distance(a: Rgb, b: [u8; 3]) -> i32 {
    (a.r as i32 - b[0] as i32).abs()
        + (a.g as i32 - b[1] as i32).abs()
        + (a.b as i32 - b[2] as i32).abs()
}

/// The centre half of a tile's mean colour.
pub(crate) fn tile_colour(frame: &VideoFrame, r: Rect) -> Rgb {
    let inner = Rect {
        x: r.x + r.w / 4,
        y: r.y + r.h / 4,
        w: r.w / 2,
        h: r.h / 2,
    }
    .even();
    frame.mean_yuv(inner).to_rgb()
}

pub(crate) fn decode_last(codec: VideoCodec, frames: &[Vec<u8>]) -> Option<VideoFrame> {
    let mut dec = new_video_decoder(codec).ok()?;
    let mut last = None;
    for f in frames {
        if let Ok(Some(p)) = dec.decode(f) {
            last = Some(p);
        }
    }
    last
}

pub(crate) fn decode_audio(packets: &[Vec<u8>]) -> Vec<i16> {
    let mut dec = new_audio_decoder().unwrap();
    let (mut out, mut pcm) = (Vec::new(), Vec::new());
    for p in packets {
        if dec.decode(p, &mut pcm).is_ok() {
            out.extend_from_slice(&pcm);
        }
    }
    out
}

pub(crate) async fn room_tiles(base: &str, room: &str) -> (u32, u32, HashMap<String, Rect>) {
    let (status, body) = http_get(base, &format!("/api/rooms/{room}")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let tier = &v["tiers"][0];
    let mut tiles = HashMap::new();
    for t in tier["tiles"].as_array().cloned().unwrap_or_default() {
        let n = |k: &str| t[k].as_u64().unwrap_or(0) as u32;
        tiles.insert(
            t["id"].as_str().unwrap_or("").to_string(),
            Rect {
                x: n("x"),
                y: n("y"),
                w: n("w"),
                h: n("h"),
            },
        );
    }
    (
        tier["width"].as_u64().unwrap_or(0) as u32,
        tier["height"].as_u64().unwrap_or(0) as u32,
        tiles,
    )
}

/// Whether the last 3 s of `pcm` carry every tone but `tones[own]`, that one at least
/// 30 dB below the weakest other.
pub(crate) fn mix_minus_heard(pcm: &[i16], own: usize, tones: &[f32]) -> bool {
    let body = &pcm[pcm.len().saturating_sub(48_000 * 3)..];
    let floor = goertzel_power(body, 2500.0, 48_000).max(1e-12);
    let others: Vec<f64> = (0..tones.len())
        .filter(|j| *j != own)
        .map(|j| goertzel_power(body, tones[j], 48_000))
        .collect();
    let weakest = others.iter().copied().fold(f64::MAX, f64::min);
    others.iter().all(|p| *p > floor * 100.0)
        && goertzel_power(body, tones[own], 48_000) < weakest / 1000.0
}

/// Polls `check` every 500 ms until it says settled or `timeout` passes, and returns what
/// it saw last: for checks that then assert on that, saying what is wrong if it never settled.
pub(crate) async fn settle<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (bool, T)>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let (settled, seen) = check().await;
        if settled || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(crate) async fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_webrtc_peers_see_each_other_and_hear_only_the_others() {
    let (_, list) = fixtures();
    let base = start_server("").await;
    let people: Vec<(Fixture, VideoCodec)> = vec![
        (list[0].clone(), VideoCodec::Vp8),
        // An H.264-only sender gets the composite in H.264 (the tier's codec is VP8).
        (list[1].clone(), VideoCodec::H264),
        (list[2].clone(), VideoCodec::Vp8),
    ];
    let mut clients = Vec::new();
    for (fx, codec) in &people {
        let c = tokio::time::timeout(
            Duration::from_secs(20),
            Client::join(&base, "live-room", &fx.name, load_media(fx, *codec)),
        )
        .await
        .expect("join in time")
        .expect("join");
        clients.push(c);
    }

    // Let media flow: every client gets composite frames and audio.
    wait_until(
        "composite video and audio at every client",
        Duration::from_secs(30),
        || {
            clients.iter().all(|c| {
                let r = c.received.lock().unwrap();
                r.video.len() > 30 && r.audio.len() > 150
            })
        },
    )
    .await;
    // Wait (for a condition, with a deadline) until every tile is filled and every mix has
    // settled after the last join; the asserts below then say what is wrong if it never does.
    let (w, h, tiles) = settle(Duration::from_secs(30), || async {
        let (w, h, tiles) = room_tiles(&base, "live-room").await;
        let settled = tiles.len() == 3
            && clients.iter().enumerate().all(|(i, c)| {
                let r = c.received.lock().unwrap();
                let Some(frame) = r.codec.and_then(|k| decode_last(k, &r.video)) else {
                    return false;
                };
                let colours = clients.iter().enumerate().all(|(j, o)| {
                    tiles.get(&o.id).is_some_and(|rect| {
                        distance(tile_colour(&frame, *rect), people[j].0.rgb) < 60
                    })
                });
                let tones: Vec<f32> = people.iter().map(|(f, _)| f.tone_hz).collect();
                colours && mix_minus_heard(&decode_audio(&r.audio), i, &tones)
            });
        (settled, (w, h, tiles))
    })
    .await;
    if std::env::var_os("TESSERA_TEST_DEBUG").is_some() {
        let (_, body) = http_get(&base, "/api/rooms/live-room").await;
        eprintln!("{}", String::from_utf8_lossy(&body));
        for c in &clients {
            let r = c.received.lock().unwrap();
            let pcm = decode_audio(&r.audio);
            eprintln!(
                "{}: {} packets, {} samples, rms {} dBFS, first sizes {:?}",
                c.id,
                r.audio.len(),
                pcm.len(),
                tessera_mixer::analysis::rms_dbfs(&pcm),
                r.audio.iter().take(5).map(|p| p.len()).collect::<Vec<_>>()
            );
        }
    }
    assert_eq!((w, h), (640, 360));
    assert_eq!(tiles.len(), 3, "three tiles: {tiles:?}");

    // Receiver reports arrive (webrtc-rs's and browsers'), and with no loss on loopback
    // every receiver keeps its tier.
    let (_, body) = http_get(&base, "/api/rooms/live-room").await;
    let info: serde_json::Value = serde_json::from_slice(&body).unwrap();
    for p in info["participants"].as_array().unwrap() {
        assert!(
            p["feedback_reports"].as_u64() > Some(0),
            "receiver reports reach the server: {p}"
        );
        assert_eq!(
            p["tier_switches"], 0,
            "a receiver without loss keeps its tier: {p}"
        );
    }

    // Prometheus metrics read the same counters.
    let (status, body) = http_get(&base, "/metrics").await;
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in /metrics:\n{text}"))
    };
    assert_eq!(value("tessera_rooms "), 1.0);
    assert_eq!(value("tessera_participants "), 3.0);
    assert!(value("tessera_tier_fps{room=\"live-room\",tier=\"test\",codec=\"vp8\"}") > 5.0);
    assert!(value("tessera_room_busy_seconds_total{room=\"live-room\"}") > 0.0);
    assert!(
        value("tessera_tier_encode_seconds_total{room=\"live-room\",tier=\"test\",codec=\"vp8\"}")
            > 0.0
    );
    assert!(value("tessera_mix_latency_seconds_count{room=\"live-room\"}") > 10.0);
    assert!(value("tessera_mix_latency_seconds_bucket{le=\"+Inf\",room=\"live-room\"}") > 10.0);
    for l in text
        .lines()
        .filter(|l| l.starts_with("tessera_mix_latency"))
    {
        eprintln!("{l}");
    }
    for c in &clients {
        let frames = value(&format!(
            "tessera_participant_video_frames_in_total{{room=\"live-room\",participant=\"{}\"}}",
            c.id
        ));
        assert!(frames > 10.0, "{}: {frames} frames in", c.id);
    }

    for (i, c) in clients.iter().enumerate() {
        let r = c.received.lock().unwrap();
        let (fx, sent) = &people[i];
        let codec = r.codec.expect("a video track");
        assert_eq!(
            codec, *sent,
            "{} receives the composite in the codec it offered",
            fx.name
        );
        let frame = decode_last(codec, &r.video).expect("the composite decodes");
        assert_eq!((frame.width, frame.height), (640, 360));
        for (j, other) in clients.iter().enumerate() {
            let (ofx, _) = &people[j];
            let rect = tiles[&other.id];
            let got = tile_colour(&frame, rect);
            let d = distance(got, ofx.rgb);
            assert!(
                d < 60,
                "{} sees {}'s tile {rect:?} as {got:?}, want {:?}",
                fx.name,
                ofx.name,
                ofx.rgb
            );
        }
        // Audio: the last ~3 s, after everyone's tone has been flowing.
        let pcm = decode_audio(&r.audio);
        let body = &pcm[pcm.len().saturating_sub(48_000 * 3)..];
        let floor = goertzel_power(body, 2500.0, 48_000).max(1e-12);
        let power = |hz: f32| goertzel_power(body, hz, 48_000);
        let mut weakest_other = f64::MAX;
        for (j, (ofx, _)) in people.iter().enumerate() {
            if i != j {
                let p = power(ofx.tone_hz);
                assert!(
                    p > floor * 100.0,
                    "{} misses {}'s {} Hz tone ({p} vs floor {floor})",
                    fx.name,
                    ofx.name,
                    ofx.tone_hz
                );
                weakest_other = weakest_other.min(p);
            }
        }
        // Mix-minus: its own tone is at least 30 dB below the others'.
        let own = power(fx.tone_hz);
        assert!(
            own < weakest_other / 1000.0,
            "{} hears its own {} Hz tone ({own} vs others' {weakest_other})",
            fx.name,
            fx.tone_hz
        );
        let joined = r
            .messages
            .iter()
            .filter(|m| matches!(m, tessera_proto::ServerMessage::ParticipantJoined { .. }))
            .count();
        assert_eq!(
            joined,
            2 - i,
            "{} is told of those who joined after it",
            fx.name
        );
        let first = r.first_frame_at.expect("first frame") - c.joined_at;
        eprintln!(
            "{}: join to first composite frame {} ms",
            fx.name,
            first.as_millis()
        );
    }

    // One leaves: the others are told, and its tile leaves the layout.
    let leaver = clients.pop().unwrap();
    let leaver_id = leaver.id.clone();
    leaver.leave().await;
    let mut ok = false;
    for _ in 0..50 {
        let (_, _, tiles) = room_tiles(&base, "live-room").await;
        if tiles.len() == 2 && !tiles.contains_key(&leaver_id) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the leaver's tile is gone");
    for c in &clients {
        let left = c.received.lock().unwrap().messages.iter().any(|m| {
            matches!(m, tessera_proto::ServerMessage::ParticipantLeft { id } if *id == leaver_id)
        });
        assert!(left, "participant_left reached {}", c.id);
    }
    let (status, png) = http_get(&base, "/api/rooms/live-room/snapshot.png").await;
    assert_eq!(status, 200);
    assert!(png.starts_with(b"\x89PNG"), "snapshot is a PNG");
    for c in clients {
        c.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_only_and_receive_only_participants() {
    let (_, list) = fixtures();
    let base = start_server("").await;
    let cam = Client::join(
        &base,
        "mixed-room",
        "Cam",
        load_media(&list[0], VideoCodec::Vp8),
    )
    .await
    .expect("camera participant joins");
    let mut voice_media = load_media(&list[1], VideoCodec::Vp8);
    voice_media.video = None;
    let voice = Client::join(&base, "mixed-room", "Voice", voice_media)
        .await
        .expect("audio-only participant joins");
    let viewer = Client::join(&base, "mixed-room", "Viewer", Media::default())
        .await
        .expect("receive-only participant joins");
    wait_until(
        "composite and audio at the viewer and the voice",
        Duration::from_secs(30),
        || {
            [&viewer, &voice].iter().all(|c| {
                let r = c.received.lock().unwrap();
                r.video.len() > 20 && r.audio.len() > 150
            })
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (_, _, tiles) = room_tiles(&base, "mixed-room").await;
    assert_eq!(
        tiles.len(),
        2,
        "camera and voice have tiles, the viewer none: {tiles:?}"
    );
    assert!(!tiles.contains_key(&viewer.id));
    {
        let r = viewer.received.lock().unwrap();
        let frame =
            decode_last(r.codec.unwrap(), &r.video).expect("the viewer's composite decodes");
        let cam_colour = tile_colour(&frame, tiles[&cam.id]);
        assert!(
            distance(cam_colour, list[0].rgb) < 60,
            "camera tile is {cam_colour:?}"
        );
        let placeholder = tile_colour(&frame, tiles[&voice.id]);
        assert!(
            distance(placeholder, list[1].rgb) > 100,
            "the audio-only tile is a placeholder, not a picture: {placeholder:?}"
        );
        // The viewer hears everyone (the full mix).
        let pcm = decode_audio(&r.audio);
        let body = &pcm[pcm.len().saturating_sub(48_000 * 2)..];
        let floor = goertzel_power(body, 2500.0, 48_000).max(1e-12);
        for fx in &list[..2] {
            let p = goertzel_power(body, fx.tone_hz, 48_000);
            assert!(p > floor * 100.0, "the viewer misses {}'s tone", fx.name);
        }
    }
    for c in [cam, voice, viewer] {
        c.leave().await;
    }
}
