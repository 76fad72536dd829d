//! The webrtc-rs calls the test client makes: its tracks, candidates and keyframe requests.

use std::sync::Arc;
use std::time::Instant;

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tessera_proto::IceCandidate;
use tracing::debug;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{PeerConnection, RTCIceCandidateInit, RTCPeerConnectionIceEvent};
use webrtc::rtp_transceiver::RtpSender;

use crate::peer::{media_track, PeerError};

fn werr(e: impl std::fmt::Display) -> PeerError {
    PeerError::Webrtc(e.to_string())
}

/// A remote track's first SSRC and its codec's MIME type (empty if unknown).
pub(super) async fn track_codec(track: &Arc<dyn TrackRemote>) -> Option<(u32, String)> {
    let ssrc = track.ssrcs().await.first().copied()?;
    let mime = track
        .codec(ssrc)
        .await
        .map(|c| c.mime_type)
        .unwrap_or_default();
    Some((ssrc, mime))
}

/// A gathered candidate in the protocol's shape.
pub(super) fn candidate_of(event: &RTCPeerConnectionIceEvent) -> Option<IceCandidate> {
    let init = event.candidate.to_json().ok()?;
    Some(IceCandidate {
        candidate: init.candidate,
        sdp_mid: init.sdp_mid,
        sdp_m_line_index: init.sdp_mline_index,
        username_fragment: None,
    })
}

/// The payload type `sender` negotiated for `mime`.
pub(super) async fn negotiated_pt(sender: &Arc<dyn RtpSender>, mime: &str) -> Option<u8> {
    let params = sender.get_parameters().await.ok()?;
    params
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
        .map(|c| c.payload_type)
}

pub(super) async fn send_pli_to(track: &Arc<dyn TrackRemote>, ssrc: u32) {
    let pli = PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc: ssrc,
    };
    if let Err(e) = track.write_rtcp(vec![Box::new(pli)]).await {
        debug!("PLI not sent: {e}");
    }
}

pub(super) fn new_track(
    kind: RtpCodecKind,
    mime: &str,
    ssrc: u32,
) -> Result<Arc<TrackLocalStaticSample>, PeerError> {
    TrackLocalStaticSample::new(Instant::now(), media_track(kind, mime, ssrc))
        .map(Arc::new)
        .map_err(werr)
}

/// Adds a candidate the client trickled.
pub(super) async fn add_candidate(
    pc: &Arc<dyn PeerConnection>,
    c: IceCandidate,
) -> Result<(), PeerError> {
    pc.add_ice_candidate(RTCIceCandidateInit {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_mline_index: c.sdp_m_line_index,
        username_fragment: c.username_fragment,
        ..Default::default()
    })
    .await
    .map_err(werr)
}
