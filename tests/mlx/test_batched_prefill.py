"""Batched prefill: jobs waiting together share forward passes and get exactly the
tokens they get alone; the grouping and time-split rules; a burst through the SDK.

Jobs are made to wait together by holding the engine thread in a `call` while
they are submitted: it then admits all of them in one turn.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

mx = pytest.importorskip("mlx.core")

from backends.mlx.engine import Engine
from backends.mlx.jobs import Job, JobDone
from backends.mlx.sampling import SamplingParams
from backends.mlx.schedule import DecodeDebt, Waiting, joins
from tests.mlx.test_engine import (
    GREEDY,
    Recorder,
    make_job,
    on_thread,
    outcome,
    reference_greedy,
    start_engine,
)
from tests.support.apps import mlx_app

SEEDED = SamplingParams(temperature=1.0, top_p=0.9, seed=5, presence_penalty=0.3)
LOGPROBS = SamplingParams(temperature=0.0, logprobs=True, top_logprobs=3)


def prompt(length: int, salt: int) -> list[int]:
    return [(salt * 31 + 7 * i) % 480 + 10 for i in range(length)]


@pytest.fixture(scope="module")
def engine(tiny_llama_path: Path) -> Iterator[Engine]:
    engine = start_engine(
        tiny_llama_path, max_batch_size=8, prefill_step_size=64, prefix_cache_bytes=64 * 2**20
    )
    yield engine
    engine.stop()


@contextmanager
def held(engine: Engine) -> Iterator[None]:
    """Jobs submitted inside reach the engine in one turn: its thread waits in a call meanwhile."""
    entered, gate = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        gate.wait(30)

    future = engine.call(hold)
    assert entered.wait(30)
    try:
        yield
    finally:
        gate.set()
        future.result(30)


async def run_together(engine: Engine, jobs: list[Job]) -> list[Any]:
    with held(engine):
        for job in jobs:
            engine.submit(job)
    return await asyncio.gather(*(outcome(job) for job in jobs), return_exceptions=True)


def steps_of(outputs: list[Recorder]) -> list[list[tuple[int, float | None]]]:
    return [[(step.token, step.logprob) for step in out.steps] for out in outputs]


def test_a_group_gives_each_job_its_tokens_alone_with_a_prefix_hit_n_seeds_and_logprobs(
    engine: Engine,
) -> None:
    """Prompts of different lengths (each several chunks long at step 64), one of
    them after a prefix-cache hit, a seeded n=2 job and a logprobs job, prefilled as
    one group, give the tokens (and logprobs) each gets when prefilled alone."""
    base = prompt(30, 1)
    first = reference_greedy(engine, base, 1)[0]
    hit_prompt = base + [(first + 1) % 480 + 10, *prompt(33, 9)]  # shares exactly `base`
    specs: list[tuple[list[int], SamplingParams | list[SamplingParams], int]] = [
        (prompt(36, 2), GREEDY, 1),
        (hit_prompt, GREEDY, 1),
        (prompt(31, 3), SEEDED, 2),
        (prompt(40, 4), LOGPROBS, 1),
        (prompt(33, 5), [GREEDY, LOGPROBS], 1),
    ]

    def jobs() -> list[tuple[Job, list[Recorder]]]:
        return [make_job(engine, p, params, n=n, max_tokens=9) for p, params, n in specs]

    async def alone() -> list[list[list[tuple[int, float | None]]]]:
        results = []
        for job, outs in jobs():
            await run_together(engine, [job])
            results.append(steps_of(outs))
        return results

    async def grouped() -> tuple[list[list[list[tuple[int, float | None]]]], list[JobDone]]:
        on_thread(engine, engine.prefix.clear)  # forget what `alone` stored ...
        await run_together(engine, [make_job(engine, base, max_tokens=2)[0]])  # ... but `base`
        made = jobs()
        results = await run_together(engine, [job for job, _ in made])
        return [steps_of(outs) for _, outs in made], [done for _, done in results]

    solo = asyncio.run(alone())
    together, dones = asyncio.run(grouped())
    for got, want in zip(together, solo, strict=True):
        for got_row, want_row in zip(got, want, strict=True):
            assert [token for token, _ in got_row] == [token for token, _ in want_row]
            for (_, got_lp), (_, want_lp) in zip(got_row, want_row):
                assert (got_lp is None) == (want_lp is None)
                if got_lp is not None:
                    assert got_lp == pytest.approx(want_lp, abs=1e-4)
    for (p, params, _), rows in zip(specs, together):
        if params is GREEDY:
            assert [token for token, _ in rows[0]] == reference_greedy(engine, p, 9)
    # one group: every job started and finished its prefill at the same moments
    assert len({done.timings.prefill_started for done in dones}) == 1
    assert len({done.timings.prefill_finished for done in dones}) == 1
    for done in dones:
        t = done.timings
        assert t.submitted <= t.prefill_started < t.prefill_finished <= t.first_token <= t.finished
    assert [done.cached_tokens for done in dones] == [0, len(base), 0, 0, 0]
    assert [done.completion_tokens for done in dones] == [9, 9, 18, 9, 18]


def test_each_prompt_of_a_group_is_kept_in_the_prefix_cache(engine: Engine) -> None:
    prompts = [prompt(20 + i, 40 + i) for i in range(3)]

    async def go() -> list[JobDone]:
        first = await run_together(engine, [make_job(engine, p, max_tokens=1)[0] for p in prompts])
        assert len({done.timings.prefill_started for _, done in first}) == 1
        # the same prompts again, one longer: each hits its own stored prompt
        again = await run_together(engine, [make_job(engine, p + [9], max_tokens=1)[0] for p in prompts])
        return [done for _, done in again]

    assert [done.cached_tokens for done in asyncio.run(go())] == [len(p) for p in prompts]


def test_a_job_cancelled_mid_group_leaves_the_others_exact(engine: Engine) -> None:
    prompts = [prompt(600, 60 + i) for i in range(3)]  # ~28 chunks of 21 columns each

    async def go() -> tuple[list[Any], Job, list[Recorder]]:
        made = [make_job(engine, p, max_tokens=6) for p in prompts]
        with held(engine):
            for job, _ in made:
                engine.submit(job)
        victim = made[1][0]
        while engine.stats()["prefilling"] < 3:
            await asyncio.sleep(0.0005)
        engine.cancel(victim)
        others = await asyncio.gather(outcome(made[0][0]), outcome(made[2][0]))
        return others, victim, made[1][1]

    (first, third), victim, victim_outs = asyncio.run(go())
    assert victim.timings.prefill_started and not victim.timings.prefill_finished  # cut off mid-prefill
    assert victim.queue.empty() and victim_outs[0].steps == []
    assert first[1].timings.prefill_started == third[1].timings.prefill_started
    for index, (_, done) in ((0, first), (2, third)):
        assert done.completion_tokens == 6
    made_tokens = [reference_greedy(engine, prompts[i], 6) for i in (0, 2)]
    assert on_thread(engine, lambda: (len(engine._batch), engine._prefill)) == (0, None)

    # the survivors' tokens
    async def again() -> list[list[int]]:
        pairs = [make_job(engine, prompts[i], max_tokens=6) for i in (0, 2)]
        await run_together(engine, [job for job, _ in pairs])
        return [outs[0].tokens for _, outs in pairs]

    assert asyncio.run(again()) == made_tokens


class Poisoned:
    """The engine's model, failing any forward pass that carries `POISON`."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, inputs: Any, cache: Any = None) -> Any:
        if POISON in inputs.reshape(-1).tolist():
            raise RuntimeError("poisoned prompt")
        return self.model(inputs, cache=cache)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


POISON = 499


def test_a_failing_group_fails_its_jobs_only(engine: Engine) -> None:
    """One forward pass serves the whole group, so a failure there fails the group;
    rows already decoding and later jobs are untouched."""
    model = engine.model
    on_thread(engine, lambda: setattr(engine, "model", Poisoned(model)))

    async def go() -> tuple[list[Any], list[int], list[int]]:
        running, (running_out,) = make_job(engine, prompt(12, 70), max_tokens=40)
        engine.submit(running)
        while not running_out.steps:
            await asyncio.sleep(0.001)
        group = [make_job(engine, p, max_tokens=4)[0] for p in (prompt(10, 71) + [POISON, 5], prompt(12, 72))]
        failed = await run_together(engine, group)
        await outcome(running)
        later, (later_out,) = make_job(engine, prompt(12, 73), max_tokens=5)
        await run_together(engine, [later])
        return failed, running_out.tokens, later_out.tokens

    try:
        failed, running_tokens, later_tokens = asyncio.run(go())
    finally:
        on_thread(engine, lambda: setattr(engine, "model", model))
    assert [str(result) for result in failed] == ["poisoned prompt"] * 2
    assert running_tokens == reference_greedy(engine, prompt(12, 70), 40)
    assert later_tokens == reference_greedy(engine, prompt(12, 73), 5)


def test_the_head_job_starts_a_group_and_a_sparse_one_waits_for_the_next(engine: Engine) -> None:
    prompts = [prompt(30, 80), prompt(200, 81), prompt(32, 82)]

    async def go() -> list[JobDone]:
        made = [make_job(engine, p, max_tokens=3) for p in prompts]
        results = await run_together(engine, [job for job, _ in made])
        for (_, outs), p in zip(made, prompts):
            assert outs[0].tokens == reference_greedy(engine, p, 3)
        return [done for _, done in results]

    short, long, other_short = asyncio.run(go())
    assert short.timings.prefill_started == other_short.timings.prefill_started
    assert long.timings.prefill_started >= short.timings.prefill_finished


# --- the rules ----------------------------------------------------------------------------


def waiting(body: int) -> Waiting:
    loop = asyncio.new_event_loop()  # a Job needs one; nothing runs on it
    job = Job(list(range(body + 1)), [GREEDY], [Recorder()], max_tokens=1, eos_ids=frozenset(), loop=loop)
    loop.close()
    return Waiting(job, job.rows)


def test_dense_jobs_join_a_group_and_sparse_ones_do_not() -> None:
    group = [waiting(170), waiting(150)]
    assert joins(group, waiting(160), 512)
    assert not joins(group, waiting(1500), 512)  # most of the group's work would be padding
    assert joins([waiting(10)], waiting(100), 512)  # 90 columns of padding: under a quarter chunk
    assert not joins([waiting(10)] * 64, waiting(10), 512)  # 8 columns per job at least


def simulate(
    debt: DecodeDebt, running: int, waiting_rows: int, chunk: float, step: float, chunks: int
) -> int:
    """Decode steps the rule allows while `chunks` prefill chunks run."""
    steps = 0
    done = 0
    while done < chunks:
        if debt.prefill_may_run:
            debt.prefilled(chunk, running, waiting_rows)
            done += 1
        if not debt.prefill_may_run:
            debt.decoded(step)
            steps += 1
    return steps


def test_a_burst_beside_one_stream_runs_many_chunks_per_step_and_keeps_the_floor() -> None:
    debt = DecodeDebt(0.1)
    debt.decoded(0.2)
    debt.clear()
    steps = simulate(debt, running=1, waiting_rows=15, chunk=1.0, step=0.2, chunks=20)
    share = steps * 0.2 / (steps * 0.2 + 20 * 1.0)
    assert steps < 20  # fewer decode steps than chunks ...
    assert share >= 0.1 - 0.01  # ... but the stream keeps its floor


def test_one_newcomer_beside_many_streams_gets_a_chunk_per_step() -> None:
    debt = DecodeDebt(0.1)
    debt.decoded(0.5)
    debt.clear()  # as the engine does while nobody waits
    assert simulate(debt, running=15, waiting_rows=1, chunk=0.4, step=0.5, chunks=10) == 10


def test_nobody_waiting_clears_the_account() -> None:
    debt = DecodeDebt(0.25)
    debt.prefilled(1.0, 4, 1)
    assert not debt.prefill_may_run
    debt.clear()
    assert debt.prefill_may_run
    with pytest.raises(ValueError):
        DecodeDebt(1.0)


# --- through the SDK ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app(tiny_llama_path: Path) -> Any:
    return mlx_app({"tiny": {"backend": "mlx", "path": str(tiny_llama_path)}})


def test_a_concurrent_burst_through_the_openai_sdk_is_prefilled_together(app: Any, server: str) -> None:
    """Twelve streamed requests that reach the engine at once are prefilled as one
    group and answer exactly what each answers alone."""
    import openai

    questions = [
        f"Question number {index}: tell me about {'sea ' * (index % 4)}waves." for index in range(12)
    ]

    async def ask(client: openai.AsyncOpenAI, question: str) -> tuple[str, int]:
        stream = await client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": question}],
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, tokens = "", 0
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        return text, tokens

    def sdk() -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)

    async def one_by_one() -> list[tuple[str, int]]:
        async with sdk() as client:
            return [await ask(client, question) for question in questions]

    alone = asyncio.run(one_by_one())  # loads the model, too
    engine = app.state.registry.entries["tiny"].backend._engine

    async def burst() -> list[tuple[str, int]]:
        async with sdk() as client:
            with held(engine):
                asking = [asyncio.ensure_future(ask(client, question)) for question in questions]
                for _ in range(3000):
                    if engine._inbox.qsize() >= len(questions):
                        break
                    await asyncio.sleep(0.01)
            return list(await asyncio.gather(*asking))

    assert asyncio.run(burst()) == alone
    assert all(tokens == 12 for _, tokens in alone)
    assert engine.stats()["peak_prefill_jobs"] == len(questions)
