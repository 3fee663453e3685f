"""The function API: @sd.task, sd.Depends, results and decorator errors."""

from __future__ import annotations

import pydantic
import pytest

import stardag_nb as sd
from stardag_nb.exceptions import TaskDefinitionError


@sd.task
def get_range(limit: int) -> list[int]:
    return list(range(limit))


@sd.task
def get_sum(integers: sd.Depends[list[int]]) -> int:
    return sum(integers)


@sd.task(version="2", namespace="demo")
def scale(x: float, factor: float = 2.0) -> float:
    return x * factor


def test_decorated_function_is_a_task_class() -> None:
    task = get_sum(integers=get_range(limit=10))
    assert isinstance(task, sd.AutoTask)
    assert task.requires() == {"integers": get_range(limit=10)}
    assert get_range(limit=3).requires() is None


def test_build_and_load_result() -> None:
    task = get_sum(integers=get_range(limit=10))
    summary = sd.build(task)
    assert summary.status == "success", summary
    assert summary.task_count.succeeded == 2
    assert task.output().load() == 45
    assert task.result() == 45


def test_plain_param_accepts_value_or_task() -> None:
    assert scale(x=3.0).call(3.0, factor=3.0) == 9.0
    upstream = scale(x=1.0)
    chained = scale(x=upstream)
    assert chained.requires() == {"x": upstream}
    sd.build(chained)
    assert chained.result() == 4.0


def test_depends_rejects_a_literal() -> None:
    with pytest.raises(pydantic.ValidationError, match="expected a Task"):
        get_sum(integers=[1, 2, 3])


def test_version_and_namespace() -> None:
    task = scale(x=1.0)
    assert task.version == "2" and type(task).__version__ == "2"
    assert task._relpath.startswith("demo/scale/v2/")


def test_async_function_task() -> None:
    @sd.task
    async def fetch(n: int) -> list[int]:
        return [n] * n

    task = fetch(n=3)
    sd.build(task)
    assert task.result() == [3, 3, 3]


def test_relpath_options() -> None:
    @sd.task(relpath={"base": "reports", "filename": "data"})
    def report(n: int) -> str:
        return str(n)

    path = report(n=1)._relpath
    assert path.startswith("reports/report/") and path.endswith("/data.txt")

    @sd.task(relpath=lambda t: f"fixed/{t.n}.txt")
    def fixed(n: int) -> str:
        return str(n)

    assert fixed(n=4)._relpath == "fixed/4.txt"


def test_missing_annotations_are_clear_errors() -> None:
    with pytest.raises(TaskDefinitionError, match="Parameter 'a'.*no type annotation"):

        @sd.task
        def no_param_type(a) -> int:  # type: ignore[no-untyped-def]
            return 1

    with pytest.raises(TaskDefinitionError, match="no return annotation"):

        @sd.task
        def no_return(a: int):  # type: ignore[no-untyped-def]
            return a

    with pytest.raises(TaskDefinitionError, match=r"\*args"):

        @sd.task
        def star(*args: int) -> int:
            return 1


def test_bad_parameter_value_names_field_and_value() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        get_range(limit="many")
    text = str(info.value)
    assert "limit" in text and "many" in text
