#!/usr/bin/env bash
# Set up and run the whole test suite. Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
"$ROOT/scripts/browser_deps.sh" --system-only  # chromium for tests/browser
ensure_venv "test,browser"
cd "$ROOT"
echo "==> running pytest"
# pytest exits 5 when it collects no tests; that is a failure here too.
exec "$VENV/bin/python" -m pytest "$@"
