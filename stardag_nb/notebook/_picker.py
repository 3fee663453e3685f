"""The environment picker: the registry's workspaces/environments, one click to switch."""

from __future__ import annotations

import pathlib
from typing import Any

import anywidget
import traitlets

__all__ = ["EnvironmentPicker"]


class EnvironmentPicker(anywidget.AnyWidget):
    """Lists ``workspace/environment`` entries of the embedded registry and switches the
    kernel's active one (as ``sd.use_environment`` does). Shows the target roots in use.
    Widget clicks are not replayed by "Run all": use ``%stardag_env NAME`` in code."""

    _esm = pathlib.Path(__file__).parent / "static" / "dist" / "env_picker.js"  # built from js/

    environments = traitlets.List([]).tag(sync=True)
    active = traitlets.Unicode("").tag(sync=True)
    target_roots = traitlets.Dict({}).tag(sync=True)
    registry = traitlets.Unicode("").tag(sync=True)

    def __init__(self, extra_environments: list[str] | None = None) -> None:
        super().__init__()
        self._extra = list(extra_environments or [])
        self.refresh()
        self.observe(self._switch, names="active")

    def refresh(self) -> None:
        """Re-read the registry's environments and the active one."""
        from ..config import get_config
        from ..registry import registry_provider

        registry: Any = registry_provider.get()
        names: list[str] = []
        if hasattr(registry, "list_workspaces"):
            for workspace in registry.list_workspaces():
                names += [f"{e.workspace}/{e.name}" for e in registry.list_environments(workspace.name)]
            current = f"{registry.workspace}/{registry.environment}"
            self.registry = str(getattr(registry, "path", type(registry).__name__))
        else:
            current = ""
            self.registry = type(registry).__name__
        names += [n for n in self._extra if n not in names]
        if current and current not in names:
            names.append(current)
        self.environments = sorted(names)
        self.active = current
        self.target_roots = dict(get_config().target.roots)

    def _switch(self, change: dict[str, Any]) -> None:
        from ..registry import use_environment

        value = change["new"]
        if not value:
            return
        workspace, _, environment = value.rpartition("/")
        use_environment(environment, workspace or None)
