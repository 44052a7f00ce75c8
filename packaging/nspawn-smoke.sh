#!/usr/bin/env bash
# Boots a throwaway systemd (systemd-nspawn, this machine's own /usr and a copy of its /etc)
# with wsbridge installed by `make install PREFIX=/usr` on top, and checks the shipped unit
# under a real service manager: Type=notify start, every hardening directive in force
# (DynamicUser, seccomp, no capabilities), the sinks listening, STATUS=, the watchdog,
# `systemctl reload` (valid and invalid config), a clean stop and no restart loop on an
# invalid config. Nothing on the host changes; the container shares the host's network.
#
#   sudo packaging/nspawn-smoke.sh [path/to/wsbridge]     # default target/release/wsbridge
#
# Needs root and systemd-nspawn (Debian: apt-get install systemd-container). Not run by CI:
# booting an init takes a while and needs privileges a CI machine may not give.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin="${1:-target/release/wsbridge}"
[[ -x "$bin" ]] || { echo "nspawn-smoke: no binary at $bin; build it first" >&2; exit 1; }
[[ "$(id -u)" == 0 ]] || { echo "nspawn-smoke: run as root" >&2; exit 1; }
command -v systemd-nspawn >/dev/null || {
    echo "nspawn-smoke: needs systemd-nspawn (apt-get install systemd-container)" >&2; exit 1; }

work="$(mktemp -d /tmp/wsbridge-smoke.XXXXXX)"
machine="wsbridge-smoke-$$"
nspawn_pid=""
cleanup() {
    if [[ -n "$nspawn_pid" ]] && kill -0 "$nspawn_pid" 2>/dev/null; then
        kill "$nspawn_pid" 2>/dev/null || true
        wait "$nspawn_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "nspawn-smoke: FAIL: $*" >&2; [[ -n "${leader:-}" ]] && in_container journalctl -u wsbridge --no-pager | tail -40 >&2; exit 1; }
ok() { echo "nspawn-smoke: ok: $*"; }

# The install a packager does, staged.
make --no-print-directory -s install PREFIX=/usr DESTDIR="$work/stage" BIN="$bin" >/dev/null

# The container's root: the host's /usr with the staged /usr over it (read-only), a copy of
# /etc with wsbridge's config, nothing started but basic.target.
root="$work/root"
mkdir -p "$root"/{usr,dev,proc,sys,run,tmp,var,root}
cp -a /etc "$root/etc"
for l in bin lib lib64 sbin; do [[ -L "/$l" ]] && ln -s "usr/$l" "$root/$l"; done
rm -f "$root/etc/os-release" "$root/etc/machine-id"
cp /usr/lib/os-release "$root/etc/os-release"
rm -rf "$root/etc/wsbridge"
cp -a "$work/stage/etc/wsbridge" "$root/etc/wsbridge"
port=$((20000 + RANDOM % 20000))
metrics_port=$((port + 1))
cat > "$root/etc/wsbridge/wsbridge.toml" <<EOF
[daemon]
shutdown_timeout = "2s"

[metrics]
listen = "127.0.0.1:$metrics_port"

[[upstream]]
name = "feed"
url = "ws://127.0.0.1:9/"          # nothing listens: the upstream keeps reconnecting
headers = { Authorization = "Bearer \${SMOKE_TOKEN}" }

[[sink]]
type = "tcp"
listen = "127.0.0.1:$port"

[[sink]]
type = "unix"
path = "/run/wsbridge/feed.sock"
EOF
install -m 0600 /dev/null "$root/etc/wsbridge/env"
echo "SMOKE_TOKEN=smoke-secret" > "$root/etc/wsbridge/env"
# A short watchdog, so that pets are seen within seconds.
mkdir -p "$root/etc/systemd/system/wsbridge.service.d"
printf '[Service]\nWatchdogSec=4s\n' > "$root/etc/systemd/system/wsbridge.service.d/smoke.conf"

systemd-nspawn -q -D "$root" --overlay-ro="/usr:$work/stage/usr:/usr" --register=no \
    --keep-unit --link-journal=no -M "$machine" -b -- --unit=basic.target \
    > "$work/console.log" 2>&1 < /dev/null &
nspawn_pid=$!

leader=""
for _ in $(seq 100); do
    leader="$(pgrep -P "$nspawn_pid" | head -n1 || true)"
    if [[ -n "$leader" ]]; then
        state="$(nsenter -t "$leader" -a systemctl is-system-running --wait 2>/dev/null || true)"
        [[ "$state" == running || "$state" == degraded ]] && break
    fi
    kill -0 "$nspawn_pid" 2>/dev/null || { cat "$work/console.log" >&2; echo "nspawn-smoke: the container did not boot" >&2; exit 1; }
    sleep 0.3
done
in_container() { nsenter -t "$leader" -a "$@"; }
prop() { in_container systemctl show wsbridge -P "$1"; }

in_container systemctl start wsbridge || fail "systemctl start (Type=notify: READY=1 expected)"
[[ "$(prop ActiveState)" == active ]] || fail "not active after start"
ok "started (READY=1 received)"

pid="$(prop MainPID)"
status="$(in_container cat "/proc/$pid/status")"
grep -q '^CapEff:\s*0000000000000000' <<<"$status" || fail "has capabilities"
grep -q '^Seccomp:\s*2' <<<"$status" || fail "no seccomp filter"
grep -q '^NoNewPrivs:\s*1' <<<"$status" || fail "NoNewPrivs not set"
uid="$(awk '/^Uid:/ {print $2}' <<<"$status")"
(( uid >= 61184 && uid <= 65519 )) || fail "uid $uid is not a dynamic user"
ok "runs as dynamic uid $uid with no capabilities, seccomp and NoNewPrivs"

in_container test -S /run/wsbridge/feed.sock || fail "no unix sink in /run/wsbridge"
in_container bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" || fail "tcp sink not listening"
ok "unix sink in /run/wsbridge and tcp sink 127.0.0.1:$port accept connections"

table="$(in_container bash -c 'set -a; . /etc/wsbridge/env; wsbridge status -c /etc/wsbridge/wsbridge.toml')" \
    || fail "wsbridge status"
grep -q '^feed ' <<<"$table" || fail "wsbridge status has no row for upstream feed: $table"
ok "wsbridge status reads the daemon's [metrics] endpoint"

[[ "$(prop StatusText)" == *upstreams* ]] || fail "no STATUS= (got '$(prop StatusText)')"
ok "STATUS=$(prop StatusText)"

first="$(prop WatchdogTimestampMonotonic)"
sleep 3
[[ "$(prop WatchdogTimestampMonotonic)" != "$first" ]] || fail "no WATCHDOG=1 within 3 s (WatchdogSec=4s)"
ok "watchdog pets arrive"

in_container systemctl reload wsbridge || fail "reload of a valid config"
[[ "$(prop MainPID)" == "$pid" ]] || fail "reload restarted the daemon"
ok "systemctl reload (RELOADING=1 then READY=1)"

cp "$root/etc/wsbridge/wsbridge.toml" "$work/good.toml"
echo 'misspelt_key = 1' >> "$root/etc/wsbridge/wsbridge.toml"
if in_container systemctl reload wsbridge 2>/dev/null; then fail "reload of an invalid config succeeded"; fi
[[ "$(prop ActiveState)" == active && "$(prop MainPID)" == "$pid" ]] || fail "invalid reload stopped the daemon"
ok "an invalid config fails the reload and the daemon runs on"

in_container journalctl -u wsbridge --no-pager | grep -q smoke-secret && fail "a secret reached the journal"
ok "no secret in the journal"

in_container systemctl stop wsbridge
[[ "$(prop Result)" == success && "$(prop ExecMainStatus)" == 0 ]] || fail "stop: $(prop Result) status $(prop ExecMainStatus)"
in_container test ! -e /run/wsbridge || fail "/run/wsbridge left behind"
ok "stopped cleanly (exit 0), /run/wsbridge removed"

if in_container systemctl start wsbridge 2>/dev/null; then fail "started with an invalid config"; fi
sleep 3
[[ "$(prop ExecMainStatus)" == 2 && "$(prop NRestarts)" == 0 ]] || fail "invalid config: status $(prop ExecMainStatus), restarts $(prop NRestarts)"
ok "an invalid config exits 2 and is not restarted"
cp "$work/good.toml" "$root/etc/wsbridge/wsbridge.toml"

echo "nspawn-smoke: $(systemd-analyze security --offline=true systemd/wsbridge.service | tail -n 1)"
in_container systemctl poweroff >/dev/null 2>&1 || true
wait "$nspawn_pid" 2>/dev/null || true
nspawn_pid=""
echo "nspawn-smoke: all passed"
