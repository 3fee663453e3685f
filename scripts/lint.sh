#!/usr/bin/env bash
# The package's own checks: ruff (lint and format) and mypy, zero findings allowed.
# Run by scripts/test.sh (and so by .ci/run) before pytest; also on its own.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
if [ "${STARDAG_NB_VENV_READY:-}" != 1 ]; then
    ensure_venv "test"
fi
cd "$ROOT"
status=0
echo "==> ruff check stardag_nb"
"$VENV/bin/ruff" check stardag_nb || status=1
echo "==> ruff format --check stardag_nb"
"$VENV/bin/ruff" format --check stardag_nb || status=1
echo "==> mypy (the stardag_nb package)"
"$VENV/bin/mypy" || status=1
if [ "$status" != 0 ]; then
    echo "==> lint: findings above (fix them; 'ruff format stardag_nb' rewrites the layout)" >&2
fi
exit "$status"
