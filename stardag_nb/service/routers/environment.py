"""SDK route ``GET /api/v1/environment``: the caller's environment (the client checks its
target roots at build start)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ...registry.wire import EnvironmentInfo
from ..auth import SdkScopeDep, SessionDep
from ..queries import environment_info_for
from .ext import offered

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["environment"])


@router.get("/environment")
async def get_environment(
    request: Request, scope: SdkScopeDep, session: SessionDep
) -> EnvironmentInfo:
    """``EnvironmentInfo`` of the environment of the API key (or ``environment_id``), with
    the protocol extensions the server offers (``extensions``)."""
    info = await environment_info_for(session, scope.environment, scope.workspace_slug)
    info.extensions = offered(request.app.state.settings)
    return info
