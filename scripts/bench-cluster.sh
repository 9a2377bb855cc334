#!/usr/bin/env bash
# The connection tier's cluster benchmark: 100,000 control links spread by
# /connect over 6 connection-server processes, Redis between the tiers, one
# group message (a notice to stream:demo) reaching every link, repeated.
#
#   scripts/bench-cluster.sh [links (100000)] [connection servers (6)] [rounds (5)]
set -euo pipefail
links=${1:-100000}
conns=${2:-6}
rounds=${3:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/bin/backchannel
(cd "$root" && go build -o "$bin" ./cmd/backchannel)
state=$(mktemp -d -t backchannel-bench-XXXX)
base=${BASE_PORT:-9100}

BACKCHANNEL=$bin STATE=$state BASE_PORT=$base APP_FLAGS="--api-key benchkey" \
  CONN_FLAGS="--capacity 40000" "$root/deploy/loopback-cluster.sh" "$conns" >"$state/cluster.out" 2>&1 &
cluster=$!
trap 'kill -TERM $cluster 2>/dev/null; wait $cluster 2>/dev/null || true' EXIT
for _ in $(seq 150); do
  grep -q "^Watch the demo" "$state/cluster.out" 2>/dev/null && break
  sleep 0.2
done
grep -q "^Watch the demo" "$state/cluster.out" || { cat "$state/cluster.out" >&2; exit 1; }
sleep 3 # gossip settles: every connection server known to /connect

app_pid=$(cat "$state/app-1.pid")
extra=$(cat "$state"/conn-*.pid | paste -sd, -)
echo "cluster in $state: application pid $app_pid, connection servers $extra" >&2
"$bin" loadgen -target "http://127.0.0.1:$((base + 1))" -key benchkey -connect -no-raw \
  -links "$links" -rounds "$rounds" -server-pid "$app_pid" -extra-pids "$extra" -gap 1s "${@:4}"
