"""Today's OpenAI chat schema: hosted-only fields accepted, the rest honoured or refused
by name, legacy `functions` answered in their own shape, and every field classified."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from backends.echo import EchoBackend
from backends.mlx.backend import MLXBackend
from backends.upstream.backend import OpenAIUpstreamBackend
from gateway import FIELDS, GATEWAY_FIELDS, SAMPLING_FIELDS, ChatCompletionRequest, Handling
from gateway.config import SamplingDefaults
from gateway.prompts import PROMPT_FIELDS
from plugins import rewrite

USER = [{"role": "user", "content": "the quick brown fox"}]
WEATHER = {"name": "weather", "description": "The weather", "parameters": {"type": "object"}}
CALL = [{"role": "user", "content": 'call weather {"city": "Paris"}'}]


def test_fields_only_the_hosted_service_reads_are_accepted(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="echo",
        messages=USER,
        store=True,
        metadata={"team": "search"},
        service_tier="auto",
        prompt_cache_key="conversation-7",
        safety_identifier="user-hash",
        user="someone",
        modalities=["text"],
    )
    assert completion.choices[0].message.content == "the quick brown fox"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("verbosity", "low"),
        ("prediction", {"type": "content", "content": "the quick brown fox"}),
        ("web_search_options", {}),
        ("audio", {"voice": "alloy", "format": "wav"}),
    ],
)
def test_fields_that_change_the_answer_are_refused_by_name(
    client: openai.OpenAI, field: str, value: object
) -> None:
    body = {field: value} if field != "audio" else {field: value, "modalities": ["text", "audio"]}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="echo", messages=USER, extra_body=body)
    error = caught.value.body
    assert isinstance(error, dict)
    assert (error["param"], error["code"]) == (field, "unsupported_parameter")
    assert "Unrecognized" not in error["message"]


def test_audio_output_needs_its_parameter(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="echo", messages=USER, modalities=["text", "audio"])
    assert caught.value.param == "audio"  # type: ignore[attr-defined]


def test_legacy_functions_answer_with_function_call(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="echo", messages=CALL, functions=[WEATHER])
    choice = completion.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.tool_calls is None
    assert choice.message.function_call is not None
    assert choice.message.function_call.name == "weather"
    assert json.loads(choice.message.function_call.arguments) == {"city": "Paris"}


def test_legacy_functions_stream_function_call_deltas(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="echo", messages=CALL, functions=[WEATHER], function_call={"name": "weather"}, stream=True
    )
    chunks = list(stream)
    assert all(chunk.choices[0].delta.tool_calls is None for chunk in chunks)
    name = "".join(
        c.choices[0].delta.function_call.name or "" for c in chunks if c.choices[0].delta.function_call
    )
    arguments = "".join(
        c.choices[0].delta.function_call.arguments or "" for c in chunks if c.choices[0].delta.function_call
    )
    assert (name, json.loads(arguments)) == ("weather", {"city": "Paris"})
    assert chunks[-1].choices[0].finish_reason == "function_call"


def test_legacy_and_new_names_together_are_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="echo",
            messages=CALL,
            functions=[WEATHER],
            tools=[{"type": "function", "function": WEATHER}],
        )
    assert caught.value.param == "functions"  # type: ignore[attr-defined]


def test_unknown_route_names_the_routes_served(echo_server: str) -> None:
    answer = httpx.post(f"{echo_server}/v1/chat/completion", json={})
    assert answer.status_code == 404
    message = answer.json()["error"]["message"]
    assert "POST /v1/chat/completions" in message
    assert "GET /v1/models" in message


def test_every_request_field_is_classified() -> None:
    assert set(FIELDS) == set(ChatCompletionRequest.__struct_fields__)
    assert all(isinstance(handling, Handling) for handling in FIELDS.values())


def test_defaults_and_rewrite_parameters_come_from_the_classification() -> None:
    assert set(SamplingDefaults.__struct_fields__) == SAMPLING_FIELDS
    assert rewrite.PARAMETERS == SAMPLING_FIELDS
    assert rewrite.CEILINGS <= SAMPLING_FIELDS


@pytest.mark.parametrize("backend", [EchoBackend, MLXBackend, OpenAIUpstreamBackend])
def test_backends_declare_only_request_fields_the_gateway_leaves_them(backend: type) -> None:
    assert backend.supported_fields <= set(FIELDS) | PROMPT_FIELDS  # completions', embeddings' too
    if backend is not OpenAIUpstreamBackend:  # the upstream forwards every field as it came
        assert not backend.supported_fields & GATEWAY_FIELDS
