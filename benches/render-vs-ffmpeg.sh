#!/usr/bin/env bash
# The same job through `tessera render` and through ffmpeg, compared in CPU seconds:
# 4 VP8 640x360 inputs -> 2x2 1280x720 VP8 (same bitrate, same libvpx speed, one encoder
# thread each) plus 4 Opus inputs -> 1 Opus mix.
# Usage: benches/render-vs-ffmpeg.sh [SECONDS]   (run by `make bench`)
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-20}
fixtures=target/bench-fixtures
out=target/bench-out
mkdir -p "$out"
./scripts/make-fixtures.sh "$fixtures" "$secs" >/dev/null
cargo build --release -q -p tessera
tessera=target/release/tessera

bitrate_kbps=1500
cpu_used=-12
fps=30

# CPU seconds (user + system) of a command, from GNU time's format.
cpu_of() {
  local log=$1; shift
  /usr/bin/env time -f "%U %S" -o "$log" "$@" >/dev/null 2>"$log.stderr"
  awk '{ printf "%.2f", $1 + $2 }' "$log"
}

run_ours() {
  cpu_of "$out/tessera.time" "$tessera" render \
    --config benches/render-bench.toml --layout grid --size 1280x720 --fps $fps \
    --codec vp8 --bitrate-kbps $bitrate_kbps \
    --participant name=p1,video=$fixtures/p1.ivf,audio=$fixtures/p1.ogg \
    --participant name=p2,video=$fixtures/p2.ivf,audio=$fixtures/p2.ogg \
    --participant name=p3,video=$fixtures/p3.ivf,audio=$fixtures/p3.ogg \
    --participant name=p4,video=$fixtures/p4.ivf,audio=$fixtures/p4.ogg \
    --video-out "$out/tessera.ivf" --audio-out "$out/tessera.ogg"
}

run_ffmpeg() {
  cpu_of "$out/ffmpeg.time" ffmpeg -y -v error -threads 1 \
    -i $fixtures/p1.ivf -i $fixtures/p2.ivf -i $fixtures/p3.ivf -i $fixtures/p4.ivf \
    -i $fixtures/p1.ogg -i $fixtures/p2.ogg -i $fixtures/p3.ogg -i $fixtures/p4.ogg \
    -filter_complex "[0:v][1:v][2:v][3:v]xstack=inputs=4:layout=0_0|w0_0|0_h0|w0_h0,fps=$fps[v];[4:a][5:a][6:a][7:a]amix=inputs=4:normalize=0[a]" \
    -map "[v]" -map "[a]" \
    -c:v libvpx -deadline realtime -cpu-used $cpu_used -b:v ${bitrate_kbps}k \
    -minrate ${bitrate_kbps}k -maxrate ${bitrate_kbps}k -lag-in-frames 0 -threads 1 \
    -c:a libopus -b:a 32k -ac 1 -ar 48000 \
    -f webm "$out/ffmpeg.webm"
}

# CPU time on a shared VM varies by 10-20% between runs: interleave and keep each minimum.
runs=${RUNS:-3}
ours=999999; theirs=999999; all_ours=""; all_theirs=""
for _ in $(seq "$runs"); do
  o=$(run_ours); t=$(run_ffmpeg)
  all_ours="$all_ours $o"; all_theirs="$all_theirs $t"
  ours=$(awk -v a="$ours" -v b="$o" 'BEGIN { print (b < a) ? b : a }')
  theirs=$(awk -v a="$theirs" -v b="$t" 'BEGIN { print (b < a) ? b : a }')
done

ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.2f", a / b }')
size_ours=$(stat -c %s "$out/tessera.ivf")
size_theirs=$(stat -c %s "$out/ffmpeg.webm")
echo "render-vs-ffmpeg: ${secs}s of 4x VP8 640x360 + 4x Opus -> 1280x720 VP8 ${bitrate_kbps}k cpu-used $cpu_used"
echo "  tessera CPU ${ours}s min of${all_ours}  (video $((size_ours / 1024)) KiB)"
echo "  ffmpeg  CPU ${theirs}s min of${all_theirs}  (video+audio $((size_theirs / 1024)) KiB)"
echo "  ratio tessera/ffmpeg = ${ratio}  (target <= 0.80)"
