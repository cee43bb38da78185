"""The backend protocol and registry: lazy single-flight loading, cancellation, failures."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from gateway import (
    ChatCompletionRequest,
    GenerationChunk,
    GenerationEnd,
    GenerationEvent,
    GenerationOptions,
    ModelSpec,
    TokenUsage,
    create_app,
    hookimpl,
    parse_config,
)
from tests.conftest import plugin_manager
from tests.support.server import running_server


class CountingBackend:
    """Streams `tick` forever; records loads and how each generation ended."""

    kind = "counting"
    supported_fields = frozenset({"max_tokens"})
    loads = 0
    closed = threading.Event()
    load_fails = False

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    async def load(self) -> None:
        type(self).loads += 1
        await asyncio.sleep(0.2)  # a slow load, so concurrent first requests overlap
        if type(self).load_fails:
            raise RuntimeError("weights are corrupt")

    def validate(self, request: ChatCompletionRequest) -> None:
        return None

    async def generate(
        self, request: ChatCompletionRequest, options: GenerationOptions
    ) -> AsyncIterator[GenerationEvent]:
        try:
            if request.max_tokens and request.max_tokens < 100:
                for _ in range(request.max_tokens):
                    yield GenerationChunk(text="tick ")
                yield GenerationChunk(finish_reason="length")
                yield GenerationEnd(TokenUsage(1, request.max_tokens))
                return
            while True:
                yield GenerationChunk(text="tick ")
                await asyncio.sleep(0.01)
        finally:
            type(self).closed.set()

    async def unload(self) -> None:
        return None


class CountingBackendPlugin:
    @hookimpl
    def register_backends(self, register):  # type: ignore[no-untyped-def]
        register("counting", CountingBackend)


@pytest.fixture
def counting_server() -> str:
    CountingBackend.loads, CountingBackend.load_fails = 0, False
    CountingBackend.closed.clear()
    config = parse_config({"models": {"ticker": {"backend": "counting", "aliases": ["t"]}}})
    with running_server(create_app(config, plugin_manager(CountingBackendPlugin()))) as base_url:
        yield base_url


def ask(base_url: str, **body: object) -> httpx.Response:
    payload = {"model": "ticker", "messages": [{"role": "user", "content": "go"}], "max_tokens": 3, **body}
    return httpx.post(f"{base_url}/v1/chat/completions", json=payload, timeout=30)


def test_concurrent_first_requests_share_one_load(counting_server: str) -> None:
    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=counting_server, timeout=30) as client:
            body = {"model": "t", "messages": [{"role": "user", "content": "go"}], "max_tokens": 2}
            responses = await asyncio.gather(
                *(client.post("/v1/chat/completions", json=body) for _ in range(10))
            )
        return [response.status_code for response in responses]

    assert asyncio.run(burst()) == [200] * 10
    assert CountingBackend.loads == 1
    models = httpx.get(f"{counting_server}/v1/models").json()["data"]
    assert models[0]["status"] == "loaded"


def test_failed_load_is_503_and_next_request_retries(counting_server: str) -> None:
    CountingBackend.load_fails = True
    response = ask(counting_server)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_unavailable"
    assert "weights are corrupt" in response.json()["error"]["message"]
    CountingBackend.load_fails = False
    assert ask(counting_server).status_code == 200
    assert CountingBackend.loads == 2


def test_unsupported_field_is_refused_before_loading(counting_server: str) -> None:
    response = ask(counting_server, temperature=0.5)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "temperature"
    assert "'counting' backend" in response.json()["error"]["message"]
    assert CountingBackend.loads == 0


def test_client_disconnect_closes_the_backend_generation(counting_server: str) -> None:
    client = openai.OpenAI(base_url=f"{counting_server}/v1", api_key="x", max_retries=0)
    stream = client.chat.completions.create(
        model="ticker", messages=[{"role": "user", "content": "go"}], stream=True, max_tokens=1000
    )
    for index, _chunk in enumerate(stream):
        if index == 3:
            break
    stream.close()
    deadline = time.monotonic() + 10
    while not CountingBackend.closed.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert CountingBackend.closed.is_set(), "the backend kept generating for a client that left"
