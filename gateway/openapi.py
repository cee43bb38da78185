"""OpenAPI for routes that decode their bodies themselves: msgspec's schemas of the
wire types go into the app's components, and each route names its own."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec
from litestar import Litestar
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Reference, RequestBody

_REF = "#/components/schemas/{name}"


def add_wire_schemas(app: Litestar, types: Iterable[type]) -> None:
    """Put msgspec's schemas of `types` into the app's OpenAPI components."""
    _, schemas = msgspec.json.schema_components(list(types), ref_template=_REF)
    app.openapi_schema.components.schemas.update(schemas)


def _content(media_type: str, name: str) -> dict[str, OpenAPIMediaType]:
    schema: Any = Reference(ref=_REF.format(name=name))
    return {media_type: OpenAPIMediaType(schema=schema)}


def json_operation(
    request: str, answer: str, stream_event: str | None = None, error: str = "ErrorResponse"
) -> type[Operation]:
    """An `Operation` class for a route taking schema `request` and answering `answer`
    (or `stream_event`s over SSE when streamed), with `error` as its error object."""

    @dataclass
    class WireOperation(Operation):
        names: ClassVar[tuple[str, str, str | None, str]] = (request, answer, stream_event, error)

        def __post_init__(self) -> None:
            request_name, answer_name, event_name, error_name = self.names
            self.request_body = RequestBody(content=_content("application/json", request_name), required=True)
            content = _content("application/json", answer_name)
            if event_name is not None:
                content.update(_content("text/event-stream", event_name))
            self.responses = {
                "200": OpenAPIResponse(description=f"A {answer_name}", content=content),
                "default": OpenAPIResponse(
                    description="The API's error object", content=_content("application/json", error_name)
                ),
            }

    return WireOperation
