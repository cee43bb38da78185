"""Registers the `mlx` backend kind (`backend = "mlx"` in config.toml)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backends.mlx.backend import MLXBackend
from gateway.hookspecs import hookimpl


@hookimpl
def register_backends(register: Callable[[str, Callable[..., Any]], None]) -> None:
    register("mlx", MLXBackend)
