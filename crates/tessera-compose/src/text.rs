//! Text as coverage bitmaps (fontdue), cached by the compositor and blended into I420.

use tessera_codec::{Rect, VideoFrame};

/// An 8-bit coverage mask of rendered text.
#[derive(Clone, Debug)]
pub struct Coverage {
    pub width: u32,
    pub height: u32,
    pub alpha: Vec<u8>,
}

/// Renders one line of `text` at `px` pixels, at most `max_width` wide (cut with "…").
pub fn render(font: &fontdue::Font, text: &str, px: f32, max_width: u32) -> Coverage {
    let line = font.horizontal_line_metrics(px);
    let (ascent, descent) = line
        .map(|l| (l.ascent, l.descent))
        .unwrap_or((px * 0.8, -px * 0.2));
    let height = (ascent - descent).ceil().max(1.0) as u32;
    let ellipsis_w = font.metrics('…', px).advance_width;
    // An over-long name is cut to fit, ending with an ellipsis.
    let total: f32 = text
        .chars()
        .map(|c| font.metrics(c, px).advance_width)
        .sum();
    let limit = if total > max_width as f32 {
        max_width as f32 - ellipsis_w
    } else {
        f32::MAX
    };
    let mut glyphs = Vec::new();
    let mut pen = 0.0f32;
    for c in text.chars() {
        let adv = font.metrics(c, px).advance_width;
        if pen + adv > limit {
            break;
        }
        glyphs.push((c, pen));
        pen += adv;
    }
    if total > max_width as f32 {
        glyphs.push(('…', pen));
        pen += ellipsis_w;
    }
    let width = (pen.ceil() as u32).clamp(1, max_width.max(1));
    let mut alpha = vec![0u8; (width * height) as usize];
    for (c, x) in glyphs {
        let (m, bitmap) = font.rasterize(c, px);
        let gx = x.round() as i32 + m.xmin;
        let gy = (ascent.round() as i32) - m.height as i32 - m.ymin;
        for row in 0..m.height as i32 {
            let y = gy + row;
            if y < 0 || y >= height as i32 {
                continue;
            }
            for col in 0..m.width as i32 {
                let xx = gx + col;
                if xx < 0 || xx >= width as i32 {
                    continue;
                }
                let a = bitmap[(row * m.width as i32 + col) as usize];
                let d = &mut alpha[(y as u32 * width + xx as u32) as usize];
                *d = (*d).max(a);
            }
        }
    }
    Coverage {
        width,
        height,
        alpha,
    }
}

/// Darkens `rect` of the canvas (a label's backdrop): luma scaled by `keep/256`, chroma pulled
/// towards grey, so text stays readable on any picture.
pub fn darken(canvas: &mut VideoFrame, rect: Rect, keep: u32) {
    let r = rect.clip(canvas.width, canvas.height).even();
    let sy = canvas.stride_y();
    for y in r.y..r.y + r.h {
        let row = &mut canvas.y[y as usize * sy + r.x as usize..][..r.w as usize];
        for v in row {
            *v = (16 + (((*v as u32).saturating_sub(16) * keep) >> 8)) as u8;
        }
    }
    let sc = canvas.stride_uv();
    for plane in [&mut canvas.u, &mut canvas.v] {
        for y in r.y / 2..(r.y + r.h) / 2 {
            let row = &mut plane[y as usize * sc + (r.x / 2) as usize..][..(r.w / 2) as usize];
            for v in row {
                *v = (128 + (((*v as i32 - 128) * keep as i32) >> 8)) as u8;
            }
        }
    }
}

/// Blends `text` into the canvas luma at (x, y) towards `luma`, and its chroma towards grey.
pub fn blend(canvas: &mut VideoFrame, text: &Coverage, x: u32, y: u32, luma: u8) {
    let sy = canvas.stride_y();
    let sc = canvas.stride_uv();
    for row in 0..text.height {
        let cy = y + row;
        if cy >= canvas.height {
            break;
        }
        for col in 0..text.width {
            let cx = x + col;
            if cx >= canvas.width {
                break;
            }
            let a = text.alpha[(row * text.width + col) as usize] as u32;
            if a == 0 {
                continue;
            }
            let p = &mut canvas.y[cy as usize * sy + cx as usize];
            *p = ((*p as u32 * (255 - a) + luma as u32 * a) / 255) as u8;
            if row % 2 == 0 && col % 2 == 0 {
                let i = (cy / 2) as usize * sc + (cx / 2) as usize;
                for plane in [&mut canvas.u, &mut canvas.v] {
                    let c = &mut plane[i];
                    *c = ((*c as u32 * (255 - a) + 128 * a) / 255) as u8;
                }
            }
        }
    }
}
