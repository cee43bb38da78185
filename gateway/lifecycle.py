"""Running requests, graceful drain, and the uvicorn server that serves the app.

`Lifecycle` knows every HTTP request in flight (the `guard` middleware in
`gateway.middleware` registers them). On SIGTERM/SIGINT `GatewayServer` starts a
drain: new requests get 503 with `Retry-After`, `/ready` turns false, running
requests and streams have `server.shutdown_timeout_s` to finish, the rest are
ended (a stream with an error event, others with a 503), and then uvicorn stops:
the app's shutdown unloads models and calls plugins' `gateway_shutdown`, and the
process exits 0. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import signal
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import structlog
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.config import ServerConfig
from gateway.errors import ClientDisconnected, GatewayError

log = structlog.get_logger("gateway.lifecycle")

CLOSE_CONNECTION = "gateway.close_connection"  # scope key: closes the client's connection now


class Flight:
    """One HTTP request in flight, as the middleware sees it."""

    __slots__ = ("cut_reason", "started", "streaming", "task")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.started = False  # the response's headers are sent
        self.streaming = False  # ... and they say text/event-stream
        # Set when it is ended from outside: "shutdown", "request_timeout", "client_disconnected".
        self.cut_reason: str | None = None

    def cut(self, reason: str) -> None:
        """End the request from outside: the middleware answers for it (see `gateway.middleware`)."""
        if self.cut_reason is None and self.task is not None and not self.task.done():
            self.cut_reason = reason
            self.task.cancel(reason)


current_flight: ContextVar[Flight | None] = ContextVar("gateway_flight", default=None)
FLIGHT = "gateway.flight"  # the scope key of a request's `Flight`, for the protocol to cut it


class ShuttingDown(GatewayError):
    status_code = 503
    error_type = "server_error"
    code = "server_shutting_down"


class RequestTimeout(GatewayError):
    status_code = 504
    error_type = "server_error"
    code = "request_timeout"


def cut_error(reason: str) -> GatewayError:
    """What the client is told (or, gone, would have been) of a request ended for `reason`."""
    if reason == "client_disconnected":
        return ClientDisconnected("the client disconnected")
    if reason == "shutdown":
        return ShuttingDown("the server is shutting down; retry shortly", headers={"Retry-After": "5"})
    return RequestTimeout("the request took longer than server.request_timeout_s")


def cut_reason() -> str | None:
    """Why the gateway is ending the current request ("shutdown", "request_timeout"), if it is.

    For code that catches the cancellation (a stream's `except CancelledError`): a
    request ended by the gateway is not a client disconnect."""
    flight = current_flight.get()
    return flight.cut_reason if flight is not None else None


@dataclass
class Lifecycle:
    draining: bool = False
    flights: set[Flight] = field(default_factory=set)

    async def drain(self, timeout_s: float) -> None:
        """Refuse new requests, give running ones `timeout_s`, then end the rest."""
        self.draining = True
        log.info("draining", running=len(self.flights), timeout_s=timeout_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.flights and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.flights:
            log.warning("shutdown timeout: ending running requests", running=len(self.flights))
            for flight in list(self.flights):
                flight.cut("shutdown")
            ended = loop.time() + 5.0
            while self.flights and loop.time() < ended:
                await asyncio.sleep(0.05)
        log.info("drained")


class GatewayServer(uvicorn.Server):
    """uvicorn, with the gateway's drain on the first signal and an exit at the second.

    Exits 0 after a drain (uvicorn would re-raise the signal it caught)."""

    def __init__(
        self, config: uvicorn.Config, lifecycle: Lifecycle, shutdown_timeout_s: float, served: str = ""
    ) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.shutdown_timeout_s = shutdown_timeout_s
        self.served = served
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signalled = False

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: Any = None) -> None:
        """Once the sockets are open, say where (the bound port, also for `--port 0`) and
        what is served."""
        await super().startup(sockets)
        for bound in self.servers if self.started else []:
            for sock in bound.sockets:
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                log.info(f"listening on http://{shown}:{port}", models=self.served)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._signalled or self._loop is None:  # the second signal: now
            log.warning("second signal: exiting now", signal=signal.Signals(sig).name)
            self.should_exit = self.force_exit = True
            return
        log.info("signal: draining", signal=signal.Signals(sig).name)
        self._signalled = True
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        async def drain_then_exit() -> None:
            try:
                await self.lifecycle.drain(self.shutdown_timeout_s)
            finally:
                self.should_exit = True

        self._drain = asyncio.ensure_future(drain_then_exit())  # held: the loop keeps a weak reference


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with slow-client timeouts: the headers must arrive
    within `header_timeout_s` (slowloris), each piece of the body within
    `body_timeout_s` (else 408), and a client that stops reading (the send
    buffer stays full for `write_timeout_s`) is disconnected, so the request ends
    as a disconnect and its slot is freed. No cost per write: the timer runs only
    while the transport has paused writing. `CLOSE_CONNECTION` in the scope lets
    the app close the connection."""

    header_timeout_s = 10.0
    body_timeout_s = 30.0
    write_timeout_s = 30.0

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._write_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._reading_body = self._in_headers = False
        self._header_timer: asyncio.TimerHandle | None = self.loop.call_later(
            self.header_timeout_s, self._headers_too_slow
        )

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Headers or a body still incomplete after this read get a deadline; a request
        # that arrived whole (the usual case) never starts a timer.
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if self._reading_body:
            self._body_timer = self.loop.call_later(self.body_timeout_s, self._body_too_slow)
        elif self._in_headers and self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def on_message_complete(self) -> None:
        self._reading_body = False
        super().on_message_complete()

    def _body_too_slow(self) -> None:
        """408 with an OpenAI error object, then the connection closes; the request sees
        a disconnect (the rest of the body could only trickle in after the answer)."""
        self._body_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or not self._reading_body:
            return
        log.info("connection closed: request body too slow", timeout_s=self.body_timeout_s)
        if cycle is not None and not cycle.response_started:
            message = f"the request body did not arrive within {self.body_timeout_s:g}s"
            body = b'{"error":{"message":"%s","type":"invalid_request_error","param":null,"code":"body_timeout"}}'
            body %= message.encode()
            head = (
                "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            self.transport.write(head.encode() + body)
        if cycle is not None:  # the app sees a disconnect; what it sends now is dropped
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_timeout_s, self._reader_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _reader_stalled(self) -> None:
        self._write_timer = None
        if not self.transport.is_closing():
            log.info("connection closed: the client stopped reading", timeout_s=self.write_timeout_s)
            self.transport.abort()  # `close` would wait for the buffer to drain: never

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True  # the next request on a kept-alive connection: see data_received

    def on_headers_complete(self) -> None:
        self._in_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self.scope[CLOSE_CONNECTION] = self.transport.abort  # type: ignore[typeddict-unknown-key]
        super().on_headers_complete()
        self._reading_body = True  # until on_message_complete

    def connection_lost(self, exc: Exception | None) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            flight = cycle.scope.get(FLIGHT)  # type: ignore[call-overload]
            if flight is not None:  # nobody will read the answer: stop the work
                flight.cut("client_disconnected")
        for timer in (self._header_timer, self._write_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._write_timer = self._body_timer = None
        super().connection_lost(exc)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.info("connection closed: headers too slow", timeout_s=self.header_timeout_s)
            self.transport.close()


def uvicorn_config(app: Any, server: ServerConfig, **overrides: Any) -> uvicorn.Config:
    """uvicorn's settings from `[server]`: timeouts, no logging config of its own (its
    lines go through structlog, see `gateway.logs`), no access log (the gateway's is)."""
    timeouts = {
        "header_timeout_s": server.header_timeout_s,
        "body_timeout_s": server.body_timeout_s,
        "write_timeout_s": server.write_timeout_s,
    }
    protocol = type("GatewayHttpProtocol", (GuardedHttpToolsProtocol,), timeouts)
    settings: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "http": protocol,
        "log_config": None,
        "log_level": "warning",
        "access_log": False,
        "timeout_keep_alive": server.keep_alive_timeout_s,
        "timeout_graceful_shutdown": 5,
        "h11_max_incomplete_event_size": 64 * 1024,
    }
    settings.update(overrides)
    return uvicorn.Config(app, **settings)


def serve(app: Any, server: ServerConfig, served: str = "") -> None:
    """Run `app` until SIGTERM/SIGINT, draining first (see the module docstring);
    `served` (the models) goes into the `listening on` line."""
    GatewayServer(uvicorn_config(app, server), app.state.lifecycle, server.shutdown_timeout_s, served).run()
