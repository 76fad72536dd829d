//! I420 scaling and filling through libyuv (SIMD), writing straight into a canvas region.

use std::os::raw::c_int;

use tessera_types::Yuv;

use crate::frame::{chroma_size, Rect, VideoFrame};

/// libyuv filter modes (`enum FilterMode` in `libyuv/scale.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub enum Filter {
    None = 0,
    Linear = 1,
    Bilinear = 2,
    Box = 3,
}

extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn I420Scale(
        src_y: *const u8,
        src_stride_y: c_int,
        src_u: *const u8,
        src_stride_u: c_int,
        src_v: *const u8,
        src_stride_v: c_int,
        src_width: c_int,
        src_height: c_int,
        dst_y: *mut u8,
        dst_stride_y: c_int,
        dst_u: *mut u8,
        dst_stride_u: c_int,
        dst_v: *mut u8,
        dst_stride_v: c_int,
        dst_width: c_int,
        dst_height: c_int,
        filtering: Filter,
    ) -> c_int;

    fn SetPlane(dst_y: *mut u8, dst_stride_y: c_int, width: c_int, height: c_int, value: u32);
}

/// Scales `src_rect` of `src` into `dst_rect` of `dst`. Both rectangles are clipped to their
/// frames and rounded to even coordinates; an empty rectangle is a no-op.
pub fn scale_into(
    src: &VideoFrame,
    src_rect: Rect,
    dst: &mut VideoFrame,
    dst_rect: Rect,
    filter: Filter,
) {
    let s = src_rect.clip(src.width, src.height).even();
    let d = dst_rect.clip(dst.width, dst.height).even();
    if s.is_empty() || d.is_empty() {
        return;
    }
    let (ssy, ssc) = (src.stride_y(), src.stride_uv());
    let (dsy, dsc) = (dst.stride_y(), dst.stride_uv());
    let s_off_y = s.y as usize * ssy + s.x as usize;
    let s_off_c = (s.y / 2) as usize * ssc + (s.x / 2) as usize;
    let d_off_y = d.y as usize * dsy + d.x as usize;
    let d_off_c = (d.y / 2) as usize * dsc + (d.x / 2) as usize;
    // SAFETY: both rectangles are clipped to their frames and even, so every row libyuv
    // touches (offset + (h-1)*stride + w, and the chroma halves of it) lies inside the
    // tightly packed planes.
    unsafe {
        I420Scale(
            src.y.as_ptr().add(s_off_y),
            ssy as c_int,
            src.u.as_ptr().add(s_off_c),
            ssc as c_int,
            src.v.as_ptr().add(s_off_c),
            ssc as c_int,
            s.w as c_int,
            s.h as c_int,
            dst.y.as_mut_ptr().add(d_off_y),
            dsy as c_int,
            dst.u.as_mut_ptr().add(d_off_c),
            dsc as c_int,
            dst.v.as_mut_ptr().add(d_off_c),
            dsc as c_int,
            d.w as c_int,
            d.h as c_int,
            filter,
        );
    }
}

/// Returns `src` scaled to `width` x `height`.
pub fn scaled(src: &VideoFrame, width: u32, height: u32, filter: Filter) -> VideoFrame {
    let mut out = VideoFrame::filled(
        width,
        height,
        Yuv {
            y: 16,
            u: 128,
            v: 128,
        },
    );
    scale_into(
        src,
        Rect::new(0, 0, src.width, src.height),
        &mut out,
        Rect::new(0, 0, width, height),
        filter,
    );
    out
}

/// Fills a rectangle (clipped, rounded to even) with one colour.
pub fn fill_rect(dst: &mut VideoFrame, rect: Rect, colour: Yuv) {
    let d = rect.clip(dst.width, dst.height).even();
    if d.is_empty() {
        return;
    }
    let (dsy, dsc) = (dst.stride_y(), dst.stride_uv());
    let (cw, ch) = chroma_size(d.w, d.h);
    let off_y = d.y as usize * dsy + d.x as usize;
    let off_c = (d.y / 2) as usize * dsc + (d.x / 2) as usize;
    // SAFETY: the rectangle is clipped to the frame and even, as in `scale_into`.
    unsafe {
        SetPlane(
            dst.y.as_mut_ptr().add(off_y),
            dsy as c_int,
            d.w as c_int,
            d.h as c_int,
            colour.y as u32,
        );
        SetPlane(
            dst.u.as_mut_ptr().add(off_c),
            dsc as c_int,
            cw as c_int,
            ch as c_int,
            colour.u as u32,
        );
        SetPlane(
            dst.v.as_mut_ptr().add(off_c),
            dsc as c_int,
            cw as c_int,
            ch as c_int,
            colour.v as u32,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_a_flat_frame_keeps_its_colour_inside_the_target_only() {
        let red = Yuv {
            y: 81,
            u: 90,
            v: 240,
        };
        let grey = Yuv {
            y: 128,
            u: 128,
            v: 128,
        };
        let src = VideoFrame::filled(640, 360, red);
        let mut dst = VideoFrame::filled(1280, 720, grey);
        scale_into(
            &src,
            Rect::new(0, 0, 640, 360),
            &mut dst,
            Rect::new(640, 360, 320, 180),
            Filter::Bilinear,
        );
        assert_eq!(dst.mean_yuv(Rect::new(650, 370, 300, 160)), red);
        assert_eq!(dst.mean_yuv(Rect::new(0, 0, 640, 360)), grey);
        assert_eq!(dst.mean_yuv(Rect::new(960, 540, 320, 180)), grey);
    }

    #[test]
    fn out_of_bounds_rects_are_clipped_not_fatal() {
        let src = VideoFrame::filled(
            33,
            17,
            Yuv {
                y: 200,
                u: 100,
                v: 100,
            },
        );
        let mut dst = VideoFrame::filled(
            64,
            64,
            Yuv {
                y: 16,
                u: 128,
                v: 128,
            },
        );
        scale_into(
            &src,
            Rect::new(0, 0, 100, 100),
            &mut dst,
            Rect::new(60, 60, 50, 50),
            Filter::Box,
        );
        fill_rect(
            &mut dst,
            Rect::new(63, 63, 10, 10),
            Yuv { y: 1, u: 2, v: 3 },
        );
        scale_into(
            &src,
            Rect::new(40, 40, 10, 10),
            &mut dst,
            Rect::new(0, 0, 10, 10),
            Filter::Box,
        );
        assert_eq!(dst.mean_yuv(Rect::new(60, 60, 4, 4)).y, 200);
    }

    #[test]
    fn fill_rect_paints_exactly_the_rect() {
        let mut f = VideoFrame::filled(
            16,
            16,
            Yuv {
                y: 16,
                u: 128,
                v: 128,
            },
        );
        let c = Yuv {
            y: 235,
            u: 10,
            v: 20,
        };
        fill_rect(&mut f, Rect::new(4, 4, 8, 8), c);
        assert_eq!(f.mean_yuv(Rect::new(4, 4, 8, 8)), c);
        assert_eq!(f.y[0], 16);
        assert_eq!(f.y[3 * 16 + 3], 16);
    }
}
