#!/usr/bin/env bash
# The whole test suite, on a fresh machine: sets up what the tests need (a Python venv with
# aiohttp for the peer tests, the Autobahn environment), then runs cargo's tests and the
# Autobahn conformance run. Everything it installs goes under .cache/ (or $WSBRIDGE_CACHE).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cache="${WSBRIDGE_CACHE:-$root/.cache}"
mkdir -p "$cache"

# The README's recipes run through jq.
if ! command -v jq >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "tests/run.sh: installing jq for the README recipe tests"
        apt-get update -qq && apt-get install -y -qq jq >/dev/null
    else
        echo "tests/run.sh: the README recipe tests need jq; install it (apt-get install jq) and run again" >&2
        exit 1
    fi
fi

# The socket activation tests run wsbridge under systemd-socket-activate (Debian's systemd).
if ! command -v systemd-socket-activate >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "tests/run.sh: installing systemd for the socket activation tests"
        apt-get update -qq && apt-get install -y -qq systemd >/dev/null
    else
        echo "tests/run.sh: the socket activation tests need systemd-socket-activate; install it (apt-get install systemd) and run again" >&2
        exit 1
    fi
fi

# The nats and redis sink tests start their own servers (tests/it/brokers.rs).
if ! command -v nats-server >/dev/null 2>&1 || ! command -v redis-server >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "tests/run.sh: installing nats-server and redis-server for the broker sink tests"
        apt-get update -qq && apt-get install -y -qq nats-server redis-server >/dev/null
    else
        echo "tests/run.sh: the broker sink tests need nats-server and redis-server; install them (apt-get install nats-server redis-server) and run again" >&2
        exit 1
    fi
fi

# The postgres sink tests (tests/it/postgres_sink.rs) start their own server, as nobody when
# run as root, from /usr/lib/postgresql/*/bin.
if ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "tests/run.sh: installing postgresql for the postgres sink tests"
        apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    else
        echo "tests/run.sh: the postgres sink tests need postgresql; install it (apt-get install postgresql) and run again" >&2
        exit 1
    fi
fi

# The proxy tests (tests/it/proxy.rs) start real proxies: tinyproxy (HTTP CONNECT) and
# microsocks (SOCKS5).
for program in tinyproxy microsocks; do
    if ! command -v "$program" >/dev/null 2>&1 && [[ ! -x "/usr/bin/$program" ]]; then
        if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
            echo "tests/run.sh: installing $program for the proxy tests"
            apt-get update -qq && apt-get install -y -qq "$program" >/dev/null
        else
            echo "tests/run.sh: the proxy tests need $program; install it (apt-get install $program) and run again" >&2
            exit 1
        fi
    fi
done

# Python peers (aiohttp): a venv, rebuilt when the requirements change.
venv="$cache/venv"
stamp="$venv/.requirements.sha256"
want="$(sha256sum tests/peers/requirements.txt | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "tests/run.sh: creating the Python venv for the peer tests in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/peers/requirements.txt
    echo "$want" > "$stamp"
fi
export WSBRIDGE_TEST_PYTHON="$venv/bin/python"

cargo test --locked --all-targets -- --include-ignored

bash tests/autobahn/run.sh
