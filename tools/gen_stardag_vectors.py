"""Regenerate tests/resources/stardag_vectors.json from a reference stardag install.

Run with an interpreter that has ``stardag==0.1.0`` installed (not stardag_nb's venv)::

    python -m venv /tmp/sdref && /tmp/sdref/bin/pip install stardag==0.1.0
    /tmp/sdref/bin/python tools/gen_stardag_vectors.py

Each case is Python source that defines ``TASK`` with ``sd`` bound to the package under test.
The same sources are executed against stardag_nb by tests/engine/test_stardag_vectors.py.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

CASES: dict[str, str] = {
    "list_of_tasks_param": """
class Leaf(sd.AutoTask[int]):
    n: int
    def run(self):
        self.output().save(self.n)
class Many(sd.AutoTask[int]):
    parts: list[sd.TaskLoads[int]]
    def run(self):
        self.output().save(0)
TASK = Many(parts=[Leaf(n=1), Leaf(n=2)])
""",
    "dict_of_tasks_param": """
class DLeaf(sd.AutoTask[int]):
    n: int
    def run(self):
        self.output().save(self.n)
class Named(sd.AutoTask[int]):
    parts: dict[str, sd.TaskLoads[int]]
    def run(self):
        self.output().save(0)
TASK = Named(parts={"b": DLeaf(n=2), "a": DLeaf(n=1)})
""",
    "hashable_set": """
class Tags(sd.AutoTask[list[str]]):
    tags: sd.HashableSet[str]
    def run(self):
        self.output().save(sorted(self.tags))
TASK = Tags(tags={"zeta", "alpha", "mid"})
""",
    "compat_default_non_default": """
class Clean(sd.AutoTask[str]):
    path: str
    strict: Annotated[bool, sd.StardagField(compat_default=False)] = False
    def run(self):
        self.output().save(self.path)
TASK = Clean(path="raw.csv", strict=True)
""",
    "nested_pydantic_model_param": """
class Window(pydantic.BaseModel):
    start: int
    end: int
class Slice(sd.AutoTask[list[int]]):
    window: Window
    label: str = "x"
    def run(self):
        self.output().save([])
TASK = Slice(window=Window(start=1, end=9))
""",
    "model_with_task_inside": """
class MLeaf(sd.AutoTask[int]):
    n: int
    def run(self):
        self.output().save(self.n)
class Spec(pydantic.BaseModel):
    source: sd.TaskLoads[int]
    weight: float
class Weighted(sd.AutoTask[float]):
    spec: Spec
    def run(self):
        self.output().save(0.0)
TASK = Weighted(spec=Spec(source=MLeaf(n=3), weight=0.5))
""",
    "tuple_none_unicode": """
class Misc(sd.AutoTask[str]):
    pair: tuple[int, str]
    maybe: int | None = None
    text: str = "héllo ✓"
    def run(self):
        self.output().save("")
TASK = Misc(pair=(1, "a"))
""",
    "module_namespace": """
sd.namespace("team.proj", __name__)
class Scoped(sd.AutoTask[int]):
    x: int = 1
    def run(self):
        self.output().save(self.x)
TASK = Scoped()
""",
    "namespace_kwarg_and_name_override": """
class Renamed(sd.AutoTask[int], namespace_override="kw.ns", name_override="other_name"):
    x: int = 2
    def run(self):
        self.output().save(self.x)
TASK = Renamed()
""",
    "decorator_version_dep_chain": """
@sd.task(version="1")
def load(n: int) -> list[int]:
    return list(range(n))
@sd.task(version="7")
def total(xs: sd.Depends[list[int]], offset: int = 0) -> int:
    return sum(xs) + offset
TASK = total(xs=load(n=4), offset=3)
""",
    "decorator_pickle_output": """
class Blob:
    pass
@sd.task
def make_blob(seed: int) -> Blob:
    return Blob()
TASK = make_blob(seed=1)
""",
    "decorator_name_override": """
@sd.task(name="renamed_fn")
def orig(a: int) -> int:
    return a
TASK = orig(a=5)
""",
    "class_task_pickle_output": """
class Model:
    pass
class Fit(sd.AutoTask[Model]):
    alpha: float = 1.0
    def run(self):
        self.output().save(Model())
TASK = Fit()
""",
    "relpath_overrides": """
class Custom(sd.AutoTask[str]):
    x: int = 0
    @property
    def _relpath_base(self):
        return "base"
    @property
    def _relpath_extra(self):
        return f"x={self.x}"
    @property
    def _relpath_filename(self):
        return "data"
    def run(self):
        self.output().save("")
TASK = Custom(x=4)
""",
    "float_and_int_values": """
class Nums(sd.AutoTask[float]):
    a: float = 1.0
    b: float = 1e-7
    c: int = 10**18
    d: float = 2.5e20
    def run(self):
        self.output().save(0.0)
TASK = Nums()
""",
    "deep_param_chain_5": """
class Step(sd.AutoTask[int]):
    prev: sd.TaskLoads[int] | None = None
    i: int = 0
    def run(self):
        self.output().save(self.i)
t = Step()
for i in range(1, 6):
    t = Step(prev=t, i=i)
TASK = t
""",
}

PRELUDE = "from typing import Annotated\nimport pydantic\n"


def run_case(sd: types.ModuleType, name: str, source: str) -> object:
    module = types.ModuleType(f"vec_{name}")
    module.__dict__.update({"sd": sd, "__name__": f"vec_{name}"})
    sys.modules[module.__name__] = module
    exec(compile(PRELUDE + source, f"<case {name}>", "exec"), module.__dict__)
    return module.__dict__["TASK"]


def describe(task: object) -> dict[str, object]:
    from stardag._core.task_id import _get_task_id_jsonable  # noqa: F401  (may not exist)

    hash_json = _get_task_id_jsonable(task)
    out = task.output()  # type: ignore[attr-defined]
    return {
        "id": str(task.id),  # type: ignore[attr-defined]
        "relpath": task._relpath,  # type: ignore[attr-defined]
        "dump": task.model_dump(mode="json"),  # type: ignore[attr-defined]
        "hash_json": hash_json,
        "uri_suffix": out.uri[-60:],
    }


def main() -> None:
    import stardag as sd

    result = []
    for name, source in CASES.items():
        try:
            entry = {
                "case": name,
                "source": source.strip("\n"),
                **describe(run_case(sd, name, source)),
            }
        except Exception as exc:  # record what the reference rejects, too
            entry = {
                "case": name,
                "source": source.strip("\n"),
                "error": f"{type(exc).__name__}: {exc}",
            }
        result.append(entry)
    out = Path(__file__).resolve().parent.parent / "tests" / "resources" / "stardag_vectors.json"
    out.write_text(
        json.dumps({"generated_by": f"stardag {sd.__version__}", "cases": result}, indent=1) + "\n"
    )
    print(f"wrote {len(result)} cases to {out}")


if __name__ == "__main__":
    main()
