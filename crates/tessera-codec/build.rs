// libyuv comes from Debian's libyuv-dev (scripts/setup.sh installs it).
fn main() {
    println!("cargo:rustc-link-lib=yuv");
    println!("cargo:rerun-if-changed=build.rs");
}
