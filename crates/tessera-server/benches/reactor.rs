//! The media plane per RTP packet, with real SRTP: one participant's `Conn` (the connection
//! the reactor drives) joined to a sans-IO `rtc` client in memory, no sockets.
//!
//! - `rtp_in/camera_vp8_1100B`: a camera packet arriving: SRTP unprotect, interceptors
//!   (NACK, reports, TWCC), `VideoIngest` (payload checks, reassembly) and the command to the
//!   room.
//! - `rtp_out/mix_opus_120B`: one Opus packet of the mix going out: stamping, interceptors,
//!   SRTP protect.
//! - `rtp_out/composite_vp8_12kB`: a composite frame of 12 kB going out, per packet:
//!   packetizing, stamping, pacing, interceptors, SRTP protect.
//!
//! Run with `cargo bench -p tessera-server --features test-kit --bench reactor`
//! (`make bench`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tessera_codec::EncodedVideo;
use tessera_server::client::loopback::Loopback;

fn rtp_in(c: &mut Criterion) {
    let mut pair = Loopback::connect().expect("the loopback connects");
    let mut group = c.benchmark_group("rtp_in");
    group.throughput(Throughput::Elements(1));
    group.bench_function("camera_vp8_1100B", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                // Made ahead (not timed), in batches: SRTP refuses a replayed packet.
                let n = left.min(2000);
                let batch = pair.client_video(n, 1100);
                let start = Instant::now();
                for d in batch {
                    pair.server_read(d);
                }
                spent += start.elapsed();
                left -= n;
                pair.advance(Duration::from_millis(100));
                pair.pump();
            }
            spent
        })
    });
    group.finish();
}

fn rtp_out(c: &mut Criterion) {
    let mut pair = Loopback::connect().expect("the loopback connects");
    let mut group = c.benchmark_group("rtp_out");
    group.throughput(Throughput::Elements(1));
    let mut pts = 0u64;
    group.bench_function("mix_opus_120B", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut sent = 0;
            let mut left = iters;
            while left > 0 {
                // A second of audio at a time, then both ends catch up (not timed): the
                // client's ICE and RTCP keep the connection alive on the moving clock.
                let n = left.min(50);
                let start = Instant::now();
                for _ in 0..n {
                    pts += 960;
                    sent += pair.server_audio(vec![0x55; 120], pts);
                }
                spent += start.elapsed();
                left -= n;
                pair.pump();
            }
            assert!(
                sent as u64 >= iters,
                "every Opus packet went out ({sent} of {iters})"
            );
            spent
        })
    });
    let mut pts_90k = 0u64;
    group.bench_function("composite_vp8_12kB", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut packets = 0u64;
            while packets < iters {
                pts_90k += 6000;
                let mut data = vec![0x5a; 12_000];
                // A VP8 keyframe's frame tag (show_frame, keyframe bit clear).
                data[0] = 0x10;
                let frame = Arc::new(EncodedVideo {
                    data,
                    keyframe: true,
                    pts_90k,
                });
                let start = Instant::now();
                let n = pair.server_video(frame) as u64;
                spent += start.elapsed();
                assert!(n > 0, "the connection went down");
                packets += n;
                pair.pump();
            }
            // Per packet: scale the frames' time to the packets criterion asked for.
            spent.mul_f64(iters as f64 / packets as f64)
        })
    });
    group.finish();
}

criterion_group!(benches, rtp_in, rtp_out);
criterion_main!(benches);
