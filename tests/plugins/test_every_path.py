"""Every per-request hook fires the same way on each path: chat non-stream, stream and
bench, Responses and Anthropic Messages, streamed and not, legacy completions streamed
and not, and embeddings (no `on_chunk`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import anthropic
import httpx
import openai
import pytest

from backends.echo import EchoBackend
from gateway import (
    ChatCompletion,
    ChatCompletionRequest,
    EmbeddingRequest,
    Embeddings,
    GatewayConfig,
    GenerationChunk,
    GenerationOptions,
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
        self.calls.append("rewrite_request " + "|".join(message.text() for message in request.messages))

    @hookimpl
    async def on_request(self, request: ChatCompletionRequest, context: RequestContext) -> None:
        self.calls.append(f"on_request {request.model} {context.identity.key_id}")  # type: ignore[union-attr]

    @hookimpl
    def on_chunk(self, chunk: GenerationChunk) -> GenerationChunk | None:
        self.calls.append("on_chunk")
        return GenerationChunk(chunk.choice, text=chunk.text.upper()) if chunk.text else None

    @hookimpl
    async def on_response(self, response: ChatCompletion, context: RequestContext) -> None:
        seen = (
            response.choices[0].message.content
            if response.choices
            else f"{response.usage.prompt_tokens} tokens"
        )
        self.calls.append(f"on_response {seen} {context.status_code}")

    @hookimpl
    def on_error(self, error: Exception, context: RequestContext) -> None:
        self.calls.append(f"on_error {type(error).__name__} {context.status_code}")


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


class Embedder(EchoBackend):
    """Echo with embeddings: a word count and a length per input (enough to see hooks run)."""

    kind = "embedder"
    supported_fields = EchoBackend.supported_fields | {"input"}

    async def embed(self, request: EmbeddingRequest, options: GenerationOptions) -> Embeddings:
        texts = [text if isinstance(text, str) else str(text) for text in request.raw_inputs]
        return Embeddings([[1.0, 0.0] for _ in texts], prompt_tokens=sum(len(t.split()) for t in texts))


class EmbedderPlugin:
    @hookimpl
    def register_backends(self, register: Callable[[str, Callable[..., Any]], None]) -> None:
        register("embedder", Embedder)


@pytest.fixture(scope="module")
def recorded_server(recorder: Recorder) -> Any:
    config = echo_config(
        broken={"backend": "echo", "options": {"fail_after_tokens": 2}}, embedder={"backend": "embedder"}
    )
    with serve(config, plugin_manager(recorder, EmbedderPlugin())) as base_url:
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
        "rewrite_request two words",
        "on_request echo recorder",
        *["on_chunk"] * 3,  # two words and the finish
        "on_response TWO WORDS 200",
    ]


def complete(base_url: str, path: str, **body: Any) -> str:
    """One legacy completion's text, streamed or not, through the openai client."""
    completions = client(base_url).completions
    if path == "completions-stream":
        chunks = completions.create(**body, stream=True)
        return "".join(c.choices[0].text for c in chunks if c.choices and c.choices[0].index == 0)
    return completions.create(**body).choices[0].text


@pytest.mark.parametrize("path", ["completions", "completions-stream"])
def test_same_hooks_on_legacy_completions(recorder: Recorder, recorded_server: str, path: str) -> None:
    """A plugin sees each prompt as a user message; `on_chunk` sees the continuation."""
    recorder.calls.clear()
    assert (
        complete(recorded_server, path, model="echo", prompt=["two words", "one"], max_tokens=2)
        == "TWO WORDS"
    )
    assert recorder.calls == [
        "authenticate echo",
        "rewrite_request two words|one",
        "on_request echo recorder",
        *["on_chunk"] * 5,  # two words and the finish, one word and the finish
        "on_response TWO WORDS 200",
    ]


def test_same_hooks_on_embeddings_without_on_chunk(recorder: Recorder, recorded_server: str) -> None:
    recorder.calls.clear()
    answer = client(recorded_server).embeddings.create(model="embedder", input=["two words", "three"])
    assert [item.index for item in answer.data] == [0, 1]
    assert recorder.calls == [
        "authenticate embedder",
        "rewrite_request two words|three",
        "on_request embedder recorder",
        "on_response 3 tokens 200",
    ]


def test_on_error_once_on_completions_and_embeddings(recorder: Recorder, recorded_server: str) -> None:
    for path in ("completions", "completions-stream"):
        recorder.calls.clear()
        with pytest.raises(openai.APIError):
            complete(recorded_server, path, model="broken", prompt="a b c")
        assert recorder.calls[-1] == "on_error BackendFailed 500"
    recorder.calls.clear()
    with pytest.raises(openai.BadRequestError):  # echo computes no embeddings: a 400 naming `input`
        client(recorded_server).embeddings.create(model="echo", input="a")
    assert recorder.calls[-1] == "on_error UnsupportedField 400"
    assert [call for call in recorder.calls if call.startswith("on_response")] == []
    recorder.calls.clear()
    with pytest.raises(openai.BadRequestError):  # a bad body: on_error, no other hook
        client(recorded_server).embeddings.create(model="embedder", input=[])
    assert recorder.calls == ["on_error InvalidRequest 400"]


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
