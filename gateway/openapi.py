"""OpenAPI schema for routes that decode their bodies themselves.

The chat routes read raw bytes and decode them with msgspec (strict types, exact
error paths), so Litestar cannot infer their request bodies. The schemas come
from msgspec instead: they carry every field, type, range and allowed value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec
from litestar import Litestar
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Reference, RequestBody

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


def _content(media_type: str, name: str) -> dict[str, OpenAPIMediaType]:
    schema: Any = Reference(ref=_REF.format(name=name))
    return {media_type: OpenAPIMediaType(schema=schema)}


@dataclass
class ChatOperation(Operation):
    """Takes a `ChatCompletionRequest`; answers a `ChatCompletion`, or chunks when streamed."""

    answer: ClassVar[str] = "ChatCompletion"
    streams: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            content=_content("application/json", "ChatCompletionRequest"), required=True
        )
        answer = _content("application/json", self.answer)
        if self.streams:
            answer.update(_content("text/event-stream", "ChatCompletionChunk"))
        self.responses = {
            "200": OpenAPIResponse(description=f"A {self.answer}", content=answer),
            "default": OpenAPIResponse(
                description="An OpenAI error object", content=_content("application/json", "ErrorResponse")
            ),
        }


@dataclass
class BenchOperation(ChatOperation):
    """The bench endpoint never streams and adds `generation_stats`."""

    answer: ClassVar[str] = "BenchChatCompletion"
    streams: ClassVar[bool] = False
