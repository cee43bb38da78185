"""Endpoints: one package per API, each translating its wire format to and from the pipeline.

An endpoint parses its body into an `EndpointCall`: the internal
`ChatCompletionRequest` every plugin sees, plus what it needs to write the answer
in its own format (a whole body, or a `StreamWriter` for a stream) and its own
error object. `serve` runs a call through the pipeline; routes are one line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Protocol

from litestar import Request
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import ASGIApp

from gateway.backend import GenerationOptions
from gateway.context import RequestContext
from gateway.errors import ClientDisconnected, GatewayError, internal_error
from gateway.http import REQUEST_ID_HEADER, JsonResponse, new_context, prepend, read_body
from gateway.keepalive import start_stream
from gateway.lifecycle import cut_reason
from gateway.pipeline import Outcome, Pipeline, PreparedRequest, StreamWriter
from gateway.protocol import ChatCompletionRequest

# Scope key: the running stream's `StreamWriter.error`, so that the middleware ends a
# stream it cuts (shutdown, request timeout) with the route's own error event.
STREAM_ERROR = "gateway.stream_error"


class EndpointCall(Protocol):
    """One request on one endpoint, translated for the pipeline."""

    request: ChatCompletionRequest  # the internal request (stream, model, ...)
    bench: bool  # generate llama-bench style (see `GenerationOptions.bench`)

    def answer(self, prepared: PreparedRequest, outcome: Outcome) -> bytes:
        """The non-streamed body, from the completion `on_response` saw."""
        ...

    def writer(self, prepared: PreparedRequest) -> StreamWriter:
        """The stream's format, for a streamed request."""
        ...


class Endpoint(Protocol):
    name: ClassVar[str]  # `context.endpoint` for its requests
    stream_media_type: ClassVar[str]

    def parse(self, body: bytes, context: RequestContext) -> EndpointCall:
        """Decode and translate the body; raise `InvalidRequest` naming the bad field."""
        ...

    def error_body(self, error: GatewayError) -> bytes:
        """The API's own error object for `error`."""
        ...


def pipeline_of(request: Request[Any, Any, Any]) -> Pipeline:
    return request.app.state.pipeline  # type: ignore[no-any-return]


async def serve(endpoint: Endpoint, request: Request[Any, Any, Any]) -> ASGIApp:
    """Run one HTTP request through the pipeline and answer in the endpoint's format."""
    pipeline = pipeline_of(request)
    context = new_context(request, endpoint.name)
    headers = {REQUEST_ID_HEADER: context.request_id}
    try:
        body = await read_body(request, context.headers)
        try:  # a client that leaves cancels the request (see `gateway.lifecycle`), queued or not
            call = endpoint.parse(body, context)
            prepared = await pipeline.prepare(call.request, context, getattr(call, "authorize", None))
            if prepared.request.stream:
                writer = call.writer(prepared)
                request.scope[STREAM_ERROR] = writer.error  # type: ignore[literal-required]
                events = pipeline.stream(prepared, context, writer)
                # Errors before any output keep their HTTP status, unless a slow first event
                # made the keep-alive comments start the stream: then it is the writer's event.
                first, rest = await start_stream(
                    events, pipeline.config.server.sse_keepalive_s, _late_failure(pipeline, context, writer)
                )
            else:
                options = GenerationOptions(bench=call.bench, request_id=context.request_id)
                answer = call.answer(prepared, await pipeline.complete(prepared, context, options))
                return JsonResponse(answer, headers)
        except asyncio.CancelledError:
            if cut_reason() != "client_disconnected":
                raise
            uncancel()
            raise ClientDisconnected("the client disconnected before the answer was ready") from None
    except Exception as error:  # noqa: BLE001 - every failure becomes the API's error object
        return await error_response(endpoint, pipeline, context, error, headers)
    # The ASGI response itself: Litestar would give a `Stream` the route's JSON media type.
    return ASGIStreamingResponse(
        iterator=prepend(first, rest) if first is not None else rest,
        media_type=endpoint.stream_media_type,
        headers={**headers, "cache-control": "no-cache"},
    )


def uncancel() -> None:
    """Take back the cancellation that a disconnect sent this task, to answer on_error."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def _late_failure(
    pipeline: Pipeline, context: RequestContext, writer: StreamWriter
) -> Callable[[Exception], Awaitable[bytes]]:
    """The error event for a failure once keep-alive comments have started the stream."""

    async def event(error: Exception) -> bytes:
        return writer.error(await _reported(pipeline, context, error))

    return event


async def _reported(pipeline: Pipeline, context: RequestContext, error: Exception) -> GatewayError:
    """What the client is told of `error`, once `on_error` observers (the access log) know."""
    failure = error if isinstance(error, GatewayError) else internal_error()
    context.status_code = failure.status_code
    await pipeline.fail(error, context)
    return failure


async def error_response(
    endpoint: Endpoint,
    pipeline: Pipeline,
    context: RequestContext,
    error: Exception,
    headers: dict[str, str],
) -> JsonResponse:
    """The endpoint's error answer, once `on_error` observers (the access log) know."""
    failure = await _reported(pipeline, context, error)
    return JsonResponse(endpoint.error_body(failure), {**failure.headers, **headers}, failure.status_code)
