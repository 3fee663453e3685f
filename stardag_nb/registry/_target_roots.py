"""Applying an environment's target roots to this process: where builds write.

An environment of the registry service (or of the embedded registry) names its target
roots centrally; a build in that environment writes under them. The roots are cached in
the target-root cache (``~/.stardag/target-root-cache.json``) for offline use and for
stardag's own client, which reads the same file.
"""

from __future__ import annotations

import logging
import os

__all__ = ["apply_target_roots", "roots_differ"]

logger = logging.getLogger("stardag_nb.registry")


def _norm(uri: str) -> str:
    return (os.path.expanduser(uri) if uri.startswith("~") else uri).rstrip("/")


def roots_differ(wanted: dict[str, str], have: dict[str, str]) -> bool:
    """Whether two root maps differ (``~`` expanded, trailing ``/`` ignored)."""
    return wanted.keys() != have.keys() or any(_norm(wanted[k]) != _norm(have[k]) for k in wanted)


def _describe_change(wanted: dict[str, str], have: dict[str, str]) -> str:
    parts = [f"+{k}={v}" for k, v in wanted.items() if k not in have]
    parts += [
        f"{k}: {have[k]} -> {v}" for k, v in wanted.items() if k in have and _norm(v) != _norm(have[k])
    ]
    parts += [f"-{k}={v}" for k, v in have.items() if k not in wanted]
    return "; ".join(parts)


def _roots_from_environment_variables() -> bool:
    return any(key.upper().startswith("STARDAG_TARGET_ROOT") for key in os.environ)


def apply_target_roots(
    label: str, wanted: dict[str, str], cache_keys: set[tuple[str, str, str]]
) -> bool:
    """Make this process write under ``wanted`` (the roots of environment ``label``).
    True if the configuration changed.

    When the roots differ from the configured ones, the target-root cache entries
    ``cache_keys`` (registry URL, workspace id, environment id) are rewritten, the config
    cache cleared and the target factory reset; when the config still reads other roots
    (no profile points at those entries), the target factory gets ``wanted`` directly.
    Roots set by ``STARDAG_TARGET_ROOTS*`` variables win: a difference is only logged.
    """
    from .. import config as cfg
    from ..target import TargetFactory, target_factory_provider

    have = dict(cfg.get_config().target.roots)
    if not wanted or not roots_differ(wanted, have):
        return False
    change = _describe_change(wanted, have)
    if _roots_from_environment_variables():
        logger.warning(
            "The target roots of environment %s differ from those set by STARDAG_TARGET_ROOTS* "
            "variables (%s); the variables win for this process.", label, change,
        )  # fmt: skip
        return False
    for registry_url, workspace_id, environment_id in sorted(cache_keys):
        cfg.update_cached_target_roots(registry_url, workspace_id, environment_id, wanted)
    cfg.clear_config_cache()
    target_factory_provider.reset()
    if roots_differ(wanted, dict(cfg.get_config().target.roots)):
        expanded = {k: os.path.expanduser(v) if v.startswith("~") else v for k, v in wanted.items()}
        target_factory_provider.set(TargetFactory(target_roots=expanded))
    logger.warning("Target roots of environment %s now in use (%s).", label, change)
    return True
