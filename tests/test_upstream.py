"""The `openai` backend: a front gateway forwarding to echo gateways, used through the openai client."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import openai
import pytest
import structlog

from backends.upstream import plugin as upstream_plugin
from gateway import AuthenticationFailed, create_app, hookimpl, parse_config
from gateway.errors import ClientDisconnected
from tests.conftest import echo_config, plugin_manager
from tests.support.server import running_server

USER = [{"role": "user", "content": "the quick brown fox"}]
LONG = [{"role": "user", "content": " ".join(f"w{index}" for index in range(12))}]


class Recorder:
    """A plugin for an upstream app: what it was asked, with which credentials, and how it ended."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.require_authorization: str | None = None
        self.models: list[str] = []
        self.authorizations: list[str | None] = []
        self.finished = threading.Event()
        self.errors: list[Exception] = []
        self.caller_ids: list[str | None] = []

    @hookimpl
    def authenticate(self, headers: dict[str, str], context: Any) -> None:
        self.authorizations.append(headers.get("authorization"))
        self.caller_ids.append(context.client_request_id)
        if self.require_authorization and headers.get("authorization") != self.require_authorization:
            raise AuthenticationFailed("wrong key")

    @hookimpl
    def on_request(self, request: Any) -> None:
        self.models.append(request.model)

    @hookimpl
    def on_response(self) -> None:
        self.finished.set()

    @hookimpl
    def on_error(self, error: Exception) -> None:
        self.errors.append(error)

    @property
    def requests(self) -> int:
        return len(self.models)


def upstream_app(recorder: Recorder) -> Any:
    models = {
        "slow": {"backend": "echo", "options": {"delay_ms": 20}},
        "broken": {"backend": "echo", "options": {"fail_after_tokens": 2}},
    }
    return create_app(echo_config(**models), plugin_manager(recorder))


class Upstreams:
    """Echo gateways serving as upstreams, each stoppable (and restartable) on its own."""

    def __init__(self, count: int) -> None:
        self.recorders = [Recorder() for _ in range(count)]
        self.urls: list[str] = []
        self._servers: list[ExitStack] = []
        for recorder in self.recorders:
            stack = ExitStack()
            self.urls.append(stack.enter_context(running_server(upstream_app(recorder))))
            self._servers.append(stack)

    def stop(self, index: int) -> None:
        self._servers[index].close()

    def restart(self, index: int) -> None:
        port = int(self.urls[index].rpartition(":")[2])
        self._servers[index].enter_context(running_server(upstream_app(self.recorders[index]), port=port))

    def close(self) -> None:
        for stack in self._servers:
            stack.close()


@pytest.fixture
def upstreams() -> Iterator[Upstreams]:
    """Upstreams of one test's own, for tests that stop them."""
    servers = Upstreams(2)
    yield servers
    servers.close()


@pytest.fixture(scope="module")
def module_upstreams() -> Iterator[Upstreams]:
    servers = Upstreams(2)
    yield servers
    servers.close()


@pytest.fixture
def shared(module_upstreams: Upstreams) -> Upstreams:
    """Upstreams shared by the tests that leave them running, with fresh recorders."""
    for recorder in module_upstreams.recorders:
        recorder.reset()
    return module_upstreams


@pytest.fixture(scope="module")
def client(module_upstreams: Upstreams) -> Iterator[openai.OpenAI]:
    """A front gateway for the first shared upstream."""
    with front(module_upstreams.urls[:1]) as front_client:
        yield front_client


def front_config(urls: list[str], **options: Any) -> Any:
    """Models `remote`, `remote-slow` and `remote-broken`, forwarding to the echo upstreams' models."""
    base = {"upstreams": [f"{url}/v1" for url in urls], **options}
    models = {
        name: {"backend": "openai", "options": {**base, "model": upstream_model}}
        for name, upstream_model in [("remote", "echo"), ("remote-slow", "slow"), ("remote-broken", "broken")]
    }
    return parse_config({"models": models})


@contextmanager
def front(urls: list[str], **options: Any) -> Iterator[openai.OpenAI]:
    """A gateway with the `openai` backend in front of `urls`; yields a client for it."""
    with running_server(create_app(front_config(urls, **options), plugin_manager(upstream_plugin))) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="client-key", max_retries=0)


def root(client: openai.OpenAI) -> str:
    return str(client.base_url).removesuffix("/v1/")


def ask(client: openai.OpenAI, model: str = "remote", messages: Any = USER, **fields: Any) -> Any:
    return client.chat.completions.create(model=model, messages=messages, **fields)


def wait_for(condition: Any, seconds: float = 10) -> bool:
    """Poll until `condition()` holds (a deadline against hangs, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(condition())


# --- passthrough ---------------------------------------------------------------------------


def test_non_streamed_answer_and_usage_are_the_upstreams(shared: Upstreams, client: openai.OpenAI) -> None:
    direct = openai.OpenAI(base_url=f"{shared.urls[0]}/v1", api_key="x", max_retries=0)
    expected = ask(direct, "echo", n=2, stop=[" brown"])
    completion = ask(client, n=2, stop=[" brown"])
    assert completion.model == "remote"
    assert [c.message.content for c in completion.choices] == [c.message.content for c in expected.choices]
    assert [c.message.content for c in completion.choices] == ["the quick", "the quick"]
    assert completion.usage == expected.usage
    assert shared.recorders[0].models == ["echo", "echo"]  # the upstream's model name was sent


def test_the_front_request_id_reaches_the_upstream(shared: Upstreams, client: openai.OpenAI) -> None:
    """The upstream logs it as `client_request_id`, so the two tiers' records can be joined."""
    response = client.chat.completions.with_raw_response.create(model="remote", messages=USER)
    assert shared.recorders[0].caller_ids[-1] == response.headers["x-request-id"]


def test_stream_arrives_chunk_by_chunk_with_usage(shared: Upstreams, client: openai.OpenAI) -> None:
    recorder = shared.recorders[0]
    stream = ask(client, "remote-slow", LONG, stream=True, stream_options={"include_usage": True})
    chunks = []
    for chunk in stream:
        if not chunks:
            # The first chunk is here while the upstream is still generating the rest.
            assert not recorder.finished.is_set()
        chunks.append(chunk)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == LONG[0]["content"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_tool_calls_pass_through(client: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    messages = [{"role": "user", "content": 'call get_weather {"city": "Paris"}'}]
    completion = ask(client, messages=messages, tools=tools)
    streamed = list(ask(client, messages=messages, tools=tools, stream=True))
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_echo0",
        "get_weather",
        '{"city": "Paris"}',
    )
    deltas = [delta for chunk in streamed for delta in chunk.choices[0].delta.tool_calls or ()]
    assert deltas[0].function.name == "get_weather"
    assert "".join(delta.function.arguments or "" for delta in deltas) == '{"city": "Paris"}'


def test_bench_endpoint_measures_the_upstream(client: openai.OpenAI) -> None:
    body = {"model": "remote", "messages": USER, "max_tokens": 8}
    response = httpx.post(f"{root(client)}/bench/chat/completions", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    stats = result["generation_stats"]
    assert stats["generation_tokens"] == result["usage"]["completion_tokens"] == 4  # no EOS ban upstream
    assert stats["total_ms"] >= stats["ttft_ms"] > 0
    assert stats["peak_memory_bytes"] == 0


# --- errors ----------------------------------------------------------------------------------


def test_upstream_400_is_passed_through(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, logprobs=True)
    # A stream has sent its 200 before the upstream answers: the error comes as an event.
    with pytest.raises(openai.APIError) as streamed:
        list(ask(client, logprobs=True, stream=True))
    error = caught.value
    assert (error.status_code, error.param, error.code) == (400, "logprobs", "unsupported_parameter")
    assert "'echo' backend" in error.message
    assert streamed.value.body == {
        "message": "'logprobs' is not supported by the 'echo' backend",
        "type": "invalid_request_error",
        "param": "logprobs",
        "code": "unsupported_parameter",
    }


def test_response_format_reaches_the_upstream(client: openai.OpenAI) -> None:
    """The front passes `response_format` on; the echo upstream is the one refusing it."""
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, response_format={"type": "json_object"})
    assert caught.value.param == "response_format" and "'echo' backend" in caught.value.message


def test_upstream_failure_mid_answer_ends_the_answer(shared: Upstreams, client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        ask(client, "remote-broken")
    assert caught.value.code == "backend_error"
    assert "failed on purpose" in caught.value.message
    received = []
    with pytest.raises(openai.APIError) as streamed:
        for chunk in ask(client, "remote-broken", stream=True):
            received.append(chunk.choices[0].delta.content)
    assert received == ["the", " quick"]
    assert "failed on purpose" in streamed.value.message
    assert shared.recorders[0].requests == 2  # no second attempt once the answer has started


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_all_upstreams_down_is_503_upstream_error() -> None:
    with front([closed_port_url(), closed_port_url()]) as client:
        body = {"model": "remote", "messages": USER}
        response = httpx.post(f"{root(client)}/v1/chat/completions", json=body)
        with pytest.raises(openai.APIError) as streamed:
            list(ask(client, stream=True))
    assert response.status_code == 503
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "upstream_error")
    assert "127.0.0.1" not in error["message"]  # upstream addresses stay internal
    assert streamed.value.body["code"] == "upstream_error"


def test_client_disconnect_stops_the_upstream(shared: Upstreams, client: openai.OpenAI) -> None:
    recorder = shared.recorders[0]
    stream = ask(client, "remote-slow", LONG, stream=True)
    next(iter(stream))
    stream.close()
    assert wait_for(lambda: any(isinstance(e, ClientDisconnected) for e in recorder.errors))
    assert not recorder.finished.is_set()


# --- several upstreams -------------------------------------------------------------------------


def test_sequential_requests_alternate_between_upstreams(shared: Upstreams) -> None:
    with front(shared.urls) as client:
        for _ in range(6):
            assert ask(client).choices[0].message.content == "the quick brown fox"
    assert [recorder.requests for recorder in shared.recorders] == [3, 3]


def test_busy_upstream_gets_no_new_requests(shared: Upstreams) -> None:
    with front(shared.urls) as client:
        stream = ask(client, "remote-slow", LONG, stream=True)
        next(iter(stream))  # one upstream now has a request in flight
        busy = [recorder.requests for recorder in shared.recorders].index(1)
        for _ in range(3):
            ask(client, "remote-slow", [{"role": "user", "content": "hi"}])
        stream.close()
    assert shared.recorders[busy].requests == 1
    assert shared.recorders[1 - busy].requests == 3


def test_failover_when_an_upstream_stops(upstreams: Upstreams) -> None:
    with front(upstreams.urls, health_check_interval_s=0) as client:
        ask(client)
        ask(client)
        upstreams.stop(0)
        for _ in range(4):
            assert ask(client).choices[0].message.content == "the quick brown fox"
            assert list(ask(client, stream=True))[-1].choices[0].finish_reason == "stop"
    assert [recorder.requests for recorder in upstreams.recorders] == [1, 9]


def test_unhealthy_upstream_is_skipped_until_it_recovers(upstreams: Upstreams) -> None:
    first, second = upstreams.recorders
    with front(upstreams.urls, health_check_interval_s=0.05) as client:
        ask(client)
        upstreams.stop(0)
        before = second.requests
        with structlog.testing.capture_logs() as logs:
            for _ in range(6):
                ask(client)
        assert second.requests == before + 6
        failed = [entry for entry in logs if entry["event"] == "upstream attempt failed"]
        assert len(failed) <= 1  # once found down, it is no longer tried
        upstreams.restart(0)
        served_before = first.requests
        assert wait_for(lambda: ask(client) is not None and first.requests > served_before)


# --- credentials -------------------------------------------------------------------------------


def test_api_key_is_sent_upstream_and_never_logged(
    upstreams: Upstreams, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-upstream-7f3a9c"
    monkeypatch.setenv("UPSTREAM_TEST_KEY", secret)
    upstreams.recorders[1].require_authorization = f"Bearer {secret}"
    upstreams.stop(0)  # a failed attempt, so there is something to log
    caplog.set_level(logging.DEBUG)
    options = {"api_key": "${UPSTREAM_TEST_KEY}", "health_check_interval_s": 0}
    with structlog.testing.capture_logs() as logs, front(upstreams.urls, **options) as client:
        assert ask(client).choices[0].message.content == "the quick brown fox"
    assert upstreams.recorders[1].authorizations == [f"Bearer {secret}"]
    assert any(entry["event"] == "upstream attempt failed" for entry in logs)
    assert secret not in json.dumps(logs, default=repr)
    assert secret not in caplog.text


def test_upstream_refusing_the_key_is_502_not_401(shared: Upstreams) -> None:
    shared.recorders[0].require_authorization = "Bearer right"
    with front(shared.urls[:1], api_key="wrong") as client, pytest.raises(openai.APIStatusError) as caught:
        ask(client)
    assert (caught.value.status_code, caught.value.code) == (502, "upstream_error")
    assert "credentials" in caught.value.message
