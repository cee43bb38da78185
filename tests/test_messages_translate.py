"""The Messages body -> internal chat request translation, field by field."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from gateway import InvalidRequest
from gateway.endpoints.messages.translate import chat_request, count_request
from gateway.endpoints.messages.wire import CountTokensRequest, MessagesRequest
from gateway.protocol import ImageUrlPart, TextPart

USER = [{"role": "user", "content": "hi"}]
TOOL = {"name": "get_weather", "input_schema": {"type": "object"}}


def translate(**fields: Any) -> Any:
    body = {"model": "m", "max_tokens": 64, "messages": USER, **fields}
    return chat_request(msgspec.convert(body, MessagesRequest))


def test_sampling_fields_map_one_to_one() -> None:
    request = translate(
        temperature=0.5, top_p=0.9, top_k=40, stop_sequences=["END"], metadata={"user_id": "u1"}, stream=True
    )
    assert (request.temperature, request.top_p, request.top_k, request.stop) == (0.5, 0.9, 40, ["END"])
    assert (request.max_tokens, request.user, request.stream) == (64, "u1", True)


def test_the_billing_line_is_dropped_from_system_blocks_and_strings() -> None:
    billing = "x-anthropic-billing-header: cc_version=2.1.37.0d9; cc_entrypoint=cli; cch=fa690;"
    blocks = translate(system=[{"type": "text", "text": billing}, {"type": "text", "text": "Rules."}])
    assert [(m.role, m.content) for m in blocks.messages[:1]] == [("system", "Rules.")]
    text = translate(system=f"{billing}\nRules.")
    assert text.messages[0].content == "Rules."
    only = translate(system=[{"type": "text", "text": billing}])
    assert [m.role for m in only.messages] == ["user"]


def test_user_blocks_tool_results_and_images() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    url = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    results = [
        {"type": "tool_result", "tool_use_id": "t1", "content": "18C"},
        {
            "type": "tool_result",
            "tool_use_id": "t2",
            "content": [{"type": "text", "text": "boom"}],
            "is_error": True,
        },
        {"type": "text", "text": "Look:"},
        image,
        url,
    ]
    call = {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}
    call2 = {**call, "id": "t2"}
    history = [*USER, {"role": "assistant", "content": [call, call2]}, {"role": "user", "content": results}]
    messages = translate(messages=history, tools=[TOOL]).messages
    assert [(m.role, m.tool_call_id) for m in messages] == [
        ("user", None),
        ("assistant", None),
        ("tool", "t1"),
        ("tool", "t2"),
        ("user", None),
    ]
    assert [c.function.arguments for c in messages[1].tool_calls] == ['{"city":"Paris"}'] * 2
    assert (messages[2].content, messages[3].content) == ("18C", "Error:\nboom")
    assert messages[4].content == [
        TextPart("Look:"),
        ImageUrlPart(image_url=messages[4].content[1].image_url),
        ImageUrlPart(image_url=messages[4].content[2].image_url),
    ]
    assert messages[4].content[1].image_url.url == "data:image/png;base64,AAAA"
    assert messages[4].content[2].image_url.url == "https://example.com/a.png"


def test_assistant_thinking_becomes_reasoning_and_redacted_thinking_is_left_out() -> None:
    answer = [
        {"type": "thinking", "thinking": "Hmm.", "signature": "abc"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "Hi!"},
    ]
    message = translate(messages=[*USER, {"role": "assistant", "content": answer}, *USER]).messages[1]
    assert (message.reasoning_content, message.content) == ("Hmm.", "Hi!")


def test_a_system_turn_mid_conversation_stays_a_system_message() -> None:
    turns = [*USER, {"role": "system", "content": [{"type": "text", "text": "Plan mode."}]}, *USER]
    assert [m.role for m in translate(messages=turns).messages] == ["user", "system", "user"]


@pytest.mark.parametrize(
    ("choice", "internal", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
        ({"type": "any", "disable_parallel_tool_use": False}, "required", True),
        (
            {"type": "tool", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
            None,
        ),
        ({"type": "none"}, "none", None),
    ],
)
def test_tool_choice_maps_onto_openai_modes(
    choice: dict[str, Any], internal: Any, parallel: bool | None
) -> None:
    request = translate(tools=[TOOL], tool_choice=choice)
    assert (request.tool_choice, request.parallel_tool_calls) == (internal, parallel)
    assert request.tools == [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]


@pytest.mark.parametrize(
    ("thinking", "enabled"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, True),
        ({"type": "disabled"}, False),
        ({"type": "adaptive", "budget_tokens": 0}, None),  # the model decides: its own default
    ],
)
def test_thinking_maps_onto_enable_thinking(thinking: dict[str, Any], enabled: bool | None) -> None:
    assert translate(max_tokens=2048, thinking=thinking).enable_thinking is enabled


def test_output_config_maps_onto_effort_and_response_format() -> None:
    schema = {"type": "object"}
    request = translate(output_config={"effort": "max", "format": {"type": "json_schema", "schema": schema}})
    assert request.reasoning_effort == "xhigh"
    assert request.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema},
    }


def test_clear_thinking_keeps_the_last_turns_thinking() -> None:
    answer = [{"type": "thinking", "thinking": "t", "signature": "s"}, {"type": "text", "text": "a"}]
    turns = [*USER, {"role": "assistant", "content": answer}] * 3 + USER
    kept = translate(
        messages=turns, context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}
    )
    assert [m.reasoning_content for m in kept.messages if m.role == "assistant"] == ["t", "t", "t"]
    edit = {"type": "clear_thinking_20251015", "keep": {"type": "all"}}
    assert translate(messages=turns, context_management={"edits": [edit]}).messages == kept.messages
    edit = {"type": "clear_thinking_20251015", "keep": {"type": "thinking_turns", "value": 1}}
    cleared = translate(messages=turns, context_management={"edits": [edit]})
    assert [m.reasoning_content for m in cleared.messages if m.role == "assistant"] == [None, None, "t"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {"max_tokens": 1024, "thinking": {"type": "enabled", "budget_tokens": 1024}},
            "thinking.budget_tokens",
        ),
        ({"stop_sequences": [""]}, "stop_sequences"),
        ({"tools": [{"type": "bash_20250124", "name": "bash"}]}, "tools[0].type"),
        ({"tools": [{"name": "x"}]}, "tools[0]"),
        ({"tools": [{**TOOL, "defer_loading": True}]}, "tools[0].defer_loading"),
        ({"tool_choice": {"type": "tool", "name": "x"}, "tools": [TOOL]}, "tool_choice.name"),
        ({"container": "c1"}, "container"),
        ({"messages": [*USER, {"role": "assistant", "content": "The answer is"}]}, "messages[1].role"),
        (
            {"context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}},
            "context_management.edits[0]",
        ),
        ({"output_config": {"format": {"type": "xml"}}}, "output_config.format"),
        (
            {"messages": [{"role": "user", "content": [{"type": "thinking", "thinking": "t"}]}]},
            "messages[0].content[0].type",
        ),
    ],
)
def test_what_cannot_be_honoured_is_a_400_naming_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        translate(**fields)
    assert raised.value.param == param


def test_count_tokens_takes_the_prompt_without_generation_settings() -> None:
    body = msgspec.convert({"model": "m", "messages": USER, "system": "S."}, CountTokensRequest)
    request = count_request(body)
    assert [m.role for m in request.messages] == ["system", "user"] and request.max_tokens is None
    with pytest.raises(msgspec.ValidationError, match="max_tokens"):
        msgspec.convert({"model": "m", "messages": USER, "max_tokens": 4}, CountTokensRequest)
