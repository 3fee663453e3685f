"""Task registries: where builds, tasks, events and assets are recorded.

``registry_provider.get()`` returns the configured registry (by default the no-op
one when no registry service is configured).
"""

from __future__ import annotations

from ..utils.resource_provider import resource_provider
from ._base import NoOpRegistry, RegistryABC, TaskMetadata, get_git_commit_hash

__all__ = [
    "NoOpRegistry",
    "RegistryABC",
    "TaskMetadata",
    "get_git_commit_hash",
    "init_registry",
    "registry_provider",
]


def init_registry() -> RegistryABC:
    """The registry the configuration asks for (no-op when none is configured)."""
    return NoOpRegistry()


registry_provider = resource_provider(RegistryABC, init_registry, "The active task registry.")
