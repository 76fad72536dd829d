//! Live config reload against the real server: a new layout reaches a running room (its
//! snapshot changes) without anyone reconnecting; a bad file is refused and the running
//! config kept; a listen change is reported as needing a restart.

use std::time::Duration;

use tessera_config::Config;
use tessera_server::client::Client;
use tessera_types::VideoCodec;

use crate::live::{http_get, load_media};
use crate::{fixtures, scratch};

fn config(layout: &str, fps: u32, listen: &str) -> String {
    format!(
        "[server]\nlisten = \"{listen}\"\n[rooms]\ndefault_layout = \"{layout}\"\ndefault_tier = \"test\"\n\
         [tiers.test]\nwidth = 640\nheight = 360\nfps = {fps}\nbitrate_kbps = 800\ncodec = \"vp8\"\n\
         [network]\nudp_port = 0\ntcp_port = 0\n"
    )
}

async fn json(base: &str, path: &str) -> serde_json::Value {
    let (status, body) = http_get(base, path).await;
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

async fn poll(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    for _ in 0..60 {
        if ok().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_layout_reaches_a_live_room_and_a_bad_file_is_refused() {
    let (_, list) = fixtures();
    let dir = scratch("reload");
    let path = dir.join("tessera.toml");
    std::fs::write(&path, config("grid", 15, "127.0.0.1:0")).unwrap();
    let server = tessera_server::Server::new(Config::load(&path).unwrap()).unwrap();
    server.watch_config(path.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server.clone().serve(listener, std::future::pending()));

    let a = Client::join(
        &base,
        "reload-room",
        "Ann",
        load_media(&list[0], VideoCodec::Vp8),
    )
    .await
    .unwrap();
    let b = Client::join(
        &base,
        "reload-room",
        "Bo",
        load_media(&list[1], VideoCodec::Vp8),
    )
    .await
    .unwrap();
    poll("composite at both", async || {
        [&a, &b]
            .iter()
            .all(|c| c.received.lock().unwrap().video.len() > 15)
    })
    .await;
    let before = json(&base, "/api/rooms/reload-room").await;
    assert_eq!(before["layout"], "grid");
    let (_, png_before) = http_get(&base, "/api/rooms/reload-room/snapshot.png").await;
    let frames_before = a.received.lock().unwrap().video.len();

    // A new layout, applied to the running room.
    std::fs::write(&path, config("presenter", 15, "127.0.0.1:0")).unwrap();
    poll("the presenter layout in the room", async || {
        let r = json(&base, "/api/rooms/reload-room").await;
        r["layout"] == "presenter" && r["tiers"][0]["tiles"][0]["w"].as_u64().unwrap_or(0) > 400
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, png_after) = http_get(&base, "/api/rooms/reload-room/snapshot.png").await;
    // The presenter layout's big tile shows the active speaker: whoever the API says is
    // in it, the snapshot must show that participant's colour there.
    let r = json(&base, "/api/rooms/reload-room").await;
    let big_tile = r["tiers"][0]["tiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["w"].as_u64().unwrap_or(0) > 400)
        .cloned()
        .expect("a big tile");
    let n = |k: &str| big_tile[k].as_u64().unwrap() as u32;
    let want = if big_tile["id"] == a.id.as_str() {
        list[0].rgb
    } else {
        list[1].rgb
    };
    let img = image::load_from_memory(&png_after).unwrap().to_rgb8();
    let big = img.get_pixel(n("x") + n("w") / 4, n("y") + n("h") / 3).0;
    let d: i32 = (0..3).map(|i| (big[i] as i32 - want[i] as i32).abs()).sum();
    assert!(
        d < 60,
        "the presenter tile shows {}: {big:?} vs {want:?}",
        big_tile["id"]
    );
    assert_ne!(png_before, png_after, "the snapshot changed");
    let after = json(&base, "/api/rooms/reload-room").await;
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(&before),
        ids(&after),
        "the same participants, nobody reconnected"
    );
    assert!(
        a.received.lock().unwrap().video.len() > frames_before,
        "video kept flowing"
    );
    let told = a.received.lock().unwrap().messages.iter().any(|m| {
        matches!(m, tessera_proto::ServerMessage::LayoutChanged { layout } if layout == "presenter")
    });
    assert!(told, "participants are told of the new layout");

    // A bad file is refused with its problem and the running config kept.
    std::fs::write(&path, config("grid", 0, "127.0.0.1:0")).unwrap();
    poll("the bad file to be rejected", async || {
        json(&base, "/api/status").await["rejected"] == 1
    })
    .await;
    let st = json(&base, "/api/status").await;
    let err = st["last_error"].as_str().unwrap_or("");
    assert!(err.contains("tiers.test.fps = 0: must be 1..=60"), "{err}");
    assert_eq!(
        json(&base, "/api/rooms/reload-room").await["layout"],
        "presenter"
    );

    // A listen change cannot apply live: reported, the rest applied.
    std::fs::write(&path, config("grid", 15, "127.0.0.1:9")).unwrap();
    poll("the listen change to be reported", async || {
        let st = json(&base, "/api/status").await;
        st["restart_needed"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "server.listen"))
    })
    .await;
    poll("the grid layout back", async || {
        json(&base, "/api/rooms/reload-room").await["layout"] == "grid"
    })
    .await;
    a.leave().await;
    b.leave().await;
}
