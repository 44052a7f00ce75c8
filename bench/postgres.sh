#!/usr/bin/env bash
# The postgres sink's throughput against a plain tokio-postgres client (bench/postgres-client:
# COPY in rounds of 1,024 rows, one transaction each, nothing else), on one local PostgreSQL
# server this script starts in a temp dir (as nobody when run as root).
#
#   bench/postgres.sh                     # COUNT=200000 SIZE=100, release builds
#   COUNT=2000 PROFILE=debug bench/postgres.sh   # a tiny run that proves the script works
#
# wsbridge reads `blaster --raw` (../shared/reference-bench, built into REF_TARGET like
# bench/run.sh does) and writes to the table `wsbridge`; its figure is from the daemon's
# start until /status shows every record acknowledged (committed). Prints both rates.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
COUNT="${COUNT:-200000}"
SIZE="${SIZE:-100}"
PROFILE="${PROFILE:-release}"
REFERENCE_BENCH="${REFERENCE_BENCH:-$ROOT/../shared/reference-bench}"
REF_TARGET="${REF_TARGET:-/tmp/reference-bench}"
TMO="${TMO:-300}"
PIDS=()

say() { echo "bench/postgres.sh: $*" >&2; }
die() { say "$*"; exit 1; }
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

WORK="$(mktemp -d)"
PG_PID=""
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    # The server and its backends: its own process group.
    [[ -n "$PG_PID" ]] && kill -TERM -- "-$PG_PID" 2>/dev/null
    sleep 0.5
    [[ -n "$PG_PID" ]] && kill -KILL -- "-$PG_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- builds -------------------------------------------------------------------------------
flag=(); [[ "$PROFILE" == release ]] && flag=(--release)
say "building wsbridge and the plain client ($PROFILE)"
cargo build -q "${flag[@]}" --bin wsbridge || die "cannot build wsbridge"
CARGO_TARGET_DIR="$ROOT/target" cargo build -q "${flag[@]}" \
    --manifest-path bench/postgres-client/Cargo.toml || die "cannot build bench/postgres-client"
WSBRIDGE="$ROOT/target/$PROFILE/wsbridge"
CLIENT="$ROOT/target/$PROFILE/postgres-client"
BLASTER="$REF_TARGET/release/blaster"
if [[ ! -x "$BLASTER" ]]; then
    CARGO_TARGET_DIR="$REF_TARGET" cargo build -q --release \
        --manifest-path "$REFERENCE_BENCH/Cargo.toml" || die "cannot build the reference tools"
fi

# --- the server ---------------------------------------------------------------------------
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[[ -x "$PGBIN/postgres" ]] || die "postgresql is not installed (apt-get install postgresql)"
as_server=()
if [[ "$(id -u)" == 0 ]]; then
    chown nobody: "$WORK"
    as_server=(setpriv "--reuid=$(id -u nobody)" "--regid=$(id -g nobody)" --clear-groups)
fi
"${as_server[@]}" "$PGBIN/initdb" -D "$WORK/data" -U postgres --auth=trust -E UTF8 --no-sync \
    > "$WORK/initdb.log" 2>&1 || die "initdb failed: $(tail -5 "$WORK/initdb.log")"
PG_PORT="$(free_port)"
setsid "${as_server[@]}" "$PGBIN/postgres" -D "$WORK/data" -p "$PG_PORT" -k "$WORK" \
    -c listen_addresses=127.0.0.1 > "$WORK/server.log" 2>&1 &
PG_PID=$!
URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
for _ in $(seq 300); do
    "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
    sleep 0.1
done
"$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || die "postgres did not start: $(tail -5 "$WORK/server.log")"

# --- the plain client ---------------------------------------------------------------------
say "plain client: $COUNT rows of $SIZE bytes"
plain="$(timeout "$TMO" "$CLIENT" "$URL" "$COUNT" "$SIZE" 1024)" || die "the plain client failed"
echo "plain tokio-postgres COPY: $plain"

# --- wsbridge -----------------------------------------------------------------------------
say "wsbridge: $COUNT messages of $SIZE bytes from blaster --raw"
BL_PORT="$(free_port)"
timeout "$TMO" "$BLASTER" --port "$BL_PORT" --raw --count "$COUNT" --size "$SIZE" \
    > "$WORK/blaster.out" 2> "$WORK/blaster.err" &
PIDS+=($!)
for _ in $(seq 250); do grep -q listening "$WORK/blaster.err" 2>/dev/null && break; sleep 0.02; done
METRICS="127.0.0.1:$(free_port)"
cat > "$WORK/wsbridge.toml" <<TOML
[metrics]
listen = "$METRICS"

[[upstream]]
name = "feed"
url = "ws://127.0.0.1:$BL_PORT/"

[[sink]]
type = "postgres"
url = "$URL"
table = "wsbridge"
events = false
on_slow = "block"
TOML
start=$(date +%s.%N)
timeout "$TMO" "$WSBRIDGE" run -c "$WORK/wsbridge.toml" > "$WORK/wsbridge.out" 2> "$WORK/wsbridge.err" &
PIDS+=($!)
acked=0
for _ in $(seq $(( TMO * 20 ))); do
    acked="$(curl -s "http://$METRICS/status" | python3 -c '
import json, sys
try:
    s = json.load(sys.stdin)["sinks"][0]
    print((s.get("broker") or {}).get("acknowledged", 0))
except Exception:
    print(0)')"
    [[ "$acked" -ge "$COUNT" ]] && break
    sleep 0.05
done
end=$(date +%s.%N)
[[ "$acked" -ge "$COUNT" ]] || die "wsbridge acknowledged $acked of $COUNT: $(tail -5 "$WORK/wsbridge.err")"
rows="$("$PGBIN/psql" -qtA -h 127.0.0.1 -p "$PG_PORT" -U postgres -c 'SELECT count(*) FROM wsbridge')"
python3 -c "
secs = $end - $start
print(f'wsbridge postgres sink: rows {$rows} seconds {secs:.3f} rows_per_s {$COUNT / secs:.0f} (from the daemon start)')"
