"""A cheap closed-loop HTTP/1.1 load generator: keep-alive connections, pre-encoded requests.

Each connection sends one request, reads the whole response, and sends the
next, for a fixed time. No client library and no JSON parsing in the loop, so
on a small machine the client takes as little CPU as possible from the server
under test. Responses must carry `Content-Length` (non-streamed answers do).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from bench.load import percentile


@dataclass
class Throughput:
    requests: int
    errors: int
    seconds: float
    latencies_s: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def summary(self) -> dict[str, float]:
        return {
            "rps": round(self.rps, 1),
            "p50_ms": round(percentile(self.latencies_s, 0.50) * 1000, 3),
            "p99_ms": round(percentile(self.latencies_s, 0.99) * 1000, 3),
            "errors": self.errors,
        }


def post_request(base_url: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    url = urlsplit(base_url)
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {url.hostname}:{url.port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _connection(
    host: str, port: int, request: bytes, warmup_end: float, end: float, result: Throughput
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            started = time.perf_counter()
            if started >= end:
                return
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = _content_length(head)
            if length is None:
                raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
            await reader.readexactly(length)
            finished = time.perf_counter()
            if started >= warmup_end and finished <= end:
                result.requests += 1
                result.latencies_s.append(finished - started)
                if head[9:12] != b"200":
                    result.errors += 1
    finally:
        writer.close()


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return None


async def _load(
    base_url: str, request: bytes, connections: int, warmup_s: float, seconds: float
) -> Throughput:
    url = urlsplit(base_url)
    assert url.hostname and url.port
    now = time.perf_counter()
    result = Throughput(0, 0, seconds, [])
    await asyncio.gather(
        *(
            _connection(url.hostname, url.port, request, now + warmup_s, now + warmup_s + seconds, result)
            for _ in range(connections)
        )
    )
    return result


def run_load(base_url: str, request: bytes, connections: int, warmup_s: float, seconds: float) -> Throughput:
    """Closed-loop load for `warmup_s + seconds`; only the last `seconds` are counted."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # uvloop comes with uvicorn[standard]; plain asyncio works too
        runner = asyncio.run
    return runner(_load(base_url, request, connections, warmup_s, seconds))
