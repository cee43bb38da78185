"""Latency the `openai` backend adds: an echo gateway called directly vs through a front gateway.

Each gateway runs in its own process, as in a deployment, and the client in
this one. Requests are short non-streamed echo answers, sent one at a time on
keep-alive connections, alternating between the paths so that drift (CPU
frequency, other load) affects all alike. A third path, the echo gateway
asked to stream, shows what the upstream's part costs: the backend always
asks upstreams to stream. Run: `python -m bench.upstream_latency`.
"""

from __future__ import annotations

import multiprocessing
import socket
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx

REQUESTS = 2000
WARMUP = 200
BODY = {"model": "echo", "messages": [{"role": "user", "content": "the quick brown fox"}], "max_tokens": 8}
STREAMED = {**BODY, "stream": True, "stream_options": {"include_usage": True}}


def _serve(upstream: str | None, ports: Any) -> None:
    """Child process: an echo gateway (no `upstream`) or a front gateway forwarding to `upstream`."""
    import uvicorn

    from backends import echo
    from backends.upstream import plugin as upstream_plugin
    from gateway import create_app, parse_config
    from gateway.logs import configure_logging
    from gateway.plugins import new_plugin_manager

    configure_logging("json", "warning")
    if upstream is None:
        model = {"backend": "echo"}
    else:
        model = {
            "backend": "openai",
            "options": {"upstreams": [f"{upstream}/v1"], "health_check_interval_s": 0},
        }
    manager = new_plugin_manager()
    manager.register(echo, name="echo")
    manager.register(upstream_plugin, name="openai")
    app = create_app(parse_config({"models": {"echo": model}}), manager)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    ports.put(listener.getsockname()[1])
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[listener])


def _start(context: Any, upstream: str | None) -> tuple[Any, str]:
    ports = context.Queue()
    process = context.Process(target=_serve, args=(upstream, ports), daemon=True)
    process.start()
    url = f"http://127.0.0.1:{ports.get(timeout=60)}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/health", timeout=1).raise_for_status()
            return process, url
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _timed_request(client: httpx.Client, url: str, body: dict[str, Any] = BODY) -> float:
    """Milliseconds until the whole answer is read."""
    started = time.perf_counter()
    response = client.post(f"{url}/v1/chat/completions", json=body)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed * 1000


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def run(report: Callable[[str], None]) -> dict[str, float]:
    """Median and p99 latency (ms) direct vs through the upstream backend, and the difference."""
    context = multiprocessing.get_context("spawn")
    upstream_process, direct_url = _start(context, None)
    front_process, front_url = _start(context, direct_url)
    try:
        paths = {
            "direct": (direct_url, BODY),
            "direct_streamed": (direct_url, STREAMED),
            "front": (front_url, BODY),
        }
        times: dict[str, list[float]] = {path: [] for path in paths}
        with httpx.Client() as client:
            for _ in range(WARMUP):
                for url, body in paths.values():
                    _timed_request(client, url, body)
            for _ in range(REQUESTS):
                for path, (url, body) in paths.items():
                    times[path].append(_timed_request(client, url, body))
    finally:
        for process in (front_process, upstream_process):
            process.terminate()
            process.join(timeout=10)
    result: dict[str, float] = {"requests": float(REQUESTS)}
    for path, values in times.items():
        result[f"{path}_median_ms"] = statistics.median(values)
        result[f"{path}_p99_ms"] = _percentile(values, 0.99)
    for stat in ("median", "p99"):
        direct, front = result[f"direct_{stat}_ms"], result[f"front_{stat}_ms"]
        result[f"added_{stat}_ms"] = front - direct
        result[f"ratio_{stat}"] = front / direct
        report(
            f"{stat:>6}: direct {direct:6.2f} ms (streamed {result[f'direct_streamed_{stat}_ms']:6.2f} ms), "
            f"through the upstream backend {front:6.2f} ms, added {front - direct:5.2f} ms "
            f"({front / direct:.2f}x)"
        )
    return result


if __name__ == "__main__":
    run(print)
