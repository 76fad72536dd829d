//! Join tokens, the admin scope of a token, limits with their errors and metrics, HTTPS, and
//! graceful shutdown, against the real server.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tessera_proto::{ErrorCode, ServerMessage};
use tessera_server::auth::{self, Claims, Perm};
use tessera_server::client::Client;
use tessera_types::VideoCodec;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::bad_input::{error_code, reply, Ws};
use crate::live::{http, http_get, http_with, load_media, start_server};
use crate::{fixtures, scratch, tessera};

const SECRET: &str = "tessera-test-secret-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789";

fn token(room: &str, name: Option<&str>, perms: &[Perm], ttl: i64) -> String {
    let claims = Claims {
        room: room.into(),
        name: name.map(String::from),
        exp: (auth::now_unix() as i64 + ttl) as u64,
        perms: perms.to_vec(),
    };
    auth::mint(SECRET, &claims)
}

async fn ws(base: &str) -> Ws {
    let url = format!("{}/ws", base.replacen("http", "ws", 1));
    tokio_tungstenite::connect_async(&url).await.unwrap().0
}

fn join(room: &str, name: &str, token: Option<&str>) -> Message {
    let mut v = serde_json::json!({ "type": "join", "room": room, "name": name });
    if let Some(t) = token {
        v["token"] = t.into();
    }
    Message::text(v.to_string())
}

/// POST an SDP offer (WHIP/WHEP): (status, body).
async fn post_sdp(base: &str, path: &str, bearer: Option<&str>, sdp: &str) -> (u16, String) {
    let (status, body) =
        http_with(base, "POST", path, bearer, Some(("application/sdp", sdp))).await;
    (status, String::from_utf8_lossy(&body).to_string())
}

/// The value of `tessera_limit_refusals_total{limit="..."}` on `/metrics`.
async fn refusals(base: &str, limit: &str) -> u64 {
    let (_, body) = http_get(base, "/metrics").await;
    let key = format!("tessera_limit_refusals_total{{limit=\"{limit}\"}} ");
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(&key).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {key} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_need_a_valid_token_for_their_room_and_name() {
    let (_, list) = fixtures();
    let base = start_server(&format!(
        "[auth]\ntoken_secret = \"{SECRET}\"\nadmin_token = \"{ADMIN}\"\n"
    ))
    .await;
    let pubsub = [Perm::Publish, Perm::Subscribe];
    let cases: Vec<(Option<String>, ErrorCode, &str)> = vec![
        (None, ErrorCode::Unauthorized, "needs a join token"),
        (
            Some("garbage".into()),
            ErrorCode::Unauthorized,
            "malformed token",
        ),
        (
            Some(auth::mint(
                "another-secret-0123456789abcdef-xyz",
                &Claims {
                    room: "team".into(),
                    name: None,
                    exp: auth::now_unix() + 60,
                    perms: pubsub.to_vec(),
                },
            )),
            ErrorCode::Unauthorized,
            "signature does not match",
        ),
        (
            Some(token("team", Some("Ann"), &pubsub, -5)),
            ErrorCode::Unauthorized,
            "expired",
        ),
        (
            Some(token("other", Some("Ann"), &pubsub, 60)),
            ErrorCode::Forbidden,
            "for room \"other\"",
        ),
        (
            Some(token("team", Some("Bo"), &pubsub, 60)),
            ErrorCode::Forbidden,
            "for participant \"Bo\"",
        ),
        (
            Some(token("team", None, &[Perm::Admin], 60)),
            ErrorCode::Forbidden,
            "neither publish nor subscribe",
        ),
    ];
    let mut sock = ws(&base).await;
    for (t, code, words) in &cases {
        let m = reply(&mut sock, join("team", "Ann", t.as_deref())).await;
        let (c, reason) = error_code(&m);
        assert_eq!(c, *code, "{reason}");
        assert!(reason.contains(words), "{reason:?} should say {words:?}");
        assert!(
            t.as_deref().is_none_or(|t| !reason.contains(t)),
            "the reason must not echo the token"
        );
    }
    assert_eq!(refusals(&base, "token").await, cases.len() as u64);

    // A good token joins; a `*` token works for any room and name.
    let good = token("team", Some("Ann"), &pubsub, 60);
    let m = reply(&mut sock, join("team", "Ann", Some(&good))).await;
    assert!(matches!(m, ServerMessage::Joined { .. }), "{m:?}");
    drop(sock);

    // A real participant with a token sends and receives media.
    let mut media = load_media(&list[0], VideoCodec::Vp8);
    media.token = Some(token("*", None, &pubsub, 60));
    let a = Client::join(&base, "team", "Cy", media).await.unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while a.received.lock().unwrap().video.len() < 5 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(a.received.lock().unwrap().video.len() >= 5);

    // A subscribe-only token joins but its media is ignored: no tile, no decoded frames.
    let mut media = load_media(&list[1], VideoCodec::Vp8);
    media.token = Some(token("team", Some("Viewer"), &[Perm::Subscribe], 60));
    let v = Client::join(&base, "team", "Viewer", media).await.unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while v.received.lock().unwrap().video.len() < 5 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        v.received.lock().unwrap().video.len() >= 5,
        "subscribe receives"
    );
    let (_, body) = http_get(&base, "/api/rooms/team").await;
    let info: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let viewer = info["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Viewer")
        .expect("viewer listed")
        .clone();
    assert_eq!(
        viewer["video_frames_in"], 0,
        "a subscribe-only token publishes nothing: {viewer}"
    );

    // WHIP and WHEP: no token 401, a token without the permission 403, a good one gets
    // past auth to the SDP check.
    let sdp = "v=0\r\n";
    let (st, _) = post_sdp(&base, "/whip/team?name=Pub", None, sdp).await;
    assert_eq!(st, 401);
    let sub_only = token("team", None, &[Perm::Subscribe], 60);
    let (st, body) = post_sdp(&base, "/whip/team?name=Pub", Some(&sub_only), sdp).await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("does not allow publish"), "{body}");
    let (st, body) = post_sdp(&base, "/whep/team", Some(&sub_only), sdp).await;
    assert_eq!(st, 400, "past auth, the SDP is refused: {body}");
    let pub_only = token("team", None, &[Perm::Publish], 60);
    let (st, _) = post_sdp(&base, "/whep/team", Some(&pub_only), sdp).await;
    assert_eq!(st, 403);

    // A token with `admin` administers its own room only; the admin token all of them.
    let room_admin = token("team", None, &[Perm::Admin], 60);
    let (st, body) = http(&base, "GET", "/api/admin/rooms", Some(&room_admin), None).await;
    assert_eq!(st, 200);
    let rooms: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(rooms.as_array().unwrap().len(), 1);
    let other_admin = token("other", None, &[Perm::Admin], 60);
    let (st, _) = http(
        &base,
        "POST",
        "/api/admin/rooms/team/layout",
        Some(&other_admin),
        Some(r#"{"layout":"speaker"}"#),
    )
    .await;
    assert_eq!(st, 403);
    let (st, _) = http(
        &base,
        "POST",
        "/api/admin/rooms/team/layout",
        Some(&room_admin),
        Some(r#"{"layout":"speaker"}"#),
    )
    .await;
    assert_eq!(st, 200);
    let no_admin = token("team", None, &pubsub, 60);
    let (st, _) = http(&base, "GET", "/api/admin/rooms", Some(&no_admin), None).await;
    assert_eq!(st, 403);
    v.leave().await;
    a.leave().await;
}

#[test]
fn the_token_command_mints_tokens_the_server_accepts() {
    let dir = scratch("token-command");
    let cfg = dir.join("t.toml");
    std::fs::write(&cfg, format!("[auth]\ntoken_secret = \"{SECRET}\"\n")).unwrap();
    let out = tessera()
        .args(["token", "--config"])
        .arg(&cfg)
        .args([
            "--room",
            "r1",
            "--name",
            "Ann",
            "--ttl",
            "2h",
            "--perms",
            "publish,admin",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = String::from_utf8(out.stdout).unwrap();
    let c = auth::verify(SECRET, t.trim(), auth::now_unix()).unwrap();
    assert_eq!(c.room, "r1");
    assert_eq!(c.name.as_deref(), Some("Ann"));
    assert_eq!(c.perms, vec![Perm::Publish, Perm::Admin]);
    let left = c.exp - auth::now_unix();
    assert!((7100..=7200).contains(&left), "{left}");

    let out = tessera()
        .args(["token", "--config"])
        .arg(&cfg)
        .args(["--room", "r1", "--perms", "publish,fly"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown permission \"fly\""));

    std::fs::write(&cfg, "").unwrap();
    let out = tessera()
        .args(["token", "--config"])
        .arg(&cfg)
        .args(["--room", "r1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.token_secret is \"\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_with_an_error_and_count_in_metrics() {
    let base = start_server(
        "[limits]\nmax_participants_total = 2\nws_max_message_bytes = 4096\nws_messages_per_sec = 1\nws_message_burst = 5\nsdp_max_bytes = 1024\njoins_per_minute_per_ip = 4\n",
    )
    .await;
    // Message rate: a burst of 5, then refusals; a flood past twice the burst is cut off.
    let mut flood = ws(&base).await;
    for _ in 0..5 {
        let m = reply(&mut flood, Message::text(r#"{"type":"ping"}"#)).await;
        assert_eq!(m, ServerMessage::Pong);
    }
    let m = reply(&mut flood, Message::text(r#"{"type":"ping"}"#)).await;
    let (code, reason) = error_code(&m);
    assert_eq!(code, ErrorCode::RateLimited, "{reason}");
    assert!(reason.contains("limits.ws_messages_per_sec"), "{reason}");
    // One message at a time, each reply read before the next: a client that writes ahead
    // leaves unread messages in the server's socket when it closes, the kernel answers them
    // with a reset, and the reset can discard the fatal error before it is read.
    let mut fatal = false;
    for _ in 0..30 {
        if flood
            .send(Message::text(r#"{"type":"ping"}"#))
            .await
            .is_err()
        {
            break;
        }
        let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_secs(5), flood.next()).await
        else {
            break;
        };
        if let Ok(ServerMessage::Error {
            fatal: true, code, ..
        }) = tessera_proto::parse_server(&t)
        {
            assert_eq!(code, ErrorCode::RateLimited);
            fatal = true;
            break;
        }
    }
    assert!(
        fatal,
        "a flooding client is disconnected with a fatal rate_limited"
    );
    assert!(refusals(&base, "ws_message_rate").await >= 11);

    // Message size: a message over ws_max_message_bytes closes the socket.
    let mut big = ws(&base).await;
    let huge = format!(r#"{{"type":"offer","sdp":"{}"}}"#, "x".repeat(5000));
    let _ = big.send(Message::text(huge)).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match big.next().await {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("the socket closes");
    assert!(closed.is_none_or(|c| c == 1009), "close code {closed:?}");
    assert_eq!(refusals(&base, "ws_message_size").await, 1);

    // SDP size, server-wide participants and joins per IP.
    let mut a = ws(&base).await;
    let m = reply(&mut a, join("r1", "Ann", None)).await;
    assert!(matches!(m, ServerMessage::Joined { .. }), "{m:?}");
    let offer = format!("v=0\r\n{}", "a=x\r\n".repeat(300));
    let m = reply(
        &mut a,
        Message::text(serde_json::json!({"type":"offer","sdp":offer}).to_string()),
    )
    .await;
    let (code, reason) = error_code(&m);
    assert_eq!(code, ErrorCode::BadSdp);
    assert!(reason.contains("limits.sdp_max_bytes = 1024"), "{reason}");
    assert_eq!(refusals(&base, "sdp_size").await, 1);
    let (st, body) = post_sdp(&base, "/whip/r1?name=P", None, &offer).await;
    assert_eq!(st, 413, "{body}");

    let mut b = ws(&base).await;
    let m = reply(&mut b, join("r2", "Bo", None)).await;
    assert!(matches!(m, ServerMessage::Joined { .. }), "{m:?}");
    let mut c = ws(&base).await;
    let m = reply(&mut c, join("r3", "Cy", None)).await;
    let (code, reason) = error_code(&m);
    assert_eq!(code, ErrorCode::Full);
    assert!(reason.contains("limits.max_participants_total"), "{reason}");
    assert_eq!(refusals(&base, "server_participants").await, 1);
    // Joins so far from 127.0.0.1 this minute: Ann, Bo, the WHIP POST and Cy = 4.
    let m = reply(&mut c, join("r3", "Cy", None)).await;
    let (code, reason) = error_code(&m);
    assert_eq!(code, ErrorCode::RateLimited, "{reason}");
    assert!(
        reason.contains("limits.joins_per_minute_per_ip = 4"),
        "{reason}"
    );
    let (st, _) = post_sdp(&base, "/whep/r1", None, "v=0\r\n").await;
    assert_eq!(st, 429);
    assert_eq!(refusals(&base, "join_rate").await, 2);
}

/// A TLS connection to `addr` that trusts only `root` (DER) and checks the name `127.0.0.1`.
async fn tls_connect(
    addr: &str,
    root: rustls::pki_types::CertificateDer<'static>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
}

/// GET over HTTPS: the whole response as text.
async fn https_get(
    addr: &str,
    root: rustls::pki_types::CertificateDer<'static>,
    path: &str,
) -> String {
    let mut s = tls_connect(addr, root).await.expect("TLS handshake");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf).to_string()
}

async fn serve_tls(cfg_text: &str) -> (Arc<tessera_server::Server>, String) {
    let mut cfg = tessera_config::Config::from_toml(cfg_text, "tls.toml").expect("config");
    cfg.network.udp_port = 0;
    cfg.network.tcp_port = 0;
    let server = tessera_server::Server::new(cfg).expect("server");
    assert_eq!(server.scheme(), "https");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(server.clone().serve(listener, std::future::pending()));
    (server, addr)
}

fn der_of(pem: &str) -> rustls::pki_types::CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_with_a_given_or_a_self_signed_certificate() {
    // A certificate from files, as an operator with a CA-issued one would configure it.
    let dir = scratch("tls-files");
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let (_server, addr) = serve_tls(&format!(
        "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    ))
    .await;
    let resp = https_get(&addr, ck.cert.der().clone(), "/healthz").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("ok\n"), "{resp}");
    // The signalling socket works over TLS too.
    let tls = tls_connect(&addr, ck.cert.der().clone()).await.unwrap();
    let (mut sock, _) = tokio_tungstenite::client_async(format!("wss://{addr}/ws"), tls)
        .await
        .unwrap();
    sock.send(Message::text(r#"{"type":"ping"}"#))
        .await
        .unwrap();
    let m = sock.next().await.unwrap().unwrap();
    assert_eq!(m.to_text().unwrap(), r#"{"type":"pong"}"#);
    // Plain HTTP to the TLS port gets no HTTP answer.
    let (st, _) = tokio::time::timeout(Duration::from_secs(5), async {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        (
            String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"),
            (),
        )
    })
    .await
    .expect("the server closes a non-TLS connection");
    assert!(!st);

    // A missing key file is a clear start-up error.
    let mut cfg = tessera_config::Config::from_toml(
        &format!(
            "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            dir.join("cert.pem").display(),
            dir.join("nope.pem").display()
        ),
        "t.toml",
    )
    .unwrap();
    cfg.network.udp_port = 0;
    cfg.network.tcp_port = 0;
    let err = tessera_server::Server::new(cfg)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.starts_with("server.tls_key = "), "{err}");

    // Self-signed on request: valid for 127.0.0.1, and served at /cert.pem for checking.
    let (server, addr) = serve_tls("[server]\ntls_self_signed = true\n").await;
    let pem = server.self_signed_pem().expect("a generated certificate");
    let resp = https_get(&addr, der_of(&pem), "/cert.pem").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(pem.trim()), "{resp}");
    // The other server's certificate is not trusted for this one.
    assert!(tls_connect(&addr, ck.cert.der().clone()).await.is_err());
}

/// `tessera serve` on a free port with `cfg`: the child, its base URL and its stderr (read
/// to the end once the child exits).
pub async fn spawn_serve(
    cfg: &std::path::Path,
) -> (
    tokio::process::Child,
    String,
    tokio::task::JoinHandle<String>,
) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--udp-port",
            "0",
            "--tcp-port",
            "0",
            "--config",
        ])
        .arg(cfg)
        .env_remove("RUST_LOG")
        // One malloc arena: RSS then shows what the server holds, not how glibc spread
        // it over per-thread arenas (which steps up by megabytes at random).
        .env("MALLOC_ARENA_MAX", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = stdout.next_line().await.unwrap().expect("listening line");
    let base = line.strip_prefix("listening on ").expect(&line).to_string();
    let mut stderr = child.stderr.take().unwrap();
    let log = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    (child, base, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_tells_clients_and_exits_and_secrets_never_reach_the_log() {
    let dir = scratch("sigterm");
    let cfg = dir.join("t.toml");
    std::fs::write(
        &cfg,
        format!("[auth]\ntoken_secret = \"{SECRET}\"\nadmin_token = \"{ADMIN}\"\n[logging]\nlevel = \"debug\"\n"),
    )
    .unwrap();
    let (mut child, base, log) = spawn_serve(&cfg).await;

    let good = token("team", Some("Ann"), &[Perm::Publish, Perm::Subscribe], 60);
    let mut a = ws(&base).await;
    let m = reply(&mut a, join("team", "Ann", Some(&good))).await;
    assert!(matches!(m, ServerMessage::Joined { .. }), "{m:?}");
    let m = reply(&mut a, join("team", "Ann", Some("forged.token"))).await;
    assert_eq!(error_code(&m).0, ErrorCode::BadState);
    let (st, _) = http(&base, "GET", "/api/admin/rooms", Some(ADMIN), None).await;
    assert_eq!(st, 200);
    let (st, _) = post_sdp(&base, "/whip/team?name=Ann", Some(&good), "v=0\r\n").await;
    assert_eq!(st, 400);

    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut told = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(10), a.next()).await {
        if let Message::Text(t) = m {
            if let Ok(ServerMessage::Error { code, fatal, .. }) = tessera_proto::parse_server(&t) {
                told = Some((code, fatal));
            }
        }
    }
    assert_eq!(told, Some((ErrorCode::Shutdown, true)));
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the server exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    let log = log.await.unwrap();
    assert!(log.contains("shutting down"), "{log}");
    for secret in [
        SECRET,
        ADMIN,
        good.as_str(),
        good.split('.').nth(1).unwrap(),
    ] {
        assert!(!log.contains(secret), "the log holds a secret: {secret}");
    }
}
