#!/usr/bin/env bash
# What viewers' own layouts cost: one four-person room (tessera-load, VP8 640x360 30 fps
# cameras and Opus, no sender hints) on the default tier (1280x720 25 fps VP8 1500 kbit/s,
# no bandwidth ladder), in equal windows against one server, interleaved ROUNDS times:
#   same    all four choose `grid` (one encode);
#   mixed   two choose `grid`, two `speaker` (two encodes of the same tier).
# Each window is a fresh room (its own name). CPU is the server process's (utime + stime),
# as a share of one core, from tessera-load --pid; each side keeps its minimum.
# Usage: benches/layout-cost.sh [WINDOW_SECS] [ROUNDS]   (release build; not in CI)
set -euo pipefail
cd "$(dirname "$0")/.."
win=${1:-20}
rounds=${2:-3}
fixtures=${TESSERA_FIXTURES:-target/fixtures}
out=target/bench-out/layouts
rm -rf "$out" && mkdir -p "$out"
./scripts/make-fixtures.sh "$fixtures" >/dev/null
cargo build --release -q -p tessera -p tessera-load
bin=target/release
cat >"$out/config.toml" <<'TOML'
# benches/layout-cost.sh: everyone on the default tier, cameras as they are.
[bandwidth]
enabled = false
sender_hints = false

[limits]
joins_per_minute_per_ip = 100000
TOML
"$bin/tessera" serve --config "$out/config.toml" --listen 127.0.0.1:0 --udp-port 0 --tcp-port 0 \
  >"$out/serve.out" 2>"$out/serve.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "listening on" "$out/serve.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$out/serve.out")

# One window: prints the server's CPU per room; the whole report goes to $out/NAME.txt.
window() {
  local name=$1 layouts=$2
  "$bin/tessera-load" --url "$url" --rooms 1 --participants 4 --seconds "$win" --warmup 3 \
    --no-hints --fixtures "$fixtures" --layouts "$layouts" --room-prefix "$name" --pid "$server" \
    >"$out/$name.txt" 2>&1
  sed -n 's/.*(\([0-9.]*\)% per room).*/\1/p' "$out/$name.txt"
}
same=() mixed=()
for r in $(seq "$rounds"); do
  same+=("$(window "same-$r" grid)")
  mixed+=("$(window "mixed-$r" grid,speaker)")
  echo "round $r: same layout ${same[-1]}%, two layouts ${mixed[-1]}% of a core"
done
min() { printf '%s\n' "$@" | sort -g | head -1; }
smin=$(min "${same[@]}")
mmin=$(min "${mixed[@]}")
field() { sed -n "s/^$2: //p" "$out/$1.txt"; }
echo
echo "one four-person room, default tier, ${win} s windows, $rounds rounds (server CPU, % of one core):"
for side in same mixed; do
  echo "  $side-1: $(field "$side-1" 'participants per layout')"
  echo "    encodes (tiers with receivers / tiers encoding): $(field "$side-1" 'video encodes per room (tiers with receivers \/ tiers that encoded in the window)')"
  echo "    $(field "$side-1" 'composing and encoding (the rooms. own accounting)') (composing, encoding)"
  echo "    late: $(field "$side-1" 'late composite frames (ticks the server skipped)')"
done
echo "  same layout:  ${same[*]}  (min $smin)"
echo "  two layouts:  ${mixed[*]}  (min $mmin)"
awk -v a="$mmin" -v b="$smin" 'BEGIN { printf "  ratio (min / min): %.2fx, +%.1f points\n", a / b, a - b }'
