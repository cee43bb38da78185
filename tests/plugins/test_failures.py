"""A plugin that raises: a clear error naming it, on every path, and the server keeps serving."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from gateway import (
    ChatCompletion,
    ChatCompletionRequest,
    GenerationChunk,
    InvalidRequest,
    RequestContext,
    hookimpl,
)
from tests.plugins.helpers import USER, ask, captured_logs, client, gateway_config, production_manager, serve


class Exploding:
    """Raises in the hook named by the first word of the last user message."""

    @staticmethod
    def _maybe(hook: str, request: ChatCompletionRequest | None, context: RequestContext) -> None:
        word = context.state.get("explode") or (request.messages[-1].text().split() or [""])[0]
        context.state["explode"] = word
        if word == hook:
            raise RuntimeError(f"{hook} went wrong")
        if word == f"refuse-{hook}":
            raise InvalidRequest(f"{hook} refuses this", param="messages")

    @hookimpl
    def rewrite_request(self, request: ChatCompletionRequest, context: RequestContext) -> None:
        self._maybe("rewrite_request", request, context)

    @hookimpl
    def on_chunk(self, chunk: GenerationChunk, context: RequestContext) -> None:
        if chunk.text.strip() == "boom":
            self._maybe("on_chunk", None, context)

    @hookimpl
    async def on_response(self, response: ChatCompletion, context: RequestContext) -> None:
        self._maybe("on_response", None, context)


class BrokenObserver:
    @hookimpl
    def on_error(self, error: Exception) -> None:
        raise RuntimeError("the observer itself is broken")


@pytest.fixture(scope="module")
def failing_server() -> Any:
    config = gateway_config()
    with serve(config, production_manager(config, BrokenObserver(), Exploding())) as base_url:
        yield base_url


def said(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assert_plugin_error(error: Any, hook: str) -> None:
    assert error["code"] == "plugin_error"
    assert error["message"] == f"plugin 'Exploding' failed in hook '{hook}'"
    assert "went wrong" not in error["message"]  # the exception's text stays in the logs


@pytest.mark.hooks("rewrite_request", "on_response", "on_error")
@pytest.mark.parametrize("hook", ["rewrite_request", "on_response"])
def test_failing_hook_is_a_500_naming_the_plugin(failing_server: str, hook: str) -> None:
    with pytest.raises(openai.InternalServerError) as raised:
        client(failing_server).chat.completions.create(model="echo", messages=said(f"{hook} please"))
    assert isinstance(raised.value.body, dict)
    assert_plugin_error(raised.value.body, hook)
    assert ask(failing_server, "non-stream").content == "the quick brown fox"  # still serving


@pytest.mark.hooks("on_chunk", "on_response")
@pytest.mark.parametrize(("text", "hook"), [("on_chunk boom", "on_chunk"), ("on_response", "on_response")])
def test_failing_hook_mid_stream_ends_it_with_an_error_event(
    failing_server: str, text: str, hook: str
) -> None:
    body = {"model": "echo", "messages": said(text), "stream": True}
    events = httpx.post(f"{failing_server}/v1/chat/completions", json=body).text.strip().split("\n\n")
    assert events[-1].startswith('data: {"error"')
    assert "[DONE]" not in events[-1]
    assert_plugin_error(json.loads(events[-1].removeprefix("data: "))["error"], hook)
    with pytest.raises(openai.APIError, match=f"failed in hook '{hook}'"):
        list(client(failing_server).chat.completions.create(**body))
    assert ask(failing_server, "stream").content == "the quick brown fox"


@pytest.mark.hooks("on_error")
def test_a_broken_on_error_never_replaces_the_real_error(failing_server: str) -> None:
    with captured_logs() as entries, pytest.raises(openai.NotFoundError):
        client(failing_server).chat.completions.create(model="nope", messages=USER)
    failures = [entry for entry in entries if entry["event"] == "hook failed"]
    assert [(entry["plugin"], entry["hook"]) for entry in failures] == [("BrokenObserver", "on_error")]
    # The observers after the broken one still ran: request_log wrote its record.
    assert [entry["status"] for entry in entries if entry["event"] == "request"] == [404]


def test_a_gateway_error_from_a_plugin_reaches_the_client_as_is(failing_server: str) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client(failing_server).chat.completions.create(model="echo", messages=said("refuse-rewrite_request"))
    assert isinstance(raised.value.body, dict)
    assert (raised.value.body["code"], raised.value.body["param"]) == ("invalid_request", "messages")
