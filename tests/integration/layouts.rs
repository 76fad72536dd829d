//! Layouts chosen per viewer, over real loopback WebRTC: viewers who choose the same layout
//! share one encode (a tier variant `TIER@LAYOUT`), each composite shows the layout its
//! viewer chose, and a choice beyond `rooms.max_encodes_per_room` is refused with
//! `layout_refused` and the room's layout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tessera_codec::Rect;
use tessera_proto::{ClientMessage, ServerMessage};
use tessera_server::client::Client;
use tessera_types::VideoCodec;

use crate::fixtures;
use crate::live::{decode_last, distance, http_get, load_media, start_server_text, tile_colour};

/// One tier and no bandwidth ladder, so the only encodes are the layout choices'.
const CONFIG: &str = r#"
[rooms]
default_tier = "test"
max_encodes_per_room = 2
[tiers.test]
width = 640
height = 360
fps = 15
bitrate_kbps = 800
codec = "vp8"
[bandwidth]
enabled = false
[labels]
enabled = false
"#;

async fn room(base: &str) -> serde_json::Value {
    let (status, body) = http_get(base, "/api/rooms/layouts").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Tier name -> receivers, for tiers that have any.
fn encodes(info: &serde_json::Value) -> BTreeMap<String, u64> {
    info["tiers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["receivers"].as_u64() > Some(0))
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["receivers"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn tier<'a>(info: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    info["tiers"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("tier {name} in {info}"))
}

/// The tiles of `tier`: (participant id, rect).
fn tiles(info: &serde_json::Value, name: &str) -> Vec<(String, Rect)> {
    let n = |v: &serde_json::Value| v.as_u64().unwrap() as u32;
    tier(info, name)["tiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_string(),
                Rect::new(n(&t["x"]), n(&t["y"]), n(&t["w"]), n(&t["h"])),
            )
        })
        .collect()
}

fn refused(c: &Client) -> Option<String> {
    c.received
        .lock()
        .unwrap()
        .messages
        .iter()
        .find_map(|m| match m {
            ServerMessage::LayoutRefused { reason, .. } => Some(reason.clone()),
            _ => None,
        })
}

async fn poll<T>(what: &str, secs: u64, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every tile of `tier` in `c`'s last decoded composite shows its participant's colour.
fn composite_matches(
    c: &Client,
    info: &serde_json::Value,
    name: &str,
    colours: &[(String, [u8; 3])],
) -> bool {
    let frames = c.received.lock().unwrap().video.clone();
    let Some(picture) = decode_last(VideoCodec::Vp8, &frames) else {
        return false;
    };
    tiles(info, name).iter().all(|(id, r)| {
        colours
            .iter()
            .find(|(c, _)| c == id)
            .is_some_and(|(_, rgb)| distance(tile_colour(&picture, *r), *rgb) < 60)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_choosing_layouts_share_an_encode_per_choice_up_to_the_cap() {
    let (_, list) = fixtures();
    let base = start_server_text(CONFIG).await;
    let choices = [None, Some("speaker"), Some("speaker"), Some("pip")];
    let mut clients = Vec::new();
    for (fx, layout) in list.iter().zip(choices) {
        let mut media = load_media(fx, VideoCodec::Vp8);
        media.layout = layout.map(String::from);
        let c = tokio::time::timeout(
            Duration::from_secs(20),
            Client::join(&base, "layouts", &fx.name, media),
        )
        .await
        .expect("join in time")
        .expect("join");
        clients.push(c);
    }
    let colours: Vec<(String, [u8; 3])> = clients
        .iter()
        .zip(list)
        .map(|(c, fx)| (c.id.clone(), fx.rgb))
        .collect();
    let [ann, bo, cy, dee] = &clients[..] else {
        unreachable!()
    };

    // Ann sees the room's grid, Bo and Cy share one `speaker` encode, and Dee's `pip` would
    // be a third encode: refused, so Dee sees the grid with Ann.
    let info = poll(
        "two encodes: the grid and one speaker variant",
        30,
        async || {
            let info = room(&base).await;
            let want = BTreeMap::from([("test".to_string(), 2), ("test@speaker".to_string(), 2)]);
            // A new tier variant lists its tiles once it has composed: wait for those too.
            let composed = ["test", "test@speaker"]
                .iter()
                .all(|t| tiles(&info, t).len() == 4);
            (encodes(&info) == want && refused(dee).is_some() && composed).then_some(info)
        },
    )
    .await;
    eprintln!("encodes: {:?}", encodes(&info));
    let reason = refused(dee).unwrap();
    eprintln!("refused: {reason}");
    assert!(reason.contains("max_encodes_per_room = 2"), "{reason}");
    let layout_of = |info: &serde_json::Value, id: &str| {
        info["participants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .map(|p| p["layout"].clone())
            .unwrap()
    };
    assert_eq!(layout_of(&info, &bo.id), "speaker");
    assert_eq!(layout_of(&info, &dee.id), serde_json::Value::Null);

    // Each composite matches its choice: four equal tiles for the grid, one big tile and a
    // strip for the speaker layout, every tile in its participant's colour.
    let grid: Vec<u32> = tiles(&info, "test")
        .iter()
        .map(|(_, r)| r.w * r.h)
        .collect();
    assert_eq!(grid.len(), 4);
    assert!(grid.iter().all(|a| *a == grid[0]), "{grid:?}");
    let speaker: Vec<u32> = tiles(&info, "test@speaker")
        .iter()
        .map(|(_, r)| r.w * r.h)
        .collect();
    let big = *speaker.iter().max().unwrap();
    assert!(
        speaker.len() == 4 && speaker.iter().filter(|a| **a * 3 < big).count() == 3,
        "{speaker:?}"
    );
    for (c, tier) in [
        (ann, "test"),
        (bo, "test@speaker"),
        (cy, "test@speaker"),
        (dee, "test"),
    ] {
        poll(
            &format!("{}'s composite to show {tier}", c.id),
            15,
            async || {
                let info = room(&base).await;
                composite_matches(c, &info, tier, &colours).then_some(())
            },
        )
        .await;
    }

    // Bo and Cy go back to the room's layout: the speaker encode stops, and now Dee's
    // `pip` fits under the cap.
    bo.send(ClientMessage::Layout { layout: None });
    cy.send(ClientMessage::Layout { layout: None });
    poll("one encode after the speaker choices end", 15, async || {
        let info = room(&base).await;
        (encodes(&info) == BTreeMap::from([("test".to_string(), 4)])).then_some(())
    })
    .await;
    dee.send(ClientMessage::Layout {
        layout: Some("pip".into()),
    });
    let info = poll("Dee on a pip encode", 15, async || {
        let info = room(&base).await;
        let want = BTreeMap::from([("test".to_string(), 3), ("test@pip".to_string(), 1)]);
        (encodes(&info) == want).then_some(info)
    })
    .await;
    assert_eq!(layout_of(&info, &dee.id), "pip");
    poll("Dee's composite to show pip", 15, async || {
        let info = room(&base).await;
        composite_matches(dee, &info, "test@pip", &colours).then_some(())
    })
    .await;

    // An unknown layout is refused by name.
    ann.send(ClientMessage::Layout {
        layout: Some("nonesuch".into()),
    });
    let reason = poll("a refusal of an unknown layout", 10, async || refused(ann)).await;
    assert!(reason.contains("nonesuch"), "{reason}");
    for c in clients {
        c.leave().await;
    }
}
