"""Assets a task exposes in the registry after it ran: markdown, JSON, tables, images."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "ImageRegistryAsset",
    "JSONAbleDict",
    "JSONRegistryAsset",
    "MarkdownRegistryAsset",
    "RegistryAsset",
    "TableRegistryAsset",
]

JSONAbleDict = dict[str, Any]


class MarkdownRegistryAsset(BaseModel):
    """A markdown document (a report, a summary)."""

    type: Literal["markdown"] = "markdown"
    name: str
    body: str


class JSONRegistryAsset(BaseModel):
    """A JSON object (metrics, a config, a small result)."""

    type: Literal["json"] = "json"
    name: str
    body: JSONAbleDict


class TableRegistryAsset(BaseModel):
    """A table: column names and rows of JSON-able cells."""

    type: Literal["table"] = "table"
    name: str
    columns: list[str]
    rows: list[list[Any]]


class ImageRegistryAsset(BaseModel):
    """An image, base64-encoded, with its media type (``image/png``, ``image/svg+xml``...)."""

    type: Literal["image"] = "image"
    name: str
    media_type: str = "image/png"
    data_base64: str


RegistryAsset = Annotated[
    MarkdownRegistryAsset | JSONRegistryAsset | TableRegistryAsset | ImageRegistryAsset,
    Field(discriminator="type"),
]
