"""Every per-request hook fires the same way on each path: chat non-stream, stream and
bench, Responses and Anthropic Messages, streamed and not."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import anthropic
import httpx
import openai
import pytest

from gateway import (
    ChatCompletion,
    ChatCompletionRequest,
    GatewayConfig,
    GenerationChunk,
    Identity,
    RequestContext,
    Tool,
    hookimpl,
)
from tests.conftest import echo_config, plugin_manager
from tests.plugins.helpers import MESSAGES_PATHS, PATHS, RESPONSES_PATHS, ask, client, serve

EVERY_PATH = (*PATHS, *RESPONSES_PATHS, *MESSAGES_PATHS)

pytestmark = pytest.mark.hooks(
    "gateway_startup", "authenticate", "rewrite_request", "on_request", "on_chunk", "on_response", "on_error"
)


class Recorder:
    """Implements every per-request hook, some sync and some async, and records the calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.started: list[tuple[GatewayConfig, Mapping[str, Tool]]] = []

    @hookimpl
    def gateway_startup(self, config: GatewayConfig, tools: Mapping[str, Tool]) -> None:
        self.started.append((config, tools))

    @hookimpl
    async def authenticate(self, headers: dict[str, str], model: str, context: RequestContext) -> Identity:
        self.calls.append(f"authenticate {model}")
        return Identity("recorder")

    @hookimpl
    def rewrite_request(self, request: ChatCompletionRequest) -> None:
        self.calls.append("rewrite_request")

    @hookimpl
    async def on_request(self, request: ChatCompletionRequest, context: RequestContext) -> None:
        self.calls.append(f"on_request {request.model} {context.identity.key_id}")  # type: ignore[union-attr]

    @hookimpl
    def on_chunk(self, chunk: GenerationChunk) -> GenerationChunk | None:
        self.calls.append("on_chunk")
        return GenerationChunk(chunk.choice, text=chunk.text.upper()) if chunk.text else None

    @hookimpl
    async def on_response(self, response: ChatCompletion, context: RequestContext) -> None:
        self.calls.append(f"on_response {response.choices[0].message.content} {context.status_code}")

    @hookimpl
    def on_error(self, error: Exception, context: RequestContext) -> None:
        self.calls.append(f"on_error {type(error).__name__} {context.status_code}")


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def recorded_server(recorder: Recorder) -> Any:
    config = echo_config(broken={"backend": "echo", "options": {"fail_after_tokens": 2}})
    with serve(config, plugin_manager(recorder)) as base_url:
        yield base_url
    assert len(recorder.started) == 1 and recorder.started[0][0] is config


@pytest.mark.parametrize("path", EVERY_PATH)
def test_same_hooks_same_order_on_every_path(recorder: Recorder, recorded_server: str, path: str) -> None:
    recorder.calls.clear()
    messages = [{"role": "user", "content": "two words"}]
    answer = ask(recorded_server, path, model="echo", messages=messages, max_tokens=2)
    assert answer.content == "TWO WORDS"
    assert recorder.calls == [
        "authenticate echo",
        "rewrite_request",
        "on_request echo recorder",
        *["on_chunk"] * 3,  # two words and the finish
        "on_response TWO WORDS 200",
    ]


@pytest.mark.parametrize("path", EVERY_PATH)
def test_on_error_once_on_every_path(recorder: Recorder, recorded_server: str, path: str) -> None:
    recorder.calls.clear()
    with pytest.raises((openai.APIError, anthropic.APIError, httpx.HTTPStatusError)):
        ask(recorded_server, path, model="broken", messages=[{"role": "user", "content": "a b c"}])
    assert recorder.calls[-1] == "on_error BackendFailed 500"
    assert [call for call in recorder.calls if call.startswith("on_response")] == []


@pytest.mark.hooks("register_backends")
def test_register_backends_adds_a_kind() -> None:
    from backends.echo import EchoBackend

    class Shouting(EchoBackend):
        kind = "shouting"

    class ShoutingPlugin:
        @hookimpl
        def register_backends(self, register: Callable[[str, Callable[..., Any]], None]) -> None:
            register("shouting", Shouting)

    config = echo_config(loud={"backend": "shouting"})
    with serve(config, plugin_manager(ShoutingPlugin())) as base_url:
        assert ask(base_url, "non-stream", model="loud").content == "the quick brown fox"
        assert client(base_url).models.retrieve("loud").model_extra["backend"] == "shouting"  # type: ignore[index]
