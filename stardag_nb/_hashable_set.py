"""``HashableSet[T]``: a set parameter whose id does not depend on iteration order."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, cast

from pydantic import GetCoreSchemaHandler, SerializationInfo
from pydantic_core import core_schema

from .base_model import CONTEXT_MODE_KEY

__all__ = ["HashSafeSetSerializer", "HashableSet"]


@dataclass(frozen=True)
class HashSafeSetSerializer:
    """Serialize a set as a list, sorted (by ``sort_key``) in hash mode."""

    sort_key: Callable[[Any], Any] | None = None

    def __get_pydantic_core_schema__(
        self, source_type: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        schema = handler(source_type)
        sort_key = self.sort_key

        def serialize(value: Any, nxt: Any, info: SerializationInfo) -> Any:
            items = nxt(value)
            ctx = info.context
            if ctx and ctx.get(CONTEXT_MODE_KEY) == "hash":
                if sort_key is not None:
                    return sorted(items, key=sort_key)
                try:
                    return sorted(items)
                except TypeError:  # mixed types: order by JSON text, still deterministic
                    return sorted(items, key=_json_key)
            return list(items)

        # every core schema takes "serialization"; the CoreSchema union cannot say so
        cast("dict[str, Any]", schema)["serialization"] = (
            core_schema.wrap_serializer_function_ser_schema(serialize, info_arg=True)
        )
        return schema


def _json_key(item: Any) -> str:
    return json.dumps(item, sort_keys=True, separators=(",", ":"))


class HashableSet:
    """``HashableSet[T]`` = ``Annotated[frozenset[T], HashSafeSetSerializer()]``."""

    def __class_getitem__(cls, item: Any) -> Any:
        return Annotated[frozenset[item], HashSafeSetSerializer()]
