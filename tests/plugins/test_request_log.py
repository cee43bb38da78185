"""plugins/request_log.py: one record per request, with the same fields on every path."""

from __future__ import annotations

import asyncio
import io
import sys
import time
from types import SimpleNamespace
from typing import Any

import msgspec
import openai
import pytest
import structlog

from gateway import ChatCompletion, ChatCompletionRequest, InvalidRequest, RequestContext, hookimpl
from gateway.logs import _RecordWriter, configure_logging
from gateway.responses import Choice, CompletionTokensDetails, PromptTokensDetails, ResponseMessage, Usage
from plugins.request_log import make_plugin
from tests.plugins.helpers import (
    PATHS,
    USER,
    ask,
    captured_logs,
    client,
    gateway_config,
    production_manager,
    serve,
)

pytestmark = pytest.mark.hooks("on_request", "on_response", "on_error")

KEY = "sk-log-test-key-123456"
COMMON = {"request_id", "endpoint", "model", "backend", "key_id", "stream", "status", "latency_ms", "ttft_ms"}


class FailsOnRequest:
    @hookimpl
    def on_request(self, request: ChatCompletionRequest, context: RequestContext) -> None:
        if request.messages[-1].text() == "fail in on_request":
            raise RuntimeError("on_request went wrong")


def records(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in entries if entry["event"] == "request"]


@pytest.fixture(scope="module")
def log_server() -> Any:
    config = gateway_config(
        {"auth": {"keys": [{"id": "ops", "key": KEY}]}, "request_log": {"log_completions": True}}
    )
    with serve(config, production_manager(config, FailsOnRequest())) as base_url:
        yield base_url


@pytest.mark.parametrize("path", PATHS)
def test_success_record(log_server: str, path: str) -> None:
    with captured_logs() as entries:
        ask(log_server, path, api_key=KEY, model="echo-alias")
    [record] = records(entries)
    assert COMMON | {"prompt_tokens", "completion_tokens", "finish_reason", "completion"} <= set(record)
    assert "prompt" not in record  # prompts are logged only when enabled
    assert record["request_id"].startswith("req_")
    assert (record["model"], record["backend"], record["key_id"], record["status"]) == (
        "echo",
        "echo",
        "ops",
        200,
    )
    assert (record["endpoint"], record["stream"]) == (
        "bench" if path == "bench" else "chat",
        path == "stream",
    )
    assert (record["prompt_tokens"], record["completion_tokens"]) == (5, 4)
    assert record["finish_reason"] == ("length" if path == "bench" else "stop")
    assert record["completion"] == "the quick brown fox"
    assert record["latency_ms"] >= record["ttft_ms"] >= 0
    assert record["log_level"] == "info"
    assert KEY not in repr(entries)


def test_record_ids_match_the_response(log_server: str) -> None:
    with captured_logs() as entries:
        completion = client(log_server, KEY).chat.completions.create(model="echo", messages=USER)
    assert records(entries)[0]["request_id"].removeprefix("req_") == completion.id.removeprefix("chatcmpl-")


@pytest.mark.parametrize(
    ("model", "text", "stream", "status", "code", "level"),
    [
        ("nope", "hi", False, 404, "model_not_found", "warning"),
        ("broken", "one two three", True, 500, "backend_error", "error"),
        ("echo", "fail in on_request", False, 500, "plugin_error", "error"),
    ],
)
def test_error_records(
    log_server: str, model: str, text: str, stream: bool, status: int, code: str, level: str
) -> None:
    with captured_logs() as entries, pytest.raises(openai.APIError):
        result = client(log_server, KEY).chat.completions.create(
            model=model, messages=[{"role": "user", "content": text}], stream=stream
        )
        list(result)  # type: ignore[call-overload]
    [record] = records(entries)
    assert COMMON | {"error_code", "error"} <= set(record)
    assert (record["status"], record["error_code"], record["log_level"]) == (status, code, level)
    assert record["key_id"] == "ops"
    if code == "plugin_error":
        assert (record["plugin"], record["hook"]) == ("FailsOnRequest", "on_request")
        assert isinstance(record["exc_info"], RuntimeError)  # the plugin's own traceback
        assert "on_request went wrong" in str(record["exc_info"])


def test_a_callers_own_request_id_is_kept_when_well_formed(log_server: str) -> None:
    chat = client(log_server, KEY).chat.completions
    for sent, kept in [("front-42.a:b", "front-42.a:b"), ("bad id with {spaces}", None), ("x" * 200, None)]:
        with captured_logs() as entries:
            response = chat.with_raw_response.create(
                model="echo", messages=USER, extra_headers={"x-request-id": sent}
            )
        assert response.parse().choices[0].message.content
        assert response.headers["x-request-id"].startswith("req_")  # ours, whatever was sent
        [record] = records(entries)
        assert record.get("client_request_id") == kept


def test_refused_model_listing_is_recorded_without_the_key(log_server: str) -> None:
    wrong = "sk-not-a-key-9999999999"
    with captured_logs() as entries, pytest.raises(openai.AuthenticationError):
        client(log_server, wrong).models.list()
    [record] = records(entries)
    assert (record["endpoint"], record["status"], record["error_code"]) == ("models", 401, "invalid_api_key")
    assert wrong not in repr(entries)
    with captured_logs() as entries:
        assert client(log_server, KEY).models.list().data
    assert records(entries) == []  # a listing that succeeds is not an access record


def test_prompts_logged_only_when_enabled() -> None:
    config = gateway_config({"request_log": {"log_prompts": True}})
    with captured_logs() as entries, serve(config) as base_url:
        ask(base_url, "stream")
    [record] = records(entries)
    assert record["prompt"] == [{"role": "user", "content": "the quick brown fox"}]
    assert "completion" not in record


def _completion() -> ChatCompletion:
    usage = Usage(3, 2, 5, PromptTokensDetails(), CompletionTokensDetails())
    return ChatCompletion("chatcmpl-1", 0, "echo", [Choice(0, ResponseMessage("hi"), "stop")], usage)


def test_records_are_written_after_the_loop_turn_all_together() -> None:
    plugin = make_plugin(gateway_config())
    context = RequestContext(request_id="req_1", endpoint="chat")

    async def one_turn() -> tuple[int, int]:
        with structlog.testing.capture_logs() as entries:
            plugin.on_response(_completion(), context)
            plugin.on_error(InvalidRequest("bad"), context)
            during = len(entries)
            await asyncio.sleep(0)  # the turn ends: both are written
            return during, len(records(entries))

    assert asyncio.run(one_turn()) == (0, 2)
    with structlog.testing.capture_logs() as entries:  # no running loop: written at once
        plugin.on_response(_completion(), context)
    assert len(records(entries)) == 1

    async def shut_down_first() -> int:
        with structlog.testing.capture_logs() as entries:
            plugin.on_response(_completion(), context)
            plugin.gateway_shutdown()  # nothing waits past shutdown
            return len(records(entries))

    assert asyncio.run(shut_down_first()) == 1


def test_records_still_held_at_shutdown_are_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """The access log's lines are written in batches (`gateway.write_records`): a server
    that stops before the next batch was due still writes them, as its last lines."""
    output = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", SimpleNamespace(buffer=output))
    monkeypatch.setattr(_RecordWriter, "FLUSH_S", 3600.0)  # nothing is due before shutdown
    configured = structlog.get_config()
    configure_logging("json", "info")
    try:
        config = gateway_config()
        with serve(config) as base_url:
            answered = [ask(base_url, "non-stream") for _ in range(3)]
            time.sleep(0.2)
            held = output.getvalue()
        written = [msgspec.json.decode(line) for line in output.getvalue().splitlines()]
    finally:
        structlog.configure(**configured)
    assert b'"event":"request"' not in held
    assert len(answered) == 3 and len(records(written)) == 3
