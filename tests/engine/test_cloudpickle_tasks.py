"""Tasks defined in ``__main__`` (a script, a notebook) travel by value with cloudpickle.

Every case runs real processes: a script run as ``__main__`` pickles its tasks, another
process (a plain one, or a spawned worker that re-imports the script as
``__mp_main__``) loads and runs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("cloudpickle")

HELPER = '''
import json, os, pickle, sys
from concurrent.futures import ProcessPoolExecutor
import multiprocessing

import cloudpickle
import stardag_nb as sd

def load_and_run(blob: bytes) -> dict:
    """In another process: load the tasks, check their types, run them in order."""
    from stardag_nb._task import BaseTask
    from stardag_nb.polymorphic import TypeId

    add, prod = pickle.loads(blob)
    for task in (add, prod):
        task.run()
    registry = BaseTask.__type_registry__
    return {
        "pid": os.getpid(),
        "ids": [str(add.id), str(prod.id)],
        "recomputed": [str(add._compute_id()), str(prod._compute_id())],
        "modules": [type(add).__module__, type(prod).__module__],
        "type_ids": [[type(t).get_namespace(), type(t).get_name()] for t in (add, prod)],
        "resolves": [
            registry.get(TypeId("demo", "Add")) is type(add),
            registry.get(TypeId("demo", "times")) is type(prod),
        ],
        "value": prod.output().load(),
    }
'''

SCRIPT = (
    HELPER
    + """
sd.namespace("demo", __name__)


class Add(sd.AutoTask[int]):
    a: int
    b: int

    def run(self) -> None:
        self.output().save(self.a + self.b)


@sd.task(version="1")
def times(x: int, k: int) -> int:
    return x * k


if __name__ == "__main__":
    add = Add(a=2, b=3)
    prod = times(x=add, k=7)
    blob = cloudpickle.dumps((add, prod))
    ids = [str(add.id), str(prod.id)]
    if sys.argv[1] == "dump":
        with open(sys.argv[2], "wb") as f:
            f.write(blob)
        print(json.dumps({"ids": ids, "pid": os.getpid()}))
    else:  # "spawn": a worker that re-imports this script as __mp_main__
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            out = pool.submit(load_and_run, blob).result()
        print(json.dumps({"ids": ids, "pid": os.getpid(), "child": out}))
"""
)

LOADER = textwrap.dedent(
    """
    import json, pickle, sys
    blob = open(sys.argv[1], "rb").read()
    # No __main__ task classes here: the classes come only from the pickle.
    ns = {}
    exec(compile(open(sys.argv[2]).read(), sys.argv[2], "exec"), ns)  # defines load_and_run
    print(json.dumps(ns["load_and_run"](blob)))
    """
)


def _run(args: list[str], cwd: Path, root: Path) -> dict:
    env = {**os.environ, "STARDAG_TARGET_ROOTS__DEFAULT": str(root)}
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_main_tasks_load_and_run_in_another_process(tmp_path: Path) -> None:
    script = tmp_path / "pipeline.py"
    script.write_text(SCRIPT)
    # the loader gets load_and_run without the task classes (they are under the guard)
    helper = tmp_path / "helper.py"
    helper.write_text(HELPER)
    loader = tmp_path / "loader.py"
    loader.write_text(LOADER)
    root = tmp_path / "outputs"
    dumped = _run([str(script), "dump", str(tmp_path / "tasks.pkl")], tmp_path, root)
    loaded = _run([str(loader), str(tmp_path / "tasks.pkl"), str(helper)], tmp_path, root)
    assert loaded["pid"] != dumped["pid"]
    assert loaded["ids"] == dumped["ids"] == loaded["recomputed"]
    assert loaded["modules"] == ["__main__", "__main__"]
    assert loaded["type_ids"] == [["demo", "Add"], ["demo", "times"]]
    assert loaded["resolves"] == [True, True]
    assert loaded["value"] == 35


def test_spawned_worker_reimporting_the_script_as_mp_main_is_no_clash(tmp_path: Path) -> None:
    script = tmp_path / "pipeline.py"
    script.write_text(SCRIPT)
    out = _run([str(script), "spawn"], tmp_path, tmp_path / "outputs")
    child = out["child"]
    assert child["pid"] != out["pid"]
    assert child["ids"] == out["ids"] == child["recomputed"]
    # same type ids as in __main__ (sd.namespace(..., __name__) holds under __mp_main__ too)
    assert child["type_ids"] == [["demo", "Add"], ["demo", "times"]]
    assert child["resolves"] == [True, True]
    assert child["value"] == 35


def test_a_main_class_without_run_still_fails_clearly(tmp_path: Path) -> None:
    """The skeleton allowance is for cloudpickle's rebuild only: a class that never
    defines run()/run_aio() is refused, in __main__ too, with cloudpickle imported."""
    script = tmp_path / "bad.py"
    script.write_text(
        "import cloudpickle\nimport stardag_nb as sd\n\n"
        "class NoRun(sd.AutoTask[int]):\n    n: int\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "TaskImplementationError" in proc.stderr
    assert "NoRun implements neither run() nor run_aio()" in proc.stderr


def test_two_different_classes_still_clash_across_main_and_a_module(tmp_path: Path) -> None:
    (tmp_path / "other_mod.py").write_text(
        "import stardag_nb as sd\n\nclass Same(sd.AutoTask[int]):\n"
        "    def run(self) -> None:\n        self.output().save(1)\n"
    )
    script = tmp_path / "main.py"
    script.write_text(
        "import other_mod\nimport stardag_nb as sd\n\nclass Same(sd.AutoTask[int]):\n"
        "    def run(self) -> None:\n        self.output().save(2)\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert "Two classes claim the type id" in proc.stderr
    assert "other_mod.Same and __main__.Same" in proc.stderr
