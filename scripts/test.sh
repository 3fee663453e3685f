#!/usr/bin/env bash
# Set up and run the whole test suite. Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
# chromium + graphviz (tests/browser), PostgreSQL server binaries (tests/service, acceptance)
"$ROOT/scripts/system_deps.sh"
ensure_venv "test,browser"
cd "$ROOT"
echo "==> running pytest"
# A skipped test fails the run (tests/conftest.py): every test is required here.
export STARDAG_NB_TEST_FORBID_SKIPS=1
# pytest exits 5 when it collects no tests; that is a failure here too.
exec "$VENV/bin/python" -m pytest "$@"
