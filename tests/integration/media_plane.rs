//! The media plane as an operator sees it: every participant's media on one UDP socket per
//! host address, whatever the number of rooms and participants.

use std::collections::HashSet;
use std::time::Duration;

use tessera_server::client::Client;
use tessera_types::VideoCodec;

use crate::churn::metric;
use crate::live::load_media;
use crate::security::spawn_serve;
use crate::{fixtures, scratch};

/// Socket inodes of process `pid`'s open files.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().to_string();
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// Inodes of every UDP socket on the machine (IPv4 and IPv6), by the kernel's tables.
fn udp_inodes() -> HashSet<u64> {
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(9)?.parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_rooms_of_four_share_one_udp_socket() {
    let (_, list) = fixtures();
    let dir = scratch("one-port");
    let cfg = dir.join("t.toml");
    std::fs::write(
        &cfg,
        "[network]\nhost_ips = [\"127.0.0.1\"]\n[bandwidth]\nenabled = false\n[rooms]\ndefault_tier = \"test\"\n\
         [tiers.test]\nwidth = 320\nheight = 180\nfps = 10\nbitrate_kbps = 300\ncodec = \"vp8\"\n",
    )
    .unwrap();
    let (mut child, base, _log) = spawn_serve(&cfg).await;
    let pid = child.id().unwrap();
    let mut clients = Vec::new();
    for room in 0..3 {
        for p in 0..4 {
            // One codec: a client that offers only H.264 gets its own tier variant.
            let media = load_media(&list[p % list.len()], VideoCodec::Vp8);
            let c = Client::join(&base, &format!("room{room}"), &format!("P{p}"), media)
                .await
                .unwrap();
            clients.push(c);
        }
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    while clients
        .iter()
        .any(|c| c.received.lock().unwrap().video.is_empty())
    {
        assert!(
            tokio::time::Instant::now() < until,
            "not every participant got the composite"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let udp: HashSet<u64> = socket_inodes(pid)
        .intersection(&udp_inodes())
        .copied()
        .collect();
    assert_eq!(
        udp.len(),
        1,
        "12 participants in 3 rooms: one UDP socket on the one host address"
    );
    assert_eq!(metric(&base, "tessera_media_udp_sockets").await, 1.0);
    assert_eq!(metric(&base, "tessera_media_connections").await, 12.0);
    // From now on every tier frame goes to four receivers, packetized once.
    let packetized0 = metric(&base, "tessera_media_frames_packetized_total").await;
    let reused0 = metric(&base, "tessera_media_frames_reused_total").await;
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut packetized = packetized0;
    while packetized < packetized0 + 30.0 {
        assert!(
            tokio::time::Instant::now() < until,
            "the composites stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        packetized = metric(&base, "tessera_media_frames_packetized_total").await;
    }
    let reused = metric(&base, "tessera_media_frames_reused_total").await;
    assert!(
        reused - reused0 >= 2.0 * (packetized - packetized0),
        "four receivers per tier: {} packetized, {} reused",
        packetized - packetized0,
        reused - reused0
    );
    for c in clients {
        c.leave().await;
    }
    let _ = child.kill().await;
}
