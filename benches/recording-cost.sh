#!/usr/bin/env bash
# What a recording adds to a room's CPU: one four-person room (tessera-load, VP8 640x360
# cameras, the `low` tier: 640x360 15 fps VP8), measured side by side in one run over equal
# windows:
#   base    the room alone;
#   webm    plus a webm recording: the VP8 variant the participants already receive;
#   mp4     plus an mp4 recording instead: the tier's H.264 variant, which nobody else
#           receives, so the room encodes the composite once more.
# CPU is the server process's plus its ffmpeg children's (utime + stime from /proc), as a
# share of one core. Usage: benches/recording-cost.sh [WINDOW_SECS]  (release build)
set -euo pipefail
cd "$(dirname "$0")/.."
win=${1:-15}
fixtures=${TESSERA_FIXTURES:-target/fixtures}
out=target/bench-out/recording
rm -rf "$out" && mkdir -p "$out/files"
./scripts/make-fixtures.sh "$fixtures" >/dev/null
cargo build --release -q -p tessera -p tessera-load
bin=target/release
token=bench-admin-token-0123456789
{ cat benches/live-load.toml; printf '\n[auth]\nadmin_token = "%s"\n[recording]\ndir = "%s"\n' "$token" "$out/files"; } >"$out/config.toml"
"$bin/tessera" serve --config "$out/config.toml" --listen 127.0.0.1:0 --udp-port 0 --tcp-port 0 \
  >"$out/serve.out" 2>"$out/serve.log" &
server=$!
trap 'kill $server $load 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "listening on" "$out/serve.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$out/serve.out")
"$bin/tessera-load" --url "$url" --rooms 1 --participants 4 --seconds $((win * 3 + 30)) \
  --no-hints --fixtures "$fixtures" >"$out/load.txt" 2>&1 &
load=$!
hz=$(getconf CLK_TCK)
# CPU ticks of the server and every ffmpeg it started.
ticks() {
  local t=0 p
  for p in $server $(pgrep -P "$server" ffmpeg || true); do
    [ -r /proc/$p/stat ] && t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat)))
  done
  echo $t
}
# Ticks of ffmpegs that exit inside a window would be lost: windows start after a start.
measure() {
  local a b
  a=$(ticks); sleep "$win"; b=$(ticks)
  awk -v d=$((b - a)) -v hz="$hz" -v w="$win" 'BEGIN { printf "%.1f", 100 * d / hz / w }'
}
api() { curl -sf -X "$1" -H "Authorization: Bearer $token" ${3:+-d "$3"} "$url/api/admin/rooms/load-0/$2"; }
sleep 10  # everyone joined, the room warm
base=$(measure)
id=$(api POST recordings '{"format":"webm"}' | sed 's/.*"id":"\([^"]*\)".*/\1/')
sleep 2
webm=$(measure)
api DELETE "recordings/$id" >/dev/null
id=$(api POST recordings '{"format":"mp4"}' | sed 's/.*"id":"\([^"]*\)".*/\1/')
sleep 2
mp4=$(measure)
api DELETE "recordings/$id" >/dev/null
ls -l "$out/files"
echo "one four-person room, $win s windows, CPU % of one core (server + ffmpeg):"
echo "  room alone:                         $base"
echo "  + webm recording (shared VP8 tier): $webm  ($(awk -v a="$webm" -v b="$base" 'BEGIN{printf "%+.1f", a-b}') points)"
echo "  + mp4 recording (own H.264 encode): $mp4  ($(awk -v a="$mp4" -v b="$base" 'BEGIN{printf "%+.1f", a-b}') points)"
