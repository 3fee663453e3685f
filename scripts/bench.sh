#!/usr/bin/env bash
# Run the benchmarks (never part of the test suite). Prints figures; asserts nothing.
#   ids            task instances and ids against json+uuid5
#   build          per task against the plain-Python floor (default executor and the
#                  inline reference), sleeping sync tasks, the longest loop gap
#   registry_scale the embedded registry's cost per task at 1k, 10k, 100k tasks
#   fresh_process  first build and no-op rebuild in a fresh process, against stardag 0.1.0
#   service        a build through the registry service against the embedded registry
#   dask_executor  40 CPU-bound tasks on a 2-worker LocalCluster against one local
#                  process, and the Dask executor's per-task cost for trivial tasks
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
# PostgreSQL server binaries: benchmarks.service runs the service and its load on PostgreSQL
"$ROOT/scripts/system_deps.sh" --postgres-only
# PostgreSQL missing and not installable here: benchmarks.service leaves its rows out and says so.
# dask: benchmarks.dask_executor (its distributed also brings psutil, which benchmarks.service
# reads the server's CPU with); service: benchmarks.service (the server it starts)
ensure_venv "dask,service"
cd "$ROOT"
"$VENV/bin/python" -m benchmarks.ids
"$VENV/bin/python" -m benchmarks.build "$@"
"$VENV/bin/python" -m benchmarks.registry_scale
"$VENV/bin/python" -m benchmarks.fresh_process
"$VENV/bin/python" -m benchmarks.service
"$VENV/bin/python" -m benchmarks.dask_executor
