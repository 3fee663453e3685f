#!/usr/bin/env bash
# Set up and run the main job: build the demo DAG on the embedded defaults.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
ensure_venv ""
echo "==> running examples/demo.py"
exec "$VENV/bin/python" "$ROOT/examples/demo.py"
