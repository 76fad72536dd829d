//! Declared rooms, `rooms.auto_create = false` and `rooms.max_rooms` against the server.

use tessera_proto::{ErrorCode, ServerMessage};
use tessera_server::client::{Client, ClientError};
use tessera_types::VideoCodec;

use crate::fixtures;
use crate::live::{http_get, load_media};

fn refusal(r: Result<Client, ClientError>) -> (ErrorCode, String) {
    match r {
        Err(ClientError::Refused(m)) => match *m {
            ServerMessage::Error { code, reason, .. } => (code, reason),
            other => panic!("refused with {other:?}"),
        },
        Err(e) => panic!("failed otherwise: {e}"),
        Ok(_) => panic!("joined"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_rooms_start_with_their_own_settings_and_others_are_refused() {
    let (_, list) = fixtures();
    let extra = "[tiers.small]\nwidth = 320\nheight = 180\nfps = 10\nbitrate_kbps = 200\ncodec = \"vp8\"\n\
        [rooms.declared.boardroom]\nlayout = \"presenter\"\ntier = \"small\"\n[rooms.declared.lab]\n";
    let base = start_server_with_rooms(extra).await;

    let (code, reason) = refusal(
        Client::join(
            &base,
            "elsewhere",
            "Ann",
            load_media(&list[0], VideoCodec::Vp8),
        )
        .await,
    );
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(
        reason.contains("auto_create") && reason.contains("boardroom"),
        "{reason}"
    );

    let a = Client::join(
        &base,
        "boardroom",
        "Ann",
        load_media(&list[0], VideoCodec::Vp8),
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let (_, body) = http_get(&base, "/api/rooms/boardroom").await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["layout"], "presenter");
    assert_eq!(v["participants"][0]["tier"], "small");

    // max_rooms = 1: a second room is refused as full.
    let (code, reason) =
        refusal(Client::join(&base, "lab", "Bo", load_media(&list[1], VideoCodec::Vp8)).await);
    assert_eq!(code, ErrorCode::Full, "{reason}");
    assert!(reason.contains("max_rooms"), "{reason}");
    a.leave().await;
}

async fn start_server_with_rooms(extra: &str) -> String {
    crate::live::start_server_text(&format!(
        "[rooms]\ndefault_tier = \"test\"\nauto_create = false\nmax_rooms = 1\n\
         [tiers.test]\nwidth = 640\nheight = 360\nfps = 15\nbitrate_kbps = 800\ncodec = \"vp8\"\n{extra}"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_never_connects_media_is_removed_after_the_idle_timeout() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let base = crate::live::start_server_text(
        "[rooms]\ndefault_tier = \"test\"\nidle_timeout_secs = 2\n\
         [tiers.test]\nwidth = 640\nheight = 360\nfps = 15\nbitrate_kbps = 800\ncodec = \"vp8\"\n",
    )
    .await;
    let url = format!("{}/ws", base.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.send(Message::text(
        r#"{"type":"join","room":"idle-room","name":"Zed"}"#,
    ))
    .await
    .unwrap();
    let mut got = Vec::new();
    while let Ok(Some(Ok(Message::Text(t)))) =
        tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await
    {
        got.push(tessera_proto::parse_server(&t).unwrap());
        if matches!(got.last(), Some(ServerMessage::Error { .. })) {
            break;
        }
    }
    assert!(
        matches!(got.first(), Some(ServerMessage::Joined { .. })),
        "{got:?}"
    );
    assert!(
        matches!(
            got.last(),
            Some(ServerMessage::Error {
                code: ErrorCode::Timeout,
                fatal: true,
                ..
            })
        ),
        "{got:?}"
    );
    // Its place is given back: the room, empty, is gone.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, _) = http_get(&base, "/api/rooms/idle-room").await;
    assert_eq!(status, 404);
}
