"""Embeddings on the MLX backend: throughput, and what they cost streams running beside.

- inputs/s for requests of 1, 8 and 32 short texts (median over rounds);
- the decode tokens/s of running streams (each stream's tokens after its first
  over the time after its first, summed over the concurrent streams) while a
  client keeps asking for 32-text embeddings, over the same streams alone
  (interleaved rounds, so the machine's noise hits both sides alike; the
  target is >= 0.8x: embeddings get at most `embed_share` of the engine's time
  while rows decode).

    python -m bench embeddings
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.load import stream_once
from bench.mlx_decode import CACHE
from bench.servers import gateway_server

BATCHES = (1, 8, 32)
WORDS = [
    "the",
    "sea",
    "a",
    "city",
    "mountains",
    "robot",
    "moon",
    "garden",
    "trains",
    "winter",
    "river",
    "forest",
    "lamp",
]
STREAMS = 4
STREAM_TOKENS = 200


def bench_model() -> Path:
    """A small llama (hidden 256, 4 layers, 32k BPE vocabulary): cheap, yet model-bound."""
    from tests.support.mlx_models import ModelShape, build_realistic_model

    shape = ModelShape("llama", 256, 4, 768, 4, 2, 32000)
    return build_realistic_model(CACHE / "embeddings-small", shape=shape)


def texts(count: int, offset: int = 0) -> list[str]:
    """Short distinct texts of 8 words."""
    return [" ".join(WORDS[(index + offset + k) % len(WORDS)] for k in range(8)) for index in range(count)]


def inputs_per_second(base_url: str, batch: int, rounds: int) -> float:
    with httpx.Client(base_url=base_url, timeout=120) as client:
        times = []
        for round_number in range(rounds + 1):  # the first round warms up
            body = {"model": "m", "input": texts(batch, round_number), "encoding_format": "base64"}
            started = time.perf_counter()
            client.post("/v1/embeddings", json=body).raise_for_status()
            times.append(time.perf_counter() - started)
    return batch / statistics.median(times[1:])


def stream_bodies(count: int) -> list[dict[str, Any]]:
    return [
        {
            "model": "m",
            "messages": [{"role": "user", "content": f"Tell me about {WORDS[index % len(WORDS)]}."}],
            "max_tokens": STREAM_TOKENS,
            "temperature": 0.0,
        }
        for index in range(count)
    ]


async def _embed_until(base_url: str, stop: asyncio.Event) -> int:
    """Embedding requests of 32 texts, back to back, until `stop`; returns how many ran."""
    done = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        while not stop.is_set():
            body = {"model": "m", "input": texts(32, done), "encoding_format": "base64"}
            (await client.post("/v1/embeddings", json=body)).raise_for_status()
            done += 1
    return done


def decode_tps(base_url: str, beside: bool) -> tuple[float, int]:
    """Aggregate tokens/s of STREAMS concurrent streams (and embedding requests run beside)."""

    async def main() -> tuple[float, int]:
        stop = asyncio.Event()
        streams = [asyncio.create_task(stream_once(base_url, body)) for body in stream_bodies(STREAMS)]
        embedder = asyncio.create_task(_embed_until(base_url, stop)) if beside else None
        results = await asyncio.gather(*streams)
        stop.set()
        embedded = await embedder if embedder is not None else 0
        decode = sum((r.completion_tokens - 1) / max(r.total_s - r.ttft_s, 1e-9) for r in results)
        return decode, embedded

    return asyncio.run(main())


def run(report: Callable[[str], None], rounds: int = 3) -> dict[str, Any]:
    model = bench_model()
    config = f'[models.m]\nbackend = "mlx"\npath = "{model}"\npreload = true\n'
    report("## Embeddings (mlx, small llama: hidden 256, 4 layers)")
    results: dict[str, Any] = {}
    with gateway_server(config) as base_url:
        for batch in BATCHES:
            speed = inputs_per_second(base_url, batch, rounds=5)
            results[f"inputs_per_s_batch_{batch}"] = speed
            report(f"  batch {batch:>2}: {speed:7.1f} inputs/s (median of 5 requests of 8-word texts)")
        decode_tps(base_url, beside=False)  # warm-up
        alone, beside, embedded = [], [], []
        for _ in range(rounds):
            alone.append(decode_tps(base_url, beside=False)[0])
            tps, count = decode_tps(base_url, beside=True)
            beside.append(tps)
            embedded.append(count)
    ratio = statistics.median(b / a for a, b in zip(alone, beside, strict=True))
    results.update(
        decode_tps_alone=statistics.median(alone),
        decode_tps_beside_embeddings=statistics.median(beside),
        ratio=ratio,
        embedding_requests_beside=embedded,
    )
    report(
        f"  {STREAMS} streams x {STREAM_TOKENS} tokens: alone {results['decode_tps_alone']:.0f} tok/s | "
        f"beside back-to-back 32-text embeddings {results['decode_tps_beside_embeddings']:.0f} tok/s | "
        f"ratio {ratio:.2f}x (median of {rounds} interleaved rounds; target >= 0.8x; "
        f"embedding requests served meanwhile: {embedded})"
    )
    return results


if __name__ == "__main__":
    run(print)
