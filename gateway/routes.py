"""Every route the gateway serves: each endpoint package's, the model list and health.

A new endpoint is a package under `gateway/endpoints/` and one line here.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgspec
from litestar import Request, get
from litestar.handlers import BaseRouteHandler, HTTPRouteHandler
from litestar.types import ASGIApp

from gateway.context import RequestContext
from gateway.endpoints import chat, completions, embeddings, error_response, messages, pipeline_of, responses
from gateway.endpoints.chat.endpoint import ChatEndpoint
from gateway.endpoints.messages.endpoint import MessagesEndpoint
from gateway.endpoints.responses.endpoint import ResponsesEndpoint
from gateway.errors import GatewayError, PermissionDenied
from gateway.http import REQUEST_ID_HEADER, JsonResponse, new_context
from gateway.pipeline import may_use
from gateway.registry import BackendRegistry, ModelEntry
from gateway.responses import ModelCard, ModelList

_encode = msgspec.json.Encoder().encode
_openai_errors = ChatEndpoint()


def model_card(entry: ModelEntry) -> ModelCard:
    stats = getattr(entry.backend, "stats", None)
    return ModelCard(
        id=entry.id,
        created=0,
        owned_by="gateway",
        backend=entry.config.backend,
        aliases=list(entry.config.aliases),
        status=entry.shown_status,
        download_percent=entry.download_percent,
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
async def list_models(request: Request[Any, Any, Any]) -> ASGIApp:
    return await _models(request, None)


@get("/v1/models/{model_id:path}", summary="Describe one model (id or alias)")
async def get_model(request: Request[Any, Any, Any], model_id: str) -> ASGIApp:
    return await _models(request, model_id.lstrip("/"))


async def _models(request: Request[Any, Any, Any], name: str | None) -> ASGIApp:
    """The models the caller may use, or the one named; a failure is in the access log too."""
    pipeline, context = pipeline_of(request), new_context(request, "models")
    headers = {REQUEST_ID_HEADER: context.request_id}
    try:
        await pipeline.identify(context, model=name or "")
        if name is None:
            entries = _registry(request).entries.values()
            answer: Any = ModelList(data=[model_card(e) for e in entries if _allowed(e, context)])
        else:
            entry = _registry(request).resolve(name, lambda e: _allowed(e, context))
            if not _allowed(entry, context):
                raise PermissionDenied(f"This API key may not use the model '{name}'", param="model")
            answer = model_card(entry)
    except Exception as error:  # noqa: BLE001 - every failure becomes an OpenAI error object
        return await error_response(_openai_errors, pipeline, context, error, headers)
    return JsonResponse(_encode(answer), headers)


@get("/health", summary="Liveness")
async def health() -> dict[str, str]:
    return {"status": "ok"}


ROUTES = [
    *chat.ROUTES,
    *responses.ROUTES,
    *messages.ROUTES,
    *completions.ROUTES,
    *embeddings.ROUTES,
    list_models,
    get_model,
    health,
]
SCHEMAS = [
    *chat.SCHEMAS,
    *responses.SCHEMAS,
    *messages.SCHEMAS,
    *completions.SCHEMAS,
    *embeddings.SCHEMAS,
    ModelList,
]


DirectRoute = Callable[[Request[Any, Any, Any]], Awaitable[ASGIApp]]


def direct_routes(handlers: Iterable[BaseRouteHandler]) -> dict[tuple[str, str], DirectRoute]:
    """`(method, path) -> function` of the routes `gateway.middleware.Guard` calls itself,
    past Litestar's router: those of one exact path and one method whose function takes
    only the request and answers with an ASGI app (they read the body and write the
    answer in ASGI themselves), with no guards, dependencies or hooks of their own.
    The router and handler machinery cost about 18 us a request there and did nothing
    for them; Litestar still serves them when a middleware of its own must run (CORS)."""
    direct: dict[tuple[str, str], DirectRoute] = {}
    for handler in handlers:
        if (
            not isinstance(handler, HTTPRouteHandler)
            or len(handler.http_methods) != 1
            or len(handler.paths) != 1
        ):
            continue
        [path], [method] = handler.paths, handler.http_methods
        signature = inspect.signature(handler.fn)
        plain = not (handler.guards or handler.dependencies or handler.middleware)
        plain = plain and not (handler.before_request or handler.after_request or handler.after_response)
        if (
            plain
            and "{" not in path
            and list(signature.parameters) == ["request"]
            and signature.return_annotation in ("ASGIApp", ASGIApp)
        ):
            direct[(method, path)] = handler.fn
    return direct


ErrorBody = Callable[[GatewayError], bytes]
_anthropic_errors = MessagesEndpoint()
# The error object of each route whose API has its own (others answer OpenAI's), for the
# answers `gateway.middleware.Guard` writes itself: draining, request timeout, shutdown.
ERROR_BODIES: dict[str, ErrorBody] = {
    "/v1/messages": _anthropic_errors.error_body,
    "/v1/messages/count_tokens": _anthropic_errors.error_body,
    "/v1/responses": ResponsesEndpoint.error_body,
    "/v1/responses/compact": ResponsesEndpoint.error_body,
}
