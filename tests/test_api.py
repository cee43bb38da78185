"""The HTTP API through the official openai client against a real server (echo backend)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import SEED_MODEL

USER = [{"role": "user", "content": "the quick brown fox"}]


def test_non_streamed_completion(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="echo", messages=USER)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert (choice.index, choice.finish_reason) == (0, "stop")
    assert choice.message.role == "assistant"
    assert choice.message.content == "the quick brown fox"
    usage = completion.usage
    assert usage is not None
    assert (usage.completion_tokens, usage.total_tokens) == (4, usage.prompt_tokens + 4)
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details.reasoning_tokens == 0


def test_max_completion_tokens_limits_and_reports_length(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="echo", messages=USER, max_completion_tokens=2)
    assert completion.choices[0].message.content == "the quick"
    assert completion.choices[0].finish_reason == "length"


def test_stop_string_and_n(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="echo", messages=USER, stop=[" brown"], n=3)
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    assert {choice.message.content for choice in completion.choices} == {"the quick"}


def test_stream_with_usage_has_exact_openai_shapes(echo_server: str, client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="echo", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    content_chunks, usage_chunk = chunks[:-1], chunks[-1]
    assert "".join(c.choices[0].delta.content or "" for c in content_chunks) == "the quick brown fox"
    assert content_chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in content_chunks[1:])
    assert [c.choices[0].finish_reason for c in content_chunks][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in content_chunks[:-1])
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == 4

    # On the wire: no null-valued field in any delta, and the stream ends with [DONE].
    body = {"model": "echo", "messages": USER, "stream": True}
    raw = httpx.post(f"{echo_server}/v1/chat/completions", json=body).text
    events = [line.removeprefix("data: ") for line in raw.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    for event in map(json.loads, events[:-1]):
        assert None not in event["choices"][0]["delta"].values()
        assert "usage" not in event


def test_bench_endpoint_with_seed_example_body(echo_server: str) -> None:
    body = {
        "messages": [{"content": "Hello from Skulk", "role": "user"}],
        "model": SEED_MODEL,
        "stream": False,
        "temperature": 0.7,
        "max_tokens": 12,
    }
    response = httpx.post(f"{echo_server}/bench/chat/completions", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["usage"]["completion_tokens"] == 12
    assert result["choices"][0]["finish_reason"] == "length"
    stats = result["generation_stats"]
    assert set(stats) == {
        "prompt_tokens", "generation_tokens", "prompt_tps", "generation_tps", "ttft_ms",
        "queue_ms", "total_ms", "peak_memory_bytes", "cached_tokens",
    }  # fmt: skip
    assert stats["generation_tokens"] == 12
    assert stats["total_ms"] >= stats["ttft_ms"] >= 0


def test_bench_endpoint_refuses_to_stream(echo_server: str) -> None:
    body = {"model": "echo", "messages": USER, "stream": True}
    response = httpx.post(f"{echo_server}/bench/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "stream"


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    models = {model.id: model for model in client.models.list()}
    assert {"echo", "slow", "broken"} <= set(models)
    assert models["echo"].model_extra is not None
    assert models["echo"].model_extra["aliases"] == [SEED_MODEL]
    assert models["echo"].model_extra["status"] in ("unloaded", "loaded")
    assert client.models.retrieve(SEED_MODEL).id == "echo"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_health_and_openapi_schema(echo_server: str) -> None:
    assert httpx.get(f"{echo_server}/health").json() == {"status": "ok"}
    schema = httpx.get(f"{echo_server}/schema/openapi.json").json()
    request = schema["components"]["schemas"]["ChatCompletionRequest"]
    seed_fields = {
        "model", "frequency_penalty", "messages", "logit_bias", "logprobs", "top_logprobs",
        "max_tokens", "n", "presence_penalty", "response_format", "seed", "stop", "stream",
        "stream_options", "temperature", "top_p", "top_k", "tools", "reasoning_effort",
        "enable_thinking", "min_p", "repetition_penalty", "repetition_context_size",
        "tool_choice", "parallel_tool_calls", "user",
    }  # fmt: skip
    assert seed_fields | {"max_completion_tokens"} <= set(request["properties"])
    operation = schema["paths"]["/v1/chat/completions"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ChatCompletionRequest"
    )
    answers = {
        kind: body["schema"]["$ref"] for kind, body in operation["responses"]["200"]["content"].items()
    }
    assert answers == {
        "application/json": "#/components/schemas/ChatCompletion",
        "text/event-stream": "#/components/schemas/ChatCompletionChunk",
    }
    error = operation["responses"]["default"]["content"]["application/json"]["schema"]["$ref"]
    assert error == "#/components/schemas/ErrorResponse"
    bench = schema["paths"]["/bench/chat/completions"]["post"]["responses"]["200"]["content"]
    assert list(bench) == ["application/json"]
    for reference in [*answers.values(), error, bench["application/json"]["schema"]["$ref"]]:
        assert reference.rsplit("/", 1)[1] in schema["components"]["schemas"]


def test_response_headers(echo_server: str) -> None:
    url = f"{echo_server}/v1/chat/completions"
    response = httpx.post(url, json={"model": "echo", "messages": USER})
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.headers["x-request-id"].startswith("req_")
    streamed = httpx.post(url, json={"model": "echo", "messages": USER, "stream": True})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.headers["cache-control"] == "no-cache"
    assert streamed.headers["x-request-id"].startswith("req_")
    assert streamed.text.endswith("data: [DONE]\n\n")


def test_a_previous_answer_appended_to_the_history_is_accepted(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="echo", messages=USER)
    history = [*USER, first.choices[0].message, {"role": "user", "content": "and again"}]
    second = client.chat.completions.create(model="echo", messages=history)  # type: ignore[arg-type]
    assert second.choices[0].message.content == "and again"
