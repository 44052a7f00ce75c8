#!/usr/bin/env bash
# The udp sink's throughput over loopback: the reference `blaster` sends N messages of S bytes,
# `wsbridge run` forwards them to a udp sink, and a Python receiver (8 MiB SO_RCVBUF) counts
# the datagrams. Prints records/s received and the sink's written/dropped from /status.
#
#   N=200000 S=100 bench/udp.sh        # defaults: N=100000, S=100
#
# Needs the reference tools built (see bench/run.sh: REF_TARGET, REFERENCE_BENCH) and a
# release build of wsbridge (built here). Every process is bounded in time and ended by pid.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N="${N:-100000}"
S="${S:-100}"
REFERENCE_BENCH="${REFERENCE_BENCH:-$ROOT/../shared/reference-bench}"
REF_TARGET="${REF_TARGET:-/tmp/reference-bench}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

CARGO_TARGET_DIR="$REF_TARGET" cargo build -q --release --manifest-path "$REFERENCE_BENCH/Cargo.toml" || exit 1
cargo build -q --release || exit 1
WSBRIDGE="$ROOT/target/release/wsbridge"
UP=$(free_port); METRICS=$(free_port); UDP=$(free_port)

timeout 120 python3 - "$UDP" "$N" > "$WORK/recv.out" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("127.0.0.1", int(sys.argv[1])))
want, got, first = int(sys.argv[2]), 0, None
s.settimeout(3)
try:
    while got < want:
        s.recv(65535)
        got += 1
        first = first or time.monotonic()
except socket.timeout:
    pass
took = time.monotonic() - (first or time.monotonic())
print(f"{got} {took:.3f}")
PY
RECV=$!; PIDS+=("$RECV")

timeout 120 "$REF_TARGET/release/blaster" --port "$UP" --count "$N" --size "$S" > /dev/null 2> "$WORK/blaster.err" &
PIDS+=("$!")
for _ in $(seq 250); do grep -q listening "$WORK/blaster.err" 2>/dev/null && break; sleep 0.02; done

cat > "$WORK/udp.toml" <<END
[metrics]
listen = "127.0.0.1:$METRICS"
[[upstream]]
name = "feed"
url = "ws://127.0.0.1:$UP/"
[[sink]]
type = "udp"
target = "127.0.0.1:$UDP"
events = false
END
timeout 120 "$WSBRIDGE" run -c "$WORK/udp.toml" 2> "$WORK/wsbridge.log" &
WS=$!; PIDS+=("$WS")
wait "$RECV"
read -r GOT TOOK < "$WORK/recv.out"
STATUS=$(curl -s "http://127.0.0.1:$METRICS/status" 2>/dev/null | python3 -c 'import json,sys; s=json.load(sys.stdin)["sinks"][0]; print(f"routed {s[\"records_routed\"]} written {s[\"records_written\"]} dropped {s[\"dropped_by_reason\"]}")' 2>/dev/null)
kill "$WS" 2>/dev/null
python3 -c "import sys; got, took = int('$GOT'), float('$TOOK'); print(f'udp sink: received {got}/$N datagrams of ~$S-byte payloads in {took:.2f}s: {got/took if took else 0:,.0f} records/s')"
echo "sink: ${STATUS:-/status not read}"
