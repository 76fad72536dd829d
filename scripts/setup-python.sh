#!/usr/bin/env bash
# Creates the Python environment of the aiortc WHIP/WHEP test (tests/whip) at target/venv.
# Idempotent: it rebuilds the venv only when it is missing, broken, or when
# tests/whip/requirements.txt (or the interpreter) changed since the last install, which a
# stamp file inside the venv records. Installs wheels only, so no compiler is needed.
#
#   PYTHON=/path/to/python3 scripts/setup-python.sh   # pick another interpreter (>= 3.10)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
req="$root/tests/whip/requirements.txt"
venv="$root/target/venv"
stamp="$venv/.requirements.stamp"
python="${PYTHON:-python3}"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  echo "setup-python: installing $*"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@"
}

# An interpreter: the one on PATH (often a pyenv CPython 3.11 here), else Debian's.
if ! command -v "$python" >/dev/null 2>&1; then
  apt_install python3 python3-venv
  python=python3
fi

if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
  echo "setup-python: $("$python" --version 2>&1) is too old; aiortc needs Python >= 3.10" >&2
  exit 1
fi

# venv + ensurepip: a pyenv/python.org build has them; Debian's python3 needs python3-venv
# (its python3.X-venv package carries ensurepip).
if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  apt_install python3-venv "python${pyver}-venv"
  if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "setup-python: $python still has no venv/ensurepip after installing python3-venv" >&2
    exit 1
  fi
fi

want="$( { sha256sum "$req" | cut -d' ' -f1; "$python" -c 'import sys; print(sys.version)'; } )"

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
  "$venv/bin/python" -c 'import aiortc, av, numpy' >/dev/null 2>&1; then
  exit 0
fi

echo "setup-python: creating $venv from $req"
rm -rf "$venv"
mkdir -p "$root/target"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  --only-binary=:all: -r "$req"
"$venv/bin/python" -c 'import aiortc, av, numpy'
printf '%s\n' "$want" >"$stamp"
echo "setup-python: ready ($("$venv/bin/python" --version), aiortc $("$venv/bin/python" -c 'import aiortc; print(aiortc.__version__)'))"
