"""Targets: where task outputs live (local files, remote stores, memory) and how to reach them.

``get_target(relpath)`` resolves a path relative to the configured target root; a
``Serializable`` target pairs a file target with a serializer (see
:mod:`stardag_nb.target.serialize`). Nothing heavy (pandas, fsspec) is imported until used.
"""

from typing import TYPE_CHECKING

from stardag_nb.target._base import (
    FileSystemTarget,
    LoadableSaveableFileSystemTarget,
    LoadableSaveableTarget,
    LoadableTarget,
    LoadedT,
    SaveableTarget,
    Target,
)
from stardag_nb.target._directory import DirectoryTarget
from stardag_nb.target._factory import (
    TargetFactory,
    get_directory_target,
    get_target,
    target_factory_provider,
)
from stardag_nb.target._local import LocalTarget
from stardag_nb.target._memory import (
    InMemoryFileSystemTarget,
    InMemoryRemoteFileSystem,
    InMemoryTarget,
)
from stardag_nb.target._remote import (
    CachedRemoteFileSystem,
    FsspecRemoteFileSystem,
    RemoteFileSystemABC,
    RemoteFileSystemTarget,
)
from stardag_nb.target.serialize import Serializable

if TYPE_CHECKING:  # imported lazily at run time (pydantic-settings), see __getattr__
    from stardag_nb.target._cache_config import CachedRemoteFileSystemConfig


def __getattr__(name: str) -> object:
    # pydantic-settings is imported only when the settings class is asked for.
    if name == "CachedRemoteFileSystemConfig":
        from stardag_nb.target._cache_config import CachedRemoteFileSystemConfig

        return CachedRemoteFileSystemConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# stardag's order first, then ours (tests/target/test_target_imports.py checks it)
__all__ = [  # noqa: RUF022
    # stardag.target.__all__
    "CachedRemoteFileSystem",
    "CachedRemoteFileSystemConfig",
    "DirectoryTarget",
    "FileSystemTarget",
    "get_target",
    "get_directory_target",
    "InMemoryFileSystemTarget",
    "InMemoryRemoteFileSystem",
    "InMemoryTarget",
    "LoadableSaveableTarget",
    "LoadableSaveableFileSystemTarget",
    "LoadableTarget",
    "LoadedT",
    "LocalTarget",
    "RemoteFileSystemABC",
    "RemoteFileSystemTarget",
    "SaveableTarget",
    "Serializable",
    "Target",
    "TargetFactory",
    "target_factory_provider",
    # stardag_nb additions
    "FsspecRemoteFileSystem",
]
