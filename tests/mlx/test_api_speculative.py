"""Speculative decoding and Predicted Outputs through the real openai SDK.

The same checkpoint is served twice, with and without `speculative =
"prompt_lookup"`: greedy answers must be identical (text, stop strings, n>1,
stream or not). Predicted Outputs work on a model without the option and
report accepted/rejected prediction tokens in usage, streamed too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

pytest.importorskip("mlx.core")

from tests.support.apps import mlx_app
from tests.support.mlx_models import Script

LOOP = Script(("The", " cat", " sat", " on", " the", " mat", "."), loop=True)
GREEDY = {"temperature": 0.0}
NO_THINKING = {"enable_thinking": False}  # the test template would make the tiny model's text reasoning
MESSAGES = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "user", "content": "Repeat: one two three one two three one two"}],
    [
        {"role": "user", "content": "abc abc abc abc abc abc"},
        {"role": "assistant", "content": "abc"},
        {"role": "user", "content": "again abc abc"},
    ],
]


@pytest.fixture(scope="module")
def app(scripted_model: Callable[[Script], Path], tiny_llama_path: Path) -> Any:
    lookup = {"speculative": "prompt_lookup", "num_draft_tokens": 3}
    loop = scripted_model(LOOP)
    return mlx_app(
        {
            "tiny": {"backend": "mlx", "path": str(tiny_llama_path), "defaults": GREEDY},
            "tiny-spec": {
                "backend": "mlx",
                "path": str(tiny_llama_path),
                "defaults": GREEDY,
                "options": lookup,
            },
            "loop": {"backend": "mlx", "path": str(loop), "defaults": GREEDY},
            "loop-spec": {"backend": "mlx", "path": str(loop), "defaults": GREEDY, "options": lookup},
        }
    )


def answer(client: openai.OpenAI, model: str, messages: Any, *, stream: bool, **extra: Any) -> list[str]:
    extra.setdefault("extra_body", NO_THINKING)
    if not stream:
        completion = client.chat.completions.create(model=model, messages=messages, **extra)
        return [choice.message.content or "" for choice in completion.choices]
    texts: dict[int, str] = {}
    for chunk in client.chat.completions.create(model=model, messages=messages, stream=True, **extra):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    return [texts[index] for index in sorted(texts)]


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_lookup_answers_equal_plain_ones(client: openai.OpenAI, stream: bool) -> None:
    for messages in MESSAGES:
        for plain_model, spec_model in (("tiny", "tiny-spec"), ("loop", "loop-spec")):
            for extra in (
                {"max_tokens": 40},
                {"max_tokens": 30, "n": 2},
                {"max_tokens": 50, "stop": [" mat."]},
            ):
                plain = answer(client, plain_model, messages, stream=stream, **extra)
                assert all(plain)
                assert answer(client, spec_model, messages, stream=stream, **extra) == plain


def test_acceptance_shows_in_models_and_metrics(client: openai.OpenAI, server: str) -> None:
    answer(client, "loop-spec", MESSAGES[0], stream=False, max_tokens=60)
    cards = httpx.get(f"{server}/v1/models").json()["data"]
    stats = next(card for card in cards if card["id"] == "loop-spec")["backend_stats"]
    assert stats["spec_draft_tokens"] > 0 and stats["spec_accepted_tokens"] > 0
    assert stats["spec_acceptance_rate"] > 0.9  # a loop is predicted right
    metrics = httpx.get(f"{server}/metrics").text
    assert 'gateway:spec_decode_num_draft_tokens_total{model_name="loop-spec"}' in metrics
    assert 'gateway:spec_decode_num_accepted_tokens_total{model_name="loop-spec"}' in metrics


def test_prediction_keeps_the_answer_and_counts_accepted_tokens(client: openai.OpenAI) -> None:
    messages = MESSAGES[1]
    plain = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=40, extra_body=NO_THINKING
    )
    text = plain.choices[0].message.content or ""
    assert text and plain.usage.completion_tokens_details.accepted_prediction_tokens == 0
    prediction = {"type": "content", "content": text}
    predicted = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=40, prediction=prediction, extra_body=NO_THINKING
    )
    assert predicted.choices[0].message.content == text
    details = predicted.usage.completion_tokens_details
    # the random model's tokens need not be the ones its text re-tokenizes to: some are accepted
    assert details.accepted_prediction_tokens > 0
    assert details.rejected_prediction_tokens >= 0

    edited = {"type": "content", "content": [{"type": "text", "text": "nothing like it at all " * 3}]}
    off = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=40, prediction=edited, extra_body=NO_THINKING
    )
    assert off.choices[0].message.content == text
    assert off.usage.completion_tokens_details.accepted_prediction_tokens < details.accepted_prediction_tokens


def test_streamed_usage_carries_the_prediction_counts(client: openai.OpenAI) -> None:
    messages = MESSAGES[1]
    text = answer(client, "tiny", messages, stream=False, max_tokens=30)[0]
    request: dict[str, Any] = {
        "model": "tiny",
        "messages": messages,
        "max_tokens": 30,
        "prediction": {"type": "content", "content": text},
        "extra_body": NO_THINKING,
    }
    whole = client.chat.completions.create(**request)
    usage, streamed = None, ""
    for chunk in client.chat.completions.create(
        **request, stream=True, stream_options={"include_usage": True}
    ):
        for choice in chunk.choices:
            streamed += choice.delta.content or ""
        usage = chunk.usage or usage
    assert streamed == text == whole.choices[0].message.content
    assert usage is not None and usage.completion_tokens_details.accepted_prediction_tokens > 0
    assert usage.completion_tokens_details == whole.usage.completion_tokens_details


def test_speculation_options_are_checked_at_start_up(tiny_llama_path: Path) -> None:
    from backends.mlx.backend import MLXBackend
    from gateway.backend import ModelSpec
    from gateway.config import ConfigError, ModelConfig

    def backend(**options: Any) -> MLXBackend:
        return MLXBackend(
            ModelSpec("m", ModelConfig(backend="mlx", path=str(tiny_llama_path), options=options))
        )

    assert backend(speculative="prompt_lookup", num_draft_tokens=8).options.num_draft_tokens == 8
    with pytest.raises(ConfigError, match=r'models."m".options.speculative'):
        backend(speculative="medusa")
    with pytest.raises(ConfigError, match="num_draft_tokens"):
        backend(speculative="prompt_lookup", num_draft_tokens=0)
