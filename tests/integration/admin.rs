//! The admin API against a live room: layout, pin, mute, tier, remove, close; and refusals
//! without or with a wrong token.

use std::time::Duration;

use tessera_server::client::Client;
use tessera_types::VideoCodec;

use crate::fixtures;
use crate::live::{http, load_media, start_server};

const TOKEN: &str = "test-admin-token-0123456789";

async fn admin(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let (status, bytes) = http(base, method, path, Some(TOKEN), body).await;
    let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, v)
}

async fn room(base: &str, name: &str) -> serde_json::Value {
    let (status, v) = admin(base, "GET", "/api/admin/rooms", None).await;
    assert_eq!(status, 200, "{v}");
    v.as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == name)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

fn participant<'a>(room: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    room["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or(&serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_controls_a_live_room() {
    let (_, list) = fixtures();
    let extra = format!(
        "[tiers.small]\nwidth = 320\nheight = 180\nfps = 10\nbitrate_kbps = 200\ncodec = \"vp8\"\n[auth]\nadmin_token = \"{TOKEN}\"\n"
    );
    let base = start_server(&extra).await;
    let a = Client::join(
        &base,
        "admin-room",
        "Ann",
        load_media(&list[0], VideoCodec::Vp8),
    )
    .await
    .unwrap();
    let b = Client::join(
        &base,
        "admin-room",
        "Bo",
        load_media(&list[1], VideoCodec::Vp8),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Refusals.
    let (s, _) = http(&base, "GET", "/api/admin/rooms", None, None).await;
    assert_eq!(s, 401, "no token");
    let (s, _) = http(
        &base,
        "GET",
        "/api/admin/rooms",
        Some("wrong-token-wrong-token"),
        None,
    )
    .await;
    assert_eq!(s, 403, "wrong token");
    let (s, v) = admin(
        &base,
        "POST",
        "/api/admin/rooms/admin-room/layout",
        Some(r#"{"layout":"nope"}"#),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        v["error"].as_str().unwrap().contains("presenter"),
        "names valid layouts: {v}"
    );
    let (s, _) = admin(
        &base,
        "POST",
        "/api/admin/rooms/no-room/pin",
        Some(r#"{"participant":null}"#),
    )
    .await;
    assert_eq!(s, 404);

    // Layout and pin: Bo in the speaker tile of the speaker layout.
    let (s, _) = admin(
        &base,
        "POST",
        "/api/admin/rooms/admin-room/layout",
        Some(r#"{"layout":"speaker"}"#),
    )
    .await;
    assert_eq!(s, 200);
    let pin = format!(r#"{{"participant":"{}"}}"#, b.id);
    let (s, v) = admin(&base, "POST", "/api/admin/rooms/admin-room/pin", Some(&pin)).await;
    assert_eq!(s, 200, "{v}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = room(&base, "admin-room").await;
    assert_eq!(r["layout"], "speaker");
    let tiles = r["tiers"][0]["tiles"].as_array().unwrap();
    let biggest = tiles
        .iter()
        .max_by_key(|t| t["w"].as_u64().unwrap() * t["h"].as_u64().unwrap())
        .unwrap();
    assert_eq!(
        biggest["id"],
        b.id.as_str(),
        "the pinned participant has the big tile: {tiles:?}"
    );
    let told = a.received.lock().unwrap().messages.iter().any(|m| {
        matches!(m, tessera_proto::ServerMessage::LayoutChanged { layout } if layout == "speaker")
    });
    assert!(told, "participants hear of the layout change");

    // Mute and tier.
    let (s, _) = admin(
        &base,
        "POST",
        &format!("/api/admin/rooms/admin-room/participants/{}/mute", a.id),
        Some(r#"{"audio":true}"#),
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = admin(
        &base,
        "POST",
        &format!("/api/admin/rooms/admin-room/participants/{}/tier", a.id),
        Some(r#"{"tier":"small"}"#),
    )
    .await;
    assert_eq!((s, v["tier"].as_str()), (200, Some("small")), "{v}");
    let frames = a.received.lock().unwrap().video.len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = room(&base, "admin-room").await;
    assert_eq!(participant(&r, &a.id)["audio_muted"], true);
    assert_eq!(participant(&r, &a.id)["tier"], "small");
    {
        let rec = a.received.lock().unwrap();
        assert!(
            rec.video.len() > frames,
            "video keeps coming on the new tier"
        );
        let mut dec = tessera_codec::new_video_decoder(VideoCodec::Vp8).unwrap();
        let mut size = None;
        for f in &rec.video[frames..] {
            if let Ok(Some(p)) = dec.decode(f) {
                size = Some((p.width, p.height));
            }
        }
        assert_eq!(size, Some((320, 180)), "the small tier's composite arrives");
    }

    // Remove Bo: he is told, the others see him leave.
    let (s, _) = admin(
        &base,
        "DELETE",
        &format!("/api/admin/rooms/admin-room/participants/{}", b.id),
        None,
    )
    .await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let removed = b.received.lock().unwrap().messages.iter().any(|m| {
        matches!(
            m,
            tessera_proto::ServerMessage::Error {
                code: tessera_proto::ErrorCode::Removed,
                fatal: true,
                ..
            }
        )
    });
    assert!(removed, "the removed participant is told");
    assert!(participant(&room(&base, "admin-room").await, &b.id).is_null());

    // Close the room.
    let (s, _) = admin(&base, "DELETE", "/api/admin/rooms/admin-room", None).await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        room(&base, "admin-room").await.is_null(),
        "the room is gone"
    );
    let (s, _) = http(&base, "GET", "/api/rooms/admin-room", None, None).await;
    assert_eq!(s, 404);
    a.leave().await;
    b.leave().await;
}
