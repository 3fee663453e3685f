"""Time-ordered ids (UUID version 7) and the current UTC time."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from uuid import UUID, SafeUUID

__all__ = ["new_id", "new_ids", "utcnow"]

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
    return _uuid7(value)


def new_ids(count: int) -> list[UUID]:
    """``count`` UUIDv7s, as ``count`` calls of :func:`new_id` would give (strictly
    increasing), for one lock and one read of randomness: the first is random within the
    current millisecond, the others follow it (a batch of rows)."""
    global _last
    if count <= 0:
        return []
    with _lock:
        first = (time.time_ns() // 1_000_000) << _RAND_BITS | int.from_bytes(
            os.urandom(10), "big"
        ) >> (80 - _RAND_BITS)
        if first <= _last:
            first = _last + 1
        _last = first + count - 1
    if (first & _RAND_B_MASK) + count <= _RAND_B_MASK:  # no carry out of rand_b: +1 each
        start = _layout(first)
        return [_uuid_of(value) for value in range(start, start + count)]
    return [_uuid7(value) for value in range(first, first + count)]


_new = object.__new__
_set = object.__setattr__
_UNKNOWN = SafeUUID.unknown


_RAND_B_MASK = (1 << 62) - 1


def _layout(value: int) -> int:
    """The 128 bits of the UUIDv7 of ``value`` (48 bits of milliseconds, then 74 random
    bits), version and variant in place."""
    millis = value >> _RAND_BITS
    rand_a = (value >> 62) & 0xFFF
    return millis << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | value & _RAND_B_MASK


def _uuid_of(bits: int) -> UUID:
    """``UUID(int=bits)`` without its argument checks (``bits`` is in range)."""
    uuid = _new(UUID)
    _set(uuid, "int", bits)
    _set(uuid, "is_safe", _UNKNOWN)
    return uuid


def _uuid7(value: int) -> UUID:
    return _uuid_of(_layout(value))


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)
