"""The ASGI layer around the whole app (404s and 405s included): what every HTTP
request gets, whatever route answers it.

- an `x-request-id` on every response (routes that make their own keep theirs);
- 503 with `Retry-After` while the server drains (probes and /metrics still answer);
- `server.request_timeout_s` and the drain's deadline: a request ended from outside
  answers 504/503, or, when its stream has started, an error event;
- those answers in the route's own format: its API's error object
  (`gateway.routes.ERROR_BODIES`, OpenAI's elsewhere) and its stream's error event
  (the `StreamWriter.error` the endpoint put in the scope);
- HTTP metrics by route template and status;
- the API's hot routes (`gateway.routes.direct_routes`) called straight from here,
  past Litestar's router and handler machinery (unless CORS is on: its middleware
  sits inside Litestar's handler).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from litestar import Request
from litestar.datastructures import State
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from gateway.context import new_request_id
from gateway.endpoints import STREAM_ERROR
from gateway.errors import GatewayError, internal_error
from gateway.lifecycle import CLOSE_CONNECTION, FLIGHT, Flight, ShuttingDown, current_flight, cut_error
from gateway.logs import bind_request_id

try:  # private in Litestar: where it is missing, every request goes through Litestar's router
    from litestar._asgi.utils import is_valid_host
except ImportError:  # pragma: no cover - depends on the installed Litestar

    def is_valid_host(host: bytes) -> bool:
        return False


if TYPE_CHECKING:
    from gateway.routes import DirectRoute, ErrorBody

log = structlog.get_logger("gateway.middleware")
_encode = msgspec.json.Encoder().encode
PROBES = frozenset({"/health", "/ready", "/metrics"})  # answered while draining, never cut
_REQUEST_ID = b"x-request-id"
_EVENT_STREAM = b"text/event-stream"


class Guard:
    """Wraps Litestar's ASGI handler (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        state: State,
        direct: dict[tuple[str, str], DirectRoute],
        error_bodies: dict[str, ErrorBody],
    ) -> None:
        self.app = app
        self.state = state  # its config changes on reload; its lifecycle and metrics never do
        self.lifecycle = state.lifecycle
        self.metrics = state.metrics
        self.direct = direct  # (method, path) -> route function, called without the router
        self.error_bodies = error_bodies  # path -> its API's error object (default: OpenAI's)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lifecycle, metrics = self.lifecycle, self.metrics
        path = scope["path"]
        probe = path in PROBES
        if lifecycle.draining and not probe:
            refused = ShuttingDown("the server is shutting down", headers={"Retry-After": "5"})
            await _answer(send, refused, self.error_bodies.get(path, _openai_error))
            if metrics is not None:
                metrics.http_request("draining", 503)
            return
        admin_request_id: bytes | None = None
        if path.startswith("/admin"):  # its log lines carry the id the response will have
            admin_request_id = new_request_id().encode()
            bind_request_id(admin_request_id.decode())
        flight = Flight(asyncio.current_task())
        current_flight.set(flight)
        scope[FLIGHT] = flight  # type: ignore[literal-required]
        status = 0

        async def guarded_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", ())
                has_id = False
                for name, value in headers:  # ASGI header names are lower case
                    if name == _REQUEST_ID:
                        has_id = True
                    elif name == b"content-type":
                        flight.streaming = value.startswith(_EVENT_STREAM)
                if not has_id:
                    request_id = admin_request_id or new_request_id().encode()
                    message = {**message, "headers": [*headers, (_REQUEST_ID, request_id)]}
                flight.started = True
            await send(message)

        timer = None
        if not probe:
            lifecycle.flights.add(flight)
            limit = self.state.config.server.request_timeout_s
            if limit is not None:
                timer = asyncio.get_running_loop().call_later(limit, flight.cut, "request_timeout")
        try:
            route = self.direct.get((scope["method"], path))
            if route is not None and not scope.get("root_path") and _valid_host(scope):
                await _call_direct(
                    route, scope, receive, guarded_send, flight, self.error_bodies.get(path, _openai_error)
                )
            else:
                await self.app(scope, receive, guarded_send)
        except asyncio.CancelledError:
            if flight.cut_reason is None or flight.task is None:
                raise
            flight.task.uncancel()
            if flight.cut_reason == "client_disconnected":
                status = 499  # nobody to answer
            else:
                error_body = self.error_bodies.get(path, _openai_error)
                status = await _end(flight, send, scope, cut_error(flight.cut_reason), error_body)
        finally:
            if timer is not None:
                timer.cancel()
            lifecycle.flights.discard(flight)
        if metrics is not None:
            metrics.http_request(scope.get("path_template") or "unmatched", status)


_VALID_HOSTS: set[bytes] = set()  # seen and valid: a set lookup instead of a regex each time


def _valid_host(scope: Scope) -> bool:
    """Litestar's router refuses a malformed `Host` (400): the direct routes leave that to it."""
    for name, value in scope["headers"]:
        if name == b"host":
            if value in _VALID_HOSTS:
                return True
            if not is_valid_host(value):
                return False
            if len(_VALID_HOSTS) < 64:  # a server has a few names; a client cannot grow this
                _VALID_HOSTS.add(value)
            return True
    return True


async def _call_direct(
    route: DirectRoute, scope: Scope, receive: Receive, send: Send, flight: Flight, error_body: ErrorBody
) -> None:
    """What Litestar's router and handler would do for a direct route. The route answers
    every error itself; anything else is a bug, answered as Litestar's handler would."""
    scope["path_template"] = scope["path"]  # type: ignore[typeddict-unknown-key]
    scope["path_params"] = {}
    try:
        answer = await route(Request(scope, receive, send))
        await answer(scope, receive, send)
    except Exception as error:
        if flight.started:
            raise  # as after Litestar's handler: uvicorn logs it and closes the connection
        log.error("unhandled error", exc_info=error)
        await _answer(send, internal_error(), error_body)


def _openai_error(error: GatewayError) -> bytes:
    return _encode(error.to_response())


def _openai_event(error: GatewayError) -> bytes:
    return b"data: " + _encode(error.to_response()) + b"\n\n"


async def _answer(send: Send, error: GatewayError, error_body: ErrorBody = _openai_error) -> None:
    body = error_body(error)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (_REQUEST_ID, new_request_id().encode()),
        *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in error.headers.items()),
    ]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _end(flight: Flight, send: Send, scope: Scope, error: GatewayError, error_body: ErrorBody) -> int:
    """Answer for a request the gateway ended: its status, as far as the client sees it."""
    log.warning("request ended", reason=flight.cut_reason, streaming=flight.streaming)
    if not flight.started:
        await _answer(send, error, error_body)
        return error.status_code
    if flight.streaming:
        event = scope.get(STREAM_ERROR, _openai_event)(error)  # type: ignore[call-overload]
        await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return 200
    close = scope.get(CLOSE_CONNECTION)  # a JSON answer half sent: nothing sensible to add
    if close is not None:
        close()
    return 200


def install(
    app: Any, state: State, direct: dict[tuple[str, str], DirectRoute], error_bodies: dict[str, ErrorBody]
) -> None:
    """Put `Guard` around the app's whole ASGI handler (routing and error handling included);
    `direct` routes are called from it (unless CORS is on)."""
    app.asgi_handler = Guard(app.asgi_handler, state, {} if app.cors_config else direct, error_bodies)
