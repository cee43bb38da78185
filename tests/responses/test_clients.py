"""The request bodies real clients send, accepted exactly: Codex CLI's and the OpenAI
Agents SDK's (its default Responses model, running an agent with one function tool)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest

SHELL = {
    "type": "function",
    "name": "shell",
    "description": "Runs a shell command and returns its output.",
    "strict": False,
    "parameters": {
        "type": "object",
        "properties": {"command": {"type": "array", "items": {"type": "string"}}},
        "required": ["command"],
        "additionalProperties": False,
    },
}


def codex_body(**changes: Any) -> dict[str, Any]:
    """A Codex CLI turn (codex-rs `ResponsesApiRequest`): its instructions, history with
    a prior reasoning item and function call, tools, and the hosted-service fields."""
    body = {
        "model": "echo",
        "instructions": "You are a coding agent running in the Codex CLI.",
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "<permissions/>"}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "<environment_context/>"}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "list the files"}],
            },
            {
                "type": "reasoning",
                "id": "rs_0",
                "summary": [{"type": "summary_text", "text": "**Listing the files**"}],
                "encrypted_content": "gAAAAABo-opaque",
            },
            {
                "type": "function_call",
                "id": "fc_0",
                "name": "shell",
                "arguments": json.dumps({"command": ["ls"]}),
                "call_id": "call_0",
            },
            {"type": "function_call_output", "call_id": "call_0", "output": "README.md\nsrc"},
        ],
        "tools": [SHELL],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": None,
        "store": False,
        "stream": True,
        "include": [],
        "service_tier": "default",
        "prompt_cache_key": "0199b3a4-thread",
        "client_metadata": {"x-codex-turn": "1"},
    }
    return body | changes


def sse_events(base_url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream("POST", f"{base_url}/v1/responses", json=body, timeout=30) as response:
        assert response.status_code == 200, response.read()
        return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]


def test_a_codex_turn_is_accepted_exactly(base_url: str) -> None:
    events = sse_events(base_url, codex_body())
    final = events[-1]
    assert final["type"] == "response.completed"
    assert final["response"]["output"][0]["content"][0]["text"] == "tool shell said: README.md src"
    assert final["response"]["store"] is False and final["response"]["parallel_tool_calls"] is False
    done = [event["item"] for event in events if event["type"] == "response.output_item.done"]
    assert [item["type"] for item in done] == ["message"]


def test_a_codex_turn_that_calls_a_tool(base_url: str) -> None:
    body = codex_body(input=[{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": 'call shell {"command": ["pwd"]}'}
    ]}])  # fmt: skip
    events = sse_events(base_url, body)
    [call] = [event["item"] for event in events if event["type"] == "response.output_item.done"]
    assert (call["type"], call["name"], call["arguments"]) == (
        "function_call",
        "shell",
        '{"command": ["pwd"]}',
    )


def test_codex_reasoning_settings_are_honoured_or_named(base_url: str) -> None:
    body = codex_body(
        reasoning={"effort": "medium", "summary": "auto"}, include=["reasoning.encrypted_content"]
    )
    response = httpx.post(f"{base_url}/v1/responses", json=body | {"stream": False})
    assert response.status_code == 400  # echo cannot think: the field is named, never ignored
    assert response.json()["error"]["param"] == "reasoning.effort"


def test_an_openai_agents_sdk_agent_with_one_function_tool(base_url: str) -> None:
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"sunny in {city}"

    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    provider = agents.OpenAIProvider(openai_client=client, use_responses=True)
    config = agents.RunConfig(model_provider=provider)
    agent = agents.Agent(
        name="weather", instructions="Answer with the tool.", tools=[get_weather], model="echo"
    )

    async def run() -> tuple[Any, Any]:
        plain = await agents.Runner.run(agent, 'call get_weather {"city": "Paris"}', run_config=config)
        streamed = agents.Runner.run_streamed(agent, 'call get_weather {"city": "Oslo"}', run_config=config)
        async for _ in streamed.stream_events():
            pass
        return plain, streamed

    plain, streamed = asyncio.run(run())
    assert calls == ["Paris", "Oslo"]
    assert plain.final_output == "tool get_weather said: sunny in Paris"
    assert streamed.final_output == "tool get_weather said: sunny in Oslo"
    assert isinstance(plain.last_agent.model, str) and len(plain.raw_responses) == 2
