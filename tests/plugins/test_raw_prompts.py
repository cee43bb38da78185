"""What plugins see and do on the raw-prompt endpoints (legacy completions, embeddings):
each prompt is a user message a plugin may rewrite, and the auth plugin's limits count
their tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from gateway import (
    ChatCompletionRequest,
    EmbeddingRequest,
    Embeddings,
    GenerationOptions,
    Message,
    hookimpl,
    replace,
)
from tests.plugins.helpers import client, gateway_config, production_manager, serve
from tests.plugins.test_auth import BOB_KEY, auth_settings

pytestmark = pytest.mark.hooks("rewrite_request")


class Masking:
    """Rewrites every user message: `secret` becomes `[masked]`."""

    @hookimpl
    def rewrite_request(self, request: ChatCompletionRequest) -> ChatCompletionRequest:
        messages = [
            Message(role=m.role, content=m.text().replace("secret", "[masked]")) if m.role == "user" else m
            for m in request.messages
        ]
        return replace(request, messages=messages)


class WordLength:
    """An embedding backend whose vectors tell which text it was given: (words, characters)."""

    kind = "word-length"
    supported_fields = frozenset({"max_tokens", "input"})

    def __init__(self, spec: Any) -> None:
        self.spec = spec

    async def load(self) -> None: ...

    async def unload(self) -> None: ...

    def validate(self, request: Any) -> None: ...

    async def generate(self, request: Any, options: Any) -> Any:
        raise NotImplementedError
        yield

    async def embed(self, request: EmbeddingRequest, options: GenerationOptions) -> Embeddings:
        texts = [str(text) for text in request.raw_inputs]
        return Embeddings(
            [[float(len(t.split())), float(len(t))] for t in texts], sum(len(t.split()) for t in texts)
        )


class Backends:
    @hookimpl
    def register_backends(self, register: Callable[[str, Callable[..., Any]], None]) -> None:
        register("word-length", WordLength)


def test_a_rewritten_prompt_is_what_the_model_continues() -> None:
    config = gateway_config(vectors={"backend": "word-length"})
    with serve(config, production_manager(config, Masking(), Backends())) as base_url:
        openai_client = client(base_url)
        completion = openai_client.completions.create(
            model="echo", prompt=["my secret plan", "no secret"], echo=True, max_tokens=1
        )
        assert [c.text for c in completion.choices] == ["my [masked] planmy", "no [masked]no"]
        vectors = openai_client.embeddings.create(
            model="vectors", input=["a secret"], encoding_format="float"
        )
        assert vectors.data[0].embedding == [2.0, len("a [masked]")]


def test_a_rewrite_rules_system_prompt_stays_out_of_a_raw_prompt() -> None:
    settings = {"rewrite": {"rules": [{"system_prompt": "Be brief."}]}}
    config = gateway_config(settings)
    with serve(config) as base_url:
        completion = client(base_url).completions.create(model="echo", prompt="hello world", echo=True)
        assert completion.choices[0].text == "hello worldhello world"


@pytest.mark.hooks("authenticate", "on_response")
def test_token_limits_count_embeddings_and_completions() -> None:
    config = gateway_config(
        auth_settings(tokens_per_minute=5), vectors={"backend": "word-length", "aliases": []}
    )
    settings = auth_settings(tokens_per_minute=5)
    settings["auth"]["keys"][1]["models"] = ["vectors", "echo"]
    config = gateway_config(settings, vectors={"backend": "word-length"})
    with serve(config, production_manager(config, Backends())) as base_url:
        bob = client(base_url, BOB_KEY)
        bob.embeddings.create(model="vectors", input="one two three four five six")  # six tokens
        with pytest.raises(openai.RateLimitError):
            bob.embeddings.create(model="vectors", input="one")
        with pytest.raises(openai.RateLimitError):
            bob.completions.create(model="echo", prompt="one")


@pytest.mark.hooks("route_tool_call")
def test_server_tools_are_not_offered_to_raw_prompts() -> None:
    """A raw prompt has no chat to call tools from: `call calculator ...` is just text."""
    config = gateway_config({"tools": {"rules": [{"models": ["*"], "tools": ["calculator"]}]}})
    with serve(config) as base_url:
        prompt = 'call calculator {"expression": "1 + 2"}'
        completion = client(base_url).completions.create(model="echo", prompt=prompt, max_tokens=3)
        assert (completion.choices[0].text, completion.choices[0].finish_reason) == (
            'call calculator {"expression":',
            "length",
        )


class AddsAPrompt:
    @hookimpl
    def rewrite_request(self, request: ChatCompletionRequest) -> ChatCompletionRequest:
        return replace(request, messages=[*request.messages, Message(role="user", content="one more")])


def test_a_plugin_that_changes_the_number_of_prompts_gets_a_400() -> None:
    config = gateway_config(vectors={"backend": "word-length"})
    with serve(config, production_manager(config, AddsAPrompt(), Backends())) as base_url:
        with pytest.raises(openai.BadRequestError) as completion:
            client(base_url).completions.create(model="echo", prompt="a")
        assert completion.value.body["param"] == "prompt"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError) as embedding:
            client(base_url).embeddings.create(model="vectors", input="a")
        assert embedding.value.body["param"] == "input"  # type: ignore[index]
