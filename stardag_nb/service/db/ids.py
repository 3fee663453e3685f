"""Time-ordered ids (UUID version 7) and the current UTC time."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from uuid import UUID

__all__ = ["new_id", "utcnow"]

_RAND_BITS = 74  # 12 bits rand_a + 62 bits rand_b
_lock = threading.Lock()
_last = 0


def new_id() -> UUID:
    """A UUIDv7: 48 bits of Unix milliseconds, then random bits.

    Strictly increasing within the process (the random part is bumped when needed), so
    ordering rows by id gives their insertion order, on SQLite and PostgreSQL alike.
    """
    global _last
    with _lock:
        value = (time.time_ns() // 1_000_000) << _RAND_BITS | int.from_bytes(
            os.urandom(10), "big"
        ) >> (80 - _RAND_BITS)
        if value <= _last:
            value = _last + 1
        _last = value
    millis = value >> _RAND_BITS
    rand_a = (value >> 62) & 0xFFF
    rand_b = value & ((1 << 62) - 1)
    return UUID(int=millis << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b)


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)
