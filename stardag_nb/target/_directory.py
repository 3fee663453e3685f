"""A directory of files produced together, complete once a ``._DONE`` flag is written."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from stardag_nb.target._base import FileSystemTarget, Target

__all__ = ["DirectoryTarget"]

_FSTargetType = TypeVar("_FSTargetType", bound=FileSystemTarget)


class DirectoryTarget(Target, Generic[_FSTargetType]):
    """A directory whose files are created with :meth:`get_sub_target` (or ``/``).

    The directory exists only once :meth:`mark_done` has run: it writes
    ``<uri>._SUB_KEYS`` (the sorted sub-paths handed out, one per line) and then the empty
    flag file ``<uri>._DONE``, both next to the directory. ``uri`` always ends with "/".
    """

    def __init__(
        self,
        uri: str,
        prototype: type[_FSTargetType] | Callable[[str], _FSTargetType],
    ) -> None:
        self.uri = uri if uri.endswith("/") else uri + "/"
        self.prototype = prototype
        self._base = self.uri.rstrip("/")
        self._flag_target = prototype(self._base + "._DONE")
        self._sub_keys: set[str] = set()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    def get_sub_target(self, relpath: str) -> _FSTargetType:
        """The target ``<uri><relpath>``; ``relpath`` is recorded for ``._SUB_KEYS``."""
        self._sub_keys.add(relpath)
        return self.prototype(self.uri + relpath)

    def __truediv__(self, relpath: str) -> _FSTargetType:
        return self.get_sub_target(relpath)

    def sub_keys_target(self) -> _FSTargetType:
        """The target listing the sub-paths, ``<uri>._SUB_KEYS``."""
        return self.prototype(self._base + "._SUB_KEYS")

    def exists(self) -> bool:
        """True once :meth:`mark_done` has written the ``._DONE`` flag."""
        return self._flag_target.exists()

    async def exists_aio(self) -> bool:
        """Async :meth:`exists`."""
        return await self._flag_target.exists_aio()

    def _sub_keys_text(self) -> str:
        return "\n".join(sorted(self._sub_keys))

    def mark_done(self) -> None:
        """Write ``._SUB_KEYS`` and then the ``._DONE`` flag."""
        with self.sub_keys_target().open("w") as handle:
            handle.write(self._sub_keys_text())
        with self._flag_target.open("w") as handle:
            handle.write("")

    async def mark_done_aio(self) -> None:
        """Async :meth:`mark_done`."""
        async with self.sub_keys_target().open_aio("w") as handle:
            await handle.write(self._sub_keys_text())
        async with self._flag_target.open_aio("w") as handle:
            await handle.write("")
