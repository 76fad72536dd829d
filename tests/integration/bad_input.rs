//! Bad signalling input gets an error reply naming what was wrong, never a panic, and the
//! room next door keeps producing its composite.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tessera_proto::{parse_server, ErrorCode, ServerMessage};
use tessera_server::client::Client;
use tessera_types::VideoCodec;
use tokio_tungstenite::tungstenite::Message;

use crate::fixtures;
use crate::live::{load_media, start_server};

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn reply(ws: &mut Ws, send: Message) -> ServerMessage {
    ws.send(send).await.unwrap();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a reply in time")
            .expect("socket open")
            .unwrap();
        if let Message::Text(t) = m {
            let msg = parse_server(&t).unwrap();
            // Events about others may interleave; we want the answer to what we sent.
            if !matches!(
                msg,
                ServerMessage::ParticipantJoined { .. } | ServerMessage::ActiveSpeaker { .. }
            ) {
                return msg;
            }
        }
    }
}

pub fn error_code(m: &ServerMessage) -> (ErrorCode, String) {
    match m {
        ServerMessage::Error { code, reason, .. } => (*code, reason.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signalling_gets_error_replies_and_the_room_keeps_going() {
    let (_, list) = fixtures();
    let base = start_server("").await;
    let a = Client::join(
        &base,
        "steady-room",
        "Ann",
        load_media(&list[0], VideoCodec::Vp8),
    )
    .await
    .unwrap();

    let url = format!("{}/ws", base.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let cases: Vec<(Message, ErrorCode, &str)> = vec![
        (
            Message::text("{not json"),
            ErrorCode::BadMessage,
            "bad message",
        ),
        (
            Message::text(r#"{"type":"dance"}"#),
            ErrorCode::BadMessage,
            "unknown variant `dance`",
        ),
        (
            Message::text(r#"{"type":"join","room":"r"}"#),
            ErrorCode::BadMessage,
            "missing field `name`",
        ),
        (
            Message::binary(vec![0u8, 1, 2]),
            ErrorCode::BadMessage,
            "binary",
        ),
        (
            Message::text(r#"{"type":"offer","sdp":"v=0"}"#),
            ErrorCode::BadState,
            "join before offer",
        ),
        (
            Message::text(r#"{"type":"join","room":"","name":"Bo"}"#),
            ErrorCode::BadRequest,
            "room name",
        ),
        (
            Message::text(format!(
                r#"{{"type":"join","room":"r","name":"{}"}}"#,
                "x".repeat(65)
            )),
            ErrorCode::BadRequest,
            "1 to 64 characters",
        ),
    ];
    for (msg, want, words) in cases {
        let shown = format!("{msg:?}");
        let (code, reason) = error_code(&reply(&mut ws, msg).await);
        assert_eq!(code, want, "{shown}: {reason}");
        assert!(
            reason.contains(words),
            "{shown}: {reason:?} lacks {words:?}"
        );
    }
    // Joined, then a garbage offer and a second join.
    let joined = reply(
        &mut ws,
        Message::text(r#"{"type":"join","room":"steady-room","name":"Bo"}"#),
    )
    .await;
    assert!(matches!(joined, ServerMessage::Joined { .. }), "{joined:?}");
    let (code, reason) =
        error_code(&reply(&mut ws, Message::text(r#"{"type":"offer","sdp":"hello"}"#)).await);
    assert_eq!(code, ErrorCode::BadSdp, "{reason}");
    let (code, reason) = error_code(
        &reply(&mut ws, Message::text("{\"type\":\"offer\",\"sdp\":\"v=0\\r\\nm=video 9 UDP/TLS/RTP/SAVPF 35\\r\\na=rtpmap:35 AV1/90000\\r\\n\"}")).await,
    );
    assert_eq!(code, ErrorCode::BadSdp, "{reason}");
    assert!(reason.contains("VP8") && reason.contains("AV1"), "{reason}");
    let (code, _) = error_code(
        &reply(
            &mut ws,
            Message::text(r#"{"type":"join","room":"x","name":"Bo"}"#),
        )
        .await,
    );
    assert_eq!(code, ErrorCode::BadState);
    assert!(matches!(
        reply(&mut ws, Message::text(r#"{"type":"ping"}"#)).await,
        ServerMessage::Pong
    ));

    // Meanwhile Ann's composite never stopped.
    let before = a.received.lock().unwrap().video.len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        a.received.lock().unwrap().video.len() > before,
        "the composite kept flowing"
    );
    a.leave().await;
}
