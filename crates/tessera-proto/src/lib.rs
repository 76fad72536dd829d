//! The WebSocket signalling protocol between a client and `tessera serve` (`GET /ws`),
//! documented for humans in `docs/protocol.md`.
//!
//! Owns the message types and their JSON form: one JSON object per WebSocket text message,
//! tagged by `"type"`. Must not know about rooms, media or WebRTC objects: SDP and ICE
//! candidates travel as the strings and fields a browser produces.
//!
//! ```
//! use tessera_proto::{ClientMessage, parse_client};
//! let msg = parse_client(r#"{"type":"join","room":"demo","name":"Ann"}"#).unwrap();
//! assert!(matches!(msg, ClientMessage::Join { ref room, .. } if room == "demo"));
//! ```
use serde::{Deserialize, Serialize};

/// Largest signalling message accepted, in bytes (an SDP offer is 3 to 8 KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A trickled ICE candidate, in the browser's `RTCIceCandidateInit` shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// A STUN or TURN server the client should use, in the browser's `RTCIceServer` shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A display size in device pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisplaySize {
    pub width: u32,
    pub height: u32,
}

/// Someone in the room, as other participants see them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub audio_muted: bool,
    #[serde(default)]
    pub video_muted: bool,
}

fn yes() -> bool {
    true
}

/// Client to server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// First message: enter `room` (created on first join) as `name`.
    Join {
        room: String,
        name: String,
        /// The client will send a camera track.
        #[serde(default = "yes")]
        video: bool,
        /// The client will send a microphone track.
        #[serde(default = "yes")]
        audio: bool,
        /// Output tier to receive (a name under `[tiers]`); the room default if absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tier: Option<String>,
        /// Join token (`tessera token`); required when the server sets `auth.token_secret`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// The size the client shows the composite at, in device pixels (the web client
        /// sends its composite element's size times `devicePixelRatio`): the server never
        /// sends a larger tier than this needs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        display: Option<DisplaySize>,
        /// The layout this client wants to see (`grid`, `speaker` or a `[layouts.NAME]`);
        /// the room's layout if absent. See `layout`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        layout: Option<String>,
    },
    /// The client's SDP offer (after `joined`). Exactly one offer per session.
    Offer { sdp: String },
    /// A trickled candidate; `candidate: null` means the client's gathering is complete.
    Candidate { candidate: Option<IceCandidate> },
    /// Mute or unmute one's own microphone (`audio`) or camera (`video`).
    Mute {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audio: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        video: Option<bool>,
    },
    /// "Audio only": `true` stops the composite video to this client (and the client stops
    /// sending its camera); `false` returns it to the bandwidth ladder.
    AudioOnly { enabled: bool },
    /// See a layout of one's own (`null`: the room's again). Viewers with the same layout,
    /// tier and codec share one encode; a choice that would exceed
    /// `rooms.max_encodes_per_room` is answered with `layout_refused`.
    Layout { layout: Option<String> },
    /// Share a screen: the SDP offer of a second PeerConnection that only sends (one video
    /// section, and one audio section for the shared tab's sound, if any), with its
    /// candidates gathered. Answered with `share_answer`. A share already running in the
    /// room is replaced.
    Share { sdp: String },
    /// Stop sharing one's screen.
    ShareStop,
    /// Leave the room; the server closes the PeerConnection and the socket.
    Leave,
    /// Keep-alive; answered with `pong`.
    Ping,
}

/// Server to client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerMessage {
    /// Reply to `join`: the client's id, who is already there, the ICE servers to use.
    Joined {
        room: String,
        id: String,
        participants: Vec<ParticipantInfo>,
        ice_servers: Vec<IceServer>,
        layout: String,
        tier: String,
        /// The layouts a client may choose with `layout`.
        #[serde(default)]
        layouts: Vec<String>,
    },
    /// The server's SDP answer.
    Answer {
        sdp: String,
    },
    /// A trickled server candidate; `null` when the server's gathering is complete.
    Candidate {
        candidate: Option<IceCandidate>,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        id: String,
    },
    /// Someone (possibly the client itself) muted or unmuted.
    ParticipantUpdated {
        participant: ParticipantInfo,
    },
    /// `id: null` when nobody is speaking.
    ActiveSpeaker {
        id: Option<String>,
    },
    /// The layout this client now sees: the room's (sent to everyone without a layout of
    /// their own), or the client's own choice.
    LayoutChanged {
        layout: String,
    },
    /// A `layout` choice (or one made in `join`) was not taken: the client sees the room's
    /// layout. `reason` says why (an unknown name, or the room runs
    /// `rooms.max_encodes_per_room` encodes already).
    LayoutRefused {
        layout: String,
        reason: String,
    },
    /// The server's answer to `share`.
    ShareAnswer {
        sdp: String,
    },
    /// The client's screen share ended (replaced by another, removed, or its connection
    /// failed); the client closes that PeerConnection.
    ShareEnded {
        reason: String,
    },
    /// Who shares a screen now (`id`: the participant, `null` when nobody does); sent on
    /// every change and on joining a room with a share.
    Sharing {
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// What the client's camera (`kind: camera`) or shared screen (`kind: screen`) should
    /// send: the largest tile it occupies on any canvas in use (a screen: at most 1920x1080
    /// at `rooms.share_fps`). The web client applies it with `RTCRtpSender.setParameters`
    /// (`scaleResolutionDownBy`, `maxFramerate`, `maxBitrate`). A camera on no canvas gets a
    /// tiny hint (`on_canvas: false`).
    SendHint {
        /// `camera` or `screen`.
        kind: String,
        width: u32,
        height: u32,
        fps: u32,
        max_bitrate_bps: u32,
        on_canvas: bool,
    },
    /// Whether the room is being recorded or streamed: sent when that changes, and on
    /// joining a room where it is (people expect to be told).
    Recording {
        recording: bool,
        streaming: bool,
    },
    /// The client's current receive tier (`null`: audio only) and the server's bandwidth
    /// estimate for its downlink; sent on every change and every few seconds.
    Bandwidth {
        tier: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        estimate_bps: Option<u64>,
        /// Where the estimate comes from: `twcc` (send-side GCC), `remb`, `loss` (receiver
        /// reports only) or `none`.
        source: String,
        /// The client asked for audio only.
        #[serde(default)]
        audio_only: bool,
    },
    Pong,
    /// Something the client sent was refused. `fatal` errors are followed by the socket
    /// closing.
    Error {
        code: ErrorCode,
        reason: String,
        #[serde(default)]
        fatal: bool,
    },
}

/// Machine-readable error kinds; `reason` carries the human text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, an unknown `type`, a missing or mistyped field.
    BadMessage,
    /// A message that makes no sense now (an offer before `join`, a second `join`).
    BadState,
    /// The SDP offer could not be used (no usable codec, unparsable).
    BadSdp,
    /// Room or participant name empty or too long, or unknown tier.
    BadRequest,
    /// Room or server full.
    Full,
    /// The server failed (a room crashed); reconnect to try again.
    Internal,
    /// An administrator removed the participant or closed the room.
    Removed,
    /// The media connection did not come up in time after joining.
    Timeout,
    /// No join token, or a bad, expired or mismatched one (`auth.token_secret` is set).
    Unauthorized,
    /// The token is valid but does not allow this (another room, no `subscribe`, ...).
    Forbidden,
    /// Too many messages or joins; slow down (`[limits]`).
    RateLimited,
    /// The server is shutting down; reconnect later.
    Shutdown,
    /// Cluster: the room is (now) on another node, or the node it was on is gone, or the
    /// node this connection came through is going away; join again on a new connection
    /// (the web client does at once).
    Moved,
    /// Cluster: the room cannot be placed now (Redis unreachable, or the room's node
    /// cannot be reached); try again in a few seconds.
    Unavailable,
}

/// Why a message from a client was refused, in words for the client.
#[derive(Clone, Debug, PartialEq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// Parse one client message, refusing oversized text before parsing it.
pub fn parse_client(text: &str) -> Result<ClientMessage, ParseError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(ParseError(format!(
            "message of {} bytes is over the limit of {MAX_MESSAGE_BYTES}",
            text.len()
        )));
    }
    serde_json::from_str(text).map_err(|e| ParseError(format!("bad message: {e}")))
}

impl ServerMessage {
    pub fn to_json(&self) -> String {
        // Serialising these plain types cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn error(code: ErrorCode, reason: impl Into<String>) -> ServerMessage {
        ServerMessage::Error {
            code,
            reason: reason.into(),
            fatal: false,
        }
    }
}

impl ClientMessage {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

pub fn parse_server(text: &str) -> Result<ServerMessage, ParseError> {
    serde_json::from_str(text).map_err(|e| ParseError(format!("bad message: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, want: Result<ClientMessage, &str>) {
        match (parse_client(text), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
            (Err(got), Err(want)) => assert!(got.0.contains(want), "{text}: {got}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn client_messages_parse_or_say_why_not() {
        check(
            r#"{"type":"join","room":"r","name":"Ann"}"#,
            Ok(ClientMessage::Join {
                room: "r".into(),
                name: "Ann".into(),
                video: true,
                audio: true,
                tier: None,
                token: None,
                display: None,
                layout: None,
            }),
        );
        check(
            r#"{"type":"join","room":"r","name":"Bo","video":false,"tier":"low"}"#,
            Ok(ClientMessage::Join {
                room: "r".into(),
                name: "Bo".into(),
                video: false,
                audio: true,
                tier: Some("low".into()),
                token: None,
                display: None,
                layout: None,
            }),
        );
        check(
            r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
            Ok(ClientMessage::Candidate {
                candidate: Some(IceCandidate {
                    candidate: "candidate:1 1 udp 1 127.0.0.1 5 typ host".into(),
                    sdp_mid: Some("0".into()),
                    sdp_m_line_index: Some(0),
                    username_fragment: None,
                }),
            }),
        );
        check(
            r#"{"type":"candidate","candidate":null}"#,
            Ok(ClientMessage::Candidate { candidate: None }),
        );
        check(
            r#"{"type":"mute","audio":true}"#,
            Ok(ClientMessage::Mute {
                audio: Some(true),
                video: None,
            }),
        );
        check(r#"{"type":"leave"}"#, Ok(ClientMessage::Leave));
        check(
            r#"{"type":"join","room":"r","name":"A","display":{"width":640,"height":360}}"#,
            Ok(ClientMessage::Join {
                room: "r".into(),
                name: "A".into(),
                video: true,
                audio: true,
                tier: None,
                token: None,
                display: Some(DisplaySize {
                    width: 640,
                    height: 360,
                }),
                layout: None,
            }),
        );
        check(
            r#"{"type":"audio_only","enabled":true}"#,
            Ok(ClientMessage::AudioOnly { enabled: true }),
        );
        check(
            r#"{"type":"layout","layout":"speaker"}"#,
            Ok(ClientMessage::Layout {
                layout: Some("speaker".into()),
            }),
        );
        check(
            r#"{"type":"layout","layout":null}"#,
            Ok(ClientMessage::Layout { layout: None }),
        );
        check(r#"{"type":"share_stop"}"#, Ok(ClientMessage::ShareStop));
        check(r#"{"type":"share"}"#, Err("missing field `sdp`"));
        check(r#"{"type":"dance"}"#, Err("unknown variant `dance`"));
        check(r#"{"type":"offer"}"#, Err("missing field `sdp`"));
        check(
            r#"{"type":"join","room":"r","name":"A","x":1}"#,
            Err("unknown field `x`"),
        );
        check("not json", Err("bad message"));
        check(&" ".repeat(MAX_MESSAGE_BYTES + 1), Err("over the limit"));
    }

    #[test]
    fn server_messages_round_trip() {
        let msgs = [
            ServerMessage::ActiveSpeaker { id: None },
            ServerMessage::ParticipantLeft { id: "p3".into() },
            ServerMessage::error(ErrorCode::BadSdp, "no usable video codec"),
            ServerMessage::Candidate { candidate: None },
            ServerMessage::Sharing {
                id: Some("p2".into()),
                name: Some("Ann".into()),
            },
            ServerMessage::LayoutRefused {
                layout: "speaker".into(),
                reason: "the room runs 4 encodes".into(),
            },
        ];
        for m in msgs {
            let text = m.to_json();
            assert_eq!(parse_server(&text).unwrap(), m, "{text}");
        }
        assert_eq!(
            ServerMessage::ActiveSpeaker { id: None }.to_json(),
            r#"{"type":"active_speaker","id":null}"#
        );
    }
}
