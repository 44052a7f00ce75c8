#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing server against wsbridge's WebSocket client.
#
#   tests/autobahn/run.sh            (from any directory)
#
# The suite (autobahntestsuite 25.10.1) is Python 2 code: it runs on the
# CPython 2.7.18 that pyenv keeps, in a virtualenv installed once into a cache
# folder. Without that Python the script prints a `SKIPPED:` line and exits 0.
#
# Environment:
#   WSBRIDGE_CACHE          cache folder for the suite's environment
#                           (default: <repo>/.cache/autobahn)
#   AUTOBAHN_CLIENT         client command, run as `$AUTOBAHN_CLIENT URL AGENT`
#                           (default: cargo build --profile conformance --example
#                           autobahn_client, then that binary)
#   AUTOBAHN_AGENT          agent name in the reports (default: wsbridge)
#   AUTOBAHN_REPORTS        report folder (default: tests/autobahn/reports)
#   AUTOBAHN_SUMMARY        markdown summary (default: <reports>/SUMMARY.md, untracked;
#                           AUTOBAHN_SUMMARY=tests/autobahn/SUMMARY.md refreshes the
#                           committed one, which the README quotes)
#   AUTOBAHN_PYTHON2        a Python 2.7 interpreter (default: pyenv's 2.7.18)
#   AUTOBAHN_EXPECT_CASES   case count the run must report (default 301; 0: any)
#   AUTOBAHN_CLIENT_TIMEOUT seconds the client may take (default 600)
#
# The last line is `autobahn: N passed, N failed`; exit 0 only when every
# case's behavior and behaviorClose are OK, NON-STRICT or INFORMATIONAL.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

SUITE_VERSION=25.10.1
REQS="$HERE/requirements-py27.txt"
CACHE="${WSBRIDGE_CACHE:-$REPO/.cache/autobahn}"
REPORTS="${AUTOBAHN_REPORTS:-$HERE/reports}"
# A test run must leave a clean checkout clean: the committed summary is only rewritten on request.
SUMMARY="${AUTOBAHN_SUMMARY:-$REPORTS/SUMMARY.md}"
AGENT="${AUTOBAHN_AGENT:-wsbridge}"
EXPECT_CASES="${AUTOBAHN_EXPECT_CASES:-301}"
CLIENT_TIMEOUT="${AUTOBAHN_CLIENT_TIMEOUT:-600}"
START_TIMEOUT=60

log() { printf 'autobahn: %s\n' "$*" >&2; }
die() { printf 'autobahn: ERROR: %s\n' "$*" >&2; exit 1; }

# --- interpreters -----------------------------------------------------------
if [[ -n "${AUTOBAHN_PYTHON2:-}" ]]; then
    PY2="$AUTOBAHN_PYTHON2"
else
    if command -v pyenv >/dev/null 2>&1; then
        PYENV_DIR="$(pyenv root)"
    else
        PYENV_DIR="${PYENV_ROOT:-$HOME/.pyenv}"
    fi
    PY2="$PYENV_DIR/versions/2.7.18/bin/python"
fi
if [[ ! -x "$PY2" ]] || ! "$PY2" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null; then
    echo "SKIPPED: Autobahn|Testsuite needs CPython 2.7 and there is none at $PY2 (pyenv's 2.7.18; set AUTOBAHN_PYTHON2 to use another)"
    exit 0
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "SKIPPED: Autobahn|Testsuite run needs python3 (for its installer and the report check) and there is none on PATH"
    exit 0
fi
PY3="$(command -v python3)"

# --- one-time setup of the suite's environment -------------------------------
VENV="$CACHE/py27"
TOOLS="$CACHE/tools"
MARKER="$CACHE/.installed"
STAMP="autobahntestsuite==$SUITE_VERSION $(sha256sum "$REQS" | cut -d' ' -f1) $PY2"

ensure_c_compiler() {
    # wsaccel (autobahn[accelerate]) has no py2.7 wheel: it compiles a C extension.
    if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            log "no C compiler: installing gcc with apt-get"
            DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc libc6-dev >&2
        else
            die "a C compiler (cc/gcc) is needed to build wsaccel for Python 2.7"
        fi
    fi
    local inc
    inc="$("$PY2" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    [[ -f "$inc/Python.h" ]] || die "Python 2.7 headers missing ($inc/Python.h); needed to build wsaccel"
}

setup_suite() {
    log "installing autobahntestsuite $SUITE_VERSION into $CACHE (once)"
    rm -rf "$VENV" "$TOOLS" "$MARKER"
    ensure_c_compiler
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
    export PIP_CACHE_DIR="$CACHE/pip-cache"
    export VIRTUALENV_OVERRIDE_APP_DATA="$CACHE/virtualenv-data"
    # virtualenv 20.21.x is the last release that creates Python 2 environments.
    "$PY3" -m venv "$TOOLS" >&2
    "$TOOLS/bin/python" -m pip install -q 'virtualenv==20.21.1' >&2
    "$TOOLS/bin/virtualenv" -q --no-periodic-update -p "$PY2" "$VENV" >&2
    local pip=("$VENV/bin/python" -m pip -q --no-python-version-warning)
    "${pip[@]}" install 'incremental==16.10.1' >&2
    "${pip[@]}" install -r "$REQS" >&2
    "${pip[@]}" install --no-deps "autobahntestsuite==$SUITE_VERSION" >&2
    "$VENV/bin/wstest" -a >&2 || die "wstest does not run after installation"
    printf '%s\n' "$STAMP" > "$MARKER"
    log "setup done"
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi
if [[ ! -x "$VENV/bin/wstest" || ! -f "$MARKER" || "$(cat "$MARKER")" != "$STAMP" ]]; then
    setup_started=$SECONDS
    setup_suite
    log "setup took $((SECONDS - setup_started)) s"
fi
exec 9>&-

# --- the client -------------------------------------------------------------
if [[ -n "${AUTOBAHN_CLIENT:-}" ]]; then
    read -r -a CLIENT <<< "$AUTOBAHN_CLIENT"
else
    # The conformance profile is release without LTO: the same code, a faster build.
    log "building the client: cargo build --profile conformance --example autobahn_client"
    (cd "$REPO" && cargo build --locked --profile conformance --example autobahn_client >&2) \
        || die "cargo build --profile conformance --example autobahn_client failed"
    CLIENT=("${CARGO_TARGET_DIR:-$REPO/target}/conformance/examples/autobahn_client")
    [[ -x "${CLIENT[0]}" ]] || die "client binary not found at ${CLIENT[0]}"
fi

# --- the fuzzing server -------------------------------------------------------
mkdir -p "$REPORTS"
# Drop the previous run's results so a stale index.json is never read.
find "$REPORTS" -maxdepth 1 -type f \( -name '*.json' -o -name '*.html' -o -name '*.log' \) -delete
WORK="$(mktemp -d "${TMPDIR:-/tmp}/wsbridge-autobahn.XXXXXX")"
SPEC="$WORK/fuzzingserver.json"
SERVER_LOG="$REPORTS/fuzzingserver.log"
SERVER_PID=""

cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PORT="$("$PY3" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
URL="ws://127.0.0.1:$PORT"

"$PY3" - "$SPEC" "$URL" "$REPORTS" <<'EOF'
import json, sys
spec_path, url, outdir = sys.argv[1:]
spec = {
    "url": url,
    "outdir": outdir,
    "cases": ["*"],
    "exclude-cases": ["12.*", "13.*"],  # permessage-deflate: not negotiated
    "exclude-agent-cases": {},
}
with open(spec_path, "w") as f:
    json.dump(spec, f, indent=2)
EOF

log "starting wstest fuzzingserver on $URL"
# --webport 0: no embedded web server (it would take port 8080).
# wstest listens on all interfaces whatever the spec says; only loopback is used.
(cd "$WORK" && exec "$VENV/bin/wstest" -m fuzzingserver -s "$SPEC" --webport 0) > "$SERVER_LOG" 2>&1 &
SERVER_PID=$!

started=$SECONDS
until "$PY3" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$PORT" 2>/dev/null; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        cat "$SERVER_LOG" >&2
        die "wstest fuzzingserver exited before listening on port $PORT (log above)"
    fi
    if (( SECONDS - started >= START_TIMEOUT )); then
        cat "$SERVER_LOG" >&2
        die "wstest fuzzingserver did not listen on port $PORT within ${START_TIMEOUT}s (log above)"
    fi
    sleep 0.2
done
log "server up after $((SECONDS - started)) s"

# --- the run ---------------------------------------------------------------------
log "running: ${CLIENT[*]} $URL $AGENT"
run_started=$SECONDS
client_rc=0
timeout --kill-after=10 "$CLIENT_TIMEOUT" "${CLIENT[@]}" "$URL" "$AGENT" || client_rc=$?
log "client finished in $((SECONDS - run_started)) s with exit code $client_rc"

# A client that failed or timed out may not have asked for the reports: ask
# for them here (a bare WebSocket handshake), so the cases it did run are judged.
if [[ ! -f "$REPORTS/index.json" ]]; then
    log "no index.json after the client: requesting /updateReports?agent=$AGENT ourselves"
    "$PY3" - "$PORT" "$AGENT" <<'EOF' || log "the /updateReports request failed"
import base64, os, socket, sys
port, agent = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port), 10)
s.settimeout(120)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /updateReports?agent=%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
           "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
           "Sec-WebSocket-Version: 13\r\n\r\n" % (agent, port, key)).encode())
buf = b""
while b"\r\n\r\n" not in buf:
    chunk = s.recv(4096)
    if not chunk:
        sys.exit("connection closed during the handshake")
    buf += chunk
if b" 101 " not in buf.split(b"\r\n", 1)[0]:
    sys.exit("handshake refused: %r" % buf.split(b"\r\n", 1)[0])
rest = buf.split(b"\r\n\r\n", 1)[1]
# The server writes the reports, then sends a close frame: wait for it, answer it.
while not rest:
    rest = s.recv(4096)
    if not rest:
        break
if rest:
    mask = os.urandom(4)
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"\x03\xe8"))
    s.sendall(b"\x88\x82" + mask + payload)
s.close()
EOF
fi

[[ -f "$REPORTS/index.json" ]] || {
    tail -n 50 "$SERVER_LOG" >&2
    die "no $REPORTS/index.json: the reports were never written (server log tail above)"
}
cleanup
SERVER_PID=""

# --- verdicts ----------------------------------------------------------------------
verdict_rc=0
"$PY3" - "$REPORTS/index.json" "$AGENT" "$SUMMARY" "$EXPECT_CASES" "$client_rc" "$SUITE_VERSION" <<'EOF' || verdict_rc=$?
import collections, datetime, json, sys

index_path, agent, summary_path, expect, client_rc, suite_version = sys.argv[1:]
expect, client_rc = int(expect), int(client_rc)
ALLOWED = {"OK", "NON-STRICT", "INFORMATIONAL"}

with open(index_path) as f:
    index = json.load(f)
if agent not in index:
    print("autobahn: ERROR: agent %r not in %s (agents: %s)"
          % (agent, index_path, ", ".join(sorted(index)) or "none"), file=sys.stderr)
    sys.exit(1)
cases = index[agent]

def case_key(cid):
    return tuple(int(p) if p.isdigit() else p for p in cid.split("."))

behavior = collections.Counter()
close = collections.Counter()
failed = []
for cid in sorted(cases, key=case_key):
    r = cases[cid]
    b, c = r.get("behavior", "MISSING"), r.get("behaviorClose", "MISSING")
    behavior[b] += 1
    close[c] += 1
    if b not in ALLOWED or c not in ALLOWED:
        failed.append((cid, b, c, r.get("reportfile", "")))

total = len(cases)
passed = total - len(failed)
# Cases the client never ran count as failed too.
missing = max(0, expect - total)

def fmt(counter):
    return ", ".join("%s %d" % (k, v) for k, v in sorted(counter.items())) or "none"

print("autobahn: agent %s, %d cases (expected %s)" % (agent, total, expect or "any"))
print("autobahn: behavior:       " + fmt(behavior))
print("autobahn: behaviorClose:  " + fmt(close))
for cid, b, c, rf in failed:
    print("autobahn: FAILED case %s: behavior %s, behaviorClose %s (%s)" % (cid, b, c, rf))

problems = []
if total == 0:
    problems.append("the report has no cases")
if expect and total != expect:
    problems.append("%d cases reported, %d expected (missing ones count as failed)" % (total, expect))
if client_rc != 0:
    problems.append("the client exited with code %d" % client_rc)
for p in problems:
    print("autobahn: ERROR: " + p, file=sys.stderr)

now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
lines = [
    "# Autobahn|Testsuite results: wsbridge client",
    "",
    "Generated by `tests/autobahn/run.sh` (autobahntestsuite %s, fuzzingserver mode)." % suite_version,
    "",
    "- Date: %s" % now,
    "- Agent: `%s`" % agent,
    "- Cases: %d (all but 12.\\* and 13.\\*, permessage-deflate)" % total,
    "- Result: %d passed, %d failed" % (passed, len(failed) + missing),
    "",
    "| Verdict | Behavior | Close behavior |",
    "| --- | ---: | ---: |",
]
for v in sorted(set(behavior) | set(close)):
    lines.append("| %s | %d | %d |" % (v, behavior[v], close[v]))
lines.append("| **Total** | %d | %d |" % (total, total))
if failed:
    lines += ["", "Failed cases:", ""]
    lines += ["- %s: behavior %s, behaviorClose %s" % f[:3] for f in failed]
with open(summary_path, "w") as f:
    f.write("\n".join(lines) + "\n")
print("autobahn: summary written to %s" % summary_path)

print("autobahn: %d passed, %d failed" % (passed, len(failed) + missing))
sys.exit(1 if failed or problems else 0)
EOF
exit "$verdict_rc"
