"""Each API endpoint's requests/s through the full pipeline, beside chat completions.

One gateway (echo backend, no optional plugin) in a uvicorn subprocess, loaded by
the same keep-alive client (`bench.keepalive`) with one non-streamed request per
endpoint asking the same question. Rounds interleave the endpoints (in turn
ABBA order); the ratio is the median of each round's ratio to chat, so a noisy
machine hurts both sides alike. Target:
every endpoint >= 90% of chat completions' requests/s. A new endpoint is one
entry in `ENDPOINTS`.

    python -m bench.endpoint_overhead   # GATEWAY_BENCH_SECONDS, _ROUNDS, _CONNECTIONS
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable
from typing import Any

import httpx

from bench.gateway_overhead import GATEWAY_CONFIG
from bench.keepalive import post_request, run_load
from bench.servers import gateway_server

TARGET = 0.90
QUESTION = "hello there"
# name -> (path, body, the answer's text from its JSON)
ENDPOINTS: dict[str, tuple[str, dict[str, Any], Callable[[Any], str]]] = {
    "chat": (
        "/v1/chat/completions",
        {"model": "echo", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 16},
        lambda answer: answer["choices"][0]["message"]["content"],
    ),
    "responses": (
        "/v1/responses",
        {"model": "echo", "input": QUESTION, "max_output_tokens": 16},
        lambda answer: answer["output"][0]["content"][0]["text"],
    ),
    "messages": (
        "/v1/messages",
        {"model": "echo", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 16},
        lambda answer: answer["content"][0]["text"],
    ),
    "completions": (
        "/v1/completions",
        {"model": "echo", "prompt": QUESTION, "max_tokens": 16},
        lambda answer: answer["choices"][0]["text"],
    ),
}


def _check(base_url: str) -> None:
    """One real request each first: an endpoint that answers wrongly fast must not win."""
    for name, (path, body, text_of) in ENDPOINTS.items():
        response = httpx.post(f"{base_url}{path}", json=body, timeout=30)
        response.raise_for_status()
        if text_of(response.json()) != QUESTION:
            raise RuntimeError(f"{name} answered {response.text!r}")


def run(report: Callable[[str], None]) -> dict[str, Any]:
    seconds = float(os.environ.get("GATEWAY_BENCH_SECONDS", "2"))
    rounds = int(os.environ.get("GATEWAY_BENCH_ROUNDS", "8"))
    connections = int(os.environ.get("GATEWAY_BENCH_CONNECTIONS", "16"))
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in ENDPOINTS}
    with gateway_server(GATEWAY_CONFIG) as base_url:
        _check(base_url)
        names = list(ENDPOINTS)
        for number in range(1, rounds + 1):
            for name in names if number % 2 else reversed(names):  # ABBA: drift hurts both alike
                path, body, _ = ENDPOINTS[name]
                request = post_request(base_url, path, json.dumps(body).encode())
                summary = run_load(base_url, request, connections, 0.5, seconds).summary()
                samples[name].append(summary)
                report(f"round {number}/{rounds} {name:9} {summary}")
    results: dict[str, Any] = {
        name: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        for name, runs in samples.items()
    }
    chat = results["chat"]["rps"]
    for name in ENDPOINTS:
        if name == "chat":
            continue
        # The median of each round's ratio: a busy moment slows both sides of one round.
        ratio = statistics.median(
            run["rps"] / base["rps"] for run, base in zip(samples[name], samples["chat"], strict=True)
        )
        results[name].update(ratio=round(ratio, 3), target=TARGET, met=ratio >= TARGET)
        report(
            f"{name}: {results[name]['rps']:.0f} req/s = {ratio:.0%} of chat completions' {chat:.0f} "
            f"(target {TARGET:.0%}: {'met' if ratio >= TARGET else 'MISSED'}); "
            f"p50 {results[name]['p50_ms']:.2f} ms (chat {results['chat']['p50_ms']:.2f} ms)"
        )
    results["settings"] = {"seconds": seconds, "rounds": rounds, "connections": connections}
    return results


if __name__ == "__main__":
    print(json.dumps(run(print), indent=2))
