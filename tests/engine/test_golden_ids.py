"""Every case of ../shared/golden_ids.json gives stardag's id, relpath and dump."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from stardag_nb.utils.testing import isolated_task_registry

from ._cases import equal_up_to_set_order, run_case

REPO = Path(__file__).resolve().parents[2]


def _golden_path() -> Path:
    env = os.environ.get("STARDAG_NB_GOLDEN_IDS")
    if env:
        return Path(env)
    return REPO.parent / "shared" / "golden_ids.json"


def _cases() -> list[dict[str, Any]]:
    path = _golden_path()
    if not path.exists():
        pytest.fail(f"golden file not found at {path}; set STARDAG_NB_GOLDEN_IDS to its path")
    return json.loads(path.read_text())["cases"]


CASES = _cases()


def test_golden_file_has_cases() -> None:
    assert len(CASES) >= 12


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_golden_case(case: dict[str, Any]) -> None:
    with isolated_task_registry():
        _check_case(case)


def _check_case(case: dict[str, Any]) -> None:
    task = run_case(case["source"])
    assert str(task.id) == case["id"]
    assert task._relpath == case["relpath"]
    dump = task.model_dump(mode="json")
    assert equal_up_to_set_order(dump, case["dump"]), (dump, case["dump"])
    # The dump rebuilds an equal task with the same id.
    rebuilt = type(task).model_validate({k: v for k, v in dump.items() if not k.startswith("__")})
    assert rebuilt == task and rebuilt.id == task.id
