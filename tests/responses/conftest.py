"""A real gateway with echo models on a loopback port, for the Responses API tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from gateway import create_app, parse_config
from tests.conftest import plugin_manager
from tests.support.server import running_server

RESPONSES_CONFIG: dict[str, Any] = {
    "server": {"max_body_bytes": 256 * 1024},
    "models": {
        "echo": {"backend": "echo"},
        "system": {"backend": "echo", "options": {"echo_system": True}},
        "broken": {"backend": "echo", "options": {"fail_after_tokens": 2}},
    },
}


@pytest.fixture(scope="module")
def app() -> Any:
    return create_app(parse_config(RESPONSES_CONFIG), plugin_manager())


@pytest.fixture(scope="module")
def base_url(app: Any) -> Iterator[str]:
    with running_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
