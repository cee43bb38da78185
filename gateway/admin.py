"""Operator endpoints: load and unload a model, reload config.toml.

Guarded by `server.admin_key` (a Bearer token) when set; otherwise only
loopback clients may call them.
"""

from __future__ import annotations

import hmac
from typing import Any

import msgspec
import structlog
from litestar import Request, Response, post

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.errors import AuthenticationFailed, GatewayError, InvalidRequest, PermissionDenied
from gateway.http import JSON
from gateway.plugin_set import PluginSet
from gateway.plugins import default_plugin_manager
from gateway.registry import BackendRegistry
from gateway.routes import model_card

log = structlog.get_logger("gateway.admin")
_encode = msgspec.json.Encoder().encode
_LOOPBACK = ("127.", "::1", "localhost")


class ModelBusy(GatewayError):
    status_code = 409
    error_type = "invalid_request_error"
    code = "model_busy"


def check_admin(request: Request[Any, Any, Any], *, log_success: bool = True) -> None:
    """Admin key (Bearer, any case of the scheme) or, with none set, a loopback caller.

    Every call is logged with its caller's address: refusals as warnings."""
    key = request.app.state.config.server.admin_key
    host = request.client.host if request.client else ""
    where = {"path": request.url.path, "method": request.method, "client": host}
    if key is None:
        if not host.startswith(_LOOPBACK):
            log.warning("admin call refused", reason="not loopback", **where)
            raise PermissionDenied(
                "admin endpoints answer loopback clients only unless server.admin_key is set",
                code="admin_only",
            )
        if log_success:
            log.info("admin call", caller="loopback", **where)
        return
    if not hmac.compare_digest(bearer_token(request.headers.get("authorization", "")).encode(), key.encode()):
        log.warning("admin call refused", reason="invalid admin key", **where)
        raise AuthenticationFailed("a valid admin key is required", code="invalid_admin_key")
    if log_success:
        log.info("admin call", caller="admin key", **where)


def bearer_token(authorization: str) -> str:
    """The token of an `Authorization: Bearer <token>` header (the scheme in any case)."""
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _registry(request: Request[Any, Any, Any]) -> BackendRegistry:
    return request.app.state.registry  # type: ignore[no-any-return]


@post("/admin/load/{model_id:path}", status_code=200, summary="Load a model now")
async def load_model(request: Request[Any, Any, Any], model_id: str) -> Response[Any]:
    check_admin(request)
    entry = _registry(request).resolve(model_id.lstrip("/"))
    await _registry(request).backend(entry)
    return Response(content=_encode(model_card(entry)), media_type=JSON)


@post("/admin/unload/{model_id:path}", status_code=200, summary="Unload an idle model")
async def unload_model(request: Request[Any, Any, Any], model_id: str) -> Response[Any]:
    check_admin(request)
    entry = _registry(request).resolve(model_id.lstrip("/"))
    if entry.active:
        raise ModelBusy(f"model '{entry.id}' is serving {entry.active} requests; retry when idle")
    await _registry(request).unload(entry)
    return Response(content=_encode(model_card(entry)), media_type=JSON)


@post("/admin/reload", status_code=200, summary="Re-read the config file")
async def reload(request: Request[Any, Any, Any]) -> Response[Any]:
    check_admin(request)
    try:
        config = await reload_config(request.app.state)
    except ConfigError as error:
        raise InvalidRequest(f"config not reloaded: {error}", code="invalid_config") from None
    return Response(content=_encode({"models": sorted(config.models)}), media_type=JSON)


async def reload_config(state: Any) -> GatewayConfig:
    """Re-read the config file into the running app: models, server settings and,
    unless the app was given its plugin manager, plugins and their settings.

    The new plugins start before anything changes; on error the old config and
    plugins stay. Rate-limit buckets and other plugin state start afresh.
    """
    path = state.config_path
    if path is None:
        raise ConfigError("this server was started without a config file")
    async with state.reload_lock:  # a SIGHUP and a POST at once: one after the other
        old = state.plugins
        plugins = old
        try:
            config = load_config(path)
            if state.rebuild_plugins:
                manager = default_plugin_manager(config)
                plugins = PluginSet.build(manager)
                await plugins.start(config)
            state.registry.reconfigure(config, plugins.backends)
        except ConfigError as error:
            if plugins is not old:
                await plugins.stop()
            log.error("config reload rejected; keeping the old config", path=str(path), error=str(error))
            raise
        state.config = state.pipeline.config = config
        state.plugins, state.pipeline.hooks = plugins, plugins.hooks
        if plugins is not old:
            await old.stop()
    log.info("config reloaded", path=str(path), models=sorted(config.models))
    return config


ADMIN_ROUTES = [load_model, unload_model, reload]
