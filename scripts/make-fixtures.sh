#!/usr/bin/env bash
# Generates test media for participants p1..p9 with Debian's ffmpeg:
#   OUT_DIR/pN.ivf      VP8 640x360 30 fps (libvpx realtime, ~500 kbit/s, keyframe every 30)
#   OUT_DIR/pN.h264     H.264 Annex-B, constrained baseline, no B frames, 640x360 30 fps, keyint 30
#   OUT_DIR/pN.ogg      Opus 48 kHz mono, 32 kbit/s
#   OUT_DIR/pN.wav      PCM s16 16 kHz mono (not 48 kHz on purpose: readers must resample)
#   OUT_DIR/pN.y4m      raw 640x360 30 fps, at most 2 s (Chromium fake camera)
#   OUT_DIR/pN-48k.wav  PCM s16 48 kHz mono (Chromium fake microphone)
#   OUT_DIR/pN-WxH.ivf  the same camera in VP8 at every size in OUT_DIR/sizes.txt (1280x720
#                       down to 160x90; 640x360 is a hard link to pN.ivf), 30 fps, keyframes
#                       at the same frame indices (every 30), bitrate scaled with the area:
#                       a sender that follows `send_hint` switches size at a keyframe
#                       (tessera-load, tests/integration/hints.rs)
#   OUT_DIR/sizes.txt   those sizes, one WxH a line, largest first
#   OUT_DIR/manifest.tsv  name, rgb_hex, tone_hz
# Each participant is a flat colour (over 95% of the frame, so a tile's mean colour is
# recognisable after compression) with a small dark box moving along the bottom edge, clear
# of the centre, and temporal noise; and a sine tone.
#
# Usage: make-fixtures.sh OUT_DIR [SECONDS]   (SECONDS defaults to 3)
# Idempotent: does nothing when OUT_DIR was made by this same script with the same SECONDS.
# Safe to run from several processes at once (flock on OUT_DIR/.lock).
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 OUT_DIR [SECONDS]" >&2
  exit 2
fi
out=$1
secs=${2:-3}
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
  echo "make-fixtures: SECONDS must be a positive whole number, got '$secs'" >&2
  exit 2
fi
command -v ffmpeg >/dev/null || { echo "make-fixtures: ffmpeg not found (run scripts/setup.sh)" >&2; exit 1; }

# name  rgb_hex  tone_hz. Colours are far apart in both RGB and YUV and inset from the
# gamut edge so noise does not clip and shift the mean; tones are 150 Hz apart.
participants=(
  "p1 d62828 300"   # red
  "p2 28b43c 450"   # green
  "p3 2850d6 600"   # blue
  "p4 e6d228 750"   # yellow
  "p5 c828c8 900"   # magenta
  "p6 28c8d2 1050"  # cyan
  "p7 f07814 1200"  # orange
  "p8 6e1eaa 1350"  # purple
  "p9 b4b4b4 1500"  # grey
)

# The camera ladder: width height kbit/s (about 0.07 bit per pixel at 30 fps, like pN.ivf).
# Steps about 1.25-1.5x apart, so the largest size inside a tile is not far below it.
sizes=(
  "1280 720 1500"
  "960 540 1000"
  "640 360 500"
  "480 270 300"
  "400 224 220"
  "320 180 150"
  "240 136 90"
  "160 90 50"
)

mkdir -p "$out"
stamp="$(sha256sum "$0" | cut -d' ' -f1) seconds=$secs"

exec 9>"$out/.lock"
flock 9
if [ -f "$out/manifest.tsv" ] && [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ]; then
  echo "make-fixtures: $out is up to date"
  exit 0
fi
rm -f "$out/.stamp" "$out/manifest.tsv" "$out/sizes.txt"

y4m_secs=$((secs < 2 ? secs : 2))

# One ffmpeg per participant; every encoder single-threaded so two run well on two cores.
make_one() {
  local FIXTURE_SIZES
  mapfile -t FIXTURE_SIZES <<<"$FIXTURE_SIZES_TEXT"
  local name=$1 rgb=$2 hz=$3 out=$FIXTURE_OUT secs=$FIXTURE_SECS y4m_secs=$FIXTURE_Y4M_SECS
  local log="$out/.$name.log"
  # The ladder, scaled from the same noisy 640x360 picture.
  # pN.ivf is the 640x360 rung (linked below), so it is not encoded twice.
  local scaled=() ladder_filter ladder_out=() i=0 w h kbps s
  for s in "${FIXTURE_SIZES[@]}"; do
    [ "${s% *}" = "640 360" ] || scaled+=("$s")
  done
  local n=${#scaled[@]}
  ladder_filter="[v4]split=$n"
  for i in $(seq 0 $((n - 1))); do ladder_filter+="[s$i]"; done
  for i in $(seq 0 $((n - 1))); do
    read -r w h kbps <<<"${scaled[$i]}"
    ladder_filter+=";[s$i]scale=$w:$h:flags=bilinear[l$i]"
    ladder_out+=(-map "[l$i]" -c:v libvpx -threads 1 -deadline realtime -cpu-used 8
      -lag-in-frames 0 -b:v "${kbps}k" -g 30 -keyint_min 30 "$out/$name-${w}x${h}.ivf")
  done
  if ! ffmpeg -nostdin -hide_banner -v error -y \
    -filter_complex_threads 1 \
    -f lavfi -i "color=c=0x$rgb:s=640x360:r=30:d=$secs" \
    -f lavfi -i "sine=frequency=$hz:sample_rate=48000:duration=$secs" \
    -filter_complex "[0:v]drawbox=x='mod(t*240,592)':y=300:w=48:h=48:c=0x181818:t=fill,noise=alls=12:allf=t,format=yuv420p,split=4[v1][v2][v3][v4];$ladder_filter;[v3]trim=duration=$y4m_secs[vy];[1:a]asplit=3[a1][a2][a3];[a3]aresample=16000[a16]" \
    -map '[v1]' -c:v libvpx -threads 1 -deadline realtime -cpu-used 8 -lag-in-frames 0 \
      -b:v 500k -g 30 -keyint_min 30 "$out/$name.ivf" \
    -map '[v2]' -c:v libx264 -threads 1 -profile:v baseline -preset veryfast -tune zerolatency \
      -bf 0 -g 30 -keyint_min 30 -sc_threshold 0 -b:v 500k -bsf:v h264_mp4toannexb -f h264 "$out/$name.h264" \
    -map '[vy]' -f yuv4mpegpipe "$out/$name.y4m" \
    -map '[a1]' -c:a libopus -b:a 32k -ac 1 "$out/$name.ogg" \
    -map '[a16]' -c:a pcm_s16le -ac 1 "$out/$name.wav" \
    -map '[a2]' -c:a pcm_s16le -ac 1 "$out/$name-48k.wav" \
    "${ladder_out[@]}" \
    >"$log" 2>&1; then
    echo "make-fixtures: ffmpeg failed for $name:" >&2
    cat "$log" >&2
    return 1
  fi
  ln -f "$out/$name.ivf" "$out/$name-640x360.ivf"
  rm -f "$log"
}
export -f make_one
export FIXTURE_OUT=$out FIXTURE_SECS=$secs FIXTURE_Y4M_SECS=$y4m_secs
# Arrays do not cross `export`; make_one reads them back from this one.
FIXTURE_SIZES_TEXT=$(printf '%s\n' "${sizes[@]}")
export FIXTURE_SIZES_TEXT

start=$EPOCHREALTIME
jobs=$(nproc 2>/dev/null || echo 2)
printf '%s\n' "${participants[@]}" |
  xargs -P "$jobs" -L 1 bash -c 'make_one "$@"' make_one ||
  { echo "make-fixtures: generation failed" >&2; exit 1; }

{
  printf 'name\trgb_hex\ttone_hz\n'
  for p in "${participants[@]}"; do
    read -r name rgb hz <<<"$p"
    printf '%s\t%s\t%s\n' "$name" "$rgb" "$hz"
  done
} >"$out/manifest.tsv"
for s in "${sizes[@]}"; do
  read -r w h _ <<<"$s"
  echo "${w}x${h}"
done >"$out/sizes.txt"
echo "$stamp" >"$out/.stamp"

elapsed=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
size=$(du -sh "$out" | cut -f1)
echo "make-fixtures: ${#participants[@]} participants x ${secs} s in $out ($size, ${elapsed} s)"
