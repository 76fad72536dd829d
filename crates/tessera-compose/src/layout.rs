//! Layouts as pure functions: who goes where, in canvas fractions.

use tessera_codec::Rect;

/// A rectangle in canvas fractions (0..=1 on both axes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FRect {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl FRect {
    pub const FULL: FRect = FRect {
        x: 0.0,
        y: 0.0,
        w: 1.0,
        h: 1.0,
    };
}

/// One tile of a custom layout (see `[layouts.NAME]` in the config).
#[derive(Clone, Debug, PartialEq)]
pub struct CustomTile {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    /// Drawing order: higher is on top.
    pub z: i32,
    /// This tile shows the active speaker.
    pub speaker: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CustomLayout {
    pub name: String,
    pub tiles: Vec<CustomTile>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LayoutSpec {
    /// Equal tiles, join order, row by row.
    Grid,
    /// The active speaker large on top, the others in a strip below.
    Speaker,
    Custom(CustomLayout),
}

impl LayoutSpec {
    pub fn name(&self) -> &str {
        match self {
            LayoutSpec::Grid => "grid",
            LayoutSpec::Speaker => "speaker",
            LayoutSpec::Custom(c) => &c.name,
        }
    }
}

/// Where participant `participant` (index in join order) is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placement {
    pub participant: usize,
    pub rect: FRect,
    pub z: i32,
}

/// Fraction of the canvas height given to the speaker layout's large tile.
pub const SPEAKER_MAIN_HEIGHT: f32 = 0.78;
/// Most participants shown in the speaker layout's strip; later joiners are not shown.
pub const SPEAKER_STRIP_MAX: usize = 8;

/// Columns and rows of the grid for `n` participants: the squarest grid that fits them.
pub fn grid_dimensions(n: usize) -> (usize, usize) {
    if n == 0 {
        return (0, 0);
    }
    let cols = (n as f64).sqrt().ceil() as usize;
    (cols, n.div_ceil(cols))
}

/// Places `n` participants (in join order) for `spec`; `speaker` is an index into them.
/// The result is sorted by `z` (draw in order).
pub fn place(spec: &LayoutSpec, n: usize, speaker: Option<usize>) -> Vec<Placement> {
    let speaker = speaker.filter(|s| *s < n);
    let mut out = match spec {
        LayoutSpec::Grid => grid(n),
        LayoutSpec::Speaker => speaker_layout(n, speaker.unwrap_or(0)),
        LayoutSpec::Custom(c) => custom(c, n, speaker),
    };
    out.sort_by_key(|p| p.z);
    out
}

fn grid(n: usize) -> Vec<Placement> {
    let (cols, rows) = grid_dimensions(n);
    let (w, h) = (1.0 / cols.max(1) as f32, 1.0 / rows.max(1) as f32);
    (0..n)
        .map(|i| {
            let (row, col) = (i / cols, i % cols);
            // A partly filled last row is centred.
            let in_row = if row == rows - 1 {
                n - row * cols
            } else {
                cols
            };
            let offset = (cols - in_row) as f32 * w / 2.0;
            Placement {
                participant: i,
                rect: FRect {
                    x: offset + col as f32 * w,
                    y: row as f32 * h,
                    w,
                    h,
                },
                z: 0,
            }
        })
        .collect()
}

fn speaker_layout(n: usize, speaker: usize) -> Vec<Placement> {
    if n == 0 {
        return Vec::new();
    }
    if n == 1 {
        return vec![Placement {
            participant: 0,
            rect: FRect::FULL,
            z: 0,
        }];
    }
    let mut out = vec![Placement {
        participant: speaker,
        rect: FRect {
            x: 0.0,
            y: 0.0,
            w: 1.0,
            h: SPEAKER_MAIN_HEIGHT,
        },
        z: 0,
    }];
    let others: Vec<usize> = (0..n)
        .filter(|i| *i != speaker)
        .take(SPEAKER_STRIP_MAX)
        .collect();
    let strip_h = 1.0 - SPEAKER_MAIN_HEIGHT;
    // On a 16:9 canvas a tile as wide as it is tall (in fractions) is 16:9 too.
    let w = (1.0 / others.len() as f32).min(strip_h);
    let x0 = (1.0 - w * others.len() as f32) / 2.0;
    for (k, p) in others.into_iter().enumerate() {
        out.push(Placement {
            participant: p,
            rect: FRect {
                x: x0 + k as f32 * w,
                y: SPEAKER_MAIN_HEIGHT,
                w,
                h: strip_h,
            },
            z: 0,
        });
    }
    out
}

fn custom(layout: &CustomLayout, n: usize, speaker: Option<usize>) -> Vec<Placement> {
    let has_speaker_tile = layout.tiles.iter().any(|t| t.speaker);
    let speaker = if has_speaker_tile && n > 0 {
        Some(speaker.unwrap_or(0))
    } else {
        None
    };
    let mut rest = (0..n).filter(|i| Some(*i) != speaker);
    let mut out = Vec::new();
    for t in &layout.tiles {
        let who = if t.speaker { speaker } else { rest.next() };
        if let Some(participant) = who {
            out.push(Placement {
                participant,
                rect: FRect {
                    x: t.x,
                    y: t.y,
                    w: t.w,
                    h: t.h,
                },
                z: t.z,
            });
        }
    }
    out
}

/// Checks a custom layout's tiles; the config crate reports the same rules with line numbers.
pub fn validate_custom(layout: &CustomLayout) -> Result<(), String> {
    if layout.tiles.is_empty() {
        return Err(format!("layout {}: no tiles", layout.name));
    }
    if layout.tiles.iter().filter(|t| t.speaker).count() > 1 {
        return Err(format!(
            "layout {}: more than one speaker tile",
            layout.name
        ));
    }
    for (i, t) in layout.tiles.iter().enumerate() {
        let inside = (0.0..=1.0).contains(&t.x)
            && (0.0..=1.0).contains(&t.y)
            && t.w > 0.0
            && t.h > 0.0
            && t.x + t.w <= 1.0 + 1e-4
            && t.y + t.h <= 1.0 + 1e-4;
        if !inside {
            return Err(format!(
                "layout {}: tile {i} is not inside the canvas",
                layout.name
            ));
        }
    }
    Ok(())
}

/// Pixel rectangle of `r` on a `canvas_w` x `canvas_h` canvas with `gap_px` between tiles
/// and around the edge; even-aligned for I420.
pub fn to_pixels(r: FRect, canvas_w: u32, canvas_h: u32, gap_px: u32) -> Rect {
    let half = gap_px as f32 / 2.0;
    // The usable area is the canvas less half a gap on each side; each tile then gives up
    // half a gap on each side, so neighbours are a whole gap apart and so is the edge.
    let (aw, ah) = (
        canvas_w as f32 - gap_px as f32,
        canvas_h as f32 - gap_px as f32,
    );
    let x0 = half + r.x * aw + half;
    let y0 = half + r.y * ah + half;
    let x1 = half + (r.x + r.w) * aw - half;
    let y1 = half + (r.y + r.h) * ah - half;
    let (x0, y0) = (x0.round().max(0.0) as u32, y0.round().max(0.0) as u32);
    let (x1, y1) = (x1.round().max(0.0) as u32, y1.round().max(0.0) as u32);
    Rect::new(x0, y0, x1.saturating_sub(x0), y1.saturating_sub(y0))
        .clip(canvas_w, canvas_h)
        .even()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlaps(a: &FRect, b: &FRect) -> bool {
        let e = 1e-5;
        a.x + a.w > b.x + e && b.x + b.w > a.x + e && a.y + a.h > b.y + e && b.y + b.h > a.y + e
    }

    fn inside(r: &FRect) -> bool {
        let e = 1e-5;
        r.x >= -e
            && r.y >= -e
            && r.x + r.w <= 1.0 + e
            && r.y + r.h <= 1.0 + e
            && r.w > 0.0
            && r.h > 0.0
    }

    /// Checks the invariants every built-in layout keeps for `n` participants.
    fn check(spec: &LayoutSpec, n: usize, speaker: Option<usize>, shown: usize) {
        let p = place(spec, n, speaker);
        assert_eq!(p.len(), shown, "{spec:?} n={n}: {} tiles", p.len());
        let mut seen: Vec<usize> = p.iter().map(|x| x.participant).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(
            seen.len(),
            p.len(),
            "{spec:?} n={n}: a participant placed twice"
        );
        for (i, a) in p.iter().enumerate() {
            assert!(inside(&a.rect), "{spec:?} n={n}: {a:?} outside the canvas");
            assert!(a.participant < n);
            for b in &p[i + 1..] {
                assert!(
                    !overlaps(&a.rect, &b.rect),
                    "{spec:?} n={n}: {a:?} overlaps {b:?}"
                );
            }
        }
    }

    #[test]
    fn grid_for_1_to_25() {
        for n in 1..=25 {
            check(&LayoutSpec::Grid, n, None, n);
            let p = place(&LayoutSpec::Grid, n, None);
            // Equal tiles, join order row by row.
            for w in p.windows(2) {
                assert_eq!((w[0].rect.w, w[0].rect.h), (w[1].rect.w, w[1].rect.h));
                let (a, b) = (&w[0].rect, &w[1].rect);
                assert!(
                    b.y > a.y || (b.y == a.y && b.x > a.x),
                    "n={n}: not row by row"
                );
                assert_eq!(w[1].participant, w[0].participant + 1);
            }
        }
    }

    #[test]
    fn grid_dimensions_table() {
        let table = [
            (1, (1, 1)),
            (2, (2, 1)),
            (3, (2, 2)),
            (4, (2, 2)),
            (5, (3, 2)),
            (9, (3, 3)),
            (10, (4, 3)),
            (16, (4, 4)),
            (25, (5, 5)),
        ];
        for (n, want) in table {
            assert_eq!(grid_dimensions(n), want, "n={n}");
        }
    }

    #[test]
    fn grid_small_counts_exact() {
        let r = |p: &Placement| (p.rect.x, p.rect.y, p.rect.w, p.rect.h);
        let g = |n| place(&LayoutSpec::Grid, n, None);
        assert_eq!(r(&g(1)[0]), (0.0, 0.0, 1.0, 1.0));
        assert_eq!(
            g(2).iter().map(r).collect::<Vec<_>>(),
            vec![(0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 0.5, 1.0)]
        );
        // Three: two on top, one centred below.
        assert_eq!(r(&g(3)[2]), (0.25, 0.5, 0.5, 0.5));
        assert_eq!(r(&g(4)[3]), (0.5, 0.5, 0.5, 0.5));
        let five = g(5);
        assert!((five[3].rect.x - 1.0 / 6.0).abs() < 1e-6 && five[4].rect.y == 0.5);
        let nine = g(9);
        assert!(
            (nine[4].rect.x - 1.0 / 3.0).abs() < 1e-6 && (nine[4].rect.y - 1.0 / 3.0).abs() < 1e-6
        );
    }

    #[test]
    fn speaker_for_1_to_25() {
        for n in 1..=25 {
            let speaker = Some(n / 2);
            check(
                &LayoutSpec::Speaker,
                n,
                speaker,
                n.min(SPEAKER_STRIP_MAX + 1),
            );
            let p = place(&LayoutSpec::Speaker, n, speaker);
            let big = p
                .iter()
                .max_by(|a, b| (a.rect.w * a.rect.h).total_cmp(&(b.rect.w * b.rect.h)))
                .unwrap();
            assert_eq!(
                big.participant,
                n / 2,
                "n={n}: speaker not in the large tile"
            );
        }
        // No speaker yet: the first participant is large.
        assert_eq!(place(&LayoutSpec::Speaker, 3, None)[0].participant, 0);
        // Strip keeps join order, skipping the speaker.
        let strip: Vec<usize> = place(&LayoutSpec::Speaker, 4, Some(2))
            .iter()
            .skip(1)
            .map(|p| p.participant)
            .collect();
        assert_eq!(strip, vec![0, 1, 3]);
    }

    fn tile(x: f32, y: f32, w: f32, h: f32, z: i32, speaker: bool) -> CustomTile {
        CustomTile {
            x,
            y,
            w,
            h,
            z,
            speaker,
        }
    }

    #[test]
    fn custom_fills_speaker_tile_then_join_order_and_sorts_by_z() {
        let pip = LayoutSpec::Custom(CustomLayout {
            name: "pip".into(),
            tiles: vec![
                tile(0.7, 0.7, 0.25, 0.25, 1, false),
                tile(0.0, 0.0, 1.0, 1.0, 0, true),
            ],
        });
        let p = place(&pip, 3, Some(2));
        assert_eq!(p.len(), 2, "extra participants are not shown");
        assert_eq!(p[0].z, 0);
        assert_eq!(p[0].participant, 2, "speaker tile shows the speaker");
        assert_eq!(p[1].participant, 0, "other tiles in join order");
        assert_eq!(
            place(&pip, 1, None).len(),
            1,
            "fewer participants leave tiles empty"
        );
        let plain = LayoutSpec::Custom(CustomLayout {
            name: "two".into(),
            tiles: vec![
                tile(0.0, 0.0, 0.5, 1.0, 0, false),
                tile(0.5, 0.0, 0.5, 1.0, 0, false),
            ],
        });
        assert_eq!(
            place(&plain, 2, Some(1))
                .iter()
                .map(|p| p.participant)
                .collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert!(validate_custom(&CustomLayout {
            name: "bad".into(),
            tiles: vec![tile(0.6, 0.0, 0.5, 1.0, 0, false)]
        })
        .is_err());
        assert!(validate_custom(&CustomLayout {
            name: "ok".into(),
            tiles: vec![tile(0.5, 0.0, 0.5, 1.0, 0, false)]
        })
        .is_ok());
    }

    #[test]
    fn pixels_have_equal_gaps_and_even_edges() {
        let check = |r: FRect, want: Rect| assert_eq!(to_pixels(r, 1280, 720, 4), want, "{r:?}");
        check(FRect::FULL, Rect::new(4, 4, 1272, 712));
        check(
            FRect {
                x: 0.0,
                y: 0.0,
                w: 0.5,
                h: 0.5,
            },
            Rect::new(4, 4, 634, 354),
        );
        check(
            FRect {
                x: 0.5,
                y: 0.5,
                w: 0.5,
                h: 0.5,
            },
            Rect::new(642, 362, 634, 354),
        );
        let a = to_pixels(
            FRect {
                x: 0.0,
                y: 0.0,
                w: 0.5,
                h: 1.0,
            },
            1280,
            720,
            8,
        );
        let b = to_pixels(
            FRect {
                x: 0.5,
                y: 0.0,
                w: 0.5,
                h: 1.0,
            },
            1280,
            720,
            8,
        );
        assert_eq!(b.x - (a.x + a.w), 8);
        assert_eq!(a.x, 8);
        assert_eq!(
            to_pixels(FRect::FULL, 640, 360, 0),
            Rect::new(0, 0, 640, 360)
        );
    }
}
