//! `tessera preview-layout`: a layout drawn with numbered placeholder tiles.

use crate::{run_ok, scratch, tessera};

fn pixel(img: &image::RgbImage, x: u32, y: u32) -> [u8; 3] {
    img.get_pixel(x, y).0
}

fn near(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 6)
}

#[test]
fn preview_layout_draws_the_custom_layout_tiles() {
    let dir = scratch("preview_layout");
    let out = dir.join("presenter.png");
    let stdout = run_ok(
        tessera()
            .args([
                "preview-layout",
                "--layout",
                "presenter",
                "--participants",
                "6",
                "--out",
            ])
            .arg(&out),
    );
    let text = String::from_utf8_lossy(&stdout);
    assert!(text.contains("5 of 6 participants shown"), "{text}");
    let img = image::open(&out).expect("a PNG").to_rgb8();
    assert_eq!(img.dimensions(), (1280, 720));
    let placeholder = [0x3b, 0x42, 0x52];
    let background = [0x1c, 0x1f, 0x26];
    // The big speaker tile (x 0..0.75) and the four small ones on the right, each a
    // placeholder with its number drawn in the middle: sample off-centre.
    assert!(
        near(pixel(&img, 200, 150), placeholder),
        "{:?}",
        pixel(&img, 200, 150)
    );
    for row in 0..4 {
        let y = row * 180 + 40;
        assert!(
            near(pixel(&img, 1000, y), placeholder),
            "small tile {row}: {:?}",
            pixel(&img, 1000, y)
        );
    }
    // The gap between the small tiles is background.
    assert!(
        near(pixel(&img, 1100, 180), background),
        "{:?}",
        pixel(&img, 1100, 180)
    );
}

#[test]
fn preview_layout_names_valid_layouts_when_the_name_is_wrong() {
    let dir = scratch("preview_layout_bad");
    let out = tessera()
        .args(["preview-layout", "--layout", "presnter", "--out"])
        .arg(dir.join("x.png"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("presnter") && err.contains("presenter"),
        "{err}"
    );
}
