use super::*;

const RED: Rgb = Rgb {
    r: 220,
    g: 30,
    b: 30,
};
const GREEN: Rgb = Rgb {
    r: 30,
    g: 200,
    b: 40,
};
const BLUE: Rgb = Rgb {
    r: 40,
    g: 60,
    b: 230,
};
const YELLOW: Rgb = Rgb {
    r: 230,
    g: 210,
    b: 40,
};

fn font() -> Option<Vec<u8>> {
    std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf").ok()
}

fn close(a: Yuv, b: Yuv, tol: i32) -> bool {
    (a.y as i32 - b.y as i32).abs() <= tol
        && (a.u as i32 - b.u as i32).abs() <= tol
        && (a.v as i32 - b.v as i32).abs() <= tol
}

fn inner(r: Rect) -> Rect {
    Rect::new(r.x + r.w / 4, r.y + r.h / 4, r.w / 2, r.h / 2)
}

#[test]
fn four_sources_land_in_their_tiles() {
    let frames: Vec<VideoFrame> = [RED, GREEN, BLUE, YELLOW]
        .iter()
        .map(|c| VideoFrame::filled(640, 360, c.to_yuv()))
        .collect();
    let names = ["Ann", "Bo", "Cy", "Di"];
    let tiles: Vec<TileInput<'_>> = frames
        .iter()
        .zip(names)
        .map(|(f, name)| TileInput {
            name,
            frame: Some(f),
            fit: None,
        })
        .collect();
    let mut c = Compositor::new(ComposeConfig::new(1280, 720)).unwrap();
    c.compose(&LayoutSpec::Grid, &tiles, None);
    let placements = c.placements().to_vec();
    assert_eq!(placements.len(), 4);
    for (i, rect) in placements {
        let want = [RED, GREEN, BLUE, YELLOW][i].to_yuv();
        assert!(close(c.canvas().mean_yuv(inner(rect)), want, 2), "tile {i}");
    }
    // Row by row in join order: Ann top-left, Di bottom-right.
    assert_eq!(c.placements()[0].1.x, 4);
    assert!(c.placements()[3].1.x > 640 && c.placements()[3].1.y > 360);
    // The gap between tiles shows the background.
    let bg = ComposeConfig::new(2, 2).background.to_yuv();
    assert_eq!(c.canvas().mean_yuv(Rect::new(638, 100, 2, 100)), bg);
}

#[test]
fn letterbox_leaves_bars_and_crop_fills() {
    let src = VideoFrame::filled(400, 300, RED.to_yuv()); // 4:3 into a 16:9 tile
    let tiles = [TileInput {
        name: "A",
        frame: Some(&src),
        fit: None,
    }];
    let mut cfg = ComposeConfig::new(1280, 720);
    cfg.gap_px = 0;
    let bg = cfg.background.to_yuv();
    let mut c = Compositor::new(cfg.clone()).unwrap();
    c.compose(&LayoutSpec::Grid, &tiles, None);
    assert!(
        close(c.canvas().mean_yuv(Rect::new(0, 0, 100, 720)), bg, 1),
        "no left bar"
    );
    assert!(close(
        c.canvas().mean_yuv(Rect::new(200, 100, 800, 500)),
        RED.to_yuv(),
        2
    ));
    cfg.fit = Fit::Crop;
    c.set_config(cfg).unwrap();
    c.compose(&LayoutSpec::Grid, &tiles, None);
    assert!(
        close(
            c.canvas().mean_yuv(Rect::new(0, 0, 100, 720)),
            RED.to_yuv(),
            2
        ),
        "crop left a bar"
    );
}

#[test]
fn crop_keeps_the_centre_of_the_picture() {
    // Left third blue, rest red; cropping 4:3 -> 1:1 cuts the outer edges only.
    let mut src = VideoFrame::filled(400, 300, RED.to_yuv());
    fill_rect(&mut src, Rect::new(0, 0, 40, 300), BLUE.to_yuv());
    let mut cfg = ComposeConfig::new(300, 300);
    cfg.gap_px = 0;
    cfg.fit = Fit::Crop;
    let mut c = Compositor::new(cfg).unwrap();
    c.compose(
        &LayoutSpec::Grid,
        &[TileInput {
            name: "A",
            frame: Some(&src),
            fit: None,
        }],
        None,
    );
    assert!(close(
        c.canvas().mean_yuv(Rect::new(0, 0, 300, 300)),
        RED.to_yuv(),
        2
    ));
}

#[test]
fn placeholder_shows_initials_on_its_colour() {
    let mut cfg = ComposeConfig::new(640, 360);
    cfg.label_font = font();
    let mut c = Compositor::new(cfg.clone()).unwrap();
    c.compose(
        &LayoutSpec::Grid,
        &[TileInput {
            name: "ann lee",
            frame: None,
            fit: None,
        }],
        None,
    );
    let rect = c.placements()[0].1;
    let ph = cfg.placeholder_colour.to_yuv();
    assert!(close(
        c.canvas().mean_yuv(Rect::new(rect.x, rect.y, 40, 40)),
        ph,
        1
    ));
    let centre = Rect::new(rect.x + rect.w / 2 - 60, rect.y + rect.h / 2 - 40, 120, 80);
    let bright = c.canvas().y.iter().enumerate().filter(|(i, v)| {
        let (x, y) = ((*i as u32) % 640, (*i as u32) / 640);
        x >= centre.x
            && x < centre.x + centre.w
            && y >= centre.y
            && y < centre.y + centre.h
            && **v > 200
    });
    assert!(bright.count() > 200, "no initials drawn");
    assert_eq!(initials("ann lee"), "AL");
    assert_eq!(initials("  "), "?");
    assert_eq!(initials("Zoë"), "Z");
}

#[test]
fn placeholder_image_is_used_when_configured() {
    let mut png = Vec::new();
    let img = image::RgbImage::from_pixel(64, 36, image::Rgb([30, 200, 40]));
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let mut cfg = ComposeConfig::new(640, 360);
    cfg.placeholder_image = Some(png);
    let mut c = Compositor::new(cfg).unwrap();
    c.compose(
        &LayoutSpec::Grid,
        &[TileInput {
            name: "A",
            frame: None,
            fit: None,
        }],
        None,
    );
    let rect = c.placements()[0].1;
    assert!(close(c.canvas().mean_yuv(inner(rect)), GREEN.to_yuv(), 3));
    let mut bad = ComposeConfig::new(640, 360);
    bad.placeholder_image = Some(b"not a png".to_vec());
    assert!(matches!(Compositor::new(bad), Err(ComposeError::Image(_))));
}

#[test]
fn labels_change_the_bottom_left_of_the_tile() {
    let src = VideoFrame::filled(640, 360, GREEN.to_yuv());
    let tiles = [TileInput {
        name: "Participant With A Long Name",
        frame: Some(&src),
        fit: None,
    }];
    let mut cfg = ComposeConfig::new(640, 360);
    cfg.label_font = font();
    let mut c = Compositor::new(cfg.clone()).unwrap();
    let without = c.compose(&LayoutSpec::Grid, &tiles, None).clone();
    cfg.labels = true;
    c.set_config(cfg).unwrap();
    let with = c.compose(&LayoutSpec::Grid, &tiles, None).clone();
    let corner = Rect::new(8, 300, 200, 50);
    assert_ne!(without.mean_yuv(corner), with.mean_yuv(corner));
    // The top of the tile is untouched.
    assert_eq!(
        without.mean_yuv(Rect::new(8, 8, 600, 200)),
        with.mean_yuv(Rect::new(8, 8, 600, 200))
    );
}

#[test]
fn speaker_highlight_draws_a_border() {
    let a = VideoFrame::filled(320, 180, RED.to_yuv());
    let b = VideoFrame::filled(320, 180, BLUE.to_yuv());
    let tiles = [
        TileInput {
            name: "A",
            frame: Some(&a),
            fit: None,
        },
        TileInput {
            name: "B",
            frame: Some(&b),
            fit: None,
        },
    ];
    let mut cfg = ComposeConfig::new(640, 360);
    cfg.gap_px = 0;
    cfg.fit = Fit::Crop;
    cfg.speaker_highlight = Some(YELLOW);
    let mut c = Compositor::new(cfg).unwrap();
    c.compose(&LayoutSpec::Grid, &tiles, Some(1));
    let r = c.placements()[1].1;
    assert!(close(
        c.canvas().mean_yuv(Rect::new(r.x, r.y, r.w, 2)),
        YELLOW.to_yuv(),
        2
    ));
    let r0 = c.placements()[0].1;
    assert!(close(
        c.canvas().mean_yuv(Rect::new(r0.x, r0.y, r0.w, 2)),
        RED.to_yuv(),
        2
    ));
}

#[test]
fn odd_and_tiny_sources_and_bad_configs_do_not_panic() {
    let odd = VideoFrame::filled(321, 241, RED.to_yuv());
    let tiny = VideoFrame::filled(2, 2, BLUE.to_yuv());
    let mut c = Compositor::new(ComposeConfig::new(64, 36)).unwrap();
    for n in 1..=25 {
        let tiles: Vec<TileInput<'_>> = (0..n)
            .map(|i| TileInput {
                name: "x",
                frame: Some(if i % 2 == 0 { &odd } else { &tiny }),
                fit: None,
            })
            .collect();
        c.compose(&LayoutSpec::Grid, &tiles, Some(0));
        c.compose(&LayoutSpec::Speaker, &tiles, Some(n - 1));
    }
    assert!(matches!(
        Compositor::new(ComposeConfig::new(641, 360)),
        Err(ComposeError::CanvasSize { .. })
    ));
    let mut bad = ComposeConfig::new(640, 360);
    bad.label_font = Some(vec![1, 2, 3]);
    assert!(matches!(Compositor::new(bad), Err(ComposeError::Font(_))));
}

/// Rough release-build timing: `cargo test --release -p tessera-compose -- --ignored --nocapture`.
#[test]
#[ignore]
fn timing_4_and_9_tiles() {
    for n in [4usize, 9] {
        let frames: Vec<VideoFrame> = (0..n)
            .map(|_| VideoFrame::filled(640, 360, RED.to_yuv()))
            .collect();
        let tiles: Vec<TileInput<'_>> = frames
            .iter()
            .map(|f| TileInput {
                name: "Someone",
                frame: Some(f),
                fit: None,
            })
            .collect();
        let mut cfg = ComposeConfig::new(1280, 720);
        cfg.labels = true;
        cfg.label_font = font();
        let mut c = Compositor::new(cfg).unwrap();
        let t = std::time::Instant::now();
        for _ in 0..200 {
            c.compose(&LayoutSpec::Grid, &tiles, Some(0));
        }
        eprintln!(
            "{n} tiles: {:.3} ms per frame",
            t.elapsed().as_secs_f64() * 1000.0 / 200.0
        );
    }
}

#[test]
fn compositors_with_the_same_font_share_one_parsed_copy() {
    let Some(bytes) = font() else {
        return;
    };
    let mut cfg = ComposeConfig::new(320, 180);
    cfg.label_font = Some(bytes);
    let a = Compositor::new(cfg.clone()).unwrap();
    let b = Compositor::new(cfg).unwrap();
    let (fa, fb) = (a.font.as_ref().unwrap(), b.font.as_ref().unwrap());
    assert!(
        std::sync::Arc::ptr_eq(fa, fb),
        "each compositor parsed the font again"
    );
}
