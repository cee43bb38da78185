"""The mlx backend's tool calls through the real openai client: parsing, streaming,
`parallel_tool_calls`, `tool_choice` and a follow-up turn, on scripted models."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

pytest.importorskip("mlx.core")

from tests.support.apps import mlx_app
from tests.support.mlx_models import CALL_PARIS

SCRIPTED = ("plain", "tool_call", "two_tool_calls", "call_without_marker", "text_then_tool_call")
USER = [{"role": "user", "content": "Hi!"}]
NO_THINKING = {"enable_thinking": False}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}},
    },
}

# Scripted models pick the lowest allowed id among ties: "CET" is the lowest of these.
ZONE = {
    "type": "object",
    "properties": {"zone": {"enum": ["UTC", "CET", "JST"]}},
    "required": ["zone"],
    "additionalProperties": False,
}


# A ChatML template with no tool support (like SmolLM2's): it renders the same prompt
# with and without tools, so the backend uses the generic format.
NO_TOOLS_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def app(scripted_model: Callable[[str], Path]) -> Any:
    greedy = {"temperature": 0.0}  # scripted models answer greedily
    models = {
        name: {"backend": "mlx", "path": str(scripted_model(name)), "defaults": greedy} for name in SCRIPTED
    }
    for name in ("tool_call", "plain"):
        models[f"generic-{name}"] = {
            **models[name],
            "options": {"chat_template": NO_TOOLS_TEMPLATE},
        }
    return mlx_app(models)


def rebuild_stream(stream: Any) -> tuple[dict[int, dict[str, str]], str | None]:
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or ():
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.id or ""
            call["name"] += (delta.function.name if delta.function else None) or ""
            call["arguments"] += (delta.function.arguments if delta.function else None) or ""
    return calls, finish


def test_tool_call_streamed_equals_non_streamed(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="tool_call", messages=USER, tools=[WEATHER])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == json.loads(CALL_PARIS)["arguments"]
    assert not choice.message.content

    calls, finish = rebuild_stream(
        client.chat.completions.create(model="tool_call", messages=USER, tools=[WEATHER], stream=True)
    )
    assert finish == "tool_calls"
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        (call.function.name, json.loads(call.function.arguments))
    ]
    assert calls[0]["id"]


def test_parallel_tool_calls_false_keeps_one_call(client: openai.OpenAI) -> None:
    tools = [WEATHER, TIME]
    both = client.chat.completions.create(model="two_tool_calls", messages=USER, tools=tools)
    assert [c.function.name for c in both.choices[0].message.tool_calls] == ["get_weather", "get_time"]
    forced = client.chat.completions.create(
        model="two_tool_calls", messages=USER, tools=tools, tool_choice="required"
    )
    assert [c.function.name for c in forced.choices[0].message.tool_calls] == ["get_weather", "get_time"]
    one = client.chat.completions.create(
        model="two_tool_calls", messages=USER, tools=tools, parallel_tool_calls=False
    )
    assert [c.function.name for c in one.choices[0].message.tool_calls] == ["get_weather"]


def test_tool_choice_none_never_calls(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="tool_call", messages=USER, tools=[WEATHER], tool_choice="none", max_tokens=4
    )
    choice = completion.choices[0]
    assert not choice.message.tool_calls
    assert choice.finish_reason == "length"


def test_tool_choice_required_and_named(client: openai.OpenAI) -> None:
    ok = client.chat.completions.create(
        model="tool_call", messages=USER, tools=[WEATHER], tool_choice="required"
    )
    assert ok.choices[0].message.tool_calls[0].function.name == "get_weather"
    named = {"type": "function", "function": {"name": "get_weather"}}
    ok = client.chat.completions.create(
        model="tool_call", messages=USER, tools=[WEATHER, TIME], tool_choice=named
    )
    assert ok.choices[0].message.tool_calls[0].function.name == "get_weather"

    # the grammar holds the model to the named function, whatever it would say
    other = {"type": "function", "function": {"name": "get_time"}}
    strict_time = {"type": "function", "function": {**TIME["function"], "parameters": ZONE}}
    forced = client.chat.completions.create(
        model="tool_call", messages=USER, tools=[WEATHER, strict_time], tool_choice=other,
        parallel_tool_calls=False,
    )  # fmt: skip
    [call] = forced.choices[0].message.tool_calls or []
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_time", {"zone": "CET"})

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tool_call", messages=USER, tools=[WEATHER], tool_choice=other)
    assert caught.value.body["param"] == "tool_choice"


def test_forcing_tool_choice_opens_the_call_for_the_model(client: openai.OpenAI) -> None:
    """This model writes a call's JSON but never the start marker: left alone it answers
    text; with `tool_choice` required or named, the prompt opens the call for it."""
    chat = client.chat.completions
    auto = chat.create(model="call_without_marker", messages=USER, tools=[WEATHER], extra_body=NO_THINKING)
    assert not auto.choices[0].message.tool_calls
    assert auto.choices[0].message.content == CALL_PARIS
    named = {"type": "function", "function": {"name": "get_weather"}}
    for tool_choice in ("required", named):
        forced = chat.create(
            model="call_without_marker",
            messages=USER,
            tools=[WEATHER, TIME],
            tool_choice=tool_choice,  # type: ignore[arg-type]
            extra_body=NO_THINKING,
        )
        choice = forced.choices[0]
        assert choice.finish_reason == "tool_calls" and not choice.message.content
        [call] = choice.message.tool_calls or []
        assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    stream = chat.create(
        model="call_without_marker",
        messages=USER,
        tools=[WEATHER],
        tool_choice="required",
        extra_body=NO_THINKING,
        stream=True,
    )
    deltas = [chunk.choices[0].delta for chunk in stream if chunk.choices]
    assert [
        d.tool_calls[0].function.name for d in deltas if d.tool_calls and d.tool_calls[0].function.name
    ] == ["get_weather"]
    assert not "".join(d.content or "" for d in deltas)


def test_tool_result_follow_up_turn(client: openai.OpenAI) -> None:
    messages = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"},
    ]
    completion = client.chat.completions.create(
        model="plain", messages=messages, tools=[WEATHER], extra_body=NO_THINKING
    )
    assert completion.choices[0].message.content == "Hello there!"


def test_a_template_without_tool_support_gets_the_generic_format(client: openai.OpenAI) -> None:
    """The tools are described in the system message; `<tool_call>` JSON is read back
    as a call (auto), and forced by the grammar (required/named)."""
    auto = client.chat.completions.create(model="generic-tool_call", messages=USER, tools=[WEATHER])
    [call] = auto.choices[0].message.tool_calls or []
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    assert auto.choices[0].finish_reason == "tool_calls"
    strict_time = {"type": "function", "function": {**TIME["function"], "parameters": ZONE}}
    for tool_choice in ("required", {"type": "function", "function": {"name": "get_time"}}):
        forced = client.chat.completions.create(
            model="generic-plain", messages=USER, tools=[strict_time], tool_choice=tool_choice,  # type: ignore[arg-type]
            parallel_tool_calls=False,
        )  # fmt: skip
        [call] = forced.choices[0].message.tool_calls or []
        assert (call.function.name, json.loads(call.function.arguments)) == ("get_time", {"zone": "CET"})
    plain = client.chat.completions.create(model="generic-plain", messages=USER, tools=[WEATHER])
    assert plain.choices[0].message.content == "Hello there!"


def test_auto_with_a_strict_tool_constrains_the_call_once_opened(client: openai.OpenAI) -> None:
    """The model's own call lacks `unit`: a strict tool's schema makes it add one;
    the text before the call stays the model's."""
    unit = {"unit": {"enum": ["celsius", "kelvin"]}}
    parameters = {
        "type": "object",
        "properties": {"city": {"enum": ["Paris", "Rome"]}, **unit},
        "required": ["city", "unit"],
        "additionalProperties": False,
    }
    loose = {"type": "function", "function": {"name": "get_weather", "parameters": parameters}}
    strict = {"type": "function", "function": {**loose["function"], "strict": True}}
    chat = client.chat.completions
    free = chat.create(model="text_then_tool_call", messages=USER, tools=[loose], extra_body=NO_THINKING)
    assert json.loads(free.choices[0].message.tool_calls[0].function.arguments) == {"city": "Paris"}
    bound = chat.create(model="text_then_tool_call", messages=USER, tools=[strict], extra_body=NO_THINKING)
    message = bound.choices[0].message
    assert message.content == "Let me check."
    [call] = message.tool_calls or []
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_weather",
        {"city": "Paris", "unit": "celsius"},
    )
