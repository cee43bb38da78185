"""Serving under load: the gateway vs `mlx_lm.server`, same model, same run.

- aggregate tokens/s and TTFT p50/p99 at 1, 4, 8 and 16 concurrent streams,
  with and without `seed`;
- TTFT of a repeated ~2,000-token system prompt, cold vs warm (prefix cache);
- a PNG plot of both against concurrency (bench-results/serving.png).
"""

from __future__ import annotations

import asyncio
import random
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.load import LoadResult, run_load, stream_once
from bench.mlx_decode import CACHE
from bench.servers import gateway_server, mlx_lm_server

CONCURRENCY = (1, 4, 8, 16)
TOKENS = 300
RESULTS = Path(__file__).resolve().parent.parent / "bench-results"


def tiny_model() -> Path:
    from tests.support.mlx_models import build_tiny_llama

    path = CACHE / "tiny-llama"
    if not (path / "config.json").exists():
        build_tiny_llama(path)
    return path


def bodies(model: str, count: int, seeded: bool, tokens: int = TOKENS) -> list[dict[str, Any]]:
    topics = ["the sea", "a city", "mountains", "a robot", "the moon", "a garden", "trains", "winter"]
    return [
        {
            "model": model,
            "messages": [
                {"role": "user", "content": f"Tell me about {topics[index % len(topics)]} ({index})."}
            ],
            "max_tokens": tokens,
            "temperature": 0.8,
            **({"seed": 1000 + index} if seeded else {}),
        }
        for index in range(count)
    ]


def sweep(base_url: str, model: str) -> dict[str, list[LoadResult]]:
    results: dict[str, list[LoadResult]] = {}
    run_load(base_url, bodies(model, 2, False), 2)  # warm-up
    for seeded in (False, True):
        label = "seeded" if seeded else "unseeded"
        results[label] = [
            run_load(base_url, bodies(model, max(2 * concurrency, 4), seeded), concurrency)
            for concurrency in CONCURRENCY
        ]
    return results


def long_system_prompt(nonce: str) -> str:
    rng = random.Random(7)
    words = ["harbor", "signal", "lantern", "tide", "compass", "anchor", "keeper", "storm", "chart", "rope"]
    return nonce + " You are a careful assistant. " + " ".join(rng.choice(words) for _ in range(450))


def cold_warm_ttft(base_url: str, model: str, trials: int = 3) -> dict[str, float]:
    cold, warm, prompt_tokens, cached = [], [], 0, 0
    for trial in range(trials):
        system = long_system_prompt(f"Session {trial}-{random.random():.6f}.")
        for index in range(2):
            body = {
                "model": model,
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": f"Question {index}?"},
                ],
                "max_tokens": 8,
                "temperature": 0,
            }
            result = asyncio.run(stream_once(base_url, body))
            (cold if index == 0 else warm).append(result.ttft_s * 1000)
            if index == 1:
                cached = result.cached_tokens
    prompt_tokens = len(system.split())
    return {
        "cold_ttft_ms": statistics.median(cold),
        "warm_ttft_ms": statistics.median(warm),
        "warm_over_cold": statistics.median(warm) / statistics.median(cold),
        "cached_tokens": cached,
        "prompt_words": prompt_tokens,
    }


def plot(results: dict[str, dict[str, list[LoadResult]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    for server, by_mode in results.items():
        for mode, runs in by_mode.items():
            style = "-" if mode == "unseeded" else "--"
            label = f"{server} ({mode})"
            xs = [run.concurrency for run in runs]
            throughput.plot(xs, [run.aggregate_tps for run in runs], style, marker="o", label=label)
            latency.plot(xs, [run.ttft_p50_ms for run in runs], style, marker="o", label=f"{label} p50")
    throughput.set(title="Aggregate decode throughput", xlabel="concurrent streams", ylabel="tokens/s")
    latency.set(title="Time to first token (p50)", xlabel="concurrent streams", ylabel="ms", yscale="log")
    for axis in (throughput, latency):
        axis.set_xticks(CONCURRENCY)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def run(report: Callable[[str], None]) -> dict[str, Any]:
    model = tiny_model()
    config = f'[models.m]\nbackend = "mlx"\npath = "{model}"\npreload = true\n'
    report(f"## Serving under load: gateway vs mlx_lm.server (tiny model, {TOKENS} tokens per request)")
    results: dict[str, dict[str, list[LoadResult]]] = {}
    prefix: dict[str, dict[str, float]] = {}
    with gateway_server(config) as base_url:
        results["gateway"] = sweep(base_url, "m")
        prefix["gateway"] = cold_warm_ttft(base_url, "m")
    with mlx_lm_server(model) as base_url:  # it serves the model named by its path
        results["mlx_lm.server"] = sweep(base_url, str(model))
        prefix["mlx_lm.server"] = cold_warm_ttft(base_url, str(model))
    for mode in ("unseeded", "seeded"):
        report(f"{mode}:")
        for ours, theirs in zip(results["gateway"][mode], results["mlx_lm.server"][mode], strict=True):
            report(
                f"  c={ours.concurrency:>2}  gateway {ours.aggregate_tps:7.0f} tok/s "
                f"(TTFT p50 {ours.ttft_p50_ms:6.0f} / p99 {ours.ttft_p99_ms:6.0f} ms) | "
                f"mlx_lm.server {theirs.aggregate_tps:7.0f} tok/s "
                f"(TTFT p50 {theirs.ttft_p50_ms:6.0f} / p99 {theirs.ttft_p99_ms:6.0f} ms) | "
                f"ratio {ours.aggregate_tps / theirs.aggregate_tps:.2f}x"
            )
    for server, figures in prefix.items():
        report(
            f"prefix cache, {server}: cold TTFT {figures['cold_ttft_ms']:.0f} ms, warm {figures['warm_ttft_ms']:.0f} ms "
            f"(warm/cold {figures['warm_over_cold']:.2f}; cached_tokens reported {figures['cached_tokens']})"
        )
    plot(results, RESULTS / "serving.png")
    report(f"plot: {RESULTS / 'serving.png'}")
    return {
        "load": {k: {m: [r.__dict__ for r in v] for m, v in d.items()} for k, d in results.items()},
        "prefix": prefix,
    }


if __name__ == "__main__":
    run(print)
