"""Code written against stardag's public API runs after swapping the import.

tests/resources/stardag_surface.json records stardag 0.1.0's public names per module and
the parameter names of its public functions and methods (tools/gen_stardag_surface.py).
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from typing import Any

import pytest

SURFACE: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parents[1] / "resources" / "stardag_surface.json").read_text()
)

# Names delivered by later work, each with the issue that brings it. Nothing else may be
# missing; when one of these lands, remove it here.
PENDING: dict[str, set[str]] = {}


def _params(obj: Any) -> list[str] | None:
    try:
        return list(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return None


@pytest.mark.parametrize("module", sorted(SURFACE))
def test_public_names_exist(module: str) -> None:
    mod = importlib.import_module(module)
    missing = sorted(n for n in SURFACE[module] if not hasattr(mod, n))
    assert set(missing) == PENDING.get(module, set()), f"{module} lacks {missing}"


def _check_params(where: str, theirs: list[str] | None, ours: list[str] | None) -> str | None:
    if theirs is None or ours is None:
        return None
    theirs = [p for p in theirs if p not in ("args", "kwargs")]
    if ours[: len(theirs)] != theirs and not set(theirs) <= set(ours):
        return f"{where}: stardag takes {theirs}, we take {ours}"
    return None


@pytest.mark.parametrize("module", sorted(SURFACE))
def test_signatures_accept_stardags_arguments(module: str) -> None:
    mod = importlib.import_module(module)
    problems = []
    for name, entry in SURFACE[module].items():
        ours = getattr(mod, name, None)
        if ours is None:
            continue
        if "params" in entry:
            problems.append(_check_params(f"{module}.{name}", entry["params"], _params(ours)))
        for method, theirs in entry.get("methods", {}).items():
            if not inspect.isclass(ours):
                continue
            member = inspect.getattr_static(ours, method, None)
            if member is None:
                if method != "__init__":
                    problems.append(f"{module}.{name}.{method} is missing")
                continue
            func = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
            if isinstance(member, property):
                continue
            problems.append(_check_params(f"{module}.{name}.{method}", theirs, _params(func)))
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems)
