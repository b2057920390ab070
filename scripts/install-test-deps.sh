#!/usr/bin/env bash
# Installs everything the test suite uses, so that `make test` passes on a fresh machine:
#   - Debian's chromium (the page's tests drive it through Playwright; never `playwright
#     install`), espeak-ng, sox and ffmpeg (real speech in every container format), and haproxy
#     (in front of two edges in the scale-out tests), when they are missing and apt-get can run (as root, or through sudo). Tests that still lack one skip,
#     saying which;
#   - voicestack itself with its test and binary extras, the first-party tool plugins and the
#     test-only tool plugin, into the Python that runs `python3` (a venv if one is active);
#   - the bytecode of the project's own modules, written ahead for every process the tests start.
# The one-file executable dist/voicestack, which tests/test_binary.py serves from, is built by
# `make test` beside the lint and type checks (`make binary`), once this has run.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '== %s\n' "$*"; }

missing=()
for tool in chromium espeak-ng sox ffmpeg haproxy; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
  say "Debian packages: chromium, espeak-ng, sox, ffmpeg and haproxy are installed"
elif ! command -v apt-get >/dev/null; then
  say "Debian packages: no apt-get here; the tests that need ${missing[*]} will skip"
else
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
  say "Debian packages: installing ${missing[*]}"
  if ! { "${sudo[@]}" apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
    say "Debian packages: could not install ${missing[*]}; the tests that need them will skip"
  fi
fi

say "Python packages: voicestack[test,binary], plugins/*, tests/plugins/voicestack-testtools"
python3 -m pip install --quiet --disable-pip-version-check \
  -e '.[test,binary]' \
  -e plugins/voicestack-clock -e plugins/voicestack-notes \
  -e tests/plugins/voicestack-testtools

say "Bytecode: voicestack, cli, the plugins and the tests"
# The suite starts about 300 server and CLI processes. Where PYTHONDONTWRITEBYTECODE is set,
# Python keeps no bytecode of what it compiles, so each of them would compile every module it
# imports again: 0.4 s of a server's 2.3 s start here. It still reads bytecode that exists, and
# ignores any older than its source.
python3 -m compileall -q -j 0 voicestack cli plugins tests

