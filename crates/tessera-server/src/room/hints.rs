//! Sender hints: each camera is asked for the size, frame rate and bitrate of its largest
//! tile on any composite in use (`send_hint` and REMB).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tessera_engine::TierId;
use tessera_proto::ServerMessage;
use tessera_types::ParticipantId;
use tracing::debug;

use super::{Hint, MediaOut, MemberKind, RoomThread};

/// The least and most a send hint asks of a camera, in bits per second.
const MIN_HINT_BPS: u32 = 30_000;
const MAX_HINT_BPS: u32 = 4_000_000;

/// The largest picture a shared screen is asked for.
const MAX_SHARE_PIXELS: (u32, u32) = (1920, 1080);

impl RoomThread {
    /// Each sender's largest tile on any composite in use; a changed one is sent as a
    /// `send_hint` (WebSocket clients) and as a REMB cap (every sender).
    pub(super) fn update_hints(&mut self, now: Instant) {
        let settings = self.room().settings();
        if !settings.sender_hints {
            return;
        }
        let bpp = settings.hint_bits_per_pixel as f64;
        let share_fps = settings.share_fps;
        let in_use: HashSet<&TierId> = self
            .members
            .values()
            .filter_map(|m| m.options.receive_tier.as_ref())
            .collect();
        let letterbox = settings.compose.fit == tessera_compose::Fit::Letterbox;
        let share = self.room().share();
        // Per sender: its largest tile (w, h), the most fps, and the pixels of its picture
        // in that tile (a letterboxed picture fills less than its tile: a 16:9 camera in a
        // tall tile shows in about half of it, and its bitrate should follow).
        let mut best: HashMap<ParticipantId, (u32, u32, u32, u64)> = HashMap::new();
        for t in settings.tiers.iter().filter(|t| in_use.contains(&t.id)) {
            for (id, r) in self.room().tile_rects(&t.id) {
                let e = best.entry(id).or_insert((0, 0, 0, 0));
                if r.w * r.h > e.0 * e.1 {
                    let shown = match self.room().picture_size(id) {
                        Some((pw, ph)) if pw > 0 && ph > 0 && (letterbox || share == Some(id)) => {
                            let scale = (r.w as f64 / pw as f64).min(r.h as f64 / ph as f64);
                            (pw as f64 * scale * ph as f64 * scale) as u64
                        }
                        _ => r.w as u64 * r.h as u64,
                    };
                    (e.0, e.1, e.3) = (r.w, r.h, shown);
                }
                e.2 = e.2.max(t.fps);
            }
        }
        for (id, m) in self.members.iter_mut() {
            if !m.options.sends_video {
                continue;
            }
            // Links are seldom much faster up than down: a camera whose own downlink is
            // measured slow is asked for no more than 80% of it (in 50 kbit/s steps, so
            // the hint does not follow every wobble of the estimate).
            let link_cap = m
                .bandwidth
                .as_ref()
                .map(|b| b.estimate(now))
                .filter(|(_, src)| *src != tessera_engine::EstimateSource::Loss)
                .map(|(e, _)| ((e * 8 / 10) / 50_000 * 50_000).max(MIN_HINT_BPS as u64))
                .map_or(u32::MAX, |c| c.min(u32::MAX as u64) as u32);
            let screen = m.kind == MemberKind::Screen;
            let hint = match best.get(id) {
                Some(&(w, h, fps, shown)) => {
                    // A screen: its largest tile (at most 1080p) at a low frame rate, since
                    // text wants pixels, not motion.
                    let (w, h, fps, shown) = if screen {
                        let (mw, mh) = MAX_SHARE_PIXELS;
                        let scale = (mw as f64 / w as f64).min(mh as f64 / h as f64).min(1.0);
                        let (w, h) = ((w as f64 * scale) as u32, (h as f64 * scale) as u32);
                        (w, h, share_fps, shown as f64 * scale * scale)
                    } else {
                        (w, h, fps, shown as f64)
                    };
                    Hint {
                        width: w & !1,
                        height: h & !1,
                        fps,
                        max_bitrate_bps: ((shown * fps as f64 * bpp) as u32)
                            .clamp(MIN_HINT_BPS, MAX_HINT_BPS)
                            .min(link_cap),
                        on_canvas: true,
                    }
                }
                // On no canvas: almost nothing (after a grace period, since a new
                // participant's tile appears with the next composite).
                None if now.saturating_duration_since(m.joined_at) >= Duration::from_secs(2) => {
                    Hint {
                        width: 160,
                        height: 90,
                        fps: 5,
                        max_bitrate_bps: MIN_HINT_BPS,
                        on_canvas: false,
                    }
                }
                None => continue,
            };
            if m.last_hint == Some(hint) {
                continue;
            }
            debug!(participant = %id, ?hint, "send hint");
            m.last_hint = Some(hint);
            let _ = m.sink.media.try_send(MediaOut::Remb(hint.max_bitrate_bps));
            let _ = m.sink.events.send(ServerMessage::SendHint {
                kind: if screen { "screen" } else { "camera" }.into(),
                width: hint.width,
                height: hint.height,
                fps: hint.fps,
                max_bitrate_bps: hint.max_bitrate_bps,
                on_canvas: hint.on_canvas,
            });
        }
    }
}
