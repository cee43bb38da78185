"""Apps with exactly the plugins a test needs."""

from __future__ import annotations

from typing import Any

from litestar import Litestar

from gateway import create_app, parse_config
from gateway.plugins import new_plugin_manager


def mlx_app(models: dict[str, Any], **server: Any) -> Litestar:
    """The gateway with only the mlx backend registered, serving `models`."""
    from backends.mlx import plugin as mlx_plugin

    manager = new_plugin_manager()
    manager.register(mlx_plugin, name="mlx")
    return create_app(parse_config({"server": server, "models": models}), manager)
