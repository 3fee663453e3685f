"""Environment settings of the cached remote file system (imports pydantic-settings)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["CachedRemoteFileSystemConfig"]


class CachedRemoteFileSystemConfig(BaseSettings):
    """Settings for :class:`CachedRemoteFileSystem`, read from the environment.

    As in stardag the variables have no prefix: ``ROOT``, ``ROOT_BY_PREFIX`` (JSON) and
    ``ALLOW_CACHE_CHECK_EXISTS``.
    """

    model_config = SettingsConfigDict(
        env_prefix="", extra="forbid", arbitrary_types_allowed=True, validate_default=True
    )

    root: str
    root_by_prefix: dict[str, str] = {}
    allow_cache_check_exists: bool = True
