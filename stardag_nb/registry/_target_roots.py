"""Applying an environment's target roots to this process: where builds write.

An environment of the registry service (or of the embedded registry) names its target
roots centrally; a build in that environment writes under them. The roots are cached in
the target-root cache (``~/.stardag/target-root-cache.json``) for offline use and for
stardag's own client, which reads the same file.

A change is logged once, when it happens: a build whose roots are already in use (in the
configuration or the target factory) logs nothing.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["apply_target_roots", "roots_differ", "roots_from_variables"]

logger = logging.getLogger("stardag_nb.registry")


def _norm(uri: str) -> str:
    return (os.path.expanduser(uri) if uri.startswith("~") else uri).rstrip("/")


def roots_differ(wanted: dict[str, str], have: dict[str, str]) -> bool:
    """Whether two root maps differ (``~`` expanded, trailing ``/`` ignored)."""
    return wanted.keys() != have.keys() or any(_norm(wanted[k]) != _norm(have[k]) for k in wanted)


def _describe_change(wanted: dict[str, str], have: dict[str, str]) -> str:
    parts = [f"+{k}={v}" for k, v in wanted.items() if k not in have]
    parts += [
        f"{k}: {have[k]} -> {v}"
        for k, v in wanted.items()
        if k in have and _norm(v) != _norm(have[k])
    ]
    parts += [f"-{k}={v}" for k, v in have.items() if k not in wanted]
    return "; ".join(parts)


def roots_from_variables() -> bool:
    """Whether ``STARDAG_TARGET_ROOTS*`` variables set the target roots (they win)."""
    return any(key.upper().startswith("STARDAG_TARGET_ROOT") for key in os.environ)


def _factory_roots() -> dict[str, str]:
    """The roots the process-wide target factory writes under now."""
    from ..target import target_factory_provider

    return dict(getattr(target_factory_provider.get(), "target_roots", None) or {})


# (label, wanted roots) pairs whose conflict with STARDAG_TARGET_ROOTS* was reported
_reported_conflicts: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
_reported_lock = threading.Lock()


def _first_report(label: str, wanted: dict[str, str]) -> bool:
    key = (label, tuple(sorted((k, _norm(v)) for k, v in wanted.items())))
    with _reported_lock:
        if key in _reported_conflicts:
            return False
        _reported_conflicts.add(key)
        return True


def _options_applied(
    wanted: Mapping[str, Mapping[str, Any]], have: Mapping[str, Mapping[str, Any]]
) -> bool:
    """Whether every option of ``wanted`` is set in ``have`` (local config may override
    a value: it counts as set)."""
    return all(name in have.get(key, {}) for key, opts in wanted.items() for name in opts)


def _factory_options() -> dict[str, dict[str, Any]]:
    from ..target import target_factory_provider

    return dict(getattr(target_factory_provider.get(), "storage_options", None) or {})


def apply_target_roots(
    label: str,
    wanted: dict[str, str],
    cache_keys: set[tuple[str, str, str]],
    storage_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> bool:
    """Make this process write under ``wanted`` (the roots of environment ``label``), with
    the roots' fsspec ``storage_options`` (by root name). True if the configuration changed.

    When the roots differ from the configured ones, the target-root cache entries
    ``cache_keys`` (registry URL, workspace id, environment id) are rewritten, the config
    cache cleared and the target factory reset; when the config still reads other roots
    (no profile points at those entries), the target factory gets ``wanted`` directly.
    Roots set by ``STARDAG_TARGET_ROOTS*`` variables win: a difference is only logged.
    """
    from .. import config as cfg
    from ..target import TargetFactory, target_factory_provider

    options = {k: dict(v) for k, v in (storage_options or {}).items() if v and k in wanted}
    config = cfg.get_config()
    have = dict(config.target.roots)
    if not wanted or (
        not roots_differ(wanted, have) and _options_applied(options, config.target.storage_options)
    ):
        return False
    change = _describe_change(wanted, have) or "storage options"
    if roots_from_variables():
        if roots_differ(wanted, have) and _first_report(label, wanted):
            logger.warning(
                "The target roots of environment %s differ from those set by "
                "STARDAG_TARGET_ROOTS* variables (%s); the variables win for this process.",
                label, change,
            )  # fmt: skip
        return False
    if not roots_differ(wanted, _factory_roots()) and _options_applied(options, _factory_options()):
        return False  # applied already (by an earlier build of this process)
    for registry_url, workspace_id, environment_id in sorted(cache_keys):
        cfg.update_cached_target_roots(registry_url, workspace_id, environment_id, wanted, options)
    cfg.clear_config_cache()
    target_factory_provider.reset()
    config = cfg.get_config()
    if roots_differ(wanted, dict(config.target.roots)) or not _options_applied(
        options, config.target.storage_options
    ):
        from .._config_files import load_toml_sources

        expanded = {k: os.path.expanduser(v) if v.startswith("~") else v for k, v in wanted.items()}
        merged = cfg._root_storage_options(
            expanded, options, load_toml_sources(True).config.target_roots
        )
        target_factory_provider.set(TargetFactory(target_roots=expanded, storage_options=merged))
    logger.warning("Target roots of environment %s now in use (%s).", label, change)
    return True
