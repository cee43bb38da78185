"""The embeddings API's wire types. `input` takes several JSON shapes (strings, token
ids, lists of either) that msgspec cannot tell apart by type: `endpoint.inputs`
checks it, naming the field."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct


class EmbeddingCreate(Struct, forbid_unknown_fields=True):
    """POST /v1/embeddings body."""

    model: str
    input: str | list[Any]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Meta(ge=1)] | None = None
    user: str | None = None


class Embedding(Struct, kw_only=True):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str  # base64: little-endian float32
    index: int


class EmbeddingUsage(Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
