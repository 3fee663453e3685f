"""Run a task-definition source (as in golden_ids.json) against stardag_nb."""

from __future__ import annotations

import itertools
import json
import sys
import types
from typing import Any

import stardag_nb as sd

_counter = itertools.count()
PRELUDE = "from typing import Annotated\nimport pydantic\n"


def run_case(source: str, module_name: str = "__main__") -> Any:
    """Execute ``source`` in a fresh module named ``module_name``; return its ``TASK``.

    Call it inside ``isolated_task_registry()``: case classes share names with others.

    stardag's golden vectors were made with namespace "" (no sd.namespace for the
    module), so the module name only has to be one without a namespace registration.
    """
    name = f"{module_name}" if module_name != "__main__" else f"golden_case_{next(_counter)}"
    module = types.ModuleType(name)
    module.__dict__["sd"] = sd
    sys.modules[name] = module
    try:
        exec(compile(PRELUDE + source, f"<case {name}>", "exec"), module.__dict__)
    finally:
        sys.modules.pop(name, None)
    return module.__dict__["TASK"]


def equal_up_to_set_order(ours: Any, theirs: Any) -> bool:
    """Deep equality where a list may differ in order only if it is a set-valued field
    (same elements, e.g. a HashableSet dumped in iteration order)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(
            equal_up_to_set_order(ours[k], theirs[k]) for k in ours
        )
    if isinstance(ours, list) and isinstance(theirs, list):
        if len(ours) != len(theirs):
            return False
        if all(equal_up_to_set_order(a, b) for a, b in zip(ours, theirs)):
            return True
        try:
            return sorted(map(json.dumps, ours)) == sorted(map(json.dumps, theirs))
        except TypeError:
            return False
    return ours == theirs and type(ours) is type(theirs)
