"""`gateway serve` as operators run it: drain on SIGTERM, exit 0, and keys never in any
log line or body, in JSON and console formats alike."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
ALICE, BOB = "sk-alice-0123456789abcdef", "sk-bob-fedcba9876543210"
CONFIG = f"""
[server]
log_format = "{{log_format}}"
shutdown_timeout_s = {{shutdown_timeout_s}}
admin_key = "sk-admin-77777777"

[plugins]
modules = ["tests.support.failing_plugin"]

[[plugins.settings.auth.keys]]
id = "alice"
key = "{ALICE}"

[[plugins.settings.auth.keys]]
id = "bob"
key = "{BOB}"
models = ["echo"]
requests_per_minute = 2

[models.echo]
backend = "echo"

[models.slow]
backend = "echo"
options = {{{{ delay_ms = 100 }}}}

[models.broken]
backend = "echo"
options = {{{{ fail_after_tokens = 1 }}}}
"""


def start(
    tmp_path: Path, log_format: str = "json", shutdown_timeout_s: float = 10
) -> tuple[subprocess.Popen[bytes], str]:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(log_format=log_format, shutdown_timeout_s=shutdown_timeout_s))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "GATEWAY_DISABLE_PLUGINS": "mlx,openai"},
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base_url}/health").status_code == 200:
                return process, base_url
        except httpx.HTTPError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "gateway serve did not start"
        time.sleep(0.1)


@pytest.fixture
def stop_after() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def chat(
    base_url: str, key: str | None, model: str = "echo", content: str = "hello there", **body: object
) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    payload = {"model": model, "messages": [{"role": "user", "content": content}], **body}
    return httpx.post(f"{base_url}/v1/chat/completions", json=payload, headers=headers, timeout=30)


def slow_stream(base_url: str, words: int) -> Any:
    """A streamed answer from the `slow` model: `words` tokens, 0.1 s each."""
    body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "w " * words}]}
    headers = {"authorization": f"Bearer {ALICE}"}
    return httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, headers=headers, timeout=30)


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_keys_never_reach_a_log_line_or_a_body(
    tmp_path: Path, log_format: str, stop_after: list[subprocess.Popen[bytes]]
) -> None:
    process, base_url = start(tmp_path, log_format)
    stop_after.append(process)
    bodies = [
        chat(base_url, ALICE),  # success
        chat(base_url, ALICE, stream=True),  # streamed success
        chat(base_url, "sk-wrong-" + ALICE),  # 401
        chat(base_url, BOB, model="slow"),  # 403
        chat(base_url, BOB),
        chat(base_url, BOB),
        chat(base_url, BOB),  # 429
        chat(base_url, ALICE, max_tokens=-1),  # 400
        chat(base_url, ALICE, model="broken", stream=True),  # fails mid-stream
        chat(base_url, ALICE, model="broken"),  # 500 from the backend
        chat(base_url, ALICE, content="explode"),  # plugin error
        httpx.get(f"{base_url}/v1/models", headers={"authorization": f"Bearer {ALICE}"}),
        httpx.get(f"{base_url}/metrics", headers={"authorization": f"Bearer {ALICE}"}),  # not the admin key
        httpx.post(f"{base_url}/admin/reload", headers={"authorization": f"bearer {BOB}"}),
    ]
    statuses = [response.status_code for response in bodies]
    assert {200, 401, 403, 429, 400, 500} <= set(statuses), statuses
    assert statuses[-1] == 401 and statuses[-2] == 401
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output
    assert "exploded on purpose" in output and "Traceback" in output  # the plugin error was logged
    for key in (ALICE, BOB):
        assert key not in output
        for response in bodies:
            assert key not in response.text
            assert key not in str(response.headers)


def test_sigterm_drains_then_exits_zero(tmp_path: Path, stop_after: list[subprocess.Popen[bytes]]) -> None:
    process, base_url = start(tmp_path, shutdown_timeout_s=20)
    stop_after.append(process)
    streamed: list[str] = []

    def long_stream() -> None:
        with slow_stream(base_url, words=12) as response:  # about 1.2 s of tokens
            streamed.extend(response.iter_lines())

    reader = threading.Thread(target=long_stream)
    reader.start()
    time.sleep(0.4)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    refused = chat(base_url, ALICE)
    assert refused.status_code == 503 and refused.headers["retry-after"]
    assert refused.json()["error"]["code"] == "server_shutting_down"
    ready = httpx.get(f"{base_url}/ready")
    assert ready.status_code == 503 and "draining" in ready.json()["reasons"]
    reader.join(timeout=30)
    assert [line for line in streamed if line][-1] == "data: [DONE]"  # the running stream finished
    output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output
    assert "model unloaded" in output


def test_a_stream_over_the_shutdown_timeout_ends_with_an_error_event(
    tmp_path: Path, stop_after: list[subprocess.Popen[bytes]]
) -> None:
    process, base_url = start(tmp_path, shutdown_timeout_s=0.5)
    stop_after.append(process)
    with slow_stream(base_url, words=17) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        process.send_signal(signal.SIGTERM)
        rest = [line for line in lines if line]
    assert "server_shutting_down" in rest[-1] and rest[-1] != "data: [DONE]"
    output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output


def test_a_second_signal_exits_at_once(tmp_path: Path, stop_after: list[subprocess.Popen[bytes]]) -> None:
    process, base_url = start(tmp_path, shutdown_timeout_s=60)
    stop_after.append(process)
    with slow_stream(base_url, words=200) as response:
        lines = response.iter_lines()  # kept: a dropped iterator would close the stream
        first = next(lines)
        assert first.startswith("data: {"), first
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert process.poll() is None, process.communicate()[0].decode()[-3000:]  # the stream has 60 s
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)  # ... but the second signal ends it now


def test_access_log_lines_are_all_written_by_the_time_a_drain_exits(
    tmp_path: Path, stop_after: list[subprocess.Popen[bytes]]
) -> None:
    """The access log writes its lines in batches after the answers (gateway.logs.write_records):
    none may be lost when SIGTERM comes right after the last answer, nor for a stream the
    drain cuts."""
    process, base_url = start(tmp_path, shutdown_timeout_s=0.5)
    stop_after.append(process)
    with slow_stream(base_url, words=30) as response:  # 3 s of tokens: cut by the drain
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        answered = [chat(base_url, ALICE, content=f"request {number}") for number in range(20)]
        process.send_signal(signal.SIGTERM)  # at once: the last records are still held
        [line for line in lines if line]  # read to the end: the drain cuts it
    assert all(answer.status_code == 200 for answer in answered)
    output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    logged = {record["request_id"]: record for record in records if record.get("event") == "request"}
    for answer in answered:
        assert logged[answer.headers["x-request-id"]]["status"] == 200
    cut = [record for record in logged.values() if record["model"] == "slow"]
    assert [(record["status"], record["error_code"]) for record in cut] == [(503, "server_shutting_down")]
