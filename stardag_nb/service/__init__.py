"""The registry service behind ``stardag-nb serve`` (FastAPI + SQLAlchemy 2 async + Alembic).

Needs the ``service`` extra. Nothing here is imported by ``import stardag_nb``; the entry
points are :func:`stardag_nb.service.app.create_app` and
:class:`stardag_nb.service.settings.ServiceSettings`. See ``docs/registry-service.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "ServiceSettings":
        from .settings import ServiceSettings

        return ServiceSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
