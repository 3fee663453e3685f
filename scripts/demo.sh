#!/usr/bin/env bash
# Set up and run the main job: execute the demo notebook headless, end to end, on the
# embedded defaults (local SQLite registry and target root under ~/.stardag).
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
ensure_venv "demo"
cd "$ROOT"
# --embedded-defaults: a login profile or STARDAG_* variables of the user do not redirect it.
exec "$VENV/bin/python" -m tools.run_notebooks notebooks/demo.ipynb --out "$ROOT/out/notebooks" \
    --embedded-defaults
