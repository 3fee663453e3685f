"""fsspec storage options of a target root: validation, a stable cache key, and masking.

Storage options are whatever ``fsspec.filesystem(protocol, **options)`` takes, e.g. for S3
``{"endpoint_url": "http://127.0.0.1:9000", "key": "...", "secret": "..."}`` or
``{"profile": "dev"}``. Values that look like credentials are masked wherever options are
shown (``config show``, logs, reprs): see :func:`mask_storage_options`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MASK", "check_storage_options", "mask_storage_options", "options_key"]

MASK = "**********"
# Option names whose values are credentials (matched on the lower-cased name).
_SECRET_NAME = re.compile(
    r"(secret|password|passwd|token|credential|key|sas|signature|session|auth|private|cert)"
)
# ...except these, which name a location or a setting, not a credential.
_NOT_SECRET = frozenset({"endpoint_url", "region_name", "region", "profile", "anon"})


def check_storage_options(options: Any, where: str) -> dict[str, Any]:
    """``options`` as a dict with string keys, or ValueError naming ``where`` and the fix."""
    if options is None:
        return {}
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise ValueError(
            f"{where}: storage_options must be a table of option names to values "
            f'(e.g. {{endpoint_url = "http://127.0.0.1:9000"}}), got {options!r}'
        )
    try:
        json.dumps(dict(options))
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{where}: storage_options must hold plain values (strings, numbers, booleans, "
            f"lists, tables): {exc}"
        ) from exc
    return dict(options)


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return lowered not in _NOT_SECRET and bool(_SECRET_NAME.search(lowered))


def mask_storage_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``options`` with credential values (keys, secrets, tokens, passwords, ...)
    replaced by ``**********``, in nested tables too."""
    masked: dict[str, Any] = {}
    for name, value in (options or {}).items():
        if isinstance(value, Mapping):
            masked[name] = mask_storage_options(value)
        elif _is_secret(str(name)) and value not in (None, "", False):
            masked[name] = MASK
        else:
            masked[name] = value
    return masked


def options_key(options: Mapping[str, Any] | None) -> str:
    """A stable string for ``options`` (to share one file system per set of options)."""
    return json.dumps(dict(options or {}), sort_keys=True, default=repr)
