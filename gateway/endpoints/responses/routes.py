"""The Responses API's routes: create (HTTP and WebSocket), retrieve, delete, compact."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Litestar, Request, delete, get, post
from litestar.types import ASGIApp

from gateway.decoding import decode_body
from gateway.endpoints import error_response, pipeline_of, serve
from gateway.endpoints.responses import compaction
from gateway.endpoints.responses.endpoint import ResponsesEndpoint
from gateway.endpoints.responses.output import item_id, usage_of
from gateway.endpoints.responses.store import ResponseNotFound, ResponseStore, owned, previous_not_found
from gateway.endpoints.responses.translate import input_messages
from gateway.endpoints.responses.wire import (
    CompactionResource,
    CompactRequest,
    CreateResponse,
    DeletedResponse,
    OutputCompaction,
    ResponseResource,
)
from gateway.errors import ErrorResponse, InvalidRequest, PermissionDenied
from gateway.http import REQUEST_ID_HEADER, JsonResponse, new_context, read_body
from gateway.openapi import json_operation
from gateway.pipeline import may_use

SCHEMAS = [
    CreateResponse,
    ResponseResource,
    CompactRequest,
    CompactionResource,
    DeletedResponse,
    ErrorResponse,
]
_encode = msgspec.json.Encoder().encode
_compact_decoder = msgspec.json.Decoder(CompactRequest)
_STATE_KEY = "responses_endpoint"


def endpoint_of(app: Litestar) -> ResponsesEndpoint:
    """The app's Responses endpoint, holding its store (sized from `[server]`)."""
    endpoint: ResponsesEndpoint | None = app.state.get(_STATE_KEY)
    if endpoint is None:
        server = app.state.config.server
        endpoint = ResponsesEndpoint(
            ResponseStore(server.responses_store_max_count, server.responses_store_max_bytes)
        )
        app.state[_STATE_KEY] = endpoint
    return endpoint


@dataclass
class CreateOperation(json_operation("CreateResponse", "ResponseResource")):
    """Takes a `CreateResponse`; answers a `ResponseResource`, or typed events when streamed."""


@dataclass
class CompactOperation(json_operation("CompactRequest", "CompactionResource")):
    """Takes a `CompactRequest`; answers a `CompactionResource`."""


@post("/v1/responses", operation_class=CreateOperation, status_code=200, summary="Create a response")
async def create_response(request: Request[Any, Any, Any]) -> ASGIApp:
    return await serve(endpoint_of(request.app), request)


@get("/v1/responses/{response_id:str}", summary="Retrieve a stored response")
async def retrieve_response(request: Request[Any, Any, Any], response_id: str) -> ASGIApp:
    return await _stored(request, response_id, remove=False)


@delete("/v1/responses/{response_id:str}", status_code=200, summary="Delete a stored response")
async def delete_response(request: Request[Any, Any, Any], response_id: str) -> ASGIApp:
    return await _stored(request, response_id, remove=True)


async def _stored(request: Request[Any, Any, Any], response_id: str, remove: bool) -> ASGIApp:
    """A stored response, for its owner only (another caller is told it does not exist)."""
    endpoint, pipeline = endpoint_of(request.app), pipeline_of(request)
    context = new_context(request, "responses")
    headers = {REQUEST_ID_HEADER: context.request_id}
    try:
        entry = endpoint.store.get(response_id)
        await pipeline.identify(context, model=entry.model if entry else "")
        if entry is None or not owned(entry, context):
            raise ResponseNotFound(response_id)
        if remove:
            endpoint.store.delete(response_id)
            return JsonResponse(_encode(DeletedResponse(response_id)), headers)
    except Exception as error:  # noqa: BLE001 - every failure becomes an OpenAI error object
        return await error_response(endpoint, pipeline, context, error, headers)
    return JsonResponse(entry.body, headers)


@post(
    "/v1/responses/compact",
    operation_class=CompactOperation,
    status_code=200,
    summary="Compact a conversation into one item",
)
async def compact_response(request: Request[Any, Any, Any]) -> ASGIApp:
    """The conversation as one `compaction` item a later request takes as input
    (see `compaction`: it carries the turns themselves, so nothing is generated)."""
    endpoint, pipeline = endpoint_of(request.app), pipeline_of(request)
    context = new_context(request, "responses")
    headers = {REQUEST_ID_HEADER: context.request_id}
    try:
        body: CompactRequest = decode_body(await read_body(request, context.headers), _compact_decoder)
        context.model = body.model
        await pipeline.identify(context, body.model)
        entry = pipeline.registry.resolve(body.model)
        if not may_use(context.identity, entry.id, body.model):
            raise PermissionDenied(f"This API key may not use the model '{body.model}'", param="model")
        previous = endpoint.previous(body.previous_response_id, None)
        if previous is not None and not owned(previous, context):
            raise previous_not_found(body.previous_response_id or "")
        earlier = previous.history() if previous else []
        messages = [*earlier, *input_messages(body.input, earlier)]
        if not messages:
            raise InvalidRequest("'input' must hold at least one item", param="input")
        compaction_id = "cmp_" + context.request_id.removeprefix("req_")
        item = OutputCompaction(item_id("cmp", compaction_id, 0), compaction.pack(messages))
        answer = CompactionResource(compaction_id, [item], int(time.time()), usage_of(None))
    except Exception as error:  # noqa: BLE001 - every failure becomes an OpenAI error object
        return await error_response(endpoint, pipeline, context, error, headers)
    return JsonResponse(_encode(answer), headers)
