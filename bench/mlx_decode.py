"""Single-stream decode speed: through the gateway (streamed) vs raw `mlx_lm.stream_generate`.

Same model, same prompt, same run, greedy. The raw side runs in this process;
the gateway runs as `gateway serve` in a subprocess. Both use the fast-BLAS
preload. Decode tokens/s excludes the first token (prefill) on both sides.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backends.mlx.blas import use_fast_blas

use_fast_blas()

from bench.load import stream_once
from bench.servers import gateway_server

PROMPT = "Write a long story about a lighthouse keeper and the sea."
CACHE = Path(tempfile.gettempdir()) / "gateway-bench-models"


def build_models() -> dict[str, Path]:
    from tests.support.mlx_models import build_realistic_model, build_tiny_llama

    tiny = CACHE / "tiny-llama"
    if not (tiny / "config.json").exists():
        build_tiny_llama(tiny)
    return {"tiny": tiny, "realistic-0.5B-f32": build_realistic_model(CACHE / "realistic")}


def raw_decode_tps(model_dir: Path, tokens: int, rounds: int) -> float:
    import mlx_lm

    model, tokenizer = mlx_lm.load(str(model_dir))
    return raw_model_tps(model, tokenizer, tokens, rounds)


def raw_model_tps(model: Any, tokenizer: Any, tokens: int, rounds: int) -> float:
    """Median decode tok/s of `mlx_lm.stream_generate` on a loaded model (EOS banned)."""
    import mlx.core as mx

    speeds = [raw_round(model, tokenizer, tokens) for _ in range(rounds + 1)]  # the first warms up
    del model
    mx.clear_cache()
    return statistics.median(speeds[1:])


def raw_round(model: Any, tokenizer: Any, tokens: int) -> float:
    """One greedy `mlx_lm.stream_generate` of exactly `tokens` tokens: decode tok/s after the first."""
    import mlx_lm
    from mlx_lm.sample_utils import make_logits_processors

    prompt = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True)
    ban_eos = make_logits_processors(logit_bias={token: -1e9 for token in tokenizer.eos_token_ids})
    first = last = 0.0
    count = 0
    for _ in mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=tokens, logits_processors=ban_eos):
        count += 1
        last = time.perf_counter()
        if count == 1:
            first = last
    assert count == tokens, count
    return (count - 1) / (last - first)


def gateway_config(model_dir: Path, options: str = "") -> str:
    """One preloaded mlx model `m`; `options` is TOML for its options table, e.g. `dtype = "float32"`."""
    config = f'[models.m]\nbackend = "mlx"\npath = "{model_dir}"\npreload = true\n'
    return config + (f"\n[models.m.options]\n{options}\n" if options else "")


def gateway_round(base_url: str, tokens: int) -> float:
    """One greedy streamed request for `tokens` tokens to model `m`: decode tok/s after the first."""
    import asyncio

    body: dict[str, Any] = {
        "model": "m",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": tokens,
        "temperature": 0,
    }
    result = asyncio.run(stream_once(base_url, body))
    if result.completion_tokens < tokens:
        raise RuntimeError(f"gateway stopped early: {result.completion_tokens} tokens")
    return (result.completion_tokens - 1) / (result.total_s - result.ttft_s)


def gateway_decode_tps(model_dir: Path, tokens: int, rounds: int, options: str = "") -> float:
    """Median decode tok/s streamed through `gateway serve`."""
    with gateway_server(gateway_config(model_dir, options)) as base_url:
        speeds = [gateway_round(base_url, tokens) for _ in range(rounds + 1)]  # the first warms up
    return statistics.median(speeds[1:])


def run(report: Callable[[str], None]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    report("## MLX single-stream decode: gateway (streamed) vs raw mlx_lm.stream_generate")
    for name, model_dir in build_models().items():
        tokens, rounds = (300, 3) if name == "tiny" else (64, 3)
        raw = raw_decode_tps(model_dir, tokens, rounds)
        through_gateway = gateway_decode_tps(model_dir, tokens, rounds)
        results[name] = {"raw_tps": raw, "gateway_tps": through_gateway, "ratio": through_gateway / raw}
        report(
            f"{name:>20}: raw {raw:8.1f} tok/s | gateway {through_gateway:8.1f} tok/s | "
            f"ratio {through_gateway / raw:.3f} (median of {rounds}, {tokens} tokens)"
        )
    return results


if __name__ == "__main__":
    run(print)
