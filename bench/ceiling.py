"""The ceiling for gateway overhead: a bare Litestar + msgspec chat endpoint.

It decodes the request and encodes a fixed chat completion, and nothing else,
so the gateway's throughput relative to it is the cost of the gateway itself.
Served by `python -m uvicorn bench.ceiling:app`, like the gateway, by uvicorn.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get, post


class _Message(msgspec.Struct):
    role: str
    content: str


class _Request(msgspec.Struct):
    model: str
    messages: list[_Message]
    max_tokens: int | None = None


_decode = msgspec.json.Decoder(_Request).decode
_encode = msgspec.json.Encoder().encode


def _completion(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-ceiling",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello there"},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


@post("/v1/chat/completions", status_code=200)
async def chat(request: Request[Any, Any, Any]) -> Response[bytes]:
    body = _decode(await request.body())
    return Response(content=_encode(_completion(body.model)), media_type="application/json")


@get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


app = Litestar(route_handlers=[chat, health], logging_config=None, openapi_config=None)
