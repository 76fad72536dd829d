//! Just enough SDP reading to choose what to send back before webrtc-rs has seen a packet:
//! which media sections the offer has, in which direction, with which codecs.

/// Direction of a media section from the offerer's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The offerer sends media on this section.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
    /// The offerer wants to receive media on this section.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Section {
    pub kind: String,
    pub direction: Direction,
    /// Codec names in offer order, upper-case (`VP8`, `H264`, `OPUS`).
    pub codecs: Vec<String>,
    /// Every payload type with its codec name (upper-case), in order.
    pub payload_types: Vec<(u8, String)>,
}

#[derive(Debug, PartialEq)]
pub struct SdpError(pub String);

/// The media sections of an offer, refusing text that is not SDP.
pub fn sections(sdp: &str) -> Result<Vec<Section>, SdpError> {
    if !sdp.trim_start().starts_with("v=0") {
        return Err(SdpError(
            "not an SDP offer: it must start with \"v=0\"".into(),
        ));
    }
    if sdp.len() > tessera_proto::MAX_MESSAGE_BYTES {
        return Err(SdpError(format!(
            "SDP of {} bytes is over the limit of {}",
            sdp.len(),
            tessera_proto::MAX_MESSAGE_BYTES
        )));
    }
    let mut out: Vec<Section> = Vec::new();
    let mut session_dir = Direction::SendRecv;
    let mut section_dir: Option<Direction> = None;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            if let Some(last) = out.last_mut() {
                last.direction = section_dir.take().unwrap_or(session_dir);
            }
            let kind = m.split(' ').next().unwrap_or("").to_string();
            out.push(Section {
                kind,
                direction: session_dir,
                codecs: Vec::new(),
                payload_types: Vec::new(),
            });
            continue;
        }
        let dir = match line {
            "a=sendrecv" => Some(Direction::SendRecv),
            "a=sendonly" => Some(Direction::SendOnly),
            "a=recvonly" => Some(Direction::RecvOnly),
            "a=inactive" => Some(Direction::Inactive),
            _ => None,
        };
        if let Some(d) = dir {
            if out.is_empty() {
                session_dir = d;
            } else {
                section_dir = Some(d);
            }
        }
        if let (Some(rest), Some(last)) = (line.strip_prefix("a=rtpmap:"), out.last_mut()) {
            let mut fields = rest.split(' ');
            let pt = fields.next().and_then(|p| p.parse::<u8>().ok());
            if let Some(name) = fields.next().and_then(|c| c.split('/').next()) {
                let name = name.to_ascii_uppercase();
                if let Some(pt) = pt {
                    last.payload_types.push((pt, name.clone()));
                }
                if !last.codecs.contains(&name) {
                    last.codecs.push(name);
                }
            }
        }
    }
    if let Some(last) = out.last_mut() {
        last.direction = section_dir.unwrap_or(session_dir);
    }
    if out.is_empty() {
        return Err(SdpError("the offer has no media sections".into()));
    }
    Ok(out)
}

/// The first `a=ice-ufrag` of a description (session or media level).
pub fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(str::trim)
        .filter(|u| !u.is_empty())
}

/// The first section of `kind` that is not inactive.
pub fn find<'a>(sections: &'a [Section], kind: &str) -> Option<&'a Section> {
    sections
        .iter()
        .find(|s| s.kind == kind && s.direction != Direction::Inactive)
}

/// Replaces the address of every host candidate line with `public_ip` (1:1 NAT), in SDP or
/// in a single `candidate:` string.
pub fn rewrite_candidates(text: &str, public_ip: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let body = line.trim_start_matches("a=");
        if body.starts_with("candidate:") {
            // candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
            let mut fields: Vec<&str> = line.split(' ').collect();
            if fields.len() > 5 {
                fields[4] = public_ip;
            }
            out.push_str(&fields.join(" "));
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\na=mid:0\r\na=sendrecv\r\n\
        a=rtpmap:111 opus/48000/2\r\na=rtpmap:63 red/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97 102\r\na=mid:1\r\na=recvonly\r\n\
        a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=rtpmap:102 H264/90000\r\n";

    #[test]
    fn reads_kinds_directions_and_codecs() {
        let s = sections(CHROME).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].kind, "audio");
        assert_eq!(s[0].direction, Direction::SendRecv);
        assert_eq!(s[0].codecs, vec!["OPUS", "RED"]);
        assert_eq!(s[1].direction, Direction::RecvOnly);
        assert_eq!(s[1].codecs, vec!["VP8", "RTX", "H264"]);
        let pts: Vec<u8> = s[1].payload_types.iter().map(|(pt, _)| *pt).collect();
        assert_eq!(pts, vec![96, 97, 102]);
        assert_eq!(s[0].payload_types[0], (111, "OPUS".to_string()));
        assert!(find(&s, "video").is_some_and(|v| v.direction.receives() && !v.direction.sends()));
    }

    #[test]
    fn refuses_what_is_not_an_offer() {
        assert!(sections("hello").unwrap_err().0.contains("v=0"));
        assert!(sections("v=0\r\ns=-\r\n")
            .unwrap_err()
            .0
            .contains("no media"));
    }

    #[test]
    fn session_level_direction_applies_to_sections() {
        let s = sections("v=0\na=sendonly\nm=video 9 X 96\na=rtpmap:96 VP8/90000\n").unwrap();
        assert_eq!(s[0].direction, Direction::SendOnly);
    }

    #[test]
    fn rewrites_host_candidates_for_nat() {
        let sdp = "a=mid:0\r\na=candidate:1 1 udp 2130706431 10.0.0.5 50000 typ host\r\n";
        let got = rewrite_candidates(sdp, "203.0.113.7");
        assert!(got.contains("a=candidate:1 1 udp 2130706431 203.0.113.7 50000 typ host\r"));
        assert!(got.starts_with("a=mid:0\r\n"));
        assert_eq!(
            rewrite_candidates("candidate:1 1 udp 5 10.0.0.5 1 typ host", "1.2.3.4"),
            "candidate:1 1 udp 5 1.2.3.4 1 typ host"
        );
    }
}
