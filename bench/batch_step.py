"""One decode step of eight rows on the 0.5B-shaped float32 model: ours vs mlx-lm's.

In one process, same model, same prompts, eight unseeded rows at temperature 0.8:

- `mlx_lm.generate.BatchGenerator.next()` (what mlx_lm.server runs per step);
- our `DecodeBatch.step()` alone (forward pass, sampler, pipelining);
- our engine end to end: real `ChoiceOutput` text pipelines, event delivery
  (`Engine._emit`/`_flush`, `jobs.deliver`) and an asyncio consumer per job;

each as the median ms per step over a few rounds of `STEPS` steps, and the
parts of a step timed alone: the forward pass (evaluated synchronously), each
sampler on `[8, V]` logits, and the Python work per step of the text
pipelines and event delivery (no model). On this 2-core machine Python work
is not free even while it overlaps the forward pass: it takes a core from
the matmuls.
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

import mlx.core as mx

from bench.serving_realistic import realistic_model

ROWS = 8
STEPS = 24
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
TEMPERATURE = 0.8


def prompts(tokenizer: Any) -> list[list[int]]:
    topics = ["the sea", "a city", "mountains", "a robot", "the moon", "a garden", "trains", "winter"]
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Tell me about {topic} ({index})."}], add_generation_prompt=True
        )
        for index, topic in enumerate(topics[:ROWS])
    ]


def per_step_ms(run_steps: Callable[[], float]) -> float:
    """Median over `ROUNDS` of a callable returning ms per step (after one warm-up)."""
    run_steps()
    return statistics.median(run_steps() for _ in range(ROUNDS))


def mlx_lm_steps(model: Any, tokens: list[list[int]]) -> float:
    from mlx_lm.generate import BatchGenerator
    from mlx_lm.sample_utils import make_sampler

    generator = BatchGenerator(model, sampler=make_sampler(temp=TEMPERATURE), max_tokens=STEPS + 10)
    generator.insert(tokens)
    while not generator.next()[1]:  # prompts until the first tokens
        pass
    generator.next()
    started = time.perf_counter()
    for _ in range(STEPS):
        generator.next()
    spent = time.perf_counter() - started
    generator.close()
    return spent * 1000 / STEPS


def our_batch_steps(model: Any, tokens: list[list[int]], vocab: int) -> float:
    from backends.mlx.batch import DecodeBatch, Newcomer, Prefill, new_cache
    from backends.mlx.jobs import Job
    from backends.mlx.sampling import SamplingParams

    params = SamplingParams(temperature=TEMPERATURE)
    jobs = [Job(t, [params], [None], max_tokens=STEPS + 10, eos_ids=frozenset(), loop=LOOP) for t in tokens]  # type: ignore[list-item]
    prefill = Prefill(model, [Newcomer(job, job.rows, new_cache(model)) for job in jobs], 512)
    while (logits := prefill.step()) is None:
        pass
    batch = DecodeBatch(model)
    batch.join(prefill.rows, *prefill.finish(logits, vocab))
    batch.step()
    started = time.perf_counter()
    for _ in range(STEPS):
        batch.step()
    spent = time.perf_counter() - started
    return spent * 1000 / STEPS


LOOP = asyncio.new_event_loop()


def our_engine_steps(engine: Any, tokenizer: Any, tokens: list[list[int]]) -> float:
    """Ms per step with the real text pipelines and asyncio delivery: steps 2..N of
    eight jobs, timed from the consumer's side (events arrive once per step)."""
    from backends.mlx.jobs import Job, JobDone
    from backends.mlx.output import ChoiceOutput
    from backends.mlx.sampling import SamplingParams

    params = SamplingParams(temperature=TEMPERATURE)
    arrivals: list[float] = []

    async def consume(job: Job) -> None:
        while True:
            events = await job.queue.get()
            if job is jobs[0]:
                arrivals.append(time.perf_counter())
            if any(isinstance(event, JobDone | BaseException) for event in events):
                return

    async def go() -> None:
        nonlocal jobs
        jobs = [
            Job(t, [params], [ChoiceOutput(tokenizer)], max_tokens=STEPS + 2, eos_ids=frozenset())
            for t in tokens
        ]
        for job in jobs:
            engine.submit(job)
        await asyncio.gather(*(consume(job) for job in jobs))

    jobs: list[Job] = []
    asyncio.run(go())
    steady = arrivals[2:]  # after the prefill and the first token
    return (steady[-1] - steady[0]) * 1000 / (len(steady) - 1)


def forward_ms(model: Any, tokens: list[list[int]]) -> float:
    from backends.mlx.batch import merge, new_cache

    caches = []
    for t in tokens:
        cache = new_cache(model)
        mx.eval(model(mx.array(t)[None], cache=cache))
        caches.append(cache)
    cache = merge(caches)
    step = mx.array([[5]] * len(tokens))
    times = []
    for _ in range(6):
        started = time.perf_counter()
        mx.eval(model(step, cache=cache))
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:]) * 1000


def sampler_ms(vocab: int) -> dict[str, float]:
    from mlx_lm.sample_utils import make_sampler

    from backends.mlx.sampling import RowSpec, SamplerBatch, SamplingParams

    logits = mx.random.normal((ROWS, vocab))
    mx.eval(logits)
    ours = SamplerBatch(vocab, [RowSpec(SamplingParams(temperature=TEMPERATURE))] * ROWS)
    theirs = make_sampler(temp=TEMPERATURE)

    def timed(sample: Callable[[], Any]) -> float:
        sample()
        times = []
        for _ in range(30):
            started = time.perf_counter()
            mx.eval(sample())
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1000

    return {
        "ours": timed(lambda: ours.sample(logits).tokens),
        "mlx_lm": timed(lambda: theirs(logits - mx.logsumexp(logits, axis=-1, keepdims=True))),
    }


def python_work_ms(tokenizer: Any, vocab: int) -> dict[str, float]:
    """Per step of eight rows, without a model: the text pipelines (`ChoiceOutput.feed`)
    and the engine's emit + flush + asyncio delivery of their chunks."""
    from backends.mlx.engine import Engine
    from backends.mlx.jobs import Job
    from backends.mlx.output import ChoiceOutput, TokenStep
    from backends.mlx.sampling import SamplingParams

    text = tokenizer.encode(" The harbor keeper watched the storm roll over the reef." * 20)
    steps = len(text) - 1

    async def go() -> dict[str, float]:
        engine = Engine()
        params = SamplingParams(temperature=TEMPERATURE)
        jobs = [
            Job([1], [params], [ChoiceOutput(tokenizer)], max_tokens=10**6, eos_ids=frozenset())
            for _ in range(ROWS)
        ]
        rows = [job.rows[0] for job in jobs]
        outputs = [ChoiceOutput(tokenizer) for _ in range(ROWS)]
        started = time.perf_counter()
        for token in text[:steps]:
            for output in outputs:
                output.feed(TokenStep(token))
        feed = (time.perf_counter() - started) * 1000 / steps
        started = time.perf_counter()
        for index in range(steps):
            engine._emit(rows, [text[index]] * ROWS, {})
            engine._flush()
            await asyncio.sleep(0)  # the loop runs `deliver`
            for job in jobs:
                while not job.queue.empty():  # a token may give no text yet: no event
                    job.queue.get_nowait()
        emit = (time.perf_counter() - started) * 1000 / steps
        return {"text pipelines": feed, "emit + deliver (pipelines included)": emit}

    return asyncio.run(go())


def run(report: Callable[[str], None]) -> dict[str, Any]:
    from mlx_lm import load

    from bench.serving_realistic import load_average
    from tests.mlx.test_engine import start_engine

    path = realistic_model()
    report(f"## One decode step of {ROWS} rows, 0.5B-shaped float32 model ({load_average()})")
    model, tokenizer = load(str(path))
    tokens = prompts(tokenizer)
    vocab = int(model(mx.array([[0]]))[0].shape[-1])
    results: dict[str, Any] = {}
    for name, value in python_work_ms(tokenizer, vocab).items():
        report(f"  {name:>36}: {value:7.2f} ms/step")
        results[name] = value
    for name, value in sampler_ms(vocab).items():
        report(f"  {'sampler, ' + name:>36}: {value:7.2f} ms/step")
        results[f"sampler {name}"] = value
    results["forward pass alone (synchronous)"] = forward_ms(model, tokens)
    results["mlx_lm BatchGenerator.next"] = per_step_ms(lambda: mlx_lm_steps(model, tokens))
    results["our DecodeBatch.step"] = per_step_ms(lambda: our_batch_steps(model, tokens, vocab))
    engine = start_engine(path)
    try:
        results["our engine, outputs and delivery"] = per_step_ms(
            lambda: our_engine_steps(engine, engine.tokenizer, tokens)  # type: ignore[attr-defined]
        )
    finally:
        engine.stop()
    for name in list(results)[-4:]:
        report(f"  {name:>36}: {results[name]:7.1f} ms/step")
    report(f"  ({load_average()})")
    return results


if __name__ == "__main__":
    run(print)
