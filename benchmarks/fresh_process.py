"""Benchmark: fixed costs of a fresh process, stardag_nb against stardag 0.1.0.

    python -m benchmarks.fresh_process [--runs 7] [--git]

Each run starts fresh interpreters for three set-ups, interleaved:

- ``nb-sqlite``: stardag_nb with its default registry (the embedded SQLite file in
  ``$STARDAG_HOME``, created by a warm-up run, so runs see an existing registry);
- ``nb-none``: stardag_nb with ``STARDAG_REGISTRY=none``;
- ``stardag``: stardag 0.1.0 (its own venv, see ``tests/stardag_venv.py``), whose default
  records nothing.

Each process defines the same DAG (``get_sum`` over ``get_range``, and a root over 10
leaves), then times ``import`` and the first ``sd.build`` separately (``time.perf_counter``
inside the process). A first process builds into a fresh target root (on /dev/shm when
it exists); a second, fresh process rebuilds the same DAG over the existing outputs (a
no-op: the parent checks that no output changed). Figures are medians over the runs, with
the ratio to stardag's. HOME and STARDAG_HOME are temporary directories (no user config
leaks in), every process runs in a temporary directory outside any git work tree (with
``--git``, inside a fresh one, so that the embedded registry asks git for the commit), and
bytecode is cached under one temporary ``PYTHONPYCACHEPREFIX`` for both packages (filled
by the warm-up runs), so neither pays for compiling its sources.

Each stardag_nb process also lists the modules of the registry service's client (httpx,
wire models) and of the service (FastAPI, SQLAlchemy) it imported; none is expected.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

UNNEEDED_MODULES = [
    "httpx",
    "stardag_nb.registry.client.registry",
    "stardag_nb.registry.client.http",
    "stardag_nb.registry.wire",
    "fastapi",
    "sqlalchemy",
]

CHILD = textwrap.dedent(
    """
    import importlib, json, os, sys, time

    t0 = time.perf_counter()
    sd = importlib.import_module(os.environ["FRESH_PROCESS_PACKAGE"])
    t1 = time.perf_counter()


    @sd.task
    def get_range(limit: int) -> list[int]:
        return list(range(limit))


    @sd.task
    def get_sum(integers: sd.Depends[list[int]]) -> int:
        return sum(integers)


    class Leaf(sd.AutoTask[int]):
        i: int

        def run(self) -> None:
            self.output().save(self.i * self.i)


    class WideRoot(sd.AutoTask[int]):
        n: int

        def requires(self):
            return [Leaf(i=i) for i in range(self.n)]

        def run(self) -> None:
            self.output().save(sum(leaf.output().load() for leaf in self.requires()))


    tasks = [get_sum(integers=get_range(limit=10)), WideRoot(n=10)]
    t2 = time.perf_counter()
    sd.build(tasks)
    t3 = time.perf_counter()
    values = [task.output().load() for task in tasks]
    assert values == [45, 285], values
    print(json.dumps({
        "import_ms": 1000 * (t1 - t0),
        "build_ms": 1000 * (t3 - t2),
        "modules": [m for m in MODULES if m in sys.modules],
    }))
    """
)


@dataclass
class Setup:
    """One column of the table: an interpreter, a package and extra environment."""

    name: str
    python: str
    package: str
    env: dict[str, str] = field(default_factory=dict)
    imports: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    noop: list[float] = field(default_factory=list)
    modules: set[str] = field(default_factory=set)


def _stardag_python() -> str:
    sys.path.insert(0, str(REPO))
    from tests.stardag_venv import stardag_python

    return str(stardag_python())


def _base_env(scratch: Path, pycache: Path) -> dict[str, str]:
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("STARDAG_")
        and k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE"}
        and k not in {"SHORT_SHA", "COMMIT_HASH", "GIT_DIR", "GIT_WORK_TREE"}
    }
    return {**keep, "PYTHONPYCACHEPREFIX": str(pycache), "HOME": str(scratch / "home")}


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _run_child(setup: Setup, script: Path, env: dict[str, str], cwd: Path) -> dict:
    result = subprocess.run(
        [setup.python, str(script)],
        env={**env, **setup.env, "FRESH_PROCESS_PACKAGE": setup.package},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{setup.name} child failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _one_run(setup: Setup, script: Path, env: dict[str, str], roots: Path, cwd: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix=f"{setup.name}-", dir=roots))
    env = {**env, "STARDAG_TARGET_ROOTS__DEFAULT": str(root)}
    try:
        first = _run_child(setup, script, env, cwd)
        before = _snapshot(root)
        noop = _run_child(setup, script, env, cwd)
        if not before or _snapshot(root) != before:
            raise RuntimeError(f"{setup.name}: the rebuild was not a no-op under {root}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    setup.imports += [first["import_ms"], noop["import_ms"]]
    setup.first.append(first["build_ms"])
    setup.noop.append(noop["build_ms"])
    setup.modules.update(first["modules"], noop["modules"])


def _make_git_work_tree(folder: Path) -> None:
    (folder / "README.md").write_text("benchmark\n")
    for command in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "init"]):
        subprocess.run(
            ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", *command],
            cwd=folder,
            check=True,
            capture_output=True,
        )


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:4.1f}x" if reference > 0 else "  n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh process pairs per set-up")
    parser.add_argument(
        "--git", action="store_true", help="run the processes inside a git work tree"
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    nb_python = str(REPO / ".venv" / "bin" / "python")
    if not Path(nb_python).exists():
        nb_python = sys.executable
    shm = Path("/dev/shm")
    with (
        tempfile.TemporaryDirectory(prefix="fresh-process-") as tmp,
        tempfile.TemporaryDirectory(
            prefix="fresh-process-targets-", dir=shm if shm.is_dir() else None
        ) as targets,
    ):
        scratch = Path(tmp)
        (scratch / "home").mkdir()
        cwd = scratch / "cwd"
        cwd.mkdir()
        if args.git:
            _make_git_work_tree(cwd)
        script = scratch / "dag.py"
        script.write_text(CHILD.replace("MODULES", repr(UNNEEDED_MODULES)))
        env = _base_env(scratch, scratch / "pycache")
        setups = [
            Setup("nb-sqlite", nb_python, "stardag_nb", {"STARDAG_HOME": str(scratch / "nb")}),
            Setup(
                "nb-none",
                nb_python,
                "stardag_nb",
                {"STARDAG_HOME": str(scratch / "nb-none"), "STARDAG_REGISTRY": "none"},
            ),
            Setup("stardag", _stardag_python(), "stardag", {"STARDAG_HOME": str(scratch / "sd")}),
        ]
        for setup in setups:  # warm-up: bytecode cache, registry file
            _one_run(setup, script, env, Path(targets), cwd)
            setup.imports.clear()
            setup.first.clear()
            setup.noop.clear()
            setup.modules.clear()
        for _ in range(args.runs):
            for setup in setups:
                _one_run(setup, script, env, Path(targets), cwd)

    reference = setups[-1]
    ref_first = statistics.median(reference.first)
    ref_noop = statistics.median(reference.noop)
    ref_import = statistics.median(reference.imports)
    where = "in a git work tree" if args.git else "outside git"
    print(
        f"Fresh-process fixed costs, {where}, median of {args.runs} runs "
        "(ms; ratio to stardag 0.1.0)"
    )
    print(f"{'set-up':<10} {'import':>16} {'first build':>18} {'no-op rebuild':>18}")
    for setup in setups:
        imp = statistics.median(setup.imports)
        first = statistics.median(setup.first)
        noop = statistics.median(setup.noop)
        print(
            f"{setup.name:<10} {imp:8.1f} ({_ratio(imp, ref_import)}) "
            f"{first:9.1f} ({_ratio(first, ref_first)}) {noop:9.1f} ({_ratio(noop, ref_noop)})"
        )
    for setup in setups[:-1]:
        loaded = ", ".join(sorted(setup.modules)) or "none"
        print(f"{setup.name}: service-client/service modules imported: {loaded}")


if __name__ == "__main__":
    main()
