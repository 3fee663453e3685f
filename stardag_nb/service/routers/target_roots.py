"""SDK route ``GET /api/v1/target-roots``: the caller's environment's target roots."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from ...registry.wire import TargetRootOut
from ..auth import SdkScopeDep, SessionDep
from ..db.models import TargetRoot
from ..views import target_root_out

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["target-roots"])


@router.get("/target-roots")
async def list_target_roots(scope: SdkScopeDep, session: SessionDep) -> list[TargetRootOut]:
    """``[{name, uri_prefix, create}]`` of the environment, by name."""
    roots = (
        await session.execute(
            select(TargetRoot)
            .where(TargetRoot.environment_id == scope.env_id)
            .order_by(TargetRoot.name)
        )
    ).scalars()
    return [target_root_out(root) for root in roots]
