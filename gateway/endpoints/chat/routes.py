"""Chat completions' routes and their OpenAPI description.

The routes read raw bytes and decode them with msgspec (strict types, exact
error paths), so Litestar cannot infer their bodies: the schemas come from
msgspec instead (`SCHEMAS`), carrying every field, type, range and allowed value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Request, post
from litestar.types import ASGIApp

from gateway.endpoints import serve
from gateway.endpoints.chat.endpoint import BenchEndpoint, ChatEndpoint
from gateway.endpoints.chat.wire import BenchChatCompletion, ChatCompletionChunk
from gateway.errors import ErrorResponse
from gateway.openapi import json_operation
from gateway.protocol import ChatCompletionRequest
from gateway.responses import ChatCompletion

SCHEMAS = [ChatCompletionRequest, ChatCompletion, ChatCompletionChunk, BenchChatCompletion, ErrorResponse]
_chat, _bench = ChatEndpoint(), BenchEndpoint()


@dataclass
class ChatOperation(json_operation("ChatCompletionRequest", "ChatCompletion", "ChatCompletionChunk")):
    """Takes a `ChatCompletionRequest`; answers a `ChatCompletion`, or chunks when streamed."""


@dataclass
class BenchOperation(json_operation("ChatCompletionRequest", "BenchChatCompletion")):
    """The bench endpoint never streams and adds `generation_stats`."""


@post(
    "/v1/chat/completions", operation_class=ChatOperation, status_code=200, summary="Create a chat completion"
)
async def chat_completions(request: Request[Any, Any, Any]) -> ASGIApp:
    return await serve(_chat, request)


@post(
    "/bench/chat/completions",
    operation_class=BenchOperation,
    status_code=200,
    summary="Benchmark a chat completion",
)
async def bench_chat_completions(request: Request[Any, Any, Any]) -> ASGIApp:
    """Exactly `max_tokens` tokens (end-of-sequence banned), no prefix cache, plus `generation_stats`."""
    return await serve(_bench, request)


ROUTES = [chat_completions, bench_chat_completions]
