"""Time to first token for a model that is not loaded yet (load included) vs a loaded one.

Same gateway, same run: each round unloads the model through the admin
endpoint, then times one streamed request (cold: the load happens inside it)
and one more (warm). Medians over rounds, for the tiny and the 0.5B-shaped model.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable
from typing import Any

import httpx

from bench.load import stream_once
from bench.mlx_decode import build_models
from bench.servers import gateway_server


def _ttft_ms(base_url: str, model: str, user: str) -> float:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": user}],
        "max_tokens": 4,
        "temperature": 0,
    }
    return asyncio.run(stream_once(base_url, body)).ttft_s * 1000


def run(report: Callable[[str], None], rounds: int = 3) -> dict[str, Any]:
    models = build_models()
    config = "".join(
        f'[models."{name}"]\nbackend = "mlx"\npath = "{path}"\noptions = {{ prefix_cache_bytes = 0 }}\n\n'
        for name, path in models.items()
    )
    report("## Time to first token: model not loaded (load included) vs loaded")
    results: dict[str, Any] = {}
    with gateway_server(config) as base_url:
        for name in models:
            cold, warm = [], []
            for index in range(rounds):
                httpx.post(f"{base_url}/admin/unload/{name}", timeout=120).raise_for_status()
                cold.append(_ttft_ms(base_url, name, f"Hello number {index}"))
                warm.append(_ttft_ms(base_url, name, f"Hello again {index}"))
            results[name] = {
                "unloaded_ttft_ms": statistics.median(cold),
                "loaded_ttft_ms": statistics.median(warm),
            }
            report(
                f"{name:>20}: unloaded {results[name]['unloaded_ttft_ms']:8.0f} ms | "
                f"loaded {results[name]['loaded_ttft_ms']:6.1f} ms (median of {rounds})"
            )
    return results


if __name__ == "__main__":
    run(print)
