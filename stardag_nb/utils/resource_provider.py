"""Process-wide, overridable resources (the target factory, the registry, ...)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

__all__ = ["ResourceProvider", "resource_provider"]

_ResourceType = TypeVar("_ResourceType")


class ResourceProvider(Generic[_ResourceType]):
    """Holds one resource, created lazily by a default factory.

    ``get()`` returns the current resource, ``set(x)`` replaces it, and
    ``override(x)`` replaces it for the duration of a ``with`` block.
    """

    def __init__(
        self,
        type_: type[_ResourceType] | None = None,
        default_factory: Callable[[], _ResourceType] | None = None,
        doc_str: str = "",
    ) -> None:
        self._type = type_
        self._default_factory = default_factory
        self._resource: _ResourceType | None = None
        self._has_resource = False
        self._lock = threading.Lock()
        self.__doc__ = doc_str or self.__doc__

    def default_factory(self, **kwargs: object) -> _ResourceType:
        """Create the default resource."""
        if self._default_factory is None:
            name = self._type.__name__ if self._type is not None else "resource"
            raise RuntimeError(f"No {name} has been set and there is no default factory.")
        return self._default_factory(**kwargs)

    def get(self) -> _ResourceType:
        """Return the current resource, creating the default one on first use."""
        if not self._has_resource:
            with self._lock:
                if not self._has_resource:
                    self._resource = self.default_factory()
                    self._has_resource = True
        return self._resource  # type: ignore[return-value]

    def set(self, resource: _ResourceType) -> None:
        """Replace the current resource."""
        with self._lock:
            self._resource = resource
            self._has_resource = True

    def reset(self) -> None:
        """Forget the current resource; the next ``get()`` creates the default again."""
        with self._lock:
            self._resource = None
            self._has_resource = False

    @contextmanager
    def override(
        self, resource: _ResourceType, context: str | None = None
    ) -> Iterator[_ResourceType]:
        """Use ``resource`` inside the ``with`` block, then restore the previous one."""
        with self._lock:
            previous, had = self._resource, self._has_resource
            self._resource, self._has_resource = resource, True
        try:
            yield resource
        finally:
            with self._lock:
                self._resource, self._has_resource = previous, had


def resource_provider(
    type_: type[_ResourceType],
    default_factory: Callable[[], _ResourceType] | None = None,
    doc_str: str = "",
) -> ResourceProvider[_ResourceType]:
    """Create a :class:`ResourceProvider` for ``type_``."""
    return ResourceProvider(type_, default_factory, doc_str)
