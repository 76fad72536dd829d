#!/usr/bin/env bash
# Installs what the browser tests (tests/browser) need on a Debian 12 machine: Debian's
# Chromium and Firefox ESR, and the npm drivers (playwright-core, puppeteer-core) pinned by
# tests/browser/package-lock.json. Idempotent: apt-get runs only when a package is missing,
# npm only when node_modules is missing or older than package-lock.json. The npm packages
# never download browsers of their own; the tests drive /usr/bin/chromium and
# /usr/bin/firefox-esr.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

packages=(
  chromium         # driven by playwright-core (CDP)
  firefox-esr      # driven by puppeteer-core (WebDriver BiDi)
  nodejs           # runs tests/browser/run.mjs
  npm
  fonts-dejavu-core # readable text in screenshots
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  # A node/npm from elsewhere (nvm, nodesource) is fine: do not fight it with Debian's.
  if command -v node >/dev/null && command -v npm >/dev/null; then
    keep=()
    for p in "${missing[@]}"; do
      case $p in nodejs|npm) ;; *) keep+=("$p") ;; esac
    done
    missing=("${keep[@]+"${keep[@]}"}")
  fi
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-browser: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

export PUPPETEER_SKIP_DOWNLOAD=1
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

dir=$root/tests/browser
if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
  echo "setup-browser: npm ci in tests/browser"
  (cd "$dir" && npm ci --no-audit --no-fund)
  touch "$dir/node_modules"
fi
