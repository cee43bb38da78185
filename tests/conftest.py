"""Shared fixtures: configs, apps with exactly the plugins a test needs, real servers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import openai
import pluggy
import pytest

from backends import echo
from gateway import create_app, parse_config
from gateway.config import GatewayConfig
from gateway.plugins import new_plugin_manager
from tests.support.server import running_server

os.environ["HF_HUB_OFFLINE"] = "1"

SEED_MODEL = "mlx-community/Llama-3.2-1B-Instruct-4bit"


def echo_config(**models: dict[str, Any]) -> GatewayConfig:
    """A config whose `echo` model also answers to the seed's example model id."""
    tables: dict[str, Any] = {"echo": {"backend": "echo", "aliases": [SEED_MODEL]}}
    tables.update(models)
    return parse_config({"server": {"max_body_bytes": 64 * 1024}, "models": tables})


def plugin_manager(*plugins: object) -> pluggy.PluginManager:
    """A plugin manager with the echo backend and exactly `plugins`."""
    manager = new_plugin_manager()
    manager.register(echo, name="echo")
    for plugin in plugins:
        manager.register(plugin)
    return manager


@pytest.fixture(scope="session")
def echo_server() -> Iterator[str]:
    app = create_app(
        echo_config(
            slow={"backend": "echo", "options": {"delay_ms": 20}},
            broken={"backend": "echo", "options": {"fail_after_tokens": 2}},
            broken_at_once={"backend": "echo", "options": {"fail_after_tokens": 0}},
        ),
        plugin_manager(),
    )
    with running_server(app) as base_url:
        yield base_url


@pytest.fixture
def client(echo_server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{echo_server}/v1", api_key="unused", max_retries=0)
