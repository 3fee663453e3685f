"""The environment picker: the registry's workspaces/environments, one click to switch."""

from __future__ import annotations

import pathlib
from html import escape as esc
from typing import Any

import anywidget
import traitlets

__all__ = ["EnvironmentPicker"]

_EVENTS_SHOWN = 20


class EnvironmentPicker(anywidget.AnyWidget):
    """Lists the ``workspace/environment`` entries the caller may see, in the embedded
    registry or the registry service, with each one's lifecycle state; switches the
    kernel's active environment (as ``sd.use_environment`` does) and shows its target roots
    and latest lifecycle events. Widget clicks are not replayed by "Run all": use
    ``%stardag_env NAME`` in code."""

    _esm = pathlib.Path(__file__).parent / "static" / "dist" / "env_picker.js"  # built from js/

    environments: traitlets.List[str] = traitlets.List([]).tag(sync=True)
    #: ``"ws/env"`` → ``{"state": ..., "reason": ...}``
    states = traitlets.Dict({}).tag(sync=True)
    active = traitlets.Unicode("").tag(sync=True)
    target_roots = traitlets.Dict({}).tag(sync=True)
    #: the active environment's lifecycle events, newest last
    events: traitlets.List[dict[str, Any]] = traitlets.List([]).tag(sync=True)
    registry = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    #: this widget's model id: the front end finds its outputs by it (to save the fallback)
    model_ref = traitlets.Unicode("").tag(sync=True)

    def __init__(self, extra_environments: list[str] | None = None) -> None:
        super().__init__()
        self.model_ref = self.model_id
        self._extra = list(extra_environments or [])
        self._refreshing = False
        self.refresh()
        self.observe(self._switch, names="active")

    def refresh(self) -> None:
        """Re-read the registry's environments, the active one and its events."""
        from ..config import get_config
        from ..registry import registry_provider

        registry: Any = registry_provider.get()
        names: list[str] = []
        states: dict[str, dict[str, Any]] = {}
        events: list[dict[str, Any]] = []
        error = ""
        current = ""
        admin = _admin_for(registry)
        try:
            if admin is not None:
                if hasattr(registry, "fetch_environment"):
                    registry.fetch_environment()  # learn the slugs of an API registry
                current = f"{registry.workspace}/{registry.environment}".strip("/")
                for workspace in admin.list_workspaces():
                    for env in admin.list_environments(workspace.slug):
                        key = f"{workspace.slug}/{env.slug}"
                        names.append(key)
                        states[key] = {"state": env.state.value, "reason": env.state_reason}
                if current in states:
                    ws, _, env_name = current.rpartition("/")
                    events = [
                        {
                            "type": e.event_type.value,
                            "state": e.state.value,
                            "message": e.message or "",
                            "at": e.created_at.isoformat(timespec="seconds"),
                        }
                        for e in admin.environment_events(ws, env_name)[-_EVENTS_SHOWN:]
                    ]
            elif hasattr(registry, "fetch_environment"):  # an API key: its one environment
                info = registry.fetch_environment()
                if info is not None:
                    current = f"{info.workspace_slug}/{info.slug}"
                    names.append(current)
                    states[current] = {"state": info.state.value, "reason": info.state_reason}
        except Exception as exc:  # the picker must render even when the registry is down
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if admin is not None and hasattr(admin, "close"):
                admin.close()
        self.registry = _describe(registry)
        names += [n for n in self._extra if n not in names]
        if current and current not in names:
            names.append(current)
        self._refreshing = True
        try:
            self.environments = sorted(names)
            self.states = states
            self.events = events
            self.error = error
            self.active = current
            self.target_roots = dict(get_config().target.roots)
        finally:
            self._refreshing = False

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The live picker, with a static description (text and HTML) of the registry,
        its environments and the active one for front ends without the widget."""
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        data = {**(data or {}), "text/plain": self.describe(), "text/html": self._html()}
        return (data, bundle[1]) if isinstance(bundle, tuple) else data

    def describe(self) -> str:
        """The picker as text: the registry, the active environment and the others."""
        lines = [f"stardag environment: {self.active or '(none)'} · registry: {self.registry}"]
        for name in self.environments:
            state = self.states.get(name, {}).get("state", "")
            mark = "*" if name == self.active else "-"
            lines.append(f"  {mark} {name}{f' ({state})' if state else ''}")
        roots = ", ".join(f"{k} → {v}" for k, v in self.target_roots.items())
        if roots:
            lines.append(f"  target roots: {roots}")
        if self.error:
            lines.append(f"  error: {self.error}")
        lines.append("  switch with %stardag_env [WORKSPACE/]NAME")
        return "\n".join(lines)

    def _html(self) -> str:
        rows = "".join(
            f"<tr><td>{'<b>' + esc(n) + '</b> (active)' if n == self.active else esc(n)}</td>"
            f"<td>{esc(self.states.get(n, {}).get('state', ''))}</td></tr>"
            for n in self.environments
        )
        roots = "".join(
            f"<li><code>{esc(k)}</code> → <code>{esc(v)}</code></li>"
            for k, v in self.target_roots.items()
        )
        error = f"<p><b>error:</b> {esc(self.error)}</p>" if self.error else ""
        return (
            f'<div class="stardag-env-static"><p><b>stardag environment</b> '
            f"<code>{esc(self.active or '(none)')}</code> · "
            f"registry <code>{esc(self.registry)}</code></p>"
            "<table><thead><tr><th>environment</th><th>state</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
            f"<p>target roots:</p><ul>{roots}</ul>{error}"
            f"<p>Switch with <code>%stardag_env [WORKSPACE/]NAME</code>.</p></div>"
        )

    def _switch(self, change: dict[str, Any]) -> None:
        from ..registry import use_environment

        value = change["new"]
        if not value or self._refreshing:
            return
        workspace, _, environment = value.rpartition("/")
        try:
            # an extra environment offered by the notebook is created when chosen
            use_environment(environment, workspace or None, create=value in self._extra)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return
        self.refresh()


def _admin_for(registry: Any) -> Any:
    """The admin that lists what the active registry's caller may see, or None (an API key
    sees only its own environment; the no-op registry has none)."""
    from ..registry import APIAdmin, APIRegistry, EmbeddedAdmin, SQLiteRegistry

    if isinstance(registry, SQLiteRegistry):
        return EmbeddedAdmin(registry.path)
    if isinstance(registry, APIRegistry):
        from ..config import get_config

        config = get_config()
        if config.access_token and not registry.settings.api_key:
            return APIAdmin(api_url=registry.api_url, token=config.access_token)
    return None


def _describe(registry: Any) -> str:
    if hasattr(registry, "api_url"):
        return str(registry.api_url)
    return str(getattr(registry, "path", type(registry).__name__))
