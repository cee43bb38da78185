"""HTTP routes: thin handlers that parse, call the service, and encode.

Handlers know nothing of models or plugins; `ChatService` does the work.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import ASGIApp, Receive, Scope, Send

from gateway.context import RequestContext, client_request_id, new_request_id
from gateway.errors import ClientDisconnected, GatewayError, PayloadTooLarge, PermissionDenied, internal_error
from gateway.keepalive import start_stream  # ops (issue 13)
from gateway.logs import bind_request_id
from gateway.openapi import BenchOperation, ChatOperation
from gateway.registry import BackendRegistry, ModelEntry
from gateway.responses import ModelCard, ModelList
from gateway.service import ChatService, may_use

_encode = msgspec.json.Encoder().encode
JSON = "application/json"
REQUEST_ID_HEADER = "x-request-id"


def _service(request: Request[Any, Any, Any]) -> ChatService:
    return request.app.state.service  # type: ignore[no-any-return]


def _context(request: Request[Any, Any, Any], endpoint: str) -> RequestContext:
    # From the raw ASGI headers: cheaper than building Litestar's multi-dict per request.
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in request.scope["headers"]
    }
    context = RequestContext(
        request_id=new_request_id(),
        endpoint=endpoint,
        headers=headers,
        client_request_id=client_request_id(headers),
    )
    bind_request_id(context.request_id)
    return context


async def _body(request: Request[Any, Any, Any], headers: dict[str, str]) -> bytes:
    """The whole body, read straight from ASGI (Litestar's reader parses the headers again)."""
    limit = request.app.state.config.server.max_body_bytes
    announced = headers.get("content-length", "")
    if announced.isdigit() and int(announced) > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes")
    chunks, size = [], 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class JsonResponse:
    """A complete JSON answer as two ASGI messages (Litestar's `Response` costs more per request)."""

    __slots__ = ("body", "headers")

    def __init__(self, body: bytes, headers: dict[str, str]) -> None:
        self.body = body
        self.headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async with aclosing(rest):
        yield first
        async for item in rest:
            yield item


async def _chat(request: Request[Any, Any, Any], endpoint: str) -> ASGIApp:
    service = _service(request)
    context = _context(request, endpoint)
    headers = {REQUEST_ID_HEADER: context.request_id}
    try:
        prepared = await service.prepare(await _body(request, context.headers), context)
        if endpoint == "bench":
            content = _encode(await service.bench(prepared, context))
        elif prepared.request.stream:
            events = service.stream(prepared, context)
            weakref.finalize(events, prepared.lease.release)  # even if never iterated
            # ops (issue 13): keep-alive comments while the first event is slow; errors before
            # any output keep their HTTP status unless the keep-alive has started the stream.
            first, rest = await start_stream(
                events, service.config.server.sse_keepalive_s, _error_event(service, context, headers)
            )
            # The ASGI response itself: Litestar would give a `Stream` the route's JSON media type.
            return ASGIStreamingResponse(
                iterator=_prepend(first, rest) if first is not None else rest,  # ops (issue 13)
                media_type="text/event-stream",
                headers={**headers, "cache-control": "no-cache"},
            )
        else:
            content = _encode(await service.complete(prepared, context))
    except Exception as error:  # noqa: BLE001 - every failure becomes an OpenAI error object
        failure = await _failure(service, context, error, headers)
        raise failure from (None if failure is error else error)
    return JsonResponse(content, headers)


def _error_event(service: ChatService, context: RequestContext, headers: dict[str, str]) -> Any:
    """ops (issue 13): the SSE error event for a failure after the keep-alive started the stream."""

    async def event(error: Exception) -> bytes:
        return b"data: " + _encode((await _failure(service, context, error, headers)).to_response()) + b"\n\n"

    return event


async def _failure(
    service: ChatService, context: RequestContext, error: Exception, headers: dict[str, str]
) -> GatewayError:
    """The OpenAI error to answer with, once `on_error` observers (the access log) know."""
    failure = error if isinstance(error, GatewayError) else internal_error()
    context.status_code = failure.status_code
    await service.fail(error, context)
    failure.headers.update(headers)
    return failure


@post(
    "/v1/chat/completions", operation_class=ChatOperation, status_code=200, summary="Create a chat completion"
)
async def chat_completions(request: Request[Any, Any, Any]) -> ASGIApp:
    return await _chat(request, "chat")


@post(
    "/bench/chat/completions",
    operation_class=BenchOperation,
    status_code=200,
    summary="Benchmark a chat completion",
)
async def bench_chat_completions(request: Request[Any, Any, Any]) -> ASGIApp:
    """Exactly `max_tokens` tokens (end-of-sequence banned), no prefix cache, plus `generation_stats`."""
    return await _chat(request, "bench")


def model_card(entry: ModelEntry) -> ModelCard:
    stats = getattr(entry.backend, "stats", None)
    return ModelCard(
        id=entry.id,
        created=0,
        owned_by="gateway",
        backend=entry.config.backend,
        aliases=list(entry.config.aliases),
        status=entry.status,
        pinned=entry.config.pin,
        memory_bytes=entry.memory_bytes,
        active_requests=entry.active,
        queued_requests=entry.admission.queued,
        backend_stats=stats() if stats is not None else {},
    )


def _registry(request: Request[Any, Any, Any]) -> BackendRegistry:
    return request.app.state.registry  # type: ignore[no-any-return]


def _allowed(entry: ModelEntry, context: RequestContext) -> bool:
    return may_use(context.identity, entry.id, *entry.config.aliases)


@get("/v1/models", summary="List the models the caller may use")
async def list_models(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _models(request, None)


@get("/v1/models/{model_id:path}", summary="Describe one model (id or alias)")
async def get_model(request: Request[Any, Any, Any], model_id: str) -> Response[Any]:
    return await _models(request, model_id.lstrip("/"))


async def _models(request: Request[Any, Any, Any], name: str | None) -> Response[Any]:
    """The models the caller may use, or the one named; a failure is in the access log too."""
    service, context = _service(request), _context(request, "models")
    headers = {REQUEST_ID_HEADER: context.request_id}
    try:
        await service.identify(context, model=name or "")
        if name is None:
            entries = _registry(request).entries.values()
            answer: Any = ModelList(data=[model_card(e) for e in entries if _allowed(e, context)])
        else:
            entry = _registry(request).resolve(name)
            if not _allowed(entry, context):
                raise PermissionDenied(f"This API key may not use the model '{name}'", param="model")
            answer = model_card(entry)
    except Exception as error:  # noqa: BLE001 - every failure becomes an OpenAI error object
        failure = await _failure(service, context, error, headers)
        raise failure from (None if failure is error else error)
    return Response(content=_encode(answer), media_type=JSON, headers=headers)


@get("/health", summary="Liveness")
async def health() -> dict[str, str]:
    return {"status": "ok"}


ROUTES = [chat_completions, bench_chat_completions, list_models, get_model, health]
