"""Liveness under overload: `/health` latency while ten times `max_queue` clients hammer a model.

The gateway runs as `gateway serve` in its own process; forty clients send three
waves of chat completions to an echo model with `max_concurrency` 2 and
`max_queue` 4 (so most get a 429), while a prober in a thread of its own asks for
`/health` every 5 ms. The same prober first runs against the idle server, in the
same run, as the baseline. Target: p99 under overload <= 50 ms (issue 13).

    python -m bench overload        # OVERLOAD_WAVES (default 6)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from bench.servers import gateway_server

MAX_QUEUE = 4
CLIENTS = 10 * MAX_QUEUE
TARGET_P99_S = 0.050
CONFIG = f"""
[models.busy]
backend = "echo"
max_concurrency = 2
max_queue = {MAX_QUEUE}
queue_timeout_s = 5
options = {{ delay_ms = 10 }}
"""
BODY = {"model": "busy", "messages": [{"role": "user", "content": "one two three four five"}]}


class Prober(threading.Thread):
    """Asks for `/health` every 5 ms on its own connection until stopped; keeps each wait."""

    def __init__(self, base_url: str) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.waits: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            while not self.stop.is_set():
                started = time.perf_counter()
                client.get("/health").raise_for_status()
                self.waits.append(time.perf_counter() - started)
                time.sleep(0.005)


def probe(base_url: str, load: Callable[[], Any]) -> list[float]:
    prober = Prober(base_url)
    prober.start()
    try:
        load()
    finally:
        prober.stop.set()
        prober.join()
    return prober.waits


async def waves(base_url: str, count: int) -> Counter[int]:
    statuses: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=CLIENTS * 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:

        async def one() -> None:
            statuses[(await client.post("/v1/chat/completions", json=BODY)).status_code] += 1

        for _ in range(count):
            await asyncio.gather(*(one() for _ in range(CLIENTS)))
    return statuses


def p99(waits: list[float]) -> float:
    return statistics.quantiles(waits, n=100)[98]


def run(report: Callable[[str], None]) -> dict[str, Any]:
    count = int(os.environ.get("OVERLOAD_WAVES", "6"))
    with gateway_server(CONFIG) as base_url:
        asyncio.run(waves(base_url, 1))  # warm-up
        idle = probe(base_url, lambda: time.sleep(2))
        statuses: Counter[int] = Counter()
        loaded = probe(base_url, lambda: statuses.update(asyncio.run(waves(base_url, count))))
    result = {
        "statuses": dict(statuses),
        "idle_p99_ms": p99(idle) * 1000,
        "overload_p99_ms": p99(loaded) * 1000,
        "overload_median_ms": statistics.median(loaded) * 1000,
        "probes": len(loaded),
        "target_p99_ms": TARGET_P99_S * 1000,
    }
    report(
        f"overload ({CLIENTS} clients x {count} waves, max_queue {MAX_QUEUE}): {dict(statuses)}; "
        f"/health p99 {result['overload_p99_ms']:.1f} ms (median {result['overload_median_ms']:.1f}, "
        f"{len(loaded)} probes) vs idle p99 {result['idle_p99_ms']:.1f} ms; target <= 50 ms"
    )
    return result


if __name__ == "__main__":
    run(print)
