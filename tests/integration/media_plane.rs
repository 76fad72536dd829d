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

/// Where a packet's RTP timestamp lies on the sender's wall clock, from the stream's last
/// sender report before it (as a browser maps it to line audio up with video), in seconds
/// since the Unix epoch.
fn sender_time(srs: &[(u64, u32)], ts: u32, clock: f64) -> Option<f64> {
    let &(ntp, rtp) = srs.last()?;
    let ntp_secs = (ntp >> 32) as f64 + (ntp & 0xffff_ffff) as f64 / 4_294_967_296.0;
    let unix = ntp_secs - 2_208_988_800.0;
    Some(unix + ts.wrapping_sub(rtp) as i32 as f64 / clock)
}

/// Per stream: the median of (where the sender reports put each packet's timestamp on its
/// clock) minus (when it arrived here), over packets after the stream's first report.
fn sender_minus_arrival(
    timing: &tessera_server::client::Timing,
    ssrc: u32,
    clock: f64,
) -> Option<f64> {
    let mut diffs = Vec::new();
    for &(_, ts, at) in timing.rtp.iter().filter(|(s, _, _)| *s == ssrc) {
        // Sender reports are not ordered with RTP in `Timing`; any of this stream's reports
        // maps the timestamp, since the mapping is one line.
        let srs: Vec<(u64, u32)> = timing
            .sender_reports
            .iter()
            .filter(|(x, _, _)| *x == ssrc)
            .map(|&(_, n, r)| (n, r))
            .collect();
        let sent = sender_time(&srs, ts, clock)?;
        let arrived = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64();
        diffs.push(sent - arrived);
    }
    diffs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    diffs.get(diffs.len() / 2).copied()
}

/// RTCP sender reports map the composite's audio and video to one wall clock (what browsers
/// use for lip sync), and RTP timestamps follow the engine's clock: a video frame's
/// timestamp advances 90000 / fps per tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_reports_put_audio_and_video_on_one_clock() {
    let (_, list) = fixtures();
    let base = crate::live::start_server_text(
        "[bandwidth]\nenabled = false\n[rooms]\ndefault_tier = \"test\"\n\
         [tiers.test]\nwidth = 320\nheight = 180\nfps = 10\nbitrate_kbps = 300\ncodec = \"vp8\"\n",
    )
    .await;
    let a = Client::join(&base, "sync", "A", load_media(&list[0], VideoCodec::Vp8))
        .await
        .unwrap();
    let b = Client::join(&base, "sync", "B", load_media(&list[1], VideoCodec::Vp8))
        .await
        .unwrap();
    // Wait for at least three sender reports on each of A's streams, with media after them.
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    let (audio, video) = loop {
        let (audio, video) = {
            let r = a.received.lock().unwrap();
            (r.audio_ssrc, r.video_ssrc)
        };
        if let (Some(au), Some(vi)) = (audio, video) {
            let t = a.timing.lock().unwrap();
            let srs = |ssrc| t.sender_reports.iter().filter(|s| s.0 == ssrc).count();
            if srs(au) >= 3 && srs(vi) >= 3 {
                break (au, vi);
            }
        }
        assert!(
            tokio::time::Instant::now() < until,
            "no three sender reports on each stream within 60 s: {:?}",
            a.timing.lock().unwrap().sender_reports
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let t = a.timing.lock().unwrap();
    let da = sender_minus_arrival(&t, audio, 48_000.0).expect("audio mapped");
    let dv = sender_minus_arrival(&t, video, 90_000.0).expect("video mapped");
    println!(
        "sender report time minus arrival: audio {:.1} ms, video {:.1} ms",
        da * 1000.0,
        dv * 1000.0
    );
    // On loopback a packet arrives as it is sent, so on one wall clock both medians are
    // near 0 (measured: within 1 ms); a stream whose reports drift from its timestamps (a
    // timestamp clock off its rate, reports from another clock) lands seconds away.
    assert!(
        (da - dv).abs() < 0.1,
        "audio maps {:.1} ms, video {:.1} ms from their arrival: not one clock",
        da * 1000.0,
        dv * 1000.0
    );
    // Video frames step by 90000 / fps (10 fps: 9000) or whole multiples of it.
    let steps: Vec<u32> = t
        .rtp
        .iter()
        .filter(|(s, _, _)| *s == video)
        .map(|(_, ts, _)| *ts)
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1].wrapping_sub(w[0]))
        .collect();
    assert!(steps.len() >= 20, "{} video timestamps", steps.len());
    let odd: Vec<u32> = steps.iter().copied().filter(|s| s % 9000 != 0).collect();
    assert!(
        odd.len() * 10 <= steps.len(),
        "video timestamps not on the 10 fps tick: {odd:?} of {steps:?}"
    );
    drop(t);
    drop(b);
}

/// The reactor bench's loopback (a sans-IO client joined in memory to a real `Conn`) comes
/// up through ICE and DTLS, and SRTP flows both ways: the bench measures something real.
#[test]
fn the_bench_loopback_connects_and_carries_srtp_both_ways() {
    use std::sync::Arc;
    use tessera_codec::EncodedVideo;
    use tessera_server::client::loopback::Loopback;

    let mut pair = Loopback::connect().expect("ICE and DTLS complete in memory");
    assert_eq!(
        pair.server_audio(vec![0x55; 120], 960),
        1,
        "one Opus packet, one datagram"
    );
    let mut data = vec![0x5a; 12_000];
    data[0] = 0x10;
    let frame = Arc::new(EncodedVideo {
        data,
        keyframe: true,
        pts_90k: 6000,
    });
    let sent = pair.server_video(frame);
    assert!(
        sent >= 10,
        "a 12 kB frame goes out in 10 packets or more: {sent}"
    );
    let datagrams = pair.client_video(5, 1100);
    assert_eq!(datagrams.len(), 5, "the client protects each camera packet");
    for d in datagrams {
        pair.server_read(d);
    }
}
