#!/usr/bin/env bash
# Install tagger with everything its training tools and tests use.
# System packages (only when run as root on a Debian/Ubuntu machine):
#   ffmpeg            ffprobe: an independent tag reader in the tests
#   kid3-cli          a TagLib-based reader (checks multi-value tags)
#   fluid-soundfont-gm, timgm6mb-soundfont, freepats + timidity
#                     SoundFonts of three different families for rendering training data
#   portaudio19-dev   tinysoundfont's package metadata requires pyaudio, which builds against it
set -euo pipefail
cd "$(dirname "$0")"
APT_PACKAGES="ffmpeg kid3-cli fluid-soundfont-gm timgm6mb-soundfont freepats timidity portaudio19-dev"
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
  echo "install.sh: not root or no apt-get: install these yourself for rendering and the full test suite: $APT_PACKAGES" >&2
fi
python3 -m pip install -q --disable-pip-version-check -e ".[test]"
