#!/usr/bin/env bash
# Run the benchmarks (never part of the test suite). Prints figures; asserts nothing.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
ensure_venv ""
cd "$ROOT"
"$VENV/bin/python" -m benchmarks.ids
"$VENV/bin/python" -m benchmarks.build "$@"
"$VENV/bin/python" -m benchmarks.service
