"""Plugin test helpers: configs wired like production, servers, clients, captured logs."""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import openai
import pluggy
import structlog

from gateway import GatewayConfig, create_app, parse_config
from gateway.plugins import default_plugin_manager
from tests.support.server import running_server

PATHS = ("non-stream", "stream", "bench")
MESSAGES_PATHS = ("messages", "messages-stream")  # Anthropic Messages, through the anthropic SDK
RESPONSES_PATHS = ("responses", "responses-stream")  # /v1/responses, through `ask` too
USER = [{"role": "user", "content": "the quick brown fox"}]
# Built-in backends the echo-only tests never need (and must not import).
UNUSED_BACKENDS = ["mlx", "openai"]


def gateway_config(
    settings: dict[str, Any] | None = None,
    *,
    modules: list[str] | None = None,
    disabled: list[str] | None = None,
    **models: dict[str, Any],
) -> GatewayConfig:
    """Echo models plus `[plugins]` as given; built-in plugins load as in production."""
    tables: dict[str, Any] = {
        "echo": {"backend": "echo", "aliases": ["echo-alias"]},
        "system": {"backend": "echo", "options": {"echo_system": True}},
        "broken": {"backend": "echo", "options": {"fail_after_tokens": 1}},
        **models,
    }
    plugins = {
        "modules": modules or [],
        "disabled": UNUSED_BACKENDS + (disabled or []),
        "settings": settings or {},
    }
    return parse_config({"plugins": plugins, "models": tables})


def production_manager(config: GatewayConfig, *extra: object) -> pluggy.PluginManager:
    """The plugin manager `create_app` would build, plus `extra` test plugins (run first),
    each named after its class."""
    manager = default_plugin_manager(config)
    for plugin in extra:
        manager.register(plugin, name=type(plugin).__name__)
    return manager


@contextmanager
def serve(config: GatewayConfig, manager: pluggy.PluginManager | None = None) -> Iterator[str]:
    with running_server(create_app(config, manager)) as base_url:
        yield base_url


def client(base_url: str, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0)


@dataclass
class Answer:
    content: str | None
    finish_reason: str | None
    usage: Any = None


def ask(base_url: str, path: str, api_key: str = "unused", **body: Any) -> Answer:
    """One chat completion through `path`: the openai client, or HTTP for the bench endpoint."""
    body = {"model": "echo", "messages": USER, **body}
    if path in MESSAGES_PATHS:
        return ask_messages(base_url, path == "messages-stream", api_key, **body)
    if path in RESPONSES_PATHS:
        return _ask_responses(base_url, path == "responses-stream", api_key, body)
    if path == "bench":
        body.setdefault("max_tokens", 4)  # bench answers exactly max_tokens words: USER's four
        headers = {"authorization": f"Bearer {api_key}"}
        response = httpx.post(f"{base_url}/bench/chat/completions", json=body, headers=headers, timeout=30)
        response.raise_for_status()
        result = response.json()
        choice = result["choices"][0]
        return Answer(choice["message"]["content"], choice["finish_reason"], result["usage"])
    chat = client(base_url, api_key).chat.completions
    if path == "stream":
        chunks = list(chat.create(**body, stream=True, stream_options={"include_usage": True}))
        parts = [chunk.choices[0] for chunk in chunks if chunk.choices]
        content = "".join(part.delta.content or "" for part in parts)
        return Answer(content, parts[-1].finish_reason, chunks[-1].usage)
    completion = chat.create(**body)
    choice = completion.choices[0]
    return Answer(choice.message.content, choice.finish_reason, completion.usage)


_FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


def ask_messages(base_url: str, stream: bool, api_key: str, **body: Any) -> Answer:
    """The same question on /v1/messages: system turns stay in `messages` (as Claude Code
    sends them); echo's own default `max_tokens` of 16 unless the test sets one."""
    body.setdefault("max_tokens", 16)
    sdk = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0)
    if stream:
        with sdk.messages.stream(**body) as events:
            message = events.get_final_message()
    else:
        message = sdk.messages.create(**body)
    text = "".join(block.text for block in message.content if block.type == "text")
    return Answer(text, _FINISH_REASONS.get(message.stop_reason or ""), message.usage)


def _ask_responses(base_url: str, stream: bool, api_key: str, body: dict[str, Any]) -> Answer:
    """The same question on /v1/responses: chat messages are valid input items."""
    body = dict(body)
    body["input"] = body.pop("messages")
    if "max_tokens" in body:
        body["max_output_tokens"] = body.pop("max_tokens")
    responses = client(base_url, api_key).responses
    if stream:
        events = list(responses.create(**body, stream=True))
        content = "".join(event.delta for event in events if event.type == "response.output_text.delta")
        response = events[-1].response
    else:
        response = responses.create(**body)
        content = response.output_text
    finish = "length" if response.status == "incomplete" else "stop"
    return Answer(content, finish, response.usage)


@contextmanager
def captured_logs() -> Iterator[list[dict[str, Any]]]:
    """Every structlog event while the block runs (the test server logs in-process).

    The access log writes a record just after the server's loop turn, so the
    capture stays on until no new event has come for a little while.
    """
    with structlog.testing.capture_logs() as entries:
        yield entries
        seen, quiet_since, deadline = -1, time.monotonic(), time.monotonic() + 5
        while time.monotonic() < deadline:
            if len(entries) != seen:
                seen, quiet_since = len(entries), time.monotonic()
            elif time.monotonic() - quiet_since > 0.05:
                break
            time.sleep(0.005)


def rendered(entries: list[dict[str, Any]]) -> str:
    """All captured events as text, tracebacks included, to search for leaks."""
    lines = []
    for entry in entries:
        lines.append(repr(entry))
        error = entry.get("exc_info")
        if isinstance(error, BaseException):
            lines.extend(traceback.format_exception(error))
    return "\n".join(lines)
