"""`create_app(config, plugin_manager=None)`: the Litestar application.

No global state: each call builds its own plugin manager (unless given one),
backend registry and service, kept on `app.state`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

import msgspec
import pluggy
import structlog
from litestar import Litestar, Request, Response
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException
from litestar.openapi import OpenAPIConfig

from gateway.admin import ADMIN_ROUTES, reload_config
from gateway.config import ConfigError, GatewayConfig
from gateway.errors import GatewayError, internal_error
from gateway.lifecycle import Lifecycle
from gateway.logs import flush_records
from gateway.metrics import Metrics
from gateway.middleware import install
from gateway.openapi import add_wire_schemas
from gateway.ops_routes import metrics, ready
from gateway.pipeline import Pipeline
from gateway.plugin_set import PluginSet
from gateway.plugins import default_plugin_manager
from gateway.registry import BackendRegistry
from gateway.routes import ERROR_BODIES, ROUTES, SCHEMAS, direct_routes

log = structlog.get_logger("gateway.app")
_encode = msgspec.json.Encoder().encode

_HTTP_ERRORS: dict[int, tuple[str, str]] = {
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
}


def _error_response(error: GatewayError) -> Response[Any]:
    return Response(
        content=_encode(error.to_response()),
        status_code=error.status_code,
        media_type="application/json",
        headers=error.headers,
    )


def _on_gateway_error(_: Request[Any, Any, Any], error: GatewayError) -> Response[Any]:
    return _error_response(error)


def _on_http_error(request: Request[Any, Any, Any], error: HTTPException) -> Response[Any]:
    error_type, code = _HTTP_ERRORS.get(error.status_code, ("invalid_request_error", "http_error"))
    message = error.detail
    if isinstance(error, NotFoundException) and not request.scope.get("route_handler"):
        message = f"Unknown route {request.method} {request.url.path}; this gateway serves {_route_list(request)}"
    failure = GatewayError(message, code=code, headers=dict(error.headers or {}))  # 405: Allow
    failure.status_code, failure.error_type = error.status_code, error_type
    return _error_response(failure)


def _route_list(request: Request[Any, Any, Any]) -> str:
    """The API routes, as "POST /v1/chat/completions, ..." (the OpenAPI pages left out)."""
    routes = sorted(
        (route.path, method)
        for route in request.app.routes
        if not route.path.startswith("/schema")
        for method in getattr(route, "methods", ())
        if method not in ("HEAD", "OPTIONS")
    )
    return ", ".join(f"{method} {path.replace(':path}', '}')}" for path, method in routes)


def _on_unexpected_error(_: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    log.error("unhandled error", exc_info=error)
    return _error_response(internal_error())


def create_app(
    config: GatewayConfig,
    plugin_manager: pluggy.PluginManager | None = None,
    *,
    config_path: str | os.PathLike[str] | None = None,
) -> Litestar:
    """The gateway app. `config_path` enables reloading (SIGHUP, `POST /admin/reload`)."""
    manager = plugin_manager or default_plugin_manager(config)
    plugins = PluginSet.build(manager)
    registry = BackendRegistry(config, plugins.backends)
    gauges = Metrics(registry) if config.server.metrics else None
    if gauges is not None:
        registry.on_queue_wait, registry.on_loaded = gauges.queue_wait, gauges.model_loaded
    pipeline = Pipeline(config, registry, plugins.hooks, gauges)
    state = State(
        {
            "config": config,
            "config_path": config_path,
            "plugins": plugins,
            "rebuild_plugins": plugin_manager is None,  # a manager passed in is the caller's to change
            "reload_lock": asyncio.Lock(),
            "registry": registry,
            "pipeline": pipeline,
            "lifecycle": Lifecycle(),
            "metrics": gauges,
        }
    )
    background: set[asyncio.Task[None]] = set()

    async def startup() -> None:
        await state.plugins.start(config)
        await registry.preload()
        background.add(asyncio.create_task(_unload_idle_models(state)))
        _reload_on_sighup(state, background)

    async def shutdown() -> None:
        for task in background:
            task.cancel()
        await state.plugins.stop()
        await registry.close()
        flush_records()  # the access log's last lines (see `gateway.logs.write_records`)

    app = Litestar(
        route_handlers=[*ROUTES, *ADMIN_ROUTES, ready, *([metrics] if gauges is not None else [])],
        cors_config=CORSConfig(allow_origins=config.server.cors_origins)
        if config.server.cors_origins
        else None,
        on_startup=[startup],
        on_shutdown=[shutdown],
        exception_handlers={
            GatewayError: _on_gateway_error,
            HTTPException: _on_http_error,
            Exception: _on_unexpected_error,
        },
        request_max_body_size=config.server.max_body_bytes,
        openapi_config=OpenAPIConfig(title="gateway", version="0.1.0", path="/schema"),
        state=state,
        logging_config=None,
    )
    add_wire_schemas(app, SCHEMAS)
    install(app, state, direct_routes(ROUTES), ERROR_BODIES)  # ids, drain, timeouts, metrics; the hot routes
    return app


async def _unload_idle_models(state: State) -> None:
    """Once a second, unload models idle past their TTL."""
    while True:
        await asyncio.sleep(1.0)
        try:
            await state.registry.unload_idle(state.config.server.model_ttl_s)
        except Exception:
            log.exception("idle unload failed")


def _reload_on_sighup(state: State, tasks: set[asyncio.Task[None]]) -> None:
    if state.config_path is None or not hasattr(signal, "SIGHUP"):
        return

    async def reload() -> None:
        with contextlib.suppress(ConfigError):  # logged; the old config stays
            await reload_config(state)

    def start_reload() -> None:
        task = loop.create_task(reload())
        tasks.add(task)  # held until done: the loop keeps only a weak reference
        task.add_done_callback(tasks.discard)

    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, start_reload)
    except (RuntimeError, ValueError, NotImplementedError):
        log.info("SIGHUP reload unavailable here (not the main thread); use POST /admin/reload")
