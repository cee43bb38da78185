"""OpenAPI schema for routes that decode their bodies themselves.

The chat routes read raw bytes and decode them with msgspec (strict types, exact
error paths), so Litestar cannot infer their request bodies. The schemas come
from msgspec instead: they carry every field, type, range and allowed value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Litestar
from litestar.openapi.spec import OpenAPIMediaType, Operation, Reference, RequestBody

from gateway.errors import ErrorResponse
from gateway.protocol import ChatCompletionRequest
from gateway.responses import BenchChatCompletion, ChatCompletion, ChatCompletionChunk, ModelList

_REF = "#/components/schemas/{name}"


def add_wire_schemas(app: Litestar) -> None:
    """Put msgspec's schemas of the wire types into the app's OpenAPI components."""
    _, schemas = msgspec.json.schema_components(
        [
            ChatCompletionRequest,
            ChatCompletion,
            ChatCompletionChunk,
            BenchChatCompletion,
            ModelList,
            ErrorResponse,
        ],
        ref_template=_REF,
    )
    openapi = app.openapi_schema
    openapi.components.schemas.update(schemas)


@dataclass
class ChatOperation(Operation):
    """An operation whose request body is a `ChatCompletionRequest`."""

    def __post_init__(self) -> None:
        schema: Any = Reference(ref=_REF.format(name="ChatCompletionRequest"))
        self.request_body = RequestBody(
            content={"application/json": OpenAPIMediaType(schema=schema)}, required=True
        )
