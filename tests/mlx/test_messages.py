"""Anthropic Messages on the MLX backend, through the official `anthropic` SDK.

Scripted models say a known script whatever the prompt (`tests.support.mlx_scripted`):
thinking blocks, tool use, stop sequences and token counts are exact. A Claude
Code-shaped conversation sent twice, growing, shows the billing line's nonce no
longer defeats the prefix cache.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("mlx.core")
import anthropic

from tests.support.apps import mlx_app

SCRIPTED = ("plain", "reasoning", "tool_call", "reasoning_tool_call", "stop")
USER = [{"role": "user", "content": "Hi!"}]
NO_THINKING = {"type": "disabled"}
THINKING = {"type": "enabled", "budget_tokens": 1024}
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "cache_control": {"type": "ephemeral"},
}


@pytest.fixture(scope="module")
def app(scripted_model: Callable[[str], Path]) -> Any:
    greedy = {"temperature": 0.0}  # scripted models answer greedily
    return mlx_app(
        {name: {"backend": "mlx", "path": str(scripted_model(name)), "defaults": greedy} for name in SCRIPTED}
    )


@pytest.fixture(scope="module")
def claude(server: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server, api_key="unused", max_retries=0) as sdk:
        yield sdk


def final_message(claude: anthropic.Anthropic, stream: bool, **fields: Any) -> Any:
    if not stream:
        return claude.messages.create(**fields)
    with claude.messages.stream(**fields) as events:
        return events.get_final_message()


@pytest.mark.parametrize("stream", [False, True])
def test_thinking_blocks_come_with_a_signature(claude: anthropic.Anthropic, stream: bool) -> None:
    message = final_message(
        claude, stream, model="reasoning", max_tokens=2048, messages=USER, thinking=THINKING
    )
    thinking, text = message.content
    assert (thinking.type, thinking.thinking) == ("thinking", "The user greets me.")
    assert thinking.signature
    assert (text.type, text.text) == ("text", "Hi!")
    assert message.stop_reason == "end_turn"
    # The answer goes back in the history as it came, thinking and signature included.
    history = [*USER, {"role": "assistant", "content": message.content}, {"role": "user", "content": "And?"}]
    again = claude.messages.create(model="reasoning", max_tokens=2048, messages=history, thinking=THINKING)
    assert [block.type for block in again.content] == ["thinking", "text"]


@pytest.mark.parametrize("stream", [False, True])
def test_omitted_thinking_keeps_only_the_signature(claude: anthropic.Anthropic, stream: bool) -> None:
    shown = claude.messages.create(model="reasoning", max_tokens=2048, messages=USER, thinking=THINKING)
    thinking = {**THINKING, "display": "omitted"}
    message = final_message(
        claude, stream, model="reasoning", max_tokens=2048, messages=USER, thinking=thinking
    )
    assert [(b.type, getattr(b, "thinking", None)) for b in message.content] == [
        ("thinking", ""),
        ("text", None),
    ]
    assert message.content[0].signature == shown.content[0].signature  # type: ignore[union-attr]


def test_the_stream_sends_thinking_and_signature_deltas(claude: anthropic.Anthropic) -> None:
    fields = {"model": "reasoning", "max_tokens": 2048, "messages": USER, "thinking": THINKING}
    with claude.messages.stream(**fields) as stream:
        deltas = [event.delta.type for event in stream if event.type == "content_block_delta"]
    assert deltas[0] == "thinking_delta" and "signature_delta" in deltas and deltas[-1] == "text_delta"
    assert deltas.index("signature_delta") < deltas.index("text_delta")


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_use_round_trip(claude: anthropic.Anthropic, stream: bool) -> None:
    fields: dict[str, Any] = {"max_tokens": 64, "tools": [WEATHER], "thinking": NO_THINKING}
    call = final_message(claude, stream, model="tool_call", messages=USER, **fields)
    assert call.stop_reason == "tool_use"
    [block] = call.content
    assert (block.type, block.name, block.input) == ("tool_use", "get_weather", {"city": "Paris"})
    result = {"type": "tool_result", "tool_use_id": block.id, "content": "18C and sunny"}
    history = [*USER, {"role": "assistant", "content": call.content}, {"role": "user", "content": [result]}]
    answer = claude.messages.create(model="plain", messages=history, **fields)
    assert [(b.type, b.text) for b in answer.content] == [("text", "Hello there!")]
    rendered = claude.messages.count_tokens(
        model="plain", messages=history, tools=[WEATHER], thinking=NO_THINKING
    )
    assert answer.usage.input_tokens + answer.usage.cache_read_input_tokens == rendered.input_tokens


@pytest.mark.parametrize("stream", [False, True])
def test_thinking_then_a_tool_call(claude: anthropic.Anthropic, stream: bool) -> None:
    fields = {"max_tokens": 2048, "tools": [WEATHER], "thinking": THINKING, "messages": USER}
    message = final_message(claude, stream, model="reasoning_tool_call", **fields)
    thinking, call = message.content
    assert (thinking.type, thinking.thinking) == ("thinking", "I need the weather.")
    assert (call.type, call.name, call.input) == ("tool_use", "get_weather", {"city": "Paris"})
    assert message.stop_reason == "tool_use"


@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_sequence_is_named(claude: anthropic.Anthropic, stream: bool) -> None:
    fields = {"model": "stop", "max_tokens": 64, "messages": USER, "thinking": NO_THINKING}
    message = final_message(claude, stream, stop_sequences=[" three", ", two"], **fields)
    assert message.content[0].text == "Counting: one"
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", ", two")
    unstopped = final_message(claude, stream, stop_sequences=["seven"], **fields)
    assert (unstopped.stop_reason, unstopped.stop_sequence) == ("end_turn", None)


def test_count_tokens_is_the_rendered_prompt(claude: anthropic.Anthropic, app: Any) -> None:
    backend = app.state.registry.entries["plain"].backend
    request = {"model": "plain", "messages": USER, "system": "Be brief.", "thinking": NO_THINKING}
    count = claude.messages.count_tokens(**request)
    text = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
    text += "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert count.input_tokens == len(backend._tokenizer.encode(text, add_special_tokens=False))


def claude_code_request(nonce: str, turns: list[dict[str, Any]]) -> dict[str, Any]:
    """A body shaped like Claude Code's: billing line with a fresh nonce, a long system
    prompt in blocks with cache_control, tools, metadata, and a mid-conversation system turn."""
    return {
        "model": "plain",
        "max_tokens": 64,
        "system": [
            {
                "type": "text",
                "text": f"x-anthropic-billing-header: cc_version=2.1.37.0d9; cc_entrypoint=cli; cch={nonce};",
            },
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
            {"type": "text", "text": "Answer briefly. " * 40, "cache_control": {"type": "ephemeral"}},
        ],
        "tools": [WEATHER],
        "metadata": {"user_id": "user_0123_account__session_4567"},
        "thinking": NO_THINKING,
        "messages": turns,
    }


def test_a_growing_claude_code_conversation_hits_the_prefix_cache(claude: anthropic.Anthropic) -> None:
    turns: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>Be careful.</system-reminder>"},
                {"type": "text", "text": "Hi!"},
            ],
        },
        {"role": "assistant", "content": "Hello there!"},
        {"role": "system", "content": "The user switched to plan mode."},
        {"role": "user", "content": "What is next?"},
    ]
    first = claude.messages.create(**claude_code_request("fa690", turns))
    reply = first.content[0].text
    first_prompt = first.usage.input_tokens + first.usage.cache_read_input_tokens
    grown = [*turns, {"role": "assistant", "content": reply}, {"role": "user", "content": "Thanks."}]
    second = claude.messages.create(**claude_code_request("0aaa9", grown))
    assert reply == "Hello there!" == second.content[0].text
    # Everything the first request rendered is reused but its generation prompt.
    assert second.usage.cache_read_input_tokens >= first_prompt - 8
    assert second.usage.input_tokens > 0
    assert json.loads(second.to_json())["usage"]["cache_read_input_tokens"] > 0


CLAUDE_CODE_HEADERS = {
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27",
    "anthropic-dangerous-direct-browser-access": "true",
    "x-app": "cli",
    "user-agent": "claude-cli/2.1.37 (external, cli)",
    "x-api-key": "unused",
}


@pytest.mark.parametrize(
    "controls",
    [
        {  # as captured from Claude Code 2.0/2.1 on Claude 4.5 models (with max_tokens 32000)
            "thinking": {"budget_tokens": 8191, "type": "enabled"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        },
        {  # adaptive thinking, as later versions send it
            "thinking": {"budget_tokens": 0, "type": "adaptive"},
            "output_config": {"effort": "high"},
            "context_management": {"edits": []},
        },
    ],
)
def test_claude_code_bodies_are_served(server: str, controls: dict[str, Any]) -> None:
    """Everything Claude Code sends decodes and is honoured: a streamed answer on `?beta=true`."""
    tool = {
        "name": "Bash",
        "description": "Executes a given bash command",
        "input_schema": {
            "type": "object",
            "properties": {"command": {"type": "string", "description": "The command to execute"}},
            "required": ["command"],
            "additionalProperties": False,
            "$schema": "http://json-schema.org/draft-07/schema#",
        },
    }
    body = {
        **claude_code_request(
            "36ee5",
            [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "hey", "cache_control": {"type": "ephemeral"}}],
                }
            ],
        ),
        "model": "reasoning",
        "max_tokens": 8192,  # CLAUDE_CODE_MAX_OUTPUT_TOKENS: Claude Code's 32000 overflows a 32k context
        "stream": True,
        "tools": [tool],
        **controls,
    }
    response = httpx.post(
        f"{server}/v1/messages?beta=true", json=body, headers=CLAUDE_CODE_HEADERS, timeout=60
    )
    assert response.status_code == 200, response.text
    names = [
        line.removeprefix("event: ") for line in response.text.splitlines() if line.startswith("event: ")
    ]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    assert "content_block_start" in names
    count = httpx.post(
        f"{server}/v1/messages/count_tokens?beta=true",
        json={k: v for k, v in body.items() if k not in ("max_tokens", "stream", "metadata")},
        headers=CLAUDE_CODE_HEADERS,
    )
    assert count.status_code == 200 and count.json()["input_tokens"] > 0, count.text
