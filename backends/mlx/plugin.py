"""Registers the `mlx` backend kind (`backend = "mlx"` in config.toml).

At start-up, when any configured model uses MLX, the fast system BLAS is
preloaded (before anything imports mlx) and the outcome logged once, with the
install hint when it is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from backends.mlx.backend import MLXBackend
from gateway import GatewayConfig, hookimpl

log = structlog.get_logger("backends.mlx")


@hookimpl
def register_backends(register: Callable[[str, Callable[..., Any]], None]) -> None:
    register("mlx", MLXBackend)


@hookimpl
def gateway_startup(config: GatewayConfig) -> None:
    models = [model for model in config.models.values() if model.backend == "mlx"]
    if not models:
        return
    from backends.mlx.blas import use_fast_blas

    enabled = all(model.options.get("fast_blas", True) is not False for model in models)
    result = use_fast_blas(enabled)
    log.info("mlx fast BLAS", status=result.status, detail=result.message)
