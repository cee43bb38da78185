"""Gateway overhead: requests/s and latency against a bare Litestar endpoint.

Three servers, each in its own uvicorn subprocess on a loopback port, loaded in
the same run by the same keep-alive client (`bench.keepalive`) with one
non-streamed chat completion:

- ceiling: a bare Litestar + msgspec endpoint returning a fixed completion;
- gateway: the gateway with the echo backend and no optional plugin;
- plugins: the gateway with auth (one key), rewrite, tools and request_log
  (logging to a file) enabled.

Rounds interleave the three, and each figure is the median over rounds, so a
noisy machine hurts all three alike. Targets: gateway >= 60% of the ceiling's
requests/s, gateway with plugins >= 70% (issue 15). `bench.request_profile`
measures the same three in process (CPU per request, and where it goes).

    python -m bench.gateway_overhead          # GATEWAY_BENCH_SECONDS, _ROUNDS, _CONNECTIONS
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import httpx

from bench.keepalive import post_request, run_load
from bench.servers import free_port, gateway_server, process_server

TARGETS = {"gateway": 0.60, "plugins": 0.70}
API_KEY = "sk-bench-overhead"
BODY = {"model": "echo", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 16}
BACKENDS_UNUSED = '"mlx", "openai"'

GATEWAY_CONFIG = f"""
[plugins]
disabled = [{BACKENDS_UNUSED}, "auth", "rewrite", "tools", "calculator", "request_log", "redact"]

[models.echo]
backend = "echo"
"""

PLUGINS_CONFIG = f"""
[plugins]
disabled = [{BACKENDS_UNUSED}]

[[plugins.settings.auth.keys]]
id = "bench"
key = "{API_KEY}"
requests_per_minute = 100000000

[[plugins.settings.rewrite.rules]]
system_prompt = "You are a benchmark. Today is {{date}}."
max = {{ max_tokens = 64 }}

[[plugins.settings.tools.rules]]
tools = ["calculator"]

[models.echo]
backend = "echo"
"""


def _ceiling_server() -> Any:
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "bench.ceiling:app", "--host", "127.0.0.1",
        "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    return process_server(command, port, "/health", timeout_s=60)


def _check(name: str, base_url: str, headers: dict[str, str]) -> None:
    """One real request first: a server that answers wrongly fast must not win."""
    response = httpx.post(f"{base_url}/v1/chat/completions", json=BODY, headers=headers, timeout=30)
    response.raise_for_status()
    content = response.json()["choices"][0]["message"]["content"]
    if content != "hello there":
        raise RuntimeError(f"{name} answered {content!r}")
    if name == "plugins":
        refused = httpx.post(f"{base_url}/v1/chat/completions", json=BODY, timeout=30)
        if refused.status_code != 401:
            raise RuntimeError(f"the auth plugin is not active: {refused.status_code}")


def run(report: Callable[[str], None]) -> dict[str, Any]:
    seconds = float(os.environ.get("GATEWAY_BENCH_SECONDS", "3"))
    rounds = int(os.environ.get("GATEWAY_BENCH_ROUNDS", "5"))
    connections = int(os.environ.get("GATEWAY_BENCH_CONNECTIONS", "16"))
    body = json.dumps(BODY).encode()
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with ExitStack() as stack:
        servers = {
            "ceiling": (stack.enter_context(_ceiling_server()), {}),
            "gateway": (stack.enter_context(gateway_server(GATEWAY_CONFIG)), {}),
            "plugins": (stack.enter_context(gateway_server(PLUGINS_CONFIG)), auth),
        }
        for name, (base_url, headers) in servers.items():
            _check(name, base_url, headers)
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
        for number in range(1, rounds + 1):
            for name, (base_url, headers) in servers.items():
                request = post_request(base_url, "/v1/chat/completions", body, headers)
                summary = run_load(base_url, request, connections, 0.5, seconds).summary()
                samples[name].append(summary)
                report(f"round {number}/{rounds} {name:8} {summary}")
    results: dict[str, Any] = {name: _median(runs) for name, runs in samples.items()}
    ceiling = results["ceiling"]["rps"]
    for name, target in TARGETS.items():
        ratio = results[name]["rps"] / ceiling
        results[name].update(ratio=round(ratio, 3), target=target, met=ratio >= target)
        report(
            f"{name}: {results[name]['rps']:.0f} req/s = {ratio:.0%} of the ceiling's {ceiling:.0f} "
            f"(target {target:.0%}: {'met' if ratio >= target else 'MISSED'}); "
            f"p50 {results[name]['p50_ms']:.2f} ms, p99 {results[name]['p99_ms']:.2f} ms "
            f"(ceiling p50 {results['ceiling']['p50_ms']:.2f} ms, p99 {results['ceiling']['p99_ms']:.2f} ms)"
        )
    results["settings"] = {"seconds": seconds, "rounds": rounds, "connections": connections, "body": BODY}
    return results


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


if __name__ == "__main__":
    print(json.dumps(run(print), indent=2))
