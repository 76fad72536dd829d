//! Bad RTP and media from a real WebRTC peer: garbage, oversized and empty payloads, a
//! frame too large to be real, foreign SSRCs and payload types, a second camera track,
//! truncated and bit-flipped VP8, H.264 and Opus, a resolution change, a codec switch, and
//! jumps in timestamps and sequence numbers. Each is counted (`GET /api/rooms/{room}`) and
//! none stops the room: a viewer keeps decoding the composite, another sender's tile keeps
//! its picture, and the bad sender's tile comes back.
//!
//! The bad senders are raw clients: the test packetizes clips of one flat colour itself and
//! spoils the packets on their way out.

use std::time::{Duration, Instant};

use serde_json::Value;
use tessera_codec::{
    new_video_decoder, new_video_encoder, VideoDecoder, VideoEncoderConfig, VideoFrame,
};
use tessera_container::OggOpusReader;
use tessera_mixer::analysis::goertzel_power;
use tessera_server::client::{packetize, Client, Media, RawTrack, RawTracks, RtpPacket};
use tessera_types::{Rgb, VideoCodec};

use crate::fixtures;
use crate::live::{
    decode_audio, distance, http_get, load_media, room_tiles, start_server_text, tile_colour,
};

/// A small tier keeps the room's encoder cheap.
const CONFIG: &str = r#"
[rooms]
default_tier = "test"
[tiers.test]
width = 320
height = 180
fps = 15
bitrate_kbps = 300
codec = "vp8"
"#;

// Fixture colours (the good sender is p2, green).
const RED: [u8; 3] = [0xd6, 0x28, 0x28];
const BLUE: [u8; 3] = [0x28, 0x50, 0xd6];
const YELLOW: [u8; 3] = [0xe6, 0xd2, 0x28];
const MAGENTA: [u8; 3] = [0xc8, 0x28, 0xc8];

/// The payload type `peer::media_engine` gives Opus: negotiated, but not for video.
const OPUS_PT: u8 = 111;

/// `frames` frames of one flat colour, a keyframe first, at 25 fps.
fn clip(codec: VideoCodec, (width, height): (u32, u32), rgb: [u8; 3], frames: u32) -> Vec<Vec<u8>> {
    let mut enc = new_video_encoder(&VideoEncoderConfig {
        codec,
        width,
        height,
        fps: 25,
        bitrate_bps: 300_000,
        vp8_cpu_used: -8,
        threads: 1,
    })
    .unwrap();
    let colour = Rgb {
        r: rgb[0],
        g: rgb[1],
        b: rgb[2],
    };
    let picture = VideoFrame::filled(width, height, colour.to_yuv());
    (0..frames)
        .filter_map(|k| enc.encode(&picture, k as u64 * 3600, k == 0).unwrap())
        .map(|e| e.data)
        .collect()
}

fn opus_packets(fixture: &str) -> Vec<Vec<u8>> {
    let (dir, _) = fixtures();
    let mut r = OggOpusReader::open(dir.join(format!("{fixture}.ogg"))).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet().unwrap() {
        out.push(p.data);
    }
    out
}

/// xorshift: the same "random" damage on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Flips `count` random bits of `b` at or after `from`.
    fn flip(&mut self, b: &mut [u8], from: usize, count: usize) {
        if b.len() > from {
            for _ in 0..count {
                let at = from + self.below(b.len() - from);
                b[at] ^= 1 << self.below(8);
            }
        }
    }
}

/// The packets one 20 ms tick is about to send, for a test to spoil. Packets without an
/// SSRC of their own get the stream's next sequence number when they go.
#[derive(Default)]
struct Tick {
    video: Vec<RtpPacket>,
    audio: Vec<RtpPacket>,
    second_video: Vec<RtpPacket>,
}

/// A raw sender: a video clip at 25 fps (packetized here, restarted at its keyframe after a
/// PLI) and Opus packets every 20 ms, with its own sequence numbers and timestamps.
struct Sender {
    client: Client,
    codec: VideoCodec,
    /// `None`: the track's own payload type.
    video_pt: Option<u8>,
    clip: Vec<Vec<u8>>,
    frame: usize,
    seq: u16,
    ts: u32,
    opus: Vec<Vec<u8>>,
    opus_at: usize,
    audio_seq: u16,
    audio_ts: u32,
    ticks: u64,
    plis: u64,
    interval: tokio::time::Interval,
}

impl Sender {
    fn new(client: Client, codec: VideoCodec, clip: Vec<Vec<u8>>, opus: Vec<Vec<u8>>) -> Self {
        let mut interval = tokio::time::interval(Duration::from_millis(20));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Sender {
            client,
            codec,
            video_pt: None,
            clip,
            frame: 0,
            seq: 7_000,
            ts: 90_000,
            opus,
            opus_at: 0,
            audio_seq: 3_000,
            audio_ts: 48_000,
            ticks: 0,
            plis: 0,
            interval,
        }
    }

    fn plis(&self) -> u64 {
        self.client.received.lock().unwrap().plis_received
    }

    /// Switches to another clip from its keyframe.
    fn play(&mut self, codec: VideoCodec, clip: Vec<Vec<u8>>) {
        self.codec = codec;
        self.clip = clip;
        self.frame = 0;
    }

    async fn tick(&mut self, spoil: &mut dyn FnMut(&mut Tick)) {
        self.interval.tick().await;
        let plis = self.plis();
        if plis > self.plis {
            self.plis = plis;
            self.frame = 0;
        }
        let mut t = Tick::default();
        if self.ticks.is_multiple_of(2) && !self.clip.is_empty() {
            let frame = &self.clip[self.frame % self.clip.len()];
            let parts = packetize(self.codec, frame);
            let n = parts.len();
            t.video = parts
                .into_iter()
                .enumerate()
                .map(|(i, payload)| RtpPacket {
                    payload_type: self.video_pt,
                    timestamp: self.ts,
                    marker: i + 1 == n,
                    payload,
                    ..Default::default()
                })
                .collect();
            self.ts = self.ts.wrapping_add(3600);
            self.frame += 1;
        }
        if !self.opus.is_empty() {
            t.audio.push(RtpPacket {
                timestamp: self.audio_ts,
                payload: self.opus[self.opus_at % self.opus.len()].clone(),
                ..Default::default()
            });
            self.opus_at += 1;
            self.audio_ts = self.audio_ts.wrapping_add(960);
        }
        spoil(&mut t);
        for mut p in t.video {
            if p.ssrc.is_none() {
                p.sequence_number = self.seq;
                self.seq = self.seq.wrapping_add(1);
            }
            self.client.send_rtp(RawTrack::Video, p).await.unwrap();
        }
        for mut p in t.audio {
            if p.ssrc.is_none() {
                p.sequence_number = self.audio_seq;
                self.audio_seq = self.audio_seq.wrapping_add(1);
            }
            self.client.send_rtp(RawTrack::Audio, p).await.unwrap();
        }
        for p in t.second_video {
            self.client
                .send_rtp(RawTrack::SecondVideo, p)
                .await
                .unwrap();
        }
        self.ticks += 1;
    }
}

/// `ticks` ticks of every sender, each spoiled by `spoil(sender index, tick)`.
async fn run(senders: &mut [Sender], ticks: u32, spoil: &mut dyn FnMut(usize, &mut Tick)) {
    for _ in 0..ticks {
        for (i, s) in senders.iter_mut().enumerate() {
            s.tick(&mut |t| spoil(i, t)).await;
        }
    }
}

/// Good ticks until `done` holds (checked every 200 ms); panics after `secs`.
async fn flow_until(
    senders: &mut [Sender],
    w: &mut Watch,
    what: &str,
    secs: u64,
    mut done: impl AsyncFnMut(&mut Watch) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        run(senders, 10, &mut |_, _| {}).await;
        if done(w).await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}

/// The room seen by a receive-only participant, and its HTTP report.
struct Watch {
    base: String,
    room: String,
    viewer: Client,
    good: Client,
    good_rgb: [u8; 3],
    decoder: Option<Box<dyn VideoDecoder>>,
    seen: usize,
    last: Option<VideoFrame>,
    /// Composite frames the viewer could not decode: the server's output must stay sound.
    errors: u64,
}

impl Watch {
    /// Decodes the composite frames that arrived since the last call.
    fn update(&mut self) {
        let r = self.viewer.received.lock().unwrap();
        let Some(codec) = r.codec else { return };
        let decoder = self
            .decoder
            .get_or_insert_with(|| new_video_decoder(codec).unwrap());
        for f in &r.video[self.seen..] {
            match decoder.decode(f) {
                Ok(Some(p)) => self.last = Some(p),
                Ok(None) => {}
                Err(_) => self.errors += 1,
            }
        }
        self.seen = r.video.len();
    }

    fn frames(&mut self) -> usize {
        self.update();
        self.seen
    }

    /// Whether `id`'s tile in the newest composite is `rgb`.
    async fn shows(&mut self, id: &str, rgb: [u8; 3]) -> bool {
        self.update();
        let (_, _, tiles) = room_tiles(&self.base, &self.room).await;
        let (Some(rect), Some(frame)) = (tiles.get(id), self.last.as_ref()) else {
            return false;
        };
        distance(tile_colour(frame, *rect), rgb) < 60
    }

    async fn participant(&self, id: &str) -> Value {
        let (status, body) = http_get(&self.base, &format!("/api/rooms/{}", self.room)).await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_slice(&body).unwrap();
        v["participants"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["id"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("no {id} in {v}"))
    }

    /// A counter of `id`'s report: `video_decode_errors`, `net.rtp_empty`, ...
    async fn counter(&self, id: &str, path: &str) -> u64 {
        let p = self.participant(id).await;
        path.split('.')
            .fold(&p, |v, k| &v[k])
            .as_u64()
            .unwrap_or_else(|| panic!("no {path} in {p}"))
    }

    /// Whether `id`'s camera has given the room `n` more pictures than `since`.
    /// The participant's own camera keeps being decoded and its tile shows RED: whatever
    /// else `what` sent never reached it.
    async fn assert_only_the_camera_shows(&mut self, id: &str, since: u64, what: &str) {
        assert!(
            self.decoded(id, since, 10).await,
            "the camera's own frames kept coming"
        );
        assert!(self.shows(id, RED).await, "{what} never reached the tile");
    }

    async fn decoded(&self, id: &str, since: u64, n: u64) -> bool {
        self.counter(id, "video_frames_in").await >= since + n
    }

    /// The room kept going: the viewer decoded every composite frame, and the good
    /// sender's tile shows its colour.
    async fn assert_room_fine(&mut self) {
        let good = self.good.id.clone();
        let mut ok = false;
        for _ in 0..20 {
            if self.shows(&good, self.good_rgb).await {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "the good sender's tile shows its picture");
        assert_eq!(self.errors, 0, "every composite frame decodes");
    }
}

/// A room with a good sender (fixture p2, VP8), a viewer, and raw clients `bad`.
async fn setup(room: &str, bad: &[(&str, RawTracks)]) -> (Watch, Vec<Client>) {
    let (_, list) = fixtures();
    let base = start_server_text(CONFIG).await;
    let join = |name: &'static str, media| {
        let base = base.clone();
        let room = room.to_string();
        async move {
            tokio::time::timeout(
                Duration::from_secs(20),
                Client::join(&base, &room, name, media),
            )
            .await
            .expect("join in time")
            .expect("join")
        }
    };
    let good = join("Good", load_media(&list[1], VideoCodec::Vp8)).await;
    let viewer = join("Viewer", Media::default()).await;
    let mut raw = Vec::new();
    for (name, tracks) in bad {
        let c = tokio::time::timeout(
            Duration::from_secs(20),
            Client::join_raw(&base, room, name, *tracks),
        )
        .await
        .expect("join in time")
        .expect("join");
        raw.push(c);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while raw
        .iter()
        .any(|c| c.received.lock().unwrap().connected_at.is_none())
    {
        assert!(Instant::now() < deadline, "raw clients connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let watch = Watch {
        base,
        room: room.to_string(),
        viewer,
        good,
        good_rgb: list[1].rgb,
        decoder: None,
        seen: 0,
        last: None,
        errors: 0,
    };
    (watch, raw)
}

/// The composite kept coming while something bad was sent.
fn assert_flowing(what: &str, before: usize, after: usize) {
    assert!(
        after >= before + 5,
        "composite frames kept coming during {what}: {before} -> {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_oversized_and_empty_rtp_are_counted() {
    let vp8 = RawTracks {
        video: Some(VideoCodec::Vp8),
        audio: true,
        ..Default::default()
    };
    let (mut w, mut raw) = setup("garbage-room", &[("Bad", vp8)]).await;
    let bad = raw.remove(0);
    let id = bad.id.clone();
    let clip = clip(VideoCodec::Vp8, (320, 240), RED, 125);
    let mut s = [Sender::new(bad, VideoCodec::Vp8, clip, opus_packets("p1"))];
    flow_until(&mut s, &mut w, "the bad sender's picture", 15, async |w| {
        w.shows(&id, RED).await
    })
    .await;

    // Garbage: random bytes of random length for 20 frames and 40 Opus packets.
    let before = w.participant(&id).await;
    let frames = w.frames();
    let mut rng = Rng(0x5eed_0001);
    run(&mut s, 40, &mut |_, t| {
        for p in t.video.iter_mut().chain(t.audio.iter_mut()) {
            let n = 1 + rng.below(1188);
            p.payload = rng.bytes(n);
        }
    })
    .await;
    assert_flowing("garbage", frames, w.frames());
    let fin = w.counter(&id, "video_frames_in").await;
    flow_until(
        &mut s,
        &mut w,
        "the picture back after garbage",
        10,
        async |w| w.decoded(&id, fin, 10).await && w.shows(&id, RED).await,
    )
    .await;
    let after = w.participant(&id).await;
    let n = |p: &Value, k: &str| k.split('.').fold(p, |v, k| &v[k]).as_u64().unwrap();
    let refused = |p: &Value| {
        n(p, "net.rtp_malformed") + n(p, "video_decode_errors") + n(p, "net.video_frames_lost")
    };
    eprintln!(
        "garbage: malformed {} decode errors {} frames lost {} audio decode errors {}",
        n(&after, "net.rtp_malformed") - n(&before, "net.rtp_malformed"),
        n(&after, "video_decode_errors") - n(&before, "video_decode_errors"),
        n(&after, "net.video_frames_lost") - n(&before, "net.video_frames_lost"),
        n(&after, "audio_decode_errors") - n(&before, "audio_decode_errors"),
    );
    assert!(
        refused(&after) > refused(&before),
        "garbage video is refused: {after}"
    );
    assert!(
        n(&after, "audio_decode_errors") > n(&before, "audio_decode_errors"),
        "garbage Opus is refused: {after}"
    );

    // Oversized and empty payloads, each in a packet of its own between frames: 5 video
    // and 10 audio of each in 10 ticks. They only use up their sequence numbers: no loss.
    // The counters reach the room once a second: take the baseline once the garbage's
    // losses have all been reported (unchanged for 1.5 s of good ticks).
    let mut lost = w.counter(&id, "net.video_frames_lost").await;
    let mut since = Instant::now();
    flow_until(
        &mut s,
        &mut w,
        "the loss counter to settle",
        15,
        async |w| {
            let now = w.counter(&id, "net.video_frames_lost").await;
            if now != lost {
                (lost, since) = (now, Instant::now());
            }
            since.elapsed() >= Duration::from_millis(1500)
        },
    )
    .await;
    let frames = w.frames();
    let mut tick = 0;
    run(&mut s, 20, &mut |_, t| {
        let size = if tick < 10 { 4000 } else { 0 };
        tick += 1;
        if let Some(last) = t.video.last().cloned() {
            t.video.push(RtpPacket {
                timestamp: last.timestamp.wrapping_add(1),
                marker: true,
                payload: vec![0x10; size],
                ..Default::default()
            });
        }
        for p in &mut t.audio {
            p.payload = vec![0x78; size];
        }
    })
    .await;
    assert_flowing("oversized and empty packets", frames, w.frames());
    flow_until(
        &mut s,
        &mut w,
        "oversized and empty packets counted",
        10,
        async |w| {
            w.counter(&id, "net.rtp_oversized").await >= 15
                && w.counter(&id, "net.rtp_empty").await >= 15
        },
    )
    .await;
    assert_eq!(w.counter(&id, "net.rtp_oversized").await, 15);
    assert_eq!(w.counter(&id, "net.rtp_empty").await, 15);
    assert_eq!(
        w.counter(&id, "net.video_frames_lost").await,
        lost,
        "a packet refused between frames is no loss"
    );
    assert!(w.shows(&id, RED).await);

    // One frame of 2.1 MB, in order and paced: too large to be real, dropped whole.
    let plis = s[0].plis();
    let frames = w.frames();
    let fin = w.counter(&id, "video_frames_in").await;
    let ts = s[0].ts;
    s[0].ts = ts.wrapping_add(3600);
    for i in 0..1800u32 {
        let mut payload = vec![0u8; 1188];
        payload[0] = if i == 0 { 0x10 } else { 0 };
        let p = RtpPacket {
            sequence_number: s[0].seq,
            timestamp: ts,
            marker: i == 1799,
            payload,
            ..Default::default()
        };
        s[0].seq = s[0].seq.wrapping_add(1);
        s[0].client.send_rtp(RawTrack::Video, p).await.unwrap();
        if i % 40 == 39 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    flow_until(
        &mut s,
        &mut w,
        "the picture back after a huge frame",
        10,
        async |w| {
            w.counter(&id, "net.video_frames_too_large").await == 1
                && w.decoded(&id, fin, 10).await
                && w.shows(&id, RED).await
        },
    )
    .await;
    assert_flowing("a huge frame", frames, w.frames());
    eprintln!(
        "huge frame: {} PLIs, {} frames lost",
        s[0].plis() - plis,
        w.counter(&id, "net.video_frames_lost").await - lost
    );
    assert!(
        s[0].plis() > plis,
        "a keyframe request followed the dropped frame"
    );
    w.assert_room_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_ssrc_payload_type_and_a_second_track_are_counted() {
    let tracks = RawTracks {
        video: Some(VideoCodec::Vp8),
        audio: true,
        second_video: true,
    };
    let (mut w, mut raw) = setup("foreign-room", &[("Bad", tracks)]).await;
    let bad = raw.remove(0);
    let id = bad.id.clone();
    let red = clip(VideoCodec::Vp8, (320, 240), RED, 125);
    let blue = clip(VideoCodec::Vp8, (320, 240), BLUE, 25);
    let mut s = [Sender::new(bad, VideoCodec::Vp8, red, opus_packets("p1"))];
    flow_until(&mut s, &mut w, "the bad sender's picture", 15, async |w| {
        w.shows(&id, RED).await
    })
    .await;
    let lost = w.counter(&id, "net.video_frames_lost").await;

    // A blue clip under an SSRC the SDP never named, with its own sequence numbers, and
    // Opus under another: webrtc-rs drops them before any track; only the count remains.
    let frames = w.frames();
    let fin = w.counter(&id, "video_frames_in").await;
    let (mut k, mut seq, mut sent) = (0usize, 0u16, 0u64);
    run(&mut s, 40, &mut |_, t| {
        if let Some(first) = t.video.first().cloned() {
            let parts = packetize(VideoCodec::Vp8, &blue[k % blue.len()]);
            let n = parts.len();
            for (i, payload) in parts.into_iter().enumerate() {
                t.video.push(RtpPacket {
                    ssrc: Some(0x0bad_55c0),
                    sequence_number: seq,
                    timestamp: first.timestamp,
                    marker: i + 1 == n,
                    payload,
                    ..Default::default()
                });
                seq += 1;
                sent += 1;
            }
            k += 1;
        }
        let mut foreign = t.audio[0].clone();
        foreign.ssrc = Some(0x0bad_55c1);
        foreign.sequence_number = seq;
        t.audio.push(foreign);
        seq += 1;
        sent += 1;
    })
    .await;
    assert_flowing("foreign SSRCs", frames, w.frames());
    w.assert_only_the_camera_shows(&id, fin, "the foreign stream")
        .await;
    flow_until(&mut s, &mut w, "foreign SSRCs counted", 10, async |w| {
        w.counter(&id, "net.rtp_unknown_ssrc").await >= sent
    })
    .await;
    assert_eq!(w.counter(&id, "net.rtp_unknown_ssrc").await, sent);
    assert_eq!(w.counter(&id, "net.rtp_bad_payload_type").await, 0);
    eprintln!("foreign SSRCs: {sent} packets counted");

    // The blue clip again on the camera's own SSRC and sequence, but under payload type 98
    // (never negotiated; 64..=95 with the marker set would be taken for RTCP), plus an Opus payload type on the video m-line and PCMU (0) on the
    // audio one: dropped and counted, and no hole in the stream.
    let frames = w.frames();
    let fin = w.counter(&id, "video_frames_in").await;
    let (mut k, mut bad_pts) = (0usize, 0u64);
    run(&mut s, 40, &mut |_, t| {
        if let Some(first) = t.video.first().cloned() {
            for (i, payload) in packetize(VideoCodec::Vp8, &blue[k % blue.len()])
                .into_iter()
                .enumerate()
            {
                let pt = if i == 0 { OPUS_PT } else { 98 };
                t.video.push(RtpPacket {
                    payload_type: Some(pt),
                    timestamp: first.timestamp.wrapping_add(1),
                    marker: true,
                    payload,
                    ..Default::default()
                });
                bad_pts += 1;
            }
            k += 1;
        }
        let mut pcmu = t.audio[0].clone();
        pcmu.payload_type = Some(0);
        t.audio.push(pcmu);
        bad_pts += 1;
    })
    .await;
    assert_flowing("foreign payload types", frames, w.frames());
    w.assert_only_the_camera_shows(&id, fin, "foreign payload types")
        .await;
    flow_until(
        &mut s,
        &mut w,
        "foreign payload types counted",
        10,
        async |w| w.counter(&id, "net.rtp_bad_payload_type").await >= bad_pts,
    )
    .await;
    assert_eq!(w.counter(&id, "net.rtp_bad_payload_type").await, bad_pts);
    eprintln!("foreign payload types: {bad_pts} packets counted");
    assert_eq!(
        w.counter(&id, "net.video_frames_lost").await,
        lost,
        "a refused packet is no hole"
    );

    // The blue clip on a second camera track (its own m-line and SSRC): webrtc-rs hands it
    // up as a second track, which the server reads only to discard.
    let frames = w.frames();
    let fin = w.counter(&id, "video_frames_in").await;
    let (mut k, mut seq) = (0usize, 0u16);
    run(&mut s, 40, &mut |_, t| {
        if let Some(first) = t.video.first() {
            let parts = packetize(VideoCodec::Vp8, &blue[k % blue.len()]);
            let n = parts.len();
            for (i, payload) in parts.into_iter().enumerate() {
                t.second_video.push(RtpPacket {
                    sequence_number: seq,
                    timestamp: first.timestamp,
                    marker: i + 1 == n,
                    payload,
                    ..Default::default()
                });
                seq += 1;
            }
            k += 1;
        }
    })
    .await;
    assert_flowing("a second track", frames, w.frames());
    w.assert_only_the_camera_shows(&id, fin, "the second track")
        .await;
    flow_until(&mut s, &mut w, "the second track counted", 10, async |w| {
        w.counter(&id, "net.extra_tracks").await == 1
    })
    .await;
    assert_eq!(w.counter(&id, "net.rtp_unknown_ssrc").await, sent);
    w.assert_room_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_bit_flipped_vp8_h264_and_opus_are_counted() {
    let (_, list) = fixtures();
    let vp8 = RawTracks {
        video: Some(VideoCodec::Vp8),
        audio: true,
        ..Default::default()
    };
    let h264 = RawTracks {
        video: Some(VideoCodec::H264),
        ..Default::default()
    };
    let (mut w, raw) = setup("damaged-room", &[("V", vp8), ("H", h264)]).await;
    let mut raw = raw.into_iter();
    let (v, h) = (raw.next().unwrap(), raw.next().unwrap());
    let (vid, hid) = (v.id.clone(), h.id.clone());
    let mut s = [
        Sender::new(
            v,
            VideoCodec::Vp8,
            clip(VideoCodec::Vp8, (320, 240), RED, 125),
            opus_packets("p1"),
        ),
        Sender::new(
            h,
            VideoCodec::H264,
            clip(VideoCodec::H264, (320, 240), BLUE, 125),
            Vec::new(),
        ),
    ];
    flow_until(
        &mut s,
        &mut w,
        "both bad senders' pictures",
        15,
        async |w| w.shows(&vid, RED).await && w.shows(&hid, BLUE).await,
    )
    .await;
    let refused = async |w: &Watch, id: &str| {
        w.counter(id, "video_decode_errors").await + w.counter(id, "net.rtp_malformed").await
    };

    // Truncated: every video payload cut to half, Opus packets to half or to their TOC byte.
    let (v0, h0) = (refused(&w, &vid).await, refused(&w, &hid).await);
    let opus_errors = w.counter(&vid, "audio_decode_errors").await;
    let opus_in = w.counter(&vid, "audio_packets_in").await;
    let frames = w.frames();
    let mut k = 0;
    run(&mut s, 50, &mut |_, t| {
        for p in &mut t.video {
            let keep = (p.payload.len() / 2).max(2);
            p.payload.truncate(keep);
        }
        for p in &mut t.audio {
            k += 1;
            let keep = if k % 2 == 0 { p.payload.len() / 2 } else { 1 };
            p.payload.truncate(keep);
        }
    })
    .await;
    assert_flowing("truncated payloads", frames, w.frames());
    let (vin, hin) = (
        w.counter(&vid, "video_frames_in").await,
        w.counter(&hid, "video_frames_in").await,
    );
    flow_until(
        &mut s,
        &mut w,
        "truncated payloads counted, pictures back",
        15,
        async |w| {
            refused(w, &vid).await > v0
                && refused(w, &hid).await > h0
                && w.counter(&vid, "audio_packets_in").await >= opus_in + 50
                && w.decoded(&vid, vin, 10).await
                && w.decoded(&hid, hin, 10).await
                && w.shows(&vid, RED).await
                && w.shows(&hid, BLUE).await
        },
    )
    .await;
    // Opus has no checksum and a one-frame packet no length: cut short, it decodes.
    assert_eq!(w.counter(&vid, "audio_decode_errors").await, opus_errors);
    eprintln!(
        "truncated: VP8 refused {} H.264 refused {}",
        refused(&w, &vid).await - v0,
        refused(&w, &hid).await - h0
    );

    // Bit-flipped: VP8 with the top bit of the first partition's size flipped (the size
    // then overruns the frame) and a few more; H.264 anywhere after the NAL header; Opus
    // in the body, or in the TOC byte of even-length packets, which turns a one-frame
    // packet into a two-frame one whose halves cannot be equal: invalid.
    let (v0, h0) = (refused(&w, &vid).await, refused(&w, &hid).await);
    let opus_errors = w.counter(&vid, "audio_decode_errors").await;
    let frames = w.frames();
    let mut rng = Rng(0xf11b_0002);
    let mut toc_flips = 0;
    run(&mut s, 50, &mut |i, t| {
        for (j, p) in t.video.iter_mut().enumerate() {
            if i == 0 && j == 0 && p.payload.len() > 4 {
                p.payload[3] ^= 0x80;
            }
            rng.flip(&mut p.payload, 2, 4);
        }
        for p in &mut t.audio {
            if p.payload.len() % 2 == 0 {
                p.payload[0] ^= 1;
                toc_flips += 1;
            } else {
                rng.flip(&mut p.payload, 1, 4);
            }
        }
    })
    .await;
    assert_flowing("bit-flipped payloads", frames, w.frames());
    let (vin, hin) = (
        w.counter(&vid, "video_frames_in").await,
        w.counter(&hid, "video_frames_in").await,
    );
    flow_until(
        &mut s,
        &mut w,
        "bit flips counted, pictures back",
        15,
        async |w| {
            refused(w, &vid).await > v0
                && refused(w, &hid).await > h0
                && w.decoded(&vid, vin, 10).await
                && w.decoded(&hid, hin, 10).await
                && w.shows(&vid, RED).await
                && w.shows(&hid, BLUE).await
        },
    )
    .await;
    assert!(toc_flips > 0);
    assert_eq!(
        w.counter(&vid, "audio_decode_errors").await,
        opus_errors + toc_flips,
        "exactly the Opus packets with an impossible TOC are refused"
    );
    eprintln!(
        "bit flips: VP8 refused {} H.264 refused {} Opus refused {toc_flips}",
        refused(&w, &vid).await - v0,
        refused(&w, &hid).await - h0
    );

    // The bad microphone is heard again: its tone in the viewer's last second of mix.
    run(&mut s, 50, &mut |_, _| {}).await;
    let pcm = decode_audio(&w.viewer.received.lock().unwrap().audio);
    let body = &pcm[pcm.len().saturating_sub(48_000)..];
    let floor = goertzel_power(body, 2500.0, 48_000).max(1e-12);
    let tone = goertzel_power(body, list[0].tone_hz, 48_000);
    assert!(
        tone > floor * 100.0,
        "the viewer hears V again ({tone} vs {floor})"
    );
    w.assert_room_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolution_change_codec_switch_and_clock_jumps_keep_the_picture() {
    let vp8 = RawTracks {
        video: Some(VideoCodec::Vp8),
        ..Default::default()
    };
    let (mut w, mut raw) = setup("jumpy-room", &[("Bad", vp8)]).await;
    let bad = raw.remove(0);
    let id = bad.id.clone();
    let clip640 = clip(VideoCodec::Vp8, (640, 360), RED, 125);
    let mut s = [Sender::new(bad, VideoCodec::Vp8, clip640, Vec::new())];
    flow_until(&mut s, &mut w, "the bad sender's picture", 15, async |w| {
        w.shows(&id, RED).await
    })
    .await;

    // 640x360 to 320x240 at a keyframe, on the same stream.
    s[0].play(
        VideoCodec::Vp8,
        clip(VideoCodec::Vp8, (320, 240), YELLOW, 125),
    );
    flow_until(
        &mut s,
        &mut w,
        "the picture at its new size",
        10,
        async |w| w.shows(&id, YELLOW).await,
    )
    .await;
    assert_eq!(w.counter(&id, "video_decode_errors").await, 0);

    // VP8 to H.264 on the same m-line, SSRC and sequence (its own payload type), and back.
    let h264_pt = s[0].client.video_payload_type(VideoCodec::H264).await;
    assert!(h264_pt.is_some(), "H.264 was negotiated too");
    s[0].video_pt = h264_pt;
    s[0].play(
        VideoCodec::H264,
        clip(VideoCodec::H264, (320, 240), BLUE, 125),
    );
    flow_until(&mut s, &mut w, "the picture in H.264", 10, async |w| {
        w.shows(&id, BLUE).await
    })
    .await;
    let p = w.participant(&id).await;
    assert_eq!(p["codec_in"], "h264", "{p}");
    s[0].video_pt = None;
    s[0].play(
        VideoCodec::Vp8,
        clip(VideoCodec::Vp8, (320, 240), MAGENTA, 125),
    );
    flow_until(&mut s, &mut w, "the picture in VP8 again", 10, async |w| {
        w.shows(&id, MAGENTA).await
    })
    .await;
    flow_until(&mut s, &mut w, "codec switches counted", 5, async |w| {
        w.counter(&id, "net.codec_switches").await == 2
    })
    .await;
    assert_eq!(w.counter(&id, "video_decode_errors").await, 0);

    // RTP timestamps jumping forward by half their range, then back: nothing depends on
    // them, so no loss, no keyframe request, every frame decoded.
    let lost = w.counter(&id, "net.video_frames_lost").await;
    let resyncs = w.counter(&id, "net.rtp_resyncs").await;
    let plis = s[0].plis();
    let frames_in = w.counter(&id, "video_frames_in").await;
    s[0].ts = s[0].ts.wrapping_add(1 << 31);
    run(&mut s, 50, &mut |_, _| {}).await;
    s[0].ts = s[0].ts.wrapping_sub(5_000_000);
    flow_until(
        &mut s,
        &mut w,
        "frames after timestamp jumps",
        10,
        async |w| w.counter(&id, "video_frames_in").await >= frames_in + 40,
    )
    .await;
    assert_eq!(w.counter(&id, "net.video_frames_lost").await, lost);
    assert_eq!(w.counter(&id, "net.rtp_resyncs").await, resyncs);
    assert_eq!(
        s[0].plis(),
        plis,
        "no keyframe request for a timestamp jump"
    );

    // Sequence numbers jumping forward by 20 000, then back by 40 000: more than half the
    // space, which SRTP and the server alike read as 25 536 forward. Each restarts the stream
    // after one keyframe request.
    for jump in [20_000u16, 25_536] {
        let plis = s[0].plis();
        let resyncs = w.counter(&id, "net.rtp_resyncs").await;
        let frames_in = w.counter(&id, "video_frames_in").await;
        s[0].seq = s[0].seq.wrapping_add(jump);
        flow_until(
            &mut s,
            &mut w,
            "frames after a sequence jump",
            10,
            async |w| {
                w.counter(&id, "net.rtp_resyncs").await == resyncs + 1
                    && w.counter(&id, "video_frames_in").await >= frames_in + 20
            },
        )
        .await;
        let asked = s[0].plis() - plis;
        eprintln!("sequence jump {jump}: {asked} keyframe requests");
        assert!((1..=2).contains(&asked), "jump {jump}: {asked} PLIs");
    }

    // A step back by 300: webrtc-rs's SRTP replay protection drops every packet older than
    // 64 behind the highest it has seen, so nothing reaches the server until the sender's
    // numbers pass that again (here: it jumps ahead). The room goes on meanwhile.
    let frames = w.frames();
    let frames_in = w.counter(&id, "video_frames_in").await;
    let (late, resyncs) = (
        w.counter(&id, "net.rtp_late").await,
        w.counter(&id, "net.rtp_resyncs").await,
    );
    s[0].seq = s[0].seq.wrapping_sub(300);
    run(&mut s, 50, &mut |_, _| {}).await;
    assert_flowing("a step back in sequence numbers", frames, w.frames());
    assert!(
        w.counter(&id, "video_frames_in").await <= frames_in + 1,
        "replayed sequence numbers never reach the room"
    );
    assert_eq!(w.counter(&id, "net.rtp_late").await, late);
    assert_eq!(w.counter(&id, "net.rtp_resyncs").await, resyncs);
    let plis = s[0].plis();
    s[0].seq = s[0].seq.wrapping_add(600);
    flow_until(
        &mut s,
        &mut w,
        "frames once the sender is past its old numbers",
        10,
        async |w| w.counter(&id, "video_frames_in").await >= frames_in + 20,
    )
    .await;
    assert!((1..=2).contains(&(s[0].plis() - plis)));
    assert!(w.shows(&id, MAGENTA).await);
    w.assert_room_fine().await;
}
