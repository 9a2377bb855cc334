#!/usr/bin/env bash
# Installs what the tests need from Debian's packages when it is missing, and
# fails loudly when it cannot: tests never skip for lack of a tool.
set -euo pipefail

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v ffprobe >/dev/null || need+=(ffmpeg)
command -v chromium >/dev/null || need+=(chromium)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
# Deduplicate (ffmpeg provides ffprobe).
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "error: the tests need: ${need[*]}" >&2
  echo "Install them (Debian/Ubuntu: sudo apt-get install ${need[*]}) or run 'make test' as root." >&2
  exit 1
fi

echo "Installing test dependencies: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
for tool in redis-server ffmpeg ffprobe chromium; do
  command -v "$tool" >/dev/null || { echo "error: $tool still missing after apt-get install" >&2; exit 1; }
done
