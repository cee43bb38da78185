"""The embeddings route and its OpenAPI description."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Request, post
from litestar.types import ASGIApp

from gateway.endpoints.embeddings.endpoint import EmbeddingsEndpoint, serve_embeddings
from gateway.endpoints.embeddings.wire import EmbeddingCreate, EmbeddingList
from gateway.openapi import json_operation

SCHEMAS = [EmbeddingCreate, EmbeddingList]
_embeddings = EmbeddingsEndpoint()


@dataclass
class EmbeddingOperation(json_operation("EmbeddingCreate", "EmbeddingList")):
    """Takes an `EmbeddingCreate`; answers an `EmbeddingList`."""


@post("/v1/embeddings", operation_class=EmbeddingOperation, status_code=200, summary="Create embeddings")
async def embeddings(request: Request[Any, Any, Any]) -> ASGIApp:
    """One unit vector per input, in order."""
    return await serve_embeddings(_embeddings, request)


ROUTES = [embeddings]
