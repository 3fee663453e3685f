"""A task's parameters in one short line, for node labels, search and the timeline."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["param_summary"]


def param_summary(task: Any, limit: int = 60) -> str:
    """``a=1, source=Numbers(…)``: a task's parameters in a line, for node labels and
    search (a task parameter shows as its class name)."""
    if task is None:
        return ""
    try:
        params = task.model_dump(mode="json", exclude={"version"})
    except Exception:
        return ""
    parts = []
    for key, value in params.items():
        if key.startswith("__"):
            continue
        if isinstance(value, dict) and "__name" in value:
            shown = f"{value['__name']}(…)"
        else:
            shown = json.dumps(value, default=str)
            shown = shown if len(shown) <= 24 else shown[:23] + "…"
        parts.append(f"{key}={shown}")
    text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"
