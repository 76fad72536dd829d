#!/usr/bin/env bash
# The live server against `tessera render` on the same media work, side by side in one run:
# ROOMS four-person rooms (VP8 640x360 30 fps cameras and Opus in, the `low` tier out:
# 640x360 15 fps VP8 400 kbit/s, no ladder, no hints) through `tessera serve` and
# `tessera-load`, then the same four inputs and tier through `tessera render`. Prints the
# server's CPU per room per second of media over render's, its RSS, late ticks and join
# to first frame.
# Usage: benches/live-vs-render.sh [ROOMS] [SECONDS]    (release build; not in CI)
set -euo pipefail
cd "$(dirname "$0")/.."

rooms=${1:-12}
secs=${2:-60}
fixtures=${TESSERA_FIXTURES:-target/fixtures}
out=target/bench-out
mkdir -p "$out"
./scripts/make-fixtures.sh "$fixtures" >/dev/null
cargo build --release -q -p tessera -p tessera-load
bin=target/release

# The live server.
"$bin/tessera" serve --config benches/live-load.toml --listen 127.0.0.1:0 --udp-port 0 --tcp-port 0 \
  >"$out/serve.out" 2>"$out/serve.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q "listening on" "$out/serve.out" 2>/dev/null && break
  sleep 0.1
done
url=$(sed -n 's/^listening on //p' "$out/serve.out")
"$bin/tessera-load" --url "$url" --rooms "$rooms" --participants 4 --seconds "$secs" \
  --no-hints --fixtures "$fixtures" --pid "$server" | tee "$out/load.txt"
kill $server; wait $server 2>/dev/null || true
trap - EXIT

# The same room's media work offline: four inputs (the same clips, 20 s long so start-up
# does not count), the low tier, as fast as it goes.
long=target/bench-fixtures
./scripts/make-fixtures.sh "$long" 20 >/dev/null
/usr/bin/env time -f "%U %S %e" -o "$out/render.time" "$bin/tessera" render \
  --config benches/live-load.toml --layout grid --size 640x360 --fps 15 \
  --codec vp8 --bitrate-kbps 400 \
  --participant name=p1,video=$long/p1.ivf,audio=$long/p1.ogg \
  --participant name=p2,video=$long/p2.ivf,audio=$long/p2.ogg \
  --participant name=p3,video=$long/p3.ivf,audio=$long/p3.ogg \
  --participant name=p4,video=$long/p4.ivf,audio=$long/p4.ogg \
  --video-out "$out/render.ivf" --audio-out "$out/render.ogg" >/dev/null 2>"$out/render.log"
media_secs=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$out/render.ogg")
render_cpu=$(awk '{ print $1 + $2 }' "$out/render.time")
render_pct=$(awk -v c="$render_cpu" -v m="$media_secs" 'BEGIN { printf "%.1f", 100 * c / m }')
per_room=$(sed -n 's/.*(\([0-9.]*\)% per room).*/\1/p' "$out/load.txt" | tail -1)
echo "tessera render, same four inputs and tier: ${render_pct}% of a core per second of media (${render_cpu} CPU s for ${media_secs} s)"
awk -v s="$per_room" -v r="$render_pct" 'BEGIN { printf "server per room / render: %.2fx\n", s / r }'
