"""The legacy completions route and its OpenAPI description."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Request, post
from litestar.types import ASGIApp

from gateway.endpoints import serve
from gateway.endpoints.completions.endpoint import CompletionsEndpoint
from gateway.endpoints.completions.wire import CompletionCreate, TextCompletion
from gateway.openapi import json_operation

SCHEMAS = [CompletionCreate, TextCompletion]
_completions = CompletionsEndpoint()


@dataclass
class CompletionOperation(json_operation("CompletionCreate", "TextCompletion", "TextCompletion")):
    """Takes a `CompletionCreate`; answers a `TextCompletion`, or chunks of one when streamed."""


@post("/v1/completions", operation_class=CompletionOperation, status_code=200, summary="Create a completion")
async def completions(request: Request[Any, Any, Any]) -> ASGIApp:
    """A raw prompt continued (no chat template), OpenAI's legacy completions API."""
    return await serve(_completions, request)


ROUTES = [completions]
