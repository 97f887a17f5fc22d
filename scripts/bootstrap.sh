#!/usr/bin/env bash
# Prepare this checkout on a fresh machine: Debian tools (installed when missing and we are root),
# a virtualenv in .venv and the pinned requirements. Idempotent and quick when nothing changed.
#   scripts/bootstrap.sh run    runtime requirements + ffmpeg
#   scripts/bootstrap.sh test   also test requirements, espeak-ng, shellcheck, a JRE for the emulator
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-test}

missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
if [ "$mode" = test ]; then
  command -v espeak-ng >/dev/null || missing+=(espeak-ng)
  command -v shellcheck >/dev/null || missing+=(shellcheck)
  command -v java >/dev/null || missing+=(default-jre-headless)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "bootstrap: please install these Debian packages: ${missing[*]}" >&2
  fi
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
requirements=requirements.txt
[ "$mode" = test ] && requirements="requirements-test.txt"
stamp=".venv/.installed-$mode"
want=$(cat requirements.txt "$requirements" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$requirements"
  echo "$want" > "$stamp"
fi
