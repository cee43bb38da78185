"""Operations on a live server: ceilings, request ids, 405 Allow, readiness, metrics,
slow clients, request timeouts, CORS, admin checks, reload of queue settings."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from backends import echo
from gateway import create_app, parse_config
from tests.conftest import plugin_manager
from tests.support.server import running_server

USER = [{"role": "user", "content": "hello there"}]


def make_config(server: dict[str, Any] | None = None, **models: dict[str, Any]) -> Any:
    tables: dict[str, Any] = {"echo": {"backend": "echo"}, **models}
    return parse_config({"server": {"max_body_bytes": 8 * 1024 * 1024, **(server or {})}, "models": tables})


@pytest.fixture
def serve() -> Iterator[Any]:
    """`serve(server_settings, **models)` -> (base_url, app), stopped after the test."""
    stack: list[Any] = []

    def start(server: dict[str, Any] | None = None, **models: dict[str, Any]) -> tuple[str, Any]:
        app = create_app(make_config(server, **models), plugin_manager())
        context = running_server(app)
        stack.append(context)
        return context.__enter__(), app

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


def chat(base_url: str, timeout: float = 30, **body: Any) -> httpx.Response:
    body.setdefault("messages", USER)
    body.setdefault("model", "echo")
    return httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=timeout)


# --- ceilings and a responsive loop ----------------------------------------------------


def test_every_model_has_a_max_tokens_ceiling() -> None:
    from backends.mlx.backend import MLXBackend
    from gateway.registry import BackendRegistry

    config = make_config(
        {"max_tokens": 1000}, own={"backend": "echo", "max_tokens": 50}, mlx={"backend": "mlx", "path": "/m"}
    )
    registry = BackendRegistry(config, {"echo": echo.EchoBackend, "mlx": MLXBackend})
    ceilings = {model_id: entry.config.max_tokens for model_id, entry in registry.entries.items()}
    assert ceilings == {"echo": 1000, "own": 50, "mlx": None}  # MLX: its context length bounds it


def test_a_huge_max_tokens_is_refused_and_a_long_answer_does_not_stall_health(serve: Any) -> None:
    base_url, _ = serve({"max_tokens": 20000})
    refused = chat(base_url, max_tokens=2**63 - 1)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "max_tokens"
    words = " ".join(f"w{i}" for i in range(20000))
    done: list[httpx.Response] = []

    def long_answers() -> None:
        done.append(chat(base_url, messages=[{"role": "user", "content": words}], max_tokens=19999, n=4))

    worker = threading.Thread(target=long_answers)
    worker.start()
    waits = []
    while worker.is_alive():
        started = time.perf_counter()
        assert httpx.get(f"{base_url}/health", timeout=10).status_code == 200
        waits.append(time.perf_counter() - started)
        time.sleep(0.01)
    worker.join()
    answer = done[0].json()
    assert [choice["finish_reason"] for choice in answer["choices"]] == ["length"] * 4
    assert answer["usage"]["completion_tokens"] == 4 * 19999
    assert max(waits) < 2.0  # the loop got turns throughout (p99 is reported by the overload bench)


def test_stop_strings_spanning_words_still_stop(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "one two three four"}], stop=["o th"]
    )
    assert answer.choices[0].message.content == "one two"  # what was sent stays sent


# --- every response: request id, Allow, error objects --------------------------------------


def test_every_response_has_a_request_id(echo_server: str) -> None:
    responses = [
        httpx.get(f"{echo_server}/health"),
        httpx.get(f"{echo_server}/ready"),
        httpx.get(f"{echo_server}/nowhere"),
        httpx.delete(f"{echo_server}/v1/chat/completions"),
        httpx.get(f"{echo_server}/schema/openapi.json"),
        httpx.post(f"{echo_server}/admin/load/echo"),
        httpx.get(f"{echo_server}/metrics"),
    ]
    for response in responses:
        assert response.headers["x-request-id"].startswith("req_"), response.url
    not_allowed = responses[3]
    assert not_allowed.status_code == 405 and "POST" in not_allowed.headers["allow"]
    assert not_allowed.json()["error"]["code"] == "method_not_allowed"


def test_ready_is_false_while_a_model_failed(serve: Any) -> None:
    base_url, _ = serve({"memory_budget": 4096}, broken={"backend": "echo", "memory_bytes": 10**9})
    assert httpx.get(f"{base_url}/ready").status_code == 200
    assert chat(base_url, model="broken").status_code >= 400  # its load fails
    ready = httpx.get(f"{base_url}/ready")
    assert ready.status_code == 503 and "model 'broken' failed to load" in ready.json()["reasons"]
    assert httpx.get(f"{base_url}/health").json() == {"status": "ok"}  # liveness is unchanged


# --- metrics -------------------------------------------------------------------------


def scrape(base_url: str, **headers: str) -> str:
    response = httpx.get(f"{base_url}/metrics", headers=headers)
    assert response.status_code == 200, response.text
    return response.text


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (labels in any order)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] == name and all(f'{key}="{v}"' in head for key, v in labels.items()):
            return float(value)
    raise AssertionError(f"no sample {name} {labels}")


def test_metrics_follow_requests(serve: Any) -> None:
    base_url, _ = serve(slow={"backend": "echo", "options": {"delay_ms": 5}})
    assert chat(base_url, max_tokens=1).status_code == 200
    assert (
        chat(base_url, model="slow", stream=True, messages=[{"role": "user", "content": "a b c"}]).status_code
        == 200
    )
    assert chat(base_url, model="no-such-model").status_code == 404
    text = scrape(base_url)
    assert sample(text, "gateway:request_success_total", model_name="echo", finished_reason="length") == 1
    assert sample(text, "gateway:generation_tokens_total", model_name="slow") == 3
    assert sample(text, "gateway:prompt_tokens_total", model_name="echo") == 3
    assert sample(text, "gateway:time_to_first_token_seconds_count", model_name="slow") == 1
    # "a", " b", " c" and the finishing chunk: three gaps, two of them a 5 ms word apart
    assert sample(text, "gateway:inter_token_latency_seconds_count", model_name="slow") == 3
    assert sample(text, "gateway:inter_token_latency_seconds_sum", model_name="slow") >= 0.009
    assert sample(text, "gateway:e2e_request_latency_seconds_count", model_name="echo") == 1
    assert sample(text, "gateway:request_queue_time_seconds_count", model_name="echo") == 1
    assert sample(text, "gateway:request_errors_total", code="model_not_found") == 1
    assert sample(text, "gateway:num_requests_running", model_name="echo") == 0
    assert sample(text, "gateway:model_status", model_name="slow", status="loaded") == 1
    assert sample(text, "gateway:http_requests_total", route="/v1/chat/completions", status="404") == 1
    assert "no-such-model" not in text  # labels never carry request content


def test_metrics_are_guarded_like_admin_or_open_by_config(serve: Any) -> None:
    guarded, _ = serve({"admin_key": "sk-admin-1"})
    assert httpx.get(f"{guarded}/metrics").status_code == 401
    assert httpx.get(f"{guarded}/metrics", headers={"authorization": "bearer sk-admin-1"}).status_code == 200
    public, _ = serve({"admin_key": "sk-admin-1", "metrics_public": True})
    assert httpx.get(f"{public}/metrics").status_code == 200
    off, _ = serve({"metrics": False})
    assert httpx.get(f"{off}/metrics").status_code == 404


# --- slow clients, timeouts, CORS ------------------------------------------------------


def raw_connection(base_url: str) -> socket.socket:
    host, port = base_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def test_a_body_sent_too_slowly_is_a_408_and_others_are_not_stalled(serve: Any) -> None:
    base_url, _ = serve({"body_timeout_s": 0.5})
    body = b'{"model": "echo", "messages": [{"role": "user", "content": "hi"}]}'
    connection = raw_connection(base_url)
    head = f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n"
    connection.sendall(head.encode() + b"content-type: application/json\r\n\r\n" + body[:5])
    assert chat(base_url).status_code == 200  # another client is served meanwhile
    answer = connection.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 408") and "body_timeout" in answer
    connection.close()


def test_headers_sent_too_slowly_close_the_connection(serve: Any) -> None:
    base_url, _ = serve({"header_timeout_s": 0.3})
    connection = raw_connection(base_url)
    connection.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n")  # never finishes its headers
    started = time.perf_counter()
    assert connection.recv(1024) == b""  # closed by the server
    assert time.perf_counter() - started < 5
    connection.close()


def test_a_client_that_stops_reading_frees_its_slot(serve: Any) -> None:
    words = " ".join(f"word{i}" for i in range(30000))
    base_url, app = serve(
        {"write_timeout_s": 0.5, "max_tokens": 30000}, one={"backend": "echo", "max_concurrency": 1}
    )
    request = {
        "model": "one",
        "stream": True,
        "n": 8,
        "max_tokens": 30000,
        "messages": [{"role": "user", "content": words}],
    }
    body = json.dumps(request).encode()
    connection = raw_connection(base_url)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    head = f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    connection.sendall(head.encode() + body)  # ... and never reads the answer
    entry = app.state.registry.entries["one"]
    deadline = time.monotonic() + 20
    while not entry.active and time.monotonic() < deadline:  # the stream starts...
        time.sleep(0.01)
    assert entry.active == 1
    while entry.admission.running and time.monotonic() < deadline:  # ... and is cut
        time.sleep(0.05)
    assert entry.admission.running == 0 and entry.active == 0
    assert chat(base_url, model="one", timeout=10).status_code == 200  # the slot is free
    connection.close()


def test_request_timeout_ends_streams_with_an_error_event_and_others_with_504(serve: Any) -> None:
    base_url, app = serve({"request_timeout_s": 0.3}, slow={"backend": "echo", "options": {"delay_ms": 100}})
    content = {"messages": [{"role": "user", "content": "a b c d e f g h i j"}], "model": "slow"}
    plain = chat(base_url, **content)
    assert plain.status_code == 504 and plain.json()["error"]["code"] == "request_timeout"
    with httpx.stream(
        "POST", f"{base_url}/v1/chat/completions", json={**content, "stream": True}
    ) as streamed:
        lines = [line for line in streamed.iter_lines() if line]
    assert "request_timeout" in lines[-1]
    assert app.state.registry.entries["slow"].active == 0


def test_cors_is_off_by_default_and_on_by_config(serve: Any, echo_server: str) -> None:
    preflight = {"origin": "https://chat.example", "access-control-request-method": "POST"}
    closed = httpx.options(f"{echo_server}/v1/chat/completions", headers=preflight)
    assert "access-control-allow-origin" not in closed.headers
    base_url, _ = serve({"cors_origins": ["https://chat.example"]})
    opened = httpx.options(f"{base_url}/v1/chat/completions", headers=preflight)
    assert opened.headers["access-control-allow-origin"] == "https://chat.example"


def test_api_routes_answer_alike_past_litestars_router_and_through_it(serve: Any) -> None:
    """`gateway.middleware.Guard` calls the API routes itself (`direct_routes`), unless
    CORS is on: then Litestar routes them, for its CORS middleware."""
    direct_url, direct_app = serve()
    routed_url, routed_app = serve({"cors_origins": ["https://chat.example"]})
    assert direct_app.asgi_handler.direct and not routed_app.asgi_handler.direct
    answers = [chat(url) for url in (direct_url, routed_url)]
    assert [a.json()["choices"][0]["message"]["content"] for a in answers] == ["hello there"] * 2
    assert all(a.headers["x-request-id"].startswith("req_") for a in answers)
    cors = httpx.post(
        f"{routed_url}/v1/chat/completions",
        json={"model": "echo", "messages": USER},
        headers={"origin": "https://chat.example"},
    )
    assert cors.headers["access-control-allow-origin"] == "https://chat.example"
    for url in (direct_url, routed_url):
        assert 'route="/v1/chat/completions",status="200"' in scrape(url)
        bad_host = httpx.post(f"{url}/v1/chat/completions", json={}, headers={"host": "bad host/"})
        assert bad_host.status_code == 400 and bad_host.json()["error"]["type"] == "invalid_request_error"


def test_a_bug_in_a_direct_route_is_an_openai_500_and_the_server_stays_up(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.endpoints

    base_url, _ = serve()

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug outside the route's own error handling")

    with monkeypatch.context() as patched:
        patched.setattr(gateway.endpoints, "new_context", broken)
        failed = chat(base_url)
    assert failed.status_code == 500 and failed.json()["error"]["type"] == "server_error"
    assert failed.headers["x-request-id"].startswith("req_")
    assert chat(base_url).status_code == 200


# --- admin and reload --------------------------------------------------------------------


def test_admin_accepts_any_case_of_bearer_and_logs_each_call(serve: Any) -> None:
    from tests.plugins.helpers import captured_logs

    base_url, _ = serve({"admin_key": "sk-admin-2"})
    with captured_logs() as entries:
        refused = httpx.post(f"{base_url}/admin/load/echo", headers={"authorization": "Bearer wrong"})
        allowed = httpx.post(f"{base_url}/admin/load/echo", headers={"authorization": "bearer sk-admin-2"})
    assert (refused.status_code, allowed.status_code) == (401, 200)
    events = [
        (entry["event"], entry.get("caller")) for entry in entries if entry["event"].startswith("admin")
    ]
    assert events == [("admin call refused", None), ("admin call", "admin key")]
    assert all("sk-admin-2" not in str(entry) for entry in entries)


def test_reload_applies_a_changed_queue_timeout(tmp_path: Any) -> None:
    from gateway.admin import reload_config

    path = tmp_path / "config.toml"
    path.write_text('[models.m]\nbackend = "echo"\nmax_concurrency = 1\nqueue_timeout_s = 30\n')
    app = create_app(
        parse_config({"models": {"m": {"backend": "echo", "max_concurrency": 1, "queue_timeout_s": 30}}}),
        plugin_manager(),
        config_path=path,
    )
    app.state.rebuild_plugins = False
    admission = app.state.registry.entries["m"].admission
    path.write_text('[models.m]\nbackend = "echo"\nmax_concurrency = 1\nqueue_timeout_s = 0.5\n')
    asyncio.run(reload_config(app.state))
    assert app.state.registry.entries["m"].admission is admission  # its queue is kept
    assert admission.queue_timeout_s == 0.5
    path.write_text('[models.m]\nbackend = "echo"\nmax_concurrency = 3\nqueue_timeout_s = 0.5\n')
    asyncio.run(reload_config(app.state))
    assert app.state.registry.entries["m"].admission.max_running == 3


def test_admin_and_metrics_refuse_a_non_loopback_caller_without_the_admin_key(serve: Any) -> None:
    base_url, _ = serve()
    remote = {"x-forwarded-for": "203.0.113.9"}  # uvicorn trusts it from loopback: a proxied caller
    for method, path in (("POST", "/admin/load/echo"), ("POST", "/admin/reload"), ("GET", "/metrics")):
        refused = httpx.request(method, f"{base_url}{path}", headers=remote)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_only", path
    assert httpx.post(f"{base_url}/admin/load/echo").status_code == 200  # loopback itself may
    keyed, _ = serve({"admin_key": "sk-admin-3"})
    allowed = httpx.post(f"{keyed}/admin/load/echo", headers={**remote, "authorization": "Bearer sk-admin-3"})
    assert allowed.status_code == 200


def test_code_ending_a_request_can_tell_a_cut_from_a_disconnect(serve: Any) -> None:
    from gateway.lifecycle import cut_reason

    seen: list[str | None] = []
    base_url, app = serve({"request_timeout_s": 0.2}, slow={"backend": "echo", "options": {"delay_ms": 100}})
    pipeline = app.state.pipeline
    complete = pipeline.complete

    async def watching(prepared: Any, context: Any, options: Any) -> Any:
        try:
            return await complete(prepared, context, options)
        except asyncio.CancelledError:
            seen.append(cut_reason())
            raise

    pipeline.complete = watching
    assert (
        chat(base_url, model="slow", messages=[{"role": "user", "content": "a b c d e"}]).status_code == 504
    )
    assert seen == ["request_timeout"]


def test_a_slow_first_event_gets_keep_alive_comments_that_clients_ignore(serve: Any) -> None:
    base_url, _ = serve({"sse_keepalive_s": 0.1}, slow={"backend": "echo", "options": {"delay_ms": 350}})
    body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "a b"}]}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.status_code == 200 and lines[0] == ": keep-alive" and lines[-1] == "data: [DONE]"
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    chunks = sdk.chat.completions.create(model="slow", messages=body["messages"], stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == "a b"
    quick = chat(base_url, stream=True, model="nope")  # an early error keeps its status
    assert quick.status_code == 404
