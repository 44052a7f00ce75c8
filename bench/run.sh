#!/usr/bin/env bash
# wsbridge against the reference tools, over loopback only: the targets of issues 16 and 25,
# measured as ratios within one run (interleaved runs, medians), every client with its default
# flags. Writes bench/RESULTS.md.
#
#   bench/run.sh                       # the full run, RUNS=5: ~8 min on 2 cores after the builds
#   RUNS=3 bench/run.sh                # fewer runs per figure
#   ONLY=throughput,cost bench/run.sh  # a subset of: throughput, syscalls, cost, latency,
#                                      # memory, idle
#   WSBRIDGE_REV=HEAD bench/run.sh     # measure a commit, not a half-edited working tree
#   SCALE=0.5 bench/run.sh             # every message count times 0.5 (PACED_SECS=3 for paced runs)
#   LABEL=Before bench/run.sh          # the heading of this run's section in RESULTS.md [After];
#                                      # sections of other labels already there are kept;
#                                      # NOTE="..." adds a sentence on the run's conditions
#
# The run recorded as "after" in bench/RESULTS.md, on a quiet machine, from the repo root:
#
#   RUNS=5 bench/run.sh
#
# What it needs:
# - The reference tools (`blaster`, `sink`, `latency`) in ../shared/reference-bench relative
#   to the repo root (REFERENCE_BENCH=DIR overrides). They are built here with
#   `CARGO_TARGET_DIR=/tmp/reference-bench cargo build --release --manifest-path ...`.
# - websocat 1.14.1: installed on first use with `cargo install --locked` into $CACHE/websocat
#   (CACHE defaults to .cache/, gitignored). That compile takes minutes; it runs in the
#   background while the rest builds.
# - cargo, python3 (bench/timed.py measures every process, bench/report.py writes the tables,
#   bench/tcp_stdout.py gives the bare client a TCP connection as its stdout).
# - strace, for the system-call counts (the group is skipped without it).
#
# Every figure comes from a fresh `blaster` (one connection, then it exits). Every process is
# bounded in time (timeout(1), bench/timed.py, the tools' own limits) and is ended by its pid.
# CPU is user+sys from wait4(2) (the rusage /usr/bin/time prints, to the microsecond); memory is
# RssAnon from /proc/PID/status sampled every 10 ms (peak), never VmHWM (that counts shared
# library text). The load average at the start of each group goes into the report.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="${CACHE:-$ROOT/.cache}"
REFERENCE_BENCH="${REFERENCE_BENCH:-$ROOT/../shared/reference-bench}"
REF_TARGET="${REF_TARGET:-/tmp/reference-bench}"
RUNS="${RUNS:-5}"
ONLY="${ONLY:-throughput,syscalls,cost,latency,memory,idle}"
OUT="${OUT:-$ROOT/bench/RESULTS.md}"
SCALE="${SCALE:-1}"
scaled() { awk -v n="$1" -v s="$SCALE" 'BEGIN { v = int(n * s); print (v < 1 ? 1 : v) }'; }
N64="$(scaled "${N64:-2000000}")"      # throughput: 64 B messages per run (and --ndjson)
N4K="$(scaled "${N4K:-200000}")"       # throughput: 4 KiB messages per run
N1M="$(scaled "${N1M:-1000}")"         # throughput: 1 MiB messages per run
NSEND="$(scaled "${NSEND:-1000000}")"  # stdin -> ws: 64 B lines per run
NECHO="$(scaled "${NECHO:-500000}")"   # echo round trip: 64 B lines per run
NSYS="$(scaled "${NSYS:-100000}")"     # syscalls: 4 KiB messages per counted run
PACED_SECS="${PACED_SECS:-3}"          # cost and latency: seconds of paced sending per run
NMEM="$(scaled "${NMEM:-300}")"        # memory, run + tcp sink: 1 MiB messages per run
NIDLE="${NIDLE:-10000}"                # idle upstreams
RUNS_IDLE="${RUNS_IDLE:-1}"
TMO="${TMO:-60}"                       # per-process time limit, seconds
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
    rm -f "$WORK"/lines.* 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s bench: %s\n' "$(date +%T)" "$*" >&2; }
die() { echo "bench/run.sh: $*" >&2; exit 1; }
has() { [[ ",$ONLY," == *",$1,"* ]]; }
now_ms() { date +%s%3N; }

# --- tools -----------------------------------------------------------------------------------
[[ -f "$REFERENCE_BENCH/Cargo.toml" ]] || die "the reference tools are missing: expected \
$REFERENCE_BENCH/Cargo.toml (../shared/reference-bench from the repo root). Put the \
reference-bench folder there, or point REFERENCE_BENCH=/path/to/reference-bench at it."
command -v python3 >/dev/null || die "needs python3 (bench/timed.py, bench/report.py)"

WEBSOCAT="$CACHE/websocat/bin/websocat"
INSTALL_PID=""
if [[ ! -x "$WEBSOCAT" ]]; then
    say "installing websocat $WEBSOCAT_VERSION into $CACHE/websocat (minutes; log: $WORK/websocat-install.log)"
    cargo install websocat --version "$WEBSOCAT_VERSION" --locked --root "$CACHE/websocat" \
        > "$WORK/websocat-install.log" 2>&1 &
    INSTALL_PID=$!
    PIDS+=("$INSTALL_PID")
fi

say "building the reference tools from $REFERENCE_BENCH into $REF_TARGET"
if ! CARGO_TARGET_DIR="$REF_TARGET" cargo build --release --manifest-path "$REFERENCE_BENCH/Cargo.toml" \
        2> "$WORK/reference-build.log"; then
    tail -20 "$WORK/reference-build.log" >&2
    die "the reference tools did not build (log: $WORK/reference-build.log)"
fi
BLASTER="$REF_TARGET/release/blaster"
SINK="$REF_TARGET/release/sink"
LATENCY="$REF_TARGET/release/latency"

# WSBRIDGE_REV=<commit> measures that commit: it is extracted into $CACHE/bench/src (with this
# tree's examples/loadserver.rs) and built in its own target dir, so a half-edited src/ neither
# breaks the run nor gets measured. Always the same folder: a build script's absolute paths and
# cargo's fingerprints stay valid, and the same commit twice is not rebuilt. (tar -m: files
# dated by the commit would look older than the last build of another commit.)
SRC="$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
REV_LABEL="$(git rev-parse --short HEAD 2>/dev/null)"
git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || REV_LABEL="$REV_LABEL + uncommitted src/ changes (working tree)"
if [[ -n "${WSBRIDGE_REV:-}" ]]; then
    rev="$(git rev-parse --short "$WSBRIDGE_REV")" || die "WSBRIDGE_REV=$WSBRIDGE_REV is not a commit"
    SRC="$CACHE/bench/src"
    TARGET="$CACHE/bench/target"
    if [[ "$(cat "$SRC/.bench-rev" 2>/dev/null)" != "$rev" ]]; then
        rm -rf "$SRC"
        mkdir -p "$SRC" && git archive "$rev" | tar -x -m -C "$SRC" && echo "$rev" > "$SRC/.bench-rev" \
            || die "cannot extract $rev into $SRC"
    fi
    mkdir -p "$SRC/examples"
    # Copied only when changed: a fresh mtime would rebuild the binaries.
    cmp -s "$ROOT/examples/loadserver.rs" "$SRC/examples/loadserver.rs" \
        || cp "$ROOT/examples/loadserver.rs" "$SRC/examples/"
    REV_LABEL="$rev (committed tree)"
fi
say "building wsbridge (release) at $REV_LABEL"
# Two builds: the example's dev-dependencies would otherwise add their features to the crates
# wsbridge shares with them (a different binary from the one users build).
if ! (cd "$SRC" && export CARGO_TARGET_DIR="$TARGET" && cargo build --release --bin wsbridge \
        && { ! has idle || cargo build --release --example loadserver; }) 2> "$WORK/build.log"; then
    tail -30 "$WORK/build.log" >&2
    die "the build failed (log: $WORK/build.log); WSBRIDGE_REV=HEAD measures the last commit instead"
fi
WSB="$TARGET/release/wsbridge"
LOADSERVER="$TARGET/release/examples/loadserver"

if [[ -n "$INSTALL_PID" ]]; then
    say "waiting for the websocat install"
    wait "$INSTALL_PID" || { tail -20 "$WORK/websocat-install.log" >&2; die "websocat did not install"; }
fi
"$WEBSOCAT" --version | grep -q "$WEBSOCAT_VERSION" || die "$WEBSOCAT is not websocat $WEBSOCAT_VERSION"


TIMED=(python3 "$ROOT/bench/timed.py")
ulimit -n "$(ulimit -Hn)" 2>/dev/null

# --- helpers ---------------------------------------------------------------------------------
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_blaster PORT ARGS... : a one-shot reference server on PORT ("" = pick one); sets
# BL_PID, BL_PORT, BL_OUT (its stdout). Retries on another port if it cannot bind.
BLN=0
start_blaster() {
    local want=$1 try
    shift
    for try in 1 2 3; do
        BL_PORT="${want:-$(free_port)}"
        BLN=$(( BLN + 1 ))
        BL_OUT="$WORK/blaster.$BLN.out"
        local err="$WORK/blaster.$BLN.err"
        timeout "$TMO" "$BLASTER" --port "$BL_PORT" "$@" > "$BL_OUT" 2> "$err" &
        BL_PID=$!
        PIDS+=("$BL_PID")
        for _ in $(seq 250); do
            grep -q 'listening' "$err" 2>/dev/null && return 0
            kill -0 "$BL_PID" 2>/dev/null || break
            sleep 0.02
        done
        say "  blaster did not start on port $BL_PORT (try $try): $(head -c 300 "$err")"
        kill "$BL_PID" 2>/dev/null
        wait "$BL_PID" 2>/dev/null
        want=""
    done
    die "blaster did not start"
}

# Waits (bounded) for the one-shot server to finish after its client left.
end_blaster() {
    end_pid "$BL_PID" 100
}

# end_pid PID [TICKS]: waits TICKS x 50 ms for PID to exit by itself, then SIGTERM, SIGKILL.
end_pid() {
    local pid=$1 ticks=${2:-0}
    for _ in $(seq "$ticks"); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}

# record GROUP VARIANT RUN N SIZE OK TIMEFILE EXTRA : one TSV line
#   group variant run n size ok rc wall_s user_s sys_s maxrss_kb anon_kb extra
record() {
    local group=$1 variant=$2 run=$3 n=$4 size=$5 ok=$6 tf=$7 extra=$8
    local rc=255 wall=0 user=0 sys=0 maxrss=0 anon=0
    [[ -s "$tf" ]] && read -r rc wall user sys maxrss anon < "$tf"
    [[ "$rc" == 0 ]] || ok=0
    [[ "$ok" == 1 ]] || say "  $group $variant run $run: FAILED (rc=$rc $extra)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$group" "$variant" "$run" \
        "$n" "$size" "$ok" "$rc" "$wall" "$user" "$sys" "$maxrss" "$anon" "$extra" >> "$RAW"
}

# latency's one line -> "p50=.. p99=.. p999=.. count=.."
lat_fields() {
    sed -n 's/.*count=\([0-9]*\) p50_us=\([0-9.a-z]*\) .*p99_us=\([0-9.a-z]*\) p999_us=\([0-9.a-z]*\) max_us=\([0-9.a-z]*\).*/count=\1 p50=\2 p99=\3 p999=\4 max=\5/p' "$1"
}

# client GROUP VARIANT RUN N SIZE STDIN OUTPUT CMD... : runs CMD (a client of the blaster just
# started) under bench/timed.py. OUTPUT: "null" (stdout to /dev/null), "pipe" (into wc -l,
# which must count N lines) or "latency" (into the latency reader, which must see N stamps).
# RSS=--rss samples its anonymous memory.
client() {
    local group=$1 variant=$2 run=$3 n=$4 size=$5 input=$6 output=$7
    shift 7
    local tf="$WORK/time" ok=1 extra=""
    rm -f "$tf"
    case "$output" in
        null)
            "${TIMED[@]}" "$tf" "$TMO" ${RSS:-} -- "$@" < "$input" > /dev/null 2>> "$LOG"
            ;;
        pipe)
            "${TIMED[@]}" "$tf" "$TMO" ${RSS:-} -- "$@" < "$input" 2>> "$LOG" | wc -l > "$WORK/lines"
            local lines
            lines="$(cat "$WORK/lines")"
            extra="lines=$lines"
            [[ "$lines" == "$n" ]] || ok=0
            ;;
        latency)
            "${TIMED[@]}" "$tf" "$TMO" ${RSS:-} -- "$@" < "$input" 2>> "$LOG" | "$LATENCY" > "$WORK/lat" 2>> "$LOG"
            extra="$(lat_fields "$WORK/lat")"
            [[ "$extra" == "count=$n "* ]] || ok=0
            ;;
    esac
    end_blaster
    record "$group" "$variant" "$run" "$n" "$size" "$ok" "$tf" "$extra"
}

# daemon GROUP VARIANT RUN N SIZE BLASTER-ARGS... : `wsbridge run` with one upstream (the
# blaster) and one tcp sink read by `latency --tcp` (which prints the latency of stamped lines
# and counts all). The reader connects before the blaster starts, so it sees every record.
# The daemon's CPU and memory are its whole life: start, the feed, SIGTERM and shutdown.
# RSS=--rss samples its anonymous memory.
daemon() {
    local group=$1 variant=$2 run=$3 n=$4 size=$5
    shift 5
    local upport sinkport cfg="$WORK/run.toml" tf="$WORK/time" ok=1 extra=""
    upport="$(free_port)"
    sinkport="$(free_port)"
    cat > "$cfg" <<EOF
[daemon]
log_level = "warn"
shutdown_timeout = "2s"

[[upstream]]
name = "feed"
url = "ws://127.0.0.1:$upport/"
reconnect = { initial = "100ms", max = "200ms" }   # the blaster starts after the daemon

[[sink]]
type = "tcp"
listen = "127.0.0.1:$sinkport"
format = "ndjson"
events = false
on_slow = "block"   # the reader keeps up; "block" makes a lost record impossible, not hidden
EOF
    rm -f "$tf"
    "${TIMED[@]}" "$tf" "$TMO" ${RSS:-} -- "$WSB" run -c "$cfg" > /dev/null 2>> "$LOG" &
    local dpid=$!
    PIDS+=("$dpid")
    local count_args=(--count "$n" --idle-timeout 20)
    [[ "$group" == memory* ]] && count_args=(--idle-timeout 2)   # unstamped: count lines until idle
    timeout "$TMO" "$LATENCY" --tcp "127.0.0.1:$sinkport" "${count_args[@]}" \
        > "$WORK/lat" 2> "$WORK/lat.err" &
    local rpid=$!
    PIDS+=("$rpid")
    for _ in $(seq 200); do
        grep -q connected "$WORK/lat.err" 2>/dev/null && break
        kill -0 "$rpid" 2>/dev/null || break
        sleep 0.05
    done
    sleep 0.2   # the sink has accepted the reader before the first record exists
    start_blaster "$upport" "$@"
    wait "$rpid"
    end_pid "$dpid"
    end_blaster
    cat "$WORK/lat.err" >> "$LOG"
    if [[ "$group" == memory* ]]; then
        local lines
        lines="$(sed -n 's/.* lines=\([0-9]*\).*/\1/p' "$WORK/lat")"
        extra="lines=$lines"
        [[ "$lines" == "$n" ]] || ok=0
    else
        extra="$(lat_fields "$WORK/lat")"
        [[ "$extra" == "count=$n "* ]] || ok=0
    fi
    record "$group" "$variant" "$run" "$n" "$size" "$ok" "$tf" "$extra"
}

# bare_tcp GROUP RUN N SIZE : the bare client delivering as the daemon's tcp sink does, to the
# same reader: `sink --write --flush` (a write whenever nothing more is ready) with its stdout a
# TCP connection read by `latency --tcp` (bench/tcp_stdout.py accepts the reader, then becomes
# bench/timed.py, which measures the client alone). The blaster must already be started.
bare_tcp() {
    local group=$1 run=$2 n=$3 size=$4 port tf="$WORK/time" ok=1 extra=""
    port="$(free_port)"
    rm -f "$tf"
    python3 "$ROOT/bench/tcp_stdout.py" "$port" -- "${TIMED[@]}" "$tf" "$TMO" -- \
        "$SINK" --write --flush "ws://127.0.0.1:$BL_PORT/" 2>> "$LOG" &
    local hpid=$!
    PIDS+=("$hpid")
    timeout "$TMO" "$LATENCY" --tcp "127.0.0.1:$port" --count "$n" --idle-timeout 20 \
        > "$WORK/lat" 2>> "$LOG"
    wait "$hpid"   # the client ends with the feed; timed.py bounds it
    end_blaster
    extra="$(lat_fields "$WORK/lat")"
    [[ "$extra" == "count=$n "* ]] || ok=0
    record "$group" bare-tcp "$run" "$n" "$size" "$ok" "$tf" "$extra"
}

lines_file() {
    local n=$1 path="$WORK/lines.$1"
    # 64-byte lines: 63 printable bytes and a newline.
    [[ -s "$path" ]] || yes 'abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0' | head -n "$n" > "$path"
    echo "$path"
}

# --- throughput: wsbridge connect, websocat, the bare client against `blaster --raw` -----------
recv_path() {
    local run=$1 size=$2 n=$3 label=$4 output=$5 ndjson=${6:-}
    local bsize=65536 group="recv-$label-$output"
    (( size * 2 > bsize )) && bsize=$(( size * 2 ))
    local wsb=("$WSB" connect -U)
    if [[ -n "$ndjson" ]]; then
        group="ndjson-$label-$output"
        wsb+=(--ndjson)
    fi
    start_blaster "" --raw --count "$n" --size "$size"
    client "$group" wsbridge "$run" "$n" "$size" /dev/null "$output" "${wsb[@]}" "ws://127.0.0.1:$BL_PORT/"
    start_blaster "" --raw --count "$n" --size "$size"
    client "$group" websocat "$run" "$n" "$size" /dev/null "$output" "$WEBSOCAT" -U -t -B "$bsize" "ws://127.0.0.1:$BL_PORT/"
    start_blaster "" --raw --count "$n" --size "$size"
    client "$group" bare "$run" "$n" "$size" /dev/null "$output" "$SINK" --write "ws://127.0.0.1:$BL_PORT/"
}

# stdin -> ws: the server counts what arrives and must count every line.
send_path() {
    local run=$1 n=$NSEND file variant
    file="$(lines_file "$n")"
    for variant in wsbridge websocat bare; do
        start_blaster "" --recv-count
        local url="ws://127.0.0.1:$BL_PORT/" out="$BL_OUT"
        case $variant in
            wsbridge) client send-64B "$variant" "$run" "$n" 64 "$file" null "$WSB" connect "$url" ;;
            websocat) client send-64B "$variant" "$run" "$n" 64 "$file" null "$WEBSOCAT" -t "$url" ;;
            bare) client send-64B "$variant" "$run" "$n" 64 "$file" null "$SINK" --send "$url" ;;
        esac
        # The server's count decides whether the run counts; it goes with the figures.
        local got
        got="$(sed -n 's/.* messages=\([0-9]*\) .*/\1/p' "$out")"
        if [[ "$got" != "$n" ]]; then
            say "  send $variant run $run: the server counted ${got:-nothing}, expected $n"
            sed -i '$ s/^\(\([^\t]*\t\)\{5\}\)1\t/\10\t/' "$RAW"
        fi
        sed -i "\$ s/\$/server=$got/" "$RAW"
    done
}

echo_path() {
    local run=$1 n=$NECHO file
    file="$(lines_file "$n")"
    start_blaster "" --echo
    client echo-64B wsbridge "$run" "$n" 64 "$file" pipe "$WSB" connect "ws://127.0.0.1:$BL_PORT/"
    start_blaster "" --echo
    client echo-64B websocat "$run" "$n" 64 "$file" pipe "$WEBSOCAT" -t "ws://127.0.0.1:$BL_PORT/"
    start_blaster "" --echo
    client echo-64B bare "$run" "$n" 64 "$file" pipe "$SINK" --send --write "ws://127.0.0.1:$BL_PORT/"
}

throughput_group() {
    say "throughput (64 B x $N64, 4 KiB x $N4K, 1 MiB x $N1M, send x $NSEND, echo x $NECHO): $RUNS runs"
    local run output
    for run in $(seq "$RUNS"); do
        for output in null pipe; do
            RSS=--rss recv_path "$run" 64 "$N64" 64B "$output"
            RSS=--rss recv_path "$run" 4096 "$N4K" 4KiB "$output"
            RSS=--rss recv_path "$run" 1048576 "$N1M" 1MiB "$output"
        done
        RSS=--rss recv_path "$run" 64 "$N64" 64B null ndjson
        RSS=--rss send_path "$run"
        RSS=--rss echo_path "$run"
    done
}

# --- system calls on the 4 KiB path: strace -c -f, wsbridge beside the bare client --------------
# Counts do not depend on the machine's load: reads (recvfrom/read), writes (write/writev/
# sendto) and futex (wake-ups between threads), per 1,000 messages. strace slows the client,
# so these runs give counts only; their time is not a figure.
syscalls_group() {
    if ! command -v strace >/dev/null; then
        say "syscalls: skipped, strace is not installed"
        return
    fi
    say "syscalls (4 KiB x $NSYS, strace -c -f): $RUNS runs"
    local run output variant
    for run in $(seq "$RUNS"); do
        for output in null pipe; do
            for variant in wsbridge bare; do
                local cmd=("$WSB" connect -U)
                [[ $variant == bare ]] && cmd=("$SINK" --write)
                start_blaster "" --raw --count "$NSYS" --size 4096
                local counts="$WORK/strace.$variant.$output"
                client "syscalls-4KiB-$output" "$variant" "$run" "$NSYS" 4096 /dev/null "$output" \
                    strace -c -f -o "$counts" "${cmd[@]}" "ws://127.0.0.1:$BL_PORT/"
                # `strace -c` rows: % time, seconds, usecs/call, calls, [errors,] syscall.
                local extra
                extra="$(awk '$NF == "recvfrom" || $NF == "read" { r += $4 }
                    $NF == "write" || $NF == "writev" || $NF == "sendto" { w += $4 }
                    $NF == "futex" { f += $4 }
                    END { printf "reads=%d writes=%d futex=%d", r, w, f }' "$counts")"
                sed -i "\$ s/\$/ $extra/" "$RAW"
            done
        done
    done
}

# --- cost at a paced rate: CPU per message, 200 B -------------------------------------------
cost_group() {
    local rate run n
    # What a process's start, one message and its exit cost: included in every paced figure.
    say "cost of one process life (1 message): $RUNS runs"
    for run in $(seq "$RUNS"); do
        local one=(--raw --rate 1000 --size 200 --count 1)
        start_blaster "" "${one[@]}"
        client cost-fixed bare "$run" 1 200 /dev/null null "$SINK" --write "ws://127.0.0.1:$BL_PORT/"
        start_blaster "" "${one[@]}"
        client cost-fixed connect "$run" 1 200 /dev/null null "$WSB" connect -U "ws://127.0.0.1:$BL_PORT/"
        daemon cost-fixed run "$run" 1 200 "${one[@]}"
        start_blaster "" "${one[@]}"
        client cost-fixed websocat "$run" 1 200 /dev/null null "$WEBSOCAT" -U -t "ws://127.0.0.1:$BL_PORT/"
    done
    for rate in 10000 100000; do
        n=$(( rate * PACED_SECS ))
        say "cost at $rate msg/s (200 B x $n): $RUNS runs"
        for run in $(seq "$RUNS"); do
            local paced=(--raw --rate "$rate" --size 200 --count "$n")
            start_blaster "" "${paced[@]}"
            client "cost-$rate" bare "$run" "$n" 200 /dev/null null "$SINK" --write "ws://127.0.0.1:$BL_PORT/"
            start_blaster "" "${paced[@]}"
            client "cost-$rate" connect "$run" "$n" 200 /dev/null null "$WSB" connect -U "ws://127.0.0.1:$BL_PORT/"
            daemon "cost-$rate" run "$run" "$n" 200 "${paced[@]}"
            start_blaster "" "${paced[@]}"
            bare_tcp "cost-$rate" "$run" "$n" 200
            start_blaster "" "${paced[@]}"
            client "cost-$rate" websocat "$run" "$n" 200 /dev/null null "$WEBSOCAT" -U -t "ws://127.0.0.1:$BL_PORT/"
        done
    done
}

# --- latency at 10,000 msg/s: from the blaster's write to the reader's line -----------------
latency_group() {
    local rate=10000 run n
    n=$(( rate * PACED_SECS ))
    say "latency at $rate msg/s (200 B x $n): $RUNS runs"
    for run in $(seq "$RUNS"); do
        local paced=(--raw --rate "$rate" --size 200 --count "$n")
        start_blaster "" "${paced[@]}"
        client latency bare "$run" "$n" 200 /dev/null latency "$SINK" --write --flush "ws://127.0.0.1:$BL_PORT/"
        start_blaster "" "${paced[@]}"
        client latency connect "$run" "$n" 200 /dev/null latency "$WSB" connect -U "ws://127.0.0.1:$BL_PORT/"
        daemon latency run "$run" "$n" 200 "${paced[@]}"
        start_blaster "" "${paced[@]}"
        client latency websocat "$run" "$n" 200 /dev/null latency "$WEBSOCAT" -U -t "ws://127.0.0.1:$BL_PORT/"
    done
}

# --- memory: `run` with a tcp sink and 1 MiB messages (connect's comes from the throughput runs)
memory_group() {
    say "memory: run + tcp sink, 1 MiB x $NMEM: $RUNS runs"
    local run
    for run in $(seq "$RUNS"); do
        RSS=--rss daemon memory-1MiB run "$run" "$NMEM" 1048576 --raw --count "$NMEM" --size 1048576
    done
}

# --- idle: NIDLE upstreams to one local server ----------------------------------------------
idle_group() {
    local need=$(( NIDLE + 200 ))
    if (( $(ulimit -n) < need )); then
        say "idle: skipped, the fd limit is $(ulimit -n) (hard $(ulimit -Hn)); $NIDLE upstreams need $need"
        return
    fi
    say "idle: run with $NIDLE upstreams: $RUNS_IDLE runs"
    local run
    for run in $(seq "$RUNS_IDLE"); do
        local sout="$WORK/loadserver.$run.out" cfg="$WORK/idle.toml" tf="$WORK/time" port="" i
        "$LOADSERVER" --report-open "$NIDLE" --max-secs $(( TMO * 2 )) > "$sout" 2>> "$LOG" &
        local spid=$!
        PIDS+=("$spid")
        for _ in $(seq 200); do
            port="$(awk '/^LISTENING/ { print $2; exit }' "$sout")"
            [[ -n "$port" ]] && break
            sleep 0.02
        done
        [[ -n "$port" ]] || die "the idle server did not start"
        {
            printf '[daemon]\nlog_level = "warn"\nshutdown_timeout = "5s"\n\n'
            printf '[[sink]]\ntype = "stdout"\nformat = "ndjson"\n\n'
            for i in $(seq -w 1 "$NIDLE"); do
                printf '[[upstream]]\nname = "u%s"\nurl = "ws://127.0.0.1:%s/u%s"\n' "$i" "$port" "$i"
            done
        } > "$cfg"
        rm -f "$tf"
        local t0
        t0="$(now_ms)"
        "${TIMED[@]}" "$tf" $(( TMO * 2 )) --rss -- "$WSB" run -c "$cfg" > /dev/null 2>> "$LOG" &
        local dpid=$!
        PIDS+=("$dpid")
        local opened=""
        for _ in $(seq $(( TMO * 20 ))); do
            opened="$(awk '/^OPEN/ { print $3; exit }' "$sout")"
            [[ -n "$opened" ]] && break
            kill -0 "$dpid" 2>/dev/null || break
            sleep 0.05
        done
        local ok=1 extra
        if [[ -n "$opened" ]]; then
            extra="open_s=$(awk -v a="$t0" -v b="$opened" 'BEGIN { printf "%.3f", (b - a) / 1000 }')"
            sleep 2   # idle: the memory once everything is open and quiet
        else
            ok=0
            extra="open_s=none"
        fi
        end_pid "$dpid"
        end_pid "$spid"
        record idle "upstreams-$NIDLE" "$run" "$NIDLE" 0 "$ok" "$tf" "$extra"
    done
}

# --- run -------------------------------------------------------------------------------------
LOADS="$WORK/loads.txt"
: > "$LOADS"
load_mark() { echo "$1|$(uptime | sed 's/.*load average: //')" >> "$LOADS"; }
LOAD_BEFORE="$(uptime)"
say "load before: $LOAD_BEFORE"
STARTED=$(now_ms)
has throughput && load_mark throughput && throughput_group
has syscalls && load_mark syscalls && syscalls_group
has cost && load_mark cost && cost_group
has latency && load_mark latency && latency_group
has memory && load_mark memory && memory_group
has idle && load_mark idle && idle_group
load_mark end
ELAPSED=$(( ($(now_ms) - STARTED) / 1000 ))
LOAD_AFTER="$(uptime)"
say "load after: $LOAD_AFTER ($ELAPSED s)"

LABEL="${LABEL:-After}"
RAW_OUT="$ROOT/bench/raw-$(tr 'A-Z ' 'a-z-' <<< "$LABEL").tsv"
[[ "$OUT" == "$ROOT/bench/RESULTS.md" ]] || RAW_OUT="${OUT%.md}.tsv"
cp "$RAW" "$RAW_OUT"
python3 "$ROOT/bench/report.py" \
    --raw "$RAW" --out "$OUT" --runs "$RUNS" \
    --load-before "$LOAD_BEFORE" --load-after "$LOAD_AFTER" --elapsed "$ELAPSED" --loads "$LOADS" \
    --websocat "$("$WEBSOCAT" --version 2>/dev/null)" \
    --rev "$REV_LABEL" --rustc "$(rustc --version)" \
    --sizes "N64=$N64 N4K=$N4K N1M=$N1M NSEND=$NSEND NECHO=$NECHO NSYS=$NSYS PACED_SECS=$PACED_SECS NMEM=$NMEM NIDLE=$NIDLE" \
    --label "$LABEL" --note "${NOTE:-}"
say "wrote $OUT (raw figures: $RAW_OUT, logs: $WORK)"
