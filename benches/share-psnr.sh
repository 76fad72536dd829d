#!/usr/bin/env bash
# Text sharpness of a screen share through the live server (release build): a 1920x1080 page
# of black text on white published over WHIP as a screen share (aiortc's VP8, 5 fps), watched
# over WHEP on the default tier (1280x720 25 fps VP8 1500 kbit/s), PSNR on luma of the
# share's letterboxed picture (tests/whip/share_psnr.py, which prints every stage). Three
# senders, one server each:
#   1080p      the whole screen (what WHIP senders such as OBS or aiortc send: the server
#              can only cap their bitrate with REMB, not their size);
#   952x536    scaled to its tile first, as a browser following its send_hint could;
#   952x534    the same, 2 rows fewer (the compositor resamples it to 532 rows).
# Usage: benches/share-psnr.sh [SETTLE_SECS] [extra share_psnr.py flags]   (not in CI)
set -euo pipefail
cd "$(dirname "$0")/.."
settle=${1:-10}
shift || true
./scripts/setup-python.sh
cargo build --release -q -p tessera
export TESSERA_BIN=$PWD/target/release/tessera
out=target/bench-out/share-psnr
mkdir -p "$out"
for send in 1080p 952x536 952x534; do
  flags=(--settle "$settle" "$@")
  [ "$send" = 1080p ] && flags+=(--offline) || flags+=(--send-size "$send")
  echo "== $send"
  target/venv/bin/python tests/whip/share_psnr.py "${flags[@]}" | tee "$out/$send.txt" | sed -n '/^share tile/,$p'
done
echo
echo "summary (median PSNR of the received share, luma):"
for send in 1080p 952x536 952x534; do
  printf '  %-8s %s\n' "$send" "$(sed -n 's/^share PSNR: //p' "$out/$send.txt")"
done
