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

/// Whether an offer's first `a=setup` is `passive`: the offerer waits to be the DTLS server.
pub fn setup_is_passive(sdp: &str) -> bool {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=setup:"))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("passive"))
}

/// The first `a=ice-pwd` of an SDP.
pub fn ice_pwd(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-pwd:"))
        .map(str::trim)
        .filter(|p| !p.is_empty())
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

/// A trickle-ICE SDP fragment (`application/trickle-ice-sdpfrag`, RFC 8840), as WHIP and
/// WHEP clients send in `PATCH`.
#[derive(Debug, Default, PartialEq)]
pub struct Fragment {
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    /// Per media section, in order: its `a=mid` and its candidate attributes (without the
    /// `a=` prefix).
    pub media: Vec<FragmentMedia>,
}

#[derive(Debug, Default, PartialEq)]
pub struct FragmentMedia {
    pub mid: Option<String>,
    pub candidates: Vec<String>,
    pub end_of_candidates: bool,
}

/// Reads a trickle-ICE fragment. ICE credentials may be at session or media level; a
/// candidate before any `m=` line belongs to the first section.
pub fn fragment(text: &str) -> Result<Fragment, SdpError> {
    let mut f = Fragment::default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("m=") {
            f.media.push(FragmentMedia::default());
            continue;
        }
        let Some(attr) = line.strip_prefix("a=") else {
            return Err(SdpError(format!(
                "unexpected line {line:?}: a fragment has only a= and m= lines"
            )));
        };
        let (name, value) = attr.split_once(':').unwrap_or((attr, ""));
        match name {
            "ice-ufrag" => f.ufrag = Some(value.trim().to_string()),
            "ice-pwd" => f.pwd = Some(value.trim().to_string()),
            "mid" | "candidate" | "end-of-candidates" => {
                if f.media.is_empty() {
                    f.media.push(FragmentMedia::default());
                }
                let m = f.media.last_mut().expect("pushed above");
                match name {
                    "mid" => m.mid = Some(value.trim().to_string()),
                    "candidate" => {
                        if value.split_whitespace().count() < 8 {
                            return Err(SdpError(format!("malformed candidate {line:?}")));
                        }
                        m.candidates.push(attr.to_string());
                    }
                    _ => m.end_of_candidates = true,
                }
            }
            // a=ice-options, a=group and the like say nothing we act on.
            _ => {}
        }
    }
    if f.ufrag.as_deref() == Some("") || f.pwd.as_deref() == Some("") {
        return Err(SdpError("empty a=ice-ufrag or a=ice-pwd".into()));
    }
    Ok(f)
}

/// The offer an ICE restart by fragment stands for: `previous` (the client's last offer)
/// with the fragment's credentials and candidates in place of its own.
pub fn restart_offer(previous: &str, f: &Fragment) -> Result<String, SdpError> {
    let (Some(ufrag), Some(pwd)) = (&f.ufrag, &f.pwd) else {
        return Err(SdpError(
            "an ICE restart needs a=ice-ufrag and a=ice-pwd".into(),
        ));
    };
    let mut out = String::with_capacity(previous.len());
    let mut mid: Option<&str> = None;
    let mut index: Option<usize> = None;
    let flush = |out: &mut String, index: Option<usize>, mid: Option<&str>| {
        let Some(i) = index else { return };
        let m = f
            .media
            .iter()
            .find(|m| m.mid.is_some() && m.mid.as_deref() == mid)
            .or_else(|| f.media.get(i).filter(|m| m.mid.is_none()));
        if let Some(m) = m {
            for c in &m.candidates {
                out.push_str("a=");
                out.push_str(c);
                out.push_str("\r\n");
            }
        }
    };
    for line in previous.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("m=") {
            flush(&mut out, index, mid);
            index = Some(index.map_or(0, |i| i + 1));
            mid = None;
        } else if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(m.trim());
        }
        if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        }
        if line.starts_with("a=ice-ufrag:") {
            out.push_str(&format!("a=ice-ufrag:{ufrag}\r\n"));
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str(&format!("a=ice-pwd:{pwd}\r\n"));
        } else if !line.is_empty() {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    flush(&mut out, index, mid);
    Ok(out)
}

/// The ICE part of an answer as a trickle-ICE fragment: credentials, then each media
/// section's `m=` line, `a=mid`, candidates and `a=end-of-candidates`.
pub fn answer_fragment(answer: &str) -> String {
    let mut out = String::new();
    let attr = |name: &str| {
        answer
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(str::trim)
    };
    if answer.lines().any(|l| l.trim() == "a=ice-lite") {
        out.push_str("a=ice-lite\r\n");
    }
    for (name, key) in [("a=ice-ufrag:", "ice-ufrag"), ("a=ice-pwd:", "ice-pwd")] {
        if let Some(v) = attr(name) {
            out.push_str(&format!("a={key}:{v}\r\n"));
        }
    }
    let mut in_media = false;
    for line in answer.lines().map(str::trim) {
        if line.starts_with("m=") {
            if in_media {
                out.push_str("a=end-of-candidates\r\n");
            }
            in_media = true;
            out.push_str(line);
            out.push_str("\r\n");
        } else if in_media && (line.starts_with("a=mid:") || line.starts_with("a=candidate:")) {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    if in_media {
        out.push_str("a=end-of-candidates\r\n");
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
    fn only_a_passive_offerer_makes_us_the_dtls_client() {
        assert!(setup_is_passive("v=0\r\na=setup:passive\r\n"));
        assert!(!setup_is_passive("v=0\r\na=setup:actpass\r\n"));
        assert!(!setup_is_passive("v=0\r\na=setup:active\r\n"));
        assert!(!setup_is_passive("v=0\r\n"));
    }

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

    const CAND: &str = "candidate:1 1 udp 2122260223 192.0.2.7 50000 typ host";

    #[test]
    fn reads_a_trickle_fragment_with_credentials_mids_and_candidates() {
        let f = fragment(&format!(
            "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
             m=audio 9 RTP/AVP 0\r\na=mid:0\r\na={CAND}\r\n\
             m=video 9 RTP/AVP 0\r\na=mid:1\r\na=end-of-candidates\r\n"
        ))
        .unwrap();
        assert_eq!(f.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(f.media.len(), 2);
        assert_eq!(f.media[0].mid.as_deref(), Some("0"));
        assert_eq!(f.media[0].candidates, vec![CAND.to_string()]);
        assert!(f.media[1].end_of_candidates && f.media[1].candidates.is_empty());
        // A bare candidate (no m= line) belongs to the first section.
        let f = fragment(&format!("a={CAND}\n")).unwrap();
        assert_eq!(f.media[0].candidates.len(), 1);
    }

    #[test]
    fn refuses_fragments_that_are_not_fragments() {
        for bad in [
            "v=0\r\n",
            "a=candidate:1 1 udp\r\n",
            "a=ice-ufrag:\r\na=ice-pwd:x\r\n",
            "hello",
        ] {
            assert!(fragment(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_restart_offer_is_the_previous_one_with_new_credentials_and_candidates() {
        let previous = "v=0\r\na=group:BUNDLE 0 1\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:old\r\na=ice-pwd:oldpwd\r\n\
            a=candidate:9 1 udp 1 10.0.0.1 1 typ host\r\na=end-of-candidates\r\na=sendonly\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=ice-ufrag:old\r\na=ice-pwd:oldpwd\r\na=sendonly\r\n";
        let f = fragment(&format!(
            "a=ice-ufrag:new\r\na=ice-pwd:newpwd\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\na={CAND}\r\n"
        ))
        .unwrap();
        let offer = restart_offer(previous, &f).unwrap();
        assert!(!offer.contains("old"), "{offer}");
        assert_eq!(offer.matches("a=ice-ufrag:new\r\n").count(), 2);
        assert_eq!(offer.matches("a=ice-pwd:newpwd\r\n").count(), 2);
        assert!(!offer.contains("10.0.0.1"));
        // The new candidate sits in the audio section, before the video one.
        let (audio, video) = offer.split_once("m=video").unwrap();
        assert!(audio.contains(CAND) && !video.contains(CAND), "{offer}");
        assert_eq!(ice_ufrag(&offer), Some("new"));
        assert_eq!(sections(&offer).unwrap().len(), 2);
        assert!(restart_offer(previous, &Fragment::default()).is_err());
    }

    #[test]
    fn an_answer_becomes_a_fragment_with_its_credentials_and_candidates() {
        let answer = "v=0\r\na=ice-lite\r\nm=audio 9 X 111\r\na=mid:0\r\na=ice-ufrag:srv\r\n\
            a=ice-pwd:srvpwd\r\na=candidate:1 1 udp 1 127.0.0.1 8080 typ host\r\na=rtpmap:111 opus/48000/2\r\n\
            m=video 9 X 96\r\na=mid:1\r\na=ice-ufrag:srv\r\n";
        let f = answer_fragment(answer);
        assert_eq!(
            f,
            "a=ice-lite\r\na=ice-ufrag:srv\r\na=ice-pwd:srvpwd\r\nm=audio 9 X 111\r\na=mid:0\r\n\
             a=candidate:1 1 udp 1 127.0.0.1 8080 typ host\r\na=end-of-candidates\r\n\
             m=video 9 X 96\r\na=mid:1\r\na=end-of-candidates\r\n"
        );
        let back = fragment(&f).unwrap();
        assert_eq!(back.ufrag.as_deref(), Some("srv"));
        assert_eq!(back.media.len(), 2);
    }
}
