use std::time::Duration;

use tessera_engine::TierId;
use tessera_proto::ErrorCode;

use super::*;

fn settings() -> RoomSettings {
    let cfg = tessera_config::Config::embedded();
    let assets = tessera_engine::Assets::load(&cfg).unwrap();
    RoomSettings::from_config(&cfg, "grid", &assets).unwrap()
}

fn sink() -> (Sink, tmpsc::UnboundedReceiver<ServerMessage>) {
    let (media, _) = crate::media::MediaTx::channel(4);
    let (events, rx) = tmpsc::unbounded_channel();
    (Sink { media, events }, rx)
}

fn join(room: &RoomHandle, id: u64, sink: Sink) {
    assert!(room.send(Command::Join(Box::new(JoinRequest {
        id: ParticipantId(id),
        name: format!("P{id}"),
        kind: MemberKind::WebSocket,
        owner: None,
        options: JoinOptions {
            sends_video: false,
            sends_audio: true,
            receive_tier: None,
            receives_audio: true,
        },
        codec_out: None,
        bandwidth: None,
        caps: TierCaps::default(),
        sink,
    }))));
}

async fn tier_of(room: &RoomHandle, id: &str) -> Option<String> {
    let info = room.ask(|reply| Command::Info { reply }).await.unwrap();
    info.participants
        .iter()
        .find(|p| p.id == id)
        .unwrap()
        .tier
        .clone()
}

fn receiver(id: u64, media: crate::media::MediaTx) -> Command {
    let (events, _) = tmpsc::unbounded_channel();
    Command::Join(Box::new(JoinRequest {
        id: ParticipantId(id),
        name: format!("R{id}"),
        kind: MemberKind::WebSocket,
        owner: None,
        options: JoinOptions {
            sends_video: false,
            sends_audio: true,
            receive_tier: Some(TierId::new("low", VideoCodec::Vp8)),
            receives_audio: true,
        },
        codec_out: Some(VideoCodec::Vp8),
        bandwidth: None,
        caps: TierCaps::default(),
        sink: Sink { media, events },
    }))
}

fn screen(id: u64, name: &str, owner: Option<u64>, sink: Sink) -> Command {
    Command::Join(Box::new(JoinRequest {
        id: ParticipantId(id),
        name: name.into(),
        kind: MemberKind::Screen,
        owner: owner.map(ParticipantId),
        options: JoinOptions {
            sends_video: true,
            sends_audio: true,
            receive_tier: None,
            receives_audio: false,
        },
        codec_out: None,
        bandwidth: None,
        caps: TierCaps::default(),
        sink,
    }))
}

/// The next `sharing` message in `rx`, skipping others, within 5 s.
async fn next_sharing(
    rx: &mut tmpsc::UnboundedReceiver<ServerMessage>,
) -> (Option<String>, Option<String>) {
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(ServerMessage::Sharing { id, name })) => return (id, name),
            Ok(Some(_)) => {}
            other => panic!("no sharing message: {other:?}"),
        }
    }
}

#[tokio::test]
async fn one_share_at_a_time_a_new_one_replaces_the_old_and_everyone_is_told() {
    let room = spawn("share", "grid".into(), settings()).unwrap();
    let (ann, mut ann_rx) = sink();
    let (bo, mut bo_rx) = sink();
    join(&room, 1, ann);
    join(&room, 2, bo);
    // P1's share, found by its name.
    let (share1, mut share1_rx) = sink();
    assert!(room.send(screen(11, "P1", None, share1)));
    let p1 = ParticipantId(1).to_string();
    assert_eq!(
        next_sharing(&mut bo_rx).await,
        (Some(p1.clone()), Some("P1".into()))
    );
    assert_eq!(next_sharing(&mut ann_rx).await.0, Some(p1.clone()));
    let info = room.ask(|reply| Command::Info { reply }).await.unwrap();
    assert_eq!(info.sharing, Some(p1));
    let (list, _) = room.ask(|reply| Command::List { reply }).await.unwrap();
    assert_eq!(
        list.len(),
        2,
        "a share is not listed as a participant: {list:?}"
    );
    // P2 shares: P1's share is removed (and told), everyone hears of P2's.
    let (share2, _share2_rx) = sink();
    assert!(room.send(screen(12, "P2", Some(2), share2)));
    let p2 = ParticipantId(2).to_string();
    assert_eq!(next_sharing(&mut ann_rx).await.0, Some(p2.clone()));
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(until, share1_rx.recv()).await {
            Ok(Some(ServerMessage::Error {
                code: ErrorCode::Removed,
                fatal: true,
                reason,
            })) => {
                assert!(reason.contains("P2 shares a screen now"), "{reason}");
                break;
            }
            Ok(Some(_)) => {}
            other => panic!("the replaced share was not told: {other:?}"),
        }
    }
    let info = room.ask(|reply| Command::Info { reply }).await.unwrap();
    let kinds: Vec<MemberKind> = info.participants.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [
            MemberKind::WebSocket,
            MemberKind::WebSocket,
            MemberKind::Screen
        ],
        "{kinds:?}"
    );
    // The share ends: nobody shares.
    room.send(Command::Leave {
        id: ParticipantId(12),
    });
    assert_eq!(
        next_sharing(&mut bo_rx).await,
        (Some(p2), Some("P2".into()))
    );
    assert_eq!(next_sharing(&mut bo_rx).await, (None, None));
    room.send(Command::Stop);
}

/// How a second receiver of the healthy one's tier misbehaves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Other {
    Absent,
    /// Never reads its queue.
    Stalled,
    /// Reads everything but sends a keyframe request every 100 ms.
    Lossy,
}

/// Runs a room for `secs` with a healthy receiver (and `other`), returning the healthy
/// receiver's (frames, keyframes) and the room's info at the end.
async fn run_receivers(name: &str, other: Other, secs: u64) -> ((u32, u32), RoomInfo) {
    let room = spawn(name, "grid".into(), settings()).unwrap();
    let (tx, mut rx) = crate::media::MediaTx::channel(160);
    assert!(room.send(receiver(2, tx)));
    let (other_tx, mut other_rx) = crate::media::MediaTx::channel(4);
    if other != Other::Absent {
        assert!(room.send(receiver(1, other_tx)));
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    if other == Other::Lossy {
        let room = room.clone();
        tokio::spawn(async move {
            while tokio::time::Instant::now() < until {
                while other_rx.try_recv().is_ok() {}
                room.send(Command::ReceiverKeyframe {
                    id: ParticipantId(1),
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    let (mut frames, mut keyframes) = (0u32, 0u32);
    while let Ok(Some((_, m))) = tokio::time::timeout_at(until, rx.recv()).await {
        if let MediaOut::Video(v, _) = m {
            frames += 1;
            keyframes += v.keyframe as u32;
        }
    }
    let info = room.ask(|reply| Command::Info { reply }).await.unwrap();
    room.send(Command::Stop);
    ((frames, keyframes), info)
}

#[tokio::test]
async fn a_stalled_or_lossy_receiver_costs_the_others_at_most_one_keyframe() {
    // Side by side: the same 8 s without the other receiver, with it stalled, and with
    // it asking for keyframes ten times a second.
    let (alone, stalled, lossy) = tokio::join!(
        run_receivers("alone", Other::Absent, 8),
        run_receivers("stalled", Other::Stalled, 8),
        run_receivers("lossy", Other::Lossy, 8),
    );
    let ((_, base), _) = alone;
    for (what, ((frames, keyframes), info)) in [("stalled", stalled), ("lossy", lossy)] {
        let p = |id: &str| info.participants.iter().find(|p| p.id == id).unwrap();
        // The low tier runs at 15 fps: the healthy reader got (nearly) all of 8 s.
        assert!(frames >= 100, "{what}: {frames} frames in 8 s");
        assert!(
            keyframes <= base + 1,
            "{what}: the healthy receiver got {keyframes} keyframes, {base} without it"
        );
        assert_eq!(p("p2").media_dropped, 0, "{what}");
        assert!(p("p1").keyframe_requests_deferred + p("p1").held_frames_dropped > 0);
    }
}

#[tokio::test]
async fn a_new_receiver_whose_first_keyframe_was_lost_gets_another_within_seconds() {
    // A healthy receiver shares the tier, so keyframe requests are rate-limited. The new
    // one connects, receives its keyframe, and (as if the keyframe never arrived) keeps
    // asking for one: it must not wait `receiver_keyframe_interval` (10 s).
    let room = spawn("new-receiver", "grid".into(), settings()).unwrap();
    let (healthy_tx, mut healthy_rx) = crate::media::MediaTx::channel(160);
    assert!(room.send(receiver(2, healthy_tx)));
    tokio::spawn(async move { while healthy_rx.recv().await.is_some() {} });
    let (tx, mut rx) = crate::media::MediaTx::channel(160);
    assert!(room.send(receiver(1, tx)));
    // It connects just after its tier's keyframe (the one its join caused).
    let joined_keyframe = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some((_, m)) = rx.recv().await {
            if matches!(m, MediaOut::Video(ref v, _) if v.keyframe) {
                return;
            }
        }
    })
    .await;
    assert!(joined_keyframe.is_ok(), "no keyframe after joining");
    assert!(room.send(Command::ReceiverConnected {
        id: ParticipantId(1)
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut keyframes = 0u32;
    let mut next_pli = tokio::time::Instant::now();
    while keyframes < 3 {
        let m = tokio::time::timeout_at(next_pli.min(deadline), rx.recv()).await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "{keyframes} keyframes in 5 s after connecting"
        );
        if let Ok(Some((_, MediaOut::Video(v, _)))) = m {
            keyframes += v.keyframe as u32;
        }
        if tokio::time::Instant::now() >= next_pli {
            room.send(Command::ReceiverKeyframe {
                id: ParticipantId(1),
            });
            next_pli += Duration::from_millis(100);
        }
    }
    room.send(Command::Stop);
}

#[tokio::test]
async fn the_bandwidth_estimate_moves_a_receiver_down_to_audio_only_and_back_up() {
    let room = spawn("bw", "grid".into(), settings()).unwrap();
    let (sink, mut events) = sink();
    let cfg = tessera_engine::BandwidthConfig {
        start_bps: 3_000_000,
        // Switch on the first report that calls for it: the controller's own tests
        // cover the timing.
        down_after: Duration::ZERO,
        startup_grace: Duration::ZERO,
        ..Default::default()
    };
    assert!(room.send(Command::Join(Box::new(JoinRequest {
        id: ParticipantId(1),
        name: "Ann".into(),
        kind: MemberKind::WebSocket,
        owner: None,
        options: JoinOptions {
            sends_video: false,
            sends_audio: true,
            receive_tier: Some(TierId::new("default", VideoCodec::Vp8)),
            receives_audio: true,
        },
        codec_out: Some(VideoCodec::Vp8),
        bandwidth: Some((cfg, true)),
        caps: TierCaps::default(),
        sink,
    }))));
    // A falling estimate comes with an overuse (a queue building on the link).
    let feedback = |bps: u64| Command::Feedback {
        id: ParticipantId(1),
        feedback: Feedback {
            twcc_bps: Some(bps),
            loss: Some(0.0),
            overuse: bps < 1_000_000,
            ..Default::default()
        },
        jitter_ms: None,
    };
    // Control (Info) overtakes media (Feedback): wait for each switch.
    let wait_tier = |want: Option<&'static str>| {
        let room = room.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let got = tier_of(&room, "p1").await;
                if got.as_deref() == want {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "tier {got:?}, want {want:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_tier(Some("default")).await;
    // The link drops to 300 kbit/s: straight to the tier that fits.
    room.send(feedback(300_000));
    wait_tier(Some("tiny")).await;
    // Audio only below the lowest tier.
    room.send(feedback(60_000));
    wait_tier(None).await;
    // It recovers (the estimate has the evidence): up one rung per report.
    for want in ["tiny", "low", "default"] {
        room.send(feedback(3_000_000));
        wait_tier(Some(want)).await;
    }
    let info = room.ask(|reply| Command::Info { reply }).await.unwrap();
    assert_eq!(info.participants[0].tier_switches, 5);
    assert_eq!(info.participants[0].estimate_source, Some("twcc"));
    // The client was told each tier.
    let mut told = Vec::new();
    while let Ok(m) = events.try_recv() {
        if let ServerMessage::Bandwidth { tier, .. } = m {
            told.push(tier);
        }
    }
    assert!(
        told.contains(&None) && told.contains(&Some("tiny".into())),
        "{told:?}"
    );
    room.send(Command::Stop);
}

#[tokio::test]
async fn caps_keep_a_receiver_below_its_display_and_the_room_maximum() {
    let room = spawn("caps", "grid".into(), settings()).unwrap();
    let join = |id: u64, caps: TierCaps| {
        let (sink, _events) = sink();
        Command::Join(Box::new(JoinRequest {
            id: ParticipantId(id),
            name: format!("C{id}"),
            kind: MemberKind::WebSocket,
            owner: None,
            options: JoinOptions {
                sends_video: false,
                sends_audio: true,
                receive_tier: Some(TierId::new("default", VideoCodec::Vp8)),
                receives_audio: true,
            },
            codec_out: Some(VideoCodec::Vp8),
            bandwidth: Some((
                tessera_engine::BandwidthConfig {
                    start_bps: 10_000_000,
                    ..Default::default()
                },
                true,
            )),
            caps,
            sink,
        }))
    };
    room.send(join(1, TierCaps::default()));
    room.send(join(
        2,
        TierCaps {
            display: Some((640, 360)),
            ..Default::default()
        },
    ));
    room.send(join(
        3,
        TierCaps {
            max_tier: Some("tiny".into()),
            ..Default::default()
        },
    ));
    room.send(join(
        4,
        TierCaps {
            display: Some((100, 50)),
            ..Default::default()
        },
    ));
    assert_eq!(tier_of(&room, "p1").await.as_deref(), Some("default"));
    assert_eq!(tier_of(&room, "p2").await.as_deref(), Some("low"));
    assert_eq!(tier_of(&room, "p3").await.as_deref(), Some("tiny"));
    assert_eq!(
        tier_of(&room, "p4").await.as_deref(),
        Some("tiny"),
        "the smallest tier whatever the display"
    );
    room.send(Command::Stop);
}

#[tokio::test]
async fn a_newcomer_hears_of_everyone_already_in_the_room() {
    let room = spawn("newcomer", "grid".into(), settings()).unwrap();
    let (s1, _e1) = sink();
    let (s2, mut e2) = sink();
    join(&room, 1, s1);
    join(&room, 2, s2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, e2.recv()).await {
            Ok(Some(ServerMessage::ParticipantUpdated { participant })) => {
                assert_eq!(participant.id, "p1");
                break;
            }
            Ok(Some(_)) => {}
            other => panic!("p2 never heard of p1: {other:?}"),
        }
    }
    room.send(Command::Stop);
}

#[tokio::test]
async fn a_leave_sent_while_the_media_queue_is_full_still_removes_the_participant() {
    let room = spawn("full", "grid".into(), settings()).unwrap();
    let (s1, _e1) = sink();
    let (s2, _e2) = sink();
    join(&room, 1, s1);
    join(&room, 2, s2);
    assert!(room.send(Command::Stall(Duration::from_millis(500))));
    // Media until the queue refuses it: the room is stalled.
    let mut refused = false;
    for _ in 0..COMMAND_QUEUE * 2 {
        if !room.send(Command::Audio {
            id: ParticipantId(1),
            packet: vec![0xf8, 0xff, 0xfe],
        }) {
            refused = true;
            break;
        }
    }
    assert!(refused, "the media queue fills while the room is stalled");
    assert!(room.send(Command::Leave {
        id: ParticipantId(1)
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (list, _) = room.ask(|reply| Command::List { reply }).await.unwrap();
        if list.iter().all(|p| p.id != "p1") {
            assert!(
                list.iter().any(|p| p.id == "p2"),
                "the other stays: {list:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "p1 never left: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let info = room.ask(|reply| Command::Info { reply }).await.unwrap();
    assert!(info.commands_dropped > 0, "the shed media is counted");
    room.send(Command::Stop);
}

#[tokio::test]
async fn a_panicking_room_ends_alone_and_tells_its_participants() {
    let a = spawn("a", "grid".into(), settings()).unwrap();
    let b = spawn("b", "grid".into(), settings()).unwrap();
    let (sa, mut ea) = sink();
    let (sb, _eb) = sink();
    join(&a, 1, sa);
    join(&b, 2, sb);
    assert!(a.send(Command::Crash));

    let fatal = tokio::time::timeout(Duration::from_secs(5), ea.recv())
        .await
        .unwrap();
    assert!(
        matches!(
            fatal,
            Some(ServerMessage::Error {
                fatal: true,
                code: ErrorCode::Internal,
                ..
            })
        ),
        "{fatal:?}"
    );
    for _ in 0..50 {
        if !a.is_alive() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!a.is_alive(), "the crashed room is marked dead");
    let info = b
        .ask(|reply| Command::Info { reply })
        .await
        .expect("the other room answers");
    assert_eq!(info.participants.len(), 1);
    assert!(b.is_alive());
    b.send(Command::Stop);
}
