#!/usr/bin/env bash
# Runs a whole Backchannel cluster on this machine's loopback: a redis-server,
# one ingest node, one application server and N connection servers, joined
# by memberlist gossip. Ctrl-C (or SIGTERM) stops everything.
#
#   deploy/loopback-cluster.sh [connection servers (default 2)]
#
# Environment: BACKCHANNEL (binary; default: built from this tree into
# ./bin), BASE_PORT (first HTTP port, default 9000), STATE (directory for
# logs, pid files and data, default a temp dir), CHECK=1 (start, check every
# node's /healthz and /connect, then stop: used by the tests), INGEST_FLAGS,
# APP_FLAGS, CONN_FLAGS (extra flags for those nodes).
set -euo pipefail

conns=${1:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BACKCHANNEL:-$root/bin/backchannel}
base=${BASE_PORT:-9000}
state=${STATE:-$(mktemp -d -t backchannel-cluster-XXXX)}
mkdir -p "$state"

if [ -z "${BACKCHANNEL:-}" ]; then
  (cd "$root" && go build -o "$bin" ./cmd/backchannel)
fi
command -v redis-server >/dev/null || { echo "error: redis-server not found (apt-get install redis-server)" >&2; exit 1; }

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # Nodes drain their links on SIGTERM; give them 10 s, then make sure.
  for _ in $(seq 100); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

redis_port=$((base + 379))
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$state" \
  >"$state/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.1
done

seed="127.0.0.1:$((base + 946))"
start() { # id role index [flags…]
  local id=$1 role=$2 i=$3
  shift 3
  local http=$((base + i)) gossip=$((base + 946 + i)) ice=$((base + 189 + i)) rtsp=$((base + 554 + i))
  local join=()
  [ "$i" -gt 0 ] && join=(--cluster-join "$seed")
  "$bin" "$role" --node-id "$id" --http "127.0.0.1:$http" --ice-udp "127.0.0.1:$ice" \
    --rtsp "127.0.0.1:$rtsp" \
    --redis "127.0.0.1:$redis_port" --cluster-bind "127.0.0.1:$gossip" "${join[@]}" \
    --data-dir "$state/$id" --allowed-origins '127.0.0.1:*' "$@" >"$state/$id.log" 2>&1 &
  pids+=($!)
  echo $! >"$state/$id.pid"
  echo "$id ($role): http://127.0.0.1:$http  gossip 127.0.0.1:$gossip  log $state/$id.log"
}

start ingest-1 ingest 0 --demo ${INGEST_FLAGS:-}
start app-1 application 1 ${APP_FLAGS:-}
for i in $(seq 1 "$conns"); do
  start "conn-$i" connection $((i + 1)) ${CONN_FLAGS:-}
done

healthy() {
  for i in $(seq 0 $((conns + 1))); do
    curl -fsS "http://127.0.0.1:$((base + i))/healthz" >/dev/null 2>&1 || return 1
  done
}
for _ in $(seq 100); do healthy && break; sleep 0.2; done
if ! healthy; then
  echo "error: not every node came up; the logs in $state end with:" >&2
  for f in "$state"/*.log; do echo "== $f" >&2; tail -n 15 "$f" >&2; done
  exit 1
fi

echo
echo "Watch the demo: http://127.0.0.1:$base/watch/demo   (any node serves the player; /connect picks a connection server)"
grep -h "Publish key\|Operator key" "$state"/ingest-1.log "$state"/app-1.log | sed 's/^ */  /'

if [ "${CHECK:-}" = 1 ]; then
  for _ in $(seq 50); do
    url=$(curl -fsS "http://127.0.0.1:$base/connect" 2>/dev/null || true)
    case "$url" in *'"url":"ws://127.0.0.1:'*) break ;; esac
    sleep 0.2
  done
  case "$url" in
    *'"url":"ws://127.0.0.1:'*) echo "check: /connect → $url" ;;
    *) echo "error: /connect never offered a connection server: $url" >&2; exit 1 ;;
  esac
  exit 0
fi
wait
