"""A cheap streaming load generator for OpenAI-compatible servers.

Raw asyncio HTTP/1.1 (no client library in the loop), so on a 2-core machine
the client takes as little CPU from the server under test as possible, and the
same client measures every server in a run: compare ratios, not absolutes.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class StreamResult:
    ttft_s: float
    total_s: float
    completion_tokens: int
    cached_tokens: int


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


async def stream_once(
    base_url: str, body: dict[str, Any], path: str = "/v1/chat/completions"
) -> StreamResult:
    """One streamed chat completion; TTFT is the first event carrying output text."""
    url = urlsplit(base_url)
    payload = json.dumps({**body, "stream": True, "stream_options": {"include_usage": True}}).encode()
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    started = time.perf_counter()
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {url.hostname}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
        + payload
    )
    await writer.drain()
    ttft: float | None = None
    usage: dict[str, Any] = {}
    status_line = await reader.readline()
    if b" 200 " not in status_line:
        rest = await reader.read()
        writer.close()
        raise RuntimeError(f"{status_line.decode().strip()}: {rest[-500:].decode(errors='replace')}")
    while line := await reader.readline():
        if not line.startswith(b"data: {"):
            continue
        event = json.loads(line[6:])
        if "error" in event:
            raise RuntimeError(str(event["error"]))
        if ttft is None:
            for choice in event.get("choices") or ():
                delta = choice.get("delta") or {}
                if delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning"):
                    ttft = time.perf_counter() - started
        if event.get("usage"):
            usage = event["usage"]
    total = time.perf_counter() - started
    writer.close()
    details = usage.get("prompt_tokens_details") or {}
    return StreamResult(
        ttft_s=ttft if ttft is not None else total,
        total_s=total,
        completion_tokens=int(usage.get("completion_tokens", 0)),
        cached_tokens=int(details.get("cached_tokens") or 0),
    )


@dataclass
class LoadResult:
    concurrency: int
    requests: int
    aggregate_tps: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    wall_s: float


async def _run_load(base_url: str, bodies: list[dict[str, Any]], concurrency: int) -> LoadResult:
    queue = list(reversed(bodies))
    results: list[StreamResult] = []

    async def worker() -> None:
        while queue:
            results.append(await stream_once(base_url, queue.pop()))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    ttfts = [result.ttft_s * 1000 for result in results]
    return LoadResult(
        concurrency=concurrency,
        requests=len(results),
        aggregate_tps=sum(result.completion_tokens for result in results) / wall,
        ttft_p50_ms=statistics.median(ttfts),
        ttft_p99_ms=percentile(ttfts, 0.99),
        wall_s=wall,
    )


def run_load(base_url: str, bodies: list[dict[str, Any]], concurrency: int) -> LoadResult:
    """Send `bodies` with `concurrency` streams open at a time (each request one stream)."""
    return asyncio.run(_run_load(base_url, bodies, concurrency))
