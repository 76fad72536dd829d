#!/usr/bin/env bash
# Installs what the RTMP streaming test needs on a Debian 12 machine: nginx with the RTMP
# module (libnginx-mod-rtmp), which tests/integration/recording.rs starts privately on
# loopback as the RTMP server a room is streamed to. Idempotent: apt-get runs only when a
# package is missing. Debian's nginx package would start a system nginx on port 80 when
# installed; a policy-rc.d (only if the machine has none) keeps it from starting. Without
# root it only says what is missing: the test then prints SKIP.
set -euo pipefail

packages=(
  nginx-light        # the nginx binary
  libnginx-mod-rtmp  # ngx_rtmp_module.so
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] && ! sudo -n true 2>/dev/null; then
  echo "setup-rtmp: missing ${missing[*]} and not root: the RTMP test will be skipped"
  exit 0
fi
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo -n"
echo "setup-rtmp: installing ${missing[*]}"
policy=/usr/sbin/policy-rc.d
ours=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# Written by tessera scripts/setup-rtmp.sh while installing nginx.\nexit 101\n' \
    | $sudo_cmd tee "$policy" >/dev/null
  $sudo_cmd chmod 755 "$policy"
  ours=1
fi
cleanup() { if [ -n "$ours" ]; then $sudo_cmd rm -f "$policy"; fi; }
trap cleanup EXIT
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
