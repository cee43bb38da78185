"""The `openai` backend's parts: chunk conversion, SSE parsing, balancing, options, error mapping."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import msgspec
import pytest

from backends.upstream.errors import UpstreamFailed, UpstreamRejected, rejected
from backends.upstream.options import load_options
from backends.upstream.pool import UpstreamPool
from backends.upstream.sse import sse_data
from backends.upstream.wire import decode_chunk, request_body, to_chunk, to_usage
from gateway import ChatCompletionRequest, ModelSpec, TokenLogprob, ToolCallDelta, TopLogprob
from gateway.config import ConfigError, ModelConfig


def chunks_of(payload: dict) -> list:
    return [to_chunk(choice) for choice in decode_chunk(json.dumps(payload)).choices or ()]


def test_deltas_become_gateway_chunks() -> None:
    vllm_style = {
        "choices": [
            {
                "index": 1,
                "delta": {"content": "Hi", "reasoning_content": "think"},
                "logprobs": {
                    "content": [
                        {
                            "token": "Hi",
                            "logprob": -0.5,
                            "bytes": [72, 105],
                            "top_logprobs": [
                                {"token": "Hi", "logprob": -0.5, "bytes": [72, 105]},
                            ],
                        },
                    ]
                },
                "finish_reason": None,
            }
        ],
        "usage": None,
    }
    [chunk] = chunks_of(vllm_style)
    assert (chunk.choice, chunk.text, chunk.reasoning, chunk.finish_reason) == (1, "Hi", "think", None)
    assert chunk.logprobs == [TokenLogprob("Hi", -0.5, [72, 105], [TopLogprob("Hi", -0.5, [72, 105])])]

    [chunk] = chunks_of({"choices": [{"delta": {"reasoning": "hmm"}, "finish_reason": "eos_token"}]})
    assert (chunk.reasoning, chunk.finish_reason, chunk.stop_sequence) == ("hmm", "stop", None)
    [chunk] = chunks_of({"choices": [{"delta": {}, "finish_reason": "stop", "stop_reason": "END"}]})
    assert (chunk.finish_reason, chunk.stop_sequence) == ("stop", "END")  # vLLM names the stop string
    [chunk] = chunks_of({"choices": [{"delta": {}, "finish_reason": "stop", "stop_reason": 128009}]})
    assert chunk.stop_sequence is None  # a stop token id: not a stop sequence
    [chunk] = chunks_of({"choices": [{"delta": {}, "finish_reason": "stop", "matched_stop": "END"}]})
    assert chunk.stop_sequence == "END"  # SGLang's name for it

    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{"}}
    [chunk] = chunks_of({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
    assert chunk.tool_calls == [ToolCallDelta(0, "call_1", "f", "{")]
    [chunk] = chunks_of(
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}}]}
    )
    assert chunk.tool_calls == [ToolCallDelta(0, None, None, "}")]


def test_empty_deltas_are_dropped_and_unknown_fields_ignored() -> None:
    role_only = {"id": "x", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "stop_reason": None},
    ]}  # fmt: skip
    assert chunks_of(role_only) == [None]


def test_usage_with_details() -> None:
    usage = decode_chunk(
        b'{"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,'
        b' "prompt_tokens_details": {"cached_tokens": 8}, "completion_tokens_details": null}}'
    ).usage
    assert usage is not None
    tokens = to_usage(usage)
    assert (tokens.prompt_tokens, tokens.completion_tokens, tokens.cached_tokens) == (10, 5, 8)
    assert tokens.reasoning_tokens == 0


def test_request_body_is_the_clients_request_streamed_for_the_upstream_model() -> None:
    request = msgspec.convert(
        {
            "model": "front-name",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "temperature": 0.3,
            "stream": False,
        },
        ChatCompletionRequest,
    )
    body = json.loads(request_body(request, "upstream-name"))
    assert body == {
        "model": "upstream-name",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "temperature": 0.3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


def test_sse_events_keepalives_and_multiline_data() -> None:
    async def collect() -> list[str]:
        lines = _lines(": ping", "", 'data: {"a":', "data: 1}", "", "event: x", "", "data:[DONE]")
        return [data async for data in sse_data(lines)]

    assert asyncio.run(collect()) == ['{"a":\n1}', "[DONE]"]


def test_least_outstanding_then_round_robin_and_unhealthy_skipped() -> None:
    pool = UpstreamPool(["a", "b", "c"], "m")
    a, b, c = pool.upstreams
    assert [pool.pick().url for _ in range(4)] == ["a", "b", "c", "a"]  # type: ignore[union-attr]
    a.outstanding, c.outstanding = 2, 1
    assert pool.pick() is b
    b.outstanding = 3
    assert pool.pick() is c
    assert pool.pick(exclude=[c]) is a
    pool.set_health(c, False)
    assert pool.pick() is a
    assert pool.pick(exclude=[a, b]) is None
    pool.set_health(c, True)
    assert pool.pick(exclude=[a, b]) is c


def spec(options: dict) -> ModelSpec:
    return ModelSpec("m", ModelConfig(backend="openai", options=options))


def test_options_are_checked_and_the_key_never_shown() -> None:
    with pytest.raises(ConfigError, match=r'models\."m"\.options\.upstreams'):
        load_options(spec({"upstreams": []}))
    with pytest.raises(ConfigError, match=r'models\."m"\.options\.upstreams\[1\]: expected an http'):
        load_options(spec({"upstreams": ["http://a/v1", "a:8000"]}))
    with pytest.raises(ConfigError, match="timeout"):
        load_options(spec({"upstreams": ["http://a/v1"], "timeout": 3}))
    options = load_options(spec({"upstreams": ["http://a/v1"], "api_key": "sk-secret"}))
    assert "sk-secret" not in repr(options)


def test_error_bodies_map_to_openai_errors() -> None:
    nested = b'{"error": {"message": "bad n", "type": "BadRequestError", "param": "n", "code": 400}}'
    error = rejected(400, nested, {})
    assert isinstance(error, UpstreamRejected)
    assert (error.status_code, error.message, error.error_type, error.param, error.code) == (
        400,
        "bad n",
        "BadRequestError",
        "n",
        "400",
    )
    bare = b'{"object": "error", "message": "no such model", "type": "NotFoundError", "code": 404}'
    missing = rejected(404, bare, {})  # the gateway's upstream URL or model name is wrong, not the client
    assert (missing.status_code, missing.code) == (502, "upstream_error")
    assert "no such model" in missing.message and "/v1" in missing.message
    unprocessable = rejected(422, bare, {})
    assert (unprocessable.status_code, unprocessable.message) == (422, "no such model")
    limited = rejected(429, b"slow down", {"retry-after": "3"})
    assert (limited.status_code, limited.message, limited.headers) == (429, "slow down", {"Retry-After": "3"})
    refused = rejected(401, b'{"error": {"message": "bad key"}}', {})
    assert isinstance(refused, UpstreamFailed) and refused.status_code == 502
