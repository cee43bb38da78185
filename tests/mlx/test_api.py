"""The MLX backend end to end: a real server, the official openai client, offline models.

Scripted models say a known script greedily whatever the prompt (see
`tests.support.mlx_scripted`), so every field's effect can be asserted exactly;
the tiny random llama covers sampling (seeds, n).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

pytest.importorskip("mlx.core")

from tests.support.apps import mlx_app
from tests.support.mlx_models import RUNNER_UP, expected_logprobs, script_info

SCRIPTED = ("plain", "reasoning", "stop", "endless")
USER = [{"role": "user", "content": "Hi!"}]
NO_THINKING = {"enable_thinking": False}


@pytest.fixture(scope="module")
def model_paths(scripted_model: Callable[[str], Path], tiny_llama_path: Path) -> dict[str, Path]:
    return {"tiny": tiny_llama_path, **{name: scripted_model(name) for name in SCRIPTED}}


@pytest.fixture(scope="module")
def app(model_paths: dict[str, Path]) -> Any:
    # Scripted models answer greedily unless a test asks otherwise (their runner-up
    # token is likely enough to be sampled at temperature 1).
    greedy = {"temperature": 0.0}
    models = {
        name: {"backend": "mlx", "path": str(path), "defaults": greedy if name in SCRIPTED else {}}
        for name, path in model_paths.items()
    }
    models["small-context"] = {
        "backend": "mlx",
        "path": str(model_paths["plain"]),
        "options": {"max_context": 40},
        "defaults": greedy,
    }
    return mlx_app(models)


def engine_rows(app: Any, model: str) -> int:
    backend = app.state.registry.entries[model].backend
    engine = backend._engine
    return engine.call(lambda: len(engine._batch)).result(timeout=30)


# --- content, reasoning, stop -------------------------------------------------------


def test_plain_answer_usage_and_finish(client: openai.OpenAI, model_paths: dict[str, Path]) -> None:
    completion = client.chat.completions.create(model="plain", messages=USER, extra_body=NO_THINKING)
    choice = completion.choices[0]
    assert choice.message.content == "Hello there!"
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage.completion_tokens == len(script_info(model_paths["plain"])["tokens"])  # EOS included
    assert usage.prompt_tokens > 0 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_reasoning_is_split_from_content(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="reasoning", messages=USER)
    message = completion.choices[0].message
    assert message.content == "Hi!"
    assert message.model_extra["reasoning_content"] == "The user greets me."
    assert completion.usage.completion_tokens_details.reasoning_tokens == 6  # 5 tokens + </think>

    stream = client.chat.completions.create(model="reasoning", messages=USER, stream=True)
    reasoning, content = "", ""
    for chunk in stream:
        delta = chunk.choices[0].delta
        reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
        content += delta.content or ""
    assert (reasoning, content) == ("The user greets me.", "Hi!")


@pytest.mark.parametrize("stop", [", three", [" four", ", three"]])
def test_stop_strings_in_stream_and_not(client: openai.OpenAI, stop: Any) -> None:
    completion = client.chat.completions.create(
        model="stop", messages=USER, stop=stop, extra_body=NO_THINKING
    )
    assert completion.choices[0].message.content == "Counting: one, two"
    assert completion.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(
        model="stop", messages=USER, stop=stop, stream=True, extra_body=NO_THINKING
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Counting: one, two"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_max_tokens_cuts_with_length(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="endless", messages=USER, max_tokens=7, extra_body=NO_THINKING
    )
    assert completion.choices[0].message.content == "la" * 7
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 7


def test_max_context_is_enforced(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="small-context", messages=USER, max_tokens=30)
    assert caught.value.body["param"] == "max_tokens"
    assert "maximum context length is 40" in caught.value.body["message"]


def test_max_context_defaults_to_what_the_model_was_made_for(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="plain", messages=USER, max_tokens=40_000)
    assert caught.value.body["code"] == "context_length_exceeded"
    assert "maximum context length is 32768" in caught.value.body["message"]


# --- logprobs ---------------------------------------------------------------------------


def test_logprobs_shape_and_values(client: openai.OpenAI, model_paths: dict[str, Path]) -> None:
    vocab = script_info(model_paths["plain"])["vocab_size"]
    want = expected_logprobs(vocab)
    completion = client.chat.completions.create(
        model="plain", messages=USER, logprobs=True, top_logprobs=2, extra_body=NO_THINKING
    )
    content = completion.choices[0].logprobs.content
    assert [entry.token for entry in content] == ["Hello", " there", "!"]
    for entry in content:
        assert entry.logprob == pytest.approx(want.successor, abs=1e-4)
        assert len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[1].token == RUNNER_UP
        assert entry.top_logprobs[1].logprob == pytest.approx(want.runner_up, abs=1e-4)
        assert entry.bytes == list(entry.token.encode())


# --- sampling ---------------------------------------------------------------------------


def test_seeded_sampling_reproduces_and_n_choices_differ(client: openai.OpenAI) -> None:
    def ask(**fields: Any) -> list[str]:
        completion = client.chat.completions.create(
            model="tiny", messages=USER, max_tokens=12, temperature=1.0, extra_body=NO_THINKING, **fields
        )
        return [c.message.content or "" for c in completion.choices]

    first = ask(seed=11, n=3)
    assert len(first) == 3 and len(set(first)) == 3
    assert ask(seed=11, n=3) == first
    assert ask(seed=11) == first[:1]
    assert ask(seed=12) != first[:1]


def test_seeded_output_is_the_same_alone_and_among_eight_concurrent_others(server: str) -> None:
    seeded = {
        "model": "tiny", "messages": USER, "max_tokens": 24, "temperature": 1.0, "top_p": 0.95,
        "seed": 4242, "presence_penalty": 0.3, **NO_THINKING,
    }  # fmt: skip
    others = [
        {"model": "tiny", "messages": [{"role": "user", "content": f"Other {i} " * (i + 1)}],
         "max_tokens": 20 + i, "temperature": 0.7 + 0.1 * (i % 3), **({"seed": i} if i % 2 else {}),
         **({"top_k": 5} if i % 3 == 0 else {}), **NO_THINKING}
        for i in range(8)
    ]  # fmt: skip

    async def run(bodies: list[dict[str, Any]]) -> list[str]:
        async with httpx.AsyncClient(base_url=server, timeout=120) as http:
            responses = await asyncio.gather(*(http.post("/v1/chat/completions", json=b) for b in bodies))
        return [response.json()["choices"][0]["message"]["content"] for response in responses]

    alone = asyncio.run(run([seeded]))[0]
    among = asyncio.run(run([*others[:4], seeded, *others[4:]]))[4]
    assert among == alone
    assert asyncio.run(run([seeded]))[0] == alone


def test_streamed_n_choices_equal_the_non_streamed_ones(client: openai.OpenAI) -> None:
    fields: dict[str, Any] = {
        "model": "tiny", "messages": USER, "max_tokens": 10, "temperature": 1.0, "seed": 5, "n": 3,
        "extra_body": NO_THINKING,
    }  # fmt: skip
    whole = [choice.message.content for choice in client.chat.completions.create(**fields).choices]
    texts, roles, finishes = ["", "", ""], [0, 0, 0], [None, None, None]
    for chunk in client.chat.completions.create(**fields, stream=True):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            roles[choice.index] += choice.delta.role == "assistant"
            finishes[choice.index] = choice.finish_reason or finishes[choice.index]
    assert texts == whole
    assert roles == [1, 1, 1]  # the role once, in each choice's first delta
    assert finishes == ["length"] * 3


def test_sampling_fields_are_accepted_and_change_output(client: openai.OpenAI) -> None:
    def ask(**fields: Any) -> str:
        completion = client.chat.completions.create(
            model="tiny",
            messages=USER,
            max_tokens=16,
            seed=3,
            extra_body={**NO_THINKING, **fields.pop("extra", {})},
            **fields,
        )
        return completion.choices[0].message.content or ""

    greedy = ask(temperature=0)
    assert ask(temperature=0) == greedy
    assert ask(temperature=0, frequency_penalty=2.0) != greedy
    assert ask(temperature=0, presence_penalty=2.0) != greedy
    assert ask(temperature=0, extra={"repetition_penalty": 1.8, "repetition_context_size": 64}) != greedy
    assert ask(temperature=1.0, top_p=0.0001) == greedy  # only the best token survives
    assert ask(temperature=1.0, extra={"top_k": 1}) == greedy
    assert ask(temperature=1.0, extra={"min_p": 1.0}) == greedy


def test_logit_bias_forces_and_is_checked(client: openai.OpenAI, tiny_tokenizer: Any) -> None:
    (token,) = tiny_tokenizer.encode("ing", add_special_tokens=False)
    completion = client.chat.completions.create(
        model="tiny",
        messages=USER,
        max_tokens=3,
        temperature=0,
        logit_bias={str(token): 100},
        extra_body=NO_THINKING,
    )
    assert completion.choices[0].message.content == "ing" * 3
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", messages=USER, logit_bias={"99999": 5})
    assert caught.value.body["param"] == "logit_bias"


# --- bench and disconnects --------------------------------------------------------------


def test_bench_generates_exactly_max_tokens(server: str) -> None:
    body = {"model": "plain", "messages": USER, "max_tokens": 20, "stop": ["there"], "enable_thinking": False}
    reply = httpx.post(f"{server}/bench/chat/completions", json=body, timeout=60).json()
    assert reply["usage"]["completion_tokens"] == 20
    stats = reply["generation_stats"]
    assert stats["generation_tokens"] == 20 and stats["prompt_tokens"] == reply["usage"]["prompt_tokens"]
    assert stats["prompt_tps"] > 0 and stats["generation_tps"] > 0 and stats["peak_memory_bytes"] > 0
    assert 0 <= stats["queue_ms"] <= stats["ttft_ms"] <= stats["total_ms"]
    assert reply["choices"][0]["finish_reason"] == "length"


def test_closed_stream_frees_the_rows(client: openai.OpenAI, app: Any) -> None:
    stream = client.chat.completions.create(
        model="endless", messages=USER, max_tokens=20_000, stream=True, extra_body=NO_THINKING
    )
    for index, _ in enumerate(stream):
        if index == 5:
            break
    stream.close()
    deadline = time.monotonic() + 10
    while engine_rows(app, "endless") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine_rows(app, "endless") == 0
