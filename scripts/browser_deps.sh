#!/usr/bin/env bash
# Install what the real-browser tests (tests/browser) need. Idempotent.
#
#   scripts/browser_deps.sh                # Debian's chromium + the venv with .[test,browser]
#   scripts/browser_deps.sh --system-only  # only the chromium package (scripts/test.sh uses this)
#
# The browser is Debian's `chromium` from apt, driven by Playwright's Python client (which
# bundles its own driver). Never run `playwright install`: its download does not work here.
# Without root/sudo or apt-get the browser step is skipped with a warning (the browser tests
# then skip), except under CI=true, where it is an error.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"

CHROMIUM=/usr/bin/chromium

ensure_chromium() {
    # Debian's chromium for the browser tests, and graphviz's `dot` for the static DAG
    # pictures (the notebook layer falls back to a pure-Python layout without it).
    if [ -x "$CHROMIUM" ] && command -v dot >/dev/null; then
        return 0
    fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            sudo="sudo"
        else
            sudo="none"
        fi
    fi
    if [ "$sudo" = none ] || ! command -v apt-get >/dev/null; then
        echo "==> WARNING: chromium/graphviz are missing and cannot be installed here (needs apt-get as root)" >&2
        if [ "${CI:-}" = true ]; then
            return 1
        fi
        echo "==> the browser tests will be skipped" >&2
        return 0
    fi
    echo "==> installing chromium and graphviz (apt)"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium graphviz >/dev/null
    "$CHROMIUM" --version 2>/dev/null || true
}

ensure_chromium
if [ "${1:-}" != "--system-only" ]; then
    ensure_venv "test,browser"
fi
