#!/usr/bin/env bash
# Install what the real-browser tests (tests/browser) need. Idempotent.
#
#   scripts/browser_deps.sh                # Debian's chromium + the venv with .[test,browser]
#   scripts/browser_deps.sh --system-only  # only the Debian packages (chromium, graphviz)
#
# The browser is Debian's `chromium` from apt, driven by Playwright's Python client (which
# bundles its own driver). Never run `playwright install`: its download does not work here.
# Without root/sudo or apt-get the browser step is skipped with a warning (the browser tests
# then skip), except under CI=true, where it is an error.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"

# Debian's chromium and graphviz's `dot` (the notebook layer falls back to a pure-Python
# layout without it); scripts/system_deps.sh installs them (and, for scripts/test.sh, PostgreSQL).
"$ROOT/scripts/system_deps.sh" --no-postgres
if [ "${1:-}" != "--system-only" ]; then
    ensure_venv "test,browser"
fi
