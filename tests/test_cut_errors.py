"""Answers the gateway writes itself (draining 503, request timeout 504, a stream it cuts)
are in each route's own format: Anthropic's on /v1/messages, Responses' on /v1/responses,
OpenAI's elsewhere. Through the real SDKs against a loopback server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from gateway import create_app, parse_config
from tests.conftest import plugin_manager
from tests.support.server import running_server

SLOW = {"backend": "echo", "options": {"delay_ms": 100}}
WORDS = "a b c d e f g h i j k l m n o p"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Any]]:
    config = parse_config(
        {"server": {"request_timeout_s": 0.4}, "models": {"echo": {"backend": "echo"}, "slow": SLOW}}
    )
    app = create_app(config, plugin_manager())
    with running_server(app) as base_url:
        yield base_url, app


def claude(base_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0)


def test_draining_refuses_messages_with_a_503_anthropic_error_and_retry_after(
    server: tuple[str, Any],
) -> None:
    base_url, app = server
    app.state.lifecycle.draining = True
    try:
        with pytest.raises(anthropic.APIStatusError) as refused:
            claude(base_url).messages.create(
                model="echo", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
            )
        counted = httpx.post(
            f"{base_url}/v1/messages/count_tokens",
            json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
        )
        chat = httpx.post(
            f"{base_url}/v1/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
        )
    finally:
        app.state.lifecycle.draining = False
    error = refused.value
    assert error.status_code == 503 and error.response.headers["retry-after"] == "5"
    assert error.body["type"] == "error" and error.body["error"]["type"] == "overloaded_error"
    assert "shutting down" in error.body["error"]["message"]
    assert counted.status_code == 503 and counted.json()["error"]["type"] == "overloaded_error"
    assert counted.json()["type"] == "error"
    assert chat.status_code == 503 and chat.json()["error"]["code"] == "server_shutting_down"  # OpenAI's


def test_a_messages_stream_cut_by_the_request_timeout_ends_with_an_error_event(
    server: tuple[str, Any],
) -> None:
    base_url, _ = server
    seen: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as cut,
        claude(base_url).messages.stream(
            model="slow", max_tokens=64, messages=[{"role": "user", "content": WORDS}]
        ) as stream,
    ):
        for event in stream:
            seen.append(event.type)
    assert "content_block_delta" in seen  # it was cut mid-way, not refused
    assert cut.value.body["type"] == "error" and cut.value.body["error"]["type"] == "api_error"
    assert "request_timeout_s" in cut.value.body["error"]["message"]


def test_a_messages_request_over_the_timeout_is_a_504_anthropic_error(server: tuple[str, Any]) -> None:
    base_url, _ = server
    with pytest.raises(anthropic.APIStatusError) as cut:
        claude(base_url).messages.create(
            model="slow", max_tokens=64, messages=[{"role": "user", "content": WORDS}]
        )
    assert cut.value.status_code == 504
    assert cut.value.body["type"] == "error" and cut.value.body["error"]["type"] == "api_error"


def test_a_responses_stream_cut_by_the_request_timeout_fails_as_responses_do(server: tuple[str, Any]) -> None:
    base_url, _ = server
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    kinds: list[str] = []
    with pytest.raises(openai.APIError) as cut:  # the SDK raises on the `error` event
        for event in sdk.responses.create(model="slow", input=WORDS, stream=True):
            kinds.append(event.type)
    assert "response.output_text.delta" in kinds and cut.value.code == "request_timeout"
    raw = httpx.post(
        f"{base_url}/v1/responses", json={"model": "slow", "input": WORDS, "stream": True}, timeout=30
    )
    events = [line.removeprefix("event: ") for line in raw.text.splitlines() if line.startswith("event: ")]
    assert events[-2:] == ["error", "response.failed"] and "request_timeout" in raw.text.splitlines()[-2]
