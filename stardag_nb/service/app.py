"""``create_app(settings)``: the registry service as a FastAPI app.

At start-up (the lifespan) the database is migrated to the latest schema (Alembic
``upgrade head``, in-process) and environments left ``provisioning`` by a previous run
are marked ``failed``; on PostgreSQL the tables' statistics are kept fresh while they
grow (:class:`~stardag_nb.service.db.statistics.StatisticsKeeper`); request bodies are
limited in size and JSON depth (:class:`~stardag_nb.service.limits.RequestLimits`); at
shutdown background provisioning is cancelled and the connections closed.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import DataError, DBAPIError, OperationalError

from .._version import __version__
from . import roots
from .db.migrate import upgrade_head
from .db.models import User
from .db.session import RETRY_AFTER, Database, database_reason, unavailable_detail
from .db.statistics import StatisticsKeeper
from .hot_routes import HotRoutes
from .keycache import ApiKeyCache, AuthEpoch, watch_auth_changes
from .lifecycle import Lifecycle, fail_interrupted
from .limits import RequestLimits
from .routers import (
    builds,
    environment,
    ext,
    health,
    locks,
    target_roots,
    task_search,
    tasks,
    ui_api_keys,
    ui_environments,
    ui_me,
    ui_members,
    ui_workspaces,
)
from .settings import ServiceSettings

__all__ = ["WORKER_ENV", "create_app"]

# set by `stardag-nb serve --workers N` for its worker processes: N
WORKER_ENV = "STARDAG_SERVICE_WORKER"

logger = logging.getLogger("stardag_nb.service")


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("database error on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        status_code=503, content={"detail": unavailable_detail(exc)}, headers=RETRY_AFTER
    )


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """A database error other than an outage: a value of the request the database
    refuses (SQLSTATE class 22, data exception: a NUL character in a text on PostgreSQL,
    a number out of range) is the request's fault, a 422 naming it; anything else is
    the server's, a 500."""
    orig = getattr(exc, "orig", None)
    sqlstate = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
    if isinstance(exc, DataError) or sqlstate.startswith("22"):
        logger.info("value refused on %s %s: %s", request.method, request.url.path, exc)
        detail = f"The registry database refused a value of this request: {database_reason(exc)}"
        return JSONResponse(status_code=422, content={"detail": detail})
    logger.error("database error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(status_code=500, content={"detail": "Internal Server Error"})


async def _warn_if_no_users(db: Database) -> None:
    async with db.session() as session:
        if (await session.execute(select(User.id).limit(1))).first() is None:
            logger.warning(
                "The registry database has no users yet, so nobody can log in: start once "
                "with 'stardag-nb serve --init' to create the first user and print its token."
            )


MIN_WORKER_SLOTS = 2
"""A worker's least share of the SDK slots: one call stuck in the database (waiting for
rows another transaction holds) must not leave it none."""


def worker_slots(slots: int) -> int:
    """This process's share of the server's ``slots``: for a worker of ``serve --workers
    N``, 1/N of them rounded up, at least :data:`MIN_WORKER_SLOTS` (or ``slots`` if
    fewer); all of them otherwise (also when the variable is not a count)."""
    try:
        workers = int(os.environ.get(WORKER_ENV) or 1)
    except ValueError:
        workers = 1
    if workers <= 1:
        return slots
    return max(min(slots, MIN_WORKER_SLOTS), -(-slots // workers))


def _settle_garbage_collector() -> None:
    """Move everything made at start-up (modules, models, compiled statements) out of the
    collector's sight: a full collection then scans only what requests made, and the
    pauses it adds to requests stay short."""
    gc.collect()
    gc.freeze()


def _document_extensions(app: FastAPI) -> None:
    """Add the schemas of bodies that extension routes validate themselves to the OpenAPI
    document (FastAPI lists only those it validates)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in ext.openapi_schemas().items():
                schemas.setdefault(name, schema)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """The service app for ``settings`` (default: from ``STARDAG_SERVICE_*``).

    Nothing connects to the database until the app starts (its lifespan).
    """
    settings = settings or ServiceSettings()
    roots.configure(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.database_url, echo=settings.echo_sql)
        try:
            await upgrade_head(db)
            if not os.environ.get(WORKER_ENV):  # workers: `serve` did it before starting them
                await fail_interrupted(db)
            await _warn_if_no_users(db)
            lifecycle = Lifecycle(db, timeout=settings.provision_timeout_seconds)
            epoch = AuthEpoch.from_environment()
            watch_auth_changes(db.engine, epoch)
            app.state.key_cache = ApiKeyCache(settings.api_key_cache_seconds, epoch)
            app.state.db = db
            app.state.lifecycle = lifecycle
            statistics = StatisticsKeeper(db.engine, settings.analyze_seconds)
            statistics.start()
            _settle_garbage_collector()
            try:
                yield
            finally:
                await statistics.close()
                await lifecycle.close()
        finally:
            await db.dispose()

    app = FastAPI(
        title="stardag_nb registry",
        version=__version__,
        description="Builds, tasks, assets, locks and environments of a team "
        "(stardag registry protocol v1 plus extensions).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(DBAPIError, _database_error)  # OperationalError: above
    # inside the limits (the last added is outermost)
    app.add_middleware(HotRoutes, slots=worker_slots(settings.sdk_slots))
    app.add_middleware(
        RequestLimits, max_bytes=settings.max_request_bytes, max_depth=settings.max_json_depth
    )
    _document_extensions(app)
    for module in (
        health,
        builds,
        task_search,  # before tasks: /tasks/search must win over /tasks/{task_id}
        tasks,
        locks,
        target_roots,
        environment,
        ext,
        ui_me,
        ui_workspaces,
        ui_members,
        ui_environments,
        ui_api_keys,
    ):
        app.include_router(module.router)
    return app
