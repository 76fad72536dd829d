//! 200 participants join a room one after another, get media flowing both ways and leave
//! again; the server process's threads, tokio tasks and memory must come back to where
//! they were, and the room must still be producing its composite.

use std::time::Duration;

use tessera_server::client::Client;
use tessera_types::VideoCodec;

use crate::live::{http_get, load_media};
use crate::security::spawn_serve;
use crate::{fixtures, scratch};

const CYCLES: usize = 200;

/// (VmRSS in KiB, threads) of process `pid`.
fn proc_status(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

/// A metric without labels from the server's `/metrics`.
pub(crate) async fn metric(base: &str, name: &str) -> f64 {
    let (_, body) = http_get(base, "/metrics").await;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Joins, waits until composite frames arrive, leaves.
async fn cycle(base: &str, name: &str, media: tessera_server::client::Media) {
    let c = Client::join(base, "churn", name, media).await.unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while c.received.lock().unwrap().video.is_empty() {
        assert!(
            tokio::time::Instant::now() < until,
            "{name} got no composite frame"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.leave().await;
}

/// Waits until the room lists exactly `n` participants.
async fn settle(base: &str, n: usize) {
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http_get(base, "/api/rooms/churn").await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if v["participants"].as_array().map(Vec::len) == Some(n) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "room never got to {n}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // PeerConnection driver tasks end a moment after close.
    tokio::time::sleep(Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_joins_and_leaves_leave_nothing_behind() {
    let (_, list) = fixtures();
    let dir = scratch("churn");
    let cfg = dir.join("t.toml");
    std::fs::write(
        &cfg,
        "[rooms]\ndefault_tier = \"test\"\n[tiers.test]\nwidth = 320\nheight = 180\nfps = 15\nbitrate_kbps = 300\ncodec = \"vp8\"\n[limits]\njoins_per_minute_per_ip = 100000\n",
    )
    .unwrap();
    let (mut child, base, _log) = spawn_serve(&cfg).await;
    let pid = child.id().unwrap();
    // One participant stays throughout, so the room (and its thread) lives on.
    let anchor = Client::join(
        &base,
        "churn",
        "Anchor",
        load_media(&list[0], VideoCodec::Vp8),
    )
    .await
    .unwrap();
    // Warm up with both codecs, so first-use allocations (codec tables, a tier in the
    // other codec) are in the baseline.
    let codec = |i: usize| {
        if i.is_multiple_of(2) {
            VideoCodec::Vp8
        } else {
            VideoCodec::H264
        }
    };
    for i in 0..20 {
        cycle(
            &base,
            &format!("warm{i}"),
            load_media(&list[1 + i % 3], codec(i)),
        )
        .await;
    }
    settle(&base, 1).await;
    let (rss0, threads0) = proc_status(pid);
    let tasks0 = metric(&base, "tessera_tokio_tasks").await;
    for i in 0..CYCLES {
        let codec = if i % 2 == 0 {
            VideoCodec::Vp8
        } else {
            VideoCodec::H264
        };
        cycle(&base, &format!("p{i}"), load_media(&list[1 + i % 3], codec)).await;
        if i % 50 == 49 {
            eprintln!(
                "churn: after {} cycles RSS {} MiB",
                i + 1,
                proc_status(pid).0 / 1024
            );
        }
    }
    settle(&base, 1).await;
    let (rss1, threads1) = proc_status(pid);
    let tasks1 = metric(&base, "tessera_tokio_tasks").await;
    eprintln!(
        "churn: {CYCLES} cycles; RSS {} -> {} MiB, threads {threads0} -> {threads1}, tokio tasks {tasks0} -> {tasks1}",
        rss0 / 1024,
        rss1 / 1024
    );
    assert_eq!(threads1, threads0, "threads leaked");
    assert_eq!(tasks1, tasks0, "tokio tasks leaked");
    // Allocator caches may keep a little; a leak of even 100 KiB per cycle would show.
    assert!(
        rss1 < rss0 + 20 * 1024,
        "RSS grew from {rss0} to {rss1} KiB over {CYCLES} cycles"
    );
    // The room is intact: the anchor still receives the composite.
    let before = anchor.received.lock().unwrap().video.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(anchor.received.lock().unwrap().video.len() > before);
    anchor.leave().await;
    let _ = child.kill().await;
}
