#!/usr/bin/env bash
# Install tagger, with everything its training tools and tests use, into the project's
# virtual environment .venv (created here when missing; an already active virtual
# environment is used instead, and .venv becomes a link to it). Run tagger as
# .venv/bin/tagger, or `. .venv/bin/activate` first. Works as root or as a normal user,
# also where the system Python is "externally managed" (PEP 668, Debian/Ubuntu).
#
# System packages (only when run as root on a Debian/Ubuntu machine; without them tagging
# and most tests still work, the tests that need them say so when they skip):
#   ffmpeg            ffprobe: an independent tag reader in the tests
#   kid3-cli          a TagLib-based reader (checks multi-value tags)
#   fluid-soundfont-gm, timgm6mb-soundfont, freepats + timidity
#                     SoundFonts of three different families for rendering training data
#   python3-venv      only when this python3 cannot create a virtual environment
# Python packages come from wheels alone: no compiler or -dev package is needed.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=.venv
APT_PACKAGES="ffmpeg kid3-cli fluid-soundfont-gm timgm6mb-soundfont freepats timidity"
if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  APT_PACKAGES="$APT_PACKAGES python3-venv"
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  missing=""
  for pkg in $APT_PACKAGES; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
  fi
else
  echo "install.sh: not root or no apt-get: for rendering and the full test suite, install: $APT_PACKAGES" >&2
fi

if [ -n "${VIRTUAL_ENV:-}" ] && [ "$(cd "$VIRTUAL_ENV" && pwd -P)" != "$(pwd -P)/$VENV" ]; then
  # A virtual environment is active: install there, and let .venv name it.
  [ -e "$VENV" ] || ln -s "$VIRTUAL_ENV" "$VENV"
  if [ "$(cd "$VENV" && pwd -P)" != "$(cd "$VIRTUAL_ENV" && pwd -P)" ]; then
    echo "install.sh: $VENV exists and is not the active environment $VIRTUAL_ENV: deactivate, or remove $VENV" >&2
    exit 1
  fi
elif [ ! -x "$VENV/bin/python" ]; then
  # Isolated (no --system-site-packages): what the tests need must come from setup.cfg.
  "$PYTHON" -m venv "$VENV" || {
    echo "install.sh: '$PYTHON -m venv' failed: install python3-venv (Debian/Ubuntu), or activate a virtual environment and re-run" >&2
    exit 1
  }
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
echo "install.sh: installed into $VENV: run .venv/bin/tagger, or '. .venv/bin/activate' and then tagger" >&2
