"""`gateway serve` as users run it: a subprocess, the default plugins, SIGHUP reload."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from bench.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    config = tmp_path / "config.toml"
    config.write_text('[models.echo]\nbackend = "echo"\n')
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base_url}/health").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "gateway serve did not start"
        time.sleep(0.1)
    yield process, base_url, config
    process.terminate()
    process.wait(timeout=30)


def model_ids(base_url: str) -> set[str]:
    return {card["id"] for card in httpx.get(f"{base_url}/v1/models").json()["data"]}


def wait_for(condition: object, timeout_s: float = 20) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_serve_answers_and_reloads_on_sighup(served: tuple[subprocess.Popen[bytes], str, Path]) -> None:
    process, base_url, config = served
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "hi you"}]
    )
    assert raw.parse().choices[0].message.content == "hi you"
    request_id = raw.headers["x-request-id"]

    config.write_text('[models.echo]\nbackend = "echo"\n\n[models.second]\nbackend = "echo"\n')
    os.kill(process.pid, signal.SIGHUP)
    assert wait_for(lambda: model_ids(base_url) == {"echo", "second"})

    config.write_text('[models.echo]\nbackend = "echo"\nmax_tokens = "many"\n')
    os.kill(process.pid, signal.SIGHUP)
    time.sleep(1)
    assert model_ids(base_url) == {"echo", "second"}  # the invalid config was rejected
    assert process.poll() is None

    process.terminate()
    output = process.communicate(timeout=30)[0].decode()
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    # JSON lines; every line logged inside the request carries the id the response had
    assert "model loading" in [line["event"] for line in lines if line.get("request_id") == request_id]
    assert "config reloaded" in output
    assert "config reload rejected" in output and "max_tokens: expected int" in output
