"""Registers the `openai` backend kind (built-in plugin "openai")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backends.upstream.backend import OpenAIUpstreamBackend
from gateway import hookimpl


@hookimpl
def register_backends(register: Callable[[str, Callable[..., Any]], None]) -> None:
    register("openai", OpenAIUpstreamBackend)
