"""The Responses API on the MLX backend: scripted models make every item exact."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

pytest.importorskip("mlx.core")

from tests.support.apps import mlx_app

SCRIPTED = ("plain", "reasoning", "tool_call")
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def app(scripted_model: Callable[[str], Path]) -> Any:
    greedy = {"temperature": 0.0}
    return mlx_app(
        {name: {"backend": "mlx", "path": str(scripted_model(name)), "defaults": greedy} for name in SCRIPTED}
    )


def test_reasoning_becomes_a_reasoning_item(client: openai.OpenAI) -> None:
    response = client.responses.create(model="reasoning", input="Hi!")
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert [part.text for part in reasoning.content] == ["The user greets me."] and reasoning.summary == []
    assert message.type == "message" and response.output_text == "Hi!"
    assert response.usage.output_tokens_details.reasoning_tokens == 6  # 5 tokens + </think>


def test_streamed_reasoning_text_events(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="reasoning", input="Hi!", stream=True))
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
    ]  # fmt: skip
    reasoning = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    [done] = [e for e in events if e.type == "response.reasoning_text.done"]
    assert reasoning == done.text == "The user greets me."
    assert kinds.index("response.reasoning_text.done") < kinds.index("response.output_text.delta")
    final = events[-1].response
    assert [item.type for item in final.output] == ["reasoning", "message"] and final.output_text == "Hi!"


def test_a_reasoning_summary_is_asked_for(client: openai.OpenAI) -> None:
    response = client.responses.create(model="reasoning", input="Hi!", reasoning={"summary": "auto"})
    assert [part.text for part in response.output[0].summary] == ["The user greets me."]
    events = list(
        client.responses.create(
            model="reasoning", input="Hi!", reasoning={"summary": "detailed"}, stream=True
        )
    )
    summary = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert summary == "The user greets me."
    assert "response.reasoning_summary_part.done" in [event.type for event in events]
    assert events[-1].response.reasoning.summary == "detailed"


def test_reasoning_effort_none_turns_thinking_off(client: openai.OpenAI) -> None:
    response = client.responses.create(model="plain", input="Hi!", reasoning={"effort": "none"})
    assert [item.type for item in response.output] == ["message"] and response.output_text == "Hello there!"


def test_a_tool_call_round_trip(client: openai.OpenAI) -> None:
    first = client.responses.create(model="tool_call", input="Weather in Paris?", tools=[WEATHER])
    [call] = first.output
    assert (call.type, call.name, call.arguments) == ("function_call", "get_weather", '{"city": "Paris"}')
    second = client.responses.create(
        model="plain",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[WEATHER],
        reasoning={"effort": "none"},
    )
    assert second.output_text == "Hello there!" and second.status == "completed"


def test_a_continuation_hits_the_prefix_cache(client: openai.OpenAI) -> None:
    instructions = "Unlike any other prompt: you answer briefly. " * 10
    off = {"effort": "none"}
    first = client.responses.create(model="plain", instructions=instructions, input="Hi!", reasoning=off)
    assert first.usage.input_tokens_details.cached_tokens < 8  # at most the chat template's opening
    second = client.responses.create(
        model="plain",
        instructions=instructions,
        input="And you?",
        previous_response_id=first.id,
        reasoning=off,
    )
    assert second.output_text == "Hello there!"
    assert second.usage.input_tokens > first.usage.input_tokens
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens - 8


def test_logprobs_when_included(client: openai.OpenAI) -> None:
    asked = {"include": ["message.output_text.logprobs"], "top_logprobs": 2, "reasoning": {"effort": "none"}}
    part = client.responses.create(model="plain", input="Hi!", **asked).output[0].content[0]
    assert "".join(lp.token for lp in part.logprobs) == "Hello there!"
    assert all(len(lp.top_logprobs) == 2 and lp.logprob < 0 for lp in part.logprobs)
    events = list(client.responses.create(model="plain", input="Hi!", stream=True, **asked))
    streamed = [lp.token for e in events if e.type == "response.output_text.delta" for lp in e.logprobs]
    assert streamed == [lp.token for lp in part.logprobs]
