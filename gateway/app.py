"""`create_app(config, plugin_manager=None)`: the Litestar application.

No global state: each call builds its own plugin manager (unless given one),
backend registry and service, kept on `app.state`.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pluggy
import structlog
from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig

from gateway.config import GatewayConfig
from gateway.errors import GatewayError, internal_error
from gateway.hooks import HookRunner
from gateway.openapi import add_wire_schemas
from gateway.plugins import check_plugins, default_plugin_manager
from gateway.registry import BackendFactory, BackendRegistry
from gateway.routes import ROUTES
from gateway.service import ChatService

log = structlog.get_logger("gateway.app")
_encode = msgspec.json.Encoder().encode

_HTTP_ERRORS: dict[int, tuple[str, str]] = {
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
}


def collect_backends(manager: pluggy.PluginManager) -> dict[str, BackendFactory]:
    factories: dict[str, BackendFactory] = {}

    def register(kind: str, factory: BackendFactory) -> None:
        factories[kind] = factory

    manager.hook.register_backends(register=register)
    return factories


def _error_response(error: GatewayError) -> Response[Any]:
    return Response(
        content=_encode(error.to_response()),
        status_code=error.status_code,
        media_type="application/json",
        headers=error.headers,
    )


def _on_gateway_error(_: Request[Any, Any, Any], error: GatewayError) -> Response[Any]:
    return _error_response(error)


def _on_http_error(_: Request[Any, Any, Any], error: HTTPException) -> Response[Any]:
    error_type, code = _HTTP_ERRORS.get(error.status_code, ("invalid_request_error", "http_error"))
    failure = GatewayError(error.detail, code=code)
    failure.status_code, failure.error_type = error.status_code, error_type
    return _error_response(failure)


def _on_unexpected_error(_: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    log.error("unhandled error", exc_info=error)
    return _error_response(internal_error())


def create_app(config: GatewayConfig, plugin_manager: pluggy.PluginManager | None = None) -> Litestar:
    manager = plugin_manager or default_plugin_manager(config.plugins)
    check_plugins(manager)
    registry = BackendRegistry(config, collect_backends(manager))
    hooks = HookRunner(manager)
    service = ChatService(config, registry, hooks)

    async def startup() -> None:
        await hooks.call_all("gateway_startup", config=config)
        await registry.preload()

    async def shutdown() -> None:
        await hooks.call_all("gateway_shutdown")
        await registry.close()

    app = Litestar(
        route_handlers=ROUTES,
        on_startup=[startup],
        on_shutdown=[shutdown],
        exception_handlers={
            GatewayError: _on_gateway_error,
            HTTPException: _on_http_error,
            Exception: _on_unexpected_error,
        },
        request_max_body_size=config.server.max_body_bytes,
        openapi_config=OpenAPIConfig(title="gateway", version="0.1.0", path="/schema"),
        state=State({"config": config, "plugin_manager": manager, "registry": registry, "service": service}),
        logging_config=None,
    )
    add_wire_schemas(app)
    return app
