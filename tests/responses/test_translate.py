"""Unit tests of the translation into the internal chat request."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from gateway.endpoints.responses.translate import (
    chat_request,
    chat_tool_choice,
    function_tools,
    input_items,
    to_messages,
)
from gateway.endpoints.responses.wire import CreateResponse
from gateway.errors import InvalidRequest
from gateway.protocol import Message

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def body(**fields: Any) -> CreateResponse:
    return msgspec.convert({"model": "m", "input": "hi", **fields}, CreateResponse)


def messages(items: list[dict[str, Any]]) -> list[Message]:
    return to_messages(input_items(items), [])


def test_text_format_becomes_response_format() -> None:
    json_schema = {"type": "json_schema", "name": "answer", "schema": SCHEMA, "strict": True}
    request = chat_request(
        body(text={"format": json_schema}), "m", [Message(role="user", content="hi")], [], False
    )
    assert request.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
    }
    request = chat_request(body(text={"format": {"type": "json_object"}}), "m", request.messages, [], False)
    assert request.response_format == {"type": "json_object"}
    request = chat_request(body(text={"format": {"type": "text"}}), "m", request.messages, [], False)
    assert request.response_format is None
    with pytest.raises(InvalidRequest) as error:
        chat_request(body(text={"format": {"type": "json_schema"}}), "m", request.messages, [], False)
    assert error.value.param == "text.format"


def test_fields_are_renamed_for_the_chat_request() -> None:
    fields = {
        "max_output_tokens": 7,
        "reasoning": {"effort": "low"},
        "include": ["message.output_text.logprobs"],
    }
    request = chat_request(
        body(**fields, top_logprobs=3), "m", [Message(role="user", content="hi")], [], True
    )
    assert (request.max_tokens, request.reasoning_effort, request.logprobs, request.top_logprobs) == (
        7,
        "low",
        True,
        3,
    )
    assert request.stream is True


def test_allowed_tools_narrow_the_tools() -> None:
    tools = function_tools([{"type": "function", "name": name} for name in ("a", "b", "c")])
    choice = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}]}
    mode, allowed = chat_tool_choice(choice, tools)
    assert mode == "required" and [tool.name for tool in allowed] == ["b"]
    named, same = chat_tool_choice({"type": "function", "name": "a"}, tools)
    assert named == {"type": "function", "function": {"name": "a"}} and same == tools


def test_calls_join_the_assistant_turn_and_reasoning_rides_on_it() -> None:
    result = messages(
        [
            {"role": "user", "content": "weather?"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Need the tool."}]},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Checking."}],
            },
            {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "rain"}],
            },
        ]
    )
    assert [m.role for m in result] == ["user", "assistant", "tool", "tool"]
    assistant = result[1]
    assert assistant.content == "Checking." and assistant.reasoning_content == "Need the tool."
    assert [call.id for call in assistant.tool_calls or ()] == ["c1", "c2"]
    assert result[3].text() == "rain"


def test_a_bad_part_is_named_by_its_path() -> None:
    with pytest.raises(InvalidRequest) as error:
        input_items(
            [{"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_audio"}]}]
        )
    assert error.value.param == "input[0].content[1].type"
    with pytest.raises(InvalidRequest) as error:
        input_items([{"role": "user", "content": "a", "extra": 1}])
    assert error.value.param == "input[0].extra"
