"""ASGI primitives shared by every route: the request context, the body, a JSON answer.

Routes read the body straight from ASGI and answer with two ASGI messages:
Litestar's `Request.body()` and `Response` cost more per request than they give.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from litestar import Request
from litestar.types import Receive, Scope, Send

from gateway.context import RequestContext, client_request_id, new_request_id
from gateway.errors import ClientDisconnected, PayloadTooLarge
from gateway.logs import bind_request_id

JSON = "application/json"
REQUEST_ID_HEADER = "x-request-id"


def new_context(request: Request[Any, Any, Any], endpoint: str) -> RequestContext:
    """A fresh context whose request id every log line of this request carries."""
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


async def read_body(request: Request[Any, Any, Any], headers: dict[str, str]) -> bytes:
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
    """A complete JSON answer as two ASGI messages."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, body: bytes, headers: dict[str, str], status: int = 200) -> None:
        self.body = body
        self.status = status
        self.headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


async def prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`first`, then the rest of the stream (whose first item was read to see it start)."""
    async with aclosing(rest):
        yield first
        async for item in rest:
            yield item
