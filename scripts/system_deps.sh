#!/usr/bin/env bash
# Install the Debian packages the test suite (and scripts/bench.sh) needs. Idempotent; does
# nothing when all exist.
#
#   scripts/system_deps.sh              # chromium + graphviz (tests/browser, DAG pictures)
#                                       # + PostgreSQL server binaries (tests/service, tests/acceptance)
#   scripts/system_deps.sh --no-postgres  # chromium + graphviz only (scripts/browser_deps.sh)
#   scripts/system_deps.sh --postgres-only  # PostgreSQL server binaries only (scripts/bench.sh)
#
# PostgreSQL: the tests start their own throwaway cluster (tests/pg_server.py) from
# /usr/lib/postgresql/*/bin on a free loopback port; the Debian-packaged cluster service is
# neither created nor left running. Without root/sudo or apt-get a missing package is a
# warning (those tests then skip), except under CI=true, where it is an error.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
WANT_POSTGRES=1
WANT_BROWSER=1
for arg in "$@"; do
    case "$arg" in
        --no-postgres) WANT_POSTGRES=0 ;;
        --postgres-only) WANT_BROWSER=0 ;;
        *) echo "usage: $0 [--no-postgres | --postgres-only]" >&2; exit 2 ;;
    esac
done
if [ "$WANT_POSTGRES" = 0 ] && [ "$WANT_BROWSER" = 0 ]; then
    echo "usage: $0 [--no-postgres | --postgres-only] (not both)" >&2
    exit 2
fi

have_postgres() {
    compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null \
        && compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

missing=()
if [ "$WANT_BROWSER" = 1 ]; then
    [ -x "$CHROMIUM" ] || missing+=(chromium)
    command -v dot >/dev/null || missing+=(graphviz)
fi
if [ "$WANT_POSTGRES" = 1 ] && ! have_postgres; then
    missing+=(postgresql)
fi
if [ "${#missing[@]}" = 0 ]; then
    exit 0
fi

sudo=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo="sudo"
    else
        sudo="none"
    fi
fi
if [ "$sudo" = none ] || ! command -v apt-get >/dev/null; then
    echo "==> WARNING: ${missing[*]} missing and cannot be installed here (needs apt-get as root)" >&2
    if [ "${CI:-}" = true ]; then
        exit 1
    fi
    echo "==> the tests (and benchmark rows) that need them will be skipped" >&2
    exit 0
fi

if [[ " ${missing[*]} " == *" postgresql "* ]]; then
    # Don't let the package create (and start) its own "main" cluster: the tests run their own.
    $sudo mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" \
        | $sudo tee /etc/postgresql-common/createcluster.d/stardag-nb-tests.conf >/dev/null
fi

echo "==> installing ${missing[*]} (apt)"
# Another apt/dpkg (unattended upgrades, a parallel setup) may hold the locks: wait for it.
APT_WAIT=(-o DPkg::Lock::Timeout=900)
for attempt in $(seq 1 60); do
    if $sudo apt-get "${APT_WAIT[@]}" update -qq; then
        break
    fi
    [ "$attempt" = 60 ] && { echo "==> ERROR: apt-get update kept failing" >&2; exit 1; }
    echo "==> apt-get update failed (a lock held by another apt?); retrying in 10 s" >&2
    sleep 10
done
$sudo env DEBIAN_FRONTEND=noninteractive apt-get "${APT_WAIT[@]}" install -y -qq "${missing[@]}" >/dev/null

if [[ " ${missing[*]} " == *" postgresql "* ]]; then
    # Should a cluster have been created and started anyway, stop it (it only costs RAM/CPU).
    if command -v pg_lsclusters >/dev/null; then
        pg_lsclusters --no-header 2>/dev/null | while read -r version cluster _port status _rest; do
            if [ "$status" = online ]; then
                $sudo pg_ctlcluster "$version" "$cluster" stop || true
            fi
        done
    fi
    if ! have_postgres; then
        echo "==> ERROR: postgresql installed, but no /usr/lib/postgresql/*/bin/postgres" >&2
        exit 1
    fi
    ls -d /usr/lib/postgresql/*/bin
fi
if [[ " ${missing[*]} " == *" chromium "* ]]; then
    "$CHROMIUM" --version 2>/dev/null || true
fi
