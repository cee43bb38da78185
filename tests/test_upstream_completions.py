"""The `openai` backend forwards legacy completions to `{url}/completions` and
embeddings to `{url}/embeddings` (MLX upstreams: tests/mlx/test_completions.py and
test_embeddings.py check values end to end)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest

from backends.upstream import plugin as upstream_plugin
from gateway import create_app, parse_config
from tests.conftest import echo_config, plugin_manager
from tests.support.server import running_server


@contextmanager
def front_for(url: str, model: str) -> Iterator[openai.OpenAI]:
    """A gateway whose model `remote` forwards to `model` at `url`; yields a client for it."""
    config = parse_config(
        {"models": {"remote": {"backend": "openai", "options": {"upstreams": [f"{url}/v1"], "model": model}}}}
    )
    with running_server(create_app(config, plugin_manager(upstream_plugin))) as front_url:
        yield openai.OpenAI(base_url=f"{front_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with running_server(create_app(echo_config())) as url:
        yield url


@pytest.fixture(scope="module")
def front(upstream: str) -> Iterator[openai.OpenAI]:
    with front_for(upstream, "echo") as client:
        yield client


def test_completions_are_forwarded(front: openai.OpenAI, upstream: str) -> None:
    direct = openai.OpenAI(base_url=f"{upstream}/v1", api_key="unused", max_retries=0)
    fields: dict[str, Any] = {"prompt": ["one two three", "four"], "n": 2, "echo": True, "stop": " three"}
    want = direct.completions.create(model="echo", **fields)
    got = front.completions.create(model="remote", **fields)
    assert [(c.index, c.text, c.finish_reason) for c in got.choices] == [
        (c.index, c.text, c.finish_reason) for c in want.choices
    ]
    assert [c.text for c in got.choices] == [
        "one two threeone two",
        "one two threeone two",
        "fourfour",
        "fourfour",
    ]
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (
        want.usage.prompt_tokens,
        want.usage.completion_tokens,
    )


def test_streamed_completions_are_forwarded(front: openai.OpenAI) -> None:
    whole = front.completions.create(model="remote", prompt="a b c", max_tokens=2)
    chunks = list(front.completions.create(model="remote", prompt="a b c", max_tokens=2, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text == "a b"
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason == "length"


def test_the_upstreams_refusals_come_back_by_name(front: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        front.completions.create(model="remote", prompt="x", logprobs=1)
    assert refused.value.body["param"] == "logprobs"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as no_embeddings:
        front.embeddings.create(model="remote", input="x")
    assert no_embeddings.value.body["param"] == "input"  # type: ignore[index]
