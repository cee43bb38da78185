"""The engine thread: exact tokens, batching that changes nothing, cancellation, limits.

Jobs are given a recording output (tokens in, nothing parsed) so these tests see
exactly which tokens each row produced; the text pipeline has its own tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

mx = pytest.importorskip("mlx.core")

from backends.mlx.engine import Engine
from backends.mlx.jobs import Job, JobDone
from backends.mlx.sampling import SamplingParams
from gateway.backend import GenerationChunk
from tests.support.mlx_models import script_info

GREEDY = SamplingParams(temperature=0.0)


class Recorder:
    """Stands in for ChoiceOutput: keeps every step, stops on a chosen token."""

    def __init__(self, choice: int = 0, stop_token: int | None = None) -> None:
        self.choice = choice
        self.steps: list[Any] = []
        self.stop_token = stop_token
        self.reason: str | None = None

    @property
    def stopped(self) -> bool:
        return self.stop_token is not None and bool(self.steps) and self.steps[-1].token == self.stop_token

    @property
    def tokens(self) -> list[int]:
        return [step.token for step in self.steps]

    def feed(self, step: Any) -> GenerationChunk | None:
        self.steps.append(step)
        return GenerationChunk(choice=self.choice, text=".")

    def finish(self, reason: str) -> GenerationChunk:
        self.reason = reason
        return GenerationChunk(choice=self.choice, finish_reason=reason)  # type: ignore[arg-type]


def start_engine(path: Path, **kwargs: Any) -> Engine:
    from mlx_lm import load

    engine = Engine(**kwargs)
    engine.start()

    def load_model() -> Any:
        model, tokenizer = load(str(path))
        engine.attach(model)
        return tokenizer

    engine.tokenizer = engine.call(load_model).result()  # type: ignore[attr-defined]
    return engine


@pytest.fixture(scope="module")
def tiny_engine(tiny_llama_path: Path) -> Iterator[Engine]:
    engine = start_engine(tiny_llama_path, max_batch_size=8, prefill_step_size=16)
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def plain_engine(scripted_model: Any) -> Iterator[Engine]:
    engine = start_engine(scripted_model("plain"))
    yield engine
    engine.stop()


def make_job(
    engine: Engine,
    prompt: list[int],
    params: SamplingParams | list[SamplingParams] = GREEDY,
    *,
    n: int = 1,
    max_tokens: int = 8,
    bench: bool = False,
    eos: frozenset[int] = frozenset(),
    stop_token: int | None = None,
) -> tuple[Job, list[Recorder]]:
    params = params if isinstance(params, list) else [params] * n
    outputs = [Recorder(choice, stop_token) for choice in range(len(params))]
    return Job(prompt, params, outputs, max_tokens=max_tokens, eos_ids=eos, bench=bench), outputs


async def run_job(engine: Engine, job: Job) -> tuple[list[GenerationChunk], JobDone]:
    engine.submit(job)
    return await outcome(job)


async def outcome(job: Job) -> tuple[list[GenerationChunk], JobDone]:
    """A submitted job's chunks and its end (raises the error it failed with)."""
    chunks: list[GenerationChunk] = []
    while True:
        for event in await job.queue.get():
            if isinstance(event, JobDone):
                return chunks, event
            if isinstance(event, BaseException):
                raise event
            chunks.append(event)


def on_thread(engine: Engine, function: Any) -> Any:
    return engine.call(function).result(timeout=60)


def reference_greedy(engine: Engine, prompt: list[int], count: int) -> list[int]:
    """mlx-lm's own single-sequence greedy decoding of the same model."""
    from mlx_lm.generate import generate_step

    def run() -> list[int]:
        steps = generate_step(mx.array(prompt), engine.model, max_tokens=count)
        return [int(token) for token, _ in steps]

    return on_thread(engine, run)


PROMPT = list(range(40, 61))


def test_greedy_tokens_match_mlx_lm(tiny_engine: Engine) -> None:
    async def go() -> list[int]:
        job, (out,) = make_job(tiny_engine, PROMPT, max_tokens=12)
        chunks, done = await run_job(tiny_engine, job)
        assert out.reason == "length" and done.completion_tokens == 12 and done.prompt_tokens == len(PROMPT)
        assert chunks[-1].finish_reason == "length"
        return out.tokens

    assert asyncio.run(go()) == reference_greedy(tiny_engine, PROMPT, 12)


def test_long_prompt_is_prefilled_in_chunks_with_the_same_result(tiny_engine: Engine) -> None:
    prompt = [(7 * i) % 500 + 3 for i in range(75)]  # prefill_step_size is 16

    async def go() -> list[int]:
        job, (out,) = make_job(tiny_engine, prompt, max_tokens=6)
        await run_job(tiny_engine, job)
        return out.tokens

    assert asyncio.run(go()) == reference_greedy(tiny_engine, prompt, 6)


SEEDED = SamplingParams(temperature=1.0, top_p=0.9, seed=77, presence_penalty=0.4)


def test_seeded_request_is_the_same_alone_and_beside_three_others(tiny_engine: Engine) -> None:
    async def alone() -> list[int]:
        job, (out,) = make_job(tiny_engine, PROMPT, SEEDED, max_tokens=16)
        await run_job(tiny_engine, job)
        return out.tokens

    async def together() -> tuple[list[int], list[list[int]]]:
        others = [
            make_job(tiny_engine, list(range(5, 40)), SamplingParams(temperature=0.8), max_tokens=20),
            make_job(tiny_engine, [9, 8, 7], GREEDY, max_tokens=11),
            make_job(
                tiny_engine,
                PROMPT[:5],
                SamplingParams(top_k=5, repetition_penalty=1.2, seed=1),
                n=2,
                max_tokens=14,
            ),
        ]
        job, (out,) = make_job(tiny_engine, PROMPT, SEEDED, max_tokens=16)
        await asyncio.gather(
            *(run_job(tiny_engine, j) for j, _ in others[:2]),
            run_job(tiny_engine, job),
            run_job(tiny_engine, others[2][0]),
        )
        return out.tokens, [o.tokens for _, outs in others for o in outs]

    first = asyncio.run(alone())
    assert len(first) == 16
    batched, other_tokens = asyncio.run(together())
    assert batched == first
    assert [len(t) for t in other_tokens] == [20, 11, 14, 14]
    assert asyncio.run(alone()) == first


def test_greedy_rows_are_unchanged_by_joining_a_running_batch(tiny_engine: Engine) -> None:
    async def go() -> tuple[list[int], list[int]]:
        long_job, (long_out,) = make_job(tiny_engine, PROMPT, max_tokens=30)
        late_job, (late_out,) = make_job(tiny_engine, list(range(100, 133)), max_tokens=10)
        running = asyncio.ensure_future(run_job(tiny_engine, long_job))
        while not long_out.steps:
            await asyncio.sleep(0.001)
        await run_job(tiny_engine, late_job)
        await running
        return long_out.tokens, late_out.tokens

    long_tokens, late_tokens = asyncio.run(go())
    assert long_tokens == reference_greedy(tiny_engine, PROMPT, 30)
    assert late_tokens == reference_greedy(tiny_engine, list(range(100, 133)), 10)


def test_n_choices_share_one_prefill_and_differ_reproducibly(tiny_engine: Engine) -> None:
    params = SamplingParams(temperature=1.0, seed=2024)

    async def go() -> list[list[int]]:
        job, outs = make_job(tiny_engine, PROMPT, params, n=3, max_tokens=10)
        chunks, done = await run_job(tiny_engine, job)
        assert done.completion_tokens == 30
        assert sorted(c.choice for c in chunks if c.finish_reason) == [0, 1, 2]
        return [o.tokens for o in outs]

    first = asyncio.run(go())
    assert len({tuple(t) for t in first}) == 3
    assert asyncio.run(go()) == first


def test_rows_without_batching_give_the_same_tokens(tiny_engine: Engine) -> None:
    """Models whose cache cannot merge run one row at a time, each prefilled alone."""

    async def go() -> list[list[int]]:
        job, outs = make_job(tiny_engine, PROMPT, SEEDED, n=2, max_tokens=8)
        await run_job(tiny_engine, job)
        return [o.tokens for o in outs]

    batched = asyncio.run(go())
    on_thread(tiny_engine, lambda: setattr(tiny_engine, "batched", False))
    try:
        assert asyncio.run(go()) == batched
    finally:
        on_thread(tiny_engine, lambda: setattr(tiny_engine, "batched", True))


def test_logprobs_come_with_each_token_for_rows_that_ask(tiny_engine: Engine) -> None:
    params = [
        SamplingParams(temperature=0.0, logprobs=True, top_logprobs=3),
        SamplingParams(temperature=0.0),
    ]

    async def go() -> list[Recorder]:
        job, outs = make_job(tiny_engine, PROMPT, params, max_tokens=5)
        await run_job(tiny_engine, job)
        return outs

    asking, silent = asyncio.run(go())
    for step in asking.steps:
        assert step.logprob is not None and step.logprob <= 0
        assert len(step.top) == 3 and step.top[0][0] == step.token  # greedy: the best token
        assert [lp for _, lp in step.top] == sorted((lp for _, lp in step.top), reverse=True)
    assert all(step.logprob is None and step.top is None for step in silent.steps)


def test_cancelled_job_leaves_the_batch_at_once(tiny_engine: Engine) -> None:
    async def go() -> None:
        job, (out,) = make_job(tiny_engine, PROMPT, SamplingParams(temperature=1.0), max_tokens=100_000)
        other, (other_out,) = make_job(tiny_engine, PROMPT, max_tokens=40)
        tiny_engine.submit(job)
        running = asyncio.ensure_future(run_job(tiny_engine, other))
        while len(out.steps) < 3:
            await asyncio.sleep(0.001)
        tiny_engine.cancel(job)
        rows = on_thread(tiny_engine, lambda: [r.job for r in tiny_engine._batch.rows])
        assert job not in rows
        seen = len(out.steps)
        await running
        assert len(out.steps) <= seen + 1  # at most the step that was already in flight
        assert len(other_out.tokens) == 40

    asyncio.run(go())
    assert on_thread(tiny_engine, lambda: len(tiny_engine._batch)) == 0


def test_eos_ends_a_row_with_stop_and_counts(plain_engine: Engine, scripted_model: Any) -> None:
    info = script_info(scripted_model("plain"))
    eos = frozenset(plain_engine.tokenizer.eos_token_ids)  # type: ignore[attr-defined]

    async def go() -> tuple[list[int], JobDone, str | None]:
        job, (out,) = make_job(plain_engine, [5, 6, 7], max_tokens=50, eos=eos)
        _, done = await run_job(plain_engine, job)
        return out.tokens, done, out.reason

    tokens, done, reason = asyncio.run(go())
    assert tokens == info["tokens"][:-1]  # EOS is not fed to the output ...
    assert done.completion_tokens == len(info["tokens"])  # ... but it was generated
    assert reason == "stop"


def test_bench_runs_exactly_max_tokens_with_eos_banned(plain_engine: Engine) -> None:
    eos = frozenset(plain_engine.tokenizer.eos_token_ids)  # type: ignore[attr-defined]
    bench = SamplingParams(temperature=0.0, banned_tokens=eos)

    async def go() -> tuple[list[int], JobDone]:
        job, (out,) = make_job(plain_engine, [5, 6, 7], bench, max_tokens=25, bench=True, eos=eos)
        _, done = await run_job(plain_engine, job)
        return out.tokens, done

    tokens, done = asyncio.run(go())
    assert len(tokens) == 25 and not eos & set(tokens)
    assert done.completion_tokens == 25 and done.peak_memory > 0
    t = done.timings
    assert t.submitted <= t.prefill_started <= t.prefill_finished <= t.first_token <= t.finished


def test_output_stop_ends_the_row(plain_engine: Engine, scripted_model: Any) -> None:
    info = script_info(scripted_model("plain"))

    async def go() -> Recorder:
        job, (out,) = make_job(plain_engine, [5, 6, 7], max_tokens=50, stop_token=info["tokens"][1])
        await run_job(plain_engine, job)
        return out

    out = asyncio.run(go())
    assert out.tokens == info["tokens"][:2] and out.reason == "stop"


class Exploding(Recorder):
    def feed(self, step: Any) -> GenerationChunk | None:
        if len(self.steps) == 2:
            raise RuntimeError("parser bug")
        return super().feed(step)


def test_a_failing_output_ends_only_its_own_request(tiny_engine: Engine) -> None:
    async def go() -> None:
        bad = Job(PROMPT, [GREEDY], [Exploding()], max_tokens=20, eos_ids=frozenset())
        good, (out,) = make_job(tiny_engine, PROMPT, max_tokens=20)
        results = await asyncio.gather(
            run_job(tiny_engine, bad), run_job(tiny_engine, good), return_exceptions=True
        )
        assert isinstance(results[0], RuntimeError)
        assert results[1][1].completion_tokens == 20 and len(out.tokens) == 20

    asyncio.run(go())
    assert on_thread(tiny_engine, lambda: len(tiny_engine._batch)) == 0
    assert tiny_engine.stats()["running_rows"] == 0


def test_embeddings_run_between_decode_steps_of_a_running_stream(tiny_engine: Engine) -> None:
    """An embedding job of many chunks interleaves with decoding: the stream keeps
    getting tokens while it runs, the tokens are the ones it gets alone, and the
    vectors are the ones a lone forward pass gives."""
    from backends.mlx.embedding import EmbedJob, hidden_states_of, pooled

    inputs = [[10 + (index % 7), 20 + index, 30] for index in range(40)]  # ~8 chunks beside a stream

    async def go() -> tuple[list[int], list[list[float]], int]:
        job, outputs = make_job(tiny_engine, PROMPT, max_tokens=100_000)
        tiny_engine.submit(job)
        while len(outputs[0].steps) < 2:
            await asyncio.sleep(0.001)
        embedding = EmbedJob(inputs, "mean", None)
        before = len(outputs[0].steps)
        tiny_engine.embed(embedding)
        vectors = await embedding.future
        during = len(outputs[0].steps) - before
        tiny_engine.cancel(job)
        return outputs[0].tokens, vectors, during

    tokens, vectors, during = asyncio.run(go())
    assert tokens[:30] == reference_greedy(tiny_engine, PROMPT, 30)
    # Beside a stream a chunk holds 16 tokens (5 of these inputs): 8 chunks, one per
    # engine turn at most, and every turn decodes a token.
    assert tiny_engine.embed_step_beside_streams == 16
    assert during >= 7

    def alone() -> list[list[float]]:
        body = hidden_states_of(tiny_engine.model)
        return [pooled(body(mx.array([row])), [len(row)], "mean", None).tolist()[0] for row in inputs]

    for got, want in zip(vectors, on_thread(tiny_engine, alone), strict=True):
        assert got == pytest.approx(want, abs=1e-5)
