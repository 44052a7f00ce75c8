#!/usr/bin/env bash
# The http sink's throughput against a plain hyper client posting the same NDJSON batches
# (one request in flight, max_batch records each) to the same collector, on loopback.
#
#   bench/http.sh                    # COUNT=1000000 records, the conformance profile
#   COUNT=20000 PROFILE=dev bench/http.sh   # a quick check that the script works
#
# Prints records/s for each and their ratio. Every process is bounded by timeout(1) and
# ended by its pid.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
COUNT="${COUNT:-1000000}"
BATCH="${BATCH:-1000}"
PROFILE="${PROFILE:-conformance}"
LIMIT="${LIMIT:-300}"

cargo build -q --profile "$PROFILE" --bin wsbridge --example http_bench
DIR="target/$PROFILE"
[ "$PROFILE" = dev ] && DIR=target/debug
BENCH="$DIR/examples/http_bench"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "${KEEP:-}" ] || rm -rf "$WORK"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The plain client.
HTTP_PORT="$(port)"
timeout "$LIMIT" "$BENCH" collect --port "$HTTP_PORT" --count "$COUNT" >"$WORK/plain.out" &
COLLECT=$!
sleep 0.3
timeout "$LIMIT" "$BENCH" plain --url "http://127.0.0.1:$HTTP_PORT/ingest" --count "$COUNT" --batch "$BATCH" &
PIDS+=($!)
wait "$COLLECT"
PLAIN_SECS="$(awk '{print $3}' "$WORK/plain.out")"

# wsbridge: a WebSocket feed -> the http sink -> the collector.
HTTP_PORT="$(port)"
WS_PORT="$(port)"
timeout "$LIMIT" "$BENCH" feed --port "$WS_PORT" --count "$COUNT" &
PIDS+=($!)
timeout "$LIMIT" "$BENCH" collect --port "$HTTP_PORT" --count "$COUNT" >"$WORK/sink.out" &
COLLECT=$!
cat >"$WORK/wsbridge.toml" <<TOML
[[upstream]]
name = "feed"
url = "ws://127.0.0.1:$WS_PORT/"

[[sink]]
type = "http"
url = "http://127.0.0.1:$HTTP_PORT/ingest"
events = false
max_batch = $BATCH
linger = "100ms"
TOML
sleep 0.3
RUST_LOG=warn timeout "$LIMIT" "$DIR/wsbridge" run -c "$WORK/wsbridge.toml" 2>"$WORK/wsbridge.err" &
PIDS+=($!)
wait "$COLLECT"
SINK_SECS="$(awk '{print $3}' "$WORK/sink.out")"

python3 - "$COUNT" "$PLAIN_SECS" "$SINK_SECS" <<'PY'
import sys
n, plain, sink = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print(f"records            {n}")
print(f"plain hyper client {n/plain:,.0f} records/s ({plain:.3f} s)")
print(f"wsbridge http sink {n/sink:,.0f} records/s ({sink:.3f} s)")
print(f"sink / plain       {plain/sink:.2f}")
PY
