#!/usr/bin/env bash
# Set up and run the whole test suite. Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
# chromium + graphviz (tests/browser), PostgreSQL server binaries (tests/service, acceptance)
"$ROOT/scripts/system_deps.sh"
ensure_venv "test,browser"
cd "$ROOT"
# ruff and mypy first; a finding fails the run, after pytest has run too
lint_status=0
STARDAG_NB_VENV_READY=1 "$ROOT/scripts/lint.sh" || lint_status=$?
echo "==> running pytest"
# A skipped test fails the run (tests/conftest.py): every test is required here.
export STARDAG_NB_TEST_FORBID_SKIPS=1
# pytest exits 5 when it collects no tests; that is a failure here too.
status=0
"$VENV/bin/python" -m pytest "$@" || status=$?
if [ "$lint_status" != 0 ]; then
    echo "==> FAILED: the linters found problems (scripts/lint.sh, output above pytest's)" >&2
    [ "$status" != 0 ] || status=1
fi
exit "$status"
