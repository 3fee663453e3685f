"""Routes without auth: ``GET /health`` and ``GET /api/v1/auth/config``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: ``{"status": "healthy"}``."""
    return {"status": "healthy"}


@router.get("/api/v1/auth/config")
async def auth_config() -> dict[str, Any]:
    """How to authenticate: opaque user tokens (no OIDC provider)."""
    return {"oidc_issuer": None, "oidc_client_id": None, "auth": "token"}
