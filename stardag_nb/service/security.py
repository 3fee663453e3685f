"""Secrets: user tokens (``st_...``) and API keys (``sk_...``), stored as SHA-256 digests.

Both are high-entropy random strings, so a fast digest is as safe as a slow password
hash and lets a request be authenticated with one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from uuid import UUID

__all__ = ["API_KEY_PREFIX", "USER_TOKEN_PREFIX", "digest", "new_api_key", "new_user_token"]

USER_TOKEN_PREFIX = "st_"
API_KEY_PREFIX = "sk_"


def digest(secret: str) -> str:
    """The SHA-256 hex digest under which ``secret`` is stored."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_user_token() -> str:
    """A login token ``st_<token_urlsafe(32)>``."""
    return USER_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_api_key(environment_id: UUID) -> tuple[str, str]:
    """An API key ``sk_<first 6 hex of the environment id>_<token_urlsafe(24)>`` and its
    display prefix (the 8 characters after ``sk_``)."""
    key = f"{API_KEY_PREFIX}{environment_id.hex[:6]}_{secrets.token_urlsafe(24)}"
    return key, key[3:11]
