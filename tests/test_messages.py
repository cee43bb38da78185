"""Anthropic Messages on the echo backend, through the official `anthropic` SDK on a real server.

Echo answers with the last user message's words (or `tool <name> said: ...` after a
tool result, or a tool call for `call <name> <json>`), so every block, stop reason
and token count is exact.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from gateway import RequestContext, hookimpl
from tests.plugins.helpers import gateway_config, production_manager, serve

USER = [{"role": "user", "content": "the quick brown fox"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL = 'call get_weather {"city": "Paris"}'


@pytest.fixture(scope="module")
def base_url(echo_server: str) -> str:
    return echo_server


@pytest.fixture(scope="module")
def claude(base_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0)


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) for each event of a raw SSE body, checking both lines agree."""
    events = []
    for block in text.strip().split("\n\n"):
        name_line, data_line = block.split("\n")
        name, data = name_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        events.append((name, data))
    return events


# --- text ------------------------------------------------------------------------------


def test_create_answers_a_text_message(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="echo", max_tokens=16, messages=USER)
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert [(block.type, block.text) for block in message.content] == [("text", "the quick brown fox")]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 4)
    assert (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens) == (0, 0)


def test_stream_final_message_equals_the_created_one(claude: anthropic.Anthropic) -> None:
    created = claude.messages.create(model="echo", max_tokens=16, messages=USER)
    with claude.messages.stream(model="echo", max_tokens=16, messages=USER) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert texts == ["the", " quick", " brown", " fox"]
    assert [block.to_dict() for block in final.content] == [block.to_dict() for block in created.content]
    assert (final.stop_reason, final.usage) == (created.stop_reason, created.usage)


def test_the_stream_is_anthropic_sse(base_url: str) -> None:
    body = {"model": "echo", "max_tokens": 2, "messages": USER, "stream": True}
    response = httpx.post(f"{base_url}/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert [name for name, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert (start["content"], start["stop_reason"], start["model"]) == ([], None, "echo")
    assert events[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert events[3][1]["delta"] == {"type": "text_delta", "text": "the"}
    assert events[6][1]["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert events[6][1]["usage"] == {
        "input_tokens": 5,
        "output_tokens": 2,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_sequence_is_named(claude: anthropic.Anthropic, stream: bool) -> None:
    fields: dict[str, Any] = {"model": "echo", "max_tokens": 16, "messages": USER}
    fields["stop_sequences"] = ["fox", "own"]
    if stream:
        with claude.messages.stream(**fields) as events:
            message = events.get_final_message()
    else:
        message = claude.messages.create(**fields)
    assert [block.text for block in message.content] == ["the quick br"]  # type: ignore[union-attr]
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "own")


def test_max_tokens_stops_with_max_tokens(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="echo", max_tokens=2, messages=USER)
    assert message.content[0].text == "the quick"  # type: ignore[union-attr]
    assert message.stop_reason == "max_tokens"


def test_system_blocks_and_a_system_turn_reach_the_model(base_url: str) -> None:
    """The `system` model of the plugin helpers answers with the system prompt it got."""
    config = gateway_config()
    with serve(config) as url:
        claude = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
        system = [
            {
                "type": "text",
                "text": "x-anthropic-billing-header: cc_version=2.1.37.0d9; cc_entrypoint=cli; cch=fa690;",
            },
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
        ]
        messages = [*USER, {"role": "assistant", "content": "ok"}, {"role": "system", "content": "Be kind."}]
        messages.append(
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}],
            }
        )
        message = claude.messages.create(model="system", max_tokens=16, system=system, messages=messages)
    assert message.content[0].text == "Be brief. Be kind."  # type: ignore[union-attr]


def test_image_blocks_are_accepted_and_echo_answers_the_text(claude: anthropic.Anthropic) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    content = [{"type": "text", "text": "what is this"}, image]
    message = claude.messages.create(
        model="echo", max_tokens=8, messages=[{"role": "user", "content": content}]
    )
    assert message.content[0].text == "what is this"  # type: ignore[union-attr]


# --- tools -----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_use_round_trip(claude: anthropic.Anthropic, stream: bool) -> None:
    asked = [{"role": "user", "content": CALL}]
    fields: dict[str, Any] = {"model": "echo", "max_tokens": 16, "tools": [WEATHER]}
    if stream:
        with claude.messages.stream(**fields, messages=asked) as events:
            kinds = [event.type for event in events]
            call = events.get_final_message()
        assert "input_json" in kinds
    else:
        call = claude.messages.create(**fields, messages=asked)
    assert call.stop_reason == "tool_use"
    [block] = call.content
    assert block.type == "tool_use"
    assert (block.name, block.input) == ("get_weather", {"city": "Paris"})
    result = {"type": "tool_result", "tool_use_id": block.id, "content": [{"type": "text", "text": "18C"}]}
    history = [*asked, {"role": "assistant", "content": call.content}, {"role": "user", "content": [result]}]
    answer = claude.messages.create(**fields, messages=history)
    assert answer.content[0].text == "tool get_weather said: 18C"  # type: ignore[union-attr]
    assert answer.stop_reason == "end_turn"
    failed = [{**result, "content": "no such city", "is_error": True}]
    history[-1] = {"role": "user", "content": failed}
    answer = claude.messages.create(**fields, messages=history)
    assert answer.content[0].text == "tool get_weather said: Error: no such city"  # type: ignore[union-attr]


def test_tool_choice_modes(claude: anthropic.Anthropic) -> None:
    asked = [{"role": "user", "content": CALL}]
    fields: dict[str, Any] = {"model": "echo", "max_tokens": 16, "tools": [WEATHER], "messages": asked}
    for choice in ({"type": "any"}, {"type": "tool", "name": "get_weather"}, {"type": "auto"}):
        assert claude.messages.create(**fields, tool_choice=choice).stop_reason == "tool_use"  # type: ignore[arg-type]
    none = claude.messages.create(**fields, tool_choice={"type": "none"})
    assert (none.stop_reason, none.content[0].text) == ("end_turn", CALL)  # type: ignore[union-attr]
    with pytest.raises(anthropic.BadRequestError, match="not in 'tools'"):
        claude.messages.create(**fields, tool_choice={"type": "tool", "name": "get_time"})


# --- count_tokens ------------------------------------------------------------------------


def test_count_tokens_counts_the_prompt(claude: anthropic.Anthropic) -> None:
    count = claude.messages.count_tokens(model="echo", system="Be brief.", messages=USER)
    assert count.input_tokens == 3 + 5  # echo's tokens: words plus one per message
    created = claude.messages.create(model="echo", max_tokens=4, system="Be brief.", messages=USER)
    assert created.usage.input_tokens == count.input_tokens


# --- errors ------------------------------------------------------------------------------


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert body["type"] == "error" and set(body) == {"type", "error"}
    return response.status_code, body["error"]["type"], body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "kind", "words"),
    [
        ({"model": "echo", "messages": USER}, 400, "invalid_request_error", "max_tokens"),
        (
            {"model": "echo", "max_tokens": 4, "messages": USER, "bogus": 1},
            400,
            "invalid_request_error",
            "bogus",
        ),
        (
            {
                "model": "echo",
                "max_tokens": 4,
                "messages": [{"role": "user", "content": [{"type": "video"}]}],
            },
            400,
            "invalid_request_error",
            "messages[0].content[0]",
        ),
        (
            {"model": "echo", "max_tokens": 4, "messages": USER, "temperature": 1.5},
            400,
            "invalid_request_error",
            "temperature",
        ),
        (
            {"model": "echo", "max_tokens": 4, "messages": USER, "top_k": 5},
            400,
            "invalid_request_error",
            "'top_k'",
        ),
        (
            {
                "model": "echo",
                "max_tokens": 2000,
                "messages": USER,
                "thinking": {"type": "enabled", "budget_tokens": 1024},
            },
            400,
            "invalid_request_error",
            "'thinking' is not supported by the 'echo' backend",
        ),
        (
            {
                "model": "echo",
                "max_tokens": 1000,
                "messages": USER,
                "thinking": {"type": "enabled", "budget_tokens": 1024},
            },
            400,
            "invalid_request_error",
            "budget_tokens",
        ),
        (
            {
                "model": "echo",
                "max_tokens": 4,
                "messages": USER,
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            },
            400,
            "invalid_request_error",
            "server tool",
        ),
        (
            {"model": "echo", "max_tokens": 4, "messages": USER, "tool_choice": {"type": "any"}},
            400,
            "invalid_request_error",
            "needs 'tools'",
        ),
        ({"model": "nope", "max_tokens": 4, "messages": USER}, 404, "not_found_error", "nope"),
    ],
)
def test_bad_requests_get_anthropic_errors(
    base_url: str, body: dict[str, Any], status: int, kind: str, words: str
) -> None:
    got = error_of(httpx.post(f"{base_url}/v1/messages", json=body))
    assert got[:2] == (status, kind) and words in got[2], got


def test_bad_json_and_an_empty_body(base_url: str) -> None:
    for content in (b"{", b""):
        status, kind, _ = error_of(httpx.post(f"{base_url}/v1/messages", content=content))
        assert (status, kind) == (400, "invalid_request_error")


def test_a_body_too_large_is_413(base_url: str) -> None:
    body = {"model": "echo", "max_tokens": 4, "messages": [{"role": "user", "content": "word " * 20_000}]}
    assert error_of(httpx.post(f"{base_url}/v1/messages", json=body))[:2] == (413, "request_too_large")


def test_a_failure_mid_stream_is_an_error_event(claude: anthropic.Anthropic, base_url: str) -> None:
    body = {"model": "broken", "max_tokens": 8, "messages": USER, "stream": True}
    events = sse_events(httpx.post(f"{base_url}/v1/messages", json=body).text)
    assert [name for name, _ in events][-1] == "error"
    assert events[-1][1]["error"]["type"] == "api_error"
    stream = claude.messages.stream(model="broken", max_tokens=8, messages=USER)
    with pytest.raises(anthropic.APIStatusError, match="failed on purpose"), stream as events:
        events.get_final_message()


def test_a_failure_before_output_keeps_its_status(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.InternalServerError) as raised:
        claude.messages.create(model="broken_at_once", max_tokens=8, messages=USER)
    assert raised.value.body["error"]["type"] == "api_error"  # type: ignore[index]


# --- auth: x-api-key, 401/403/429 as the SDK's exceptions, no retries -------------------------------

ALICE_KEY = "sk-alice-0123456789abcdef"
BOB_KEY = "sk-bob-fedcba9876543210"


class ErrorCounter:
    def __init__(self) -> None:
        self.errors = 0

    @hookimpl
    def on_error(self, error: Exception, context: RequestContext) -> None:
        self.errors += 1


@pytest.fixture(scope="module")
def counter() -> ErrorCounter:
    return ErrorCounter()


@pytest.fixture(scope="module")
def auth_url(counter: ErrorCounter) -> Iterator[str]:
    keys = [
        {"id": "alice", "key": ALICE_KEY},
        {"id": "bob", "key": BOB_KEY, "models": ["system"], "requests_per_minute": 2},
    ]
    config = gateway_config({"auth": {"keys": keys}})
    with serve(config, production_manager(config, counter)) as url:
        yield url


def test_x_api_key_and_bearer_are_both_accepted(auth_url: str) -> None:
    sdk = anthropic.Anthropic(base_url=auth_url, api_key=ALICE_KEY, max_retries=0)  # sends x-api-key
    assert (
        sdk.messages.create(model="echo", max_tokens=4, messages=USER).content[0].text
        == "the quick brown fox"
    )  # type: ignore[union-attr]
    bearer = anthropic.Anthropic(base_url=auth_url, auth_token=ALICE_KEY, max_retries=0)
    assert bearer.messages.count_tokens(model="echo", messages=USER).input_tokens == 5


@pytest.mark.parametrize(
    ("key", "model", "exception", "kind"),
    [
        ("sk-wrong", "echo", anthropic.AuthenticationError, "authentication_error"),
        (BOB_KEY, "echo", anthropic.PermissionDeniedError, "permission_error"),
    ],
)
def test_refusals_are_typed_and_not_retried(
    auth_url: str, counter: ErrorCounter, key: str, model: str, exception: type[Exception], kind: str
) -> None:
    sdk = anthropic.Anthropic(base_url=auth_url, api_key=key)  # the SDK's default retries
    before = counter.errors
    with pytest.raises(exception) as raised:
        sdk.messages.create(model=model, max_tokens=4, messages=USER)
    assert raised.value.body["error"]["type"] == kind  # type: ignore[attr-defined]
    assert counter.errors == before + 1  # one request: a 4xx invites no retry


@pytest.mark.parametrize(
    ("fields", "exception", "kind"),
    [
        ({"model": "nope"}, anthropic.NotFoundError, "not_found_error"),
        ({"extra_body": {"top_k": 3}}, anthropic.BadRequestError, "invalid_request_error"),
        (  # over the default max_body_bytes (4 MiB)
            {"messages": [{"role": "user", "content": "word " * 1_000_000}]},
            anthropic.ContentTooLargeError,
            "request_too_large",
        ),
    ],
)
def test_bad_requests_are_typed_and_not_retried(
    auth_url: str, counter: ErrorCounter, fields: dict[str, Any], exception: type[Exception], kind: str
) -> None:
    sdk = anthropic.Anthropic(base_url=auth_url, api_key=ALICE_KEY)  # the SDK's default retries
    before = counter.errors
    with pytest.raises(exception) as raised:
        sdk.messages.create(**{"model": "echo", "max_tokens": 4, "messages": USER, **fields})
    assert raised.value.body["error"]["type"] == kind  # type: ignore[attr-defined]
    assert counter.errors == before + 1


def test_over_the_rate_limit_is_a_rate_limit_error(auth_url: str) -> None:
    sdk = anthropic.Anthropic(base_url=auth_url, api_key=BOB_KEY, max_retries=0)
    for _ in range(5):  # counting tokens is not metered: Claude Code counts for each tool
        assert sdk.messages.count_tokens(model="system", messages=USER).input_tokens == 5
    with pytest.raises(anthropic.RateLimitError) as raised:
        for _ in range(3):
            sdk.messages.create(model="system", max_tokens=4, messages=USER)
    assert raised.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(raised.value.response.headers["retry-after"]) >= 1


def test_the_routes_are_in_the_openapi_document(base_url: str) -> None:
    document = httpx.get(f"{base_url}/schema/openapi.json").json()
    create = document["paths"]["/v1/messages"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/MessagesRequest")
    assert set(create["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    count = document["paths"]["/v1/messages/count_tokens"]["post"]
    assert count["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/MessageTokensCount"
    )
    assert {"max_tokens", "stop_sequences", "thinking", "tool_choice"} <= set(
        document["components"]["schemas"]["MessagesRequest"]["properties"]
    )


def test_a_backend_that_cannot_count_answers_a_400_naming_it() -> None:
    from backends.echo import EchoBackend

    class Uncounting(EchoBackend):
        kind = "uncounting"
        count_tokens = None  # type: ignore[assignment]  # as a backend without the method

    class UncountingPlugin:
        @hookimpl
        def register_backends(self, register: Any) -> None:
            register("uncounting", Uncounting)

    config = gateway_config(plain={"backend": "uncounting"})
    with serve(config, production_manager(config, UncountingPlugin())) as url:
        sdk = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
        with pytest.raises(anthropic.BadRequestError, match="'uncounting' backend cannot count tokens"):
            sdk.messages.count_tokens(model="plain", messages=USER)
        assert sdk.messages.create(model="plain", max_tokens=8, messages=USER).content[0].text  # type: ignore[union-attr]
