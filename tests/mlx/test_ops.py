"""Operational limits of the MLX backend: huge prompts and deep JSON are 400s, fast."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("mlx.core")

from gateway.decoding import MAX_DEPTH
from tests.support.apps import mlx_app
from tests.support.server import running_server


@pytest.fixture(scope="module")
def base_url(tiny_llama_path: Path) -> Iterator[str]:
    models: dict[str, Any] = {
        "tiny": {"backend": "mlx", "path": str(tiny_llama_path), "options": {"max_context": 64}},
    }
    app = mlx_app(models, max_body_bytes=8 * 1024 * 1024)
    with running_server(app) as url:
        yield url


def chat(base_url: str, **body: Any) -> httpx.Response:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return httpx.post(f"{base_url}/v1/chat/completions", json={"model": "tiny", **body}, timeout=60)


def test_a_prompt_that_cannot_fit_is_refused_before_tokenizing(base_url: str) -> None:
    assert chat(base_url, max_tokens=2).status_code == 200  # loads the model
    huge = "word " * 800_000  # 4 MB: seconds of tokenizing, were it tokenized
    started = time.perf_counter()
    refused = chat(base_url, messages=[{"role": "user", "content": huge}], max_tokens=2)
    elapsed = time.perf_counter() - started
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "context_length_exceeded" and "characters" in error["message"]
    # The tokenizer's own count would take far longer; this is the byte bound's path.
    assert elapsed < 10
    # A prompt under the bound but over the context still gets the tokenizer's exact answer.
    over = chat(base_url, messages=[{"role": "user", "content": "word " * 200}], max_tokens=2)
    assert over.status_code == 400 and "tokens" in over.json()["error"]["message"]


def test_tools_nested_at_the_limit_render_and_deeper_is_a_400(base_url: str) -> None:
    def post(depth: int) -> httpx.Response:
        levels = depth - 3  # tools list, tool, function: 3 levels above `parameters`
        parameters = '{"a":' * (levels - 1) + "{}" + "}" * (levels - 1)
        body = (
            '{"model": "tiny", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}], '
            f'"tools": [{{"type": "function", "function": {{"name": "f", "parameters": {parameters}}}}}]}}'
        )
        return httpx.post(f"{base_url}/v1/chat/completions", content=body, timeout=60)

    at_limit = post(MAX_DEPTH)
    assert at_limit.status_code in (200, 400), at_limit.text  # rendered by the template, never a 500
    if at_limit.status_code == 400:
        assert at_limit.json()["error"]["code"] == "context_length_exceeded"
    for depth in (MAX_DEPTH + 1, 1000, 100_000):
        deeper = post(depth)
        assert deeper.status_code == 400, deeper.text
        assert deeper.json()["error"]["code"] == "invalid_json"


def test_deeply_nested_tool_call_arguments_are_a_400(base_url: str) -> None:
    arguments = '{"a":' * 5000 + "1" + "}" * 5000
    messages = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    answer = chat(base_url, messages=messages, tools=tools, max_tokens=1)
    assert answer.status_code == 400, answer.text


def test_metrics_count_prompt_tokens_and_prefix_cache_hits(base_url: str) -> None:
    messages = [{"role": "system", "content": "You are terse. " * 3}, {"role": "user", "content": "hi"}]
    for _ in range(3):
        assert chat(base_url, messages=messages, max_tokens=2, temperature=0).status_code == 200
    text = httpx.get(f"{base_url}/metrics").text
    values = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if 'model_name="tiny"' in line and not line.startswith("#")
    }
    assert values["gateway:prefix_cache_queries_total"] >= values["gateway:prefix_cache_hits_total"] > 0
    assert values["gateway:prefix_cache_bytes"] > 0
    assert values["gateway:time_to_first_token_seconds_count"] >= 3
