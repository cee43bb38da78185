"""A client that leaves before its non-streamed answer is ready stops the work it asked for."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from gateway import ClientDisconnected, GenerationChunk, RequestContext, create_app, hookimpl
from tests.conftest import echo_config, plugin_manager
from tests.support.server import running_server


class Watcher:
    def __init__(self) -> None:
        self.chunks = 0
        self.errors: list[tuple[type, int]] = []

    @hookimpl
    def on_chunk(self, chunk: GenerationChunk) -> None:
        self.chunks += 1

    @hookimpl
    def on_error(self, error: Exception, context: RequestContext) -> None:
        self.errors.append((type(error), context.status_code))


def test_non_streamed_work_is_cancelled_when_the_client_leaves() -> None:
    watcher = Watcher()
    config = echo_config(slow={"backend": "echo", "options": {"delay_ms": 20}})
    with running_server(create_app(config, plugin_manager(watcher))) as base_url:
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0, timeout=0.3)
        words = " ".join(["word"] * 100)  # 2 s of output
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(
                model="slow", messages=[{"role": "user", "content": words}], max_tokens=100
            )
        deadline = time.monotonic() + 5
        while not watcher.errors and time.monotonic() < deadline:
            time.sleep(0.02)
        assert watcher.errors == [(ClientDisconnected, 499)]
        produced = watcher.chunks
        time.sleep(0.3)
        assert watcher.chunks == produced < 100  # generation stopped when the client left
        card = httpx.get(f"{base_url}/v1/models/slow").json()
        assert card["active_requests"] == 0
