"""The pydantic base model of tasks and their parameters, and per-field options.

Serialization has two contexts, chosen with ``context={"mode": ...}``:

- ``"hash"``: the form a task id is computed from. Fields marked
  ``StardagField(hash_exclude=True)``, and fields whose value equals their
  ``compat_default``, are left out; sets are sorted; tasks become ``{"id": ...}``.
- ``"compat"`` (validation only): fields missing from the input that declare a
  ``compat_default`` get that value, so old serialized tasks load after a new
  parameter is added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializationInfo,
    ValidationInfo,
    model_serializer,
    model_validator,
)

__all__ = ["CONTEXT_MODE_KEY", "StardagBaseModel", "StardagField"]

CONTEXT_MODE_KEY = "mode"
SerializationContextMode = Literal["hash"]
ValidationContextMode = Literal["compat"]

_UNSET: Any = object()


@dataclass(frozen=True)
class StardagField:
    """Per-field options, used as ``Annotated[T, StardagField(...)]`` metadata.

    Args:
        compat_default: value that (a) fills the field when validating with
            ``context={"mode": "compat"}`` and it is missing, and (b) leaves the field
            out of the task id when the value equals it. Use it when adding a parameter
            to an existing task without changing the ids of its existing instances.
        hash_exclude: leave the field out of the task id altogether (retries,
            verbosity, anything that does not change the output).
    """

    compat_default: Any = _UNSET
    hash_exclude: bool = False

    @property
    def has_compat_default(self) -> bool:
        """True when a ``compat_default`` was given."""
        return self.compat_default is not _UNSET


class StardagBaseModel(BaseModel):
    """A frozen pydantic model that honours :class:`StardagField` options."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, validate_default=True)

    # field name -> StardagField, for the fields that have one; filled per class.
    __stardag_fields__: ClassVar[dict[str, StardagField]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        options: dict[str, StardagField] = {}
        for name, info in cls.model_fields.items():
            for meta in info.metadata:
                if isinstance(meta, StardagField):
                    options[name] = meta
        cls.__stardag_fields__ = options

    @model_validator(mode="before")
    @classmethod
    def _check_add_compatibility_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        ctx = info.context
        if (
            cls.__stardag_fields__
            and ctx
            and ctx.get(CONTEXT_MODE_KEY) == "compat"
            and isinstance(data, dict)
        ):
            missing = {
                name: opt.compat_default
                for name, opt in cls.__stardag_fields__.items()
                if opt.has_compat_default and name not in data
            }
            if missing:
                data = {**data, **missing}
        return data

    @model_serializer(mode="wrap")
    def _wrap_serialize(self, handler: Any, info: SerializationInfo) -> Any:
        ctx = info.context
        mode = ctx.get(CONTEXT_MODE_KEY) if ctx else None
        return self._serialize(handler, info, mode)

    def _serialize(self, handler: Any, info: SerializationInfo, mode: str | None) -> Any:
        data = handler(self)
        if mode == "hash" and isinstance(data, dict):
            data = self._drop_hash_excluded(data)
        return data

    def _drop_hash_excluded(self, data: dict[str, Any]) -> dict[str, Any]:
        options = type(self).__stardag_fields__
        if not options:
            return data
        for name, opt in options.items():
            if name not in data:
                continue
            if opt.hash_exclude or (
                opt.has_compat_default and getattr(self, name) == opt.compat_default
            ):
                del data[name]
        return data
