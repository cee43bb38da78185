"""POST /v1/responses through the official openai client against a real server (echo).

Echo answers the last user message word by word (one word, one token; a prompt
costs its words plus one per message), or `tool <name> said: <output>` after a
tool result, and calls a tool when the message is `call <name> <json>`: every
byte below is known.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}
# What the Open Responses schema requires of every response resource.
REQUIRED = {
    "id", "object", "created_at", "completed_at", "status", "incomplete_details", "model",
    "previous_response_id", "instructions", "output", "error", "tools", "tool_choice", "truncation",
    "parallel_tool_calls", "text", "top_p", "presence_penalty", "frequency_penalty", "top_logprobs",
    "temperature", "reasoning", "usage", "max_output_tokens", "max_tool_calls", "store", "background",
    "service_tier", "metadata", "safety_identifier", "prompt_cache_key",
}  # fmt: skip


def test_a_string_input_answers_one_message(client: openai.OpenAI, base_url: str) -> None:
    response = client.responses.create(model="echo", input="the quick brown fox")
    assert response.status == "completed" and response.object == "response"
    assert response.id.startswith("resp_") and response.completed_at >= response.created_at
    [message] = response.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    assert [part.type for part in message.content] == ["output_text"]
    assert response.output_text == "the quick brown fox"
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (5, 4, 9)
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0
    raw = httpx.get(f"{base_url}/v1/responses/{response.id}").json()
    assert REQUIRED <= set(raw)
    assert raw["tool_choice"] == "auto" and raw["truncation"] == "disabled" and raw["store"] is True
    assert raw["text"] == {"format": {"type": "text"}, "verbosity": "medium"}


def test_message_items_roles_parts_and_phases(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="echo",
        input=[
            {"type": "message", "role": "developer", "content": "Be terse."},
            {"role": "user", "content": [{"type": "input_text", "text": "My name is"}]},
            {"type": "message", "role": "assistant", "phase": "commentary", "content": "Noted."},
            {
                "type": "message",
                "role": "assistant",
                "phase": "final_answer",
                "content": [{"type": "output_text", "text": "Hello!", "annotations": []}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "what do you"},
                    {
                        "type": "input_image",
                        "image_url": "data:image/png;base64,iVBORw0KGgo=",
                        "detail": "low",
                    },
                    {"type": "input_text", "text": " see"},
                ],
            },
        ],
    )
    assert response.output_text == "what do you see"  # echo reads images by their text


def test_instructions_become_the_system_prompt(client: openai.OpenAI) -> None:
    response = client.responses.create(model="system", instructions="You are a pirate.", input="hi")
    assert response.output_text == "You are a pirate."
    assert response.instructions == "You are a pirate."


def test_max_output_tokens_makes_it_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(model="echo", input="one two three four", max_output_tokens=2)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "one two" and response.output[0].status == "incomplete"
    events = list(
        client.responses.create(model="echo", input="one two three", max_output_tokens=2, stream=True)
    )
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


def test_the_stream_is_the_typed_event_sequence(client: openai.OpenAI, base_url: str) -> None:
    events = list(client.responses.create(model="echo", input="hello there", stream=True))
    assert [event.type for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == ["hello", " there"]
    created, final = events[0].response, events[-1].response
    assert created.status == "in_progress" and created.output == [] and created.id == final.id
    assert final.output_text == "hello there" and final.usage.output_tokens == 2
    item_ids = {e.item_id for e in events if hasattr(e, "item_id")}
    assert item_ids == {final.output[0].id}
    stored = httpx.get(f"{base_url}/v1/responses/{final.id}").json()
    assert stored == final.model_dump(mode="json", exclude_unset=True) | {"output": stored["output"]}
    assert stored["output"][0]["content"][0]["text"] == "hello there"


def test_sse_names_each_event_like_openai(base_url: str) -> None:
    body = {"model": "echo", "input": "hi", "stream": True}
    with httpx.stream("POST", f"{base_url}/v1/responses", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    blocks = [block.split("\n") for block in text.strip().split("\n\n")]
    for event_line, data_line in blocks:
        assert event_line.removeprefix("event: ") == json.loads(data_line.removeprefix("data: "))["type"]


def test_a_function_tool_round_trip(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="echo", input='call get_weather {"city": "Paris"}', tools=[WEATHER], tool_choice="auto"
    )
    [call] = first.output
    assert (call.type, call.name, call.arguments, call.status) == (
        "function_call", "get_weather", '{"city": "Paris"}', "completed",
    )  # fmt: skip
    assert call.call_id and call.id.startswith("fc_")
    assert first.tools[0].name == "get_weather" and first.tools[0].strict is True
    history: list[Any] = [
        {"role": "user", "content": 'call get_weather {"city": "Paris"}'},
        *[item.model_dump(exclude_none=True) for item in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"},
    ]
    follow_up = client.responses.create(model="echo", input=history, tools=[WEATHER])
    assert follow_up.output_text == "tool get_weather said: sunny, 21 C"
    by_id = client.responses.create(
        model="echo",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "rainy"}],
        tools=[WEATHER],
    )
    assert by_id.output_text == "tool get_weather said: rainy"


def test_a_streamed_function_call(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(
            model="echo", input='call get_weather {"city": "Oslo"}', tools=[WEATHER], stream=True
        )
    )
    kinds = [event.type for event in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[4].arguments == '{"city": "Oslo"}' and events[4].name == "get_weather"
    assert events[-1].response.output[0].call_id == events[2].item.call_id


def test_previous_response_id_continues_the_conversation(client: openai.OpenAI) -> None:
    first = client.responses.create(model="echo", input="a b c", instructions="Be brief.")
    second = client.responses.create(model="echo", input="d e", previous_response_id=first.id)
    assert second.output_text == "d e" and second.previous_response_id == first.id
    # "a b c" (4) + its answer (4) + "d e" (3); instructions are not carried over.
    assert second.usage.input_tokens == 11
    third = client.responses.create(model="echo", input="f", previous_response_id=second.id, instructions="x")
    assert third.usage.input_tokens == 11 + 3 + 2 + 2


def test_store_false_keeps_nothing(client: openai.OpenAI) -> None:
    response = client.responses.create(model="echo", input="secret", store=False)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.BadRequestError) as error:
        client.responses.create(model="echo", input="again", previous_response_id=response.id)
    assert error.value.code == "previous_response_not_found" and error.value.param == "previous_response_id"


def test_delete_a_stored_response(client: openai.OpenAI, base_url: str) -> None:
    response = client.responses.create(model="echo", input="keep me")
    answer = httpx.delete(f"{base_url}/v1/responses/{response.id}")
    assert answer.json() == {"id": response.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    assert httpx.delete(f"{base_url}/v1/responses/{response.id}").status_code == 404


def test_hosted_service_fields_are_accepted_and_echoed(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="echo",
        input="ok",
        metadata={"ticket": "42"},
        user="u-1",
        service_tier="auto",
        prompt_cache_key="k",
        safety_identifier="s",
        include=["reasoning.encrypted_content"],
        truncation="auto",
        temperature=0.5,
        top_p=0.9,
        parallel_tool_calls=False,
        text={"format": {"type": "text"}},
        extra_body={"client_metadata": {"x": "y"}, "prompt_cache_retention": "24h"},
    )
    assert response.output_text == "ok"
    assert response.metadata == {"ticket": "42"} and response.prompt_cache_key == "k"
    assert (response.temperature, response.top_p, response.parallel_tool_calls) == (0.5, 0.9, False)
    assert response.truncation == "auto" and response.safety_identifier == "s"


def test_a_failure_mid_stream_ends_with_an_error_event(client: openai.OpenAI, base_url: str) -> None:
    body = {"model": "broken", "input": "a b c d", "stream": True}
    with httpx.stream("POST", f"{base_url}/v1/responses", json=body) as response:
        assert response.status_code == 200
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert [event["type"] for event in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["error"]["code"] == "backend_error"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "backend_error"
    with pytest.raises(openai.APIError):
        list(client.responses.create(model="broken", input="a b c", stream=True))


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "echo", "input": "hi", "max_output_tokens": "lots"}, "max_output_tokens"),
        ({"model": "echo", "input": "hi", "temperature": 3}, "temperature"),
        ({"model": "echo", "input": "hi", "bogus": 1}, "bogus"),
        ({"model": "echo", "input": [{"role": "robot", "content": "hi"}]}, "input[0].role"),
        ({"model": "echo", "input": [{"type": "message", "role": "user"}]}, "input[0].content"),
        ({"model": "echo", "input": [{"type": "teleport"}]}, "input[0].type"),
        ({"model": "echo", "input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        (
            {"model": "echo", "input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]},
            "input[0].call_id",
        ),
        ({"model": "echo", "input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"model": "echo", "input": "hi", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"model": "echo", "input": "hi", "tool_choice": {"type": "function", "name": "x"}}, "tool_choice"),
        ({"model": "echo", "input": "hi", "text": {"format": {"type": "json_object"}}}, "text.format"),
        ({"model": "echo", "input": "hi", "text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"model": "echo", "input": "hi", "text": {"verbosity": "high"}}, "text.verbosity"),
        ({"model": "echo", "input": "hi", "reasoning": {"effort": "high"}}, "reasoning.effort"),
        ({"model": "echo", "input": "hi", "include": ["message.output_text.logprobs"]}, "include"),
        ({"model": "echo", "input": "hi", "background": True}, "background"),
        ({"model": "echo", "input": "hi", "conversation": "conv_1"}, "conversation"),
        ({"model": "echo", "input": "hi", "generate": False}, "generate"),
        ({"model": "echo"}, "input"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(base_url: str, body: dict[str, Any], param: str) -> None:
    response = httpx.post(f"{base_url}/v1/responses", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert param.split(".")[-1].split("[")[0] in error["message"]


def test_unknown_models_and_ids_are_404s(base_url: str) -> None:
    response = httpx.post(f"{base_url}/v1/responses", json={"model": "nope", "input": "hi"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    missing = httpx.get(f"{base_url}/v1/responses/resp_missing")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
