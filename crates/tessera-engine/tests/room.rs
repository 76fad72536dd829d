//! Deterministic room tests: real codecs, a fake clock, no sockets, no sleeps.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tessera_codec::{
    new_audio_decoder, new_audio_encoder, new_video_decoder, new_video_encoder, Rect, VideoEncoder,
    VideoEncoderConfig, VideoFrame, FRAME_SAMPLES,
};
use tessera_config::Config;
use tessera_engine::{
    Assets, Input, JoinOptions, LayoutSpec, Listener, Output, Room, RoomSettings, TierId,
};
use tessera_mixer::analysis::goertzel_power;
use tessera_types::{ParticipantId, Rgb, VideoCodec, Yuv};

const FPS: u32 = 25;

struct Sender {
    id: ParticipantId,
    name: &'static str,
    colour: Rgb,
    tone_hz: f32,
    codec: VideoCodec,
    encoder: Box<dyn VideoEncoder>,
    phase: f32,
}

impl Sender {
    fn new(n: u64, name: &'static str, colour: Rgb, tone_hz: f32, codec: VideoCodec) -> Sender {
        let encoder = new_video_encoder(&VideoEncoderConfig {
            codec,
            width: 320,
            height: 180,
            fps: FPS,
            bitrate_bps: 300_000,
            vp8_cpu_used: -12,
            threads: 1,
        })
        .unwrap();
        Sender {
            id: ParticipantId(n),
            name,
            colour,
            tone_hz,
            codec,
            encoder,
            phase: 0.0,
        }
    }

    /// A frame of the sender's colour with a small moving square, so the encoder has work.
    fn frame(&mut self, k: u64) -> Vec<u8> {
        let mut f = VideoFrame::filled(320, 180, self.colour.to_yuv());
        let x = (k as u32 * 4) % 280;
        tessera_codec::scale::fill_rect(
            &mut f,
            Rect::new(x, 70, 24, 24),
            Yuv {
                y: 235,
                u: 128,
                v: 128,
            },
        );
        let pts = k * 90_000 / FPS as u64;
        self.encoder
            .encode(&f, pts, k == 0)
            .unwrap()
            .map(|e| e.data)
            .unwrap_or_default()
    }

    fn tone(&mut self) -> Vec<i16> {
        (0..FRAME_SAMPLES)
            .map(|_| {
                self.phase += self.tone_hz / 48_000.0;
                ((self.phase * std::f32::consts::TAU).sin() * 8000.0) as i16
            })
            .collect()
    }
}

/// The config's `low` tier (VP8).
fn low() -> TierId {
    TierId::new("low", VideoCodec::Vp8)
}

fn settings(layout: &str) -> RoomSettings {
    let mut cfg = Config::embedded();
    cfg.video.placeholder_after_ms = 400;
    let mut s = RoomSettings::from_config(&cfg, layout, &Assets::load(&cfg).unwrap()).unwrap();
    s.tiers.retain(|t| &*t.id.name == "low");
    s.tiers[0].fps = FPS;
    s.tiers[0].bitrate_bps = 800_000;
    s.always_encode = vec![low()];
    s.always_full_mix = true;
    s
}

#[derive(Default)]
struct Collected {
    video: Vec<(u64, bool, Vec<u8>)>,
    audio: HashMap<Listener, Vec<(u64, Vec<u8>)>>,
    keyframe_needed: Vec<(Duration, ParticipantId)>,
    speakers: Vec<Option<ParticipantId>>,
}

impl Collected {
    fn drain(&mut self, room: &mut Room, at: Duration) {
        while let Some(out) = room.poll_output() {
            match out {
                Output::Video { frame, .. } => {
                    self.video
                        .push((frame.pts_90k, frame.keyframe, frame.data.clone()))
                }
                Output::Audio {
                    listener,
                    packet,
                    pts_48k,
                } => self
                    .audio
                    .entry(listener)
                    .or_default()
                    .push((pts_48k, packet)),
                Output::KeyframeNeeded { participant } => {
                    self.keyframe_needed.push((at, participant))
                }
                Output::ActiveSpeakerChanged { participant } => self.speakers.push(participant),
            }
        }
    }

    fn decode_audio(&self, listener: Listener) -> Vec<i16> {
        let mut dec = new_audio_decoder().unwrap();
        let mut all = Vec::new();
        let mut pcm = Vec::new();
        for (_, p) in &self.audio[&listener] {
            dec.decode(p, &mut pcm).unwrap();
            all.extend_from_slice(&pcm);
        }
        all
    }

    fn last_picture(&self, codec: VideoCodec) -> VideoFrame {
        let mut dec = new_video_decoder(codec).unwrap();
        let mut last = None;
        for (_, _, data) in &self.video {
            if let Ok(Some(f)) = dec.decode(data) {
                last = Some(f);
            }
        }
        last.expect("no decodable composite frame")
    }
}

/// Drives `room` for `secs` on a fake clock; `feed` is called once per 20 ms step.
fn run(
    room: &mut Room,
    t0: Instant,
    from_ms: u64,
    to_ms: u64,
    out: &mut Collected,
    mut feed: impl FnMut(&mut Room, u64, Instant),
) {
    let mut ms = from_ms;
    while ms < to_ms {
        let now = t0 + Duration::from_millis(ms);
        feed(room, ms, now);
        room.handle_timeout(now);
        out.drain(room, Duration::from_millis(ms));
        ms += 20;
    }
}

fn colour_close(got: Yuv, want: Rgb) -> bool {
    let w = want.to_yuv();
    (got.y as i32 - w.y as i32).abs() < 24
        && (got.u as i32 - w.u as i32).abs() < 24
        && (got.v as i32 - w.v as i32).abs() < 24
}

fn three_senders() -> Vec<Sender> {
    vec![
        Sender::new(
            1,
            "Ann",
            Rgb {
                r: 220,
                g: 30,
                b: 30,
            },
            300.0,
            VideoCodec::Vp8,
        ),
        Sender::new(
            2,
            "Bo",
            Rgb {
                r: 30,
                g: 200,
                b: 40,
            },
            600.0,
            VideoCodec::H264,
        ),
        Sender::new(
            3,
            "Cy",
            Rgb {
                r: 40,
                g: 60,
                b: 230,
            },
            900.0,
            VideoCodec::Vp8,
        ),
    ]
}

fn join_all(room: &mut Room, senders: &[Sender], t0: Instant) {
    for s in senders {
        let options = JoinOptions {
            receives_audio: true,
            ..JoinOptions::default()
        };
        room.handle_input(
            Input::Join {
                id: s.id,
                name: s.name.into(),
                options,
            },
            t0,
        );
    }
}

/// Feeds video at 25 fps (every other 20 ms step is skipped to 40 ms) and audio every step.
fn feed_all(senders: &mut [Sender]) -> impl FnMut(&mut Room, u64, Instant) + '_ {
    feed(senders, None)
}

/// As `feed_all`, with everyone but `talker` silent.
fn feed_talker(
    senders: &mut [Sender],
    talker: ParticipantId,
) -> impl FnMut(&mut Room, u64, Instant) + '_ {
    feed(senders, Some(talker))
}

fn feed(
    senders: &mut [Sender],
    talker: Option<ParticipantId>,
) -> impl FnMut(&mut Room, u64, Instant) + '_ {
    move |room, ms, now| {
        for s in senders.iter_mut() {
            if ms % 40 == 0 {
                let data = s.frame(ms / 40);
                room.handle_input(
                    Input::Video {
                        id: s.id,
                        codec: s.codec,
                        data,
                    },
                    now,
                );
            }
            let mut samples = s.tone();
            if talker.is_some_and(|t| t != s.id) {
                samples.iter_mut().for_each(|x| *x = 0);
            }
            room.handle_input(Input::AudioPcm { id: s.id, samples }, now);
        }
    }
}

#[test]
fn three_senders_are_tiled_and_each_hears_the_others_only() {
    let t0 = Instant::now();
    let mut room = Room::new(settings("grid"), t0).unwrap();
    let mut senders = three_senders();
    join_all(&mut room, &senders, t0);
    let mut out = Collected::default();
    run(&mut room, t0, 0, 2000, &mut out, feed_all(&mut senders));

    // Every tile shows its sender's colour.
    let picture = out.last_picture(VideoCodec::Vp8);
    let rects = room.tile_rects(&low());
    assert_eq!(rects.len(), 3);
    for s in &senders {
        let rect = rects.iter().find(|(id, _)| *id == s.id).unwrap().1;
        let inner = Rect::new(
            rect.x + rect.w / 4,
            rect.y + rect.h / 4,
            rect.w / 2,
            rect.h / 4,
        );
        let got = picture.mean_yuv(inner);
        assert!(
            colour_close(got, s.colour),
            "{} tile {rect:?}: got {got:?}, want {:?}",
            s.name,
            s.colour.to_yuv()
        );
    }

    // Mix-minus: each listener hears the other tones, not its own.
    for s in &senders {
        let pcm = out.decode_audio(Listener::Participant(s.id));
        let pcm = &pcm[pcm.len() / 2..];
        let own = goertzel_power(pcm, s.tone_hz, 48_000);
        for o in senders.iter().filter(|o| o.id != s.id) {
            let other = goertzel_power(pcm, o.tone_hz, 48_000);
            assert!(
                other > own * 100.0,
                "{} hears {} at {other}, itself at {own}",
                s.name,
                o.name
            );
        }
    }
    let full = out.decode_audio(Listener::FullMix);
    let full = &full[full.len() / 2..];
    let noise = goertzel_power(full, 1500.0, 48_000);
    for s in &senders {
        assert!(
            goertzel_power(full, s.tone_hz, 48_000) > noise * 100.0,
            "full mix lacks {}",
            s.name
        );
    }
}

#[test]
fn timestamps_step_exactly_on_the_room_clock() {
    let t0 = Instant::now();
    let mut room = Room::new(settings("grid"), t0).unwrap();
    let mut senders = three_senders();
    join_all(&mut room, &senders, t0);
    let mut out = Collected::default();
    run(&mut room, t0, 0, 1000, &mut out, feed_all(&mut senders));

    assert!(
        out.video.len() >= 24,
        "only {} frames in 1 s at 25 fps",
        out.video.len()
    );
    for w in out.video.windows(2) {
        assert_eq!(w[1].0 - w[0].0, 90_000 / FPS as u64);
    }
    assert!(out.video[0].1, "first composite frame must be a keyframe");
    for packets in out.audio.values() {
        assert!(packets.len() >= 49);
        for w in packets.windows(2) {
            assert_eq!(w[1].0 - w[0].0, FRAME_SAMPLES as u64);
        }
    }
}

#[test]
fn a_receivers_keyframe_request_yields_a_keyframe_on_the_next_tick() {
    let t0 = Instant::now();
    let mut room = Room::new(settings("grid"), t0).unwrap();
    let mut senders = three_senders();
    join_all(&mut room, &senders, t0);
    let mut out = Collected::default();
    run(&mut room, t0, 0, 1200, &mut out, feed_all(&mut senders));
    let before = out.video.len();
    assert!(
        out.video[1..].iter().all(|v| !v.1),
        "no keyframes expected without requests"
    );

    room.handle_input(
        Input::RequestKeyframe { tier: low() },
        t0 + Duration::from_millis(1200),
    );
    run(&mut room, t0, 1200, 1260, &mut out, feed_all(&mut senders));
    assert!(
        out.video[before].1,
        "the frame after the request is not a keyframe"
    );
}

#[test]
fn a_receiver_that_becomes_ready_gets_a_keyframe_past_the_rate_limit() {
    let t0 = Instant::now();
    let mut room = Room::new(settings("grid"), t0).unwrap();
    let mut senders = three_senders();
    join_all(&mut room, &senders, t0);
    let mut out = Collected::default();
    run(&mut room, t0, 0, 1200, &mut out, feed_all(&mut senders));

    // A request uses up the keyframe budget (keyframe_min_interval)...
    let at = t0 + Duration::from_millis(1200);
    room.handle_input(Input::RequestKeyframe { tier: low() }, at);
    run(&mut room, t0, 1200, 1260, &mut out, feed_all(&mut senders));
    let before = out.video.len();
    // ...so a second request right away waits, but a receiver that just connected does not.
    let at = t0 + Duration::from_millis(1260);
    room.handle_input(Input::RequestKeyframe { tier: low() }, at);
    run(&mut room, t0, 1260, 1320, &mut out, feed_all(&mut senders));
    assert!(
        out.video[before..].iter().all(|v| !v.1),
        "a request within keyframe_min_interval is held back"
    );
    let before = out.video.len();
    let at = t0 + Duration::from_millis(1320);
    room.handle_input(Input::ReceiverReady { tier: low() }, at);
    run(&mut room, t0, 1320, 1380, &mut out, feed_all(&mut senders));
    assert!(
        out.video[before].1,
        "the frame after ReceiverReady is not a keyframe"
    );
}

#[test]
fn reconfigure_changes_size_fps_and_layout_without_dropping_anyone() {
    let t0 = Instant::now();
    let mut room = Room::new(settings("grid"), t0).unwrap();
    let mut senders = three_senders();
    join_all(&mut room, &senders, t0);
    let mut out = Collected::default();
    run(&mut room, t0, 0, 1000, &mut out, feed_all(&mut senders));
    let before = out.video.len();
    let grid_rects = room.tile_rects(&low());

    // New size, frame rate and layout for the running tier.
    let mut new = settings("speaker");
    new.tiers[0].width = 320;
    new.tiers[0].height = 180;
    new.tiers[0].fps = 10;
    room.handle_input(
        Input::Reconfigure(Box::new(new)),
        t0 + Duration::from_millis(1000),
    );
    run(&mut room, t0, 1000, 2000, &mut out, feed_all(&mut senders));

    let after = &out.video[before..];
    assert!(
        after[0].1,
        "the first frame after a size change is a keyframe"
    );
    for w in after.windows(2) {
        assert_eq!(w[1].0 - w[0].0, 90_000 / 10, "frames step at the new rate");
    }
    assert!(
        after[0].0 > out.video[before - 1].0,
        "timestamps stay monotonic across the change"
    );
    assert!(
        (9..=11).contains(&after.len()),
        "{} frames in 1 s at 10 fps",
        after.len()
    );
    let mut dec = new_video_decoder(VideoCodec::Vp8).unwrap();
    let mut size = None;
    for (_, _, data) in after {
        if let Ok(Some(f)) = dec.decode(data) {
            size = Some((f.width, f.height));
        }
    }
    assert_eq!(size, Some((320, 180)));
    assert_eq!(room.participant_ids().len(), 3, "nobody was dropped");
    assert_ne!(room.tile_rects(&low()), grid_rects, "the layout changed");
    assert_eq!(room.stats().reconfigure_errors, 0);
}

#[test]
fn corrupt_video_neither_panics_nor_stops_the_room_and_asks_for_keyframes_rate_limited() {
    let t0 = Instant::now();
    let mut room = Room::new(settings("grid"), t0).unwrap();
    let mut senders = three_senders();
    join_all(&mut room, &senders, t0);
    let mut out = Collected::default();
    run(&mut room, t0, 0, 600, &mut out, feed_all(&mut senders));
    let frames_before = out.video.len();
    out.keyframe_needed.clear();

    let mut seed = 0x2545F491u32;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    run(&mut room, t0, 600, 2600, &mut out, |room, ms, now| {
        for s in senders.iter_mut() {
            if ms % 40 == 0 {
                let mut data = s.frame(ms / 40);
                if s.id == ParticipantId(2) && !data.is_empty() {
                    // Truncate and flip bits in every frame of Bo's H.264.
                    let cut = (rand() as usize % data.len()).max(1);
                    data.truncate(cut);
                    for _ in 0..4 {
                        let i = rand() as usize % data.len();
                        data[i] ^= 1 << (rand() % 8);
                    }
                }
                room.handle_input(
                    Input::Video {
                        id: s.id,
                        codec: s.codec,
                        data,
                    },
                    now,
                );
                if s.id == ParticipantId(3) {
                    let garbage: Vec<u8> = (0..200).map(|_| rand() as u8).collect();
                    room.handle_input(
                        Input::Video {
                            id: s.id,
                            codec: VideoCodec::Vp8,
                            data: garbage,
                        },
                        now,
                    );
                }
            }
            let samples = s.tone();
            room.handle_input(Input::AudioPcm { id: s.id, samples }, now);
        }
    });
    // The composite kept flowing at full rate.
    assert!(
        out.video.len() - frames_before >= 49,
        "composite stalled: {} frames",
        out.video.len() - frames_before
    );
    let errors = room
        .participant_stats(ParticipantId(2))
        .unwrap()
        .video_decode_errors
        + room
            .participant_stats(ParticipantId(3))
            .unwrap()
            .video_decode_errors;
    assert!(errors > 0, "corruption went unnoticed");
    // Keyframe requests go out, but at most one per participant per interval (1 s).
    let asked: Vec<_> = out
        .keyframe_needed
        .iter()
        .filter(|(_, p)| *p != ParticipantId(1))
        .collect();
    assert!(
        !asked.is_empty(),
        "no keyframe requested from a broken sender"
    );
    for id in [ParticipantId(2), ParticipantId(3)] {
        let times: Vec<Duration> = asked
            .iter()
            .filter(|(_, p)| *p == id)
            .map(|(t, _)| *t)
            .collect();
        assert!(times.len() <= 3, "{id} asked {} times in 2 s", times.len());
        for w in times.windows(2) {
            assert!(
                w[1] - w[0] >= Duration::from_millis(1000),
                "{id} asked twice within 1 s: {times:?}"
            );
        }
    }
    assert!(
        out.keyframe_needed
            .iter()
            .all(|(_, p)| *p != ParticipantId(1)),
        "healthy sender asked for keyframes"
    );
}

#[test]
fn a_silent_sender_freezes_then_shows_its_placeholder() {
    let t0 = Instant::now();
    let mut room = Room::new(settings("grid"), t0).unwrap();
    let mut senders = three_senders();
    join_all(&mut room, &senders, t0);
    let mut out = Collected::default();
    run(&mut room, t0, 0, 800, &mut out, feed_all(&mut senders));
    let cy = senders.pop().unwrap();
    // Cy stops sending video; the others go on. After 400 ms its tile is a placeholder.
    run(&mut room, t0, 800, 1000, &mut out, feed_all(&mut senders));
    let frozen = out.last_picture(VideoCodec::Vp8);
    let rect = room
        .tile_rects(&low())
        .into_iter()
        .find(|(id, _)| *id == cy.id)
        .unwrap()
        .1;
    let inner = Rect::new(
        rect.x + rect.w / 4,
        rect.y + rect.h / 4,
        rect.w / 2,
        rect.h / 4,
    );
    assert!(
        colour_close(frozen.mean_yuv(inner), cy.colour),
        "tile should still show the frozen picture"
    );

    run(&mut room, t0, 1000, 1600, &mut out, feed_all(&mut senders));
    let later = out.last_picture(VideoCodec::Vp8);
    let got = later.mean_yuv(inner);
    assert!(
        !colour_close(got, cy.colour),
        "tile still shows the stale picture: {got:?}"
    );
    assert_eq!(
        room.tile_rects(&low()).len(),
        3,
        "the participant keeps its tile"
    );
}

#[test]
fn the_speaker_layout_follows_the_loudest_talker() {
    let t0 = Instant::now();
    let mut room = Room::new(settings("speaker"), t0).unwrap();
    let mut senders = three_senders();
    join_all(&mut room, &senders, t0);
    let mut out = Collected::default();
    // Only Cy talks.
    run(
        &mut room,
        t0,
        0,
        2000,
        &mut out,
        feed_talker(&mut senders, ParticipantId(3)),
    );
    assert_eq!(room.active_speaker(), Some(ParticipantId(3)));
    assert_eq!(out.speakers.last(), Some(&Some(ParticipantId(3))));
    let rects = room.tile_rects(&low());
    let largest = rects.iter().max_by_key(|(_, r)| r.w * r.h).unwrap();
    assert_eq!(
        largest.0,
        ParticipantId(3),
        "speaker is not in the large tile: {rects:?}"
    );
    let picture = out.last_picture(VideoCodec::Vp8);
    let r = largest.1;
    assert!(colour_close(
        picture.mean_yuv(Rect::new(r.x + r.w / 4, r.y + r.h / 4, r.w / 2, r.h / 4)),
        senders[2].colour
    ));
    let _ = LayoutSpec::Grid;
}

#[test]
fn leaving_frees_the_tile_and_unknown_ids_are_counted() {
    let t0 = Instant::now();
    let mut room = Room::new(settings("grid"), t0).unwrap();
    let mut senders = three_senders();
    join_all(&mut room, &senders, t0);
    let mut out = Collected::default();
    run(&mut room, t0, 0, 400, &mut out, feed_all(&mut senders));
    room.handle_input(
        Input::Leave {
            id: ParticipantId(2),
        },
        t0 + Duration::from_millis(400),
    );
    senders.remove(1);
    run(&mut room, t0, 400, 800, &mut out, feed_all(&mut senders));
    let rects = room.tile_rects(&low());
    assert_eq!(rects.len(), 2);
    assert!(rects.iter().all(|(id, _)| *id != ParticipantId(2)));
    room.handle_input(
        Input::Audio {
            id: ParticipantId(2),
            packet: vec![1, 2, 3],
        },
        t0 + Duration::from_millis(800),
    );
    assert_eq!(room.stats().inputs_for_unknown_participants, 1);
    let _ = new_audio_encoder;
}

#[test]
fn a_muted_participant_is_absent_from_every_mix() {
    let t0 = Instant::now();
    let mut room = Room::new(settings("grid"), t0).unwrap();
    let mut senders = three_senders();
    join_all(&mut room, &senders, t0);
    room.handle_input(
        Input::SetMuted {
            id: ParticipantId(1),
            muted: true,
        },
        t0,
    );
    let mut out = Collected::default();
    run(&mut room, t0, 0, 1000, &mut out, feed_all(&mut senders));
    for listener in [Listener::Participant(ParticipantId(2)), Listener::FullMix] {
        let pcm = out.decode_audio(listener);
        let pcm = &pcm[pcm.len() / 2..];
        let ann = goertzel_power(pcm, 300.0, 48_000);
        let cy = goertzel_power(pcm, 900.0, 48_000);
        assert!(
            cy > ann * 1000.0,
            "{listener:?} still hears muted Ann ({ann} vs {cy})"
        );
    }
}

/// Tile areas all within a few percent of each other (pixel rounding): a grid.
fn equal_tiles(areas: &[u32]) -> bool {
    let (lo, hi) = (areas.iter().min(), areas.iter().max());
    matches!((lo, hi), (Some(lo), Some(hi)) if *hi * 20 <= *lo * 21)
}

#[test]
fn a_shared_screen_takes_the_share_layouts_big_tile_letterboxed_whoever_speaks() {
    let t0 = Instant::now();
    let mut cfg = Config::embedded();
    // Cameras are cropped to their tiles; the share must not be.
    cfg.video.fit = tessera_config::Fit::Crop;
    let mut s = RoomSettings::from_config(&cfg, "grid", &Assets::load(&cfg).unwrap()).unwrap();
    s.tiers.retain(|t| &*t.id.name == "low");
    s.tiers[0].fps = FPS;
    s.tiers[0].bitrate_bps = 800_000;
    s.always_encode = vec![low()];
    assert_eq!(s.share_layout.name(), "presenter");
    let mut room = Room::new(s, t0).unwrap();
    let mut senders = three_senders();
    join_all(&mut room, &senders, t0);
    // Ann's camera is the share; Cy is the one talking.
    room.handle_input(Input::SetShare(Some(ParticipantId(1))), t0);
    let mut out = Collected::default();
    run(
        &mut room,
        t0,
        0,
        2000,
        &mut out,
        feed_talker(&mut senders, ParticipantId(3)),
    );
    assert_eq!(room.active_speaker(), Some(ParticipantId(3)));
    assert_eq!(room.share(), Some(ParticipantId(1)));
    let rects = room.tile_rects(&low());
    let (id, r) = *rects.iter().max_by_key(|(_, r)| r.w * r.h).unwrap();
    assert_eq!(
        id,
        ParticipantId(1),
        "the share is not the big tile: {rects:?}"
    );
    // presenter: 75% of the width, all the height.
    assert!(r.w > 640 * 7 / 10 && r.h > 360 * 9 / 10, "{r:?}");
    let picture = out.last_picture(VideoCodec::Vp8);
    // A 16:9 picture in a 4:3 tile: bars above and below, the picture whole in between.
    let bg = cfg.video.background.clone();
    let bg = Rgb::parse_hex(&bg).unwrap();
    let fitted_h = r.w * 9 / 16;
    let bar = (r.h - fitted_h) / 2;
    assert!(bar > 20, "{r:?}");
    assert!(
        colour_close(
            picture.mean_yuv(Rect::new(r.x + r.w / 4, r.y + 2, r.w / 2, bar - 8)),
            bg
        ),
        "no bar above the share: it was cropped"
    );
    assert!(colour_close(
        picture.mean_yuv(Rect::new(r.x + r.w / 4, r.y + bar + 10, r.w / 2, 20)),
        senders[0].colour
    ));
    // The share ends: the room's own layout (grid: equal tiles) again.
    room.handle_input(Input::SetShare(None), t0 + Duration::from_millis(2000));
    run(&mut room, t0, 2000, 2200, &mut out, feed_all(&mut senders));
    let sizes: Vec<u32> = room
        .tile_rects(&low())
        .iter()
        .map(|(_, r)| r.w * r.h)
        .collect();
    assert!(equal_tiles(&sizes), "not a grid again: {sizes:?}");
}

#[test]
fn a_tier_variant_with_its_own_layout_draws_it_beside_the_rooms() {
    let t0 = Instant::now();
    let mut s = settings("grid");
    let mut own = s.tiers[0].clone();
    own.id = low().in_layout("speaker");
    own.layout = Some(LayoutSpec::Speaker);
    s.always_encode.push(own.id.clone());
    let mut room = Room::new(s, t0).unwrap();
    room.handle_input(Input::AddTiers(vec![own.clone(), own]), t0);
    assert_eq!(
        room.settings().tiers.len(),
        2,
        "a known name is not added twice"
    );
    let mut senders = three_senders();
    join_all(&mut room, &senders, t0);
    let mut out = Collected::default();
    run(&mut room, t0, 0, 600, &mut out, feed_all(&mut senders));
    let mut encoding: Vec<String> = room
        .encoding_tiers()
        .iter()
        .map(|t| t.to_string())
        .collect();
    encoding.sort();
    assert_eq!(encoding, ["low", "low@speaker"]);
    let area = |tier: &str| -> Vec<u32> {
        let id = match tier.split_once('@') {
            Some((_, layout)) => low().in_layout(layout),
            None => low(),
        };
        room.tile_rects(&id)
            .iter()
            .map(|(_, r)| r.w * r.h)
            .collect()
    };
    let grid = area("low");
    assert_eq!(grid.len(), 3);
    assert!(equal_tiles(&grid), "{grid:?}");
    let speaker = area("low@speaker");
    assert_eq!(speaker.len(), 3);
    let big = *speaker.iter().max().unwrap();
    assert!(
        speaker.iter().filter(|a| **a == big).count() == 1 && big > 2 * grid[0],
        "no big speaker tile: {speaker:?}"
    );
}
