"""The other API surfaces use the same constrained decoding: Responses `text.format`
and Anthropic `tool_choice` `any`/`tool` on a scripted MLX model that would
otherwise just say "Hello there!"."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import anthropic
import jsonschema
import openai
import pydantic
import pytest

pytest.importorskip("mlx.core")
pytest.importorskip("llguidance")

from tests.mlx.test_api_grammar import ANSWER, WEATHER
from tests.support.apps import mlx_app

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": WEATHER["function"]["parameters"],
}
CLOCK_TOOL = {
    "name": "get_time",
    "input_schema": {"type": "object", "properties": {}, "additionalProperties": False},
}
USER = [{"role": "user", "content": "Hi!"}]


class Verdict(pydantic.BaseModel):
    answer: Literal["yes", "no"]


@pytest.fixture(scope="module")
def app(scripted_model: Callable[[str], Path]) -> Any:
    plain = {"backend": "mlx", "path": str(scripted_model("plain")), "defaults": {"temperature": 0.0}}
    return mlx_app({"plain": plain})


@pytest.fixture(scope="module")
def claude(server: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server, api_key="unused", max_retries=0) as sdk:
        yield sdk


@pytest.mark.parametrize("stream", [False, True])
def test_responses_text_format_json_schema(client: openai.OpenAI, stream: bool) -> None:
    text = {"format": {"type": "json_schema", "name": "answer", "schema": ANSWER, "strict": True}}
    fields: dict[str, Any] = {"model": "plain", "input": "Hi!", "text": text, "reasoning": {"effort": "none"}}
    if stream:
        events = list(client.responses.create(**fields, stream=True))
        response = events[-1].response
    else:
        response = client.responses.create(**fields)
    assert response.status == "completed"
    jsonschema.validate(json.loads(response.output_text), ANSWER)


def test_responses_parse_gives_the_model_instance(client: openai.OpenAI) -> None:
    response = client.responses.parse(
        model="plain", input="Hi!", text_format=Verdict, reasoning={"effort": "none"}
    )
    assert isinstance(response.output_parsed, Verdict)


@pytest.mark.parametrize(
    ("choice", "name"),
    # One call each: left to add calls, a scripted model (lowest id wins ties) never stops.
    [
        ({"type": "any", "disable_parallel_tool_use": True}, None),
        ({"type": "tool", "name": "get_time", "disable_parallel_tool_use": True}, "get_time"),
    ],
)
def test_messages_tool_choice_any_and_tool_force_a_valid_call(
    claude: anthropic.Anthropic, choice: dict[str, Any], name: str | None
) -> None:
    message = claude.messages.create(
        model="plain",
        max_tokens=64,
        messages=USER,
        tools=[WEATHER_TOOL, CLOCK_TOOL],
        tool_choice=choice,  # type: ignore[arg-type]
        thinking={"type": "disabled"},
    )
    assert message.stop_reason == "tool_use", message.content
    [call] = [block for block in message.content if block.type == "tool_use"]
    assert name is None or call.name == name
    schemas = {tool["name"]: tool["input_schema"] for tool in (WEATHER_TOOL, CLOCK_TOOL)}
    jsonschema.validate(call.input, schemas[call.name])
