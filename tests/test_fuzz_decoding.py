"""Property tests of request decoding over HTTP: whatever the body, a 2xx or a 4xx
with an OpenAI error object, never a 5xx or a hang."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import create_app, parse_config
from tests.conftest import plugin_manager
from tests.support.server import running_server

FIELDS = [
    *("model", "messages", "max_tokens", "n", "stream", "stop", "temperature", "top_p", "seed", "tools"),
    *("tool_choice", "response_format", "logprobs", "top_logprobs", "stream_options", "logit_bias"),
    "max_completion_tokens",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
PROPERTY = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def echo_server() -> Iterator[str]:
    """Echo with a 16 MiB body limit, so big bodies reach the decoder."""
    config = parse_config(
        {"server": {"max_body_bytes": 16 * 1024 * 1024}, "models": {"echo": {"backend": "echo"}}}
    )
    with running_server(create_app(config, plugin_manager())) as base_url:
        yield base_url


_http = httpx.Client(timeout=30)


def post(base_url: str, body: bytes) -> httpx.Response:
    headers = {"content-type": "application/json"}
    return _http.post(f"{base_url}/v1/chat/completions", content=body, headers=headers)


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["type"]


@PROPERTY
@given(body=json_values)
def test_any_json_value_is_answered_without_a_5xx(echo_server: str, body: Any) -> None:
    check(post(echo_server, json.dumps(body).encode()))


@PROPERTY
@given(
    changes=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=3),
    message=st.dictionaries(
        st.sampled_from(["role", "content", "name", "tool_calls", "tool_call_id"]), json_values, max_size=3
    ),
)
def test_a_valid_request_with_fields_changed_is_answered_without_a_5xx(
    echo_server: str, changes: dict[str, Any], message: dict[str, Any]
) -> None:
    body: dict[str, Any] = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], **changes}
    if message:
        body["messages"] = (
            [*body["messages"], message] if isinstance(body["messages"], list) else body["messages"]
        )
    if body.get("stream") is True:
        with _http.stream("POST", f"{echo_server}/v1/chat/completions", json=body) as response:
            response.read()
            check(response)
        return
    check(post(echo_server, json.dumps(body).encode()))


@PROPERTY
@given(body=st.binary(max_size=200))
def test_any_bytes_are_answered_without_a_5xx(echo_server: str, body: bytes) -> None:
    check(post(echo_server, body))


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "echo", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"model": "echo", "messages": [{"role": "user", "content": "hi"}], "tools": ['
        + b'{"a":' * 5000
        + b"1"
        + b"}" * 5000
        + b"]}",
        b'{"model": "echo", "max_tokens": 1'
        + b"0" * 5000
        + b', "messages": [{"role": "user", "content": "hi"}]}',
        b'{"model": "echo", "temperature": 1e400, "messages": [{"role": "user", "content": "hi"}]}',
        b'{"model": "echo", "messages": [{"role": "user", "content": "\xff\xfe bad utf-8"}]}',
        b'{"model": "echo\x00", "messages": [{"role": "user", "content": "nul \\u0000 inside"}]}',
        b'{"model": "echo", "messages": [{"role": "user", "content": "\\ud800 lone surrogate"}]}',
    ],
    ids=["deep-list", "deep-object", "huge-int", "huge-float", "invalid-utf8", "nul", "surrogate"],
)
def test_hostile_bodies_are_4xx(echo_server: str, body: bytes) -> None:
    response = post(echo_server, body)
    check(response)


def test_a_hundred_thousand_messages(echo_server: str) -> None:
    messages = [{"role": "user", "content": "x"}] * 100_000
    response = post(
        echo_server, json.dumps({"model": "echo", "messages": messages, "max_tokens": 1}).encode()
    )
    assert response.status_code == 200, response.text
