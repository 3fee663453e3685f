"""Task search filters (``GET /api/v1/tasks/search``), evaluated in Python.

``filter="key:op:value,key:op:value"`` (all must match). Keys: the task columns
(``task_id``, ``task_name``/``name``, ``task_namespace``/``namespace``, ``version``,
``output_uri``, ``created_at``), ``build_id``, ``build_name``, ``status`` (global),
``param.<dotted path>`` (into the task's parameters) and ``asset.<name>.<dotted path>``
(into an asset's body). Ops: ``= != > < >= <=`` and ``~`` (case-insensitive match, ``%``
as wildcard; a plain substring otherwise).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CORE_KEYS",
    "SORTABLE",
    "Condition",
    "FilterError",
    "SearchRecord",
    "flatten",
    "matches",
    "parse_filter",
    "parse_sort",
    "values_of",
]

CORE_KEYS = ("task_id", "task_name", "task_namespace", "version", "output_uri", "created_at")
_ALIASES = {"name": "task_name", "namespace": "task_namespace", "id": "task_id"}
_OPS = (">=", "<=", "!=", "=", ">", "<", "~")
_COMPARE = {
    "=": operator.eq, "!=": operator.ne, ">": operator.gt,
    "<": operator.lt, ">=": operator.ge, "<=": operator.le,
}  # fmt: skip
SORTABLE = (*CORE_KEYS, "status")


class FilterError(ValueError):
    """A filter or sort expression that cannot be parsed (the message says how to fix it)."""


@dataclass(frozen=True)
class Condition:
    """One ``key op value`` of a filter."""

    key: str
    op: str
    value: str


@dataclass
class SearchRecord:
    """What a filter can look at for one task."""

    core: dict[str, Any]
    params: dict[str, Any]
    status: str
    build_ids: set[str] = field(default_factory=set)
    build_names: set[str] = field(default_factory=set)
    assets: dict[str, Any] = field(default_factory=dict)


def parse_filter(text: str | None) -> list[Condition]:
    """``"task_name:=:Sum,param.limit:>:5"`` as conditions.

    Raises:
        FilterError: an item that is not ``key:op:value`` with a known op.
    """
    conditions = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        parts = item.split(":", 2)
        if len(parts) != 3 or parts[1] not in _OPS or not parts[0]:
            raise FilterError(
                f"filter item {item!r} is not key:op:value with op one of {' '.join(_OPS)} "
                "(e.g. task_name:=:Sum or param.limit:>=:10)"
            )
        key = _ALIASES.get(parts[0], parts[0])
        if not (
            key in CORE_KEYS
            or key in ("build_id", "build_name", "status")
            or key.startswith(("param.", "asset."))
        ):
            raise FilterError(
                f"unknown filter key {parts[0]!r}: use {', '.join(CORE_KEYS)}, build_id, "
                "build_name, status, param.<path> or asset.<name>.<path>"
            )
        conditions.append(Condition(key, parts[1], parts[2]))
    return conditions


def parse_sort(text: str | None) -> tuple[str, bool]:
    """``"created_at:desc"`` → ``("created_at", True)`` (descending)."""
    key, _, direction = (text or "created_at:desc").partition(":")
    key = _ALIASES.get(key, key)
    if key not in SORTABLE or direction not in ("", "asc", "desc"):
        raise FilterError(
            f"sort {text!r} is not <key>:asc|desc with key one of {', '.join(SORTABLE)}"
        )
    return key, direction != "asc"


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    if isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(item, Mapping) and item:
                out.update(flatten(item, path))
            else:
                out[path] = item
    return out


def _compare(actual: Any, op: str, expected: str) -> bool:
    if actual is None:
        return op == "!=" and expected not in ("", "null", "None")
    if op == "~":
        pattern = re.escape(expected.lower()).replace("%", ".*")
        text = str(actual).lower()
        return bool(re.fullmatch(pattern, text) if "%" in expected else expected.lower() in text)
    left: Any = actual
    right: Any = expected
    if isinstance(actual, bool):
        right = expected.lower() in ("true", "1", "yes")
    elif isinstance(actual, (int, float)):
        try:
            right = float(expected)
        except ValueError:
            left = str(actual)
    else:
        left = actual.isoformat() if hasattr(actual, "isoformat") else str(actual)
    try:
        return bool(_COMPARE[op](left, right))
    except TypeError:  # not comparable (e.g. a number and a list)
        return False


def values_of(record: SearchRecord, key: str) -> Iterable[Any]:
    """The values of a filter key for one task (several for build ids and names)."""
    if key in CORE_KEYS:
        return [record.core.get(key)]
    if key == "status":
        return [record.status]
    if key == "build_id":
        return record.build_ids
    if key == "build_name":
        return record.build_names
    if key.startswith("param."):
        return [record.params.get(key[len("param.") :])]
    return [record.assets.get(key[len("asset.") :])]


def matches(record: SearchRecord, conditions: Iterable[Condition]) -> bool:
    """Whether every condition holds (for multi-valued keys: for some value)."""
    for condition in conditions:
        values = list(values_of(record, condition.key)) or [None]
        if condition.op == "!=":
            if not all(_compare(v, "!=", condition.value) for v in values):
                return False
        elif not any(_compare(v, condition.op, condition.value) for v in values):
            return False
    return True
