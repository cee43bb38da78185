"""Serving the Qwen2-0.5B-shaped float32 model: gateway vs `mlx_lm.server`, same run.

- TTFT of a lone request with a ~170-token prompt, and TTFT p50/p99 of a burst
  of 16 such requests sent at once (each prompt distinct from its first token,
  so no prefix-cache hits on either side), as ratios to the lone TTFT;
- aggregate tokens/s of 8 concurrent requests, unseeded and seeded, with 32-
  and 96-token answers.

Both servers run side by side (idle, neither takes CPU) and rounds alternate
between them, so load from elsewhere on the machine hits both alike; each
figure is the median of its rounds. The load average is printed with each
figure. `BENCH_ROUNDS` (default 3) sets the rounds; seeded requests run one
round (mlx_lm.server serves them one at a time: minutes per round);
`BENCH_PARTS` picks parts (`burst,unseeded,seeded`).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.load import LoadResult, percentile, run_load, stream_once
from bench.mlx_decode import CACHE, gateway_config
from bench.servers import gateway_server, mlx_lm_server
from bench.serving import bodies

BURST = 16
STREAMS = 8
ANSWERS = (32, 96)
PROMPT_TOKENS = 170
BURST_ANSWER = 32
WORDS = [
    "harbor",
    "signal",
    "lantern",
    "tide",
    "compass",
    "anchor",
    "keeper",
    "storm",
    "chart",
    "rope",
    "gull",
    "reef",
    "mast",
    "sail",
]


def realistic_model() -> Path:
    from tests.support.mlx_models import build_realistic_model

    return build_realistic_model(CACHE / "realistic")


def load_average() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def prompt_text(model_dir: Path, nonce: str, tokens: int = PROMPT_TOKENS) -> str:
    """A user message of about `tokens` tokens (chat template included), starting with `nonce`."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    rng = random.Random(nonce)
    text = nonce
    while len(tokenizer.encode(text).ids) < tokens - 12:  # ~12 tokens of chat markup
        text += " " + rng.choice(WORDS)
    return text


def ttft_body(model: str, text: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0.8,
    }


async def _burst(base_url: str, bodies_: list[dict[str, Any]]) -> list[float]:
    results = await asyncio.gather(*(stream_once(base_url, body) for body in bodies_))
    return [result.ttft_s * 1000 for result in results]


def burst_round(base_url: str, model: str, model_dir: Path, tag: str) -> dict[str, float]:
    """One lone request, then a burst of `BURST`: TTFTs in ms."""
    lone = asyncio.run(_burst(base_url, [ttft_body(model, prompt_text(model_dir, f"{tag}-lone"), 8)]))[0]
    texts = [prompt_text(model_dir, f"{tag}-{index}") for index in range(BURST)]
    ttfts = asyncio.run(_burst(base_url, [ttft_body(model, text, BURST_ANSWER) for text in texts]))
    return {"lone_ms": lone, "p50_ms": statistics.median(ttfts), "p99_ms": percentile(ttfts, 0.99)}


def throughput_round(base_url: str, model: str, seeded: bool, tokens: int) -> LoadResult:
    return run_load(base_url, bodies(model, STREAMS, seeded, tokens), STREAMS)


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def run(report: Callable[[str], None]) -> dict[str, Any]:
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    parts = set(os.environ.get("BENCH_PARTS", "burst,unseeded,seeded").split(","))
    model_dir = realistic_model()
    report(f"## Serving the 0.5B-shaped float32 model: gateway vs mlx_lm.server ({load_average()})")
    results: dict[str, Any] = {}
    with ExitStack() as stack:
        servers = {
            "gateway": (stack.enter_context(gateway_server(gateway_config(model_dir))), "m"),
            "mlx_lm.server": (stack.enter_context(mlx_lm_server(model_dir)), str(model_dir)),
        }
        for base_url, model in servers.values():  # load and warm both
            asyncio.run(stream_once(base_url, ttft_body(model, "warm up", 4)))
            run_load(base_url, bodies(model, 2, False, 4), 2)
        if "burst" in parts:
            by_server: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
            for index in range(rounds):
                for name, (base_url, model) in servers.items():
                    by_server[name].append(burst_round(base_url, model, model_dir, f"r{index}-{name}"))
            results["burst"] = {}
            for name, figures in by_server.items():
                m = median_of(figures)
                results["burst"][name] = m
                report(
                    f"burst of {BURST} x ~{PROMPT_TOKENS}-token prompts, {name:>13}: lone TTFT {m['lone_ms']:6.0f} ms"
                    f" | burst p50 {m['p50_ms']:7.0f} ms ({m['p50_ms'] / m['lone_ms']:5.1f}x lone)"
                    f" p99 {m['p99_ms']:7.0f} ms ({m['p99_ms'] / m['lone_ms']:5.1f}x lone)"
                    f" (median of {rounds}; {load_average()})"
                )
            ours, theirs = (results["burst"][name] for name in servers)
            report(f"  burst p99, gateway / mlx_lm.server: {ours['p99_ms'] / theirs['p99_ms']:.2f}")
        for mode in ("unseeded", "seeded"):
            if mode not in parts:
                continue
            count = rounds if mode == "unseeded" else 1
            results[mode] = {}
            for tokens in ANSWERS:
                runs: dict[str, list[float]] = {name: [] for name in servers}
                for _ in range(count):
                    for name, (base_url, model) in servers.items():
                        result = throughput_round(base_url, model, mode == "seeded", tokens)
                        runs[name].append(result.aggregate_tps)
                ours, theirs = (statistics.median(runs[name]) for name in servers)
                results[mode][tokens] = {"gateway": ours, "mlx_lm.server": theirs, "ratio": ours / theirs}
                report(
                    f"{STREAMS} {mode} streams x {tokens} tokens: gateway {ours:6.1f} tok/s"
                    f" | mlx_lm.server {theirs:6.1f} tok/s | ratio {ours / theirs:.2f}x"
                    f" (median of {count}; rounds {[round(v, 1) for v in runs['gateway']]}"
                    f" vs {[round(v, 1) for v in runs['mlx_lm.server']]}; {load_average()})"
                )
    return results


if __name__ == "__main__":
    run(print)
