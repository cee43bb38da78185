"""Grammar-constrained decoding: its cost in the batch, against free decoding, same run.

- aggregate tokens/s of 8 concurrent `json_schema` streams vs 8 unconstrained ones
  (target >= 0.8x), and single-stream decode tokens/s, constrained vs not (>= 0.9x);
- grammar compile time p50/p99 for a 20-property schema, cold (a schema never seen)
  and cached (the same schema again).

The constrained side runs exactly `TOKENS` tokens (its schema, an array of at
least 1,000 strings, cannot end sooner); the free side samples the same way and
rarely meets end-of-sequence on these random models (rates count the tokens
each stream really made, so an early end is no error). Rounds interleave the two sides; medians are reported. Two
models: the tiny llama (vocabulary 512, where the mask's share of a step is
largest) and a small llama with a 32k vocabulary (masks of a real tokenizer's size).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.load import percentile, stream_once
from bench.mlx_decode import CACHE
from bench.servers import gateway_server

TOKENS = 128
STREAMS = 8
ROUNDS = 5
LONG_ARRAY = {
    "type": "object",
    "properties": {
        "items": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1000}
    },
    "required": ["items"],
    "additionalProperties": False,
}


def build_models() -> dict[str, Path]:
    from tests.support.mlx_models import ModelShape, build_realistic_model, build_tiny_llama

    tiny = CACHE / "tiny-llama"
    if not (tiny / "config.json").exists():
        build_tiny_llama(tiny)
    shape = ModelShape("llama", 256, 4, 768, 4, 2, 32000, tie_word_embeddings=True)
    return {
        "tiny (vocab 512)": tiny,
        "small (vocab 32k)": build_realistic_model(CACHE / "small-32k", shape=shape),
    }


def twenty_properties(tag: str = "") -> dict[str, Any]:
    kinds: list[dict[str, Any]] = [
        {"type": "string", "maxLength": 40},
        {"type": "integer", "minimum": 0},
        {"type": "number"},
        {"type": "boolean"},
        {"enum": ["red", "green", "blue"]},
        {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        {"type": "string", "format": "date"},
        {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
    ]
    properties = {f"field_{i}{tag}": kinds[i % len(kinds)] for i in range(20)}
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def body(index: int, constrained: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "model": "m",
        "messages": [{"role": "user", "content": f"List some words ({index})."}],
        "max_tokens": TOKENS,
        "temperature": 0.8,
        "seed": index,
        "enable_thinking": False,
    }
    if constrained:
        schema = {"type": "json_schema", "json_schema": {"name": f"words{index}", "schema": LONG_ARRAY}}
        fields["response_format"] = schema
    return fields


async def _concurrent(base_url: str, bodies: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    results = await asyncio.gather(*(stream_once(base_url, b) for b in bodies))
    elapsed = time.perf_counter() - started
    return sum(r.completion_tokens for r in results) / elapsed


async def _single(base_url: str, request: dict[str, Any]) -> float:
    result = await stream_once(base_url, request)
    return (result.completion_tokens - 1) / (result.total_s - result.ttft_s)


def decode_ratios(model_dir: Path) -> dict[str, float]:
    config = f'[models.m]\nbackend = "mlx"\npath = "{model_dir}"\npreload = true\n'
    batch: dict[bool, list[float]] = {False: [], True: []}
    single: dict[bool, list[float]] = {False: [], True: []}
    with gateway_server(config) as base_url:
        asyncio.run(_concurrent(base_url, [body(i, c) for i in range(2) for c in (False, True)]))  # warm
        for _ in range(ROUNDS):
            for constrained in (False, True):
                bodies = [body(i, constrained) for i in range(STREAMS)]
                batch[constrained].append(asyncio.run(_concurrent(base_url, bodies)))
                single[constrained].append(asyncio.run(_single(base_url, body(99, constrained))))
    free, bound = statistics.median(batch[False]), statistics.median(batch[True])
    free1, bound1 = statistics.median(single[False]), statistics.median(single[True])
    return {
        "batch_free_tps": free,
        "batch_constrained_tps": bound,
        "batch_ratio": bound / free,
        "single_free_tps": free1,
        "single_constrained_tps": bound1,
        "single_ratio": bound1 / free1,
    }


def compile_times(model_dir: Path, cold_rounds: int = 30, cached_rounds: int = 200) -> dict[str, float]:
    from mlx_lm.tokenizer_utils import load

    from backends.mlx.grammar import GrammarCompiler, ll_tokenizer, response_format_grammar

    tokenizer = load(model_dir)
    compiler = GrammarCompiler(ll_tokenizer(tokenizer, len(tokenizer.vocab)))

    def grammar(tag: str) -> Any:
        return response_format_grammar(
            {"type": "json_schema", "json_schema": {"name": "t", "schema": twenty_properties(tag)}}
        )

    cold, cached = [], []
    for round_ in range(cold_rounds):
        started = time.perf_counter()
        compiler.compile(grammar(f"_{round_}"))  # a schema it has not seen
        cold.append(time.perf_counter() - started)
    same = grammar("_same")
    compiler.compile(same)
    for _ in range(cached_rounds):
        started = time.perf_counter()
        compiler.compile(same)
        cached.append(time.perf_counter() - started)
    ms = 1000.0
    return {
        "cold_p50_ms": percentile(cold, 0.5) * ms,
        "cold_p99_ms": percentile(cold, 0.99) * ms,
        "cached_p50_ms": percentile(cached, 0.5) * ms,
        "cached_p99_ms": percentile(cached, 0.99) * ms,
    }


def run(report: Callable[[str], None]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    report(
        f"## Grammar-constrained decoding vs free, same model, same run ({TOKENS} tokens, median of {ROUNDS})"
    )
    for name, model_dir in build_models().items():
        figures = {**decode_ratios(model_dir), **compile_times(model_dir)}
        results[name] = figures
        report(
            f"{name:>18}: {STREAMS} streams {figures['batch_constrained_tps']:7.1f} vs "
            f"{figures['batch_free_tps']:7.1f} tok/s = {figures['batch_ratio']:.2f}x (target 0.8) | "
            f"single {figures['single_constrained_tps']:6.1f} vs {figures['single_free_tps']:6.1f} tok/s = "
            f"{figures['single_ratio']:.2f}x (target 0.9)"
        )
        report(
            f"{'':>18}  compile, 20 properties: cold p50 {figures['cold_p50_ms']:.1f} ms, "
            f"p99 {figures['cold_p99_ms']:.1f} ms | cached p50 {figures['cached_p50_ms']:.3f} ms, "
            f"p99 {figures['cached_p99_ms']:.3f} ms"
        )
    return results


if __name__ == "__main__":
    run(print)
