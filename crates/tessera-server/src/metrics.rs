//! `GET /metrics`: Prometheus text exposition, built with `prometheus-client` from a
//! snapshot of every room (taken by asking each room thread) at scrape time. Nothing is
//! counted twice: the rooms keep their counters, this only reads them.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::reload::ReloadStatus;
use crate::room::RoomInfo;

#[derive(Debug)]
pub struct Snapshot {
    pub rooms: Vec<RoomInfo>,
    pub reload: ReloadStatus,
    /// Refusals by `[limits]` (and token) name.
    pub refusals: Vec<(&'static str, u64)>,
    /// WebSocket sessions running.
    pub sessions: usize,
    /// Tokio tasks alive (network side: sessions, HTTP).
    pub tasks: usize,
    /// The media reactor's counters.
    pub media: crate::media::PlaneStats,
    /// A node of a cluster: its Redis state and routing counts.
    pub cluster: Option<crate::cluster::Stats>,
    /// Recordings: running now, started and failed since start, bytes of the running ones.
    pub recordings: crate::recording::Counts,
}

type Labels = Vec<(&'static str, String)>;
/// A per-participant network counter: name after `tessera_participant_`, help, value.
type NetCounter = (
    &'static str,
    &'static str,
    fn(&crate::room::NetStats) -> u64,
);

fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: Vec<(Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let mut e = enc.encode_descriptor(name, help, None, first.1.metric_type())?;
    for (labels, m) in &rows {
        m.encode(e.encode_family(labels)?)?;
    }
    Ok(())
}

/// One metric without labels.
fn single<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    m: M,
) -> Result<(), std::fmt::Error> {
    m.encode(enc.encode_descriptor(name, help, None, m.metric_type())?)
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn counter_f(v: f64) -> ConstCounter<f64> {
    ConstCounter::new(v)
}

fn gauge(v: f64) -> ConstGauge<f64> {
    ConstGauge::new(v)
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut enc;
        single(
            e,
            "tessera_rooms",
            "Rooms running.",
            gauge(self.rooms.len() as f64),
        )?;
        let people: usize = self.rooms.iter().map(|r| r.participants.len()).sum();
        single(
            e,
            "tessera_participants",
            "Participants in all rooms.",
            gauge(people as f64),
        )?;
        single(
            e,
            "tessera_config_reloads",
            "Config files applied live.",
            counter(self.reload.reloads),
        )?;
        single(
            e,
            "tessera_config_rejected",
            "Config files refused (the running config was kept).",
            counter(self.reload.rejected),
        )?;

        family(
            e,
            "tessera_limit_refusals",
            "Joins, messages and sessions refused or ended by a limit (see [limits]).",
            self.refusals
                .iter()
                .map(|(l, n)| (vec![("limit", l.to_string())], counter(*n)))
                .collect(),
        )?;
        single(
            e,
            "tessera_websocket_sessions",
            "WebSocket signalling sessions open.",
            gauge(self.sessions as f64),
        )?;
        let r = &self.recordings;
        single(
            e,
            "tessera_recordings_active",
            "Recordings being written now.",
            gauge(r.active as f64),
        )?;
        single(
            e,
            "tessera_recordings_started",
            "Recordings started since the server started.",
            counter(r.started),
        )?;
        single(
            e,
            "tessera_recordings_failed",
            "Recordings that ended in an error (ffmpeg, a full disk) since the server started.",
            counter(r.failed),
        )?;
        single(
            e,
            "tessera_streams_active",
            "RTMP streams running now (sending or reconnecting).",
            gauge(r.streams_active as f64),
        )?;
        single(
            e,
            "tessera_stream_reconnects",
            "Times an RTMP stream broke and was reconnected, since the server started.",
            counter(r.stream_reconnects),
        )?;
        single(
            e,
            "tessera_recording_bytes",
            "Bytes written so far by the recordings running now.",
            gauge(r.bytes as f64),
        )?;
        single(
            e,
            "tessera_tokio_tasks",
            "Tokio tasks alive in the server process.",
            gauge(self.tasks as f64),
        )?;
        if let Some(c) = &self.cluster {
            let flag = |b: bool| gauge(if b { 1.0 } else { 0.0 });
            single(
                e,
                "tessera_cluster_redis_up",
                "1 while the last heartbeat reached Redis.",
                flag(c.redis_up),
            )?;
            single(
                e,
                "tessera_cluster_draining",
                "1 while this node drains (takes no new rooms).",
                flag(c.draining),
            )?;
            family(
                e,
                "tessera_cluster_proxied",
                "Requests this node passed on to the room's node: WebSocket sessions (ws) and HTTP requests (http).",
                vec![
                    (vec![("kind", "ws".to_string())], counter(c.proxied_ws)),
                    (vec![("kind", "http".to_string())], counter(c.proxied_http)),
                ],
            )?;
            single(
                e,
                "tessera_cluster_hop_refused",
                "Node-to-node calls refused for a bad or stale signature (cluster.secret).",
                counter(c.bad_hops),
            )?;
            single(
                e,
                "tessera_cluster_rooms_lost",
                "Rooms this node lost to a newer claim after its own lapsed (participants told to rejoin).",
                counter(c.rooms_lost),
            )?;
            single(
                e,
                "tessera_cluster_redis_errors",
                "Redis calls and heartbeats that failed.",
                counter(c.redis_errors),
            )?;
        }

        let m = &self.media;
        single(
            e,
            "tessera_media_udp_sockets",
            "UDP sockets the media reactor owns (one per host address, shared by everyone).",
            gauge(m.udp_sockets as f64),
        )?;
        single(
            e,
            "tessera_media_connections",
            "PeerConnections the media reactor drives.",
            gauge(m.connections as f64),
        )?;
        single(
            e,
            "tessera_media_tcp_connections",
            "ICE-TCP connections open (network.tcp_port).",
            gauge(m.tcp_connections as f64),
        )?;
        for (name, help, v) in [
            (
                "tessera_media_tcp_refused",
                "ICE-TCP connections refused because too many were open.",
                m.tcp_refused,
            ),
            ("tessera_media_datagrams_in", "Datagrams (and ICE-TCP frames) received on the media ports.", m.datagrams_in),
            ("tessera_media_datagrams_out", "Datagrams (and ICE-TCP frames) sent from the media ports.", m.datagrams_out),
            (
                "tessera_media_datagrams_unroutable",
                "Datagrams from an address no connection verified, without a ufrag of ours: dropped.",
                m.datagrams_unroutable,
            ),
            ("tessera_media_send_errors", "Datagrams the socket refused to send.", m.send_errors),
            (
                "tessera_media_shed",
                "Room output dropped because the media reactor's queue was full.",
                m.media_shed,
            ),
            (
                "tessera_media_frames_packetized",
                "Composite frames packetized (once per frame and codec).",
                m.frames_packetized,
            ),
            (
                "tessera_media_frames_reused",
                "Composite frames sent to a further receiver without packetizing again.",
                m.frames_reused,
            ),
        ] {
            single(e, name, help, counter(v))?;
        }

        let room = |r: &RoomInfo| -> Labels { vec![("room", r.room.clone())] };
        let per_room = |f: &dyn Fn(&RoomInfo) -> f64| -> Vec<(Labels, ConstCounter<f64>)> {
            self.rooms
                .iter()
                .map(|r| (room(r), counter_f(f(r))))
                .collect()
        };
        family(
            e,
            "tessera_room_busy_seconds",
            "Time each room thread spent working (decode, compose, mix, encode).",
            per_room(&|r| r.busy_secs),
        )?;
        family(
            e,
            "tessera_room_audio_ticks_skipped",
            "20 ms audio ticks a late room thread skipped.",
            per_room(&|r| r.audio_ticks_skipped as f64),
        )?;
        family(
            e,
            "tessera_room_commands_dropped",
            "Media handed to a room thread whose queue was full.",
            per_room(&|r| r.commands_dropped as f64),
        )?;

        let tiers =
            |f: &dyn Fn(&crate::room::TierReport) -> f64| -> Vec<(Labels, ConstGauge<f64>)> {
                self.rooms
                    .iter()
                    .flat_map(|r| {
                        r.tiers.iter().map(move |t| {
                            (
                                vec![
                                    ("room", r.room.clone()),
                                    ("tier", t.name.clone()),
                                    ("codec", t.codec.clone()),
                                ],
                                gauge(f(t)),
                            )
                        })
                    })
                    .collect()
            };
        family(
            e,
            "tessera_tier_fps",
            "Composite frames encoded per second.",
            tiers(&|t| t.fps_out),
        )?;
        family(
            e,
            "tessera_tier_bitrate_kbps",
            "Composite bitrate out.",
            tiers(&|t| t.kbps_out),
        )?;
        family(
            e,
            "tessera_tier_receivers",
            "Participants receiving the tier.",
            tiers(&|t| t.receivers as f64),
        )?;
        let tier_counters =
            |f: &dyn Fn(&crate::room::TierReport) -> u64| -> Vec<(Labels, ConstCounter<u64>)> {
                self.rooms
                    .iter()
                    .flat_map(|r| {
                        r.tiers.iter().map(move |t| {
                            (
                                vec![
                                    ("room", r.room.clone()),
                                    ("tier", t.name.clone()),
                                    ("codec", t.codec.clone()),
                                ],
                                counter(f(t)),
                            )
                        })
                    })
                    .collect()
            };
        family(
            e,
            "tessera_tier_frames_encoded",
            "Composite frames encoded.",
            tier_counters(&|t| t.frames_encoded),
        )?;
        family(
            e,
            "tessera_tier_keyframes",
            "Keyframes encoded.",
            tier_counters(&|t| t.keyframes),
        )?;
        let tier_secs =
            |f: &dyn Fn(&crate::room::TierReport) -> f64| -> Vec<(Labels, ConstCounter<f64>)> {
                self.rooms
                    .iter()
                    .flat_map(|r| {
                        r.tiers.iter().map(move |t| {
                            (
                                vec![
                                    ("room", r.room.clone()),
                                    ("tier", t.name.clone()),
                                    ("codec", t.codec.clone()),
                                ],
                                counter_f(f(t)),
                            )
                        })
                    })
                    .collect()
            };
        family(
            e,
            "tessera_tier_encode_seconds",
            "Time spent encoding the composite.",
            tier_secs(&|t| t.encode_secs),
        )?;
        family(
            e,
            "tessera_tier_compose_seconds",
            "Time spent composing the canvas.",
            tier_secs(&|t| t.compose_secs),
        )?;
        family(
            e,
            "tessera_tier_late_ticks",
            "Frames skipped because the room thread was late.",
            tier_counters(&|t| t.late_ticks),
        )?;

        let parts = |f: &dyn Fn(&crate::room::ParticipantReport) -> u64| -> Vec<(Labels, ConstCounter<u64>)> {
            self.rooms
                .iter()
                .flat_map(|r| {
                    r.participants.iter().map(move |p| {
                        (vec![("room", r.room.clone()), ("participant", p.id.clone())], counter(f(p)))
                    })
                })
                .collect()
        };
        if self.rooms.iter().any(|r| r.mix_latency.count > 0) {
            let h = prometheus_client::metrics::histogram::Histogram::new([0.0f64; 0]);
            let mut enc = e.encode_descriptor(
                "tessera_mix_latency_seconds",
                "Camera frame arrival at the room to the first composite that shows it.",
                None,
                h.metric_type(),
            )?;
            for r in self.rooms.iter().filter(|r| r.mix_latency.count > 0) {
                let l = &r.mix_latency;
                let buckets: Vec<(f64, u64)> = crate::room::LATENCY_BUCKETS
                    .iter()
                    .copied()
                    .chain([f64::MAX])
                    .zip(l.counts.iter().copied())
                    .collect();
                let labels = vec![("room", r.room.clone())];
                enc.encode_family(&labels)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        l.sum_secs, l.count, &buckets, None,
                    )?;
            }
        }
        let report = |f: &dyn Fn(&crate::room::ParticipantReport) -> Option<f64>| -> Vec<(Labels, ConstGauge<f64>)> {
            self.rooms
                .iter()
                .flat_map(|r| {
                    r.participants.iter().filter_map(move |p| {
                        f(p).map(|v| (vec![("room", r.room.clone()), ("participant", p.id.clone())], gauge(v)))
                    })
                })
                .collect()
        };
        family(
            e,
            "tessera_participant_packet_loss_ratio",
            "Fraction of the composite's packets the receiver reports lost (last receiver report).",
            report(&|p| p.report_loss.map(f64::from)),
        )?;
        family(
            e,
            "tessera_participant_jitter_seconds",
            "Interarrival jitter of the composite the receiver reports.",
            report(&|p| p.report_jitter_ms.map(|j| j / 1000.0)),
        )?;
        family(
            e,
            "tessera_participant_video_frames_in",
            "Camera frames received.",
            parts(&|p| p.video_frames_in),
        )?;
        family(
            e,
            "tessera_participant_audio_packets_in",
            "Opus packets received.",
            parts(&|p| p.audio_packets_in),
        )?;
        family(
            e,
            "tessera_participant_decode_errors",
            "Camera frames that failed to decode.",
            parts(&|p| p.video_decode_errors),
        )?;
        family(
            e,
            "tessera_participant_keyframe_requests",
            "PLIs sent to the participant's camera.",
            parts(&|p| p.keyframe_requests),
        )?;
        family(
            e,
            "tessera_participant_frames_lost",
            "Camera frames lost to packet loss the NACKs did not repair.",
            parts(&|p| p.net.video_frames_lost),
        )?;
        family(
            e,
            "tessera_participant_rtp_late",
            "Camera RTP packets that arrived too late.",
            parts(&|p| p.net.rtp_late),
        )?;
        family(
            e,
            "tessera_participant_audio_decode_errors",
            "Opus packets that failed to decode.",
            parts(&|p| p.audio_decode_errors),
        )?;
        let net: [NetCounter; 10] = [
            (
                "rtp_bad_payload_type",
                "RTP packets with a payload type not accepted for their media: dropped.",
                |n| n.rtp_bad_payload_type,
            ),
            (
                "rtp_oversized",
                "RTP packets with a payload too large for a 1500-byte MTU: dropped.",
                |n| n.rtp_oversized,
            ),
            (
                "rtp_empty",
                "RTP packets with no payload (padding): skipped.",
                |n| n.rtp_empty,
            ),
            (
                "rtp_malformed",
                "Camera RTP payloads the depacketizer refused.",
                |n| n.rtp_malformed,
            ),
            (
                "video_frames_too_large",
                "Camera frames over 2 MiB: dropped.",
                |n| n.video_frames_too_large,
            ),
            (
                "rtp_resyncs",
                "Jumps in the camera's RTP sequence numbers that restarted its stream.",
                |n| n.rtp_resyncs,
            ),
            ("codec_switches", "Camera codec changes mid-stream.", |n| {
                n.codec_switches
            }),
            (
                "rtp_unknown_ssrc",
                "RTP packets of an SSRC no track was bound to: dropped by webrtc-rs.",
                |n| n.rtp_unknown_ssrc,
            ),
            (
                "extra_tracks",
                "Audio or video tracks beyond the first of each kind: ignored.",
                |n| n.extra_tracks,
            ),
            (
                "retransmissions_refused",
                "Composite packets NACKed by the receiver and not resent: over its retransmission budget.",
                |n| n.retransmissions_refused,
            ),
        ];
        for (name, help, get) in net {
            family(
                e,
                &format!("tessera_participant_{name}"),
                help,
                parts(&|p| get(&p.net)),
            )?;
        }
        family(
            e,
            "tessera_participant_media_dropped",
            "Composite frames and audio packets dropped because the participant's queue was full.",
            parts(&|p| p.media_dropped),
        )?;
        Ok(())
    }
}

/// The text a scrape returns.
pub fn render(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut out = String::new();
    // Encoding into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::LatencyHistogram;

    #[test]
    fn latency_histogram_is_exposed_cumulatively() {
        let mut info = empty_room();
        info.mix_latency = LatencyHistogram {
            counts: vec![0, 2, 3, 0, 0, 0, 0, 0, 0, 1],
            sum_secs: 0.1,
            count: 6,
        };
        let text = render(Snapshot {
            rooms: vec![info],
            reload: ReloadStatus::default(),
            refusals: vec![("join_rate", 3)],
            sessions: 1,
            tasks: 7,
            media: crate::media::PlaneStats {
                udp_sockets: 2,
                ..Default::default()
            },
            cluster: Some(crate::cluster::Stats {
                redis_up: true,
                draining: false,
                proxied_ws: 4,
                proxied_http: 2,
                bad_hops: 1,
                rooms_lost: 0,
                redis_errors: 0,
            }),
            recordings: crate::recording::Counts {
                active: 1,
                started: 3,
                failed: 1,
                bytes: 4096,
                streams_active: 1,
                stream_reconnects: 2,
            },
        });
        assert!(text.contains("tessera_media_udp_sockets 2"), "{text}");
        for line in [
            "tessera_recordings_active 1",
            "tessera_recordings_started_total 3",
            "tessera_recordings_failed_total 1",
            "tessera_recording_bytes 4096",
            "tessera_streams_active 1",
            "tessera_stream_reconnects_total 2",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            text.contains("tessera_limit_refusals_total{limit=\"join_rate\"} 3"),
            "{text}"
        );
        for line in [
            "tessera_cluster_redis_up 1",
            "tessera_cluster_proxied_total{kind=\"ws\"} 4",
            "tessera_cluster_hop_refused_total 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            text.contains("tessera_mix_latency_seconds_bucket{le=\"0.01\",room=\"r\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tessera_mix_latency_seconds_bucket{le=\"0.02\",room=\"r\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("tessera_mix_latency_seconds_bucket{le=\"+Inf\",room=\"r\"} 6"),
            "{text}"
        );
        assert!(
            text.contains("tessera_mix_latency_seconds_count{room=\"r\"} 6"),
            "{text}"
        );
    }

    fn empty_room() -> RoomInfo {
        RoomInfo {
            room: "r".into(),
            layout: "grid".into(),
            uptime_secs: 0,
            participants: Vec::new(),
            tiers: Vec::new(),
            audio_ticks: 0,
            audio_ticks_skipped: 0,
            active_speaker: None,
            sharing: None,
            commands_dropped: 0,
            busy_secs: 0.0,
            mix_latency: LatencyHistogram::default(),
        }
    }
}
