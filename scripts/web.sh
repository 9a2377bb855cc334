#!/usr/bin/env bash
# Builds the player's third-party browser code: hls.js, pinned in
# package-lock.json, from the npm registry into the git-ignored
# player/web/vendor/, which the binary embeds. Installs node and npm from
# Debian's packages when they are missing (as root), and fails loudly
# otherwise — except with WEB_OPTIONAL=1 (make run), where it warns and the
# player runs without its HLS fallback. Nothing third-party is committed.
set -euo pipefail
cd "$(dirname "$0")/.."

vendor=player/web/vendor
out=$vendor/hls.min.js

# Up to date: the copied file is newer than the lock that pins it.
if [ -s "$out" ] && [ "$out" -nt package-lock.json ]; then
  exit 0
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    if [ "${WEB_OPTIONAL:-}" = 1 ]; then
      echo "warning: node/npm not found: the player will play WebRTC only, without its LL-HLS fallback." >&2
      echo "Install them (Debian/Ubuntu: sudo apt-get install nodejs npm) and run make again to add it." >&2
      exit 0
    fi
    echo "error: building the player needs node and npm (for hls.js)." >&2
    echo "Install them (Debian/Ubuntu: sudo apt-get install nodejs npm) or run make as root." >&2
    exit 1
  fi
  echo "Installing node and npm from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  command -v npm >/dev/null || { echo "error: npm still missing after apt-get install" >&2; exit 1; }
fi

if ! npm ci --no-audit --no-fund --ignore-scripts --loglevel=error; then
  if [ "${WEB_OPTIONAL:-}" = 1 ]; then
    echo "warning: npm ci failed: the player will play WebRTC only, without its LL-HLS fallback." >&2
    exit 0
  fi
  echo "error: npm ci failed (is the npm registry reachable?)" >&2
  exit 1
fi
mkdir -p "$vendor"
cp node_modules/hls.js/dist/hls.min.js "$out"
cp node_modules/hls.js/LICENSE "$vendor/hls.js.LICENSE"
echo "player: hls.js $(node -p 'require("./node_modules/hls.js/package.json").version') copied to $out"
