"""The Messages routes: `/v1/messages` and `/v1/messages/count_tokens`, and their OpenAPI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request, post
from litestar.types import ASGIApp

from gateway.decoding import decode_body
from gateway.endpoints import error_response, pipeline_of, serve
from gateway.endpoints.messages.endpoint import MessagesEndpoint
from gateway.endpoints.messages.translate import count_request
from gateway.endpoints.messages.wire import (
    AnthropicError,
    AnthropicMessage,
    CountTokensRequest,
    MessagesRequest,
    MessageStart,
    MessageTokensCount,
)
from gateway.http import REQUEST_ID_HEADER, JsonResponse, new_context, read_body
from gateway.openapi import json_operation

SCHEMAS = [
    MessagesRequest,
    AnthropicMessage,
    MessageStart,
    CountTokensRequest,
    MessageTokensCount,
    AnthropicError,
]
_messages = MessagesEndpoint()
_count_decoder = msgspec.json.Decoder(CountTokensRequest)
_encode = msgspec.json.Encoder().encode


@dataclass
class MessagesOperation(
    json_operation("MessagesRequest", "AnthropicMessage", "MessageStart", "AnthropicError")
):
    """Takes a `MessagesRequest`; answers a `message`, or typed events when streamed
    (`MessageStart` first)."""


@dataclass
class CountTokensOperation(
    json_operation("CountTokensRequest", "MessageTokensCount", None, "AnthropicError")
):
    """The prompt's token count, as the model's backend renders and tokenizes it."""


@post("/v1/messages", operation_class=MessagesOperation, status_code=200, summary="Create a message")
async def create_message(request: Request[Any, Any, Any]) -> ASGIApp:
    return await serve(_messages, request)


@post(
    "/v1/messages/count_tokens",
    operation_class=CountTokensOperation,
    status_code=200,
    summary="Count a message's prompt tokens",
)
async def count_tokens(request: Request[Any, Any, Any]) -> ASGIApp:
    pipeline, context = pipeline_of(request), new_context(request, "count_tokens")
    headers = {REQUEST_ID_HEADER: context.request_id}
    try:
        body = decode_body(await read_body(request, context.headers), _count_decoder)
        tokens = await pipeline.count_tokens(count_request(body), context)
    except Exception as error:  # noqa: BLE001 - every failure becomes an Anthropic error object
        return await error_response(_messages, pipeline, context, error, headers)
    return JsonResponse(_encode(MessageTokensCount(tokens)), headers)


ROUTES = [create_message, count_tokens]
