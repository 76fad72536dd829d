#!/usr/bin/env bash
# Installs what the build and tests need on a fresh Debian 12 machine. Idempotent: it only
# calls apt-get when a package is missing.
set -euo pipefail

packages=(
  cmake            # opus builds libopus with CMake
  nasm             # openh264's assembly; without it encodes run 2-3x slower
  pkg-config
  libvpx-dev       # VP8 encode/decode
  libyuv-dev       # SIMD I420 scaling
  ffmpeg           # fixtures and output checks
  time             # CPU seconds in benches/render-vs-ffmpeg.sh
  fonts-dejavu-core # tile labels and placeholder initials
  redis-server     # the cluster tests start a private one on loopback (docs/cluster.md)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
