"""Speculative decoding in the batch: drafts change speed, never tokens.

Every test runs the same job with and without a `Drafter` on the same engine
and compares tokens (and, for the cache, its contents). The looping scripted
model repeats a sentence, so prompt lookup is accepted after its first pass; the
tiny random llama rarely follows its drafts, so they are mostly rejected and
the rollback path runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

mx = pytest.importorskip("mlx.core")

from backends.mlx.engine import Engine
from backends.mlx.jobs import Job
from backends.mlx.ngram import HistoryIndex, PredictionIndex
from backends.mlx.sampling import SamplingParams
from backends.mlx.speculative import Drafter, Speculation, rollback
from tests.mlx.test_engine import GREEDY, Recorder, make_job, run_job, start_engine
from tests.support.mlx_models import Script, script_info

LOOP = Script(("The", " cat", " sat", " on", " the", " mat", "."), loop=True)
PROMPTS = [
    list(range(40, 61)),
    [5, 6, 7, 8, 5, 6, 7, 8, 5, 6, 7, 8, 5, 6],
    [(7 * i) % 500 + 3 for i in range(30)],
    [100, 200, 100, 200, 300, 100, 200, 100],
]
SEEDED = SamplingParams(
    temperature=1.0, top_p=0.9, seed=77, presence_penalty=0.4, logprobs=True, top_logprobs=2
)
SAMPLED = SamplingParams(temperature=0.8, top_k=20, min_p=0.05, repetition_penalty=1.2, logit_bias={9: 2.0})


@pytest.fixture(scope="module")
def tiny(tiny_llama_path: Path) -> Iterator[Engine]:
    engine = start_engine(tiny_llama_path, max_batch_size=16, prefill_step_size=16, num_draft_tokens=4)
    assert engine.can_speculate
    # crowds verify full drafts here (by default wide batches draft less, or not at all)
    engine.speculation.verify_positions, engine.speculation.max_rows = 16 * 5, 16
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def looping(scripted_model: Any) -> Iterator[Engine]:
    engine = start_engine(scripted_model(LOOP), num_draft_tokens=4)
    yield engine
    engine.stop()


def with_drafters(job: Job, *, lookup: bool = True, prediction: list[int] | None = None) -> Job:
    for row in job.rows:
        row.drafter = Drafter(job.prompt, lookup=lookup, prediction=prediction or ())
    return job


def run_all(engine: Engine, make: Callable[[], list[Job]]) -> list[Job]:
    """Make jobs on an event loop (a job binds to it), run them together."""

    async def go() -> list[Job]:
        jobs = make()
        await asyncio.gather(*(run_job(engine, job) for job in jobs))
        return jobs

    return asyncio.run(go())


def outputs_of(jobs: list[Job]) -> list[Recorder]:
    return [row.output for job in jobs for row in job.rows]  # type: ignore[misc]


def tokens_of(
    engine: Engine, prompt: list[int], params: Any = GREEDY, *, speculate: bool, **kwargs: Any
) -> list[list[int]]:
    def make() -> list[Job]:
        job, _ = make_job(engine, prompt, params, **kwargs)
        return [with_drafters(job) if speculate else job]

    return [out.tokens for out in outputs_of(run_all(engine, make))]


def test_greedy_prompt_lookup_equals_plain_decoding_on_several_prompts(tiny: Engine) -> None:
    before = tiny.stats()["spec_draft_tokens"]
    for prompt in PROMPTS:
        plain = tokens_of(tiny, prompt, speculate=False, max_tokens=40)
        assert tokens_of(tiny, prompt, speculate=True, max_tokens=40) == plain
    assert tiny.stats()["spec_draft_tokens"] > before  # drafts were made (and mostly rejected)


def test_copying_model_accepts_its_drafts_and_counts_them(looping: Engine) -> None:
    prompt = [3, 4, 5]
    plain = tokens_of(looping, prompt, speculate=False, max_tokens=60)
    stats = looping.stats()
    spec = tokens_of(looping, prompt, speculate=True, max_tokens=60)
    after = looping.stats()
    assert spec == plain
    drafted = after["spec_draft_tokens"] - stats["spec_draft_tokens"]
    accepted = after["spec_accepted_tokens"] - stats["spec_accepted_tokens"]
    assert drafted > 20 and accepted == drafted  # a loop is always predicted right
    assert after["spec_verify_steps"] - stats["spec_verify_steps"] < 60 / 2  # fewer steps than tokens
    assert 0 < after["spec_acceptance_rate"] <= 1


def test_n_choices_and_a_crowd_of_greedy_rows_match_plain(tiny: Engine) -> None:
    def crowd(speculate: bool) -> list[list[int]]:
        def make() -> list[Job]:
            jobs = [make_job(tiny, prompt, GREEDY, n=2, max_tokens=24)[0] for prompt in PROMPTS]
            return [with_drafters(job) if speculate else job for job in jobs]

        return [out.tokens for out in outputs_of(run_all(tiny, make))]

    assert crowd(True) == crowd(False)


def test_seeded_sampled_rows_reproduce_alone_and_among_eight(tiny: Engine) -> None:
    prompt = PROMPTS[1]
    plain = tokens_of(tiny, prompt, SEEDED, speculate=False, max_tokens=32)
    alone = tokens_of(tiny, prompt, SEEDED, speculate=True, max_tokens=32)
    assert alone == plain

    def make() -> list[Job]:
        job = make_job(tiny, prompt, SEEDED, max_tokens=32)[0]
        others = [
            make_job(tiny, p, SAMPLED if i % 2 else GREEDY, max_tokens=20)[0]
            for i, p in enumerate(PROMPTS * 2)
        ]
        return [with_drafters(job)] + [with_drafters(other) for other in others]

    jobs = run_all(tiny, make)
    assert len(jobs) == 9 and outputs_of(jobs)[0].tokens == plain[0]


def test_logprobs_and_penalties_see_the_plain_stream(tiny: Engine) -> None:
    def steps(speculate: bool) -> list[tuple[int, float, Any]]:
        def make() -> list[Job]:
            job = make_job(tiny, PROMPTS[3], SEEDED, max_tokens=24)[0]
            return [with_drafters(job) if speculate else job]

        (out,) = outputs_of(run_all(tiny, make))
        return [(s.token, round(s.logprob, 4), [(i, round(v, 4)) for i, v in s.top]) for s in out.steps]

    assert steps(True) == steps(False)


class StopAtThird(Recorder):
    """Stops on the third occurrence of a token: deep inside drafted, accepted text."""

    @property
    def stopped(self) -> bool:
        return self.tokens.count(self.stop_token) >= 3


def test_a_stop_inside_an_accepted_draft_ends_the_row_there(looping: Engine, scripted_model: Any) -> None:
    mat = script_info(scripted_model(LOOP))["tokens"][5]  # " mat"

    def run(speculate: bool) -> StopAtThird:
        def make() -> list[Job]:
            job = Job([3, 4, 5], [GREEDY], [StopAtThird(0, mat)], max_tokens=60, eos_ids=frozenset())
            return [with_drafters(job) if speculate else job]

        (out,) = outputs_of(run_all(looping, make))
        return out  # type: ignore[return-value]

    plain, spec = run(False), run(True)
    assert plain.reason == spec.reason == "stop" and plain.tokens == spec.tokens
    assert spec.tokens[-1] == mat and len(spec.tokens) < 60


def test_prediction_drafts_are_accepted_and_counted(tiny: Engine) -> None:
    prompt = PROMPTS[0]
    plain = tokens_of(tiny, prompt, speculate=False, max_tokens=30)[0]
    edited = plain[:10] + [7, 7] + plain[14:]  # the answer departs from it, then follows it again
    (job,) = run_all(
        tiny,
        lambda: [with_drafters(make_job(tiny, prompt, max_tokens=30)[0], lookup=False, prediction=edited)],
    )
    assert outputs_of([job])[0].tokens == plain
    drafter = job.rows[0].drafter
    assert drafter is not None and drafter.accepted_prediction >= 15 and drafter.rejected_prediction > 0


def test_rollback_leaves_a_batch_cache_as_if_the_rejected_tokens_never_came(tiny: Engine) -> None:
    from mlx_lm.models.cache import make_prompt_cache

    def run() -> None:
        model = tiny.model
        histories = [[5, 6, 7], [8, 9, 10, 11, 12]]
        extra = [[20, 21, 22, 23], [30, 31, 32, 33]]
        keep = [1, 3]  # tokens of `extra` each row keeps
        caches = []
        for tokens in histories:
            cache = make_prompt_cache(model)
            model(mx.array(tokens)[None], cache=cache)
            caches.append(cache)
        batch = [type(caches[0][i]).merge([c[i] for c in caches]) for i in range(len(caches[0]))]
        model(mx.array(extra), cache=batch)
        rollback(batch, [len(e) - k for e, k in zip(extra, keep)], single=False)
        for row, (tokens, more, kept) in enumerate(zip(histories, extra, keep)):
            expected = make_prompt_cache(model)
            model(mx.array(tokens + more[:kept])[None], cache=expected)
            for layer, reference in zip(batch, expected):
                got = layer.extract(row)
                assert got.offset == reference.offset == len(tokens) + kept
                assert mx.allclose(
                    got.keys[..., : got.offset, :], reference.keys[..., : reference.offset, :], atol=1e-5
                )
                assert mx.allclose(
                    got.values[..., : got.offset, :], reference.values[..., : reference.offset, :], atol=1e-5
                )
            # the next token after the rollback is the one plain decoding gives
        nxt = model(mx.array([[40], [41]]), cache=batch)[:, -1, :]
        for row, (tokens, more, kept) in enumerate(zip(histories, extra, keep)):
            expected = make_prompt_cache(model)
            ref = model(mx.array(tokens + more[:kept] + [40 + row])[None], cache=expected)[:, -1, :]
            assert mx.allclose(nxt[row], ref[0], atol=1e-4)
            assert int(mx.argmax(nxt[row])) == int(mx.argmax(ref[0]))

    tiny.call(run).result(timeout=60)


def test_rollback_of_a_lone_row_trims_its_cache_to_the_kept_tokens(tiny: Engine) -> None:
    from mlx_lm.models.cache import make_prompt_cache

    def run() -> None:
        model = tiny.model
        cache, expected = make_prompt_cache(model), make_prompt_cache(model)
        model(mx.array([[5, 6, 7, 20, 21, 22, 23]]), cache=cache)
        rollback(cache, [3], single=True)
        model(mx.array([[5, 6, 7, 20]]), cache=expected)
        for layer, reference in zip(cache, expected):
            assert layer.offset == reference.offset == 4
            assert mx.allclose(layer.keys[..., :4, :], reference.keys[..., :4, :], atol=1e-5)
        after = model(mx.array([[40]]), cache=cache)[0, -1]
        assert mx.allclose(after, model(mx.array([[40]]), cache=expected)[0, -1], atol=1e-4)

    tiny.call(run).result(timeout=60)


def test_wider_batches_draft_fewer_tokens_per_row() -> None:
    speculation = Speculation(num_draft_tokens=4)  # 16 positions per verification pass by default
    assert [speculation.width(rows) for rows in (1, 2, 3, 4, 5, 8)] == [4, 4, 4, 3, 0, 0]
    speculation.max_rows = 16
    assert [speculation.width(rows) for rows in (5, 8, 9)] == [2, 1, 0]


def test_history_index_drafts_the_continuation_of_the_latest_match() -> None:
    index = HistoryIndex([1, 2, 3, 4, 9, 1, 2, 3, 5])
    assert index.draft(3) == []  # [3, 5] never occurred before
    index = HistoryIndex([1, 2, 3, 4, 9, 1, 2])
    assert index.draft(3) == [3, 4, 9]
    index.append(3)
    assert index.draft(2) == [4, 9]


def test_prediction_index_stays_aligned_and_realigns() -> None:
    prediction = [10, 11, 12, 13, 14, 15, 16]
    index = PredictionIndex(prediction, start=2)
    assert index.draft([1, 2, 10], 3) == [11, 12, 13]  # the answer starts as predicted
    assert index.draft([1, 2, 10, 11, 12, 13], 2) == [14, 15]
    assert index.draft([1, 2, 10, 11, 12, 13, 99], 2) == []  # departs
    assert index.draft([1, 2, 10, 11, 12, 13, 99, 14, 15], 2) == [16]  # found again by its bigram


def test_a_row_whose_drafts_fail_backs_off_and_resumes_on_acceptance() -> None:
    drafter = Drafter([1, 2, 3, 1, 2], lookup=True)
    assert drafter.might_draft([], 4)  # [1, 2] occurred before: drafts [3, 1, 2]
    drafter.settle(3, 0)
    assert [drafter.might_draft([], 4) for _ in range(2)] == [False, True]  # paused one step
    drafter.settle(3, 0)
    assert [drafter.might_draft([], 4) for _ in range(3)] == [False, False, True]  # then two
    drafter.settle(3, 2)
    drafter.settle(3, 0)
    assert [drafter.might_draft([], 4) for _ in range(2)] == [False, True]  # reset by an acceptance


def test_a_quantized_kv_cache_speculates_and_matches_its_own_plain_decoding(tmp_path: Path) -> None:
    """kv_bits and prompt lookup together: the quantized batch cache rolls back as the plain one does."""
    from backends.mlx.quantized_cache import KVQuantization
    from tests.support.mlx_models import TINY_LLAMA_HEAD64, build_tiny_llama

    path = build_tiny_llama(tmp_path / "tiny-head64", shape=TINY_LLAMA_HEAD64)
    engine = start_engine(path, prefill_step_size=16, kv_quantization=KVQuantization(8), num_draft_tokens=4)
    try:
        assert engine.can_speculate
        engine.speculation.verify_positions, engine.speculation.max_rows = 16 * 5, 16
        for prompt in PROMPTS[:2]:
            plain = tokens_of(engine, prompt, speculate=False, max_tokens=24)
            assert tokens_of(engine, prompt, speculate=True, max_tokens=24) == plain

        def crowd(speculate: bool) -> Callable[[], list[Job]]:
            def make() -> list[Job]:
                jobs = [make_job(engine, prompt, GREEDY, max_tokens=24)[0] for prompt in PROMPTS]
                return [with_drafters(job) for job in jobs] if speculate else jobs

            return make

        together = [out.tokens for out in outputs_of(run_all(engine, crowd(True)))]
        assert together == [out.tokens for out in outputs_of(run_all(engine, crowd(False)))]
        assert engine.stats()["spec_draft_tokens"] > 0
    finally:
        engine.stop()
