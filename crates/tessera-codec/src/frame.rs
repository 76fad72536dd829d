//! Raw I420 video frames and pixel rectangles.

use tessera_types::Yuv;

/// A tightly packed I420 picture: luma stride = `width`, chroma stride = `(width + 1) / 2`.
#[derive(Clone, PartialEq, Eq)]
pub struct VideoFrame {
    pub width: u32,
    pub height: u32,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

impl std::fmt::Debug for VideoFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VideoFrame({}x{})", self.width, self.height)
    }
}

impl VideoFrame {
    /// A frame of one colour.
    pub fn filled(width: u32, height: u32, colour: Yuv) -> VideoFrame {
        let (cw, ch) = chroma_size(width, height);
        VideoFrame {
            width,
            height,
            y: vec![colour.y; (width * height) as usize],
            u: vec![colour.u; (cw * ch) as usize],
            v: vec![colour.v; (cw * ch) as usize],
        }
    }

    /// Packed RGB24 (BT.601 limited range), for PNG snapshots and previews.
    pub fn to_rgb24(&self) -> Vec<u8> {
        let (w, h) = (self.width as usize, self.height as usize);
        let cw = w.div_ceil(2);
        let mut rgb = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let c = (y / 2) * cw + x / 2;
                let p = Yuv {
                    y: self.y[y * w + x],
                    u: self.u[c],
                    v: self.v[c],
                }
                .to_rgb();
                rgb.extend_from_slice(&[p.r, p.g, p.b]);
            }
        }
        rgb
    }

    /// Copies three planes with arbitrary strides (as decoders hand them out).
    #[allow(clippy::too_many_arguments)]
    pub fn from_planes(
        width: u32,
        height: u32,
        y: &[u8],
        y_stride: usize,
        u: &[u8],
        u_stride: usize,
        v: &[u8],
        v_stride: usize,
    ) -> VideoFrame {
        let mut out = None;
        Self::copy_planes_into(
            &mut out, width, height, y, y_stride, u, u_stride, v, v_stride,
        );
        out.expect("copy_planes_into fills it")
    }

    /// Like [`VideoFrame::from_planes`], into `out`: its buffers are reused when it holds a
    /// frame, so a stream of same-size pictures allocates nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn copy_planes_into(
        out: &mut Option<VideoFrame>,
        width: u32,
        height: u32,
        y: &[u8],
        y_stride: usize,
        u: &[u8],
        u_stride: usize,
        v: &[u8],
        v_stride: usize,
    ) {
        let f = out.get_or_insert_with(|| VideoFrame {
            width,
            height,
            y: Vec::new(),
            u: Vec::new(),
            v: Vec::new(),
        });
        let (cw, ch) = chroma_size(width, height);
        f.width = width;
        f.height = height;
        copy_plane_into(&mut f.y, y, y_stride, width as usize, height as usize);
        copy_plane_into(&mut f.u, u, u_stride, cw as usize, ch as usize);
        copy_plane_into(&mut f.v, v, v_stride, cw as usize, ch as usize);
    }

    pub fn stride_y(&self) -> usize {
        self.width as usize
    }

    pub fn stride_uv(&self) -> usize {
        self.width.div_ceil(2) as usize
    }

    /// Average colour of a rectangle (clipped to the frame), for tests and metering.
    pub fn mean_yuv(&self, rect: Rect) -> Yuv {
        let r = rect.clip(self.width, self.height);
        if r.w == 0 || r.h == 0 {
            return Yuv {
                y: 0,
                u: 128,
                v: 128,
            };
        }
        let mean = |plane: &[u8], stride: usize, x0: u32, y0: u32, x1: u32, y1: u32| {
            let mut sum = 0u64;
            let mut n = 0u64;
            for yy in y0..y1.max(y0 + 1) {
                let row = &plane[yy as usize * stride..];
                for xx in x0..x1.max(x0 + 1) {
                    sum += row[xx as usize] as u64;
                    n += 1;
                }
            }
            (sum / n.max(1)) as u8
        };
        let (cw, ch) = chroma_size(self.width, self.height);
        let (cx0, cy0) = (r.x / 2, r.y / 2);
        let (cx1, cy1) = (
            (r.x + r.w).div_ceil(2).min(cw),
            (r.y + r.h).div_ceil(2).min(ch),
        );
        Yuv {
            y: mean(&self.y, self.stride_y(), r.x, r.y, r.x + r.w, r.y + r.h),
            u: mean(&self.u, self.stride_uv(), cx0, cy0, cx1, cy1),
            v: mean(&self.v, self.stride_uv(), cx0, cy0, cx1, cy1),
        }
    }

    /// Peak signal-to-noise ratio of the luma planes in dB (`f64::INFINITY` when identical).
    pub fn psnr_y(&self, other: &VideoFrame) -> f64 {
        assert_eq!((self.width, self.height), (other.width, other.height));
        let mse = self
            .y
            .iter()
            .zip(&other.y)
            .map(|(a, b)| {
                let d = *a as f64 - *b as f64;
                d * d
            })
            .sum::<f64>()
            / self.y.len() as f64;
        if mse == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (255.0 * 255.0 / mse).log10()
        }
    }
}

/// Size of each chroma plane of an I420 picture.
pub fn chroma_size(width: u32, height: u32) -> (u32, u32) {
    (width.div_ceil(2), height.div_ceil(2))
}

fn copy_plane_into(dst: &mut Vec<u8>, src: &[u8], stride: usize, width: usize, height: usize) {
    dst.clear();
    if stride == width {
        dst.extend_from_slice(&src[..width * height]);
        return;
    }
    for row in src.chunks(stride).take(height) {
        dst.extend_from_slice(&row[..width]);
    }
}

/// A pixel rectangle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    pub const fn new(x: u32, y: u32, w: u32, h: u32) -> Rect {
        Rect { x, y, w, h }
    }

    /// The part of `self` inside a `width` x `height` picture.
    pub fn clip(self, width: u32, height: u32) -> Rect {
        let x = self.x.min(width);
        let y = self.y.min(height);
        Rect {
            x,
            y,
            w: self.w.min(width - x),
            h: self.h.min(height - y),
        }
    }

    /// Rounds to even coordinates and sizes (I420 chroma is subsampled 2x2), shrinking inward.
    pub fn even(self) -> Rect {
        let x = self.x.next_multiple_of(2);
        let y = self.y.next_multiple_of(2);
        let right = (self.x + self.w) & !1;
        let bottom = (self.y + self.h) & !1;
        Rect {
            x,
            y,
            w: right.saturating_sub(x),
            h: bottom.saturating_sub(y),
        }
    }

    /// A rectangle `inset` pixels smaller on every side.
    pub fn inset(self, inset: u32) -> Rect {
        let w = self.w.saturating_sub(2 * inset);
        let h = self.h.saturating_sub(2 * inset);
        Rect {
            x: self.x + inset.min(self.w / 2),
            y: self.y + inset.min(self.h / 2),
            w,
            h,
        }
    }

    pub fn is_empty(self) -> bool {
        self.w == 0 || self.h == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_shrinks_inward() {
        let check = |r: Rect, want: Rect| assert_eq!(r.even(), want, "{r:?}");
        check(Rect::new(0, 0, 10, 10), Rect::new(0, 0, 10, 10));
        check(Rect::new(1, 1, 10, 10), Rect::new(2, 2, 8, 8));
        check(Rect::new(1, 3, 3, 1), Rect::new(2, 4, 2, 0));
    }

    #[test]
    fn mean_of_filled_frame_is_its_colour() {
        let c = Yuv {
            y: 81,
            u: 90,
            v: 240,
        };
        let f = VideoFrame::filled(64, 36, c);
        assert_eq!(f.mean_yuv(Rect::new(10, 10, 20, 20)), c);
        assert_eq!(f.psnr_y(&f), f64::INFINITY);
    }

    #[test]
    fn from_planes_drops_stride_padding() {
        let y: Vec<u8> = (0..8 * 2).map(|i| i as u8).collect();
        let uv = vec![7u8; 8];
        let f = VideoFrame::from_planes(4, 2, &y, 8, &uv, 4, &uv, 4);
        assert_eq!(f.y, vec![0, 1, 2, 3, 8, 9, 10, 11]);
        assert_eq!(f.u, vec![7, 7]);
    }
}
