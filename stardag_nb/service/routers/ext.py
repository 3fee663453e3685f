"""Protocol extensions of stardag_nb (a v1 client never calls them).

- ``GET /api/v1/ext`` (no auth): the extensions this server offers. The SDK route
  ``GET /api/v1/environment`` lists their names too (``extensions``), so a client learns
  them with the call it makes at every build start anyway.
- ``POST /api/v1/ext/batch/builds/{build_id}`` (``batch-v1``): a build's writes in
  batches, one transaction each (see :mod:`~stardag_nb.service.batch`).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from ...registry.wire import BATCH_EXTENSION, MAX_BATCH_OPS, BatchRequest, BatchResponse
from ..auth import SdkScopeDep, SessionDep
from ..batch import apply_batch
from ..settings import ServiceSettings

__all__ = ["EXTENSIONS", "offered", "openapi_schemas", "router"]

router = APIRouter(prefix="/api/v1/ext", tags=["extensions"])

BATCH_ROUTE = "/api/v1/ext/batch/builds/{build_id}"
EXTENSIONS: dict[str, dict[str, Any]] = {
    BATCH_EXTENSION: {"route": BATCH_ROUTE, "max_ops": MAX_BATCH_OPS},
}


def offered(settings: ServiceSettings) -> list[str]:
    """The names of the extensions a server with ``settings`` offers."""
    return [BATCH_EXTENSION] if settings.batch_writes else []


@router.get("")
async def list_extensions(request: Request) -> dict[str, Any]:
    """The protocol extensions of this server, by name."""
    names = offered(request.app.state.settings)
    return {"extensions": {name: EXTENSIONS[name] for name in names}}


def openapi_schemas() -> dict[str, Any]:
    """Component schemas of the bodies the routes here read themselves (``BatchRequest``
    and what it holds), for the app's OpenAPI document."""
    schema = BatchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {**defs, "BatchRequest": schema}


_BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchRequest"}}},
    }
}


@router.post("/batch/builds/{build_id}", response_model=BatchResponse, openapi_extra=_BODY_SCHEMA)
async def write_batch(
    build_id: UUID, request: Request, scope: SdkScopeDep, session: SessionDep
) -> Response:
    """Apply a batch (``BatchRequest``) of the build's writes in order, in one
    transaction; one result per operation (``BatchResponse``). Sending a batch again
    (same ``batch_id``) applies nothing twice.

    The body is validated straight from its JSON (pydantic's parser) and the answer
    written from pieces: a batch holds hundreds of operations."""
    if BATCH_EXTENSION not in offered(request.app.state.settings):
        raise HTTPException(404, "Not Found")  # as a server without the route answers
    try:
        body = BatchRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None
    outcome = await apply_batch(session, scope, build_id, body)
    return Response(outcome.json(), media_type="application/json")
