#!/usr/bin/env bash
# Prepare this checkout on a fresh machine: Debian tools (installed when missing and we are root; a
# missing one that cannot be installed stops it with the apt-get command to run),
# a virtualenv in .venv and the pinned requirements. Idempotent and quick when nothing changed.
#   scripts/bootstrap.sh run    runtime requirements (the service decodes audio in-process: no ffmpeg)
#   scripts/bootstrap.sh test   also test requirements, and ffmpeg, espeak-ng (test audio), shellcheck,
#                               a JRE for the Pub/Sub emulator
# PYTHON picks the interpreter (default: the newest python3.13 / 3.12 / 3.11 / python3 found, 3.11 at
# least); VENV the virtualenv directory (default .venv). A .venv that does not work, lacks pip or was
# made by a Python older than 3.11 is rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-test}
VENV=${VENV:-.venv}
MINIMUM=3.11

say() { echo "bootstrap: $*" >&2; }
is_root_with_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
version_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
new_enough() { [ "$(printf '%s\n%s\n' "$MINIMUM" "$1" | sort -V | head -n1)" = "$MINIMUM" ]; }

apt_install() {  # packages; shows one line per package set up
  say "installing ${*} with apt-get (a minute or more; progress below)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
    | sed -un 's/^Setting up \([^ ]*\).*/  set up \1/p'
}

# 1. A Python new enough, before anything is installed.
if [ -n "${PYTHON:-}" ]; then
  candidates=("$PYTHON")
else
  candidates=(python3.13 python3.12 python3.11 python3)
fi
python="" found=()
for candidate in "${candidates[@]}"; do
  command -v "$candidate" >/dev/null || continue
  version=$(version_of "$candidate") || continue
  found+=("$candidate $version")
  if new_enough "$version"; then python=$candidate; break; fi
done
if [ -z "$python" ]; then
  say "needs Python $MINIMUM or newer; found ${found[*]:-no python3}." \
      "Install one (Debian/Ubuntu: apt-get install python3.11 python3.11-venv, or pyenv), then rerun," \
      "e.g. PYTHON=python3.11 make run"
  exit 2
fi

# 2. Debian tools.
missing=()
if [ "$mode" = test ]; then
  command -v ffmpeg >/dev/null || missing+=(ffmpeg)
  command -v espeak-ng >/dev/null || missing+=(espeak-ng)
  command -v shellcheck >/dev/null || missing+=(shellcheck)
  command -v java >/dev/null || missing+=(default-jre-headless)
fi
if [ ${#missing[@]} -gt 0 ]; then
  # The tests need every one of these: without them a third of the suite would skip, and a skipped
  # test proves nothing. So a tool that cannot be installed stops here, naming the command to run.
  command="apt-get install -y --no-install-recommends ${missing[*]}"
  if ! is_root_with_apt || ! apt_install "${missing[@]}"; then
    say "the tests need these Debian packages, and they could not be installed here: ${missing[*]}"
    say "install them (as root, or with sudo), then rerun: $command"
    exit 2
  fi
fi

# 3. The virtualenv: kept when it works, rebuilt otherwise.
venv_ok() {
  local version
  version=$("$VENV/bin/python" -c 'import pip, sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || return 1
  new_enough "$version" && { [ -z "${PYTHON:-}" ] || [ "$version" = "$(version_of "$python")" ]; }
}
if [ -e "$VENV" ] && ! venv_ok; then
  say "$VENV does not work with $python ($(version_of "$python")): rebuilding it"
  rm -rf "$VENV"
fi
if [ ! -e "$VENV" ]; then
  say "creating $VENV with $python $(version_of "$python")"
  if ! output=$("$python" -m venv "$VENV" 2>&1); then
    rm -rf "$VENV"
    venv_package="python$(version_of "$python")-venv"
    if [[ "$output" == *ensurepip* ]] && is_root_with_apt; then
      apt_install "$venv_package"
      "$python" -m venv "$VENV"
    else
      say "$python cannot create a virtualenv: ${output##*$'\n'}"
      [[ "$output" == *ensurepip* ]] && say "install the Debian package $venv_package (apt-get install $venv_package), then rerun"
      exit 2
    fi
  fi
fi

# 4. The pinned requirements, when they changed.
requirements=requirements.txt
[ "$mode" = test ] && requirements="requirements-test.txt"
stamp="$VENV/.installed-$mode"
want=$(cat requirements.txt "$requirements" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing $requirements into $VENV (first time: a few minutes)"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -r "$requirements" \
    | sed -un 's/^\(Collecting [^ ]*\).*/  \1/p; s/^\(Successfully installed\).*/  \1/p'
  echo "$want" > "$stamp"
fi
