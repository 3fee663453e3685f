"""Starting a build on PostgreSQL: its row and its ``build_started`` event in one
statement on the driver's connection (:mod:`.pg_driver`), atomic without a transaction
around it: one round trip, where a session takes four (BEGIN, two inserts, COMMIT)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from ..registry.wire import BuildCreate
from . import pg_driver
from .auth import SdkScope
from .db.ids import new_id
from .routers.builds import new_build, started_build_response
from .status import EventType

__all__ = ["start_build"]

_START = """
WITH build AS (
    INSERT INTO builds (id, environment_id, user_id, name, description, commit_hash,
                        root_task_ids, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7::json, $8)
)
INSERT INTO events (id, environment_id, build_id, task_pk, event_type, created_at,
                    error_message, event_metadata)
VALUES ($9, $2, $1, NULL, $10, $8, NULL, 'null'::json)
"""
# (an event's metadata None is JSON null, as SQLAlchemy's JSON type writes it)


async def start_build(conn: AsyncConnection, body: BuildCreate, scope: SdkScope) -> bytes:
    """Start the build ``body`` describes (409 unless the environment is running); the
    answer's JSON."""
    build = new_build(body, scope)
    pg = await pg_driver.driver_connection(conn)
    values: list[Any] = [
        build.id,
        build.environment_id,
        build.user_id,
        build.name,
        build.description,
        build.commit_hash,
        json.dumps(build.root_task_ids),
        build.created_at,
        new_id(),
        EventType.BUILD_STARTED.value,
    ]
    async with pg_driver.one_statement_errors(conn, pg):
        await pg.execute(_START, *values)
    response = started_build_response(build)
    return response.__pydantic_serializer__.to_json(response)
