#!/usr/bin/env bash
# Installs what the network-namespace browser tests need on a Debian 12 machine: iproute2
# (`ip netns`, `tc tbf`), iptables (shaped.mjs: NFQUEUE rules that hand packets to
# target/debug/tessera-netem for delay and loss; the kernels we test on have no netem) and
# nftables and coturn (paths.mjs: a namespace that drops all UDP, a private TURN server).
# Idempotent: apt-get runs only when a package is missing. Without root it only says what
# is missing: the test itself then prints SKIP.
set -euo pipefail

packages=(
  iproute2   # ip netns, veth, tc qdisc tbf
  iptables   # iptables -j NFQUEUE inside each client's namespace
  nftables   # nft: the UDP-blocked namespace of tests/browser/paths.mjs
  coturn     # turnserver: the private TURN server of tests/browser/paths.mjs
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] && ! sudo -n true 2>/dev/null; then
    echo "setup-netns: missing ${missing[*]} and not root: the shaped-link test will be skipped"
    exit 0
  fi
  echo "setup-netns: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo -n"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
