"""Bad input gets an OpenAI error object naming the problem, and the server stays up."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import openai
import pytest

USER = [{"role": "user", "content": "hi there"}]


def post(base_url: str, body: Any = None, content: bytes | Iterable[bytes] | None = None) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/chat/completions", json=body, content=content)


def assert_error(response: httpx.Response, status: int, param: str | None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ({"model": "echo"}, "messages", "messages"),
        ({"model": "echo", "messages": []}, "messages", "length"),
        ({"model": "echo", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "wizard"),
        ({"model": "echo", "messages": USER, "max_tokens": 0}, "max_tokens", ">= 1"),
        ({"model": "echo", "messages": USER, "max_tokens": -5}, "max_tokens", ">= 1"),
        ({"model": "echo", "messages": USER, "max_tokens": "10"}, "max_tokens", "str"),
        ({"model": "echo", "messages": USER, "temperature": 2.5}, "temperature", "<= 2.0"),
        ({"model": "echo", "messages": USER, "top_p": 1.5}, "top_p", "<= 1.0"),
        ({"model": "echo", "messages": USER, "top_logprobs": 21}, "top_logprobs", "<= 20"),
        ({"model": "echo", "messages": USER, "reasoning_effort": "max"}, "reasoning_effort", "max"),
        ({"model": "echo", "messages": USER, "n": 0}, "n", ">= 1"),
        ({"model": "echo", "messages": USER, "stop": 3}, "stop", "int"),
        ({"model": "echo", "messages": USER, "bogus_field": 1}, "bogus_field", "bogus_field"),
        ({"model": "echo", "messages": USER, "tool_choice": "sometimes"}, "tool_choice", "tool_choice"),
        ({"model": "echo", "messages": USER, "tool_choice": "required"}, "tool_choice", "needs 'tools'"),
        (
            {
                "model": "echo",
                "messages": USER,
                "tools": [{"type": "function", "function": {"name": "a"}}],
                "tool_choice": {"type": "function", "function": {"name": "b"}},
            },
            "tool_choice",
            "not in 'tools'",
        ),
        ({"model": "echo", "messages": USER, "tools": [{"type": "function"}]}, "tools[0]", "function"),
        (
            {"model": "echo", "messages": USER, "max_tokens": 5, "max_completion_tokens": 6},
            "max_completion_tokens",
            "max_tokens",
        ),
        (
            {"model": "echo", "messages": USER, "stream_options": {"include_usage": True}},
            "stream_options",
            "stream",
        ),
        (
            {"model": "echo", "messages": [{"role": "tool", "content": "42"}]},
            "messages[0].tool_call_id",
            "tool_call_id",
        ),
        ({"model": "echo", "messages": USER, "logit_bias": {"abc": 1}}, "logit_bias", "token ids"),
    ],
)
def test_invalid_request_names_the_problem(echo_server: str, body: dict, param: str, needle: str) -> None:
    error = assert_error(post(echo_server, body), 400, param)
    assert error["type"] == "invalid_request_error"
    assert needle in error["message"]


def test_malformed_json(echo_server: str) -> None:
    assert_error(post(echo_server, content=b'{"model": "echo", "messages": ['), 400, None, "invalid_json")
    assert_error(post(echo_server, content=b""), 400, None, "invalid_json")


def test_oversized_body_is_413(echo_server: str) -> None:
    huge = [{"role": "user", "content": "x" * (200 * 1024)}]
    assert_error(post(echo_server, {"model": "echo", "messages": huge}), 413, None, "request_too_large")


def test_oversized_chunked_body_is_413(echo_server: str) -> None:
    """Without a Content-Length the limit is enforced while reading."""

    def pieces() -> Iterator[bytes]:
        yield b'{"model": "echo", "messages": [{"role": "user", "content": "'
        for _ in range(16):
            yield b"x" * 8192

    response = post(echo_server, content=pieces())
    assert "content-length" not in response.request.headers
    assert_error(response, 413, None, "request_too_large")


def test_chunked_body_within_the_limit_is_read_whole(echo_server: str) -> None:
    def pieces() -> Iterator[bytes]:
        yield b'{"model": "echo", "messages": [{"role": "user", '
        yield b'"content": "in two pieces"}]}'

    response = post(echo_server, content=pieces())
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "in two pieces"


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-99", messages=USER)  # type: ignore[arg-type]
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    served = "echo (aliases: mlx-community/Llama-3.2-1B-Instruct-4bit), slow, broken, broken_at_once"
    assert caught.value.body["message"] == f"The model 'gpt-99' does not exist; this gateway serves: {served}"


def test_field_the_backend_cannot_honour_is_named(client: openai.OpenAI) -> None:
    for field, value in [
        ("logprobs", True),
        ("presence_penalty", 0.5),
        ("response_format", {"type": "json_object"}),
    ]:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="echo", messages=USER, **{field: value})  # type: ignore[call-overload]
        assert caught.value.param == field
        assert "'echo' backend" in caught.value.message
        assert caught.value.code == "unsupported_parameter"


def test_failure_mid_stream_ends_with_an_error_event(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="broken", messages=[{"role": "user", "content": "one two three four"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == ["one", " two"]
    assert "failed on purpose" in caught.value.message


def test_failure_before_the_first_chunk_keeps_its_http_status(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="broken_at_once", messages=USER, stream=True)
    assert caught.value.status_code == 500
    assert caught.value.code == "backend_error"


def test_failure_without_stream_is_a_500_error_object(echo_server: str) -> None:
    response = post(echo_server, {"model": "broken", "messages": [{"role": "user", "content": "a b c"}]})
    assert_error(response, 500, None, "backend_error")


def test_server_stays_up_after_errors(client: openai.OpenAI, echo_server: str) -> None:
    for _ in range(3):
        post(echo_server, content=b"not json")
        post(echo_server, {"model": "broken", "messages": USER * 3})
    assert (
        client.chat.completions.create(model="echo", messages=USER).choices[0].message.content == "hi there"
    )


def test_unknown_route_and_method_use_openai_errors(echo_server: str) -> None:
    assert_error(httpx.get(f"{echo_server}/v1/nothing"), 404, None, "not_found")
    assert_error(httpx.get(f"{echo_server}/v1/chat/completions"), 405, None, "method_not_allowed")


def test_echo_refuses_a_tool_choice_it_cannot_meet(client: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "clock"}}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="echo", messages=USER, tools=tools, tool_choice="required")  # type: ignore[arg-type]
    assert caught.value.param == "tool_choice"
    called = client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "call clock {}"}],
        tools=tools,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "clock"}},
    )
    assert called.choices[0].finish_reason == "tool_calls"
