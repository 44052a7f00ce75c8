#!/usr/bin/env bash
# Where the time goes on one benchmark path: perf (cpu-clock samples; the VM has no hardware
# counters), strace -c (syscalls per message) and, for recv64, valgrind's dhat (allocations
# per message). Loopback only; every process is bounded and ended by its pid.
#
#   bench/profile.sh recv64|recv4k|recv1m|send|echo|fanout64 [N]
#
# Uses the binaries bench/run.sh built (WSB=path overrides the wsbridge binary, for A/B runs
# of a scratch build). Output goes to $CACHE/bench/profile/<path>/ and a summary to stdout.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CACHE:-$ROOT/.cache}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
WSB="${WSB:-$TARGET/release/wsbridge}"
EX="$TARGET/release/examples"
what="${1:?usage: bench/profile.sh recv64|recv4k|recv1m|send|echo|fanout64 [N]}"
OUTDIR="$CACHE/bench/profile/$what"
mkdir -p "$OUTDIR"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done' EXIT

server() { # MODE ARGS...
    "$EX/loadserver" "$@" --max-secs 300 > "$OUTDIR/server.out" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        PORT="$(awk '/^LISTENING/ {print $2}' "$OUTDIR/server.out")"
        [[ -n "$PORT" ]] && return
        sleep 0.02
    done
    exit 1
}

perf_top() { # perf.data
    perf report -i "$1" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -5
    perf report -i "$1" --no-children --sort symbol --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -30 | cut -c1-140
}

case "$what" in
    recv64 | recv4k | recv1m)
        case "$what" in
            recv64) size=64 n="${2:-2000000}" ;;
            recv4k) size=4096 n="${2:-200000}" ;;
            recv1m) size=1048576 n="${2:-1000}" ;;
        esac
        server send --count "$n" --size "$size" --connections 3
        url="ws://127.0.0.1:$PORT/"
        perf record -e cpu-clock -F 4000 -g -o "$OUTDIR/perf.data" "$WSB" connect "$url" -U > /dev/null 2> /dev/null
        strace -c -f -o "$OUTDIR/strace.txt" "$WSB" connect "$url" -U > /dev/null
        perf stat -e page-faults,context-switches,task-clock -o "$OUTDIR/perfstat.txt" "$WSB" connect "$url" -U > /dev/null
        echo "== perf ($n x $size B, wsbridge connect -U > /dev/null)"
        perf_top "$OUTDIR/perf.data"
        echo "== syscalls (per message: divide by $n)"
        head -10 "$OUTDIR/strace.txt"
        grep -E 'page-faults|context-switches|task-clock' "$OUTDIR/perfstat.txt"
        if [[ "$what" == recv64 ]] && command -v valgrind > /dev/null; then
            for m in 20000 40000; do
                server send --count "$m" --size 64 --connections 1
                valgrind --tool=dhat --dhat-out-file="$OUTDIR/dhat.$m.json" "$WSB" connect "ws://127.0.0.1:$PORT/" -U \
                    > /dev/null 2> "$OUTDIR/dhat.$m.txt"
            done
            echo "== allocations (dhat; the difference of 40k and 20k messages / 20k = per message)"
            grep -h 'Total:' "$OUTDIR"/dhat.*.txt
        fi
        ;;
    send | echo)
        n="${2:-500000}"
        yes 'abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0' | head -n "$n" > "$OUTDIR/lines"
        [[ "$what" == send ]] && server count --connections 2 || server echo --connections 2
        url="ws://127.0.0.1:$PORT/"
        perf record -e cpu-clock -F 4000 -g -o "$OUTDIR/perf.data" "$WSB" connect "$url" < "$OUTDIR/lines" > /dev/null 2> /dev/null
        strace -c -f -o "$OUTDIR/strace.txt" "$WSB" connect "$url" < "$OUTDIR/lines" > /dev/null
        echo "== perf ($n lines, wsbridge connect < lines)"
        perf_top "$OUTDIR/perf.data"
        echo "== syscalls (per message: divide by $n)"
        head -10 "$OUTDIR/strace.txt"
        ;;
    fanout64)
        n="${2:-40000}"
        go="$OUTDIR/go"
        rm -f "$go"
        server send --count "$n" --size 64 --connections 1 --go-file "$go"
        sinkport="$("$EX/sinkreader" freeport)"
        cat > "$OUTDIR/cfg.toml" << EOF
[daemon]
log_level = "warn"
[[upstream]]
name = "load"
url = "ws://127.0.0.1:$PORT/"
reconnect = { initial = "10s" }
[[sink]]
type = "tcp"
listen = "127.0.0.1:$sinkport"
format = "ndjson"
events = false
on_slow = "block"
max_clients = 128
EOF
        "$WSB" run -c "$OUTDIR/cfg.toml" 2> "$OUTDIR/wsbridge.log" &
        wpid=$!
        PIDS+=("$wpid")
        sleep 0.3
        perf record -e cpu-clock -F 4000 -g -p "$wpid" -o "$OUTDIR/perf.data" 2> /dev/null &
        ppid=$!
        sleep 0.2
        "$EX/sinkreader" tcp --addr "127.0.0.1:$sinkport" --clients 64 --expect "$n" --go-file "$go" --max-secs 60
        kill -INT "$ppid"
        wait "$ppid"
        kill "$wpid"
        wait "$wpid" 2> /dev/null
        echo "== perf (wsbridge run, 64 tcp clients x $n records)"
        perf_top "$OUTDIR/perf.data"
        ;;
    *)
        echo "unknown path $what" >&2
        exit 2
        ;;
esac
