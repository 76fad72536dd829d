//! Send hints over real loopback WebRTC: in a 3-person room, a webrtc-rs camera that
//! follows `send_hint` is told its tile's size, switches to a smaller clip at a keyframe and
//! sends less than the two cameras that ignore hints, while its tile still shows it.

use std::time::{Duration, Instant};

use tessera_codec::{new_video_decoder, Rect};
use tessera_container::IvfReader;
use tessera_proto::ServerMessage;
use tessera_server::client::{Client, Ladder, Rendition};
use tessera_types::VideoCodec;

use crate::fixtures;
use crate::live::{distance, http_get, load_media, start_server_text, tile_colour};

/// Every tier receivers may be on (`low` from the start estimate, `test` after a probe) is
/// 640x360 at 15 fps, so the hint stays put while estimates settle.
const CONFIG: &str = r#"
[rooms]
default_tier = "test"
max_tier = "test"
[tiers.test]
width = 640
height = 360
fps = 15
bitrate_kbps = 800
codec = "vp8"
"#;

/// Fixture `name`'s camera at every size in `sizes.txt`, starting at 640x360.
fn ladder(name: &str) -> Ladder {
    let (dir, _) = fixtures();
    let sizes = std::fs::read_to_string(dir.join("sizes.txt")).expect("sizes.txt");
    let renditions: Vec<Rendition> = sizes
        .split_whitespace()
        .map(|s| {
            let (w, h) = s.split_once('x').expect("WxH");
            Rendition {
                width: w.parse().unwrap(),
                height: h.parse().unwrap(),
                frames: IvfReader::open(dir.join(format!("{name}-{s}.ivf")))
                    .unwrap()
                    .map(|f| f.unwrap().data)
                    .collect(),
            }
        })
        .collect();
    let start = renditions
        .iter()
        .position(|r| (r.width, r.height) == (640, 360))
        .expect("a 640x360 rendition");
    Ladder { renditions, start }
}

/// The room as `/api/rooms/{room}` reports it.
async fn room(base: &str, name: &str) -> serde_json::Value {
    let (status, body) = http_get(base, &format!("/api/rooms/{name}")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// `id`'s largest tile (by area) over the tiers that have receivers, as (w, h).
fn largest_tile(info: &serde_json::Value, id: &str) -> Option<(u32, u32)> {
    info["tiers"]
        .as_array()?
        .iter()
        .filter(|t| t["receivers"].as_u64() > Some(0))
        .flat_map(|t| t["tiles"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["id"] == id)
        .map(|t| {
            (
                t["w"].as_u64().unwrap() as u32,
                t["h"].as_u64().unwrap() as u32,
            )
        })
        .max_by_key(|(w, h)| w * h)
}

fn participant<'a>(info: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    info["participants"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["id"] == id))
        .unwrap_or_else(|| panic!("{id} in {info}"))
}

/// The last camera `send_hint` a client received: (width, height, fps).
fn last_hint(c: &Client) -> Option<(u32, u32, u32)> {
    let r = c.received.lock().unwrap();
    r.messages.iter().rev().find_map(|m| match m {
        ServerMessage::SendHint {
            kind,
            width,
            height,
            fps,
            on_canvas: true,
            ..
        } if kind == "camera" => Some((*width, *height, *fps)),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_following_hints_sends_its_tile_size() {
    let (_, list) = fixtures();
    let base = start_server_text(CONFIG).await;
    let follower = tokio::time::timeout(
        Duration::from_secs(20),
        Client::join_following_hints(
            &base,
            "hint-room",
            &list[0].name,
            load_media(&list[0], VideoCodec::Vp8),
            ladder(&list[0].name),
        ),
    )
    .await
    .expect("join in time")
    .expect("join");
    let mut others = Vec::new();
    for fx in &list[1..3] {
        let c = tokio::time::timeout(
            Duration::from_secs(20),
            Client::join(
                &base,
                "hint-room",
                &fx.name,
                load_media(fx, VideoCodec::Vp8),
            ),
        )
        .await
        .expect("join in time")
        .expect("join");
        others.push(c);
    }

    // The hint matches the follower's tile. Tiers may still move while receivers' estimates
    // settle, so poll until the last hint and the room's tiles agree.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (hint, tile) = loop {
        let info = room(&base, "hint-room").await;
        let tile = largest_tile(&info, &follower.id);
        let hint = last_hint(&follower);
        let tiles = info["tiers"][0]["tiles"].as_array().map_or(0, |t| t.len());
        if let (Some(h), Some(t)) = (hint, tile) {
            // The hint rounds a tile down to even sizes, which encoders need.
            if tiles == 3 && (h.0, h.1) == (t.0 & !1, t.1 & !1) {
                let reported = &participant(&info, &follower.id)["send_hint"];
                assert_eq!(reported["width"], h.0, "{reported}");
                assert_eq!(reported["height"], h.1, "{reported}");
                break (h, t);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no send_hint matching the follower's tile: last hint {hint:?}, tile {tile:?}\n{info}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("hint {hint:?} for tile {tile:?}");
    assert!(
        hint.0 < 640 && hint.1 < 360,
        "a third of a 640x360 canvas is smaller than the camera: {hint:?}"
    );

    // The follower switches to the largest clip inside the tile (at a keyframe: at most a
    // second at 30 fps, two at 15) and to the hinted fps.
    let want = {
        let l = ladder(&list[0].name);
        let r = &l.renditions[l.pick(hint.0, hint.1)];
        (r.width, r.height)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = *follower.sending.lock().unwrap();
        if (s.width, s.height) == want && s.fps == hint.2 && s.switches > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower sends {s:?}, want {want:?} at {} fps",
            hint.2
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The server sees it: fewer kbit/s and frames per second than the cameras that ignore
    // hints (640x360 at 30 fps), with every frame still decoding. The server's rates cover
    // the last second, and a keyframe in it or not moves them several times over, so average
    // six of them, from a second past the switch.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let ids: Vec<&str> = std::iter::once(&follower)
        .chain(&others)
        .map(|c| c.id.as_str())
        .collect();
    let mut kbps = vec![0.0; ids.len()];
    let mut fps = vec![0.0; ids.len()];
    let mut info = serde_json::Value::Null;
    for _ in 0..6 {
        info = room(&base, "hint-room").await;
        for (i, id) in ids.iter().enumerate() {
            let p = participant(&info, id);
            kbps[i] += p["video_kbps_in"].as_f64().unwrap_or(0.0) / 6.0;
            fps[i] += p["video_fps_in"].as_f64().unwrap_or(0.0) / 6.0;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    eprintln!("follower sends {want:?}; kbit/s in {kbps:?}, fps in {fps:?} (follower first)");
    assert!(
        kbps[0] > 0.0 && kbps[0] * 2.0 < kbps[1].min(kbps[2]),
        "the follower's camera is not below half the others' kbit/s: {kbps:?}\n{info}"
    );
    assert!(
        fps[0] < hint.2 as f64 + 3.0 && fps[1].min(fps[2]) > 25.0,
        "the follower sends the hinted {} fps, the others 30: {fps:?}",
        hint.2
    );
    let f = participant(&info, &follower.id);
    assert_eq!(
        f["video_decode_errors"], 0,
        "size switches happen at keyframes: {f}"
    );

    // The smaller picture still fills the follower's tile, in its colour.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let info = room(&base, "hint-room").await;
    let viewer = &others[0];
    let tier = info["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == participant(&info, &viewer.id)["tier"])
        .unwrap_or_else(|| panic!("the viewer's tier in {info}"))
        .clone();
    let t = tier["tiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == follower.id.as_str())
        .expect("the follower's tile")
        .clone();
    let n = |k: &str| t[k].as_u64().unwrap() as u32;
    let rect = Rect {
        x: n("x"),
        y: n("y"),
        w: n("w"),
        h: n("h"),
    };
    let frames = std::mem::take(&mut viewer.received.lock().unwrap().video);
    let mut dec = new_video_decoder(viewer.received.lock().unwrap().codec.unwrap()).unwrap();
    let mut last = None;
    for f in &frames {
        if let Ok(Some(p)) = dec.decode(f) {
            last = Some(p);
        }
    }
    let frame = last.expect("the viewer's composite decodes");
    let got = tile_colour(&frame, rect);
    assert!(
        distance(got, list[0].rgb) < 60,
        "the follower's tile {rect:?} shows {got:?}, want {:?}",
        list[0].rgb
    );

    follower.leave().await;
    for c in others {
        c.leave().await;
    }
}
