#!/usr/bin/env bash
# Throughput and memory of wsbridge, side by side with websocat 1.14.1 and a bare
# tokio-tungstenite client, over loopback only (127.0.0.1). Writes bench/RESULTS.md.
#
#   bench/run.sh                     # everything, RUNS=5: ~3 min of measuring after the build
#   RUNS=3 bench/run.sh              # fewer runs per figure (RUNS_IDLE=3 for the 1,000 upstreams)
#   ONLY=recv,fanout bench/run.sh    # a subset: recv, send, echo, fanout, idle
#   WSBRIDGE_REV=HEAD bench/run.sh   # measure the last commit, not a half-edited working tree
#   N64= N4K= N1M= NSEND= NECHO= NFAN1= NFAN8= NFAN64= NIDLE=   # messages per run (defaults below)
#
# websocat is installed on first use with `cargo install --locked` into $CACHE/websocat
# (CACHE defaults to .cache/, gitignored); that build runs while ours does. Raw figures go to
# bench/raw.tsv, the table to bench/RESULTS.md (with bench/PROFILE.md appended).
#
# Every figure is the median of RUNS runs, taken interleaved (A, B, C, A, B, C, ...).
# Every process it starts is bounded in time (timeout, --max-secs) and is ended by its pid.
# Needs: cargo, python3 (for the table), /usr/bin/time (installed with apt-get if missing).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="${CACHE:-$ROOT/.cache}"
RUNS="${RUNS:-5}"
RUNS_IDLE="${RUNS_IDLE:-3}"
ONLY="${ONLY:-recv,send,echo,fanout,idle}"
OUT="${OUT:-$ROOT/bench/RESULTS.md}"
N64="${N64:-2000000}"        # 64 B messages per run
N4K="${N4K:-200000}"         # 4 KiB messages per run
N1M="${N1M:-1000}"           # 1 MiB messages per run
NSEND="${NSEND:-1000000}"    # stdin lines per run (stdin -> ws)
NECHO="${NECHO:-500000}"     # stdin lines per run (echo round trip)
NIDLE="${NIDLE:-1000}"       # idle upstreams
TMO="${TMO:-60}"             # per-run time limit, seconds
WEBSOCAT_VERSION=1.14.1

mkdir -p "$CACHE/bench"
WORK="$(mktemp -d "$CACHE/bench/run.XXXXXX")"
RAW="$WORK/raw.tsv"
LOG="$WORK/stderr.log"
: > "$RAW"
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    rm -f "$WORK"/fifo.* "$WORK"/lines.* 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s bench: %s\n' "$(date +%T)" "$*" >&2; }
has() { [[ ",$ONLY," == *",$1,"* ]]; }
now_ns() { date +%s%N; }

# --- tools -----------------------------------------------------------------------------
if [[ ! -x /usr/bin/time ]]; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        say "installing GNU time"
        apt-get update -qq && apt-get install -y -qq time >/dev/null
    else
        echo "bench/run.sh: needs /usr/bin/time (apt-get install time)" >&2
        exit 1
    fi
fi

WEBSOCAT="$CACHE/websocat/bin/websocat"
INSTALL_PID=""
if [[ ! -x "$WEBSOCAT" ]]; then
    # Minutes of compiling: start it first, build our binaries meanwhile.
    say "installing websocat $WEBSOCAT_VERSION into $CACHE/websocat (log: $WORK/websocat-install.log)"
    cargo install websocat --version "$WEBSOCAT_VERSION" --locked --root "$CACHE/websocat" \
        > "$WORK/websocat-install.log" 2>&1 &
    INSTALL_PID=$!
fi

# WSBRIDGE_REV=HEAD (or any commit) measures that commit instead of the working tree: it is
# extracted under $CACHE/bench/ with this tree's load tools and built in its own target dir,
# so a half-edited src/ neither breaks the run nor gets measured.
SRC="$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
REV_LABEL="$(git rev-parse --short HEAD 2>/dev/null)"
git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || REV_LABEL="$REV_LABEL + uncommitted src/ changes (working tree)"
if [[ -n "${WSBRIDGE_REV:-}" ]]; then
    rev="$(git rev-parse --short "$WSBRIDGE_REV")" || exit 1
    SRC="$CACHE/bench/src-$rev"
    TARGET="$CACHE/bench/target"
    rm -rf "$SRC"
    mkdir -p "$SRC"
    git archive "$rev" | tar -x -C "$SRC"
    mkdir -p "$SRC/examples"
    cp "$ROOT"/examples/{loadserver,bareclient,sinkreader}.rs "$SRC/examples/"
    REV_LABEL="$rev (committed tree)"
fi
say "building release binaries ($REV_LABEL)"
# Two builds: the load tools' dev-dependencies (proptest, tokio's test-util) would otherwise
# add their features to the shared crates in wsbridge too (a bigger binary than users build).
if ! (cd "$SRC" && export CARGO_TARGET_DIR="$TARGET" && cargo build --release --bin wsbridge \
        && cargo build --release --examples) 2> "$WORK/build.log"; then
    tail -30 "$WORK/build.log" >&2
    echo "bench/run.sh: the build failed; WSBRIDGE_REV=HEAD measures the last commit instead" >&2
    exit 1
fi
if [[ -n "$INSTALL_PID" ]]; then
    say "waiting for the websocat install"
    if ! wait "$INSTALL_PID"; then
        tail -20 "$WORK/websocat-install.log" >&2
        exit 1
    fi
fi

WSB="$TARGET/release/wsbridge"
if [[ -n "${WSB_WRAPPER:-}" ]]; then
    # A wrapper (a profiler, say) runs every wsbridge command: it finds the binary in $WSB_REAL.
    export WSB_REAL="$WSB"
    WSB="$WSB_WRAPPER"
fi
EX="$TARGET/release/examples"
LOADSERVER="$EX/loadserver"
BARE="$EX/bareclient"
SINKREADER="$EX/sinkreader"
ulimit -n "$(ulimit -Hn)" 2>/dev/null

# --- helpers ---------------------------------------------------------------------------

# start_server MODE ARGS... : starts a load server, sets SERVER_PID and PORT.
SERVERS=0
start_server() {
    SERVERS=$(( SERVERS + 1 ))
    local out="$WORK/server.$SERVERS.$1.out"
    : > "$out"
    "$LOADSERVER" "$@" --max-secs 900 >> "$out" 2>> "$LOG" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    SERVER_OUT="$out"
    PORT=""
    for _ in $(seq 200); do
        PORT="$(awk '/^LISTENING/ {print $2; exit}' "$out")"
        [[ -n "$PORT" ]] && return 0
        sleep 0.02
    done
    echo "bench/run.sh: the load server did not start" >&2
    exit 1
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
}

# record GROUP VARIANT RUN N SIZE WALL_S USER_S SYS_S RSS_KB OK EXTRA
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$RAW"; }

# measure GROUP VARIANT RUN N SIZE STDIN OUTPUT EXPECT_LINES CMD... : runs CMD under
# /usr/bin/time with STDIN, its stdout to /dev/null ("null"), through a pipe into wc -l
# ("pipe", checked against EXPECT_LINES) or into a file ("file").
measure() {
    local group=$1 variant=$2 run=$3 n=$4 size=$5 input=$6 output=$7 expect=$8
    shift 8
    local t0 t1 rc ok=1 lines="" extra=""
    rm -f "$WORK/time"
    t0=$(now_ns)
    case "$output" in
        null)
            timeout "$TMO" /usr/bin/time -f '%U %S %M' -o "$WORK/time" "$@" < "$input" > /dev/null 2>> "$LOG"
            rc=$?
            ;;
        pipe)
            timeout "$TMO" /usr/bin/time -f '%U %S %M' -o "$WORK/time" "$@" < "$input" 2>> "$LOG" | wc -l > "$WORK/lines"
            rc=${PIPESTATUS[0]}
            lines="$(cat "$WORK/lines")"
            [[ "$lines" == "$expect" ]] || ok=0
            extra="lines=$lines"
            ;;
        file)
            timeout "$TMO" /usr/bin/time -f '%U %S %M' -o "$WORK/time" "$@" < "$input" > "$WORK/out" 2>> "$LOG"
            rc=$?
            extra="$(tr -d '\n' < "$WORK/out")"
            [[ -z "$expect" || "$extra" == *"\"messages\":$expect,"* ]] || ok=0
            ;;
    esac
    t1=$(now_ns)
    [[ "$rc" == 0 ]] || ok=0
    local user=0 sys=0 rss=0
    if [[ -s "$WORK/time" ]]; then
        read -r user sys rss < <(tail -1 "$WORK/time")
    fi
    local wall
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", (b - a) / 1e9 }')
    [[ "$ok" == 1 ]] || say "  $group $variant run $run: rc=$rc lines=$lines (expected $expect)"
    record "$group" "$variant" "$run" "$n" "$size" "$wall" "$user" "$sys" "$rss" "$ok" "$extra"
}

# /proc figures of a running process: "USER_S SYS_S HWM_KB RSS_KB".
proc_figures() {
    local pid=$1 tck
    tck=$(getconf CLK_TCK)
    local ut st
    read -r ut st < <(awk '{ sub(/^.*\) /, ""); print $12, $13 }' "/proc/$pid/stat" 2>/dev/null || echo "0 0")
    local hwm rss
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null)
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null)
    awk -v u="$ut" -v s="$st" -v t="$tck" -v h="${hwm:-0}" -v r="${rss:-0}" \
        'BEGIN { printf "%.2f %.2f %d %d\n", u / t, s / t, h, r }'
}

# Ends a process we started: SIGTERM, then SIGKILL after a bounded wait.
end_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}

# --- receive: ws -> stdout -------------------------------------------------------------
recv_group() {
    local size=$1 n=$2 label=$3
    local bsize=65536
    (( size * 2 > bsize )) && bsize=$(( size * 2 ))
    start_server send --count "$n" --size "$size"
    local url="ws://127.0.0.1:$PORT/"
    say "receive $label x $n: $RUNS runs"
    local run
    for run in $(seq "$RUNS"); do
        measure "recv-$label" wsbridge-raw-null "$run" "$n" "$size" /dev/null null "$n" "$WSB" connect "$url" -U
        measure "recv-$label" websocat-null "$run" "$n" "$size" /dev/null null "$n" "$WEBSOCAT" -U -t -B "$bsize" "$url"
        measure "recv-$label" wsbridge-raw-pipe "$run" "$n" "$size" /dev/null pipe "$n" "$WSB" connect "$url" -U
        measure "recv-$label" websocat-pipe "$run" "$n" "$size" /dev/null pipe "$n" "$WEBSOCAT" -U -t -B "$bsize" "$url"
        measure "recv-$label" wsbridge-ndjson-null "$run" "$n" "$size" /dev/null null "$n" "$WSB" connect "$url" -U --ndjson
        if [[ "$label" == 64B ]]; then
            measure "recv-$label" wsbridge-ndjson-pipe "$run" "$n" "$size" /dev/null pipe "$(( n + 2 ))" "$WSB" connect "$url" -U --ndjson
        fi
        measure "recv-$label" bare "$run" "$n" "$size" /dev/null file "$n" "$BARE" "$url"
    done
    stop_server
}

# --- stdin -> ws, and the echo round trip -----------------------------------------------
lines_file() {
    local n=$1 path="$WORK/lines.$1"
    if [[ ! -s "$path" ]]; then
        # 64-byte lines: 63 printable bytes and a newline.
        yes 'abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0' | head -n "$n" > "$path"
    fi
    echo "$path"
}

# The count server prints one JSON line per connection; wait (bounded) for the next one.
server_lines_after() {
    local before=$1
    for _ in $(seq 100); do
        (( $(grep -c '^{' "$SERVER_OUT") > before )) && break
        sleep 0.02
    done
    grep '^{' "$SERVER_OUT" | tail -1
}

send_group() {
    local n=$NSEND file
    file="$(lines_file "$n")"
    start_server count
    local url="ws://127.0.0.1:$PORT/"
    say "stdin -> ws, 64 B lines x $n: $RUNS runs"
    local run variant before got
    for run in $(seq "$RUNS"); do
        for variant in wsbridge websocat; do
            before=$(grep -c '^{' "$SERVER_OUT")
            if [[ "$variant" == wsbridge ]]; then
                measure send-64B "$variant" "$run" "$n" 64 "$file" null "" "$WSB" connect "$url"
            else
                measure send-64B "$variant" "$run" "$n" 64 "$file" null "" "$WEBSOCAT" -t "$url"
            fi
            got="$(server_lines_after "$before")"
            # Check the server's count, and keep it with the figures.
            if [[ "$got" != *"\"messages\":$n,"* ]]; then
                say "  send $variant run $run: server counted $got, expected $n"
                sed -i '$ s/\t1\t\([^\t]*\)$/\t0\t\1/' "$RAW"
            fi
            sed -i "\$ s/\t\$/\tserver=$got/" "$RAW"
        done
    done
    stop_server
}

echo_group() {
    local n=$NECHO file
    file="$(lines_file "$n")"
    start_server echo
    local url="ws://127.0.0.1:$PORT/"
    say "echo round trip, 64 B lines x $n: $RUNS runs"
    local run
    for run in $(seq "$RUNS"); do
        measure echo-64B wsbridge "$run" "$n" 64 "$file" pipe "$n" "$WSB" connect "$url"
        measure echo-64B websocat "$run" "$n" 64 "$file" pipe "$n" "$WEBSOCAT" -t "$url"
    done
    stop_server
}

# --- wsbridge run: one upstream, a tcp sink, 1 / 8 / 64 reading clients ------------------
fanout_run() {
    local clients=$1 n=$2 run=$3
    local go="$WORK/go.$clients.$run" cfg="$WORK/fanout.toml" sinkport
    rm -f "$go"
    start_server send --count "$n" --size 64 --connections 1 --go-file "$go"
    sinkport="$("$SINKREADER" freeport)"
    cat > "$cfg" <<EOF
[daemon]
log_level = "warn"
shutdown_timeout = "2s"

[[upstream]]
name = "load"
url = "ws://127.0.0.1:$PORT/"
reconnect = { initial = "10s" }

[[sink]]
type = "tcp"
listen = "127.0.0.1:$sinkport"
format = "ndjson"
events = false
on_slow = "block"     # every client gets every record: the rate is what the slowest reads
max_clients = 128
EOF
    "$WSB" run -c "$cfg" > /dev/null 2>> "$LOG" &
    local wpid=$!
    PIDS+=("$wpid")
    local t0 t1 result rc
    t0=$(now_ns)
    result="$(timeout "$TMO" "$SINKREADER" tcp --addr "127.0.0.1:$sinkport" --clients "$clients" \
        --expect "$n" --go-file "$go" --max-secs "$(( TMO - 5 ))")"
    rc=$?
    t1=$(now_ns)
    local user sys hwm rss
    read -r user sys hwm rss < <(proc_figures "$wpid")
    end_pid "$wpid"
    stop_server
    local secs ok=1
    [[ "$rc" == 0 ]] || { ok=0; say "  fanout $clients run $run: $result"; }
    secs="$(sed -n 's/.*"secs":\([0-9.]*\).*/\1/p' <<< "$result")"
    record fanout "tcp-$clients" "$run" "$n" 64 "${secs:-0}" "$user" "$sys" "$hwm" "$ok" "$result"
}

fanout_group() {
    say "wsbridge run, tcp sink, 1/8/64 clients: $RUNS runs"
    local run
    for run in $(seq "$RUNS"); do
        fanout_run 1 "${NFAN1:-1000000}" "$run"
        fanout_run 8 "${NFAN8:-250000}" "$run"
        fanout_run 64 "${NFAN64:-40000}" "$run"
    done
}

# --- wsbridge run: 1,000 idle upstreams ----------------------------------------------------
idle_group() {
    say "wsbridge run, $NIDLE idle upstreams: $RUNS_IDLE runs"
    local run
    for run in $(seq "$RUNS_IDLE"); do
        start_server count
        local cfg="$WORK/idle.toml" i
        {
            printf '[daemon]\nlog_level = "warn"\nshutdown_timeout = "3s"\n\n'
            printf '[[sink]]\ntype = "stdout"\nformat = "ndjson"\n\n'
            for i in $(seq -w 1 "$NIDLE"); do
                printf '[[upstream]]\nname = "u%s"\nurl = "ws://127.0.0.1:%s/u%s"\n' "$i" "$PORT" "$i"
            done
        } > "$cfg"
        local fifo="$WORK/fifo.idle" readout="$WORK/idle.reader"
        rm -f "$fifo"
        mkfifo "$fifo"
        "$SINKREADER" lines --match '"type":"open"' --expect "$NIDLE" --max-secs "$TMO" < "$fifo" > "$readout" &
        local rpid=$!
        PIDS+=("$rpid")
        "$WSB" run -c "$cfg" > "$fifo" 2>> "$LOG" &
        local wpid=$!
        PIDS+=("$wpid")
        local reached=""
        for _ in $(seq $(( TMO * 20 ))); do
            reached="$(awk '/^REACHED/ {print $3}' "$readout")"
            [[ -n "$reached" ]] && break
            kill -0 "$wpid" 2>/dev/null || break
            sleep 0.05
        done
        sleep 2 # idle
        local user sys hwm rss ok=1
        read -r user sys hwm rss < <(proc_figures "$wpid")
        [[ -n "$reached" ]] || { ok=0; say "  idle run $run: not all open: $(cat "$readout")"; reached=0; }
        end_pid "$wpid"
        end_pid "$rpid"
        stop_server
        local secs
        secs=$(awk -v m="$reached" 'BEGIN { printf "%.3f", m / 1000 }')
        record idle "upstreams-$NIDLE" "$run" "$NIDLE" 0 "$secs" "$user" "$sys" "$rss" "$ok" "hwm_kb=$hwm"
    done
}

# --- run -----------------------------------------------------------------------------------
# The load average at the start of every group goes into the report: others may be compiling.
LOADS="$WORK/loads.txt"
: > "$LOADS"
load_mark() { echo "$1|$(uptime | sed 's/.*load average: //')" >> "$LOADS"; }
LOAD_BEFORE="$(uptime)"
say "load before: $LOAD_BEFORE"
STARTED=$(now_ns)
if has recv; then
    load_mark "receive 64 B" && recv_group 64 "$N64" 64B
    load_mark "receive 4 KiB" && recv_group 4096 "$N4K" 4KiB
    load_mark "receive 1 MiB" && recv_group 1048576 "$N1M" 1MiB
fi
has send && load_mark "stdin -> ws" && send_group
has echo && load_mark "echo" && echo_group
has fanout && load_mark "fan-out" && fanout_group
has idle && load_mark "1,000 upstreams" && idle_group
load_mark "end"
ELAPSED=$(( ($(now_ns) - STARTED) / 1000000000 ))
LOAD_AFTER="$(uptime)"
say "load after: $LOAD_AFTER ($ELAPSED s)"

RAW_OUT="$ROOT/bench/raw.tsv"
[[ "$OUT" == "$ROOT/bench/RESULTS.md" ]] || RAW_OUT="${OUT%.md}.tsv"
cp "$RAW" "$RAW_OUT"
python3 "$ROOT/bench/report.py" \
    --raw "$RAW" --out "$OUT" --runs "$RUNS" \
    --load-before "$LOAD_BEFORE" --load-after "$LOAD_AFTER" --elapsed "$ELAPSED" \
    --websocat "$("$WEBSOCAT" --version 2>/dev/null)" \
    --rev "$REV_LABEL" \
    --rustc "$(rustc --version)" \
    --sizes "N64=$N64 N4K=$N4K N1M=$N1M NSEND=$NSEND NECHO=$NECHO NIDLE=$NIDLE" \
    --loads "$LOADS" \
    --profile "$ROOT/bench/PROFILE.md"
say "wrote $OUT (raw figures: $RAW_OUT, logs: $WORK)"
