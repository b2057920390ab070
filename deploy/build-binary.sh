#!/usr/bin/env bash
# Build the one-file executable dist/voicestack with PyInstaller (deploy/voicestack.spec).
#   pip install -e '.[binary]'   # PyInstaller; install plugins/* first to bundle the tool plugins
#   bash deploy/build-binary.sh  # or: make binary
# Work files go to build/pyinstaller, the binary to dist/ (both gitignored). Then it checks that
# the binary starts: `dist/voicestack --help`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import PyInstaller' 2>/dev/null; then
  echo "build-binary: PyInstaller is missing: pip install -e '.[binary]'" >&2
  exit 1
fi

start=$(date +%s)
"$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath dist --workpath build/pyinstaller deploy/voicestack.spec
dist/voicestack --help >/dev/null
echo "build-binary: dist/voicestack ($(du -h dist/voicestack | cut -f1)) in $(($(date +%s) - start)) s"
