//! Tiling: layouts (pure functions) and the compositor that draws every participant's
//! picture into one I420 canvas.
//!
//! Owns where tiles go ([`layout`]), how a picture fits its tile (letterbox or crop), labels,
//! placeholders and the active-speaker highlight. Scaling and fills are libyuv (through
//! `tessera_codec::scale`); labels and placeholders are rendered once and cached.
//! Must not do IO or read clocks: fonts and placeholder images arrive as bytes.
//!
//! ```
//! use tessera_codec::VideoFrame;
//! use tessera_compose::{ComposeConfig, Compositor, LayoutSpec, TileInput};
//! use tessera_types::Rgb;
//! let red = VideoFrame::filled(320, 180, Rgb { r: 255, g: 0, b: 0 }.to_yuv());
//! let mut c = Compositor::new(ComposeConfig::new(640, 360)).unwrap();
//! let tiles = [TileInput { name: "Ann", frame: Some(&red), fit: None }, TileInput { name: "Bo", frame: None, fit: None }];
//! let canvas = c.compose(&LayoutSpec::Grid, &tiles, None);
//! assert_eq!((canvas.width, canvas.height), (640, 360));
//! ```

pub mod layout;
mod text;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tessera_codec::scale::{fill_rect, scale_into, Filter};
use tessera_codec::{Rect, VideoFrame};
use tessera_types::{Rgb, Yuv};

pub use layout::{place, to_pixels, CustomLayout, CustomTile, FRect, LayoutSpec, Placement};

/// How a picture whose aspect ratio differs from its tile is fitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// The whole picture, with bars of the background colour.
    Letterbox,
    /// The tile filled, the picture's edges cut.
    Crop,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ComposeConfig {
    pub width: u32,
    pub height: u32,
    pub background: Rgb,
    pub gap_px: u32,
    pub fit: Fit,
    pub labels: bool,
    /// TrueType bytes for labels and placeholder initials.
    pub label_font: Option<Vec<u8>>,
    /// PNG or JPEG bytes shown for participants without video.
    pub placeholder_image: Option<Vec<u8>>,
    pub placeholder_colour: Rgb,
    /// Border colour around the active speaker's tile.
    pub speaker_highlight: Option<Rgb>,
}

impl ComposeConfig {
    /// A plain canvas: dark background, 4 px gaps, letterbox, no labels or highlight.
    pub fn new(width: u32, height: u32) -> ComposeConfig {
        ComposeConfig {
            width,
            height,
            background: Rgb {
                r: 28,
                g: 31,
                b: 38,
            },
            gap_px: 4,
            fit: Fit::Letterbox,
            labels: false,
            label_font: None,
            placeholder_image: None,
            placeholder_colour: Rgb {
                r: 59,
                g: 66,
                b: 82,
            },
            speaker_highlight: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("canvas {width}x{height}: width and height must be even and 16..=4096")]
    CanvasSize { width: u32, height: u32 },
    #[error("label font: {0}")]
    Font(String),
    #[error("placeholder image: {0}")]
    Image(String),
}

/// One participant's tile content, in join order.
#[derive(Clone, Copy, Debug)]
pub struct TileInput<'a> {
    pub name: &'a str,
    /// `None` shows the placeholder.
    pub frame: Option<&'a VideoFrame>,
    /// How this tile's picture is fitted, if not the canvas's `fit` (a shared screen is
    /// letterboxed: cutting its edges would cut text).
    pub fit: Option<Fit>,
}

/// Draws tiles into a canvas it owns. See the crate documentation.
pub struct Compositor {
    cfg: ComposeConfig,
    canvas: VideoFrame,
    font: Option<Arc<fontdue::Font>>,
    placeholder_image: Option<VideoFrame>,
    labels: HashMap<(String, u32), text::Coverage>,
    placeholders: HashMap<(String, u32, u32), VideoFrame>,
    placements: Vec<(usize, Rect)>,
}

/// The parsed font for `bytes`, shared by every compositor that uses it. fontdue parses
/// every glyph's outline up front: about 40 MB for the default label font, which each tier
/// of each room once held a copy of (most of a live room's memory).
fn shared_font(bytes: &[u8]) -> Result<Arc<fontdue::Font>, ComposeError> {
    type Fonts = Mutex<HashMap<(usize, u64), Weak<fontdue::Font>>>;
    static FONTS: OnceLock<Fonts> = OnceLock::new();
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        (bytes.len(), h.finish())
    };
    let fonts = FONTS.get_or_init(Default::default);
    if let Some(f) = fonts
        .lock()
        .ok()
        .and_then(|m| m.get(&key).and_then(Weak::upgrade))
    {
        return Ok(f);
    }
    let font = Arc::new(
        fontdue::Font::from_bytes(bytes, fontdue::FontSettings::default())
            .map_err(|e| ComposeError::Font(e.to_string()))?,
    );
    if let Ok(mut m) = fonts.lock() {
        m.retain(|_, w| w.strong_count() > 0);
        m.insert(key, Arc::downgrade(&font));
    }
    Ok(font)
}

/// Cached labels and placeholders beyond this many are dropped (names come and go).
const CACHE_LIMIT: usize = 256;
const HIGHLIGHT_PX: u32 = 4;

impl Compositor {
    pub fn new(cfg: ComposeConfig) -> Result<Compositor, ComposeError> {
        let mut c = Compositor {
            canvas: VideoFrame::filled(2, 2, Rgb::BLACK.to_yuv()),
            cfg: ComposeConfig::new(2, 2),
            font: None,
            placeholder_image: None,
            labels: HashMap::new(),
            placeholders: HashMap::new(),
            placements: Vec::new(),
        };
        c.set_config(cfg)?;
        Ok(c)
    }

    /// Applies a new configuration (canvas size, colours, labels...) from the next frame on.
    pub fn set_config(&mut self, cfg: ComposeConfig) -> Result<(), ComposeError> {
        let (w, h) = (cfg.width, cfg.height);
        if !(16..=4096).contains(&w) || !(16..=4096).contains(&h) || w % 2 != 0 || h % 2 != 0 {
            return Err(ComposeError::CanvasSize {
                width: w,
                height: h,
            });
        }
        let font = match &cfg.label_font {
            Some(bytes) => Some(shared_font(bytes)?),
            None => None,
        };

        let placeholder_image = match &cfg.placeholder_image {
            Some(bytes) => Some(decode_image(bytes)?),
            None => None,
        };
        self.font = font;
        self.placeholder_image = placeholder_image;
        self.labels.clear();
        self.placeholders.clear();
        if (self.canvas.width, self.canvas.height) != (w, h) {
            self.canvas = VideoFrame::filled(w, h, cfg.background.to_yuv());
        }
        self.cfg = cfg;
        Ok(())
    }

    pub fn config(&self) -> &ComposeConfig {
        &self.cfg
    }

    /// The last composed canvas.
    pub fn canvas(&self) -> &VideoFrame {
        &self.canvas
    }

    /// Participant index and pixel rectangle of every tile of the last composite.
    pub fn placements(&self) -> &[(usize, Rect)] {
        &self.placements
    }

    /// Composes one frame: `tiles` in join order, `speaker` an index into them.
    pub fn compose(
        &mut self,
        spec: &LayoutSpec,
        tiles: &[TileInput<'_>],
        speaker: Option<usize>,
    ) -> &VideoFrame {
        let (cw, ch) = (self.cfg.width, self.cfg.height);
        let background = self.cfg.background.to_yuv();
        let placements = place(spec, tiles.len(), speaker);
        let rects: Vec<Rect> = placements
            .iter()
            .map(|p| to_pixels(p.rect, cw, ch, self.cfg.gap_px))
            .collect();
        fill_uncovered(&mut self.canvas, &rects, background);
        self.placements.clear();
        for (p, rect) in placements.into_iter().zip(rects) {
            if rect.is_empty() {
                continue;
            }
            let tile = tiles[p.participant];
            let fit = tile.fit.unwrap_or(self.cfg.fit);
            let covers_tile = match tile.frame {
                Some(f) if fit == Fit::Crop => f.width >= 2 && f.height >= 2,
                Some(f) => {
                    f.width as u64 * rect.h as u64 == f.height as u64 * rect.w as u64
                        || near_size(f, rect)
                }
                None => true,
            };
            if !covers_tile || p.z != 0 {
                // Letterbox bars, or a tile drawn over a lower one: clear our own area.
                fill_rect(&mut self.canvas, rect, background);
            }
            match tile.frame {
                Some(frame) if frame.width >= 2 && frame.height >= 2 => {
                    draw_fitted(&mut self.canvas, frame, rect, fit);
                }
                _ => self.draw_placeholder(tile.name, rect),
            }
            if self.cfg.labels {
                self.draw_label(tile.name, rect);
            }
            if speaker == Some(p.participant) && tiles.len() > 1 {
                if let Some(c) = self.cfg.speaker_highlight {
                    draw_border(&mut self.canvas, rect, c.to_yuv());
                }
            }
            self.placements.push((p.participant, rect));
        }
        &self.canvas
    }

    fn draw_placeholder(&mut self, name: &str, rect: Rect) {
        if self.placeholders.len() > CACHE_LIMIT {
            self.placeholders.clear();
        }
        let key = (name.to_string(), rect.w, rect.h);
        if !self.placeholders.contains_key(&key) {
            let tile = self.render_placeholder(name, rect.w, rect.h);
            self.placeholders.insert(key.clone(), tile);
        }
        let tile = &self.placeholders[&key];
        scale_into(
            tile,
            Rect::new(0, 0, tile.width, tile.height),
            &mut self.canvas,
            rect,
            Filter::None,
        );
    }

    fn render_placeholder(&self, name: &str, w: u32, h: u32) -> VideoFrame {
        let mut tile = VideoFrame::filled(w, h, self.cfg.placeholder_colour.to_yuv());
        if let Some(img) = &self.placeholder_image {
            draw_fitted(&mut tile, img, Rect::new(0, 0, w, h), Fit::Letterbox);
        } else if let Some(font) = &self.font {
            let px = (h as f32 / 3.0).clamp(8.0, 200.0);
            let t = text::render(font, &initials(name), px, w);
            let x = w.saturating_sub(t.width) / 2;
            let y = h.saturating_sub(t.height) / 2;
            text::blend(&mut tile, &t, x, y, 235);
        }
        tile
    }

    fn draw_label(&mut self, name: &str, rect: Rect) {
        let Some(font) = &self.font else { return };
        let px = (rect.h / 12).clamp(12, 32);
        let pad = (px / 4).max(2) & !1;
        let max_w = rect.w.saturating_sub(4 * pad);
        if max_w < px || rect.h < px + 4 * pad {
            return;
        }
        if self.labels.len() > CACHE_LIMIT {
            self.labels.clear();
        }
        let label = self
            .labels
            .entry((name.to_string(), px))
            .or_insert_with(|| text::render(font, name, px as f32, max_w));
        let bx = rect.x + pad;
        let by = rect.y + rect.h - label.height - 3 * pad;
        let backdrop = Rect::new(bx, by, label.width + 2 * pad, label.height + 2 * pad);
        text::darken(&mut self.canvas, backdrop, 90);
        text::blend(&mut self.canvas, label, bx + pad, by + pad, 235);
    }
}

/// Whether `src` is at most 5% larger than `rect` on both axes (and not smaller).
fn near_size(src: &VideoFrame, rect: Rect) -> bool {
    src.width >= rect.w
        && src.height >= rect.h
        && src.width * 100 <= rect.w * 105
        && src.height * 100 <= rect.h * 105
}

/// Letterbox or crop `src` into `rect` of `dst` (libyuv does the scaling).
fn draw_fitted(dst: &mut VideoFrame, src: &VideoFrame, rect: Rect, fit: Fit) {
    let (sw, sh) = (src.width as u64, src.height as u64);
    let (tw, th) = (rect.w as u64, rect.h as u64);
    // A picture at most 5% larger than its tile (the tile lost a gap's worth of pixels)
    // is cropped to size instead: a plain copy is several times cheaper than filtering.
    if near_size(src, rect) {
        let s = Rect::new(
            (src.width - rect.w) / 2,
            (src.height - rect.h) / 2,
            rect.w,
            rect.h,
        );
        scale_into(src, s, dst, rect, Filter::None);
        return;
    }
    let (src_rect, dst_rect) = match fit {
        Fit::Letterbox => {
            // Largest rect with the source's aspect inside the tile, centred.
            let (w, h) = if sw * th > tw * sh {
                (tw, tw * sh / sw)
            } else {
                (th * sw / sh, th)
            };
            let d = Rect::new(
                rect.x + ((tw - w) / 2) as u32,
                rect.y + ((th - h) / 2) as u32,
                w as u32,
                h as u32,
            );
            (Rect::new(0, 0, src.width, src.height), d)
        }
        Fit::Crop => {
            // Largest centred part of the source with the tile's aspect.
            let (w, h) = if sw * th > tw * sh {
                (sh * tw / th, sh)
            } else {
                (sw, sw * th / tw)
            };
            let s = Rect::new(
                ((sw - w) / 2) as u32,
                ((sh - h) / 2) as u32,
                w as u32,
                h as u32,
            );
            (s, rect)
        }
    };
    // Box filtering is worth its cost only for strong downscales.
    let filter = if src_rect.w > 2 * dst_rect.w.max(1) {
        Filter::Box
    } else {
        Filter::Bilinear
    };
    scale_into(src, src_rect, dst, dst_rect, filter);
}

/// Fills the parts of the canvas no tile covers (gaps, edges, empty layout areas): whole
/// rows outside every tile, and each row band's spans between tiles.
fn fill_uncovered(canvas: &mut VideoFrame, rects: &[Rect], c: Yuv) {
    let (w, h) = (canvas.width, canvas.height);
    // Horizontal bands whose set of overlapping tiles is constant.
    let mut edges: Vec<u32> = vec![0, h];
    for r in rects.iter().filter(|r| !r.is_empty()) {
        edges.push(r.y);
        edges.push(r.y + r.h);
    }
    edges.sort_unstable();
    edges.dedup();
    for band in edges.windows(2) {
        let (y0, y1) = (band[0], band[1]);
        let mut spans: Vec<(u32, u32)> = rects
            .iter()
            .filter(|r| !r.is_empty() && r.y <= y0 && r.y + r.h >= y1)
            .map(|r| (r.x, r.x + r.w))
            .collect();
        spans.sort_unstable();
        let mut x = 0;
        for (a, b) in spans {
            if a > x {
                fill_rect(canvas, Rect::new(x, y0, a - x, y1 - y0), c);
            }
            x = x.max(b);
        }
        if x < w {
            fill_rect(canvas, Rect::new(x, y0, w - x, y1 - y0), c);
        }
    }
}

fn draw_border(dst: &mut VideoFrame, r: Rect, c: Yuv) {
    let b = HIGHLIGHT_PX.min(r.w / 4).min(r.h / 4) & !1;
    if b == 0 {
        return;
    }
    fill_rect(dst, Rect::new(r.x, r.y, r.w, b), c);
    fill_rect(dst, Rect::new(r.x, r.y + r.h - b, r.w, b), c);
    fill_rect(dst, Rect::new(r.x, r.y, b, r.h), c);
    fill_rect(dst, Rect::new(r.x + r.w - b, r.y, b, r.h), c);
}

/// Up to two initials: "Ann Lee" -> "AL", "bo" -> "B", "" -> "?".
pub fn initials(name: &str) -> String {
    let s: String = name
        .split_whitespace()
        .filter_map(|w| w.chars().next())
        .take(2)
        .flat_map(char::to_uppercase)
        .collect();
    if s.is_empty() {
        "?".to_string()
    } else {
        s
    }
}

/// Decodes PNG/JPEG bytes to I420 (BT.601 limited range), once at configuration time.
fn decode_image(bytes: &[u8]) -> Result<VideoFrame, ComposeError> {
    let img = image::load_from_memory(bytes).map_err(|e| ComposeError::Image(e.to_string()))?;
    let rgb = img.to_rgb8();
    let (w, h) = (rgb.width() & !1, rgb.height() & !1);
    if w < 2 || h < 2 {
        return Err(ComposeError::Image(format!(
            "{}x{} is too small",
            rgb.width(),
            rgb.height()
        )));
    }
    let mut f = VideoFrame::filled(w, h, Rgb::BLACK.to_yuv());
    let cw = f.stride_uv();
    for y in 0..h {
        for x in 0..w {
            let p = rgb.get_pixel(x, y);
            let yuv = Rgb {
                r: p[0],
                g: p[1],
                b: p[2],
            }
            .to_yuv();
            f.y[(y * w + x) as usize] = yuv.y;
            if x % 2 == 0 && y % 2 == 0 {
                let i = (y / 2) as usize * cw + (x / 2) as usize;
                f.u[i] = yuv.u;
                f.v[i] = yuv.v;
            }
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests;
