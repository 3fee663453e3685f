"""Registry assets shown in the notebook: markdown, JSON (a collapsible tree), tables,
images. One markdown document (raw HTML inside for trees and images), so the whole set
updates in place under a build and survives in the saved notebook."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Any

from .._task import BaseTask

__all__ = ["AssetsView", "show_assets"]

_MAX_JSON_ITEMS = 200


class AssetsView:
    """Assets of some tasks, displayable in a notebook."""

    def __init__(
        self, entries: Sequence[tuple[BaseTask, Any]] = (), empty: str = "no registry assets"
    ) -> None:
        self.entries = list(entries)
        self.empty = empty  # what an empty view says (never a blank output)

    def markdown(self) -> str:
        """All assets as one markdown document."""
        parts = []
        for task, asset in self.entries:
            title = f"{type(task).__type_id__.name} · {asset.name}"
            parts.append(f"#### {title}  <small>`{str(task.id)[:8]}` · {asset.type}</small>\n")
            parts.append(_render(asset))
        return "\n\n".join(parts)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        if not self.entries:
            return {"text/markdown": f"*{self.empty}*", "text/plain": f"<assets: {self.empty}>"}
        names = ", ".join(f"{type(t).__type_id__.name}:{a.name}" for t, a in self.entries)
        return {"text/markdown": self.markdown(), "text/plain": f"<assets: {names}>"}

    def __len__(self) -> int:
        return len(self.entries)


def _render(asset: Any) -> str:
    kind = asset.type
    if kind == "markdown":
        return str(asset.body)
    if kind == "json":
        return f"<details open><summary>JSON</summary>\n\n{_json_tree(asset.body)}\n\n</details>"
    if kind == "table":
        header = "| " + " | ".join(_cell(c) for c in asset.columns) + " |"
        rule = "|" + "---|" * len(asset.columns)
        rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in asset.rows]
        return "\n".join([header, rule, *rows])
    if kind == "image":
        src = f"data:{asset.media_type};base64,{asset.data_base64}"
        return f'<img alt="{html.escape(asset.name)}" src="{src}"/>'
    return f"```\n{json.dumps(asset.model_dump(mode='json'), indent=2)[:5000]}\n```"


def _json_tree(value: Any, depth: int = 0) -> str:
    """Nested ``<details>`` for objects and lists; leaves as code."""
    if isinstance(value, (dict, list)):
        items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
        shown = items[:_MAX_JSON_ITEMS]
        inner = "".join(
            f"<li><b>{html.escape(str(k))}</b>: {_json_tree(v, depth + 1)}</li>" for k, v in shown
        )
        if len(items) > len(shown):
            inner += f"<li>… {len(items) - len(shown)} more</li>"
        label = f"{{…}} {len(items)} keys" if isinstance(value, dict) else f"[…] {len(items)} items"
        opened = " open" if depth < 2 else ""
        return f"<details{opened}><summary>{label}</summary><ul>{inner}</ul></details>"
    return f"<code>{html.escape(json.dumps(value))}</code>"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def assets_of(tasks: Iterable[BaseTask], registry: Any = None) -> list[tuple[BaseTask, Any]]:
    """(task, asset) pairs from the registry, in task order."""
    from ..registry import registry_provider

    reg = registry or registry_provider.get()
    get_assets = getattr(reg, "get_assets", None)
    if get_assets is None:
        raise TypeError(f"{type(reg).__name__} cannot list assets; use the embedded registry")
    return [(task, asset) for task in tasks for asset in get_assets(task.id)]


def show_assets(tasks: BaseTask | Sequence[BaseTask], registry: Any = None) -> AssetsView:
    """The registry assets of a task (or tasks), for display: ``sd.show_assets(task)``."""
    roots = [tasks] if isinstance(tasks, BaseTask) else list(tasks)
    return AssetsView(assets_of(roots, registry))


def may_have_assets(roots: Iterable[BaseTask], limit: int = 5000) -> bool:
    """True if a task reachable from ``roots`` through ``requires()`` defines assets (or
    the graph is too large to look through, or cannot be walked): whether a build shows
    an assets area. Stops at the first such task."""
    from .._task import flatten_task_struct

    stack, seen, classes = list(roots), set(), set()
    try:
        while stack:
            task = stack.pop()
            if id(task) in seen:
                continue
            seen.add(id(task))
            if len(seen) > limit:
                return True
            if type(task) not in classes:
                classes.add(type(task))
                if defines_assets(task):
                    return True
            stack.extend(flatten_task_struct(task.requires()))
    except Exception:  # a graph we cannot walk here: keep the area
        return True
    return False


def defines_assets(task: BaseTask) -> bool:
    """True if the task's class overrides ``registry_assets`` (so it may have some)."""
    cls = type(task)
    return cls.registry_assets is not BaseTask.registry_assets or (
        cls.registry_assets_aio is not BaseTask.registry_assets_aio
    )
