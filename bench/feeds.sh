#!/usr/bin/env bash
# What the feed checks cost (issue 27): CPU per message of `wsbridge connect` reading a paced
# feed of 200-byte JSON messages, without and with `--sequence .u --event-time .E`
# (both jq programs on one parse of each message). Target: with / without <= 1.3.
#
#   bench/feeds.sh                        # RATE=10000 msg/s for SECS=5, RUNS=5, release build
#   RATE=1000 SECS=1 RUNS=1 PROFILE=dev bench/feeds.sh   # a quick check that it works
#   BIN=path/to/wsbridge bench/feeds.sh   # measure a given binary (no build)
#
# The feed is `wsbridge replay` serving a generated recording (RATE messages per recorded
# second, spaced by their `ts`), so both variants read the same bytes at the same pace. CPU is
# user+sys of the connect process from wait4(2) (bench/timed.py), divided by the messages it
# printed; the replay server is not counted. Runs alternate between the variants; the figure
# is the median. Every process is bounded in time and ended by its pid.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RATE="${RATE:-10000}"
SECS="${SECS:-5}"
RUNS="${RUNS:-5}"
PROFILE="${PROFILE:-release}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if [ -z "${BIN:-}" ]; then
    cargo build --quiet --profile "$PROFILE" --bin wsbridge || exit 1
    dir=$PROFILE; [ "$PROFILE" = dev ] && dir=debug
    BIN="$ROOT/target/$dir/wsbridge"
fi
N=$(( RATE * SECS ))

# One recording: RATE messages per second of `ts`, each numbered (u) and stamped (E).
python3 - "$WORK/feed.ndjson" "$RATE" "$N" <<'PY'
import json, sys
path, rate, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
start = 1_764_000_000_000
with open(path, "w") as f:
    for i in range(n):
        ts = start + i * 1000 // rate
        data = json.dumps({"u": i + 1, "E": ts, "s": "BTCUSDT", "b": [["64000.10", "0.5"]] * 3,
                           "pad": "x" * 60}, separators=(",", ":"))
        f.write(json.dumps({"upstream": "book", "seq": i + 1, "ts": ts, "type": "text",
                            "data": data}, separators=(",", ":")) + "\n")
PY

# CPU seconds per message of one connect run, or nothing if it failed.
run_once() {
    local variant=$1 out="$WORK/replay.out" cost="$WORK/cost" lines
    : > "$out"
    timeout $(( SECS * 4 + 30 )) "$BIN" replay "$WORK/feed.ndjson" --listen 127.0.0.1:0 \
        > "$out" 2> "$WORK/replay.log" &
    local replay=$!
    for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.05; done
    local addr; read -r _ addr < "$out"
    local checks=()
    [ "$variant" = checked ] && checks=(--sequence .u --event-time .E)
    python3 bench/timed.py "$cost" $(( SECS * 3 + 20 )) -- \
        "$BIN" connect -q -U --ndjson "${checks[@]}" "ws://$addr/book" > "$WORK/lines"
    kill "$replay" 2> /dev/null; wait "$replay" 2> /dev/null
    lines=$(grep -c '"type":"text"' "$WORK/lines")
    read -r rc _ user sys _ < "$cost"
    if [ "$rc" != 0 ] || [ "$lines" != "$N" ]; then
        echo "  $variant: rc $rc, $lines of $N messages" >&2
        return
    fi
    python3 -c "print(($user + $sys) / $N)"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }

echo "feed checks: $N messages at $RATE msg/s, $RUNS runs, $BIN"
for run in $(seq "$RUNS"); do
    for variant in plain checked; do
        per=$(run_once "$variant")
        [ -n "$per" ] && echo "$per" >> "$WORK/$variant"
        echo "  run $run $variant: ${per:-failed} s/msg"
    done
done
plain=$(median < "$WORK/plain" 2> /dev/null)
checked=$(median < "$WORK/checked" 2> /dev/null)
if [ -z "$plain" ] || [ -z "$checked" ]; then
    echo "no figure: runs failed" >&2
    exit 1
fi
python3 - "$plain" "$checked" <<'PY'
import sys
plain, checked = float(sys.argv[1]), float(sys.argv[2])
print(f"CPU per message: without {plain * 1e6:.2f} us, with sequence + event_time "
      f"{checked * 1e6:.2f} us: {checked / plain:.2f}x (target <= 1.3x)")
PY
