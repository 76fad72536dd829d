//! `tessera check-config`: the shipped default passes; a bad file names file, line and key.

use crate::{scratch, tessera};

#[test]
fn the_shipped_default_config_checks_clean() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/default.toml");
    let out = tessera().args(["check-config", path]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(": ok\n"));
}

#[test]
fn a_bad_config_is_rejected_naming_line_and_key() {
    let dir = scratch("check_config_bad");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[video]\ngap_px = 4\nbackgrund = \"#000000\"\n").unwrap();
    let out = tessera().arg("check-config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:3: video.backgrund: unknown field `backgrund`"),
        "{err}"
    );

    std::fs::write(
        &path,
        "[tiers.low]\nwidth = 320\nheight = 180\nfps = 0\nbitrate_kbps = 200\ncodec = \"vp8\"\n",
    )
    .unwrap();
    let out = tessera().arg("check-config").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:4: tiers.low.fps = 0: must be 1..=60"),
        "{err}"
    );
}
