//! Entry points for the fuzz targets in `fuzz/` (`make fuzz`): each takes arbitrary bytes
//! through the code that handles what a remote peer sends, in the order the server does,
//! and must not panic whatever the bytes are. The tests below run the same functions on
//! stable in `cargo test`. Not part of the server's API.
//!
//! RTP inputs are a run of packets, each a 2-byte big-endian length and then that many
//! bytes of RTP (header and payload, as after SRTP); [`join_packets`] builds one.

use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::rtp::packet::Packet;
use rtc::shared::marshal::Unmarshal;
use tessera_codec::{AudioDecoder, VideoDecoder, VideoFrame, FRAME_SAMPLES};
use tessera_compose::{ComposeConfig, Compositor, Fit, LayoutSpec, TileInput};
use tessera_proto::ClientMessage;
use tessera_types::VideoCodec;
use webrtc::peer_connection::RTCSessionDescription;

use crate::media::ingest::{RtpIn, VideoIngest};
use crate::room::NetStats;
use crate::sdp;

/// Packets looked at per input, so that one input stays a few milliseconds of work.
const MAX_PACKETS: usize = 512;
/// Reassembled video frames decoded per input.
const MAX_FRAMES: usize = 64;

/// How far one input got, so that tests can check a seed reaches the decoder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    /// Packets that parsed as RTP.
    pub packets: usize,
    /// Packets refused by the RTP parser.
    pub bad_packets: usize,
    /// Whole frames out of the reassembler (video) or non-empty payloads (audio).
    pub frames: usize,
    /// Pictures or audio packets the decoder produced.
    pub decoded: usize,
    pub decode_errors: usize,
}

/// One signalling message as `session` handles it: parsed, then the parts the server
/// reads before anything else (names, the offer's SDP, a trickled candidate).
pub fn signalling(data: &[u8]) -> bool {
    // WebSocket text frames are UTF-8; binary frames are refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    if let Ok(m) = tessera_proto::parse_server(text) {
        let again: Result<tessera_proto::ServerMessage, _> = serde_json::from_str(&m.to_json());
        assert_eq!(again.ok().as_ref(), Some(&m), "server message round trip");
    }
    let Ok(msg) = tessera_proto::parse_client(text) else {
        return false;
    };
    // What we read we can write, and read back the same (the client half uses `to_json`).
    let again: Result<ClientMessage, _> = serde_json::from_str(&msg.to_json());
    assert_eq!(again.ok().as_ref(), Some(&msg), "client message round trip");
    match &msg {
        ClientMessage::Join { room, name, .. } => {
            let _ = crate::check_name("room", room);
            let _ = crate::check_name("participant", name);
        }
        ClientMessage::Offer { sdp } => {
            self::sdp(sdp.as_bytes());
        }
        ClientMessage::Candidate { candidate: Some(c) } => {
            // What webrtc-rs's add_remote_candidate parses.
            let value = c
                .candidate
                .strip_prefix("candidate:")
                .unwrap_or(&c.candidate);
            if !value.is_empty() {
                let _ = rtc::ice::candidate::unmarshal_candidate(value);
            }
        }
        _ => {}
    }
    true
}

/// An SDP offer as `session::start_media` reads it, then as webrtc-rs parses and answers
/// it; and `rewrite_candidates` (which runs on our own answers and candidates) on the text.
/// Returns how many media sections the offer has, if the server accepts it as SDP.
pub fn sdp(data: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(data).ok()?;
    let rewritten = sdp::rewrite_candidates(text, "203.0.113.7");
    assert_eq!(
        rewritten.split('\n').count(),
        text.split('\n').count(),
        "rewrite_candidates keeps every line"
    );
    let sections = sdp::sections(text).ok()?;
    for kind in ["audio", "video"] {
        if let Some(s) = sdp::find(&sections, kind) {
            let _ = (s.direction.sends(), s.direction.receives());
        }
    }
    if let Ok(offer) = RTCSessionDescription::offer(text.to_string()) {
        negotiate(offer);
    }
    Some(sections.len())
}

/// What `peer::answer` asks of webrtc-rs before any packet flows, sans IO: set the offer
/// as remote description on a PeerConnection with the server's codecs, create an answer.
fn negotiate(offer: RTCSessionDescription) -> bool {
    let Ok(media_engine) = crate::peer::media_engine() else {
        return false;
    };
    let now = std::time::Instant::now();
    let Ok(mut pc) = RTCPeerConnectionBuilder::new()
        .with_media_engine(media_engine)
        .build(now)
    else {
        return false;
    };
    pc.set_remote_description(now, offer).is_ok() && pc.create_answer(None).is_ok()
}

/// A camera track's RTP as the media plane's `VideoIngest` handles it (payload checks,
/// reassembly into frames), then as the room does (decoded, and drawn into a canvas,
/// cropped and letterboxed). Every payload type counts as `codec`, so that arbitrary bytes
/// reach the reassembler.
pub fn rtp_video(codec: VideoCodec, data: &[u8]) -> Reach {
    let mut reach = Reach::default();
    let mut decoder: Option<Box<dyn VideoDecoder>> = None;
    let mut compositor = None;
    // One instant for the whole input: the run depends on the bytes, not the clock.
    let at = std::time::Instant::now();
    let mut ingest = VideoIngest::new((0..128).map(|pt| (pt, codec)).collect(), at);
    let mut net = NetStats::default();
    for raw in split_packets(data).take(MAX_PACKETS) {
        let Some(p) = parse_rtp(raw, &mut reach) else {
            continue;
        };
        let rtp = RtpIn::from(p);
        for (_, frame) in ingest.push(rtp, at, &mut net).frames {
            reach.frames += 1;
            if reach.frames > MAX_FRAMES {
                return reach;
            }
            if decoder.is_none() {
                decoder = tessera_codec::new_video_decoder(codec).ok();
            }
            let Some(d) = decoder.as_mut() else {
                return reach;
            };
            match d.decode(&frame) {
                Ok(Some(picture)) => {
                    reach.decoded += 1;
                    draw(&mut compositor, &picture, reach.decoded);
                }
                Ok(None) => {}
                Err(_) => reach.decode_errors += 1,
            }
        }
    }
    reach
}

/// Draws `picture` as two tiles of a small canvas, the way a room's compositor would,
/// alternating crop and letterbox.
fn draw(compositor: &mut Option<Compositor>, picture: &VideoFrame, n: usize) {
    let mut cfg = ComposeConfig::new(64, 48);
    cfg.fit = if n.is_multiple_of(2) {
        Fit::Crop
    } else {
        Fit::Letterbox
    };
    let c = match compositor {
        Some(c) => {
            if c.set_config(cfg).is_err() {
                return;
            }
            c
        }
        None => match Compositor::new(cfg) {
            Ok(c) => compositor.insert(c),
            Err(_) => return,
        },
    };
    let tile = TileInput {
        name: "",
        frame: Some(picture),
        fit: None,
    };
    c.compose(&LayoutSpec::Speaker, &[tile, tile], Some(0));
}

/// A microphone track's RTP as `peer::read_audio` and the room handle it: each non-empty
/// payload decoded, and part of a frame concealed after it as on an underrun.
pub fn rtp_audio(data: &[u8]) -> Reach {
    let mut reach = Reach::default();
    let mut decoder: Option<Box<dyn AudioDecoder>> = None;
    let mut pcm = Vec::new();
    for raw in split_packets(data).take(MAX_PACKETS) {
        let Some(p) = parse_rtp(raw, &mut reach) else {
            continue;
        };
        if p.payload.is_empty() {
            continue;
        }
        reach.frames += 1;
        if decoder.is_none() {
            decoder = tessera_codec::new_audio_decoder().ok();
        }
        let Some(d) = decoder.as_mut() else {
            return reach;
        };
        match d.decode(&p.payload, &mut pcm) {
            Ok(()) => reach.decoded += 1,
            Err(_) => reach.decode_errors += 1,
        }
        // An underrun conceals what a 20 ms tick lacks: 1 to FRAME_SAMPLES samples.
        let missing = 1 + p.header.sequence_number as usize % FRAME_SAMPLES;
        let _ = d.conceal(missing, &mut pcm);
    }
    reach
}

fn parse_rtp(raw: &[u8], reach: &mut Reach) -> Option<Packet> {
    let mut buf = raw;
    match Packet::unmarshal(&mut buf) {
        Ok(p) => {
            reach.packets += 1;
            Some(p)
        }
        Err(_) => {
            reach.bad_packets += 1;
            None
        }
    }
}

/// Splits an RTP input into packets: a 2-byte big-endian length, then that many bytes; the
/// last packet takes whatever is left if it is short.
pub fn split_packets(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.len() < 2 {
            return None;
        }
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let (packet, tail) = rest[2..].split_at(len.min(rest.len() - 2));
        rest = tail;
        Some(packet)
    })
}

/// The inverse of [`split_packets`], for seeds and tests.
pub fn join_packets<P: AsRef<[u8]>>(packets: &[P]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in packets {
        let p = p.as_ref();
        let len = u16::try_from(p.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&p[..len as usize]);
    }
    out
}

/// Starting inputs for each fuzz target, by target name: small but valid media made with
/// our own encoders and webrtc-rs's payloaders, and signalling as a browser sends it.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, m) in seed::SIGNALLING {
        out.push(("signalling", name.to_string(), m.as_bytes().to_vec()));
    }
    for (name, s) in seed::OFFERS {
        out.push(("sdp", name.to_string(), s.as_bytes().to_vec()));
    }
    out.push(("rtp_vp8", "frames".into(), seed::video(VideoCodec::Vp8)));
    out.push(("rtp_h264", "frames".into(), seed::video(VideoCodec::H264)));
    out.push(("rtp_opus", "packets".into(), seed::audio()));
    out
}

mod seed {
    use bytes::Bytes;
    use rtc::rtp::codec::h264::H264Payloader;
    use rtc::rtp::codec::vp8::Vp8Payloader;
    use rtc::rtp::header::Header;
    use rtc::rtp::packet::Packet;
    use rtc::rtp::packetizer::Payloader;
    use rtc::shared::marshal::Marshal;
    use tessera_codec::{VideoEncoderConfig, VideoFrame, FRAME_SAMPLES};
    use tessera_types::{VideoCodec, Yuv};

    /// By name; a `server-` message is one a client may not send.
    pub const SIGNALLING: &[(&str, &str)] = &[
        (
            "join",
            r#"{"type":"join","room":"demo","name":"Ann","video":true,"audio":false,"tier":"hd"}"#,
        ),
        (
            "offer",
            r#"{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendrecv\r\na=rtpmap:96 VP8/90000\r\n"}"#,
        ),
        (
            "candidate",
            r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 2130706431 10.0.0.5 50000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}}"#,
        ),
        (
            "end-of-candidates",
            r#"{"type":"candidate","candidate":null}"#,
        ),
        ("mute", r#"{"type":"mute","audio":true}"#),
        ("ping", r#"{"type":"ping"}"#),
        (
            "server-error",
            r#"{"type":"error","code":"bad_sdp","reason":"no codec","fatal":true}"#,
        ),
    ];

    pub const OFFERS: &[(&str, &str)] = &[
        (
            "chrome",
            "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\na=msid-semantic: WMS\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=ice-options:trickle\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\na=mid:0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=sendrecv\r\na=msid:- a\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
a=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\na=ssrc:1001 cname:x\r\n\
a=candidate:1 1 udp 2130706431 10.0.0.5 50000 typ host\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\na=mid:1\r\na=sendrecv\r\na=msid:- v\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 ccm fir\r\n\
a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n\
a=ssrc-group:FID 2001 2002\r\na=ssrc:2001 cname:x\r\na=ssrc:2002 cname:x\r\n",
        ),
        (
            "firefox-recvonly",
            "v=0\r\no=mozilla...THIS_IS_SDPARTA-99.0 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
a=sendrecv\r\na=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=group:BUNDLE 0\r\na=ice-options:trickle\r\na=msid-semantic:WMS *\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 120 124\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\n\
a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=ice-ufrag:abcd\r\na=mid:0\r\na=rtcp-mux\r\na=rtpmap:120 VP8/90000\r\n\
a=fmtp:120 max-fs=12288;max-fr=60\r\na=rtpmap:124 rtx/90000\r\na=fmtp:124 apt=120\r\n\
a=rid:h send\r\na=simulcast:send h\r\na=setup:actpass\r\n",
        ),
    ];

    /// Three frames (a keyframe, two delta frames) of a small picture in packets of about
    /// 40 bytes of payload, with header extensions, padding and CSRCs among them.
    pub fn video(codec: VideoCodec) -> Vec<u8> {
        let cfg = VideoEncoderConfig {
            codec,
            width: 48,
            height: 32,
            fps: 30,
            bitrate_bps: 100_000,
            vp8_cpu_used: -8,
            threads: 1,
        };
        let Ok(mut enc) = tessera_codec::new_video_encoder(&cfg) else {
            return Vec::new();
        };
        let mut vp8 = Vp8Payloader::default();
        let mut h264 = H264Payloader::default();
        let mut packets = Vec::new();
        let mut seq = 65530u16; // wraps within the seed
        for i in 0..3u8 {
            let frame = VideoFrame::filled(
                cfg.width,
                cfg.height,
                Yuv {
                    y: 60 + 40 * i,
                    u: 100,
                    v: 160,
                },
            );
            let pts = i as u64 * 3000;
            let Ok(Some(e)) = enc.encode(&frame, pts, i == 0) else {
                continue;
            };
            let data = Bytes::from(e.data);
            // webrtc-rs's VP8 depacketizer refuses payloads under 4 bytes: no short tails.
            let payloads = (40..200)
                .map(|mtu| match codec {
                    VideoCodec::Vp8 => vp8.payload(mtu, &data),
                    VideoCodec::H264 => h264.payload(mtu, &data),
                })
                .filter_map(Result::ok)
                .find(|p| p.iter().all(|p| p.len() >= 4))
                .unwrap_or_default();
            let n = payloads.len();
            for (j, payload) in payloads.into_iter().enumerate() {
                let mut header = Header {
                    version: 2,
                    padding: j == 1,
                    marker: j + 1 == n,
                    payload_type: 96,
                    sequence_number: seq,
                    timestamp: pts as u32,
                    ssrc: 0x1234_5678,
                    csrc: if j == 2 { vec![7, 8] } else { Vec::new() },
                    ..Default::default()
                };
                if j == 0 {
                    // One-byte form: transport-wide sequence number, then the mid.
                    let _ = header.set_extension(5, Bytes::from_static(&[0, 1]));
                    let _ = header.set_extension(3, Bytes::from_static(b"1"));
                }
                seq = seq.wrapping_add(1);
                packets.push(rtp(header, payload));
            }
        }
        super::join_packets(&packets)
    }

    /// Three 20 ms Opus packets of a tone.
    pub fn audio() -> Vec<u8> {
        let Ok(mut enc) = tessera_codec::new_audio_encoder(24_000) else {
            return Vec::new();
        };
        let mut packets = Vec::new();
        for i in 0..3u16 {
            let pcm: Vec<i16> = (0..FRAME_SAMPLES)
                .map(|n| {
                    let t = (i as usize * FRAME_SAMPLES + n) as f32 / 48_000.0;
                    ((t * 440.0 * std::f32::consts::TAU).sin() * 8000.0) as i16
                })
                .collect();
            let Ok(payload) = enc.encode(&pcm) else {
                continue;
            };
            let header = Header {
                version: 2,
                marker: i == 0,
                payload_type: 111,
                sequence_number: 100 + i,
                timestamp: i as u32 * FRAME_SAMPLES as u32,
                ssrc: 0x0bad_cafe,
                ..Default::default()
            };
            packets.push(rtp(header, Bytes::from(payload)));
        }
        super::join_packets(&packets)
    }

    fn rtp(header: Header, payload: Bytes) -> Vec<u8> {
        Packet { header, payload }
            .marshal()
            .map(|b| b.to_vec())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(target: &str) -> Vec<u8> {
        seeds()
            .into_iter()
            .find(|(t, _, _)| *t == target)
            .map(|(_, _, d)| d)
            .unwrap_or_default()
    }

    /// Every variant of `data` the tests try: truncated at many points, bit-flipped at
    /// many places, duplicated, and reversed.
    fn mangled(data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = vec![Vec::new(), data.to_vec()];
        let step = (data.len() / 40).max(1);
        for cut in (0..data.len()).step_by(step) {
            out.push(data[..cut].to_vec());
            out.push(data[cut..].to_vec());
            for bit in [0, 3, 7] {
                let mut d = data.to_vec();
                d[cut] ^= 1 << bit;
                out.push(d);
            }
            let mut d = data.to_vec();
            d[cut] = 0xff;
            out.push(d);
        }
        out.push([data, data].concat());
        out.push(data.iter().rev().copied().collect());
        out
    }

    const SEED_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds");

    /// Writes [`seeds`] where `make fuzz` starts from; rerun after a codec or protocol change.
    #[test]
    #[ignore = "writes fuzz/seeds: cargo test -p tessera-server write_fuzz_seeds -- --ignored"]
    fn write_fuzz_seeds() {
        for (target, name, data) in seeds() {
            let dir = std::path::Path::new(SEED_DIR).join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), data).unwrap();
        }
    }

    /// The committed seeds still reach the decoders (they are not regenerated by the build).
    #[test]
    fn committed_seeds_get_through() {
        let mut seen = 0;
        for (target, name, _) in seeds() {
            let path = std::path::Path::new(SEED_DIR).join(target).join(&name);
            let data = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (see write_fuzz_seeds)", path.display()));
            let decoded = match target {
                "signalling" => usize::from(signalling(&data) || name.starts_with("server-")),
                "sdp" => sdp(&data).unwrap_or(0),
                "rtp_vp8" => rtp_video(VideoCodec::Vp8, &data).decoded,
                "rtp_h264" => rtp_video(VideoCodec::H264, &data).decoded,
                "rtp_opus" => rtp_audio(&data).decoded,
                _ => 0,
            };
            assert!(decoded > 0, "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 5);
    }

    /// Inputs that once crashed a fuzz target, in `fuzz/regressions/TARGET/`.
    #[test]
    fn past_crashes_do_not_panic() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/regressions");
        let mut seen = 0;
        for target in std::fs::read_dir(dir).unwrap().flatten() {
            for input in std::fs::read_dir(target.path()).unwrap().flatten() {
                let data = std::fs::read(input.path()).unwrap();
                match target.file_name().to_str() {
                    Some("signalling") => drop(signalling(&data)),
                    Some("sdp") => drop(sdp(&data)),
                    Some("rtp_vp8") => drop(rtp_video(VideoCodec::Vp8, &data)),
                    Some("rtp_h264") => drop(rtp_video(VideoCodec::H264, &data)),
                    Some("rtp_opus") => drop(rtp_audio(&data)),
                    other => panic!("{}: unknown target {other:?}", input.path().display()),
                }
                seen += 1;
            }
        }
        assert!(seen > 0, "nothing in {dir}");
    }

    #[test]
    fn split_and_join_packets_are_inverse_and_total() {
        let packets = vec![vec![1u8, 2, 3], vec![], vec![9; 300]];
        let joined = join_packets(&packets);
        assert_eq!(split_packets(&joined).collect::<Vec<_>>(), packets);
        // A length past the end takes what is left; a lone byte is no packet.
        assert_eq!(
            split_packets(&[0xff, 0xff, 1, 2]).collect::<Vec<_>>(),
            vec![&[1u8, 2][..]]
        );
        assert_eq!(split_packets(&[7]).count(), 0);
    }

    #[test]
    fn video_seeds_decode_to_pictures() {
        for (codec, target) in [(VideoCodec::Vp8, "rtp_vp8"), (VideoCodec::H264, "rtp_h264")] {
            let data = seed(target);
            let got = rtp_video(codec, &data);
            assert_eq!(got.bad_packets, 0, "{target}: {got:?}");
            assert!(got.packets > 3, "{target}: {got:?}");
            assert_eq!(got.frames, 3, "{target}: {got:?}");
            assert_eq!(got.decoded, 3, "{target}: {got:?}");
            assert_eq!(got.decode_errors, 0, "{target}: {got:?}");
        }
    }

    #[test]
    fn audio_seed_decodes() {
        let got = rtp_audio(&seed("rtp_opus"));
        assert_eq!(
            got,
            Reach {
                packets: 3,
                bad_packets: 0,
                frames: 3,
                decoded: 3,
                decode_errors: 0
            }
        );
    }

    #[test]
    fn signalling_and_sdp_seeds_parse() {
        let all = seeds();
        for (_, name, m) in all.iter().filter(|s| s.0 == "signalling") {
            assert_eq!(signalling(m), !name.starts_with("server-"), "{name}");
        }
        for (_, name, offer) in all.iter().filter(|s| s.0 == "sdp") {
            assert!(sdp(offer).is_some_and(|n| n >= 1), "{name}");
            let text = std::str::from_utf8(offer).unwrap_or_default();
            let offer = RTCSessionDescription::offer(text.to_string());
            assert!(
                offer.is_ok_and(negotiate),
                "{name}: webrtc-rs parses it and answers"
            );
        }
    }

    #[test]
    fn mangled_seeds_do_not_panic() {
        for (target, name, data) in seeds() {
            for d in mangled(&data) {
                match target {
                    "signalling" => drop(signalling(&d)),
                    "sdp" => drop(sdp(&d)),
                    "rtp_vp8" => drop(rtp_video(VideoCodec::Vp8, &d)),
                    "rtp_h264" => drop(rtp_video(VideoCodec::H264, &d)),
                    "rtp_opus" => drop(rtp_audio(&d)),
                    other => panic!("seed {name} for unknown target {other}"),
                }
            }
        }
    }

    #[test]
    fn hand_made_nasty_inputs_do_not_panic() {
        let huge_len = [0xffu8, 0xff, 0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        // CC = 15 CSRCs announced, extension bit with a huge extension length, padding
        // longer than the payload, one-byte extensions that run off the end.
        let headers: Vec<Vec<u8>> = vec![
            vec![0x8f, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
            vec![
                0x90, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0xff, 0xff,
            ],
            vec![0xa0, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0x10, 0xff],
            vec![
                0x90, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0, 1, 0x1f,
            ],
            vec![
                0x90, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0x10, 0x00, 0, 1, 0xff, 9,
            ],
            vec![0x80, 0xe0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0x10],
        ];
        let rtp = join_packets(&headers);
        for data in [&[][..], &[0], &huge_len, &rtp] {
            rtp_video(VideoCodec::Vp8, data);
            rtp_video(VideoCodec::H264, data);
            rtp_audio(data);
            signalling(data);
            sdp(data);
        }
        for text in [
            "v=0",
            "v=0\nm=",
            "v=0\r\nm=video\r\na=rtpmap:\r\na=rtpmap:96\r\na=rtpmap:96 /\r\n",
            "  v=0\n\n\nm= \na=candidate:\na=candidate:1 1 udp 1 x\n",
            "candidate: ",
            "\n\n\n",
            r#"{"type":"candidate","candidate":{"candidate":"candidate:"}}"#,
            r#"{"type":"candidate","candidate":{"candidate":"1 1 udp 1 ::1 99999999 typ host raddr"}}"#,
            r#"{"type":"offer","sdp":"v=0\nm=audio 0 x 0\na=inactive"}"#,
            r#"{"type":"join","room":"\u0000","name":"\ud83d\ude00"}"#,
        ] {
            signalling(text.as_bytes());
            sdp(text.as_bytes());
        }
        // Over the signalling size limit.
        let big = format!("v=0\nm=video 9 X 96\n{}", "a=x\n".repeat(20_000));
        assert_eq!(sdp(big.as_bytes()), None);
        let big = format!(r#"{{"type":"offer","sdp":"{}"}}"#, "x".repeat(70_000));
        assert!(!signalling(big.as_bytes()));
    }

    /// A VP8 payload that is all descriptor and no frame, H.264 fragments with no start,
    /// and STAP-A aggregates whose lengths lie: each is dropped, none decoded.
    #[test]
    fn broken_payloads_never_reach_the_decoder_whole() {
        let packet = |seq: u16, marker: bool, payload: &[u8]| {
            let mut p = vec![0x80, if marker { 0xe0 } else { 0x60 }];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 1]);
            p.extend_from_slice(payload);
            p
        };
        let vp8 = join_packets(&[
            packet(1, true, &[0x90]),
            packet(2, true, &[0x90, 0x80]),
            packet(3, true, &[0x90, 0xff, 0xff, 0xff, 0xff]),
        ]);
        assert_eq!(rtp_video(VideoCodec::Vp8, &vp8).decoded, 0);
        let h264 = join_packets(&[
            packet(1, true, &[0x7c, 0x05, 1, 2]), // FU-A without a start bit
            packet(2, true, &[0x78, 0xff, 0xff, 0x67]), // STAP-A length past the end
            packet(3, true, &[0x78, 0x00, 0x00, 0x00, 0x00]), // STAP-A of empty units
            packet(4, true, &[0x1c]),             // FU-A with no header byte
        ]);
        assert_eq!(rtp_video(VideoCodec::H264, &h264).decoded, 0);
    }
}
