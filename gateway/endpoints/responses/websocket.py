"""WebSocket mode on `/v1/responses`: `response.create` messages, answered by the
stream's events, one JSON message each, one response after another.

A connection remembers its own responses, `store: false` ones too, so
`previous_response_id` continues on the same socket with only the new input; a
continuation that fails evicts the response it named, and an unknown id is
`previous_response_not_found`. A `generate: false` message (Codex warms a
connection up with one) answers an empty completed response and remembers its
input. Errors before the first event are `{"type": "error", "status", "error"}`.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any, cast

import msgspec
from litestar import Request, WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from gateway.decoding import decode_body
from gateway.endpoints import pipeline_of
from gateway.endpoints.responses.endpoint import Connection
from gateway.endpoints.responses.errors import error_fields
from gateway.endpoints.responses.output import usage_of
from gateway.endpoints.responses.routes import endpoint_of
from gateway.endpoints.responses.stream import ResponsesStreamWriter, line_frame
from gateway.endpoints.responses.wire import CreateResponse
from gateway.errors import GatewayError, InvalidRequest, PermissionDenied, internal_error
from gateway.http import new_context
from gateway.pipeline import Pipeline, may_use

_encode = msgspec.json.Encoder().encode


class ResponseCreateEvent(CreateResponse, forbid_unknown_fields=True):
    type: str = ""


_decoder = msgspec.json.Decoder(ResponseCreateEvent)


@websocket("/v1/responses")
async def responses_socket(socket: WebSocket[Any, Any, Any]) -> None:
    await socket.accept()
    connection: Connection = {}
    while True:
        event = await socket.receive()  # text or binary frames alike
        if event["type"] == "websocket.disconnect":
            return
        await _turn(socket, event.get("bytes") or (event.get("text") or "").encode(), connection)


async def _turn(socket: WebSocket[Any, Any, Any], message: bytes, connection: Connection) -> None:
    """One `response.create`: its events, or one error event; a failed continuation
    evicts the response it continued."""
    pipeline, endpoint = pipeline_of(cast(Request[Any, Any, Any], socket)), endpoint_of(socket.app)
    context = new_context(cast(Request[Any, Any, Any], socket), "responses")
    previous_id: str | None = None
    failed = False
    try:
        event: ResponseCreateEvent = decode_body(message, _decoder)
        previous_id = event.previous_response_id
        if event.type != "response.create":
            raise InvalidRequest("WebSocket messages must be of type 'response.create'", param="type")
        event.stream = None  # a WebSocket always streams
        call = endpoint.call(event, context, connection)
        if event.generate is False:
            await _warm_up(socket, pipeline, call)
            return
        prepared = await pipeline.prepare(call.request, context, call.authorize)
        async with aclosing(pipeline.stream(prepared, context, call.writer(prepared, line_frame))) as events:
            async for data in events:
                for line in data.splitlines():
                    await socket.send_data(line, mode="text")
        failed = call.failed
    except WebSocketDisconnect:
        raise
    except Exception as error:  # noqa: BLE001 - every failure becomes an error event
        failed = True
        failure = error if isinstance(error, GatewayError) else internal_error()
        context.status_code = failure.status_code
        await pipeline.fail(error, context)
        answer = {"type": "error", "status": failure.status_code, "error": error_fields(failure)}
        await socket.send_data(_encode(answer), mode="text")
    finally:
        if failed and previous_id is not None:
            connection.pop(previous_id, None)


async def _warm_up(socket: WebSocket[Any, Any, Any], pipeline: Pipeline, call: Any) -> None:
    """`generate: false`: an empty response, checked like any other, and remembered."""
    await pipeline.identify(call.context, call.request.model)
    call.authorize(call.context)
    entry = pipeline.registry.resolve(call.request.model)
    if not may_use(call.context.identity, entry.id, call.request.model):
        raise PermissionDenied(f"This API key may not use the model '{call.request.model}'", param="model")
    writer = ResponsesStreamWriter(call, call.request, entry.id, line_frame)
    for line in (writer.start() + writer.finish(usage_of(None))).splitlines():
        await socket.send_data(line, mode="text")
