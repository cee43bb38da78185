"""The cost of metrics: the same gateway with `server.metrics` on and off, in one run.

- requests/s: echo, non-streamed, the keep-alive load of `bench.gateway_overhead`;
  the metrics-on server is scraped once a second meanwhile (target >= 0.97x);
- MLX decode: streamed single-stream tokens/s on the tiny test model, 1,000 tokens a
  round, scraped likewise (target >= 0.99x).

Rounds interleave the two servers (alternating which goes first); the ratio is the
median of the rounds' on/off ratios, so drift on a shared machine cancels out.

    python -m bench.metrics_cost     # METRICS_BENCH_SECONDS, _ROUNDS
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from bench.gateway_overhead import BACKENDS_UNUSED, BODY
from bench.keepalive import post_request, run_load
from bench.load import stream_once
from bench.servers import gateway_server

TARGETS = {"rps": 0.97, "decode": 0.99}


def _config(metrics: bool, models: str) -> str:
    return f"""
[server]
metrics = {str(metrics).lower()}
metrics_public = true

[plugins]
disabled = [{BACKENDS_UNUSED}, "auth", "rewrite", "tools", "calculator", "request_log", "redact"]
{models}"""


_SCRAPER = """
import sys, time, urllib.request
while True:
    time.sleep(float(sys.argv[2]))
    urllib.request.urlopen(sys.argv[1] + "/metrics", timeout=10).read()
"""


@contextmanager
def _scraped(base_url: str, every_s: float = 1.0) -> Iterator[None]:
    """Scrape /metrics once a second, as Prometheus would, from a process of its own
    running through both servers' rounds: its own CPU then weighs on both alike, and
    only the scraped server pays for answering."""
    scraper = subprocess.Popen([sys.executable, "-c", _SCRAPER, base_url, str(every_s)])
    try:
        yield
    finally:
        scraper.kill()
        scraper.wait()


def _requests_per_second(report: Callable[[str], None], seconds: float, rounds: int) -> dict[str, Any]:
    echo = '[models.echo]\nbackend = "echo"\n'
    body = json.dumps(BODY).encode()
    samples: dict[str, list[float]] = {"off": [], "on": []}
    with ExitStack() as stack:
        servers = {
            "off": stack.enter_context(gateway_server(_config(False, echo))),
            "on": stack.enter_context(gateway_server(_config(True, echo))),
        }
        stack.enter_context(_scraped(servers["on"]))
        for number in range(1, rounds + 1):
            for name, base_url in _in_turn(servers, number):
                request = post_request(base_url, "/v1/chat/completions", body)
                rps = run_load(base_url, request, 16, 0.5, seconds).rps
                samples[name].append(rps)
                report(f"round {number}/{rounds} metrics {name:3}: {rps:.0f} req/s")
    return _ratio(samples, "rps")


def _decode(report: Callable[[str], None], rounds: int, tokens: int = 1000) -> dict[str, Any]:
    from bench.mlx_decode import PROMPT, build_models

    model = build_models()["tiny"]
    mlx = f'[models.m]\nbackend = "mlx"\npath = "{model}"\npreload = true\n'
    body = {"model": "m", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": tokens}
    body["temperature"] = 0
    samples: dict[str, list[float]] = {"off": [], "on": []}
    with ExitStack() as stack:
        servers = {
            "off": stack.enter_context(gateway_server(_config(False, mlx).replace('"mlx", ', ""))),
            "on": stack.enter_context(gateway_server(_config(True, mlx).replace('"mlx", ', ""))),
        }
        stack.enter_context(_scraped(servers["on"]))
        for base_url in servers.values():
            asyncio.run(stream_once(base_url, body))  # warm-up
        for number in range(1, rounds + 1):
            for name, base_url in _in_turn(servers, number):
                result = asyncio.run(stream_once(base_url, body))
                tps = (result.completion_tokens - 1) / (result.total_s - result.ttft_s)
                samples[name].append(tps)
                report(f"round {number}/{rounds} metrics {name:3}: {tps:.0f} decode tok/s")
    return _ratio(samples, "decode")


def _in_turn(servers: dict[str, str], number: int) -> list[tuple[str, str]]:
    order = list(servers.items())
    return order if number % 2 else order[::-1]


def _ratio(samples: dict[str, list[float]], target: str) -> dict[str, Any]:
    off, on = statistics.median(samples["off"]), statistics.median(samples["on"])
    ratio = statistics.median(a / b for a, b in zip(samples["on"], samples["off"], strict=True))
    return {"off": off, "on": on, "ratio": ratio, "target": TARGETS[target], "met": ratio >= TARGETS[target]}


def run(report: Callable[[str], None]) -> dict[str, Any]:
    seconds = float(os.environ.get("METRICS_BENCH_SECONDS", "2"))
    rounds = int(os.environ.get("METRICS_BENCH_ROUNDS", "8"))
    report("## The cost of metrics: server.metrics on vs off, same run")
    results = {"rps": _requests_per_second(report, seconds, rounds), "decode": _decode(report, rounds)}
    for name, result in results.items():
        unit = "req/s" if name == "rps" else "decode tok/s"
        report(
            f"{name}: on {result['on']:.0f} vs off {result['off']:.0f} {unit} (medians); "
            f"median of the rounds' ratios {result['ratio']:.3f}x "
            f"(target {result['target']}x: {'met' if result['met'] else 'MISSED'})"
        )
    return results


if __name__ == "__main__":
    print(json.dumps(run(print), indent=2))
