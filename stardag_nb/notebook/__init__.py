"""The notebook layer: ``%load_ext stardag_nb``, ``%%stardag``, the live DAG widget.

It sits on the engine's public API and its build events; the engine knows nothing of it.
Needs the ``notebook`` extra (IPython, anywidget).
"""

from __future__ import annotations

import warnings
from typing import Any

from ._assets import AssetsView, show_assets
from ._handle import BuildHandle, start_build
from ._picker import EnvironmentPicker
from ._state import DagState, collapse_families
from ._static import static_bundle, to_html, to_markdown, to_svg
from ._widget import DagWidget

__all__ = [
    "AssetsView",
    "BuildHandle",
    "DagState",
    "DagWidget",
    "EnvironmentPicker",
    "load_ipython_extension",
    "show_assets",
    "start_build",
    "to_html",
    "to_markdown",
    "to_svg",
]


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics and display formatters; report (never raise) config problems."""
    from .._task import BaseTask
    from ._magics import StardagMagics

    ipython.register_magics(StardagMagics)
    formatter = ipython.display_formatter.mimebundle_formatter
    formatter.for_type(BaseTask, _task_mimebundle)
    try:
        from ..config import get_config

        get_config()
    except Exception as exc:  # a broken config must not break the kernel
        warnings.warn(f"stardag_nb: the configuration could not be loaded: {exc}", stacklevel=2)


def _task_mimebundle(task: Any, include: Any = None, exclude: Any = None) -> dict[str, str]:
    """A task displays as its DAG (static SVG) with a markdown table."""
    state = DagState.from_tasks([task])
    bundle = static_bundle(state, collapse_families(state))
    del bundle["text/plain"]  # IPython adds the task's own repr
    return bundle
