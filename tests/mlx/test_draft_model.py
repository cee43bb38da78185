"""`draft_model`: a second model drafts greedily; the output is plain decoding's, token for token.

A draft model that IS the main model (the same tiny random llama) predicts every
greedy token, so every draft is accepted; one built with another seed (same
tokenizer) mostly disagrees, so its drafts are rejected and rolled back. Both
must leave the output exactly as decoding without speculation gives it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

mx = pytest.importorskip("mlx.core")

from backends.mlx.backend import MLXBackend
from backends.mlx.draft_model import ModelDraft, check_tokenizers
from backends.mlx.engine import Engine
from backends.mlx.jobs import Job
from backends.mlx.speculative import Drafter
from gateway import ModelLoadFailed
from gateway.backend import GenerationChunk, GenerationEnd, GenerationOptions
from gateway.config import ConfigError
from tests.mlx.test_backend import request, spec
from tests.mlx.test_engine import GREEDY, make_job, start_engine
from tests.mlx.test_speculative import PROMPTS, SAMPLED, SEEDED, outputs_of, run_all
from tests.support.mlx_models import build_tiny_llama


@pytest.fixture(scope="module")
def other_llama_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another random tiny llama with the same tokenizer (another seed)."""
    return build_tiny_llama(tmp_path_factory.mktemp("other-llama"), seed=7)


def _engine(main: Path, draft: Path) -> Engine:
    from mlx_lm import load

    engine = start_engine(main, max_batch_size=16, prefill_step_size=16, num_draft_tokens=4)
    engine.draft_model = engine.call(lambda: load(str(draft))[0]).result(timeout=60)
    # crowds verify full drafts here (by default wide batches draft less, or not at all)
    engine.speculation.verify_positions, engine.speculation.max_rows = 16 * 5, 16
    return engine


@pytest.fixture(scope="module")
def itself(tiny_llama_path: Path) -> Iterator[Engine]:
    """The tiny llama drafting for itself."""
    engine = _engine(tiny_llama_path, tiny_llama_path)
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def other(tiny_llama_path: Path, other_llama_path: Path) -> Iterator[Engine]:
    """The tiny llama with another seed's model drafting for it."""
    engine = _engine(tiny_llama_path, other_llama_path)
    yield engine
    engine.stop()


def with_draft_model(engine: Engine, job: Job) -> Job:
    for row in job.rows:
        row.drafter = Drafter(
            job.prompt, lookup=False, model=ModelDraft(engine.draft_model, engine.vocab_size)
        )
    return job


def run(engine: Engine, make: Callable[[], list[Job]], *, speculate: bool) -> list[list[int]]:
    def made() -> list[Job]:
        jobs = make()
        return [with_draft_model(engine, job) for job in jobs] if speculate else jobs

    return [out.tokens for out in outputs_of(run_all(engine, made))]


def one(
    engine: Engine, prompt: list[int], params: Any = GREEDY, max_tokens: int = 40
) -> Callable[[], list[Job]]:
    return lambda: [make_job(engine, prompt, params, max_tokens=max_tokens)[0]]


def counts(engine: Engine) -> tuple[int, int]:
    stats = engine.stats()
    return int(stats["spec_draft_tokens"]), int(stats["spec_accepted_tokens"])


def test_the_model_drafting_for_itself_has_every_greedy_draft_accepted(itself: Engine) -> None:
    for prompt in PROMPTS:
        plain = run(itself, one(itself, prompt), speculate=False)
        drafted, accepted = counts(itself)
        steps = itself.stats()["spec_verify_steps"]
        spec = run(itself, one(itself, prompt), speculate=True)
        assert spec == plain
        now_drafted, now_accepted = counts(itself)
        assert now_drafted - drafted >= 20 and now_accepted - accepted == now_drafted - drafted
        assert itself.stats()["spec_verify_steps"] - steps <= 40 // 5 + 1  # 5 tokens per step


def test_the_model_drafting_for_itself_in_a_crowd_with_n_2(itself: Engine) -> None:
    def make() -> list[Job]:
        return [make_job(itself, prompt, GREEDY, n=2, max_tokens=24)[0] for prompt in PROMPTS]

    drafted, accepted = counts(itself)

    def made() -> list[Job]:
        jobs.extend(make())
        return jobs

    jobs: list[Job] = []
    assert run(itself, made, speculate=True) == run(itself, make, speculate=False)
    drafts = [row.drafter.model for job in jobs for row in job.rows if row.drafter is not None]
    assert len(drafts) == 8 and all(
        d is not None and d.cached_tokens == 0 for d in drafts
    )  # freed at the end
    now_drafted, now_accepted = counts(itself)
    assert now_drafted > drafted and now_accepted - accepted == now_drafted - drafted


def test_a_different_draft_model_is_mostly_rejected_and_changes_nothing(other: Engine) -> None:
    drafted, accepted = counts(other)
    for prompt in PROMPTS:
        plain = run(other, one(other, prompt), speculate=False)
        assert run(other, one(other, prompt), speculate=True) == plain
    now_drafted, now_accepted = counts(other)
    assert now_drafted > drafted
    assert (now_accepted - accepted) / (now_drafted - drafted) < 0.5  # mostly rejected


def test_a_different_draft_model_in_a_crowd_with_n_2_and_a_seeded_row(other: Engine) -> None:
    def crowd() -> list[Job]:
        return [make_job(other, prompt, GREEDY, n=2, max_tokens=24)[0] for prompt in PROMPTS]

    assert run(other, crowd, speculate=True) == run(other, crowd, speculate=False)

    prompt = PROMPTS[1]
    plain = run(other, one(other, prompt, SEEDED, 32), speculate=False)
    assert run(other, one(other, prompt, SEEDED, 32), speculate=True) == plain

    def seeded_among_others() -> list[Job]:
        job = make_job(other, prompt, SEEDED, max_tokens=32)[0]
        others = [
            make_job(other, p, SAMPLED if i % 2 else GREEDY, max_tokens=20)[0] for i, p in enumerate(PROMPTS)
        ]
        return [job, *others]

    assert run(other, seeded_among_others, speculate=True)[0] == plain[0]


def test_the_draft_cache_keeps_only_what_the_row_kept(tiny_llama_path: Path, other_llama_path: Path) -> None:
    """After a draft, asking again with a departed history drafts what a fresh cache would."""
    from mlx_lm import load

    model = load(str(other_llama_path))[0]
    reused = ModelDraft(model, 512)
    first = reused.draft([5, 6, 7, 8], 4)
    assert len(first) == 4
    history = [5, 6, 7, 8, first[0], 99, 100]  # kept one draft token, then departed
    assert reused.draft(history, 4) == ModelDraft(model, 512).draft(history, 4)
    longer = [*history, *reused.draft(history, 4)]  # all accepted: the cache only catches up
    assert reused.draft(longer, 3) == ModelDraft(model, 512).draft(longer, 3)


def test_tokenizers_must_match(tiny_tokenizer: Any, tmp_path: Path) -> None:
    from mlx_lm.tokenizer_utils import load

    assert check_tokenizers(tiny_tokenizer, tiny_tokenizer) is None
    bigger = load(build_tiny_llama(tmp_path / "bigger", vocab_size=600))
    assert "vocabulary sizes differ" in (check_tokenizers(tiny_tokenizer, bigger) or "")


def test_draft_model_and_prompt_lookup_together_are_a_config_error(tiny_llama_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"draft_model.*speculative"):
        MLXBackend(spec(tiny_llama_path, draft_model=str(tiny_llama_path), speculative="prompt_lookup"))


@pytest.mark.parametrize("draft", ["missing", "other tokenizer"])
def test_a_bad_draft_model_fails_the_load_naming_the_option(
    tiny_llama_path: Path, tmp_path: Path, draft: str
) -> None:
    path = tmp_path / "nowhere" if draft == "missing" else build_tiny_llama(tmp_path / "v600", vocab_size=600)
    backend = MLXBackend(spec(tiny_llama_path, draft_model=str(path)))
    with pytest.raises(ModelLoadFailed, match=r"options\.draft_model"):
        asyncio.run(backend.load())
    assert backend._engine is None


def test_a_backend_with_a_draft_model_serves_plain_decodings_text(
    tiny_llama_path: Path, other_llama_path: Path
) -> None:
    async def text(backend: MLXBackend) -> tuple[str, dict[str, Any]]:
        await backend.load()
        engine = backend._engine
        assert engine is not None and (engine.draft_model is not None) == bool(backend.options.draft_model)
        try:
            events = [
                e
                async for e in backend.generate(
                    request(temperature=0, max_tokens=30, n=2), GenerationOptions()
                )
            ]
            assert isinstance(events[-1], GenerationEnd)
            return "".join(e.text for e in events if isinstance(e, GenerationChunk)), backend.stats()
        finally:
            await backend.unload()
            assert engine.draft_model is None  # freed with the main model

    with_draft = MLXBackend(spec(tiny_llama_path, draft_model=str(other_llama_path)))
    assert with_draft.memory_estimate() > MLXBackend(spec(tiny_llama_path)).memory_estimate()
    drafted, stats = asyncio.run(text(with_draft))
    plain, _ = asyncio.run(text(MLXBackend(spec(tiny_llama_path))))
    assert drafted == plain and stats["spec_draft_tokens"] > 0
    assert with_draft._engine is None


def test_a_prediction_drafts_first_and_the_draft_model_fills_in(other: Engine) -> None:
    prompt = PROMPTS[0]
    (plain,) = run(other, one(other, prompt, max_tokens=30), speculate=False)
    edited = plain[:10] + [7, 7] + plain[14:]  # the answer departs from the prediction, then follows it

    def make() -> list[Job]:
        job = make_job(other, prompt, max_tokens=30)[0]
        model = Counting(other.draft_model, other.vocab_size)
        job.rows[0].drafter = Drafter(job.prompt, lookup=False, prediction=edited, model=model)
        jobs.append(job)
        return [job]

    jobs: list[Job] = []
    assert run(other, make, speculate=False) == [plain]
    drafter = jobs[0].rows[0].drafter
    assert drafter is not None and drafter.accepted_prediction >= 15 and drafter.rejected_prediction > 0
    assert isinstance(drafter.model, Counting) and drafter.model.calls > 0  # where the prediction had nothing


class Counting(ModelDraft):
    calls = 0

    def draft(self, tokens: Sequence[int], count: int) -> list[int]:
        self.calls += 1
        return super().draft(tokens, count)
