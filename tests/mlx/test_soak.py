"""Soak: many mixed requests against MLX test models, then nothing is left behind.

Streams and not, n > 1, tools, stop strings, 30% of streams cancelled at a random
point, some bad requests. Afterwards: zero running rows and queued requests, the
prefix cache within its cap, open file descriptors and RSS within 5% of their
values after warm-up, and no error lines in the log.

`make soak` runs 5,000 requests (`SOAK_REQUESTS`); `make test` runs a short one.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

pytest.importorskip("mlx.core")

from tests.support.apps import mlx_app
from tests.support.server import running_server

REQUESTS = int(os.environ.get("SOAK_REQUESTS", "200"))
CONCURRENCY = 8
WEATHER = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


@contextmanager
def error_lines() -> Iterator[list[dict[str, Any]]]:
    """Log events at error level or above; the others are dropped, not kept (a list of
    every event would itself grow the RSS being measured)."""
    errors: list[dict[str, Any]] = []

    def keep_errors(_: Any, method_name: str, event: dict[str, Any]) -> dict[str, Any]:
        if method_name in ("error", "exception", "critical"):
            errors.append(dict(event))
        raise structlog.DropEvent

    configured = structlog.get_config()
    structlog.configure(processors=[keep_errors])
    try:
        yield errors
    finally:
        structlog.configure(**configured)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def request_for(rng: random.Random) -> tuple[dict[str, Any], str]:
    """A random request and what to do with it: "send", "cancel" (a stream cut mid-way) or "bad"."""
    kind = rng.choices(["plain", "n", "tools", "stop", "bad", "tiny"], [3, 1, 1, 1, 1, 3])[0]
    body: dict[str, Any] = {
        "model": "tiny",
        "max_tokens": rng.randint(1, 12),
        "messages": [
            {
                "role": "user",
                "content": " ".join(
                    rng.choice(["hi", "there", "a", "long", "prompt"]) for _ in range(rng.randint(1, 40))
                ),
            }
        ],
    }
    if kind == "n":
        body["n"] = rng.randint(2, 4)
    elif kind == "tools":
        body.update(model="tool_call", tools=WEATHER)
    elif kind == "stop":
        body.update(model="stop", stop=[", two"])
    elif kind == "bad":
        body = rng.choice(
            [
                {"model": "tiny"},
                {"model": "tiny", "messages": [], "max_tokens": -1},
                {"model": "nope", "messages": []},
            ]
        )
        return body, "bad"
    if rng.random() < 0.5:
        body["stream"] = True
        return body, "cancel" if rng.random() < 0.3 else "send"
    return body, "send"


async def one(client: httpx.AsyncClient, rng: random.Random, outcomes: Counter[str]) -> None:
    body, action = request_for(rng)
    if body.get("stream"):
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            outcomes[f"stream {response.status_code}"] += 1
            cut_after = rng.randint(1, 4) if action == "cancel" else None
            seen = 0
            async for line in response.aiter_lines():
                seen += bool(line)
                if cut_after is not None and seen >= cut_after:
                    outcomes["cancelled"] += 1
                    return  # leaving the block closes the connection mid-stream
        return
    response = await client.post("/v1/chat/completions", json=body)
    outcomes[f"{action} {response.status_code}"] += 1


async def run(base_url: str, count: int, seed: int) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=CONCURRENCY * 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
        queue = list(range(count))

        async def worker() -> None:
            while queue:
                queue.pop()
                await one(client, rng, outcomes)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return outcomes


def settle(app: Any, models: list[str]) -> dict[str, dict[str, int]]:
    """Wait until no request is running anywhere; each engine's stats."""
    deadline = time.monotonic() + 60
    stats: dict[str, dict[str, int]] = {}
    while time.monotonic() < deadline:
        entries = [app.state.registry.entries[name] for name in models]
        stats = {entry.id: entry.backend.stats() for entry in entries if entry.backend is not None}
        busy = any(entry.active or entry.admission.queued for entry in entries) or any(
            s["running_rows"] or s["waiting_requests"] or s["prefilling"] for s in stats.values()
        )
        if not busy:
            return stats
        time.sleep(0.05)
    raise AssertionError(f"requests still running after the soak: {stats}")


def test_soak_leaves_nothing_behind(tiny_llama_path: Path, scripted_model: Callable[[str], Path]) -> None:
    # Small prefix caches: a cache filling towards its cap (512 MiB by default) is growth by
    # design and would hide a leak; with 4 MiB caps RSS plateaus within ~400 requests.
    options = {"prefix_cache_bytes": 4 * 1024 * 1024}
    greedy = {"temperature": 0.0}
    models = {
        "tiny": {"backend": "mlx", "path": str(tiny_llama_path), "options": options},
        "tool_call": {"backend": "mlx", "path": str(scripted_model("tool_call")), "defaults": greedy},
        "stop": {"backend": "mlx", "path": str(scripted_model("stop")), "defaults": greedy},
    }
    for table in models.values():
        table["options"] = options
    app = mlx_app(models)
    names = list(models)
    with running_server(app) as base_url, error_lines() as errors:
        warm_up = max(REQUESTS // 10, 300)
        asyncio.run(run(base_url, warm_up, seed=1))
        settle(app, names)
        gc.collect()
        fds, rss = open_fds(), rss_bytes()
        started = time.perf_counter()
        outcomes = asyncio.run(run(base_url, REQUESTS, seed=2))
        elapsed = time.perf_counter() - started
        stats = settle(app, names)
        gc.collect()
        time.sleep(0.2)
        fds_after, rss_after = open_fds(), rss_bytes()
    print(
        f"\nsoak: {REQUESTS} requests in {elapsed:.1f}s ({REQUESTS / elapsed:.0f}/s); {dict(outcomes)}; "
        f"fds {fds} -> {fds_after}; RSS {rss / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB; "
        f"prefix caches {[engine['prefix_cache_bytes'] >> 20 for engine in stats.values()]} MiB"
    )
    assert not any(key.endswith((" 500", " 503")) for key in outcomes), outcomes
    assert outcomes["cancelled"] > 0 and outcomes["bad 400"] + outcomes["bad 404"] > 0
    for name, engine in stats.items():
        assert engine["prefix_cache_bytes"] <= engine["prefix_cache_capacity_bytes"], (name, engine)
    assert fds_after <= fds * 1.05 + 1, (fds, fds_after)
    assert rss_after <= rss * 1.05, (rss, rss_after)
    assert not errors, errors[:3]
