#!/usr/bin/env bash
# The udp sink's throughput over loopback against a plain tokio UDP client
# (examples/udp_plain.rs: the same number of datagrams of the same size, one `send` each).
# For the sink, the reference `blaster` sends N messages of S bytes, `wsbridge run` forwards
# them to a udp sink (`on_slow = "block"`: the sink's own pace). The example's receiver
# (32 MiB SO_RCVBUF where the kernel allows) counts the datagrams and times the first to the
# last; loopback drops some when the receiver falls behind, which the counts show. Prints records/s for each, their
# ratio, and the sink's written/dropped from /status.
#
#   N=200000 S=100 bench/udp.sh        # defaults: N=200000, S=100
#
# Needs the reference tools built (see bench/run.sh: REF_TARGET, REFERENCE_BENCH); builds
# wsbridge and the example in release. Every process is bounded in time and ended by pid.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N="${N:-200000}"
S="${S:-100}"
REFERENCE_BENCH="${REFERENCE_BENCH:-$ROOT/../shared/reference-bench}"
REF_TARGET="${REF_TARGET:-/tmp/reference-bench}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

CARGO_TARGET_DIR="$REF_TARGET" cargo build -q --release --manifest-path "$REFERENCE_BENCH/Cargo.toml" || exit 1
cargo build -q --release --bin wsbridge --example udp_plain || exit 1
WSBRIDGE="$ROOT/target/release/wsbridge"

# receive PORT NAME: counts datagrams into $WORK/NAME.out as "<received> <first-to-last s>";
# returns once it is bound (a datagram to a port nobody holds is refused).
receive() {
    timeout 120 target/release/examples/udp_plain count --port "$1" --count "$N" \
        --ready "$WORK/$2.ready" > "$WORK/$2.out" &
    RECV=$!
    PIDS+=("$RECV")
    for _ in $(seq 250); do [ -e "$WORK/$2.ready" ] && break; sleep 0.02; done
}

# The plain client: datagrams the size of the sink's records (the NDJSON envelope around S
# bytes of payload is about 80 bytes).
PLAIN_PORT=$(free_port)
receive "$PLAIN_PORT" plain
timeout 120 target/release/examples/udp_plain send --target "127.0.0.1:$PLAIN_PORT" --count "$N" --size $((S + 80)) &
PIDS+=("$!")
wait "$RECV"

# The sink.
UP=$(free_port); METRICS=$(free_port); UDP=$(free_port)
receive "$UDP" sink
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
on_slow = "block"   # the sink's own pace: the feed waits for it rather than lose records
END
timeout 120 "$WSBRIDGE" run -c "$WORK/udp.toml" 2> "$WORK/wsbridge.log" &
WS=$!; PIDS+=("$WS")
wait "$RECV"
STATUS=$(curl -s "http://127.0.0.1:$METRICS/status" 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)["sinks"][0]
print("routed", s["records_routed"], "written", s["records_written"], "dropped", s["records_dropped"])' 2>/dev/null)
kill "$WS" 2>/dev/null

python3 - "$N" "$S" "$WORK/plain.out" "$WORK/sink.out" <<'PY'
import sys
n, size = int(sys.argv[1]), int(sys.argv[2])
rates = {}
for name, path in (("plain tokio UdpSocket", sys.argv[3]), ("wsbridge udp sink", sys.argv[4])):
    got, took = open(path).read().split()
    got, took = int(got), float(took)
    rates[name] = got / took if took else 0
    print(f"{name:22} {rates[name]:>12,.0f} datagrams/s ({got}/{n} received, {took:.3f} s first to last)")
plain, sink = rates.values()
print(f"{'sink / plain':22} {sink / plain if plain else 0:>12.2f}")
PY
echo "sink: ${STATUS:-/status not read}"
